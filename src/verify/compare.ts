/**
 * Comparison metrics and pass/fail thresholds (DESIGN §5): logits (max/mean abs difference,
 * cosine similarity, top-1 agreement, mean KL of next-token distributions in f64), per-layer
 * hidden states (to name the first layer that diverges) and canonical weights (to name the first
 * tensor that differs). Pure functions over Float32Arrays; nothing here reads files or prints.
 */
import {type Extras, type Quantization} from '../formats/types.js'
import {dtypeSize, toFloat32} from '../tensor/dtype.js'
import {type TensorRecord} from '../tensor/record.js'

/** The conversion paths, from the dtypes/quantization of reference and candidate. */
export type PathKind = 'lossless' | 'cast16' | 'quant8' | 'quant4' | 'quant-low'

export interface Thresholds {
  /** Largest allowed |Δlogit| over every position and vocab entry. */
  maxAbs?: number
  /** Smallest allowed fraction of positions whose argmax agrees. */
  minTop1?: number
  /** Largest allowed mean KL(ref ‖ candidate) of next-token distributions (nats). */
  maxMeanKl?: number
  /** Smallest allowed cosine similarity of the whole logit arrays. */
  minCosine?: number
  /** Hidden states: a layer diverges when max|Δh| / max(1, max|h_ref|) exceeds this. */
  hiddenRel: number
  /** Weights: 'exact' = bit-exact f32 values; 'bounded' = within the cast/quantizer error bound. */
  weights: 'exact' | 'bounded'
}

/**
 * Defaults by path. Lossless, 16-bit and 8-bit are DESIGN §5's numbers. The 4-bit and 2–3-bit sets
 * come from measurements (bench/RESULTS.md, docs/verify.md): quantize-dequantize of synth
 * models (random weights, the worst case: no structure, near-flat next-token distributions) gives,
 * for faithful 4-bit group-32/64 quantization, cosine 0.92–0.95 and mean KL 0.19–0.29 (tiny and
 * 270M shapes), top-1 0.25–0.59; a single swapped gate/up layer gives cosine 0.84 and KL 0.47,
 * whole-model corruptions cosine < 0.46 and KL > 1.8. Top-1 is not a usable 4-bit criterion on
 * such models, so it is reported but not required; on every quantized path the weight check (each
 * element within half a quantization step) is what catches structural mistakes.
 */
export const DEFAULT_THRESHOLDS: Record<PathKind, Thresholds> = {
  lossless: {maxAbs: 1e-4, hiddenRel: 1e-5, weights: 'exact'},
  cast16: {minTop1: 0.99, maxMeanKl: 1e-3, hiddenRel: 0.05, weights: 'bounded'},
  quant8: {minTop1: 0.99, maxMeanKl: 1e-3, hiddenRel: 0.05, weights: 'bounded'},
  quant4: {minCosine: 0.88, maxMeanKl: 0.4, hiddenRel: 0.25, weights: 'bounded'},
  'quant-low': {minCosine: 0.3, maxMeanKl: 4, hiddenRel: 0.6, weights: 'bounded'},
}

const WIDTH: Record<string, number> = {F32: 32, F16: 16, BF16: 16}

/** Which path a conversion took, from both sides' stored dtype and quantization. */
export function conversionPath(reference: Pick<Extras, 'dtype' | 'quantization'>, candidate: Pick<Extras, 'dtype' | 'quantization'>): PathKind {
  const q = candidate.quantization ?? reference.quantization
  if (q && !sameQuantization(reference.quantization, candidate.quantization)) {
    return q.bits >= 8 ? 'quant8' : q.bits >= 4 ? 'quant4' : 'quant-low'
  }
  if (q) return 'lossless'
  if (reference.dtype === candidate.dtype) return 'lossless'
  // Widening (f16/bf16 → f32) keeps every value exactly.
  if (candidate.dtype === 'F32') return 'lossless'
  return WIDTH[candidate.dtype]! <= 16 ? 'cast16' : 'lossless'
}

function sameQuantization(a?: Quantization, b?: Quantization): boolean {
  if (!a || !b) return a === b
  return a.bits === b.bits && a.groupSize === b.groupSize && a.mode === b.mode
}

