/**
 * Issue 15's rows: every float and quantizing path (GGUF: the four K/legacy presets the issue names, Q5_K_M too) at 270M and 1.1B on 1 and on 2 pool workers
 * (`--threads 1` / `--threads 2`: the scaling), each against `cp` of the same source in the same run;
 * synth on 1 and 2 workers; a 3B-shape row for the slowest path of each format (its source is made
 * by synth, 12 GB, and removed when the run ends); and verify's exact check of a 270M MLX 4-bit
 * folder against its CoreNet .pt.
 */
import path from 'node:path'
import {cpOf, ensureHf11, ensureHf270, hf11, hf270, synthArgs} from '../sources.js'
import {type BenchCase, type BenchContext} from '../types.js'

interface PathSpec {
  /** Short name in the case name. */
  id: string
  to: 'hf' | 'gguf' | 'mlx' | 'onnx'
  args: string[]
  quantizing: boolean
  what: string
}

const PATHS: PathSpec[] = [
  {id: 'hf-bf16', to: 'hf', args: ['--dtype', 'bf16'], quantizing: false, what: 'hf --dtype bf16'},
  {id: 'gguf-f16', to: 'gguf', args: ['--dtype', 'f16'], quantizing: false, what: 'gguf --dtype f16'},
  {id: 'mlx-f16', to: 'mlx', args: ['--dtype', 'f16'], quantizing: false, what: 'mlx --dtype f16'},
  {id: 'onnx-f16', to: 'onnx', args: ['--dtype', 'f16'], quantizing: false, what: 'onnx --dtype f16'},
  {id: 'gguf-q8_0', to: 'gguf', args: ['--dtype', 'q8_0'], quantizing: true, what: 'gguf --dtype q8_0'},
  {id: 'gguf-q4_k_m', to: 'gguf', args: ['--dtype', 'q4_k_m'], quantizing: true, what: 'gguf --dtype q4_k_m'},
  {id: 'gguf-q4_0', to: 'gguf', args: ['--dtype', 'q4_0'], quantizing: true, what: 'gguf --dtype q4_0'},
  {id: 'gguf-q6_k', to: 'gguf', args: ['--dtype', 'q6_k'], quantizing: true, what: 'gguf --dtype q6_k'},
  {id: 'gguf-q5_k_m', to: 'gguf', args: ['--dtype', 'q5_k_m'], quantizing: true, what: 'gguf --dtype q5_k_m'},
  {id: 'mlx-4bit', to: 'mlx', args: ['--quantize', '4'], quantizing: true, what: 'mlx --quantize 4 (group 64)'},
  {id: 'mlx-mxfp4', to: 'mlx', args: ['--q-mode', 'mxfp4'], quantizing: true, what: 'mlx --q-mode mxfp4'},
  // The other MLX widths and fp modes (issue 15: every MLX quantizing path ≤ 2 × cp).
  ...[2, 3, 5, 6, 8].map((bits): PathSpec => ({id: `mlx-${bits}bit`, to: 'mlx', args: ['--quantize', String(bits)], quantizing: true, what: `mlx --quantize ${bits} (group 64)`})),
  ...(['nvfp4', 'mxfp8'] as const).map((mode): PathSpec => ({id: `mlx-${mode}`, to: 'mlx', args: ['--q-mode', mode], quantizing: true, what: `mlx --q-mode ${mode}`})),
  {id: 'onnx-q8', to: 'onnx', args: ['--quantize', '8'], quantizing: true, what: 'onnx --quantize 8'},
  {id: 'onnx-q4', to: 'onnx', args: ['--quantize', '4'], quantizing: true, what: 'onnx --quantize 4'},
]

/** 3B-shape HF folder, f32, seed 0 (~12 GB): made for the 3B rows only, removed at the end of the run. */
const hf3 = (ctx: BenchContext) => path.join(ctx.work, 'src-3B-f32')
async function ensureHf3(ctx: BenchContext): Promise<void> {
  // synth writes a 3B model in shards (an index, no model.safetensors): checking for that file alone
  // made it again, ~3 min, before every 3B row.
  if (await ctx.exists(path.join(hf3(ctx), 'model.safetensors.index.json')) || await ctx.exists(path.join(hf3(ctx), 'model.safetensors'))) return
  await ctx.remove(hf3(ctx))
  console.error('   (setup) synth --preset 3B (f32)')
  await ctx.exec(synthArgs(ctx, '3B', hf3(ctx)))
}

