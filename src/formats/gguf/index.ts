/**
 * GGUF for llama.cpp: one `.gguf` file holding config keys, the tokenizer and the weights.
 * Writing: `convert SRC --to gguf --out model.gguf --dtype f32|f16|bf16|q8_0` (or `--out DIR`,
 * giving `DIR/model-<type>.gguf`). Reading maps the tensors back to canonical names (gate/up
 * re-joined into proj_1) and dequantizes Q8_0, so inspect, verify and convert work on GGUF.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {FormatError, UsageError} from '../../errors.js'
import {atomicFile, pathExists} from '../../io/atomic.js'
import {matchPreset} from '../../model/presets.js'
import {validateConfig} from '../../model/config.js'
import {checkTensors} from '../../model/tensors.js'
import {floatSchemeName} from '../../quant/float.js'
import {type FloatDType} from '../../tensor/dtype.js'
import {castRecord, type TensorRecord} from '../../tensor/record.js'
import {findTokenizerFiles} from '../common.js'
import {type Checkpoint, type FormatAdapter, type ProgressEvent, type Quantization, type ReadOptions, type StoredSegment, type StoredTensor, type WriteOptions, type WriteResult} from '../types.js'
import {configFromMetadata, type GgufFileType, openelmMetadata} from './metadata.js'
import {expandNames, fromGgufName, joinRows, type RowPart, selectRows, toGgufNames} from './names.js'
import {SCHEMES} from '../../quant/index.js'
import {type GgufFile, type GgufTensor, openGguf, plainValue} from './read.js'
import {type EmbeddedVocabulary} from '../../tokenizer/find.js'
import {loadVocab, vocabFromModel, type VocabPieces} from './tokenizer.js'
import {GGML_BLOCK, GGML_QUANT_SCHEME, GGUF_MAGIC, type GgmlQuantType, type GgmlTypeName, type GgufKv, isQuantType, LLAMA_FILE_TYPE} from './types.js'
import {fallbackType, type FtypeOverrides, GGUF_FTYPES, isGgufFtype, ruleType, type TensorPlace} from './presets.js'
import {type OpenElmConfig} from '../../model/config.js'
import {type GgufTensorInput, planGguf, writeGguf} from './write.js'

/** The file name `--out DIR` gets, by target: `model-f16.gguf`, `model-q4_0.gguf`, `model-q4_k_m.gguf`, … */
export function ggufFileName(target: GgufTarget): string {
  return `model-${target.toLowerCase()}.gguf`
}

/** What `--dtype` writes: a float type, or one of llama-quantize's file types (`q8_0`, `q4_0`, `q4_k_m`, …). */
export type GgufTarget = FloatDType | string

/** The llama-quantize file types `--dtype` offers: those whose every tensor type has a scheme in this build. */
export function ggufQuantTargets(): string[] {
  const used = (f: string): GgmlQuantType[] => [GGUF_FTYPES[f]!.base, 'Q8_0', 'Q6_K', 'Q5_K', 'Q4_K', 'Q3_K', 'Q5_0', 'Q5_1', 'Q4_0']
  return Object.keys(GGUF_FTYPES).filter((f) => (f === 'q8_0' ? ['Q8_0' as const] : used(f)).every((t) => Object.hasOwn(SCHEMES, GGML_QUANT_SCHEME[t])))
}

const FLOAT_FILE_TYPES: Record<FloatDType, GgufFileType> = {F32: 'ALL_F32', F16: 'MOSTLY_F16', BF16: 'MOSTLY_BF16'}

function fileTypeOf(target: GgufTarget): GgufFileType {
  return isGgufFtype(target) ? GGUF_FTYPES[target]!.fileType : FLOAT_FILE_TYPES[target as FloatDType]
}

function ftypeOf(q: Quantization | undefined): string | undefined {
  return q && isGgufFtype(q.mode) ? q.mode : undefined
}

export function ggufTarget(source: Checkpoint, options: WriteOptions): GgufTarget {
  const q = options.quantization
  if (q) {
    const ftype = ftypeOf(q)
    if (!ftype || !ggufQuantTargets().includes(ftype)) {
      throw new UsageError('gguf.quantization', `GGUF output stores llama.cpp's file types (--dtype ${ggufQuantTargets().join(', ')}), not ${q.bits}-bit ${q.mode} quantization`)
    }
    return ftype
  }
  // With no --dtype, a GGUF source keeps its file type: the same rules give each tensor its source
  // type, so every block is copied unchanged (ggufTensors' storedBlocks).
  const kept = options.dtype === undefined ? ftypeOf(source.extras.quantization) : undefined
  if (kept && ggufQuantTargets().includes(kept)) return kept
  return options.dtype ?? source.extras.dtype
}

