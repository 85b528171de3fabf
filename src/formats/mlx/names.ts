/**
 * MLX layouts and their tensor names. Every canonical tensor `<path>.weight` is stored as
 * `<prefix><path>.weight`, plus `<prefix><path>.scales` / `.biases` when quantized.
 */
import {MappingError, UsageError, shown} from '../../errors.js'
import {GLOBAL_TENSORS} from '../../model/tensors.js'

export const MLX_LAYOUTS = ['mlx-lm', 'corenet-mlx', 'npz'] as const
export type MlxLayout = (typeof MLX_LAYOUTS)[number]

export interface LayoutSpec {
  /** Prefix of every stored name (mlx-lm keeps the HF module tree, `transformer.`). */
  prefix: string
  /**
   * Quantize the embedding too. mlx-lm's `quantize_model` quantizes every module with
   * `to_quantized` (Linear and Embedding); CoreNet's example and the older mlx-examples used
   * `QuantizedLinear.quantize_module`, which only touches Linear layers.
   */
  quantizeEmbedding: boolean
  /** The weights file(s). */
  weightsFile: string
}

export const LAYOUTS: Record<MlxLayout, LayoutSpec> = {
  'mlx-lm': {prefix: 'transformer.', quantizeEmbedding: true, weightsFile: 'model.safetensors'},
  'corenet-mlx': {prefix: '', quantizeEmbedding: false, weightsFile: 'weights.safetensors'},
  npz: {prefix: '', quantizeEmbedding: false, weightsFile: 'weights.npz'},
}

export function parseLayout(layout: string | undefined): MlxLayout {
  const name = layout ?? 'mlx-lm'
  if (!(MLX_LAYOUTS as readonly string[]).includes(name)) throw new UsageError('flag.layout', `unknown MLX layout "${name}" (expected ${MLX_LAYOUTS.join(', ')})`)
  return name as MlxLayout
}

export type StoredPart = 'weight' | 'scales' | 'biases'
const PARTS: readonly StoredPart[] = ['weight', 'scales', 'biases']

/** `layers.0.attn.qkv_proj.weight` → `layers.0.attn.qkv_proj` (every canonical name ends in `.weight`). */
export function modulePath(canonical: string): string {
  return canonical.slice(0, -'.weight'.length)
}

export function storedName(canonical: string, part: StoredPart, prefix: string): string {
  return `${prefix}${modulePath(canonical)}.${part}`
}

/** Split a stored name into the canonical tensor it belongs to and which part it is. */
export function parseStoredName(name: string, prefix: string): {canonical: string; part: StoredPart} {
  if (!name.startsWith(prefix)) {
    throw new MappingError('tensor.unknown', `unknown tensor ${shown(name)}: this MLX layout's tensors start with "${prefix}"`, {tensor: name})
  }
  const rest = name.slice(prefix.length)
  const dot = rest.lastIndexOf('.')
  const part = rest.slice(dot + 1) as StoredPart
  if (dot < 0 || !PARTS.includes(part)) {
    throw new MappingError('tensor.unknown', `unknown tensor ${shown(name)}: expected a name ending in .weight, .scales or .biases`, {tensor: name})
  }
  return {canonical: `${rest.slice(0, dot)}.weight`, part}
}

/** Whether a canonical matrix gets quantized in `layout` (MLX: the last dim must split into groups). */
export function isQuantizable(canonical: string, shape: readonly number[], groupSize: number, layout: LayoutSpec): boolean {
  if (shape.length !== 2) return false
  if (canonical === GLOBAL_TENSORS.token_embeddings && !layout.quantizeEmbedding) return false
  return shape[1]! % groupSize === 0
}
