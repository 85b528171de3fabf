/**
 * MLX's floating-point quantization modes (schemes `mlx_mxfp4`, `mlx_nvfp4`, `mlx_mxfp8`), as
 * `mx.quantize(w, mode=...)` computes them on MLX's CPU device: the op graph `fp_quantize` builds in
 * mlx/ops.cpp (the CPU takes that graph; Metal and CUDA run a fused kernel, see docs/mlx.md).
 *
 * | mode  | group | element                  | scale per group              | bits/weight |
 * |-------|-------|--------------------------|------------------------------|-------------|
 * | mxfp4 | 32    | fp4 e2m1 (±0…6), 4 bits  | e8m0: a power of two, 1 byte | 4.25        |
 * | nvfp4 | 16    | fp4 e2m1, 4 bits         | fp8 e4m3, 1 byte             | 4.5         |
 * | mxfp8 | 32    | fp8 e4m3fn (±448), 8 bits| e8m0                         | 8.25        |
 *
 * MLX forces these group sizes and widths (`fp_quantize` throws otherwise) and stores no biases.
 * Parts: `weight` U32 [rows, cols*bits/32] (fp4: element 2j in the low nibble of byte j, the bytes
 * little-endian in the words; fp8: one byte per element), `scales` U8 [rows, cols/group].
 *
 * The rule, every step in the weight dtype D (mlx-lm casts the model to D, then quantizes; a D
 * operation is the exact result rounded to D), with amax = max |w| over the group:
 *   mx (group 32): s = D(amax / M) with M = 6 (fp4) or 448 (fp8);
 *                  e = s == 0 ? 0 : rint(D(log2 s));   scale byte = e + 127
 *                  q = D(w / D(2^e))
 *   nv (group 16): s = D(amax / 6); scale byte = e4m3(s); q = D(w / e4m3value(byte))
 *   fp4 code: the index of the nearest of MLX's table [+0, .5, 1, 1.5, 2, 3, 4, 6, -0, -.5, …, -6]
 *             (`argmin |q - lut|`: a tie takes the first index, so the smaller magnitude, and
 *             a zero is always code 0); ±Inf and NaN (a zero divisor) give code 0
 *   fp8 code: e4m3fn of q, round to nearest even, |q| ≥ 448 saturates to ±448 (0x7E/0xFE)
 * Dequantization: table value × 2^(byte − 127) (byte 0: 2^-127) or × e4m3 value, exact in f32,
 * then rounded to D (the dtype the reader presents).
 */
import {UsageError} from '../errors.js'
import {FP_ENTRY, FP_TABLE_ENTRIES, quant2Kernels} from '../simd/quant2.js'
import {bf16BitsToF32, f16BitsToF32, f32BitsToBf16Bits, f32BitsToF16Bits, type FloatDType, isFloatDType} from '../tensor/dtype.js'
import {bf16RoundedBits, f16RoundedBits, isF16Normal, rint, roundInto} from './mlx-affine.js'
import {type EncodingDiff, type Encoded, type Scheme, type SchemeParams} from './types.js'

export const MLX_FP_MODES = {
  mxfp4: {bits: 4, groupSize: 32},
  nvfp4: {bits: 4, groupSize: 16},
  mxfp8: {bits: 8, groupSize: 32},
} as const
export type MlxFpMode = keyof typeof MLX_FP_MODES
export const MLX_FP_MODE_NAMES = Object.keys(MLX_FP_MODES) as MlxFpMode[]

export function isMlxFpMode(mode: unknown): mode is MlxFpMode {
  return typeof mode === 'string' && Object.hasOwn(MLX_FP_MODES, mode)
}

/** MLX's fp4 e2m1 table, by code. */
export const FP4_VALUES = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6] as const

const scratchF = new Float32Array(1)
const scratchU = new Uint32Array(scratchF.buffer)
const scratchI = new Int32Array(scratchF.buffer)

/** `v` rounded (nearest even) to `dtype`, as a number (f32 first: the double-to-f32 rounding is innocuous for one operation's result). */
export function roundTo(v: number, dtype: FloatDType): number {
  const f = Math.fround(v)
  if (dtype === 'F32') return f
  scratchF[0] = f
  const x = scratchI[0]!
  // f16 normals and finite bf16 by the bit rule of roundIntoScalar; the rest by the casts.
  if (dtype === 'F16' ? isF16Normal(x) : (x & 0x7f800000) !== 0x7f800000) {
    scratchI[0] = dtype === 'F16' ? f16RoundedBits(x) : bf16RoundedBits(x)
    return scratchF[0]!
  }
  return dtype === 'F16' ? f16BitsToF32(f32BitsToF16Bits(scratchU[0]!)) : bf16BitsToF32(f32BitsToBf16Bits(scratchU[0]!))
}

