/**
 * MLX affine quantization (scheme `mlx_affine`), exactly as MLX's CPU `affine_quantize` computes it
 * (mlx/backend/cpu/quantized.cpp; DESIGN §4.3), its inverse, and the exact comparison of two
 * encodings with MLX's documented alternative (its Metal kernel).
 *
 * Per group of `groupSize` consecutive values of a row, all in fp32:
 *   scale = max((max - min) / (2^bits - 1), 1e-7), negated unless |min| > |max|
 *   edge  = |min| > |max| ? min : max
 *   q0    = rint(edge / scale)
 *   q0 ≠ 0: scale = edge / q0, bias = edge      (so `edge` — and zero — are exact)
 *   q0 = 0: bias = 0
 *   q     = clip(rint((w - bias) / scale), 0, 2^bits - 1)
 * Codes are packed LSB-first into one continuous bit stream per row, stored as little-endian
 * uint32 words (for 3, 5 and 6 bits a code may straddle two words). `w ≈ scales * q + biases`.
 * mlx-lm casts the weights to the model dtype first, then quantizes; scales and biases are stored
 * in that dtype. Dequantization: f32(f32(scale·q) + bias), rounded to the dtype.
 *
 * MLX's Metal kernel (mlx/backend/metal/kernels/quantized.h, `affine_quantize`) differs from the CPU
 * rule in two documented ways: it rounds with `round` (half away from zero) instead of `rint`, and
 * its group maximum starts at 0 (max' = max(0, max)). Files quantized on a Mac's GPU therefore differ
 * from the CPU rule in exact-half ties and in groups with no positive value; `compare` accepts a
 * group that equals either the CPU rule or the Metal rule, and says which.
 */
import {UsageError} from '../errors.js'
import {simdKernels} from '../simd/kernels.js'
import {bf16BitsToF32, castInto, dtypeSize, f16BitsToF32, f32BitsToBf16Bits, f32BitsToF16Bits, type FloatDType, fromFloat32, toFloat32} from '../tensor/dtype.js'
import {bytesEqual, type EncodingDiff, type Encoded, type Scheme, type SchemeParams} from './types.js'

export const QUANT_BITS = [2, 3, 4, 5, 6, 8] as const
export const QUANT_GROUP_SIZES = [32, 64, 128] as const
/** MLX's floor on the step size (`eps` in `affine_quantize`), as an f32. */
export const SCALE_EPS = Math.fround(1e-7)

const f32 = Math.fround

/** Round half to even (C's `rint` in the default rounding mode; `Math.round` breaks ties upwards). */
export function rint(x: number): number {
  const f = Math.floor(x)
  const d = x - f
  if (d < 0.5) return f
  if (d > 0.5) return f + 1
  return f % 2 === 0 ? f : f + 1
}

export function checkQuantParams(bits: number, groupSize: number): void {
  if (!(QUANT_BITS as readonly number[]).includes(bits)) throw new UsageError('quantize.bits', `MLX quantization supports 2, 3, 4, 5, 6 or 8 bits, not ${bits}`)
  if (!(QUANT_GROUP_SIZES as readonly number[]).includes(groupSize)) throw new UsageError('quantize.group_size', `MLX quantization supports group sizes 32, 64 or 128, not ${groupSize}`)
}

/** groupRule's results: RULE[0] the scale, RULE[1] the bias (f32 values). */
const RULE = new Float64Array(2)

/**
 * MLX's rule for a group with this min and max: the scale spans [min, max] in nBins steps, signed
 * so that the larger-magnitude edge is code 0 and exact; the bias is that edge (0 when it rounds to
 * code 0). Into RULE, so the per-group loops allocate nothing.
 */
function groupRule(min: number, max: number, nBins: number): void {
  const minDominates = Math.abs(min) > Math.abs(max)
  let scale = Math.max(f32(f32(max - min) / nBins), SCALE_EPS)
  if (!minDominates) scale = -scale
  const edge = minDominates ? min : max
  const q0 = rint(f32(edge / scale))
  RULE[0] = q0 !== 0 ? f32(edge / q0) : scale
  RULE[1] = q0 !== 0 ? edge : 0
}

