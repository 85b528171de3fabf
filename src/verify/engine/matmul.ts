/**
 * The hot loop: y[T, N] = x[T, K] · Wᵀ for a weight W [N, K] (a PyTorch Linear). W is streamed in
 * blocks of rows (dequantised to f32 as they are read), so memory stays bounded by a block, and
 * each block is split between worker threads. x, two block buffers (one being multiplied, one being
 * filled by the main thread) and y live in one shared WebAssembly memory. The kernel is the
 * WebAssembly SIMD one of simd.ts (2 rows of x × 4 rows of W, f32x4); the plain-JavaScript kernel
 * below (4 × 4 register-blocked, f64 accumulators) covers the edges (odd T, N mod 4, K mod 4) and
 * runtimes without SIMD. x (T·K floats, ~160 KB at 270M) stays in L2.
 */
import os from 'node:os'
import {Worker} from 'node:worker_threads'
import {readRowsF32Into, type TensorRecord} from '../../tensor/record.js'
import {MAX_PAGES, simdModule, wasm, type WasmMemory} from './simd.js'

/**
 * Plain JavaScript, so the very same text runs on the main thread (via `new Function`) and in
 * workers started with `eval: true` — no loader, no build step, works under tsx and from dist/.
 * Computes out[t·outStride + outOffset + r] for rows r in [r0, r1) of the block w.
 */
const KERNEL_SOURCE = `function kernel(x, T, K, w, r0, r1, out, outStride, outOffset) {
  let r = r0
  for (; r + 4 <= r1; r += 4) {
    const w0 = r * K, w1 = w0 + K, w2 = w1 + K, w3 = w2 + K
    let t = 0
    // 4 positions × 4 weight rows: 16 accumulators, 8 loads per 16 multiply-adds.
    for (; t + 4 <= T; t += 4) {
      const xa = t * K, xb = xa + K, xc = xb + K, xd = xc + K
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0
      let c0 = 0, c1 = 0, c2 = 0, c3 = 0, d0 = 0, d1 = 0, d2 = 0, d3 = 0
      for (let k = 0; k < K; k++) {
        const p0 = w[w0 + k], p1 = w[w1 + k], p2 = w[w2 + k], p3 = w[w3 + k]
        let u = x[xa + k]
        a0 += u * p0; a1 += u * p1; a2 += u * p2; a3 += u * p3
        u = x[xb + k]
        b0 += u * p0; b1 += u * p1; b2 += u * p2; b3 += u * p3
        u = x[xc + k]
        c0 += u * p0; c1 += u * p1; c2 += u * p2; c3 += u * p3
        u = x[xd + k]
        d0 += u * p0; d1 += u * p1; d2 += u * p2; d3 += u * p3
      }
      let o = t * outStride + outOffset + r
      out[o] = a0; out[o + 1] = a1; out[o + 2] = a2; out[o + 3] = a3; o += outStride
      out[o] = b0; out[o + 1] = b1; out[o + 2] = b2; out[o + 3] = b3; o += outStride
      out[o] = c0; out[o + 1] = c1; out[o + 2] = c2; out[o + 3] = c3; o += outStride
      out[o] = d0; out[o + 1] = d1; out[o + 2] = d2; out[o + 3] = d3
    }
    for (; t < T; t++) {
      const xb = t * K
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0
      for (let k = 0; k < K; k++) {
        const xv = x[xb + k]
        a0 += xv * w[w0 + k]
        a1 += xv * w[w1 + k]
        a2 += xv * w[w2 + k]
        a3 += xv * w[w3 + k]
      }
      const o = t * outStride + outOffset + r
      out[o] = a0; out[o + 1] = a1; out[o + 2] = a2; out[o + 3] = a3
    }
  }
  for (; r < r1; r++) {
    const wb = r * K
    for (let t = 0; t < T; t++) {
      const xb = t * K
      let a = 0
      for (let k = 0; k < K; k++) a += x[xb + k] * w[wb + k]
      out[t * outStride + outOffset + r] = a
    }
  }
}`

