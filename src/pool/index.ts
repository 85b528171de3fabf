/**
 * A pool of worker threads shared by the quantizers and synth (issue 15). Row blocks go out as
 * tasks (src/pool/tasks.ts: a scheme's `encode` by registry name, synth's rows, …), their
 * input buffers transferred, not copied; results come back in the order the blocks went out, so a
 * streaming writer writes the same bytes as the single-threaded path. A fixed number of blocks is in
 * flight (`inFlight`), which bounds memory.
 *
 * Threads: `--threads N` (commands call `setThreads`), else `OPENELM_THREADS`, else one per core up
 * to DEFAULT_MAX_THREADS (the 300 MB memory target). Float casts never come here: at 2–9 GB/s in
 * one thread they cost less than a task's messages (bench/pool-stage.ts, bench/RESULTS.md); the
 * `cast` task stays for that measurement.
 * With 1 thread the tasks run in the calling thread (no worker): the reference path.
 */
import os from 'node:os'
import {pathToFileURL} from 'node:url'
import {createRequire} from 'node:module'
import {Worker} from 'node:worker_threads'
import * as errors from '../errors.js'
import {UsageError} from '../errors.js'
import {type Encoded, type EncodingDiff} from '../quant/types.js'
import {type AnyResult, buffersOf, runTask, spentBuffers, taskViews, transferable, type CastTask, type CompareTask, type EncodeFileTask, type EncodeTask, type Int8TransposedTask, type SynthTask, type Task, type TaskResult} from './tasks.js'
import {type ReplyMessage, type TaskMessage} from './worker.js'
import {type SharedSlots, withSlot} from './slots.js'

export {freeBuffers} from './tasks.js'
export {quantizerSlots, resultSlot, SharedSlots, type Slot, withSlot} from './slots.js'
export type {CastTask, CompareTask, EncodeFileTask, EncodeTask, FileValues, Int8TransposedTask, SynthTask, Task, TaskResult} from './tasks.js'

export const MAX_THREADS = 256
/**
 * The default is one per core, capped here: each worker adds ~37 MB of RSS (its own V8 isolate and
 * modules; 270M → gguf q8_0 peaks at 187 MB in one thread, 274 MB on 2 workers, 335 MB on 4), and
 * every path must stay within 300 MB. --threads / OPENELM_THREADS may ask for more.
 */
export const DEFAULT_MAX_THREADS = 2
let configured: number | undefined

/** Parse a thread count (`--threads`, OPENELM_THREADS): an integer 1…256. */
export function parseThreads(text: string, source = '--threads'): number {
  const n = Number(text)
  if (!/^\s*\d+\s*$/.test(text) || !Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
    throw new UsageError('pool.threads', `${source} must be a whole number of threads from 1 to ${MAX_THREADS}, not ${JSON.stringify(text)}`)
  }
  return n
}

/** Set the thread count for this process (a command's `--threads`); undefined: back to the default. */
export function setThreads(n: number | undefined): void {
  if (n !== undefined) parseThreads(String(n))
  configured = n
}

/** A command's `--threads` (or none): set, and OPENELM_THREADS checked, before any work. */
export function applyThreads(flag: string | undefined): void {
  setThreads(flag === undefined ? undefined : parseThreads(flag))
  threadCount()
}

/** The thread count in force: setThreads, else OPENELM_THREADS, else the number of cores up to DEFAULT_MAX_THREADS. */
export function threadCount(): number {
  if (configured !== undefined) return configured
  const env = process.env.OPENELM_THREADS
  if (env !== undefined && env.trim() !== '') return parseThreads(env, 'OPENELM_THREADS')
  return Math.max(1, Math.min(DEFAULT_MAX_THREADS, os.availableParallelism()))
}

/**
 * A worker's V8 heap limits. Without any, a worker's young generation grows to the cap V8 derives
 * from the machine's memory: after running every kernel a worker's heap was 27 MB, 16 MB of it new
 * space; with a 4 MB young generation, 17 MB (bench/RESULTS.md, "The pool's per-task cost, 2-worker
 * scaling, worker memory"). The tasks keep their data in ArrayBuffers outside the V8 heap, and no CPU
 * cost of the smaller young generation (more scavenges) was measured.
 * 1 MB: what a worker's kernels still allocate per task (an encode without a slot, the scalar
 * paths' scratch) is freed by a scavenge; with 4 MB a scavenge came every ~200 ms, ~30 MB of such
 * arrays per worker by then (1.1B → MLX 4-bit on 2 workers: peak RSS 251 MB; with 1 MB, 215 MB).
 */
