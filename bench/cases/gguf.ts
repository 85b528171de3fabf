/** GGUF cases: the shared 1.1B f32 HF model → GGUF F16 and Q8_0, each against `cp` of the source. */
import path from 'node:path'
import {cpOf, ensureHf11, hf11} from '../sources.js'
import {type BenchCase, type BenchContext} from '../types.js'

function ggufCase(dtype: 'f16' | 'q8_0', what: string): BenchCase {
  const out = (ctx: BenchContext) => path.join(ctx.work, `out-${dtype}.gguf`)
  const cp = (ctx: BenchContext) => path.join(ctx.work, `cp-gguf-${dtype}`)
  return {
    name: `gguf/1.1B-${dtype}`,
    description: `convert 1.1B f32 → gguf --dtype ${dtype} (${what})`,
    setup: ensureHf11,
    command: (ctx) => [...ctx.cli, 'convert', hf11(ctx), '--to', 'gguf', '--dtype', dtype, '--out', out(ctx)],
    baseline: (ctx) => cpOf(ctx, hf11(ctx), path.basename(cp(ctx))),
    outputs: (ctx) => [out(ctx), cp(ctx)],
    bytes: (ctx) => ctx.sizeOf(hf11(ctx)),
    targets: {rssMB: 300},
  }
}

export const cases: BenchCase[] = [
  ggufCase('f16', 'reads 4.3 GB, writes 2.2 GB'),
  ggufCase('q8_0', 'reads 4.3 GB, writes 1.15 GB'),
]
