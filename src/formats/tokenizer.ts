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
import {ConfigError, FormatError, IoError, UsageError} from '../errors.js'
import {OPENELM_CHAT_TEMPLATE} from '../tokenizer/chat.js'
import {
  createTokenizer, hfTokenizerFiles, isPlaceholderVocabulary, LLAMA2_ROWS, llama2Tokenizer, loadTokenizer, modelFromGgufVocabulary, type SentencePieceModel,
  type Tokenizer, writeSentencePieceModel,
} from '../tokenizer/index.js'
import {ggufEmbeddedChatTemplate, ggufEmbeddedVocabulary, readGgufVocabulary} from './gguf/index.js'
import {type Checkpoint, type WriteOptions} from './types.js'

export type TokenizerKind = 'hf-files' | 'sentencepiece' | 'gguf-vocab' | 'none'

/** What the user asked for (`--tokenizer`, `--no-tokenizer`). */
export interface TokenizerRequest {
  /** A folder, a tokenizer.model, a tokenizer.json, or a .gguf whose vocabulary to use. */
  from?: string
  /** Write no tokenizer (GGUF then keeps a placeholder vocabulary). */
  none?: boolean
  /** `openelm` (OpenELM-Instruct's template, src/tokenizer/chat.ts) or a file holding a Jinja template. */
  chatTemplate?: string
  /** Write no chat template, even for an Instruct model or a source that has one. */
  noChatTemplate?: boolean
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
  /**
   * A Jinja chat template for tokenizer_config.json / GGUF `tokenizer.chat_template`; null: remove
   * the one a copied tokenizer_config.json has (`--no-chat-template`).
   */
  chatTemplate?: string | null
  /** Where the chat template came from, when there is one. */
  chatTemplateReason?: string
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
  const chat = await chatTemplateFor(source, found.originals, request)
  return {
    tokenizer: found.tokenizer, origin, reason: `${found.tokenizer.name}, ${why}`,
    ...(found.originals ? {originals: found.originals} : {}),
    ...(chat ? {chatTemplate: chat.template, ...(chat.reason ? {chatTemplateReason: chat.reason} : {})} : {}),
  }
}

/** A path segment naming an Instruct model: `OpenELM-270M-Instruct`, `models--apple--OpenELM-270M-Instruct`, `x-instruct-f16.gguf`. */
const INSTRUCT_NAME = /-instruct(?=$|[-_.])/i

/** True when the model's path says it is an Instruct one (the Hub cache keeps the repo name in a folder above the snapshot). */
export function isInstructPath(p: string): boolean {
  return path.resolve(p).split(path.sep).some((segment) => INSTRUCT_NAME.test(segment))
}

/**
 * The chat template, first match wins: `--no-chat-template` (none, and a copied one removed),
 * `--chat-template openelm|FILE`, the source tokenizer_config.json's, the source GGUF's, OpenELM's
 * for a model whose name ends in -Instruct; else none.
 */
async function chatTemplateFor(source: Checkpoint, originals: Record<string, Uint8Array> | undefined, request: TokenizerRequest): Promise<{template: string | null; reason?: string} | undefined> {
  if (request.noChatTemplate) return copiedChatTemplate(originals) !== undefined ? {template: null} : undefined
  if (request.chatTemplate === 'openelm') return {template: OPENELM_CHAT_TEMPLATE, reason: 'OpenELM-Instruct\'s (--chat-template openelm)'}
  if (request.chatTemplate !== undefined) {
    let text: string
    try {
      text = await fs.readFile(request.chatTemplate, 'utf8')
    } catch (error) {
      throw new IoError('file.open', `cannot read the chat template ${request.chatTemplate}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {path: request.chatTemplate})
    }
    if (text.trim() === '') throw new UsageError('flag.chat_template', `${request.chatTemplate} is empty: give a Jinja chat template, or --chat-template openelm`)
    return {template: text, reason: `from ${request.chatTemplate} (--chat-template)`}
  }
  const copied = copiedChatTemplate(originals)
  if (copied !== undefined) return {template: copied, reason: 'the source\'s tokenizer_config.json'}
  const embedded = ggufEmbeddedChatTemplate(source)
  if (embedded !== undefined) return {template: embedded, reason: 'the source GGUF\'s tokenizer.chat_template'}
  if (isInstructPath(source.path)) return {template: OPENELM_CHAT_TEMPLATE, reason: `OpenELM-Instruct's (the model's name, ${path.basename(path.resolve(source.path))}, ends in -Instruct)`}
  return undefined
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
      ...(typeof out.chatTemplate === 'string' ? {chatTemplate: out.chatTemplate} : {}),
      withModel: false,
    })
    : {}
  const files: Record<string, Uint8Array> = {...made, ...originals, 'tokenizer.model': model()}
  if (out.chatTemplate !== undefined && originals['tokenizer_config.json'] && copiedChatTemplate(originals) !== out.chatTemplate) {
    files['tokenizer_config.json'] = withChatTemplate(originals['tokenizer_config.json'], out.chatTemplate)
  }
  return {files, notes: []}
}

/** The chat_template (string form) of a copied tokenizer_config.json. */
function copiedChatTemplate(originals: Record<string, Uint8Array> | undefined): string | undefined {
  const bytes = originals?.['tokenizer_config.json']
  if (!bytes) return undefined
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'))
  } catch {
    return undefined // copied as it is; a file the runtime cannot parse is the source's own
  }
  const template = (json as {chat_template?: unknown} | null)?.chat_template
  return typeof template === 'string' ? template : undefined
}

/** A copied tokenizer_config.json with `chat_template` set, or removed for null (its other fields kept). */
function withChatTemplate(bytes: Uint8Array, template: string | null): Uint8Array {
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'))
  } catch (error) {
    throw new FormatError('json.invalid', `the source's tokenizer_config.json is not valid JSON: ${(error as Error).message}`)
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError('json.invalid', 'the source\'s tokenizer_config.json is not a JSON object')
  const {chat_template: _, ...rest} = json as Record<string, unknown>
  return new TextEncoder().encode(JSON.stringify(template === null ? rest : {...rest, chat_template: template}, null, 2) + '\n')
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
