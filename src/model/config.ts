/**
 * The OpenELM config: parsing a Hugging Face `config.json`, deriving per-layer dimensions exactly
 * as CoreNet does, presets, parameter counts, and serialising back to `config.json`.
 */
import {ConfigError} from '../errors.js'
import {type FloatDType, torchDTypeName} from '../tensor/dtype.js'

export interface LayerDims {
  qHeads: number
  kvHeads: number
  ffnDim: number
}

/** The fields of HF's `OpenELMConfig`, with multipliers expanded per layer. */
export interface OpenElmConfig {
  num_transformer_layers: number
  model_dim: number
  head_dim: number
  num_gqa_groups: number
  /** The [min, max] pair the query/KV head counts were derived from. */
  qkv_multipliers: [number, number]
  /** Per-layer FFN multipliers (always expanded). */
  ffn_multipliers: number[]
  ffn_dim_divisor: number
  ffn_with_glu: boolean
  activation_fn_name: string
  normalization_layer_name: string
  normalize_qk_projections: boolean
  share_input_output_layers: boolean
  rope_freq_constant: number
  rope_max_length: number
  max_context_length: number
  vocab_size: number
  num_query_heads: number[]
  num_kv_heads: number[]
  bos_token_id: number
  eos_token_id: number
  initializer_range: number
}

export const RMS_NORM_EPS = 1e-6

/** CoreNet's `make_divisible`: nearest multiple of `d`, at least `d`, never below 90% of `v`. */
export function makeDivisible(v: number, d: number): number {
  let n = Math.max(d, Math.floor(Math.trunc(v + d / 2) / d) * d)
  if (n < 0.9 * v) n += d
  return n
}

/** numpy.linspace(start, stop, num) for float64. */
export function linspace(start: number, stop: number, num: number): number[] {
  if (num <= 0) return []
  if (num === 1) return [start]
  const step = (stop - start) / (num - 1)
  const out = Array.from({length: num}, (_, i) => i * step + start)
  out[num - 1] = stop
  return out
}

/**
 * Python's `round(x, 2)`: rounds the exact binary value to 2 decimals, ties to even. `toFixed`
 * alone breaks ties upwards, so the exact decimal expansion decides ties here.
 */
export function pyRound2(x: number): number {
  const exact = Math.abs(x).toFixed(60) // exact for the magnitudes configs use
  const [intPart, frac = ''] = exact.split('.')
  const kept = BigInt(intPart + frac.slice(0, 2))
  const rest = frac.slice(2)
  const restDigit = Number(rest[0] ?? '0')
  const restTail = /[1-9]/.test(rest.slice(1))
  let n = kept
  if (restDigit > 5 || (restDigit === 5 && (restTail || kept % 2n === 1n))) n += 1n
  return (Math.sign(x) || 1) * Number(n) / 100
}

export interface ConfigShape {
  num_transformer_layers: number
  model_dim: number
  head_dim: number
  vocab_size: number
  num_gqa_groups?: number
  qkv_multipliers?: [number, number]
  ffn_multipliers?: [number, number] | number[]
  ffn_dim_divisor?: number
  max_context_length?: number
}

function defaults(shape: ConfigShape) {
  return {
    num_gqa_groups: shape.num_gqa_groups ?? 4,
    qkv_multipliers: shape.qkv_multipliers ?? ([0.5, 1.0] as [number, number]),
    ffn_multipliers: shape.ffn_multipliers ?? [0.5, 4.0],
    ffn_dim_divisor: shape.ffn_dim_divisor ?? 256,
  }
}

/** Build a full config from the architectural numbers, deriving per-layer heads as CoreNet does. */
export function deriveConfig(shape: ConfigShape): OpenElmConfig {
  const d = defaults(shape)
  const n = shape.num_transformer_layers
  const qkvMults = linspace(d.qkv_multipliers[0], d.qkv_multipliers[1], n).map(pyRound2)
  const ffnMults =
    d.ffn_multipliers.length === 2 && n !== 2
      ? linspace(d.ffn_multipliers[0]!, d.ffn_multipliers[1]!, n).map(pyRound2)
      : [...d.ffn_multipliers]
  const headDivisor = shape.head_dim * d.num_gqa_groups
  const qHeads = qkvMults.map((m) => makeDivisible(shape.model_dim * m, headDivisor) / shape.head_dim)
  const config: OpenElmConfig = {
    num_transformer_layers: n,
    model_dim: shape.model_dim,
    head_dim: shape.head_dim,
    num_gqa_groups: d.num_gqa_groups,
    qkv_multipliers: [d.qkv_multipliers[0], d.qkv_multipliers[1]],
    ffn_multipliers: ffnMults,
    ffn_dim_divisor: d.ffn_dim_divisor,
    ffn_with_glu: true,
    activation_fn_name: 'swish',
    normalization_layer_name: 'rms_norm',
    normalize_qk_projections: true,
    share_input_output_layers: true,
    rope_freq_constant: 10000,
    rope_max_length: 4096,
    max_context_length: shape.max_context_length ?? 2048,
    vocab_size: shape.vocab_size,
    num_query_heads: qHeads,
    num_kv_heads: qHeads.map((q) => q / d.num_gqa_groups),
    bos_token_id: 1,
    eos_token_id: 2,
    initializer_range: 0.02,
  }
  validateConfig(config)
  return config
}