/**
 * MLX's fp4 code of q: `argmin |q - lut|` with the subtraction rounded to `dtype` (the first index
 * wins a tie: the smaller magnitude, and a zero is code 0). Up to |q| = 6 the two nearest entries are
 * within a factor of two of q, so their differences are exact and thresholds decide; beyond, the
 * rounded differences may tie (a saturated nvfp4 scale leaves q huge) and are compared as MLX does.
 */
export function fp4Code(q: number, dtype: FloatDType = 'F32'): number {
  if (!Number.isFinite(q)) return 0
  const m = Math.abs(q)
  if (m > 6) {
    let best = 0
    let bestDist = Infinity
    for (let k = 0; k < 16; k++) {
      const d = Math.abs(roundTo(q - FP4_VALUES[k]!, dtype))
      if (d < bestDist) {
        best = k
        bestDist = d
      }
    }
    return best
  }
  const idx = m <= 0.25 ? 0 : m <= 0.75 ? 1 : m <= 1.25 ? 2 : m <= 1.75 ? 3 : m <= 2.5 ? 4 : m <= 3.5 ? 5 : m <= 5 ? 6 : 7
  return idx === 0 ? 0 : q < 0 ? 8 + idx : idx
}

/** fp8 e4m3fn byte of an f32 value: round to nearest even, saturating at ±448 (NaN, ±Inf too). */
export function e4m3Code(v: number): number {
  scratchF[0] = v
  const bits = scratchU[0]!
  const sign = bits >>> 31 ? 0x80 : 0
  const a = Math.abs(scratchF[0]!)
  if (!(a < 448)) return sign | 0x7e // NaN, Inf and |v| >= 448
  const exp = ((bits >>> 23) & 0xff) - 127
  if (exp < -6) return sign | rint(a * 512) // subnormal steps of 2^-9; 8 lands on the smallest normal
  const n = rint((a / 2 ** exp) * 8) // 8..16
  return sign | (((exp + 7) << 3) + n - 8)
}

/** The value of an fp8 e4m3 byte (0x7F/0xFF: ±480, as MLX's FromFP8 reads them). */
export function e4m3Value(code: number): number {
  return E4M3_VALUES[code & 0xff]!
}
const E4M3_VALUES = Float64Array.from({length: 256}, (_, code) => {
  const e = (code >>> 3) & 0xf
  const m = code & 7
  const v = e === 0 ? m * 2 ** -9 : (8 + m) * 2 ** (e - 10)
  return code & 0x80 ? -v : v
})

/** The value of an e8m0 scale byte (0: 2^-127, as MLX decodes it; 255: +Inf). */
export function e8m0Value(code: number): number {
  return code === 0 ? 2 ** -127 : Math.fround(2 ** (code - 127)) // 255: 2^128, Inf in f32
}

function dtypeOf(params: SchemeParams): FloatDType {
  return params.dtype ?? 'F32'
}

/** fpGroup's results: GROUP[0] the scale byte, GROUP[1] the divisor, GROUP[2] 0 (q = w / divisor is exact), 1 (q is rounded to the dtype) or 2 (the codes are 0). */
const GROUP = new Float64Array(3)

/** The mx modes' exponent of a scale s > 0, as the rule above states it: rint(D(log2 s)). */
export function e8m0ExponentSlow(s: number, dtype: FloatDType): number {
  return rint(roundTo(Math.log2(s), dtype))
}

/**
 * e8m0ExponentSlow by table. For s in [2^k, 2^(k+1)) the exponent is k or k+1 and grows with s, so
 * each binade has one threshold: the least f32 s whose exponent is k+1 (Infinity when none), found
 * by bisection on the f32 patterns. Scales within 2^-20 of a threshold, and f32 subnormals, take the
 * formula itself (an ulp of log2 either way cannot move the answer elsewhere).
 */
