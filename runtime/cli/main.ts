// `troupe` command line, shaped like Ray's: start, status, list, stop.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  readClusterFile,
  removeClusterFile,
  clusterFilePath,
  isLoopback,
  parseAddress,
  saveCa,
  troupeState,
  trustPlain,
  type ClusterFile,
} from '../base/config.ts';
// What only some commands use is imported by them (start, job, token, setup, new): every command starts a process, and
// `troupe status` need not load what starts a cluster.
import type { JoinInfo, StartOptions, StartedCluster } from '../cluster/local-cluster.ts';
import { parseResourcesFlag } from '../cluster/machine-resources.ts';
import { readRunFiles, removeRunFile, type RunFile } from '../cluster/run-files.ts';
import { isAlive, terminate } from '../base/processes.ts';
import { Bus } from '../bus/bus.ts';
import { Gcs } from '../state/gcs.ts';
import { subjects } from '../protocol/subjects.ts';
import { formatResources, subtract, type ResourceSet } from '../scheduling/placement.ts';
import { formatBytes, parseBytes } from '../base/bytes.ts';
import type { StoredObject, StoreStats } from '../../object-store/store-manager.ts';
import { HeadUnavailableError, UsageError } from '../base/errors.ts';
import { checkHeadVersions, describeVersions } from '../protocol/versions.ts';
import { bindHost, checkIp } from '../cluster/node-address.ts';
import type { ActorInfo } from '../protocol/actors.ts';
import { printTable } from './table.ts';
import { printable } from './terminal-text.ts';
import { builtinIdentity, headHere, readIdentities } from '../cluster/identities.ts';
import { troupeCommand } from './on-path.ts';
import type { TaskEvent } from '../protocol/tasks.ts';
import type { ObjectRow } from '../protocol/objects.ts';
import type { HeadStatus, StoreStatus } from '../protocol/cluster.ts';

const HELP = `troupe: an actor-based distributed runtime for TypeScript

Usage:
  troupe start --head [--port N] [--host ADDR] [--nats URL] [--node-ip-address IP] [TLS] [RESOURCES]
               [--bus-peers IP,IP] [--data-dir DIR] [--fresh] [--worker-user USER] [--block]
  troupe start --address HOST:PORT[,…] --ca-sha256 sha256:HEX [--node-ip-address IP] [RESOURCES]
               [--data-dir DIR] [--fresh] [--worker-user USER] [--block]
  troupe status [--json]
  troupe list nodes|actors|tasks|objects|jobs [--json]
  troupe memory [--json]
  troupe stop
  troupe new DIR [--troupe SPEC]
  troupe job submit|list|status|logs|stop ...   (run a driver on the cluster; 'troupe job --help')
  troupe token create|list|revoke ...           (the cluster's credentials; 'troupe token --help')
  troupe setup tensorflow [--gpu]               (build the native TensorFlow backend; 'troupe setup --help')

RESOURCES: --num-cpus N  --num-gpus N  --memory BYTES  --resources '{"name": amount}'
OBJECTS:   --object-store-memory BYTES (e.g. 4GB; default 30% of RAM)  --object-store-dir DIR (default /dev/shm)
           --spill-dir DIR (default: the session dir)  --no-spill (a full store refuses new objects instead)
New:       writes a TypeScript project using troupe in DIR; SPEC: its troupe dependency (default file:<this troupe>)
Address:   --host ADDR: where the head's bus listens (default 127.0.0.1: this machine only; 0.0.0.0: every
           interface). --node-ip-address IP: the address other machines reach this node at (default: the local
           address routed to the head; on the head, the default route's; the join line names it; alone, the head
           listens on every interface)
TLS:       beyond loopback the bus uses TLS with a CA made at start; the join line carries its fingerprint
           (--ca-sha256). --tls-cert FILE --tls-key FILE --tls-ca FILE: your own instead. --no-tls: plain text
           (a trusted network only; its join line says --no-tls). Joining: --ca-sha256 sha256:HEX, --tls-ca FILE or
           --no-tls; drivers and the CLI elsewhere: TROUPE_TLS_CA=FILE or TROUPE_NO_TLS=1. Beyond loopback, a
           connection with no CA and no --no-tls is refused
Bus:       --bus-peers B,C (head): the bus is a NATS cluster of three servers, this machine's and one on each of
           B and C (their IPs), started there by the join line, which lists all three; JetStream, and so the head,
           waits until one of them is up. Other machines join as clients of all three. B,C,D,E: five servers, the
           state in five copies (survives the loss of two). --nats URL[,URL…]: a NATS server or cluster of your own
           instead
Token:     TROUPE_TOKEN, or --token-file F ('-': stdin); never on the command line. 'troupe start --head' makes one
           credential per role: the join line prints the node one; this machine's drivers and CLI use the driver one
Other:     --node-timeout-ms MS (head: declare a silent node dead after MS, default
           15000; it is SUSPECT, and gets no new work, after TROUPE_NODE_SUSPECT_MS, default 1500)
           --data-dir DIR (head: where the cluster's state is kept, default ${'$'}XDG_STATE_HOME/troupe/head, or
           ~/.local/state/troupe/head, or ${'$'}TROUPE_HOME/state/head when TROUPE_HOME is set; started again on it,
           it is the same cluster: credentials, CA, port, cluster state; --fresh (or another dir) makes a new
           one, moving the old aside. On a machine of --bus-peers: its server's data, default bus-server-IP-PORT
           there).
           --block: stay in the foreground; exit 1 when one of the daemons dies (for systemd).
           --worker-user USER (started as root): run this machine's workers (your jobs' code) as USER, so they
           cannot read the daemons' credentials
Files:     ${'$'}TROUPE_HOME (default /tmp/troupe-<uid>; yours alone, or troupe refuses it) holds
           current-cluster.json (mode 0600, has the driver credential), run/ and session dirs; the state dir above
           (also yours alone) what must outlive a reboot.`;

