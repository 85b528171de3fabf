/**
 * The worker pool (issue 15): any Scheme's encode and the float casts give the same bytes on 2
 * workers as in the calling thread (1 thread, the reference path), in order; errors keep their
 * type; and a GGUF written with 2 threads is byte for byte the one written with 1 (sha256).
 */
import {spawnSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {FormatError, UsageError} from '../src/errors.js'
import {BlocksAhead, closeSharedPool, type EncodeTask, freeBuffers, mapOrdered, parseThreads, quantizerSlots, runOne, SharedSlots, setThreads, sharedPool, spareBuffer, spareCount, threadCount, type Task, WorkerPool} from '../src/pool/index.js'
import {runTask} from '../src/pool/tasks.js'
import {withSlot} from '../src/pool/slots.js'
import {ENCODE_BLOCK_BYTES, quantizedRecords} from '../src/formats/mlx/quantize.js'
import {f32Record, readTaskBytes, withReadInto} from '../src/tensor/record.js'
import {SCHEMES} from '../src/quant/index.js'
import {drain} from '../src/progress.js'

const repo = path.resolve(import.meta.dirname, '..')
const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')

/** Rows with the edge values (NaN, ±Inf, subnormals, -0, ties) among seeded noise. */
function values(rows: number, cols: number, seed: number): Float32Array {
  const out = new Float32Array(rows * cols)
  let s = seed >>> 0
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = ((s / 2 ** 32) - 0.5) * 4
  }
  const bits = new Uint32Array(out.buffer)
  const edges = [0x7fc00000, 0x7f800000, 0xff800000, 0x00000001, 0x807fffff, 0x80000000, 0x3f808000, 0x3f818000, 0x33800000, 0x38000000]
  for (let k = 0; k < edges.length; k++) bits[(k * 97) % bits.length] = edges[k]!
  return out
}

async function collect(tasks: Task[]): Promise<string[]> {
  const out: string[] = []
  for await (const r of mapOrdered(tasks, 3)) {
    out.push(r instanceof Uint8Array ? sha(r) : Object.entries(r).map(([k, v]) => `${k}:${sha(v)}`).join(','))
  }
  return out
}

afterEach(async () => {
  setThreads(undefined)
  await closeSharedPool()
})

describe('worker pool', () => {
  it('parses --threads / OPENELM_THREADS: 1…256, else a usage error', () => {
    expect(parseThreads('4')).toBe(4)
    for (const bad of ['0', '-1', '1.5', 'two', '', '257']) expect(() => parseThreads(bad)).toThrow(UsageError)
    const saved = process.env.OPENELM_THREADS
    try {
      process.env.OPENELM_THREADS = '3'
      expect(threadCount()).toBe(3)
      setThreads(1)
      expect(threadCount()).toBe(1)
      setThreads(undefined)
      process.env.OPENELM_THREADS = 'x'
      expect(() => threadCount()).toThrow(/OPENELM_THREADS/)
      delete process.env.OPENELM_THREADS
      expect(threadCount()).toBe(Math.min(2, os.availableParallelism()))
    } finally {
      if (saved === undefined) delete process.env.OPENELM_THREADS
      else process.env.OPENELM_THREADS = saved
    }
  })

  it('every registered scheme encodes the same bytes, in order, on 2 workers as in this thread', async () => {
    const tasks = (): Task[] => {
      const list: Task[] = []
      let seed = 1
      for (const name of Object.keys(SCHEMES)) {
        const params = name === 'mlx_affine' ? {bits: 4, group_size: 64} : name === 'onnx_q4' ? {bits: 4, group_size: 32} : {}
        const cols = 512
        try {
          SCHEMES[name]!.check(params, cols)
        } catch {
          continue
        }
        for (let b = 0; b < 3; b++) list.push({kind: 'encode', scheme: name, params, values: values(4, cols, seed++), rows: 4, cols})
      }
      for (const to of ['F16', 'BF16'] as const) for (let b = 0; b < 4; b++) list.push({kind: 'cast', bytes: new Uint8Array(values(1, 1000 + b, seed++).buffer), from: 'F32', to})
      return list
    }
    setThreads(1)
    const reference = await collect(tasks())
    setThreads(2)
    const pooled = await collect(tasks())
    expect(sharedPool()!.completed).toBe(pooled.length)
    expect(reference.length).toBeGreaterThan(20)
    expect(pooled).toEqual(reference)
  }, 120_000)

  it('leaves the caller\'s buffers alone unless a task says it owns them; errors keep their type', async () => {
    const pool = new WorkerPool(2)
    try {
      const input = values(1, 64, 7)
      const copy = input.slice()
      const cast = await pool.run({kind: 'cast', bytes: new Uint8Array(input.buffer), from: 'F32', to: 'BF16'})
      expect(input.byteLength).toBe(256)
      expect(input).toEqual(copy)
      expect(cast.byteLength).toBe(128)
      const owned = new Uint8Array(values(1, 64, 8).buffer)
      await pool.run({kind: 'cast', bytes: owned, from: 'F32', to: 'F16', owned: true})
      expect(owned.byteLength).toBe(0) // transferred, not copied
      await expect(pool.run({kind: 'encode', scheme: 'no_such_scheme', params: {}, values: input, rows: 1, cols: 64})).rejects.toThrow(UsageError)
      const err = await pool.run({kind: 'encode', scheme: 'gguf_q8_0', params: {}, values: values(1, 33, 9), rows: 1, cols: 33}).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(Error)
      expect((err as Error).name).not.toBe('DataCloneError')
      if (err instanceof FormatError || err instanceof UsageError) expect(err.code).toMatch(/\w/)
    } finally {
      await pool.close()
    }
  }, 60_000)
})

