/**
 * Weight-only int8 tensors of `model_quantized.onnx` as lazy records: the writer's codes and
 * scales computed from a float source row by row (scheme `onnx_int8`, src/quant/onnx-int8.ts) on
 * the worker pool (src/pool: results in order, the same bytes for any thread count),
 * and the reader's dequantized f32 record plus the stored segment the exact check compares.
 */
import {type EncodeFileTask, type EncodeTask, type Int8TransposedTask, mapOrdered, mapSlotted, type SharedSlots, slottedBlocks} from '../../pool/index.js'
import {dequantizeQ4Rows, q4Blocks} from '../../quant/onnx-q4.js'
import {type SchemeParams} from '../../quant/types.js'
import {type StoredSegment} from '../types.js'
import {castRecord, encodeTaskOf, fileValuesOf, readF32Task, readingInto, type TensorRecord} from '../../tensor/record.js'
import {toFloat32} from '../../tensor/dtype.js'

/**
 * Elements per quantization task (whole rows; the codes do not depend on it): 1 MiB of f32, so the
 * tasks in flight on the pool (2 per worker) hold a few MiB.
 */
const STEP_ELEMENTS = 1 << 18

/**
 * Encode tasks of `scheme` over rows [0, rows) (or [first, rows)) of a float record, `step` rows each
 * (encodeTaskOf: on the pool a record whose bytes lie as they are in a file is read by the task
 * itself, so no source buffer is made here per step and moved to a worker and back).
 */
async function* rowSteps(source: TensorRecord, rows: number, cols: number, step: number, scheme: string, params: SchemeParams, first = 0): AsyncGenerator<EncodeTask | EncodeFileTask> {
  for (let r0 = first; r0 < rows; r0 += step) yield encodeTaskOf(source, scheme, params, r0 * cols, Math.min(rows, r0 + step) - r0, cols)
}

function rowsOf(record: TensorRecord): [number, number] {
  const n = record.shape.reduce((a, b) => a * b, 1)
  return record.shape.length === 1 ? [1, n] : [record.shape[0]!, n / record.shape[0]!]
}

/**
 * int8 codes [rows, cols] (canonical layout) and f32 scales [rows] of a float tensor, computed on demand.
 * `streamed`: a reader that reads the codes in order (the embedding, stored untransposed) gets each
 * row range quantized for its read, so the whole tensor's codes are never held (98 MB for a 3B
 * embedding); the scales (4 bytes a row) are kept from those reads, or come from a pass of their own
 * when the scales are read before every row's codes.
 * Otherwise the codes of the whole tensor are computed by one pass and kept until a read ends at
 * their last byte. (The writer's MatMul weights, stored transposed, go through `transposedInt8Records`.)
 */
export function int8Records(source: TensorRecord, codesName: string, scalesName: string, options: {streamed?: boolean; slots?: SharedSlots} = {}): {codes: TensorRecord; scales: TensorRecord} {
  const [rows, cols] = rowsOf(source)
  const step = Math.max(1, Math.floor(STEP_ELEMENTS / cols))
  if (options.streamed) return streamedInt8(source, rows, cols, step, source.shape, codesName, scalesName, options.slots)
  let scales: Float32Array | undefined
  let all: Int8Array | undefined
  let making: Promise<{codes: Int8Array; scales: Float32Array}> | undefined
  const quantizeAll = async () => {
    const codes = new Int8Array(rows * cols)
    const sc = await int8Steps(source, rows, cols, step, (weight, r0) => codes.set(new Int8Array(weight.buffer, weight.byteOffset, weight.byteLength), r0 * cols))
    return {codes, scales: sc}
  }
  // One pass gives both: the scales are kept (4 bytes a row), the codes until read to the end.
  const quantized = () => making ??= quantizeAll().then((q) => {
    scales = q.scales
    all = q.codes
    return q
  }).finally(() => {
    making = undefined
  })
  const codes: TensorRecord = {
    name: codesName, dtype: 'I8', shape: [...source.shape], byteLength: rows * cols,
    async read(start = 0, end = rows * cols) {
      // A view of the kept codes (never written to), so reading allocates nothing.
      const bytes = new Uint8Array((all ?? (await quantized()).codes).buffer).subarray(start, end)
      if (end === rows * cols) all = undefined
      return bytes
    },
  }
  const scalesRecord: TensorRecord = {
    name: scalesName, dtype: 'F32', shape: [rows], byteLength: rows * 4,
    async read(start = 0, end = rows * 4) {
      return new Uint8Array((scales ?? (await quantized()).scales).buffer).slice(start, end)
    },
  }
  return {codes, scales: scalesRecord}
}

