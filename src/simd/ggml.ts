/**
 * WebAssembly SIMD for ggml's quantizers, bit-identical to the scalar code, which stays the reference
 * (test/gguf-quant-simd.test.ts):
 *   - the K-quant scale searches (src/quant/gguf-k.ts: make_qkx2_quants for Q2_K/Q4_K/Q5_K with their
 *     weights, make_q3_quants for Q3_K, make_qx_quants for Q6_K) and the codes at the stored scales;
 *   - the legacy 32-value blocks Q4_0, Q4_1, Q5_0, Q5_1 (src/quant/gguf-legacy.ts).
 * The searches are sequences of dependent f32 sums over one sub-block, so they are vectorized ACROSS
 * sub-blocks (and the legacy quantizers across blocks): lane k of every vector belongs to sub-block
 * (block) k of a group of four, and each lane runs the scalar op sequence exactly (IEEE f32, round to
 * nearest even, no fused multiply-add, sums left to right). Branches become masks: a lane's update
 * happens where the scalar `if` would take it. One op sequence differs and gives the same integers:
 * nearest_int in the searches' trials, where a guard proves every lane in its exact range (codesOf).
 *
 * The K-quant inputs are stored transposed (element i of the four sub-blocks in one v128); the module
 * owns its memory, one instance per thread, made on first use. Without WebAssembly SIMD, or with
 * OPENELM_SIMD=0, `ggmlKernels()` is undefined and the encoders run the scalar code.
 */
import {
  assemble, brIf, END, lazyKernels, f32Load, F32X4_ABS, F32X4_ADD, f32x4c, F32X4_CONVERT_I32X4_S, F32X4_DIV,
  F32X4_EQ, F32X4_GT, F32X4_LT, F32X4_MUL, F32X4_NE, F32X4_NEG, F32X4_SPLAT, F32X4_SQRT, F32X4_SUB, forRange, type Func, get,
  I16X8_NARROW_I32X4_U, I32, I32_ADD, I32_MUL, I32_SHL, i32c, i32Store, I32X4_MAX_S, I32X4_MIN_S, I32X4_SHL, I32X4_SHR_S,
  I32X4_SHR_U, I32X4_SUB, I32X4_ALL_TRUE, I32_LT_U, I32_SUB, ELSE, F32X4_PMAX, F32X4_PMIN, F32X4_NEAREST, I32X4_TRUNC_SAT_F32X4_S, i32x4c, i32x4Lane, I8X16_NARROW_I16X8_U, IF, set, V128, V128_AND,
  V128_ANDNOT, V128_ANY_TRUE, V128_BITSELECT, V128_OR, v128Load, v128Store, f32x4Shuffle,
} from './asm.js'
import {putHalf} from '../quant/ggml-block.js'

/** Sub-block groups (of four) per call; the memory holds their transposed values, weights and codes. */
const GROUPS = 1024
const MAX_N = 32
const AREA = GROUPS * MAX_N * 16
const XT = 0
const WT = AREA
const LT = 2 * AREA
const LA = 3 * AREA
/** Per-group scratch: two sub-block groups' trial codes (qkx2), or one group's x² and x³ (qx). */
/** Per sub-block results in sub-block order (group G's four lanes at 16·G): the scales (codes: the steps) at RES, the mins (the offsets) at RES2. */
const RES = LA + 2 * MAX_N * 16
const RES2 = RES + GROUPS * 16
const CT = RES2 + GROUPS * 16
/** The values of a search in their own order (copied in), and the codes as bytes in theirs (copied out). */
const MAX_VALUES = 65536
const NAT = CT + 64 * 4
const OUTB = NAT + MAX_VALUES * 4
const PAGES = (OUTB + MAX_VALUES + 65535) >>> 16

/** ggml's nearest_int of the f32 lanes on the stack (1.5·2^23 added, low mantissa bits read), clamped to [lo, hi], as f32 lanes. */
const codeLanes = (lo: number, hi: number) => [
  ...f32x4c(12582912), ...F32X4_ADD, ...i32x4c(0x007fffff), ...V128_AND, ...i32x4c(0x00400000), ...I32X4_SUB,
  ...i32x4c(lo), ...I32X4_MAX_S, ...i32x4c(hi), ...I32X4_MIN_S, ...F32X4_CONVERT_I32X4_S,
]
const at = (P: number, OFF: number) => [...get(P), ...get(OFF), ...I32_ADD]
const load = (P: number, OFF: number) => [...at(P, OFF), ...v128Load(0)]
/** dst = src where mask, else dst (locals). */
const pick = (dst: number, src: number, mask: number) => [...get(src), ...get(dst), ...get(mask), ...V128_BITSELECT, ...set(dst)]
/** Each [local, area]: local = area + G·n·16, where group G's n v128 start (T scratch). */
const groupBases = (G: number, T: number, n: number, bases: Array<[number, number]>) => [
  ...get(G), ...i32c(n * 16), ...I32_MUL, ...set(T),
  ...bases.flatMap(([local, area]) => [...get(T), ...i32c(area), ...I32_ADD, ...set(local)]),
]
/** body(0) … body(n - 1), one after another (a loop over a sub-block's values, unrolled). */
const unrolled = (n: number, body: (i: number) => number[]) => Array.from({length: n}, (_, i) => body(i)).flat()
/** acc = acc + (stack) */
const accumulate = (acc: number) => [...get(acc), ...F32X4_ADD, ...set(acc)]

/**
 * qkx2_<n>_<nmax>(groups, trials): ggml's `make_qkx2_quants` for each group of four sub-blocks of n
 * values (x at XT, transposed), weighted squared error (or absolute, `mad`), with the weights of
 * quantize_row_q4_K/q5_K_ref (`rms`: sqrt(Σx²/n) + |x|) or q2_K (|x|), made at WT first. Trial t's
 * `rmin + rdelta·t + nmax` is CT[t] (f32, computed by the caller in the scalar's order). Out: the
 * codes (f32 lanes) at LT, the scales at RES and the mins (negated, as the scalar's `out.min`) at RES2.
 *
 * The trials of one group depend on each other (a kept trial moves `min`, where the next start), so
 * PAIR groups run side by side instead: their sums are independent chains, and the ~20 vector ops
 * per value and trial keep more of the core busy. A trial's codes are kept as its iscale and min,
 * and the chosen ones are computed once at the end (the same ops on the same values: the same codes).
 * A trial takes codesOf's fast form when, in every lane, the values are finite and
 * |iscale| · max(|max − min|, |min(x) − min|) < FAST_RANGE: each |iscale · (x − min)| is at most
 * that (both roundings are monotone), so no code needs ggml's trick (max == min lanes are zeroed at
 * the end whatever they hold).
 */