describe('buffers in flight', () => {
  it('freeBuffers lets a buffer\'s memory go within a tick, not at the next collection', async () => {
    const before = process.memoryUsage().arrayBuffers
    const buffer = new ArrayBuffer(64 * 1024 * 1024)
    const view = new Uint8Array(buffer)
    view.fill(1)
    expect(process.memoryUsage().arrayBuffers).toBeGreaterThanOrEqual(before + buffer.byteLength)
    freeBuffers([buffer])
    expect(buffer.byteLength).toBe(0) // every view is empty: nothing can touch the memory again
    expect(view.length).toBe(0)
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(process.memoryUsage().arrayBuffers).toBeLessThan(before + 32 * 1024 * 1024)
  })
  it('a compare task frees its own encoding, never its inputs (even where the encoding is a view of them)', () => {
    for (const [scheme, params] of [['f32', {}], ['mlx_affine', {bits: 4, group_size: 64}], ['gguf_q8_0', {}]] as const) {
      const input = values(4, 256, 11)
      const actual = runTask({kind: 'encode', scheme, params, values: input.slice(), rows: 4, cols: 256})
      const copies = Object.fromEntries(Object.entries(actual).map(([k, v]) => [k, v.slice()]))
      const diff = runTask({kind: 'compare', scheme, params, values: input, actual, rows: 4, cols: 256, owned: true})
      expect(diff.elements).toBe(4 * 256)
      expect(diff.identicalBlocks).toBe(diff.blocks)
      expect(input.byteLength).toBe(4 * 256 * 4)
      for (const [k, v] of Object.entries(actual)) expect(v).toEqual(copies[k])
    }
  })
  it('an encode task\'s input buffer comes back from the worker and is handed out again (spareBuffer), results unchanged', async () => {
    setThreads(2)
    const input = values(8, 256, 11)
    const reference = runTask({kind: 'encode', scheme: 'mlx_affine', params: {bits: 4, group_size: 64}, values: input.slice(), rows: 8, cols: 256})
    const buffer = spareBuffer(input.byteLength)
    new Float32Array(buffer, 0, input.length).set(input)
    const encoded = await runOne({kind: 'encode', scheme: 'mlx_affine', params: {bits: 4, group_size: 64}, values: new Float32Array(buffer, 0, input.length), rows: 8, cols: 256, owned: true})
    expect(buffer.byteLength).toBe(0) // moved to the worker, not copied
    expect(Object.keys(encoded).map((k) => sha(encoded[k as keyof typeof encoded]!))).toEqual(Object.keys(reference).map((k) => sha(reference[k as keyof typeof reference]!)))
    expect(spareCount()).toBeGreaterThan(0)
    // The same bytes came back (a new buffer would be zeros) and are handed out again.
    const n = input.byteLength
    const handedOut = Array.from({length: spareCount()}, () => spareBuffer(n))
    expect(handedOut.some((b) => b.byteLength >= n && sha(new Uint8Array(b, 0, n)) === sha(new Uint8Array(input.buffer)))).toBe(true)
  }, 60_000)

  it('mapOrdered runs on the pool it is given, in order; readTaskBytes reads into a spare buffer the pool may move', async () => {
    const pool = new WorkerPool(1)
    try {
      const tasks = [3, 5, 7].map((seed): Task => ({kind: 'encode', scheme: 'gguf_q8_0', params: {}, values: values(1, 64, seed), rows: 1, cols: 64}))
      const reference = tasks.map((t) => sha((runTask(t) as {blocks: Uint8Array}).blocks))
      const out: string[] = []
      for await (const r of mapOrdered(tasks, 1, pool)) out.push(sha((r as {blocks: Uint8Array}).blocks))
      expect(out).toEqual(reference)
      expect(pool.completed).toBe(3)
    } finally {
      await pool.close()
    }
    const values4 = values(1, 64, 4)
    const bytes = new Uint8Array(values4.buffer)
    const record = withReadInto(f32Record('t', [64], values4), async (target, start) => target.set(bytes.subarray(start, start + target.byteLength)))
    setThreads(2)
    const read = await readTaskBytes(record, 8, 72)
    expect(read.owned).toBe(true)
    expect(read.bytes.byteOffset).toBe(0)
    expect(sha(read.bytes)).toBe(sha(bytes.subarray(8, 72)))
    // On 1 thread too (the finished task's inputs come back in this thread); a record without the
    // no-allocation reader gives its bytes as read, not owned.
    setThreads(1)
    const inThread = await readTaskBytes(record, 8, 72)
    expect(inThread.owned).toBe(true)
    expect(sha(inThread.bytes)).toBe(sha(bytes.subarray(8, 72)))
    const plain = await readTaskBytes(f32Record('t', [64], values4), 8, 72)
    expect(plain.owned).toBe(false)
    expect(sha(plain.bytes)).toBe(sha(bytes.subarray(8, 72)))
  }, 60_000)

  it('on 1 thread, an owned task\'s input from spareBuffer is handed out again once the task is done; an owned input of the caller\'s own is not', async () => {
    setThreads(1)
    const input = values(8, 256, 12)
    const params = {bits: 4, group_size: 64}
    const reference = runTask({kind: 'encode', scheme: 'mlx_affine', params, values: input.slice(), rows: 8, cols: 256})
    const spare = spareBuffer(input.byteLength)
    new Float32Array(spare, 0, input.length).set(input)
    const count = spareCount()
    const encoded = await runOne({kind: 'encode', scheme: 'mlx_affine', params, values: new Float32Array(spare, 0, input.length), rows: 8, cols: 256, owned: true})
    expect(Object.keys(encoded).map((k) => sha(encoded[k as keyof typeof encoded]!))).toEqual(Object.keys(reference).map((k) => sha(reference[k as keyof typeof reference]!)))
    expect(spareCount()).toBe(count + 1)
    // The same buffer is back in the list (taken out again with the others of its size).
    expect(Array.from({length: spareCount()}, () => spareBuffer(input.byteLength))).toContain(spare)
    const own = input.slice()
    const before = spareCount()
    await runOne({kind: 'encode', scheme: 'mlx_affine', params, values: own, rows: 8, cols: 256, owned: true})
    expect(spareCount()).toBe(before)
    expect(sha(new Uint8Array(own.buffer))).toBe(sha(new Uint8Array(input.buffer))) // still the caller's, untouched
  })

  it('SharedSlots: a slot is taken by one task at a time, given back once; parts laid out aligned; none free or too big: undefined', () => {
    const slots = new SharedSlots(64, 2)
    const a = slots.parts({weight: 12, scales: 3, biases: 3}, 8)!
    expect(Object.fromEntries(Object.entries(a.into).map(([k, v]) => [k, [v.byteOffset - a.into.weight!.byteOffset, v.byteLength]]))).toEqual({weight: [0, 12], scales: [16, 3], biases: [24, 3]})
    const b = slots.take(64)!
    expect(b.index).not.toBe(a.index)
    expect(slots.take(1)).toBeUndefined() // none free: the task gets buffers of its own
    expect(slots.misses).toBe(1)
    slots.give(a.index)
    expect(() => slots.give(a.index)).toThrow(/given back twice/)
    expect(slots.take(65)).toBeUndefined() // too big
    expect(slots.take(8)!.index).toBe(a.index)
  })

  it('an encode task with a slot (withSlot) writes its parts into shared memory, over stale bytes, on a worker and in this thread: the scheme\'s encode', async () => {
    const cases: Array<[string, Record<string, unknown>, number]> = [
      ['mlx_affine', {bits: 4, group_size: 64, dtype: 'F16'}, 256], ['mlx_affine', {bits: 3, group_size: 32, dtype: 'BF16'}, 256], ['mlx_affine', {bits: 8, group_size: 128, dtype: 'F32'}, 256],
      ['mlx_nvfp4', {dtype: 'F16'}, 256], ['mlx_mxfp4', {dtype: 'F32'}, 256], ['mlx_mxfp8', {dtype: 'BF16'}, 256],
      ['gguf_q8_0', {}, 8 * 256], ['gguf_q4_0', {}, 8 * 256], ['gguf_q5_1', {}, 8 * 256], ['gguf_q4_k', {}, 8 * 256], ['gguf_q6_k', {}, 8 * 256], ['gguf_q2_k', {}, 8 * 256], ['gguf_q3_k', {}, 8 * 256], ['gguf_q5_k', {}, 8 * 256],
    ]
    for (const threads of [1, 2]) {
      setThreads(threads)
      const slots = new SharedSlots(1 << 16, 4)
      for (const [scheme, params, cols] of cases) {
        const rows = scheme.startsWith('gguf') ? 1 : 8
        const input = values(rows * cols / 256, 256, cols)
        const want = SCHEMES[scheme]!.encode(input, rows, cols, params)
        const {task, slot} = withSlot(slots, {kind: 'encode', scheme, params, values: input, rows, cols} as EncodeTask)
        expect(slot, scheme).toBeDefined()
        for (const v of Object.values(task.into!)) v.fill(0xab) // a slot another task wrote before
        const got = await runOne(task)
        for (const [part, bytes] of Object.entries(want)) {
          expect(sha(got[part]!), `${scheme} ${part} on ${threads} thread(s)`).toBe(sha(bytes))
          expect(sha(task.into![part]!)).toBe(sha(bytes)) // in the slot itself
        }
        slots.give(slot!)
      }
    }
  }, 60_000)

  it('MLX and GGUF quantizer slots all come back once a tensor was read (none held by a read, none lost), and every task found one', async () => {
    setThreads(2)
    const slots = quantizerSlots()
    const misses = slots.misses
    const source = f32Record('w', [2048, 512], values(2048, 512, 5))
    const {weight, scales, biases} = quantizedRecords(source, 'w', {bits: 4, groupSize: 64}, 'F16')
    const reference = SCHEMES.mlx_affine!.encode(values(2048, 512, 5), 2048, 512, {bits: 4, group_size: 64, dtype: 'F16'})
    const got = [await weight.read(), await biases.read(), await scales.read()]
    expect(got.map(sha)).toEqual([reference.weight!, reference.biases!, reference.scales!].map(sha))
    await new Promise((resolve) => setTimeout(resolve, 10))
    expect(slots.freeCount()).toBe(slots.count)
    expect(slots.misses).toBe(misses)
  }, 60_000)

  it('BlocksAhead gives each dropped block to onDrop once read; a block short of its share of a range is an error, not a gap', async () => {
    setThreads(2)
    const dropped: number[] = []
    const blocks = new BlocksAhead(4, async (b) => new Uint8Array(8).fill(b), (bytes) => dropped.push(bytes?.[0] ?? -1))
    const out = new Uint8Array(32)
    await blocks.readRangeInto(out, 0, 8, 32)
    expect([...out]).toEqual(Array.from({length: 32}, (_, i) => i >> 3))
    await new Promise((resolve) => setTimeout(resolve, 0))
    expect(dropped.sort()).toEqual([0, 1, 2, 3])
    const short = new BlocksAhead(2, async (b) => new Uint8Array(b === 1 ? 0 : 8))
    await expect(short.readRange(0, 16, 8, 16)).rejects.toThrow(/block 1 holds 0 bytes/)
  })

  it('MLX scales/biases read while the weight\'s reads are under way wait for them: each row block is encoded once', async () => {
    setThreads(2)
    const rows = 512
    const cols = 1024
    const blockRows = ENCODE_BLOCK_BYTES / (cols * 4)
    const source = f32Record('w', [rows, cols], values(rows, cols, 12))
    const {weight, scales, biases} = quantizedRecords(source, 'w', {bits: 4, groupSize: 64}, 'F16')
    const pool = sharedPool()!
    const start = pool.completed
    // As the writer reads ahead in the given order: the weight in chunks (a row block each here),
    // then scales and biases before the weight's reads are done.
    const blocks = rows / blockRows
    const chunk = weight.byteLength / blocks
    const reads = Array.from({length: blocks}, (_, i) => weight.read(i * chunk, (i + 1) * chunk))
    const params = [scales.read(), biases.read()]
    await Promise.all([...reads, ...params])
    expect(pool.completed - start).toBe(blocks)
  }, 60_000)
})

