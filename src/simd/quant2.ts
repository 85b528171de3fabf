/**
 * WebAssembly SIMD kernels of the ONNX and MLX fp quantizers (issue 15), each bit-identical to the
 * scalar loop it stands in for, which stays the reference (test/simd-quant2.test.ts):
 *   - ONNX weight-only int8 (src/quant/onnx-int8.ts): per-row |x| maximum and the codes
 *     clip(rint(f32(x / scale)), ±127);
 *   - ONNX MatMulNBits 4-bit (src/quant/onnx-q4.ts): per-block min/max and the codes
 *     clamp(roundf(f32(f32(x · r) + 8)), 0, 15), packed two to a byte;
 *   - MLX mxfp4, nvfp4, mxfp8 (src/quant/mlx-fp.ts): per-group |x| maximum, q = D(x) / divisor
 *     (rounded to the weight dtype D where the scalar rounds it) and its fp4 e2m1 or fp8 e4m3 code.
 * The per-group rules (a scale from a maximum) stay in the quantizer's own JS; the kernels do the
 * per-element work. For F16 and BF16 weights the MLX rule is a table the quantizer fills once per
 * thread (by the group's largest |w| as a 16-bit pattern), so one pass per group does it all
 * (fpFusedFunc), with a short rounding for groups that cannot meet NaN or overflow. A module of its own (src/simd/kernels.ts is the casts', Q8_0's and MLX affine's),
 * built from that file's pieces, with its own memory: one chunk of f32 in, codes out. One instance
 * per thread, made on first use; OPENELM_SIMD=0 or a runtime without WebAssembly SIMD leaves
 * `quant2Kernels()` undefined and the callers on their scalar loops.
 */
import {
  ELSE, END, IF, lazyKernels,
  assemble, F32X4_ABS, F32X4_DIV, f32x4c, F32X4_LT, F32X4_MUL, F32X4_NEAREST, F32X4_PMAX, F32X4_PMIN, F32X4_SPLAT, type Func, f32Load, get,
  I16X8_NARROW_I32X4_S, I16X8_NARROW_I32X4_U, I32, I32_ADD, I32_MUL, I32X4_ADD, i32x4c, I32X4_LT_S, I32X4_NE, I32X4_SHR_U, I32X4_SPLAT, I32X4_SUB,
  I32X4_TRUNC_SAT_F32X4_S, i32c, i32Load, I8X16_NARROW_I16X8_S, I8X16_NARROW_I16X8_U, set, tee, V128, V128_AND, V128_BITSELECT, V128_OR, v128Load, v128Store,
  F32X4_ADD, f32c, F32, F32_ABS, F32_DIV, F32_GT, F32_MAX, F32_MIN, F32_NE, f32Store, f32x4Lane, SELECT,
  F32X4_SUB, f32x4Shuffle, I32_AND, I32_GT_U, I32_OR, I32_SHR_S, I32_SUB, I32X4_MAX_S, i32Store, i32Store8, i32x4Lane,
} from './asm.js'
import {addr, bf16Lanes, f16Lanes, forLoop, MINMAX, pairFunc, roundAwayLanes, roundBf16Lanes, roundF16Lanes} from './kernels.js'

/** Values per chunk. */
export const CHUNK2 = 65536
/** Entries of a fused fp kernel's table: one per non-negative 16-bit pattern of the dtype, 8 bytes each. */
export const FP_TABLE_ENTRIES = 0x8000
const ENTRIES = FP_TABLE_ENTRIES
const SRC = 0
const DST = CHUNK2 * 4
/** Two 4-byte slots per group or row (at most CHUNK2 / 4 of them). */
const PAR = CHUNK2 * 8
/** Four i32 lanes: how many fp4 values the kernel left to the scalar code (|q| > 64 or ±Inf). */
const SLOW = PAR + CHUNK2 * 2
/** The fused fp kernels' scale bytes (one per group, at most CHUNK2 / 16). */
const SCALES = SLOW + 16
/** The fused fp kernels' group tables (fpFusedFunc), one slot per mode and dtype a thread uses. */
const TABLES = SCALES + CHUNK2 / 16
const TABLE_SLOTS = 6
/** Pages of the kernels' module, and of the MLX fp kernels' own module (with the fused kernels' tables). */
const PAGES = (SCALES + 65535) >>> 16
const FP_PAGES = (TABLES + TABLE_SLOTS * ENTRIES * 8 + 65535) >>> 16
/** The code the fp4 kernel writes for a value it leaves to the scalar rule (no fp4 or e4m3 code is 0xff). */
export const SLOW_CODE = 0xff