const THRESHOLDS: Partial<Record<FloatDType, Float64Array>> = {}
function thresholds(dtype: FloatDType): Float64Array {
  const cached = THRESHOLDS[dtype]
  if (cached) return cached
  const table = new Float64Array(256)
  const bits = new Uint32Array(1)
  const f = new Float32Array(bits.buffer)
  const at = (b: number) => {
    bits[0] = b
    return f[0]!
  }
  for (let biased = 1; biased < 255; biased++) {
    const k = biased - 127
    let lo = biased << 23 // 2^k
    let hi = ((biased + 1) << 23) - 1 // the largest f32 under 2^(k+1)
    if (e8m0ExponentSlow(at(hi), dtype) === k) {
      table[biased] = Infinity
      continue
    }
    // the least pattern with exponent k+1 lies in (lo, hi] (or is lo)
    if (e8m0ExponentSlow(at(lo), dtype) !== k) hi = lo
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1
      if (e8m0ExponentSlow(at(mid), dtype) === k) lo = mid
      else hi = mid
    }
    table[biased] = at(hi)
  }
  return (THRESHOLDS[dtype] = table)
}

export function e8m0Exponent(s: number, dtype: FloatDType): number {
  scratchF[0] = s
  const biased = scratchU[0]! >>> 23
  if (biased === 0 || biased >= 255) return e8m0ExponentSlow(s, dtype)
  const t = thresholds(dtype)[biased]!
  if (t !== Infinity && Math.abs(s - t) <= t * 2 ** -20) return e8m0ExponentSlow(s, dtype)
  return s >= t ? biased - 126 : biased - 127
}

/** roundTo(2^e, dtype), by table for e in [-160, 160). */
const POWERS: Partial<Record<FloatDType, Float64Array>> = {}
function powerOfTwo(e: number, dtype: FloatDType): number {
  if (e < -160 || e >= 160) return roundTo(2 ** e, dtype)
  const table = (POWERS[dtype] ??= Float64Array.from({length: 320}, (_, i) => roundTo(2 ** (i - 160), dtype)))
  return table[e + 160]!
}

/** A group's scale byte and divisor from its largest |w| (MLX's rule above), into GROUP. */
function fpGroup(mode: MlxFpMode, amax: number, dtype: FloatDType): void {
  const s = roundTo(amax / (MLX_FP_MODES[mode].bits === 4 ? 6 : 448), dtype)
  if (!Number.isFinite(s)) {
    // Inf/NaN weights (e.g. beyond the f16 range): MLX's float-to-int of the exponent is undefined;
    // both implementations write e8m0's NaN byte (what MLX's Metal kernel writes) and zero codes.
    GROUP[0] = mode === 'nvfp4' ? e4m3Code(s) : 0xff
    GROUP[1] = 1
    GROUP[2] = 2
  } else if (mode === 'nvfp4') {
    const code = e4m3Code(s)
    GROUP[0] = code
    GROUP[1] = e4m3Value(code)
    GROUP[2] = 1
  } else {
    const e = s === 0 ? 0 : e8m0Exponent(s, dtype)
    const divisor = powerOfTwo(e, dtype)
    GROUP[0] = (e + 127) & 0xff
    GROUP[1] = divisor
    // Dividing by 2^e with e ≤ 0 (and 2^e exact in the dtype) only scales up: exact, no rounding.
    GROUP[2] = divisor <= 1 && divisor > 0 ? 0 : 1
  }
}

/**
 * The fused kernel's table of a mode and 16-bit dtype (src/simd/quant2.ts's fpFusedFunc): for each
 * non-negative pattern h of the dtype, fpGroup of its value as the group's largest |w| — the scale
 * byte, the divisor, whether the quotient is rounded or the codes are all 0 (an fp4 group with
 * divisor 0 divides into ±Inf and NaN: code 0 throughout) — and whether the kernel's fast codes
 * apply: the largest quotient |w| / divisor, which bounds the group's, within 64 for fp4 (beyond,
 * the scalar rule takes over value by value) and finite in the dtype for fp8.
 */
