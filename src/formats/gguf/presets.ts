/**
 * llama-quantize's file types (`llama_ftype`) as `--dtype` names, and the type it gives each tensor
 * of an OpenELM model (src/llama-quant.cpp: the ftype's default type, `llama_tensor_get_type_impl`'s
 * per-role choices, then `tensor_type_fallback` for rows that are not whole blocks). OpenELM ties the
 * output head to the token embedding (no output.weight), packs q/k/v into one attn_qkv, and has no
 * experts; llama.cpp treats a tied token_embd as the output tensor and a fused qkv as attn_v.
 */
import {UsageError} from '../../errors.js'
import {type GgufFileType} from './metadata.js'
import {GGML_BLOCK, type GgmlQuantType, type GgmlTypeName, isQuantType} from './types.js'

export interface GgufFtype {
  fileType: GgufFileType
  /** The type of every matrix the ftype's rules do not single out. */
  base: GgmlQuantType
}

/** `--dtype` names of llama-quantize's ftypes (lower case, as its presets are usually written). */
export const GGUF_FTYPES: Record<string, GgufFtype> = {
  q8_0: {fileType: 'MOSTLY_Q8_0', base: 'Q8_0'},
  q4_0: {fileType: 'MOSTLY_Q4_0', base: 'Q4_0'},
  q4_1: {fileType: 'MOSTLY_Q4_1', base: 'Q4_1'},
  q5_0: {fileType: 'MOSTLY_Q5_0', base: 'Q5_0'},
  q5_1: {fileType: 'MOSTLY_Q5_1', base: 'Q5_1'},
  q2_k: {fileType: 'MOSTLY_Q2_K', base: 'Q2_K'},
  q3_k_s: {fileType: 'MOSTLY_Q3_K_S', base: 'Q3_K'},
  q3_k_m: {fileType: 'MOSTLY_Q3_K_M', base: 'Q3_K'},
  q3_k_l: {fileType: 'MOSTLY_Q3_K_L', base: 'Q3_K'},
  q4_k_s: {fileType: 'MOSTLY_Q4_K_S', base: 'Q4_K'},
  q4_k_m: {fileType: 'MOSTLY_Q4_K_M', base: 'Q4_K'},
  q5_k_s: {fileType: 'MOSTLY_Q5_K_S', base: 'Q5_K'},
  q5_k_m: {fileType: 'MOSTLY_Q5_K_M', base: 'Q5_K'},
  q6_k: {fileType: 'MOSTLY_Q6_K', base: 'Q6_K'},
}

export function isGgufFtype(name: string): boolean {
  return Object.hasOwn(GGUF_FTYPES, name)
}

/** What llama-quantize falls back to when a row is not whole blocks of the chosen type. */
const BLOCK_FALLBACK: Partial<Record<GgmlQuantType, GgmlQuantType>> = {Q2_K: 'Q4_0', Q3_K: 'Q4_0', Q4_K: 'Q5_0', Q5_K: 'Q5_1', Q6_K: 'Q8_0'}

/** `tensor_type_fallback`: a K type's 32-value sibling, and F16 when that does not fit either. */
export function fallbackType(type: GgmlTypeName, cols: number): GgmlTypeName {
  if (!isQuantType(type) || cols % GGML_BLOCK[type].elements === 0) return type
  const fallback = BLOCK_FALLBACK[type]
  return fallback && cols % GGML_BLOCK[fallback].elements === 0 ? fallback : 'F16'
}

/** `use_more_bits`: the first and last eighth of the layers, and every third layer between. */
function useMoreBits(layer: number, layers: number): boolean {
  const eighth = Math.floor(layers / 8)
  return layer < eighth || layer >= Math.floor((7 * layers) / 8) || (layer - eighth) % 3 === 2
}

export interface TensorPlace {
  /** GGUF tensor name (`token_embd.weight`, `blk.3.ffn_down.weight`, …). */
  name: string
  /** Row length (ggml ne[0]). */
  cols: number
  layers: number
  /** llama.cpp's n_gqa(): query heads / kv heads of layer 0 (integer division). */
  gqa?: number
}

export interface FtypeOverrides {
  /** `--token-embedding-type`: the token embedding's type, whatever the ftype says. */
  tokenEmbedding?: GgmlTypeName
  /**
   * `--output-tensor-type`: the output head's type. OpenELM ties the head to token_embd, and
   * llama.cpp then quantizes token_embd as the output tensor: this type (fallback included) unless
   * `--token-embedding-type` is also given, which wins.
   */
  outputTensor?: GgmlTypeName
}

/**
 * The type llama-quantize's rules choose for this matrix under `ftype` (no importance matrix, not
 * `--pure`), before `fallbackType` for rows that are not whole blocks.
 */
export function ruleType(ftype: string, t: TensorPlace, overrides: FtypeOverrides = {}): GgmlTypeName {
  const spec = GGUF_FTYPES[ftype]
  if (!spec) throw new UsageError('gguf.dtype', `unknown GGUF type "${ftype}" (expected ${Object.keys(GGUF_FTYPES).join(', ')})`)
  const role = /^blk\.(\d+)\.(\w+)\.weight$/.exec(t.name)
  const layer = role ? Number(role[1]) : -1
  const kind = role ? role[2]! : t.name.replace(/\.weight$/, '')
  if (kind === 'token_embd' && overrides.tokenEmbedding) return overrides.tokenEmbedding
  if ((kind === 'token_embd' || kind === 'output') && overrides.outputTensor) return overrides.outputTensor
  let type: GgmlTypeName = spec.base
  const n = t.layers
  switch (kind) {
    case 'token_embd':
    case 'output':
      // The output tensor (and a tied embedding): Q6_K unless its rows are not whole blocks of the
      // base type (then Q8_0), and Q8_0 files keep Q8_0.
      type = t.cols % GGML_BLOCK[spec.base].elements !== 0 ? 'Q8_0' : spec.base === 'Q8_0' ? 'Q8_0' : 'Q6_K'
      break
    case 'attn_qkv':
      // llama.cpp counts a fused qkv as an attn_v tensor (category_is_attn_v): its rules, with the
      // attn_v counter = the layer, and n_gqa of layer 0.
      if (ftype === 'q2_k') type = (t.gqa ?? 0) >= 4 ? 'Q4_K' : 'Q3_K'
      else if (ftype === 'q3_k_m') type = layer < 2 ? 'Q5_K' : 'Q4_K'
      else if (ftype === 'q3_k_l') type = 'Q5_K'
      else if ((ftype === 'q4_k_m' || ftype === 'q5_k_m') && useMoreBits(layer, n)) type = 'Q6_K'
      else if (ftype === 'q4_k_s' && layer < 4) type = 'Q5_K'
      break
    case 'attn_output':
      if (ftype === 'q2_k') type = 'Q3_K'
      else if (ftype === 'q3_k_m') type = 'Q4_K'
      else if (ftype === 'q3_k_l') type = 'Q5_K'
      break
    case 'ffn_down':
      if (ftype === 'q2_k') type = 'Q3_K'
      else if (ftype === 'q3_k_m') type = layer < Math.floor(n / 16) ? 'Q5_K' : 'Q4_K'
      else if (ftype === 'q3_k_l') type = 'Q5_K'
      else if ((ftype === 'q4_k_m' || ftype === 'q5_k_m') && useMoreBits(layer, n)) type = 'Q6_K'
      else if (ftype === 'q4_k_s' && layer < Math.floor(n / 8)) type = 'Q5_K'
      break
    default:
      break
  }
  return type
}