const resourceFlags = {
  'num-cpus': { type: 'string' },
  'num-gpus': { type: 'string' },
  memory: { type: 'string' },
  resources: { type: 'string' },
  'object-store-dir': { type: 'string' },
  'object-store-memory': { type: 'string' },
  'spill-dir': { type: 'string' },
  'no-spill': { type: 'boolean' },
} as const;

/** `--token` is parsed only to refuse it with a clear message: argv is visible to every user of the machine (ps). */
export const tokenFlags = { token: { type: 'string' }, 'token-file': { type: 'string' } } as const;

/** The credential from --token-file (a path, or '-' for stdin), else TROUPE_TOKEN; --token is refused. */
export function tokenFromFlags(values: Values): string | undefined {
  if (values.token !== undefined)
    throw new UsageError(
      '--token is not accepted: a command line is visible to every user of the machine. Use --token-file FILE, ' +
        '--token-file - (stdin) or TROUPE_TOKEN',
    );
  const f = values['token-file'];
  if (typeof f === 'string') {
    let text: string;
    try {
      text = readFileSync(f === '-' ? 0 : f, 'utf8').trim();
    } catch (e) {
      throw new UsageError(`--token-file ${f}: ${(e as Error).message}`);
    }
    if (!text) throw new UsageError(`--token-file ${f} is empty`);
    return text;
  }
  return process.env.TROUPE_TOKEN || undefined;
}

const commands = {
  start: {
    head: { type: 'boolean' },
    address: { type: 'string' },
    port: { type: 'string' },
    host: { type: 'string' },
    nats: { type: 'string' },
    ...tokenFlags,
    block: { type: 'boolean' },
    'node-timeout-ms': { type: 'string' },
    'data-dir': { type: 'string' },
    fresh: { type: 'boolean' },
    'bus-peers': { type: 'string' },
    'node-ip-address': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'tls-ca': { type: 'string' },
    'no-tls': { type: 'boolean' },
    'ca-sha256': { type: 'string' },
    'worker-user': { type: 'string' },
    ...resourceFlags,
  },
  status: { json: { type: 'boolean' }, address: { type: 'string' }, ...tokenFlags },
  list: { json: { type: 'boolean' }, address: { type: 'string' }, ...tokenFlags },
  memory: { json: { type: 'boolean' }, address: { type: 'string' }, ...tokenFlags },
  stop: {},
  new: { troupe: { type: 'string' } },
  job: {}, // sub-commands with their own flags: job-command.ts
  token: {}, // sub-commands with their own flags: token-command.ts
  setup: {}, // setup-command.ts
} satisfies Record<string, ParseArgsConfig['options']>;

type Values = Record<string, string | boolean | undefined>;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.log(HELP);
    return 0;
  }
  if (cmd === '--version') {
    console.log(JSON.parse(readFileSync(fileURLToPath(import.meta.resolve('troupe/package.json')), 'utf8')).version);
    return 0;
  }
  if (!(cmd in commands))
    throw new UsageError(`unknown command '${cmd}'; commands: ${Object.keys(commands).join(', ')}`);
  if (cmd === 'job') return (await import('./job-command.ts')).jobCommand(rest, connectWithCredential);
  if (cmd === 'token') return (await import('./token-command.ts')).tokenCommand(rest);
  if (cmd === 'setup') return (await import('./setup-command.ts')).setupCommand(rest);
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({
      args: rest,
      options: commands[cmd as keyof typeof commands],
      strict: true,
      allowPositionals: cmd === 'list' || cmd === 'new',
    }) as typeof parsed;
  } catch (e) {
    throw new UsageError(
      `troupe ${cmd}: ${(e as Error).message.replace(/\. To specify a positional argument.*$/s, '')}`,
    );
  }
  const { values, positionals } = parsed;
  switch (cmd) {
    case 'start':
      return start(values);
    case 'status':
      return status(values);
    case 'list':
      return list(positionals, values);
    case 'memory':
      return memory(values);
    case 'stop':
      return stop();
    case 'new':
      return create(positionals, values);
  }
  return 0;
}

