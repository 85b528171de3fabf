/**
 * ggml Q8_0 blocks: 32 values share one f16 scale d = max|x| / 127 and are stored as
 * int8 q = round(x / d). Arithmetic follows ggml's reference `quantize_row_q8_0_ref`: the scale
 * and its inverse are f32, the inverse comes from the unrounded d, rounding is half away from
 * zero (C `roundf`), and d is stored as IEEE half.
 */
import {f16BitsToF32, f32ToF16Bits} from '../../tensor/dtype.js'

export const Q8_0_BLOCK = 32
export const Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK

const f = Math.fround

/** C `roundf`: halves go away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x)
}

/** Quantize `values` (length a multiple of 32) into `values.length / 32` blocks of 34 bytes. */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  if (values.length % Q8_0_BLOCK !== 0) throw new RangeError(`Q8_0 needs a multiple of ${Q8_0_BLOCK} values, got ${values.length}`)
  const blocks = values.length / Q8_0_BLOCK
  const out = new Uint8Array(blocks * Q8_0_BLOCK_BYTES)
  const quants = new Int8Array(out.buffer)
  for (let b = 0; b < blocks; b++) {
    const base = b * Q8_0_BLOCK
    let amax = 0
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const v = values[base + j]!
      const a = v < 0 ? -v : v
      if (a > amax) amax = a
    }
    const d = f(amax / 127)
    const id = d !== 0 ? f(1 / d) : 0
    const o = b * Q8_0_BLOCK_BYTES
    const bits = f32ToF16Bits(d)
    out[o] = bits & 0xff
    out[o + 1] = bits >>> 8
    for (let j = 0; j < Q8_0_BLOCK; j++) quants[o + 2 + j] = roundf(f(values[base + j]! * id))
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