/** Two logits closer than this (nats: a 5% probability ratio) are a tie for top-1 agreement. */
export const TIE_NATS = 0.05

export interface LogitMetrics {
  positions: number
  /** Vocab entries compared (the common prefix when the two vocabularies differ). */
  vocab: number
  maxAbs: number
  meanAbs: number
  cosine: number
  /** Fraction of positions whose argmax agrees exactly. */
  top1: number
  /**
   * Same, but a position also agrees when the candidate's choice is a near-tie in the reference
   * (its reference logit within TIE_NATS of the reference's maximum): a 16-bit cast may flip the
   * order of two tokens the reference itself cannot tell apart. The top-1 threshold uses this.
   */
  top1WithTies: number
  /** Positions that disagree only on such a near-tie. */
  nearTies: number
  meanKl: number
  maxKl: number
  /** Argmax per position, both sides. */
  top1Reference: number[]
  top1Candidate: number[]
}

/** Metrics over [T, vocab] logits; `refVocab`/`candVocab` are the row widths of each array. */
export function compareLogits(ref: Float32Array, cand: Float32Array, T: number, refVocab: number, candVocab = refVocab): LogitMetrics {
  const V = Math.min(refVocab, candVocab)
  let maxAbs = 0
  let sumAbs = 0
  let dot = 0
  let nr = 0
  let nc = 0
  let agree = 0
  let ties = 0
  let klSum = 0
  let maxKl = 0
  let nonFinite = false
  const top1Reference: number[] = []
  const top1Candidate: number[] = []
  for (let t = 0; t < T; t++) {
    const rb = t * refVocab
    const cb = t * candVocab
    let ra = 0
    let ca = 0
    let rMax = -Infinity
    let cMax = -Infinity
    for (let i = 0; i < V; i++) {
      const r = ref[rb + i]!
      const c = cand[cb + i]!
      if (!Number.isFinite(r) || !Number.isFinite(c)) nonFinite = true
      const d = Math.abs(r - c)
      if (d > maxAbs) maxAbs = d
      sumAbs += d
      dot += r * c
      nr += r * r
      nc += c * c
      if (r > rMax) { rMax = r; ra = i }
      if (c > cMax) { cMax = c; ca = i }
    }
    top1Reference.push(ra)
    top1Candidate.push(ca)
    if (ra === ca) agree++
    else if (ref[rb + ra]! - ref[rb + ca]! <= TIE_NATS) ties++
    // KL(p_ref ‖ p_cand) with log-softmax in f64.
    let rz = 0
    let cz = 0
    for (let i = 0; i < V; i++) {
      rz += Math.exp(ref[rb + i]! - rMax)
      cz += Math.exp(cand[cb + i]! - cMax)
    }
    const rl = rMax + Math.log(rz)
    const cl = cMax + Math.log(cz)
    let kl = 0
    for (let i = 0; i < V; i++) {
      const lp = ref[rb + i]! - rl
      const lq = cand[cb + i]! - cl
      kl += Math.exp(lp) * (lp - lq)
    }
    kl = Math.max(0, kl)
    klSum += kl
    if (kl > maxKl) maxKl = kl
  }
  const n = T * V
  const cosine = nr === 0 && nc === 0 ? 1 : dot / (Math.sqrt(nr) * Math.sqrt(nc))
  if (nonFinite) {
    // NaN/Inf never pass: make every metric say so.
    return {positions: T, vocab: V, maxAbs: Infinity, meanAbs: Infinity, cosine: NaN, top1: agree / T, top1WithTies: (agree + ties) / T, nearTies: ties, meanKl: Infinity, maxKl: Infinity, top1Reference, top1Candidate}
  }
  return {positions: T, vocab: V, maxAbs, meanAbs: sumAbs / n, cosine, top1: agree / T, top1WithTies: (agree + ties) / T, nearTies: ties, meanKl: klSum / T, maxKl, top1Reference, top1Candidate}
}