/** Addresses of group/row g's values (4 bytes each, `size` a local) and of its codes (1 byte each). */
const groupAt = (BASE: number, G: number, SIZE: number, bytes: number) => [...get(BASE), ...get(G), ...get(SIZE), ...I32_MUL, ...i32c(bytes), ...I32_MUL, ...I32_ADD]

/** 16 codes of 16 values at local P (4 vectors, `code(k)` leaves one i32x4 of codes for vector k), stored at local O; both advance. */
const sixteen = (P: number, O: number, code: (k: number) => number[], signed: boolean) => {
  const n16 = signed ? I16X8_NARROW_I32X4_S : I16X8_NARROW_I32X4_U
  const n8 = signed ? I8X16_NARROW_I16X8_S : I8X16_NARROW_I16X8_U
  return [
    ...get(O), ...code(0), ...code(1), ...n16, ...code(2), ...code(3), ...n16, ...n8, ...v128Store(0),
    ...get(P), ...i32c(64), ...I32_ADD, ...set(P), ...get(O), ...i32c(16), ...I32_ADD, ...set(O),
  ]
}

/**
 * A kernel `(src, par, dst, groups, size)`: per group, `setup` from its par slots, then `code` over
 * its values 16 at a time.
 */
function groupKernel(
  name: string, locals: Array<[number, number]>, setup: (G: number) => number[], code: (P: number, k: number) => number[], signed: boolean,
  tail: number[] = [],
): Func {
  const [SRCP, , DSTP, NG, SIZE, G, P, O, I] = [0, 1, 2, 3, 4, 5, 6, 7, 8]
  const loop = (c: (P: number, k: number) => number[]) => forLoop(I, SIZE, 16, sixteen(P, O, (k) => c(P, k), signed))
  return {
    name, params: 5, locals: [[4, I32], ...locals],
    body: [
      ...forLoop(G, NG, 1, [
        ...setup(G),
        ...groupAt(SRCP, G, SIZE, 4), ...set(P), ...groupAt(DSTP, G, SIZE, 1), ...set(O),
        ...loop(code),
      ]),
      ...tail,
    ],
  }
}
const PARP = 1
const V128_NOT = [0xfd, 0x4d]
const splatPar = (G: number, offset: number, into: number, load = f32Load, splat = F32X4_SPLAT) => [...addr(PARP, G, 8), ...load(offset), ...splat, ...set(into)]

/**
 * int8(src, par, dst, rows, cols): code = clip(rint(x / scale), −127, 127) with scale = par[2r]
 * (f32 division, round half to even, NaN → 0 by the saturating truncation). cols a multiple of 16.
 */
const INT8: Func = (() => {
  const SC = 9
  return groupKernel('int8', [[1, V128]], (G) => splatPar(G, 0, SC), (P, k) => [
    ...get(P), ...v128Load(16 * k), ...get(SC), ...F32X4_DIV, ...F32X4_NEAREST,
    ...f32x4c(127), ...F32X4_PMIN, ...f32x4c(-127), ...F32X4_PMAX, ...I32X4_TRUNC_SAT_F32X4_S,
  ], true)
})()

/**
 * q4_<F32|F16>(src, scales, dst, blocks, 32): per block of 32, MLAS's scale from the block's min and max
 * (NaN ignored, clamped to ±f32 max as the scalar loop starts): m = |max| > |min| ? max : min,
 * s = f32(−m / 8) (rounded to f16 and back for F16), stored at scales[b]; r = s ≠ 0 ? f32(1 / s) : 0;
 * code = clamp(roundf(f32(f32(x · r) + 8)), 0, 15); NaN → 0 (pmax/pmin keep it, the truncation zeroes
 * it), ±Inf clamp to 15/0 as the scalar loop. A zero s may carry either sign here (the scalar loop's
 * sign depends on the order of its zeros): the caller redoes blocks whose scale is ±0.
 */
