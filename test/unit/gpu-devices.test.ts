// Which GPUs a node offers, from CUDA_VISIBLE_DEVICES and --num-gpus (nvidia-smi is not asked in any case here).
import test from 'ava';
import { gpuDevices } from '../../runtime/cluster/machine-resources.ts';
import { UsageError } from '../../runtime/index.ts';

const visible = (v: string) => ({ CUDA_VISIBLE_DEVICES: v });

test('without CUDA_VISIBLE_DEVICES, --num-gpus N offers devices 0…N-1', (t) => {
  t.deepEqual(gpuDevices(2, {}), ['0', '1']);
  t.deepEqual(gpuDevices(0, {}), []);
});

test('CUDA_VISIBLE_DEVICES names the devices offered: indices or UUIDs, in its order', (t) => {
  t.deepEqual(gpuDevices(undefined, visible('3,1')), ['3', '1']);
  t.deepEqual(gpuDevices(undefined, visible('GPU-aa11, 2')), ['GPU-aa11', '2']);
});

test('empty, -1, or an empty entry ends the list, as CUDA reads it', (t) => {
  t.deepEqual(gpuDevices(undefined, visible('')), []);
  t.deepEqual(gpuDevices(undefined, visible('-1')), []);
  t.deepEqual(gpuDevices(undefined, visible('2,-1,3')), ['2']);
  t.deepEqual(gpuDevices(undefined, visible('4,,5')), ['4']);
});

test('--num-gpus takes the first visible ones, and more than are visible is a UsageError', (t) => {
  t.deepEqual(gpuDevices(1, visible('6,7')), ['6']);
  t.deepEqual(gpuDevices(0, visible('6,7')), []);
  const e = t.throws(() => gpuDevices(3, visible('6,7')), { instanceOf: UsageError });
  t.regex(e!.message, /3 GPU\(s\).*CUDA_VISIBLE_DEVICES="6,7".*2/);
});
