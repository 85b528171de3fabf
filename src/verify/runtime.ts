/**
 * The artifact's own runtime: a GGUF file runs in llama.cpp, an ONNX export in onnxruntime, and
 * their logits are compared with the reference engine's on the SAME artifact. That difference is
 * only the runtime's own arithmetic (llama.cpp rounds activations to 8 bits in Q8_0 matmuls and to
 * f16 in F16 ones; onnxruntime fuses and reorders f32 sums), held to a tolerance per runtime and
 * storage measured on the trained fixture and on random models (docs/verify.md, bench/RESULTS.md).
 */
import {DependencyError, UsageError} from '../errors.js'
import {type Checkpoint} from '../formats/types.js'
import {storedTensor} from '../formats/stored.js'
import {llamacppBackend} from './backends/llamacpp.js'
import {onnxruntimeBackend} from './backends/onnxruntime.js'
import {type LogitsBackend} from './backends/types.js'
import {compareLogits, fmt} from './compare.js'

export const RUNTIMES = ['onnxruntime', 'llama.cpp'] as const
export type RuntimeName = (typeof RUNTIMES)[number]

/** Which runtime runs a format's artifacts. */
export const FORMAT_RUNTIME: Partial<Record<Checkpoint['format'], RuntimeName>> = {gguf: 'llama.cpp', onnx: 'onnxruntime'}

const BACKENDS: Record<RuntimeName, LogitsBackend> = {onnxruntime: onnxruntimeBackend, 'llama.cpp': llamacppBackend}

export interface RuntimeTolerance {
  /** max |Δlogit| / max(1, max |engine logit|). */
  maxRelAbs: number
  /** mean KL(engine ‖ runtime), nats. */
  maxMeanKl: number
  /** Where the number comes from. */
  evidence: string
}

/**
 * Tolerances by runtime and by how the matrices are stored: the runtime's own arithmetic on the
 * same file, nothing else. Set from bench/runtime-tolerance.ts on random-weight models (tiny seeds
 * 0–2, 270M seed 0; 32 and 127/128 tokens) at about 4× the worst value there, then checked on
 * models they were not set on (the trained fixture on held-out text, tiny seeds 3–4): see
 * docs/verify.md and bench/RESULTS.md. A wrong tensor or wrong metadata moves logits by O(1).
 */