async function create(positionals: string[], values: Values): Promise<number> {
  if (positionals.length !== 1) throw new UsageError('troupe new takes one directory: troupe new my-app');
  const { newProject } = await import('./new-project.ts');
  const { dir, troupeSpec } = newProject(positionals[0], values.troupe as string | undefined);
  console.log(`Wrote a troupe project in ${dir} (troupe: ${troupeSpec}). Next:`);
  console.log(`  cd ${dir} && npm install && npm start`);
  return 0;
}

function number(values: Values, flag: string): number | undefined {
  const v = values[flag];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n) || n < 0)
    throw new UsageError(`--${flag} must be a non-negative number, got ${JSON.stringify(v)}`);
  return n;
}

function startOptions(values: Values): StartOptions {
  if (values['no-spill'] && values['spill-dir'] !== undefined)
    throw new UsageError('--spill-dir and --no-spill contradict each other: pass one');
  const port = number(values, 'port');
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535))
    throw new UsageError(`--port must be 1..65535, got ${port}`);
  const nats = values.nats as string | undefined;
  if (nats !== undefined) parseAddress(nats); // a malformed --nats fails here, naming it
  const tlsFiles = { cert: values['tls-cert'], key: values['tls-key'], ca: values['tls-ca'] } as Record<string, string>;
  const given = Object.values(tlsFiles).filter((f) => f !== undefined).length;
  if (values.head && given !== 0 && given !== 3)
    throw new UsageError('--tls-cert, --tls-key and --tls-ca go together: pass all three, or none for a CA made here');
  if (values['no-tls'] && (given || values['ca-sha256'] !== undefined))
    throw new UsageError('--no-tls contradicts the other TLS flags: pass one or the other');
  return {
    detached: !values.block,
    host: values.host as string | undefined,
    port,
    nats,
    token: tokenFromFlags(values),
    numCpus: number(values, 'num-cpus'),
    numGpus: number(values, 'num-gpus'),
    memory: number(values, 'memory'),
    resources: values.resources === undefined ? undefined : parseResourcesFlag(values.resources as string),
    tlsFiles: values.head && given === 3 ? (tlsFiles as StartOptions['tlsFiles']) : undefined,
    noTls: values['no-tls'] === true,
    objectStoreDir: values['object-store-dir'] as string | undefined,
    objectStoreMemory:
      values['object-store-memory'] === undefined
        ? undefined
        : parseBytes(values['object-store-memory'] as string, '--object-store-memory'),
    spillDir: values['no-spill'] ? false : (values['spill-dir'] as string | undefined),
    nodeTimeoutMs: number(values, 'node-timeout-ms'),
    dataDir: values['data-dir'] as string | undefined,
    fresh: values.fresh === true,
    busPeers:
      values['bus-peers'] === undefined
        ? undefined
        : (values['bus-peers'] as string).split(',').map((ip) => checkIp(ip.trim(), '--bus-peers')),
    workerUser: values['worker-user'] as string | undefined,
    nodeIp:
      values['node-ip-address'] === undefined
        ? undefined
        : checkIp(values['node-ip-address'] as string, '--node-ip-address'),
  };
}

