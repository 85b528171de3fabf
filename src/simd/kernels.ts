/**
 * WebAssembly SIMD kernels for the hot loops of the casts and quantizers (issue 15), each
 * bit-identical to the scalar code it replaces, which stays the reference (test/simd.test.ts):
 *   - f32 → f16 and f32 → bf16, round to nearest even (src/tensor/dtype.ts's f32BitsTo*Bits rules,
 *     NaN payloads included);
 *   - ggml Q8_0 blocks (src/quant/q8_0.ts);
 *   - MLX affine: per-group min/max and the codes, packed for 2, 4 and 8 bits (src/quant/mlx-affine.ts).
 * The module is assembled here (src/simd/asm.ts) and owns a small memory: data is copied in, a
 * chunk at a time, the kernel runs, the result is copied out. One instance per thread, made on first
 * use; where the runtime lacks WebAssembly SIMD, `simdKernels()` is undefined and callers keep the
 * scalar loops. OPENELM_SIMD=0 turns the kernels off (the bench's scalar rows).
 */
import {
  assemble, BLOCK, lazyKernels, s32, br, brIf, END, F32, f32c, f32Load, f32Store, F32X4_ABS, F32X4_ADD, f32x4c, F32X4_DIV, F32X4_GE,
  f32x4Lane, F32X4_LT, F32X4_MUL, F32X4_NEAREST, F32X4_PMAX, F32X4_PMIN, F32X4_SPLAT, F32X4_SUB, F32X4_TRUNC,
  F32X4_CONVERT_I32X4_S, I32X4_NE, I32X4_SHL, F32_DIV, F32_MAX, F32_MIN, F32_NE, type Func, get, I32, I32X4_ADD, i32x4c, I32X4_EQ, I32X4_GE_S, I32X4_GT_S,
  i32x4Lane, I32X4_LT_S, I32X4_SHR_U, I32X4_SUB, I32X4_TRUNC_SAT_F32X4_S, I16X8_NARROW_I32X4_S, I16X8_NARROW_I32X4_U,
  I8X16_NARROW_I16X8_S, I8X16_NARROW_I16X8_U, I32_ADD, I32_LT_U, I32_MUL, i32c, i32Store16, LOOP, SELECT, set, tee,
  V128, V128_AND, V128_BITSELECT, V128_OR, v128Load, v128Store,
} from './asm.js'

/** Values per chunk (the memory holds one chunk of f32 input and its output). */
export const CHUNK = 65536
const SRC = 0
const DST = CHUNK * 4
const PAR = CHUNK * 8
const PAGES = (PAR + (CHUNK / 32) * 8 + 65535) >>> 16

// A `for (i = 0; i < n; i += step)` loop over local I, n in local N.
export const forLoop = (I: number, N: number, step: number, body: number[]) => [
  ...i32c(0), ...set(I),
  ...BLOCK, ...get(I), ...get(N), ...I32_LT_U, 0x45 /* i32.eqz */, ...brIf(0),
  ...LOOP, ...body,
  ...get(I), ...i32c(step), ...I32_ADD, ...tee(I), ...get(N), ...I32_LT_U, ...brIf(0),
  ...END, ...END,
]
export const addr = (base: number, I: number, scale: number) => [...get(base), ...get(I), ...i32c(scale), ...I32_MUL, ...I32_ADD]

/**
 * f16 bits (in i32 lanes) of the f32 bits in local X, using v128 locals A, R, S. Normals: add the
 * exponent rebias and 0xfff plus the kept lowest bit, shift (a carry rounds up into the exponent, up to
 * Inf); below 2^-14: add 0.5 as a float (the FPU's round to nearest even at 2^-24 steps) and take the
 * low bits; 65536 and up, Inf and NaN: 0x7c00, with NaN's top mantissa bits or, if none, 0x200.
 */
