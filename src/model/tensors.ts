/**
 * The canonical tensor layout: CoreNet state-dict names (no prefix) and the shape each must have
 * for a given config. Every format maps to and from these names.
 */
import {MappingError, shown} from '../errors.js'
import {formatShape, shapeEquals, type TensorRecord} from '../tensor/record.js'
import {layerDims, type OpenElmConfig} from './config.js'

export type LayerRole = 'attn_norm' | 'qkv_proj' | 'q_norm' | 'k_norm' | 'out_proj' | 'ffn_norm' | 'proj_1' | 'proj_2'
export type GlobalRole = 'token_embeddings' | 'norm'

export const LAYER_TENSORS: Record<LayerRole, string> = {
  attn_norm: 'layers.{bid}.attn_norm.weight',
  qkv_proj: 'layers.{bid}.attn.qkv_proj.weight',
  q_norm: 'layers.{bid}.attn.q_norm.weight',
  k_norm: 'layers.{bid}.attn.k_norm.weight',
  out_proj: 'layers.{bid}.attn.out_proj.weight',
  ffn_norm: 'layers.{bid}.ffn_norm.weight',
  proj_1: 'layers.{bid}.ffn.proj_1.weight',
  proj_2: 'layers.{bid}.ffn.proj_2.weight',
}

export const GLOBAL_TENSORS: Record<GlobalRole, string> = {
  token_embeddings: 'token_embeddings.weight',
  norm: 'norm.weight',
}

export function layerTensorName(role: LayerRole, layer: number): string {
  return LAYER_TENSORS[role].replace('{bid}', String(layer))
}

export interface ExpectedTensor {
  name: string
  shape: number[]
  /** Linear weights and the embedding are 2-D; norms are 1-D. */
  kind: 'matrix' | 'vector'
}

/** Every canonical tensor with its exact shape, in model order. */
export function expectedTensors(config: OpenElmConfig): ExpectedTensor[] {
  const d = config.model_dim
  const hd = config.head_dim
  const out: ExpectedTensor[] = [{name: GLOBAL_TENSORS.token_embeddings, shape: [config.vocab_size, d], kind: 'matrix'}]
  layerDims(config).forEach(({qHeads, kvHeads, ffnDim}, i) => {
    const shapes: Record<LayerRole, number[]> = {
      attn_norm: [d],
      qkv_proj: [(qHeads + 2 * kvHeads) * hd, d],
      q_norm: [hd],
      k_norm: [hd],
      out_proj: [d, qHeads * hd],
      ffn_norm: [d],
      proj_1: [2 * ffnDim, d],
      proj_2: [d, ffnDim],
    }
    for (const role of Object.keys(LAYER_TENSORS) as LayerRole[]) {
      out.push({name: layerTensorName(role, i), shape: shapes[role], kind: shapes[role].length === 1 ? 'vector' : 'matrix'})
    }
  })
  out.push({name: GLOBAL_TENSORS.norm, shape: [d], kind: 'vector'})
  return out
}

/**
 * Check that `tensors` are exactly the canonical set for `config`: no unknown name, none missing,
 * every shape right. Returns the records in canonical order.
 */
export function checkTensors(config: OpenElmConfig, tensors: readonly TensorRecord[]): TensorRecord[] {
  const byName = new Map<string, TensorRecord>()
  for (const t of tensors) {
    if (byName.has(t.name)) throw new MappingError('tensor.duplicate', `tensor ${shown(t.name)} appears twice`, {tensor: t.name})
    byName.set(t.name, t)
  }
  const expected = expectedTensors(config)
  const known = new Set(expected.map((e) => e.name))
  for (const t of tensors) {
    if (!known.has(t.name)) throw new MappingError('tensor.unknown', `unknown tensor ${shown(t.name)}: not part of an OpenELM model with ${config.num_transformer_layers} layers`, {tensor: t.name})
  }
  return expected.map((e) => {
    const t = byName.get(e.name)
    if (!t) throw new MappingError('tensor.missing', `tensor ${e.name} is missing`, {tensor: e.name})
    if (!shapeEquals(t.shape, e.shape)) {
      throw new MappingError('tensor.shape', `tensor ${e.name} has shape ${formatShape(t.shape)}, but the config needs ${formatShape(e.shape)}`, {tensor: e.name})
    }
    return t
  })
}