const PAIR = 2
function qkx2(n: number, nmax: number, mad: boolean, weights: 'rms' | 'abs'): Func {
  const [NG, NT, N, G, I, T, OFF, FAST] = [0, 1, 2, 3, 4, 5, 6, 7]
  const [XI, WI, LF] = [0, 1, 2].map((k) => 8 + 4 * PAIR + k)
  const v128Base = 8 + 4 * PAIR + 3
  const V = 20
  const groups = Array.from({length: PAIR}, (_, g) => {
    const [MIN, MAX, MINX, SUMW, SUMX, ISC, SCALE, BEST, SL, SL2, SXL, D, TS, TM, CUR, UPD, EQ, BISC, BMIN, OK] = Array.from({length: V}, (_, k) => v128Base + V * g + k)
    const [GI, PX, PW, PL] = [0, 1, 2, 3].map((k) => 8 + 4 * g + k)
    return {GI, PX, PW, PL, MIN, MAX, MINX, SUMW, SUMX, ISC, SCALE, BEST, SL, SL2, SXL, D, TS, TM, CUR, UPD, EQ, BISC, BMIN, OK, LAUX: LA + g * MAX_N * 16}
  })
  type Group = (typeof groups)[number]
  const off = [...get(I), ...i32c(4), ...I32_SHL, ...set(OFF)]
  const zero = (...locals: number[]) => locals.flatMap((l) => [...f32x4c(0), ...set(l)])
  /** acc += w · |scale·l + min − x| (or its square) of the value at OFF, l from `codes`. */
  const weightedError = (g: Group, scale: number, min: number, codes: number[], acc: number) => [
    ...get(scale), ...codes, ...F32X4_MUL, ...get(min), ...F32X4_ADD, ...load(g.PX, OFF), ...F32X4_SUB, ...set(LF),
    ...load(g.PW, OFF), ...get(LF), ...(mad ? F32X4_ABS : [...get(LF), ...F32X4_MUL]), ...F32X4_MUL, ...accumulate(acc),
  ]
  /** The code of x (on the stack) at iscale `isc` and min `min`. */
  const codeOf = (isc: number, min: number, x: number[], fast: boolean) => [...get(isc), ...x, ...get(min), ...F32X4_SUB, ...F32X4_MUL, ...codesOf(0, nmax, fast)]
  /** The group's weights, min, max, Σw, Σw·x, its first codes' error (the scalar up to its trial loop). */
  const each = (f: (g: Group) => number[]) => groups.flatMap(f)
  /** The groups' weights, min, max, Σw, Σw·x, their first codes' error (the scalar up to its trial loop), one loop for all. */
  const start = [
    ...(weights === 'rms'
      ? [
          ...each((g) => zero(g.SL)),
          ...forRange(I, 0, N, 1, [...off, ...each((g) => [...load(g.PX, OFF), ...set(XI), ...get(XI), ...get(XI), ...F32X4_MUL, ...accumulate(g.SL)])]),
          ...each((g) => [...get(g.SL), ...f32x4c(n), ...F32X4_DIV, ...F32X4_SQRT, ...set(g.SL)]),
          ...forRange(I, 0, N, 1, [...off, ...each((g) => [...at(g.PW, OFF), ...get(g.SL), ...load(g.PX, OFF), ...F32X4_ABS, ...F32X4_ADD, ...v128Store(0)])]),
        ]
      : forRange(I, 0, N, 1, [...off, ...each((g) => [...at(g.PW, OFF), ...load(g.PX, OFF), ...F32X4_ABS, ...v128Store(0)])])),
    // min, max, Σw, Σw·x; which lanes are all finite (OK, then also the max == min lanes)
    ...each((g) => [
      ...get(g.PX), ...v128Load(0), ...set(g.MIN), ...get(g.MIN), ...set(g.MAX),
      ...get(g.PW), ...v128Load(0), ...set(g.SUMW), ...get(g.SUMW), ...get(g.MIN), ...F32X4_MUL, ...set(g.SUMX),
      ...i32x4c(-1), ...set(g.OK), ...foldFinite(get(g.MIN), g.OK),
    ]),
    ...forRange(I, 1, N, 1, [...off, ...each((g) => [
      ...load(g.PX, OFF), ...set(XI), ...load(g.PW, OFF), ...set(WI), ...foldFinite(get(XI), g.OK),
      ...get(XI), ...get(g.MIN), ...get(XI), ...get(g.MIN), ...F32X4_LT, ...V128_BITSELECT, ...set(g.MIN),
      ...get(XI), ...get(g.MAX), ...get(XI), ...get(g.MAX), ...F32X4_GT, ...V128_BITSELECT, ...set(g.MAX),
      ...get(g.SUMW), ...get(WI), ...F32X4_ADD, ...set(g.SUMW),
      ...get(WI), ...get(XI), ...F32X4_MUL, ...accumulate(g.SUMX),
    ])]),
    ...each((g) => [
      ...get(g.MIN), ...set(g.MINX),
      ...f32x4c(0), ...get(g.MIN), ...get(g.MIN), ...f32x4c(0), ...F32X4_GT, ...V128_BITSELECT, ...set(g.MIN),
      ...get(g.MAX), ...get(g.MIN), ...F32X4_EQ, ...set(g.EQ),
      ...get(g.OK), ...get(g.EQ), ...V128_OR, ...set(g.OK),
      // the first codes, at iscale = nmax / (max − min)
      ...f32x4c(nmax), ...get(g.MAX), ...get(g.MIN), ...F32X4_SUB, ...F32X4_DIV, ...set(g.ISC),
      ...f32x4c(1), ...get(g.ISC), ...F32X4_DIV, ...set(g.SCALE),
      ...get(g.ISC), ...set(g.BISC), ...get(g.MIN), ...set(g.BMIN),
      ...zero(g.BEST),
    ]),
    ...forRange(I, 0, N, 1, [...off, ...each((g) => [...codeOf(g.ISC, g.MIN, load(g.PX, OFF), false), ...set(WI), ...weightedError(g, g.SCALE, g.MIN, get(WI), g.BEST)])]),
  ]
  /** all ones where |ISC| · |a − MIN| < FAST_RANGE (false for NaN). */
  const inRange = (g: Group, a: number) => [...get(g.ISC), ...F32X4_ABS, ...get(a), ...get(g.MIN), ...F32X4_SUB, ...F32X4_ABS, ...F32X4_MUL, ...f32x4c(FAST_RANGE), ...F32X4_LT]
  // The trials' loops over the n values are counted loops: unrolled, TurboFan computed every code
  // first and the sums at the end, spilling x, w and l of each value (~30% slower with two groups).
  const firstPass = (fast: boolean) => forRange(I, 0, N, 1, [...off, ...groups.flatMap((g) => [
    ...load(g.PX, OFF), ...set(XI),
    ...codeOf(g.ISC, g.MIN, get(XI), fast), ...set(LF), ...get(OFF), ...get(LF), ...v128Store(g.LAUX),
    ...load(g.PW, OFF), ...get(LF), ...F32X4_MUL, ...set(WI),
    ...get(WI), ...accumulate(g.SL),
    ...get(WI), ...get(LF), ...F32X4_MUL, ...accumulate(g.SL2),
    ...get(WI), ...get(XI), ...F32X4_MUL, ...accumulate(g.SXL),
  ])])
  return {
    name: `qkx2_${n}_${nmax}`, params: 2, locals: [[6 + 4 * PAIR, I32], [3 + V * PAIR, V128]],
    body: [
      ...i32c(n), ...set(N),
      ...forRange(G, 0, NG, PAIR, [
        // the groups of this pass: G, G+1, … (the last group again where they run out: the same results twice)
        ...groups.flatMap((g, k) => [...get(G), ...i32c(k), ...I32_ADD, ...get(NG), ...I32_LT_U, ...IF, ...get(G), ...i32c(k), ...I32_ADD, ...set(g.GI), ...ELSE, ...get(NG), ...i32c(1), ...I32_SUB, ...set(g.GI), ...END]),
        ...groups.flatMap((g) => groupBases(g.GI, T, n, [[g.PX, XT], [g.PW, WT], [g.PL, LT]])),
        ...start,
        ...forRange(T, 0, NT, 1, [
          ...groups.flatMap((g) => [
            ...i32c(CT), ...get(T), ...i32c(2), ...I32_SHL, ...I32_ADD, ...f32Load(0), ...F32X4_SPLAT, ...get(g.MAX), ...get(g.MIN), ...F32X4_SUB, ...F32X4_DIV, ...set(g.ISC),
            ...zero(g.SL, g.SL2, g.SXL),
          ]),
          ...i32x4c(-1), ...groups.flatMap((g) => [...inRange(g, g.MAX), ...inRange(g, g.MINX), ...V128_AND, ...get(g.OK), ...V128_AND, ...V128_AND]), ...I32X4_ALL_TRUE,
          ...IF, ...firstPass(true), ...ELSE, ...firstPass(false), ...END,
          ...groups.flatMap((g) => [
            ...get(g.SUMW), ...get(g.SL2), ...F32X4_MUL, ...get(g.SL), ...get(g.SL), ...F32X4_MUL, ...F32X4_SUB, ...set(g.D),
            ...get(g.SUMW), ...get(g.SXL), ...F32X4_MUL, ...get(g.SUMX), ...get(g.SL), ...F32X4_MUL, ...F32X4_SUB, ...get(g.D), ...F32X4_DIV, ...set(g.TS),
            ...get(g.SL2), ...get(g.SUMX), ...F32X4_MUL, ...get(g.SL), ...get(g.SXL), ...F32X4_MUL, ...F32X4_SUB, ...get(g.D), ...F32X4_DIV, ...set(g.TM),
            // a positive min: min 0, scale Σwxl / Σwl²
            ...get(g.TM), ...f32x4c(0), ...F32X4_GT, ...set(g.UPD),
            ...get(g.SXL), ...get(g.SL2), ...F32X4_DIV, ...get(g.TS), ...get(g.UPD), ...V128_BITSELECT, ...set(g.TS),
            ...f32x4c(0), ...get(g.TM), ...get(g.UPD), ...V128_BITSELECT, ...set(g.TM),
            ...zero(g.CUR),
          ]),
          ...forRange(I, 0, N, 1, [...off, ...groups.flatMap((g) => weightedError(g, g.TS, g.TM, [...get(OFF), ...v128Load(g.LAUX)], g.CUR))]),
          // taken where D > 0 and the error is lower (never in max == min lanes, which returned early)
          ...groups.flatMap((g) => [
            ...get(g.D), ...f32x4c(0), ...F32X4_GT, ...get(g.CUR), ...get(g.BEST), ...F32X4_LT, ...V128_AND, ...get(g.EQ), ...V128_ANDNOT, ...set(g.UPD),
            ...pick(g.BEST, g.CUR, g.UPD), ...pick(g.SCALE, g.TS, g.UPD), ...pick(g.BISC, g.ISC, g.UPD), ...pick(g.BMIN, g.MIN, g.UPD), ...pick(g.MIN, g.TM, g.UPD),
          ]),
        ]),
        ...groups.flatMap((g) => [
          // the codes of the kept trial; max == min lanes: codes 0, scale 0, min −min
          ...forRange(I, 0, N, 1, [...off, ...at(g.PL, OFF), ...codeOf(g.BISC, g.BMIN, load(g.PX, OFF), false), ...get(g.EQ), ...V128_ANDNOT, ...v128Store(0)]),
          ...get(g.GI), ...i32c(4), ...I32_SHL, ...set(T),
          ...get(T), ...get(g.SCALE), ...get(g.EQ), ...V128_ANDNOT, ...v128Store(RES),
          ...get(T), ...get(g.MIN), ...F32X4_NEG, ...v128Store(RES2),
        ]),
      ]),
    ],
  }
}

