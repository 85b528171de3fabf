/**
 * The model files an ONNX export can write (`--variants`), by transformers.js dtype name: each
 * file is `model` + transformers.js's suffix for that dtype (its DEFAULT_DTYPE_SUFFIX_MAPPING:
 * fp32 '', fp16 '_fp16', q8 '_quantized', q4 '_q4', q4f16 '_q4f16'). Kept apart from the writer
 * so `convert` can check `--variants` before any work without loading protobufjs.
 */
import path from 'node:path'
import {UsageError, VerificationError} from '../../errors.js'
import {type FloatDType} from '../../tensor/dtype.js'

/** The weight-only int8 file (transformers.js dtype `q8`). */
export const Q8_FILE = 'model_quantized.onnx'
/** The MatMulNBits 4-bit file (transformers.js dtype `q4`). */
export const Q4_FILE = 'model_q4.onnx'
/** MatMulNBits with f16 scales and f16 matmuls, f16 other weights (transformers.js dtype `q4f16`). */
export const Q4F16_FILE = 'model_q4f16.onnx'

export const ONNX_VARIANTS = ['fp32', 'fp16', 'q8', 'q4', 'q4f16'] as const
export type OnnxVariant = (typeof ONNX_VARIANTS)[number]
interface VariantSpec {
  file: string
  /** Storage dtype of the weights that are not quantized (norms; the embedding unless q8). */
  dtype: FloatDType
  quant?: 'q8' | 'q4' | 'q4f16'
}
export const VARIANT_SPECS: Readonly<Record<OnnxVariant, VariantSpec>> = {
  fp32: {file: 'model.onnx', dtype: 'F32'},
  fp16: {file: 'model_fp16.onnx', dtype: 'F16'},
  q8: {file: Q8_FILE, dtype: 'F32', quant: 'q8'},
  q4: {file: Q4_FILE, dtype: 'F32', quant: 'q4'},
  q4f16: {file: Q4F16_FILE, dtype: 'F16', quant: 'q4f16'},
}
const VARIANT_ALIASES: Record<string, OnnxVariant> = {f32: 'fp32', float32: 'fp32', f16: 'fp16', float16: 'fp16', quantized: 'q8'}

/** `--variants fp16,q8,q4` → the variants in the order given (the first is transformers.js's default). */
export function parseOnnxVariants(list: string): OnnxVariant[] {
  const out: OnnxVariant[] = []
  for (const token of list.split(',').map((t) => t.trim().toLowerCase()).filter(Boolean)) {
    const v = (ONNX_VARIANTS as readonly string[]).includes(token) ? (token as OnnxVariant) : VARIANT_ALIASES[token]
    if (!v) throw new UsageError('onnx.variants', `unknown ONNX variant "${token}" (expected ${ONNX_VARIANTS.join(', ')}, comma-separated)`)
    if (out.includes(v)) throw new UsageError('onnx.variants', `ONNX variant "${v}" is listed twice`)
    out.push(v)
  }
  if (out.length === 0) throw new UsageError('onnx.variants', `--variants needs at least one of ${ONNX_VARIANTS.join(', ')}`)
  return out
}

/** The variant a model file name is (model_q4f16.onnx → q4f16), if it is one of ours. */
export function variantOfFile(file: string): OnnxVariant | undefined {
  return ONNX_VARIANTS.find((v) => VARIANT_SPECS[v].file === path.basename(file))
}

/**
 * What `convert --variants … --verify` verifies: each variant's model file among the files written,
 * the default first (read as the folder itself, `out`, as transformers.js and `verify OUT` read it).
 */
export function variantTargets(out: string, written: readonly {path: string}[], variants: readonly OnnxVariant[]): Array<{variant: OnnxVariant; path: string}> {
  return variants.map((variant, i) => {
    if (i === 0) return {variant, path: out}
    const file = written.find((f) => path.basename(f.path) === VARIANT_SPECS[variant].file)
    if (!file) throw new VerificationError('verify.variant', `${VARIANT_SPECS[variant].file} (${variant}) is not among the files written to ${out}`)
    return {variant, path: file.path}
  })
}