/**
 * The buffer a model file's transposed int8 codes are made in, matrix after matrix: one
 * SharedArrayBuffer the size of the largest matrix, made once, into which the workers write their
 * rows in place. A fresh buffer per matrix (75 MB for a 3B `proj_1`, sizes changing from layer to
 * layer) left the allocator holding freed memory; the transposed windows over it are gone too.
 * One matrix holds it at a time (the writer reads its records one after the other).
 */
export class SharedCodes {
  private buffer: SharedArrayBuffer | undefined
  private holder: object | undefined
  constructor(readonly bytes: number) {}

  /** The first `n` bytes, now `holder`'s (whoever held them before must compute theirs again). */
  claim(holder: object, n: number): Uint8Array {
    if (n > this.bytes) throw new Error(`SharedCodes: ${n} bytes asked of a ${this.bytes}-byte buffer`)
    this.buffer ??= new SharedArrayBuffer(this.bytes)
    this.holder = holder
    return new Uint8Array(this.buffer, 0, n)
  }

  holds(holder: object): boolean {
    return this.holder === holder
  }

  /** Let the buffer go (the file is written). */
  release(): void {
    this.buffer = undefined
    this.holder = undefined
  }
}

// A file's step results (the q4 blocks and scales, the embedding's int8 codes) go into slots of
// shared memory (src/pool/slots.ts), one set per file, sized for its largest step.
export {SharedSlots} from '../../pool/index.js'

/** Slots a file's SharedSlots needs: the tasks in flight on the pool and the steps a reader holds. */
export function slotCount(threads: number): number {
  return 2 * threads + 4
}

/** Bytes of one step's result (SharedSlots) for a [rows, cols] matrix: q4 blocks and scales, or int8 codes and scales. */
export function stepResultBytes(rows: number, cols: number, quant: 'q8' | 'q4' | 'q4f16'): number {
  const step = Math.min(rows, Math.max(1, Math.floor(STEP_ELEMENTS / cols)))
  // The parts of a step's result lie in its slot from multiples of 8 bytes (src/pool/slots.ts resultSlot).
  if (quant === 'q8') return Math.ceil((step * cols) / 8) * 8 + step * 4
  return step * q4Blocks(cols) * (16 + (quant === 'q4f16' ? 2 : 4))
}

/**
 * Bytes of the transposed int8 codes held at a time: whole output rows (source columns) up to 32 MiB.
 * A matrix past it (a 3B `proj_1`, 75 MB of codes) is quantized once per window, each pass keeping
 * the codes of its window's columns only: 1.1B's matrices fit in one window.
 */
const CODES_WINDOW_BYTES = 32 * 1024 * 1024

/** Output rows (source columns) of one codes window of a [rows, cols] matrix. */
function windowCols(rows: number, cols: number, windowBytes = CODES_WINDOW_BYTES): number {
  return Math.max(1, Math.min(cols, Math.floor(windowBytes / rows)))
}

/** Bytes of the shared codes buffer a [rows, cols] matrix needs (SharedCodes). */
export function int8WindowBytes(rows: number, cols: number, windowBytes?: number): number {
  return windowCols(rows, cols, windowBytes) * rows
}

/**
 * The writer's int8 MatMul weights: codes stored transposed, [cols, rows] (ONNX's [in, out]), and
 * f32 scales [rows] (one per output channel) of a float [rows, cols] source. A pass quantizes the
 * matrix on the pool, each task writing its rows' codes of the window's columns, transposed, straight
 * into `shared` (so the calling thread neither transposes nor copies them); reads copy out of it. The
 * window is given up after a read reaches its last byte; the scales (4 bytes a row) are kept.
 * `windowBytes`: the window's size (tests; `shared` must hold int8WindowBytes of it).
 */