export const RUNTIME_TOLERANCES: Record<RuntimeName, Record<string, RuntimeTolerance>> = {
  onnxruntime: {
    f32: {maxRelAbs: 1e-4, maxMeanKl: 1e-6, evidence: 'f32 graph and compute; worst measured 2.2e-6 / 7.3e-12 (lossless threshold kept)'},
    f16: {maxRelAbs: 1e-4, maxMeanKl: 1e-6, evidence: 'f16 weights widened to f32 in the graph, f32 compute; worst measured 2.2e-6 / 6.9e-12'},
    onnx_q4: {maxRelAbs: 1e-4, maxMeanKl: 1e-6, evidence: 'MatMulNBits (4-bit, block 32, accuracy_level 0): f32 compute on the dequantized blocks; worst measured 1.9e-6 / 1.6e-12 (tiny seeds 0-3), 8.2e-7 / 4.4e-13 on the trained fixture, optimizations on or off (lossless threshold kept)'},
    onnx_q4f16: {maxRelAbs: 1.2e-2, maxMeanKl: 1.5e-5, evidence: 'model_q4f16.onnx: MatMulNBits with f16 scales runs in f16 (activations cast to f16 in front of it and back after); set on tiny seeds 0-2 and 270M seed 0 (32 and 127/128 tokens), worst measured 2.9e-3 / 3.6e-6'},
    onnx_int8: {maxRelAbs: 1.5e-1, maxMeanKl: 6e-3, evidence: 'int8 weights behind DequantizeLinear: onnxruntime (optimization level extended/all) fuses DequantizeLinear + MatMul and quantizes activations to 8 bits; worst measured 3.4e-2 / 1.4e-3 (tiny seeds 0-3), 6.0e-3 / 4.9e-5 on the trained fixture; with graph optimizations disabled it equals the TS engine to 4.5e-6'},
  },
  'llama.cpp': {
    f32: {maxRelAbs: 1e-4, maxMeanKl: 1e-6, evidence: 'F32 weights and KV cache; worst measured 1.8e-6 / 5.3e-12 (lossless threshold kept)'},
    f16: {maxRelAbs: 8e-3, maxMeanKl: 2e-5, evidence: 'F16 matmuls round activations to f16; worst measured 1.8e-3 / 2.8e-6'},
    bf16: {maxRelAbs: 6.4e-2, maxMeanKl: 1e-3, evidence: 'BF16 matmuls round activations to bf16; worst measured 1.6e-2 / 2.1e-4'},
    gguf_q8_0: {maxRelAbs: 2e-1, maxMeanKl: 8e-3, evidence: 'Q8_0 matmuls quantize activations to 8-bit blocks; worst measured 5.1e-2 / 1.8e-3'},
    // Q4_0/Q5_0 matmuls quantize activations to Q8_0 blocks, Q4_1/Q5_1 to Q8_1 (ggml's vec_dot_type):
    // set on tiny seeds 0-2 and 270M seed 0 (32/127-128 tokens), checked on the trained fixture and tiny seeds 3-4.
    gguf_q4_0: {maxRelAbs: 2e-1, maxMeanKl: 6e-3, evidence: 'Q4_0 weights, activations rounded to Q8_0 blocks; worst measured 4.9e-2 / 1.4e-3'},
    gguf_q4_1: {maxRelAbs: 2e-1, maxMeanKl: 6e-3, evidence: 'Q4_1 weights, activations rounded to Q8_1 blocks; worst measured 4.1e-2 / 1.4e-3'},
    gguf_q5_0: {maxRelAbs: 2e-1, maxMeanKl: 6e-3, evidence: 'Q5_0 weights, activations rounded to Q8_0 blocks; worst measured 4.0e-2 / 1.1e-3'},
    gguf_q5_1: {maxRelAbs: 2e-1, maxMeanKl: 6e-3, evidence: 'Q5_1 weights, activations rounded to Q8_1 blocks; worst measured 3.7e-2 / 1.5e-3'},
    // K-quant matmuls round activations to Q8_K blocks: set on `wide` seeds 0-2 (8 layers, 256-wide
    // rows) and 270M seed 0 with the q2_k … q6_k file types, checked on wide seeds 3-4.
    gguf_q2_k: {maxRelAbs: 2e-1, maxMeanKl: 8e-3, evidence: 'Q2_K-dominated files (q2_k), activations rounded to Q8_K; worst measured 3.7e-2 / 2.1e-3'},
    gguf_q3_k: {maxRelAbs: 2e-1, maxMeanKl: 8e-3, evidence: 'Q3_K-dominated files (q3_k_*), activations rounded to Q8_K; worst measured 4.6e-2 / 2.0e-3'},
    gguf_q4_k: {maxRelAbs: 2e-1, maxMeanKl: 8e-3, evidence: 'Q4_K-dominated files (q4_k_*), activations rounded to Q8_K; worst measured 3.8e-2 / 2.0e-3'},
    gguf_q5_k: {maxRelAbs: 2e-1, maxMeanKl: 8e-3, evidence: 'Q5_K-dominated files (q5_k_*), activations rounded to Q8_K; worst measured 4.1e-2 / 2.2e-3'},
    gguf_q6_k: {maxRelAbs: 2e-1, maxMeanKl: 8e-3, evidence: 'Q6_K files (q6_k), activations rounded to Q8_K; worst measured 3.8e-2 / 1.9e-3'},
  },
}

export interface RuntimeCheck {
  runtime: RuntimeName
  device: string
  /** The engine whose logits on the same artifact it is compared with. */
  against: string
  /** The storage the tolerance was chosen for (the scheme most matrix bytes use). */
  storage: string
  tolerance: RuntimeTolerance
  maxAbs: number
  relMaxAbs: number
  meanKl: number
  top1: number
  pass: boolean
  failures: string[]
  seconds: number
}