async function start(values: Values): Promise<number> {
  if (!values.head && !values.address)
    throw new UsageError(
      'troupe start needs --head (a new cluster), --address HOST:PORT (join one), or both (a standby head)',
    );
  const o = startOptions(values);
  if (o.fresh && (values.nats !== undefined || (values.head && values.address !== undefined)))
    throw new UsageError('--fresh is for a machine that keeps the cluster here: a head, or one of the bus servers');
  if (values.head && values.address) return startStandby(values, o);
  const { startHead, startNode, recordCurrentCluster } = await import('../cluster/local-cluster.ts');
  let started: StartedCluster;
  if (values.head) {
    if (values['ca-sha256'] !== undefined) throw new UsageError("--ca-sha256 is for joining: 'troupe start --address'");
    if (values.nats === undefined) o.host = bindHost(o.host, o.nodeIp);
    if (o.noTls && o.host && !isLoopback(o.host))
      console.error(
        'troupe: WARNING: --no-tls: the bus listens beyond loopback in plain text; the token and all data travel in ' +
          'clear. Use it only on a network you trust.',
      );
    const local = o.nats === undefined && isLoopback(o.host ?? '127.0.0.1');
    if (o.busPeers) {
      // The head waits for a peer to join, so the line comes first (with what this start is waiting for).
      o.onBusUp = (j) => {
        printJoinLine(j, o, local);
        console.log(
          `The bus needs two of its servers up: run that line on ${o.busPeers!.join(' or ')} (if not done already). ` +
            'Waiting.',
        );
      };
    }
    // The cluster's state outlives the head and the machine: started again, it is the same cluster.
    if (o.nats === undefined) o.dataDir ??= join(troupeState(), 'head');
    started = await startHead(o);
    console.log(
      `troupe head started: nats ${started.publicAddress}, node ${started.nodeId}, state in ${started.sessionDir}`,
    );
    if (!o.busPeers) printJoinLine({ ...started, joinToken: started.joinToken ?? started.token }, o, local);
    if (local)
      console.log(
        `The bus listens on ${o.host} only: other machines cannot join. To open the cluster to them, 'troupe stop' ` +
          'and start again with --host 0.0.0.0 (every interface), --host IP or --node-ip-address IP; it then uses TLS.',
      );
  } else {
    for (const bad of ['port', 'host', 'nats', 'node-timeout-ms', 'tls-cert', 'tls-key', 'bus-peers'] as const)
      if (values[bad] !== undefined) throw new UsageError(`--${bad} is for 'troupe start --head'`);
    const address = values.address as string;
    parseAddress(address);
    await trustCluster(address, values);
    const file = readClusterFile();
    const token = o.token ?? (file?.address === address ? joinCredentialHere(file) : undefined);
    if (!token)
      throw new UsageError(
        `no token for ${address}: set TROUPE_TOKEN (the join line 'troupe start --head' printed) or pass --token-file`,
      );
    started = await startNode({ ...o, address, token });
    console.log(`troupe node ${started.nodeId} (${started.nodeIp}) joined ${address}; session ${started.sessionDir}`);
  }
  // Drivers on this machine find the cluster (and this node's store) through this file.
  recordCurrentCluster(started);
  if (process.geteuid?.() === 0 && o.workerUser === undefined)
    console.error(
      "troupe: WARNING: started as root, so workers (your jobs' code) run as root too: they can read this machine's " +
        'troupe credentials. Pass --worker-user USER (nobody will do) to run them as that user.',
    );
  if (!values.block) {
    console.log(`Logs in ${started.sessionDir}/logs. 'troupe status' shows the cluster, 'troupe stop' stops it.`);
    return 0;
  }
  const code = await block(started);
  removeClusterFile();
  return code;
}

/** The line to run on other machines. The join credential goes in the environment of the command (not its argv,
 * which `ps` shows). */
function printJoinLine(j: JoinInfo, o: StartOptions, local: boolean): void {
  const ca = j.caSha256 ? ` --ca-sha256 ${j.caSha256}` : o.noTls && !local ? ' --no-tls' : '';
  console.log(
    `To add a ${local ? 'node on this machine' : 'machine'}:  TROUPE_TOKEN=${j.joinToken} ${troupeCommand()} ` +
      `start --address ${j.publicAddress}${ca}`,
  );
  if (j.otherAddresses.length) console.log(`  (from another network, use one of: ${j.otherAddresses.join(', ')})`);
}

/** `troupe start --head --address HOST:PORT`: a head daemon that stands by, and leads once the leader is gone. */
async function startStandby(values: Values, o: StartOptions): Promise<number> {
  const notForStandby = [
    'port',
    'host',
    'nats',
    'tls-cert',
    'tls-key',
    'data-dir',
    'node-ip-address',
    'worker-user',
    'bus-peers',
  ];
  for (const bad of notForStandby)
    if (values[bad] !== undefined) throw new UsageError(`--${bad} is not for a standby head (--head --address)`);
  const address = values.address as string;
  parseAddress(address);
  await trustCluster(address, values);
  if (!o.token)
    throw new UsageError(
      `no token for ${address}: a standby head needs a head credential ('troupe token create --role head' on the ` +
        "head's machine), in TROUPE_TOKEN or --token-file",
    );
  const { startStandbyHead } = await import('../cluster/local-cluster.ts');
  const started = await startStandbyHead({ ...o, address, token: o.token });
  console.log(`troupe standby head for ${address} started; session ${started.sessionDir}`);
  if (!values.block) {
    console.log(`Its log: ${started.sessionDir}/logs/head.log. 'troupe stop' stops it.`);
    return 0;
  }
  return block(started);
}

/** --block: stays in the foreground until a daemon of `started` dies (code 1) or a signal (code 0), then stops them
 * all. */
