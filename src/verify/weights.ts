/**
 * Weight-level comparison of two checkpoints, tensor by tensor and chunk by chunk, so memory
 * stays bounded. Same dtype → bytes compared; different dtypes → values compared as f32.
 */
import {type Checkpoint} from '../formats/types.js'
import {toFloat32} from '../tensor/dtype.js'
import {dtypeSize} from '../tensor/dtype.js'
import {CHUNK_BYTES, formatShape, shapeEquals} from '../tensor/record.js'

export interface WeightComparison {
  /** Every tensor has the same dtype, shape and bytes. */
  bitExact: boolean
  /** Largest |a - b| over all elements (0 when bit-exact). */
  maxAbsDiff: number
  /** Name of the first tensor (in model order) that differs. */
  firstMismatch?: string
  /** Why it differs: dtype, shape, values. */
  reason?: string
  tensors: number
}

export async function compareWeights(a: Checkpoint, b: Checkpoint): Promise<WeightComparison> {
  const byName = new Map(b.tensors.map((t) => [t.name, t]))
  let bitExact = true
  let maxAbsDiff = 0
  let firstMismatch: string | undefined
  let reason: string | undefined
  const mismatch = (name: string, why: string) => {
    bitExact = false
    if (!firstMismatch) [firstMismatch, reason] = [name, why]
  }
  for (const ta of a.tensors) {
    const tb = byName.get(ta.name)
    if (!tb) {
      mismatch(ta.name, 'missing')
      maxAbsDiff = Infinity
      continue
    }
    if (!shapeEquals(ta.shape, tb.shape)) {
      mismatch(ta.name, `shape ${formatShape(ta.shape)} vs ${formatShape(tb.shape)}`)
      maxAbsDiff = Infinity
      continue
    }
    if (ta.dtype !== tb.dtype) mismatch(ta.name, `dtype ${ta.dtype} vs ${tb.dtype}`)
    const elements = ta.byteLength / dtypeSize(ta.dtype)
    const step = Math.floor(CHUNK_BYTES / 4)
    let tensorDiffers = false
    for (let first = 0; first < elements; first += step) {
      const count = Math.min(step, elements - first)
      const [ba, bb] = await Promise.all([
        ta.read(first * dtypeSize(ta.dtype), (first + count) * dtypeSize(ta.dtype)),
        tb.read(first * dtypeSize(tb.dtype), (first + count) * dtypeSize(tb.dtype)),
      ])
      if (ta.dtype === tb.dtype && Buffer.compare(Buffer.from(ba.buffer, ba.byteOffset, ba.byteLength), Buffer.from(bb.buffer, bb.byteOffset, bb.byteLength)) === 0) continue
      const fa = toFloat32(ba, ta.dtype)
      const fb = toFloat32(bb, tb.dtype)
      for (let i = 0; i < count; i++) {
        const d = Math.abs(fa[i]! - fb[i]!)
        if (d > maxAbsDiff || Number.isNaN(d)) maxAbsDiff = Number.isNaN(d) ? Infinity : d
        if (d !== 0 || Number.isNaN(d)) tensorDiffers = true
      }
      if (ta.dtype === tb.dtype) tensorDiffers = true // bytes differ (e.g. -0 vs 0, NaN payloads)
    }
    if (tensorDiffers) mismatch(ta.name, 'values')
  }
  for (const tb of b.tensors) if (!a.tensors.some((t) => t.name === tb.name)) mismatch(tb.name, 'extra tensor')
  return {bitExact, maxAbsDiff, firstMismatch, reason, tensors: a.tensors.length}
}
