/**
 * Deterministic random weights with the exact shapes of a config. Every element is a pure
 * function of (seed, tensor index, element index), so any range of any tensor is computed on
 * demand: a 3B model is written without ever being held in memory, and the same seed gives
 * byte-identical files.
 */
import {type Checkpoint} from '../formats/types.js'
import {type FloatDType} from '../tensor/dtype.js'
import {computedRecord} from '../tensor/record.js'
import {type OpenElmConfig} from './config.js'
import {expectedTensors} from './tensors.js'

/** A 32-bit integer hash (murmur3's finaliser over a mixed key). */
function hash32(a: number, b: number, c: number): number {
  let h = (Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca6b) ^ Math.imul(c + 0x165667b1, 0xc2b2ae35)) >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** Uniform in [-1, 1). */
export function synthUniform(seed: number, tensor: number, element: number): number {
  return hash32(seed, tensor, element) / 2147483648 - 1
}

export function synthCheckpoint(config: OpenElmConfig, options: {seed?: number; dtype?: FloatDType} = {}): Checkpoint {
  const seed = options.seed ?? 0
  const dtype = options.dtype ?? 'F32'
  const tensors = expectedTensors(config).map((e, index) => {
    const isNorm = e.kind === 'vector'
    const isEmbedding = e.name === 'token_embeddings.weight'
    const fanIn = e.shape[e.shape.length - 1]!
    // Uniform(-a, a) has std a/√3: linears get std 1/√fan_in, the (tied) embedding std 2/√d so
    // that logits spread over a few units, norms 1 ± 0.1.
    const amplitude = isNorm ? 0.1 : Math.sqrt(3) * (isEmbedding ? 2 : 1) / Math.sqrt(fanIn)
    const offset = isNorm ? 1 : 0
    return computedRecord(e.name, e.shape, dtype, (first, count) => {
      const out = new Float32Array(count)
      for (let i = 0; i < count; i++) out[i] = offset + amplitude * synthUniform(seed, index, first + i)
      return out
    })
  })
  return {
    format: 'hf',
    path: `synth:seed=${seed}`,
    config,
    tensors,
    extras: {configSource: 'preset', dtype, tokenizerFiles: [], notes: [], info: {seed}},
    close: async () => undefined,
  }
}