/** The locals make_qx_quants and make_q3_quants share (symmetric codes, weights x²). */
interface SymLocals {I: number; N: number; OFF: number; PX: number; XI: number; LF: number; W: number; UPD: number; MAX: number; AMAX: number; SMALL: number; ISC: number; SLX: number; SL2: number}

/** Per lane: MAX = the first value of largest magnitude, SMALL = |MAX| < 1e-15, ISC = -nmax / MAX. */
const absMaxStart = ({I, N, OFF, PX, XI, W, UPD, MAX, AMAX, SMALL, ISC}: SymLocals, nmax: number) => [
  ...f32x4c(0), ...set(MAX), ...f32x4c(0), ...set(AMAX),
  ...forRange(I, 0, N, 1, [
    ...get(I), ...i32c(4), ...I32_SHL, ...set(OFF), ...load(PX, OFF), ...set(XI), ...get(XI), ...F32X4_ABS, ...set(W),
    ...get(W), ...get(AMAX), ...F32X4_GT, ...set(UPD), ...pick(AMAX, W, UPD), ...pick(MAX, XI, UPD),
  ]),
  ...get(MAX), ...F32X4_ABS, ...f32x4c(1e-15), ...F32X4_LT, ...set(SMALL),
  ...f32x4c(-nmax), ...get(MAX), ...F32X4_DIV, ...set(ISC),
]