export function transposedInt8Records(source: TensorRecord, codesName: string, scalesName: string, shared: SharedCodes, windowBytes?: number): {codes: TensorRecord; scales: TensorRecord} {
  const [rows, cols] = rowsOf(source)
  const f32 = castRecord(source, 'F32')
  const step = Math.max(1, Math.floor(STEP_ELEMENTS / cols))
  const n = rows * cols
  const width = windowCols(rows, cols, windowBytes)
  const me = {}
  let held: {first: number; codes: Uint8Array} | undefined
  let scales: Float32Array | undefined
  /** The codes of output rows [first, first + width): one pass over the source (the scales too). */
  const quantizeWindow = async (first: number): Promise<Uint8Array> => {
    const count = Math.min(width, cols - first)
    const into = shared.claim(me, count * rows)
    const sc = new Float32Array(rows)
    async function* tasks(): AsyncGenerator<Int8TransposedTask> {
      for (let r0 = 0; r0 < rows; r0 += step) {
        const r1 = Math.min(rows, r0 + step)
        // On the pool, rows that lie as they are in a file are read by the task itself (as encodeFile's).
        const file = fileValuesOf(source, r0 * cols)
        const values = file ? {values: file, owned: true} : await readF32Task(f32, r0 * cols * 4, r1 * cols * 4)
        yield {kind: 'int8T', ...values, rows: r1 - r0, cols, into, stride: rows, at: r0, first, count}
      }
    }
    let r0 = 0
    for await (const q of mapOrdered(tasks())) {
      sc.set(new Float32Array(q.buffer, q.byteOffset, q.byteLength / 4), r0)
      r0 += q.byteLength / 4
    }
    scales = sc
    held = {first, codes: into}
    return into
  }
  const windowAt = async (outRow: number): Promise<{first: number; codes: Uint8Array}> => {
    const first = Math.floor(outRow / width) * width
    if (held?.first === first && shared.holds(me)) return held
    return {first, codes: await quantizeWindow(first)}
  }
  // Reads run one at a time (they share the window).
  let queue: Promise<unknown> = Promise.resolve()
  const copyRange = async (target: Uint8Array, start: number): Promise<void> => {
    const end = start + target.byteLength
    for (let pos = start; pos < end;) {
      const w = await windowAt(Math.floor(pos / rows))
      const wStart = w.first * rows
      const wEnd = Math.min(end, wStart + w.codes.byteLength)
      target.set(w.codes.subarray(pos - wStart, wEnd - wStart), pos - start)
      pos = wEnd
    }
    if (end === n) held = undefined
  }
  const serial = <T>(f: () => Promise<T>): Promise<T> => {
    const run = queue.then(f)
    queue = run.catch(() => undefined)
    return run
  }
  const copy = (target: Uint8Array, start: number): Promise<void> => serial(() => copyRange(target, start))
  const codesRecord = readingInto({name: codesName, dtype: 'I8', shape: [cols, rows], byteLength: n}, copy)
  const scalesRecord: TensorRecord = {
    name: scalesName, dtype: 'F32', shape: [rows], byteLength: rows * 4,
    async read(start = 0, end = rows * 4) {
      if (!scales) await serial(() => windowAt(0))
      return new Uint8Array(scales!.buffer).slice(start, end)
    },
  }
  return {codes: codesRecord, scales: scalesRecord}
}

/**
 * Rows [first, rows) of an f32 record quantized step by step on the pool, in order: each step's
 * codes go to `codes(weight, row)` (its first row) and the scales of the rows into the result.
 */
async function int8Steps(source: TensorRecord, rows: number, cols: number, step: number, codes?: (weight: Uint8Array, row: number) => void, first = 0, slots?: SharedSlots): Promise<Float32Array> {
  const scales = new Float32Array(rows - first)
  // Each step's result in a slot (mapSlotted), given back once the loop body has used it.
  let r0 = first
  for await (const q of mapSlotted(slots, rowSteps(source, rows, cols, step, 'onnx_int8', {}, first))) {
    codes?.(q.weight!, r0)
    scales.set(new Float32Array(q.scales!.slice().buffer), r0 - first)
    r0 += q.scales!.byteLength / 4
  }
  return scales
}

