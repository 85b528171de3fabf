/** The released OpenELM shapes and small test shapes. */
import {UsageError} from '../errors.js'
import {type ConfigShape, deriveConfig, type OpenElmConfig} from './config.js'

export const PRESETS: Record<string, ConfigShape> = {
  '270M': {num_transformer_layers: 16, model_dim: 1280, head_dim: 64, vocab_size: 32000},
  '450M': {num_transformer_layers: 20, model_dim: 1536, head_dim: 64, vocab_size: 32000},
  '1.1B': {num_transformer_layers: 28, model_dim: 2048, head_dim: 64, vocab_size: 32000},
  '3B': {num_transformer_layers: 36, model_dim: 3072, head_dim: 128, vocab_size: 32000},
  // Layers really differ (4/6/6/8 query heads, FFN 32..256), small enough to commit as f32.
  tiny: {num_transformer_layers: 4, model_dim: 64, head_dim: 8, vocab_size: 128, num_gqa_groups: 2, ffn_dim_divisor: 16, max_context_length: 128},
  // Two layers, for the fastest unit tests.
  micro: {num_transformer_layers: 2, model_dim: 32, head_dim: 8, vocab_size: 64, num_gqa_groups: 2, ffn_dim_divisor: 16, max_context_length: 64},
}

const ALIASES: Record<string, string> = {'1_1B': '1.1B', '270m': '270M', '450m': '450M', '1.1b': '1.1B', '1_1b': '1.1B', '3b': '3B'}

export const PRESET_NAMES = [...Object.keys(PRESETS), ...Object.keys(ALIASES).filter((a) => a === '1_1B')]

export function resolvePresetName(name: string): string {
  const canonical = PRESETS[name] ? name : ALIASES[name]
  if (!canonical) throw new UsageError('preset.unknown', `unknown preset "${name}" (expected one of ${Object.keys(PRESETS).join(', ')})`)
  return canonical
}

export function presetConfig(name: string, overrides: Partial<ConfigShape> = {}): OpenElmConfig {
  return deriveConfig({...PRESETS[resolvePresetName(name)]!, ...overrides})
}

/** The HF-equivalent Apple repo of a preset, used as `base_model` in model cards. */
export const APPLE_REPOS: Record<string, string> = {
  '270M': 'apple/OpenELM-270M',
  '450M': 'apple/OpenELM-450M',
  '1.1B': 'apple/OpenELM-1_1B',
  '3B': 'apple/OpenELM-3B',
}

/**
 * The Apple repo whose remote code (configuration_openelm.py, modeling_openelm.py) a folder of
 * this shape points at: the matching release, else 270M's (the same two files serve every size).
 */
export function appleCodeRepo(config: OpenElmConfig): string {
  return APPLE_REPOS[matchPreset(config) ?? ''] ?? APPLE_REPOS['270M']!
}

/** The preset whose architecture equals `config` (vocab ignored), if any. */
export function matchPreset(config: OpenElmConfig): string | undefined {
  for (const name of ['270M', '450M', '1.1B', '3B', 'tiny', 'micro']) {
    const p = presetConfig(name, {vocab_size: config.vocab_size})
    if (
      p.num_transformer_layers === config.num_transformer_layers && p.model_dim === config.model_dim && p.head_dim === config.head_dim &&
      p.num_query_heads.every((q, i) => q === config.num_query_heads[i]) &&
      p.num_kv_heads.every((q, i) => q === config.num_kv_heads[i]) &&
      p.ffn_multipliers.every((m, i) => m === config.ffn_multipliers[i])
    ) return name
  }
  return undefined
}
