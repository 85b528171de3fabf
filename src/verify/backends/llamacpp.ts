/**
 * The `llama.cpp` verify backend: runs a GGUF file in llama.cpp through node-llama-cpp (its CPU
 * prebuilt binaries; no build, no GPU unless asked) and returns the full next-token logits of
 * every prompt position, from `LlamaContextSequence.controlledEvaluate` with `logits: true`.
 * llama.cpp does not expose per-layer hidden states through node-llama-cpp, so `collectHidden`
 * is answered without `hidden`. Any other checkpoint — the `--against` reference of
 * `verify model.gguf --backend llama.cpp --against SRC` — runs on the TS engine.
 */
import {DependencyError, UsageError, VerificationError} from '../../errors.js'
import {requestedThreads} from '../../pool/index.js'
import {tsBackend} from './ts.js'
import {type LogitsBackend} from './types.js'

/** llama.cpp's smallest useful context. */
const MIN_CONTEXT = 32

/**
 * The context size that holds a `tokens`-long prompt without a context shift. node-llama-cpp
 * decodes at most `contextSize - 1` tokens into a sequence before it frees space by erasing
 * tokens after BOS (its default "context shift"): a prompt exactly `contextSize` long had its
 * last position evaluated against a truncated history. node-llama-cpp pads small sizes up to 256
 * only when that stays below the model's training context (2048 for 270M, not 128 for tiny),
 * which is why only small-context models showed it.
 */
export function llamacppContextSize(tokens: number): number {
  return Math.max(MIN_CONTEXT, tokens + 1)
}

type NodeLlamaCpp = typeof import('node-llama-cpp')
type Token = import('node-llama-cpp').Token

type Llama = import('node-llama-cpp').Llama

/** One llama.cpp instance per process and GPU choice: getLlama takes seconds (binary probe and load). */
const instances = new Map<string, Promise<Llama>>()

async function llamaInstance(gpu: 'cuda' | false): Promise<Llama> {
  const key = String(gpu)
  let instance = instances.get(key)
  if (!instance) {
    const {getLlama, LlamaLogLevel} = await loadBinding()
    instance = getLlama({gpu, build: 'never', logLevel: LlamaLogLevel.error, progressLogs: false})
    instances.set(key, instance)
    instance.catch(() => instances.delete(key))
  }
  try {
    return await instance
  } catch (error) {
    throw new DependencyError('llamacpp.binary', `node-llama-cpp has no prebuilt llama.cpp binary for this machine: ${(error as Error).message.split('\n')[0]}`)
  }
}

async function loadBinding(): Promise<NodeLlamaCpp> {
  try {
    return await import('node-llama-cpp')
  } catch (error) {
    throw new DependencyError('llamacpp.missing', `the llama.cpp backend needs the node-llama-cpp package (npm install node-llama-cpp): ${(error as Error).message.split('\n')[0]}`)
  }
}

export const llamacppBackend: LogitsBackend = {
  name: 'llama.cpp',
  async run(input, tokens, options) {
    if (input.checkpoint.format !== 'gguf') return tsBackend.run(input, tokens, {...options, collectHidden: false})
    const vocab = input.checkpoint.config.vocab_size
    tokens.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0 || t >= vocab) throw new UsageError('verify.tokens.range', `token ${i} is ${t}: ids must be integers in [0, ${vocab})`, {index: i, token: t})
    })
    if (tokens.length === 0) throw new UsageError('verify.tokens.empty', 'no tokens to run: give at least one token id')
    // CPU unless CUDA is asked for by name: `auto` must not make a CPU-only box probe GPU builds.
    const gpu = options.device === 'cuda' ? 'cuda' : false
    options.onPhase?.('load')
    const llama = await llamaInstance(gpu)
    let model
    try {
      model = await llama.loadModel({modelPath: input.path, gpuLayers: gpu === false ? 0 : 'auto'})
    } catch (error) {
      throw new VerificationError('llamacpp.load', `llama.cpp could not load ${input.path}: ${(error as Error).message.split('\n')[0]}`, {path: input.path})
    }
    try {
      const size = llamacppContextSize(tokens.length)
      // llama.cpp's defaults (F16 KV cache, flash attention, whose CPU kernel rounds to F16 too)
      // add ~1e-2 of logit noise of their own: an F32 file could not meet the lossless 1e-4.
      // With an F32 cache and plain attention, tiny F32 agrees with the TS engine to 7e-6.
      const context = await model.createContext({
        // node-llama-cpp's default is its maxThreads (2 × the cores here); ggml's threads spin while
        // they wait, so more threads than cores made a 16-token prompt take 11 s instead of 0.35 s
        // on a busy 2-core machine. The cores ggml computes on, or what --threads/OPENELM_THREADS ask.
        threads: requestedThreads() ?? llama.cpuMathCores,
        contextSize: size,
        batchSize: size,
        flashAttention: false,
        experimentalKvCacheKeyType: 'F32',
        experimentalKvCacheValueType: 'F32',
      })
      try {
        // A context shift would silently drop history: fail instead of returning such logits.
        const sequence = context.getSequence({
          contextShift: {
            strategy: () => {
              throw new VerificationError('llamacpp.context_shift', `llama.cpp needed a context shift for ${tokens.length} tokens in a ${context.contextSize}-token context`, {tokens: tokens.length, contextSize: context.contextSize})
            },
          },
        })
        options.onPhase?.('forward')
        const results = await sequence.controlledEvaluate(tokens.map((t) => [t as Token, {generateNext: {logits: true}}] as [Token, {generateNext: {logits: true}}]))
        const logits = new Float32Array(tokens.length * vocab)
        results.forEach((result, position) => {
          const row = result?.next.logits
          if (!row) throw new VerificationError('llamacpp.logits', `llama.cpp returned no logits for position ${position}`, {position})
          for (const [token, value] of row) {
            if (token >= 0 && token < vocab) logits[position * vocab + token] = value
          }
          if (row.size !== vocab) throw new VerificationError('llamacpp.vocab', `llama.cpp returned ${row.size} logits at position ${position}, expected ${vocab}`, {position})
        })
        return {logits, vocab}
      } finally {
        await context.dispose()
      }
    } finally {
      await model.dispose()
    }
  },
}