/** SLX = Σ w·x·l, SL2 = Σ w·l² (w = x²) of the codes l at ISC, each l + offset stored at `dst` (an address; OFF is set). */
const roundedSums = ({I, N, OFF, PX, XI, LF, W, ISC, SLX, SL2}: SymLocals, nmax: number, offset: number, dst: number[]) => [
  ...f32x4c(0), ...set(SLX), ...f32x4c(0), ...set(SL2),
  ...forRange(I, 0, N, 1, [
    ...get(I), ...i32c(4), ...I32_SHL, ...set(OFF), ...load(PX, OFF), ...set(XI),
    ...get(ISC), ...get(XI), ...F32X4_MUL, ...codeLanes(-nmax, nmax - 1), ...set(LF),
    ...dst, ...get(LF), ...(offset ? [...f32x4c(offset), ...F32X4_ADD] : []), ...v128Store(0),
    ...get(XI), ...get(XI), ...F32X4_MUL, ...set(W),
    ...get(W), ...get(XI), ...F32X4_MUL, ...get(LF), ...F32X4_MUL, ...accumulate(SLX),
    ...get(W), ...get(LF), ...F32X4_MUL, ...get(LF), ...F32X4_MUL, ...accumulate(SL2),
  ]),
]

/**
 * The codes of the f32 lanes v on the stack, clamp(nearest_int(v), lo, hi), as f32 lanes. `fast`:
 * clamp first, then round to nearest even (f32x4.nearest), 3 ops instead of 6; the same integers
 * where no lane is NaN and every |v| < 4194303: there ggml's 1.5·2^23 trick is round to nearest even,
 * rounding is monotone, and lo, hi are integers (a −0 may come out where the trick gives +0: the
 * searches' sums start at +0 and square or add it away). The caller guards that range.
 */
const codesOf = (lo: number, hi: number, fast: boolean) =>
  fast ? [...f32x4c(lo), ...F32X4_PMAX, ...f32x4c(hi), ...F32X4_PMIN, ...F32X4_NEAREST] : codeLanes(lo, hi)

/** Under this bound of |v| `codesOf(…, true)` gives ggml's codes (4194303.5 would round to 2^24 in the trick). */
const FAST_RANGE = 4194303

/** all ones where every lane of `lanes` (an expression) is finite and not NaN, folded into mask local ACC. */
const foldFinite = (lanes: number[], ACC: number) => [...lanes, ...F32X4_ABS, ...f32x4c(Infinity), ...F32X4_LT, ...get(ACC), ...V128_AND, ...set(ACC)]

/**
 * qx_<n>_<nmax>_<K>(groups, trials): ggml's `make_qx_quants(n, nmax, x, L, rmse_type = 1)` for each
 * group of four sub-blocks of n values (x at XT, transposed), weights x². Trial t's `nmax + 0.1·is`
 * is CT[t]; the trials' sums do not depend on each other (only the choice between them does), so K
 * trials share one pass over the values (K independent chains of sums, one load of x, w, w·x), and
 * are then compared in their order. The codes are computed once at the end, at the chosen iscale.
 * In a group whose values are all finite every |iscale·x| ≤ ~nmax + 1 where |max| ≥ 1e-15 (and the
 * lanes below it are zeroed at the end), so the trials take codesOf's fast form there.
 * Out: the codes + nmax (f32 lanes) at LT, the scales at RES. The trial count is a multiple of K.
 */
function qx(n: number, nmax: number, K: number): Func {
  const [NG, NT, N, G, I, T, OFF, PX, PL, FAST] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
  const [MAX, AMAX, ISC, SCALE, BEST, SLX, SL2, XI, LF, W, UPD, SMALL, BISC, WX, ACC] = Array.from({length: 15}, (_, k) => 10 + k)
  const trial = Array.from({length: K}, (_, k) => ({ISC: 25 + 3 * k, SLX: 26 + 3 * k, SL2: 27 + 3 * k}))
  const off = [...get(I), ...i32c(4), ...I32_SHL, ...set(OFF)]
  const v: SymLocals = {I, N, OFF, PX, XI, LF, W, UPD, MAX, AMAX, SMALL, ISC, SLX, SL2}
  // w = x² at LA, w·x after it (this group's; the scalar rounds both per value the same way)
  type Sums = {ISC: number; SLX: number; SL2: number}
  /** Σ w·x·l and Σ w·l² of the codes at each `sums`' ISC, in one pass over the values. */
  const passSums = (fast: boolean, sums: Sums[]) => forRange(I, 0, N, 1, [
    ...off, ...load(PX, OFF), ...set(XI), ...get(OFF), ...v128Load(LA), ...set(W), ...get(OFF), ...v128Load(LA + 16 * n), ...set(WX),
    ...sums.flatMap((t) => [
      ...get(t.ISC), ...get(XI), ...F32X4_MUL, ...codesOf(-nmax, nmax - 1, fast), ...set(LF),
      ...get(WX), ...get(LF), ...F32X4_MUL, ...accumulate(t.SLX),
      ...get(W), ...get(LF), ...F32X4_MUL, ...get(LF), ...F32X4_MUL, ...accumulate(t.SL2),
    ]),
  ])
  return {
    name: `qx_${n}_${nmax}`, params: 2, locals: [[8, I32], [15 + 3 * K, V128]],
    body: [
      ...i32c(n), ...set(N),
      ...forRange(G, 0, NG, 1, [
        ...groupBases(G, T, n, [[PX, XT], [PL, LT]]),
        ...absMaxStart(v, nmax),
        ...i32x4c(-1), ...set(ACC),
        ...unrolled(n, (i) => [
          ...get(PX), ...v128Load(16 * i), ...set(XI), ...foldFinite(get(XI), ACC),
          ...i32c(0), ...get(XI), ...get(XI), ...F32X4_MUL, ...set(W), ...get(W), ...v128Store(LA + 16 * i),
          ...i32c(0), ...get(W), ...get(XI), ...F32X4_MUL, ...v128Store(LA + 16 * (n + i)),
        ]),
        ...get(ACC), ...I32X4_ALL_TRUE, ...set(FAST),
        // the first codes, at -nmax / max
        ...f32x4c(0), ...set(SLX), ...f32x4c(0), ...set(SL2),
        ...get(FAST), ...IF, ...passSums(true, [{ISC, SLX, SL2}]), ...ELSE, ...passSums(false, [{ISC, SLX, SL2}]), ...END,
        ...get(SLX), ...get(SL2), ...F32X4_DIV, ...f32x4c(0), ...get(SL2), ...f32x4c(0), ...F32X4_NE, ...V128_BITSELECT, ...set(SCALE),
        ...get(SCALE), ...get(SLX), ...F32X4_MUL, ...set(BEST),
        ...get(ISC), ...set(BISC),
        ...forRange(T, 0, NT, K, [
          ...trial.flatMap((t, k) => [
            ...i32c(CT), ...get(T), ...i32c(2), ...I32_SHL, ...I32_ADD, ...f32Load(4 * k), ...F32X4_SPLAT, ...F32X4_NEG, ...get(MAX), ...F32X4_DIV, ...set(t.ISC),
            ...f32x4c(0), ...set(t.SLX), ...f32x4c(0), ...set(t.SL2),
          ]),
          ...get(FAST), ...IF, ...passSums(true, trial), ...ELSE, ...passSums(false, trial), ...END,
          // in the scalar's order: each trial against the best so far
          ...trial.flatMap((t) => [
            ...get(t.SL2), ...f32x4c(0), ...F32X4_GT, ...get(t.SLX), ...get(t.SLX), ...F32X4_MUL, ...get(BEST), ...get(t.SL2), ...F32X4_MUL, ...F32X4_GT, ...V128_AND, ...set(UPD),
            ...get(t.SLX), ...get(t.SL2), ...F32X4_DIV, ...set(XI), ...pick(SCALE, XI, UPD),
            ...get(SCALE), ...get(t.SLX), ...F32X4_MUL, ...set(XI), ...pick(BEST, XI, UPD),
            ...pick(BISC, t.ISC, UPD),
          ]),
        ]),
        // the codes at the chosen iscale, + nmax; |max| < 1e-15 lanes: codes 0, scale 0
        ...forRange(I, 0, N, 1, [
          ...off, ...at(PL, OFF), ...get(BISC), ...load(PX, OFF), ...F32X4_MUL, ...codeLanes(-nmax, nmax - 1), ...f32x4c(nmax), ...F32X4_ADD,
          ...get(SMALL), ...V128_ANDNOT, ...v128Store(0),
        ]),
        ...get(G), ...i32c(4), ...I32_SHL, ...get(SCALE), ...get(SMALL), ...V128_ANDNOT, ...v128Store(RES),
      ]),
    ],
  }
}


