/**
 * Writing a CoreNet `.pt` the way `torch.save` does: the dict is pickled first (it names every
 * storage), then the ZIP is streamed record by record — data.pkl, byteorder, each storage in
 * torch's key order, version, serialization id — one chunk in memory at a time.
 */
import {createHash} from 'node:crypto'
import path from 'node:path'
import {atomicDir, atomicFile} from '../../io/atomic.js'
import {dtypeSize} from '../../tensor/dtype.js'
import {castRecord, CHUNK_BYTES, numel, readChunksInto, type TensorRecord} from '../../tensor/record.js'
import {type Checkpoint, type ProgressEvent, type WriteOptions, type WriteResult} from '../types.js'
import {FormatError} from '../../errors.js'
import {pickle} from './pickle.js'
import {type ArchiveSource, type CorenetRaw, SOURCE_TENSOR} from './read.js'
import {PyDict, type PyValue, type TorchStorage, TorchTensor} from './values.js'
import {ZipWriter} from './zip.js'

export const STATE_DICT_FILE = 'checkpoint_last.pt'
export const TRAINING_FILE = 'training_checkpoint_last.pt'
/** torch.save's archive format version (torch/csrc serialization: "version" record). */
const ARCHIVE_VERSION = '3\n'

interface RecordSource {
  record: TensorRecord
}

function isRaw(raw: unknown): raw is CorenetRaw {
  return typeof raw === 'object' && raw !== null && (raw as CorenetRaw).dict instanceof PyDict && typeof (raw as CorenetRaw).modelKey === 'string'
}

/** The model state dict as tensors over storages: reused from a `.pt` source where unchanged, else fresh. */
function modelStateDict(records: readonly TensorRecord[]): PyDict {
  const dict = new PyDict(true)
  for (const record of records) {
    const original = SOURCE_TENSOR.get(record)
    if (original) {
      dict.map.set(record.name, original)
      continue
    }
    const storage: TorchStorage = {key: '', dtype: record.dtype, numel: numel(record.shape), location: 'cpu', source: {record} satisfies RecordSource}
    dict.map.set(record.name, new TorchTensor(storage, 0, [...record.shape], TorchTensor.contiguousStride(record.shape), false, false))
  }
  return dict
}

export interface TorchSavePlan {
  pickle: Uint8Array
  /** Storages in the order torch writes them (sorted keys). */
  storages: {key: string; storage: TorchStorage}[]
}

/** Pickle `value`, numbering storages "0", "1", ... in order of first reference, as torch does. */
export function planTorchSave(value: PyValue): TorchSavePlan {
  const keys = new Map<TorchStorage, string>()
  const bytes = pickle(value, (s) => {
    let key = keys.get(s)
    if (key === undefined) {
      key = String(keys.size)
      keys.set(s, key)
    }
    return key
  })
  const storages = [...keys.entries()].map(([storage, key]) => ({key, storage})).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
  return {pickle: bytes, storages}
}

/** A storage's bytes in chunks; a record's are read into `buffer` (the writer is done with a chunk before it asks for the next). */
async function* storageChunks(storage: TorchStorage, buffer: Uint8Array): AsyncGenerator<Uint8Array> {
  const bytes = storage.numel * dtypeSize(storage.dtype)
  const src = storage.source as ArchiveSource | RecordSource | undefined
  if (src && 'record' in src) {
    yield* readChunksInto(src.record, CHUNK_BYTES, buffer)
  } else if (src && 'zip' in src) {
    for (let start = 0; start < bytes; start += CHUNK_BYTES) yield await src.zip.read(src.entry, start, Math.min(bytes, start + CHUNK_BYTES))
  } else {
    throw new FormatError('corenet.storage_source', `storage ${storage.key} has no data source`)
  }
}

/** Stream a planned torch.save archive into `file`. */
export async function* writeTorchArchive(file: string, archive: string, plan: TorchSavePlan): AsyncGenerator<ProgressEvent, number> {
  const totalBytes = plan.storages.reduce((a, s) => a + s.storage.numel * dtypeSize(s.storage.dtype), 0)
  yield {type: 'start', total: plan.storages.length, totalBytes, label: 'writing .pt'}
  const zip = await ZipWriter.create(file)
  try {
    await zip.record(`${archive}/data.pkl`, plan.pickle)
    await zip.record(`${archive}/byteorder`, Buffer.from('little'))
    let bytesDone = 0
    const buffer = new Uint8Array(CHUNK_BYTES)
    const id = createHash('sha256').update(plan.pickle)
    for (const [index, {key, storage}] of plan.storages.entries()) {
      const size = storage.numel * dtypeSize(storage.dtype)
      await zip.begin(`${archive}/data/${key}`, size)
      let written = 0
      for await (const chunk of storageChunks(storage, buffer)) {
        await zip.write(chunk)
        written += chunk.byteLength
        yield {type: 'bytes', bytesDone: bytesDone + written, totalBytes}
      }
      await zip.end()
      id.update(`${key}:${size};`)
      bytesDone += size
      yield {type: 'tensor', name: `data/${key}`, index: index + 1, total: plan.storages.length, bytesDone, totalBytes}
    }
    await zip.record(`${archive}/version`, Buffer.from(ARCHIVE_VERSION))
    // torch fills this with a random id; a digest keeps our output deterministic.
    const serial = BigInt(`0x${id.digest('hex').slice(0, 16)}`).toString().padStart(20, '0')
    await zip.record(`${archive}/.data/serialization_id`, Buffer.from(serial))
    return await zip.finish()
  } catch (error) {
    await zip.abort()
    throw error
  }
}

export async function* writeCorenet(source: Checkpoint, out: string, options: WriteOptions): AsyncGenerator<ProgressEvent, WriteResult> {
  const dtype = options.dtype ?? source.extras.dtype
  const records = source.tensors.map((t) => castRecord(t, dtype))
  const notes: string[] = []
  const raw = source.extras.training?.raw
  const training = options.trainingCheckpoint === true && isRaw(raw)
  if (options.trainingCheckpoint && !training) notes.push('the source has no training state: wrote a bare state dict')
  const model = modelStateDict(records)
  let value: PyDict = model
  if (training) {
    // nn.Module.state_dict()'s `_metadata` (per-module versions) goes along with the weights.
    const original = raw.dict.get(raw.modelKey)
    if (original instanceof PyDict) model.state = original.state
    if (records.some((r) => !SOURCE_TENSOR.has(r))) notes.push('the model weights were converted (dtype or vocabulary); optimizer, EMA and scaler state are kept as the source saved them')
    value = new PyDict(raw.dict.ordered)
    for (const [k, v] of raw.dict.map) value.map.set(k, k === raw.modelKey ? model : v)
    value.state = raw.dict.state
  }
  const plan = planTorchSave(value)
  const single = /\.(pt|pth)$/.test(out)
  const fileName = single ? path.basename(out) : training ? TRAINING_FILE : STATE_DICT_FILE
  const archive = fileName.replace(/\.[^.]*$/, '') || 'archive'
  if (single) {
    return yield* atomicFile(out, options.force ?? false, async function* (tmp) {
      const bytes = yield* writeTorchArchive(tmp, archive, plan)
      return {path: out, files: [{path: out, bytes}], dtype, notes}
    })
  }
  return yield* atomicDir(out, options.force ?? false, async function* (dir) {
    const bytes = yield* writeTorchArchive(path.join(dir, fileName), archive, plan)
    return {path: out, files: [{path: path.join(out, fileName), bytes}], dtype, notes}
  })
}
