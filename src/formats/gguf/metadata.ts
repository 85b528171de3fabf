/**
 * OpenELM ↔ GGUF metadata. The keys are what llama.cpp's `LLM_ARCH_OPENELM` loader reads, with
 * the value types it checks (scalars UINT32/FLOAT32, per-layer INT32 arrays), plus a few
 * `openelm.*` keys llama.cpp ignores that make the config round-trip exactly.
 */
import {ConfigError, FormatError, quote} from '../../errors.js'
import {checkShapeFields, layerDims, type OpenElmConfig, parameterCount, RMS_NORM_EPS, validateConfig} from '../../model/config.js'
import {matchPreset} from '../../model/presets.js'
import {type GgufVocab} from './tokenizer.js'
import {type GgufKv, type GgufValue, LLAMA_FILE_TYPE, GGUF_DEFAULT_ALIGNMENT} from './types.js'

export const ARCH = 'openelm'
/** ggml's GGML_QNT_VERSION, which gguf-py writes as general.quantization_version. */
export const GGML_QUANT_VERSION = 2

export type GgufFileType = keyof typeof LLAMA_FILE_TYPE

const int32s = (values: readonly number[]): GgufValue => ({itemType: 'INT32', items: [...values]})
const f64s = (values: readonly number[]): GgufValue => ({itemType: 'FLOAT64', items: [...values]})

/**
 * A parameter count in llama.cpp's rounded notation (gguf-py `model_weight_count_rounded_notation`):
 * K/M/B/T with at least two significant digits, e.g. 271527168 → "272M", 1079891456 → "1.1B".
 */
export function roundedParameterCount(n: number): string {
  const [scale, suffix] = n > 1e12 ? [1e-12, 'T'] : n > 1e9 ? [1e-9, 'B'] : n > 1e6 ? [1e-6, 'M'] : [1e-3, 'K']
  const scaled = n * scale
  const digits = String(Math.round(scaled)).replace(/^0+/, '').length
  return `${scaled.toFixed(Math.max(2 - digits, 0))}${suffix}`
}

/**
 * `general.size_label`: the released size's name for a released shape ("270M", "450M", "1.1B",
 * "3B", as llama.cpp's converter takes it from the repository name), else the rounded count.
 */
export function sizeLabel(config: OpenElmConfig): string {
  const preset = matchPreset(config)
  return preset && !['tiny', 'micro'].includes(preset) ? preset : roundedParameterCount(parameterCount(config))
}

