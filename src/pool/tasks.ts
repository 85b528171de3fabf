/**
 * The work a pool worker does, as plain data: the same functions run in the worker and, for one
 * thread, in the calling thread, so both give the same bytes. A task names its kernel (a scheme by
 * its registry name, or a float cast) instead of carrying code, so any `Scheme` in src/quant runs on
 * the pool without code of its own here.
 */
import {schemeFor, type Encoded, type EncodingDiff, type SchemeParams} from '../quant/index.js'
import {synthValues} from '../model/synth-values.js'
import {quantizeInt8Transposed} from '../quant/onnx-int8.js'
import {readSync} from 'node:fs'
import {MessageChannel, type MessagePort} from 'node:worker_threads'
import {FormatError} from '../errors.js'
import {castBytes, castInto, type DType, dtypeSize, type FloatDType, fromFloat32} from '../tensor/dtype.js'

/** `scheme.encode(values, rows, cols, params)` of the scheme registered under `scheme`. */
export interface EncodeTask {
  kind: 'encode'
  scheme: string
  params: SchemeParams
  values: Float32Array
  rows: number
  cols: number
  /**
   * The input views are the caller's alone (fresh, not a reader's cache or a record's backing
   * store), and span their whole buffer: the pool may transfer them. Otherwise it copies them first.
   */
  owned?: boolean
  /** Parts written into these views by the scheme's encodeInto (see `encodeRows`) instead of coming back in buffers of their own. */
  into?: Encoded
}

/**
 * An EncodeTask whose values the task reads itself: `rows · cols` values of `dtype` at byte
 * `position` of the open descriptor `fd` (src/tensor/record.ts FileRange), widened to f32 as
 * readF32Task does. The source bytes never pass through the calling thread: no read there, no
 * buffer moved to the worker and back (each moved buffer counted anew toward the caller's next GC).
 */
export interface EncodeFileTask {
  kind: 'encodeFile'
  scheme: string
  params: SchemeParams
  fd: number
  position: number
  dtype: 'F32' | 'F16' | 'BF16'
  rows: number
  cols: number
  owned?: boolean
  /** As EncodeTask's. */
  into?: Encoded
}

/** Float bytes `from` → `to` (round to nearest even), as `castBytes`. */
export interface CastTask {
  kind: 'cast'
  bytes: Uint8Array
  from: DType
  to: FloatDType
  /** As EncodeTask's. */
  owned?: boolean
}

/**
 * `count` synth values from element `first` of tensor `tensor` (src/model/synth-values.ts:
 * offset + amplitude · uniform(seed, tensor, element)), as `dtype` bytes. Each element is a pure
 * function of its index, so the bytes do not depend on how the elements are split into tasks.
 */
export interface SynthTask {
  kind: 'synth'
  seed: number
  tensor: number
  first: number
  count: number
  offset: number
  amplitude: number
  dtype: FloatDType
  owned?: boolean
}

/** Values a task reads itself, as EncodeFileTask's: `dtype` values from byte `position` of `fd`. */
export type FileValues = Pick<EncodeFileTask, 'fd' | 'position' | 'dtype'>

/**
 * The exact check of one chunk (src/verify/exact.ts): `scheme.compare(scheme.encode(values), actual,
 * values)`, the source rows encoded as the artifact says it was and compared with what it stores.
 * The source rows are given, or read by the task itself from a file (as encodeFile's).
 */
export interface CompareTask {
  kind: 'compare'
  scheme: string
  params: SchemeParams
  values: Float32Array | FileValues
  actual: Encoded
  rows: number
  cols: number
  owned?: boolean
}

/**
 * ONNX int8 codes of `rows` rows of `cols` values (scheme onnx_int8), those of columns [first, first +
 * count) written transposed into `into`: code (r, c) at `into[(c − first) · stride + at + r]` (a window
 * of the ONNX [in, out] layout of a matrix, this task's rows being its columns from `at`). `into` is a
 * SharedArrayBuffer view the workers write in place (so it is never moved or copied); the result is
 * the rows' f32 scales as bytes.
 */
export interface Int8TransposedTask {
  kind: 'int8T'
  /** The rows' values, or where the task reads them itself (as encodeFile's). */
  values: Float32Array | FileValues
  rows: number
  cols: number
  into: Uint8Array
  stride: number
  at: number
  first: number
  count: number
  owned?: boolean
}

