/**
 * The reference forward pass (DESIGN §3) in TypeScript: causal prefill of a token sequence on the
 * CPU, f32 compute, weights read (and widened / dequantised) from the checkpoint's canonical
 * tensors one block at a time. Needs no Python; this is the `ts` verify backend.
 */
import {MappingError, UsageError} from '../../errors.js'
import {layerDims} from '../../model/config.js'
import {GLOBAL_TENSORS, layerTensorName, type LayerRole} from '../../model/tensors.js'
import {type Checkpoint} from '../../formats/types.js'
import {dtypeSize, toFloat32} from '../../tensor/dtype.js'
import {readFloat32, type TensorRecord} from '../../tensor/record.js'
import {linear, MatmulPool} from './matmul.js'
import {addInPlace, attention, gluSilu, rmsNorm, ropeTables} from './ops.js'

export interface ForwardOptions {
  /** Also return the residual stream after each layer. */
  collectHidden?: boolean
  /** Worker threads for the matmuls (default: one per core, 0 = main thread only). */
  threads?: number
  /** Run the matmuls on this pool (left open: several passes share its workers) instead of one of `threads` of its own. */
  pool?: MatmulPool
  /** Told after each layer (and the output layer): done of total. */
  onLayer?: (done: number, total: number) => void
}

export interface ForwardResult {
  tokens: number[]
  vocab: number
  /** [T, vocab] row-major. */
  logits: Float32Array
  /** Output of each layer, [T, model_dim] each. */
  hidden?: Float32Array[]
}

export function checkTokens(tokens: readonly number[], vocab: number): void {
  if (tokens.length === 0) throw new UsageError('verify.tokens.empty', 'no tokens to run: give at least one token id')
  tokens.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= vocab) {
      throw new UsageError('verify.tokens.range', `token ${i} is ${t}: ids must be integers in [0, ${vocab})`, {index: i, token: t})
    }
  })
}

export {MatmulPool, matmulThreads} from './matmul.js'

export async function runForward(checkpoint: Checkpoint, tokens: number[], options: ForwardOptions = {}): Promise<ForwardResult> {
  const {config} = checkpoint
  const byName = new Map(checkpoint.tensors.map((t) => [t.name, t]))
  const tensor = (name: string): TensorRecord => {
    const t = byName.get(name)
    if (!t) throw new MappingError('tensor.missing', `tensor ${name} is missing`, {tensor: name})
    return t
  }
  const embedding = tensor(GLOBAL_TENSORS.token_embeddings)
  const vocab = embedding.shape[0]!
  checkTokens(tokens, vocab)
  const T = tokens.length
  const d = config.model_dim
  const hd = config.head_dim

  // Embedding lookup: only the rows of the prompt's tokens are read.
  const x = new Float32Array(T * d)
  const rowBytes = d * dtypeSize(embedding.dtype)
  for (let t = 0; t < T; t++) {
    x.set(toFloat32(await embedding.read(tokens[t]! * rowBytes, (tokens[t]! + 1) * rowBytes), embedding.dtype), t * d)
  }

  const {cos, sin} = ropeTables(T, hd, config.rope_freq_constant)
  const hidden: Float32Array[] = []
  const pool = options.pool ?? new MatmulPool(options.threads)
  try {
    for (const [i, dims] of layerDims(config).entries()) {
      const w = (role: LayerRole): TensorRecord => tensor(layerTensorName(role, i))
      const h = rmsNorm(x, T, await readFloat32(w('attn_norm')))
      const qkv = await linear(pool, h, T, w('qkv_proj'))
      const attn = attention(qkv, {tokens: T, qHeads: dims.qHeads, kvHeads: dims.kvHeads, headDim: hd},
        await readFloat32(w('q_norm')), await readFloat32(w('k_norm')), cos, sin)
      addInPlace(x, await linear(pool, attn, T, w('out_proj')))
      const h2 = rmsNorm(x, T, await readFloat32(w('ffn_norm')))
      const gated = gluSilu(await linear(pool, h2, T, w('proj_1')), T, dims.ffnDim)
      addInPlace(x, await linear(pool, gated, T, w('proj_2')))
      if (options.collectHidden) hidden.push(x.slice())
      options.onLayer?.(i + 1, config.num_transformer_layers + 1)
    }
    const final = rmsNorm(x, T, await readFloat32(tensor(GLOBAL_TENSORS.norm)))
    // Tied output layer: logits = h · token_embeddingsᵀ.
    const logits = await linear(pool, final, T, embedding)
    options.onLayer?.(config.num_transformer_layers + 1, config.num_transformer_layers + 1)
    return {tokens: [...tokens], vocab, logits, ...(options.collectHidden ? {hidden} : {})}
  } finally {
    if (!options.pool) await pool.close()
  }
}
