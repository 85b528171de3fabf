/**
 * A lazily transposed 2-D tensor record: [rows, cols] → [cols, rows], streamed. The ONNX graph
 * stores MatMul weights as [in, out] initializers (what MatMul consumes without a runtime
 * Transpose) while every other format and the engine use the canonical [out, in]; the writer
 * and the reader go through this record in opposite directions.
 *
 * Reads are served from a window of whole output rows (at most WINDOW_BYTES, one band-by-band
 * pass over the source per window), so sequential chunked reads cost about size / WINDOW_BYTES
 * passes and memory stays bounded by the window plus two source bands (buffers reused from
 * window to window). With WebAssembly SIMD and `windowInKernel` the window lives in a transpose
 * module's memory (src/simd/transpose.ts TransposeWindow): bands are read straight into its two
 * band slots, the next while one is transposed, and transposed straight into the window by the
 * SIMD tile kernel (a copy into the kernel's memory and one per column out of it were 0.85 s of the
 * 2.1 s a 1.1B f32 export's main thread was busy; an element loop wrote each value a whole output
 * row from the last: ~20 ns an element). Without SIMD, or for windows not asked to, bands go
 * through the thread's kernel and are copied out column by column.
 */
import {freeBuffers} from '../../pool/index.js'
import {transposeKernel, transposeWindow, transposeWindowOf} from '../../simd/transpose.js'
import {dtypeSize} from '../../tensor/dtype.js'
import {CHUNK_BYTES, fileRangeOf, readingInto, readIntoOf, type ReadView, type TensorRecord, withReadView} from '../../tensor/record.js'

const WINDOW_BYTES = 64 * 1024 * 1024
export const BAND_BYTES = 4 * 1024 * 1024
const BAND_ROW_STEP = 32

interface Window {first: number; count: number; bytes: Uint8Array}

/**
 * The buffers of the last read (the largest of each kind), for the next: allocating a 32 MiB window
 * and a 4 MiB band per matrix made V8 run a full collection every ~50 ms. A record hands its buffers
 * back after every read, not only after its last byte: a reader that goes back over a tensor it has
 * read to the end (the MLX quantizer reading an ONNX source's row blocks out of order) otherwise made
 * a new window each time, kept until the file was done (one per matrix: 3.5 GB at 3B). The window
 * stays tagged with its record and rows, so the record's next read takes it back as it was.
 */
interface Kept {buffer: ArrayBuffer; owner?: object; window?: Window}
const FREE: {window?: Kept; band?: Kept} = {}
/**
 * `size` bytes of the kept buffer, else of a new one of `capacity` bytes. A reader of an ONNX source
 * asks for the most its window or band may take: made for the matrix at hand, each bigger matrix made
 * a bigger one, and the smaller ones stayed until a collection (ONNX f16 → gguf at 3B: 30 MB above the
 * steady peak while the matrices grew; the pages of a buffer past what is written are never touched).
 * The export makes them to size: its fewer, bigger allocations ran fewer collections, and the fp16
 * file's window, let go at the file's end (releaseTransposeBuffers), stayed alive under the q8 file
 * (3B `--variants fp16,q8,q4,q4f16`: 287 → 349 MB). `inKernel`: a window in a kernel module's memory
 * (where there is SIMD), bands transposed straight into it.
 */
function take(kind: keyof typeof FREE, size: number, capacity: number, inKernel = false): Uint8Array {
  const free = FREE[kind]
  FREE[kind] = undefined
  if (free && free.buffer.byteLength >= size) return new Uint8Array(free.buffer, 0, size)
  drop(free?.buffer) // too small: its memory goes before the bigger one is made
  const window = inKernel ? transposeWindow(Math.max(size, WINDOW_BYTES)) : undefined
  if (window) return new Uint8Array(window.buffer, 0, size)
  const buffer = new ArrayBuffer(Math.max(size, capacity))
  MADE.add(buffer)
  return new Uint8Array(buffer, 0, size)
}
/**
 * The plain buffers `take` made (a kernel's window is not one). One no longer kept is freed at once
 * (pool `freeBuffers`): left to the collector, the windows of a 3B fp16 file, a bigger one for each
 * bigger matrix, piled up to 162 MB of ArrayBuffers (280 MB RSS) before a collection came.
 */
const MADE = new WeakSet<ArrayBuffer>()
function drop(buffer: ArrayBuffer | undefined): void {
  if (buffer && MADE.has(buffer)) freeBuffers([buffer])
}
/**
 * The `settled` of the last view handed out of a window (ReadView): awaited before any window is
 * built, since the buffer is shared by every record (FREE) and the view's write may still be queued.
 */
