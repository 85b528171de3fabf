/**
 * The synth values (src/model/synth.ts), with no imports so that pool workers (src/pool/tasks.ts)
 * load only this: every element is a pure function of (seed, tensor index, element index).
 */

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

/** Elements [first, first + count) of a tensor: offset + amplitude · uniform(seed, tensor, element). */
export function synthValues(seed: number, tensor: number, first: number, count: number, offset: number, amplitude: number): Float32Array {
  const out = new Float32Array(count)
  for (let i = 0; i < count; i++) out[i] = offset + amplitude * synthUniform(seed, tensor, first + i)
  return out
}
