/**
 * CoreNet cases: the 1.1B f32 `.pt` (ZIP64, made by `openelm synth --to corenet`) → HF bf16, and the
 * same job done the Python way (Debian's torch: torch.load, cast every tensor to bf16, torch.save),
 * each against a `cp` of the same `.pt` in the same run.
 */
import path from 'node:path'
import {corenet11Pt, cpOf, ensureCorenet11} from '../sources.js'
import {type BenchCase} from '../types.js'

const PYTHON_WAY = [
  'import sys, torch',
  "sd = torch.load(sys.argv[1], map_location='cpu')",
  'sd = {k: v.to(torch.bfloat16) for k, v in sd.items()}',
  'torch.save(sd, sys.argv[2])',
].join('\n')

export const cases: BenchCase[] = [
  {
    name: 'corenet/pt-to-hf-bf16',
    description: 'convert 1.1B CoreNet .pt (f32, 4.3 GB) → hf --dtype bf16 (writes 2.2 GB)',
    setup: ensureCorenet11,
    command: (ctx) => [...ctx.cli, 'convert', corenet11Pt(ctx), '--to', 'hf', '--dtype', 'bf16', '--out', path.join(ctx.work, 'out-corenet-bf16')],
    baseline: (ctx) => cpOf(ctx, corenet11Pt(ctx), 'cp-corenet.pt'),
    outputs: (ctx) => [path.join(ctx.work, 'out-corenet-bf16'), path.join(ctx.work, 'cp-corenet.pt')],
    bytes: (ctx) => ctx.sizeOf(corenet11Pt(ctx)),
    targets: {ratio: 1.25, rssMB: 300},
  },
  {
    name: 'corenet/python-torch-bf16',
    description: 'the Python way, same job: torch.load → .to(bfloat16) → torch.save (torch 1.13 CPU)',
    setup: ensureCorenet11,
    command: (ctx) => ['/usr/bin/python3', '-c', PYTHON_WAY, corenet11Pt(ctx), path.join(ctx.work, 'python-bf16.pt')],
    baseline: (ctx) => cpOf(ctx, corenet11Pt(ctx), 'cp-corenet-py.pt'),
    outputs: (ctx) => [path.join(ctx.work, 'python-bf16.pt'), path.join(ctx.work, 'cp-corenet-py.pt')],
    bytes: (ctx) => ctx.sizeOf(corenet11Pt(ctx)),
  },
]
