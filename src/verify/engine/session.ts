/**
 * The engine with a KV cache, for generation: `append(tokens)` runs only the new positions
 * (the prompt once, then one token per step) against the keys and values cached from earlier
 * calls. Keys are cached after k_norm and RoPE, values as projected. Same arithmetic as
 * `runForward` (index.ts): one prefill of the whole sequence gives its logits.
 */
import os from 'node:os'
import {MappingError, UsageError} from '../../errors.js'
import {type Checkpoint} from '../../formats/types.js'
import {layerDims, type LayerDims} from '../../model/config.js'
import {GLOBAL_TENSORS, layerTensorName, type LayerRole} from '../../model/tensors.js'
import {dtypeSize, toFloat32} from '../../tensor/dtype.js'
import {f32Record, numel, readFloat32, type TensorRecord} from '../../tensor/record.js'
import {checkTokens} from './index.js'
import {linear, MatmulPool} from './matmul.js'
import {addInPlace, gluSilu, normRopeHead, rmsNorm, ropeTables} from './ops.js'

export interface SessionOptions {
  /** Positions the cache holds (prompt + generated tokens); default the model's max_context_length. */
  capacity?: number
  /** Worker threads for the matmuls (default: one per core, 0 = main thread only). */
  threads?: number
  /**
   * Hold the weight matrices in memory as f32 (read and dequantized once) instead of reading them
   * from the file at every step. Default: when they take at most half the free memory.
   */
  resident?: boolean
}

/** f32 bytes of the weight matrices: what a resident session holds. */
export function residentBytes(checkpoint: Checkpoint): number {
  return checkpoint.tensors.filter((t) => t.shape.length === 2).reduce((n, t) => n + numel(t.shape) * 4, 0)
}

/** The whole tensor as an in-memory f32 record (quantized or 16-bit storage decoded once). */
async function residentRecord(record: TensorRecord): Promise<TensorRecord> {
  // read() hands out bytes the record does not write again (readers reuse buffers only through
  // readInto), so an f32 view of them is ours to keep.
  return f32Record(record.name, record.shape, toFloat32(await record.read(), record.dtype))
}

interface Layer {
  dims: LayerDims
  attnNorm: Float32Array
  qNorm: Float32Array
  kNorm: Float32Array
  ffnNorm: Float32Array
  qkv: TensorRecord
  out: TensorRecord
  proj1: TensorRecord
  proj2: TensorRecord
  /** [capacity, kvHeads·hd]: keys after k_norm and RoPE, and values. */
  keys: Float32Array
  values: Float32Array
}

export class EngineSession {
  /** Positions already in the cache. */
  private length = 0

  private constructor(
    readonly checkpoint: Checkpoint,
    readonly capacity: number,
    readonly vocab: number,
    private readonly embedding: TensorRecord,
    private readonly norm: Float32Array,
    private readonly layers: Layer[],
    private readonly cos: Float32Array,
    private readonly sin: Float32Array,
    private readonly pool: MatmulPool,
    /** Whether the weight matrices are held in memory (SessionOptions.resident). */
    readonly resident: boolean,
  ) {}

  static async open(checkpoint: Checkpoint, options: SessionOptions = {}): Promise<EngineSession> {
    const {config} = checkpoint
    const resident = options.resident ?? residentBytes(checkpoint) <= os.freemem() / 2
    const byName = new Map<string, TensorRecord>()
    for (const t of checkpoint.tensors) byName.set(t.name, resident && t.shape.length === 2 ? await residentRecord(t) : t)
    const tensor = (name: string): TensorRecord => {
      const t = byName.get(name)
      if (!t) throw new MappingError('tensor.missing', `tensor ${name} is missing`, {tensor: name})
      return t
    }
    const capacity = options.capacity ?? config.max_context_length
    if (!Number.isInteger(capacity) || capacity < 1) throw new UsageError('engine.capacity', `a session holds at least one position, got ${capacity}`)
    const hd = config.head_dim
    const layers: Layer[] = []
    for (const [i, dims] of layerDims(config).entries()) {
      const w = (role: LayerRole): TensorRecord => tensor(layerTensorName(role, i))
      layers.push({
        dims,
        attnNorm: await readFloat32(w('attn_norm')),
        qNorm: await readFloat32(w('q_norm')),
        kNorm: await readFloat32(w('k_norm')),
        ffnNorm: await readFloat32(w('ffn_norm')),
        qkv: w('qkv_proj'), out: w('out_proj'), proj1: w('proj_1'), proj2: w('proj_2'),
        keys: new Float32Array(capacity * dims.kvHeads * hd),
        values: new Float32Array(capacity * dims.kvHeads * hd),
      })
    }
    const embedding = tensor(GLOBAL_TENSORS.token_embeddings)
    const norm = await readFloat32(tensor(GLOBAL_TENSORS.norm))
    const {cos, sin} = ropeTables(capacity, hd, config.rope_freq_constant)
    return new EngineSession(checkpoint, capacity, embedding.shape[0]!, embedding, norm, layers, cos, sin, new MatmulPool(options.threads), resident)
  }

