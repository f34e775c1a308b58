// The weight gradient of a 2-D convolution, which tfjs's wasm backend lacks (so CNNs could not train on it): computed
// by the backend's 3-D kernel on the same data seen as depth 1. Same bytes, other shapes: nothing is copied.
import { getKernel, registerKernel, type KernelConfig, type TensorInfo } from '@tensorflow/tfjs-core';

interface Conv2DFilterAttrs {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | unknown;
  dataFormat?: 'NHWC' | 'NCHW';
  dimRoundingMode?: string;
  filterShape: [number, number, number, number];
}

const depth1 = (t: TensorInfo): TensorInfo => ({ ...t, shape: [t.shape[0], 1, ...t.shape.slice(1)] });

/** Registers Conv2DBackpropFilter for wasm, unless it has one (a later tfjs may). */
export function registerWasmConvGradient(): void {
  if (getKernel('Conv2DBackpropFilter', 'wasm')) return;
  const conv3d = getKernel('Conv3DBackpropFilterV2', 'wasm');
  if (!conv3d) return;
  const config: KernelConfig = {
    kernelName: 'Conv2DBackpropFilter',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
      const a = attrs as unknown as Conv2DFilterAttrs;
      if (
        (a.dataFormat ?? 'NHWC') !== 'NHWC' ||
        a.dimRoundingMode ||
        (a.pad !== 'valid' && a.pad !== 'same' && typeof a.pad !== 'number')
      ) {
        throw new Error(
          'the wasm backend computes conv2d weight gradients for NHWC data with valid, same or numeric padding only',
        );
      }
      const [sh, sw] = typeof a.strides === 'number' ? [a.strides, a.strides] : a.strides;
      // The 3-D kernel is wrong for strides over 1 and numeric padding (checked against the cpu backend): those go
      // to JS (slower). Stride 1 with valid or same padding, what most CNNs use, runs in wasm.
      if (sh > 1 || sw > 1 || typeof a.pad === 'number')
        return filterGradientJs(x, dy, backend as unknown as WasmLike, sh, sw, a);
      const dw = conv3d.kernelFunc({
        inputs: { x: depth1(x), dy: depth1(dy) },
        backend,
        attrs: { strides: [1, sh, sw], pad: a.pad, filterShape: [1, ...a.filterShape] } as never,
      }) as TensorInfo;
      return { ...dw, shape: a.filterShape };
    },
  };
  registerKernel(config);
}

interface WasmLike {
  readSync(dataId: object): ArrayLike<number>;
  write(values: Float32Array, shape: number[], dtype: 'float32'): object;
}

/** dW[i][j][c][o] = sum over b, y, x of in[b][y*sh + i - top][x*sw + j - left][c] * dy[b][y][x][o] */
function filterGradientJs(
  x: TensorInfo,
  dy: TensorInfo,
  backend: WasmLike,
  sh: number,
  sw: number,
  a: Conv2DFilterAttrs,
): TensorInfo {
  const [b, h, w, c] = x.shape;
  const [, oh, ow, o] = dy.shape;
  const [fh, fw] = a.filterShape;
  const pad = (inSize: number, outSize: number, stride: number, f: number) =>
    typeof a.pad === 'number' ? a.pad : Math.floor(Math.max((outSize - 1) * stride + f - inSize, 0) / 2);
  const top = pad(h, oh, sh, fh),
    left = pad(w, ow, sw, fw);
  const xv = backend.readSync(x.dataId),
    gv = backend.readSync(dy.dataId);
  const dw = new Float32Array(fh * fw * c * o);
  for (let n = 0; n < b; n++)
    for (let y = 0; y < oh; y++)
      for (let xo = 0; xo < ow; xo++) {
        const g = ((n * oh + y) * ow + xo) * o;
        for (let i = 0; i < fh; i++) {
          const yi = y * sh + i - top;
          if (yi < 0 || yi >= h) continue;
          for (let j = 0; j < fw; j++) {
            const xi = xo * sw + j - left;
            if (xi < 0 || xi >= w) continue;
            const xin = ((n * h + yi) * w + xi) * c;
            for (let ci = 0; ci < c; ci++) {
              const v = xv[xin + ci];
              const d = ((i * fw + j) * c + ci) * o;
              for (let k = 0; k < o; k++) dw[d + k] += v * gv[g + k];
            }
          }
        }
      }
  return { dataId: backend.write(dw, a.filterShape, 'float32'), shape: a.filterShape, dtype: 'float32' };
}