/**
 * The type one tensor's rules ask for: 1-D tensors stay F32; float targets store matrices as such; a
 * llama-quantize file type gives each matrix its rule's type (src/formats/gguf/presets.ts). The
 * on-disk type is this after `fallbackType` (rows that are not whole blocks).
 */
function wantedType(name: string, shape: readonly number[], target: GgufTarget, config: OpenElmConfig, overrides: FtypeOverrides): GgmlTypeName {
  if (shape.length <= 1) return 'F32'
  if (!isGgufFtype(target)) {
    // llama-quantize's --token-embedding-type applies whatever the file type, a float one included.
    if (overrides.tokenEmbedding && name === 'token_embd.weight') return overrides.tokenEmbedding
    return target as FloatDType
  }
  return ruleType(target, place(name, shape, config), overrides)
}

function place(name: string, shape: readonly number[], config: OpenElmConfig): TensorPlace {
  return {name, cols: shape[shape.length - 1]!, layers: config.num_transformer_layers, gqa: Math.floor(config.num_query_heads[0]! / config.num_kv_heads[0]!)}
}

function modelName(source: Checkpoint): string {
  const preset = matchPreset(source.config)
  if (preset && !['tiny', 'micro'].includes(preset)) return `OpenELM-${preset}`
  const base = path.basename(source.path).replace(/\.[^.]*$/, '')
  return base && !base.includes(':') ? base : `OpenELM-${preset ?? 'custom'}`
}

/** The llama-quantize file type a file says it is (`general.file_type`), else the one whose base type holds most of its values. */
function ftypeOfFile(fileType: unknown, dominant: GgmlQuantType): string {
  const named = Object.entries(GGUF_FTYPES).find(([, f]) => LLAMA_FILE_TYPE[f.fileType] === fileType)
  if (named) return named[0]
  const byBase: Record<GgmlQuantType, string> = {Q8_0: 'q8_0', Q4_0: 'q4_0', Q4_1: 'q4_1', Q5_0: 'q5_0', Q5_1: 'q5_1', Q2_K: 'q2_k', Q3_K: 'q3_k_m', Q4_K: 'q4_k_m', Q5_K: 'q5_k_m', Q6_K: 'q6_k'}
  return byBase[dominant]
}

/** A `--token-embedding-type` / `--output-tensor-type` value, checked: a ggml type this build writes. */
function overrideType(flag: string, t: string): GgmlTypeName {
  const type = t.toUpperCase()
  if (type === 'F32' || type === 'F16' || type === 'BF16' || (isQuantType(type) && Object.hasOwn(SCHEMES, GGML_QUANT_SCHEME[type]))) return type as GgmlTypeName
  const known = ['f32', 'f16', 'bf16', ...Object.entries(GGML_QUANT_SCHEME).filter(([, s]) => Object.hasOwn(SCHEMES, s)).map(([k]) => k.toLowerCase())]
  throw new UsageError(`gguf.${flag.replace(/-/g, '_')}`, `--${flag} ${t} is not a type this tool writes (${known.join(', ')})`)
}

/** `--token-embedding-type` and `--output-tensor-type`, checked. */
function tensorTypeOverrides(options: WriteOptions, target: GgufTarget): FtypeOverrides {
  // llama.cpp gives a tied head --output-tensor-type only under a quantized file type: with a float
  // one the flag would do nothing, so it is refused.
  if (options.ggufOutputTensorType !== undefined && !isGgufFtype(target)) {
    throw new UsageError('gguf.output_tensor_type', `--output-tensor-type applies to quantized GGUF types (--dtype q8_0, q4_k_m, …), not ${target.toLowerCase()}: OpenELM's output head is the tied token embedding (use --token-embedding-type)`)
  }
  return {
    ...(options.ggufTokenEmbeddingType === undefined ? {} : {tokenEmbedding: overrideType('token-embedding-type', options.ggufTokenEmbeddingType)}),
    ...(options.ggufOutputTensorType === undefined ? {} : {outputTensor: overrideType('output-tensor-type', options.ggufOutputTensorType)}),
  }
}

