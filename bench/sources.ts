/**
 * Source models shared by the bench cases: each is made once (untimed) in the run's work folder and
 * reused by every case that needs it; the run removes the work folder at the end (unless --keep).
 */
import path from 'node:path'
import {type BenchContext} from './types.js'

/** 1.1B-shape HF folder, f32, seed 0 (4.3 GB, one model.safetensors). */
export const hf11 = (ctx: BenchContext) => path.join(ctx.work, 'src-1.1B-f32')
/** 270M-shape HF folder, f32, seed 0 (1.09 GB). */
export const hf270 = (ctx: BenchContext) => path.join(ctx.work, 'src-270M-f32')
/** 1.1B-shape CoreNet checkpoint folder (`checkpoint_last.pt`, f32, 32128-row padded vocabulary, ZIP64). */
export const corenet11 = (ctx: BenchContext) => path.join(ctx.work, 'src-1.1B-corenet')
export const corenet11Pt = (ctx: BenchContext) => path.join(corenet11(ctx), 'checkpoint_last.pt')

export const synthArgs = (ctx: BenchContext, preset: string, out: string, to = 'hf') =>
  [...ctx.cli, 'synth', '--preset', preset, '--to', to, '--dtype', 'f32', '--seed', '0', '--out', out]

async function ensure(ctx: BenchContext, marker: string, argv: string[], out: string): Promise<void> {
  if (await ctx.exists(marker)) return
  await ctx.remove(out)
  console.error(`   (setup) ${argv.slice(2).join(' ')}`)
  await ctx.exec(argv)
}

export const ensureHf11 = (ctx: BenchContext) => ensure(ctx, path.join(hf11(ctx), 'model.safetensors'), synthArgs(ctx, '1.1B', hf11(ctx)), hf11(ctx))
export const ensureHf270 = (ctx: BenchContext) => ensure(ctx, path.join(hf270(ctx), 'model.safetensors'), synthArgs(ctx, '270M', hf270(ctx)), hf270(ctx))
export const ensureCorenet11 = (ctx: BenchContext) => ensure(ctx, corenet11Pt(ctx), synthArgs(ctx, '1.1B', corenet11(ctx), 'corenet'), corenet11(ctx))

/** `cp -r` of a source into the work folder: the baseline for "the same bytes". */
export const cpOf = (ctx: BenchContext, src: string, name: string) => ['cp', '-r', src, path.join(ctx.work, name)]
