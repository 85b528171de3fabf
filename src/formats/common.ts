/** Pieces every folder-based format shares: tokenizer files, config resolution, dtype census. */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {parseHfConfig, type OpenElmConfig} from '../model/config.js'
import {inferConfig} from '../model/infer.js'
import {checkTensors} from '../model/tensors.js'
import {type FloatDType, isFloatDType} from '../tensor/dtype.js'
import {renamed, type TensorRecord} from '../tensor/record.js'
import {type Extras, type ReadOptions} from './types.js'
import {pathExists} from '../io/atomic.js'
import {readJsonFile} from '../io/file.js'
import {ConfigError} from '../errors.js'

export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json'] as const

export async function findTokenizerFiles(dir: string): Promise<string[]> {
  const found: string[] = []
  for (const name of TOKENIZER_FILES) {
    const p = path.join(dir, name)
    if (await pathExists(p)) found.push(p)
  }
  return found
}

export async function copyTokenizerFiles(files: readonly string[], dir: string): Promise<{path: string; bytes: number}[]> {
  const out: {path: string; bytes: number}[] = []
  for (const file of files) {
    const target = path.join(dir, path.basename(file))
    await fs.copyFile(file, target)
    out.push({path: target, bytes: (await fs.stat(target)).size})
  }
  return out
}

/** The float dtype most bytes are stored in. */
export function dominantDType(tensors: readonly TensorRecord[]): FloatDType {
  const bytes = new Map<FloatDType, number>()
  for (const t of tensors) if (isFloatDType(t.dtype)) bytes.set(t.dtype, (bytes.get(t.dtype) ?? 0) + t.byteLength)
  let best: FloatDType = 'F32'
  let most = -1
  for (const [dtype, n] of bytes) if (n > most) [best, most] = [dtype, n]
  return best
}

/**
 * Settle the config for a set of canonical tensors: the caller's, else a config.json, else
 * inferred from shapes. Then check names and shapes against it.
 */
export async function resolveConfig(
  tensors: readonly TensorRecord[],
  configPath: string | undefined,
  options: ReadOptions,
): Promise<{config: OpenElmConfig; tensors: TensorRecord[]; configSource: Extras['configSource']; notes: string[]}> {
  const notes: string[] = []
  let config: OpenElmConfig
  let configSource: Extras['configSource']
  if (options.config) {
    config = options.config
    configSource = 'flag'
  } else if (configPath && (await pathExists(configPath))) {
    config = parseHfConfig(await readJsonFile(configPath))
    configSource = 'file'
  } else {
    config = inferConfig(tensors)
    configSource = 'inferred'
    notes.push('no config.json: config inferred from tensor shapes')
  }
  const embedding = tensors.find((t) => t.name === 'token_embeddings.weight')
  if (embedding && embedding.shape[0] !== config.vocab_size && configSource !== 'inferred') {
    throw new ConfigError('config.vocab', `config vocab_size ${config.vocab_size} contradicts token_embeddings.weight with ${embedding.shape[0]} rows`, {field: 'vocab_size'})
  }
  return {config, tensors: checkTensors(config, tensors), configSource, notes}
}

/** Rename records with a name function (used by every format's name table). */
export function renameAll(records: readonly TensorRecord[], map: (name: string) => string): TensorRecord[] {
  return records.map((r) => renamed(r, map(r.name)))
}
