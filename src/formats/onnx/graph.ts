/**
 * The OpenELM decoder as an ONNX graph (DESIGN §3, §4.4), standard ops only (opset 17).
 *
 * I/O (what transformers.js and onnxruntime expect):
 *   input_ids int64 [batch_size, sequence_length], attention_mask int64 [batch_size, total_sequence_length],
 *   past_key_values.{i}.key/.value f32 [batch_size, kv_heads[i], past_sequence_length, head_dim]
 *   → logits f32 [batch_size, sequence_length, vocab], present.{i}.key/.value f32 [.., total_sequence_length, ..].
 * The batch dim must be called `batch_size`: transformers.js builds its empty cache from the
 * session's input metadata and resolves only that symbol (other symbols become 0).
 *
 * Keys are cached after k_norm and before RoPE (as the HF reference does); RoPE is applied to the
 * whole key sequence every step, from cos/sin tables of `rope_max_length` rows. Query positions
 * are past_len + arange(seq), key positions arange(past_len + seq): absolute indices, padding
 * included (RoPE is relative, so left padding does not change the attention scores).
 *
 * MatMul weights (qkv_proj, out_proj, proj_1, proj_2) are constant initializers stored [in, out],
 * the layout MatMul consumes, so no Transpose runs on weights (onnxruntime's MatMulNBits quantizer
 * and other graph tools only recognise a MatMul whose B input is an initializer). The exporter
 * streams them through a transposing record and the reader transposes back to the canonical
 * [out, in]; the model's metadata_props carry `openelm.matmul_weights = in_out` so the reader can
 * tell them from older exports (canonical layout behind a Transpose node, no such entry).
 * The tied embedding stays one [vocab, d] initializer: Gather reads it and the head is a `Gemm`
 * with transB = 1 on it (2-D, so the hidden states are flattened and the logits reshaped back);
 * torch.onnx / optimum exports instead carry a second, transposed copy (`onnx::MatMul_*`) for the
 * head, which costs vocab × d more bytes (docs/onnx.md).
 * f16 exports store f16 weights and `Cast` them to f32: all arithmetic, the cache and the logits
 * stay f32 (the file is half the size; the numbers differ from f32 only by the weight rounding).
 */
import {type OpenElmConfig, layerDims, RMS_NORM_EPS} from '../../model/config.js'
import {expectedTensors} from '../../model/tensors.js'
import {dtypeSize, type FloatDType} from '../../tensor/dtype.js'
import {numel} from '../../tensor/record.js'
import {GraphBuilder} from './builder.js'
import {toOnnxName} from './names.js'

export const OPSET = 17
export const IR_VERSION = 8
export const ROPE_COS = 'rope.cos_cached'
export const ROPE_SIN = 'rope.sin_cached'
/** Replaces masked attention scores; finite so a fully masked (padding) row gives no NaN. */
const MASKED_SCORE = -3.4028234663852886e38

/** metadata_props entry marking [in, out] MatMul weight initializers (absent in older exports). */
export const LAYOUT_KEY = 'openelm.matmul_weights'
export const LAYOUT_IN_OUT = 'in_out'
/** Name suffix of an int8 weight's per-channel scales initializer. */
export const INT8_SCALE_SUFFIX = '_scale'
/** Name suffix of a MatMulNBits weight's scales initializer. */
export const Q4_SCALES_SUFFIX = '_scales'
/** metadata_props entry: {initializer name: K} of the MatMulNBits weights (K is not in their shape when padded). */
export const Q4_K_KEY = 'openelm.matmul_nbits_k'
export const MS_DOMAIN = 'com.microsoft'

/** Canonical names of the weights the graph consumes through MatMul (stored [in, out]). */
export function isMatMulWeight(canonical: string): boolean {
  return /\.(qkv_proj|out_proj|proj_1|proj_2)\.weight$/.test(canonical)
}