/** The scale and bias of one group (f32 values), MLX's rule. */
export function groupParams(values: ArrayLike<number>, start: number, count: number, bits: number): {scale: number; bias: number} {
  let min = Infinity
  let max = -Infinity
  for (let i = start; i < start + count; i++) {
    const v = values[i]!
    if (v > max) max = v
    if (v < min) min = v
  }
  groupRule(min, max, (1 << bits) - 1)
  return {scale: RULE[0]!, bias: RULE[1]!}
}

export interface QuantizedRows {
  /** [rows, cols * bits / 32] little-endian words. */
  packed: Uint32Array
  /** [rows, cols / groupSize], f32 (cast to the float dtype when stored). */
  scales: Float32Array
  biases: Float32Array
}

/**
 * Quantize `rows` rows of `cols` f32 values. Values should already be rounded to the dtype the
 * model is stored in (mlx-lm casts, then quantizes), or `round` names that dtype and the values are
 * rounded to it on the way in (the same values, without a rounded copy).
 */
export function quantizeRows(values: Float32Array, rows: number, cols: number, bits: number, groupSize: number, round?: 'F16' | 'BF16'): QuantizedRows {
  const groups = cols / groupSize
  const packed = new Uint32Array((rows * cols * bits) / 32)
  const scales = new Float32Array(rows * groups)
  const biases = new Float32Array(rows * groups)
  quantizeInto(values, rows * cols, bits, groupSize, packed, scales, biases, round)
  return {packed, scales, biases}
}

/** 1.5 · 2^52: for |x| < 2^51, (x + RINT_MAGIC) - RINT_MAGIC is x rounded half to even (the double sum has unit ulp). */
const RINT_MAGIC = 6755399441055744

/**
 * The loop behind quantizeRows, into caller-owned arrays: `count` values (whole rows, so whole
 * groups and whole words: the bit stream runs straight across row ends), `packed` holding their
 * words and `scales`/`biases` their groups. Per group one min/max pass and one code pass, with
 * groupRule (no object per group). Bit-identical to groupParams + the rule above.
 */
export function quantizeInto(values: Float32Array, count: number, bits: number, groupSize: number, packed: Uint32Array, scales: Float32Array, biases: Float32Array, round?: 'F16' | 'BF16'): void {
  const kernels = count >= 256 ? simdKernels() : undefined
  if (!kernels) return quantizeIntoScalar(round ? rounded(values.subarray(0, count), round) : values, count, bits, groupSize, packed, scales, biases)
  const nBins = (1 << bits) - 1
  kernels.affine(values, count, bits, groupSize, packed, scales, biases, (groups, par, o0) => {
    for (let o = o0; o < o0 + 2 * groups; o += 2) {
      groupRule(par[o]!, par[o + 1]!, nBins)
      par[o] = RULE[0]!
      par[o + 1] = RULE[1]!
    }
  }, round)
}

/** quantizeInto in JS, element by element: the reference the SIMD kernel (src/simd/kernels.ts) is tested against. */
export function quantizeIntoScalar(values: Float32Array, count: number, bits: number, groupSize: number, packed: Uint32Array, scales: Float32Array, biases: Float32Array): void {
  const nBins = (1 << bits) - 1
  const groups = count / groupSize
  let bitPos = 0
  let word = 0 // bits not yet stored, starting at bit (bitPos & ~31)
  for (let g = 0; g < groups; g++) {
    const start = g * groupSize
    const end = start + groupSize
    let min = Infinity
    let max = -Infinity
    for (let i = start; i < end; i++) {
      const v = values[i]!
      if (v > max) max = v
      if (v < min) min = v
    }
    groupRule(min, max, nBins)
    const scale = RULE[0]!
    const bias = RULE[1]!
    scales[g] = scale
    biases[g] = bias
    for (let i = start; i < end; i++) {
      // q = clip(rint(f32((w - bias) / scale)), 0, nBins); NaN stays NaN through the clip and packs as 0.
      const x = f32(f32(values[i]! - bias) / scale)
      let q = x + RINT_MAGIC - RINT_MAGIC
      q = q < 0 ? 0 : q > nBins ? nBins : q
      const shift = bitPos & 31
      word |= q << shift
      if (shift + bits >= 32) {
        // The word is full: store it and keep the bits of q that spill into the next one.
        packed[bitPos >>> 5] = word
        word = shift + bits > 32 ? q >>> (32 - shift) : 0
      }
      bitPos += bits
    }
  }
}