function q4Func(dtype: 'F32' | 'F16'): Func {
  const P = 6
  const [RS, X, T, MN, MX, V, H] = [9, 10, 11, 12, 13, 14, 15]
  const [LO, HI, S] = [19, 20, 21]
  const lanes = (v: number, op: number[]) => [...get(v), ...f32x4Lane(0), ...get(v), ...f32x4Lane(1), ...op, ...get(v), ...f32x4Lane(2), ...get(v), ...f32x4Lane(3), ...op, ...op]
  const setup = (G: number) => [
    ...groupAt(0, G, 4, 4), ...set(P), // the block's values (src, size: locals 0, 4)
    ...f32x4c(Infinity), ...set(MN), ...f32x4c(-Infinity), ...set(MX),
    ...[0, 1, 2, 3, 4, 5, 6, 7].flatMap((k) => [
      ...get(P), ...v128Load(16 * k), ...set(V),
      ...get(MN), ...get(V), ...F32X4_PMIN, ...set(MN), ...get(MX), ...get(V), ...F32X4_PMAX, ...set(MX),
    ]),
    ...lanes(MN, F32_MIN), ...f32c(F32_MAX_VALUE), ...F32_MIN, ...set(LO),
    ...lanes(MX, F32_MAX), ...f32c(-F32_MAX_VALUE), ...F32_MAX, ...set(HI),
    // s = −m / 8
    ...get(HI), ...get(LO), ...get(HI), ...F32_ABS, ...get(LO), ...F32_ABS, ...F32_GT, ...SELECT, ...F32_NEG, ...f32c(8), ...F32_DIV, ...set(S),
    ...(dtype === 'F16' ? [...get(S), ...F32X4_SPLAT, ...set(X), ...roundF16Lanes(X, H), ...f32x4Lane(0), ...set(S)] : []),
    ...addr(PARP, G, 4), ...get(S), ...f32Store(0),
    ...f32c(1), ...get(S), ...F32_DIV, ...f32c(0), ...get(S), ...f32c(0), ...F32_NE, ...SELECT, ...F32X4_SPLAT, ...set(RS),
  ]
  return groupKernel(`q4_${dtype}`, [[10, V128], [3, F32]], setup, (at, k) => [
    ...get(at), ...v128Load(16 * k), ...get(RS), ...F32X4_MUL, ...f32x4c(8), ...F32X4_ADD, ...roundAwayLanes(X, T),
    ...f32x4c(0), ...F32X4_PMAX, ...f32x4c(15), ...F32X4_PMIN, ...I32X4_TRUNC_SAT_F32X4_S,
  ], false)
}
const F32_MAX_VALUE = 3.4028234663852886e38
const F32_NEG = [0x8c]

/** The fp4 e2m1 thresholds of fp4Code (src/quant/mlx-fp.ts): the code's magnitude index is how many of these |q| exceeds. */
const FP4_EDGES = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5]
/**
 * The same thresholds for a quotient q not yet rounded to the dtype: each t is even in the dtype (its
 * last mantissa bit 0, f16 and bf16 alike), so R(q) > t exactly when q > t + ½ ulp(t) (below the
 * midpoint R gives t or less; at it the tie goes to the even t), R being round to nearest even.
 * (With e4m3 or power-of-two divisors of 16-bit weights no quotient falls in (t, t + ½ ulp], so
 * tests cannot tell these from t; the rule above holds for any quotient.)
 */
const fp4Midpoints = (dtype: 'F16' | 'BF16') => FP4_EDGES.map((t) => t + 2 ** (Math.floor(Math.log2(t)) - (dtype === 'F16' ? 11 : 8)))

/** The v128 locals of the fp coders: the divisor D, the value X, |q| A, scratch S, the SLOW counter CNT, and H (four from H on: the f16 rounding's scratch). */
interface FpLocals {
  D: number
  X: number
  A: number
  S: number
  CNT: number
  H: number
}

/**
 * The per-value code of the fp kernels, 4 lanes from `P + 16k` to an i32x4 of codes on the stack:
 *   full(rounded): each weight rounded to the dtype, q = w / D in f32, rounded to the dtype again when
 *     `rounded` (the scalar's roundTo; else the division is exact), then
 *     fp4: index = #thresholds below |q|, code = index | 8 when q < 0 and index > 0; |q| > 64 (and ±Inf)
 *          store SLOW_CODE and count in the CNT lanes (the scalar rule compares rounded distances there);
 *     fp8: e4m3fn, round half to even on the f32 bits (|q| < 2^-6: rint(|q| · 512)), |q| ≥ 448 and NaN
 *          saturate to 0x7e, the sign bit kept.
 *   fast(rounded): the same codes for a group with no NaN whose quotients stay finite in the dtype and,
 *     for fp4, within 64 (fpFusedFunc checks this per group): |w| rounded by the short bit rule
 *     (shortRoundLanes), q = |w| / D (D > 0, so the sign is the weight's), no SLOW lanes.
 */
