#!/usr/bin/env node
// Makes a fresh machine ready for `npm test` and `npm run demo`: node_modules (npm ci) and Debian's nats-server.
// Plain JS on purpose: it runs before node_modules exist.
import { existsSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { findNatsServer, missingNatsMessage, NATS_PACKAGE } from '../runtime/cluster/nats-binary.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));

function run(cmd, args, env = {}) {
  console.log(`ensure-deps: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.status !== 0) {
    console.error(`ensure-deps: '${cmd} ${args.join(' ')}' failed (${r.error?.message ?? `exit ${r.status}`})`);
    process.exit(1);
  }
}

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 19)) {
  console.error(`ensure-deps: troupe needs Node >= 20.19, this is ${process.versions.node}`);
  process.exit(1);
}

// npm ci when node_modules is missing or older than the lockfile.
const lock = join(root, 'package-lock.json');
const installed = join(root, 'node_modules', '.package-lock.json');
if (!existsSync(installed) || statSync(installed).mtimeMs < statSync(lock).mtimeMs) {
  const hadNative = existsSync(join(root, 'node_modules', '@tensorflow', 'tfjs-node', 'deps'));
  run('npm', ['ci', '--no-audit', '--no-fund']);
  // npm ci removed the native backend `npm run setup:tensorflow` had built (it is in no lockfile): put it back from
  // its cache, in seconds, rather than leave the workers on wasm without a word. Best effort: it says why if not.
  if (hadNative)
    spawnSync(process.execPath, ['runtime/cli/troupe.mjs', 'setup', 'tensorflow'], { cwd: root, stdio: 'inherit' });
}

if (!findNatsServer()) {
  const root_ = typeof process.getuid === 'function' && process.getuid() === 0;
  const apt = spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0;
  if (!root_ || !apt || process.env.TROUPE_NATS_SERVER) {
    console.error(`ensure-deps: ${missingNatsMessage()}`);
    process.exit(1);
  }
  run('apt-get', ['update', '-qq']);
  run('apt-get', ['install', '-y', '-qq', NATS_PACKAGE], { DEBIAN_FRONTEND: 'noninteractive' });
  if (!findNatsServer()) {
    console.error(`ensure-deps: installed ${NATS_PACKAGE} but still cannot find it. ${missingNatsMessage()}`);
    process.exit(1);
  }
  // The package also enables a system nats-server of its own (127.0.0.1:4222, no auth), started at boot. troupe starts
  // its own servers, each with a token: switch that one off rather than leave it behind. Best effort: without systemd
  // as init, `stop` fails and `disable` still removes the boot link.
  if (spawnSync('sh', ['-c', 'command -v systemctl'], { stdio: 'ignore' }).status === 0) {
    console.log(
      "ensure-deps: systemctl disable and stop nats-server.service (troupe does not use the package's own server)",
    );
    spawnSync('systemctl', ['disable', 'nats-server.service'], { stdio: 'ignore' });
    spawnSync('systemctl', ['stop', 'nats-server.service'], { stdio: 'ignore' });
  }
}
