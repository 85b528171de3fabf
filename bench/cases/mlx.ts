/** MLX case: the shared 1.1B f32 HF model → MLX 4-bit (mlx-lm layout, group 64), against `cp` of the source. */
import path from 'node:path'
import {cpOf, ensureHf11, hf11} from '../sources.js'
import {type BenchCase} from '../types.js'

export const cases: BenchCase[] = [
  {
    name: 'mlx/1.1B-4bit',
    description: 'convert 1.1B f32 → mlx --quantize 4 (group 64; reads 4.3 GB, writes 0.6 GB)',
    setup: ensureHf11,
    command: (ctx) => [...ctx.cli, 'convert', hf11(ctx), '--to', 'mlx', '--quantize', '4', '--out', path.join(ctx.work, 'out-mlx-q4')],
    baseline: (ctx) => cpOf(ctx, hf11(ctx), 'cp-mlx'),
    outputs: (ctx) => [path.join(ctx.work, 'out-mlx-q4'), path.join(ctx.work, 'cp-mlx')],
    bytes: (ctx) => ctx.sizeOf(hf11(ctx)),
    targets: {rssMB: 300},
  },
  {
    name: 'mlx/1.1B-mxfp4',
    description: 'convert 1.1B f32 → mlx --q-mode mxfp4 (MLX fp4 e2m1, e8m0 scale per 32; writes 0.6 GB)',
    setup: ensureHf11,
    command: (ctx) => [...ctx.cli, 'convert', hf11(ctx), '--to', 'mlx', '--q-mode', 'mxfp4', '--out', path.join(ctx.work, 'out-mlx-mxfp4')],
    baseline: (ctx) => cpOf(ctx, hf11(ctx), 'cp-mlx-mxfp4'),
    outputs: (ctx) => [path.join(ctx.work, 'out-mlx-mxfp4'), path.join(ctx.work, 'cp-mlx-mxfp4')],
    bytes: (ctx) => ctx.sizeOf(hf11(ctx)),
    targets: {rssMB: 300},
  },
]
