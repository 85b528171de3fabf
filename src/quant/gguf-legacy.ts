/**
 * ggml's 32-value block types Q4_0, Q4_1, Q5_0, Q5_1 (ggml-common.h, ggml-quants.c), as written by
 * llama-quantize without an importance matrix (`quantize_q4_0` … call `quantize_row_*_ref` when
 * there are no quant weights).
 *
 * - Q4_0 / Q5_0 (symmetric): d = m / -8 (Q5_0: / -16) where m is the value of largest magnitude
 *   (the first one met, with its sign); codes are trunc(x/d + 8.5) (Q5_0: + 16.5) capped at 15 (31);
 *   value = (code - 8) · d (Q5_0: code - 16).
 * - Q4_1 / Q5_1 (affine): d = (max - min) / 15 (31), m = min; codes trunc((x - min)/d + 0.5)
 *   (Q4_1 capped at 15; Q5_1 not capped, as in ggml); value = code · d + m.
 * Block layout: f16 d, [f16 m], [u32 qh: the fifth bit of each code, element j at bit j], 16 bytes
 * qs: element j (< 16) in the low nibble of qs[j], element j + 16 in its high nibble.
 *
 * Every step is one f32 operation as in the C (Math.fround after each; f64 holds each exact f32
 * result before its single rounding, so this is correctly rounded f32 arithmetic), the inverse
 * scale comes from the unrounded f32 d, and d, m are stored as IEEE half, rounded to nearest even.
 */
import {ggmlKernels} from '../simd/ggml.js'
import {ggmlBlockScheme, type GgmlBlockType, putHalf, readHalf} from './ggml-block.js'

export const LEGACY_BLOCK = 32
const HALF = LEGACY_BLOCK / 2
const fr = Math.fround

/** C's `(int8_t)f` / `(uint8_t)f` as x86-64 compiles it: truncate to int32, keep the low byte. */
const lowByte = (f: number) => (Math.trunc(f) | 0) & 0xff
const asInt8 = (f: number) => (lowByte(f) << 24) >> 24

interface Legacy {
  type: 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1'
  bits: 4 | 5
  affine: boolean
}

function layout({bits, affine}: Legacy): {bytes: number; qh: number; qs: number} {
  const header = affine ? 4 : 2
  const qh = bits === 5 ? header : -1
  const qs = header + (bits === 5 ? 4 : 0)
  return {bytes: qs + HALF, qh, qs}
}


/** The blocks of `values`: in wasm SIMD lanes (src/simd/ggml.ts, four blocks at a time) when there are any, else the scalar loop. */
function quantizer(spec: Legacy): (values: Float32Array, into?: Uint8Array) => Uint8Array {
  const scalar = scalarQuantizer(spec)
  const {bytes} = layout(spec)
  return (values, into) => {
    const simd = values.length >= 128 && values.length % LEGACY_BLOCK === 0 ? ggmlKernels() : undefined
    if (!simd) return scalar(values, into)
    const out = into ?? new Uint8Array((values.length / LEGACY_BLOCK) * bytes)
    simd.legacy(spec.type, values, out)
    return out
  }
}

/** The scalar reference of the wasm lanes (test/gguf-k-simd.test.ts). */
export const quantizeLegacyScalar = (type: Legacy['type'], values: Float32Array) => SCALAR[type](values)

