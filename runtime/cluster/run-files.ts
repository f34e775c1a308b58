// One file per daemon this machine started (TROUPE_HOME/run/<role>-<pid>.json): what `troupe stop` stops.
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { troupeHome, writePrivateFile } from '../base/config.ts';

export interface RunFile {
  role: 'nats' | 'head' | 'node';
  pid: number;
  address: string;
  sessionDir: string;
  nodeId?: string;
}

const runDir = () => join(troupeHome(), 'run');

export function writeRunFile(r: RunFile): void {
  writePrivateFile(join(runDir(), `${r.role}-${r.pid}.json`), `${JSON.stringify(r)}\n`);
}

export function removeRunFile(r: Pick<RunFile, 'role' | 'pid'>): void {
  rmSync(join(runDir(), `${r.role}-${r.pid}.json`), { force: true });
}

export function readRunFiles(): RunFile[] {
  let names: string[];
  try {
    names = readdirSync(runDir());
  } catch {
    return [];
  }
  const out: RunFile[] = [];
  for (const n of names) {
    if (!n.endsWith('.json')) continue;
    try {
      out.push(JSON.parse(readFileSync(join(runDir(), n), 'utf8')) as RunFile);
    } catch {
      /* half-written or foreign: skip */
    }
  }
  return out;
}
