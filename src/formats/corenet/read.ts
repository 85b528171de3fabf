/**
 * Reading a CoreNet `.pt` (torch.save ZIP): the restricted unpickler yields the dict; tensors are
 * lazy records over the archive's storage records, views (offset/stride) included.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {FormatError, quote, UsageError} from '../../errors.js'
import {type OpenElmConfig} from '../../model/config.js'
import {CORENET_VOCAB, HF_VOCAB} from '../../model/vocab.js'
import {GLOBAL_TENSORS} from '../../model/tensors.js'
import {dtypeSize} from '../../tensor/dtype.js'
import {numel, type TensorRecord, withReadInto} from '../../tensor/record.js'
import {readerCheckpoint, resolveConfig} from '../common.js'
import {type Checkpoint, type PeftInfo, type ReadOptions, type TrainingState} from '../types.js'
import {baseOnlyModules, hasPeftNames, mergeAdapters, splitPeft} from './peft.js'
import {children, unpickle} from './unpickle.js'
import {PyDict, type PyValue, type TorchStorage, TorchTensor} from './values.js'
import {RECORD_ALIGNMENT, type ZipEntry, ZipReader} from './zip.js'

/** Keys of a CoreNet training checkpoint (corenet/utils/checkpoint_utils.py). */
export const TRAINING_KEYS = {
  model: 'model_state_dict',
  optimizer: 'optim_state_dict',
  ema: 'ema_state_dict',
  scaler: 'gradient_scaler_state_dict',
  iterations: 'iterations',
  epoch: 'epoch',
  bestMetric: 'best_metric',
} as const

/** DDP/FSDP wrappers prefix keys with this; CoreNet unwraps before saving, but stray files exist. */
const MODULE_PREFIX = 'module.'
/** A HF-layout state dict saved with torch.save (`pytorch_model.bin`) prefixes keys with this. */
const HF_PREFIX = 'transformer.'

function stripPrefixes(name: string): string {
  const unwrapped = name.startsWith(MODULE_PREFIX) ? name.slice(MODULE_PREFIX.length) : name
  return unwrapped.startsWith(HF_PREFIX) ? unwrapped.slice(HF_PREFIX.length) : unwrapped
}

/** File names a CoreNet run writes into its results folder, most useful first. */
export const CHECKPOINT_FILES = ['training_checkpoint_last.pt', 'checkpoint_last.pt', 'pytorch_model.bin'] as const

/** A HF folder's torch.save weights: its config.json sits beside it. */
const HF_TORCH_FILE = 'pytorch_model.bin'

/** Where a storage's bytes are: a record of an archive still open. */
export interface ArchiveSource {
  zip: ZipReader
  entry: ZipEntry
}

/** The tensor (storage, offset, stride) a record was read from, so a `.pt` writer can keep sharing. */
export const SOURCE_TENSOR = new WeakMap<TensorRecord, TorchTensor>()

/** What a training checkpoint carries besides the model, kept for `.pt → .pt`. */
export interface CorenetRaw {
  /** The whole unpickled top-level dict. */
  dict: PyDict
  /** The key whose state dict became the checkpoint's tensors. */
  modelKey: string
}

export interface OpenedArchive {
  zip: ZipReader
  prefix: string
  value: PyValue
  storages: Map<string, TorchStorage>
  protocol: number
  opcodes: Set<string>
}

