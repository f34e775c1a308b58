// A loss and accuracy chart as SVG: two panels, one line per series, no dependencies.
interface Series {
  name: string;
  color: string;
  values: number[];
}

function panel(
  title: string,
  series: Series[],
  x0: number,
  width: number,
  height: number,
  range?: [number, number],
): string {
  const all = series.flatMap((s) => s.values);
  const [lo, hi] = range ?? [Math.min(...all), Math.max(...all)];
  const n = Math.max(...series.map((s) => s.values.length));
  const pad = 40;
  const px = (i: number) => x0 + pad + (n > 1 ? (i / (n - 1)) * (width - 2 * pad) : 0);
  const py = (v: number) => pad + (1 - (v - lo) / (hi - lo || 1)) * (height - 2 * pad);
  const lines = series.map(
    (s) =>
      `<polyline fill="none" stroke="${s.color}" stroke-width="2" ` +
      `points="${s.values.map((v, i) => `${px(i).toFixed(1)},${py(v).toFixed(1)}`).join(' ')}"/>`,
  );
  const legend = series.map(
    (s, i) =>
      `<text x="${x0 + width - pad - 110}" y="${pad + 16 + i * 16}" fill="${s.color}" font-size="12">${s.name}</text>`,
  );
  return [
    `<text x="${x0 + width / 2}" y="22" text-anchor="middle" font-size="14">${title}</text>`,
    `<rect x="${x0 + pad}" y="${pad}" width="${width - 2 * pad}" height="${height - 2 * pad}" fill="none" ` +
      `stroke="#999"/>`,
    `<text x="${x0 + pad - 4}" y="${pad + 4}" text-anchor="end" font-size="10">${hi.toFixed(3)}</text>`,
    `<text x="${x0 + pad - 4}" y="${height - pad + 4}" text-anchor="end" font-size="10">${lo.toFixed(3)}</text>`,
    `<text x="${x0 + width / 2}" y="${height - 10}" text-anchor="middle" font-size="11">epoch 1 to ${n}</text>`,
    ...lines,
    ...legend,
  ].join('\n');
}

/** Loss (left) and accuracy (right) per epoch. */
export function trainingChart(h: {
  loss: number[];
  testLoss: number[];
  accuracy: number[];
  testAccuracy: number[];
}): string {
  const w = 420,
    ht = 300;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * w}" height="${ht}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    panel(
      'loss',
      [
        { name: 'train', color: '#1f77b4', values: h.loss },
        { name: 'test', color: '#d62728', values: h.testLoss },
      ],
      0,
      w,
      ht,
    ),
    panel(
      'accuracy',
      [
        { name: 'train', color: '#1f77b4', values: h.accuracy },
        { name: 'test', color: '#d62728', values: h.testAccuracy },
      ],
      w,
      w,
      ht,
    ),
    '</svg>',
  ].join('\n');
}