function scalarQuantizer(spec: Legacy): (values: Float32Array, into?: Uint8Array) => Uint8Array {
  const {bytes, qh: qhAt, qs: qsAt} = layout(spec)
  const levels = (1 << spec.bits) - 1
  const cap = levels
  return (values, into) => {
    if (values.length % LEGACY_BLOCK !== 0) throw new RangeError(`${spec.type} needs a multiple of ${LEGACY_BLOCK} values, got ${values.length}`)
    const blocks = values.length / LEGACY_BLOCK
    const out = into ?? new Uint8Array(blocks * bytes)
    const codes = new Int32Array(LEGACY_BLOCK)
    for (let b = 0; b < blocks; b++) {
      const base = b * LEGACY_BLOCK
      const o = b * bytes
      if (spec.affine) {
        let min = 3.4028234663852886e38
        let max = -3.4028234663852886e38
        for (let j = 0; j < LEGACY_BLOCK; j++) {
          const v = values[base + j]!
          if (v < min) min = v
          if (v > max) max = v
        }
        const d = fr(fr(max - min) / levels)
        const id = d !== 0 ? fr(1 / d) : 0
        putHalf(out, o, d)
        putHalf(out, o + 2, min)
        for (let j = 0; j < LEGACY_BLOCK; j++) {
          const x = fr(fr(values[base + j]! - min) * id)
          const rounded = fr(x + 0.5)
          codes[j] = spec.bits === 4 ? Math.min(15, asInt8(rounded)) : lowByte(rounded)
        }
      } else {
        let amax = 0
        let max = 0
        for (let j = 0; j < LEGACY_BLOCK; j++) {
          const v = values[base + j]!
          const a = Math.abs(v)
          if (amax < a) {
            amax = a
            max = v
          }
        }
        const offset = spec.bits === 4 ? 8 : 16
        const d = fr(max / -offset)
        const id = d !== 0 ? fr(1 / d) : 0
        putHalf(out, o, d)
        for (let j = 0; j < LEGACY_BLOCK; j++) codes[j] = Math.min(cap, asInt8(fr(fr(values[base + j]! * id) + (offset + 0.5))))
      }
      let qh = 0
      for (let j = 0; j < HALF; j++) {
        const c0 = codes[j]! & 0xff
        const c1 = codes[j + HALF]! & 0xff
        out[o + qsAt + j] = (c0 & 0x0f) | ((c1 & 0x0f) << 4)
        if (qhAt >= 0) qh |= (((c0 & 0x10) >>> 4) << j) | (((c1 & 0x10) >>> 4) << (j + HALF))
      }
      if (qhAt >= 0) {
        out[o + qhAt] = qh & 0xff
        out[o + qhAt + 1] = (qh >>> 8) & 0xff
        out[o + qhAt + 2] = (qh >>> 16) & 0xff
        out[o + qhAt + 3] = qh >>> 24
      }
    }
    return out
  }
}

function codeOf(spec: Legacy): (bytes: Uint8Array, o: number, j: number) => number {
  const {qh: qhAt, qs: qsAt} = layout(spec)
  return (bytes, o, j) => {
    const q = j < HALF ? bytes[o + qsAt + j]! & 0x0f : bytes[o + qsAt + j - HALF]! >>> 4
    if (qhAt < 0) return q
    return q | (((bytes[o + qhAt + (j >>> 3)]! >>> (j & 7)) & 1) << 4)
  }
}

function dequantizer(spec: Legacy): (bytes: Uint8Array) => Float32Array {
  const {bytes: blockBytes} = layout(spec)
  const code = codeOf(spec)
  const offset = spec.affine ? 0 : spec.bits === 4 ? 8 : 16
  return (bytes) => {
    const blocks = Math.floor(bytes.byteLength / blockBytes)
    const out = new Float32Array(blocks * LEGACY_BLOCK)
    for (let b = 0; b < blocks; b++) {
      const o = b * blockBytes
      const d = readHalf(bytes, o)
      const m = spec.affine ? readHalf(bytes, o + 2) : 0
      for (let j = 0; j < LEGACY_BLOCK; j++) {
        const q = code(bytes, o, j) - offset
        out[b * LEGACY_BLOCK + j] = spec.affine ? fr(fr(q * d) + m) : q * d
      }
    }
    return out
  }
}

function legacyType(spec: Legacy, describe: string): GgmlBlockType {
  return {
    name: `gguf_${spec.type.toLowerCase()}`,
    type: spec.type,
    elements: LEGACY_BLOCK,
    bytes: layout(spec).bytes,
    scaleBytes: [[0, spec.affine ? 4 : 2]],
    describe,
    quantize: quantizer(spec),
    dequantize: dequantizer(spec),
    code: codeOf(spec),
  }
}

const SPECS: Legacy[] = [{type: 'Q4_0', bits: 4, affine: false}, {type: 'Q4_1', bits: 4, affine: true}, {type: 'Q5_0', bits: 5, affine: false}, {type: 'Q5_1', bits: 5, affine: true}]
const SCALAR = Object.fromEntries(SPECS.map((s) => [s.type, scalarQuantizer(s)])) as Record<Legacy['type'], (values: Float32Array) => Uint8Array>

export const Q4_0 = legacyType(SPECS[0]!, 'Q4_0 (blocks of 32, f16 scale, 4-bit codes)')
export const Q4_1 = legacyType(SPECS[1]!, 'Q4_1 (blocks of 32, f16 scale and min, 4-bit codes)')
export const Q5_0 = legacyType(SPECS[2]!, 'Q5_0 (blocks of 32, f16 scale, 5-bit codes)')
export const Q5_1 = legacyType(SPECS[3]!, 'Q5_1 (blocks of 32, f16 scale and min, 5-bit codes)')

export const GGUF_Q4_0 = ggmlBlockScheme(Q4_0)
export const GGUF_Q4_1 = ggmlBlockScheme(Q4_1)
export const GGUF_Q5_0 = ggmlBlockScheme(Q5_0)
export const GGUF_Q5_1 = ggmlBlockScheme(Q5_1)