  /**
   * y = x · Wᵀ. The SIMD kernel takes rows of x in pairs and leaves an odd one to the plain
   * kernel, 2-3× slower per row: a single decode step would run entirely on it. An odd T gets a
   * zero row appended instead (its output is dropped); the weights are read once either way.
   */
  private async linear(x: Float32Array, T: number, record: TensorRecord): Promise<Float32Array> {
    if (T % 2 === 0 || !this.pool.usesSimd) return linear(this.pool, x, T, record)
    const padded = new Float32Array(x.length + x.length / T)
    padded.set(x)
    const y = await linear(this.pool, padded, T + 1, record)
    return y.subarray(0, T * record.shape[0]!)
  }

  /** Positions in the cache. */
  get position(): number {
    return this.length
  }

  /**
   * Run `tokens` at the next positions; returns logits [rows, vocab] of the last position
   * (rows 1), or of every new position with `all`.
   */
  async append(tokens: readonly number[], options: {all?: boolean} = {}): Promise<Float32Array> {
    checkTokens([...tokens], this.vocab)
    const T = tokens.length
    const p0 = this.length
    if (p0 + T > this.capacity) {
      throw new UsageError('engine.capacity', `${p0 + T} positions do not fit the session's ${this.capacity}`, {capacity: this.capacity})
    }
    const {config} = this.checkpoint
    const d = config.model_dim
    const hd = config.head_dim
    const x = new Float32Array(T * d)
    const rowBytes = d * dtypeSize(this.embedding.dtype)
    for (let t = 0; t < T; t++) {
      x.set(toFloat32(await this.embedding.read(tokens[t]! * rowBytes, (tokens[t]! + 1) * rowBytes), this.embedding.dtype), t * d)
    }
    for (const layer of this.layers) {
      const h = rmsNorm(x, T, layer.attnNorm)
      const qkv = await this.linear(h, T, layer.qkv)
      const attn = this.attend(layer, qkv, T, p0, hd)
      addInPlace(x, await this.linear(attn, T, layer.out))
      const h2 = rmsNorm(x, T, layer.ffnNorm)
      const gated = gluSilu(await this.linear(h2, T, layer.proj1), T, layer.dims.ffnDim)
      addInPlace(x, await this.linear(gated, T, layer.proj2))
    }
    this.length = p0 + T
    const rows = options.all ? T : 1
    const final = rmsNorm(x.subarray((T - rows) * d), rows, this.norm)
    // Tied output layer: logits = h · token_embeddingsᵀ.
    return this.linear(final, rows, this.embedding)
  }

  /**
   * Attention of the new positions p0..p0+T-1 over every cached one (causal). Q/K are normalised
   * and rotated at their absolute positions; the new keys and values join the cache. The loops
   * and accumulation order are those of ops.ts `attention`.
   */
  private attend(layer: Layer, qkv: Float32Array, T: number, p0: number, hd: number): Float32Array {
    const {qHeads, kvHeads} = layer.dims
    const width = (qHeads + 2 * kvHeads) * hd
    const kvWidth = kvHeads * hd
    const scratch = new Float32Array(hd)
    for (let t = 0; t < T; t++) {
      const pos = p0 + t
      for (let h = 0; h < qHeads; h++) normRopeHead(qkv, t * width + h * hd, hd, layer.qNorm, this.cos, this.sin, pos, scratch)
      for (let h = 0; h < kvHeads; h++) normRopeHead(qkv, t * width + (qHeads + h) * hd, hd, layer.kNorm, this.cos, this.sin, pos, scratch)
      layer.keys.set(qkv.subarray(t * width + qHeads * hd, t * width + (qHeads + kvHeads) * hd), pos * kvWidth)
      layer.values.set(qkv.subarray(t * width + (qHeads + kvHeads) * hd, (t + 1) * width), pos * kvWidth)
    }
    const {keys, values} = layer
    const out = new Float32Array(T * qHeads * hd)
    const scores = new Float64Array(p0 + T)
    const scale = 1 / Math.sqrt(hd)
    const groups = qHeads / kvHeads
    for (let h = 0; h < qHeads; h++) {
      // repeat_interleave: query head h reads KV head floor(h / groups).
      const kOff = Math.floor(h / groups) * hd
      for (let t = 0; t < T; t++) {
        const last = p0 + t
        const qBase = t * width + h * hd
        let max = -Infinity
        for (let s = 0; s <= last; s++) {
          const kBase = s * kvWidth + kOff
          let dot = 0
          for (let i = 0; i < hd; i++) dot += qkv[qBase + i]! * keys[kBase + i]!
          const score = dot * scale
          scores[s] = score
          if (score > max) max = score
        }
        let total = 0
        for (let s = 0; s <= last; s++) {
          const e = Math.exp(scores[s]! - max)
          scores[s] = e
          total += e
        }
        const oBase = t * qHeads * hd + h * hd
        for (let i = 0; i < hd; i++) {
          let acc = 0
          for (let s = 0; s <= last; s++) acc += scores[s]! * values[s * kvWidth + kOff + i]!
          out[oBase + i] = acc / total
        }
      }
    }
    return out
  }

  async close(): Promise<void> {
    await this.pool.close()
  }
}
