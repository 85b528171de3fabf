/**
 * Recover an OpenELM config from tensor shapes alone (a checkpoint without config.json, a CoreNet
 * state dict). The standard CoreNet derivation is tried first, so the presets come back exactly;
 * otherwise the per-layer lists are taken from the shapes as they are.
 */
import {ConfigError} from '../errors.js'
import {type TensorRecord} from '../tensor/record.js'
import {deriveConfig, layerDims, makeDivisible, type OpenElmConfig, pyRound2, validateConfig} from './config.js'
import {GLOBAL_TENSORS, layerTensorName} from './tensors.js'

export function inferConfig(tensors: readonly TensorRecord[]): OpenElmConfig {
  const shapes = new Map(tensors.map((t) => [t.name, t.shape]))
  const need = (name: string, rank: number): readonly number[] => {
    const shape = shapes.get(name)
    if (!shape) throw new ConfigError('config.infer', `cannot infer the config: tensor ${name} is missing`, {tensor: name})
    if (shape.length !== rank) throw new ConfigError('config.infer', `cannot infer the config: tensor ${name} has rank ${shape.length}, expected ${rank}`, {tensor: name})
    return shape
  }
  const [vocab, modelDim] = need(GLOBAL_TENSORS.token_embeddings, 2) as [number, number]
  let layers = 0
  while (shapes.has(layerTensorName('qkv_proj', layers))) layers++
  if (layers === 0) throw new ConfigError('config.infer', `cannot infer the config: no ${layerTensorName('qkv_proj', 0)} tensor`)
  const headDim = need(layerTensorName('q_norm', 0), 1)[0]!
  const qHeads: number[] = []
  const kvHeads: number[] = []
  const ffnDims: number[] = []
  for (let i = 0; i < layers; i++) {
    const out = need(layerTensorName('out_proj', i), 2)
    const qkv = need(layerTensorName('qkv_proj', i), 2)
    const proj2 = need(layerTensorName('proj_2', i), 2)
    const q = out[1]! / headDim
    const kv = (qkv[0]! / headDim - q) / 2
    if (!Number.isInteger(q) || !Number.isInteger(kv) || kv <= 0) {
      throw new ConfigError('config.infer', `cannot infer heads of layer ${i}: qkv_proj ${qkv[0]} rows and out_proj ${out[1]} columns do not split into heads of ${headDim}`, {layer: i})
    }
    qHeads.push(q)
    kvHeads.push(kv)
    ffnDims.push(proj2[1]!)
  }
  const groups = qHeads[0]! / kvHeads[0]!
  if (!Number.isInteger(groups) || qHeads.some((q, i) => q !== kvHeads[i]! * groups)) {
    throw new ConfigError('config.infer', 'cannot infer num_gqa_groups: query/KV head ratios differ between layers')
  }
  const shape = {num_transformer_layers: layers, model_dim: modelDim, head_dim: headDim, vocab_size: vocab, num_gqa_groups: groups}
  // The standard derivation (qkv 0.5→1.0, ffn 0.5→4.0) with the largest divisor that reproduces the widths.
  for (const divisor of [256, 128, 64, 32, 16, 8]) {
    try {
      const candidate = deriveConfig({...shape, ffn_dim_divisor: divisor})
      const dims = layerDims(candidate)
      if (dims.every((d, i) => d.qHeads === qHeads[i] && d.kvHeads === kvHeads[i] && d.ffnDim === ffnDims[i])) return candidate
    } catch {
      // not this divisor
    }
  }
  // Non-standard widths: keep the shapes as per-layer lists.
  const divisor = [256, 128, 64, 32, 16, 8, 4, 2, 1].find((d) => ffnDims.every((f) => f % d === 0))!
  const base = deriveConfig({...shape, ffn_dim_divisor: divisor})
  const ffnMultipliers = ffnDims.map((f) => {
    const rounded = pyRound2(f / modelDim)
    return makeDivisible(rounded * modelDim, divisor) === f ? rounded : f / modelDim
  })
  const config: OpenElmConfig = {...base, ffn_multipliers: ffnMultipliers, num_query_heads: qHeads, num_kv_heads: kvHeads}
  validateConfig(config)
  if (layerDims(config).some((d, i) => d.ffnDim !== ffnDims[i])) {
    throw new ConfigError('config.infer', 'cannot infer ffn_multipliers that reproduce the FFN widths of the checkpoint')
  }
  return config
}
