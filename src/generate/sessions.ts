/**
 * One decoding session per backend: `feed(tokens)` runs the tokens at the next positions against
 * the backend's own KV cache and returns the logits of the last one. The generation loop
 * (index.ts) samples on the TypeScript side for every backend, so the same logits give the same
 * tokens everywhere.
 *
 * - ts: the engine's session (src/verify/engine/session.ts), CPU;
 * - torch: the PyTorch reference worker's decode_start / decode_step ops (decode_ref.py);
 * - onnxruntime: the exported graph's past_key_values / present.* cache (OnnxDecoder);
 * - llama.cpp: a node-llama-cpp context sequence (F32 KV cache, no flash attention, explicit threads).
 */
import os from 'node:os'
import {DependencyError, UsageError, VerificationError} from '../errors.js'
import {type Checkpoint} from '../formats/types.js'
import {llamacppContextSize} from '../verify/backends/llamacpp.js'
import {OnnxDecoder, type KvCache} from '../verify/backends/onnxruntime.js'
import {findPython, handoverFile, TorchWorker} from '../verify/backends/torch.js'
import {EngineSession} from '../verify/engine/session.js'

export const GENERATE_BACKENDS = ['ts', 'torch', 'onnxruntime', 'llama.cpp'] as const
export type GenerateBackend = (typeof GENERATE_BACKENDS)[number]

/** The formats a backend runs (undefined: any format the tool reads). */
export const BACKEND_FORMATS: Partial<Record<GenerateBackend, readonly Checkpoint['format'][]>> = {
  onnxruntime: ['onnx'],
  'llama.cpp': ['gguf'],
}

export interface DecodeSession {
  readonly backend: GenerateBackend
  /** Where it runs: cpu or cuda. */
  readonly device: string
  /** Run `tokens` at the next positions; logits [vocab] of the last one. */
  feed(tokens: readonly number[]): Promise<Float32Array>
  close(): Promise<void>
}

export interface SessionOptions {
  /** Positions the session must hold (prompt + generated tokens fed back). */
  capacity: number
  device?: string
  python?: string
  /** CPU threads (ts engine workers, llama.cpp); default one per core. */
  threads?: number
}

export function defaultThreads(): number {
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length
  return Math.max(1, Math.min(cpus, 16))
}

/** Refuse a backend/format/device combination before any work (usage error, exit 2). */
export function checkBackend(backend: string, checkpoint: Checkpoint, device = 'auto'): GenerateBackend {
  if (!(GENERATE_BACKENDS as readonly string[]).includes(backend)) {
    throw new UsageError('generate.backend', `unknown backend "${backend}" (expected one of ${GENERATE_BACKENDS.join(', ')})`)
  }
  const b = backend as GenerateBackend
  const formats = BACKEND_FORMATS[b]
  if (formats && !formats.includes(checkpoint.format)) {
    throw new UsageError('generate.backend_format', `--backend ${b} runs ${formats.join(', ')} models; ${checkpoint.path} is ${checkpoint.format} (use --backend ts or torch, or convert it with --to ${formats[0]})`)
  }
  if (b === 'ts' && device === 'cuda') throw new UsageError('generate.device', 'the ts engine runs on the CPU only: use --device cpu|auto, or --backend torch for CUDA')
  if (!['auto', 'cpu', 'cuda'].includes(device)) throw new UsageError('generate.device', `unknown device "${device}" (expected auto, cpu or cuda)`)
  return b
}

export async function openSession(backend: GenerateBackend, modelPath: string, checkpoint: Checkpoint, options: SessionOptions): Promise<DecodeSession> {
  switch (backend) {
    case 'ts':
      return tsSession(checkpoint, options)
    case 'torch':
      return torchSession(checkpoint, options)
    case 'onnxruntime':
      return onnxSession(modelPath, checkpoint, options)
    case 'llama.cpp':
      return llamaSession(modelPath, checkpoint, options)
  }
}

async function tsSession(checkpoint: Checkpoint, options: SessionOptions): Promise<DecodeSession> {
  const engine = await EngineSession.open(checkpoint, {capacity: options.capacity, threads: options.threads})
  return {
    backend: 'ts', device: 'cpu',
    feed: (tokens) => engine.append(tokens),
    close: () => engine.close(),
  }
}

function f32FromBytes(bytes: Uint8Array): Float32Array {
  // Copy: msgpack hands out views at arbitrary offsets, f32 views need 4-byte alignment.
  const copy = new Uint8Array(bytes.byteLength)
  copy.set(bytes)
  return new Float32Array(copy.buffer)
}