let viewsInUse: (() => Promise<void>) | undefined
async function settleViews(): Promise<void> {
  const settled = viewsInUse
  viewsInUse = undefined
  await settled?.()
}
/** Let the kept buffers go (a model file is done: the next may not transpose floats at all). */
export function releaseTransposeBuffers(): void {
  viewsInUse = undefined // its writer's buffers too
  drop(FREE.window?.buffer)
  drop(FREE.band?.buffer)
  FREE.window = undefined
  FREE.band = undefined
}
function give(kind: keyof typeof FREE, bytes: Uint8Array | undefined, owner?: object, window?: Window): void {
  const buffer = bytes?.buffer as ArrayBuffer | undefined
  if (!buffer) return
  const kept = FREE[kind]?.buffer
  if (buffer.byteLength < (kept?.byteLength ?? 0)) return drop(buffer)
  if (kept !== buffer) drop(kept)
  FREE[kind] = {buffer, ...(owner ? {owner} : {}), ...(window ? {window} : {})}
}

/**
 * `onDone`: called once the tensor's last byte has been read (the source may let its data go).
 * `windowInKernel`: a window this record makes lives in a transpose module's memory (the fast path).
 * Only for the process's last use of windows (an export's last model file): a module's memory is
 * freed by a full collection, which V8 may not run for the rest of the process (a 3B fp16 file's
 * 64 MiB window stayed resident under the next file's q8 codes: 313 vs 226 MB with a forced GC).
 */