/** How a llama-quantize file type is described as a checkpoint's quantization: its base type's bits and block size. */
export function quantizationOf(ftype: string): Quantization {
  const base = GGUF_FTYPES[ftype]!.base
  return {bits: Number(base[1]), groupSize: GGML_BLOCK[base].elements, mode: ftype as Quantization['mode']}
}

/** The GGUF tensors of a checkpoint, in file order, with their on-disk types. */
export function ggufTensors(source: Checkpoint, target: GgufTarget, overrides: FtypeOverrides = {}): {inputs: GgufTensorInput[]; fallbacks: string[]} {
  const maps = expandNames(source.config.num_transformer_layers)
  const inputs: GgufTensorInput[] = []
  const fallbacks: string[] = []
  for (const record of source.tensors) {
    for (const {gguf, part} of toGgufNames(record.name, maps)) {
      const selected = selectRows(record, part, gguf)
      const wanted = wantedType(gguf, selected.shape, target, source.config, overrides)
      const type = fallbackType(wanted, selected.shape[selected.shape.length - 1]!)
      if (type !== wanted && isGgufFtype(target)) fallbacks.push(`${gguf} (${type} for ${wanted})`)
      const stored = isQuantType(type) ? storedBlocks(source, record, part, GGML_QUANT_SCHEME[type]) : undefined
      inputs.push({name: gguf, type, source: selected, ...(stored ? {stored} : {})})
    }
  }
  const order = new Map(maps.ggufOrder.map((n, i) => [n, i]))
  inputs.sort((a, b) => order.get(a.name)! - order.get(b.name)!)
  return {inputs, fallbacks}
}

/**
 * The rows `part` of `record` as the source stores them, when that is already `scheme` (a GGUF
 * source's blocks of the same type): the writer copies them. Undefined when the source stores those
 * rows any other way or its stored form no longer matches the record (a resized vocabulary).
 */
function storedBlocks(source: Checkpoint, record: TensorRecord, part: RowPart, scheme: string): ((r0: number, r1: number) => Promise<Uint8Array>) | undefined {
  const form = source.stored?.get(record.name)
  if (!form || form.shape.join() !== record.shape.join()) return undefined
  const rows = record.shape.length === 1 ? 1 : record.shape[0]!
  const [row0, count] = part === 'all' ? [0, rows] : part === 'first-half' ? [0, rows / 2] : [rows / 2, rows / 2]
  const segment = form.segments.find((s) => s.row0 === row0 && s.rows === count)
  if (!segment || segment.scheme !== scheme) return undefined
  return async (r0, r1) => {
    const parts = await segment.read(r0, r1)
    if (!parts.blocks) throw new FormatError('gguf.stored', `tensor ${segment.label}: its stored form has no blocks`, {tensor: segment.label})
    return parts.blocks
  }
}

/**
 * The vocabulary embedded in a GGUF source travels in `extras.info` under a non-enumerable key,
 * so GGUF → GGUF keeps it without `inspect --json` printing 32000 pieces.
 */
const EMBEDDED_VOCAB = 'ggufVocab'

function embeddedVocab(source: Checkpoint): (VocabPieces & {addBos: boolean}) | undefined {
  return source.format === 'gguf' ? (source.extras.info[EMBEDDED_VOCAB] as (VocabPieces & {addBos: boolean}) | undefined) : undefined
}

/** A GGUF checkpoint's embedded vocabulary as the tokenizer reads it (undefined for other formats or a placeholder vocabulary). */
export function ggufEmbeddedVocabulary(source: Checkpoint): EmbeddedVocabulary | undefined {
  const v = embeddedVocab(source)
  if (!v) return undefined
  const model = source.extras.info[EMBEDDED_TOKENIZER_MODEL]
  const spacePrefix = source.extras.info[EMBEDDED_SPACE_PREFIX]
  return {
    file: source.path,
    vocabulary: {
      ...(typeof model === 'string' ? {model} : {}), tokens: v.tokens, scores: v.scores, types: v.types, bos: v.bos, eos: v.eos, unk: v.unk,
      ...(typeof spacePrefix === 'boolean' ? {addSpacePrefix: spacePrefix} : {}),
    },
    addBos: v.addBos,
  }
}

