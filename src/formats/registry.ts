/**
 * Every format adapter, in detection order (more specific layouts first). Adding a format is one
 * adapter module plus one line here.
 */
import {promises as fs} from 'node:fs'
import {FormatError, IoError, UsageError} from '../errors.js'
import {applyPeftOptions} from './corenet/adapter.js'
import {corenetFormat} from './corenet/index.js'
import {ggufFormat} from './gguf/index.js'
import {hfFormat} from './hf/index.js'
import {mlxFormat} from './mlx/index.js'
import {onnxFormat} from './onnx/index.js'
import {type Checkpoint, type FormatAdapter, type FormatName, type ReadOptions} from './types.js'

export const ADAPTERS: FormatAdapter[] = [
  corenetFormat,
  mlxFormat, // before hf: an mlx-lm folder is also a valid HF-named safetensors folder
  hfFormat,
  onnxFormat,
  ggufFormat,
]

export function adapterFor(name: string): FormatAdapter {
  const adapter = ADAPTERS.find((a) => a.name === name)
  if (!adapter) {
    throw new UsageError('format.unknown', `unknown format "${name}" (expected one of ${ADAPTERS.map((a) => a.name).join(', ')})`)
  }
  return adapter
}

export async function detectFormat(p: string): Promise<FormatAdapter> {
  try {
    await fs.stat(p)
  } catch {
    throw new IoError('path.missing', `${p} does not exist: check the path (a model folder, or a .pt/.safetensors/.gguf file)`, {path: p})
  }
  for (const adapter of ADAPTERS) if (await adapter.detect(p)) return adapter
  const entries = await fs.readdir(p).catch(() => undefined)
  if (entries && entries.length === 0) throw new FormatError('format.empty', `${p} is an empty folder: there is no model in it to read (expected a model folder, or a .pt/.safetensors/.gguf file)`, {path: p})
  throw new FormatError('format.unrecognised', `${p} is not an OpenELM model in a layout this tool recognises (${ADAPTERS.map((a) => a.name).join(', ')}); pass --format to force one`, {path: p})
}

/** Open any supported checkpoint, optionally forcing its format. */
export async function openCheckpoint(p: string, options: ReadOptions & {format?: FormatName} = {}): Promise<Checkpoint> {
  const adapter = options.format ? adapterFor(options.format) : await detectFormat(p)
  // Only CoreNet training checkpoints hold EMA weights: elsewhere --ema would be ignored.
  if (options.ema && adapter.name !== 'corenet') throw new UsageError('flag.ema', `--ema applies to CoreNet training checkpoints; ${p} is ${adapter.name}`, {format: adapter.name})
  const checkpoint = await adapter.read(p, options)
  // LoRA/DoRA: adapters saved apart (--adapter) are merged here, whatever the base's format.
  return options.peft ? applyPeftOptions(checkpoint, options) : checkpoint
}
