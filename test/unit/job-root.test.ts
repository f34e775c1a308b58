// The job's root: the directory a driver's workers may load modules from.
import test from 'ava';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jobRoot } from '../../runtime/base/job-root.ts';

test('the job root: the nearest directory with a package.json at or above the start; without one, the start', (t) => {
  const top = mkdtempSync(join(tmpdir(), 'troupe-root-'));
  t.teardown(() => rmSync(top, { recursive: true, force: true }));
  const project = join(top, 'project');
  const deep = join(project, 'src', 'deep');
  const loose = join(top, 'loose', 'dir');
  mkdirSync(deep, { recursive: true });
  mkdirSync(loose, { recursive: true });
  writeFileSync(join(project, 'package.json'), '{}');
  t.is(jobRoot(project), project);
  t.is(jobRoot(deep), project);
  t.is(jobRoot(join(deep, '..')), project, 'a relative part is resolved');
  t.is(jobRoot(loose), loose, 'no package.json up to /: the directory itself');
});