const EMBEDDED_TOKENIZER_MODEL = 'ggufTokenizerModel'
const EMBEDDED_CHAT_TEMPLATE = 'ggufChatTemplate'

/** A GGUF checkpoint's `tokenizer.chat_template` (undefined for other formats or when it has none). */
export function ggufEmbeddedChatTemplate(source: Checkpoint): string | undefined {
  const t = source.format === 'gguf' ? source.extras.info[EMBEDDED_CHAT_TEMPLATE] : undefined
  return typeof t === 'string' ? t : undefined
}
const EMBEDDED_SPACE_PREFIX = 'ggufAddSpacePrefix'

function vocabFromMetadata(kv: Map<string, GgufKv>): (VocabPieces & {addBos: boolean}) | undefined {
  if (kv.get('openelm.vocab_placeholder')?.value === true) return undefined
  const items = (key: string) => (kv.get(key)?.value as {items?: unknown[]} | undefined)?.items
  const tokens = items('tokenizer.ggml.tokens')
  if (!tokens) return undefined
  const num = (key: string, fallback: number) => (typeof kv.get(key)?.value === 'number' ? (kv.get(key)!.value as number) : fallback)
  return {
    tokens: tokens as string[],
    scores: (items('tokenizer.ggml.scores') as number[] | undefined) ?? tokens.map(() => 0),
    types: (items('tokenizer.ggml.token_type') as number[] | undefined) ?? tokens.map(() => 1),
    bos: num('tokenizer.ggml.bos_token_id', 1),
    eos: num('tokenizer.ggml.eos_token_id', 2),
    unk: num('tokenizer.ggml.unknown_token_id', 0),
    addBos: kv.get('tokenizer.ggml.add_bos_token')?.value !== false,
  }
}

/** The vocabulary of any GGUF file (a model, or a vocabulary-only file such as llama.cpp's ggml-vocab-*.gguf); undefined when it has none. */
export async function readGgufVocabulary(p: string): Promise<EmbeddedVocabulary | undefined> {
  const file = await openGguf(p)
  try {
    const tokens = (file.kv.get('tokenizer.ggml.tokens')?.value as {items?: unknown[]} | undefined)?.items
    if (!tokens) return undefined
    const v = vocabFromMetadata(file.kv) ?? {tokens: tokens as string[], scores: tokens.map(() => 0), types: tokens.map(() => 1), bos: 1, eos: 2, unk: 0, addBos: true}
    const model = file.kv.get('tokenizer.ggml.model')?.value
    const spacePrefix = file.kv.get('tokenizer.ggml.add_space_prefix')?.value
    return {
      file: p,
      vocabulary: {
        ...(typeof model === 'string' ? {model} : {}), tokens: v.tokens, scores: v.scores, types: v.types, bos: v.bos, eos: v.eos, unk: v.unk,
        ...(typeof spacePrefix === 'boolean' ? {addSpacePrefix: spacePrefix} : {}),
      },
      addBos: v.addBos,
    }
  } finally {
    await file.close()
  }
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory()
  } catch {
    return false
  }
}