const SIZES = {
  '270M': {src: hf270, setup: ensureHf270},
  '1.1B': {src: hf11, setup: ensureHf11},
  '3B': {src: hf3, setup: ensureHf3},
} as const

function pathCase(size: keyof typeof SIZES, p: PathSpec, threads: number): BenchCase {
  const {src, setup} = SIZES[size]
  const tag = `${size}-${p.id}-t${threads}`
  const out = (ctx: BenchContext) => path.join(ctx.work, `out-pool-${tag}${p.to === 'gguf' ? '.gguf' : ''}`)
  const cp = (ctx: BenchContext) => path.join(ctx.work, `cp-pool-${tag}`)
  return {
    name: `pool/${tag}`,
    description: `convert ${size} f32 → ${p.what} --threads ${threads}`,
    setup,
    command: (ctx) => [...ctx.cli, 'convert', src(ctx), '--to', p.to, ...p.args, '--threads', String(threads), '--out', out(ctx)],
    baseline: (ctx) => cpOf(ctx, src(ctx), path.basename(cp(ctx))),
    outputs: (ctx) => [out(ctx), cp(ctx)],
    bytes: (ctx) => ctx.sizeOf(src(ctx)),
    targets: {ratio: p.quantizing ? 2 : 1.25, rssMB: 300},
  }
}

function synthCase(size: '270M' | '1.1B', threads: number): BenchCase {
  const {src, setup} = SIZES[size]
  const out = (ctx: BenchContext) => path.join(ctx.work, `out-pool-synth-${size}-t${threads}`)
  const cp = (ctx: BenchContext) => path.join(ctx.work, `cp-pool-synth-${size}-t${threads}`)
  return {
    name: `pool/synth-${size}-t${threads}`,
    description: `synth --preset ${size} --dtype f32 --threads ${threads} (baseline: cp of a folder of the same bytes)`,
    setup,
    command: (ctx) => [...ctx.cli, 'synth', '--preset', size, '--to', 'hf', '--dtype', 'f32', '--seed', '0', '--threads', String(threads), '--out', out(ctx)],
    baseline: (ctx) => cpOf(ctx, src(ctx), path.basename(cp(ctx))),
    outputs: (ctx) => [out(ctx), cp(ctx)],
    bytes: (ctx) => ctx.sizeOf(src(ctx)),
    targets: {ratio: 2, rssMB: 300},
  }
}

/** 270M CoreNet .pt and its MLX 4-bit conversion, for the verify row. */
const pt270 = (ctx: BenchContext) => path.join(ctx.work, 'src-270M-corenet', 'checkpoint.pt')
const mlx270 = (ctx: BenchContext) => path.join(ctx.work, 'src-270M-mlx4')
async function ensureVerifyInputs(ctx: BenchContext): Promise<void> {
  if (!(await ctx.exists(pt270(ctx)))) {
    console.error('   (setup) synth --preset 270M --to corenet')
    await ctx.exec(synthArgs(ctx, '270M', pt270(ctx), 'corenet'))
  }
  if (!(await ctx.exists(path.join(mlx270(ctx), 'config.json')))) {
    await ctx.remove(mlx270(ctx))
    console.error('   (setup) convert the .pt → mlx --quantize 4')
    await ctx.exec([...ctx.cli, 'convert', pt270(ctx), '--to', 'mlx', '--quantize', '4', '--out', mlx270(ctx)])
  }
}

function verifyCase(threads: number): BenchCase {
  return {
    name: `pool/verify-270M-mlx4-t${threads}`,
    description: `verify a 270M MLX 4-bit folder --against its CoreNet .pt (exact weights + forward passes) OPENELM_THREADS=${threads}; baseline: cp of the .pt`,
    setup: ensureVerifyInputs,
    // verify has no --threads flag: OPENELM_THREADS sets the pool's size.
    command: (ctx) => ['env', `OPENELM_THREADS=${threads}`, ...ctx.cli, 'verify', mlx270(ctx), '--against', pt270(ctx)],
    baseline: (ctx) => ['cp', pt270(ctx), path.join(ctx.work, `cp-verify-t${threads}.pt`)],
    outputs: (ctx) => [path.join(ctx.work, `cp-verify-t${threads}.pt`)],
    bytes: async (ctx) => (await ctx.sizeOf(pt270(ctx))) + (await ctx.sizeOf(mlx270(ctx))),
    targets: {rssMB: 300},
  }
}

