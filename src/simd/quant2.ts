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
 * per-element work. A module of its own (src/simd/kernels.ts is the casts', Q8_0's and MLX affine's),
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
} from './asm.js'
import {addr, forLoop, MINMAX, pairFunc, roundAwayLanes, roundBf16Lanes, roundF16Lanes} from './kernels.js'

/** Values per chunk. */
export const CHUNK2 = 65536
const SRC = 0
const DST = CHUNK2 * 4
/** Two 4-byte slots per group or row (at most CHUNK2 / 4 of them). */
const PAR = CHUNK2 * 8
/** Four i32 lanes: how many fp4 values the kernel left to the scalar code (|q| > 64 or ±Inf). */
const SLOW = PAR + CHUNK2 * 2
const PAGES = (SLOW + 16 + 65535) >>> 16
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
 * its values 16 at a time; with `alt`, groups whose `cond` is nonzero take `alt` instead.
 */
function groupKernel(
  name: string, locals: Array<[number, number]>, setup: (G: number) => number[], code: (P: number, k: number) => number[], signed: boolean,
  tail: number[] = [], alt?: {cond: (G: number) => number[]; code: (P: number, k: number) => number[]},
): Func {
  const [SRCP, , DSTP, NG, SIZE, G, P, O, I] = [0, 1, 2, 3, 4, 5, 6, 7, 8]
  const loop = (c: (P: number, k: number) => number[]) => forLoop(I, SIZE, 16, sixteen(P, O, (k) => c(P, k), signed))
  return {
    name, params: 5, locals: [[4, I32], ...locals],
    body: [
      ...forLoop(G, NG, 1, [
        ...setup(G),
        ...groupAt(SRCP, G, SIZE, 4), ...set(P), ...groupAt(DSTP, G, SIZE, 1), ...set(O),
        ...(alt ? [...alt.cond(G), ...IF, ...loop(alt.code), ...ELSE, ...loop(code), ...END] : loop(code)),
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
 * fp_<bits>_<dtype>(src, par, dst, groups, size): each weight rounded to the dtype, q = w / par[2g]
 * in f32, rounded to the dtype where the group's flag par[2g+1] is nonzero (the scalar's roundTo; 0:
 * the division is exact), then
 *   fp4: index = #thresholds below |q|, code = index | 8 when q < 0 and index > 0; |q| > 64 (and ±Inf)
 *        store SLOW_CODE and count in the SLOW lanes (the scalar rule compares rounded distances there);
 *   fp8: e4m3fn, round half to even on the f32 bits (|q| < 2^-6: rint(|q| · 512)), |q| ≥ 448 and NaN
 *        saturate to 0x7e, the sign bit kept.
 */
function fpFunc(bits: 4 | 8, dtype: 'F32' | 'F16' | 'BF16'): Func {
  const [D, X, A, S, CNT, H] = [9, 10, 11, 12, 13, 14]
  const round = dtype === 'F16' ? roundF16Lanes(X, H) : dtype === 'BF16' ? roundBf16Lanes(X, H) : []
  // q = D(x) / d, rounded to the dtype D again when `rounded` (the group's flag)
  const q = (P: number, k: number, rounded: boolean) => [
    ...get(P), ...v128Load(16 * k), ...set(X), ...(dtype === 'F32' ? [] : [...round, ...set(X)]),
    ...get(X), ...get(D), ...F32X4_DIV, ...set(X), ...(rounded ? [...round, ...set(X)] : []),
  ]
  const fp4Code = (rounded: boolean) => (P: number, k: number) => [
    ...q(P, k, rounded), ...get(X), ...F32X4_ABS, ...set(A),
    ...FP4_EDGES.flatMap((t, i) => [...f32x4c(t), ...get(A), ...F32X4_LT, ...(i > 0 ? I32X4_ADD : [])]), ...set(S),
    // index | (8 if q < 0 and index > 0)
    ...i32x4c(0), ...get(S), ...I32X4_SUB,
    ...get(X), ...f32x4c(0), ...F32X4_LT, ...get(S), ...i32x4c(0), ...I32X4_NE, ...V128_AND, ...i32x4c(8), ...V128_AND, ...V128_OR,
    // |q| > 64: SLOW_CODE, counted
    ...i32x4c(SLOW_CODE), ...f32x4c(64), ...get(A), ...F32X4_LT, ...tee(S), ...V128_NOT, ...V128_BITSELECT,
    ...get(CNT), ...get(S), ...I32X4_SUB, ...set(CNT),
  ]
  const fp8Code = (rounded: boolean) => (P: number, k: number) => [
    ...q(P, k, rounded), ...get(X), ...i32x4c(0x7fffffff), ...V128_AND, ...set(A),
    // subnormal steps: rint(|q| · 512)
    ...get(A), ...f32x4c(512), ...F32X4_MUL, ...F32X4_NEAREST, ...I32X4_TRUNC_SAT_F32X4_S,
    // normal: the f32 bits rounded to 3 mantissa bits (half to even, a carry steps the exponent), rebiased
    ...get(A), ...i32x4c(0x7ffff), ...I32X4_ADD, ...get(A), ...i32c(20), ...I32X4_SHR_U, ...i32x4c(1), ...V128_AND, ...I32X4_ADD,
    ...i32c(20), ...I32X4_SHR_U, ...i32x4c(960), ...I32X4_SUB,
    ...get(A), ...i32x4c(0x3c800000), ...I32X4_LT_S, ...V128_BITSELECT,
    ...i32x4c(0x7e), ...get(A), ...f32x4c(448), ...F32X4_LT, ...V128_BITSELECT,
    ...get(X), ...i32c(24), ...I32X4_SHR_U, ...i32x4c(0x80), ...V128_AND, ...V128_OR,
  ]
  return groupKernel(
    `fp${bits}_${dtype}`, [[dtype === 'F16' ? 9 : 6, V128]],
    (G) => splatPar(G, 0, D),
    (bits === 4 ? fp4Code : fp8Code)(false), false,
    bits === 4 ? [...i32c(SLOW), ...get(CNT), ...v128Store(0)] : [],
    dtype === 'F32' ? undefined : {cond: (G) => [...addr(PARP, G, 8), ...i32Load(4)], code: (bits === 4 ? fp4Code : fp8Code)(true)},
  )
}

const FP_DTYPES = ['F32', 'F16', 'BF16'] as const
const FP_FUNCS = [4, 8].flatMap((bits) => FP_DTYPES.map((d) => fpFunc(bits as 4 | 8, d)))


type Fn = (...args: number[]) => void
type Exports = Record<'minmax' | 'pair4' | 'int8' | 'q4_F32' | 'q4_F16' | `fp${4 | 8}_${'F32' | 'F16' | 'BF16'}`, Fn> & {mem: {buffer: ArrayBuffer}}

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

  constructor(exports: Exports) {
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
   * MLX fp codes of `count` values (whole groups of `size`, 16 or 32) as the `weight` part's bytes
   * (fp4 two to a byte, low nibble first). `rules` write each group's divisor; `slow(i, divisor,
   * rounded)` gives the fp4 code of value i where the kernel left it to the scalar rule.
   */
  fp(bits: 4 | 8, dtype: 'F32' | 'F16' | 'BF16', values: Float32Array, count: number, size: number, weight: Uint8Array, rules: GroupRules, slow: (i: number, divisor: number, rounded: boolean) => number): void {
    const kernel = this.x[`fp${bits}_${dtype}`]
    for (let i = 0; i < count; i += CHUNK2) {
      const n = Math.min(CHUNK2, count - i)
      const flags = this.groups(values, i, n, size, i / size, rules)
      kernel(SRC, PAR, DST, n / size, size)
      if (flags & 2) {
        for (let g = 0; g < n / size; g++) if (this.i32[PAR / 4 + 2 * g + 1] === 2) this.u8.fill(0, DST + g * size, DST + (g + 1) * size)
      }
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
}

const thisThread = lazyKernels(
  () => assemble([MINMAX, pairFunc(4), INT8, q4Func('F32'), q4Func('F16'), ...FP_FUNCS], PAGES),
  (exports) => new Quant2Kernels(exports as unknown as Exports),
)

/** This thread's kernels, or undefined without WebAssembly SIMD (or with OPENELM_SIMD=0). */
export function quant2Kernels(): Quant2Kernels | undefined {
  return thisThread.get()
}

/** Forget the cached choice (tests switch OPENELM_SIMD). */
export function resetQuant2Kernels(): void {
  thisThread.reset()
}