export const f16Lanes = (X: number, A: number, R: number, S: number) => [
  ...get(X), ...i32x4c(0x7fffffff), ...V128_AND, ...set(A),
  ...get(A), ...i32x4c(0xc8000fff), ...I32X4_ADD, ...get(A), ...i32c(13), ...I32X4_SHR_U, ...i32x4c(1), ...V128_AND, ...I32X4_ADD, ...i32c(13), ...I32X4_SHR_U, ...set(R),
  ...get(A), ...f32x4c(0.5), ...F32X4_ADD, ...f32x4c(0.5), ...I32X4_SUB,
  ...get(R), ...get(A), ...i32x4c(0x38800000), ...I32X4_LT_S, ...V128_BITSELECT, ...set(R),
  ...get(A), ...i32c(13), ...I32X4_SHR_U, ...i32x4c(0x3ff), ...V128_AND, ...tee(S),
  ...get(S), ...i32x4c(0), ...I32X4_EQ, ...i32x4c(0x200), ...V128_AND, ...V128_OR,
  ...get(A), ...i32x4c(0x7f800000), ...I32X4_GT_S, ...V128_AND, ...i32x4c(0x7c00), ...V128_OR,
  ...get(R), ...get(A), ...i32x4c(0x47800000), ...I32X4_GE_S, ...V128_BITSELECT,
  ...get(X), ...i32c(16), ...I32X4_SHR_U, ...i32x4c(0x8000), ...V128_AND, ...V128_OR,
]

/** bf16 bits of the f32 bits in local X (v128 local T): round half to even on the low half; NaN keeps its top bits, quiet bit set if they are empty. */
export const bf16Lanes = (X: number, T: number) => [
  ...get(X), ...i32c(16), ...I32X4_SHR_U, ...tee(T), ...i32x4c(0x7f), ...V128_AND, ...i32x4c(0), ...I32X4_EQ, ...i32x4c(0x40), ...V128_AND, ...get(T), ...V128_OR,
  ...get(X), ...i32x4c(0x7fff), ...I32X4_ADD, ...get(T), ...i32x4c(1), ...V128_AND, ...I32X4_ADD, ...i32c(16), ...I32X4_SHR_U,
  ...get(X), ...i32x4c(0x7fffffff), ...V128_AND, ...i32x4c(0x7f800000), ...I32X4_GT_S, ...V128_BITSELECT,
]

// cast(src, dst, n): n f32 at src → n 16-bit values at dst; n a multiple of 8.
function castFunc(fname: string, lanes: (X: number) => number[], extra: number): Func {
  const [SRCP, DSTP, N, I, X] = [0, 1, 2, 3, 4]
  const Y = 5 + extra
  return {
    name: fname, params: 3, locals: [[1, I32], [2 + extra, V128]],
    body: forLoop(I, N, 8, [
      ...addr(SRCP, I, 4), ...v128Load(0), ...set(X), ...lanes(X), ...set(Y),
      ...addr(DSTP, I, 2),
      ...get(Y), ...addr(SRCP, I, 4), ...v128Load(16), ...set(X), ...lanes(X), ...I16X8_NARROW_I32X4_U,
      ...v128Store(0),
    ]),
  }
}
const F16 = castFunc('f16', (X) => f16Lanes(X, X + 2, X + 3, X + 4), 3)
const BF16 = castFunc('bf16', (X) => bf16Lanes(X, X + 2), 1)

/**
 * round16(src, dst, n): f32 → f16 (or bf16) → f32 in one pass, n a multiple of 4: the value each f32
 * has once stored in the 16-bit type, exactly as the table widening (src/tensor/dtype.ts) gives it,
 * NaN payloads included. f16 widening: normals rebias the exponent, subnormals are m · 2^-24 (exact),
 * exponent 31 gives Inf/NaN with the mantissa shifted up.
 */
