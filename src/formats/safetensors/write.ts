/**
 * Streaming safetensors writer: the header (names, dtypes, shapes, offsets) is planned from the
 * records first, then each tensor is streamed in chunks. Tensor order follows the reference
 * crate: dtype (widest first), then name.
 */
import {FormatError} from '../../errors.js'
import {FileWriter} from '../../io/file.js'
import {type DType, dtypeSize} from '../../tensor/dtype.js'
import {readChunks, type TensorRecord} from '../../tensor/record.js'
import {type ProgressEvent} from '../types.js'
import {N_LEN} from './types.js'

/** The reference crate's Dtype declaration order; files sort by it, descending. */
const DTYPE_RANK: Record<DType, number> = {BOOL: 0, U8: 1, I8: 2, I16: 3, U16: 4, F16: 5, BF16: 6, I32: 7, U32: 8, F32: 9, F64: 10, I64: 11, U64: 12}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
}

export function referenceOrder(records: readonly TensorRecord[]): TensorRecord[] {
  return [...records].sort((a, b) => DTYPE_RANK[b.dtype] - DTYPE_RANK[a.dtype] || compareBytes(a.name, b.name))
}

export interface SafetensorsPlan {
  header: Uint8Array
  order: TensorRecord[]
  /** Total file size. */
  size: number
}

export function planSafetensors(records: readonly TensorRecord[], metadata?: Record<string, string>): SafetensorsPlan {
  const order = referenceOrder(records)
  const header: Record<string, unknown> = {}
  if (metadata) header.__metadata__ = metadata
  let offset = 0
  const names = new Set<string>()
  for (const r of order) {
    if (names.has(r.name)) throw new FormatError('safetensors.duplicate_key', `tensor "${r.name}" would be written twice`)
    names.add(r.name)
    if (r.byteLength !== r.shape.reduce((a, b) => a * b, 1) * dtypeSize(r.dtype)) {
      throw new FormatError('safetensors.size_mismatch', `tensor "${r.name}" has ${r.byteLength} bytes, not what ${r.dtype} ${JSON.stringify(r.shape)} needs`)
    }
    header[r.name] = {dtype: r.dtype, shape: [...r.shape], data_offsets: [offset, offset + r.byteLength]}
    offset += r.byteLength
  }
  let json = JSON.stringify(header)
  const padded = Math.ceil(Buffer.byteLength(json) / 8) * 8
  json += ' '.repeat(padded - Buffer.byteLength(json))
  const bytes = Buffer.alloc(N_LEN + padded)
  bytes.writeBigUInt64LE(BigInt(padded), 0)
  bytes.write(json, N_LEN, 'utf8')
  return {header: bytes, order, size: N_LEN + padded + offset}
}

/**
 * Write `records` to `file` (which must not exist). Yields one event per tensor written.
 * `progress` offsets let a multi-file writer report overall progress.
 */
export async function* writeSafetensors(
  file: string,
  records: readonly TensorRecord[],
  metadata?: Record<string, string>,
  progress: {index: number; total: number; bytesDone: number; totalBytes: number} = {index: 0, total: records.length, bytesDone: 0, totalBytes: 0},
): AsyncGenerator<ProgressEvent, number> {
  const plan = planSafetensors(records, metadata)
  const writer = await FileWriter.create(file)
  let {index, bytesDone} = progress
  try {
    await writer.write(plan.header)
    for (const record of plan.order) {
      let written = 0
      for await (const chunk of readChunks(record)) {
        await writer.write(chunk)
        written += chunk.byteLength
      }
      if (written !== record.byteLength) {
        throw new FormatError('safetensors.short_read', `tensor "${record.name}" produced ${written} bytes, expected ${record.byteLength}`)
      }
      bytesDone += written
      yield {type: 'tensor', name: record.name, index: ++index, total: progress.total, bytesDone, totalBytes: progress.totalBytes}
    }
    await writer.close()
  } catch (error) {
    await writer.abort()
    throw error
  }
  return plan.size
}