/**
 * llama.cpp's own converter on the same HF folder, for GGUF F16 and Q8_0 side by side with ours:
 * only when OPENELM_BENCH_LLAMACPP names a llama.cpp source folder (convert_hf_to_gguf.py, gguf-py).
 * It needs torch ≥ 2.1 (it names torch.float8_*; Debian's is 1.13) and tqdm: a folder holding them goes
 * in OPENELM_BENCH_LLAMACPP_PYTHONPATH. Its `transformers` import is met by bench/llamacpp (OpenELM's
 * config needs remote code, which the converter refuses, so it reads config.json either way).
 * OPENELM_BENCH_LLAMACPP_PYTHON picks the interpreter (default Debian's /usr/bin/python3), e.g. a venv
 * that has torch ≥ 2.1, numpy, sentencepiece and tqdm.
 */
function llamacppCase(size: '270M' | '1.1B', outtype: 'f16' | 'q8_0'): BenchCase {
  const {src, setup} = SIZES[size]
  const dir = process.env.OPENELM_BENCH_LLAMACPP!
  const pythonPath = [process.env.OPENELM_BENCH_LLAMACPP_PYTHONPATH, path.join(dir, 'gguf-py'), path.resolve(import.meta.dirname, '..', 'llamacpp')].filter(Boolean).join(':')
  const out = (ctx: BenchContext) => path.join(ctx.work, `out-llamacpp-${size}-${outtype}.gguf`)
  const cp = (ctx: BenchContext) => path.join(ctx.work, `cp-llamacpp-${size}-${outtype}`)
  return {
    name: `pool/${size}-llamacpp-${outtype}`,
    description: `llama.cpp's convert_hf_to_gguf.py ${size} f32 → --outtype ${outtype} (Python, torch CPU)`,
    setup,
    command: (ctx) => ['env', `PYTHONPATH=${pythonPath}`, process.env.OPENELM_BENCH_LLAMACPP_PYTHON ?? '/usr/bin/python3', path.join(dir, 'convert_hf_to_gguf.py'), src(ctx), '--outtype', outtype, '--outfile', out(ctx)],
    baseline: (ctx) => cpOf(ctx, src(ctx), path.basename(cp(ctx))),
    outputs: (ctx) => [out(ctx), cp(ctx)],
    bytes: (ctx) => ctx.sizeOf(src(ctx)),
  }
}

/**
 * ggml's own C quantizers on the same tensors (bench/ggml-native: quantize-check, built by its
 * build-quantize-check.sh from ggml's source): only when OPENELM_BENCH_GGML_NATIVE names that binary. Setup writes an
 * f32 GGUF and our `dtype` GGUF of the source (untimed); the timed command quantizes every f32 tensor with
 * ggml to the type our file chose for it on `threads` threads and compares the bytes (exit 2 on any
 * mismatch), so the row sits next to `pool/<size>-gguf-<dtype>-t<threads>` against the same `cp`.
 */
function ggmlNativeCase(size: '270M' | '1.1B', dtype: string, threads: number): BenchCase {
  const {src, setup} = SIZES[size]
  const gguf = (ctx: BenchContext, t: string) => path.join(ctx.work, `ggml-native-${size}-${t}.gguf`)
  const cp = (ctx: BenchContext) => path.join(ctx.work, `cp-ggml-native-${size}-${dtype}-t${threads}`)
  return {
    name: `pool/${size}-ggml-native-${dtype}-t${threads}`,
    description: `ggml's C quantize_chunk ${size} f32 GGUF → ${dtype} on ${threads} threads, bytes compared with ours (incl. reading both GGUFs)`,
    async setup(ctx) {
      await setup(ctx)
      for (const t of ['f32', dtype]) {
        if (await ctx.exists(gguf(ctx, t))) continue
        console.error(`   (setup) convert ${size} → gguf --dtype ${t}`)
        await ctx.exec([...ctx.cli, 'convert', src(ctx), '--to', 'gguf', '--dtype', t, '--out', gguf(ctx, t)])
      }
    },
    command: (ctx) => [process.env.OPENELM_BENCH_GGML_NATIVE!, gguf(ctx, 'f32'), gguf(ctx, dtype), String(threads)],
    baseline: (ctx) => cpOf(ctx, src(ctx), path.basename(cp(ctx))),
    outputs: (ctx) => [cp(ctx)],
    bytes: (ctx) => ctx.sizeOf(src(ctx)),
    cleanup: (ctx) => [gguf(ctx, 'f32'), gguf(ctx, dtype)],
  }
}

