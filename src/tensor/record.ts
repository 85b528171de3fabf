/**
 * A TensorRecord describes one tensor without holding its data: name, dtype, shape, and a
 * function that reads a byte range of the row-major, little-endian data. Readers hand these out;
 * writers pull bytes from them chunk by chunk, so memory stays bounded by a chunk.
 */
import {FormatError} from '../errors.js'
import {castBytes, dtypeSize, type DType, type FloatDType, fromFloat32, toFloat32} from './dtype.js'

export interface TensorRecord {
  readonly name: string
  readonly dtype: DType
  readonly shape: readonly number[]
  /** numel × dtype size. */
  readonly byteLength: number
  /** Bytes [start, end) of the contiguous data; defaults to the whole tensor. */
  read(start?: number, end?: number): Promise<Uint8Array>
}

/** Default chunk for streaming copies: big enough for disk speed, small enough for the RSS target. */
export const CHUNK_BYTES = 8 * 1024 * 1024

export function numel(shape: readonly number[]): number {
  let n = 1
  for (const d of shape) n *= d
  return n
}

export function shapeEquals(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i])
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`
}

/** A record over bytes already in memory. */
export function memoryRecord(name: string, dtype: DType, shape: readonly number[], data: Uint8Array): TensorRecord {
  const byteLength = numel(shape) * dtypeSize(dtype)
  if (data.byteLength !== byteLength) {
    throw new FormatError('tensor.size', `tensor ${name}: ${data.byteLength} bytes for shape ${formatShape(shape)} ${dtype} (expected ${byteLength})`)
  }
  return {
    name, dtype, shape: [...shape], byteLength,
    async read(start = 0, end = byteLength) {
      return data.subarray(start, end)
    },
  }
}

export function f32Record(name: string, shape: readonly number[], values: Float32Array): TensorRecord {
  return memoryRecord(name, 'F32', shape, new Uint8Array(values.buffer, values.byteOffset, values.byteLength))
}

/** Same data under another name. */
export function renamed(record: TensorRecord, name: string): TensorRecord {
  return {
    name, dtype: record.dtype, shape: record.shape, byteLength: record.byteLength,
    read: (start, end) => record.read(start, end),
  }
}

/**
 * Lazily cast a float tensor to another float dtype. Chunks are aligned to whole elements of
 * the source, so ranged reads cost no more than the bytes asked for.
 */
export function castRecord(record: TensorRecord, to: FloatDType): TensorRecord {
  if (record.dtype === to) return record
  const fromSize = dtypeSize(record.dtype)
  const toSize = dtypeSize(to)
  const count = record.byteLength / fromSize
  const byteLength = count * toSize
  return {
    name: record.name, dtype: to, shape: record.shape, byteLength,
    async read(start = 0, end = byteLength) {
      const first = Math.floor(start / toSize)
      const last = Math.ceil(end / toSize)
      const src = await record.read(first * fromSize, last * fromSize)
      const out = castBytes(src, record.dtype, to)
      const skip = start - first * toSize
      return out.subarray(skip, skip + (end - start))
    },
  }
}

/**
 * Keep the first `rows` rows of a 2-D (or higher) tensor along dim 0, or pad with zero rows up
 * to `rows`. `fill`, when given, supplies the bytes of rows past the source (restoring kept rows).
 */
export function resizeRows(record: TensorRecord, rows: number, fill?: TensorRecord): TensorRecord {
  const srcRows = record.shape[0]!
  if (rows === srcRows) return record
  const rowBytes = record.byteLength / srcRows
  const shape = [rows, ...record.shape.slice(1)]
  const byteLength = rows * rowBytes
  const srcBytes = Math.min(srcRows, rows) * rowBytes
  return {
    name: record.name, dtype: record.dtype, shape, byteLength,
    async read(start = 0, end = byteLength) {
      const out = new Uint8Array(end - start)
      if (start < srcBytes) out.set(await record.read(start, Math.min(end, srcBytes)), 0)
      if (end > srcBytes && fill) {
        const from = Math.max(start, srcBytes)
        out.set(await fill.read(from - srcBytes, end - srcBytes), from - start)
      }
      return out
    },
  }
}

/** Rows [from, to) along dim 0. */
export function sliceRows(record: TensorRecord, from: number, to: number): TensorRecord {
  const rowBytes = record.byteLength / record.shape[0]!
  const base = from * rowBytes
  const byteLength = (to - from) * rowBytes
  return {
    name: record.name, dtype: record.dtype, shape: [to - from, ...record.shape.slice(1)], byteLength,
    read: (start = 0, end = byteLength) => record.read(base + start, base + end),
  }
}

/** Yield the record's bytes in chunks of at most `chunkBytes` (rounded to whole elements). */
export async function* readChunks(record: TensorRecord, chunkBytes = CHUNK_BYTES): AsyncGenerator<Uint8Array> {
  const size = dtypeSize(record.dtype)
  const step = Math.max(size, Math.floor(chunkBytes / size) * size)
  for (let start = 0; start < record.byteLength; start += step) {
    yield await record.read(start, Math.min(record.byteLength, start + step))
  }
}

/** The whole tensor as f32 values (dequantizing / widening as needed). */
export async function readFloat32(record: TensorRecord): Promise<Float32Array> {
  const bytes = await record.read()
  const values = toFloat32(bytes, record.dtype)
  // Copy when the result aliases a reader's buffer, so callers may keep and mutate it.
  return values.buffer === bytes.buffer ? values.slice() : values
}

/** A record whose bytes are computed from f32 values on demand (used by synth and transforms). */
export function computedRecord(
  name: string,
  shape: readonly number[],
  dtype: FloatDType,
  compute: (firstElement: number, count: number) => Float32Array,
): TensorRecord {
  const size = dtypeSize(dtype)
  const byteLength = numel(shape) * size
  return {
    name, dtype, shape: [...shape], byteLength,
    async read(start = 0, end = byteLength) {
      const first = Math.floor(start / size)
      const last = Math.ceil(end / size)
      const bytes = fromFloat32(compute(first, last - first), dtype)
      const skip = start - first * size
      return bytes.subarray(skip, skip + (end - start))
    },
  }
}