async function block(started: { pids: number[]; sessionDir: string; stop(): Promise<void> }): Promise<number> {
  console.log('Running in the foreground; Ctrl-C stops.');
  // As `ray start --block`: one of our daemons gone ends the command (code 1), the others stopped, so that a
  // supervisor (systemd's Restart=on-failure) starts the whole again.
  const gone = await new Promise<number | undefined>((resolve) => {
    const done = (pid?: number) => {
      clearInterval(watch);
      resolve(pid);
    };
    const watch = setInterval(() => {
      const dead = started.pids.find((pid) => !isAlive(pid));
      if (dead !== undefined) done(dead);
    }, 1000);
    process.once('SIGINT', () => done());
    process.once('SIGTERM', () => done());
  });
  if (gone !== undefined)
    console.error(`troupe: daemon process ${gone} exited (logs in ${started.sessionDir}/logs): stopping the others`);
  await started.stop();
  return gone === undefined ? 0 : 1;
}

/** Joining: learns the cluster's CA from the server, trusting it only if its fingerprint is --ca-sha256's, or takes
 * --tls-ca, and saves it for the address; every later connection to the address verifies with it. --no-tls: every
 * later connection to it is plain. None of these: what was saved before is used, or a TlsTrustError says what to
 * pass. */
async function trustCluster(address: string, values: Values): Promise<void> {
  if (values['ca-sha256'] !== undefined && values['tls-ca'] !== undefined)
    throw new UsageError('pass --ca-sha256 or --tls-ca, not both');
  if (values['ca-sha256'] !== undefined) {
    const { checkCaSha256, discoverCa } = await import('../cluster/tls.ts');
    const want = checkCaSha256(values['ca-sha256'] as string);
    saveCa([address], await discoverCa(address, want));
  } else if (values['tls-ca'] !== undefined) {
    const file = values['tls-ca'] as string;
    let pem: string;
    try {
      pem = readFileSync(file, 'utf8');
    } catch (e) {
      throw new UsageError(`--tls-ca ${file}: ${(e as Error).message}`);
    }
    try {
      (await import('../cluster/tls.ts')).caSha256(pem);
    } catch {
      throw new UsageError(`--tls-ca ${file} is not a PEM certificate`);
    }
    saveCa([address], pem);
  } else if (values['no-tls']) {
    trustPlain([address]);
  }
}

/** Another node on the head's machine joins with the join credential kept in the head's session dir. */
function joinCredentialHere(file: ClusterFile): string {
  const head = headHere(file.address);
  try {
    if (head) return builtinIdentity(readIdentities(head.sessionDir), 'node').credential;
  } catch {
    /* not troupe's identities: below */
  }
  return file.token; // a cluster on a nats-server of the user's (--nats): one token for every role
}

async function connectFromFlags(values: Values): Promise<Bus> {
  return (await connectWithCredential(values)).bus;
}

/** A connection to the cluster the flags (or TROUPE_ADDRESS, TROUPE_TOKEN, the current-cluster file) name, and the
 * credential it used. */
async function connectWithCredential(values: Values): Promise<{ bus: Bus; credential: string }> {
  const file = readClusterFile();
  const address = (values.address as string | undefined) ?? (process.env.TROUPE_ADDRESS || undefined) ?? file?.address;
  if (!address)
    throw new UsageError(
      `no cluster found: no --address, no TROUPE_ADDRESS and no ${clusterFilePath()}; start one with 'troupe start ` +
        `--head'`,
    );
  const token = tokenFromFlags(values) ?? file?.token;
  if (!token) throw new UsageError(`no token for ${address}: set TROUPE_TOKEN or pass --token-file`);
  const bus = await Bus.connect({ address, token, name: 'troupe-cli' });
  try {
    await checkHeadVersions((hello) => bus.request(subjects.headHello, hello, { timeoutMs: 2000 }), {
      self: 'this troupe command',
      role: 'cli',
      address,
      waitMs: 0,
    });
  } catch (e) {
    // A head that does not answer is what `status` reports; one of another version is refused.
    if (!(e instanceof HeadUnavailableError)) {
      await bus.close();
      throw e;
    }
  }
  return { bus, credential: token };
}

async function headStatus(bus: Bus): Promise<HeadStatus | undefined> {
  try {
    return await bus.request<HeadStatus>(subjects.headStatus, {}, { timeoutMs: 3000 });
  } catch {
    return undefined;
  }
}