function streamedInt8(source: TensorRecord, rows: number, cols: number, step: number, shape: readonly number[], codesName: string, scalesName: string, slots?: SharedSlots): {codes: TensorRecord; scales: TensorRecord} {
  let scales: Promise<Float32Array> | undefined
  // The scales the codes' reads computed, row by row: once the codes were read whole (the writer
  // reads them before the scales) the scales need no pass of their own.
  const seen = {scales: new Float32Array(rows), rows: new Uint8Array(rows), count: 0}
  const allScales = (): Promise<Float32Array> => scales ??= seen.count === rows ? Promise.resolve(seen.scales) : int8Steps(source, rows, cols, step)
  // Each read's rows are quantized into the writer's buffer (the part of each step's codes it asks for).
  const codes = readingInto({name: codesName, dtype: 'I8', shape: [...shape], byteLength: rows * cols}, async (target, start) => {
    const end = start + target.byteLength
    const r0 = Math.floor(start / cols)
    const r1 = Math.ceil(end / cols)
    const sc = await int8Steps(source, r1, cols, step, (weight, row) => {
      const from = Math.max(start, row * cols)
      const to = Math.min(end, row * cols + weight.byteLength)
      target.set(weight.subarray(from - row * cols, to - row * cols), from - start)
    }, r0, slots)
    for (let r = r0; r < r1; r++) {
      if (seen.rows[r]) continue
      seen.rows[r] = 1
      seen.scales[r] = sc[r - r0]!
      seen.count++
    }
  })
  const scalesRecord: TensorRecord = {
    name: scalesName, dtype: 'F32', shape: [rows], byteLength: rows * 4,
    async read(start = 0, end = rows * 4) {
      return new Uint8Array((await allScales()).buffer).slice(start, end)
    },
  }
  return {codes, scales: scalesRecord}
}

