// Data-parallel training of a CNN on real MNIST digits with 2 replicas on an embedded cluster: a progress bar, a
// line per epoch, a loss/accuracy chart, and the test accuracy last. `npm run demo` runs it.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SingleBar, Presets } from 'cli-progress';
import { init, shutdown, train } from 'troupe';
import { mnistJob } from './job.ts';
import { trainingChart } from './plot.ts';
import { OUT_DIR, WEIGHTS } from './out-dir.ts';

const replicas = Number(process.env.REPLICAS ?? 2);
const epochs = Number(process.env.EPOCHS ?? 10);

await init({ numCpus: Math.max(2, replicas), logToDriver: false });
const bar = new SingleBar(
  { format: 'epoch {epoch} [{bar}] {value}/{total} steps', hideCursor: true, clearOnComplete: true },
  Presets.shades_classic,
);
let shown = -1;
try {
  const result = await train(mnistJob, {
    replicas,
    epochs,
    batchSize: 32,
    onProgress: ({ epoch, step, of }) => {
      if (epoch !== shown) {
        bar.start(of, 0, { epoch: epoch + 1 });
        shown = epoch;
      }
      bar.update(step);
    },
    onEpoch: (e) => {
      bar.stop();
      console.log(
        `epoch ${e.epoch}/${epochs}: loss ${e.loss.toFixed(4)} acc ${e.accuracy.toFixed(4)}  test loss ` +
          `${e.testLoss?.toFixed(4)} acc ${e.testAccuracy?.toFixed(4)}  ${Math.round(e.samplesPerSec)} samples/s, ` +
          `${Math.round(e.syncShare * 100)}% in allreduce`,
      );
    },
  });
  const h = result.history;
  mkdirSync(OUT_DIR, { recursive: true });
  const chart = join(OUT_DIR, 'training.svg');
  writeFileSync(
    chart,
    trainingChart({
      loss: h.map((e) => e.loss),
      testLoss: h.map((e) => e.testLoss ?? NaN),
      accuracy: h.map((e) => e.accuracy),
      testAccuracy: h.map((e) => e.testAccuracy ?? NaN),
    }),
  );
  // The trained weights, one after another in model.getWeights() order: npm run example:inference serves them.
  writeFileSync(
    WEIGHTS,
    Buffer.concat(result.weights.map((w) => new Uint8Array(w.buffer, w.byteOffset, w.byteLength))),
  );
  console.log(`${replicas} replicas on the ${result.backend} backend; chart: ${chart}; weights: ${WEIGHTS}`);
  console.log(`test accuracy: ${h[h.length - 1].testAccuracy!.toFixed(4)}`);
} finally {
  bar.stop();
  await shutdown();
}
