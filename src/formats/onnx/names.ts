/**
 * ONNX initializer names: the HF key names (`transformer.` + canonical), plus the RoPE tables the
 * graph derives from the config (dropped on read: they are recomputed on export).
 */
import {MappingError, shown} from '../../errors.js'
import {fromHfName, HF_PREFIX, toHfName} from '../hf/names.js'

/** Initializers that are not model weights (derived from the config). */
export const DERIVED_INITIALIZERS = ['rope.cos_cached', 'rope.sin_cached'] as const

export function toOnnxName(canonical: string): string {
  return toHfName(canonical)
}

/** Canonical name, or undefined for a derived initializer; unknown names are a MappingError. */
export function fromOnnxName(name: string): string | undefined {
  if ((DERIVED_INITIALIZERS as readonly string[]).includes(name)) return undefined
  if (!name.startsWith(HF_PREFIX)) {
    throw new MappingError('tensor.unknown', `unknown ONNX initializer ${shown(name)}: OpenELM weights are named "${HF_PREFIX}<canonical name>"`, {tensor: name})
  }
  return fromHfName(name)
}
