/**
 * The tokens verify runs: ids given as they are; text (`--prompt`, `--text-file`) tokenized with the
 * model's tokenizer (its folder's tokenizer.model / tokenizer.json, a GGUF's embedded vocabulary,
 * `--tokenizer PATH`, or the built-in LLaMA-2 tokenizer for 32000/32128-row embeddings); otherwise
 * held-out Brown corpus text when a tokenizer is found, else seeded random ids.
 */
import {promises as fs} from 'node:fs'
import {IoError, UsageError} from '../errors.js'
import {ggufEmbeddedVocabulary} from '../formats/gguf/index.js'
import {type Checkpoint} from '../formats/types.js'
import {heldOutText} from '../text/corpus.js'
import {findTokenizer, loadTokenizer} from '../tokenizer/find.js'
import {type Tokenizer} from '../tokenizer/tokenizer.js'

/** DESIGN §7 measures verify on 32 tokens. */
export const DEFAULT_PROMPT_LENGTH = 32

/** The LLaMA-2 vocabulary: CoreNet's 32128 rows beyond it are padding, never real tokens. */
const LLAMA_VOCAB = 32000

/**
 * A deterministic prompt: BOS (1), then ids in [3, vocab) drawn from `seed` (xorshift32). The draw
 * range is the real vocabulary: rows 32000..32127 of CoreNet's padded embedding are not tokens, so
 * a model with 32000 and one with 32128 rows get the same prompt.
 */
export function promptTokens(length: number, seed: number, vocab: number): number[] {
  const real = vocab > LLAMA_VOCAB && vocab <= 32128 ? LLAMA_VOCAB : vocab
  let s = (seed ^ 0x9e3779b9) >>> 0 || 1
  const out = [1]
  while (out.length < length) {
    s ^= s << 13; s >>>= 0
    s ^= s >>> 17
    s ^= s << 5; s >>>= 0
    out.push(3 + (s % Math.max(1, real - 3)))
  }
  return out.slice(0, length)
}


export interface PromptInfo {
  source: 'tokens' | 'seeded' | 'text' | 'file' | 'corpus'
  /** The text (first characters) when the tokens came from text. */
  text?: string
  /** Which tokenizer made them. */
  tokenizer?: string
  /** The pieces of the tokens, for text prompts. */
  pieces?: string[]
  seed?: number
}

/** Text files larger than this are not prompts (the forward pass is O(T²) in attention). */
export const MAX_TEXT_FILE_BYTES = 4 * 1024 * 1024

export interface PromptOptions {
  tokens?: number[]
  /** Prompt text. */
  text?: string
  /** A UTF-8 text file to tokenize. */
  textFile?: string
  /** A tokenizer to use instead of the model's own (folder, tokenizer.model or tokenizer.json). */
  tokenizer?: string
  /** Tokens of seeded ids or of corpus text (default 32); text prompts are cut to it only when given. */
  promptLength?: number
  seed?: number
}

function vocabRows(checkpoint: Checkpoint): number {
  return checkpoint.tensors.find((t) => t.name === 'token_embeddings.weight')?.shape[0] ?? checkpoint.config.vocab_size
}

/** The model's tokenizer: the one named, else the one found with it (undefined when there is none). */
export async function modelTokenizer(model: Checkpoint, modelPath: string, explicit?: string): Promise<Tokenizer | undefined> {
  if (explicit) return loadTokenizer(explicit)
  return findTokenizer(modelPath, vocabRows(model), ggufEmbeddedVocabulary(model))
}

export async function resolvePrompt(model: Checkpoint, modelPath: string, options: PromptOptions): Promise<{tokens: number[]; prompt: PromptInfo}> {
  const given = [options.tokens !== undefined, options.text !== undefined, options.textFile !== undefined].filter(Boolean).length
  if (given > 1) throw new UsageError('verify.prompt', 'give one of --tokens, --prompt and --text-file')
  if (options.tokens) return {tokens: options.tokens, prompt: {source: 'tokens'}}
  const length = options.promptLength ?? DEFAULT_PROMPT_LENGTH
  let text = options.text
  if (options.textFile !== undefined) {
    let stat
    try {
      stat = await fs.stat(options.textFile)
    } catch (error) {
      throw new IoError('file.open', `cannot read ${options.textFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {path: options.textFile})
    }
    if (stat.size > MAX_TEXT_FILE_BYTES) throw new UsageError('verify.text_file', `${options.textFile} is ${stat.size} bytes; a prompt file holds at most ${MAX_TEXT_FILE_BYTES}`)
    text = await fs.readFile(options.textFile, 'utf8')
  }
  const tokenizer = await modelTokenizer(model, modelPath, options.tokenizer)
  if (text !== undefined) {
    if (!tokenizer) throw new UsageError('verify.tokenizer', `no tokenizer for ${modelPath} (no tokenizer.model or tokenizer.json beside it, and a ${vocabRows(model)}-row vocabulary is not LLaMA-2's): pass --tokenizer PATH`)
    let tokens = tokenizer.encode(text, {addBos: true})
    if (options.promptLength !== undefined) tokens = tokens.slice(0, options.promptLength)
    if (tokens.length < 1) throw new UsageError('verify.prompt', 'the prompt is empty')
    return {tokens, prompt: {source: options.textFile !== undefined ? 'file' : 'text', text, tokenizer: tokenizer.name, pieces: tokens.map((t) => tokenizer.pieceOf(t))}}
  }
  if (tokenizer) {
    // Held-out text: enough characters for `length` tokens (English runs ~4 characters a token).
    const corpus = heldOutText()
    let chars = length * 8
    let tokens = tokenizer.encode(corpus.slice(0, chars), {addBos: true})
    while (tokens.length < length && chars < corpus.length) {
      chars *= 2
      tokens = tokenizer.encode(corpus.slice(0, chars), {addBos: true})
    }
    tokens = tokens.slice(0, length)
    return {tokens, prompt: {source: 'corpus', text: tokenizer.decode(tokens.slice(1)), tokenizer: tokenizer.name}}
  }
  // Drawn from the real vocabulary (the config's, when it declares fewer ids than the embedding has
  // rows), never from padding rows: the same model padded or not gets the same ids.
  const real = Math.min(vocabRows(model), model.config.vocab_size > 0 ? model.config.vocab_size : Infinity)
  return {tokens: promptTokens(length, options.seed ?? 0, real), prompt: {source: 'seeded', seed: options.seed ?? 0}}
}
