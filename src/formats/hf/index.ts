/** The Hugging Face layout: config.json + model.safetensors (or shards + index), `transformer.` keys. */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {MappingError, shown} from '../../errors.js'
import {atomicDir, pathExists} from '../../io/atomic.js'
import {writeJsonFile} from '../../io/file.js'
import {generationConfigJson, toHfConfigJson} from '../../model/config.js'
import {originConfigKeys} from '../../model/origin.js'
import {castRecord} from '../../tensor/record.js'
import {copyTokenizerFiles, readerCheckpoint, remoteCodeFor, renameAll, resolveConfig} from '../common.js'
import {tokenizerFilesFor, writeTokenizerFiles} from '../tokenizer.js'
import {openSafetensors} from '../safetensors/read.js'
import {DEFAULT_SHARD_BYTES, INDEX_FILE, openShardedSafetensors, SINGLE_FILE, writeShardedSafetensors} from '../safetensors/shards.js'
import {type Checkpoint, type FormatAdapter, type ProgressEvent, type ReadOptions, type WriteOptions, type WriteResult} from '../types.js'
import {fromHfName, HF_PREFIX, toHfName} from './names.js'

async function isDir(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory()
  } catch {
    return false
  }
}

export async function readHf(p: string, options: ReadOptions = {}): Promise<Checkpoint> {
  const dir = (await isDir(p)) ? p : path.dirname(p)
  const shards = (await isDir(p)) ? await openShardedSafetensors(p) : await singleFile(p)
  try {
    assertOpenElmNames(p, shards.tensors.map((t) => t.name))
    const canonical = renameAll(shards.tensors, fromHfName)
    const resolved = await resolveConfig(canonical, path.join(dir, 'config.json'), options)
    const files = shards.files.map((f) => ({path: f.path, bytes: f.size}))
    return await readerCheckpoint('hf', p, resolved, {
      tokenizerDir: dir,
      notes: resolved.notes,
      info: {layout: shards.indexUsed ? 'sharded safetensors' : 'single safetensors', files, metadata: shards.files[0]?.metadata ?? {}},
    }, shards.close)
  } catch (error) {
    await shards.close()
    throw error
  }
}

/** Names of other architectures' HF checkpoints, recognised only to say what the file is. */
const FOREIGN_PREFIXES = ['model.', 'lm_head.', 'gpt_neox.', 'transformer.h.', 'transformer.wte.']

/** A Llama-style (or other) safetensors gets one clear line instead of a complaint about its first tensor. */
function assertOpenElmNames(p: string, names: readonly string[]): void {
  const foreign = names.find((n) => FOREIGN_PREFIXES.some((prefix) => n.startsWith(prefix)))
  if (foreign !== undefined && !names.some((n) => n.startsWith(`${HF_PREFIX}token_embeddings.`))) {
    throw new MappingError('hf.not_openelm', `${p} is not an OpenELM checkpoint: it has tensor ${shown(foreign)}, OpenELM's start with "${HF_PREFIX}layers." / "${HF_PREFIX}token_embeddings."`, {tensor: foreign, path: p})
  }
}

async function singleFile(p: string) {
  const file = await openSafetensors(p)
  return {files: [file], tensors: file.tensors, indexUsed: false, close: () => file.close()}
}

export async function* writeHf(source: Checkpoint, out: string, options: WriteOptions): AsyncGenerator<ProgressEvent, WriteResult> {
  const dtype = options.dtype ?? source.extras.dtype
  const records = renameAll(source.tensors.map((t) => castRecord(t, dtype)), toHfName)
  return yield* atomicDir(out, options.force ?? false, async function* (dir) {
    const files = yield* writeShardedSafetensors(dir, records, {
      shardSize: options.shardSize ?? DEFAULT_SHARD_BYTES,
      metadata: {format: 'pt'},
      alwaysIndex: false,
      indexMetadata: (totalSize) => ({total_size: totalSize}),
    })
    const config = path.join(dir, 'config.json')
    const code = remoteCodeFor(source, true)
    files.push({path: config, bytes: await writeJsonFile(config, toHfConfigJson(source.config, dtype, {auto_map: code.autoMap, ...originConfigKeys(options.origin)}))})
    files.push(...(await copyTokenizerFiles(code.files, dir)))
    const gen = path.join(dir, 'generation_config.json')
    files.push({path: gen, bytes: await writeJsonFile(gen, generationConfigJson(source.config))})
    const tokenizer = await tokenizerFilesFor('hf-files', source, options)
    files.push(...(await writeTokenizerFiles(dir, tokenizer.files)))
    return {path: out, files: files.map((f) => ({path: path.join(out, path.relative(dir, f.path)), bytes: f.bytes})), dtype, notes: tokenizer.notes}
  })
}

export const hfFormat: FormatAdapter = {
  name: 'hf',
  description: 'Hugging Face layout: config.json + model.safetensors (or shards), keys prefixed "transformer."',
  async detect(p) {
    if (p.endsWith('.safetensors')) return pathExists(p)
    if (!(await isDir(p))) return false
    if (!(await pathExists(path.join(p, SINGLE_FILE))) && !(await pathExists(path.join(p, INDEX_FILE)))) return false
    return true
  },
  read: readHf,
  write: writeHf,
  tokenizerKind: () => 'hf-files',
}
