/**
 * Which tokenizer goes with a model: its folder's `tokenizer.model`, else its `tokenizer.json`,
 * else a GGUF file's own vocabulary (handed over by the caller, when it is a real one), else the
 * built-in LLaMA-2 tokenizer when the embedding has LLaMA-2's 32000 rows (or CoreNet's 32128).
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {ConfigError, FormatError, IoError} from '../errors.js'
import {isPlaceholderVocabulary, modelFromGgufVocabulary, type GgufVocabulary} from './gguf.js'
import {MAX_TOKENIZER_JSON_BYTES, modelFromTokenizerJson} from './hf.js'
import {llama2Tokenizer, LLAMA2_VOCAB_SIZE} from './llama2.js'
import {MAX_TOKENIZER_MODEL_BYTES, readSentencePieceModel} from './proto.js'
import {createTokenizer, type Tokenizer} from './tokenizer.js'

/** Embedding rows that mean "OpenELM with the LLaMA-2 vocabulary" (HF keeps 32000, CoreNet trains 32128). */
export const LLAMA2_ROWS: readonly number[] = [LLAMA2_VOCAB_SIZE, 32128]
/** tokenizer_config.json is small; more than this is hostile. */
const MAX_TOKENIZER_CONFIG_BYTES = 16 * 1024 * 1024

/** The bytes of `file`, or undefined when it does not exist. */
async function readIfPresent(file: string, limit: number): Promise<Uint8Array | undefined> {
  let stat
  try {
    stat = await fs.stat(file)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new IoError('file.open', `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {path: file})
  }
  if (!stat.isFile()) throw new FormatError('tokenizer.file', `${file} is not a file`, {path: file})
  if (stat.size > limit) throw new FormatError('tokenizer.size', `${file} is ${stat.size} bytes (limit ${limit})`, {path: file})
  return fs.readFile(file)
}

function parseJson(bytes: Uint8Array, file: string): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'))
  } catch (error) {
    throw new FormatError('json.invalid', `${file} is not valid JSON: ${(error as Error).message}`, {path: file})
  }
}

/** `add_bos_token` from the tokenizer_config.json in `dir` (default true: OpenELM prepends BOS). */
async function addBosIn(dir: string): Promise<boolean> {
  const file = path.join(dir, 'tokenizer_config.json')
  const bytes = await readIfPresent(file, MAX_TOKENIZER_CONFIG_BYTES)
  if (!bytes) return true
  const json = parseJson(bytes, file) as {add_bos_token?: unknown} | null
  return typeof json?.add_bos_token === 'boolean' ? json.add_bos_token : true
}

/** A tokenizer from a `tokenizer.model` or `tokenizer.json` file; undefined when it does not exist. */
async function fromFile(file: string, addBos: () => Promise<boolean>): Promise<Tokenizer | undefined> {
  if (file.endsWith('.json')) {
    const bytes = await readIfPresent(file, MAX_TOKENIZER_JSON_BYTES)
    return bytes && createTokenizer(modelFromTokenizerJson(parseJson(bytes, file), file), `tokenizer.json (${file})`, {addBos: await addBos()})
  }
  const bytes = await readIfPresent(file, MAX_TOKENIZER_MODEL_BYTES)
  return bytes && createTokenizer(readSentencePieceModel(bytes, file), `tokenizer.model (${file})`, {addBos: await addBos()})
}

/**
 * A tokenizer given by the user: a folder holding tokenizer.model or tokenizer.json, or one of
 * those files (a `.json` file is read as tokenizer.json, anything else as a SentencePiece model).
 */
export async function loadTokenizer(p: string): Promise<Tokenizer> {
  let stat
  try {
    stat = await fs.stat(p)
  } catch (error) {
    throw new IoError('file.open', `cannot read ${p}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {path: p})
  }
  if (stat.isDirectory()) {
    const found = (await fromFile(path.join(p, 'tokenizer.model'), () => addBosIn(p))) ?? (await fromFile(path.join(p, 'tokenizer.json'), () => addBosIn(p)))
    if (!found) throw new IoError('tokenizer.missing', `${p} holds neither tokenizer.model nor tokenizer.json`, {path: p})
    return found
  }
  return (await fromFile(p, () => addBosIn(path.dirname(p))))!
}

export interface EmbeddedVocabulary {
  /** The GGUF file the vocabulary was read from. */
  file: string
  vocabulary: GgufVocabulary
  /** `tokenizer.ggml.add_bos_token` (default true). */
  addBos?: boolean
}

/**
 * The tokenizer for a model at `modelPath` (a folder, or a file whose folder is searched) whose
 * embedding has `vocabRows` rows; undefined when there is none. A tokenizer with more pieces than
 * the embedding has rows is a ConfigError; a corrupt tokenizer file is a FormatError naming it.
 */
export async function findTokenizer(modelPath: string, vocabRows: number, embedded?: EmbeddedVocabulary): Promise<Tokenizer | undefined> {
  let dir = modelPath
  try {
    if (!(await fs.stat(modelPath)).isDirectory()) dir = path.dirname(modelPath)
  } catch {
    dir = path.dirname(modelPath)
  }
  let tokenizer = (await fromFile(path.join(dir, 'tokenizer.model'), () => addBosIn(dir))) ?? (await fromFile(path.join(dir, 'tokenizer.json'), () => addBosIn(dir)))
  if (!tokenizer && embedded && !isPlaceholderVocabulary(embedded.vocabulary.tokens)) {
    const model = modelFromGgufVocabulary(embedded.vocabulary, embedded.file)
    tokenizer = createTokenizer(model, `GGUF vocabulary (${embedded.file})`, {addBos: embedded.addBos ?? true})
  }
  if (!tokenizer && LLAMA2_ROWS.includes(vocabRows)) tokenizer = await llama2Tokenizer()
  if (tokenizer && tokenizer.vocabSize > vocabRows) {
    throw new ConfigError('tokenizer.size', `${tokenizer.name} has ${tokenizer.vocabSize} pieces but the model has ${vocabRows} embedding rows`, {rows: vocabRows})
  }
  return tokenizer
}
