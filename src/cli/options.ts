/** Turning shared flag values into library options. */
import {UsageError} from '../errors.js'
import {type Quantization, type WriteOptions} from '../formats/types.js'
import {checkEmbeddingBits} from '../formats/mlx/recipe.js'
import {isMlxFpMode, MLX_FP_MODE_NAMES, MLX_FP_MODES} from '../quant/mlx-fp.js'
import {parseFloatDType} from '../tensor/dtype.js'
import {ggufQuantTargets, quantizationOf} from '../formats/gguf/index.js'

/** The GGUF file types `--dtype` takes (llama-quantize's names: q8_0, q4_0, …, q4_k_m, …), lower case. */
export const GGUF_DTYPES: readonly string[] = ggufQuantTargets()

/**
 * llama-quantize's bare K names that are aliases (its quantize.cpp): Q3_K, Q4_K and Q5_K mean the
 * _M file types. Q2_K and Q6_K are file types of their own (GGUF_DTYPES).
 */
export const GGUF_DTYPE_ALIASES: Readonly<Record<string, string>> = {q3_k: 'q3_k_m', q4_k: 'q4_k_m', q5_k: 'q5_k_m'}

/** `--dtype` may name a float type, or a GGUF file type (`q8_0`, `q4_0`, `q4_k_m`, …; 1-D tensors stay F32). */
export function dtypeOptions(dtype: string | undefined): Pick<WriteOptions, 'dtype' | 'quantization'> {
  if (dtype === undefined) return {}
  const name = GGUF_DTYPE_ALIASES[dtype.toLowerCase()] ?? dtype.toLowerCase()
  if (GGUF_DTYPES.includes(name)) return {dtype: 'F16', quantization: quantizationOf(name)}
  return {dtype: parseFloatDType(dtype)}
}

const SIZE_UNITS: Record<string, number> = {'': 1, B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 1024, MIB: 1024 ** 2, GIB: 1024 ** 3}

/** "5GB", "500MB", "2GiB" or a byte count. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text)
  const unit = m ? SIZE_UNITS[m[2]!.toUpperCase()] : undefined
  if (!m || unit === undefined || Number(m[1]) <= 0) throw new UsageError('flag.size', `invalid size "${text}" (e.g. 5GB, 500MB, 2GiB)`)
  return Math.floor(Number(m[1]) * unit)
}

function checkGroupSize(g: number): number {
  if (![32, 64, 128].includes(g)) throw new UsageError('flag.group_size', `--group-size ${g} is not supported (expected 32, 64 or 128)`)
  return g
}

export function quantizationOption(bits: number | undefined, groupSize: number | undefined, qMode?: string, to?: string): Quantization | undefined {
  if (qMode !== undefined && qMode !== 'affine') return fpModeOption(qMode, bits, groupSize, to)
  if (bits === undefined) {
    if (groupSize !== undefined) throw new UsageError('flag.group_size', '--group-size needs --quantize')
    return undefined
  }
  if (![2, 3, 4, 5, 6, 8].includes(bits)) throw new UsageError('flag.quantize', `--quantize ${bits} is not supported (expected 2, 3, 4, 5, 6 or 8)`)
  return {bits, groupSize: checkGroupSize(groupSize ?? 64), mode: 'affine'}
}

/** --q-recipe / --quantize-embedding: MLX targets only, checked before any work. */
export function mlxQuantFlags(recipe: string | undefined, embedding: string | undefined, to: string, quantize: number | undefined, groupSize?: number): WriteOptions['mlxQuant'] {
  if (recipe === undefined && embedding === undefined) return undefined
  const flag = recipe !== undefined ? '--q-recipe' : '--quantize-embedding'
  if (to !== 'mlx') throw new UsageError('flag.target', `${flag} applies to --to mlx (per-module MLX quantization), not --to ${to}`)
  let bits: number | 'none' | undefined
  if (embedding !== undefined) {
    bits = embedding === 'none' ? 'none' : /^\d+$/.test(embedding) ? Number(embedding) : NaN
    checkEmbeddingBits(bits, embedding)
    if (recipe === undefined && quantize === undefined) throw new UsageError('flag.quantize_embedding', '--quantize-embedding needs --quantize or --q-recipe (the width of the other matrices)')
  }
  if (recipe !== undefined && quantize === undefined && groupSize !== undefined) checkGroupSize(groupSize)
  return {...(recipe !== undefined ? {recipe} : {}), ...(bits !== undefined ? {embedding: bits} : {}), ...(recipe !== undefined && quantize === undefined && groupSize !== undefined ? {groupSize} : {})}
}

/** `--q-mode mxfp4|nvfp4|mxfp8` (MLX only): the mode fixes the width and the group size, so --quantize/--group-size may only repeat them. */
function fpModeOption(qMode: string, bits: number | undefined, groupSize: number | undefined, to: string | undefined): Quantization {
  if (!isMlxFpMode(qMode)) throw new UsageError('flag.q_mode', `--q-mode ${qMode} is not supported (expected affine, ${MLX_FP_MODE_NAMES.join(', ')})`)
  if (to !== undefined && to !== 'mlx') throw new UsageError('flag.target', `--q-mode ${qMode} applies to --to mlx (MLX's quantization modes), not --to ${to}`)
  const m = MLX_FP_MODES[qMode]
  if (bits !== undefined && bits !== m.bits) throw new UsageError('flag.quantize', `--q-mode ${qMode} stores ${m.bits}-bit elements: drop --quantize ${bits}`)
  if (groupSize !== undefined && groupSize !== m.groupSize) throw new UsageError('flag.group_size', `--q-mode ${qMode} uses groups of ${m.groupSize} (MLX fixes it): drop --group-size ${groupSize}`)
  return {bits: m.bits, groupSize: m.groupSize, mode: qMode}
}

/** The targets that are always a folder (config, tokenizer and weights side by side). */
const FOLDER_TARGETS: Record<string, string> = {
  hf: 'a Hugging Face folder (model.safetensors, config.json, tokenizer)',
  mlx: 'an MLX folder (model.safetensors or weights.npz, config.json, tokenizer)',
  onnx: 'a folder (onnx/model.onnx, config.json, tokenizer: what transformers.js loads)',
}

/** `--out t.onnx` for a folder target would make a folder named like a file: refuse before any work. */
export function checkOutFits(to: string, out: string): void {
  const what = FOLDER_TARGETS[to]
  const ext = /\.(onnx|safetensors|gguf|pt|pth|npz|bin)$/i.exec(out.replace(/[\\/]+$/, ''))
  if (!what || !ext) return
  const folder = out.replace(/[\\/]+$/, '').slice(0, -ext[0].length)
  throw new UsageError('flag.out', `--out ${out}: --to ${to} writes ${what}, not one .${ext[1]!.toLowerCase()} file; pass a folder name, e.g. --out ${folder}-${to}`)
}