/** Per-layer q heads, KV heads and FFN width. */
export function layerDims(config: OpenElmConfig): LayerDims[] {
  return config.ffn_multipliers.map((m, i) => ({
    qHeads: config.num_query_heads[i]!,
    kvHeads: config.num_kv_heads[i]!,
    ffnDim: makeDivisible(m * config.model_dim, config.ffn_dim_divisor),
  }))
}

export function validateConfig(config: OpenElmConfig): void {
  const n = config.num_transformer_layers
  const positiveInt = (field: keyof OpenElmConfig) => {
    const v = config[field]
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new ConfigError('config.field', `config field ${field} must be a positive integer (got ${JSON.stringify(v)})`, {field})
    }
  }
  for (const f of ['num_transformer_layers', 'model_dim', 'head_dim', 'num_gqa_groups', 'vocab_size', 'ffn_dim_divisor'] as const) positiveInt(f)
  for (const f of ['num_query_heads', 'num_kv_heads', 'ffn_multipliers'] as const) {
    const list = config[f]
    if (!Array.isArray(list) || list.length !== n) {
      throw new ConfigError('config.list_length', `config field ${f} has ${Array.isArray(list) ? list.length : 'no'} entries, but num_transformer_layers is ${n}`, {field: f})
    }
    if (!list.every((v) => typeof v === 'number' && Number.isFinite(v) && v > 0)) {
      throw new ConfigError('config.field', `config field ${f} must hold positive numbers`, {field: f})
    }
  }
  config.num_query_heads.forEach((q, i) => {
    if (!Number.isInteger(q) || q % config.num_gqa_groups !== 0) {
      throw new ConfigError('config.gqa', `config field num_query_heads[${i}] = ${q} is not divisible by num_gqa_groups = ${config.num_gqa_groups}`, {field: 'num_query_heads', layer: i})
    }
    const kv = config.num_kv_heads[i]!
    if (kv * config.num_gqa_groups !== q) {
      throw new ConfigError('config.gqa', `config field num_kv_heads[${i}] = ${kv} does not equal num_query_heads[${i}] / num_gqa_groups = ${q / config.num_gqa_groups}`, {field: 'num_kv_heads', layer: i})
    }
  })
  if (config.normalization_layer_name !== 'rms_norm') {
    throw new ConfigError('config.unsupported', `config field normalization_layer_name = "${config.normalization_layer_name}" is not supported (OpenELM uses rms_norm)`, {field: 'normalization_layer_name'})
  }
  if (!config.ffn_with_glu) throw new ConfigError('config.unsupported', 'config field ffn_with_glu = false is not supported (OpenELM uses a GLU FFN)', {field: 'ffn_with_glu'})
  if (!config.share_input_output_layers) throw new ConfigError('config.unsupported', 'config field share_input_output_layers = false is not supported (OpenELM ties embeddings)', {field: 'share_input_output_layers'})
  if (!['swish', 'silu'].includes(config.activation_fn_name)) throw new ConfigError('config.unsupported', `config field activation_fn_name = "${config.activation_fn_name}" is not supported (OpenELM uses swish)`, {field: 'activation_fn_name'})
}

