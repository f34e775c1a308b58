// Training benchmarks (issue 6, item 7): the MNIST CNN of `npm run demo` trained with 1 and with 2 data-parallel
// replicas (same epochs, seed and per-replica batch), and again with 2 while one replica's process is SIGKILLed.
import { train, type EpochResult, type TrainOptions } from 'troupe';
import { currentCore } from '../../runtime/core/core.ts';
import { mnistJob } from '../../examples/mnist/job.ts';

/** The test accuracy "time to" is measured to. */
export const TARGET_ACCURACY = 0.97;

/** For --smoke: a few digits, so an epoch takes a second (set before the cluster starts: workers inherit it). */
export const SMOKE_ENV = { MNIST_SAMPLES: '1280' };

export interface RunOptions {
  epochs: number;
  batchSize: number;
  seed: number;
  /** CPUs of each replica, and so its TensorFlow threads: 1 lets 2 replicas share 2 cores fairly. */
  numCpus: number;
}

export interface TrainingRun {
  replicas: number;
  /** The tfjs backend the replicas computed on. */
  backend: string;
  history: EpochResult[];
  /** Training samples per second over the epochs after the first (the first loads code and warms up). */
  samplesPerSec: number;
  /** Sum of epoch seconds up to the first epoch whose test accuracy reaches TARGET_ACCURACY; null if none did. */
  secondsToTarget: number | null;
  epochToTarget: number | null;
  finalAccuracy: number;
  /** The whole train() call: replicas starting, every epoch, evaluations, recoveries. */
  wallSeconds: number;
  failures: number;
  /** Where each SIGKILL was sent to a replica process, as "epoch E step S/N" (1-based epochs). */
  kills: string[];
}

/** A clean run with `replicas` replicas. */
export function cleanRun(replicas: number, o: RunOptions): Promise<TrainingRun> {
  return measured(replicas, o, {}, () => []);
}

/** A 2-replica run in which the same replica's process is SIGKILLed `kills` times, each in an epoch of its own. */
export async function runWithKills(kills: number, o: RunOptions): Promise<TrainingRun> {
  if (o.epochs < kills) throw new RangeError(`${kills} kills need at least ${kills} epochs, got ${o.epochs}`);
  const killer = new Killer(kills, o.epochs);
  // Failures are counted, not capped at the default 3: a kill that cost more than one recovery should show, not abort.
  return measured(2, o, { maxFailures: kills * 2, onProgress: (p) => killer.onProgress(p) }, () => killer.sent);
}

async function measured(
  replicas: number,
  o: RunOptions,
  extra: Partial<TrainOptions>,
  kills: () => string[],
): Promise<TrainingRun> {
  const t0 = performance.now();
  const r = await train(mnistJob, { replicas, ...o, ...extra });
  const wallSeconds = (performance.now() - t0) / 1000;
  const h = r.history;
  const reached = h.findIndex((e) => (e.testAccuracy ?? 0) >= TARGET_ACCURACY);
  return {
    replicas,
    backend: r.backend,
    history: h,
    samplesPerSec: steadyRate(h),
    wallSeconds,
    failures: r.failures,
    kills: kills(),
    secondsToTarget: reached < 0 ? null : h.slice(0, reached + 1).reduce((s, e) => s + e.seconds, 0),
    epochToTarget: reached < 0 ? null : reached + 1,
    finalAccuracy: h[h.length - 1].testAccuracy ?? NaN,
  };
}

/** Samples per second over every epoch but the first, or over the only one. */
function steadyRate(h: EpochResult[]): number {
  const epochs = h.length > 1 ? h.slice(1) : h;
  const samples = epochs.reduce((s, e) => s + e.samplesPerSec * e.seconds, 0);
  return samples / epochs.reduce((s, e) => s + e.seconds, 0);
}

/** Sends the kills from the progress rank 0 reports: kill i in its own epoch (or the next, if its replica was not up),
 * at its own share of the epoch, well inside it. Progress after a kill comes only once the group has recovered, so
 * the restarted replica is up before the next kill. */
class Killer {
  readonly sent: string[] = [];
  private busy = false;
  private target?: string;
  private readonly epochs: number[];

  constructor(
    private readonly kills: number,
    epochs: number,
  ) {
    this.epochs = Array.from({ length: kills }, (_, i) => Math.floor(((i + 1) * epochs) / (kills + 1)));
  }

  onProgress({ epoch, step, of }: { epoch: number; step: number; of: number }): void {
    const i = this.sent.length;
    if (
      this.busy ||
      i >= this.kills ||
      epoch < this.epochs[i] ||
      step < Math.max(1, Math.floor((of * (i + 1)) / (this.kills + 2)))
    )
      return;
    this.busy = true;
    // A kill that failed (the process had just gone) is tried again at the next report.
    void this.kill(`epoch ${epoch + 1} step ${step}/${of}`)
      .catch(() => undefined)
      .finally(() => {
        this.busy = false;
      });
  }

  /** SIGKILLs the target replica's current process (the same actor each time; its pid changes as it restarts). */
  private async kill(at: string): Promise<void> {
    const alive = (await (await currentCore().gcs()).actors.list()).filter(
      (a) => a.className === 'Replica' && a.state === 'ALIVE' && a.pid,
    );
    this.target ??= alive[alive.length - 1]?.actorId;
    const victim = alive.find((a) => a.actorId === this.target);
    if (!victim) return; // still restarting: the next progress report tries again
    process.kill(victim.pid!, 'SIGKILL');
    this.sent.push(at);
  }
}