type Fn = (groups: number, trials?: number) => void

/**
 * codes_<n>_<lo>_<hi>(groups): after a search, each sub-block's codes at its dequantization step (the
 * quantize_row_*_ref loop after the super-block scales are stored): clamp(nearest_int((x + dm) / d),
 * lo, hi) (Q6_K, Q3_K: x / d, minus lo), d at RES and dm at RES2, where d ≠ 0 (C's `if (!d)
 * continue`: a NaN d goes on); where d = 0 the search's codes stay. Codes as f32 lanes at LT.
 */
function codes(n: number, lo: number, hi: number, withMin: boolean): Func {
  const [NG, N, G, I, OFF, PX, PL, T] = [0, 1, 2, 3, 4, 5, 6, 7]
  const [D, DM, NZ] = [8, 9, 10]
  const off = [...get(I), ...i32c(4), ...I32_SHL, ...set(OFF)]
  return {
    name: `codes_${n}_${lo}_${hi}`, params: 1, locals: [[7, I32], [3, V128]],
    body: [
      ...i32c(n), ...set(N),
      ...forRange(G, 0, NG, 1, [
        ...groupBases(G, T, n, [[PX, XT], [PL, LT]]),
        ...get(G), ...i32c(4), ...I32_SHL, ...set(T),
        ...get(T), ...v128Load(RES), ...set(D), ...get(T), ...v128Load(RES2), ...set(DM),
        ...get(D), ...f32x4c(0), ...F32X4_NE, ...set(NZ),
        ...forRange(I, 0, N, 1, [
          ...off, ...at(PL, OFF),
          ...load(PX, OFF), ...(withMin ? [...get(DM), ...F32X4_ADD] : []), ...get(D), ...F32X4_DIV, ...codeLanes(lo, hi),
          ...(lo < 0 ? [...f32x4c(-lo), ...F32X4_ADD] : []),
          ...load(PL, OFF), ...get(NZ), ...V128_BITSELECT, ...v128Store(0),
        ]),
      ]),
    ],
  }
}

/**
 * q3_<n>_<nmax>(groups): ggml's `make_q3_quants(n, nmax, x, L, do_rmse = true)` for each group of
 * four sub-blocks (x at XT, transposed), weights x²: the codes at -nmax / max, then up to 5 passes of
 * one-code moves, each kept where it raises Σwxl² / Σwl². A lane whose pass changed nothing is at a
 * fixed point (the next pass would see the same sums and codes), so the passes stop when no lane
 * changed, as each scalar loop does for its own sub-block. Out: codes + nmax (f32 lanes) at LT, the
 * scales at RES.
 */
function q3(n: number, nmax: number): Func {
  const [NG, NT, N, G, I, T, OFF, PX, PL, IT] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
  const [MAX, AMAX, ISC, SLX, SL2, XI, LF, W, UPD, SMALL, S1, S2, NL, WX, CH] = Array.from({length: 15}, (_, k) => 10 + k)
  const off = [...get(I), ...i32c(4), ...I32_SHL, ...set(OFF)]
  const v: SymLocals = {I, N, OFF, PX, XI, LF, W, UPD, MAX, AMAX, SMALL, ISC, SLX, SL2}
  return {
    name: `q3_${n}_${nmax}`, params: 2, locals: [[8, I32], [15, V128]],
    body: [
      ...i32c(n), ...set(N),
      ...forRange(G, 0, NG, 1, [
        ...groupBases(G, T, n, [[PX, XT], [PL, LT]]),
        ...absMaxStart(v, nmax),
        ...roundedSums(v, nmax, 0, at(PL, OFF)),
        ...forRange(IT, 0, NT, 1, [
          ...f32x4c(0), ...set(CH),
          ...forRange(I, 0, N, 1, [
            ...off, ...load(PX, OFF), ...set(XI), ...load(PL, OFF), ...set(LF),
            ...get(XI), ...get(XI), ...F32X4_MUL, ...set(W), ...get(W), ...get(XI), ...F32X4_MUL, ...set(WX),
            ...get(SLX), ...get(WX), ...get(LF), ...F32X4_MUL, ...F32X4_SUB, ...set(S1),
            ...get(S1), ...f32x4c(0), ...F32X4_GT, ...set(UPD),
            ...get(SL2), ...get(W), ...get(LF), ...F32X4_MUL, ...get(LF), ...F32X4_MUL, ...F32X4_SUB, ...set(S2),
            ...get(XI), ...get(S2), ...F32X4_MUL, ...get(S1), ...F32X4_DIV, ...codeLanes(-nmax, nmax - 1), ...set(NL),
            ...get(S1), ...get(WX), ...get(NL), ...F32X4_MUL, ...F32X4_ADD, ...set(S1),
            ...get(S2), ...get(W), ...get(NL), ...F32X4_MUL, ...get(NL), ...F32X4_MUL, ...F32X4_ADD, ...set(S2),
            ...get(UPD), ...get(NL), ...get(LF), ...F32X4_NE, ...V128_AND,
            ...get(S2), ...f32x4c(0), ...F32X4_GT, ...V128_AND,
            ...get(S1), ...get(S1), ...F32X4_MUL, ...get(SL2), ...F32X4_MUL, ...get(SLX), ...get(SLX), ...F32X4_MUL, ...get(S2), ...F32X4_MUL, ...F32X4_GT, ...V128_AND,
            ...set(UPD),
            ...at(PL, OFF), ...get(NL), ...get(LF), ...get(UPD), ...V128_BITSELECT, ...v128Store(0),
            ...pick(SLX, S1, UPD), ...pick(SL2, S2, UPD),
            ...get(CH), ...get(UPD), ...V128_OR, ...set(CH),
          ]),
          ...get(CH), ...V128_ANY_TRUE, 0x45 /* i32.eqz */, ...brIf(1),
        ]),
        // codes + nmax; |max| < 1e-15 lanes: codes 0, scale 0
        ...forRange(I, 0, N, 1, [...off, ...at(PL, OFF), ...load(PL, OFF), ...f32x4c(nmax), ...F32X4_ADD, ...get(SMALL), ...V128_ANDNOT, ...v128Store(0)]),
        ...get(G), ...i32c(4), ...I32_SHL,
        ...get(SLX), ...get(SL2), ...F32X4_DIV, ...f32x4c(0), ...get(SL2), ...f32x4c(0), ...F32X4_GT, ...V128_BITSELECT, ...get(SMALL), ...V128_ANDNOT, ...v128Store(RES),
      ]),
    ],
  }
}