/** Every KV of an OpenELM GGUF, in the order written. */
export function openelmMetadata(config: OpenElmConfig, options: {name: string; fileType: GgufFileType; vocab: GgufVocab; chatTemplate?: string}): GgufKv[] {
  const dims = layerDims(config)
  const {vocab} = options
  const kv = (key: string, type: GgufKv['type'], value: GgufValue): GgufKv => ({key, type, value})
  const out: GgufKv[] = [
    kv('general.architecture', 'STRING', ARCH),
    kv('general.type', 'STRING', 'model'),
    kv('general.name', 'STRING', options.name),
    kv('general.size_label', 'STRING', sizeLabel(config)),
    kv('general.file_type', 'UINT32', LLAMA_FILE_TYPE[options.fileType]),
    kv('general.quantization_version', 'UINT32', GGML_QUANT_VERSION),
    kv('general.alignment', 'UINT32', GGUF_DEFAULT_ALIGNMENT),
    kv(`${ARCH}.block_count`, 'UINT32', config.num_transformer_layers),
    kv(`${ARCH}.context_length`, 'UINT32', config.max_context_length),
    kv(`${ARCH}.embedding_length`, 'UINT32', config.model_dim),
    kv(`${ARCH}.feed_forward_length`, 'ARRAY', int32s(dims.map((d) => d.ffnDim))),
    kv(`${ARCH}.attention.head_count`, 'ARRAY', int32s(dims.map((d) => d.qHeads))),
    kv(`${ARCH}.attention.head_count_kv`, 'ARRAY', int32s(dims.map((d) => d.kvHeads))),
    kv(`${ARCH}.rope.freq_base`, 'FLOAT32', config.rope_freq_constant),
    kv(`${ARCH}.attention.layer_norm_rms_epsilon`, 'FLOAT32', RMS_NORM_EPS),
    kv(`${ARCH}.rope.dimension_count`, 'UINT32', config.head_dim),
    kv(`${ARCH}.attention.key_length`, 'UINT32', config.head_dim),
    kv(`${ARCH}.attention.value_length`, 'UINT32', config.head_dim),
    // Not read by llama.cpp: the config fields the keys above cannot express.
    kv(`${ARCH}.ffn_multipliers`, 'ARRAY', f64s(config.ffn_multipliers)),
    kv(`${ARCH}.ffn_dim_divisor`, 'UINT32', config.ffn_dim_divisor),
    kv(`${ARCH}.qkv_multipliers`, 'ARRAY', f64s(config.qkv_multipliers)),
    kv(`${ARCH}.num_gqa_groups`, 'UINT32', config.num_gqa_groups),
    kv(`${ARCH}.rope_max_length`, 'UINT32', config.rope_max_length),
    kv('tokenizer.ggml.model', 'STRING', 'llama'),
    kv('tokenizer.ggml.pre', 'STRING', 'default'),
    kv('tokenizer.ggml.tokens', 'ARRAY', {itemType: 'STRING', items: vocab.tokens}),
    kv('tokenizer.ggml.scores', 'ARRAY', {itemType: 'FLOAT32', items: vocab.scores}),
    kv('tokenizer.ggml.token_type', 'ARRAY', {itemType: 'INT32', items: vocab.types}),
    kv('tokenizer.ggml.bos_token_id', 'UINT32', vocab.bos),
    kv('tokenizer.ggml.eos_token_id', 'UINT32', vocab.eos),
    kv('tokenizer.ggml.unknown_token_id', 'UINT32', vocab.unk),
    kv('tokenizer.ggml.add_bos_token', 'BOOL', vocab.addBos),
    kv('tokenizer.ggml.add_eos_token', 'BOOL', false),
  ]
  if (options.chatTemplate !== undefined) out.push(kv('tokenizer.chat_template', 'STRING', options.chatTemplate))
  if (vocab.source === 'placeholder') out.push(kv(`${ARCH}.vocab_placeholder`, 'BOOL', true))
  return out
}

// ---- reading back ---------------------------------------------------------------------------

function get(kv: Map<string, GgufKv>, key: string, file: string): GgufKv {
  const hit = kv.get(key)
  if (!hit) throw new FormatError('gguf.missing_key', `${file}: metadata key ${key} is missing`, {path: file, field: key})
  return hit
}

function uint(kv: Map<string, GgufKv>, key: string, file: string): number
function uint(kv: Map<string, GgufKv>, key: string, file: string, fallback: number): number
function uint(kv: Map<string, GgufKv>, key: string, file: string, fallback?: number): number {
  if (fallback !== undefined && !kv.has(key)) return fallback
  const {type, value} = get(kv, key, file)
  if (!['UINT8', 'UINT16', 'UINT32', 'INT32', 'UINT64', 'INT64'].includes(type)) throw new FormatError('gguf.key_type', `${file}: ${key} is ${type}, expected an integer`, {path: file, field: key})
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 0) throw new FormatError('gguf.key_value', `${file}: ${key} = ${String(value)} is not a valid count`, {path: file, field: key})
  return n
}

function float(kv: Map<string, GgufKv>, key: string, file: string, fallback: number): number {
  const hit = kv.get(key)
  if (!hit) return fallback
  if (hit.type !== 'FLOAT32' && hit.type !== 'FLOAT64') throw new FormatError('gguf.key_type', `${file}: ${key} is ${hit.type}, expected a float`, {path: file, field: key})
  return hit.value as number
}

/** A per-layer value: an array of `layers` numbers, or one scalar for all layers (as llama.cpp allows). */
function perLayer(kv: Map<string, GgufKv>, key: string, layers: number, file: string): number[] {
  const hit = get(kv, key, file)
  if (hit.type !== 'ARRAY') return new Array<number>(layers).fill(uint(kv, key, file))
  const arr = hit.value as {itemType: string; items: unknown[]}
  if (!['INT32', 'UINT32'].includes(arr.itemType) || arr.items.length !== layers) {
    throw new FormatError('gguf.key_value', `${file}: ${key} must be ${layers} INT32/UINT32 values (got ${arr.items.length} ${arr.itemType})`, {path: file, field: key})
  }
  return arr.items as number[]
}