/** Open a torch ZIP archive and unpickle its data.pkl; storages get their archive records attached. */
export async function openTorchArchive(p: string): Promise<OpenedArchive> {
  const head = await fs.open(p, 'r').then(async (h) => {
    try {
      const b = Buffer.alloc(2)
      await h.read(b, 0, 2, 0)
      return b
    } finally {
      await h.close()
    }
  }, () => undefined)
  // torch.save(..., _use_new_zipfile_serialization=False) writes bare pickles (magic number first).
  if (head && head[0] === 0x80 && head[1]! <= 5) {
    throw new FormatError('corenet.legacy_format', `${p} uses torch's legacy (pre-1.6, non-ZIP) serialization, which is not supported: re-save it with torch.save defaults`, {path: p})
  }
  const zip = await ZipReader.open(p)
  try {
    const pkls = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n))
    if (pkls.length !== 1) {
      throw new FormatError('corenet.no_data_pkl', `${p}: ${pkls.length === 0 ? 'no <archive>/data.pkl record: not a torch.save file' : `${pkls.length} data.pkl records`}`, {path: p})
    }
    const prefix = pkls[0]!.slice(0, -'data.pkl'.length)
    const {value, storages, protocol, opcodes} = unpickle(await zip.readChecked(zip.entry(pkls[0]!)), `${p}: ${pkls[0]}`)
    for (const s of storages.values()) {
      const name = `${prefix}data/${s.key}`
      const entry = zip.entries.get(name)
      if (!entry) throw new FormatError('corenet.missing_storage', `${p}: storage ${quote(s.key)} has no record ${name} in the archive`, {path: p, storage: s.key})
      const want = s.numel * dtypeSize(s.dtype)
      // torch.save writes each storage record at exactly numel × itemsize bytes: any other size
      // means the storage class or numel was altered (e.g. FloatStorage relabelled HalfStorage).
      if (entry.size !== want) {
        throw new FormatError('corenet.storage_size', `${p}: storage ${quote(s.key)} record has ${entry.size} bytes, but its ${s.numel} ${s.dtype} elements take exactly ${want}`, {path: p, storage: s.key})
      }
      // torch.save aligns every record's data to 64 bytes (PyTorchStreamWriter's kFieldAlignment);
      // an unaligned start means a local header's lengths were altered and the bytes are shifted.
      if (entry.dataOffset % RECORD_ALIGNMENT !== 0) {
        throw new FormatError('corenet.storage_alignment', `${p}: storage ${quote(s.key)} data starts at offset ${entry.dataOffset}, not on the ${RECORD_ALIGNMENT}-byte boundary torch.save writes (a damaged local header?)`, {path: p, storage: s.key})
      }
      s.source = {zip, entry} satisfies ArchiveSource
    }
    return {zip, prefix, value, storages, protocol, opcodes}
  } catch (error) {
    await zip.close()
    throw error
  }
}

/** A lazy record over a tensor view; non-contiguous views gather their elements on read. */
export function tensorRecord(name: string, t: TorchTensor): TensorRecord {
  const {zip, entry} = t.storage.source as ArchiveSource
  const size = dtypeSize(t.storage.dtype)
  const byteLength = numel(t.shape) * size
  let record: TensorRecord
  if (t.contiguous) {
    const base = t.offset * size
    record = {
      name, dtype: t.storage.dtype, shape: [...t.shape], byteLength,
      read: (start = 0, end = byteLength) => zip.read(entry, base + start, base + end),
    }
    // The writers' no-allocation path: positional reads straight into their (reused) buffers.
    withReadInto(record, async (target, start) => {
      if (start < 0 || start + target.byteLength > byteLength) {
        throw new RangeError(`${name}: bytes ${start}..${start + target.byteLength} are outside the tensor (${byteLength} bytes)`)
      }
      await zip.readInto(entry, target, base + start)
    })
  } else {
    // The span of storage the view touches; cached while the tensor is being read, then dropped.
    let lo = t.offset
    let hi = t.offset
    t.shape.forEach((d, i) => {
      if (d > 0) hi += (d - 1) * t.stride[i]!
    })
    let span: Uint8Array | undefined
    record = {
      name, dtype: t.storage.dtype, shape: [...t.shape], byteLength,
      async read(start = 0, end = byteLength) {
        if (byteLength === 0) return new Uint8Array(0)
        span ??= await zip.read(entry, lo * size, (hi + 1) * size)
        const first = Math.floor(start / size)
        const last = Math.ceil(end / size)
        const out = new Uint8Array((last - first) * size)
        gather(span, t.shape, t.stride, t.offset - lo, size, first, last, out)
        if (end === byteLength) span = undefined
        const skip = start - first * size
        return out.subarray(skip, skip + (end - start))
      },
    }
  }
  SOURCE_TENSOR.set(record, t)
  return record
}