function fillGroupTable(mode: MlxFpMode, dtype: 'F16' | 'BF16', divisor: Float32Array, info: Int32Array): void {
  const {bits} = MLX_FP_MODES[mode]
  const limit = bits === 4 ? 64 : dtype === 'F16' ? 65504 : F32_MAX
  for (let h = 0; h < FP_TABLE_ENTRIES; h++) {
    const amax = dtype === 'F16' ? f16BitsToF32(h) : bf16BitsToF32(h)
    if (Number.isNaN(amax)) {
      // never a group's largest |w|
      divisor[2 * h] = 1
      info[2 * h + 1] = FP_ENTRY.full
      continue
    }
    fpGroup(mode, amax, dtype)
    const d = GROUP[1]!
    const zero = GROUP[2] === 2 || (bits === 4 && d === 0)
    const fast = Math.fround(amax / d) <= limit
    divisor[2 * h] = d
    info[2 * h + 1] = GROUP[0]! | (GROUP[2] === 1 ? FP_ENTRY.rounded : 0) | (zero ? FP_ENTRY.zero : 0) | (zero || fast ? 0 : FP_ENTRY.full)
  }
}
const F32_MAX = 3.4028234663852886e38

/** The code of w in a group with this divisor (`rounded`: the quotient is rounded to the dtype). */
function fpCode(mode: MlxFpMode, w: number, divisor: number, rounded: boolean, dtype: FloatDType): number {
  const q = rounded ? roundTo(w / divisor, dtype) : w / divisor
  return MLX_FP_MODES[mode].bits === 4 ? fp4Code(q, mode === 'nvfp4' ? 'F32' : dtype) : e4m3Code(q)
}

/**
 * Encode `count` values (whole groups) of `values` (already rounded to `dtype`) into `codes` (one
 * byte per element; null: the scales only) and `scales` (one byte per group).
 */
export function fpQuantizeInto(mode: MlxFpMode, values: Float32Array, count: number, dtype: FloatDType, codes: Uint8Array | null, scales: Uint8Array): void {
  const {groupSize} = MLX_FP_MODES[mode]
  for (let g = 0; g < count / groupSize; g++) {
    const start = g * groupSize
    let amax = 0
    for (let i = start; i < start + groupSize; i++) {
      const a = Math.abs(values[i]!)
      if (a > amax) amax = a
    }
    fpGroup(mode, amax, dtype)
    scales[g] = GROUP[0]!
    if (!codes) continue // scales only
    if (GROUP[2] === 2) codes.fill(0, start, start + groupSize)
    else for (let i = start; i < start + groupSize; i++) codes[i] = fpCode(mode, values[i]!, GROUP[1]!, GROUP[2] === 1, dtype)
  }
}

/**
 * The `weight` and `scales` parts of `count` values (whole groups) of weights, which are rounded to
 * `dtype` first: the SIMD kernel (src/simd/quant2.ts, rounding each value as it reads it; for F16
 * and BF16 with fpGroup by table, fillGroupTable) where it applies, else roundInto, fpQuantizeInto
 * and packFp. With `into`, its `weight` and `scales` views are written instead of new arrays.
 */
export function fpEncode(mode: MlxFpMode, values: Float32Array, count: number, dtype: FloatDType, into?: Encoded): Encoded {
  const {bits, groupSize} = MLX_FP_MODES[mode]
  const scales = into?.scales ?? new Uint8Array(count / groupSize)
  const kernels = count >= 256 ? quant2Kernels() : undefined
  if (!kernels) {
    // The weights in the dtype (f32 values already are): roundInto is roundTo element by element.
    let rounded = values
    if (dtype !== 'F32') roundInto(values.subarray(0, count), dtype, rounded = new Float32Array(count))
    const codes = new Uint8Array(count)
    fpQuantizeInto(mode, rounded, count, dtype, codes, scales)
    return {weight: packFp(codes, bits, into?.weight), scales}
  }
  const weight = into?.weight ?? new Uint8Array((count * bits) / 8)
  const slow = (i: number, divisor: number, rounded: boolean) => fpCode(mode, roundTo(values[i]!, dtype), divisor, rounded, dtype)
  if (dtype !== 'F32') {
    const fill = (divisor: Float32Array, info: Int32Array) => fillGroupTable(mode, dtype, divisor, info)
    kernels.fpFused(bits, groupSize, dtype, `${mode}:${dtype}`, fill, values, count, weight, scales, slow)
    return {weight, scales}
  }
  kernels.fp(bits, values, count, groupSize, weight, (g0, groups, par, flags, o0) => {
    let all = 0
    for (let g = 0; g < groups; g++) {
      const o = o0 + 2 * g
      // The group's largest |w| (NaN ignored, 0 when none) from its min and max.
      fpGroup(mode, Math.max(0, -par[o]!, par[o + 1]!), dtype)
      scales[g0 + g] = GROUP[0]!
      par[o] = GROUP[1]!
      // An fp4 group with divisor 0 (a zero e4m3 scale) divides into ±Inf and NaN: code 0 throughout.
      const flag = bits === 4 && GROUP[1] === 0 ? 2 : GROUP[2]!
      flags[o + 1] = flag === 1 ? -1 : flag
      all |= flag
    }
    return all
  }, slow)
  return {weight, scales}
}

