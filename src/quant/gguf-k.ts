/**
 * ggml's K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: 256-value super-blocks of 16 or 8 sub-blocks, each
 * sub-block with its own scale (and min), the scales themselves quantized against one f16 super
 * scale (ggml-common.h, ggml-quants.c). These are the encoders llama-quantize runs without an
 * importance matrix (`quantize_q4_K` … call `quantize_row_*_ref` when there are no quant weights):
 *
 * - Q6_K: per 16 values a signed 8-bit scale from `make_qx_quants` (a least-squares search over
 *   19 trial scales, weights x²), codes 6-bit signed: value = d · scale · (q - 32).
 * - Q3_K: per 16 values a 6-bit scale from `make_q3_quants` (least squares with up to 5 passes of
 *   one-code moves), codes 3-bit signed: value = d · (scale - 32) · (q - 4).
 * - Q4_K / Q5_K: per 32 values a 6-bit scale and 6-bit min from `make_qkx2_quants` (weighted
 *   least squares of scale and offset over 21 / 16 trial scales, weights rms(x) + |x|), codes 4 / 5
 *   bits: value = d · scale · q - dmin · min.
 * - Q2_K: per 16 values 4-bit scale and 4-bit min (`make_qkx2_quants` with weights |x| and
 *   absolute error), codes 2 bits.
 *
 * Every step is one f32 operation in the C's order (Math.fround after each; sums accumulate left
 * to right), `nearest_int` is ggml's 1.5·2^23 trick, and d/dmin are stored as IEEE half.
 */
import {type GgmlKernels, ggmlKernels, type SearchSpec} from '../simd/ggml.js'
import {fmaf} from './fmaf.js'
import {ggmlBlockScheme, type GgmlBlockType, putHalf, readHalf as half} from './ggml-block.js'

export const QK_K = 256
const fr = Math.fround
const GROUP_MAX_EPS = fr(1e-15)
const F01 = fr(0.1)

const scratchF = new Float32Array(1)
const scratchU = new Uint32Array(scratchF.buffer)

/** ggml's `nearest_int`: add 1.5·2^23 in f32 and read the low mantissa bits (round half to even in range). */
function nearestInt(f: number): number {
  // In ggml's asserted range the sum is an integer-valued f32 in [2^23, 2^24): the result is sum - 1.5·2^23.
  if (f <= 4194303 && f >= -4194303) return fr(f + 12582912) - 12582912
  scratchF[0] = f + 12582912
  return (scratchU[0]! & 0x007fffff) - 0x00400000
}

const clamp = (v: number, lo: number, hi: number) => (v < lo ? lo : v > hi ? hi : v)

/**
 * C's `c + a*b` (also `s += a*b`; `c - a*b` is mad(fused, -a, b, c)): two f32 roundings, or, `fused`,
 * one (fmaf): what a build that contracts the expression into a fused multiply-add computes. The
 * searches mark every place clang's -ffp-contract=on fuses (a product that is a direct operand of
 * the + or -, the left one when both are); `fused` false is the IEEE-strict C.
 */
const mad = (fused: boolean, a: number, b: number, c: number) => (fused ? fmaf(a, b, c) : fr(c + fr(a * b)))


/** The first of the n values at xo with the largest magnitude (C: `if (ax > amax)` from 0; NaN never wins), else 0. */
function firstAbsMax(x: Float32Array, xo: number, n: number): number {
  let max = 0
  let amax = 0
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]!)
    if (ax > amax) {
      amax = ax
      max = x[xo + i]!
    }
  }
  return max
}

/** roundedSums' results: Σ w·x·l and Σ w·l² (w = x²), each rounded to f32 at every step as ggml's f32 loops do. */
const SUMS = new Float64Array(2)

/**
 * Codes l = clamp(round(iscale·x), -nmax, nmax-1) of x[xo … xo+n) and their weighted sums into SUMS;
 * the codes plus `offset` are written to L[lo …] when L is given (a trial scale only needs the sums).
 */
function roundedSums(x: Float32Array, xo: number, n: number, iscale: number, nmax: number, L: Uint8Array | Int8Array | null, lo: number, offset: number, fused: boolean): void {
  let sumlx = 0
  let suml2 = 0
  for (let i = 0; i < n; i++) {
    const xi = x[xo + i]!
    const l = clamp(nearestInt(fr(iscale * xi)), -nmax, nmax - 1)
    if (L) L[lo + i] = l + offset
    const w = fr(xi * xi)
    sumlx = mad(fused, fr(w * xi), l, sumlx)
    suml2 = mad(fused, fr(w * l), l, suml2)
  }
  SUMS[0] = sumlx
  SUMS[1] = suml2
}