/** Copy elements [first, last) (row-major order of `shape`) of a strided view into `out`. */
function gather(span: Uint8Array, shape: readonly number[], stride: readonly number[], base: number, size: number, first: number, last: number, out: Uint8Array): void {
  // Element copies through typed arrays of the element's width (8-byte elements as two words, so
  // NaN payloads are never touched by a float conversion).
  const words = size === 8 ? 2 : 1
  const unit = size === 8 ? 4 : size
  const aligned = span.byteOffset % unit === 0 ? span : span.slice()
  const make = (b: Uint8Array) => unit === 4 ? new Uint32Array(b.buffer, b.byteOffset, b.byteLength / 4) : unit === 2 ? new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2) : b
  const src = make(aligned)
  const dst = make(out)
  const rank = shape.length
  const index = new Array<number>(rank).fill(0)
  let rem = first
  for (let i = rank - 1; i >= 0; i--) {
    index[i] = rem % shape[i]!
    rem = Math.floor(rem / shape[i]!)
  }
  let at = base
  for (let i = 0; i < rank; i++) at += index[i]! * stride[i]!
  const inner = rank - 1
  const innerStride = rank ? stride[inner]! : 0
  const innerSize = rank ? shape[inner]! : 1
  for (let e = first, o = 0; e < last; e++) {
    if (words === 1) dst[o++] = src[at]!
    else {
      dst[o++] = src[at * 2]!
      dst[o++] = src[at * 2 + 1]!
    }
    if (rank === 0) break
    // Advance the multi-index; the innermost dimension is the hot path.
    if (++index[inner]! < innerSize) {
      at += innerStride
      continue
    }
    at -= (innerSize - 1) * innerStride
    index[inner] = 0
    for (let i = inner - 1; i >= 0; i--) {
      index[i]!++
      at += stride[i]!
      if (index[i]! < shape[i]!) break
      at -= index[i]! * stride[i]!
      index[i] = 0
    }
  }
}

function asNumber(v: PyValue | undefined): number | undefined {
  if (typeof v === 'bigint') return Number(v)
  if (typeof v === 'number') return v
  return undefined
}

/** Sum of tensor bytes anywhere inside a value (optimizer state size). */
export function tensorBytes(v: PyValue): number {
  let total = 0
  const seen = new Set<object>()
  const stack: PyValue[] = [v]
  while (stack.length) {
    const x = stack.pop()!
    if (x instanceof TorchTensor) total += numel(x.shape) * dtypeSize(x.storage.dtype)
    else if (x !== null && typeof x === 'object' && !(x instanceof Uint8Array) && !seen.has(x)) {
      seen.add(x)
      stack.push(...children(x))
    }
  }
  return total
}

export function stateDictRecords(p: string, key: string, dict: PyValue, notes: string[]): TensorRecord[] {
  if (!(dict instanceof PyDict)) throw new FormatError('corenet.state_dict', `${p}: ${key} is not a dict of tensors`, {path: p})
  const names = [...dict.map.keys()]
  for (const prefix of [MODULE_PREFIX, HF_PREFIX]) {
    const prefixed = names.filter((n) => typeof n === 'string' && (n.startsWith(prefix) || n.startsWith(MODULE_PREFIX + prefix))).length
    if (prefixed > 0) notes.push(`stripped the "${prefix}" prefix from ${prefixed} tensor names`)
  }
  const records: TensorRecord[] = []
  for (const [k, v] of dict.map) {
    if (typeof k !== 'string') throw new FormatError('corenet.state_dict', `${p}: ${key} has a non-string key ${String(k)}`, {path: p})
    if (!(v instanceof TorchTensor)) throw new FormatError('corenet.state_dict', `${p}: ${key}[${quote(k)}] is not a tensor`, {path: p, tensor: k})
    records.push(tensorRecord(stripPrefixes(k), v))
  }
  return records
}

async function checkpointFile(p: string): Promise<string> {
  const stat = await fs.stat(p)
  if (!stat.isDirectory()) return p
  for (const name of CHECKPOINT_FILES) {
    const candidate = path.join(p, name)
    if (await fs.stat(candidate).then((s) => s.isFile(), () => false)) return candidate
  }
  throw new FormatError('corenet.no_checkpoint', `${p}: no ${CHECKPOINT_FILES.join(' or ')} in this folder`, {path: p})
}

/** A config given by flag may say 32000 rows where CoreNet keeps its 32128 padded rows. */
function fitConfigVocab(config: OpenElmConfig | undefined, records: readonly TensorRecord[], notes: string[]): OpenElmConfig | undefined {
  const rows = records.find((r) => r.name === GLOBAL_TENSORS.token_embeddings)?.shape[0]
  if (!config || rows === undefined || rows === config.vocab_size) return config
  if (config.vocab_size === HF_VOCAB && rows === CORENET_VOCAB) {
    notes.push(`the embedding has CoreNet's ${CORENET_VOCAB} padded rows; the given config's vocab_size ${HF_VOCAB} refers to the real tokens`)
    return {...config, vocab_size: rows}
  }
  return config
}