/**
 * tin_<n>(groups): the values at NAT (sub-blocks of n one after another) into XT, transposed, each
 * NaN made payload-free (sign kept, quiet bit only), as quantizeK's `canonicalNaNs` does for the
 * scalar code.
 */
function transposeIn(n: number): Func {
  const [NG, G, P, Q] = [0, 1, 2, 3]
  const R = [4, 5, 6, 7]
  const T = [8, 9, 10, 11]
  const canonical = (r: number) => [
    ...get(r), ...i32x4c(0x80000000 | 0), ...V128_AND, ...i32x4c(0x7fc00000), ...V128_OR, ...get(r), ...get(r), ...get(r), ...F32X4_NE, ...V128_BITSELECT, ...set(r),
  ]
  return {
    name: `tin_${n}`, params: 1, locals: [[3, I32], [8, V128]],
    body: forRange(G, 0, NG, 1, [
      ...get(G), ...i32c(n * 16), ...I32_MUL, ...set(P), // both the group's input and its transposed output span 4·n f32
      ...get(P), ...i32c(XT), ...I32_ADD, ...set(Q), ...get(P), ...i32c(NAT), ...I32_ADD, ...set(P),
      ...Array.from({length: n / 4}, (_, i) => [
        ...R.flatMap((r, k) => [...get(P), ...v128Load(k * n * 4 + i * 16), ...set(r), ...canonical(r)]),
        ...transpose(R, T),
        ...R.flatMap((r, j) => [...get(Q), ...get(r), ...v128Store((4 * i + j) * 16)]),
      ]).flat(),
    ]),
  }
}

/** tout_<n>(groups): the codes at LT (f32 lanes, small integers) as bytes at OUTB, sub-blocks of n one after another. */
function transposeOut(n: number): Func {
  const [NG, G, P, Q] = [0, 1, 2, 3]
  const T = [4, 5, 6, 7]
  const R = Array.from({length: 16}, (_, k) => 8 + k) // R[4k + i]: block k, elements 4i … 4i+3 of a run of 16
  return {
    name: `tout_${n}`, params: 1, locals: [[3, I32], [20, V128]],
    body: forRange(G, 0, NG, 1, [
      ...get(G), ...i32c(n * 16), ...I32_MUL, ...i32c(LT), ...I32_ADD, ...set(P),
      ...get(G), ...i32c(n * 4), ...I32_MUL, ...i32c(OUTB), ...I32_ADD, ...set(Q),
      ...Array.from({length: n / 16}, (_, q) => [
        ...Array.from({length: 4}, (_, i) => {
          const rows = [0, 1, 2, 3].map((k) => R[4 * k + i]!)
          return [
            ...rows.flatMap((r, j) => [...get(P), ...v128Load((16 * q + 4 * i + j) * 16), ...I32X4_TRUNC_SAT_F32X4_S, ...set(r)]),
            ...transpose(rows, T),
          ]
        }).flat(),
        ...[0, 1, 2, 3].flatMap((k) => [
          ...get(Q),
          ...get(R[4 * k]!), ...get(R[4 * k + 1]!), ...I16X8_NARROW_I32X4_U, ...get(R[4 * k + 2]!), ...get(R[4 * k + 3]!), ...I16X8_NARROW_I32X4_U,
          ...I8X16_NARROW_I16X8_U, ...v128Store(k * n + 16 * q),
        ]),
      ]).flat(),
    ]),
  }
}

export interface SearchSpec {
  kernel: 'qkx2_32_15' | 'qkx2_32_31' | 'qkx2_16_3' | 'qx_16_32' | 'q3_16_4'
  /** The codes kernel run after it. */
  codes: 'codes_32_0_15' | 'codes_32_0_31' | 'codes_16_0_3' | 'codes_16_-32_31' | 'codes_16_-4_3'
  /** Values per sub-block. */
  n: number
  /** Trial constants, in the scalar's order (CT above). */
  trials: Float32Array
}

/** The searches of one thread, over its own wasm memory. */
export class GgmlKernels {
  private readonly f32: Float32Array
  private readonly u8: Uint8Array
  private readonly fns: Record<string, Fn>

  constructor(exports: Record<string, unknown>) {
    const buffer = (exports.mem as {buffer: ArrayBuffer}).buffer
    this.f32 = new Float32Array(buffer)
    this.u8 = new Uint8Array(buffer)
    this.fns = exports as Record<string, Fn>
  }

  /** Values one `search` takes (a batch of super-blocks must fit: its codes stay here for `codes`). */
  static readonly MAX_VALUES = MAX_VALUES