async function torchSession(checkpoint: Checkpoint, options: SessionOptions): Promise<DecodeSession> {
  const worker = TorchWorker.start(findPython(options.python))
  let handover: {file: string; remove: () => Promise<void>} | undefined
  try {
    const hello = await worker.call({op: 'hello'})
    if (options.device === 'cuda' && !hello.cuda) {
      throw new DependencyError('torch.cuda', `CUDA is not available to torch ${String(hello.torch)} in ${worker.python}: install a CUDA build of PyTorch and an NVIDIA driver, or use --device cpu`, {python: worker.python})
    }
    handover = await handoverFile(checkpoint)
  } catch (error) {
    await handover?.remove()
    await worker.close()
    throw error
  }
  const {file, remove} = handover
  let started = false
  let device = options.device === 'cuda' ? 'cuda' : 'cpu'
  return {
    backend: 'torch',
    get device() {
      return device
    },
    async feed(tokens) {
      const reply = started
        ? await worker.call({op: 'decode_step', tokens: [...tokens]})
        : await worker.call({op: 'decode_start', weights: file, config: checkpoint.config, tokens: [...tokens], device: options.device ?? 'auto', dtype: 'f32'})
      if (!started) {
        started = true
        // The weights are in the worker now; the handover file is no longer needed.
        await remove()
      }
      device = reply.device as string
      return f32FromBytes(reply.logits as Uint8Array)
    },
    async close() {
      await remove()
      await worker.close()
    },
  }
}

async function onnxSession(modelPath: string, checkpoint: Checkpoint, options: SessionOptions): Promise<DecodeSession> {
  const decoder = await OnnxDecoder.open(modelPath, checkpoint.config, {device: options.device})
  let cache: KvCache[] = decoder.emptyCache(1)
  let position = 0
  return {
    backend: 'onnxruntime', device: options.device === 'cuda' ? 'cuda' : 'cpu',
    async feed(tokens) {
      position += tokens.length
      const r = await decoder.step([[...tokens]], [Array.from({length: position}, () => 1)], cache)
      cache = r.cache
      return r.logits.slice((tokens.length - 1) * r.vocab, tokens.length * r.vocab)
    },
    close: () => decoder.close(),
  }
}

type Token = import('node-llama-cpp').Token

async function llamaSession(modelPath: string, checkpoint: Checkpoint, options: SessionOptions): Promise<DecodeSession> {
  let binding: typeof import('node-llama-cpp')
  try {
    binding = await import('node-llama-cpp')
  } catch (error) {
    throw new DependencyError('llamacpp.missing', `the llama.cpp backend needs the node-llama-cpp package (npm install node-llama-cpp): ${(error as Error).message.split('\n')[0]}`)
  }
  const gpu = options.device === 'cuda' ? 'cuda' : false
  const threads = options.threads ?? defaultThreads()
  let llama
  try {
    llama = await binding.getLlama({gpu, build: 'never', logLevel: binding.LlamaLogLevel.error, progressLogs: false, maxThreads: threads})
  } catch (error) {
    throw new DependencyError('llamacpp.binary', `node-llama-cpp has no prebuilt llama.cpp binary for this machine: ${(error as Error).message.split('\n')[0]}`)
  }
  let model
  try {
    model = await llama.loadModel({modelPath, gpuLayers: gpu === false ? 0 : 'auto'})
  } catch (error) {
    throw new VerificationError('llamacpp.load', `llama.cpp could not load ${modelPath}: ${(error as Error).message.split('\n')[0]}`, {path: modelPath})
  }
  const vocab = checkpoint.config.vocab_size
  const size = llamacppContextSize(options.capacity)
  let context
  try {
    // As in verify: an F32 KV cache and plain attention keep llama.cpp's F32 arithmetic close to
    // the engine's (its F16 cache and flash attention round to f16).
    context = await model.createContext({
      contextSize: size, batchSize: size, threads,
      flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32',
    })
  } catch (error) {
    await model.dispose()
    throw new VerificationError('llamacpp.context', `llama.cpp could not create a ${size}-token context: ${(error as Error).message.split('\n')[0]}`)
  }
  const sequence = context.getSequence({
    contextShift: {
      strategy: () => {
        throw new VerificationError('llamacpp.context_shift', `llama.cpp needed a context shift in a ${size}-token context`, {contextSize: size})
      },
    },
  })
  return {
    backend: 'llama.cpp', device: gpu === false ? 'cpu' : 'cuda',
    async feed(tokens) {
      const last = tokens.length - 1
      const results = await sequence.controlledEvaluate(tokens.map((t, i) => (i === last ? [t as Token, {generateNext: {logits: true}}] : (t as Token))))
      const row = results[last]?.next.logits
      if (!row) throw new VerificationError('llamacpp.logits', 'llama.cpp returned no logits')
      if (row.size !== vocab) throw new VerificationError('llamacpp.vocab', `llama.cpp returned ${row.size} logits, expected ${vocab}`)
      const logits = new Float32Array(vocab)
      for (const [token, value] of row) if (token >= 0 && token < vocab) logits[token] = value
      return logits
    },
    async close() {
      await context.dispose()
      await model.dispose()
    },
  }
}