describe('conversions on the pool', () => {
  let work: string
  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-pool-'))
  })
  afterAll(async () => {
    await fs.rm(work, {recursive: true, force: true})
  })

  for (const [dtype, quantization] of [['F16', undefined], ['BF16', undefined], ['F16', {bits: 8, groupSize: 32, mode: 'q8_0' as const}]] as const) {
    it(`gguf ${quantization ? 'q8_0' : dtype.toLowerCase()}: --threads 1 and 2 write the same file (sha256), float casts in this thread`, async () => {
      const hashes: string[] = []
      for (const threads of [1, 2]) {
        setThreads(threads)
        const out = path.join(work, `${dtype}-${quantization ? 'q8' : 'f'}-${threads}`)
        const before = sharedPool()?.completed ?? 0
        const result = await drain(convert(path.join(repo, 'fixtures', 'tiny-hf'), 'gguf', out, {}, {dtype, ...(quantization ? {quantization} : {})}))
        hashes.push(sha(await fs.readFile(result.target.path)))
        // The quantized tensors went through the workers; a float cast stays in this thread on any
        // thread count (on the pool its messages cost more than the cast: bench/RESULTS.md).
        if (threads === 2) {
          const done = sharedPool()!.completed - before
          if (quantization) expect(done).toBeGreaterThan(10)
          else expect(done).toBe(0)
        }
      }
      expect(hashes[1]).toBe(hashes[0])
    }, 120_000)
  }

  for (const dtype of ['BF16', 'F16'] as const) {
    it(`hf ${dtype.toLowerCase()}: --threads 1 and 2 write the same safetensors (sha256), the casts in this thread`, async () => {
      const hashes: string[] = []
      for (const threads of [1, 2]) {
        setThreads(threads)
        const out = path.join(work, `hf-${dtype}-${threads}`)
        const before = sharedPool()?.completed ?? 0
        await drain(convert(path.join(repo, 'fixtures', 'tiny-hf'), 'hf', out, {}, {dtype}))
        hashes.push(sha(await fs.readFile(path.join(out, 'model.safetensors'))))
        if (threads === 2) expect(sharedPool()!.completed - before).toBe(0) // the casts stay in this thread
      }
      expect(hashes[1]).toBe(hashes[0])
    }, 120_000)
  }
})

