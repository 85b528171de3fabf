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
  checkShapeFields(shape)
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

/**
 * Limits of a believable OpenELM config. Each is far above every released model and far below
 * what would overflow a size computation or a 32-bit field a runtime stores it in.
 */
export const CONFIG_LIMITS = {
  /** 36 in OpenELM-3B; GGUF stores per-layer arrays, so thousands would be a hostile file. */
  num_transformer_layers: [1, 1024],
  /** 3072 in OpenELM-3B. */
  model_dim: [1, 65_536],
  /** 128 in OpenELM-3B. */
  head_dim: [1, 4096],
  /** 4 in every released model. */
  num_gqa_groups: [1, 4096],
  /** Per-layer head counts (24 at most in the released models). */
  heads: [1, 65_536],
  /** 32000 (HF) or 32128 (CoreNet); 2^22 is 16x the largest tokenizer in use. */
  vocab_size: [1, 4_194_304],
  /** 256 in every released model. */
  ffn_dim_divisor: [1, 65_536],
  /** 2048/4096 in the released models; GGUF keeps context_length in a UINT32, 2^24 is already 8000x. */
  max_context_length: [1, 16_777_216],
  rope_max_length: [1, 16_777_216],
} as const satisfies Record<string, readonly [number, number]>

/** RoPE base θ: inv_freq = θ^(-2j/hd) needs θ > 1 (θ ≤ 0 gives NaN, θ = 1 no rotation at all); GGUF stores it as FLOAT32. */
export const ROPE_THETA_RANGE = [1, 1e12] as const
/** Multipliers of model_dim: [0.5, 1.0] (qkv) and [0.5, 4.0] (ffn) in the released models. */
export const MULTIPLIER_RANGE = [0, 64] as const

/**
 * Which fields a config's source stated itself (not derived): contradictions between stated
 * fields are errors, since the real loaders keep one and drop the other.
 */
export interface ConfigStatement {
  /** The source stated both qkv_multipliers (or its default) and the per-layer head lists. */
  heads?: boolean
  /** Where the config came from, for messages ("config.json", a GGUF file...). */
  source?: string
}

/** A short, escaped, one-line rendering of a value from a file (hostile strings stay short). */
export function showValue(v: unknown, max = 60): string {
  let text: string
  try {
    text = typeof v === 'number' ? String(v) : typeof v === 'bigint' ? `${v}` : JSON.stringify(v) ?? String(v)
  } catch {
    text = String(v)
  }
  return text.length > max ? `${text.slice(0, max)}…` : text
}

/**
 * The architectural scalars checked before anything is sized by them: deriving per-layer lists
 * from `num_transformer_layers` = 10^9 would otherwise build billion-entry arrays (a hang).
 */
export function checkShapeFields(shape: Partial<Record<keyof typeof CONFIG_LIMITS, unknown>>): void {
  for (const f of ['num_transformer_layers', 'model_dim', 'head_dim', 'num_gqa_groups', 'vocab_size', 'ffn_dim_divisor', 'max_context_length'] as const) {
    const v = shape[f]
    if (v === undefined) continue
    const [lo, hi] = CONFIG_LIMITS[f]
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new ConfigError('config.field', `config field ${f} must be a positive integer (got ${showValue(v)})`, {field: f})
    if (v < lo || v > hi) throw new ConfigError('config.range', `config field ${f} = ${showValue(v)} is out of range (allowed ${lo}..${hi})`, {field: f})
  }
}

/**
 * The one place an OpenELM config is validated: every field's type and range, the per-layer
 * lists against the layer count, GQA consistency, and (when the source stated them) the head
 * counts against qkv_multipliers. Consistency with the tensors is `checkTensors`' job
 * (model/tensors.ts), which every reader calls after this.
 */
