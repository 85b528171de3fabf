/**
 * Comparison metrics (DESIGN §5): logits (max/mean abs difference, cosine similarity, top-1
 * agreement, mean KL of next-token distributions in f64) and per-layer hidden states (to name the
 * first layer that diverges). Pure functions over Float32Arrays; nothing here reads files or prints.
 */

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