/** f32 record [rows, cols] of int8 codes (canonical layout) times per-row f32 scales. */
export function dequantizedInt8(name: string, shape: readonly number[], codes: TensorRecord, scales: TensorRecord): TensorRecord {
  const rows = shape[0]!
  const cols = codes.byteLength / rows
  const byteLength = rows * cols * 4
  return {
    name, dtype: 'F32', shape: [...shape], byteLength,
    async read(start = 0, end = byteLength) {
      const r0 = Math.floor(start / (cols * 4))
      const r1 = Math.ceil(end / (cols * 4))
      const q = await codes.read(r0 * cols, r1 * cols)
      const s = new Float32Array((await scales.read(r0 * 4, r1 * 4)).slice().buffer)
      const out = new Float32Array((r1 - r0) * cols)
      const qi = new Int8Array(q.buffer, q.byteOffset, q.byteLength)
      for (let r = 0; r < r1 - r0; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = qi[r * cols + c]! * s[r]!
      return new Uint8Array(out.buffer).subarray(start - r0 * cols * 4, end - r0 * cols * 4)
    },
  }
}

/** The stored form the exact check compares: scheme onnx_int8, parts weight (codes) and scales. */
export function int8Segment(label: string, rows: number, codes: TensorRecord, scales: TensorRecord): StoredSegment {
  const cols = codes.byteLength / rows
  return {
    row0: 0, rows, scheme: 'onnx_int8', params: {}, label,
    read: async (r0, r1) => ({weight: (await codes.read(r0 * cols, r1 * cols)).slice(), scales: (await scales.read(r0 * 4, r1 * 4)).slice()}),
  }
}

/**
 * MatMulNBits 4-bit tensors (scheme onnx_q4): `blocks` U8 [N, K/32, 16] and `scales` [N·K/32]
 * (F32, or F16 for model_q4f16.onnx) computed from a float [N, K] source on demand, row range by
 * row range. The scales of all rows (2 or 4 bytes per 32 weights) are kept from the blocks' own
 * tasks when every block was computed before the scales are read (the writer's order), else computed
 * by a pass of their own.
 */
export function q4Records(source: TensorRecord, blocksName: string, scalesName: string, scaleDtype: 'F32' | 'F16' = 'F32', shared?: {slots: SharedSlots; scales: SharedCodes}): {blocks: TensorRecord; scales: TensorRecord} {
  const slots = shared?.slots
  const [rows, cols] = rowsOf(source)
  const nb = q4Blocks(cols)
  const rowBytes = nb * 16
  const step = Math.max(1, Math.floor(STEP_ELEMENTS / cols))
  const scaleSize = scaleDtype === 'F16' ? 2 : 4
  const params = {dtype: scaleDtype}
  // The scales as stored (f32 bytes or f16 bits, as the scheme encodes them), all rows, kept until
  // a read ends at their last byte: the writer holds every record until the file is done, and one
  // scale per 32 weights kept for every matrix was 340 MB at the 3B shape.
  let scales: Uint8Array | undefined
  let making: Promise<Uint8Array> | undefined
  // The scales the blocks' own tasks gave, step by step: the writer reads every block before the
  // scales (the graph's order), so they are complete by then and the scales need no pass of their own
  // (a second quantization of the whole matrix).
  // They are kept in the file's one scales buffer (`shared.scales`, held by one matrix at a time:
  // a matrix that lost it computes its scales by a pass), not a fresh buffer per matrix.
  const stepCount = Math.ceil(rows / step)
  const me = {}
  let made: {bytes: Uint8Array; seen: Uint8Array; count: number} | undefined
  const ours = (): boolean => made !== undefined && (!shared || shared.scales.holds(me))
  const keepScales = (k: number, bytes: Uint8Array): void => {
    if (!ours()) made = {bytes: shared?.scales.claim(me, rows * nb * scaleSize) ?? new Uint8Array(rows * nb * scaleSize), seen: new Uint8Array(stepCount), count: 0}
    if (!made || made.seen[k]) return
    made.bytes.set(bytes, k * step * nb * scaleSize)
    made.seen[k] = 1
    made.count++
  }
  const computeScales = async (): Promise<Uint8Array> => {
    const out = new Uint8Array(rows * nb * scaleSize)
    let at = 0
    for await (const q of mapOrdered(rowSteps(source, rows, cols, step, 'onnx_q4', params))) {
      out.set(q.scales!, at)
      at += q.scales!.byteLength
    }
    scales = out
    return out
  }
  const allScales = async (): Promise<Uint8Array> => scales ?? (ours() && made!.count === stepCount ? made!.bytes : undefined) ?? (making ??= computeScales().finally(() => {
    making = undefined
  }))
  /** Row steps of blocks, computed ahead of the writer on the pool (into `slots`, each held until its step is dropped). */
  const steps = slottedBlocks(slots, stepCount, (k) => encodeTaskOf(source, 'onnx_q4', params, k * step * cols, Math.min(rows, (k + 1) * step) - k * step, cols), 'blocks', (k, q) => keepScales(k, q.scales!))
  const blocks: TensorRecord = {
    name: blocksName, dtype: 'U8', shape: [rows, nb, 16], byteLength: rows * rowBytes,
    read: (start = 0, end = rows * rowBytes) => steps.readRange(start, end, step * rowBytes, rows * rowBytes),
  }
  const scalesRecord = readingInto({name: scalesName, dtype: scaleDtype, shape: [rows * nb], byteLength: rows * nb * scaleSize}, async (target, start) => {
    const end = start + target.byteLength
    target.set((await allScales()).subarray(start, end))
    if (end === rows * nb * scaleSize) scales = made = undefined
  })
  return {blocks, scales: scalesRecord}
}

/** f32 record [rows, cols] of MatMulNBits blocks and f32 or f16 scales. */
export function dequantizedQ4(name: string, rows: number, cols: number, blocks: TensorRecord, scales: TensorRecord): TensorRecord {
  const nb = q4Blocks(cols)
  const ss = scales.dtype === 'F16' ? 2 : 4
  const byteLength = rows * cols * 4
  return {
    name, dtype: 'F32', shape: [rows, cols], byteLength,
    async read(start = 0, end = byteLength) {
      const r0 = Math.floor(start / (cols * 4))
      const r1 = Math.ceil(end / (cols * 4))
      const b = await blocks.read(r0 * nb * 16, r1 * nb * 16)
      const s = toFloat32(await scales.read(r0 * nb * ss, r1 * nb * ss), scales.dtype)
      const out = dequantizeQ4Rows(b, s, r1 - r0, cols)
      return new Uint8Array(out.buffer).subarray(start - r0 * cols * 4, end - r0 * cols * 4)
    },
  }
}

export function q4Segment(label: string, rows: number, cols: number, blocks: TensorRecord, scales: TensorRecord): StoredSegment {
  const nb = q4Blocks(cols)
  const dtype = scales.dtype === 'F16' ? 'F16' : 'F32'
  const ss = dtype === 'F16' ? 2 : 4
  return {
    row0: 0, rows, scheme: 'onnx_q4', params: {dtype}, label,
    read: async (r0, r1) => ({blocks: (await blocks.read(r0 * nb * 16, r1 * nb * 16)).slice(), scales: (await scales.read(r0 * nb * ss, r1 * nb * ss)).slice()}),
  }
}