export function validateConfig(config: OpenElmConfig, statement: ConfigStatement = {}): void {
  const n = config.num_transformer_layers
  const bad = (code: string, field: string, message: string, extra: Record<string, unknown> = {}): never => {
    throw new ConfigError(code, `config field ${message}`, {field, ...extra})
  }
  const intIn = (field: string, v: unknown, [lo, hi]: readonly [number, number], label = field) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) bad('config.field', field, `${label} must be a positive integer (got ${showValue(v)})`)
    if ((v as number) < lo || (v as number) > hi) bad('config.range', field, `${label} = ${showValue(v)} is out of range (allowed ${lo}..${hi})`)
  }
  for (const f of ['num_transformer_layers', 'model_dim', 'head_dim', 'num_gqa_groups', 'vocab_size', 'ffn_dim_divisor'] as const) intIn(f, config[f], CONFIG_LIMITS[f])
  for (const f of ['num_query_heads', 'num_kv_heads', 'ffn_multipliers'] as const) {
    const list = config[f]
    if (!Array.isArray(list) || list.length !== n) {
      bad('config.list_length', f, `${f} has ${Array.isArray(list) ? list.length : 'no'} entries, but num_transformer_layers is ${n}`)
    }
    if (!list.every((v) => typeof v === 'number' && Number.isFinite(v) && v > 0)) bad('config.field', f, `${f} must hold positive numbers`)
  }
  config.num_query_heads.forEach((q, i) => {
    if (!Number.isInteger(q) || q % config.num_gqa_groups !== 0) {
      bad('config.gqa', 'num_query_heads', `num_query_heads[${i}] = ${q} is not divisible by num_gqa_groups = ${config.num_gqa_groups}`, {layer: i})
    }
    const kv = config.num_kv_heads[i]!
    if (kv * config.num_gqa_groups !== q) {
      bad('config.gqa', 'num_kv_heads', `num_kv_heads[${i}] = ${kv} does not equal num_query_heads[${i}] / num_gqa_groups = ${q / config.num_gqa_groups}`, {layer: i})
    }
    intIn('num_query_heads', q, CONFIG_LIMITS.heads, `num_query_heads[${i}]`)
  })
  config.ffn_multipliers.forEach((m, i) => {
    if (m > MULTIPLIER_RANGE[1]) bad('config.range', 'ffn_multipliers', `ffn_multipliers[${i}] = ${m} is out of range (allowed > ${MULTIPLIER_RANGE[0]} and ≤ ${MULTIPLIER_RANGE[1]})`, {layer: i})
  })
  const qkv = config.qkv_multipliers
  if (!Array.isArray(qkv) || qkv.length !== 2) bad('config.field', 'qkv_multipliers', `qkv_multipliers must be a [min, max] pair (got ${showValue(qkv)})`)
  qkv.forEach((m, i) => {
    if (typeof m !== 'number' || !Number.isFinite(m) || m <= MULTIPLIER_RANGE[0] || m > MULTIPLIER_RANGE[1]) {
      bad('config.range', 'qkv_multipliers', `qkv_multipliers[${i}] = ${showValue(m)} is out of range (allowed > ${MULTIPLIER_RANGE[0]} and ≤ ${MULTIPLIER_RANGE[1]})`)
    }
  })
  for (const f of ['max_context_length', 'rope_max_length'] as const) intIn(f, config[f], CONFIG_LIMITS[f])
  const theta = config.rope_freq_constant
  if (typeof theta !== 'number' || !Number.isFinite(theta) || theta <= ROPE_THETA_RANGE[0] || theta > ROPE_THETA_RANGE[1]) {
    bad('config.range', 'rope_freq_constant', `rope_freq_constant = ${showValue(theta)} is out of range (allowed > ${ROPE_THETA_RANGE[0]} and ≤ ${ROPE_THETA_RANGE[1]})`)
  }
  for (const f of ['bos_token_id', 'eos_token_id'] as const) {
    const id = config[f]
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= config.vocab_size) {
      bad('config.range', f, `${f} = ${showValue(id)} is out of range (allowed an integer 0..${config.vocab_size - 1}, below vocab_size)`)
    }
  }
  const init = config.initializer_range
  if (typeof init !== 'number' || !Number.isFinite(init) || init < 0) bad('config.range', 'initializer_range', `initializer_range = ${showValue(init)} must be a finite number ≥ 0`)
  for (const f of ['ffn_with_glu', 'normalize_qk_projections', 'share_input_output_layers'] as const) {
    if (typeof config[f] !== 'boolean') bad('config.field', f, `${f} must be true or false (got ${showValue(config[f])})`)
  }
  for (const f of ['activation_fn_name', 'normalization_layer_name'] as const) {
    if (typeof config[f] !== 'string') bad('config.field', f, `${f} must be a string (got ${showValue(config[f])})`)
  }
  if (config.normalization_layer_name !== 'rms_norm') {
    bad('config.unsupported', 'normalization_layer_name', `normalization_layer_name = ${showValue(config.normalization_layer_name)} is not supported (OpenELM uses rms_norm)`)
  }
  if (!config.ffn_with_glu) bad('config.unsupported', 'ffn_with_glu', 'ffn_with_glu = false is not supported (OpenELM uses a GLU FFN)')
  if (!config.share_input_output_layers) bad('config.unsupported', 'share_input_output_layers', 'share_input_output_layers = false is not supported (OpenELM ties embeddings)')
  if (!['swish', 'silu'].includes(config.activation_fn_name)) bad('config.unsupported', 'activation_fn_name', `activation_fn_name = ${showValue(config.activation_fn_name)} is not supported (OpenELM uses swish)`)
  if (statement.heads) {
    // HF's OpenELMConfig.__post_init__ recomputes the head lists from qkv_multipliers: lists that
    // disagree describe a model the HF loader would not build.
    const derived = linspace(qkv[0], qkv[1], n).map(pyRound2).map((m) => makeDivisible(config.model_dim * m, config.head_dim * config.num_gqa_groups) / config.head_dim)
    const i = derived.findIndex((q, layer) => q !== config.num_query_heads[layer])
    if (i >= 0) {
      bad('config.contradiction', 'qkv_multipliers', `qkv_multipliers ${showValue(qkv)} give layer ${i} ${derived[i]} query heads, but num_query_heads[${i}] = ${config.num_query_heads[i]}${statement.source ? ` in ${statement.source}` : ''}`, {layer: i})
    }
  }
}

