/**
 * Every storage scheme, by name: one module per scheme (its kernel, its name, its bits per weight),
 * and the PyTorch reference (src/verify/python/quant_ref.py) implements each under the same name.
 */
import {UsageError} from '../errors.js'
import {BF16_SCHEME, F16_SCHEME, F32_SCHEME} from './float.js'
import {MLX_AFFINE} from './mlx-affine.js'
import {GGUF_Q8_0} from './q8_0.js'
import {type Scheme} from './types.js'

export const SCHEMES: Record<string, Scheme> = {
  f32: F32_SCHEME,
  f16: F16_SCHEME,
  bf16: BF16_SCHEME,
  mlx_affine: MLX_AFFINE,
  gguf_q8_0: GGUF_Q8_0,
}

export function schemeFor(name: string): Scheme {
  const scheme = SCHEMES[name]
  if (!scheme) throw new UsageError('quant.scheme', `unknown storage scheme "${name}" (known: ${Object.keys(SCHEMES).join(', ')})`)
  return scheme
}

export {floatSchemeName} from './float.js'
export type {EncodingDiff, Encoded, FirstDifference, Scheme, SchemeParams} from './types.js'

// ---- MLX's floating-point modes (mxfp4, nvfp4, mxfp8): src/quant/mlx-fp.ts ----
import {MLX_MXFP4, MLX_MXFP8, MLX_NVFP4} from './mlx-fp.js'
SCHEMES[MLX_MXFP4.name] = MLX_MXFP4
SCHEMES[MLX_NVFP4.name] = MLX_NVFP4
SCHEMES[MLX_MXFP8.name] = MLX_MXFP8
// ONNX weight-only schemes (model_quantized.onnx).
import {ONNX_INT8} from './onnx-int8.js'
SCHEMES.onnx_int8 = ONNX_INT8
import {ONNX_Q4} from './onnx-q4.js'
SCHEMES.onnx_q4 = ONNX_Q4
// ggml's 32-value legacy block types (llama-quantize Q4_0 … Q5_1): src/quant/gguf-legacy.ts.
import {GGUF_Q4_0, GGUF_Q4_1, GGUF_Q5_0, GGUF_Q5_1} from './gguf-legacy.js'
for (const s of [GGUF_Q4_0, GGUF_Q4_1, GGUF_Q5_0, GGUF_Q5_1]) SCHEMES[s.name] = s
// ggml's K-quants (llama-quantize Q2_K … Q6_K, 256-value super-blocks): src/quant/gguf-k.ts.
import {GGUF_Q2_K, GGUF_Q3_K, GGUF_Q4_K, GGUF_Q5_K, GGUF_Q6_K} from './gguf-k.js'
for (const s of [GGUF_Q2_K, GGUF_Q3_K, GGUF_Q4_K, GGUF_Q5_K, GGUF_Q6_K]) SCHEMES[s.name] = s