function roundFunc(fname: string, wide: (X: number, H: number) => number[], extra: number): Func {
  const [SRCP, DSTP, N, I, X, H] = [0, 1, 2, 3, 4, 5]
  return {
    name: fname, params: 3, locals: [[1, I32], [2 + extra, V128]],
    body: forLoop(I, N, 4, [...addr(DSTP, I, 4), ...addr(SRCP, I, 4), ...v128Load(0), ...set(X), ...wide(X, H), ...v128Store(0)]),
  }
}
/** Lanes of local X rounded to f16 and widened back to f32 bits (v128 locals H … H+3), as round_f16 stores them. */
export const roundF16Lanes = (X: number, H: number) => [
  ...f16Lanes(X, H + 1, H + 2, H + 3), ...set(H),
  // normal: ((h & 0x7fff) << 13) + (112 << 23)
  ...get(H), ...i32x4c(0x7fff), ...V128_AND, ...i32c(13), ...I32X4_SHL, ...i32x4c(0x38000000), ...I32X4_ADD,
  // exponent 0: m · 2^-24
  ...get(H), ...i32x4c(0x3ff), ...V128_AND, ...F32X4_CONVERT_I32X4_S, ...f32x4c(2 ** -24), ...F32X4_MUL,
  ...get(H), ...i32x4c(0x7c00), ...V128_AND, ...i32x4c(0), ...I32X4_NE, ...V128_BITSELECT,
  // exponent 31: Inf/NaN
  ...get(H), ...i32x4c(0x3ff), ...V128_AND, ...i32c(13), ...I32X4_SHL, ...i32x4c(0x7f800000), ...V128_OR,
  ...get(H), ...i32x4c(0x7c00), ...V128_AND, ...i32x4c(0x7c00), ...I32X4_NE, ...V128_BITSELECT,
  ...get(H), ...i32x4c(0x8000), ...V128_AND, ...i32c(16), ...I32X4_SHL, ...V128_OR,
]
/** Lanes of local X rounded to bf16 and widened back (v128 local H). */
export const roundBf16Lanes = (X: number, H: number) => [...bf16Lanes(X, H), ...i32c(16), ...I32X4_SHL]
const ROUND_F16 = roundFunc('round_f16', roundF16Lanes, 3)
const ROUND_BF16 = roundFunc('round_bf16', roundBf16Lanes, 0)

/** The f32 lanes on the stack rounded half away from zero (C's roundf), kept in local X (v128 local T): trunc, plus ±1 when the dropped part is ≥ ½. */
export const roundAwayLanes = (X: number, T: number) => [
  ...tee(X), ...F32X4_TRUNC, ...tee(T),
  ...get(X), ...get(T), ...F32X4_SUB, ...F32X4_ABS, ...f32x4c(0.5), ...F32X4_GE,
  ...get(X), ...i32x4c(0x80000000), ...V128_AND, ...i32x4c(0x3f800000), ...V128_OR, ...V128_AND,
  ...F32X4_ADD,
]

/**
 * q8(src, dst, blocks): ggml's quantize_row_q8_0_ref. amax = the largest |x| (NaN never wins, as
 * `a > amax` in the scalar loop), d = amax/127 and id = 1/d (0 when d is 0) in f32, d stored as f16 by
 * the lanes above, codes round(x·id) half away from zero: trunc, plus ±1 when the dropped part is ≥ ½.
 * Non-finite products (Inf·0, x·Inf) store 0, as the scalar loop's Int8Array store does.
 */