/** The code at bit `bitPos` of an LSB-first stream of words (codes of 3, 5 and 6 bits may straddle two words). */
function codeAt(packed: Uint32Array, bitPos: number, bits: number, mask: number): number {
  const word = bitPos >>> 5
  const shift = bitPos & 31
  let q = packed[word]! >>> shift
  if (shift + bits > 32) q |= packed[word + 1]! << (32 - shift)
  return q & mask
}

/** Unpack the codes of `rows` rows (inverse of the packing in quantizeRows). */
export function unpackRows(packed: Uint32Array, rows: number, cols: number, bits: number): Uint8Array {
  const wordsPerRow = (cols * bits) / 32
  const codes = new Uint8Array(rows * cols)
  const mask = (1 << bits) - 1
  for (let r = 0; r < rows; r++) {
    let bitPos = r * wordsPerRow * 32
    for (let c = 0; c < cols; c++, bitPos += bits) codes[r * cols + c] = codeAt(packed, bitPos, bits, mask)
  }
  return codes
}

/**
 * `dequantizeRows` rounded to `dtype` (the values `decode` and the MLX reader hand out), into `out`:
 * bit for bit `dequantizeRows` then `roundInto`. When a group has at least twice as many values as
 * there are codes (2, 3, 4 bits), each group's 2^bits values are computed and rounded once, with the
 * same arithmetic, and its codes look them up.
 */
export function dequantizeRoundedInto(packed: Uint32Array, scales: Float32Array, biases: Float32Array, rows: number, cols: number, bits: number, groupSize: number, dtype: FloatDType, out: Float32Array): void {
  const levels = 1 << bits
  if (levels * 2 > groupSize) {
    dequantizeRows(packed, scales, biases, rows, cols, bits, groupSize, out)
    if (dtype !== 'F32') roundInto(out, dtype, out)
    return
  }
  const mask = levels - 1
  const groups = (rows * cols) / groupSize
  // Every group's 2^bits values first, rounded in one pass (SIMD for the 16-bit dtypes: rounding a
  // group's table at a time cost ~5 ns a weight, most of the engine's time on a 4-bit model).
  const tables = tableScratch(groups * levels)
  for (let k = 0, t = 0; k < groups; k++) {
    const scale = scales[k]!
    const bias = biases[k]!
    for (let q = 0; q < levels; q++, t++) tables[t] = f32(scale * q) + bias
  }
  if (dtype !== 'F32') roundInto(tables, dtype, tables)
  // A group's codes fill whole words (groupSize · bits is a multiple of 32), so group k's start at
  // word k · groupWords; with bits dividing 32 no code straddles two words.
  const groupWords = (groupSize * bits) / 32
  const perWord = 32 % bits === 0 ? 32 / bits : 0
  let o = 0
  for (let k = 0; k < groups; k++) {
    const w0 = k * groupWords
    const t = k * levels
    if (bits === 4) {
      // The common case, unrolled: 8 codes a word.
      for (let w = w0; w < w0 + groupWords; w++, o += 8) {
        const word = packed[w]!
        out[o] = tables[t + (word & 15)]!
        out[o + 1] = tables[t + ((word >>> 4) & 15)]!
        out[o + 2] = tables[t + ((word >>> 8) & 15)]!
        out[o + 3] = tables[t + ((word >>> 12) & 15)]!
        out[o + 4] = tables[t + ((word >>> 16) & 15)]!
        out[o + 5] = tables[t + ((word >>> 20) & 15)]!
        out[o + 6] = tables[t + ((word >>> 24) & 15)]!
        out[o + 7] = tables[t + (word >>> 28)]!
      }
    } else if (perWord > 0) {
      for (let w = w0; w < w0 + groupWords; w++) {
        const word = packed[w]!
        for (let shift = 0; shift < 32; shift += bits) out[o++] = tables[t + ((word >>> shift) & mask)]!
      }
    } else {
      for (let i = 0, bitPos = w0 * 32; i < groupSize; i++, bitPos += bits) out[o++] = tables[t + codeAt(packed, bitPos, bits, mask)]!
    }
  }
}

