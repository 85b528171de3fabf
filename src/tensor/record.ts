/**
 * A TensorRecord describes one tensor without holding its data: name, dtype, shape, and a
 * function that reads a byte range of the row-major, little-endian data. Readers hand these out;
 * writers pull bytes from them chunk by chunk, so memory stays bounded by a chunk.
 */
import {FormatError} from '../errors.js'
import {type EncodeFileTask, type EncodeTask, type FileValues, recycle, sharedPool, spareBuffer} from '../pool/index.js'
import {type SchemeParams} from '../quant/types.js'
import {castBytes, castInto, dtypeSize, type DType, type FloatDType, fromFloat32, toFloat32} from './dtype.js'

export interface TensorRecord {
  readonly name: string
  readonly dtype: DType
  readonly shape: readonly number[]
  /** numel × dtype size. */
  readonly byteLength: number
  /** Bytes [start, end) of the contiguous data; defaults to the whole tensor. */
  read(start?: number, end?: number): Promise<Uint8Array>
}

/** Fill `target` with bytes [start, start + target.byteLength) of a record, without allocating. */
export type ReadInto = (target: Uint8Array, start: number) => Promise<void>

/**
 * A fact about a record kept OFF the record object on purpose: a record copied with
 * `{...record, read: transformed}` must not keep a fast path to the old bytes. Only the exact object
 * registered has it. Returns the function that registers it and the one that finds it.
 */
function offRecord<V>(): [<T extends TensorRecord>(record: T, value: V) => T, (record: TensorRecord) => V | undefined] {
  const facts = new WeakMap<TensorRecord, V>()
  const register = <T extends TensorRecord>(record: T, value: V): T => {
    facts.set(record, value)
    return record
  }
  return [register, (record) => facts.get(record)]
}

/** The optional no-allocation fast path of a record (writers then reuse their buffers): `readIntoOf` finds it. */
export const [withReadInto, readIntoOf] = offRecord<ReadInto>()

/** A record read through `readInto` alone: `read` allocates the range and fills it, and `readInto` is its no-allocation reader. */
export function readingInto(fields: Omit<TensorRecord, 'read'>, readInto: ReadInto): TensorRecord {
  return withReadInto({
    ...fields,
    async read(start = 0, end = fields.byteLength) {
      const out = new Uint8Array(end - start)
      await readInto(out, start)
      return out
    },
  }, readInto)
}

/**
 * Where a record's bytes lie as they are, in a file open for reading: `fd` (a descriptor of this
 * process, valid in every thread) from byte `offset`. A pool task can then read its own rows
 * (src/pool/tasks.ts `encodeFile`) instead of the calling thread reading and moving them.
 */
export interface FileRange {
  fd: number
  offset: number
}

/** The record's bytes in a file, if they lie there as they are: `fileRangeOf` finds them. */
export const [withFileRange, fileRangeOf] = offRecord<FileRange>()

/**
 * Bytes from `start` (up to `end`: maybe fewer, never none) as a view of the record's own memory, no
 * copy: a writer writes the view itself. The record may overwrite a view's memory on a later read (of
 * it or of a record sharing its buffers), and calls `settled` first: the view's last use (its
 * write) is done once the promise `settled` returns resolves.
 */
export type ReadView = (start: number, end: number, settled: () => Promise<void>) => Promise<Uint8Array>

/** The record's views of its own memory, if it has them: `readViewOf` finds them. */
export const [withReadView, readViewOf] = offRecord<ReadView>()

/**
 * Default chunk for streaming copies. 1 MiB measured fastest here: a chunk that stays in the CPU
 * cache between the read and the write, and few enough syscalls (8 MiB chunks were ~2× slower).
 */
