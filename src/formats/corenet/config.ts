/**
 * `--config FILE`: a HF `config.json`, or a CoreNet training YAML naming the model
 * (`model.language_modeling.general_gpt.model_name: OpenELM-270M`, plus `vocab_size` and
 * `max_context_length` when given).
 */
import {promises as fs} from 'node:fs'
import {ConfigError, IoError} from '../../errors.js'
import {type OpenElmConfig, parseHfConfig, showValue} from '../../model/config.js'
import {presetConfig, resolvePresetName} from '../../model/presets.js'
import {parseYaml, type YamlValue} from './yaml.js'

/** Where CoreNet keeps the OpenELM model options in a training YAML. */
const GPT_PATH = ['model', 'language_modeling', 'general_gpt'] as const

function child(value: YamlValue | undefined, key: string): YamlValue | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? value[key] : undefined
}

/** "OpenELM-270M", "openelm-1_1B", "3B" → a preset name. */
export function presetFromModelName(name: string): string {
  const bare = name.replace(/^openelm[-_]/i, '')
  try {
    return resolvePresetName(bare)
  } catch {
    throw new ConfigError('config.model_name', `model_name ${showValue(name)} is not an OpenELM model this tool knows (OpenELM-270M, -450M, -1_1B, -3B)`, {field: 'model_name'})
  }
}

export function configFromCorenetYaml(value: YamlValue, file = 'config'): OpenElmConfig {
  let gpt: YamlValue | undefined = value
  for (const key of GPT_PATH) gpt = child(gpt, key)
  const modelName = child(gpt, 'model_name')
  if (typeof modelName !== 'string') {
    throw new ConfigError('config.model_name', `${file}: no ${GPT_PATH.join('.')}.model_name (is this a CoreNet OpenELM training config?)`, {path: file})
  }
  const overrides: {vocab_size?: number; max_context_length?: number} = {}
  for (const field of ['vocab_size', 'max_context_length'] as const) {
    const v = child(gpt, field)
    if (v === undefined || v === null) continue
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new ConfigError('config.field', `${file}: ${GPT_PATH.join('.')}.${field} must be a positive integer`, {path: file, field})
    overrides[field] = v
  }
  return presetConfig(presetFromModelName(modelName), overrides)
}

/** Read `--config FILE` into a config (JSON by content, YAML otherwise). */
export async function loadConfigFile(file: string): Promise<OpenElmConfig> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (error) {
    throw new IoError('file.open', `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {path: file})
  }
  if (file.endsWith('.json') || text.trimStart().startsWith('{')) {
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (error) {
      throw new ConfigError('config.json', `${file} is not valid JSON: ${(error as Error).message}`, {path: file})
    }
    return parseHfConfig(json, file)
  }
  return configFromCorenetYaml(parseYaml(text), file)
}