/** `make_qx_quants(n, nmax, x, L, rmse_type = 1, NULL)`: the scale; codes (0 … 2·nmax-1) into L. */
function makeQxQuants(n: number, nmax: number, x: Float32Array, xo: number, L: Uint8Array, lo: number, fused: boolean): number {
  const max = firstAbsMax(x, xo, n)
  if (Math.abs(max) < GROUP_MAX_EPS) {
    L.fill(0, lo, lo + n)
    return 0
  }
  roundedSums(x, xo, n, fr(-nmax / max), nmax, L, lo, nmax, fused)
  let scale = SUMS[1] !== 0 ? fr(SUMS[0]! / SUMS[1]!) : 0
  let best = fr(scale * SUMS[0]!)
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue
    const iscale = fr(-mad(fused, F01, is, nmax) / max)
    roundedSums(x, xo, n, iscale, nmax, null, 0, 0, fused)
    const sumlx = SUMS[0]!
    const suml2 = SUMS[1]!
    if (suml2 > 0 && fr(sumlx * sumlx) > fr(best * suml2)) {
      for (let i = 0; i < n; i++) L[lo + i] = nmax + clamp(nearestInt(fr(iscale * x[xo + i]!)), -nmax, nmax - 1)
      scale = fr(sumlx / suml2)
      best = fr(scale * sumlx)
    }
  }
  return scale
}

/** `make_q3_quants(n, nmax, x, L, do_rmse = true)`: the scale; codes (0 … 2·nmax-1) into L. */
function makeQ3Quants(n: number, nmax: number, x: Float32Array, xo: number, L: Int8Array, lo: number, fused: boolean): number {
  const max = firstAbsMax(x, xo, n)
  if (Math.abs(max) < GROUP_MAX_EPS) {
    L.fill(0, lo, lo + n)
    return 0
  }
  roundedSums(x, xo, n, fr(-nmax / max), nmax, L, lo, 0, fused)
  let sumlx = SUMS[0]!
  let suml2 = SUMS[1]!
  for (let itry = 0; itry < 5; itry++) {
    let changed = 0
    for (let i = 0; i < n; i++) {
      const xi = x[xo + i]!
      const w = fr(xi * xi)
      const li = L[lo + i]!
      let slx = mad(fused, -fr(w * xi), li, sumlx)
      if (slx > 0) {
        let sl2 = mad(fused, -fr(w * li), li, suml2)
        const nl = clamp(nearestInt(fr(fr(xi * sl2) / slx)), -nmax, nmax - 1)
        if (nl !== li) {
          slx = mad(fused, fr(w * xi), nl, slx)
          sl2 = mad(fused, fr(w * nl), nl, sl2)
          if (sl2 > 0 && fr(fr(slx * slx) * suml2) > fr(fr(sumlx * sumlx) * sl2)) {
            L[lo + i] = nl
            sumlx = slx
            suml2 = sl2
            changed++
          }
        }
      }
    }
    if (!changed) break
  }
  for (let i = 0; i < n; i++) L[lo + i] = L[lo + i]! + nmax
  return suml2 > 0 ? fr(sumlx / suml2) : 0
}

/**
 * `make_qkx2_quants`: scale (returned) and min (`out.min`, ≥ 0, subtracted) of n values under
 * `weights`; codes 0 … nmax into L. `laux` is scratch of n codes.
 */
function makeQkx2Quants(
  n: number, nmax: number, x: Float32Array, xo: number, weights: Float32Array, L: Uint8Array, lo: number, laux: Uint8Array,
  rmin: number, rdelta: number, nstep: number, useMad: boolean, out: {min: number}, fused: boolean,
): number {
  let min = x[xo]!
  let max = x[xo]!
  let sumW = weights[0]!
  let sumX = fr(sumW * x[xo]!)
  for (let i = 1; i < n; i++) {
    const xi = x[xo + i]!
    if (xi < min) min = xi
    if (xi > max) max = xi
    const w = weights[i]!
    sumW = fr(sumW + w)
    sumX = mad(fused, w, xi, sumX)
  }
  if (min > 0) min = 0
  if (max === min) {
    L.fill(0, lo, lo + n)
    out.min = -min
    return 0
  }
  let iscale = fr(nmax / fr(max - min))
  let scale = fr(1 / iscale)
  let bestError = 0
  for (let i = 0; i < n; i++) {
    const xi = x[xo + i]!
    const l = clamp(nearestInt(fr(iscale * fr(xi - min))), 0, nmax)
    L[lo + i] = l
    let diff = fr(mad(fused, scale, l, min) - xi)
    diff = useMad ? Math.abs(diff) : fr(diff * diff)
    bestError = mad(fused, weights[i]!, diff, bestError)
  }
  for (let is = 0; is <= nstep; is++) {
    // `min` may have moved to a better trial's offset: the next trials start from it (as ggml's loop does).
    iscale = fr(fr(mad(fused, rdelta, is, rmin) + nmax) / fr(max - min))
    let sumL = 0
    let sumL2 = 0
    let sumXL = 0
    for (let i = 0; i < n; i++) {
      const xi = x[xo + i]!
      const l = clamp(nearestInt(fr(iscale * fr(xi - min))), 0, nmax)
      laux[i] = l
      const w = weights[i]!
      const wl = fr(w * l)
      sumL = mad(fused, w, l, sumL)
      sumL2 = mad(fused, wl, l, sumL2)
      sumXL = mad(fused, wl, xi, sumXL)
    }
    // a*b - c*d: clang fuses the left product, fma(a, b, -(c*d))
    const D = mad(fused, sumW, sumL2, -fr(sumL * sumL))
    if (D > 0) {
      let thisScale = fr(mad(fused, sumW, sumXL, -fr(sumX * sumL)) / D)
      let thisMin = fr(mad(fused, sumL2, sumX, -fr(sumL * sumXL)) / D)
      if (thisMin > 0) {
        thisMin = 0
        thisScale = fr(sumXL / sumL2)
      }
      let curError = 0
      for (let i = 0; i < n; i++) {
        let diff = fr(mad(fused, thisScale, laux[i]!, thisMin) - x[xo + i]!)
        diff = useMad ? Math.abs(diff) : fr(diff * diff)
        curError = mad(fused, weights[i]!, diff, curError)
      }
      if (curError < bestError) {
        for (let i = 0; i < n; i++) L[lo + i] = laux[i]!
        bestError = curError
        scale = thisScale
        min = thisMin
      }
    }
  }
  out.min = -min
  return scale
}