export const CHUNK_BYTES = 1024 * 1024

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
  const out: TensorRecord = {
    name, dtype: record.dtype, shape: record.shape, byteLength: record.byteLength,
    read: (start, end) => record.read(start, end),
  }
  const fast = readIntoOf(record)
  const rowsF32 = readRowsF32Of(record)
  if (rowsF32) withReadRowsF32(out, rowsF32)
  const file = fileRangeOf(record)
  if (file) withFileRange(out, file)
  return fast ? withReadInto(out, fast) : out
}

/** Scratch buffers shared by all casts: a small pool, so overlapping reads (read-ahead) do not allocate. */
const SCRATCH: Uint8Array[] = []
const SCRATCH_KEEP = 3
/** Large enough for the f32 source of a writer's 16-bit chunk; bigger (whole-tensor) buffers are not pinned. */
const SCRATCH_MAX_BYTES = 4 * CHUNK_BYTES

async function withScratch<T>(size: number, use: (b: Uint8Array) => Promise<T>): Promise<T> {
  const index = SCRATCH.findIndex((b) => b.byteLength >= size)
  const buffer = index >= 0 ? SCRATCH.splice(index, 1)[0]! : new Uint8Array(size)
  try {
    return await use(buffer.subarray(0, size))
  } finally {
    // Keep only chunk-sized buffers: a whole-tensor read must not pin its memory.
    if (SCRATCH.length < SCRATCH_KEEP && buffer.byteLength <= SCRATCH_MAX_BYTES) SCRATCH.push(buffer)
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
  const read = async (start = 0, end = byteLength) => {
    const first = Math.floor(start / toSize)
    const last = Math.ceil(end / toSize)
    const src = await record.read(first * fromSize, last * fromSize)
    const out = castBytes(src, record.dtype, to)
    const skip = start - first * toSize
    return out.subarray(skip, skip + (end - start))
  }
  const fast = readIntoOf(record)
  const out: TensorRecord = {name: record.name, dtype: to, shape: record.shape, byteLength, read}
  if (!fast) return out
  return withReadInto(out, async (target, start) => {
    if (start % toSize !== 0 || target.byteLength % toSize !== 0) {
      target.set(await read(start, start + target.byteLength))
      return
    }
    await withScratch((target.byteLength / toSize) * fromSize, async (src) => {
      await fast(src, (start / toSize) * fromSize)
      castInto(src, record.dtype, to, target)
    })
  })
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
  const out: TensorRecord = {
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
  const fast = readIntoOf(record)
  if (!fast) return out
  const fillFast = fill && readIntoOf(fill)
  return withReadInto(out, async (target, start) => {
    const end = start + target.byteLength
    const head = Math.min(end, srcBytes) - start
    if (head > 0) await fast(target.subarray(0, head), start)
    if (end > srcBytes) {
      const from = Math.max(start, srcBytes)
      const rest = target.subarray(from - start)
      // The target is a reused buffer: padding rows must be written as zeros, not left as they were.
      if (!fill) rest.fill(0)
      else if (fillFast) await fillFast(rest, from - srcBytes)
      else rest.set(await fill.read(from - srcBytes, end - srcBytes))
    }
  })
}

/** Rows [from, to) along dim 0 (named `name`), with the record's no-allocation reader shifted to them. */
export function sliceRows(record: TensorRecord, from: number, to: number, name = record.name): TensorRecord {
  const rowBytes = record.byteLength / record.shape[0]!
  const base = from * rowBytes
  const byteLength = (to - from) * rowBytes
  const out: TensorRecord = {
    name, dtype: record.dtype, shape: [to - from, ...record.shape.slice(1)], byteLength,
    read: (start = 0, end = byteLength) => record.read(base + start, base + end),
  }
  const fast = readIntoOf(record)
  const file = fileRangeOf(record)
  if (file) withFileRange(out, {fd: file.fd, offset: file.offset + base})
  return fast ? withReadInto(out, (target, start) => fast(target, base + start)) : out
}

/**
 * Bytes [start, end) of a record for a pool task's input. A record with a no-allocation reader is
 * read into a buffer a finished task gave back (src/pool's spareBuffer: from the workers, or from this
 * thread for 1 thread) and the bytes are the caller's own (`owned`: the pool moves them instead of
 * copying); otherwise the bytes as `read` gives them (possibly a view of the record's own bytes: not
 * owned, the pool copies them).
 */
export async function readTaskBytes(record: TensorRecord, start: number, end: number): Promise<{bytes: Uint8Array; owned: boolean}> {
  const fast = readIntoOf(record)
  if (fast) {
    const bytes = new Uint8Array(spareBuffer(end - start), 0, end - start)
    await fast(bytes, start)
    return {bytes, owned: true}
  }
  return {bytes: await record.read(start, end), owned: false}
}

/**
 * As readTaskBytes, as f32 values. A 16-bit record (GGUF F16, ONNX fp16, bf16 safetensors) with a
 * no-allocation reader is read into one spare buffer and widened into another (owned; fresh buffers
 * per block, copied again for the pool, left garbage in every thread); any other is converted into a
 * fresh array (not owned).
 */
export async function readF32Task(record: TensorRecord, start: number, end: number): Promise<{values: Float32Array; owned: boolean}> {
  const fast = readIntoOf(record) !== undefined
  if (fast && record.dtype === 'F32') {
    const {bytes} = await readTaskBytes(record, start, end)
    return {values: new Float32Array(bytes.buffer, 0, bytes.byteLength / 4), owned: true}
  }
  if (fast && (record.dtype === 'F16' || record.dtype === 'BF16')) {
    const {bytes: raw} = await readTaskBytes(record, start, end)
    const values = new Uint8Array(spareBuffer(2 * raw.byteLength), 0, 2 * raw.byteLength)
    castInto(raw, record.dtype, 'F32', values)
    recycle(raw.buffer as ArrayBuffer)
    return {values: new Float32Array(values.buffer, 0, raw.byteLength / 2), owned: true}
  }
  return {values: toFloat32(await record.read(start, end), record.dtype), owned: false}
}

/**
 * The encode task (`scheme`) of `rows × cols` values of `record` from element `first`. On the worker
 * pool, a float record whose bytes lie as they are in a file is read by the task itself (`encodeFile`:
 * this thread neither reads nor moves them); else read here as f32 by readF32Task.
 */
export async function encodeTaskOf(record: TensorRecord, scheme: string, params: SchemeParams, first: number, rows: number, cols: number): Promise<EncodeTask | EncodeFileTask> {
  const file = fileValuesOf(record, first)
  if (file) return {kind: 'encodeFile', scheme, params, ...file, rows, cols}
  const size = dtypeSize(record.dtype)
  return {kind: 'encode', scheme, params, ...(await readF32Task(record, first * size, (first + rows * cols) * size)), rows, cols}
}

/**
 * Where a pool task reads the record's values from element `first` itself (src/pool/tasks.ts
 * FileValues): on the worker pool, for a float record whose bytes lie as they are in a file; else
 * undefined (the calling thread reads them: in one thread there is nothing to gain).
 */
export function fileValuesOf(record: TensorRecord, first: number): FileValues | undefined {
  const file = sharedPool() ? fileRangeOf(record) : undefined
  const {dtype} = record
  if (!file || (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16')) return undefined
  return {fd: file.fd, position: file.offset + first * dtypeSize(dtype), dtype}
}

/** Yield the record's bytes in chunks of at most `chunkBytes` (rounded to whole elements). */
export async function* readChunks(record: TensorRecord, chunkBytes = CHUNK_BYTES): AsyncGenerator<Uint8Array> {
  const size = dtypeSize(record.dtype)
  const step = Math.max(size, Math.floor(chunkBytes / size) * size)
  for (let start = 0; start < record.byteLength; start += step) {
    yield await record.read(start, Math.min(record.byteLength, start + step))
  }
}

/**
 * Like `readChunks`, but every chunk is a view of ONE reusable buffer (when the record supports
 * `readInto`): the consumer must be done with a chunk before asking for the next. This is the
 * streaming writers' path: no allocation per chunk. Given n buffers, chunk k goes into buffer
 * k mod n: the consumer may keep a chunk (a write in flight) until it asks for the n-th after it.
 */
export async function* readChunksInto(record: TensorRecord, chunkBytes = CHUNK_BYTES, buffer?: Uint8Array | readonly Uint8Array[]): AsyncGenerator<Uint8Array> {
  const fast = readIntoOf(record)
  if (!fast) {
    yield* readChunks(record, chunkBytes)
    return
  }
  const size = dtypeSize(record.dtype)
  const step = Math.max(size, Math.floor(chunkBytes / size) * size)
  const need = Math.min(step, record.byteLength)
  const ring = (buffer === undefined ? [undefined] : buffer instanceof Uint8Array ? [buffer] : buffer).map((b) => (b && b.byteLength >= need ? b : new Uint8Array(need)))
  for (let start = 0, k = 0; start < record.byteLength; start += step, k++) {
    const view = ring[k % ring.length]!.subarray(0, Math.min(step, record.byteLength - start))
    await fast(view, start)
    yield view
  }
}

/**
 * Fill `target` with rows [r0, r0 + target.length / cols) of a 2-D record as f32: exactly the
 * values `toFloat32(read(...), dtype)` gives for those rows, without the bytes in between (a
 * dequantizing reader writes its f32 values straight into `target`).
 */
export type ReadRowsF32 = (target: Float32Array, r0: number) => Promise<void>

/** As withReadInto: only the exact record object registered has this fast path (`readRowsF32Of` finds it). */
export const [withReadRowsF32, readRowsF32Of] = offRecord<ReadRowsF32>()

/**
 * Rows of a 2-D float record as f32 into `target` (its length a whole number of rows): the
 * record's own row reader when it has one, else its no-allocation byte reader into `target`
 * (F32) or into a scratch buffer widened into `target`, else `read`.
 */
export async function readRowsF32Into(record: TensorRecord, target: Float32Array, r0: number): Promise<void> {
  const rows = record.shape[0]!
  const rowBytes = record.byteLength / rows
  const cols = record.byteLength / dtypeSize(record.dtype) / rows
  const count = target.length / cols
  if (!Number.isInteger(count) || r0 < 0 || r0 + count > rows) {
    throw new RangeError(`${record.name}: ${target.length} values from row ${r0} are not whole rows of the tensor's ${rows} × ${cols}`)
  }
  const own = readRowsF32Of(record)
  if (own) return own(target, r0)
  const out = new Uint8Array(target.buffer, target.byteOffset, target.byteLength)
  const start = r0 * rowBytes
  const size = count * rowBytes
  const fast = readIntoOf(record)
  if (fast && record.dtype === 'F32') return fast(out, start)
  if (fast) return withScratch(size, async (bytes) => {
    await fast(bytes, start)
    castInto(bytes, record.dtype, 'F32', out)
  })
  castInto(await record.read(start, start + size), record.dtype, 'F32', out)
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
  const read = async (start = 0, end = byteLength) => {
    const first = Math.floor(start / size)
    const last = Math.ceil(end / size)
    const bytes = fromFloat32(compute(first, last - first), dtype)
    const skip = start - first * size
    return bytes.subarray(skip, skip + (end - start))
  }
  return withReadInto({name, dtype, shape: [...shape], byteLength, read}, async (target, start) => {
    if (start % size !== 0 || target.byteLength % size !== 0 || target.byteOffset % 4 !== 0) {
      target.set(await read(start, start + target.byteLength))
      return
    }
    const values = compute(start / size, target.byteLength / size)
    castInto(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), 'F32', dtype, target)
  })
}
