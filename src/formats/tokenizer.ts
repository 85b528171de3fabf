/**
 * The tokenizer an output gets. Each format adapter declares what its runtime loads
 * (`FormatAdapter.tokenizerKind`); the conversion settles one tokenizer for the model
 * (`resolveOutputTokenizer`) and the writers put it down in their form:
 *
 * - `hf-files`: tokenizer.json + tokenizer_config.json + special_tokens_map.json + tokenizer.model
 *   (transformers, transformers.js, mlx_lm.load: hf, mlx-lm, onnx);
 * - `sentencepiece`: tokenizer.model only (CoreNet's MLX example, the npz layout);
 * - `gguf-vocab`: pieces, scores and types inside the file (llama.cpp);
 * - `none`: the format holds no tokenizer (CoreNet .pt).
 *
 * Where the tokenizer comes from, first match wins: `--tokenizer PATH` (a folder, tokenizer.model,
 * tokenizer.json or a GGUF file's vocabulary), the source's own files, the source GGUF's embedded
 * vocabulary, the built-in LLaMA-2 tokenizer when the embedding has LLaMA-2's 32000 rows (32128
 * for CoreNet); else none, and the output says so.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {ConfigError, FormatError} from '../errors.js'
import {
  createTokenizer, hfTokenizerFiles, isPlaceholderVocabulary, LLAMA2_ROWS, llama2Tokenizer, loadTokenizer, modelFromGgufVocabulary, type SentencePieceModel,
  type Tokenizer, writeSentencePieceModel,
} from '../tokenizer/index.js'
import {ggufEmbeddedVocabulary, readGgufVocabulary} from './gguf/index.js'
import {type Checkpoint, type WriteOptions} from './types.js'

export type TokenizerKind = 'hf-files' | 'sentencepiece' | 'gguf-vocab' | 'none'

/** What the user asked for (`--tokenizer`, `--no-tokenizer`). */
export interface TokenizerRequest {
  /** A folder, a tokenizer.model, a tokenizer.json, or a .gguf whose vocabulary to use. */
  from?: string
  /** Write no tokenizer (GGUF then keeps a placeholder vocabulary). */
  none?: boolean
}

/** The settled tokenizer of a conversion, or why there is none. */
export interface OutputTokenizer {
  /** Undefined when the output gets none. */
  tokenizer?: Tokenizer
  origin: 'flag' | 'source' | 'built-in' | 'none'
  /** One line: which tokenizer and why. */
  reason: string
  /**
   * The tokenizer files the source (or `--tokenizer`) had, by name, copied unchanged: what the
   * runtime loaded before stays what it loads. Missing ones are made from the model.
   */
  originals?: Record<string, Uint8Array>
  /** A Jinja chat template for tokenizer_config.json / GGUF `tokenizer.chat_template`. */
  chatTemplate?: string
}

const TOKENIZER_SOURCE_FILES = ['tokenizer.model', 'tokenizer.json']
/** The files of the `hf-files` kind. */
const HF_TOKENIZER_FILES = ['special_tokens_map.json', 'tokenizer.json', 'tokenizer.model', 'tokenizer_config.json']

async function bytesIfFile(file: string): Promise<Uint8Array | undefined> {
  try {
    return (await fs.stat(file)).isFile() ? await fs.readFile(file) : undefined
  } catch {
    return undefined
  }
}

/** A tokenizer named by the user: a `.gguf`'s vocabulary, else a folder / tokenizer.model / tokenizer.json. */
async function fromPath(p: string): Promise<{tokenizer: Tokenizer; originals?: Record<string, Uint8Array>}> {
  if (p.endsWith('.gguf')) {
    const embedded = await readGgufVocabulary(p)
    if (!embedded || isPlaceholderVocabulary(embedded.vocabulary.tokens)) throw new ConfigError('tokenizer.gguf', `${p} holds no real vocabulary (tokenizer.ggml.tokens missing or placeholder pieces)`, {path: p})
    return {tokenizer: createTokenizer(modelFromGgufVocabulary(embedded.vocabulary, p), `GGUF vocabulary (${p})`, {addBos: embedded.addBos ?? true})}
  }
  const tokenizer = await loadTokenizer(p)
  const originals: Record<string, Uint8Array> = {}
  if ((await fs.stat(p)).isDirectory()) {
    for (const name of HF_TOKENIZER_FILES) {
      const bytes = await bytesIfFile(path.join(p, name))
      if (bytes) originals[name] = bytes
    }
  } else {
    originals[p.endsWith('.json') ? 'tokenizer.json' : 'tokenizer.model'] = await fs.readFile(p)
  }
  return {tokenizer, originals}
}

/**
 * The tokenizer a conversion of `source` writes, for an output with `rows` embedding rows. A
 * tokenizer with more pieces than rows is a ConfigError (llama.cpp and transformers index the
 * embedding by id).
 */
