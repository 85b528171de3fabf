/**
 * The `onnxruntime` backend: runs an exported ONNX folder (or .onnx file) itself in
 * onnxruntime-node — the artifact-runtime check of DESIGN §5 level 3. `OnnxDecoder` is the
 * session wrapper the tests also use to drive prefill + cached decode steps.
 */
import type * as Ort from 'onnxruntime-node'
import {FormatError, UsageError} from '../../errors.js'
import {findModelFile} from '../../formats/onnx/index.js'
import {layerDims, type OpenElmConfig} from '../../model/config.js'
import {tsBackend} from './ts.js'
import {type LogitsBackend} from './types.js'

/** One layer's cache: [batch, kv_heads, past, head_dim] f32. */
export interface KvCache {
  key: Ort.Tensor
  value: Ort.Tensor
}

export interface StepResult {
  /** [batch, seq, vocab] row-major. */
  logits: Float32Array
  vocab: number
  cache: KvCache[]
}

function executionProviders(device: string | undefined): string[] {
  if (device === undefined || device === 'auto' || device === 'cpu') return ['cpu']
  if (device === 'cuda') return ['cuda', 'cpu']
  throw new UsageError('verify.device', `onnxruntime backend: unknown device "${device}" (expected auto, cpu or cuda)`)
}

/** An onnxruntime session over an exported OpenELM decoder with a KV cache. */
export class OnnxDecoder {
  private constructor(private readonly session: Ort.InferenceSession, private readonly ort: typeof Ort, readonly config: OpenElmConfig, readonly modelFile: string) {}

  static async open(p: string, config: OpenElmConfig, options: {device?: string; graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all'} = {}): Promise<OnnxDecoder> {
    const modelFile = await findModelFile(p)
    if (!modelFile) throw new FormatError('onnx.missing', `${p} has no ONNX model (expected onnx/model.onnx or a .onnx file)`, {path: p})
    // Loaded on first use: the native library costs ~0.2 s at start-up for every other command.
    const ort = await import('onnxruntime-node')
    // onnxruntime's own error log (e.g. a CUDA provider that cannot load) would print a second,
    // multi-line message; the failure reaches the user as one line below.
    ort.env.logLevel = 'fatal'
    let session: Ort.InferenceSession
    try {
      session = await ort.InferenceSession.create(modelFile, {executionProviders: executionProviders(options.device), ...(options.graphOptimizationLevel ? {graphOptimizationLevel: options.graphOptimizationLevel} : {})})
    } catch (error) {
      throw new FormatError('onnxruntime.load', `onnxruntime could not load ${modelFile}: ${(error as Error).message.split('\n')[0]}`, {path: modelFile})
    }
    return new OnnxDecoder(session, ort, config, modelFile)
  }

  /** An empty cache for `batch` rows, shaped as the graph declares. */
  emptyCache(batch: number): KvCache[] {
    return layerDims(this.config).map(({kvHeads}) => ({
      key: new this.ort.Tensor('float32', new Float32Array(0), [batch, kvHeads, 0, this.config.head_dim]),
      value: new this.ort.Tensor('float32', new Float32Array(0), [batch, kvHeads, 0, this.config.head_dim]),
    }))
  }

  /**
   * One forward step. `ids` is [batch][seq]; `mask` is [batch][past + seq] (1 = real token,
   * 0 = padding); `cache` the previous step's present.* (or emptyCache).
   */
  async step(ids: number[][], mask: number[][], cache: KvCache[]): Promise<StepResult> {
    const batch = ids.length
    const seq = ids[0]?.length ?? 0
    const total = mask[0]?.length ?? 0
    const feeds: Record<string, Ort.Tensor> = {
      input_ids: new this.ort.Tensor('int64', BigInt64Array.from(ids.flat().map(BigInt)), [batch, seq]),
      attention_mask: new this.ort.Tensor('int64', BigInt64Array.from(mask.flat().map(BigInt)), [batch, total]),
    }
    cache.forEach((c, i) => {
      feeds[`past_key_values.${i}.key`] = c.key
      feeds[`past_key_values.${i}.value`] = c.value
    })
    let out: Ort.InferenceSession.ReturnType
    try {
      out = await this.session.run(feeds)
    } catch (error) {
      throw new FormatError('onnxruntime.run', `onnxruntime failed running ${this.modelFile}: ${(error as Error).message.split('\n')[0]}`, {path: this.modelFile})
    }
    const logits = out.logits
    const vocab = logits.dims[2]
    const data = logits.type === 'float32' ? (logits.data as Float32Array) : Float32Array.from(logits.data as ArrayLike<number>)
    return {
      logits: data,
      vocab,
      cache: cache.map((_, i) => ({key: out[`present.${i}.key`], value: out[`present.${i}.value`]})),
    }
  }

  async close(): Promise<void> {
    await this.session.release()
  }
}

/**
 * ONNX artifacts run in onnxruntime-node (one prefill step, empty cache). Any other checkpoint —
 * the `--against` reference of `verify DIR --backend onnxruntime --against SRC` — runs on the
 * TS engine, so the artifact's runtime is compared with the reference forward pass. Hidden states
 * are not exported by the graph, so an ONNX run returns none (verify then compares logits only).
 */
export const onnxruntimeBackend: LogitsBackend = {
  name: 'onnxruntime',
  async run(input, tokens, options) {
    if (input.checkpoint.format !== 'onnx') return tsBackend.run(input, tokens, {...options, collectHidden: false})
    options.onPhase?.('load')
    const decoder = await OnnxDecoder.open(input.path, input.checkpoint.config, {device: options.device})
    options.onPhase?.('forward')
    try {
      const result = await decoder.step([tokens], [tokens.map(() => 1)], decoder.emptyCache(1))
      return {logits: result.logits, vocab: result.vocab}
    } finally {
      await decoder.close()
    }
  },
}