/**
 * One job on the shared memory (offsets in floats): SIMD for the even rows of x and groups of four
 * rows of W, the JS kernel for whatever is left. Same text on the main thread and in workers.
 */
const RUN_SOURCE = `function run(simd, memory, kernel, m) {
  const f32 = new Float32Array(memory.buffer)
  const x = f32.subarray(m.x), w = f32.subarray(m.w), out = f32.subarray(m.out)
  let r4 = m.r0, t2 = 0
  if (simd && m.K % 4 === 0) {
    r4 = m.r0 + ((m.r1 - m.r0) & ~3)
    t2 = m.T & ~1
    if (r4 > m.r0 && t2 > 0) simd(m.x * 4, t2, m.K, m.w * 4, m.r0, r4, m.out * 4, m.outStride, m.outOffset)
  }
  if (t2 > 0 && r4 < m.r1) kernel(x, t2, m.K, w, r4, m.r1, out, m.outStride, m.outOffset)
  if (t2 < m.T) kernel(x.subarray(t2 * m.K), m.T - t2, m.K, w, m.r0, m.r1, out.subarray(t2 * m.outStride), m.outStride, m.outOffset)
}`

type Kernel = (
  x: Float32Array, T: number, K: number, w: Float32Array, r0: number, r1: number,
  out: Float32Array, outStride: number, outOffset: number,
) => void

interface Job {
  /** Float offsets into the shared memory. */
  x: number
  w: number
  out: number
  T: number
  K: number
  r0: number
  r1: number
  outStride: number
  outOffset: number
}

type SimdKernel = (x: number, T: number, K: number, w: number, r0: number, r1: number, out: number, outStride: number, outOffset: number) => void
type Run = (simd: SimdKernel | undefined, memory: WasmMemory, kernel: Kernel, job: Job) => void

// eslint-disable-next-line @typescript-eslint/no-implied-eval -- see KERNEL_SOURCE
const kernel = new Function(`return (${KERNEL_SOURCE})`)() as Kernel
// eslint-disable-next-line @typescript-eslint/no-implied-eval -- see RUN_SOURCE
const runJob = new Function(`return (${RUN_SOURCE})`)() as Run

const WORKER_SOURCE = `
const {parentPort, workerData} = require('node:worker_threads')
const kernel = ${KERNEL_SOURCE}
const run = ${RUN_SOURCE}
const {module, memory} = workerData
const simd = module ? new WebAssembly.Instance(module, {env: {mem: memory}}).exports.kernel : undefined
parentPort.on('message', (m) => {
  run(simd, memory, kernel, m)
  parentPort.postMessage(m.id)
})`

/** Bytes of f32 weights per streamed block: a few MB keeps a block in L3 and memory flat. */
export const BLOCK_BYTES = 4 * 1024 * 1024

const PAGE = 65536

/** Worker threads running the kernels on one shared memory. */
export class MatmulPool {
  private readonly workers: Worker[] = []
  private readonly pending = new Map<number, {resolve: () => void; reject: (error: Error) => void}>()
  private failed?: Error
  private nextId = 0
  readonly memory: WasmMemory
  private readonly simd?: SimdKernel