/**
 * Each path's CPU-bound stage alone, in memory (bench/pool-stage.ts: the kernel over 64 MB of f32 cut
 * into the tasks its writer sends, no disk), on 2 workers against the same on 1 worker as the
 * baseline: × baseline ≤ 0.55 is issue 15's scaling target (2 workers ≥ 1.8 × 1 worker). Each run
 * includes the script's start-up (~1–2 s), so the rounds (a warm-up and `rounds` timed passes over the
 * matrix) are sized for a few seconds of kernel work; the script run by hand prints the stage's own
 * times (and this thread's, and the pool's cost per task).
 */
const STAGES: Array<[stage: string, rounds: number]> = [
  ['cast f32 → bf16', 60], ['cast f32 → f16', 60], ['gguf q8_0', 40], ['gguf q4_k', 4], ['gguf q6_k', 6],
  ['mlx affine', 20], ['mlx mxfp4', 12], ['onnx q8', 60], ['onnx q4', 20], ['synth', 12],
]
function stageCase([stage, rounds]: [string, number]): BenchCase {
  const mb = 64
  const script = (ctx: BenchContext, workers: number) => [process.execPath, '--import', 'tsx', path.join(ctx.root, 'bench', 'pool-stage.ts'), '--only', stage, '--workers', String(workers), '--mb', String(mb), '--rounds', String(rounds)]
  return {
    name: `pool/stage-${stage.replace(/[^a-z0-9_]+/gi, '-')}`,
    description: `${stage}: the kernel alone over ${mb} MB of f32 in memory, ${rounds + 1} passes (bench/pool-stage.ts), 2 workers; baseline: the same on 1 worker`,
    command: (ctx) => script(ctx, 2),
    baseline: (ctx) => script(ctx, 1),
    baselineName: '1 worker',
    outputs: () => [],
    bytes: async () => (rounds + 1) * mb * 1024 * 1024,
    targets: {ratio: 0.55}, // 2 workers ≥ 1.8 × 1 worker
  }
}

export const cases: BenchCase[] = [
  ...STAGES.map(stageCase),
  ...(process.env.OPENELM_BENCH_LLAMACPP ? (['270M', '1.1B'] as const).flatMap((size) => (['f16', 'q8_0'] as const).map((t) => llamacppCase(size, t))) : []),
  ...(process.env.OPENELM_BENCH_GGML_NATIVE ? (['270M', '1.1B'] as const).flatMap((size) => ['q8_0', 'q4_0', 'q4_k_m', 'q5_k_m', 'q6_k'].flatMap((dtype) => [1, 2].map((t) => ggmlNativeCase(size, dtype, t)))) : []),
  ...(['270M', '1.1B'] as const).flatMap((size) => [
    ...PATHS.flatMap((p) => [1, 2].map((t) => pathCase(size, p, t))),
    ...[1, 2].map((t) => synthCase(size, t)),
  ]),
  // 3B shape: the slowest path of each format (1.1B rows above), on the default 2 workers.
  ...['hf-bf16', 'gguf-q8_0', 'gguf-q4_k_m', 'mlx-mxfp4', 'onnx-q4'].map((id) => pathCase('3B', PATHS.find((p) => p.id === id)!, 2)),
  // The two paths that were over 300 MB at 3B (bench/RESULTS.md, mem3b), on 1 and 2 threads.
  ...['mlx-4bit', 'onnx-q8'].flatMap((id) => [1, 2].map((t) => pathCase('3B', PATHS.find((p) => p.id === id)!, t))),
  ...[1, 2].map(verifyCase),
]