const Q8: Func = (() => {
  const [SRCP, DSTP, NB, B, P, O] = [0, 1, 2, 3, 4, 5]
  const [AMAX, D] = [6, 7] // f32
  const V = [8, 9, 10, 11, 12, 13, 14, 15] // v128
  const [M, IDV, X, T, A, R] = [16, 17, 18, 19, 20, 21]
  const code = (v: number) => [
    ...get(v), ...get(IDV), ...F32X4_MUL, ...roundAwayLanes(X, T), ...I32X4_TRUNC_SAT_F32X4_S,
    ...get(X), ...F32X4_ABS, ...f32x4c(Infinity), ...F32X4_LT, ...V128_AND,
  ]
  const half = (k: number) => [
    ...get(O), // the store's address
    ...code(V[k]!), ...code(V[k + 1]!), ...I16X8_NARROW_I32X4_S,
    ...code(V[k + 2]!), ...code(V[k + 3]!), ...I16X8_NARROW_I32X4_S,
    ...I8X16_NARROW_I16X8_S, ...v128Store(2 + k * 4),
  ]
  return {
    name: 'q8', params: 3, locals: [[3, I32], [2, F32], [14, V128]],
    body: forLoop(B, NB, 1, [
      ...addr(SRCP, B, 128), ...set(P), ...addr(DSTP, B, 34), ...set(O),
      ...f32x4c(0), ...set(M),
      ...V.flatMap((v, k) => [...get(P), ...v128Load(16 * k), ...set(v), ...get(M), ...get(v), ...F32X4_ABS, ...F32X4_PMAX, ...set(M)]),
      ...get(M), ...f32x4Lane(0), ...get(M), ...f32x4Lane(1), ...F32_MAX, ...get(M), ...f32x4Lane(2), ...get(M), ...f32x4Lane(3), ...F32_MAX, ...F32_MAX, ...set(AMAX),
      ...get(AMAX), ...f32c(127), ...F32_DIV, ...set(D),
      ...f32c(1), ...get(D), ...F32_DIV, ...f32c(0), ...get(D), ...f32c(0), ...F32_NE, ...SELECT, ...F32X4_SPLAT, ...set(IDV),
      ...get(O), ...get(D), ...F32X4_SPLAT, ...set(X), ...f16Lanes(X, A, R, T), ...i32x4Lane(0), ...i32Store16(0),
      ...half(0), ...half(4),
    ]),
  }
})()

/** minmax(src, out, groups, size): per group of `size` f32 (a multiple of 4), out[2g] = min, out[2g+1] = max, NaN ignored (the scalar `v < min`, `v > max`). */
export const MINMAX: Func = (() => {
  const [SRCP, OUTP, NG, SIZE, G, P, I] = [0, 1, 2, 3, 4, 5, 6]
  const [MN, MX, V] = [7, 8, 9]
  return {
    name: 'minmax', params: 4, locals: [[3, I32], [3, V128]],
    body: forLoop(G, NG, 1, [
      ...get(SRCP), ...get(G), ...get(SIZE), ...I32_MUL, ...i32c(4), ...I32_MUL, ...I32_ADD, ...set(P),
      ...f32x4c(Infinity), ...set(MN), ...f32x4c(-Infinity), ...set(MX),
      ...forLoop(I, SIZE, 4, [
        ...get(P), ...v128Load(0), ...set(V),
        ...get(MN), ...get(V), ...F32X4_PMIN, ...set(MN),
        ...get(MX), ...get(V), ...F32X4_PMAX, ...set(MX),
        ...get(P), ...i32c(16), ...I32_ADD, ...set(P),
      ]),
      ...addr(OUTP, G, 8),
      ...get(MN), ...f32x4Lane(0), ...get(MN), ...f32x4Lane(1), ...F32_MIN, ...get(MN), ...f32x4Lane(2), ...get(MN), ...f32x4Lane(3), ...F32_MIN, ...F32_MIN, ...f32Store(0),
      ...addr(OUTP, G, 8),
      ...get(MX), ...f32x4Lane(0), ...get(MX), ...f32x4Lane(1), ...F32_MAX, ...get(MX), ...f32x4Lane(2), ...get(MX), ...f32x4Lane(3), ...F32_MAX, ...F32_MAX, ...f32Store(4),
    ]),
  }
})()