function fpCoders(bits: 4 | 8, dtype: 'F32' | 'F16' | 'BF16', {D, X, A, S, CNT, H}: FpLocals) {
  const round = dtype === 'F16' ? roundF16Lanes(X, H) : dtype === 'BF16' ? roundBf16Lanes(X, H) : []
  // q = D(x) / d, rounded to the dtype D again when `rounded` (the group's flag)
  const q = (P: number, k: number, rounded: boolean) => [
    ...get(P), ...v128Load(16 * k), ...set(X), ...(dtype === 'F32' ? [] : [...round, ...set(X)]),
    ...get(X), ...get(D), ...F32X4_DIV, ...set(X), ...(rounded ? [...round, ...set(X)] : []),
  ]
  // the fp4 index of |q| in A: #thresholds below it, as a negative count on the stack (the first mask kept in S)
  const fp4Index = (edges: number[]) => edges.flatMap((t, i) => [...f32x4c(t), ...get(A), ...F32X4_LT, ...(i === 0 ? tee(S) : I32X4_ADD)])
  const fp4Code = (rounded: boolean) => (P: number, k: number) => [
    ...q(P, k, rounded), ...get(X), ...F32X4_ABS, ...set(A),
    ...i32x4c(0), ...fp4Index(FP4_EDGES), ...tee(S), ...I32X4_SUB,
    // index | (8 if q < 0 and index > 0)
    ...get(X), ...f32x4c(0), ...F32X4_LT, ...get(S), ...i32x4c(0), ...I32X4_NE, ...V128_AND, ...i32x4c(8), ...V128_AND, ...V128_OR,
    // |q| > 64: SLOW_CODE, counted
    ...i32x4c(SLOW_CODE), ...f32x4c(64), ...get(A), ...F32X4_LT, ...tee(S), ...V128_NOT, ...V128_BITSELECT,
    ...get(CNT), ...get(S), ...I32X4_SUB, ...set(CNT),
  ]
  // e4m3fn of |q| (bits in A), the sign bit from X's
  const e4m3 = [
    // subnormal steps: rint(|q| · 512)
    ...get(A), ...f32x4c(512), ...F32X4_MUL, ...F32X4_NEAREST, ...I32X4_TRUNC_SAT_F32X4_S,
    // normal: the f32 bits rounded to 3 mantissa bits (half to even, a carry steps the exponent), rebiased
    ...get(A), ...i32x4c(0x7ffff), ...I32X4_ADD, ...get(A), ...i32c(20), ...I32X4_SHR_U, ...i32x4c(1), ...V128_AND, ...I32X4_ADD,
    ...i32c(20), ...I32X4_SHR_U, ...i32x4c(960), ...I32X4_SUB,
    ...get(A), ...i32x4c(0x3c800000), ...I32X4_LT_S, ...V128_BITSELECT,
    ...i32x4c(0x7e), ...get(A), ...f32x4c(448), ...F32X4_LT, ...V128_BITSELECT,
    ...get(X), ...i32c(24), ...I32X4_SHR_U, ...i32x4c(0x80), ...V128_AND, ...V128_OR,
  ]
  const fp8Code = (rounded: boolean) => (P: number, k: number) => [...q(P, k, rounded), ...get(X), ...i32x4c(0x7fffffff), ...V128_AND, ...set(A), ...e4m3]
  // |q| = R(R(|x|) / d) into A, R the short rounding (no NaN, no overflow: the group's check)
  const short = dtype === 'F32' ? () => [] : shortRoundLanes(dtype, A)
  const fastQ = (P: number, k: number, rounded: boolean) => [
    ...get(P), ...v128Load(16 * k), ...tee(X), ...i32x4c(0x7fffffff), ...V128_AND, ...set(A), ...short(),
    ...get(A), ...get(D), ...F32X4_DIV, ...set(A), ...(rounded ? short() : []),
  ]
  // fp4 compares the unrounded quotient with the midpoints instead: the same index without its rounding
  const fastFp4 = (rounded: boolean) => (P: number, k: number) => [
    ...fastQ(P, k, false),
    ...i32x4c(0), ...fp4Index(rounded && dtype !== 'F32' ? fp4Midpoints(dtype) : FP4_EDGES), ...I32X4_SUB,
    // | 8 where x < 0 and index > 0 (the first mask, in S)
    ...get(X), ...i32c(28), ...I32X4_SHR_U, ...i32x4c(8), ...V128_AND, ...get(S), ...V128_AND, ...V128_OR,
  ]
  const fastFp8 = (rounded: boolean) => (P: number, k: number) => [...fastQ(P, k, rounded), ...e4m3]
  return bits === 4 ? {full: fp4Code, fast: fastFp4} : {full: fp8Code, fast: fastFp8}
}