/** Codes (one byte per element) → the `weight` part's bytes (into `into` when given). */
export function packFp(codes: Uint8Array, bits: number, into?: Uint8Array): Uint8Array {
  if (bits === 8) {
    if (!into) return codes.slice()
    into.set(codes)
    return into
  }
  const out = into ?? new Uint8Array(codes.length / 2)
  for (let j = 0; j < out.length; j++) out[j] = codes[2 * j]! | (codes[2 * j + 1]! << 4)
  return out
}

export function unpackFp(weight: Uint8Array, bits: number, count: number): Uint8Array {
  if (bits === 8) return weight.subarray(0, count)
  const out = new Uint8Array(count)
  for (let j = 0; j < count / 2; j++) {
    out[2 * j] = weight[j]! & 0xf
    out[2 * j + 1] = weight[j]! >>> 4
  }
  return out
}

/** C's `round` (half away from zero). */
function roundHalfAway(x: number): number {
  return x < 0 ? -Math.floor(0.5 - x) : Math.floor(x + 0.5)
}

/** MLX's GPU kernel's fp4 conversion (`fp4_e2m1` in kernels/fp4.h): ties to the even code, the sign bit kept, NaN → 0x7. */
export function gpuFp4Code(q: number): number {
  if (Number.isNaN(q)) return 0x7
  const sign = q < 0 || Object.is(q, -0) ? 0x8 : 0
  const x = Math.abs(q)
  const bits = x > 5 ? 7 : x >= 3.5 ? 6 : x > 2.5 ? 5 : x >= 1.75 ? 4 : x > 1.25 ? 3 : x >= 0.75 ? 2 : x > 0.25 ? 1 : 0
  return bits | sign
}

/**
 * One group under MLX's Metal/CUDA kernel (`fp_quantize` in kernels/fp_quantized.h), the documented
 * alternative `compare` accepts: everything in f32 — scale = amax / M; e8m0 = clamp(round_half_away
 * (log2 scale), ±127) + 127 (0xFF when not finite; a zero amax gives byte 0); q = w × f32(1 / scale);
 * codes by `gpuFp4Code` / e4m3. `values` are the weights already rounded to the dtype.
 */
export function gpuGroup(mode: MlxFpMode, values: ArrayLike<number>, start: number): {scale: number; codes: Uint8Array} {
  const {bits, groupSize} = MLX_FP_MODES[mode]
  let amax = 0
  for (let i = start; i < start + groupSize; i++) amax = Math.max(amax, Math.abs(values[i]!))
  const x = Math.fround(amax / (bits === 4 ? 6 : 448))
  let scale: number
  let value: number
  if (mode === 'nvfp4') {
    scale = e4m3Code(x)
    value = e4m3Value(scale)
  } else {
    if (!Number.isFinite(x)) scale = 0xff
    else {
      const n = x === 0 ? -127 : Math.max(-127, Math.min(127, roundHalfAway(Math.fround(Math.log2(x)))))
      scale = n + 127
    }
    value = e8m0Value(scale)
  }
  const enc = value === 0 ? 0 : Math.fround(1 / value)
  const codes = new Uint8Array(groupSize)
  for (let i = 0; i < groupSize; i++) {
    const q = Math.fround(values[start + i]! * enc)
    codes[i] = bits === 4 ? gpuFp4Code(q) : e4m3Code(q)
  }
  return {scale, codes}
}

/** The documented alternative `compare` accepts for the fp modes. */
export const MLX_FP_ACCEPTED = {gpuRule: 'mlx-gpu-rule'} as const