async function status(values: Values): Promise<number> {
  const bus = await connectFromFlags(values);
  try {
    const gcs = await Gcs.open(bus);
    const [head, actors, jobs] = await Promise.all([headStatus(bus), gcs.actors.list(), gcs.jobs.list()]);
    const nodes =
      head?.nodes ??
      (await gcs.nodes.list()).map((n) => ({
        ...n,
        alive: n.state === 'ALIVE',
        available: n.total,
        lastHeartbeatMsAgo: -1,
      }));
    if (values.json) {
      console.log(
        JSON.stringify(
          {
            address: bus.address,
            headReachable: !!head,
            head: head?.head,
            lease: head?.lease,
            standbys: head?.standbys ?? [],
            warnings: head?.warnings ?? [],
            bus: head?.bus,
            stores: head?.stores ?? [],
            nodes,
            pending: head?.pending ?? [],
            pendingLeft: head?.pendingLeft ?? 0,
            infeasible: head?.infeasible ?? [],
            actors: actors.map(actorRow),
            jobs,
          },
          null,
          2,
        ),
      );
      return head ? 0 : 1;
    }
    console.log(
      printable(`troupe cluster at ${bus.address}${head ? `, head runs ${describeVersions(head.head)}` : ''}`),
    );
    if (head?.lease) {
      const l = head.lease;
      console.log(printable(`Leading head: ${l.headId} on ${l.hostname} (pid ${l.pid}), term ${l.term}`));
    }
    for (const s of head?.standbys ?? [])
      console.log(printable(`Standby head: ${s.headId} on ${s.hostname} (pid ${s.pid}), since ${s.since}`));
    if (head?.bus) {
      const b = head.bus;
      const servers = b.cluster ? `NATS cluster ${b.cluster} of ${b.servers} servers` : 'one nats-server';
      console.log(printable(`Bus: ${servers}; cluster state R${b.stateReplicas}`));
    }
    if (head?.stores?.length) {
      const of = (s: StoreStatus) =>
        `${formatBytes(s.bytes)}${s.maxBytes >= 0 ? ` of ${formatBytes(s.maxBytes)}` : ''}`;
      console.log(printable(`Stores: ${head.stores.map((s) => `${s.name} ${of(s)}`).join(', ')}`));
    }
    for (const w of head?.warnings ?? []) console.log(printable(`WARNING: single point of failure: ${w}`));
    for (const s of head?.stores ?? [])
      if (s.maxBytes > 0 && s.bytes >= 0.9 * s.maxBytes)
        console.log(printable(`WARNING: ${s.name} is ${Math.floor((100 * s.bytes) / s.maxBytes)}% full`));
    for (const n of nodes.filter((n) => n.alive && n.workersRunAs?.uid === 0))
      console.log(
        printable(
          `WARNING: node ${n.nodeId} (${n.hostname}) runs jobs' code as root, which can read its troupe credentials: ` +
            'start it with --worker-user USER',
        ),
      );
    if (!head)
      console.log('WARNING: the head is not answering; node states below are from cluster state and may be stale');
    const alive = nodes.filter((n) => n.alive);
    const suspect = alive.filter((n) => n.state === 'SUSPECT').length;
    console.log(
      `\nNodes: ${alive.length} alive${suspect ? ` (${suspect} suspect)` : ''}, ${nodes.length - alive.length} dead`,
    );
    printTable(
      ['NODE', 'STATE', 'HOST', 'ADDRESS', 'TROUPE', 'USED / TOTAL', 'NOTE'],
      nodes.map((n) => [
        n.nodeId + (n.isHead ? ' (head)' : ''),
        n.state,
        n.hostname,
        n.address ?? '',
        n.troupeVersion ?? '',
        n.alive ? usage(n.total, n.available) : '-',
        n.state === 'SUSPECT'
          ? `no heartbeat for ${(n.lastHeartbeatMsAgo / 1000).toFixed(1)} s`
          : n.alive
            ? ''
            : (n.cause ?? ''),
      ]),
    );
    const total = alive.reduce<ResourceSet>((acc, n) => sum(acc, n.total), {});
    const free = alive.reduce<ResourceSet>((acc, n) => sum(acc, n.available), {});
    console.log(`\nResources (alive nodes): ${usage(total, free)}`);
    const byState = (st: string) => actors.filter((a) => a.state === st).length;
    console.log(
      `\nActors: ${byState('ALIVE')} alive, ${byState('PENDING') + byState('RESTARTING')} starting, ` +
        `${byState('DEAD')} dead   Jobs running: ${jobs.filter((j) => j.state === 'RUNNING').length}`,
    );
    const pending = head?.pending ?? [];
    console.log(`\nPending demands: ${pending.length ? '' : 'none'}`);
    for (const p of pending) {
      const where =
        typeof p.strategy === 'object' ? ` on node ${p.strategy.nodeId}` : p.strategy === 'SPREAD' ? ' spread' : '';
      const from = `${p.clients} ${p.clients === 1 ? 'client' : 'clients'}`;
      console.log(
        printable(
          `  ${formatResources(p.demand)}${where}: ${p.count} waiting (from ${from}), the longest ` +
            `${(p.waitingMs / 1000).toFixed(1)} s`,
        ),
      );
    }
    if (head?.pendingLeft) console.log(`  and ${head.pendingLeft} more kinds of demand, fewer waiting for each`);
    const infeasible = head?.infeasible ?? [];
    console.log(`Infeasible demands: ${infeasible.length ? '' : 'none'}`);
    for (const p of infeasible) console.log(printable(`  ${p.at}  ${p.message}`));
    return head ? 0 : 1;
  } finally {
    await bus.close();
  }
}

