/**
 * ONNX cases: export the shared 270M (single `model.onnx`, raw_data) and 1.1B (4.3 GB > 2 GiB, so
 * `model.onnx` + `model.onnx_data` external data) f32 HF models, each against `cp` of its source.
 */
import path from 'node:path'
import {cpOf, ensureHf11, ensureHf270, hf11, hf270} from '../sources.js'
import {type BenchCase, type BenchContext} from '../types.js'

function exportCase(preset: string, src: (ctx: BenchContext) => string, setup: (ctx: BenchContext) => Promise<void>, what: string, dtype: 'f32' | 'f16' = 'f32'): BenchCase {
  const out = (ctx: BenchContext) => path.join(ctx.work, `out-onnx-${preset}-${dtype}`)
  const cp = (ctx: BenchContext) => path.join(ctx.work, `cp-onnx-${preset}-${dtype}`)
  return {
    name: `onnx/${preset}-${dtype}`,
    description: `convert ${preset} f32 → onnx ${dtype === 'f16' ? '--dtype f16 ' : ''}(${what})`,
    setup,
    command: (ctx) => [...ctx.cli, 'convert', src(ctx), '--to', 'onnx', ...(dtype === 'f16' ? ['--dtype', 'f16'] : []), '--out', out(ctx)],
    baseline: (ctx) => cpOf(ctx, src(ctx), path.basename(cp(ctx))),
    outputs: (ctx) => [out(ctx), cp(ctx)],
    bytes: (ctx) => ctx.sizeOf(src(ctx)),
    targets: {ratio: 1.25, rssMB: 300},
  }
}

/**
 * Quantized exports (issue 14): --quantize 4 → model_q4.onnx (MatMulNBits), 8 → model_quantized.onnx
 * (int8). At 1.1B, issue 15's target for a quantizing path: ≤ 2 × cp.
 */
function quantCase(preset: '270M' | '1.1B', bits: 4 | 8): BenchCase {
  const src = preset === '270M' ? hf270 : hf11
  const out = (ctx: BenchContext) => path.join(ctx.work, `out-onnx-${preset}-q${bits}`)
  const cp = (ctx: BenchContext) => path.join(ctx.work, `cp-onnx-${preset}-q${bits}`)
  return {
    name: `onnx/${preset}-q${bits}`,
    description: `convert ${preset} f32 → onnx --quantize ${bits} (${bits === 4 ? 'model_q4.onnx, MatMulNBits' : 'model_quantized.onnx, int8'})`,
    setup: preset === '270M' ? ensureHf270 : ensureHf11,
    command: (ctx) => [...ctx.cli, 'convert', src(ctx), '--to', 'onnx', '--quantize', String(bits), '--out', out(ctx)],
    baseline: (ctx) => cpOf(ctx, src(ctx), path.basename(cp(ctx))),
    outputs: (ctx) => [out(ctx), cp(ctx)],
    bytes: (ctx) => ctx.sizeOf(src(ctx)),
    targets: preset === '270M' ? {rssMB: 300} : {ratio: 2, rssMB: 300},
  }
}

/** `--quantize 4 --dtype f16` (model_q4f16.onnx) and all five variants in one run (issue 14). */
function variantsCase(name: string, what: string, flags: string[]): BenchCase {
  const out = (ctx: BenchContext) => path.join(ctx.work, `out-onnx-270M-${name}`)
  const cp = (ctx: BenchContext) => path.join(ctx.work, `cp-onnx-270M-${name}`)
  return {
    name: `onnx/270M-${name}`,
    description: `convert 270M f32 → onnx ${flags.join(' ')} (${what})`,
    setup: ensureHf270,
    command: (ctx) => [...ctx.cli, 'convert', hf270(ctx), '--to', 'onnx', ...flags, '--out', out(ctx)],
    baseline: (ctx) => cpOf(ctx, hf270(ctx), path.basename(cp(ctx))),
    outputs: (ctx) => [out(ctx), cp(ctx)],
    bytes: (ctx) => ctx.sizeOf(hf270(ctx)),
    targets: {rssMB: 300},
  }
}

export const cases: BenchCase[] = [
  quantCase('270M', 4),
  quantCase('270M', 8),
  quantCase('1.1B', 4),
  quantCase('1.1B', 8),
  variantsCase('q4f16', 'model_q4f16.onnx', ['--quantize', '4', '--dtype', 'f16']),
  variantsCase('variants', 'five model files in one folder', ['--variants', 'q4f16,fp16,q8,q4,fp32']),
  exportCase('270M', hf270, ensureHf270, '1.09 GB, one model.onnx'),
  exportCase('1.1B', hf11, ensureHf11, '4.3 GB, model.onnx + model.onnx_data external data'),
  exportCase('1.1B', hf11, ensureHf11, '4.3 GB → 2.2 GB model_fp16.onnx_data, external data', 'f16'),
]
