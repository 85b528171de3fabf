/**
 * `generate`: text in, text out, on any format the tool reads. The prompt is tokenized with the
 * model's tokenizer (BOS prepended), run once through a backend with a KV cache (prefill), then
 * one token per step; the next token is chosen here (greedy by default, or sampled with a seed),
 * the same way for every backend. Library code: an async generator of events (each token with the
 * text it adds) that returns the result; the command prints.
 */
import {UsageError} from '../errors.js'
import {openCheckpoint} from '../formats/registry.js'
import {type Checkpoint, type FormatName} from '../formats/types.js'
import {renderChat, type ChatMessage} from '../tokenizer/chat.js'
import {type Tokenizer} from '../tokenizer/tokenizer.js'
import {encodeWithSpecials} from './special.js'
import {modelTokenizer} from '../verify/prompt.js'
import {Sampler, type SamplingOptions, checkSampling} from './sampler.js'
import {checkBackend, type DecodeSession, type GenerateBackend, openSession} from './sessions.js'
import {StreamDecoder} from './stream.js'

export {GENERATE_BACKENDS, type GenerateBackend} from './sessions.js'
export {argmax, Sampler, seededRandom, type SamplingOptions} from './sampler.js'
export {StreamDecoder} from './stream.js'

export const DEFAULT_MAX_TOKENS = 64

export interface GenerateOptions extends SamplingOptions {
  /** Prompt text (tokenized, BOS prepended). */
  prompt?: string
  /** Prompt token ids, as given (instead of text). */
  tokens?: number[]
  /**
   * Instruct models: the prompt is the user's message, rendered with OpenELM-Instruct's chat
   * template (src/tokenizer/chat.ts) after an optional system message, ending in the assistant's
   * turn. "</s>" in the rendered text is EOS, as Hugging Face tokenizers read it.
   */
  chat?: {system?: string}
  /** Tokenizer to use instead of the model's own (a folder, tokenizer.model or tokenizer.json). */
  tokenizer?: string
  /** Tokens to generate at most (default 64); generation stops earlier at EOS. */
  maxTokens?: number
  backend?: string
  device?: string
  python?: string
  threads?: number
  format?: FormatName
}

export type GenerateEvent =
  | {type: 'prompt'; ids: number[]; tokenizer?: string}
  | {type: 'token'; id: number; text: string}
  /** Text held back at the end (an unfinished UTF-8 character). */
  | {type: 'text'; text: string}

export type FinishReason = 'eos' | 'length' | 'context'

export interface GenerateResult {
  model: {path: string; format: string}
  backend: GenerateBackend
  device: string
  tokenizer: string | null
  prompt: {text: string | null; ids: number[]}
  generated: {ids: number[]; text: string}
  finishReason: FinishReason
  sampling: {greedy: boolean; temperature: number; topP: number; seed: number}
  timing: {
    loadSeconds: number
    /** The prompt's one forward pass. */
    prefillSeconds: number
    prefillTokensPerSecond: number
    /** Every single-token step after the prefill (the last token is not fed back). */
    decodeSeconds: number
    decodeSteps: number
    /** Generated tokens per second from the end of the prefill (null when nothing was decoded). */
    tokensPerSecond: number | null
    totalSeconds: number
  }
}

function checkMaxTokens(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new UsageError('generate.max_tokens', `--max-tokens must be a positive integer, got ${n}`)
}

function embeddingRows(checkpoint: Checkpoint): number {
  return checkpoint.tensors.find((t) => t.name === 'token_embeddings.weight')?.shape[0] ?? checkpoint.config.vocab_size
}