/** dequantizeRoundedInto's tables, reused call after call (grown as needed). */
let tableBuffer = new Float32Array(0)
function tableScratch(n: number): Float32Array {
  if (tableBuffer.length < n) tableBuffer = new Float32Array(n)
  return tableBuffer.subarray(0, n)
}

/** `scales * q + biases` per element, in f32 (the caller rounds to the float dtype once), into `out` when given. */
export function dequantizeRows(packed: Uint32Array, scales: Float32Array, biases: Float32Array, rows: number, cols: number, bits: number, groupSize: number, out: Float32Array = new Float32Array(rows * cols)): Float32Array {
  const mask = (1 << bits) - 1
  // One bit stream per row, and a row fills whole words: each row's stream starts where the last ended.
  let bitPos = 0
  let o = 0
  for (let k = 0; k < (rows * cols) / groupSize; k++) {
    const scale = scales[k]!
    for (let i = 0; i < groupSize; i++, bitPos += bits) out[o++] = f32(scale * codeAt(packed, bitPos, bits, mask)) + biases[k]!
  }
  return out
}

/**
 * Worst-case |w - dequantized| for a group whose values span [min, max], before the scale and
 * bias are rounded to a 16-bit dtype. Not half a step: MLX moves the step to `edge / q0` so that
 * the dominant end (and zero) stay exact, which can shrink it so the far end clips; the shortfall
 * is at most nBins/(nBins+1) of the original step (the edge is at least half the range away from
 * zero, so |q0| ≥ nBins/2). Either way the error stays within one original step.
 */
export function groupErrorBound(min: number, max: number, bits: number): number {
  return Math.max((max - min) / ((1 << bits) - 1), SCALE_EPS) * (1 + 1e-6)
}


/**
 * `out[i]` = `values[i]` rounded to nearest even in `dtype` and widened back, bit for bit what
 * `toFloat32(fromFloat32(values, dtype), dtype)` gives (except NaN payloads, which no quantizer
 * output depends on), without the two intermediate arrays. Works on the f32 bits: dropping the low
 * 16 (bf16) or 13 (f16 normals) mantissa bits with round-half-even, a carry moving into the
 * exponent as it should. Inf/NaN (both) and f16 subnormals, zeros and overflow go the slow exact way.
 */
export function roundInto(values: Float32Array, dtype: 'F16' | 'BF16', out: Float32Array): void {
  const kernels = values.length >= 256 ? simdKernels() : undefined
  if (kernels) return kernels.roundF32(values, out, dtype)
  roundIntoScalar(values, dtype, out)
}

/** roundInto in JS: the reference the SIMD kernel is tested against. */
export function roundIntoScalar(values: Float32Array, dtype: 'F16' | 'BF16', out: Float32Array): void {
  const n = values.length
  roundBits(new Int32Array(values.buffer, values.byteOffset, n), dtype, out, new Int32Array(out.buffer, out.byteOffset, n))
}

/** roundIntoScalar on the values' bits `src` into `out` and its bits `dst` (views made once by a caller that rounds often). */
function roundBits(src: Int32Array, dtype: 'F16' | 'BF16', out: Float32Array, dst: Int32Array): void {
  const n = src.length
  if (dtype === 'BF16') {
    for (let i = 0; i < n; i++) {
      const x = src[i]!
      if ((x & 0x7f800000) === 0x7f800000) out[i] = bf16BitsToF32(f32BitsToBf16Bits(x >>> 0))
      else dst[i] = bf16RoundedBits(x)
    }
    return
  }
  for (let i = 0; i < n; i++) {
    const x = src[i]!
    if (isF16Normal(x)) dst[i] = f16RoundedBits(x)
    else out[i] = f16BitsToF32(f32BitsToF16Bits(x >>> 0))
  }
}

