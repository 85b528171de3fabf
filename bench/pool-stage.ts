/**
 * `npx tsx bench/pool-stage.ts [--mb N] [--rounds R] [--only TEXT] [--workers N]`: each path's
 * CPU-bound stage in memory — its kernel over the same f32 matrix, cut into the tasks its writer
 * sends (src/formats/*), no disk — in this thread (the `--threads 1` path), on a pool of 1 worker and
 * on a pool of 2 (src/pool), best of R rounds after a warm-up round (workers started, kernels
 * assembled). Each input is copied into a buffer the workers gave back (src/pool's spareBuffer), as a
 * reader's no-allocation read does; the warm-up round hashes the results in order (the same bytes in
 * every mode), the timed rounds drop them. Prints a Markdown table: wall MB/s of f32 input, process
 * CPU (all threads), the main thread's and the busiest worker's CPU, the pool's cost per task against
 * this thread, and the scaling: 1 worker's wall ÷ 2 workers', which on a loaded machine is bounded by
 * the cores left idle (read it with the load average printed below), and the same from each round's
 * busiest thread's CPU (what the wall would be with a core per thread). `--workers N` runs one mode
 * only (0: this thread; N may exceed 2), one line per stage: the form bench/cases/pool.ts times
 * (`pool/stage-*`).
 */
import {createHash} from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import {seededRandom} from '../src/generate/sampler.js'
import {mapOrdered, setThreads, spareBuffer, type Task, WorkerPool} from '../src/pool/index.js'
import {resultViews} from '../src/pool/tasks.js'

const arg = (name: string, fallback: string) => {
  const at = process.argv.indexOf(name)
  return at > 0 ? process.argv[at + 1]! : fallback
}
const mb = Number(arg('--mb', '256'))
const rounds = Number(arg('--rounds', '3'))
const only = arg('--only', '')
const COLS = 2048
const rows = Math.max(128, Math.floor((mb * 1024 * 1024) / 4 / COLS / 128) * 128)
const random = seededRandom(1)
const source = new Float32Array(rows * COLS)
for (let i = 0; i < source.length; i++) source[i] = (random() - 0.5) * 0.2
/** `--workers N`: that mode alone (0: this thread), one line per stage (the bench cases' form). */
const single = process.argv.includes('--workers') ? Number(arg('--workers', '0')) : undefined

/** A writer's task over rows [r0, r1): `values` an owned copy of those rows. */
type MakeTask = (values: Float32Array, r0: number, r1: number) => Task
interface Stage {
  id: string
  /** Rows per task, as the writer cuts them (1 MiB of f32 at 2048 columns unless said). */
  step: number
  task: MakeTask
}
const MiB_ROWS = (1024 * 1024) / 4 / COLS
const encode = (scheme: string, params: Record<string, unknown>, flat = false): MakeTask => (values, r0, r1) =>
  ({kind: 'encode', scheme, params, values, rows: flat ? 1 : r1 - r0, cols: flat ? (r1 - r0) * COLS : COLS, owned: true})
const cast = (to: 'BF16' | 'F16'): MakeTask => (values) => ({kind: 'cast', bytes: new Uint8Array(values.buffer, values.byteOffset, values.byteLength), from: 'F32', to, owned: true})

const STAGES: Stage[] = [
  {id: 'cast f32 → bf16 (hf/safetensors, --threads)', step: MiB_ROWS, task: cast('BF16')},
  {id: 'cast f32 → f16 (gguf/onnx/mlx f16, --threads)', step: MiB_ROWS, task: cast('F16')},
  {id: 'gguf q8_0', step: MiB_ROWS, task: encode('gguf_q8_0', {}, true)},
  {id: 'gguf q4_k (q4_k_m)', step: MiB_ROWS, task: encode('gguf_q4_k', {}, true)},
  {id: 'gguf q6_k (q4_k_m)', step: MiB_ROWS, task: encode('gguf_q6_k', {}, true)},
  {id: 'mlx affine 4-bit g64', step: MiB_ROWS, task: encode('mlx_affine', {bits: 4, group_size: 64, dtype: 'F16'})},
  {id: 'mlx mxfp4', step: MiB_ROWS, task: encode('mlx_mxfp4', {dtype: 'F16'})},
  {id: 'mlx nvfp4', step: MiB_ROWS, task: encode('mlx_nvfp4', {dtype: 'F16'})},
  {id: 'mlx mxfp8', step: MiB_ROWS, task: encode('mlx_mxfp8', {dtype: 'F16'})},
  {id: 'onnx q8 (int8)', step: MiB_ROWS, task: encode('onnx_int8', {})},
  {id: 'onnx q4', step: MiB_ROWS, task: encode('onnx_q4', {dtype: 'F32'})},
  {id: 'synth f32 (no input)', step: MiB_ROWS, task: (_v, r0, r1) => ({kind: 'synth', seed: 0, tensor: 1, first: r0 * COLS, count: (r1 - r0) * COLS, offset: 0, amplitude: 0.02, dtype: 'F32'})},
]

/** CPU seconds (utime + stime, 10 ms ticks) of each thread of this process, by thread id. */
function threadSeconds(): Map<string, number> {
  const out = new Map<string, number>()
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      out.set(tid, (Number(fields[11]) + Number(fields[12])) / 100)
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out
}