/** What `list actors` shows: the record without its spec (constructor arguments are bytes). */
function actorRow(a: ActorInfo): Record<string, unknown> {
  const { spec, ...row } = a;
  return {
    ...row,
    name: a.name ? `${a.namespace}/${a.name}` : '',
    resources: spec.demand,
    maxRestarts: spec.maxRestarts,
  };
}

function sum(a: ResourceSet, b: ResourceSet): ResourceSet {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = (out[k] ?? 0) + v;
  return out;
}

function usage(total: ResourceSet, available: ResourceSet): string {
  const used = subtract(total, available);
  return Object.keys(total)
    .filter((k) => total[k] > 0)
    .map((k) =>
      k === 'memory'
        ? `memory ${formatBytes(used[k])}/${formatBytes(total[k])}`
        : `${k} ${round(used[k])}/${round(total[k])}`,
    )
    .join(', ');
}

const round = (n: number) => Math.round(n * 100) / 100;

async function list(positionals: string[], values: Values): Promise<number> {
  const kinds = ['nodes', 'actors', 'tasks', 'objects', 'jobs'];
  if (positionals.length !== 1 || !kinds.includes(positionals[0]))
    throw new UsageError(`troupe list takes one of: ${kinds.join(', ')}`);
  const kind = positionals[0];
  const bus = await connectFromFlags(values);
  try {
    const gcs = await Gcs.open(bus);
    let rows: Array<Record<string, unknown>>;
    switch (kind) {
      case 'nodes': {
        const head = await headStatus(bus);
        rows = (head?.nodes ?? (await gcs.nodes.list())).map((n) => ({ ...n }));
        break;
      }
      case 'actors':
        rows = (await gcs.actors.list()).map(actorRow);
        break;
      case 'jobs':
        rows = (await gcs.jobs.list()).map((j) => ({ ...j }));
        break;
      case 'tasks': {
        const tasks = await bus.request<TaskEvent[]>(subjects.headTasks, { limit: 1000 }, { timeoutMs: 3000 });
        rows = tasks.map((t) => ({ ...t }));
        break;
      }
      default:
        rows = (await objectRows(bus)).map((r) => ({ ...r, size: formatBytes(r.size) }));
    }
    if (values.json) {
      console.log(JSON.stringify(rows, null, 2));
      return 0;
    }
    if (rows.length === 0) {
      console.log(`no ${kind}`);
      return 0;
    }
    const columns: Record<string, string[]> = {
      nodes: ['nodeId', 'state', 'hostname', 'address', 'troupeVersion', 'pid', 'isHead', 'cause'],
      actors: ['actorId', 'className', 'state', 'name', 'nodeId', 'pid', 'backend', 'restarts', 'cause'],
      jobs: ['jobId', 'state', 'pid', 'hostname', 'entrypoint', 'startedAt', 'submissionId', 'shippedBytes'],
      tasks: ['taskId', 'name', 'state', 'nodeId', 'pid', 'error'],
      objects: ['id', 'createdBy', 'state', 'size', 'where', 'refs', 'borrowers', 'spilled', 'owner'],
    };
    const cols = columns[kind];
    printTable(
      cols.map((c) => c.toUpperCase()),
      rows.map((r) => cols.map((c) => (r[c] === undefined ? '' : String(r[c])))),
    );
    return 0;
  } finally {
    await bus.close();
  }
}

interface NodeObjects {
  nodeId: string;
  stats: StoreStats;
  objects: StoredObject[];
}

/** What each alive node's object store holds. */
async function nodeObjects(bus: Bus): Promise<NodeObjects[]> {
  const head = await headStatus(bus);
  const nodes = (head?.nodes ?? []).filter((n) => n.alive);
  const answers = await Promise.all(
    nodes.map((n) =>
      bus.request<Omit<NodeObjects, 'nodeId'>>(subjects.nodeObjects(n.nodeId), {}, { timeoutMs: 3000 }).then(
        (r) => ({ nodeId: n.nodeId, ...r }),
        () => undefined,
      ),
    ),
  );
  return answers.filter((a): a is NodeObjects => !!a);
}

/** Owners' rows (state, refs), with whether a node has spilled the object to disk. */
async function objectRows(bus: Bus): Promise<Array<ObjectRow & { spilled: string }>> {
  const [owned, stores] = await Promise.all([bus.gather<ObjectRow[]>(subjects.allObjects, {}, 500), nodeObjects(bus)]);
  const spilledOn = new Map<string, string[]>();
  for (const n of stores)
    for (const o of n.objects) if (o.spilled) spilledOn.set(o.id, [...(spilledOn.get(o.id) ?? []), n.nodeId]);
  return owned.flat().map((r) => ({ ...r, spilled: spilledOn.get(r.id)?.join(',') ?? '' }));
}