export type Task = EncodeTask | EncodeFileTask | CastTask | SynthTask | CompareTask | Int8TransposedTask

/** The task with inputs the pool may transfer: as is when owned, else with compact copies. */
export function transferable<T extends Task>(task: T): T {
  if (task.owned || task.kind === 'synth' || task.kind === 'encodeFile') return task
  if (task.kind === 'encode') return {...task, values: task.values.slice(), owned: true}
  if (task.kind === 'int8T') return {...task, values: copied(task.values), owned: true}
  if (task.kind === 'compare') return {...task, values: copied(task.values), actual: Object.fromEntries(Object.entries(task.actual).map(([k, v]) => [k, v.slice()])), owned: true}
  return {...task, bytes: task.bytes.slice(), owned: true}
}
export type TaskResult<T extends Task> = T extends EncodeTask | EncodeFileTask ? Encoded : T extends CompareTask ? EncodingDiff : Uint8Array
export type AnyResult = Encoded | Uint8Array | EncodingDiff

export function runTask(task: EncodeTask | EncodeFileTask): Encoded
export function runTask(task: CastTask | SynthTask | Int8TransposedTask): Uint8Array
export function runTask(task: CompareTask): EncodingDiff
export function runTask(task: Task): AnyResult
export function runTask(task: Task): AnyResult {
  switch (task.kind) {
    case 'encode':
      return encodeRows(task, task.values)
    case 'encodeFile':
      return encodeFile(task)
    case 'cast':
      return castTask(task)
    case 'compare': {
      const scheme = schemeFor(task.scheme)
      const values = valuesOf(task)
      const encoded = scheme.encode(values, task.rows, task.cols, task.params)
      const diff = scheme.compare(encoded, task.actual, values, task.rows, task.cols, task.params)
      // The encoding is spent: freed now, not at a collection (2 workers verifying a 270M MLX 4-bit
      // folder held tens of MB of them each: peak RSS 261–305 MB). Not the inputs (an f32 encoding
      // is a view of them), nor this thread's file buffers.
      const inputs = new Set([values.buffer, ...buffersOf(Object.values(task.actual))])
      freeBuffers(buffersOf(Object.values(encoded)).filter((b) => !inputs.has(b)))
      return diff
    }
    case 'synth':
      return fromFloat32(synthValues(task.seed, task.tensor, task.first, task.count, task.offset, task.amplitude), task.dtype)
    case 'int8T': {
      const values = valuesOf(task)
      const scales = quantizeInt8Transposed(values, task.rows, task.cols, task.into, task.stride, task.at, task.first, task.count)
      return new Uint8Array(scales.buffer, scales.byteOffset, scales.byteLength)
    }
  }
}

/**
 * The task's scheme encode of `values`; with `task.into`, written by the scheme's encodeInto into
 * those views (shared memory the caller reuses once it has read them: src/pool/slots.ts), which
 * stand for the parts in the result: nothing allocated per task, nothing moved back or copied. A
 * result buffer per step, made in a worker and moved to the calling thread, or made and dropped in
 * the worker, is freed only at that thread's next collection, which V8 puts off until tens of MB
 * have piled up (3B `--variants fp16,q8,q4,q4f16` on 2 workers: 285–289 MB at the end).
 */
function encodeRows(task: EncodeTask | EncodeFileTask, values: Float32Array): Encoded {
  const scheme = schemeFor(task.scheme)
  const into = task.into
  if (!into) return scheme.encode(values, task.rows, task.cols, task.params)
  if (!scheme.encodeInto) throw new Error(`internal error: scheme ${task.scheme} cannot encode into given parts`)
  scheme.encodeInto(values, task.rows, task.cols, task.params, into)
  return {...into}
}

/** This thread's buffers for encodeFile's source bytes and their f32 widening (reused by every task). */
let fileBytes = new Uint8Array(0)
let fileValues = new Uint8Array(0)

/** `rows · cols` values read from the file as f32, in this thread's reused buffers (valid until the next call). */
function readFileValues(source: FileValues, rows: number, cols: number): Float32Array {
  const count = rows * cols
  const length = count * dtypeSize(source.dtype)
  if (fileBytes.byteLength < length) fileBytes = new Uint8Array(length)
  const bytes = fileBytes.subarray(0, length)
  for (let done = 0; done < length;) {
    const n = readSync(source.fd, bytes, done, length - done, source.position + done)
    if (n === 0) throw new FormatError('file.truncated', `unexpected end of file at offset ${source.position + done} (source values of a ${rows} × ${cols} block)`)
    done += n
  }
  let values = bytes
  if (source.dtype !== 'F32') {
    if (fileValues.byteLength < 4 * count) fileValues = new Uint8Array(4 * count)
    values = fileValues.subarray(0, 4 * count)
    castInto(bytes, source.dtype, 'F32', values)
  }
  return new Float32Array(values.buffer, 0, count)
}