export async function* generate(modelPath: string, options: GenerateOptions): AsyncGenerator<GenerateEvent, GenerateResult> {
  const t0 = performance.now()
  // Flags first: a bad value is refused before the model is opened.
  checkSampling(options)
  const maxTokens = options.maxTokens ?? DEFAULT_MAX_TOKENS
  checkMaxTokens(maxTokens)
  if ((options.prompt === undefined) === (options.tokens === undefined)) throw new UsageError('generate.prompt', 'give the prompt as --prompt TEXT (or as --tokens IDS)')
  if (options.chat && options.prompt === undefined) throw new UsageError('generate.chat', '--chat wraps a text prompt: give --prompt TEXT, not --tokens')
  const checkpoint = await openCheckpoint(modelPath, options.format ? {format: options.format} : {})
  let session: DecodeSession | undefined
  try {
    const backend = checkBackend(options.backend ?? 'ts', checkpoint, options.device)
    const rows = embeddingRows(checkpoint)
    const tokenizer: Tokenizer | undefined = await modelTokenizer(checkpoint, modelPath, options.tokenizer)
    let ids: number[]
    let chatText: string | undefined
    if (options.prompt !== undefined) {
      if (!tokenizer) throw new UsageError('generate.tokenizer', `no tokenizer for ${modelPath} (no tokenizer.model or tokenizer.json beside it, and a ${rows}-row vocabulary is not LLaMA-2's): pass --tokenizer PATH`)
      if (options.chat) {
        const messages: ChatMessage[] = [...(options.chat.system !== undefined ? [{role: 'system' as const, content: options.chat.system}] : []), {role: 'user', content: options.prompt}]
        chatText = renderChat(messages, {addGenerationPrompt: true, eosToken: tokenizer.eos >= 0 ? tokenizer.pieceOf(tokenizer.eos) : undefined})
        // BOS, then the rendered text with its "</s>" as EOS ids (as the instruction tuning tokenized it).
        ids = [...(tokenizer.bos >= 0 ? [tokenizer.bos] : []), ...encodeWithSpecials(tokenizer, chatText)]
      } else {
        ids = tokenizer.encode(options.prompt, {addBos: true})
      }
    } else {
      ids = [...options.tokens!]
      if (ids.length === 0) throw new UsageError('generate.prompt', '--tokens is empty')
      ids.forEach((t, i) => {
        if (!Number.isInteger(t) || t < 0 || t >= rows) throw new UsageError('generate.tokens', `token ${i} is ${t}: ids must be integers in [0, ${rows})`)
      })
    }
    const contextLength = checkpoint.config.max_context_length
    if (ids.length >= contextLength) throw new UsageError('generate.context', `the prompt is ${ids.length} tokens; the model's context holds ${contextLength} (prompt + at least one generated token)`)
    // The last generated token is not fed back, so the cache holds prompt + maxTokens - 1 positions.
    const capacity = Math.min(contextLength, ids.length + maxTokens - 1)
    session = await openSession(backend, modelPath, checkpoint, {capacity, device: options.device, python: options.python, threads: options.threads})
    // Only once the backend runs: a backend that fails to start prints nothing on stdout.
    yield {type: 'prompt', ids, ...(tokenizer ? {tokenizer: tokenizer.name} : {})}
    const sampler = new Sampler(options)
    const stream = tokenizer ? new StreamDecoder(tokenizer, ids) : undefined
    const eos = tokenizer && tokenizer.eos >= 0 ? tokenizer.eos : checkpoint.config.eos_token_id
    const tLoad = performance.now()
    let logits = await session.feed(ids)
    const tPrefill = performance.now()
    const generated: number[] = []
    let text = ''
    let position = ids.length
    let steps = 0
    let finishReason: FinishReason
    // Ids past the tokenizer's pieces are not tokens (CoreNet's 32128 rows pad LLaMA's 32000): never chosen.
    const choices = tokenizer ? Math.min(tokenizer.vocabSize, rows) : rows
    for (;;) {
      const id = sampler.next(logits.length > choices ? logits.subarray(0, choices) : logits)
      generated.push(id)
      const piece = stream ? stream.push(id) : ''
      text += piece
      yield {type: 'token', id, text: piece}
      if (id === eos) {
        finishReason = 'eos'
        break
      }
      if (generated.length >= maxTokens) {
        finishReason = 'length'
        break
      }
      if (position >= capacity) {
        finishReason = 'context'
        break
      }
      logits = await session.feed([id])
      position++
      steps++
    }
    const rest = stream ? stream.flush() : ''
    if (rest) {
      text += rest
      yield {type: 'text', text: rest}
    }
    const tEnd = performance.now()
    const decodeSeconds = (tEnd - tPrefill) / 1000
    return {
      model: {path: modelPath, format: checkpoint.format},
      backend, device: session.device,
      tokenizer: tokenizer?.name ?? null,
      prompt: {text: chatText ?? options.prompt ?? null, ids},
      generated: {ids: generated, text},
      finishReason,
      sampling: {greedy: sampler.greedy, temperature: sampler.temperature, topP: sampler.topP, seed: sampler.seed},
      timing: {
        loadSeconds: (tLoad - t0) / 1000,
        prefillSeconds: (tPrefill - tLoad) / 1000,
        prefillTokensPerSecond: ids.length / ((tPrefill - tLoad) / 1000),
        decodeSeconds,
        decodeSteps: steps,
        tokensPerSecond: steps > 0 ? steps / decodeSeconds : null,
        totalSeconds: (tEnd - t0) / 1000,
      },
    }
  } finally {
    await session?.close()
    await checkpoint.close()
  }
}