export interface GraphOptions {
  /** Storage dtype of the weights (computation is always f32). */
  dtype: FloatDType
  /**
   * Weight-only quantization of the matrices: `q8` stores the linear weights and the embedding as
   * int8 codes + per-output-channel f32 scales (`<name>_scale`) behind `DequantizeLinear`
   * (scheme onnx_int8); norm weights stay `dtype`. `q4` stores the linear weights as MatMulNBits
   * blocks with f32 scales (scheme onnx_q4); `q4f16` with f16 scales, and its MatMulNBits run in
   * f16 (the activations are cast to f16 in front of each and back to f32 after it), the other
   * weights stored `dtype` (F16) behind a Cast, as transformers.js's q4f16 files (DESIGN §4.4).
   */
  quant?: 'q8' | 'q4' | 'q4f16'
  /** RMSNorm as decomposed standard ops (default) or onnxruntime's `SimplifiedLayerNormalization`. */
  rmsNorm?: 'decomposed' | 'contrib'
  /** Testing hooks that break the export on purpose (swapped RoPE halves, wrong KV head count). */
  sabotage?: {swapRopeHalves?: boolean; kvHeadsDelta?: number; tileKvHeads?: boolean}
}

/** Cos/sin tables [rope_max_length, head_dim], f32, computed as HF does (f32 inv_freq and angles). */
export function ropeTables(config: OpenElmConfig): {cos: Float32Array; sin: Float32Array} {
  const hd = config.head_dim
  const rows = config.rope_max_length
  const half = hd / 2
  const invFreq = new Float32Array(half)
  for (let j = 0; j < half; j++) invFreq[j] = 1 / Math.fround(config.rope_freq_constant ** Math.fround((2 * j) / hd))
  const cos = new Float32Array(rows * hd)
  const sin = new Float32Array(rows * hd)
  for (let p = 0; p < rows; p++) {
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(p * invFreq[j])
      const c = Math.cos(angle)
      const s = Math.sin(angle)
      cos[p * hd + j] = c
      cos[p * hd + j + half] = c
      sin[p * hd + j] = s
      sin[p * hd + j + half] = s
    }
  }
  return {cos, sin}
}