describe('--threads and OPENELM_THREADS on the command line', () => {
  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [path.join(repo, 'bin', 'dev.js'), ...args], {env: {...process.env, NO_COLOR: '1', ...env}, encoding: 'utf8'})

  it('a bad count is one line, exit 2, before any work; a good one converts', async () => {
    const out = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-pool-cli-'))
    try {
      const target = path.join(out, 'x')
      const bad = run(['convert', path.join(repo, 'fixtures', 'tiny-hf'), '--to', 'hf', '--dtype', 'bf16', '--threads', '0', '--out', target])
      expect(bad.status).toBe(2)
      expect(bad.stderr.trim().split('\n')).toHaveLength(1)
      expect(bad.stderr).toContain('--threads')
      const env = run(['synth', '--preset', 'tiny', '--out', target], {OPENELM_THREADS: 'many'})
      expect(env.status).toBe(2)
      expect(env.stderr).toContain('OPENELM_THREADS')
      await expect(fs.access(target)).rejects.toThrow()
      const good = run(['convert', path.join(repo, 'fixtures', 'tiny-hf'), '--to', 'hf', '--dtype', 'bf16', '--threads', '2', '--out', target])
      expect(good.status).toBe(0)
      expect((await fs.stat(path.join(target, 'model.safetensors'))).size).toBeGreaterThan(1000)
    } finally {
      await fs.rm(out, {recursive: true, force: true})
    }
  }, 120_000)
})