/**
 * codes(src, params, dst, groups, size, nbins): per group (scale, bias) = params[2g], params[2g+1],
 * code = clip(rint(f32(f32(x − bias)/scale)), 0, nbins), one byte each; NaN → 0 (pmax(0, NaN) is 0),
 * as the scalar loop's `q << shift` of a NaN. `size` a multiple of 16.
 */
const CODES: Func = (() => {
  const [SRCP, PARP, DSTP, NG, SIZE, NBINS, G, P, O, I] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
  const [SC, BI, NB, X] = [10, 11, 12, 13]
  const code = (k: number) => [
    ...f32x4c(0), ...get(P), ...v128Load(16 * k), ...get(BI), ...F32X4_SUB, ...get(SC), ...F32X4_DIV, ...F32X4_NEAREST, ...F32X4_PMAX, ...set(X),
    ...get(NB), ...get(X), ...F32X4_PMIN, ...I32X4_TRUNC_SAT_F32X4_S,
  ]
  return {
    name: 'codes', params: 6, locals: [[4, I32], [4, V128]],
    body: [
      ...get(NBINS), 0xb2 /* f32.convert_i32_s */, ...F32X4_SPLAT, ...set(NB),
      ...forLoop(G, NG, 1, [
        ...addr(PARP, G, 8), ...f32Load(0), ...F32X4_SPLAT, ...set(SC),
        ...addr(PARP, G, 8), ...f32Load(4), ...F32X4_SPLAT, ...set(BI),
        ...get(SRCP), ...get(G), ...get(SIZE), ...I32_MUL, ...i32c(4), ...I32_MUL, ...I32_ADD, ...set(P),
        ...get(DSTP), ...get(G), ...get(SIZE), ...I32_MUL, ...I32_ADD, ...set(O),
        ...forLoop(I, SIZE, 16, [
          ...get(O),
          ...code(0), ...code(1), ...I16X8_NARROW_I32X4_U, ...code(2), ...code(3), ...I16X8_NARROW_I32X4_U, ...I8X16_NARROW_I16X8_U,
          ...v128Store(0),
          ...get(P), ...i32c(64), ...I32_ADD, ...set(P), ...get(O), ...i32c(16), ...I32_ADD, ...set(O),
        ]),
      ]),
    ],
  }
})()

/**
 * pairK(buf, nOut): bytes (b0, b1) → b0 | b1 << k (both < 2^k), in place: 2·nOut bytes at buf become
 * nOut bytes at buf (nOut a multiple of 16). pair4 packs 4-bit codes LSB-first; pair2 then pair4, 2-bit.
 */
export function pairFunc(k: number): Func {
  const [BUF, N, I, X] = [0, 1, 2, 3]
  const lo = (1 << k) - 1
  const step = (off: number) => [
    ...get(BUF), ...get(I), ...i32c(2), ...I32_MUL, ...I32_ADD, ...v128Load(off), ...set(X),
    ...get(X), ...i32x4c(lo | (lo << 16)), ...V128_AND,
    ...get(X), ...i32c(8 - k), ...I32X4_SHR_U, ...i32x4c((lo << k) | (lo << (k + 16))), ...V128_AND, ...V128_OR,
  ]
  return {
    name: `pair${k}`, params: 2, locals: [[1, I32], [1, V128]],
    body: forLoop(I, N, 16, [...get(BUF), ...get(I), ...I32_ADD, ...step(0), ...step(16), ...I8X16_NARROW_I16X8_U, ...v128Store(0)]),
  }
}

// i64 instructions of packFunc (the other kernels need none)
const I64 = 0x7e
const I64_LOAD = [0x29, 0x03, 0x00]
const I64_STORE = [0x37, 0x03, 0x00]
const i64c = (n: number) => [0x42, ...s32(n)]
const [I64_AND, I64_OR, I64_SHL, I64_SHR_U] = [[0x83], [0x84], [0x86], [0x88]]