/** The scheme most of the model's matrices are stored in. */
export function dominantStorage(checkpoint: Checkpoint): string {
  const count = new Map<string, number>()
  for (const t of checkpoint.tensors) {
    if (t.shape.length < 2) continue
    for (const s of storedTensor(checkpoint, t.name)?.segments ?? []) {
      // model_q4f16.onnx: MatMulNBits with f16 scales runs in f16, a tolerance of its own.
      const key = s.scheme === 'onnx_q4' && s.params.dtype === 'F16' ? 'onnx_q4f16' : s.scheme
      count.set(key, (count.get(key) ?? 0) + s.rows)
    }
  }
  // f16 MatMulNBits set the arithmetic of the whole q4f16 graph, whatever the (f16) embedding's row count.
  if (count.has('onnx_q4f16')) return 'onnx_q4f16'
  return [...count.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'f32'
}

/** Whether a runtime can run this checkpoint; a forced runtime that cannot is a usage error. */
export function checkRuntimeApplies(runtime: RuntimeName, checkpoint: Checkpoint): void {
  const own = FORMAT_RUNTIME[checkpoint.format]
  if (own !== runtime) {
    throw new UsageError('verify.runtime', `${runtime} runs ${Object.entries(FORMAT_RUNTIME).filter(([, r]) => r === runtime).map(([f]) => f).join(', ')} files; ${checkpoint.path} is ${checkpoint.format}${own ? ` (its runtime is ${own})` : ' (no runtime of its own: the engine is the reference)'}`)
  }
}

/** True when the runtime's package loads here (node-llama-cpp is optional). */
export async function runtimeAvailable(runtime: RuntimeName): Promise<boolean> {
  try {
    await (runtime === 'llama.cpp' ? import('node-llama-cpp') : import('onnxruntime-node'))
    return true
  } catch {
    return false
  }
}

/** Run the artifact in its runtime and compare with the engine's logits on the same artifact. */
export async function runtimeCheck(
  runtime: RuntimeName, model: Checkpoint, modelPath: string, tokens: number[],
  engine: {name: string; logits: Float32Array; vocab: number}, device: string,
  /** Measuring a storage that has no tolerance yet (bench/runtime-tolerance.ts): use this one. */
  measuring?: RuntimeTolerance,
  /** Told each step of the runtime as it starts (load, forward). */
  onPhase?: (step: string) => void,
): Promise<RuntimeCheck> {
  const storage = dominantStorage(model)
  const tolerance = RUNTIME_TOLERANCES[runtime][storage] ?? measuring
  if (!tolerance) throw new DependencyError('runtime.storage', `no measured ${runtime} tolerance for ${storage} storage yet`)
  const t0 = performance.now()
  const result = await BACKENDS[runtime].run({path: modelPath, checkpoint: model}, tokens, {device, ...(onPhase ? {onPhase} : {})})
  const m = compareLogits(engine.logits, result.logits, tokens.length, engine.vocab, result.vocab)
  let scale = 1
  for (let i = 0; i < engine.logits.length; i++) scale = Math.max(scale, Math.abs(engine.logits[i]!))
  const relMaxAbs = m.maxAbs / scale
  const failures: string[] = []
  if (!(relMaxAbs <= tolerance.maxRelAbs)) failures.push(`${runtime} vs ${engine.name}: max |Δlogit| ${fmt(m.maxAbs)} is ${fmt(relMaxAbs)} of the logit scale > ${fmt(tolerance.maxRelAbs)} (${storage})`)
  if (!(m.meanKl <= tolerance.maxMeanKl)) failures.push(`${runtime} vs ${engine.name}: mean KL ${fmt(m.meanKl)} > ${fmt(tolerance.maxMeanKl)} (${storage})`)
  return {
    runtime, device: device === 'cuda' ? 'cuda' : 'cpu', against: engine.name, storage, tolerance,
    maxAbs: m.maxAbs, relMaxAbs, meanKl: m.meanKl, top1: m.top1, pass: failures.length === 0, failures,
    seconds: (performance.now() - t0) / 1000,
  }
}