function* tasksOf(stage: Stage, inline: boolean): Generator<Task> {
  // This thread reuses one input buffer (the writer's read buffer); a pool's inputs are moved to the
  // workers and come back through spareBuffer.
  const own = inline ? new Float32Array(stage.step * COLS) : undefined
  for (let r0 = 0; r0 < rows; r0 += stage.step) {
    const r1 = Math.min(rows, r0 + stage.step)
    const n = (r1 - r0) * COLS
    const values = own ? own.subarray(0, n) : new Float32Array(spareBuffer(n * 4), 0, n)
    if (stage.id.startsWith('synth')) {
      yield stage.task(values.subarray(0, 0), r0, r1)
      continue
    }
    values.set(source.subarray(r0 * COLS, r1 * COLS))
    yield stage.task(values, r0, r1)
  }
}

interface Round {
  wall: number
  cpu: number
  main: number
  /** The busiest other thread's CPU seconds (a pool worker: V8's and libuv's helpers do little here). */
  busiest: number
  sha: string
  tasks: number
}

/** One pass over the matrix; `check`: hash the results (the warm-up round: untimed, the hash costs main-thread CPU). */
async function once(stage: Stage, pool: WorkerPool | undefined, check = false): Promise<Round> {
  const hash = check ? createHash('sha256') : undefined
  const t = performance.now()
  const c = process.cpuUsage()
  const before = threadSeconds()
  let tasks = 0
  for await (const result of mapOrdered(tasksOf(stage, !pool), undefined, pool)) {
    if (hash) for (const v of resultViews(result as never)) hash.update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
    tasks++
  }
  const u = process.cpuUsage(c)
  const wall = (performance.now() - t) / 1000
  let main = 0
  let busiest = 0
  for (const [tid, seconds] of threadSeconds()) {
    const spent = seconds - (before.get(tid) ?? 0)
    if (tid === String(process.pid)) main = spent
    else busiest = Math.max(busiest, spent)
  }
  return {wall, cpu: (u.user + u.system) / 1e6, main, busiest, sha: hash?.digest('hex') ?? '', tasks}
}

async function best(stage: Stage, pool: WorkerPool | undefined): Promise<Round> {
  // Warm-up (workers started, kernels assembled and compiled), hashing what it gives.
  const {sha} = await once(stage, pool, true)
  let out: Round | undefined
  for (let r = 0; r < rounds; r++) {
    const round = await once(stage, pool)
    if (!out || round.wall < out.wall) out = round
  }
  return {...out!, sha}
}

const MB = (rows * COLS * 4) / 1e6
const fmt = (r: Round) => `${(MB / r.wall).toFixed(0)} MB/s, ${r.cpu.toFixed(2)} s CPU (main ${r.main.toFixed(2)}, busiest worker ${r.busiest.toFixed(2)})`
/**
 * The wall time the round would take with every thread on a core of its own: its busiest thread's
 * CPU (main or a worker). 1 worker's ÷ 2 workers' is the scaling a machine with idle cores would see.
 */
const critical = (r: Round) => Math.max(r.main, r.busiest)
const load = () => os.loadavg().map((x) => x.toFixed(1)).join(' ')
const loadBefore = load()
if (single !== undefined) {
  setThreads(1)
  const pool = single > 0 ? new WorkerPool(single) : undefined
  try {
    for (const stage of STAGES) {
      if (only && !stage.id.includes(only)) continue
      const r = await best(stage, pool)
      console.log(`${stage.id}, ${single > 0 ? `${single} worker(s)` : 'this thread'}: ${fmt(r)}, ${r.tasks} tasks, sha256 ${r.sha.slice(0, 16)}`)
    }
  } finally {
    await pool?.close()
  }
  process.exit()
}
console.log(`${MB.toFixed(0)} MB of f32 ([${rows}, ${COLS}]) per round, best of ${rounds}; ${os.availableParallelism()} cores; Node ${process.version}`)
console.log()
console.log('| stage | tasks | this thread | 1 worker | 2 workers | pool cost per task (1 worker − this thread, CPU) | 2 workers ÷ 1 worker, wall | … on idle cores (busiest thread CPU) | same bytes |')
console.log('|---|---:|---|---|---|---:|---:|---:|---|')
setThreads(1) // no shared pool: mapOrdered without a pool runs in this thread
const one = new WorkerPool(1)
const two = new WorkerPool(2)
try {
  for (const stage of STAGES) {
    if (only && !stage.id.includes(only)) continue
    const inline = await best(stage, undefined)
    const w1 = await best(stage, one)
    const w2 = await best(stage, two)
    const same = inline.sha === w1.sha && w1.sha === w2.sha
    const perTask = ((w1.cpu - inline.cpu) / w1.tasks) * 1e6
    console.log(`| ${stage.id} | ${w1.tasks} | ${fmt(inline)} | ${fmt(w1)} | ${fmt(w2)} | ${perTask.toFixed(0)} µs | ${(w1.wall / w2.wall).toFixed(2)}× | ${(critical(w1) / critical(w2)).toFixed(2)}× | ${same ? 'yes' : '**NO**'} |`)
    if (!same) process.exitCode = 1
  }
} finally {
  await one.close()
  await two.close()
}
console.log()
console.log(`(load average ${loadBefore} → ${load()})`)