/** The largest of the n values at xo, or 0 when none is above 0 (C's `if (x > max) max = x` from 0). */
function positiveMax(x: Float32Array, xo: number, n: number): number {
  let max = 0
  for (let i = xo; i < xo + n; i++) if (x[i]! > max) max = x[i]!
  return max
}

/**
 * The values with every NaN made payload-free (sign kept, quiet bit only; a copy only when one
 * carries a payload). ggml's nearest_int reads mantissa bits, so a payload can reach the codes, and
 * which operand's payload an f32 op keeps follows the order the JIT emits: the same input gave one
 * code byte 0 cold and 240 warm. Payload-free, every NaN the encoders meet has the same mantissa,
 * and the bytes are fixed. The wasm lanes do the same as they take the values in (tin_<n>).
 */
export function canonicalNaNs(values: Float32Array): Float32Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length)
  let out: Uint32Array | undefined
  for (let i = 0; i < bits.length; i++) {
    const u = bits[i]!
    const a = u & 0x7fffffff
    if (a > 0x7f800000 && a !== 0x7fc00000) {
      out ??= bits.slice()
      out[i] = (u & 0x80000000) | 0x7fc00000
    }
  }
  return out ? new Float32Array(out.buffer) : values
}

function checkLength(type: string, values: Float32Array): number {
  if (values.length % QK_K !== 0) throw new RangeError(`${type} needs a multiple of ${QK_K} values, got ${values.length}`)
  return values.length / QK_K
}

/**
 * Super-blocks per batch: the sub-block searches of a batch run first (in wasm lanes when available),
 * then the super-block scales, the codes, the packing. 256 · 256 values: what one wasm search takes
 * (GgmlKernels.MAX_VALUES).
 */
const BATCH = 256

/**
 * One batch's scratch, shared by the encoders of this thread (each call is synchronous and writes
 * what it reads first): a pool worker quantizing 1 MiB tasks otherwise made ~100 KB of garbage
 * ArrayBuffers per task. Sized for the largest user (16 sub-blocks of 16 per super-block).
 */
const CODES = new Uint8Array(BATCH * QK_K)
/** CODES four at a time, for the packing loops (codes are below 64: a shift by 4 stays in its byte after masking). */
const CODES32 = new Uint32Array(CODES.buffer)
const SCALES = new Float32Array(BATCH * 16)
const MINS = new Float32Array(BATCH * 16)
const DQ = new Float32Array(BATCH * 32)

/** `rmin + rdelta·is + nmax` for is = 0 … nstep, each step rounded to f32 as make_qkx2_quants does. */
const qkx2Trials = (nmax: number, rmin: number, nstep: number) =>
  Float32Array.from({length: nstep + 1}, (_, is) => fr(fr(rmin + fr(F01 * is)) + nmax))

/**
 * The sub-block searches of one batch (`subs` sub-blocks of spec.n values from values[xo]): in the
 * wasm lanes when there are any, else `scalar(j)` for each (which writes scales[j], mins[j] and
 * sub-block j's codes). Both give the same bytes, NaN inputs included: both see every NaN
 * payload-free (canonicalNaNs).
 */
function searchBatch(
  simd: GgmlKernels | undefined, spec: SearchSpec, values: Float32Array, xo: number, subs: number,
  scales: Float32Array, mins: Float32Array | null, scalar: (j: number) => void,
): void {
  if (simd) simd.search(spec, values, xo, subs, scales, mins)
  else for (let j = 0; j < subs; j++) scalar(j)
}

/**
 * The batch's codes once its super-block scales are stored: sub-block j's step dq[2j] and offset
 * dq[2j+1]; where the step is not 0 (C's `if (!d) continue`: a NaN step goes on), `scalar(j, d, dm)`
 * or the wasm lanes (which keep the search's codes elsewhere) write the codes into `codes`.
 */
function codesBatch(
  simd: GgmlKernels | undefined, spec: SearchSpec, dq: Float32Array, subs: number, codes: Uint8Array,
  scalar: (j: number, d: number, dm: number) => void,
): void {
  if (simd) return simd.codes(spec, dq, subs, codes)
  for (let j = 0; j < subs; j++) if (dq[2 * j] !== 0) scalar(j, dq[2 * j]!, dq[2 * j + 1]!)
}

// ---- Q6_K: ql[128], qh[64], scales[16] (int8), d ------------------------------------------------

const Q6_BYTES = 210

