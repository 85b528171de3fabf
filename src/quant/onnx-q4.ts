/**
 * ONNX `MatMulNBits` 4-bit blocks (com.microsoft, bits 4, block_size 32), symmetric, as
 * onnxruntime's MatMulNBits quantizer writes them with is_symmetric (MLAS `BlockwiseQuantizer`
 * `quantizeAndTranspose` + `range2scale`, onnxruntime/core/mlas/lib/q4_dq.cpp), no zero-point input
 * (so the runtime's default zero point 8 applies):
 *   per output channel n and block b of 32 consecutive input positions (the row of K values is
 *   zero-padded to a multiple of 32, as the quantizer pads K):
 *   min, max over the block; m = |max| > |min| ? max : min; scale = T(−m / 8) (T = f32 or f16);
 *   s = f32(scale); r = s ≠ 0 ? f32(1 / s) : 0; q = clamp(roundf(f32(f32(v · r) + 8)), 0, 15)
 *   (roundf: half away from zero); packed two per byte, the even position in the low nibble.
 *   Dequantized: (q − 8) · s in f32.
 * The value of largest magnitude maps to code 0 (−8 · s = m): the wider negative half of the
 * 4-bit range. A stored row is the canonical [out, in] row: MatMulNBits' B is [N, K/32, 16].
 */
import {UsageError} from '../errors.js'
import {quant2Kernels} from '../simd/quant2.js'
import {f16BitsToF32, f32ToF16Bits} from '../tensor/dtype.js'
import {type EncodingDiff, type Scheme, type SchemeParams} from './types.js'

export const Q4_BLOCK = 32
const Q4_BLOCK_BYTES = Q4_BLOCK / 2

export function q4Blocks(cols: number): number {
  return Math.ceil(cols / Q4_BLOCK)
}

function scaleDtype(params: SchemeParams): 'F32' | 'F16' {
  return params.dtype === 'F16' ? 'F16' : 'F32'
}

const F32_MAX = 3.4028234663852886e38

/** A block's scale (rounded to the scale dtype) from its min and max (each clamped to ±f32 max, as the loop's start values). */
function q4Scale(min: number, max: number, dtype: 'F32' | 'F16'): number {
  const m = Math.abs(max) > Math.abs(min) ? max : min
  const s = Math.fround(-m / 8)
  return dtype === 'F16' ? f16BitsToF32(f32ToF16Bits(s)) : s
}

/** The multiplier of a block's codes: f32(1 / s), 0 for a zero scale (as the kernel, src/simd/quant2.ts). */
function q4Reciprocal(s: number): number {
  return s !== 0 ? Math.fround(1 / s) : 0
}

/**
 * Packed codes [rows, blocks*16] and scales [rows, blocks] (as f32 values, already rounded to the
 * scale dtype): the SIMD kernel (src/simd/quant2.ts) for rows of whole blocks.
 */
export function quantizeQ4Rows(values: Float32Array, rows: number, cols: number, dtype: 'F32' | 'F16', out?: {blocks: Uint8Array; scales: Float32Array}): {blocks: Uint8Array; scales: Float32Array} {
  const kernels = cols % Q4_BLOCK === 0 && rows * cols >= 256 ? quant2Kernels() : undefined
  if (!kernels) {
    const made = quantizeQ4RowsScalar(values, rows, cols, dtype)
    if (!out) return made
    out.blocks.set(made.blocks)
    out.scales.set(made.scales)
    return out
  }
  const blocks = out?.blocks ?? new Uint8Array((rows * cols) / 2)
  const scales = out?.scales ?? new Float32Array((rows * cols) / Q4_BLOCK)
  kernels.q4(values, rows * cols, dtype, blocks, scales)
  // A zero scale's sign follows the loop's order of the block's zeros: such blocks (a zero or a
  // vanishing m) take their scale from the loop's own min/max scan.
  for (let b = 0; b < scales.length; b++) {
    if (scales[b] !== 0) continue
    let min = F32_MAX
    let max = -min
    for (let i = b * Q4_BLOCK; i < (b + 1) * Q4_BLOCK; i++) {
      if (values[i]! < min) min = values[i]!
      if (values[i]! > max) max = values[i]!
    }
    scales[b] = q4Scale(min, max, dtype)
  }
  return {blocks, scales}
}

/** quantizeQ4Rows in JS, element by element: the reference the SIMD kernel is tested against. */
export function quantizeQ4RowsScalar(values: Float32Array, rows: number, cols: number, dtype: 'F32' | 'F16'): {blocks: Uint8Array; scales: Float32Array} {
  const nb = q4Blocks(cols)
  const blocks = new Uint8Array(rows * nb * Q4_BLOCK_BYTES)
  const scales = new Float32Array(rows * nb)
  const f32 = new Float32Array(1)
  const codes = new Uint8Array(Q4_BLOCK)
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const c0 = b * Q4_BLOCK
      let min = F32_MAX
      let max = -min
      for (let j = 0; j < Q4_BLOCK; j++) {
        const v = c0 + j < cols ? values[r * cols + c0 + j]! : 0
        if (v < min) min = v
        if (v > max) max = v
      }
      const s = q4Scale(min, max, dtype)
      scales[r * nb + b] = s
      const rs = q4Reciprocal(s)
      for (let j = 0; j < Q4_BLOCK; j++) {
        const v = c0 + j < cols ? values[r * cols + c0 + j]! : 0
        f32[0] = v * rs
        f32[0] = f32[0]! + 8
        const x = f32[0]!
        const q = x < 0 ? -Math.floor(0.5 - x) : Math.floor(x + 0.5)
        codes[j] = Number.isNaN(x) ? 0 : q < 0 ? 0 : q > 15 ? 15 : q
      }
      const o = (r * nb + b) * Q4_BLOCK_BYTES
      for (let j = 0; j < Q4_BLOCK_BYTES; j++) blocks[o + j] = codes[2 * j]! | (codes[2 * j + 1]! << 4)
    }
  }
  return {blocks, scales}
}

