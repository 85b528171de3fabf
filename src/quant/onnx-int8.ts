/**
 * ONNX weight-only int8 (`model_quantized.onnx`): symmetric, one f32 scale per output channel
 * (per canonical row), zero point 0, the rule of onnxruntime's quantizer for QInt8 symmetric
 * per-channel weights (quant_utils: rmin = min(x, 0), rmax = max(x, 0), absmax = max(|rmin|, rmax),
 * scale = 2·absmax / (127 − (−127)) as f32, a scale below f32's smallest normal becomes 1;
 * q = round_half_even(f32(x / scale)), clipped to [−127, 127]). The graph stores the codes as an
 * int8 initializer and a `DequantizeLinear` (x − 0) · scale feeds MatMul / Gather / Gemm.
 */
import {UsageError} from '../errors.js'
import {CHUNK2, quant2Kernels} from '../simd/quant2.js'
import {type EncodingDiff, type Scheme} from './types.js'

const F32_TINY = 1.1754943508222875e-38

/** Round half to even of an f64 holding an f32 value. */
function rint(x: number): number {
  const r = Math.round(x)
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r
}

/** The f32 scale of a row whose largest |x| is `amax`: amax / 127, or 1 below f32's smallest normal. */
function int8Scale(amax: number): number {
  const scale = Math.fround(amax / 127)
  return scale < F32_TINY ? 1 : scale
}

/** f32 scale per row and int8 codes (row-major) of `rows` rows of `cols` values: the SIMD kernel (src/simd/quant2.ts) where it applies. */
export function quantizeInt8Rows(values: Float32Array, rows: number, cols: number, codes: Int8Array = new Int8Array(rows * cols)): {codes: Int8Array; scales: Float32Array} {
  const kernels = cols % 16 === 0 && cols <= CHUNK2 && rows * cols >= 256 ? quant2Kernels() : undefined
  if (!kernels) return quantizeInt8RowsScalar(values, rows, cols, codes)
  const scales = new Float32Array(rows)
  // The row's largest |x| (NaN ignored, 0 when none) from its min and max.
  kernels.int8(values, rows, cols, codes, (r, min, max, par, o) => {
    par[o] = scales[r] = int8Scale(Math.max(0, -min, max))
  })
  return {codes, scales}
}

let scratch = new Int8Array(0)

/**
 * quantizeInt8Rows with the codes of columns [first, first + count) written transposed into `into`:
 * code (r, c) at `into[(c − first) · stride + at + r]` (rows [at, at + rows) of a [out, in] matrix
 * stored [in, out], stride = out; a window of its output rows). Returns the rows' scales.
 */
export function quantizeInt8Transposed(values: Float32Array, rows: number, cols: number, into: Uint8Array, stride: number, at: number, first = 0, count = cols): Float32Array {
  // The row-major codes go to this thread's scratch buffer: a fresh one per task was garbage each
  // pool worker let pile up (tens of MB) until its next collection.
  if (scratch.byteLength < rows * cols) scratch = new Int8Array(rows * cols)
  const {codes, scales} = quantizeInt8Rows(values, rows, cols, scratch.subarray(0, rows * cols))
  const src = new Uint8Array(codes.buffer, codes.byteOffset, codes.byteLength)
  // Column by column: the reads of one column touch `rows` cache lines, the same ones for the next 63.
  for (let c = 0; c < count; c++) {
    const o = c * stride + at
    for (let r = 0, i = first + c; r < rows; r++, i += cols) into[o + r] = src[i]!
  }
  return scales
}

/** quantizeInt8Rows in JS, element by element: the reference the SIMD kernel is tested against. */
export function quantizeInt8RowsScalar(values: Float32Array, rows: number, cols: number, codes: Int8Array = new Int8Array(rows * cols)): {codes: Int8Array; scales: Float32Array} {
  const scales = new Float32Array(rows)
  const f32 = new Float32Array(1)
  for (let r = 0; r < rows; r++) {
    const base = r * cols
    let amax = 0
    for (let c = 0; c < cols; c++) {
      const v = values[base + c]!
      const a = v < 0 ? -v : v
      if (a > amax) amax = a
    }
    const scale = int8Scale(amax)
    scales[r] = scale
    for (let c = 0; c < cols; c++) {
      f32[0] = values[base + c]! / scale
      const q = rint(f32[0]!)
      codes[base + c] = q > 127 ? 127 : q < -127 ? -127 : q
    }
  }
  return {codes, scales}
}

/** x = q · scale in f32 (DequantizeLinear with zero point 0). */
export function dequantizeInt8Rows(codes: Int8Array, scales: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols)
  for (let r = 0; r < rows; r++) {
    const s = scales[r]!
    for (let c = 0; c < cols; c++) out[r * cols + c] = codes[r * cols + c]! * s
  }
  return out
}

/** Scheme `onnx_int8`: parts `weight` (int8 codes as U8 bit patterns, cols per row) and `scales` (F32, one per row). A block is a row. */
export const ONNX_INT8: Scheme = {
  name: 'onnx_int8',
  describe: () => 'int8 symmetric per output channel, f32 scales (ONNX DequantizeLinear)',
  bitsPerWeight: () => 8,
  blockSize: (_params, cols) => cols,
  parts: (_params, cols) => [{name: 'weight', dtype: 'U8', perRow: cols}, {name: 'scales', dtype: 'F32', perRow: 1}],
  check(params) {
    if (Object.keys(params).length > 0) throw new UsageError('quantize.params', 'onnx_int8 takes no params')
  },
  encode(values, rows, cols) {
    const {codes, scales} = quantizeInt8Rows(values, rows, cols)
    return {weight: new Uint8Array(codes.buffer), scales: new Uint8Array(scales.buffer)}
  },
  encodeInto(values, rows, cols, _params, into) {
    const {weight, scales} = into as {weight: Uint8Array; scales: Uint8Array}
    const out = quantizeInt8Rows(values, rows, cols, new Int8Array(weight.buffer, weight.byteOffset, weight.byteLength))
    scales.set(new Uint8Array(out.scales.buffer))
  },
  decode(parts, rows, cols) {
    const w = parts.weight!
    const s = parts.scales!
    const scales = new Float32Array(s.slice().buffer)
    return dequantizeInt8Rows(new Int8Array(w.buffer, w.byteOffset, w.byteLength), scales, rows, cols)
  },
  compare(expected, actual, _source, rows, cols): EncodingDiff {
    const diff: EncodingDiff = {elements: rows * cols, identicalElements: 0, blocks: rows, identicalBlocks: 0, accepted: {}, acceptedBlocks: []}
    for (let r = 0; r < rows; r++) {
      let scaleSame = true
      for (let b = 0; b < 4; b++) if (expected.scales![r * 4 + b] !== actual.scales![r * 4 + b]) scaleSame = false
      let same = 0
      let firstCode = -1
      for (let c = 0; c < cols; c++) {
        if (expected.weight![r * cols + c] === actual.weight![r * cols + c]) same++
        else if (firstCode < 0) firstCode = c
      }
      diff.identicalElements += scaleSame ? same : 0
      if (scaleSame && same === cols) diff.identicalBlocks++
      else if (!diff.first) diff.first = {row: r, block: 0, col: Math.max(0, firstCode), part: scaleSame ? 'weight' : 'scales'}
    }
    return diff
  },
}