/**
 * Non-negative, non-NaN f32 lanes in local A rounded to the dtype, back into A: bf16 by the bit rule
 * of bf16Lanes without its NaN case (a carry reaches Inf, as it should); f16 for values under 65520
 * (no overflow) by the same bit rule at 13 bits for normals, and under 2^-14 by adding ½ as a float
 * (the FPU's round to nearest even at 2^-24 steps) and taking it away again.
 */
function shortRoundLanes(dtype: 'F16' | 'BF16', A: number): () => number[] {
  const bitRule = (shift: number) => [
    ...get(A), ...i32x4c((1 << (shift - 1)) - 1), ...I32X4_ADD, ...get(A), ...i32c(shift), ...I32X4_SHR_U, ...i32x4c(1), ...V128_AND, ...I32X4_ADD,
    ...i32x4c(-(1 << shift)), ...V128_AND,
  ]
  if (dtype === 'BF16') return () => [...bitRule(16), ...set(A)]
  return () => [
    ...get(A), ...f32x4c(0.5), ...F32X4_ADD, ...f32x4c(0.5), ...F32X4_SUB,
    ...bitRule(13),
    ...get(A), ...i32x4c(0x38800000), ...I32X4_LT_S, ...V128_BITSELECT, ...set(A),
  ]
}

/**
 * fp<bits>(src, par, dst, groups, size): fpCoders' full codes of F32 weights (never rounded) by
 * groups, each with its divisor at par[2g]; F16 and BF16 weights take fpFusedFunc.
 */
function fpFunc(bits: 4 | 8): Func {
  const coders = fpCoders(bits, 'F32', {D: 9, X: 10, A: 11, S: 12, CNT: 13, H: 14})
  return groupKernel(
    `fp${bits}`, [[6, V128]], (G) => splatPar(G, 0, 9), coders.full(false), false,
    bits === 4 ? [...i32c(SLOW), ...get(13), ...v128Store(0)] : [],
  )
}

/** Bits of a fused kernel's table entry (its second word; the first is the divisor, f32). */
export const FP_ENTRY = {byte: 0xff, rounded: 0x100, zero: 0x200, full: 0x400} as const

/**
 * fpg<bits>_<size>_<dtype>(src, par, dst, groups, scales, table): fp_<bits>_<dtype> with the group
 * rule by table, for the F16 and BF16 weights. Per group of `size`: the largest |w| ignoring NaN
 * (as i32 bits, non-negative floats order as their bits; a NaN's bits exceed Inf's, so a second pass
 * takes the f32 pmax when one is there), its dtype pattern h (f16Lanes / bf16Lanes: the rounded
 * largest |w| is the largest rounded |w|), the entry table[h] the quantizer filled from its scalar
 * rule: the scale byte (stored at scales[g]), the divisor (at par[2g], and the flag, -1 when rounded,
 * at par[2g+1], for the SLOW values' scalar rule), and how to code the group: all zero; full (a NaN,
 * or |q| may pass 64 for fp4 or the dtype's largest finite value); else fast.
 */
