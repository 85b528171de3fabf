/**
 * Python values as the restricted unpickler produces them and the pickler consumes them.
 * Python ints are `bigint` and floats are `number`, so a `.pt → .pt` round trip keeps `1` and
 * `1.0` apart; lists are arrays; tuples, dicts and tensors are small classes.
 */
import {type DType} from '../../tensor/dtype.js'

export type PyValue = null | boolean | number | bigint | string | Uint8Array | PyValue[] | PyTuple | PyDict | TorchTensor

export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

/** A dict or `collections.OrderedDict` (insertion order kept either way). */
export class PyDict {
  readonly map = new Map<string | bigint | number | boolean | null, PyValue>()
  /** OrderedDict `__dict__` state set by BUILD (e.g. a module state dict's `_metadata`). */
  state?: PyValue
  constructor(readonly ordered: boolean) {}

  get(key: string): PyValue | undefined {
    return this.map.get(key)
  }
}

/** One storage record of the archive (`data/<key>`). */
export interface TorchStorage {
  key: string
  dtype: DType
  /** Elements, as the persistent id states. */
  numel: number
  location: string
  /** Where its bytes live: opaque to this module (the reader attaches the archive). */
  source?: unknown
}

/** `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`, maybe wrapped in `_rebuild_parameter`. */
export class TorchTensor {
  constructor(
    readonly storage: TorchStorage,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
    readonly requiresGrad: boolean,
    readonly parameter: boolean,
  ) {}

  /** Row-major contiguous strides for `shape`. */
  static contiguousStride(shape: readonly number[]): number[] {
    const stride = new Array<number>(shape.length)
    let s = 1
    for (let i = shape.length - 1; i >= 0; i--) {
      stride[i] = s
      s *= shape[i]!
    }
    return stride
  }

  get contiguous(): boolean {
    const c = TorchTensor.contiguousStride(this.shape)
    return this.shape.every((d, i) => d <= 1 || this.stride[i] === c[i])
  }
}

/** Storage classes torch pickles (legacy typed-storage names) and our dtypes. */
export const STORAGE_DTYPES: Record<string, DType> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
}

export function storageClassFor(dtype: DType): string {
  const found = Object.entries(STORAGE_DTYPES).find(([, d]) => d === dtype)
  if (!found) throw new Error(`no torch storage class for ${dtype}`)
  return found[0]
}
