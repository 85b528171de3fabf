/**
 * Engine case: the TS reference forward pass (`openelm verify MODEL`, backend ts) on the shared 270M
 * f32 model, 32 tokens, against PyTorch CPU (Debian torch 1.13, `src/verify/python/openelm_ref.py`)
 * on the same safetensors file and tokens. Both are timed end to end as child processes (start,
 * read the 1.09 GB of weights, one 32-token forward, print); tokens/s = 32 / wall time.
 */
import os from 'node:os'
import path from 'node:path'
import {ensureHf270, hf270} from '../sources.js'
import {type BenchCase} from '../types.js'

const T = 32
/** BOS then a fixed spread of ids (the same list for both sides). */
const TOKENS = [1, ...Array.from({length: T - 1}, (_, i) => ((i + 1) * 7919) % 31999 + 1)].join(',')

export const cases: BenchCase[] = [
  {
    name: 'engine/270M-32tok',
    description: `TS engine forward, 270M f32, ${T} tokens (openelm verify, backend ts) vs PyTorch CPU (all cores) on the same file`,
    setup: ensureHf270,
    command: (ctx) => [...ctx.cli, 'verify', hf270(ctx), '--tokens', TOKENS],
    // Debian's torch starts with 1 thread on this box (omp_get_max_threads() = 1); give it every core, as the TS engine uses.
    baseline: (ctx) => ['env', `OMP_NUM_THREADS=${os.availableParallelism()}`, '/usr/bin/python3', path.join(ctx.root, 'src', 'verify', 'python', 'openelm_ref.py'), '--weights', path.join(hf270(ctx), 'model.safetensors'),
      '--config', path.join(hf270(ctx), 'config.json'), '--tokens', TOKENS, '--device', 'cpu'],
    baselineName: 'PyTorch CPU',
    tokens: T,
    outputs: () => [],
    bytes: (ctx) => ctx.sizeOf(path.join(hf270(ctx), 'model.safetensors')),
  },
]