/**
 * packK(buf, n8), K = 3, 5, 6: codes (one byte each, < 2^K) → their LSB-first bit stream, in place:
 * each 8 codes (an i64 load) become K bytes, stored as one i64 whose upper bytes are 0 and are
 * overwritten by the next store (which never reaches codes not yet read: K·i + 8 ≤ 8·(i + 1)).
 */
function packFunc(k: number): Func {
  const [BUF, N8, I, X, V] = [0, 1, 2, 3, 4]
  const lane = (j: number) => [...get(X), ...i64c(8 * j), ...I64_SHR_U, ...i64c(0xff), ...I64_AND, ...i64c(k * j), ...I64_SHL]
  return {
    name: `pack${k}`, params: 2, locals: [[1, I32], [2, I64]],
    body: forLoop(I, N8, 1, [
      ...get(BUF), ...get(I), ...i32c(8), ...I32_MUL, ...I32_ADD, ...I64_LOAD, ...set(X),
      ...lane(0), ...set(V),
      ...[1, 2, 3, 4, 5, 6, 7].flatMap((j) => [...get(V), ...lane(j), ...I64_OR, ...set(V)]),
      ...addr(BUF, I, k), ...get(V), ...I64_STORE,
    ]),
  }
}


type Fn = (...args: number[]) => void
interface Exports {
  f16: Fn
  bf16: Fn
  q8: Fn
  minmax: Fn
  codes: Fn
  pair4: Fn
  pair2: Fn
  round_f16: Fn
  round_bf16: Fn
  pack3: Fn
  pack5: Fn
  pack6: Fn
  mem: {buffer: ArrayBuffer}
}

/** The kernels of one thread, over its own wasm memory. */
export class SimdKernels {
  private readonly x: Exports
  private readonly i32: Int32Array
  private readonly f32: Float32Array
  private readonly u16: Uint16Array
  private readonly u8: Uint8Array

  constructor(exports: Exports) {
    this.x = exports
    const buffer = exports.mem.buffer
    this.i32 = new Int32Array(buffer)
    this.f32 = new Float32Array(buffer)
    this.u16 = new Uint16Array(buffer)
    this.u8 = new Uint8Array(buffer)
  }

  /**
   * f32 bits → f16 or bf16 bits, round to nearest even, `src.length` values. `dst` may be the first
   * half of `src`'s bytes (a cast in place): each chunk is read whole before its output is written,
   * and its output ends before the next chunk's input starts.
   */
  castF32(src: Int32Array, dst: Uint16Array, to: 'F16' | 'BF16'): void {
    this.elementwise(src, this.i32, dst, this.u16, 8, to === 'F16' ? this.x.f16 : this.x.bf16)
  }

  /** `out[i]` = `values[i]` stored as f16/bf16 (round to nearest even) and widened back, bit for bit; `out` may be `values`. */
  roundF32(values: Float32Array, out: Float32Array, to: 'F16' | 'BF16'): void {
    this.elementwise(values, this.f32, out, this.f32, 4, to === 'F16' ? this.x.round_f16 : this.x.round_bf16)
  }

  /**
   * One output element per input element, CHUNK at a time: each chunk is copied in at SRC (zero-padded
   * to a multiple of `lanes`), run, and its `count` results copied out from DST. `inside` / `outside`
   * are this memory's views of the input's and output's element types.
   */
  private elementwise<I extends Int32Array | Float32Array, O extends Uint16Array | Float32Array>(src: I, inside: I, dst: O, outside: O, lanes: number, kernel: (src: number, dst: number, n: number) => void): void {
    const n = src.length
    const from = SRC / inside.BYTES_PER_ELEMENT
    const to = DST / outside.BYTES_PER_ELEMENT
    for (let i = 0; i < n; i += CHUNK) {
      const count = Math.min(CHUNK, n - i)
      const padded = Math.ceil(count / lanes) * lanes
      inside.set(src.subarray(i, i + count), from)
      if (padded !== count) inside.fill(0, from + count, from + padded)
      kernel(SRC, DST, padded)
      dst.set(outside.subarray(to, to + count), i)
    }
  }

