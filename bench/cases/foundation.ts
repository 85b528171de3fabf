/**
 * Foundation cases: synth a 1.1B-shape f32 model (4.3 GB), then convert it to bf16 and re-shard
 * it as f32, each against a `cp` of the same source files.
 */
import path from 'node:path'
import {type BenchCase, type BenchContext} from '../types.js'

const source = (ctx: BenchContext) => path.join(ctx.work, 'src-1.1B-f32')

async function ensureSource(ctx: BenchContext): Promise<void> {
  if (await ctx.exists(path.join(source(ctx), 'model.safetensors'))) return
  await ctx.exec([...ctx.cli, 'synth', '--preset', '1.1B', '--dtype', 'f32', '--seed', '0', '--out', source(ctx), '--force'])
}

const copyOf = (ctx: BenchContext, name: string) => ['cp', '-r', source(ctx), path.join(ctx.work, name)]

export const cases: BenchCase[] = [
  {
    name: 'found/synth-1.1B-f32',
    description: 'synth --preset 1.1B --dtype f32 (4.3 GB computed and written)',
    // Timed from scratch; the model it writes is the source of the cases below.
    beforeEach: (ctx) => ctx.remove(source(ctx)),
    command: (ctx) => [...ctx.cli, 'synth', '--preset', '1.1B', '--dtype', 'f32', '--seed', '0', '--out', source(ctx)],
    // A cp of the files synth wrote: the cost of writing the bytes alone.
    baseline: (ctx) => copyOf(ctx, 'cp-synth'),
    outputs: (ctx) => [path.join(ctx.work, 'cp-synth')],
    bytes: (ctx) => ctx.sizeOf(source(ctx)),
    targets: {rssMB: 300},
    cleanup: (ctx) => [source(ctx)],
  },
  {
    name: 'found/convert-hf-bf16',
    description: 'convert 1.1B f32 → hf --dtype bf16 (reads 4.3 GB, writes 2.2 GB)',
    setup: ensureSource,
    command: (ctx) => [...ctx.cli, 'convert', source(ctx), '--to', 'hf', '--dtype', 'bf16', '--out', path.join(ctx.work, 'out-bf16')],
    baseline: (ctx) => copyOf(ctx, 'cp-bf16'),
    outputs: (ctx) => [path.join(ctx.work, 'out-bf16'), path.join(ctx.work, 'cp-bf16')],
    bytes: (ctx) => ctx.sizeOf(source(ctx)),
    targets: {ratio: 1.25, rssMB: 300},
    cleanup: (ctx) => [source(ctx)],
  },
  {
    name: 'found/reshard-hf-f32-2GB',
    description: 'convert 1.1B f32 → hf f32 --shard-size 2GB (reads and writes 4.3 GB)',
    setup: ensureSource,
    command: (ctx) => [...ctx.cli, 'convert', source(ctx), '--to', 'hf', '--shard-size', '2GB', '--out', path.join(ctx.work, 'out-reshard')],
    baseline: (ctx) => copyOf(ctx, 'cp-reshard'),
    outputs: (ctx) => [path.join(ctx.work, 'out-reshard'), path.join(ctx.work, 'cp-reshard')],
    bytes: (ctx) => ctx.sizeOf(source(ctx)),
    targets: {ratio: 1.25, rssMB: 300},
    cleanup: (ctx) => [source(ctx)],
  },
]
