/**
 * The config.json of each MLX layout.
 * - mlx-lm and npz: the HF config (sorted keys) plus `quantization` and `quantization_config`
 *   `{bits, group_size, mode: "affine"}` when quantized (mlx-lm writes both).
 * - corenet-mlx: CoreNet's `{model_name, vocab_size, max_context_length[, quantization {group_size, bits}]}`;
 *   `model_name` names one of CoreNet's `gpt_configs` (OpenELM-270M, -450M, -1_1B, -3B).
 */
import {ConfigError, FormatError} from '../../errors.js'
import {type OpenElmConfig, qualifiedAutoMap, showValue, toHfConfigJson} from '../../model/config.js'
import {appleCodeRepo, matchPreset, presetConfig} from '../../model/presets.js'
import {type FloatDType} from '../../tensor/dtype.js'
import {type Quantization} from '../types.js'
import {type QuantSpec} from './quantize.js'
import {isMlxFpMode, MLX_FP_MODE_NAMES, MLX_FP_MODES} from '../../quant/mlx-fp.js'

/** CoreNet's `gpt_configs` keys ↔ our preset names. */
export const CORENET_MODEL_NAMES: Record<string, string> = {
  'OpenELM-270M': '270M',
  'OpenELM-450M': '450M',
  'OpenELM-1_1B': '1.1B',
  'OpenELM-3B': '3B',
}

export function quantizationJson(q: QuantSpec): Record<string, unknown> {
  return {bits: q.bits, group_size: q.groupSize, mode: q.mode ?? 'affine'}
}

export function hfStyleConfig(config: OpenElmConfig, dtype: FloatDType, q: QuantSpec | undefined, perModule: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const quantization = q ? {...quantizationJson(q), ...perModule} : undefined
  // No remote code in an MLX folder: auto_map names Apple's repo of the shape.
  return toHfConfigJson(config, dtype, {auto_map: qualifiedAutoMap(appleCodeRepo(config)), ...(quantization ? {quantization, quantization_config: quantization} : {}), ...extra})
}

/** CoreNet's config.json; `model_name` is undefined for shapes CoreNet does not know. */
export function corenetConfig(config: OpenElmConfig, q: QuantSpec | undefined): {json: Record<string, unknown>; known: boolean} {
  const preset = matchPreset(config)
  const modelName = Object.keys(CORENET_MODEL_NAMES).find((k) => CORENET_MODEL_NAMES[k] === preset)
  const json: Record<string, unknown> = {
    model_name: modelName ?? `OpenELM-${preset ?? 'custom'}`,
    vocab_size: config.vocab_size,
    max_context_length: config.max_context_length,
  }
  if (q) json.quantization = {group_size: q.groupSize, bits: q.bits}
  return {json, known: modelName !== undefined}
}

export function isCorenetConfig(json: Record<string, unknown>): boolean {
  return typeof json.model_name === 'string' && json.num_transformer_layers === undefined
}

/**
 * The config a CoreNet-style config.json names, or undefined when `model_name` is not one of
 * CoreNet's (the caller then infers it from the tensor shapes).
 */
export function configFromCorenet(json: Record<string, unknown>): OpenElmConfig | undefined {
  const preset = CORENET_MODEL_NAMES[json.model_name as string]
  if (!preset) return undefined
  const num = (field: string) => corenetInteger(json, field)
  return presetConfig(preset, {vocab_size: num('vocab_size') ?? 32000, max_context_length: num('max_context_length') ?? 2048})
}

/** A positive integer field of CoreNet's config.json, or undefined when absent. */
export function corenetInteger(json: Record<string, unknown>, field: string): number | undefined {
  const v = json[field]
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new ConfigError('config.field', `config field ${field} must be a positive integer (got ${showValue(v)})`, {field})
  return v
}

/** The `quantization` object of a config.json, checked. Per-module overrides are returned by path. */
export function parseQuantization(json: Record<string, unknown>, file: string): {default?: Quantization; perPath: Map<string, Quantization | false>} {
  const raw = json.quantization ?? json.quantization_config
  const perPath = new Map<string, Quantization | false>()
  if (raw === undefined || raw === null) return {perPath}
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('config.quantization', `${file}: quantization must be an object`, {field: 'quantization'})
  const q = raw as Record<string, unknown>
  const one = (v: Record<string, unknown>, where: string): Quantization => {
    const mode = v.mode ?? 'affine'
    if (mode !== 'affine' && !isMlxFpMode(mode)) throw new FormatError('mlx.quantization_mode', `${file}: ${where} uses quantization mode ${showValue(mode)}; supported: "affine", ${MLX_FP_MODE_NAMES.map((m) => `"${m}"`).join(', ')}`, {field: 'quantization'})
    const bits = v.bits
    const groupSize = v.group_size
    if (typeof bits !== 'number' || typeof groupSize !== 'number') throw new ConfigError('config.quantization', `${file}: ${where} needs numeric bits and group_size`, {field: 'quantization'})
    if (mode !== 'affine') {
      const fixed = MLX_FP_MODES[mode]
      if (bits !== fixed.bits || groupSize !== fixed.groupSize) throw new ConfigError('config.quantization', `${file}: ${where} says ${mode} with ${bits} bits in groups of ${groupSize}; MLX's ${mode} is ${fixed.bits} bits in groups of ${fixed.groupSize}`, {field: 'quantization'})
    }
    return {bits, groupSize, mode}
  }
  for (const [key, value] of Object.entries(q)) {
    if (['bits', 'group_size', 'mode', 'quant_method'].includes(key)) continue
    if (value === false) perPath.set(key, false)
    else if (typeof value === 'object' && value !== null) perPath.set(key, one(value as Record<string, unknown>, `quantization.${key}`))
  }
  return {default: q.bits === undefined && q.group_size === undefined ? undefined : one(q, 'quantization'), perPath}
}