  /**
   * The search over `count` sub-blocks (a multiple of 4, at most MAX_VALUES values) of spec.n values
   * from values[xo]: scale of sub-block j into scales[j], its min (qkx2 only) into mins[j]. The
   * values and the codes stay in this memory for `codes`.
   */
  search(spec: SearchSpec, values: Float32Array, xo: number, count: number, scales: Float32Array, mins: Float32Array | null): void {
    if (count * spec.n > MAX_VALUES || count % 4) throw new RangeError(`a search takes a multiple of 4 sub-blocks, up to ${MAX_VALUES} values, not ${count} of ${spec.n}`)
    const {n} = spec
    const f = this.f32
    f.set(spec.trials, CT / 4)
    f.set(values.subarray(xo, xo + count * n), NAT / 4)
    this.fns[`tin_${n}`]!(count / 4)
    this.fns[spec.kernel]!(count / 4, spec.trials.length)
    scales.set(f.subarray(RES / 4, RES / 4 + count))
    if (mins) mins.set(f.subarray(RES2 / 4, RES2 / 4 + count))
  }

  /**
   * After `search` of the same `count` sub-blocks: the codes of sub-block j at step dq[2j] (and
   * offset dq[2j+1], added first; Q6_K none) where that step is not 0, else the search's codes, into
   * L[j·n …].
   */
  codes(spec: SearchSpec, dq: Float32Array, count: number, L: Uint8Array): void {
    const {n} = spec
    const f = this.f32
    for (let s = 0; s < count; s++) {
      f[RES / 4 + s] = dq[2 * s]!
      f[RES2 / 4 + s] = dq[2 * s + 1]!
    }
    this.fns[spec.codes]!(count / 4)
    this.fns[`tout_${n}`]!(count / 4)
    L.set(this.u8.subarray(OUTB, OUTB + count * n))
  }

  /** The `type` blocks of `values` (a multiple of 32) into `out`. */
  legacy(type: LegacySpec['type'], values: Float32Array, out: Uint8Array): void {
    const spec = LEGACY[type]
    const f = this.f32
    const blocks = values.length / 32
    for (let b0 = 0; b0 < blocks; b0 += LEGACY_BLOCKS) {
      const nb = Math.min(LEGACY_BLOCKS, blocks - b0)
      const padded = (nb + 3) & ~3
      f.set(values.subarray(b0 * 32, (b0 + nb) * 32), L_SRC / 4)
      f.fill(0, L_SRC / 4 + nb * 32, L_SRC / 4 + padded * 32)
      this.fns[`legacy_${type}`]!(padded / 4)
      out.set(this.u8.subarray(L_DST, L_DST + nb * spec.bytes), b0 * spec.bytes)
      for (let b = 0; b < nb; b++) {
        const o = (b0 + b) * spec.bytes
        const r = L_RES / 4 + 8 * (b >> 2) + (b & 3)
        putHalf(out, o, f[r]!)
        if (spec.affine) putHalf(out, o + 2, f[r + 4]!)
      }
    }
  }
}

const thisThread = lazyKernels(ggmlKernelsBytes, (exports) => new GgmlKernels(exports))

/** This thread's K-quant searches, or undefined without WebAssembly SIMD (or with OPENELM_SIMD=0). */
export function ggmlKernels(): GgmlKernels | undefined {
  return thisThread.get()
}

/** Forget the cached choice (tests switch OPENELM_SIMD). */
export function resetGgmlKernels(): void {
  thisThread.reset()
}

// ---- legacy 32-value blocks (src/quant/gguf-legacy.ts) -------------------------------------------

/** Legacy blocks per call; groups of four blocks run in the four lanes. */
const LEGACY_BLOCKS = 2048
const L_SRC = 0
const L_XT = LEGACY_BLOCKS * 128
const L_CT = L_XT + 32 * 16
const L_DST = L_CT + 32 * 16
const L_RES = L_DST + LEGACY_BLOCKS * 24
const LEGACY_PAGES = (L_RES + LEGACY_BLOCKS * 8 + 65535) >>> 16

export interface LegacySpec {
  type: 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1'
  bits: 4 | 5
  affine: boolean
  /** Bytes per block, and where qh (−1: none) and qs start in it. */
  bytes: number
  qh: number
  qs: number
}

/** The 4×4 transpose of the f32 lanes of locals A, B, C, D (rows) into them as columns, T0 … T3 scratch. */
const transpose = ([A, B, C, D]: number[], [T0, T1, T2, T3]: number[]) => [
  ...get(A), ...get(B), ...f32x4Shuffle([0, 4, 1, 5]), ...set(T0),
  ...get(A), ...get(B), ...f32x4Shuffle([2, 6, 3, 7]), ...set(T1),
  ...get(C), ...get(D), ...f32x4Shuffle([0, 4, 1, 5]), ...set(T2),
  ...get(C), ...get(D), ...f32x4Shuffle([2, 6, 3, 7]), ...set(T3),
  ...get(T0), ...get(T2), ...f32x4Shuffle([0, 1, 4, 5]), ...set(A),
  ...get(T0), ...get(T2), ...f32x4Shuffle([2, 3, 6, 7]), ...set(B),
  ...get(T1), ...get(T3), ...f32x4Shuffle([0, 1, 4, 5]), ...set(C),
  ...get(T1), ...get(T3), ...f32x4Shuffle([2, 3, 6, 7]), ...set(D),
]

/**
 * legacy_<type>(groups): quantize_row_q4_0_ref … q5_1_ref as src/quant/gguf-legacy.ts writes them,
 * four blocks at a time, block k in lane k (each lane the scalar sequence: the first value of largest
 * magnitude, or min and max from ±FLT_MAX; d and 1/d in f32; codes through C's int8/uint8 casts as
 * the scalar rules them: non-finite → 0, low byte). Input: 32·4·groups f32 at L_SRC. Output: qh and
 * qs of each block at L_DST in the block layout, and per block d (and min) as f32 at L_RES, for the
 * caller to store as f16.
 */