export async function* writeGgufCheckpoint(source: Checkpoint, out: string, options: WriteOptions): AsyncGenerator<ProgressEvent, WriteResult> {
  const target = ggufTarget(source, options)
  const file = out.endsWith('.gguf') && !(await isDirectory(out)) ? out : path.join(out, ggufFileName(target))
  const embedding = source.tensors.find((t) => t.name === 'token_embeddings.weight')
  const rows = embedding?.shape[0] ?? source.config.vocab_size
  const ids = {bos: source.config.bos_token_id, eos: source.config.eos_token_id}
  // Through `convert` the tokenizer is settled (formats/tokenizer.ts); a direct call reads the source's files.
  const settled = options.tokenizer
  const vocab = settled
    ? vocabFromModel(settled.tokenizer?.model, settled.tokenizer?.addBos ?? true, rows, ids, settled.reason)
    : await loadVocab(source.extras.tokenizerFiles, rows, ids, embeddedVocab(source))
  const overrides = tensorTypeOverrides(options, target)
  const {inputs, fallbacks} = ggufTensors(source, target, overrides)
  const chatTemplate = settled ? settled.chatTemplate ?? undefined : ggufEmbeddedChatTemplate(source)
  const metadata = openelmMetadata({...source.config, vocab_size: rows}, {name: modelName(source), fileType: fileTypeOf(target), vocab, ...(chatTemplate ? {chatTemplate} : {})})
  const plan = planGguf(metadata, inputs)
  const notes = [...vocab.notes]
  if (fallbacks.length > 0) notes.push(`${target}: ${fallbacks.length} tensors whose rows are not whole blocks of their type were written in llama.cpp's fallback type: ${fallbacks.join(', ')}`)
  if (isGgufFtype(target)) {
    const counts = new Map<string, number>()
    for (const i of inputs) if (i.source.shape.length > 1) counts.set(i.type, (counts.get(i.type) ?? 0) + 1)
    notes.push(`${target}: matrices stored as ${[...counts].map(([t, c]) => `${t} ×${c}`).join(', ')} (llama-quantize's rules for this file type)`)
  }
  const copied = inputs.filter((i) => i.stored).length
  if (copied > 0) notes.push(`${copied} tensors already in their target type were copied block for block, not quantized again`)
  for (const message of notes) yield {type: 'note', message}
  yield {type: 'start', total: inputs.length, totalBytes: plan.size, label: `writing ${path.basename(file)}`}
  const bytes = yield* atomicFile(file, options.force ?? false, (temp) => writeGguf(temp, plan))
  return {
    path: file,
    files: [{path: file, bytes}],
    dtype: isGgufFtype(target) ? 'F16' : (target as FloatDType),
    quantization: isGgufFtype(target) ? quantizationOf(target) : undefined,
    notes,
  }
}

export async function readGgufCheckpoint(p: string, options: ReadOptions = {}): Promise<Checkpoint> {
  const file = await openGguf(p)
  try {
    const embedding = file.tensors.find((t) => t.info.name === 'token_embd.weight')
    const metaConfig = configFromMetadata(file.kv, embedding?.shape[0] ?? 0, p)
    const config = options.config ?? metaConfig.config
    validateConfig(config)
    const maps = expandNames(config.num_transformer_layers)
    const halves = new Map<string, {first?: TensorRecord; second?: TensorRecord}>()
    const records: TensorRecord[] = []
    const segments = new Map<string, {part: string; tensor: GgufTensor}[]>()
    for (const t of file.tensors) {
      const {canonical, part} = fromGgufName(t.info.name, maps)
      segments.set(canonical, [...(segments.get(canonical) ?? []), {part, tensor: t}])
      const record = file.record(t, part === 'all' ? canonical : t.info.name)
      if (part === 'all') {
        records.push(record)
        continue
      }
      const pair = halves.get(canonical) ?? {}
      pair[part === 'first-half' ? 'first' : 'second'] = record
      halves.set(canonical, pair)
    }
    for (const [canonical, {first, second}] of halves) {
      if (!first || !second) continue // checkTensors reports the missing proj_1
      const same = first.dtype === second.dtype
      records.push(joinRows(canonical, same ? first : castRecord(first, 'F32'), same ? second : castRecord(second, 'F32')))
    }
    const tensors = checkTensors(config, records)
    const types: Record<string, number> = {}
    for (const t of file.tensors) types[t.type] = (types[t.type] ?? 0) + 1
    const matrices = file.tensors.filter((t) => t.shape.length > 1)
    // The matrices' type: the quantized type holding most values, else the float type of most bytes.
    const values = new Map<string, number>()
    for (const t of matrices) values.set(t.type, (values.get(t.type) ?? 0) + t.shape.reduce((a, b) => a * b, 1))
    const ranked = [...values.entries()].sort((a, b) => b[1] - a[1]).map(([type]) => type)
    const quantType = ranked.find(isQuantType)
    const stored = ranked.find((t) => !isQuantType(t)) ?? 'F32'
    const ftype = quantType ? ftypeOfFile(file.kv.get('general.file_type')?.value, quantType) : undefined
    const vocabTokens = file.kv.get('tokenizer.ggml.tokens')
    const notes = [...metaConfig.notes]
    if (file.kv.get('openelm.vocab_placeholder')?.value === true) notes.push('the embedded vocabulary is a placeholder (no tokenizer was available when this file was written)')
    const metadata: Record<string, unknown> = {}
    for (const kv of file.header.metadata) {
      const value = plainValue(kv.value)
      metadata[kv.key] = Array.isArray(value) && value.length > 64 ? `[${value.length} × ${(kv.value as {itemType: string}).itemType}]` : typeof value === 'bigint' ? value.toString() : value
    }
    const info: Record<string, unknown> = {
      layout: 'gguf',
      version: file.header.version,
      alignment: file.header.alignment,
      fileType: file.kv.get('general.file_type')?.value,
      tensorTypes: types,
      vocabTokens: vocabTokens ? (vocabTokens.value as {items: unknown[]}).items.length : 0,
      files: [{path: p, bytes: file.header.fileSize}],
      metadata,
    }
    Object.defineProperty(info, EMBEDDED_VOCAB, {value: vocabFromMetadata(file.kv), enumerable: false})
    Object.defineProperty(info, EMBEDDED_TOKENIZER_MODEL, {value: file.kv.get('tokenizer.ggml.model')?.value, enumerable: false})
    Object.defineProperty(info, EMBEDDED_CHAT_TEMPLATE, {value: file.kv.get('tokenizer.chat_template')?.value, enumerable: false})
    Object.defineProperty(info, EMBEDDED_SPACE_PREFIX, {value: file.kv.get('tokenizer.ggml.add_space_prefix')?.value, enumerable: false})
    return {
      format: 'gguf',
      path: p,
      config,
      tensors,
      stored: storedForms(file, tensors, segments),
      extras: {
        configSource: options.config ? 'flag' : 'file',
        dtype: quantType ? 'F16' : (stored as 'F32' | 'F16' | 'BF16'),
        quantization: ftype ? quantizationOf(ftype) : undefined,
        tokenizerFiles: await findTokenizerFiles(path.dirname(p)),
        notes,
        info,
      },
      close: () => file.close(),
    }
  } catch (error) {
    await file.close()
    throw error
  }
}