  /** ggml Q8_0 blocks of `values` (a multiple of 32) into `out` (34 bytes a block). */
  q8(values: Float32Array, out: Uint8Array): void {
    const n = values.length
    for (let i = 0; i < n; i += CHUNK) {
      const count = Math.min(CHUNK, n - i)
      this.f32.set(values.subarray(i, i + count), SRC / 4)
      const blocks = count / 32
      this.x.q8(SRC, DST, blocks)
      out.set(this.u8.subarray(DST, DST + blocks * 34), (i / 32) * 34)
    }
  }

  /**
   * MLX affine over `count` values (whole groups, a multiple of 32): `params(groups, par, o0)` turns
   * each group's min and max (par[o0 + 2g], par[o0 + 2g + 1]) into its f32 scale and bias in their
   * place (the scalar rule, src/quant/mlx-affine.ts; one call per chunk, not per group: a call per
   * group boxed its two doubles), written to `scales`/`biases`; the codes go to `packed` as one
   * LSB-first bit stream of little-endian words.
   */
  affine(
    values: Float32Array, count: number, bits: number, groupSize: number,
    packed: Uint32Array, scales: Float32Array, biases: Float32Array,
    params: (groups: number, par: Float32Array, o0: number) => void,
    round?: 'F16' | 'BF16',
  ): void {
    const nBins = (1 << bits) - 1
    const rounding = round === undefined ? undefined : round === 'F16' ? this.x.round_f16 : this.x.round_bf16
    const packedBytes = new Uint8Array(packed.buffer, packed.byteOffset, packed.byteLength)
    const step = CHUNK - (CHUNK % groupSize)
    for (let i = 0; i < count; i += step) {
      const n = Math.min(step, count - i)
      const groups = n / groupSize
      this.f32.set(values.subarray(i, i + n), SRC / 4)
      // Rounded in place (n is whole groups, a multiple of 4): roundF32 without the copies out and back in.
      if (rounding) rounding(SRC, SRC, n)
      this.x.minmax(SRC, PAR, groups, groupSize)
      const par = this.f32
      params(groups, par, PAR / 4)
      for (let g = 0; g < groups; g++) {
        const o = PAR / 4 + 2 * g
        scales[i / groupSize + g] = par[o]!
        biases[i / groupSize + g] = par[o + 1]!
      }
      this.x.codes(SRC, PAR, DST, groups, groupSize, nBins)
      const outBytes = (n * bits) / 8
      const at = (i * bits) / 8
      if (bits === 8) packedBytes.set(this.u8.subarray(DST, DST + n), at)
      else if (bits === 4) {
        this.x.pair4(DST, n / 2)
        packedBytes.set(this.u8.subarray(DST, DST + outBytes), at)
      } else if (bits === 2) {
        this.x.pair2(DST, n / 2)
        this.x.pair4(DST, n / 4)
        packedBytes.set(this.u8.subarray(DST, DST + outBytes), at)
      } else {
        const pack = bits === 3 ? this.x.pack3 : bits === 5 ? this.x.pack5 : this.x.pack6
        pack(DST, n / 8)
        packedBytes.set(this.u8.subarray(DST, DST + outBytes), at)
      }
    }
  }
}

const thisThread = lazyKernels(
  () => assemble([F16, BF16, Q8, MINMAX, CODES, pairFunc(4), pairFunc(2), ROUND_F16, ROUND_BF16, packFunc(3), packFunc(5), packFunc(6)], PAGES),
  (exports) => new SimdKernels(exports as unknown as Exports),
)

/** This thread's kernels, or undefined without WebAssembly SIMD (or with OPENELM_SIMD=0). */
export function simdKernels(): SimdKernels | undefined {
  return thisThread.get()
}

/** Forget the cached choice (tests switch OPENELM_SIMD). */
export function resetSimdKernels(): void {
  thisThread.reset()
}
