/** Sharded safetensors folders (`model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`). */
import path from 'node:path'
import {FormatError, quote, shown} from '../../errors.js'
import {readJsonFile, writeJsonFile} from '../../io/file.js'
import {type TensorRecord} from '../../tensor/record.js'
import {type ProgressEvent} from '../types.js'
import {openSafetensors, type SafetensorsFile} from './read.js'
import {writeSafetensors} from './write.js'

export const INDEX_FILE = 'model.safetensors.index.json'
export const SINGLE_FILE = 'model.safetensors'
/** Hugging Face's default `max_shard_size` ("5GB", decimal). */
export const DEFAULT_SHARD_BYTES = 5_000_000_000

export function shardName(i: number, n: number): string {
  return `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`
}

/** Greedy split of records (in the given order) into shards of at most `maxBytes` (a lone bigger tensor gets its own). */
export function planShards(records: readonly TensorRecord[], maxBytes: number): TensorRecord[][] {
  const shards: TensorRecord[][] = []
  let current: TensorRecord[] = []
  let size = 0
  for (const r of records) {
    if (current.length > 0 && size + r.byteLength > maxBytes) {
      shards.push(current)
      current = []
      size = 0
    }
    current.push(r)
    size += r.byteLength
  }
  if (current.length > 0 || shards.length === 0) shards.push(current)
  return shards
}

export interface ShardedWriteOptions {
  shardSize: number
  metadata: Record<string, string>
  /** Write the index even for one shard (mlx-lm does). */
  alwaysIndex: boolean
  indexMetadata: (totalSize: number) => Record<string, unknown>
  /** Each shard's tensors computed in the given order (writeSafetensors' `inGivenOrder`). */
  inGivenOrder?: boolean
}

export async function* writeShardedSafetensors(dir: string, records: readonly TensorRecord[], options: ShardedWriteOptions): AsyncGenerator<ProgressEvent, {path: string; bytes: number}[]> {
  const shards = planShards(records, options.shardSize)
  const totalBytes = records.reduce((a, r) => a + r.byteLength, 0)
  yield {type: 'start', total: records.length, totalBytes, label: 'writing safetensors'}
  const files: {path: string; bytes: number}[] = []
  const weightMap: Record<string, string> = {}
  const progress = {index: 0, total: records.length, bytesDone: 0, totalBytes}
  for (const [i, shard] of shards.entries()) {
    const name = shards.length === 1 ? SINGLE_FILE : shardName(i, shards.length)
    const file = path.join(dir, name)
    const bytes = yield* writeSafetensors(file, shard, options.metadata, {...progress}, {inGivenOrder: options.inGivenOrder})
    progress.index += shard.length
    progress.bytesDone += shard.reduce((a, r) => a + r.byteLength, 0)
    files.push({path: file, bytes})
    for (const r of shard) weightMap[r.name] = name
  }
  if (shards.length > 1 || options.alwaysIndex) {
    const sorted = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]]))
    const index = {metadata: options.indexMetadata(totalBytes), weight_map: sorted}
    const file = path.join(dir, INDEX_FILE)
    files.push({path: file, bytes: await writeJsonFile(file, index)})
  }
  return files
}

export interface OpenedShards {
  files: SafetensorsFile[]
  /** Every tensor with its file's name. */
  tensors: TensorRecord[]
  indexUsed: boolean
  close(): Promise<void>
}

/** Open `model.safetensors`, or the shards named by the index (checked against the shard headers). */
export async function openShardedSafetensors(dir: string, singleName = SINGLE_FILE): Promise<OpenedShards> {
  const indexPath = path.join(dir, INDEX_FILE)
  const files: SafetensorsFile[] = []
  const close = async () => {
    await Promise.all(files.map((f) => f.close()))
  }
  try {
    let indexJson: unknown
    try {
      indexJson = await readJsonFile(indexPath)
    } catch (error) {
      if ((error as {code?: string}).code !== 'file.open') throw error
    }
    if (indexJson === undefined) {
      files.push(await openSafetensors(path.join(dir, singleName)))
      return {files, tensors: files[0]!.tensors, indexUsed: false, close}
    }
    const weightMap = (indexJson as {weight_map?: unknown}).weight_map
    if (typeof weightMap !== 'object' || weightMap === null || !Object.values(weightMap).every((v) => typeof v === 'string')) {
      throw new FormatError('index.invalid', `${indexPath}: weight_map must map tensor names to file names`)
    }
    const map = weightMap as Record<string, string>
    const shardNames = [...new Set(Object.values(map))].sort()
    for (const name of shardNames) {
      if (name.includes('/') || name.includes('\\') || name.startsWith('.')) throw new FormatError('index.invalid', `${indexPath}: shard name ${quote(name)} is not a plain file name`)
      files.push(await openSafetensors(path.join(dir, name)))
    }
    const tensors: TensorRecord[] = []
    for (const [i, file] of files.entries()) {
      for (const t of file.tensors) {
        if (map[t.name] !== shardNames[i]) {
          throw new FormatError('index.mismatch', `${indexPath}: tensor ${shown(t.name)} is in ${shardNames[i]} but the index says ${map[t.name] === undefined ? 'nothing' : shown(String(map[t.name]))}`, {tensor: t.name})
        }
        tensors.push(t)
      }
    }
    const present = new Set(tensors.map((t) => t.name))
    for (const name of Object.keys(map)) {
      if (!present.has(name)) throw new FormatError('index.mismatch', `${indexPath}: tensor ${shown(name)} is listed in the index but missing from ${shown(String(map[name]))}`, {tensor: name})
    }
    return {files, tensors, indexUsed: true, close}
  } catch (error) {
    await close()
    throw error
  }
}