function fpScheme(mode: MlxFpMode): Scheme {
  const {bits, groupSize} = MLX_FP_MODES[mode]
  return {
    name: `mlx_${mode}`,
    describe: (params) => `MLX ${mode} (${bits === 4 ? 'fp4 e2m1' : 'fp8 e4m3'} values, ${mode === 'nvfp4' ? 'e4m3' : 'e8m0'} scale per ${groupSize}, from ${dtypeOf(params)})`,
    bitsPerWeight: () => bits + 8 / groupSize,
    blockSize: () => groupSize,
    parts: (_params, cols) => [{name: 'weight', dtype: 'U32', perRow: (cols * bits) / 32}, {name: 'scales', dtype: 'U8', perRow: cols / groupSize}],
    check(params, cols) {
      const dtype = dtypeOf(params)
      if (!isFloatDType(dtype)) throw new UsageError('quantize.dtype', `MLX ${mode} quantizes F32, F16 or BF16 weights, not ${String(dtype)}`)
      if (params.bits !== undefined && params.bits !== bits) throw new UsageError('quantize.bits', `MLX ${mode} stores ${bits}-bit elements, not ${params.bits}`)
      if (params.group_size !== undefined && params.group_size !== groupSize) throw new UsageError('quantize.group_size', `MLX ${mode} uses groups of ${groupSize}, not ${params.group_size}`)
      if (cols % groupSize !== 0) throw new UsageError('quantize.shape', `rows of ${cols} values are not whole groups of ${groupSize}`)
    },
    encode(values, rows, cols, params) {
      const dtype = dtypeOf(params)
      const n = rows * cols
      return fpEncode(mode, values, n, dtype)
    },
    encodeInto(values, rows, cols, params, into) {
      fpEncode(mode, values, rows * cols, dtypeOf(params), into)
    },
    decode(parts, rows, cols, params) {
      const dtype = dtypeOf(params)
      const n = rows * cols
      const codes = unpackFp(parts.weight!, bits, n)
      const out = new Float32Array(n)
      for (let i = 0; i < n; i++) {
        const byte = parts.scales![Math.floor(i / groupSize)]!
        const scale = mode === 'nvfp4' ? e4m3Value(byte) : e8m0Value(byte)
        const v = bits === 4 ? FP4_VALUES[codes[i]!]! : e4m3Value(codes[i]!)
        out[i] = roundTo(v * scale, dtype)
      }
      return out
    },
    compare(expected, actual, source, rows, cols, params): EncodingDiff {
      const n = rows * cols
      let values: Float32Array | undefined
      const a = unpackFp(expected.weight!, bits, n)
      const b = unpackFp(actual.weight!, bits, n)
      const groups = cols / groupSize
      const diff: EncodingDiff = {elements: n, identicalElements: 0, blocks: rows * groups, identicalBlocks: 0, accepted: {}, acceptedBlocks: []}
      for (let block = 0; block < rows * groups; block++) {
        const scaleSame = expected.scales![block] === actual.scales![block]
        let first = -1
        let same = 0
        for (let i = block * groupSize; i < (block + 1) * groupSize; i++) {
          if (a[i] === b[i]) same++
          else if (first < 0) first = i - block * groupSize
        }
        if (scaleSame) diff.identicalElements += same
        if (scaleSame && same === groupSize) {
          diff.identicalBlocks++
          continue
        }
        if (!values) {
          values = new Float32Array(n)
          for (let i = 0; i < n; i++) values[i] = roundTo(source[i]!, dtypeOf(params))
        }
        const gpu = gpuGroup(mode, values, block * groupSize)
        let isGpu = gpu.scale === actual.scales![block]
        for (let i = 0; i < groupSize && isGpu; i++) isGpu = gpu.codes[i] === b[block * groupSize + i]
        if (isGpu) {
          diff.accepted[MLX_FP_ACCEPTED.gpuRule] = (diff.accepted[MLX_FP_ACCEPTED.gpuRule] ?? 0) + 1
          diff.acceptedBlocks.push(block)
          continue
        }
        if (!diff.first) {
          const g = block % groups
          diff.first = {row: Math.floor(block / groups), block: g, col: g * groupSize + Math.max(0, scaleSame ? first : 0), part: scaleSame ? 'weight' : 'scales'}
        }
      }
      return diff
    },
  }
}

export const MLX_MXFP4 = fpScheme('mxfp4')
export const MLX_NVFP4 = fpScheme('nvfp4')
export const MLX_MXFP8 = fpScheme('mxfp8')

/** The scheme name of an MLX quantization mode's tensors. */
export function mlxFpSchemeName(mode: MlxFpMode): string {
  return `mlx_${mode}`
}

export type {Encoded}
