/**
 * Every format adapter, in detection order (more specific layouts first). Adding a format is one
 * adapter module plus one line here.
 */
import {promises as fs} from 'node:fs'
import {FormatError, IoError, UsageError} from '../errors.js'
import {corenetFormat} from './corenet/index.js'
import {hfFormat} from './hf/index.js'
import {onnxFormat} from './onnx/index.js'
import {type Checkpoint, type FormatAdapter, type FormatName, type ReadOptions} from './types.js'

export const ADAPTERS: FormatAdapter[] = [
  corenetFormat,
  hfFormat,
  onnxFormat,
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
  throw new FormatError('format.unrecognised', `${p} is not an OpenELM model in a layout this tool recognises (${ADAPTERS.map((a) => a.name).join(', ')}); pass --format to force one`, {path: p})
}

/** Open any supported checkpoint, optionally forcing its format. */
export async function openCheckpoint(p: string, options: ReadOptions & {format?: FormatName} = {}): Promise<Checkpoint> {
  const adapter = options.format ? adapterFor(options.format) : await detectFormat(p)
  return adapter.read(p, options)
}