/** Parse a HF `config.json` object (either ffn_multipliers form). */
export function parseHfConfig(json: unknown): OpenElmConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError('config.not_object', 'config.json is not a JSON object')
  const j = json as Record<string, unknown>
  if (j.model_type !== undefined && j.model_type !== 'openelm') {
    throw new ConfigError('config.model_type', `config.json has model_type "${String(j.model_type)}", not "openelm": this is not an OpenELM model`, {field: 'model_type'})
  }
  for (const field of ['num_transformer_layers', 'model_dim', 'head_dim']) {
    if (typeof j[field] !== 'number') throw new ConfigError('config.missing', `config.json lacks the number field ${field}`, {field})
  }
  const num = (field: string, fallback: number) => {
    const v = j[field]
    if (v === undefined || v === null) return fallback
    if (typeof v !== 'number') throw new ConfigError('config.field', `config field ${field} must be a number (got ${JSON.stringify(v)})`, {field})
    return v
  }
  const bool = (field: string, fallback: boolean) => (typeof j[field] === 'boolean' ? (j[field] as boolean) : fallback)
  const str = (field: string, fallback: string) => (typeof j[field] === 'string' ? (j[field] as string) : fallback)
  const numList = (field: string): number[] | undefined => {
    const v = j[field]
    if (v === undefined || v === null) return undefined
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number')) throw new ConfigError('config.field', `config field ${field} must be a list of numbers`, {field})
    return v as number[]
  }
  const qkv = numList('qkv_multipliers') ?? [0.5, 1.0]
  if (qkv.length !== 2) throw new ConfigError('config.field', `config field qkv_multipliers must be a [min, max] pair (got ${qkv.length} values)`, {field: 'qkv_multipliers'})
  const n = j.num_transformer_layers as number
  // HF also accepts one number for every layer.
  const ffnField = j.ffn_multipliers
  const ffn = typeof ffnField === 'number' && Number.isInteger(n) && n > 0 ? Array.from({length: n}, () => ffnField) : numList('ffn_multipliers') ?? [0.5, 4.0]
  if (ffn.length !== 2 && ffn.length !== n) {
    throw new ConfigError('config.list_length', `config field ffn_multipliers has ${ffn.length} entries: expected a [min, max] pair or ${n} per-layer values`, {field: 'ffn_multipliers'})
  }
  const base = deriveConfigLoose({
    num_transformer_layers: n,
    model_dim: j.model_dim as number,
    head_dim: j.head_dim as number,
    vocab_size: num('vocab_size', 32000),
    num_gqa_groups: num('num_gqa_groups', 4),
    qkv_multipliers: [qkv[0]!, qkv[1]!],
    ffn_multipliers: ffn.length === n ? ffn : [ffn[0]!, ffn[1]!],
    ffn_dim_divisor: num('ffn_dim_divisor', 256),
    max_context_length: num('max_context_length', 2048),
  })
  const config: OpenElmConfig = {
    ...base,
    ffn_with_glu: bool('ffn_with_glu', true),
    activation_fn_name: str('activation_fn_name', 'swish'),
    normalization_layer_name: str('normalization_layer_name', 'rms_norm'),
    normalize_qk_projections: bool('normalize_qk_projections', true),
    share_input_output_layers: bool('share_input_output_layers', true),
    rope_freq_constant: num('rope_freq_constant', 10000),
    rope_max_length: num('rope_max_length', 4096),
    num_query_heads: numList('num_query_heads') ?? base.num_query_heads,
    num_kv_heads: numList('num_kv_heads') ?? base.num_kv_heads,
    bos_token_id: num('bos_token_id', 1),
    eos_token_id: num('eos_token_id', 2),
    initializer_range: num('initializer_range', 0.02),
  }
  validateConfig(config)
  return config
}

/** deriveConfig without validation, so parseHfConfig can report the user's own fields first. */
function deriveConfigLoose(shape: ConfigShape): OpenElmConfig {
  try {
    return deriveConfig(shape)
  } catch (error) {
    if (error instanceof ConfigError) throw error
    throw new ConfigError('config.invalid', `config.json is inconsistent: ${(error as Error).message}`)
  }
}

export const HF_AUTO_MAP = {
  AutoConfig: 'configuration_openelm.OpenELMConfig',
  AutoModelForCausalLM: 'modeling_openelm.OpenELMForCausalLM',
}

/** Serialise to the HF `config.json` object (keys sorted, as `transformers` writes them). */
export function toHfConfigJson(config: OpenElmConfig, dtype: FloatDType, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const json: Record<string, unknown> = {
    activation_fn_name: config.activation_fn_name,
    architectures: ['OpenELMForCausalLM'],
    auto_map: HF_AUTO_MAP,
    bos_token_id: config.bos_token_id,
    eos_token_id: config.eos_token_id,
    ffn_dim_divisor: config.ffn_dim_divisor,
    ffn_multipliers: config.ffn_multipliers,
    ffn_with_glu: config.ffn_with_glu,
    head_dim: config.head_dim,
    initializer_range: config.initializer_range,
    max_context_length: config.max_context_length,
    model_dim: config.model_dim,
    model_type: 'openelm',
    normalization_layer_name: config.normalization_layer_name,
    normalize_qk_projections: config.normalize_qk_projections,
    num_gqa_groups: config.num_gqa_groups,
    num_kv_heads: config.num_kv_heads,
    num_query_heads: config.num_query_heads,
    num_transformer_layers: config.num_transformer_layers,
    qkv_multipliers: config.qkv_multipliers,
    rope_freq_constant: config.rope_freq_constant,
    rope_max_length: config.rope_max_length,
    share_input_output_layers: config.share_input_output_layers,
    torch_dtype: torchDTypeName(dtype),
    transformers_version: '4.39.3',
    use_cache: true,
    vocab_size: config.vocab_size,
    ...extra,
  }
  return sortKeys(json)
}

export function sortKeys(json: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.keys(json).sort().map((k) => [k, json[k]]))
}

export function generationConfigJson(config: OpenElmConfig): Record<string, unknown> {
  return {_from_model_config: true, bos_token_id: config.bos_token_id, eos_token_id: config.eos_token_id, transformers_version: '4.39.3'}
}

/** Number of parameters (tied embeddings counted once). */
export function parameterCount(config: OpenElmConfig): number {
  const {model_dim: d, head_dim: hd, vocab_size: v} = config
  let total = v * d + d
  for (const {qHeads, kvHeads, ffnDim} of layerDims(config)) {
    total += d // attn_norm
    total += (qHeads + 2 * kvHeads) * hd * d // qkv_proj
    total += 2 * hd // q_norm, k_norm
    total += d * qHeads * hd // out_proj
    total += d // ffn_norm
    total += 2 * ffnDim * d + d * ffnDim // proj_1, proj_2
  }
  return total
}