/** Parse a HF `config.json` object (either ffn_multipliers form). */
/** Edit distance between two short strings (insertions, deletions, substitutions). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({length: b.length + 1}, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let k = 1; k <= b.length; k++) cur[k] = Math.min(prev[k] + 1, cur[k - 1] + 1, prev[k - 1] + (a[i - 1] === b[k - 1] ? 0 : 1))
    prev = cur
  }
  return prev[b.length]
}

/** The key of `keys` closest to `wanted` (at most 3 edits), if any: the likely typo. */
export function nearMiss(wanted: string, keys: readonly string[]): string | undefined {
  let best: string | undefined
  let bestD = 4
  for (const k of keys) {
    if (k === wanted) continue
    const d = editDistance(k.toLowerCase(), wanted.toLowerCase())
    if (d < bestD) [best, bestD] = [k, d]
  }
  return best
}

export function parseHfConfig(json: unknown, file = 'config.json'): OpenElmConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError('config.not_object', `${file} is not a JSON object`, {path: file})
  const j = json as Record<string, unknown>
  if (j.model_type !== undefined && j.model_type !== 'openelm') {
    throw new ConfigError('config.model_type', `config.json has model_type ${showValue(j.model_type)}, not "openelm": this is not an OpenELM model`, {field: 'model_type'})
  }
  for (const field of ['num_transformer_layers', 'model_dim', 'head_dim']) {
    if (typeof j[field] !== 'number') {
      const near = j[field] === undefined ? nearMiss(field, Object.keys(j)) : undefined
      throw new ConfigError('config.missing', `${file} lacks the number field ${field}${near ? ` (it has ${near}: did you mean ${field}?)` : ''}`, {path: file, field, ...(near ? {nearMiss: near} : {})})
    }
  }
  const num = (field: string, fallback: number) => {
    const v = j[field]
    if (v === undefined || v === null) return fallback
    if (typeof v !== 'number') throw new ConfigError('config.field', `config field ${field} must be a number (got ${showValue(v)})`, {field})
    return v
  }
  const typed = <T>(field: string, type: 'boolean' | 'string', fallback: T): T => {
    const v = j[field]
    if (v === undefined || v === null) return fallback
    if (typeof v !== type) throw new ConfigError('config.field', `config field ${field} must be a ${type} (got ${showValue(v)})`, {field})
    return v as T
  }
  const bool = (field: string, fallback: boolean) => typed(field, 'boolean', fallback)
  const str = (field: string, fallback: string) => typed(field, 'string', fallback)
  const numList = (field: string): number[] | undefined => {
    const v = j[field]
    if (v === undefined || v === null) return undefined
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number')) throw new ConfigError('config.field', `config field ${field} must be a list of numbers`, {field})
    return v as number[]
  }
  const qkv = numList('qkv_multipliers') ?? [0.5, 1.0]
  if (qkv.length !== 2) throw new ConfigError('config.field', `config field qkv_multipliers must be a [min, max] pair (got ${qkv.length} values)`, {field: 'qkv_multipliers'})
  const n = j.num_transformer_layers as number
  checkShapeFields({num_transformer_layers: n})
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
  validateConfig(config, {heads: j.num_query_heads !== undefined && j.num_query_heads !== null, source: 'config.json'})
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

/**
 * `auto_map` for a folder without the remote code: the qualified form `<repo>--<module>.<class>`,
 * which transformers resolves by fetching the module from that Hub repo under trust_remote_code.
 */
export function qualifiedAutoMap(repo: string): typeof HF_AUTO_MAP {
  return {AutoConfig: `${repo}--${HF_AUTO_MAP.AutoConfig}`, AutoModelForCausalLM: `${repo}--${HF_AUTO_MAP.AutoModelForCausalLM}`}
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