/** Per node store use and per owner references, like `ray memory`. */
async function memory(values: Values): Promise<number> {
  const bus = await connectFromFlags(values);
  try {
    const [stores, objects] = await Promise.all([nodeObjects(bus), objectRows(bus)]);
    if (values.json) {
      console.log(
        JSON.stringify({ nodes: stores.map(({ nodeId, stats }) => ({ nodeId, ...stats })), objects }, null, 2),
      );
      return 0;
    }
    console.log('Object store by node:');
    printTable(
      ['NODE', 'IN MEMORY / CAPACITY', 'FULL', 'OBJECTS', 'PRIMARY', 'COPIES', 'SPILLED'],
      stores.map(({ nodeId, stats, objects: held }) => [
        nodeId,
        `${formatBytes(stats.used)} / ${formatBytes(stats.capacity)}`,
        `${((100 * stats.used) / Math.max(1, stats.capacity)).toFixed(1)}%`,
        String(stats.objects),
        String(held.filter((o) => o.primary).length),
        String(held.filter((o) => !o.primary).length),
        stats.spillDir === undefined ? 'off' : `${stats.spilledObjects} (${formatBytes(stats.spilledBytes)})`,
      ]),
    );
    const byOwner = new Map<string, ObjectRow[]>();
    for (const o of objects) byOwner.set(o.owner, [...(byOwner.get(o.owner) ?? []), o]);
    console.log('\nReferences by owner:');
    printTable(
      ['OWNER', 'OBJECTS', 'BYTES', 'INLINE', 'IN STORES', 'LOCAL REFS', 'BORROWED', 'PENDING', 'FAILED'],
      [...byOwner].map(([owner, rows]) => [
        owner,
        String(rows.length),
        formatBytes(rows.reduce((n, r) => n + r.size, 0)),
        String(rows.filter((r) => r.where === 'inline').length),
        String(rows.filter((r) => r.state === 'READY' && r.where !== 'inline').length),
        String(rows.reduce((n, r) => n + r.refs, 0)),
        String(rows.filter((r) => r.borrowers > 0).length),
        String(rows.filter((r) => r.state === 'PENDING').length),
        String(rows.filter((r) => r.state === 'FAILED').length),
      ]),
    );
    const used = stores.reduce((n, s) => n + s.stats.used, 0);
    const capacity = stores.reduce((n, s) => n + s.stats.capacity, 0);
    const spilled = stores.reduce((n, s) => n + s.stats.spilledBytes, 0);
    console.log(
      `\nAll nodes: ${formatBytes(used)} of ${formatBytes(capacity)} in memory ` +
        `(${((100 * used) / Math.max(1, capacity)).toFixed(1)}% full), ${formatBytes(spilled)} spilled, ` +
        `${objects.length} objects owned by ${byOwner.size} processes`,
    );
    return 0;
  } finally {
    await bus.close();
  }
}

/** Stops every daemon started from this TROUPE_HOME: node daemons first (they return their leases), then heads, then
 * nats-servers. */
async function stop(): Promise<number> {
  const runs = readRunFiles();
  let stopped = 0;
  for (const role of ['node', 'head', 'nats'] as const) {
    await Promise.all(
      runs
        .filter((r) => r.role === role)
        .map(async (r) => {
          if (isAlive(r.pid) && isOurs(r)) {
            await terminate(r.pid);
            stopped++;
          }
          removeRunFile(r);
        }),
    );
  }
  removeClusterFile();
  console.log(
    stopped ? `Stopped ${stopped} troupe process${stopped === 1 ? '' : 'es'}.` : 'No troupe processes were running.',
  );
  return 0;
}

/** Guards against a recycled pid: only signal a process that still looks like what we started. */
function isOurs(r: RunFile): boolean {
  try {
    const cmdline = readFileSync(`/proc/${r.pid}/cmdline`, 'utf8');
    return r.role === 'nats' ? cmdline.includes('nats-server') : /daemon\.[jt]s\0/.test(cmdline);
  } catch {
    return process.platform !== 'linux'; // no /proc: trust the run file
  }
}

// `troupe status | head`: a reader that stops early is not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    else throw e;
  });
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  if (e instanceof UsageError || (e as Error)?.name === 'UsageError') {
    console.error(`troupe: ${(e as Error).message}`);
    process.exitCode = 2;
  } else {
    console.error(`troupe: ${(e as Error)?.message ?? e}`);
    if (process.env.TROUPE_DEBUG) console.error(e);
    process.exitCode = 1;
  }
}
