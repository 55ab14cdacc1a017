/**
 * `.ckpt` checkpoints as a WeightSource: a torch.save archive holding a state dict, bare or
 * wrapped as CompVis / PyTorch Lightning save it (`{'state_dict': {...}, 'global_step': …,
 * 'epoch': …}`). Read with painter's restricted unpickler (no code runs; anything but tensors,
 * dicts, lists, tuples and the known rebuild functions is refused); each tensor is read from
 * the open file when the loader asks for it.
 */
import { PainterError } from '../errors.js';
import type { HostTensor } from './safetensors.js';
import { openTorchArchive } from './torch-file.js';
import { TorchTensor, type StorageDtype } from './torch-pickle.js';
import type { WeightDtype, WeightSource } from './weight-source.js';

const DTYPES: Record<StorageDtype, WeightDtype> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16', float64: 'F64', int64: 'I64', int32: 'I32' };

function hostTensor(t: TorchTensor): HostTensor {
  const data = t.read();
  if (data instanceof BigInt64Array) return { dtype: 'I64', shape: t.shape, data };
  if (data instanceof Int32Array) return { dtype: 'I32', shape: t.shape, data };
  return { dtype: t.dtype === 'float16' ? 'F16' : t.dtype === 'bfloat16' ? 'BF16' : 'F32', shape: t.shape, data };
}

export function openTorchCheckpoint(file: string): WeightSource {
  const archive = openTorchArchive(file);
  try {
    let dict = archive.value;
    const wrapped = dict instanceof Map ? dict.get('state_dict') : undefined;
    const step = dict instanceof Map ? dict.get('global_step') : undefined;
    if (wrapped instanceof Map) dict = wrapped;
    const innerStep = dict instanceof Map ? dict.get('global_step') : undefined;
    const globalStep = [step, innerStep].map((v) => (typeof v === 'bigint' ? Number(v) : v)).find((v): v is number => typeof v === 'number');
    if (!(dict instanceof Map)) throw new PainterError(`${file}: the torch.save file holds no state dict (a dict of tensors, or one under 'state_dict'); not a model checkpoint`);
    const tensors = new Map<string, TorchTensor>();
    for (const [k, v] of dict) {
      // Non-tensor entries (counters, None) name no weight; a weight they stand for is reported missing.
      if (typeof k === 'string' && v instanceof TorchTensor) tensors.set(k, v);
    }
    const entries = new Map([...tensors].map(([k, t]) => [k, { dtype: DTYPES[t.dtype], shape: t.shape }]));
    return {
      path: file,
      entries,
      ...(globalStep !== undefined ? { globalStep } : {}),
      read(key) {
        const t = tensors.get(key);
        if (!t) throw new PainterError(`${file}: no tensor named ${JSON.stringify(key)}`);
        return hostTensor(t);
      },
      close: () => archive.close(),
    };
  } catch (e) {
    archive.close();
    throw e;
  }
}
