/** Logit comparison for the GGUF runtime tests (DESIGN §5 metrics), computed in f64. */
export interface LogitComparison {
  greedyA: number[]
  greedyB: number[]
  /** Fraction of positions whose argmax agrees. */
  top1: number
  /** Mean over positions of KL(softmax(a) ‖ softmax(b)). */
  meanKl: number
  maxAbs: number
  /** Smallest per-position cosine similarity. */
  cosineMin: number
}

function logSoftmax(row: Float32Array): Float64Array {
  let max = -Infinity
  for (const v of row) max = Math.max(max, v)
  let sum = 0
  for (const v of row) sum += Math.exp(v - max)
  const lse = max + Math.log(sum)
  return Float64Array.from(row, (v) => v - lse)
}

function argmax(row: Float32Array): number {
  let best = 0
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i
  return best
}

export function compareLogits(a: Float32Array, b: Float32Array, vocab: number): LogitComparison {
  if (a.length !== b.length || a.length % vocab !== 0) throw new Error(`logit shapes differ: ${a.length} vs ${b.length}`)
  const T = a.length / vocab
  const greedyA: number[] = []
  const greedyB: number[] = []
  let kl = 0
  let maxAbs = 0
  let cosineMin = 1
  for (let t = 0; t < T; t++) {
    const ra = a.subarray(t * vocab, (t + 1) * vocab)
    const rb = b.subarray(t * vocab, (t + 1) * vocab)
    greedyA.push(argmax(ra))
    greedyB.push(argmax(rb))
    const la = logSoftmax(ra)
    const lb = logSoftmax(rb)
    let dot = 0
    let na = 0
    let nb = 0
    for (let i = 0; i < vocab; i++) {
      kl += Math.exp(la[i]!) * (la[i]! - lb[i]!)
      maxAbs = Math.max(maxAbs, Math.abs(ra[i]! - rb[i]!))
      dot += ra[i]! * rb[i]!
      na += ra[i]! * ra[i]!
      nb += rb[i]! * rb[i]!
    }
    cosineMin = Math.min(cosineMin, dot / Math.sqrt(na * nb))
  }
  const top1 = greedyA.filter((g, i) => g === greedyB[i]).length / T
  return {greedyA, greedyB, top1, meanKl: kl / T, maxAbs, cosineMin}
}
