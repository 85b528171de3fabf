/**
 * The stored form of a checkpoint's canonical tensors (formats/types.ts StoredTensor): what the
 * reader declared for quantized tensors, else the record's own float bytes.
 */
import {FormatError} from '../errors.js'
import {floatSchemeName} from '../quant/float.js'
import {dtypeSize, isFloatDType} from '../tensor/dtype.js'
import {type TensorRecord} from '../tensor/record.js'
import {type Checkpoint, type StoredSegment, type StoredTensor} from './types.js'

/** [rows, cols] of a canonical tensor: a 1-D tensor is one row. */
export function matrixShape(shape: readonly number[]): [number, number] {
  if (shape.length === 1) return [1, shape[0]!]
  return [shape[0]!, shape.slice(1).reduce((a, b) => a * b, 1)]
}

/** A float record as one stored segment (its bytes are the `data` part). */
export function floatSegment(record: TensorRecord, label = record.name, row0 = 0): StoredSegment {
  if (!isFloatDType(record.dtype)) throw new FormatError('stored.dtype', `tensor ${record.name} is stored as ${record.dtype}, which is not a float dtype`, {tensor: record.name})
  const [rows, cols] = matrixShape(record.shape)
  const rowBytes = cols * dtypeSize(record.dtype)
  return {
    row0, rows, scheme: floatSchemeName(record.dtype), params: {}, label,
    read: async (r0, r1) => ({data: await record.read(r0 * rowBytes, r1 * rowBytes)}),
  }
}

/** How `name` is stored in `checkpoint`. */
export function storedTensor(checkpoint: Checkpoint, name: string): StoredTensor | undefined {
  const declared = checkpoint.stored?.get(name)
  if (declared) return declared
  const record = checkpoint.tensors.find((t) => t.name === name)
  if (!record) return undefined
  return {name, shape: record.shape, segments: [floatSegment(record)]}
}

/** Every storage scheme used, with the number of tensors stored in it (for reports). */
export function schemeCensus(checkpoint: Checkpoint): Record<string, number> {
  const out: Record<string, number> = {}
  for (const t of checkpoint.tensors) {
    const stored = storedTensor(checkpoint, t.name)
    for (const s of stored?.segments ?? []) {
      const key = s.scheme === 'mlx_affine' ? `mlx_affine(${s.params.bits}-bit g${s.params.group_size} ${s.params.dtype})` : s.scheme
      out[key] = (out[key] ?? 0) + 1
    }
  }
  return out
}
