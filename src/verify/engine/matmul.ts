/**
 * The hot loop: y[T, N] = x[T, K] · Wᵀ for a weight W [N, K] (a PyTorch Linear). W is streamed in
 * blocks of rows (dequantised to f32 as they are read), so memory stays bounded by a block, and
 * each block is split between worker threads that share x, the block and y through
 * SharedArrayBuffers. The kernel takes four rows of W at a time against one row of x, so every
 * load of x feeds four accumulators and x (T·K floats, ~160 KB at 270M) stays in L2.
 */
import os from 'node:os'
import {Worker} from 'node:worker_threads'
import {dtypeSize, toFloat32} from '../../tensor/dtype.js'
import {type TensorRecord} from '../../tensor/record.js'

/**
 * Plain JavaScript, so the very same text runs on the main thread (via `new Function`) and in
 * workers started with `eval: true` — no loader, no build step, works under tsx and from dist/.
 * Computes out[t·outStride + outOffset + r] for rows r in [r0, r1) of the block w.
 */
const KERNEL_SOURCE = `function kernel(x, T, K, w, r0, r1, out, outStride, outOffset) {
  let r = r0
  for (; r + 4 <= r1; r += 4) {
    const w0 = r * K, w1 = w0 + K, w2 = w1 + K, w3 = w2 + K
    for (let t = 0; t < T; t++) {
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

type Kernel = (
  x: Float32Array, T: number, K: number, w: Float32Array, r0: number, r1: number,
  out: Float32Array, outStride: number, outOffset: number,
) => void

// eslint-disable-next-line @typescript-eslint/no-implied-eval -- see KERNEL_SOURCE
const kernel = new Function(`return (${KERNEL_SOURCE})`)() as Kernel

const WORKER_SOURCE = `
const {parentPort} = require('node:worker_threads')
const kernel = ${KERNEL_SOURCE}
parentPort.on('message', (m) => {
  kernel(new Float32Array(m.x), m.T, m.K, new Float32Array(m.w), m.r0, m.r1, new Float32Array(m.out), m.outStride, m.outOffset)
  parentPort.postMessage(m.id)
})`

/** Bytes of f32 weights per streamed block: a few MB keeps a block in L3 and memory flat. */
export const BLOCK_BYTES = 4 * 1024 * 1024

interface Job {
  x: SharedArrayBuffer
  T: number
  K: number
  w: SharedArrayBuffer
  r0: number
  r1: number
  out: SharedArrayBuffer
  outStride: number
  outOffset: number
}

/** A fixed set of worker threads running the kernel on shared buffers. */
export class MatmulPool {
  private readonly workers: Worker[] = []
  private readonly pending = new Map<number, () => void>()
  private nextId = 0

  constructor(threads = defaultThreads()) {
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(WORKER_SOURCE, {eval: true})
      worker.on('message', (id: number) => {
        const done = this.pending.get(id)
        this.pending.delete(id)
        done?.()
      })
      this.workers.push(worker)
    }
  }

  get threads(): number {
    return this.workers.length
  }

  /** Rows [r0, r1) of the block, split evenly (in multiples of 4) over the workers. */
  async run(job: Omit<Job, 'r0' | 'r1'>, rows: number): Promise<void> {
    const n = this.workers.length
    if (n === 0) {
      kernel(new Float32Array(job.x), job.T, job.K, new Float32Array(job.w), 0, rows, new Float32Array(job.out), job.outStride, job.outOffset)
      return
    }
    const per = Math.ceil(rows / n / 4) * 4
    const runs: Promise<void>[] = []
    for (let i = 0; i < n; i++) {
      const r0 = i * per
      const r1 = Math.min(rows, r0 + per)
      if (r0 >= r1) break
      const id = this.nextId++
      runs.push(new Promise<void>((resolve) => this.pending.set(id, resolve)))
      this.workers[i]!.postMessage({...job, r0, r1, id})
    }
    await Promise.all(runs)
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()))
    this.workers.length = 0
  }
}

function defaultThreads(): number {
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length
  return Math.max(1, Math.min(cpus, 16))
}

function sharedF32(values: Float32Array): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(values.byteLength)
  new Float32Array(sab).set(values)
  return sab
}

/**
 * y[T, N] = x[T, K] · Wᵀ with W read from `record` ([N, K], any float dtype) block by block.
 * The next block is read (and dequantised) while the workers multiply the current one.
 */
export async function linear(pool: MatmulPool, x: Float32Array, T: number, record: TensorRecord): Promise<Float32Array> {
  const [N, K] = record.shape as [number, number]
  const rowBytes = K * dtypeSize(record.dtype)
  const blockRows = Math.max(4, Math.floor(BLOCK_BYTES / (K * 4) / 4) * 4)
  const xs = sharedF32(x)
  const out = new SharedArrayBuffer(T * N * 4)
  const readBlock = async (r0: number): Promise<SharedArrayBuffer> => {
    const r1 = Math.min(N, r0 + blockRows)
    return sharedF32(toFloat32(await record.read(r0 * rowBytes, r1 * rowBytes), record.dtype))
  }
  let next: Promise<SharedArrayBuffer> | undefined = readBlock(0)
  for (let r0 = 0; r0 < N; r0 += blockRows) {
    const block = await next!
    const rows = Math.min(N, r0 + blockRows) - r0
    // Post the block to the workers first, then read the next one on this thread meanwhile.
    const running = pool.run({x: xs, T, K, w: block, out, outStride: N, outOffset: r0}, rows)
    next = r0 + blockRows < N ? readBlock(r0 + blockRows) : undefined
    await running
  }
  return new Float32Array(out)
}
