/**
 * A lazily transposed 2-D tensor record: [rows, cols] → [cols, rows], streamed. The ONNX graph
 * stores MatMul weights as [in, out] initializers (what MatMul consumes without a runtime
 * Transpose) while every other format and the engine use the canonical [out, in]; the writer
 * and the reader go through this record in opposite directions.
 *
 * Reads are served from a window of whole output rows (at most WINDOW_BYTES, one band-by-band
 * pass over the source per window), so sequential chunked reads cost about size / WINDOW_BYTES
 * passes and memory stays bounded by the window plus one source band.
 */
import {dtypeSize} from '../../tensor/dtype.js'
import {type TensorRecord} from '../../tensor/record.js'

const WINDOW_BYTES = 32 * 1024 * 1024
const BAND_BYTES = 4 * 1024 * 1024

export function transposedRecord(record: TensorRecord, name = record.name, limits: {windowBytes?: number; bandBytes?: number} = {}): TensorRecord {
  if (record.shape.length !== 2) throw new Error(`transposedRecord: ${record.name} is not 2-D`)
  const [rows, cols] = record.shape as [number, number]
  const size = dtypeSize(record.dtype)
  const byteLength = record.byteLength
  const outRowBytes = rows * size // one output row = one source column
  const windowRows = Math.max(1, Math.min(cols, Math.floor((limits.windowBytes ?? WINDOW_BYTES) / outRowBytes)))
  const bandRows = Math.max(1, Math.min(rows, Math.floor((limits.bandBytes ?? BAND_BYTES) / (cols * size))))
  let cache: {first: number; count: number; bytes: Uint8Array} | undefined

  const windowAt = async (outRow: number): Promise<{first: number; count: number; bytes: Uint8Array}> => {
    if (cache && outRow >= cache.first && outRow < cache.first + cache.count) return cache
    const first = Math.floor(outRow / windowRows) * windowRows
    const count = Math.min(windowRows, cols - first)
    const bytes = new Uint8Array(count * outRowBytes)
    const View = size === 4 ? Uint32Array : size === 2 ? Uint16Array : size === 1 ? Uint8Array : undefined
    for (let r0 = 0; r0 < rows; r0 += bandRows) {
      const r1 = Math.min(rows, r0 + bandRows)
      const band = await record.read(r0 * cols * size, r1 * cols * size)
      if (View) {
        const aligned = band.byteOffset % size === 0 ? band : band.slice()
        const src = new View(aligned.buffer as ArrayBuffer, aligned.byteOffset, aligned.byteLength / size)
        const dst = new View(bytes.buffer, 0, bytes.byteLength / size)
        for (let r = r0; r < r1; r++) {
          const srcRow = (r - r0) * cols + first
          for (let c = 0; c < count; c++) dst[c * rows + r] = src[srcRow + c]
        }
        continue
      }
      for (let r = r0; r < r1; r++) {
        const srcRow = (r - r0) * cols * size
        for (let c = 0; c < count; c++) {
          const src = srcRow + (first + c) * size
          const dst = c * outRowBytes + r * size
          for (let b = 0; b < size; b++) bytes[dst + b] = band[src + b]
        }
      }
    }
    cache = {first, count, bytes}
    return cache
  }

  return {
    name, dtype: record.dtype, shape: [cols, rows], byteLength,
    async read(start = 0, end = byteLength) {
      const out = new Uint8Array(end - start)
      let pos = start
      while (pos < end) {
        const w = await windowAt(Math.floor(pos / outRowBytes))
        const wStart = w.first * outRowBytes
        const wEnd = Math.min(end, wStart + w.bytes.byteLength)
        out.set(w.bytes.subarray(pos - wStart, wEnd - wStart), pos - start)
        pos = wEnd
      }
      // The last window is dropped once the tensor's last byte is read: the writer keeps every
      // record until the file is done, so a kept window per tensor added up to the model's size.
      if (end === byteLength) cache = undefined
      return out
    },
  }
}