  constructor(threads = matmulThreads(), options: {simd?: boolean} = {}) {
    const module = options.simd === false ? undefined : simdModule()
    this.memory = new wasm.Memory({initial: 1, maximum: MAX_PAGES, shared: true})
    if (module) this.simd = new wasm.Instance(module, {env: {mem: this.memory}}).exports.kernel as SimdKernel
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(WORKER_SOURCE, {eval: true, workerData: {module, memory: this.memory}})
      worker.on('message', (id: number) => {
        const done = this.pending.get(id)
        this.pending.delete(id)
        done?.resolve()
      })
      // A dying worker fails every job in flight instead of leaving it waiting forever.
      worker.on('error', (error: Error) => this.fail(error))
      worker.on('exit', (code) => {
        if (code !== 0 && !this.closing) this.fail(new Error(`matmul worker exited with code ${code}`))
      })
      this.workers.push(worker)
    }
  }

  private closing = false

  private fail(error: Error): void {
    this.failed ??= error
    for (const job of this.pending.values()) job.reject(error)
    this.pending.clear()
  }

  get threads(): number {
    return this.workers.length
  }

  get usesSimd(): boolean {
    return this.simd !== undefined
  }

  /** Make the shared memory at least `floats` floats long; returns a fresh view of it. */
  reserve(floats: number): Float32Array {
    const pages = Math.ceil((floats * 4) / PAGE)
    const have = this.memory.buffer.byteLength / PAGE
    if (pages > MAX_PAGES) throw new RangeError(`matmul needs ${floats * 4} bytes of working memory, over the ${MAX_PAGES * PAGE}-byte limit`)
    if (pages > have) this.memory.grow(pages - have)
    return new Float32Array(this.memory.buffer)
  }

  /** Rows [0, rows) of the block, split evenly (in multiples of 4) over the workers. */
  async run(job: Omit<Job, 'r0' | 'r1'>, rows: number): Promise<void> {
    const n = this.workers.length
    if (n === 0) {
      runJob(this.simd, this.memory, kernel, {...job, r0: 0, r1: rows})
      return
    }
    if (this.failed) throw this.failed
    const per = Math.ceil(rows / n / 4) * 4
    const runs: Promise<void>[] = []
    for (let i = 0; i < n; i++) {
      const r0 = i * per
      const r1 = Math.min(rows, r0 + per)
      if (r0 >= r1) break
      const id = this.nextId++
      runs.push(new Promise<void>((resolve, reject) => this.pending.set(id, {resolve, reject})))
      this.workers[i]!.postMessage({...job, r0, r1, id})
    }
    await Promise.all(runs)
  }

  async close(): Promise<void> {
    this.closing = true
    await Promise.all(this.workers.map((w) => w.terminate()))
    this.workers.length = 0
  }
}

/** The matmul workers for a requested count (--threads, OPENELM_THREADS), else one per core up to 16. */
export function matmulThreads(requested?: number): number {
  if (requested !== undefined) return requested
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length
  return Math.max(1, Math.min(cpus, 16))
}

/**
 * y[T, N] = x[T, K] · Wᵀ with W read from `record` ([N, K], any float dtype) block by block.
 * The next block is read (and dequantised) into the other buffer while the workers multiply.
 */
export async function linear(pool: MatmulPool, x: Float32Array, T: number, record: TensorRecord): Promise<Float32Array> {
  const [N, K] = record.shape as [number, number]
  const blockRows = Math.max(4, Math.floor(BLOCK_BYTES / (K * 4) / 4) * 4)
  // layout (floats, 4-aligned): x | block A | block B | out
  const align = (n: number) => Math.ceil(n / 4) * 4
  const xOff = 0
  const blocks = [align(T * K), align(T * K) + align(blockRows * K)]
  const outOff = blocks[1]! + align(blockRows * K)
  pool.reserve(outOff + T * N).set(x, xOff)
  // Each block goes straight into its buffer in the shared memory (dequantized / widened there).
  const readBlock = (r0: number, slot: number): Promise<void> =>
    readRowsF32Into(record, new Float32Array(pool.memory.buffer, blocks[slot]! * 4, (Math.min(N, r0 + blockRows) - r0) * K), r0)
  let next: Promise<void> | undefined = readBlock(0, 0)
  let slot = 0
  for (let r0 = 0; r0 < N; r0 += blockRows) {
    await next
    const rows = Math.min(N, r0 + blockRows) - r0
    // Post the block to the workers first, then fill the other buffer on this thread meanwhile.
    const running = pool.run({x: xOff, w: blocks[slot]!, out: outOff, T, K, outStride: N, outOffset: r0}, rows)
    next = r0 + blockRows < N ? readBlock(r0 + blockRows, 1 - slot) : undefined
    await running
    slot = 1 - slot
  }
  return new Float32Array(pool.memory.buffer).slice(outOff, outOff + T * N)
}