/** make_qx_quants(16, 32)'s trial scales nmax + 0.1·is, is = -9 … 9 but 0. */
const Q6_SEARCH: SearchSpec = {kernel: 'qx_16_32', codes: 'codes_16_-32_31', n: 16, trials: Float32Array.from([-9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9], (is) => fr(32 + fr(F01 * is)))}

export const quantizeQ6_K = (values: Float32Array, into?: Uint8Array) => q6K(values, ggmlKernels(), into)
/** Q6_K with the scalar searches only (the reference for the wasm lanes). */
export const quantizeQ6_KScalar = (values: Float32Array) => q6K(values, undefined)

function q6K(input: Float32Array, simd: GgmlKernels | undefined, into?: Uint8Array, fused = false): Uint8Array {
  const values = simd ? input : canonicalNaNs(input)
  const nb = checkLength('Q6_K', values)
  const out = into ?? new Uint8Array(nb * Q6_BYTES)
  const codes = CODES
  const scales = SCALES
  const dq = DQ
  const live = new Uint8Array(BATCH)
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  for (let b0 = 0; b0 < nb; b0 += BATCH) {
    const blocks = Math.min(BATCH, nb - b0)
    const xo = b0 * QK_K
    searchBatch(simd, Q6_SEARCH, values, xo, blocks * 16, scales, null, (j) => {
      scales[j] = makeQxQuants(16, 32, values, xo + 16 * j, codes, 16 * j, fused)
    })
    dq.fill(0)
    for (let bi = 0; bi < blocks; bi++) {
      const o = (b0 + bi) * Q6_BYTES
      const maxScale = firstAbsMax(scales, 16 * bi, 16)
      live[bi] = Math.abs(maxScale) < GROUP_MAX_EPS ? 0 : 1
      if (!live[bi]) continue // an all-zero block: every byte 0 (d = +0)
      const iscale = fr(-128 / maxScale)
      putHalf(out, o + 208, fr(1 / iscale))
      const d0 = half(out, o + 208)
      for (let ib = 0; ib < 16; ib++) out[o + 192 + ib] = Math.min(127, nearestInt(fr(iscale * scales[16 * bi + ib]!))) & 0xff
      for (let j = 0; j < 16; j++) dq[2 * (16 * bi + j)] = fr(d0 * ((out[o + 192 + j]! << 24) >> 24))
    }
    codesBatch(simd, Q6_SEARCH, dq, blocks * 16, codes, (j, d) => {
      for (let ii = 0; ii < 16; ii++) codes[16 * j + ii] = clamp(nearestInt(fr(values[xo + 16 * j + ii]! / d)), -32, 31) + 32
    })
    for (let bi = 0; bi < blocks; bi++) {
      if (!live[bi]) continue
      const o = (b0 + bi) * Q6_BYTES
      const L = bi * (QK_K / 4)
      // four codes a word (Q6_BYTES is not a multiple of 4: the words go out through a DataView)
      for (let j = 0, ql = o, qh = o + 128; j < QK_K / 4; j += 32, ql += 64, qh += 32) {
        for (let l = 0; l < 8; l++) {
          const q1 = CODES32[L + j + l]!
          const q2 = CODES32[L + j + l + 8]!
          const q3 = CODES32[L + j + l + 16]!
          const q4 = CODES32[L + j + l + 24]!
          view.setUint32(ql + 4 * l, (q1 & 0x0f0f0f0f) | ((q3 & 0x0f0f0f0f) << 4), true)
          view.setUint32(ql + 4 * l + 32, (q2 & 0x0f0f0f0f) | ((q4 & 0x0f0f0f0f) << 4), true)
          view.setUint32(qh + 4 * l, ((q1 >>> 4) & 0x03030303) | (((q2 >>> 4) & 0x03030303) << 2) | (((q3 >>> 4) & 0x03030303) << 4) | (((q4 >>> 4) & 0x03030303) << 6), true)
        }
      }
    }
  }
  return out
}

/** Code (0 … 63) of element e of the Q6_K block at o. */
function q6Code(b: Uint8Array, o: number, e: number): number {
  const n = e >> 7
  const quarter = (e >> 5) & 3
  const l = e & 31
  const ql = b[o + n * 64 + (quarter & 1) * 32 + l]!
  const low = quarter >= 2 ? ql >> 4 : ql & 0xf
  return low | (((b[o + 128 + n * 32 + l]! >> (2 * quarter)) & 3) << 4)
}

export function dequantizeQ6_K(bytes: Uint8Array): Float32Array {
  const nb = Math.floor(bytes.byteLength / Q6_BYTES)
  const out = new Float32Array(nb * QK_K)
  for (let i = 0; i < nb; i++) {
    const o = i * Q6_BYTES
    const d = half(bytes, o + 208)
    for (let e = 0; e < QK_K; e++) {
      const sc = (bytes[o + 192 + (e >> 4)]! << 24) >> 24
      out[i * QK_K + e] = fr(fr(d * sc) * (q6Code(bytes, o, e) - 32))
    }
  }
  return out
}

// ---- Q4_K / Q5_K: d, dmin, scales[12] (6-bit scales and mins), [qh[32]], qs[128] ----------------

/** ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block j from the 12 packed bytes at s. */
function scaleMinK4(b: Uint8Array, s: number, j: number, out: {sc: number; m: number}): void {
  if (j < 4) {
    out.sc = b[s + j]! & 63
    out.m = b[s + j + 4]! & 63
  } else {
    out.sc = (b[s + j + 4]! & 0xf) | ((b[s + j - 4]! >> 6) << 4)
    out.m = (b[s + j + 4]! >> 4) | ((b[s + j]! >> 6) << 4)
  }
}

const Q4_SEARCH: SearchSpec = {kernel: 'qkx2_32_15', codes: 'codes_32_0_15', n: 32, trials: qkx2Trials(15, -1, 20)}
const Q5_SEARCH: SearchSpec = {kernel: 'qkx2_32_31', codes: 'codes_32_0_31', n: 32, trials: qkx2Trials(31, -0.5, 15)}

function quantizeQ45K(input: Float32Array, bits: 4 | 5, simd: GgmlKernels | undefined, into?: Uint8Array, fused = false): Uint8Array {
  const values = simd ? input : canonicalNaNs(input)
  const nb = checkLength(bits === 4 ? 'Q4_K' : 'Q5_K', values)
  const blockBytes = bits === 4 ? 144 : 176
  const nmax = bits === 4 ? 15 : 31
  const spec = bits === 4 ? Q4_SEARCH : Q5_SEARCH
  const out = into ?? new Uint8Array(nb * blockBytes)
  const out32 = new Uint32Array(out.buffer, out.byteOffset, out.byteLength / 4) // 144- and 176-byte blocks: whole words (a slot's part starts on one)
  const codes = CODES
  const laux = new Uint8Array(32)
  const weights = new Float32Array(32)
  const mins = MINS
  const scales = SCALES
  const dq = DQ
  const m = {min: 0}
  const sm = {sc: 0, m: 0}
  for (let b0 = 0; b0 < nb; b0 += BATCH) {
    const blocks = Math.min(BATCH, nb - b0)
    const xo = b0 * QK_K
    searchBatch(simd, spec, values, xo, blocks * 8, scales, mins, (j) => {
      const base = xo + 32 * j
      let sumX2 = 0
      for (let l = 0; l < 32; l++) sumX2 = mad(fused, values[base + l]!, values[base + l]!, sumX2)
      const avX = fr(Math.sqrt(fr(sumX2 / 32)))
      for (let l = 0; l < 32; l++) weights[l] = fr(avX + Math.abs(values[base + l]!))
      scales[j] = bits === 4
        ? makeQkx2Quants(32, 15, values, base, weights, codes, 32 * j, laux, -1, F01, 20, false, m, fused)
        : makeQkx2Quants(32, 31, values, base, weights, codes, 32 * j, laux, -0.5, F01, 15, false, m, fused)
      mins[j] = m.min
    })
    for (let bi = 0; bi < blocks; bi++) {
      const o = (b0 + bi) * blockBytes
      const sb = 8 * bi
      const maxScale = positiveMax(scales, sb, 8)
      const maxMin = positiveMax(mins, sb, 8)
      const invScale = maxScale > 0 ? fr(63 / maxScale) : 0
      const invMin = maxMin > 0 ? fr(63 / maxMin) : 0
      const s = o + 4
      for (let j = 0; j < 8; j++) {
        const ls = Math.min(63, nearestInt(fr(invScale * scales[sb + j]!)) & 0xff)
        const lm = Math.min(63, nearestInt(fr(invMin * mins[sb + j]!)) & 0xff)
        if (j < 4) {
          out[s + j] = ls
          out[s + j + 4] = lm
        } else {
          out[s + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4)
          out[s + j - 4] |= (ls >> 4) << 6
          out[s + j] |= (lm >> 4) << 6
        }
      }
      putHalf(out, o, fr(maxScale / 63))
      putHalf(out, o + 2, fr(maxMin / 63))
      const d0 = half(out, o)
      const dmin0 = half(out, o + 2)
      for (let j = 0; j < 8; j++) {
        scaleMinK4(out, s, j, sm)
        dq[2 * (sb + j)] = fr(d0 * sm.sc)
        dq[2 * (sb + j) + 1] = fr(dmin0 * sm.m)
      }
    }
    codesBatch(simd, spec, dq, blocks * 8, codes, (j, d, dm) => {
      for (let ii = 0; ii < 32; ii++) codes[32 * j + ii] = clamp(nearestInt(fr(fr(values[xo + 32 * j + ii]! + dm) / d)), 0, nmax)
    })
    for (let bi = 0; bi < blocks; bi++) {
      const o = (b0 + bi) * blockBytes
      const L = bi * QK_K
      if (bits === 4) {
        // four codes a word (blocks of 144 bytes keep the words aligned)
        for (let j = L / 4, q = (o + 16) / 4; j < (L + QK_K) / 4; j += 16, q += 8) {
          for (let l = 0; l < 8; l++) out32[q + l] = CODES32[j + l]! | (CODES32[j + l + 8]! << 4)
        }
      } else {
        const qh = o + 16
        let m1 = 1
        let m2 = 2
        for (let n = 0, ql = o + 48; n < QK_K; n += 64, ql += 32, m1 <<= 2, m2 <<= 2) {
          for (let j = 0; j < 32; j++) {
            let l1 = codes[L + n + j]!
            if (l1 > 15) {
              l1 -= 16
              out[qh + j] |= m1
            }
            let l2 = codes[L + n + j + 32]!
            if (l2 > 15) {
              l2 -= 16
              out[qh + j] |= m2
            }
            out[ql + j] = l1 | (l2 << 4)
          }
        }
      }
    }
  }
  return out
}