/** The f32 bits `x` (as an int32) rounded to bf16, nearest even, as f32 bits; x not Inf or NaN. */
export function bf16RoundedBits(x: number): number {
  return (x + 0x7fff + ((x >>> 16) & 1)) & 0xffff0000
}

/** |v| in [2^-14, 65520): an f16 normal after rounding (65520 and up overflow to Inf). */
export function isF16Normal(x: number): boolean {
  const a = x & 0x7fffffff
  return a >= 0x38800000 && a < 0x477ff000
}

/** The f32 bits `x` rounded to f16, nearest even, as f32 bits; `isF16Normal(x)` only. */
export function f16RoundedBits(x: number): number {
  const a = x & 0x7fffffff
  return (x & 0x80000000) | ((a + 0xfff + ((a >>> 13) & 1)) & 0x7fffe000)
}


// ---- the scheme ------------------------------------------------------------------------------

/** The documented alternatives `compare` accepts, by name. */
export const MLX_ACCEPTED = {
  /** Same scale and bias; codes differ only where (w − bias)/scale is exactly k + ½ and the file took the half-away neighbour (Metal's `round`). */
  tieHalfAway: 'tie-half-away',
  /** The whole group equals what MLX's Metal kernel computes (round half away, max starting at 0). */
  metalRule: 'mlx-metal-rule',
} as const

function paramsOf(params: SchemeParams): {bits: number; groupSize: number; dtype: FloatDType} {
  const bits = params.bits ?? 0
  const groupSize = params.group_size ?? 0
  return {bits, groupSize, dtype: params.dtype ?? 'F32'}
}

/** `values` rounded to `dtype` and widened back (a copy; the input is kept). */
function rounded(values: Float32Array, dtype: FloatDType): Float32Array {
  if (dtype === 'F32') return values
  const out = new Float32Array(values.length)
  roundInto(values, dtype, out)
  return out
}

function u32View(bytes: Uint8Array): Uint32Array {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice()
  return new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4)
}

/** C's `round` for an f32 value: half away from zero. */
function roundHalfAway(x: number): number {
  return x < 0 ? -Math.floor(0.5 - x) : Math.floor(x + 0.5)
}

/** The largest finite value of a float dtype (Metal's `Limits<T>::max`). */
const DTYPE_MAX: Record<FloatDType, number> = {F32: 3.4028234663852886e38, F16: 65504, BF16: 3.3895313892515355e38}

/** One group by MLX's Metal rule: f32 scale and bias, and the codes. */
export function metalGroup(values: Float32Array, start: number, count: number, bits: number, dtype: FloatDType): {scale: number; bias: number; codes: Uint8Array} {
  const nBins = (1 << bits) - 1
  let min = DTYPE_MAX[dtype]
  let max = 0
  for (let i = start; i < start + count; i++) {
    const v = values[i]!
    if (v < min) min = v
    if (v > max) max = v
  }
  let scale = Math.max(f32(f32(max - min) / nBins), SCALE_EPS)
  const side = Math.abs(min) > Math.abs(max)
  if (!side) scale = -scale
  const edge = side ? min : max
  const q0 = roundHalfAway(f32(edge / scale))
  let bias = 0
  if (q0 !== 0) {
    scale = f32(edge / q0)
    bias = edge
  }
  const codes = new Uint8Array(count)
  for (let i = 0; i < count; i++) {
    const q = roundHalfAway(f32(f32(values[start + i]! - bias) / scale))
    codes[i] = Math.max(0, Math.min(q, nBins))
  }
  return {scale, bias, codes}
}

/** The bytes of one f32 value stored in `dtype`. */
function storedBits(value: number, dtype: FloatDType): number {
  if (dtype === 'F32') {
    const f = new Float32Array([value])
    return new Uint32Array(f.buffer)[0]!
  }
  const bits = new Uint32Array(new Float32Array([value]).buffer)[0]!
  return dtype === 'F16' ? f32BitsToF16Bits(bits) : f32BitsToBf16Bits(bits)
}

