/**
 * The vocabulary written into `tokenizer.ggml.*`: read from a SentencePiece `tokenizer.model`
 * (ModelProto, decoded by src/tokenizer/proto.ts) or a Hugging Face
 * `tokenizer.json`, fitted to the model's embedding rows. Without either file a placeholder
 * vocabulary is synthesised (llama.cpp cannot load a model without one) and the output says so.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {FormatError, IoError, MappingError, quote} from '../../errors.js'
import {MAX_TOKENIZER_JSON_BYTES, MAX_TOKENIZER_MODEL_BYTES, readSentencePieceModel, scoresFromMerges, type SentencePieceModel} from '../../tokenizer/index.js'
import {TOKEN_TYPE} from './types.js'

export {MAX_TOKENIZER_JSON_BYTES, MAX_TOKENIZER_MODEL_BYTES}

export interface GgufVocab {
  tokens: string[]
  scores: number[]
  types: number[]
  bos: number
  eos: number
  unk: number
  addBos: boolean
  /** Where the vocabulary came from. */
  source: 'tokenizer.model' | 'tokenizer.json' | 'gguf' | 'placeholder'
  notes: string[]
}

/** Decode a SentencePiece ModelProto (src/tokenizer/proto.ts) into tokens, scores, types and special ids. */
export function parseSentencePieceModel(bytes: Uint8Array, file = 'tokenizer.model'): Omit<GgufVocab, 'addBos' | 'source' | 'notes'> {
  const model = readSentencePieceModel(bytes, file)
  return {tokens: model.pieces, scores: model.scores, types: model.types, unk: model.unk_id, bos: model.bos_id, eos: model.eos_id}
}

const BYTE_PIECE = /^<0x[0-9A-Fa-f]{2}>$/

/**
 * A Hugging Face `tokenizer.json` (Llama-style BPE with byte fallback, or Unigram). BPE files
 * carry no scores: they follow from the merge ranks (src/tokenizer/hf.ts `scoresFromMerges`, so
 * LLaMA's "▁"-only pieces merge last, as in Meta's tokenizer.model); pieces no merge makes come
 * after all merges. A BPE file without merges gets score -id.
 */
export function parseTokenizerJson(json: unknown, file = 'tokenizer.json'): Omit<GgufVocab, 'addBos' | 'source' | 'notes'> {
  const model = (json as {model?: {type?: string; vocab?: unknown; unk_id?: number; unk_token?: string}})?.model
  const added = ((json as {added_tokens?: {id: number; content: string; special?: boolean}[]}).added_tokens ?? [])
  if (!model || typeof model.vocab !== 'object' || model.vocab === null) {
    throw new FormatError('tokenizer.json', `${file} has no model.vocab`, {path: file})
  }
  let tokens: string[]
  let scores: number[]
  if (Array.isArray(model.vocab)) {
    // Unigram: [[piece, score], ...] in id order.
    tokens = model.vocab.map((e) => String((e as [string, number])[0]))
    scores = model.vocab.map((e) => Number((e as [string, number])[1]))
  } else {
    const entries = Object.entries(model.vocab as Record<string, number>)
    tokens = new Array(entries.length)
    for (const [piece, id] of entries) {
      if (!Number.isInteger(id) || id < 0 || id >= entries.length || tokens[id] !== undefined) {
        throw new FormatError('tokenizer.json', `${file}: token ${quote(String(piece))} has id ${id}, outside 0..${entries.length - 1} or repeated`, {path: file})
      }
      tokens[id] = piece
    }
    const merges = (model as {merges?: unknown}).merges
    const pairs = Array.isArray(merges) ? merges.map((m) => (typeof m === 'string' ? m.split(' ') : m)).filter((m): m is [string, string] => Array.isArray(m) && m.length === 2 && m.every((x) => typeof x === 'string')) : []
    scores = pairs.length > 0 ? scoresFromMerges(tokens, pairs, (id) => -(pairs.length + id)) : tokens.map((_, id) => -id)
  }
  for (const a of added) {
    if (a.id >= tokens.length) tokens.length = a.id + 1
    tokens[a.id] = a.content
  }
  const types: number[] = tokens.map((t) => (BYTE_PIECE.test(t) ? TOKEN_TYPE.BYTE : TOKEN_TYPE.NORMAL))
  for (const a of added) if (a.special) types[a.id] = TOKEN_TYPE.CONTROL
  const find = (content: string) => tokens.indexOf(content)
  const unk = model.unk_token !== undefined ? find(model.unk_token) : (model.unk_id ?? find('<unk>'))
  if (unk >= 0) types[unk] = TOKEN_TYPE.UNKNOWN
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] === undefined) throw new FormatError('tokenizer.json', `${file}: no token with id ${i}`, {path: file})
    scores[i] ??= 0
  }
  const bos = find('<s>')
  const eos = find('</s>')
  return {tokens, scores, types, unk: Math.max(unk, 0), bos: bos >= 0 ? bos : 1, eos: eos >= 0 ? eos : 2}
}