/** Which thresholds a metrics object breaks, as readable sentences (empty = pass). */
export function logitFailures(m: LogitMetrics, t: Thresholds): string[] {
  const out: string[] = []
  if (t.maxAbs !== undefined && !(m.maxAbs <= t.maxAbs)) out.push(`max abs logit difference ${fmt(m.maxAbs)} > ${fmt(t.maxAbs)}`)
  if (t.minTop1 !== undefined && !(m.top1WithTies >= t.minTop1)) out.push(`top-1 agreement ${fmt(m.top1WithTies)} < ${fmt(t.minTop1)}`)
  if (t.maxMeanKl !== undefined && !(m.meanKl <= t.maxMeanKl)) out.push(`mean KL ${fmt(m.meanKl)} > ${fmt(t.maxMeanKl)}`)
  if (t.minCosine !== undefined && !(m.cosine >= t.minCosine)) out.push(`cosine similarity ${fmt(m.cosine)} < ${fmt(t.minCosine)}`)
  if (!Number.isFinite(m.maxAbs)) out.push('logits contain NaN or Inf')
  return [...new Set(out)]
}

export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x)
  if (x === 0) return '0'
  const a = Math.abs(x)
  return a >= 1e-3 && a < 1e4 ? String(Number(x.toPrecision(4))) : x.toExponential(2)
}

export interface LayerDivergence {
  layer: number
  maxAbs: number
  /** maxAbs / max(1, max|h_ref|). */
  relative: number
}

/** Per-layer difference of hidden states [T, model_dim] (reference vs candidate). */
export function compareHidden(ref: Float32Array[], cand: Float32Array[]): LayerDivergence[] {
  const n = Math.min(ref.length, cand.length)
  const out: LayerDivergence[] = []
  for (let layer = 0; layer < n; layer++) {
    const a = ref[layer]!
    const b = cand[layer]!
    let maxAbs = 0
    let scale = 0
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i]! - b[i]!)
      if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Infinity : d
      const m = Math.abs(a[i]!)
      if (m > scale) scale = m
    }
    out.push({layer, maxAbs, relative: maxAbs / Math.max(1, scale)})
  }
  return out
}

/** The first layer whose relative hidden-state difference exceeds the path's tolerance, or null. */
export function firstDivergentLayer(layers: LayerDivergence[], hiddenRel: number): number | null {
  const hit = layers.find((l) => !(l.relative <= hiddenRel))
  return hit ? hit.layer : null
}

export interface TensorDifference {
  name: string
  /** Set when the tensor is missing or shaped differently on one side. */
  problem?: string
  maxAbs: number
  /** Elements whose values differ at all (f32 bits). */
  differing: number
  /** Elements outside the allowed bound. */
  outOfBound: number
}

export interface WeightReport {
  mode: 'exact' | 'bounded'
  tensors: number
  identical: number
  /** Tensors that fail the check, in canonical order. */
  failing: TensorDifference[]
  firstTensor: string | null
  /** Embedding rows present on one side only (CoreNet's padded vocabulary). */
  extraRows?: number
}

/**
 * Per-element error bound of a lossy path, from the reference value and its group's min/max:
 * 16-bit casts round to nearest even (half an ulp relative, plus the f16 subnormal step).
 * Q8_0 (symmetric, d = max|w|/127) is off by at most half a step, plus d's f16 rounding.
 * MLX's affine rule keeps the dominant end (and zero) exact by rescaling: the rescaled step is
 * at most range/(2^bits − 2), and the grid can then fall short of the far end by up to one step,
 * so every element lies within one rescaled step; scales/biases stored in 16 bits add 2⁻⁷·max|w|.
 */
function elementBound(path: PathKind, dtype: string, q: Quantization | undefined, value: number, groupMin: number, groupMax: number): number {
  const castRel = dtype === 'BF16' ? 2 ** -8 : dtype === 'F16' ? 2 ** -11 : 0
  let bound = Math.abs(value) * castRel + (dtype === 'F16' ? 2 ** -24 : 0)
  if (q && path !== 'lossless' && path !== 'cast16') {
    const amax = Math.max(Math.abs(groupMin), Math.abs(groupMax))
    bound += q.mode === 'q8_0' ? 0.5 * amax / 127 + amax * 2 ** -10 : (groupMax - groupMin) / (2 ** q.bits - 2) + amax * 2 ** -7
  }
  return bound
}