function fpFusedFunc(bits: 4 | 8, size: 16 | 32, dtype: 'F16' | 'BF16'): Func {
  const [SRCP, , DSTP, NG, SCP, TBL, G, P, O, INFO, E, NAN] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
  const L: FpLocals = {D: 12, X: 13, A: 14, S: 15, CNT: 16, H: 17}
  const M = 21
  const coders = fpCoders(bits, dtype, L)
  const vectors = Array.from({length: size / 4}, (_, k) => k)
  // every lane the largest of the four
  const hmax = (op: number[]) => [
    ...get(M), ...get(M), ...get(M), ...f32x4Shuffle([2, 3, 0, 1]), ...op, ...tee(M), ...get(M), ...get(M), ...f32x4Shuffle([1, 0, 3, 2]), ...op, ...set(M),
  ]
  const codes = (code: (P: number, k: number) => number[]) => Array.from({length: size / 16}, () => sixteen(P, O, (k) => code(P, k), false)).flat()
  const byFlag = (bit: number, yes: number[], no: number[]) => [...get(INFO), ...i32c(bit), ...I32_AND, ...IF, ...yes, ...ELSE, ...no, ...END]
  return {
    name: `fpg${bits}_${size}_${dtype}`, params: 6, locals: [[6, I32], [10, V128]],
    body: [
      ...forLoop(G, NG, 1, [
        ...get(SRCP), ...get(G), ...i32c(size * 4), ...I32_MUL, ...I32_ADD, ...set(P),
        ...get(DSTP), ...get(G), ...i32c(size), ...I32_MUL, ...I32_ADD, ...set(O),
        // the largest |w| as bits (a NaN's are larger than any number's)
        ...i32x4c(0), ...set(M),
        ...vectors.flatMap((k) => [...get(M), ...get(P), ...v128Load(16 * k), ...i32x4c(0x7fffffff), ...V128_AND, ...I32X4_MAX_S, ...set(M)]),
        ...hmax(I32X4_MAX_S),
        ...get(M), ...i32x4Lane(0), ...i32c(0x7f800000), ...I32_GT_U, ...tee(NAN), ...IF,
        // a NaN: the largest |w| among the numbers
        ...f32x4c(0), ...set(M),
        ...vectors.flatMap((k) => [...get(M), ...get(P), ...v128Load(16 * k), ...F32X4_ABS, ...F32X4_PMAX, ...set(M)]),
        ...hmax(F32X4_PMAX),
        ...END,
        // its pattern in the dtype, its table entry
        ...get(TBL),
        ...(dtype === 'F16' ? f16Lanes(M, L.A, L.S, L.X) : bf16Lanes(M, L.A)), ...i32x4Lane(0), ...i32c(8), ...I32_MUL, ...I32_ADD, ...set(E),
        ...get(E), ...i32Load(4), ...set(INFO),
        ...get(SCP), ...get(G), ...I32_ADD, ...get(INFO), ...i32Store8(0),
        ...get(E), ...f32Load(0), ...F32X4_SPLAT, ...set(L.D),
        ...addr(PARP, G, 8), ...get(E), ...f32Load(0), ...f32Store(0),
        ...addr(PARP, G, 8), ...i32c(0), ...get(INFO), ...i32c(FP_ENTRY.rounded), ...I32_AND, ...I32_SUB, ...i32c(8), ...I32_SHR_S, ...i32Store(4),
        ...byFlag(FP_ENTRY.zero,
          Array.from({length: size / 16}, (_, j) => [...get(O), ...i32x4c(0), ...v128Store(16 * j)]).flat(),
          [
            ...get(INFO), ...i32c(FP_ENTRY.full), ...I32_AND, ...get(NAN), ...I32_OR, ...IF,
            ...byFlag(FP_ENTRY.rounded, codes(coders.full(true)), codes(coders.full(false))),
            ...ELSE,
            ...byFlag(FP_ENTRY.rounded, codes(coders.fast(true)), codes(coders.fast(false))),
            ...END,
          ]),
      ]),
      ...(bits === 4 ? [...i32c(SLOW), ...get(L.CNT), ...v128Store(0)] : []),
    ],
  }
}

const FUSED_SHAPES = [[4, 16], [4, 32], [8, 32]] as const


type Fn = (...args: number[]) => void
type FusedName = `fpg${4 | 8}_${16 | 32}_${'F16' | 'BF16'}`
type Exports = Record<'minmax' | 'pair4' | 'int8' | 'q4_F32' | 'q4_F16' | `fp${4 | 8}` | FusedName, Fn> & {mem: {buffer: ArrayBuffer}}

/**
 * A group's rule, in the quantizer's JS: from the group's min and max (NaN ignored; ±Infinity when
 * it holds no number) it writes the kernel's parameter to `par[o]` (and may keep its own results,
 * by the group's index `g` over the whole call), and returns 1 when the fp kernel must round the
 * quotient to the dtype, 2 when the group's codes are all 0, else 0.
 */
export type GroupRule = (g: number, min: number, max: number, par: Float32Array, o: number) => number | void

/**
 * GroupRule over `groups` consecutive groups at once (the first is group `g0` of the call): group j's
 * min and max are par[o0 + 2j] and par[o0 + 2j + 1]; the rule writes its parameter over the min and
 * its flag (GroupRule's return value, 1 written as -1) into flags[o0 + 2j + 1] (flags: the same
 * memory as i32), and returns the OR of the flags. One call per chunk: with 16-value groups (nvfp4) a
 * call per group, its two doubles boxed as arguments, cost more than the kernel.
 */
export type GroupRules = (g0: number, groups: number, par: Float32Array, flags: Int32Array, o0: number) => number