/**
 * Placeholder vocabulary of `rows` pieces, laid out like Llama-2's: <unk> <s> </s>, the 256 byte
 * pieces <0x00>..<0xFF> (as far as they fit), "▁" (the escaped space), then unique
 * `[PLACEHOLDER_<id>]` pieces. When fewer than 260 rows exist, "▁" takes the last id. llama.cpp's
 * SentencePiece tokenizer aborts on a byte it has no piece for, and node-llama-cpp tokenizes
 * "\n" (as "▁" + <0x0A>) while loading, so those pieces must exist. Text is meaningless with
 * this vocabulary; token ids work.
 */
export function placeholderVocab(rows: number, bos: number, eos: number): Omit<GgufVocab, 'addBos' | 'source' | 'notes'> {
  const tokens: string[] = []
  const types: number[] = []
  const space = Math.min(259, rows - 1)
  for (let id = 0; id < rows; id++) {
    if (id === 0) {
      tokens.push('<unk>')
      types.push(TOKEN_TYPE.UNKNOWN)
    } else if (id === 1 || id === 2) {
      tokens.push(id === 1 ? '<s>' : '</s>')
      types.push(TOKEN_TYPE.CONTROL)
    } else if (id === space) {
      tokens.push('\u2581')
      types.push(TOKEN_TYPE.NORMAL)
    } else if (id < 259) {
      tokens.push(`<0x${(id - 3).toString(16).toUpperCase().padStart(2, '0')}>`)
      types.push(TOKEN_TYPE.BYTE)
    } else {
      tokens.push(`[PLACEHOLDER_${id}]`)
      types.push(TOKEN_TYPE.NORMAL)
    }
  }
  return {tokens, scores: tokens.map(() => 0), types, unk: 0, bos, eos}
}

