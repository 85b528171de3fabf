/**
 * Quality: how far a transformation moved the model, measured against the float source on the
 * verification tokens — mean KL of next-token distributions, top-1 agreement, and perplexity of
 * both models. A separate question from correctness: a faithful 4-bit conversion is correct and
 * still loses quality. Gates are opt-in (`--max-kl`, `--min-top1`, `--max-ppl-ratio`).
 */
import {compareLogits, fmt, type LogitMetrics} from './compare.js'

export interface QualityGates {
  /** Largest allowed mean KL(REF ‖ MODEL), nats. */
  maxKl?: number
  /** Smallest allowed top-1 agreement (near-ties of the reference count as agreement). */
  minTop1?: number
  /** Largest allowed perplexity(MODEL) / perplexity(REF). */
  maxPplRatio?: number
}

export interface Perplexity {
  model: number
  reference: number
  ratio: number
  /** Next-token predictions scored (tokens − 1). */
  predictions: number
}

export interface QualityReport {
  meanKl: number
  maxKl: number
  /** Exact argmax agreement, and with the reference's near-ties counted as agreement. */
  top1: number
  top1WithTies: number
  nearTies: number
  /** Only when the tokens are real text: perplexity of random ids measures nothing. */
  perplexity?: Perplexity
  gates: QualityGates
  failures: string[]
  pass: boolean
}

/**
 * Perplexity of `tokens` under logits [T, width] (row t predicts token t+1): exp of the mean
 * negative log-likelihood over the T−1 predictions, with log-softmax in f64 over the first `vocab`
 * entries of each row.
 */
export function perplexity(logits: Float32Array, tokens: readonly number[], width: number, vocab = width): number {
  const T = tokens.length
  if (T < 2) return NaN
  let nll = 0
  for (let t = 0; t < T - 1; t++) {
    const base = t * width
    let max = -Infinity
    for (let i = 0; i < vocab; i++) if (logits[base + i]! > max) max = logits[base + i]!
    let z = 0
    for (let i = 0; i < vocab; i++) z += Math.exp(logits[base + i]! - max)
    nll -= logits[base + tokens[t + 1]!]! - max - Math.log(z)
  }
  return Math.exp(nll / (T - 1))
}

/** Quality of MODEL against REF from their logits; `text` says whether perplexity means anything. */
export function measureQuality(
  ref: Float32Array, model: Float32Array, tokens: readonly number[], refWidth: number, modelWidth: number,
  options: {text: boolean; gates?: QualityGates},
): QualityReport {
  const m: LogitMetrics = compareLogits(ref, model, tokens.length, refWidth, modelWidth)
  const vocab = m.vocab
  const gates = options.gates ?? {}
  let ppl: Perplexity | undefined
  if (options.text && tokens.length > 1) {
    const reference = perplexity(ref, tokens, refWidth, vocab)
    const own = perplexity(model, tokens, modelWidth, vocab)
    ppl = {model: own, reference, ratio: own / reference, predictions: tokens.length - 1}
  }
  const failures: string[] = []
  if (gates.maxKl !== undefined && !(m.meanKl <= gates.maxKl)) failures.push(`mean KL ${fmt(m.meanKl)} > ${fmt(gates.maxKl)} (--max-kl)`)
  if (gates.minTop1 !== undefined && !(m.top1WithTies >= gates.minTop1)) failures.push(`top-1 agreement ${fmt(m.top1WithTies)} < ${fmt(gates.minTop1)} (--min-top1)`)
  if (gates.maxPplRatio !== undefined) {
    if (!ppl) failures.push('--max-ppl-ratio needs text (--prompt, --text-file, or a model with a tokenizer): perplexity of random token ids is not measured')
    else if (!(ppl.ratio <= gates.maxPplRatio)) failures.push(`perplexity ratio ${fmt(ppl.ratio)} > ${fmt(gates.maxPplRatio)} (--max-ppl-ratio)`)
  }
  return {
    meanKl: m.meanKl, maxKl: m.maxKl, top1: m.top1, top1WithTies: m.top1WithTies, nearTies: m.nearTies,
    ...(ppl ? {perplexity: ppl} : {}), gates, failures, pass: failures.length === 0,
  }
}
