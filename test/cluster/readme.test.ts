// The README's TypeScript snippets are a program each: compiled strict, run on a local cluster, and what they print
// checked against the comments beside their console.log calls. So none of them can drift from what troupe does.
import test from 'ava';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runCommand, tempDir, processesWithHome, type RunResult } from '../helpers/cluster.ts';

const root = join(import.meta.dirname, '..', '..');

/** A section of the README (under one "## " heading) and the files its ```ts blocks make. Each block starts with a
 * comment naming its file ("// tasks.ts"); a section with a main.ts is a program, the others are only compiled. */
interface Section {
  title: string;
  files: Map<string, string>;
}

function readmeSections(): Section[] {
  const sections: Section[] = [];
  let current: Section | undefined;
  const lines = readFileSync(join(root, 'README.md'), 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const heading = /^## (.+)$/.exec(lines[i]);
    if (heading) current = { title: heading[1], files: new Map() };
    if (heading || lines[i] !== '```ts') continue;
    const end = lines.indexOf('```', i + 1);
    const code = lines.slice(i + 1, end);
    const name = /^\/\/ ([\w-]+\.ts)\b/.exec(code[0] ?? '')?.[1];
    if (!name) throw new Error(`README.md:${i + 2}: a ts block must start with a comment naming its file`);
    if (!current) throw new Error(`README.md:${i + 1}: a ts block before any section`);
    if (!current.files.size) sections.push(current);
    current.files.set(name, code.join('\n'));
    i = end;
  }
  return sections;
}

/** What the snippet says each console.log prints: the comment beside it, up to " — " where prose may follow. */
function expectedOutputs(main: string): string[] {
  return main
    .split('\n')
    .map((l) => /^\s*console\.log\(.*\);\s*\/\/ (.+?)(?: — .*)?$/.exec(l)?.[1])
    .filter((c): c is string => c !== undefined);
}

const squash = (s: string) => s.replace(/\s+/g, '');

const sections = readmeSections();
// Inside the repository, so that `import … from 'troupe'` finds this package as a user's project finds it; a folder
// per section, compiled together (troupe's own types are then checked once, not once per section).
const dir = join(root, 'tmp', `readme-${randomBytes(4).toString('hex')}`);
let compiled: RunResult;

test.before(async () => {
  sections.forEach((section, i) => {
    mkdirSync(join(dir, String(i)), { recursive: true });
    for (const [name, code] of section.files) writeFileSync(join(dir, String(i), name), code);
  });
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ extends: '../../tsconfig.json', include: ['*/*.ts'] }));
  compiled = await runCommand(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', dir], {
    timeoutMs: 120_000,
  });
});
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

test('the README has runnable snippets', (t) => {
  t.true(sections.filter((s) => s.files.has('main.ts')).length >= 2, sections.map((s) => s.title).join(', '));
});

sections.forEach((section, i) => {
  const what = section.files.has('main.ts') ? 'compile and run' : 'compile';
  // One at a time: each runs an embedded cluster, and several at once on two cores starve each other.
  test.serial(`README "${section.title}": its snippets ${what}`, async (t) => {
    t.timeout(150_000);
    // tsc's errors in this section's files, and those in no section's (a bad config) fail it.
    const errors = (compiled.stdout + compiled.stderr)
      .split('\n')
      .filter((l) => l.trim() && (l.includes(`/${i}/`) || !/\/\d+\//.test(l)));
    t.deepEqual(errors, []);
    const main = section.files.get('main.ts');
    if (!main) return;
    const home = tempDir(t);
    // No shutdown() in the snippets: the script must end by itself.
    const run = await runCommand(process.execPath, ['--import', 'tsx', '--conditions=troupe-source', 'main.ts'], {
      cwd: join(dir, String(i)),
      timeoutMs: 120_000,
      env: { TROUPE_HOME: home, TROUPE_ADDRESS: '', TROUPE_TOKEN: '' },
    });
    t.is(run.code, 0, run.stdout + run.stderr);
    // Worker output comes prefixed, "(Trainer pid=…) …": the script's own lines are the rest.
    const printed = run.stdout.split('\n').filter((l) => l && !l.startsWith('('));
    const expected = expectedOutputs(main);
    t.is(printed.length, expected.length, run.stdout);
    expected.forEach((comment, j) => {
      t.is(squash(printed[j] ?? ''), squash(comment), `line ${j + 1} of its output`);
    });
    t.deepEqual(processesWithHome(home), [], 'the local cluster stopped with the script');
  });
});