/**
 * How each canonical tensor is stored: one segment per GGUF tensor (proj_1 has two: ffn_gate rows,
 * then ffn_up rows), in its ggml type's scheme, reading the stored bytes unchanged.
 */
function storedForms(file: GgufFile, tensors: readonly TensorRecord[], parts: Map<string, {part: string; tensor: GgufTensor}[]>): Map<string, StoredTensor> {
  const forms = new Map<string, StoredTensor>()
  for (const record of tensors) {
    const list = [...(parts.get(record.name) ?? [])].sort((a, b) => (a.part === 'second-half' ? 1 : 0) - (b.part === 'second-half' ? 1 : 0))
    let row0 = 0
    const segments: StoredSegment[] = list.map(({tensor}) => {
      const rows = tensor.shape.length === 1 ? 1 : tensor.shape[0]!
      const rowBytes = tensor.byteLength / rows
      const segment: StoredSegment = {
        row0, rows, label: tensor.info.name,
        scheme: isQuantType(tensor.type) ? GGML_QUANT_SCHEME[tensor.type] : floatSchemeName(tensor.type as FloatDType),
        params: {},
        read: async (r0, r1) => ({[isQuantType(tensor.type) ? 'blocks' : 'data']: await file.readRaw(tensor, r0 * rowBytes, r1 * rowBytes)}),
      }
      row0 += rows
      return segment
    })
    forms.set(record.name, {name: record.name, shape: record.shape, segments})
  }
  return forms
}

async function hasGgufMagic(p: string): Promise<boolean> {
  let handle
  try {
    handle = await fs.open(p, 'r')
    const buffer = Buffer.alloc(4)
    const {bytesRead} = await handle.read(buffer, 0, 4, 0)
    return bytesRead === 4 && buffer.readUInt32LE(0) === GGUF_MAGIC
  } catch {
    return false
  } finally {
    await handle?.close()
  }
}

export const ggufFormat: FormatAdapter = {
  name: 'gguf',
  description: 'GGUF (llama.cpp): one .gguf file with config keys, tokenizer and F32/F16/BF16 or ggml block-quantized (Q8_0, Q4_0, …) weights',
  async detect(p) {
    if (await isDirectory(p)) return false
    if (p.endsWith('.gguf')) return pathExists(p)
    return hasGgufMagic(p)
  },
  read: readGgufCheckpoint,
  write: writeGgufCheckpoint,
  tokenizerKind: () => 'gguf-vocab',
}