/** The values a task was given (a compact copy), or where it reads them itself (as they are). */
const copied = (values: Float32Array | FileValues): Float32Array | FileValues => (values instanceof Float32Array ? values.slice() : values)
/** The values a task was given, if any (none when it reads them from a file). */
const given = (values: Float32Array | FileValues): Float32Array[] => (values instanceof Float32Array ? [values] : [])
/** A task's values: those it was given, or read from the file into this thread's buffers. */
const valuesOf = (task: CompareTask | Int8TransposedTask): Float32Array => (task.values instanceof Float32Array ? task.values : readFileValues(task.values, task.rows, task.cols))

function encodeFile(task: EncodeFileTask): Encoded {
  const encoded = encodeRows(task, readFileValues(task, task.rows, task.cols))
  // The result leaves this thread (moved): never with one of the reused buffers.
  for (const [part, v] of Object.entries(encoded)) if (v.buffer === fileBytes.buffer || v.buffer === fileValues.buffer) encoded[part] = v.slice()
  return encoded
}

/**
 * An owned f32 → f16/bf16 cast is done in place: the 16-bit values are written over the first half of
 * the input's bytes (each value read before its output lands, src/tensor/dtype.ts's castInto), and the
 * result is that half, a view of the same (transferred) buffer: no output allocated, nothing copied.
 */
function castTask(task: CastTask): Uint8Array {
  const {bytes, from, to} = task
  if (task.owned && from === 'F32' && to !== 'F32' && bytes.byteOffset % 4 === 0 && bytes.byteLength % 4 === 0) {
    const out = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2)
    castInto(bytes, from, to, out)
    return out
  }
  return castBytes(bytes, from, to)
}

/** The ArrayBuffers a task's inputs or a result's outputs live in, once each (for postMessage's transfer list). */
export function buffersOf(views: Iterable<ArrayBufferView>): ArrayBuffer[] {
  const seen = new Set<ArrayBuffer>()
  for (const v of views) if (ArrayBuffer.isView(v) && v.buffer instanceof ArrayBuffer && v.buffer.byteLength > 0) seen.add(v.buffer)
  return [...seen]
}

export function taskViews(task: Task): ArrayBufferView[] {
  switch (task.kind) {
    case 'encode':
      return [task.values]
    case 'encodeFile':
      return []
    case 'int8T':
      // `into` lives in a SharedArrayBuffer: never in a transfer list (buffersOf)
      return [...given(task.values), task.into]
    case 'compare':
      return [...given(task.values), ...Object.values(task.actual)]
    case 'cast':
      return [task.bytes]
    case 'synth':
      return []
  }
}

export function resultViews(result: AnyResult): ArrayBufferView[] {
  return result instanceof Uint8Array ? [result] : Object.values(result).filter((v): v is ArrayBufferView => ArrayBuffer.isView(v))
}

/** The task's input buffers that its result does not use (free for the next task's inputs). */
export function spentBuffers(task: Task, result: AnyResult): ArrayBuffer[] {
  const out = buffersOf(resultViews(result))
  return buffersOf(taskViews(task)).filter((b) => !out.includes(b))
}

/** A port whose other end is closed, this thread's own (freeBuffers). */
let discard: MessagePort | undefined

/**
 * Let ArrayBuffers no one uses any more go now: moved into a port whose other end is closed, their
 * memory is freed at once (every view of them becomes empty). Dropped, they would wait for their
 * isolate's next collection, which V8 puts off while tens of MB of dead buffers pile up (a worker's
 * kernel arrays: 1.1B → MLX 8-bit on 2 workers peaked at 277 MB; a 3B fp16 ONNX file's transpose
 * windows: 162 MB of ArrayBuffers).
 */
export function freeBuffers(buffers: ArrayBuffer[]): void {
  if (buffers.length === 0) return
  if (!discard) {
    const {port1, port2} = new MessageChannel()
    port2.close()
    port1.unref()
    discard = port1
  }
  discard.postMessage(null, buffers)
}
