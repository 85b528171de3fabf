/**
 * Foundation cases: synth a 1.1B-shape f32 model (4.3 GB), then convert it to bf16 and re-shard
 * it as f32, each against a `cp` of the same source files. The synth'd model is the shared 1.1B
 * source of the other case files (bench/sources.ts).
 */
import path from 'node:path'
import {cpOf, ensureHf11, hf11, synthArgs} from '../sources.js'
import {type BenchCase} from '../types.js'

export const cases: BenchCase[] = [
  {
    name: 'found/synth-1.1B-f32',
    description: 'synth --preset 1.1B --dtype f32 (4.3 GB computed and written)',
    // Timed from scratch; the model it writes is the source of the cases below.
    beforeEach: (ctx) => ctx.remove(hf11(ctx)),
    command: (ctx) => synthArgs(ctx, '1.1B', hf11(ctx)),
    // A cp of the files synth wrote: the cost of writing the bytes alone.
    baseline: (ctx) => cpOf(ctx, hf11(ctx), 'cp-synth'),
    outputs: (ctx) => [path.join(ctx.work, 'cp-synth')],
    bytes: (ctx) => ctx.sizeOf(hf11(ctx)),
    targets: {rssMB: 300},
  },
  {
    name: 'found/convert-hf-bf16',
    description: 'convert 1.1B f32 → hf --dtype bf16 (reads 4.3 GB, writes 2.2 GB)',
    setup: ensureHf11,
    command: (ctx) => [...ctx.cli, 'convert', hf11(ctx), '--to', 'hf', '--dtype', 'bf16', '--out', path.join(ctx.work, 'out-bf16')],
    baseline: (ctx) => cpOf(ctx, hf11(ctx), 'cp-bf16'),
    outputs: (ctx) => [path.join(ctx.work, 'out-bf16'), path.join(ctx.work, 'cp-bf16')],
    bytes: (ctx) => ctx.sizeOf(hf11(ctx)),
    targets: {ratio: 1.25, rssMB: 300},
  },
  {
    name: 'found/reshard-hf-f32-2GB',
    description: 'convert 1.1B f32 → hf f32 --shard-size 2GB (reads and writes 4.3 GB)',
    setup: ensureHf11,
    command: (ctx) => [...ctx.cli, 'convert', hf11(ctx), '--to', 'hf', '--shard-size', '2GB', '--out', path.join(ctx.work, 'out-reshard')],
    baseline: (ctx) => cpOf(ctx, hf11(ctx), 'cp-reshard'),
    outputs: (ctx) => [path.join(ctx.work, 'out-reshard'), path.join(ctx.work, 'cp-reshard')],
    bytes: (ctx) => ctx.sizeOf(hf11(ctx)),
    targets: {ratio: 1.25, rssMB: 300},
  },
]
