// tfjs tensors on the wire as { dtype, shape, data }. tfjs is loaded only by a process
// that decodes a tensor and has no tfjs engine yet: most processes never pay for it.
import { createRequire } from 'node:module';
import { addExtension } from 'msgpackr';
import { SerializationError } from './errors.ts';

const TENSOR_EXT = 2; // ExtType.tensor in codec.ts (kept here to avoid an import cycle)

/** The parts of a tfjs Tensor / Engine we use. Typed loosely: tfjs is optional for most processes. */
interface TensorLike {
  dtype: string;
  shape: number[];
  dataSync(): ArrayLike<number> | Uint8Array[];
  throwIfDisposed(): void;
}
interface EngineLike {
  registryFactory: Record<string, unknown>;
  makeTensor(values: unknown, shape: number[], dtype: string): TensorLike;
  runKernel(name: string, inputs: Record<string, TensorLike>): TensorLike;
  disposeTensor(t: TensorLike): void;
}
interface WireTensor {
  dtype: string;
  shape: number[];
  data: ArrayLike<number> | Uint8Array[];
}

/** Matches tensors from any copy of tfjs, the way tfjs's own Tensor[Symbol.hasInstance] does. */
class AnyTensor {
  static [Symbol.hasInstance](v: unknown): boolean {
    const t = v as Partial<TensorLike> | null;
    return (
      !!t &&
      typeof t === 'object' &&
      typeof t.dataSync === 'function' &&
      typeof t.throwIfDisposed === 'function' &&
      Array.isArray(t.shape)
    );
  }
}

export function registerTensorExtension(): void {
  addExtension({
    Class: AnyTensor as unknown as Function,
    type: TENSOR_EXT,
    write(t: TensorLike): WireTensor {
      try {
        t.throwIfDisposed();
      } catch (e) {
        throw new SerializationError('cannot send a disposed tensor', { cause: e });
      }
      // complex64: dataSync() gives interleaved re/im, split again on read
      return { dtype: t.dtype, shape: t.shape, data: t.dataSync() };
    },
    read(w: WireTensor): TensorLike {
      const engine = tfEngine();
      if (w.dtype === 'complex64') {
        const d = w.data as Float32Array;
        const n = d.length / 2;
        const re = new Float32Array(n),
          im = new Float32Array(n);
        for (let i = 0; i < n; i++) {
          re[i] = d[2 * i];
          im[i] = d[2 * i + 1];
        }
        const real = engine.makeTensor(re, w.shape, 'float32');
        const imag = engine.makeTensor(im, w.shape, 'float32');
        const out = engine.runKernel('Complex', { real, imag });
        engine.disposeTensor(real);
        engine.disposeTensor(imag);
        return out;
      }
      return engine.makeTensor(w.data, w.shape, w.dtype);
    },
  });
}

/** Dtypes whose data is one typed array, so it can be stored as raw bytes. */
const RAW_DTYPES: Record<string, string> = { float32: 'Float32Array', int32: 'Int32Array', bool: 'Uint8Array' };

/** A tensor's dtype, shape and data (no copy on the cpu backend), if it can travel as raw bytes. */
export function rawTensor(v: unknown): { dtype: string; shape: number[]; data: ArrayBufferView } | undefined {
  if (!(v instanceof AnyTensor)) return undefined;
  const t = v as unknown as TensorLike;
  if (!(t.dtype in RAW_DTYPES)) return undefined;
  try {
    t.throwIfDisposed();
  } catch (e) {
    throw new SerializationError('cannot send a disposed tensor', { cause: e });
  }
  const data = t.dataSync() as unknown as ArrayBufferView;
  return data?.constructor?.name === RAW_DTYPES[t.dtype] ? { dtype: t.dtype, shape: t.shape, data } : undefined;
}

/** A second handle on a tensor that shares its data (tf.clone), or undefined for anything else. */
export function cloneTensor(v: unknown): unknown {
  if (!(v instanceof AnyTensor)) return undefined;
  const g = globalThis as { _tfengine?: EngineLike };
  return g._tfengine?.runKernel('Identity', { x: v as unknown as TensorLike });
}

/** A tensor on this process's tfjs backend over `data` (the cpu backend keeps the array as it is). */
export function makeTensor(data: ArrayBufferView, shape: number[], dtype: string): unknown {
  return tfEngine().makeTensor(data, shape, dtype);
}

function tfEngine(): EngineLike {
  const g = globalThis as { _tfengine?: EngineLike };
  if (!g._tfengine || Object.keys(g._tfengine.registryFactory).length === 0) {
    // No tfjs in this process yet (or no backend): bring ours. tfjs-core keeps one engine per process on globalThis.
    const require = createRequire(import.meta.url);
    try {
      require('@tensorflow/tfjs-core');
      require('@tensorflow/tfjs-backend-cpu');
    } catch (e) {
      throw new Error('received a tfjs tensor but @tensorflow/tfjs-core cannot be loaded in this process', {
        cause: e,
      });
    }
  }
  return g._tfengine!;
}
