// Hyperparameter search on an embedded cluster: small MLPs trained on MNIST as parallel tasks, over hidden layer
// widths (a grid: each is tried) and random learning rates (log-uniform) and batch sizes. Prints each trial as it
// ends, a table of all of them, and the best config last. `npm run example:search`; SAMPLES (random draws per width,
// default 6) and EPOCHS (default 3) make it shorter or longer.
import { init, shutdown, search, grid, choice, logUniform } from 'troupe';
import { trainMlp } from './trials.ts';

const samples = Number(process.env.SAMPLES ?? 6);
const epochs = Number(process.env.EPOCHS ?? 3);

const t0 = Date.now();
await init({ logToDriver: false });
try {
  const space = { hidden: grid([32, 128]), learningRate: logUniform(1e-4, 1e-1), batchSize: choice([32, 64]), epochs };
  const total = samples * space.hidden.values.length;
  let ended = 0;
  const { best, trials, seed } = await search(trainMlp, space, {
    metric: 'accuracy',
    mode: 'max',
    samples,
    seed: 1,
    onTrial: (t) =>
      console.log(
        `trial ${t.index} ended (${++ended}/${total}): ` +
          `${t.error ? `failed: ${t.error.message}` : `accuracy ${t.result!.accuracy.toFixed(4)}`}`,
      ),
  });
  console.log(`\n${trials.length} trials (seed ${seed}) on the ${best.result.backend} backend, best first:`);
  console.log('trial  hidden  learning rate  batch  accuracy     loss  train s');
  const ranked = [...trials].sort((a, b) => (b.result?.accuracy ?? -1) - (a.result?.accuracy ?? -1));
  for (const t of ranked) {
    const r = t.result;
    const figures = r
      ? `${r.accuracy.toFixed(4).padStart(8)}  ${r.loss.toFixed(4).padStart(7)}  ` +
        `${r.trainSeconds.toFixed(1).padStart(7)}`
      : `failed: ${t.error?.message}`;
    console.log(
      `${String(t.index).padStart(5)}  ${String(t.config.hidden).padStart(6)}  ` +
        `${t.config.learningRate.toExponential(2).padStart(13)}  ${String(t.config.batchSize).padStart(5)}  ` +
        `${figures}${t === best ? '  <- best' : ''}`,
    );
  }
  console.log(
    `\nbest: hidden ${best.config.hidden}, learning rate ${best.config.learningRate.toExponential(2)}, batch ` +
      `${best.config.batchSize}: test accuracy ${best.result.accuracy.toFixed(4)} ` +
      `(${((Date.now() - t0) / 1000).toFixed(1)} s in all)`,
  );
} finally {
  await shutdown();
}