function q4kCode(b: Uint8Array, o: number, e: number): number {
  const q = b[o + 16 + (e >> 6) * 32 + (e & 31)]!
  return e & 32 ? q >> 4 : q & 0xf
}

function q5kCode(b: Uint8Array, o: number, e: number): number {
  const n = e >> 6
  const upper = (e >> 5) & 1
  const q = b[o + 48 + n * 32 + (e & 31)]!
  return (upper ? q >> 4 : q & 0xf) | (((b[o + 16 + (e & 31)]! >> (2 * n + upper)) & 1) << 4)
}

function dequantizeQ45K(bytes: Uint8Array, bits: 4 | 5): Float32Array {
  const blockBytes = bits === 4 ? 144 : 176
  const code = bits === 4 ? q4kCode : q5kCode
  const nb = Math.floor(bytes.byteLength / blockBytes)
  const out = new Float32Array(nb * QK_K)
  const sm = {sc: 0, m: 0}
  for (let i = 0; i < nb; i++) {
    const o = i * blockBytes
    const d = half(bytes, o)
    const min = half(bytes, o + 2)
    for (let j = 0; j < 8; j++) {
      scaleMinK4(bytes, o + 4, j, sm)
      const d1 = fr(d * sm.sc)
      const m1 = fr(min * sm.m)
      for (let l = 0; l < 32; l++) out[i * QK_K + 32 * j + l] = fr(fr(d1 * code(bytes, o, 32 * j + l)) - m1)
    }
  }
  return out
}

export const quantizeQ4_K = (values: Float32Array, into?: Uint8Array) => quantizeQ45K(values, 4, ggmlKernels(), into)
export const quantizeQ5_K = (values: Float32Array, into?: Uint8Array) => quantizeQ45K(values, 5, ggmlKernels(), into)
/** Q4_K / Q5_K with the scalar searches only (the reference for the wasm lanes). */
export const quantizeQ4_KScalar = (values: Float32Array) => quantizeQ45K(values, 4, undefined)
export const quantizeQ5_KScalar = (values: Float32Array) => quantizeQ45K(values, 5, undefined)
export const dequantizeQ4_K = (bytes: Uint8Array) => dequantizeQ45K(bytes, 4)
export const dequantizeQ5_K = (bytes: Uint8Array) => dequantizeQ45K(bytes, 5)

// ---- Q3_K: hmask[32], qs[64], scales[12] (6-bit, packed), d ---------------------------------------

const Q3_BYTES = 110

/** The 6-bit scale of sub-block j (0 … 63, stored offset by 32) from the 12 packed bytes at s. */
function q3Scale(b: Uint8Array, s: number, j: number): number {
  const low = j < 8 ? b[s + j]! & 0xf : b[s + j - 8]! >> 4
  return low | (((b[s + 8 + (j % 4)]! >> (2 * (j >> 2))) & 3) << 4)
}

/** make_q3_quants has no trial scales: its up to 5 passes of one-code moves are the kernel's trial count. */
const Q3_SEARCH: SearchSpec = {kernel: 'q3_16_4', codes: 'codes_16_-4_3', n: 16, trials: new Float32Array(5)}

export const quantizeQ3_K = (values: Float32Array, into?: Uint8Array) => q3K(values, ggmlKernels(), into)
/** Q3_K with the scalar searches only (the reference for the wasm lanes). */
export const quantizeQ3_KScalar = (values: Float32Array) => q3K(values, undefined)

function q3K(input: Float32Array, simd: GgmlKernels | undefined, into?: Uint8Array, fused = false): Uint8Array {
  const values = simd ? input : canonicalNaNs(input)
  const nb = checkLength('Q3_K', values)
  const out = into ?? new Uint8Array(nb * Q3_BYTES)
  const codes = CODES
  const L = new Int8Array(16)
  const scales = SCALES
  const dq = DQ
  for (let b0 = 0; b0 < nb; b0 += BATCH) {
    const blocks = Math.min(BATCH, nb - b0)
    const xo = b0 * QK_K
    searchBatch(simd, Q3_SEARCH, values, xo, blocks * 16, scales, null, (j) => {
      scales[j] = makeQ3Quants(16, 4, values, xo + 16 * j, L, 0, fused)
      for (let ii = 0; ii < 16; ii++) codes[16 * j + ii] = L[ii]!
    })
    for (let bi = 0; bi < blocks; bi++) {
      const o = (b0 + bi) * Q3_BYTES
      const s = o + 96
      const maxScale = firstAbsMax(scales, 16 * bi, 16)
      if (maxScale !== 0) {
        const iscale = fr(-32 / maxScale)
        for (let j = 0; j < 16; j++) {
          let l = (nearestInt(fr(iscale * scales[16 * bi + j]!)) << 24) >> 24 // int8_t
          l = clamp(l, -32, 31) + 32
          if (j < 8) out[s + j] = l & 0xf
          else out[s + j - 8] |= (l & 0xf) << 4
          l >>= 4
          out[s + 8 + (j % 4)] |= l << (2 * (j >> 2))
        }
        putHalf(out, o + 108, fr(1 / iscale))
      } else {
        putHalf(out, o + 108, 0)
      }
      const d0 = half(out, o + 108)
      for (let j = 0; j < 16; j++) dq[2 * (16 * bi + j)] = fr(d0 * (q3Scale(out, s, j) - 32))
    }
    codesBatch(simd, Q3_SEARCH, dq, blocks * 16, codes, (j, d) => {
      for (let ii = 0; ii < 16; ii++) codes[16 * j + ii] = clamp(nearestInt(fr(values[xo + 16 * j + ii]! / d)), -4, 3) + 4
    })
    for (let bi = 0; bi < blocks; bi++) {
      const o = (b0 + bi) * Q3_BYTES
      const L0 = bi * QK_K
      for (let j = 0, m = 0, hm = 1; j < QK_K; j++) {
        if (codes[L0 + j]! > 3) {
          out[o + m] |= hm
          codes[L0 + j] = codes[L0 + j]! - 4
        }
        if (++m === 32) {
          m = 0
          hm <<= 1
        }
      }
      for (let j = 0; j < QK_K; j += 128) {
        for (let l = 0; l < 32; l++) out[o + 32 + j / 4 + l] = codes[L0 + j + l]! | (codes[L0 + j + l + 32]! << 2) | (codes[L0 + j + l + 64]! << 4) | (codes[L0 + j + l + 96]! << 6)
      }
    }
  }
  return out
}