/** A GroupRule as GroupRules: one call per group. */
function eachGroup(rule: GroupRule): GroupRules {
  return (g0, groups, par, flags, o0) => {
    let all = 0
    for (let g = 0; g < groups; g++) {
      const o = o0 + 2 * g
      const flag = rule(g0 + g, par[o]!, par[o + 1]!, par, o) ?? 0
      flags[o + 1] = flag === 1 ? -1 : flag
      all |= flag
    }
    return all
  }
}

/** The kernels of one thread, over its own wasm memory. */
export class Quant2Kernels {
  private readonly x: Exports
  private readonly f32: Float32Array
  private readonly i32: Int32Array
  private readonly u8: Uint8Array
  /** The fused fp kernels' table addresses by key (mode and dtype), filled on first use. */
  private readonly tables = new Map<string, number>()

  /**
   * `fpModule`: this instance is the MLX fp kernels' module (`fp`, `fpFused`: the other instance
   * hands those calls to it). They are a module of their own, made on first use: 35 KB of
   * WebAssembly, whose compilation added ~40 MB of RSS to every pool worker that instantiated them,
   * which a thread that never quantizes MLX fp modes should not pay (3B → ONNX q4 on 2 workers:
   * 290–314 MB with them in the one module, 209–225 MB before they were added).
   */
  constructor(exports: Exports, private readonly fpModule?: true) {
    this.x = exports
    this.f32 = new Float32Array(exports.mem.buffer)
    this.i32 = new Int32Array(exports.mem.buffer)
    this.u8 = new Uint8Array(exports.mem.buffer)
  }

  /** Copy `n` values (whole groups of `size`) in, min/max each group, run `rules` over them: the flags' OR. */
  private groups(values: Float32Array, at: number, n: number, size: number, g0: number, rules: GroupRules): number {
    this.f32.set(values.subarray(at, at + n), SRC / 4)
    const groups = n / size
    this.x.minmax(SRC, PAR, groups, size)
    return rules(g0, groups, this.f32, this.i32, PAR / 4)
  }

  /** ONNX int8 codes of `rows` rows of `cols` (a multiple of 16, at most CHUNK2) into `codes`; `rule` writes each row's scale. */
  int8(values: Float32Array, rows: number, cols: number, codes: Int8Array, rule: GroupRule): void {
    const per = Math.floor(CHUNK2 / cols)
    const out = new Int8Array(this.u8.buffer, DST)
    for (let r0 = 0; r0 < rows; r0 += per) {
      const n = Math.min(per, rows - r0)
      this.groups(values, r0 * cols, n * cols, cols, r0, eachGroup(rule))
      this.x.int8(SRC, PAR, DST, n, cols)
      codes.set(out.subarray(0, n * cols), r0 * cols)
    }
  }

  /**
   * ONNX MatMulNBits blocks (16 bytes a block of 32) of `count` values (a multiple of 32) into `blocks`
   * and their scales (rounded to `dtype`) into `scales`; a zero scale may have either sign (see q4Func).
   */
  q4(values: Float32Array, count: number, dtype: 'F32' | 'F16', blocks: Uint8Array, scales: Float32Array): void {
    const kernel = dtype === 'F16' ? this.x.q4_F16 : this.x.q4_F32
    for (let i = 0; i < count; i += CHUNK2) {
      const n = Math.min(CHUNK2, count - i)
      this.f32.set(values.subarray(i, i + n), SRC / 4)
      kernel(SRC, PAR, DST, n / 32, 32)
      this.x.pair4(DST, n / 2)
      blocks.set(this.u8.subarray(DST, DST + n / 2), i / 2)
      scales.set(this.f32.subarray(PAR / 4, PAR / 4 + n / 32), i / 32)
    }
  }

  /**
   * MLX fp codes of `count` F32 values (whole groups of `size`, 16 or 32) as the `weight` part's
   * bytes (fp4 two to a byte, low nibble first). `rules` write each group's divisor; `slow(i,
   * divisor, rounded)` gives the fp4 code of value i where the kernel left it to the scalar rule.
   */
  fp(bits: 4 | 8, values: Float32Array, count: number, size: number, weight: Uint8Array, rules: GroupRules, slow: SlowCode): void {
    if (!this.fpModule) return fpThisThread.get()!.fp(bits, values, count, size, weight, rules, slow)
    const kernel = this.x[`fp${bits}`]
    for (let i = 0; i < count; i += CHUNK2) {
      const n = Math.min(CHUNK2, count - i)
      const flags = this.groups(values, i, n, size, i / size, rules)
      kernel(SRC, PAR, DST, n / size, size)
      if (flags & 2) {
        for (let g = 0; g < n / size; g++) if (this.i32[PAR / 4 + 2 * g + 1] === 2) this.u8.fill(0, DST + g * size, DST + (g + 1) * size)
      }
      this.fpOut(bits, i, n, size, weight, slow)
    }
  }