function readStored(bytes: Uint8Array, index: number, dtype: FloatDType): number {
  const size = dtypeSize(dtype)
  const o = index * size
  if (size === 4) return (bytes[o]! | (bytes[o + 1]! << 8) | (bytes[o + 2]! << 16) | (bytes[o + 3]! << 24)) >>> 0
  return bytes[o]! | (bytes[o + 1]! << 8)
}

/** This thread's f32 scales and biases for encodeInto (one buffer for every task). */
let scratchParams = new Float32Array(0)

export const MLX_AFFINE: Scheme = {
  name: 'mlx_affine',
  describe(params) {
    const {bits, groupSize, dtype} = paramsOf(params)
    return `${bits}-bit affine, group ${groupSize}, ${dtype} scales`
  },
  bitsPerWeight(params) {
    const {bits, groupSize, dtype} = paramsOf(params)
    return bits + (2 * dtypeSize(dtype) * 8) / groupSize
  },
  blockSize: (params) => paramsOf(params).groupSize,
  parts(params, cols) {
    const {bits, groupSize, dtype} = paramsOf(params)
    return [{name: 'weight', dtype: 'U32', perRow: (cols * bits) / 32}, {name: 'scales', dtype, perRow: cols / groupSize}, {name: 'biases', dtype, perRow: cols / groupSize}]
  },
  check(params, cols) {
    const {bits, groupSize, dtype} = paramsOf(params)
    checkQuantParams(bits, groupSize)
    if (!['F32', 'F16', 'BF16'].includes(dtype)) throw new UsageError('quantize.dtype', `MLX scales must be F32, F16 or BF16, not ${String(dtype)}`)
    if (cols % groupSize !== 0) throw new UsageError('quantize.shape', `rows of ${cols} values are not whole groups of ${groupSize}`)
  },
  encode(values, rows, cols, params) {
    const {bits, groupSize, dtype} = paramsOf(params)
    // Rounded to the scales' dtype first (mlx-lm casts the model before quantizing), inside the kernel.
    const q = quantizeRows(values, rows, cols, bits, groupSize, dtype === 'F32' ? undefined : dtype)
    return {
      weight: new Uint8Array(q.packed.buffer, q.packed.byteOffset, q.packed.byteLength),
      scales: fromFloat32(q.scales, dtype),
      biases: fromFloat32(q.biases, dtype),
    }
  },
  encodeInto(values, rows, cols, params, into) {
    const {bits, groupSize, dtype} = paramsOf(params)
    const count = rows * cols
    const groups = count / groupSize
    const weight = into.weight!
    // The codes straight into the part when it is word-aligned (a slot's parts are: src/pool/slots.ts).
    const aligned = weight.byteOffset % 4 === 0
    const packed = aligned ? new Uint32Array(weight.buffer, weight.byteOffset, weight.byteLength / 4) : new Uint32Array(weight.byteLength / 4)
    if (scratchParams.length < 2 * groups) scratchParams = new Float32Array(2 * groups)
    const scales = scratchParams.subarray(0, groups)
    const biases = scratchParams.subarray(groups, 2 * groups)
    quantizeInto(values, count, bits, groupSize, packed, scales, biases, dtype === 'F32' ? undefined : dtype)
    if (!aligned) weight.set(new Uint8Array(packed.buffer))
    castInto(new Uint8Array(scales.buffer, scales.byteOffset, scales.byteLength), 'F32', dtype, into.scales!)
    castInto(new Uint8Array(biases.buffer, biases.byteOffset, biases.byteLength), 'F32', dtype, into.biases!)
  },
  decode(parts, rows, cols, params) {
    const values = new Float32Array(rows * cols)
    MLX_AFFINE.decodeInto!(parts, rows, cols, params, values)
    return values
  },
  decodeInto(parts, rows, cols, params, out) {
    const {bits, groupSize, dtype} = paramsOf(params)
    dequantizeRoundedInto(u32View(parts.weight!), toFloat32(parts.scales!, dtype), toFloat32(parts.biases!, dtype), rows, cols, bits, groupSize, dtype, out)
  },
  compare(expected, actual, source, rows, cols, params): EncodingDiff {
    const {bits, groupSize, dtype} = paramsOf(params)
    const groups = cols / groupSize
    const wa = u32View(expected.weight!)
    const wb = u32View(actual.weight!)
    // A group's codes fill whole words (groupSize · bits is a multiple of 32 for every group size):
    // equal words, scale and bias are an identical group without unpacking; codes are unpacked only
    // once some group differs.
    const groupWords = (groupSize * bits) / 32
    let a: Uint8Array | undefined
    let b: Uint8Array | undefined
    const size = dtypeSize(dtype)
    const diff: EncodingDiff = {elements: rows * cols, identicalElements: 0, blocks: rows * groups, identicalBlocks: 0, accepted: {}, acceptedBlocks: []}
    let values: Float32Array | undefined
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g < groups; g++) {
        const block = r * groups + g
        const e0 = r * cols + g * groupSize
        const scaleSame = bytesEqual(expected.scales!, block * size, actual.scales!, block * size, size)
        const biasSame = bytesEqual(expected.biases!, block * size, actual.biases!, block * size, size)
        if (scaleSame && biasSame) {
          const w0 = block * groupWords
          let k = 0
          while (k < groupWords && wa[w0 + k] === wb[w0 + k]) k++
          if (k === groupWords) {
            diff.identicalElements += groupSize
            diff.identicalBlocks++
            continue
          }
        }
        a ??= unpackRows(wa, rows, cols, bits)
        b ??= unpackRows(wb, rows, cols, bits)
        let firstCode = -1
        let same = 0
        for (let i = 0; i < groupSize; i++) {
          if (a[e0 + i] === b[e0 + i]) same++
          else if (firstCode < 0) firstCode = i
        }
        diff.identicalElements += same
        if (same === groupSize && scaleSame && biasSame) {
          diff.identicalBlocks++
          continue
        }
        values ??= rounded(source, dtype)
        const rule = acceptedRule(values, e0, groupSize, bits, dtype, b, actual, block, scaleSame && biasSame)
        if (rule) {
          diff.accepted[rule] = (diff.accepted[rule] ?? 0) + 1
          diff.acceptedBlocks.push(block)
        } else if (!diff.first) {
          const part = firstCode >= 0 ? 'weight' : !scaleSame ? 'scales' : 'biases'
          diff.first = {row: r, block: g, col: g * groupSize + Math.max(0, firstCode), part}
        }
      }
    }
    return diff
  },
}