function q3Code(b: Uint8Array, o: number, e: number): number {
  const n = e >> 7
  const r = e & 127
  const q = (b[o + 32 + n * 32 + (r & 31)]! >> (2 * (r >> 5))) & 3
  return q | (((b[o + (e & 31)]! >> (e >> 5)) & 1) << 2)
}

export function dequantizeQ3_K(bytes: Uint8Array): Float32Array {
  const nb = Math.floor(bytes.byteLength / Q3_BYTES)
  const out = new Float32Array(nb * QK_K)
  for (let i = 0; i < nb; i++) {
    const o = i * Q3_BYTES
    const d = half(bytes, o + 108)
    for (let e = 0; e < QK_K; e++) {
      const dl = fr(d * (q3Scale(bytes, o + 96, e >> 4) - 32))
      out[i * QK_K + e] = fr(dl * (q3Code(bytes, o, e) - 4))
    }
  }
  return out
}

// ---- Q2_K: scales[16] (4-bit scale | 4-bit min), qs[64], d, dmin ------------------------------------

const Q2_BYTES = 84

const Q2_SEARCH: SearchSpec = {kernel: 'qkx2_16_3', codes: 'codes_16_0_3', n: 16, trials: qkx2Trials(3, -0.5, 15)}

export const quantizeQ2_K = (values: Float32Array, into?: Uint8Array) => q2K(values, ggmlKernels(), into)
/** Q2_K with the scalar searches only (the reference for the wasm lanes). */
export const quantizeQ2_KScalar = (values: Float32Array) => q2K(values, undefined)

function q2K(input: Float32Array, simd: GgmlKernels | undefined, into?: Uint8Array, fused = false): Uint8Array {
  const values = simd ? input : canonicalNaNs(input)
  const nb = checkLength('Q2_K', values)
  const out = into ?? new Uint8Array(nb * Q2_BYTES)
  const codes = CODES
  const laux = new Uint8Array(16)
  const weights = new Float32Array(16)
  const mins = MINS
  const scales = SCALES
  const dq = DQ
  const m = {min: 0}
  for (let b0 = 0; b0 < nb; b0 += BATCH) {
    const blocks = Math.min(BATCH, nb - b0)
    const xo = b0 * QK_K
    searchBatch(simd, Q2_SEARCH, values, xo, blocks * 16, scales, mins, (j) => {
      for (let l = 0; l < 16; l++) weights[l] = Math.abs(values[xo + 16 * j + l]!)
      scales[j] = makeQkx2Quants(16, 3, values, xo + 16 * j, weights, codes, 16 * j, laux, -0.5, F01, 15, true, m, fused)
      mins[j] = m.min
    })
    for (let bi = 0; bi < blocks; bi++) {
      const o = (b0 + bi) * Q2_BYTES
      const sb = 16 * bi
      const maxScale = positiveMax(scales, sb, 16)
      const maxMin = positiveMax(mins, sb, 16)
      if (maxScale > 0) {
        const iscale = fr(15 / maxScale)
        for (let j = 0; j < 16; j++) out[o + j] = nearestInt(fr(iscale * scales[sb + j]!)) & 0xff
        putHalf(out, o + 80, fr(maxScale / 15))
      } else {
        putHalf(out, o + 80, 0)
      }
      if (maxMin > 0) {
        const iscale = fr(15 / maxMin)
        for (let j = 0; j < 16; j++) out[o + j] |= (nearestInt(fr(iscale * mins[sb + j]!)) << 4) & 0xff
        putHalf(out, o + 82, fr(maxMin / 15))
      } else {
        putHalf(out, o + 82, 0)
      }
      const d0 = half(out, o + 80)
      const dmin0 = half(out, o + 82)
      for (let j = 0; j < 16; j++) {
        dq[2 * (sb + j)] = fr(d0 * (out[o + j]! & 0xf))
        dq[2 * (sb + j) + 1] = fr(dmin0 * (out[o + j]! >> 4))
      }
    }
    codesBatch(simd, Q2_SEARCH, dq, blocks * 16, codes, (j, d, dm) => {
      for (let ii = 0; ii < 16; ii++) codes[16 * j + ii] = clamp(nearestInt(fr(fr(values[xo + 16 * j + ii]! + dm) / d)), 0, 3)
    })
    for (let bi = 0; bi < blocks; bi++) {
      const o = (b0 + bi) * Q2_BYTES
      const L = bi * QK_K
      for (let j = 0; j < QK_K; j += 128) {
        for (let l = 0; l < 32; l++) out[o + 16 + j / 4 + l] = codes[L + j + l]! | (codes[L + j + l + 32]! << 2) | (codes[L + j + l + 64]! << 4) | (codes[L + j + l + 96]! << 6)
      }
    }
  }
  return out
}