  /**
   * `fp` for F16 and BF16 weights with the group rule by table (fpFusedFunc): the table of `key`
   * (a mode and dtype) is filled once per thread by `fill(divisor, info)`, entry h (the largest |w|'s
   * pattern in the dtype) at divisor[2h] and info[2h + 1] (FP_ENTRY's bits). Scale bytes into `scales`.
   */
  fpFused(bits: 4 | 8, size: 16 | 32, dtype: 'F16' | 'BF16', key: string, fill: (divisor: Float32Array, info: Int32Array) => void, values: Float32Array, count: number, weight: Uint8Array, scales: Uint8Array, slow: SlowCode): void {
    if (!this.fpModule) return fpThisThread.get()!.fpFused(bits, size, dtype, key, fill, values, count, weight, scales, slow)
    let table = this.tables.get(key)
    if (table === undefined) {
      if (this.tables.size === TABLE_SLOTS) this.tables.clear()
      table = TABLES + this.tables.size * ENTRIES * 8
      fill(new Float32Array(this.f32.buffer, table, ENTRIES * 2), new Int32Array(this.i32.buffer, table, ENTRIES * 2))
      this.tables.set(key, table)
    }
    const kernel = this.x[`fpg${bits}_${size}_${dtype}`]
    for (let i = 0; i < count; i += CHUNK2) {
      const n = Math.min(CHUNK2, count - i)
      this.f32.set(values.subarray(i, i + n), SRC / 4)
      kernel(SRC, PAR, DST, n / size, SCALES, table)
      scales.set(this.u8.subarray(SCALES, SCALES + n / size), i / size)
      this.fpOut(bits, i, n, size, weight, slow)
    }
  }

  /** The codes of one chunk (values i … i + n) into `weight`: the SLOW values' codes by the scalar rule, fp4 packed. */
  private fpOut(bits: 4 | 8, i: number, n: number, size: number, weight: Uint8Array, slow: SlowCode): void {
    if (bits === 4 && this.i32[SLOW / 4]! + this.i32[SLOW / 4 + 1]! + this.i32[SLOW / 4 + 2]! + this.i32[SLOW / 4 + 3]! > 0) {
      for (let j = 0; j < n; j++) {
        if (this.u8[DST + j] !== SLOW_CODE) continue
        const o = PAR / 4 + 2 * Math.floor(j / size)
        this.u8[DST + j] = slow(i + j, this.f32[o]!, this.i32[o + 1] === -1)
      }
    }
    if (bits === 4) this.x.pair4(DST, n / 2)
    weight.set(this.u8.subarray(DST, DST + (n * bits) / 8), (i * bits) / 8)
  }
}

/** The fp4 code of value i by the scalar rule, in a group with this divisor (rounded: the quotient is rounded to the dtype). */
export type SlowCode = (i: number, divisor: number, rounded: boolean) => number

const thisThread = lazyKernels(
  () => assemble([MINMAX, pairFunc(4), INT8, q4Func('F32'), q4Func('F16')], PAGES),
  (exports) => new Quant2Kernels(exports as unknown as Exports),
)
const fpThisThread = lazyKernels(
  // Built here, not at import: the fused kernels' code as JS arrays made every importing thread's
  // heap grow by tens of MB (a pool worker at start: 157 MB of RSS for two, 96 MB without).
  () => assemble([MINMAX, pairFunc(4), fpFunc(4), fpFunc(8), ...FUSED_SHAPES.flatMap(([bits, size]) => (['F16', 'BF16'] as const).map((d) => fpFusedFunc(bits, size, d)))], FP_PAGES),
  (exports) => new Quant2Kernels(exports as unknown as Exports, true),
)

/** This thread's kernels, or undefined without WebAssembly SIMD (or with OPENELM_SIMD=0). */
export function quant2Kernels(): Quant2Kernels | undefined {
  return thisThread.get()
}

/** Forget the cached choice (tests switch OPENELM_SIMD). */
export function resetQuant2Kernels(): void {
  thisThread.reset()
  fpThisThread.reset()
}