/** Which documented rule explains a differing group, if any. `codes` are the file's, unpacked. */
function acceptedRule(
  values: Float32Array, e0: number, groupSize: number, bits: number, dtype: FloatDType,
  codes: Uint8Array, actual: Encoded, block: number, paramsSame: boolean,
): string | undefined {
  const nBins = (1 << bits) - 1
  if (paramsSame) {
    // Same scale and bias: every differing code must be the half-away neighbour of an exact tie.
    const {scale, bias} = groupParams(values, e0, groupSize, bits)
    let tie = true
    for (let i = 0; i < groupSize && tie; i++) {
      const x = f32(f32(values[e0 + i]! - bias) / scale)
      const cpu = Math.min(Math.max(rint(x), 0), nBins)
      if (codes[e0 + i] === cpu) continue
      tie = x - Math.floor(x) === 0.5 && codes[e0 + i] === Math.min(Math.max(roundHalfAway(x), 0), nBins)
    }
    if (tie) return MLX_ACCEPTED.tieHalfAway
  }
  const metal = metalGroup(values, e0, groupSize, bits, dtype)
  if (readStored(actual.scales!, block, dtype) !== storedBits(metal.scale, dtype)) return undefined
  if (readStored(actual.biases!, block, dtype) !== storedBits(metal.bias, dtype)) return undefined
  for (let i = 0; i < groupSize; i++) if (codes[e0 + i] !== metal.codes[i]) return undefined
  return MLX_ACCEPTED.metalRule
}

