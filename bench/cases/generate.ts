/**
 * Generation case: `openelm generate` on the shared 270M f32 model (LLaMA-2 tokenizer built in),
 * 32 greedy tokens from a fixed prompt on the TS engine's KV-cache session, against the PyTorch
 * reference's KV-cached decode (`--backend torch`, CPU, all cores) on the same folder. Both end to
 * end as child processes (start, load, prefill, 32 steps); tokens/s here = 32 / wall time, load
 * included — the command's own `--json` timing gives the decode rate alone.
 */
import os from 'node:os'
import {ensureHf270, hf270} from '../sources.js'
import {type BenchCase} from '../types.js'

const N = 32
const PROMPT = 'The capital of France is'

export const cases: BenchCase[] = [
  {
    name: 'generate/270M-32tok',
    description: `generate, 270M f32, ${N} greedy tokens after a 6-token prompt (ts engine, KV cache) vs --backend torch (CPU, all cores)`,
    setup: ensureHf270,
    command: (ctx) => [...ctx.cli, 'generate', hf270(ctx), '--prompt', PROMPT, '--max-tokens', String(N), '--json'],
    baseline: (ctx) => ['env', `OMP_NUM_THREADS=${os.availableParallelism()}`, ...ctx.cli, 'generate', hf270(ctx), '--backend', 'torch', '--device', 'cpu', '--prompt', PROMPT, '--max-tokens', String(N), '--json'],
    baselineName: 'torch backend',
    tokens: N,
    outputs: () => [],
    bytes: (ctx) => ctx.sizeOf(hf270(ctx)),
  },
]