function legacy(spec: LegacySpec): Func {
  const [NG, G, P, O] = [0, 1, 2, 3]
  const [R0, R1, R2, R3, T0, T1, T2, T3, X, MAX, AMAX, MIN, U, D, ID, QH] = Array.from({length: 16}, (_, k) => 4 + k)
  const offset = spec.bits === 4 ? 8 : 16
  const levels = (1 << spec.bits) - 1
  const xt = (j: number) => [...i32c(L_XT + 16 * j)]
  const ct = (j: number) => [...i32c(L_CT + 16 * j)]
  // values into XT, element j of the four blocks in one v128
  const gather = Array.from({length: 8}, (_, i) => [
    ...[R0, R1, R2, R3].flatMap((r, k) => [...get(P), ...v128Load(k * 128 + i * 16), ...set(r)]),
    ...transpose([R0, R1, R2, R3], [T0, T1, T2, T3]),
    ...[R0, R1, R2, R3].flatMap((r, j) => [...xt(4 * i + j), ...get(r), ...v128Store(0)]),
  ]).flat()
  const scan = spec.affine
    ? [
        ...f32x4c(3.4028234663852886e38), ...set(MIN), ...f32x4c(-3.4028234663852886e38), ...set(MAX),
        ...Array.from({length: 32}, (_, j) => [
          ...xt(j), ...v128Load(0), ...set(X),
          ...get(X), ...get(MIN), ...get(X), ...get(MIN), ...F32X4_LT, ...V128_BITSELECT, ...set(MIN),
          ...get(X), ...get(MAX), ...get(X), ...get(MAX), ...F32X4_GT, ...V128_BITSELECT, ...set(MAX),
        ]).flat(),
        ...get(MAX), ...get(MIN), ...F32X4_SUB, ...f32x4c(levels), ...F32X4_DIV, ...set(D),
      ]
    : [
        ...f32x4c(0), ...set(AMAX), ...f32x4c(0), ...set(MAX),
        ...Array.from({length: 32}, (_, j) => [
          ...xt(j), ...v128Load(0), ...set(X), ...get(X), ...F32X4_ABS, ...set(T0),
          ...get(T0), ...get(AMAX), ...F32X4_GT, ...set(U), ...pick(AMAX, T0, U), ...pick(MAX, X, U),
        ]).flat(),
        ...get(MAX), ...f32x4c(-offset), ...F32X4_DIV, ...set(D),
      ]
  const lowByte = spec.affine && spec.bits === 5 // Q5_1: (uint8_t) cast, no cap
  const codes = Array.from({length: 32}, (_, j) => [
    ...ct(j),
    ...(spec.affine
      ? [...xt(j), ...v128Load(0), ...get(MIN), ...F32X4_SUB, ...get(ID), ...F32X4_MUL, ...f32x4c(0.5), ...F32X4_ADD]
      : [...xt(j), ...v128Load(0), ...get(ID), ...F32X4_MUL, ...f32x4c(offset + 0.5), ...F32X4_ADD]),
    ...set(X),
    ...get(X), ...I32X4_TRUNC_SAT_F32X4_S, ...get(X), ...F32X4_ABS, ...f32x4c(Infinity), ...F32X4_LT, ...V128_AND,
    ...(lowByte ? [] : [...i32c(24), ...I32X4_SHL, ...i32c(24), ...I32X4_SHR_S, ...i32x4c(levels), ...I32X4_MIN_S]),
    ...i32x4c(0xff), ...V128_AND, ...v128Store(0),
  ]).flat()
  // qs: byte j of block k = code j | code j+16 << 4, lanes back to blocks
  const qs = Array.from({length: 4}, (_, i) => [
    ...[R0, R1, R2, R3].flatMap((r, jj) => {
      const j = 4 * i + jj
      return [...ct(j), ...v128Load(0), ...i32x4c(0xf), ...V128_AND, ...ct(j + 16), ...v128Load(0), ...i32x4c(0xf), ...V128_AND, ...i32c(4), ...I32X4_SHL, ...V128_OR, ...set(r)]
    }),
    ...transpose([R0, R1, R2, R3], [T0, T1, T2, T3]),
    // R_k: bytes 4i … 4i+3 of block k (as i32 lanes); keep them in XT (free now) as row k, column i
    ...[R0, R1, R2, R3].flatMap((r, k) => [...i32c(L_XT + 64 * k + 16 * i), ...get(r), ...v128Store(0)]),
  ]).flat()
  const store = [0, 1, 2, 3].flatMap((k) => [
    ...get(O), ...i32c(spec.bytes * k), ...I32_ADD,
    ...i32c(L_XT + 64 * k), ...v128Load(0), ...i32c(L_XT + 64 * k), ...v128Load(16), ...I16X8_NARROW_I32X4_U,
    ...i32c(L_XT + 64 * k), ...v128Load(32), ...i32c(L_XT + 64 * k), ...v128Load(48), ...I16X8_NARROW_I32X4_U,
    ...I8X16_NARROW_I16X8_U, ...v128Store(spec.qs),
  ])
  const qh = spec.qh < 0 ? [] : [
    ...i32x4c(0), ...set(QH),
    ...Array.from({length: 32}, (_, j) => [...get(QH), ...ct(j), ...v128Load(0), ...i32c(4), ...I32X4_SHR_U, ...i32x4c(1), ...V128_AND, ...i32c(j), ...I32X4_SHL, ...V128_OR, ...set(QH)]).flat(),
    ...[0, 1, 2, 3].flatMap((k) => [...get(O), ...get(QH), ...i32x4Lane(k), ...i32Store(spec.bytes * k + spec.qh)]),
  ]
  return {
    name: `legacy_${spec.type}`, params: 1, locals: [[3, I32], [16, V128]],
    body: forRange(G, 0, NG, 1, [
      ...get(G), ...i32c(512), ...I32_MUL, ...i32c(L_SRC), ...I32_ADD, ...set(P),
      ...get(G), ...i32c(4 * spec.bytes), ...I32_MUL, ...i32c(L_DST), ...I32_ADD, ...set(O),
      ...gather, ...scan,
      ...f32x4c(1), ...get(D), ...F32X4_DIV, ...f32x4c(0), ...get(D), ...f32x4c(0), ...F32X4_NE, ...V128_BITSELECT, ...set(ID),
      ...codes, ...qs, ...store, ...qh,
      ...get(G), ...i32c(32), ...I32_MUL, ...i32c(L_RES), ...I32_ADD, ...set(P),
      ...get(P), ...get(D), ...v128Store(0),
      ...(spec.affine ? [...get(P), ...get(MIN), ...v128Store(16)] : []),
    ]),
  }
}

const LEGACY: Record<LegacySpec['type'], LegacySpec> = {
  Q4_0: {type: 'Q4_0', bits: 4, affine: false, bytes: 18, qh: -1, qs: 2},
  Q4_1: {type: 'Q4_1', bits: 4, affine: true, bytes: 20, qh: -1, qs: 4},
  Q5_0: {type: 'Q5_0', bits: 5, affine: false, bytes: 22, qh: 2, qs: 6},
  Q5_1: {type: 'Q5_1', bits: 5, affine: true, bytes: 24, qh: 4, qs: 8},
}

function ggmlKernelsBytes(): Uint8Array {
  return assemble([
    qkx2(32, 15, false, 'rms'), qkx2(32, 31, false, 'rms'), qkx2(16, 3, true, 'abs'), qx(16, 32, 2),
    q3(16, 4),
    codes(32, 0, 15, true), codes(32, 0, 31, true), codes(16, 0, 3, true), codes(16, -32, 31, false), codes(16, -4, 3, false),
    transposeIn(16), transposeIn(32), transposeOut(16), transposeOut(32),
    ...Object.values(LEGACY).map(legacy),
  ], Math.max(PAGES, LEGACY_PAGES))
}