/**
 * Compare the canonical tensors of two checkpoints, one tensor (in f32 chunks) at a time. In
 * 'exact' mode any changed bit fails; in 'bounded' mode each element must lie within the path's
 * error bound. Groups for quantized paths are `groupSize` consecutive elements of a row.
 */
export async function compareWeights(
  ref: readonly TensorRecord[], cand: readonly TensorRecord[],
  options: {mode: 'exact' | 'bounded'; path: PathKind; dtype: string; quantization?: Quantization},
): Promise<WeightReport> {
  const byName = new Map(cand.map((t) => [t.name, t]))
  const failing: TensorDifference[] = []
  let identical = 0
  let extraRows: number | undefined
  for (const r of ref) {
    const c = byName.get(r.name)
    if (!c) {
      failing.push({name: r.name, problem: 'missing', maxAbs: Infinity, differing: 0, outOfBound: 0})
      continue
    }
    let rows = r.shape[0]!
    const sameTail = r.shape.length === c.shape.length && r.shape.slice(1).every((d, i) => d === c.shape[i + 1])
    if (!sameTail || (r.shape[0] !== c.shape[0] && r.name !== 'token_embeddings.weight')) {
      failing.push({name: r.name, problem: `shape [${r.shape.join(', ')}] vs [${c.shape.join(', ')}]`, maxAbs: Infinity, differing: 0, outOfBound: 0})
      continue
    }
    if (r.shape[0] !== c.shape[0]) {
      extraRows = Math.abs(r.shape[0]! - c.shape[0]!)
      rows = Math.min(r.shape[0]!, c.shape[0]!)
    }
    const diff = await compareTensor(r, c, rows, options)
    if (diff.outOfBound > 0) failing.push(diff)
    else if (diff.differing === 0) identical++
  }
  return {mode: options.mode, tensors: ref.length, identical, failing, firstTensor: failing[0]?.name ?? null, ...(extraRows ? {extraRows} : {})}
}

async function compareTensor(
  r: TensorRecord, c: TensorRecord, rows: number,
  options: {mode: 'exact' | 'bounded'; path: PathKind; dtype: string; quantization?: Quantization},
): Promise<TensorDifference> {
  const rowElems = r.shape.slice(1).reduce((a, b) => a * b, 1)
  const total = rows * rowElems
  const group = options.quantization?.groupSize && r.shape.length > 1 ? options.quantization.groupSize : rowElems
  // Chunks hold whole groups so group statistics never straddle two chunks.
  const chunkElems = Math.max(group, Math.floor((4 * 1024 * 1024) / group) * group)
  let maxAbs = 0
  let differing = 0
  let outOfBound = 0
  for (let start = 0; start < total; start += chunkElems) {
    const end = Math.min(total, start + chunkElems)
    const a = toFloat32(await r.read(start * dtypeSize(r.dtype), end * dtypeSize(r.dtype)), r.dtype)
    const b = toFloat32(await c.read(start * dtypeSize(c.dtype), end * dtypeSize(c.dtype)), c.dtype)
    const ab = new Uint32Array(a.buffer, a.byteOffset, a.length)
    const bb = new Uint32Array(b.buffer, b.byteOffset, b.length)
    for (let g = 0; g < a.length; g += group) {
      const gEnd = Math.min(a.length, g + group)
      let lo = 0
      let hi = 0
      if (options.mode === 'bounded') {
        lo = Infinity
        hi = -Infinity
        for (let i = g; i < gEnd; i++) {
          if (a[i]! < lo) lo = a[i]!
          if (a[i]! > hi) hi = a[i]!
        }
      }
      for (let i = g; i < gEnd; i++) {
        if (ab[i] === bb[i]) continue
        differing++
        const d = Math.abs(a[i]! - b[i]!)
        if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Infinity : d
        if (options.mode === 'exact' || !(d <= elementBound(options.path, options.dtype, options.quantization, a[i]!, lo, hi))) outOfBound++
      }
    }
  }
  return {name: r.name, maxAbs, differing, outOfBound}
}