export async function resolveOutputTokenizer(source: Checkpoint, rows: number, request: TokenizerRequest = {}): Promise<OutputTokenizer> {
  if (request.none) return {origin: 'none', reason: '--no-tokenizer: no tokenizer written'}
  let found: {tokenizer: Tokenizer; originals?: Record<string, Uint8Array>} | undefined
  let origin: OutputTokenizer['origin'] = 'none'
  let why = ''
  if (request.from !== undefined) {
    found = await fromPath(request.from)
    origin = 'flag'
    why = 'given with --tokenizer'
  }
  const own = source.extras.tokenizerFiles.find((f) => TOKENIZER_SOURCE_FILES.includes(path.basename(f)))
  if (!found && own) {
    found = await fromPath(path.dirname(own))
    origin = 'source'
    why = 'next to the source'
  }
  const embedded = ggufEmbeddedVocabulary(source)
  if (!found && embedded && !isPlaceholderVocabulary(embedded.vocabulary.tokens)) {
    found = {tokenizer: createTokenizer(modelFromGgufVocabulary(embedded.vocabulary, embedded.file), `GGUF vocabulary (${embedded.file})`, {addBos: embedded.addBos ?? true})}
    origin = 'source'
    why = 'embedded in the source GGUF'
  }
  if (!found && LLAMA2_ROWS.includes(rows)) {
    found = {tokenizer: await llama2Tokenizer()}
    origin = 'built-in'
    why = `the source has none and the model has ${rows} embedding rows, LLaMA-2's vocabulary (OpenELM's tokenizer)`
  }
  if (!found) {
    return {origin: 'none', reason: `no tokenizer: the source has none and ${rows} embedding rows is not LLaMA-2's 32000; pass --tokenizer PATH`}
  }
  if (found.tokenizer.vocabSize > rows) {
    throw new ConfigError('tokenizer.size', `${found.tokenizer.name} has ${found.tokenizer.vocabSize} pieces but the model has ${rows} embedding rows`, {rows})
  }
  return {tokenizer: found.tokenizer, origin, reason: `${found.tokenizer.name}, ${why}`, ...(found.originals ? {originals: found.originals} : {})}
}

/** True when the model has a LLaMA-style tokenizer.json (identity normalizer, escaped spaces, no whitespace removal). */
export function hasHfTokenizerJson(model: SentencePieceModel): boolean {
  return model.model_type === 'BPE' && model.escape_whitespaces && !model.remove_extra_whitespaces && !model.treat_whitespace_as_suffix && model.precompiled_charsmap.byteLength === 0
}

/**
 * The tokenizer files of an output folder of `kind`, by file name. Without a resolved tokenizer
 * (a writer called directly, not through `convert`), the source's own tokenizer files are copied.
 */
export async function tokenizerFilesFor(kind: TokenizerKind, source: Checkpoint, options: WriteOptions): Promise<{files: Record<string, Uint8Array>; notes: string[]}> {
  const out = options.tokenizer
  if (kind === 'none' || kind === 'gguf-vocab') return {files: {}, notes: []}
  if (!out) {
    const files: Record<string, Uint8Array> = {}
    for (const f of source.extras.tokenizerFiles) files[path.basename(f)] = await fs.readFile(f)
    return {files, notes: []}
  }
  const tokenizer = out.tokenizer
  if (!tokenizer) return {files: {}, notes: []}
  const originals = out.originals ?? {}
  const model = () => originals['tokenizer.model'] ?? writeSentencePieceModel(tokenizer.model)
  if (kind === 'sentencepiece') return {files: {'tokenizer.model': model()}, notes: []}
  if (!hasHfTokenizerJson(tokenizer.model) && !originals['tokenizer.json']) {
    const notes = [`${tokenizer.name} has no LLaMA-style tokenizer.json form (its normalizer removes or moves spaces): wrote tokenizer.model only`]
    return {files: {'tokenizer.model': model()}, notes}
  }
  const made = hasHfTokenizerJson(tokenizer.model)
    ? hfTokenizerFiles(tokenizer.model, {
      addBos: tokenizer.addBos,
      modelMaxLength: source.config.max_context_length,
      ...(out.chatTemplate !== undefined ? {chatTemplate: out.chatTemplate} : {}),
      withModel: false,
    })
    : {}
  const files: Record<string, Uint8Array> = {...made, ...originals, 'tokenizer.model': model()}
  if (out.chatTemplate !== undefined && originals['tokenizer_config.json']) {
    files['tokenizer_config.json'] = withChatTemplate(originals['tokenizer_config.json'], out.chatTemplate)
  }
  return {files, notes: []}
}

/** A copied tokenizer_config.json with `chat_template` set (its other fields kept). */
function withChatTemplate(bytes: Uint8Array, template: string): Uint8Array {
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'))
  } catch (error) {
    throw new FormatError('json.invalid', `the source's tokenizer_config.json is not valid JSON: ${(error as Error).message}`)
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError('json.invalid', 'the source\'s tokenizer_config.json is not a JSON object')
  return new TextEncoder().encode(JSON.stringify({...json, chat_template: template}, null, 2) + '\n')
}

/** Write `files` into `dir`; the entries for a WriteResult. */
export async function writeTokenizerFiles(dir: string, files: Record<string, Uint8Array>): Promise<{path: string; bytes: number}[]> {
  const written: {path: string; bytes: number}[] = []
  for (const name of Object.keys(files).sort()) {
    const target = path.join(dir, name)
    await fs.writeFile(target, files[name]!)
    written.push({path: target, bytes: files[name]!.byteLength})
  }
  return written
}
