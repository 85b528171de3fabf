/**
 * Choosing the next token from a row of logits: greedy (argmax, lowest id on a tie), or sampling
 * with a temperature and nucleus (top-p) cut from a seeded generator, so a seed gives the same
 * tokens on every run and every backend that returns the same logits.
 */
import {UsageError} from '../errors.js'

export interface SamplingOptions {
  /** 0 (default) = greedy. */
  temperature?: number
  /** Keep the smallest set of most likely tokens whose probability reaches top-p (default 1). */
  topP?: number
  /** Seed of the generator (default 0). */
  seed?: number
}

export function checkSampling(options: SamplingOptions): void {
  const {temperature = 0, topP = 1, seed = 0} = options
  if (!Number.isFinite(temperature) || temperature < 0) throw new UsageError('generate.temperature', `--temperature must be a number ≥ 0, got ${temperature}`)
  if (!Number.isFinite(topP) || topP <= 0 || topP > 1) throw new UsageError('generate.top_p', `--top-p must be in (0, 1], got ${topP}`)
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new UsageError('generate.seed', `--seed must be an integer in [0, 2^32), got ${seed}`)
}

/** Index of the largest value; the lowest index wins a tie (as torch.argmax and numpy do). */
export function argmax(row: ArrayLike<number>): number {
  let best = 0
  let max = -Infinity
  for (let i = 0; i < row.length; i++) {
    if (row[i]! > max) {
      max = row[i]!
      best = i
    }
  }
  return best
}

/**
 * mulberry32: a small 32-bit generator with a full period over its state; uniform in [0, 1) with
 * 32 bits of resolution. Deterministic across platforms (integer arithmetic only).
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let z = state
    z = Math.imul(z ^ (z >>> 15), z | 1)
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61)
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296
  }
}

export class Sampler {
  private readonly random: () => number
  readonly temperature: number
  readonly topP: number
  readonly seed: number

  constructor(options: SamplingOptions = {}) {
    checkSampling(options)
    this.temperature = options.temperature ?? 0
    this.topP = options.topP ?? 1
    this.seed = options.seed ?? 0
    this.random = seededRandom(this.seed)
  }

  get greedy(): boolean {
    return this.temperature === 0
  }

  /** The next token from one row of logits [vocab]. */
  next(logits: ArrayLike<number>): number {
    if (this.greedy) return argmax(logits)
    const n = logits.length
    const max = logits[argmax(logits)]!
    // softmax(logits / T) in f64; for a top-p cut, most likely first (ties by id: a fixed order).
    const probs = new Float64Array(n)
    let total = 0
    for (let i = 0; i < n; i++) {
      const p = Math.exp((logits[i]! - max) / this.temperature)
      probs[i] = p
      total += p
    }
    const order = Array.from({length: n}, (_, i) => i)
    if (this.topP < 1) order.sort((a, b) => probs[b]! - probs[a]! || a - b)
    // Nucleus: the shortest prefix whose mass reaches top-p (at least one token).
    let kept = 0
    let mass = 0
    while (kept < n && (kept === 0 || mass < this.topP * total)) mass += probs[order[kept++]!]!
    const u = this.random() * mass
    let acc = 0
    for (let k = 0; k < kept; k++) {
      acc += probs[order[k]!]!
      if (u < acc) return order[k]!
    }
    return order[kept - 1]!
  }
}