function floats(kv: Map<string, GgufKv>, key: string, file: string): number[] | undefined {
  const hit = kv.get(key)
  if (!hit) return undefined
  const arr = hit.value as {itemType?: string; items?: unknown[]}
  if (hit.type !== 'ARRAY' || !['FLOAT32', 'FLOAT64'].includes(arr.itemType ?? '')) throw new FormatError('gguf.key_type', `${file}: ${key} must be a float array`, {path: file, field: key})
  return arr.items as number[]
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b)
}

/**
 * The OpenELM config a GGUF file describes. Files from other converters lack the `openelm.*`
 * extras: multipliers are then derived from the FFN widths (exact widths, inexact multipliers).
 */
export function configFromMetadata(kv: Map<string, GgufKv>, vocabRows: number, file: string): {config: OpenElmConfig; notes: string[]} {
  const arch = get(kv, 'general.architecture', file)
  if (arch.value !== ARCH) throw new FormatError('gguf.architecture', `${file}: general.architecture is ${quote(String(arch.value))}, not "${ARCH}"`, {path: file})
  const notes: string[] = []
  const layers = uint(kv, `${ARCH}.block_count`, file)
  checkShapeFields({num_transformer_layers: layers}) // before per-layer lists are sized by it
  const modelDim = uint(kv, `${ARCH}.embedding_length`, file)
  const qHeads = perLayer(kv, `${ARCH}.attention.head_count`, layers, file)
  const kvHeads = kv.has(`${ARCH}.attention.head_count_kv`) ? perLayer(kv, `${ARCH}.attention.head_count_kv`, layers, file) : qHeads
  const ffnDims = perLayer(kv, `${ARCH}.feed_forward_length`, layers, file)
  const headDim = uint(kv, `${ARCH}.attention.key_length`, file, Math.floor(modelDim / qHeads[0]!))
  let ffnMultipliers = floats(kv, `${ARCH}.ffn_multipliers`, file)
  let divisor = uint(kv, `${ARCH}.ffn_dim_divisor`, file, 0)
  if (!ffnMultipliers || divisor === 0) {
    divisor = ffnDims.every((d) => d % 256 === 0) ? 256 : ffnDims.reduce(gcd)
    ffnMultipliers = ffnDims.map((d) => d / modelDim)
    notes.push('ffn_multipliers derived from the GGUF feed_forward_length values (the file has no openelm.ffn_multipliers)')
  }
  const statedQkv = floats(kv, `${ARCH}.qkv_multipliers`, file)
  if (statedQkv && statedQkv.length !== 2) throw new FormatError('gguf.key_value', `${file}: ${ARCH}.qkv_multipliers must be 2 floats (got ${statedQkv.length})`, {path: file, field: `${ARCH}.qkv_multipliers`})
  const qkv = statedQkv ?? [0.5, 1.0]
  const config: OpenElmConfig = {
    num_transformer_layers: layers,
    model_dim: modelDim,
    head_dim: headDim,
    num_gqa_groups: uint(kv, `${ARCH}.num_gqa_groups`, file, qHeads[0]! / kvHeads[0]!),
    qkv_multipliers: [qkv[0]!, qkv[1]!],
    ffn_multipliers: ffnMultipliers,
    ffn_dim_divisor: divisor,
    ffn_with_glu: true,
    activation_fn_name: 'swish',
    normalization_layer_name: 'rms_norm',
    normalize_qk_projections: true,
    share_input_output_layers: true,
    rope_freq_constant: float(kv, `${ARCH}.rope.freq_base`, file, 10000),
    rope_max_length: uint(kv, `${ARCH}.rope_max_length`, file, 4096),
    max_context_length: uint(kv, `${ARCH}.context_length`, file),
    vocab_size: vocabRows,
    num_query_heads: qHeads,
    num_kv_heads: kvHeads,
    bos_token_id: uint(kv, 'tokenizer.ggml.bos_token_id', file, 1),
    eos_token_id: uint(kv, 'tokenizer.ggml.eos_token_id', file, 2),
    initializer_range: 0.02,
  }
  validateConfig(config, {heads: statedQkv !== undefined, source: file})
  layerDims(config).forEach((d, i) => {
    if (d.ffnDim !== ffnDims[i]) {
      throw new ConfigError('gguf.ffn', `${file}: layer ${i} feed_forward_length ${ffnDims[i]} does not match the multipliers (${d.ffnDim})`, {path: file, layer: i})
    }
  })
  return {config, notes}
}