export function dequantizeQ4Rows(blocks: Uint8Array, scales: Float32Array, rows: number, cols: number): Float32Array {
  const nb = q4Blocks(cols)
  const out = new Float32Array(rows * cols)
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const b = Math.floor(c / Q4_BLOCK)
      const byte = blocks[(r * nb + b) * Q4_BLOCK_BYTES + ((c % Q4_BLOCK) >> 1)]!
      const q = c % 2 === 0 ? byte & 0xf : byte >> 4
      out[r * cols + c] = (q - 8) * scales[r * nb + b]!
    }
  }
  return out
}

/** The scales as stored: f32 bytes (a view, no copy), or f16 bits little-endian (`into` when given). */
function scaleBytes(scales: Float32Array, dtype: 'F32' | 'F16', into?: Uint8Array): Uint8Array {
  if (dtype === 'F32') {
    const bytes = new Uint8Array(scales.buffer, scales.byteOffset, scales.byteLength)
    into?.set(bytes)
    return into ?? bytes
  }
  const out = into ?? new Uint8Array(2 * scales.length)
  for (let i = 0; i < scales.length; i++) {
    const bits = f32ToF16Bits(scales[i]!)
    out[2 * i] = bits & 0xff
    out[2 * i + 1] = bits >> 8
  }
  return out
}

/** This thread's f32 scales for encodeInto (one buffer for every step). */
let scratchScales = new Float32Array(0)

function scaleValues(bytes: Uint8Array, dtype: 'F32' | 'F16'): Float32Array {
  const copy = bytes.slice()
  if (dtype === 'F32') return new Float32Array(copy.buffer)
  const bits = new Uint16Array(copy.buffer)
  return Float32Array.from(bits, (b) => f16BitsToF32(b))
}

/** Scheme `onnx_q4`: parts `blocks` (U8, ceil(cols/32)·16 per row) and `scales` (params.dtype F32 | F16, ceil(cols/32) per row). */
export const ONNX_Q4: Scheme = {
  name: 'onnx_q4',
  describe: (params) => `MatMulNBits 4-bit, block 32, symmetric (zero point 8), ${scaleDtype(params)} scales`,
  bitsPerWeight: (params) => 4 + (scaleDtype(params) === 'F16' ? 16 : 32) / Q4_BLOCK,
  blockSize: () => Q4_BLOCK,
  parts: (params, cols) => [{name: 'blocks', dtype: 'U8', perRow: q4Blocks(cols) * Q4_BLOCK_BYTES}, {name: 'scales', dtype: scaleDtype(params), perRow: q4Blocks(cols)}],
  check(params) {
    const extra = Object.keys(params).filter((k) => k !== 'dtype')
    if (extra.length > 0 || (params.dtype !== undefined && params.dtype !== 'F32' && params.dtype !== 'F16')) throw new UsageError('quantize.params', 'onnx_q4 takes only dtype F32 or F16')
  },
  encode(values, rows, cols, params) {
    const dtype = scaleDtype(params)
    const {blocks, scales} = quantizeQ4Rows(values, rows, cols, dtype)
    return {blocks, scales: scaleBytes(scales, dtype)}
  },
  encodeInto(values, rows, cols, params, into) {
    const dtype = scaleDtype(params)
    const n = rows * q4Blocks(cols)
    if (scratchScales.length < n) scratchScales = new Float32Array(n)
    const scales = scratchScales.subarray(0, n)
    quantizeQ4Rows(values, rows, cols, dtype, {blocks: into.blocks!, scales})
    scaleBytes(scales, dtype, into.scales!)
  },
  decode(parts, rows, cols, params) {
    return dequantizeQ4Rows(parts.blocks!, scaleValues(parts.scales!, scaleDtype(params)), rows, cols)
  },
  compare(expected, actual, _source, rows, cols, params): EncodingDiff {
    const nb = q4Blocks(cols)
    const sb = scaleDtype(params) === 'F16' ? 2 : 4
    const diff: EncodingDiff = {elements: rows * cols, identicalElements: 0, blocks: rows * nb, identicalBlocks: 0, accepted: {}, acceptedBlocks: []}
    for (let r = 0; r < rows; r++) {
      for (let b = 0; b < nb; b++) {
        const k = r * nb + b
        let scaleSame = true
        for (let i = 0; i < sb; i++) if (expected.scales![k * sb + i] !== actual.scales![k * sb + i]) scaleSame = false
        let same = 0
        let firstCode = -1
        const n = Math.min(Q4_BLOCK, cols - b * Q4_BLOCK)
        for (let j = 0; j < n; j++) {
          const o = k * Q4_BLOCK_BYTES + (j >> 1)
          const shift = (j % 2) * 4
          if (((expected.blocks![o]! >> shift) & 0xf) === ((actual.blocks![o]! >> shift) & 0xf)) same++
          else if (firstCode < 0) firstCode = j
        }
        let padSame = true
        for (let j = 0; j < Q4_BLOCK_BYTES; j++) if (expected.blocks![k * Q4_BLOCK_BYTES + j] !== actual.blocks![k * Q4_BLOCK_BYTES + j]) padSame = false
        if (scaleSame) diff.identicalElements += same
        if (scaleSame && padSame) diff.identicalBlocks++
        else if (!diff.first) diff.first = {row: r, block: b, col: b * Q4_BLOCK + Math.max(0, firstCode), part: scaleSame ? 'blocks' : 'scales'}
      }
    }
    return diff
  },
}