function q2Code(b: Uint8Array, o: number, e: number): number {
  const r = e & 127
  return (b[o + 16 + (e >> 7) * 32 + (r & 31)]! >> (2 * (r >> 5))) & 3
}

export function dequantizeQ2_K(bytes: Uint8Array): Float32Array {
  const nb = Math.floor(bytes.byteLength / Q2_BYTES)
  const out = new Float32Array(nb * QK_K)
  for (let i = 0; i < nb; i++) {
    const o = i * Q2_BYTES
    const d = half(bytes, o + 80)
    const min = half(bytes, o + 82)
    for (let e = 0; e < QK_K; e++) {
      const sc = bytes[o + (e >> 4)]!
      const dl = fr(d * (sc & 0xf))
      const ml = fr(min * (sc >> 4))
      out[i * QK_K + e] = fr(fr(dl * q2Code(bytes, o, e)) - ml)
    }
  }
  return out
}

/**
 * The K-quants as an FMA-contracting build of ggml's C computes them (scalar): every `a*b + c` of
 * the searches one fused multiply-add (mad). The super-block steps have none. Rule `ggml-fma`
 * (ggml-block.ts compares with it where a block differs); never what we write.
 */
export const quantizeFusedK = {
  Q2_K: (values: Float32Array) => q2K(values, undefined, undefined, true),
  Q3_K: (values: Float32Array) => q3K(values, undefined, undefined, true),
  Q4_K: (values: Float32Array) => quantizeQ45K(values, 4, undefined, undefined, true),
  Q5_K: (values: Float32Array) => quantizeQ45K(values, 5, undefined, undefined, true),
  Q6_K: (values: Float32Array) => q6K(values, undefined, undefined, true),
}

/** The searches of each K type, for tests of the wasm lanes. */
export const K_SEARCHES = {Q2_K: Q2_SEARCH, Q3_K: Q3_SEARCH, Q4_K: Q4_SEARCH, Q5_K: Q5_SEARCH, Q6_K: Q6_SEARCH}

// ---- schemes ----------------------------------------------------------------------------------

function kType(type: keyof typeof quantizeFusedK, bytes: number, scaleBytes: GgmlBlockType['scaleBytes'], describe: string, quantize: GgmlBlockType['quantize'], dequantize: (b: Uint8Array) => Float32Array, code: GgmlBlockType['code']): GgmlBlockType {
  return {name: `gguf_${type.toLowerCase()}`, type, elements: QK_K, bytes, scaleBytes, describe, quantize, dequantize, code, quantizeFused: quantizeFusedK[type]}
}

export const Q2_K = kType('Q2_K', Q2_BYTES, [[0, 16], [80, 84]], 'Q2_K (super-blocks of 256: 2-bit codes, 4-bit scales and mins per 16)', quantizeQ2_K, dequantizeQ2_K, q2Code)
export const Q3_K = kType('Q3_K', Q3_BYTES, [[96, 110]], 'Q3_K (super-blocks of 256: 3-bit codes, 6-bit scales per 16)', quantizeQ3_K, dequantizeQ3_K, q3Code)
export const Q4_K = kType('Q4_K', 144, [[0, 16]], 'Q4_K (super-blocks of 256: 4-bit codes, 6-bit scales and mins per 32)', quantizeQ4_K, dequantizeQ4_K, q4kCode)
export const Q5_K = kType('Q5_K', 176, [[0, 16]], 'Q5_K (super-blocks of 256: 5-bit codes, 6-bit scales and mins per 32)', quantizeQ5_K, dequantizeQ5_K, q5kCode)
export const Q6_K = kType('Q6_K', Q6_BYTES, [[192, 210]], 'Q6_K (super-blocks of 256: 6-bit codes, 8-bit scales per 16)', quantizeQ6_K, dequantizeQ6_K, q6Code)

export const GGUF_Q2_K = ggmlBlockScheme(Q2_K)
export const GGUF_Q3_K = ggmlBlockScheme(Q3_K)
export const GGUF_Q4_K = ggmlBlockScheme(Q4_K)
export const GGUF_Q5_K = ggmlBlockScheme(Q5_K)
export const GGUF_Q6_K = ggmlBlockScheme(Q6_K)
