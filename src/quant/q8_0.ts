/**
 * ggml Q8_0 blocks: 32 values share one f16 scale d = max|x| / 127 and are stored as
 * int8 q = round(x / d). Arithmetic follows ggml's reference `quantize_row_q8_0_ref`: the scale
 * and its inverse are f32, the inverse comes from the unrounded d, rounding is half away from
 * zero (C `roundf`), and d is stored as IEEE half.
 */
import {UsageError} from '../errors.js'
import {simdKernels} from '../simd/kernels.js'
import {f16BitsToF32, f32ToF16Bits} from '../tensor/dtype.js'
import {type EncodingDiff, type Scheme} from './types.js'

export const Q8_0_BLOCK = 32
export const Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK

/**
 * Quantize `values` (length a multiple of 32) into `values.length / 32` blocks of 34 bytes (into
 * `into`, of that size, when given: every byte is written).
 * f32 rounding goes through a Float32Array slot (same as Math.fround, faster in the hot loop);
 * `roundf` of a positive f32 is floor(x + 0.5), exact in f64 for |x| ≤ 128.
 */
export function quantizeQ8_0(values: Float32Array, into?: Uint8Array): Uint8Array {
  if (values.length % Q8_0_BLOCK !== 0) throw new RangeError(`Q8_0 needs a multiple of ${Q8_0_BLOCK} values, got ${values.length}`)
  const kernels = values.length >= 256 ? simdKernels() : undefined
  if (!kernels) return quantizeQ8_0Scalar(values, into)
  const out = into ?? new Uint8Array((values.length / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES)
  kernels.q8(values, out)
  return out
}

/** quantizeQ8_0 in JS, element by element: the reference the SIMD kernel (src/simd/kernels.ts) is tested against. */
export function quantizeQ8_0Scalar(values: Float32Array, into?: Uint8Array): Uint8Array {
  const blocks = Math.floor(values.length / Q8_0_BLOCK)
  const out = into ?? new Uint8Array(blocks * Q8_0_BLOCK_BYTES)
  const quants = new Int8Array(out.buffer, out.byteOffset, out.byteLength)
  const f32 = new Float32Array(1)
  for (let b = 0; b < blocks; b++) {
    const base = b * Q8_0_BLOCK
    let amax = 0
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const v = values[base + j]!
      const a = v < 0 ? -v : v
      if (a > amax) amax = a
    }
    f32[0] = amax / 127
    const d = f32[0]!
    f32[0] = d !== 0 ? 1 / d : 0
    const id = f32[0]!
    const o = b * Q8_0_BLOCK_BYTES
    const bits = f32ToF16Bits(d)
    out[o] = bits & 0xff
    out[o + 1] = bits >>> 8
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      f32[0] = values[base + j]! * id
      const x = f32[0]!
      quants[o + 2 + j] = x < 0 ? -Math.floor(0.5 - x) : Math.floor(x + 0.5)
    }
  }
  return out
}

/** Dequantize whole blocks: x = d · q, in f32. */
export function dequantizeQ8_0(bytes: Uint8Array): Float32Array {
  const blocks = Math.floor(bytes.byteLength / Q8_0_BLOCK_BYTES)
  const out = new Float32Array(blocks * Q8_0_BLOCK)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  for (let b = 0; b < blocks; b++) {
    const o = b * Q8_0_BLOCK_BYTES
    const d = f16BitsToF32(view.getUint16(o, true))
    for (let j = 0; j < Q8_0_BLOCK; j++) out[b * Q8_0_BLOCK + j] = d * view.getInt8(o + 2 + j)
  }
  return out
}

/** Scheme `gguf_q8_0`: one part, `blocks` (rows × cols/32 blocks of 34 bytes). No documented alternative rule: ggml's C reference and gguf-py's numpy quantizer are bit-identical by design. */
export const GGUF_Q8_0: Scheme = {
  name: 'gguf_q8_0',
  describe: () => 'Q8_0 (blocks of 32, f16 scale)',
  bitsPerWeight: () => (Q8_0_BLOCK_BYTES * 8) / Q8_0_BLOCK,
  blockSize: () => Q8_0_BLOCK,
  parts: (_params, cols) => [{name: 'blocks', dtype: 'U8', perRow: (cols / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES}],
  check(_params, cols) {
    if (cols % Q8_0_BLOCK !== 0) throw new UsageError('quantize.shape', `Q8_0 needs rows of whole ${Q8_0_BLOCK}-value blocks, not ${cols} values`)
  },
  encode: (values) => ({blocks: quantizeQ8_0(values)}),
  encodeInto(values, rows, cols, _params, into) {
    quantizeQ8_0(values.subarray(0, rows * cols), into.blocks!)
  },
  decode: (parts) => dequantizeQ8_0(parts.blocks!),
  compare(expected, actual, _source, rows, cols): EncodingDiff {
    const a = expected.blocks!
    const b = actual.blocks!
    const perRow = cols / Q8_0_BLOCK
    const diff: EncodingDiff = {elements: rows * cols, identicalElements: 0, blocks: rows * perRow, identicalBlocks: 0, accepted: {}, acceptedBlocks: []}
    for (let block = 0; block < rows * perRow; block++) {
      const o = block * Q8_0_BLOCK_BYTES
      const scaleSame = a[o] === b[o] && a[o + 1] === b[o + 1]
      let same = 0
      let firstCode = -1
      for (let j = 0; j < Q8_0_BLOCK; j++) {
        if (a[o + 2 + j] === b[o + 2 + j]) same++
        else if (firstCode < 0) firstCode = j
      }
      diff.identicalElements += same
      if (scaleSame && same === Q8_0_BLOCK) diff.identicalBlocks++
      else if (!diff.first) {
        const row = Math.floor(block / perRow)
        const g = block % perRow
        diff.first = {row, block: g, col: g * Q8_0_BLOCK + Math.max(0, firstCode), part: scaleSame ? 'blocks' : 'scales'}
      }
    }
    return diff
  },
}