export function buildOpenElmGraph(config: OpenElmConfig, options: GraphOptions): GraphBuilder {
  const g = new GraphBuilder('openelm')
  const dims = layerDims(config)
  const hd = config.head_dim
  const D = config.model_dim
  const wdtype = options.dtype

  // Weights, in canonical order, under their ONNX (HF) names; MatMul weights as [in, out].
  g.metadata[LAYOUT_KEY] = LAYOUT_IN_OUT
  const weight = new Map<string, string>()
  const nbits = new Map<string, {n: number; k: number}>()
  for (const t of expectedTensors(config)) {
    const name = toOnnxName(t.name)
    const matmul = isMatMulWeight(t.name)
    const shape = matmul ? [t.shape[1], t.shape[0]] : t.shape
    if ((options.quant === 'q4' || options.quant === 'q4f16') && matmul) {
      // MatMulNBits: B [N, K/32, 16] packed 4-bit codes, scales [N·K/32] (scheme onnx_q4), f32 or f16.
      const [n, k] = t.shape as [number, number]
      const nb = Math.ceil(k / 32)
      const scaleType = options.quant === 'q4f16' ? 'F16' : 'F32'
      g.initializer({name, dtype: 'U8', shape: [n, nb, 16], byteLength: n * nb * 16})
      g.initializer({name: `${name}${Q4_SCALES_SUFFIX}`, dtype: scaleType, shape: [n * nb], byteLength: n * nb * dtypeSize(scaleType)})
      nbits.set(t.name, {n, k})
      continue
    }
    if (options.quant === 'q8' && (matmul || t.name === 'token_embeddings.weight')) {
      // Codes [in, out] (MatMul) or [vocab, d] (embedding); one scale per output channel / token.
      g.initializer({name, dtype: 'I8', shape, byteLength: numel(t.shape)})
      const scale = g.initializer({name: `${name}${INT8_SCALE_SUFFIX}`, dtype: 'F32', shape: [t.shape[0]], byteLength: t.shape[0] * 4})
      weight.set(t.name, g.op('DequantizeLinear', [name, scale], {axis: matmul ? 1 : 0}, 'dequant_weight'))
      continue
    }
    g.initializer({name, dtype: wdtype, shape, byteLength: numel(t.shape) * dtypeSize(wdtype)})
    weight.set(t.name, wdtype === 'F32' ? name : g.op('Cast', [name], {to: 1}, 'cast_weight'))
  }
  const w = (canonical: string): string => weight.get(canonical)!
  const linear = (x: string, canonical: string, label: string): string => {
    const q4 = nbits.get(canonical)
    if (!q4) return g.op('MatMul', [x, w(canonical)], undefined, label)
    const name = toOnnxName(canonical)
    const f16 = options.quant === 'q4f16'
    const a = f16 ? g.op('Cast', [x], {to: 10}, label) : x
    const y = g.node('MatMulNBits', [a, name, `${name}${Q4_SCALES_SUFFIX}`], {domain: MS_DOMAIN, attrs: {K: q4.k, N: q4.n, bits: 4, block_size: 32}, name: label})[0]
    return f16 ? g.op('Cast', [y], {to: 1}, label) : y
  }
  if (nbits.size > 0) {
    g.domains.push(MS_DOMAIN)
    g.metadata[Q4_K_KEY] = JSON.stringify(Object.fromEntries([...nbits].map(([c, {k}]) => [toOnnxName(c), k])))
  }
  g.initializer({name: ROPE_COS, dtype: 'F32', shape: [config.rope_max_length, hd], byteLength: config.rope_max_length * hd * 4})
  g.initializer({name: ROPE_SIN, dtype: 'F32', shape: [config.rope_max_length, hd], byteLength: config.rope_max_length * hd * 4})

  // Inputs and outputs.
  const inputIds = g.input('input_ids', 'I64', ['batch_size', 'sequence_length'])
  const attentionMask = g.input('attention_mask', 'I64', ['batch_size', 'total_sequence_length'])
  const past: {key: string; value: string}[] = []
  const declaredKv = (i: number): number => dims[i].kvHeads + (options.sabotage?.kvHeadsDelta ?? 0)
  for (let i = 0; i < dims.length; i++) {
    const kv = declaredKv(i)
    past.push({
      key: g.input(`past_key_values.${i}.key`, 'F32', ['batch_size', kv, 'past_sequence_length', hd]),
      value: g.input(`past_key_values.${i}.value`, 'F32', ['batch_size', kv, 'past_sequence_length', hd]),
    })
  }
  g.output('logits', 'F32', ['batch_size', 'sequence_length', config.vocab_size])
  for (let i = 0; i < dims.length; i++) {
    g.output(`present.${i}.key`, 'F32', ['batch_size', declaredKv(i), 'total_sequence_length', hd])
    g.output(`present.${i}.value`, 'F32', ['batch_size', declaredKv(i), 'total_sequence_length', hd])
  }

  // Lengths: past from the cache, total = past + seq.
  const pastLen = g.op('Shape', [past[0].key], {start: 2, end: 3}, 'past_len') // [1]
  const seqLen = g.op('Shape', [inputIds], {start: 1, end: 2}, 'seq_len') // [1]
  const totalLen = g.op('Add', [pastLen, seqLen], undefined, 'total_len') // [1]
  const zero = g.ints([0])
  const axis0 = g.ints([0])
  // RoPE rows: queries [past, total), keys [0, total).
  const cosQ = g.op('Slice', [ROPE_COS, pastLen, totalLen, axis0], undefined, 'cos_q') // [S, hd]
  const sinQ = g.op('Slice', [ROPE_SIN, pastLen, totalLen, axis0], undefined, 'sin_q')
  const cosK = g.op('Slice', [ROPE_COS, zero, totalLen, axis0], undefined, 'cos_k') // [L, hd]
  const sinK = g.op('Slice', [ROPE_SIN, zero, totalLen, axis0], undefined, 'sin_k')

  // Mask [B, 1, S, L]: key j visible to query i iff j <= past + i and attention_mask[b, j] = 1.
  const squeeze = (x: string): string => g.op('Squeeze', [x, axis0])
  const keyPos = g.op('Range', [g.constant('I64', [], [0]), squeeze(totalLen), g.constant('I64', [], [1])], undefined, 'key_pos') // [L]
  const queryPos = g.op('Range', [squeeze(pastLen), squeeze(totalLen), g.constant('I64', [], [1])], undefined, 'query_pos') // [S]
  const causal = g.op('LessOrEqual', [
    g.op('Unsqueeze', [keyPos, g.ints([0])]), // [1, L]
    g.op('Unsqueeze', [queryPos, g.ints([1])]), // [S, 1]
  ], undefined, 'causal') // [S, L]
  const padding = g.op('Unsqueeze', [g.op('Cast', [attentionMask], {to: 9}), g.ints([1, 2])], undefined, 'padding') // [B, 1, 1, L]
  const mask = g.op('And', [causal, padding], undefined, 'mask') // [B, 1, S, L]
  const maskedScore = g.scalar(MASKED_SCORE)
  const scale = g.scalar(1 / Math.sqrt(hd))

  const rmsNorm = (x: string, weightName: string, label: string): string => {
    if (options.rmsNorm === 'contrib') {
      return g.node('SimplifiedLayerNormalization', [x, weightName], {attrs: {axis: -1, epsilon: {float: RMS_NORM_EPS}}, name: label})[0]
    }
    const meanSquare = g.op('ReduceMean', [g.op('Mul', [x, x], undefined, label)], {axes: [-1], keepdims: 1}, label)
    const rms = g.op('Sqrt', [g.op('Add', [meanSquare, g.scalar(RMS_NORM_EPS)], undefined, label)], undefined, label)
    return g.op('Mul', [g.op('Div', [x, rms], undefined, label), weightName], undefined, label)
  }
  const halfSplit = g.ints([hd / 2, hd / 2])
  const rope = (x: string, cos: string, sin: string, label: string): string => {
    const [x1, x2] = g.node('Split', [x, halfSplit], {outputs: 2, attrs: {axis: -1}, name: label})
    const rotated = options.sabotage?.swapRopeHalves
      ? g.op('Concat', [x1, g.op('Neg', [x2], undefined, label)], {axis: -1}, label)
      : g.op('Concat', [g.op('Neg', [x2], undefined, label), x1], {axis: -1}, label)
    return g.op('Add', [g.op('Mul', [x, cos], undefined, label), g.op('Mul', [rotated, sin], undefined, label)], undefined, label)
  }

  let x = g.op('Gather', [w('token_embeddings.weight'), inputIds], {axis: 0}, 'embed') // [B, S, D]
  for (let i = 0; i < dims.length; i++) {
    const {qHeads, kvHeads, ffnDim} = dims[i]
    const groups = qHeads / kvHeads
    const L = `l${i}`
    const h = rmsNorm(x, w(`layers.${i}.attn_norm.weight`), `${L}_attn_norm`)
    const qkv = linear(h, `layers.${i}.attn.qkv_proj.weight`, `${L}_qkv`)
    const [q0, k0, v0] = g.node('Split', [qkv, g.ints([qHeads * hd, kvHeads * hd, kvHeads * hd])], {outputs: 3, attrs: {axis: -1}, name: `${L}_qkv_split`})
    const heads = (t: string, n: number, label: string): string =>
      g.op('Transpose', [g.op('Reshape', [t, g.ints([0, 0, n, hd])], undefined, label)], {perm: [0, 2, 1, 3]}, label) // [B, n, S, hd]
    let q = heads(q0, qHeads, `${L}_q`)
    let k = heads(k0, kvHeads, `${L}_k`)
    const v = heads(v0, kvHeads, `${L}_v`)
    q = rmsNorm(q, w(`layers.${i}.attn.q_norm.weight`), `${L}_q_norm`)
    k = rmsNorm(k, w(`layers.${i}.attn.k_norm.weight`), `${L}_k_norm`)
    // Cache un-rotated keys.
    const presentKey = g.node('Concat', [past[i].key, k], {outputs: [`present.${i}.key`], attrs: {axis: 2}, name: `${L}_present_key`})[0]
    const presentValue = g.node('Concat', [past[i].value, v], {outputs: [`present.${i}.value`], attrs: {axis: 2}, name: `${L}_present_value`})[0]
    q = rope(q, cosQ, sinQ, `${L}_rope_q`)
    let kr = rope(presentKey, cosK, sinK, `${L}_rope_k`) // [B, kv, L, hd]
    let vr = presentValue
    if (groups > 1) {
      // repeat_interleave over the head axis: [B, kv, L, hd] → [B, kv, g, L, hd] → [B, kv*g, L, hd].
      // (The `tileKvHeads` sabotage repeats the whole head block instead: [B, g, kv, L, hd].)
      const tile = options.sabotage?.tileKvHeads === true
      const expand = g.ints(tile ? [1, groups, 1, 1, 1] : [1, 1, groups, 1, 1])
      const repeat = (t: string, label: string): string =>
        g.op('Reshape', [g.op('Expand', [g.op('Unsqueeze', [t, g.ints([tile ? 1 : 2])], undefined, label), expand], undefined, label), g.ints([0, qHeads, -1, hd])], undefined, label)
      kr = repeat(kr, `${L}_repeat_k`)
      vr = repeat(vr, `${L}_repeat_v`)
    }
    const scores = g.op('Mul', [g.op('MatMul', [q, g.op('Transpose', [kr], {perm: [0, 1, 3, 2]}, `${L}_kt`)], undefined, `${L}_scores`), scale], undefined, `${L}_scores`)
    const probs = g.op('Softmax', [g.op('Where', [mask, scores, maskedScore], undefined, `${L}_masked`)], {axis: -1}, `${L}_probs`)
    const attn = g.op('Reshape', [g.op('Transpose', [g.op('MatMul', [probs, vr], undefined, `${L}_attn`)], {perm: [0, 2, 1, 3]}, `${L}_attn`), g.ints([0, 0, qHeads * hd])], undefined, `${L}_attn`)
    x = g.op('Add', [x, linear(attn, `layers.${i}.attn.out_proj.weight`, `${L}_out_proj`)], undefined, `${L}_residual`)

    const f = rmsNorm(x, w(`layers.${i}.ffn_norm.weight`), `${L}_ffn_norm`)
    const y = linear(f, `layers.${i}.ffn.proj_1.weight`, `${L}_proj_1`)
    const [gate, up] = g.node('Split', [y, g.ints([ffnDim, ffnDim])], {outputs: 2, attrs: {axis: -1}, name: `${L}_glu`})
    const silu = g.op('Mul', [gate, g.op('Sigmoid', [gate], undefined, `${L}_silu`)], undefined, `${L}_silu`)
    const down = linear(g.op('Mul', [silu, up], undefined, `${L}_glu`), `layers.${i}.ffn.proj_2.weight`, `${L}_proj_2`)
    x = g.op('Add', [x, down], undefined, `${L}_ffn_residual`)
  }
  const final = rmsNorm(x, w('norm.weight'), 'final_norm')
  // Tied head: Gemm(hidden [B*S, D], embedding [V, D], transB) → [B*S, V] → [B, S, V].
  const flat = g.op('Reshape', [final, g.ints([-1, D])], undefined, 'lm_head')
  const head = g.op('Gemm', [flat, w('token_embeddings.weight')], {transB: 1}, 'lm_head')
  const outShape = g.op('Concat', [g.op('Shape', [final], {start: 0, end: 2}, 'lm_head'), g.ints([config.vocab_size])], {axis: 0}, 'lm_head')
  g.node('Reshape', [head, outShape], {outputs: ['logits'], name: 'lm_head'})
  return g
}