export async function readCorenet(p: string, options: ReadOptions = {}): Promise<Checkpoint> {
  const file = await checkpointFile(p)
  const archive = await openTorchArchive(file)
  try {
    const top = archive.value
    if (!(top instanceof PyDict)) throw new FormatError('corenet.not_dict', `${file}: the checkpoint is not a dict`, {path: file})
    const notes: string[] = []
    const isTraining = top.map.has(TRAINING_KEYS.model)
    let modelKey: string
    if (options.ema) {
      const ema = top.get(TRAINING_KEYS.ema)
      if (!isTraining || ema === undefined || ema === null) throw new UsageError('corenet.no_ema', `${file} has no ${TRAINING_KEYS.ema} (--ema needs a training checkpoint saved with EMA)`, {path: file})
      modelKey = TRAINING_KEYS.ema
      notes.push(`reading the EMA weights (${TRAINING_KEYS.ema})`)
    } else {
      modelKey = isTraining ? TRAINING_KEYS.model : ''
    }
    const stateDict = isTraining ? top.get(modelKey)! : top
    let records = stateDictRecords(file, modelKey || 'the state dict', stateDict, notes)
    let peft: PeftInfo | undefined
    if (hasPeftNames(records)) {
      // A CoreNet LoRA/DoRA model (corenet/third_party/modeling/lora.py): merge its adapters.
      const split = splitPeft(records)
      const baseOnly = baseOnlyModules(split)
      if (options.peft?.adapter) {
        if (split.adapterTensors > 0) throw new UsageError('peft.adapter_twice', `--adapter: ${file} already carries adapters; convert it without --adapter`, {path: file})
        records = split.plain
      } else {
        if (baseOnly.length > 0) {
          throw new FormatError('peft.no_adapters', `${file}: ${baseOnly[0]}.base_layer.weight has no adapter tensors beside it (adapters saved apart? pass them with --adapter)`, {path: file, module: baseOnly[0]})
        }
        const merged = mergeAdapters(split.plain, split.modules, options.peft ?? {}, {adapterFile: file, adapterKey: modelKey, base: {path: file, format: 'corenet', key: modelKey}})
        records = merged.tensors
        peft = merged.info
        notes.push(...merged.notes)
      }
    }
    const config = fitConfigVocab(options.config, records, notes)
    const besideConfig = path.basename(file) === HF_TORCH_FILE ? path.join(path.dirname(file), 'config.json') : undefined
    const resolved = await resolveConfig(records, besideConfig, {...options, config})
    let training: TrainingState | undefined
    if (isTraining) {
      const optim = top.get(TRAINING_KEYS.optimizer)
      const ema = top.get(TRAINING_KEYS.ema)
      const scaler = top.get(TRAINING_KEYS.scaler)
      training = {
        iterations: asNumber(top.get(TRAINING_KEYS.iterations)),
        epoch: asNumber(top.get(TRAINING_KEYS.epoch)),
        bestMetric: asNumber(top.get(TRAINING_KEYS.bestMetric)),
        hasOptimizer: optim !== undefined && optim !== null,
        optimizerBytes: optim === undefined ? 0 : tensorBytes(optim),
        hasEma: ema !== undefined && ema !== null,
        hasGradientScaler: scaler !== undefined && scaler !== null,
        // A PEFT run's optimizer state belongs to the adapters, which are merged away.
        ...(peft ? {} : {raw: {dict: top, modelKey} satisfies CorenetRaw}),
      }
      if (peft && training.hasOptimizer) notes.push('the optimizer state belongs to the adapters, which are merged: a .pt output is the merged state dict, without training state')
    }
    const checkpoint = await readerCheckpoint('corenet', p, resolved, {
      tokenizerDir: path.dirname(file),
      training,
      notes: [...notes, ...resolved.notes],
      info: {
        layout: isTraining ? 'CoreNet training checkpoint' : 'CoreNet state dict',
        file,
        archive: archive.prefix.slice(0, -1),
        records: archive.zip.entries.size,
        storages: archive.storages.size,
        pickleProtocol: archive.protocol,
        ...(isTraining ? {keys: [...top.map.keys()].map(String)} : {}),
      },
    }, () => archive.zip.close())
    if (peft) checkpoint.extras.peft = peft
    return checkpoint
  } catch (error) {
    await archive.zip.close()
    throw error
  }
}
