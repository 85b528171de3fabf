/**
 * The element-wise and attention pieces of the OpenELM forward pass (DESIGN §3), in f32 storage
 * with f64 accumulation. Activations are row-major [T, width] Float32Arrays. The matmuls live in
 * matmul.ts (they are the hot loop and run on worker threads).
 */
import {RMS_NORM_EPS} from '../../model/config.js'

/** out[t] = x[t] / sqrt(mean(x[t]²) + eps) * weight, for each of `rows` rows of width `weight.length`. */
export function rmsNorm(x: Float32Array, rows: number, weight: Float32Array, out = new Float32Array(x.length)): Float32Array {
  const width = weight.length
  for (let t = 0; t < rows; t++) {
    const base = t * width
    let sum = 0
    for (let i = 0; i < width; i++) sum += x[base + i]! * x[base + i]!
    // torch: x * rsqrt(mean(x²) + eps), rounded to f32, then times the weight.
    const scale = Math.fround(1 / Math.sqrt(Math.fround(sum / width) + RMS_NORM_EPS))
    for (let i = 0; i < width; i++) out[base + i] = Math.fround(x[base + i]! * scale) * weight[i]!
  }
  return out
}

/** cos/sin tables [T, headDim] for NeoX (rotate-half) RoPE over the full head dimension. */
export function ropeTables(tokens: number, headDim: number, theta: number): {cos: Float32Array; sin: Float32Array} {
  const half = headDim / 2
  const invFreq = new Float32Array(half)
  // inv_freq = 1 / θ^(2j/hd), as torch computes it in f32.
  for (let j = 0; j < half; j++) invFreq[j] = 1 / Math.fround(Math.pow(theta, Math.fround((2 * j) / headDim)))
  const cos = new Float32Array(tokens * headDim)
  const sin = new Float32Array(tokens * headDim)
  for (let t = 0; t < tokens; t++) {
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(t * invFreq[j]!)
      const c = Math.cos(angle)
      const s = Math.sin(angle)
      cos[t * headDim + j] = c
      cos[t * headDim + j + half] = c
      sin[t * headDim + j] = s
      sin[t * headDim + j + half] = s
    }
  }
  return {cos, sin}
}

/**
 * In place on one head vector at `base` (length headDim): q/k RMSNorm with the shared [head_dim]
 * weight, then rotate-half RoPE at position t: x·cos + cat(-x₂, x₁)·sin.
 */
export function normRopeHead(
  v: Float32Array, base: number, headDim: number, weight: Float32Array,
  cos: Float32Array, sin: Float32Array, t: number, scratch: Float32Array,
): void {
  let sum = 0
  for (let i = 0; i < headDim; i++) sum += v[base + i]! * v[base + i]!
  const scale = Math.fround(1 / Math.sqrt(Math.fround(sum / headDim) + RMS_NORM_EPS))
  for (let i = 0; i < headDim; i++) scratch[i] = Math.fround(v[base + i]! * scale) * weight[i]!
  const half = headDim / 2
  const r = t * headDim
  for (let i = 0; i < half; i++) {
    const x1 = scratch[i]!
    const x2 = scratch[i + half]!
    v[base + i] = x1 * cos[r + i]! - x2 * sin[r + i]!
    v[base + i + half] = x2 * cos[r + i + half]! + x1 * sin[r + i + half]!
  }
}

export interface AttentionShape {
  tokens: number
  qHeads: number
  kvHeads: number
  headDim: number
}

/**
 * Causal softmax attention over fused qkv [T, (q + 2kv)·hd] (Q heads, then K heads, then V heads).
 * Q/K are normalised and rotated in place first. Returns [T, qHeads·hd] with heads concatenated.
 */
export function attention(
  qkv: Float32Array, shape: AttentionShape, qNorm: Float32Array, kNorm: Float32Array,
  cos: Float32Array, sin: Float32Array,
): Float32Array {
  const {tokens: T, qHeads, kvHeads, headDim: hd} = shape
  const width = (qHeads + 2 * kvHeads) * hd
  const scratch = new Float32Array(hd)
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < qHeads; h++) normRopeHead(qkv, t * width + h * hd, hd, qNorm, cos, sin, t, scratch)
    for (let h = 0; h < kvHeads; h++) normRopeHead(qkv, t * width + (qHeads + h) * hd, hd, kNorm, cos, sin, t, scratch)
  }
  const out = new Float32Array(T * qHeads * hd)
  const scores = new Float64Array(T)
  const scale = 1 / Math.sqrt(hd)
  const groups = qHeads / kvHeads
  for (let h = 0; h < qHeads; h++) {
    // repeat_interleave: query head h reads KV head floor(h / groups).
    const kv = Math.floor(h / groups)
    const kOff = (qHeads + kv) * hd
    const vOff = (qHeads + kvHeads + kv) * hd
    for (let t = 0; t < T; t++) {
      const qBase = t * width + h * hd
      let max = -Infinity
      for (let s = 0; s <= t; s++) {
        const kBase = s * width + kOff
        let dot = 0
        for (let i = 0; i < hd; i++) dot += qkv[qBase + i]! * qkv[kBase + i]!
        const score = dot * scale
        scores[s] = score
        if (score > max) max = score
      }
      let total = 0
      for (let s = 0; s <= t; s++) {
        const e = Math.exp(scores[s]! - max)
        scores[s] = e
        total += e
      }
      const oBase = t * qHeads * hd + h * hd
      for (let i = 0; i < hd; i++) {
        let acc = 0
        for (let s = 0; s <= t; s++) acc += scores[s]! * qkv[s * width + vOff + i]!
        out[oBase + i] = acc / total
      }
    }
  }
  return out
}

/** silu(gate) · up from proj_1's output [T, 2I]: gate is columns [0, I), up is [I, 2I). */
export function gluSilu(y: Float32Array, tokens: number, ffnDim: number): Float32Array {
  const out = new Float32Array(tokens * ffnDim)
  for (let t = 0; t < tokens; t++) {
    const base = t * 2 * ffnDim
    for (let i = 0; i < ffnDim; i++) {
      const g = y[base + i]!
      const silu = Math.fround(g / (1 + Math.exp(-g)))
      out[t * ffnDim + i] = silu * y[base + ffnDim + i]!
    }
  }
  return out
}

/** x += y, element-wise. */
export function addInPlace(x: Float32Array, y: Float32Array): void {
  for (let i = 0; i < x.length; i++) x[i] = x[i]! + y[i]!
}