export function transposedRecord(record: TensorRecord, name = record.name, limits: {windowBytes?: number; bandBytes?: number; onDone?: () => void; windowInKernel?: boolean} = {}): TensorRecord {
  if (record.shape.length !== 2) throw new Error(`transposedRecord: ${record.name} is not 2-D`)
  const [rows, cols] = record.shape as [number, number]
  const size = dtypeSize(record.dtype)
  const byteLength = record.byteLength
  const outRowBytes = rows * size // one output row = one source column
  const windowRows = Math.max(1, Math.min(cols, Math.floor((limits.windowBytes ?? WINDOW_BYTES) / outRowBytes)))
  // A whole number of the kernel's row steps (32 rows: 4 tiles of 8 f16 or 8 of 4 f32), else its
  // last rows went a tile at a time and the last few byte by byte, every band.
  const bandFit = Math.max(1, Math.min(rows, Math.floor((limits.bandBytes ?? BAND_BYTES) / (cols * size))))
  const bandRows = bandFit > BAND_ROW_STEP ? bandFit - (bandFit % BAND_ROW_STEP) : bandFit
  const readInto = readIntoOf(record)
  const inFile = fileRangeOf(record) !== undefined
  // The current window and the buffers (a band read into, a window's bytes) during one read; handed
  // back to FREE after it.
  let cache: Window | undefined
  let spare: {band?: Uint8Array; window?: Uint8Array} = {}
  const owner = {}

  /** Rows [r0, r1) of the source, into `into` when given (else into the kept band buffer, or as `read` gives them). */
  const readBand = async (r0: number, r1: number, into?: Uint8Array): Promise<Uint8Array> => {
    const start = r0 * cols * size
    const end = r1 * cols * size
    if (!readInto) {
      const bytes = await record.read(start, end)
      into?.set(bytes)
      return into ?? bytes
    }
    const band = into ?? (spare.band ??= take('band', bandRows * cols * size, limits.bandBytes ?? 0)).subarray(0, end - start)
    // In writer-sized chunks: a cast source reads through its shared scratch buffers (chunk-sized;
    // a whole 4 MiB band of f16 would allocate its 8 MiB of f32 every time). Bytes as they lie in a
    // file come in one read (a quarter of the thread-pool round trips).
    const step = inFile ? Math.max(CHUNK_BYTES, band.byteLength) : CHUNK_BYTES
    for (let at = 0; at < band.byteLength; at += step) await readInto(band.subarray(at, Math.min(band.byteLength, at + step)), start + at)
    return band
  }

  const windowAt = async (outRow: number): Promise<Window> => {
    // The window this record handed back after its last read, if no other record has taken it since.
    const kept = FREE.window
    if (!cache && kept?.owner === owner && kept.window) {
      FREE.window = undefined
      cache = kept.window
      spare.window = new Uint8Array(kept.buffer, 0, windowRows * outRowBytes)
    }
    if (cache && outRow >= cache.first && outRow < cache.first + cache.count) return cache
    const first = Math.floor(outRow / windowRows) * windowRows
    const count = Math.min(windowRows, cols - first)
    // One buffer serves every window: what was handed out of it (views) is done with before the
    // first band is transposed into it (the band's read meanwhile).
    cache = undefined
    spare.window ??= take('window', windowRows * outRowBytes, limits.windowBytes ?? 0, limits.windowInKernel)
    const bytes = spare.window.subarray(0, count * outRowBytes)
    const direct = transposeWindowOf(bytes.buffer)
    if (direct?.fits(bytes.byteLength, bandRows * cols, size)) {
      // Straight into the window (a kernel's memory, with room for two bands after it): band k + 1 is
      // read while band k is transposed.
      const slot = (r0: number) => direct.band((r0 / bandRows) % 2, (Math.min(rows, r0 + bandRows) - r0) * cols * size)
      let next = readBand(0, Math.min(rows, bandRows), slot(0))
      for (let r0 = 0; r0 < rows; r0 += bandRows) {
        const r1 = Math.min(rows, r0 + bandRows)
        await next
        if (r1 < rows) {
          next = readBand(r1, Math.min(rows, r1 + bandRows), slot(r1))
          next.catch(() => undefined) // awaited next round; never an unhandled rejection meanwhile
        }
        if (r0 === 0) await settleViews()
        direct.columns((r0 / bandRows) % 2, r1 - r0, cols, first, count, size, r0 * size, outRowBytes)
      }
    } else {
      // Through the thread's kernel (a copy in, one per column out), else the element loop.
      const kernel = transposeKernel()
      for (let r0 = 0; r0 < rows; r0 += bandRows) {
        const r1 = Math.min(rows, r0 + bandRows)
        const band = await readBand(r0, r1)
        if (r0 === 0) await settleViews()
        if (kernel?.columns(band, r1 - r0, cols, first, count, size, (c, column) => bytes.set(column, c * outRowBytes + r0 * size))) continue
        transposeBand(band, r0, r1, first, count, bytes)
      }
    }
    cache = {first, count, bytes}
    return cache
  }

  // The element loop (no SIMD, or a band bigger than the kernel's memory).
  const transposeBand = (band: Uint8Array, r0: number, r1: number, first: number, count: number, bytes: Uint8Array): void => {
    const View = size === 4 ? Uint32Array : size === 2 ? Uint16Array : size === 1 ? Uint8Array : undefined
    if (View) {
      const aligned = band.byteOffset % size === 0 ? band : band.slice()
      const src = new View(aligned.buffer as ArrayBuffer, aligned.byteOffset, aligned.byteLength / size)
      const dst = new View(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / size)
      for (let r = r0; r < r1; r++) {
        const srcRow = (r - r0) * cols + first
        for (let c = 0; c < count; c++) dst[c * rows + r] = src[srcRow + c]!
      }
      return
    }
    for (let r = r0; r < r1; r++) {
      const srcRow = (r - r0) * cols * size
      for (let c = 0; c < count; c++) {
        const src = srcRow + (first + c) * size
        const dst = c * outRowBytes + r * size
        for (let b = 0; b < size; b++) bytes[dst + b] = band[src + b]!
      }
    }
  }

  /** Bytes [start, end) of the window holding `start`, up to its end. */
  const inWindow = async (start: number, end: number): Promise<Uint8Array> => {
    const w = await windowAt(Math.floor(start / outRowBytes))
    const wStart = w.first * outRowBytes
    return w.bytes.subarray(start - wStart, Math.min(end, wStart + w.bytes.byteLength) - wStart)
  }
  /** After every read (the buffers go back to FREE: the writer keeps every record until the file is done, so a window kept per tensor added up to the model's size). */
  const readDone = (end: number): void => {
    give('window', spare.window, owner, cache)
    give('band', spare.band)
    cache = undefined
    spare = {}
    if (end === byteLength) limits.onDone?.()
  }
  const copyRange = async (target: Uint8Array, start: number): Promise<void> => {
    const end = start + target.byteLength
    for (let pos = start; pos < end;) {
      const bytes = await inWindow(pos, end)
      target.set(bytes, pos - start)
      pos += bytes.byteLength
    }
    readDone(end)
  }
  // The window's own bytes, no copy (the ONNX writer writes them: a copy into its chunk buffers was
  // 0.26 s of a 1.1B f32 export's 4.3 s CPU). Bytes up to the window's end.
  const viewRange: ReadView = async (start, end, settled) => {
    const bytes = await inWindow(start, end)
    viewsInUse = settled
    readDone(start + bytes.byteLength)
    return bytes
  }
  // Reads run one at a time: they share the window and band buffers.
  let queue: Promise<unknown> = Promise.resolve()
  const serial = <A extends unknown[], R>(run: (...args: A) => Promise<R>) => (...args: A): Promise<R> => {
    const result = queue.then(() => run(...args))
    // Settled to nothing: a queue holding the last view kept each record's window (the writer keeps
    // every record until the file is done: 1.1B --variants fp16,q8 at 1.2 GB).
    queue = result.then(() => undefined, () => undefined)
    return result
  }

  const transposed = readingInto({name, dtype: record.dtype, shape: [cols, rows], byteLength}, serial(copyRange))
  // Views for windows in a kernel's memory only (an export's last file): with JS windows (the earlier
  // files of --variants) the fp16 file of 3B --variants fp16,q8,q4,q4f16 peaked at 307 MB, not 295.
  return limits.windowInKernel && transposeKernel() ? withReadView(transposed, serial(viewRange)) : transposed
}
