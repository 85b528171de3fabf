/**
 * PEFT case: the 1.1B CoreNet `.pt` (made by `openelm synth --to corenet`) with a LoRA adapter saved
 * apart (bench/make_peft_adapter.py: Apple's recipe, r 32 on the embedding, qkv_proj, out_proj,
 * proj_1, proj_2), merged on the way to HF bf16. The merge is compute (~35 G multiply-adds for
 * 1.1B at r 32, single-threaded JavaScript): the target is memory, the × cp is reported for scale.
 */
import path from 'node:path'
import {corenet11Pt, ensureCorenet11} from '../sources.js'
import {type BenchCase, type BenchContext} from '../types.js'

const adapter = (ctx: BenchContext) => path.join(ctx.work, 'src-1.1B-lora-adapter.pt')

async function ensureAdapter(ctx: BenchContext): Promise<void> {
  await ensureCorenet11(ctx)
  if (await ctx.exists(adapter(ctx))) return
  console.error('   (setup) make_peft_adapter.py 1.1B')
  await ctx.exec(['/usr/bin/python3', path.join(ctx.root, 'bench', 'make_peft_adapter.py'), '1.1B', adapter(ctx)])
}

export const cases: BenchCase[] = [
  {
    name: 'peft/1.1B-lora-to-hf-bf16',
    description: 'convert 1.1B CoreNet .pt (f32, 4.3 GB) --adapter LoRA r 32 (embedding + 112 linear layers) → hf --dtype bf16, merged',
    setup: ensureAdapter,
    command: (ctx) => [...ctx.cli, 'convert', corenet11Pt(ctx), '--adapter', adapter(ctx), '--lora-alpha', '32', '--embedding-adapter', 'merge',
      '--to', 'hf', '--dtype', 'bf16', '--out', path.join(ctx.work, 'out-peft-bf16')],
    baseline: (ctx) => ['cp', '-r', corenet11Pt(ctx), adapter(ctx), path.join(ctx.work, 'cp-peft')],
    beforeEach: async (ctx) => {
      await ctx.exec(['mkdir', '-p', path.join(ctx.work, 'cp-peft')])
    },
    outputs: (ctx) => [path.join(ctx.work, 'out-peft-bf16'), path.join(ctx.work, 'cp-peft')],
    bytes: async (ctx) => (await ctx.sizeOf(corenet11Pt(ctx))) + (await ctx.sizeOf(adapter(ctx))),
    targets: {rssMB: 300},
    cleanup: (ctx) => [adapter(ctx)],
  },
]