export const WORKER_RESOURCE_LIMITS = {maxYoungGenerationSizeMb: 1}

/** How the worker script is started: compiled JS as is; TypeScript sources (tsx, tests) through tsx's loader. */
function spawnWorker(): Worker {
  const here = import.meta.url
  const options = {resourceLimits: WORKER_RESOURCE_LIMITS}
  if (here.endsWith('.js')) return new Worker(new URL('./worker.js', here), options)
  const entry = new URL('./worker.ts', here).href
  const tsx = pathToFileURL(createRequire(here).resolve('tsx/esm/api')).href
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}) })`
  return new Worker(boot, {eval: true, ...options})
}

/**
 * Task inputs the workers moved back once done (an encode's source values), handed out again by
 * `spareBuffer` for the next tasks' inputs. Each isolate frees a dead ArrayBuffer only at its next
 * GC, which V8 puts off until tens of MB of them have piled up: fresh input buffers for every task
 * left that much garbage in each worker and let malloc's heap grow (RSS creeping to 386 MB at the 3B
 * shape on 2 workers while the live buffers were a few MB). Reused, the same few buffers circulate.
 */
const SPARE: ArrayBuffer[] = []
/** The spare buffers' total: a few tasks' inputs (buffers of sizes no longer asked for age out). */
const SPARE_MAX_BYTES = 16 * 1024 * 1024
let spareBytes = 0

/** Buffers `spareBuffer` gave out: a task run in this thread gives these (and only these) back. */
const HANDED_OUT = new WeakSet<ArrayBuffer>()

/** A buffer back from the workers of `bytes` to 2·`bytes` (else a new one of `bytes`): the caller's own. */
export function spareBuffer(bytes: number): ArrayBuffer {
  const index = SPARE.findIndex((b) => b.byteLength >= bytes && b.byteLength <= 2 * bytes)
  const buffer = index < 0 ? new ArrayBuffer(bytes) : SPARE.splice(index, 1)[0]!
  if (index >= 0) spareBytes -= buffer.byteLength
  HANDED_OUT.add(buffer)
  return buffer
}

/** Keep a buffer no one uses any more for `spareBuffer`, the oldest ones making room (at most SPARE_MAX_BYTES in all). */
export function recycle(buffer: ArrayBuffer): void {
  if (buffer.byteLength === 0 || buffer.byteLength > SPARE_MAX_BYTES / 4) return
  SPARE.push(buffer)
  spareBytes += buffer.byteLength
  while (spareBytes > SPARE_MAX_BYTES) spareBytes -= SPARE.shift()!.byteLength
}

/** Buffers waiting in `spareBuffer`'s list (tests). */
export function spareCount(): number {
  return SPARE.length
}

interface Pending {
  resolve(value: unknown): void
  reject(error: unknown): void
}

function rebuildError(e: Extract<ReplyMessage, {ok: false}>['error']): Error {
  const Class = (errors as Record<string, unknown>)[e.name]
  if (e.code !== undefined && typeof Class === 'function' && Class.prototype instanceof errors.OpenElmError && Class !== errors.OpenElmError) {
    return new (Class as new (code: string, message: string, details?: Record<string, unknown>) => Error)(e.code, e.message, e.details)
  }
  if (e.code !== undefined && e.kind !== undefined) return new errors.OpenElmError(e.kind as errors.ErrorKind, e.code, e.message, e.details)
  const error = new Error(e.message)
  error.name = e.name
  return error
}

/** Worker threads running tasks; each worker takes one task at a time from a shared queue. */
export class WorkerPool {
  readonly size: number
  private workers: Worker[] = []
  private idle: Worker[] = []
  private queue: Array<{message: TaskMessage; transfer: ArrayBuffer[]}> = []
  private pending = new Map<number, Pending>()
  private nextId = 0
  private failure: Error | undefined
  private closed = false
  /** Tasks this pool has completed (for tests and the bench). */
  completed = 0

  constructor(size: number) {
    this.size = size
  }

  /** Run one task on a worker. Inputs of an `owned` task are transferred (the caller must not use them again); others are copied. */
  run(task: EncodeTask | EncodeFileTask): Promise<Encoded>
  run(task: CastTask | SynthTask | Int8TransposedTask): Promise<Uint8Array>
  run(task: CompareTask): Promise<EncodingDiff>
  run(task: Task): Promise<AnyResult>
  run(task: Task): Promise<AnyResult> {
    if (this.failure) return Promise.reject(this.failure)
    if (this.closed) return Promise.reject(new Error('the worker pool is closed'))
    const id = this.nextId++
    const promise = new Promise<AnyResult>((resolve, reject) => this.pending.set(id, {resolve: resolve as (v: unknown) => void, reject}))
    const sent = transferable(task)
    this.queue.push({message: {id, task: sent}, transfer: buffersOf(taskViews(sent))})
    this.pump()
    return promise
  }

  private pump(): void {
    while (this.queue.length > 0) {
      let worker = this.idle.pop()
      if (!worker && this.workers.length < this.size) worker = this.start()
      if (!worker) return
      const {message, transfer} = this.queue.shift()!
      worker.ref()
      worker.postMessage(message, transfer)
    }
  }

  private start(): Worker {
    const worker = spawnWorker()
    this.workers.push(worker)
    worker.on('message', (reply: ReplyMessage) => {
      const p = this.pending.get(reply.id)
      this.pending.delete(reply.id)
      // An idle worker must not keep the process alive.
      worker.unref()
      this.idle.push(worker)
      this.completed++
      if (reply.ok) for (const b of reply.spent) recycle(b)
      if (p) {
        if (reply.ok) p.resolve(reply.result)
        else p.reject(rebuildError(reply.error))
      }
      this.pump()
    })
    const fail = (error: Error) => {
      this.failure ??= error
      for (const p of this.pending.values()) p.reject(this.failure)
      this.pending.clear()
      this.queue = []
    }
    worker.on('error', fail)
    worker.on('exit', (code) => {
      if (!this.closed) fail(new Error(`a pool worker stopped (exit code ${code})`))
    })
    return worker
  }

  /** Stop every worker (pending tasks are rejected). */
  async close(): Promise<void> {
    this.closed = true
    await Promise.all(this.workers.map((w) => w.terminate()))
    this.workers = []
    this.idle = []
  }
}

let shared: WorkerPool | undefined

/** The process's pool for the thread count in force (undefined for 1 thread: run in this thread). */
export function sharedPool(): WorkerPool | undefined {
  const n = threadCount()
  if (n <= 1) return undefined
  if (shared && shared.size !== n) {
    void shared.close()
    shared = undefined
  }
  shared ??= new WorkerPool(n)
  return shared
}

/** The thread count the user asked for (--threads, OPENELM_THREADS), or undefined when none was. */
export function requestedThreads(): number | undefined {
  if (configured !== undefined) return configured
  const env = process.env.OPENELM_THREADS
  return env !== undefined && env.trim() !== '' ? parseThreads(env, 'OPENELM_THREADS') : undefined
}

/** Close the shared pool (tests; a process exits without it, idle workers being unref'd). */
export async function closeSharedPool(): Promise<void> {
  const pool = shared
  shared = undefined
  await pool?.close()
}

/**
 * A task run in this thread (1 thread): an owned task's input buffers that came from `spareBuffer`
 * and that its result does not use go back to it, as a worker moves them back, so the next tasks'
 * inputs reuse them instead of leaving a fresh buffer per task to the garbage collector. (Other owned
 * inputs may be a caller's scratch it reuses in this thread: those stay the caller's.)
 */
function runHere(task: Task): AnyResult {
  const result = runTask(task)
  if (task.owned) for (const b of spentBuffers(task, result)) if (HANDED_OUT.has(b)) recycle(b)
  return result
}

/** One task on the shared pool, or in this thread for 1 thread (the same function, the same bytes). */
export function runOne(task: EncodeTask | EncodeFileTask): Promise<Encoded>
export function runOne(task: CastTask | SynthTask | Int8TransposedTask): Promise<Uint8Array>
export function runOne(task: CompareTask): Promise<EncodingDiff>
export function runOne(task: Task): Promise<AnyResult> {
  const pool = sharedPool()
  if (pool) return pool.run(task)
  try {
    return Promise.resolve(runHere(task))
  } catch (error) {
    return Promise.reject(error)
  }
}

const nothing = (): void => undefined

/**
 * Blocks of a lazily computed record, computed ahead on the pool: asking for block `b` starts
 * blocks b … b + 2·threads (those not started yet), and forgets the blocks before b - 1 that some
 * reader has already taken. Blocks computed ahead and not yet taken are kept: a writer reads several
 * chunks at once (read-ahead), each spanning many blocks, and one reader's progress must not drop
 * the blocks another is about to take (they would be computed twice). A sequential reader thus keeps
 * every worker busy, and memory stays bounded by the blocks ahead of each reader. For 1 thread
 * nothing is computed ahead: block by block in this thread, as before the pool.
 */
export class BlocksAhead<T> {
  private readonly cache = new Map<number, {promise: Promise<T>; taken: boolean}>()
  /** readRange calls under way. */
  private readonly reading = new Set<Promise<void>>()
  /** Blocks taken and dropped: not computed ahead again (only when asked for). */
  private readonly dropped: Uint8Array
  /** The last readRange asked for: the next one starts after it (readRange). */
  private lastRead: Promise<unknown> = Promise.resolve()
  /**
   * `onDrop(value, block)`: block `block` was dropped and no read will use it; called once its
   * computation settles, with its value (undefined if it failed): e.g. the slot of shared memory
   * its task wrote into given back (src/pool/slots.ts).
   */
  constructor(readonly count: number, private readonly compute: (block: number) => Promise<T>, private readonly onDrop?: (value: T | undefined, block: number) => void) {
    this.dropped = new Uint8Array(count)
  }

  get(b: number): Promise<T> {
    for (const [k, e] of this.cache) if (e.taken && k < b - 1) this.drop(k)
    const ahead = sharedPool() ? 2 * threadCount() : 0
    for (let k = b; k <= Math.min(this.count - 1, b + ahead); k++) {
      if (this.cache.has(k) || (k !== b && this.dropped[k])) continue
      const promise = this.compute(k)
      promise.catch(() => {}) // awaited by its reader; a block computed ahead and never read must not go unhandled
      this.cache.set(k, {promise, taken: false})
    }
    const entry = this.cache.get(b)!
    entry.taken = true
    return entry.promise
  }

  private drop(k: number): void {
    const entry = this.cache.get(k)
    this.cache.delete(k)
    this.dropped[k] = 1
    if (entry) this.settleDropped(k, entry.promise)
  }

  private settleDropped(k: number, promise: Promise<T>): void {
    const onDrop = this.onDrop
    if (onDrop) promise.then((value) => onDrop(value, k), () => onDrop(undefined, k))
  }

  /**
   * A read is done with blocks [from, to): drop those taken (a reader reading the block's other part
   * concurrently may have to compute it again: at most the block on each boundary). The reads call
   * it with the blocks that end within them, so each block is dropped by the read that took its end.
   */
  release(from: number, to: number): void {
    for (let k = from; k < Math.min(to, this.count); k++) if (this.cache.get(k)?.taken) this.drop(k)
  }

  /**
   * Bytes [start, end) of a record made of these blocks, block b holding its bytes from b·blockBytes
   * (`block(b)`: this.get, or a caller's source that may serve some blocks otherwise); then the blocks
   * whose end this read took are released. `totalBytes`: the record's length.
   *
   * Reads run one after another, in the order asked. A writer asks for its next chunks while one is
   * still being made (read-ahead): run at once, each read asked for its own blocks, so the source was
   * read at two places in turn, and a source that serves reads from a window (an ONNX MatMul weight,
   * transposed: src/formats/onnx/transpose.ts) rebuilt its window at every turn (3B ONNX → MLX 4-bit:
   * a 3-window matrix built up to 16 times). One after another, the blocks the last read started
   * ahead already keep the workers busy.
   */
  readRange(start: number, end: number, blockBytes: number, totalBytes: number, block?: (b: number) => Promise<Uint8Array>): Promise<Uint8Array> {
    const out = new Uint8Array(end - start)
    return this.readRangeInto(out, start, blockBytes, totalBytes, block).then(() => out)
  }

  /** As readRange (one after another, in the order asked), into `target` (bytes [start, start + target.byteLength)): a writer's reusable buffer, nothing allocated. */
  readRangeInto(target: Uint8Array, start: number, blockBytes: number, totalBytes: number, block: (b: number) => Promise<Uint8Array> = (b) => this.get(b) as Promise<Uint8Array>): Promise<void> {
    const read = this.lastRead.then(() => this.copyRange(target, start, blockBytes, totalBytes, block))
    this.lastRead = read.then(nothing, nothing)
    this.reading.add(read)
    const done = () => this.reading.delete(read)
    read.then(done, done)
    return read
  }

  /**
   * Wait until the readRange calls under way have finished (whatever their outcome). A writer reads
   * ahead: the read of a by-product (MLX's scales) can start while the reads of the blocks that make
   * it are still running; waiting for them costs nothing, computing their blocks again costs a pass.
   */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.reading])
  }

  private async copyRange(out: Uint8Array, start: number, blockBytes: number, totalBytes: number, block: (b: number) => Promise<Uint8Array>): Promise<void> {
    const end = start + out.byteLength
    for (let b = Math.floor(start / blockBytes); b * blockBytes < end; b++) {
      const bytes = await block(b)
      const from = Math.max(start, b * blockBytes)
      const to = Math.min(end, b * blockBytes + bytes.byteLength)
      // A block shorter than its share of the range (e.g. a buffer given back too early and moved away) would leave a gap.
      if (to < Math.min(end, (b + 1) * blockBytes, totalBytes)) throw new Error(`internal error: block ${b} holds ${bytes.byteLength} bytes, short of the range it serves`)
      out.set(bytes.subarray(from - b * blockBytes, to - b * blockBytes), from - start)
    }
    this.release(Math.floor(start / blockBytes), Math.floor(end / blockBytes) + (end >= totalBytes ? 1 : 0))
  }

  /** Drop every block (and compute ahead again from scratch). */
  clear(): void {
    for (const [k, e] of this.cache) this.settleDropped(k, e.promise)
    this.cache.clear()
    this.dropped.fill(0)
  }
}

/**
 * Tasks in, results out in the same order, with at most `inFlight` tasks outstanding (default
 * 2 per thread): on `pool` (default the shared pool), or in this thread when there is none (1
 * thread: same functions, same bytes).
 */
export async function* mapOrdered<T extends Task>(tasks: AsyncIterable<T> | Iterable<T>, inFlight?: number, pool: WorkerPool | undefined = sharedPool()): AsyncGenerator<TaskResult<T>> {
  type R = TaskResult<T>
  if (!pool) {
    for await (const task of tasks) yield runHere(task) as R
    return
  }
  const limit = Math.max(1, inFlight ?? pool.size * 2)
  const queue: Array<Promise<R>> = []
  try {
    for await (const task of tasks) {
      const p = pool.run(task) as Promise<R>
      p.catch(() => {}) // awaited in order below; do not let a later failure go unhandled meanwhile
      queue.push(p)
      if (queue.length >= limit) yield await queue.shift()!
    }
    while (queue.length > 0) yield await queue.shift()!
  } finally {
    // An abandoned run (error, early return) leaves its tasks to finish on the workers; their results are dropped.
    for (const p of queue) p.catch(() => {})
  }
}

/**
 * mapOrdered of encode tasks, each task's parts written into a slot of `slots` (src/pool/slots.ts;
 * none given or free: buffers of its own). A result's slot is given back once the loop body that got it is
 * done (the next result is asked for), so the body must copy or write what it keeps. An abandoned
 * run (an error) keeps its slots: tasks still on the workers may write into them.
 */
export async function* mapSlotted(slots: SharedSlots | undefined, tasks: AsyncIterable<EncodeTask | EncodeFileTask>): AsyncGenerator<Encoded> {
  // Results come in the order the tasks went out: so do their slots.
  const held: Array<number | undefined> = []
  async function* slotted(): AsyncGenerator<EncodeTask | EncodeFileTask> {
    for await (const task of tasks) {
      const t = slots ? withSlot(slots, task) : {task, slot: undefined}
      held.push(t.slot)
      yield t.task
    }
  }
  for await (const encoded of mapOrdered(slotted())) {
    yield encoded
    const slot = held.shift()
    if (slot !== undefined) slots!.give(slot)
  }
}

/**
 * Blocks of one part of an encoding computed ahead of a reader on the pool (BlocksAhead), each
 * task's parts in a slot of `slots` (src/pool/slots.ts; none given or free: buffers of its own)
 * held until the block is dropped, its bytes read: `task(b)` is block b's task, `keep(b, encoded)`
 * copies what outlives the block (the by-products, as scales); the blocks are the part `part`. A
 * task that failed keeps its slot.
 */
export function slottedBlocks(slots: SharedSlots | undefined, blocks: number, task: (b: number) => Promise<EncodeTask | EncodeFileTask>, part: string, keep: (b: number, encoded: Encoded) => void): BlocksAhead<Uint8Array> {
  // By the block's bytes, not its index: a block dropped and asked for again is a new task with a slot of its own.
  const slotOf = new Map<Uint8Array, number>()
  return new BlocksAhead(blocks, async (b) => {
    const t = slots ? withSlot(slots, await task(b)) : {task: await task(b), slot: undefined}
    const encoded = await runOne(t.task)
    keep(b, encoded)
    const bytes = encoded[part]!
    if (t.slot !== undefined) slotOf.set(bytes, t.slot)
    return bytes
  }, (bytes) => {
    const slot = bytes && slotOf.get(bytes)
    if (slot === undefined || !bytes) return
    slotOf.delete(bytes)
    slots!.give(slot)
  })
}