async function readBounded(file: string, limit: number): Promise<Uint8Array> {
  let stat
  try {
    stat = await fs.stat(file)
  } catch (error) {
    throw new IoError('file.open', `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {path: file})
  }
  if (stat.size > limit) throw new FormatError('tokenizer.size', `${file} is ${stat.size} bytes (limit ${limit})`, {path: file})
  return fs.readFile(file)
}

/** `add_bos_token` from tokenizer_config.json when present; OpenELM prepends BOS by default. */
async function readAddBos(files: readonly string[]): Promise<boolean> {
  const config = files.find((f) => path.basename(f) === 'tokenizer_config.json')
  if (!config) return true
  try {
    const json = JSON.parse(Buffer.from(await readBounded(config, MAX_TOKENIZER_JSON_BYTES)).toString('utf8')) as {add_bos_token?: unknown}
    return typeof json.add_bos_token === 'boolean' ? json.add_bos_token : true
  } catch (error) {
    if (error instanceof SyntaxError) throw new FormatError('json.invalid', `${config} is not valid JSON: ${error.message}`, {path: config})
    throw error
  }
}

/**
 * The vocabulary for a model with `rows` embedding rows, from the first of tokenizer.model /
 * tokenizer.json among `files`. Shorter vocabularies are padded with `[PAD<id>]` pieces (as
 * llama.cpp's converter does); a longer one is an error, since llama.cpp needs one piece per row.
 */
export type VocabPieces = Omit<GgufVocab, 'addBos' | 'source' | 'notes'>

/**
 * `embedded` is the vocabulary of a GGUF source (used when no tokenizer file is found, so
 * GGUF → GGUF keeps it).
 */
export async function loadVocab(files: readonly string[], rows: number, ids: {bos: number; eos: number}, embedded?: VocabPieces & {addBos: boolean}): Promise<GgufVocab> {
  const notes: string[] = []
  const spm = files.find((f) => path.basename(f) === 'tokenizer.model')
  const hf = files.find((f) => path.basename(f) === 'tokenizer.json')
  let base: Omit<GgufVocab, 'addBos' | 'source' | 'notes'>
  let source: GgufVocab['source']
  if (spm) {
    base = parseSentencePieceModel(await readBounded(spm, MAX_TOKENIZER_MODEL_BYTES), spm)
    source = 'tokenizer.model'
  } else if (hf) {
    let json: unknown
    try {
      json = JSON.parse(Buffer.from(await readBounded(hf, MAX_TOKENIZER_JSON_BYTES)).toString('utf8'))
    } catch (error) {
      if (error instanceof SyntaxError) throw new FormatError('json.invalid', `${hf} is not valid JSON: ${error.message}`, {path: hf})
      throw error
    }
    base = parseTokenizerJson(json, hf)
    source = 'tokenizer.json'
  } else if (embedded) {
    base = {tokens: [...embedded.tokens], scores: [...embedded.scores], types: [...embedded.types], bos: embedded.bos, eos: embedded.eos, unk: embedded.unk}
    source = 'gguf'
  } else {
    notes.push(`no tokenizer.model or tokenizer.json next to the source: wrote a placeholder vocabulary of ${rows} pieces (<unk> <s> </s>, byte pieces, ▁, [PLACEHOLDER_<id>]); token ids work in llama.cpp, text does not. Put the Llama-2 tokenizer.model next to the model to embed the real one.`)
    return {...placeholderVocab(rows, ids.bos, ids.eos), addBos: true, source: 'placeholder', notes}
  }
  return fitVocab(base, rows, source, source === 'gguf' ? embedded!.addBos : await readAddBos(files), notes)
}

/**
 * The vocabulary of a settled tokenizer (formats/tokenizer.ts) fitted to `rows`, or, without one,
 * the placeholder vocabulary with a note saying why (`reason`).
 */
export function vocabFromModel(model: SentencePieceModel | undefined, addBos: boolean, rows: number, ids: {bos: number; eos: number}, reason: string): GgufVocab {
  if (!model) {
    const notes = [`${reason}: wrote a placeholder vocabulary of ${rows} pieces (<unk> <s> </s>, byte pieces, ▁, [PLACEHOLDER_<id>]); token ids work in llama.cpp, text does not`]
    return {...placeholderVocab(rows, ids.bos, ids.eos), addBos: true, source: 'placeholder', notes}
  }
  // A model without BOS/EOS pieces (-1) keeps the config's ids, as GGUF stores them unsigned.
  const base = {tokens: [...model.pieces], scores: [...model.scores], types: [...model.types], unk: model.unk_id, bos: model.bos_id >= 0 ? model.bos_id : ids.bos, eos: model.eos_id >= 0 ? model.eos_id : ids.eos}
  return fitVocab(base, rows, 'tokenizer.model', addBos, [])
}

/** Check a vocabulary against `rows` (unique pieces, not more than rows) and pad it with `[PAD<id>]` pieces to `rows`. */
function fitVocab(base: VocabPieces, rows: number, source: GgufVocab['source'], addBos: boolean, notes: string[]): GgufVocab {
  if (base.tokens.length > rows) {
    throw new MappingError('gguf.vocab', `the tokenizer has ${base.tokens.length} pieces but the model has ${rows} embedding rows; llama.cpp needs one piece per row`, {rows})
  }
  const seen = new Set<string>()
  for (const t of base.tokens) {
    if (seen.has(t)) throw new FormatError('tokenizer.duplicate', `the tokenizer has the piece "${t}" twice; llama.cpp needs unique pieces`)
    seen.add(t)
  }
  if (base.tokens.length < rows) {
    notes.push(`the tokenizer has ${base.tokens.length} pieces and the model ${rows} rows: padded with [PAD<id>] pieces`)
    for (let id = base.tokens.length; id < rows; id++) {
      base.tokens.push(`[PAD${id}]`)
      base.scores.push(-10000)
      base.types.push(TOKEN_TYPE.UNUSED)
    }
  }
  return {...base, addBos, source, notes}
}
