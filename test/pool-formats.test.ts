/**
 * The rest of the pool (issue 15): MLX affine and fp modes, ONNX q8/q4 and synth compute their row
 * blocks on the worker pool. Each writes the same bytes with 2 workers as with 1 (sha256), and the
 * records' bytes are the scheme's encode of the whole tensor in one call (the reference), so the
 * blocks came back whole and in order.
 */
import {createHash} from 'node:crypto'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'
import {convert, writeCheckpoint} from '../src/convert.js'
import {fpQuantizedRecords} from '../src/formats/mlx/fp.js'
import {planGguf, writeGguf} from '../src/formats/gguf/write.js'
import {quantizedRecords} from '../src/formats/mlx/quantize.js'
import {int8Records, int8WindowBytes, q4Records, SharedCodes, SharedSlots, slotCount, stepResultBytes, transposedInt8Records} from '../src/formats/onnx/int8.js'
import {q4Blocks} from '../src/quant/onnx-q4.js'
import {runTask} from '../src/pool/tasks.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint, synthUniform} from '../src/model/synth.js'
import {closeSharedPool, mapOrdered, setThreads, sharedPool} from '../src/pool/index.js'
import {drain} from '../src/progress.js'
import {hashFolder} from './helpers/hash-folder.js'
import {SCHEMES} from '../src/quant/index.js'
import {type Encoded} from '../src/quant/types.js'
import {type FloatDType, fromFloat32, toFloat32} from '../src/tensor/dtype.js'
import {castRecord, f32Record, fileRangeOf, type TensorRecord} from '../src/tensor/record.js'
import {openSafetensors} from '../src/formats/safetensors/read.js'
import {writeSafetensors} from '../src/formats/safetensors/write.js'

const repo = path.resolve(import.meta.dirname, '..')
const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')

// × 256 columns: 1400 rows are 2 MLX row blocks (1024 rows each), 4200 rows 2 ONNX steps (4096 rows);
// edge values (NaN, ±Inf, subnormals, -0, ties) among seeded noise.
const COLS = 256
function values(rows: number): Float32Array {
  const out = new Float32Array(rows * COLS)
  let s = 12345
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = ((s / 2 ** 32) - 0.5) * 4
  }
  const bits = new Uint32Array(out.buffer)
  const edges = [0x7fc00000, 0x7f800000, 0xff800000, 0x00000001, 0x807fffff, 0x80000000, 0x3f808000, 0x3f818000, 0x33800000, 0x38000000]
  for (let k = 0; k < edges.length; k++) bits[(k * 104_729) % bits.length] = edges[k]!
  return out
}

/** Read records as the writers do: in the given order, 1 MiB chunks, two reads in flight. */
async function readAll(records: TensorRecord[]): Promise<Uint8Array[]> {
  const out: Uint8Array[] = []
  for (const r of records) {
    const whole = new Uint8Array(r.byteLength)
    const step = 1 << 20
    const starts: number[] = []
    for (let s = 0; s < r.byteLength; s += step) starts.push(s)
    for (let i = 0; i < starts.length; i += 2) {
      const pair = starts.slice(i, i + 2)
      const bytes = await Promise.all(pair.map((s) => r.read(s, Math.min(r.byteLength, s + step))))
      pair.forEach((s, k) => whole.set(bytes[k]!, s))
    }
    out.push(whole)
  }
  return out
}

// One pool for the file (starting workers is the slow part); counts are taken as differences.
const completed = () => sharedPool()?.completed ?? 0
afterEach(() => setThreads(undefined))
afterAll(async () => {
  await closeSharedPool()
})

describe('quantizing records on the pool', () => {
  const MLX_ROWS = 1400
  const ONNX_ROWS = 4200
  const sources: Record<number, Float32Array> = {[MLX_ROWS]: values(MLX_ROWS), [ONNX_ROWS]: values(ONNX_ROWS)}
  const cases: Array<{name: string; scheme: string; params: Record<string, unknown>; parts: string[]; rows: number; make(source: Float32Array): TensorRecord[]; blocks: number}> = [
    {
      name: 'mlx affine 4-bit g64, F16 scales (biases, scales, weight: the writer\'s order)', scheme: 'mlx_affine', params: {bits: 4, group_size: 64, dtype: 'F16'}, parts: ['biases', 'scales', 'weight'], rows: MLX_ROWS, blocks: 2,
      make: (source) => {
        const rows = MLX_ROWS
        const r = quantizedRecords(f32Record('w', [rows, COLS], source), 'w', {bits: 4, groupSize: 64}, 'F16')
        return [r.biases, r.scales, r.weight]
      },
    },
    {
      name: 'mlx affine 3-bit g32, BF16 scales, weight read first', scheme: 'mlx_affine', params: {bits: 3, group_size: 32, dtype: 'BF16'}, parts: ['weight', 'scales', 'biases'], rows: MLX_ROWS, blocks: 2,
      make: (source) => {
        const rows = MLX_ROWS
        const r = quantizedRecords(f32Record('w', [rows, COLS], source), 'w', {bits: 3, groupSize: 32}, 'BF16')
        return [r.weight, r.scales, r.biases]
      },
    },
    ...(['mxfp4', 'mxfp8'] as const).map((mode) => ({
      name: `mlx ${mode} from BF16`, scheme: `mlx_${mode}`, params: {dtype: 'BF16'}, parts: ['weight', 'scales'], rows: MLX_ROWS, blocks: 2,
      make: (source: Float32Array) => {
        const rows = MLX_ROWS
        const r = fpQuantizedRecords(f32Record('w', [rows, COLS], source), 'w', mode, 'BF16' as FloatDType)
        return [r.weight, r.scales]
      },
    })),
    {
      name: 'onnx q8 (int8 codes, f32 scales per row)', scheme: 'onnx_int8', params: {}, parts: ['weight', 'scales'], rows: ONNX_ROWS, blocks: 2,
      make: (source) => {
        const rows = ONNX_ROWS
        const r = int8Records(f32Record('w', [rows, COLS], source), 'w', 'w_scale')
        return [r.codes, r.scales]
      },
    },
    {
      name: 'onnx q4 (MatMulNBits blocks, f32 scales)', scheme: 'onnx_q4', params: {dtype: 'F32'}, parts: ['blocks', 'scales'], rows: ONNX_ROWS, blocks: 2,
      make: (source) => {
        const rows = ONNX_ROWS
        const r = q4Records(f32Record('w', [rows, COLS], source), 'w', 'w_scales')
        return [r.blocks, r.scales]
      },
    },
    // The export's form: each step's result written by the workers into a file's shared slots, the
    // scales kept in its one scales buffer; with one slot the steps ahead get buffers of their own.
    ...([slotCount(2), 1] as const).map((count) => ({
      name: `onnx q4f16 in ${count} shared slot(s)`, scheme: 'onnx_q4', params: {dtype: 'F16'}, parts: ['blocks', 'scales'], rows: ONNX_ROWS, blocks: 2,
      make: (source: Float32Array) => {
        const rows = ONNX_ROWS
        const shared = {slots: new SharedSlots(stepResultBytes(rows, COLS, 'q4f16'), count), scales: new SharedCodes(rows * q4Blocks(COLS) * 2)}
        const r = q4Records(f32Record('w', [rows, COLS], source), 'w', 'w_scales', 'F16', shared)
        return [r.blocks, r.scales]
      },
    })),
    {
      name: 'onnx q8 streamed (the embedding) in shared slots', scheme: 'onnx_int8', params: {}, parts: ['weight', 'scales'], rows: ONNX_ROWS, blocks: 2,
      make: (source) => {
        const rows = ONNX_ROWS
        const r = int8Records(f32Record('w', [rows, COLS], source), 'w', 'w_scale', {streamed: true, slots: new SharedSlots(stepResultBytes(rows, COLS, 'q8'), slotCount(2))})
        return [r.codes, r.scales]
      },
    },
  ]
  for (const c of cases) {
    it(`${c.name}: 1 and 2 threads give the scheme's encode of the whole tensor`, async () => {
      const source = sources[c.rows]!
      const reference: Encoded = SCHEMES[c.scheme]!.encode(source, c.rows, COLS, c.params)
      const hashes: string[][] = []
      for (const threads of [1, 2]) {
        setThreads(threads)
        const before = completed()
        const parts = await readAll(c.make(source))
        hashes.push(parts.map(sha))
        parts.forEach((bytes, k) => expect(sha(bytes), `${c.parts[k]} on ${threads} thread(s)`).toBe(sha(reference[c.parts[k]!]!)))
        if (threads === 2) expect(completed() - before).toBeGreaterThanOrEqual(c.blocks) // the blocks went through the workers (tasks counted)
      }
      expect(hashes[1]).toEqual(hashes[0])
    }, 60_000)
  }
})

describe('an encode task with `into` (the result written in place)', () => {
  for (const [scheme, params, cols] of [['onnx_int8', {}, 256], ['onnx_int8', {}, 40], ['onnx_q4', {dtype: 'F32'}, 256], ['onnx_q4', {dtype: 'F16'}, 256], ['onnx_q4', {dtype: 'F16'}, 40]] as const) {
    it(`${scheme} ${JSON.stringify(params)} × ${cols} columns: the parts in the shared views equal encode's, and the result is those views`, () => {
      const rows = 37
      const source = values(Math.ceil((rows * cols) / COLS)).subarray(0, rows * cols)
      const want = SCHEMES[scheme]!.encode(source, rows, cols, params)
      const buffer = new SharedArrayBuffer(1 << 16)
      let at = 8 // not at the buffer's start
      const into: Encoded = {}
      for (const [part, bytes] of Object.entries(want)) {
        into[part] = new Uint8Array(buffer, at, bytes.byteLength)
        at += bytes.byteLength + 8
      }
      const got = runTask({kind: 'encode', scheme, params, values: source.slice(), rows, cols, into})
      for (const [part, bytes] of Object.entries(want)) {
        expect(sha(into[part]!), part).toBe(sha(bytes))
        expect(got[part]).toBe(into[part])
      }
    })
  }
})

describe('a source in a safetensors file: on the pool the tasks read their own rows (encodeFile)', () => {
  let work: string
  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-poolfile-'))
  })
  afterAll(async () => {
    await fs.rm(work, {recursive: true, force: true})
  })
  const rows = 1400
  for (const dtype of ['F32', 'BF16'] as const) {
    it(`${dtype} source → mlx affine 4-bit and mxfp4, gguf q8_0 and q4_0, onnx int8 transposed: 1 and 2 threads give the scheme's encode of the values`, async () => {
      const file = path.join(work, `${dtype}.safetensors`)
      await drain(writeSafetensors(file, [castRecord(f32Record('w', [rows, COLS], values(rows)), dtype)]))
      const st = await openSafetensors(file)
      try {
        const source = st.tensors[0]!
        expect(fileRangeOf(source)).toBeDefined()
        const stored = toFloat32(await source.read(), dtype)
        const affine = SCHEMES.mlx_affine!.encode(stored, rows, COLS, {bits: 4, group_size: 64, dtype: 'F16'})
        const fp = SCHEMES.mlx_mxfp4!.encode(stored, rows, COLS, {dtype: 'F16'})
        const gguf = ['gguf_q8_0', 'gguf_q4_0'].map((s) => sha(SCHEMES[s]!.encode(stored, 1, stored.length, {}).blocks!))
        const int8 = SCHEMES.onnx_int8!.encode(stored, rows, COLS, {})
        const transposed = new Uint8Array(rows * COLS)
        for (let r = 0; r < rows; r++) for (let c = 0; c < COLS; c++) transposed[c * rows + r] = int8.weight![r * COLS + c]!
        for (const threads of [1, 2]) {
          setThreads(threads)
          const before = completed()
          const q = quantizedRecords(source, 'w', {bits: 4, groupSize: 64}, 'F16')
          const f = fpQuantizedRecords(source, 'f', 'mxfp4', 'F16')
          const [weight, scales, biases, fpWeight, fpScales] = await readAll([q.weight, q.scales, q.biases, f.weight, f.scales])
          expect([weight, scales, biases].map(sha), `affine on ${threads} thread(s)`).toEqual([affine.weight!, affine.scales!, affine.biases!].map(sha))
          expect([fpWeight, fpScales].map(sha), `mxfp4 on ${threads} thread(s)`).toEqual([fp.weight!, fp.scales!].map(sha))
          // GGUF's quantized tensors: element chunks, read by the tasks themselves on the pool.
          const plan = planGguf([], [{name: 'a', type: 'Q8_0', source}, {name: 'b', type: 'Q4_0', source}])
          const out = path.join(work, `${dtype}-${threads}.gguf`)
          await drain(writeGguf(out, plan))
          const bytes = await fs.readFile(out)
          const at = (t: (typeof plan.tensors)[number]) => plan.header.byteLength + t.offset
          expect(plan.tensors.map((t) => sha(bytes.subarray(at(t), at(t) + t.byteLength))), `gguf on ${threads} thread(s)`).toEqual(gguf)
          // ONNX's MatMul int8 codes, made transposed (int8T tasks, reading their rows themselves on the pool).
          const t = transposedInt8Records(source, 'q', 'q_scale', new SharedCodes(int8WindowBytes(rows, COLS)))
          const [tCodes, tScales] = await readAll([t.codes, t.scales])
          expect([tCodes, tScales].map(sha), `onnx int8 transposed on ${threads} thread(s)`).toEqual([transposed, int8.scales!].map(sha))
          if (threads === 2) expect(completed() - before).toBeGreaterThanOrEqual(8)
        }
      } finally {
        await st.close()
      }
    }, 60_000)
  }
})

describe('blocks computed ahead are computed once under concurrent reads', () => {
  it('an mxfp4 weight read as a writer does (4 chunks in flight, each over many blocks): each block once, same bytes', async () => {
    const rows = 8192
    const cols = 1024 // 256 rows (1 MiB of f32) a block: 32 blocks, 128 KiB of codes each
    const source = new Float32Array(rows * cols).map((_, i) => Math.sin(i * 0.37) * 3)
    const reference = SCHEMES.mlx_mxfp4!.encode(source, rows, cols, {dtype: 'F32'}).weight!
    setThreads(2)
    const weight = fpQuantizedRecords(f32Record('w', [rows, cols], source), 'w', 'mxfp4', 'F32').weight
    const before = completed()
    const chunk = 400_000 // ~3 blocks a read, not a multiple of a block: reads share boundary blocks
    const out = new Uint8Array(weight.byteLength)
    const starts: number[] = []
    for (let s = 0; s < weight.byteLength; s += chunk) starts.push(s)
    for (let i = 0; i < starts.length; i += 4) {
      const group = starts.slice(i, i + 4)
      const parts = await Promise.all(group.map((s) => weight.read(s, Math.min(weight.byteLength, s + chunk))))
      group.forEach((s, k) => out.set(parts[k]!, s))
    }
    expect(sha(out)).toBe(sha(reference))
    const tasks = completed() - before
    expect(tasks).toBeGreaterThanOrEqual(32)
    expect(tasks).toBeLessThanOrEqual(32 + starts.length) // at most a boundary block again per read
  }, 30_000)
})

describe('verify\'s exact check on the pool (compare tasks)', () => {
  it('the same diffs, in order, on 1 and 2 threads; a flipped code is found where it is', async () => {
    const rows = 600
    const source = values(rows)
    const params = {bits: 4, group_size: 64, dtype: 'F16' as const}
    const chunk = 200
    const tasks = () => [0, 1, 2].map((k) => {
      const part = source.slice(k * chunk * COLS, (k + 1) * chunk * COLS)
      const actual = SCHEMES.mlx_affine!.encode(part, chunk, COLS, params)
      if (k === 1) actual.weight![4 * 128 + 2 * 32 + 5] ^= 0x10 // row 4 (128 bytes a row), group 2 (32 bytes a group), byte 5: its high nibble is code 11
      return {kind: 'compare' as const, scheme: 'mlx_affine', params, values: part, actual, rows: chunk, cols: COLS}
    })
    const results: string[] = []
    for (const threads of [1, 2]) {
      setThreads(threads)
      const diffs = []
      for await (const d of mapOrdered(tasks())) diffs.push(d)
      expect(diffs.map((d) => d.blocks)).toEqual([800, 800, 800])
      expect(diffs.map((d) => d.identicalBlocks)).toEqual([800, 799, 800])
      expect(diffs[1]!.first).toEqual({row: 4, block: 2, col: 2 * 64 + 11, part: 'weight'})
      results.push(JSON.stringify(diffs))
    }
    expect(results[1]).toBe(results[0])
  }, 30_000)

  it('a task that reads REF\'s rows from the file (f32, bf16) gives the diffs of the same rows in memory, on 1 and 2 threads; a short file is a one-line error', async () => {
    const rows = 400
    const chunk = 100
    const params = {bits: 4, group_size: 64, dtype: 'F16' as const}
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-compare-file-'))
    try {
      for (const dtype of ['F32', 'BF16'] as const) {
        const stored = fromFloat32(values(rows), dtype)
        const source = toFloat32(stored, dtype)
        const file = path.join(dir, `ref-${dtype}.bin`)
        await fs.writeFile(file, Buffer.concat([Buffer.alloc(24), stored]))
        const handle = await fs.open(file, 'r')
        try {
          const actuals = [0, 1, 2, 3].map((k) => {
            const actual = SCHEMES.mlx_affine!.encode(source.slice(k * chunk * COLS, (k + 1) * chunk * COLS), chunk, COLS, params)
            if (k === 2) actual.scales![7] ^= 0x01
            return actual
          })
          const size = dtype === 'F32' ? 4 : 2
          const task = (k: number, fromFile: boolean) => ({
            kind: 'compare' as const, scheme: 'mlx_affine', params, rows: chunk, cols: COLS, actual: {...actuals[k]!},
            values: fromFile ? {fd: handle.fd, position: 24 + k * chunk * COLS * size, dtype} : source.slice(k * chunk * COLS, (k + 1) * chunk * COLS),
          })
          const runs: string[] = []
          for (const threads of [1, 2]) {
            setThreads(threads)
            for (const fromFile of [false, true]) {
              const diffs = []
              for await (const d of mapOrdered([0, 1, 2, 3].map((k) => task(k, fromFile)))) diffs.push(d)
              expect(diffs.map((d) => d.identicalBlocks)).toEqual([400, 400, 399, 400])
              runs.push(JSON.stringify(diffs))
            }
          }
          expect(new Set(runs).size).toBe(1)
          const short = {...task(3, true), values: {fd: handle.fd, position: 24 + 3 * chunk * COLS * size + 8, dtype}}
          for (const threads of [1, 2]) {
            setThreads(threads)
            await expect(async () => { for await (const _ of mapOrdered([short])) void _ }).rejects.toThrow(/^unexpected end of file at offset \d+ \(source values of a 100 × 256 block\)$/)
          }
        } finally {
          await handle.close()
        }
      }
    } finally {
      await fs.rm(dir, {recursive: true, force: true})
    }
  }, 60_000)
})

describe('conversions and synth on the pool: --threads 1 and 2 write the same files (sha256)', () => {
  let work: string
  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-pool2-'))
  })
  afterAll(async () => {
    await fs.rm(work, {recursive: true, force: true})
  })
  for (const [to, label, quantization] of [
    ['mlx', 'mlx 4-bit', {bits: 4, groupSize: 32, mode: 'affine'}],
    ['mlx', 'mlx mxfp4', {bits: 4, groupSize: 32, mode: 'mxfp4'}],
    ['onnx', 'onnx q8', {bits: 8, groupSize: 32, mode: 'affine'}],
    ['onnx', 'onnx q4', {bits: 4, groupSize: 32, mode: 'affine'}],
  ] as const) {
    it(label, async () => {
      const folders: Array<Record<string, string>> = []
      for (const threads of [1, 2]) {
        setThreads(threads)
        const before = completed()
        const out = path.join(work, `${label.replace(/\W/g, '-')}-${threads}`)
        await drain(convert(path.join(repo, 'fixtures', 'tiny-hf'), to, out, {}, {quantization}))
        folders.push(await hashFolder(out))
        if (threads === 2) expect(completed() - before).toBeGreaterThanOrEqual(8)
      }
      expect(Object.keys(folders[0]!).length).toBeGreaterThan(1)
      expect(folders[1]).toEqual(folders[0])
    }, 60_000)
  }

  it('synth (blocks of 2^18 elements on the workers) is the same file, and each value is the per-element formula', async () => {
    // tiny with a 20000-token vocabulary: the embedding spans 5 synth blocks.
    const config = presetConfig('tiny', {vocab_size: 20_000})
    const hashes: string[] = []
    for (const threads of [1, 2]) {
      setThreads(threads)
      const before = completed()
      const out = path.join(work, `synth-${threads}`)
      await drain(writeCheckpoint(synthCheckpoint(config, {seed: 3, dtype: 'BF16'}), 'hf', out, {dtype: 'BF16'}))
      hashes.push(sha(await fs.readFile(path.join(out, 'model.safetensors'))))
      if (threads === 2) expect(completed() - before).toBeGreaterThanOrEqual(5)
    }
    expect(hashes[1]).toBe(hashes[0])
    // A range across a block boundary, read on the pool, equals the formula element by element.
    setThreads(2)
    const tensors = synthCheckpoint(config, {seed: 3, dtype: 'F32'}).tensors
    const index = tensors.findIndex((t) => t.name === 'token_embeddings.weight')
    const embedding = tensors[index]!
    const first = (1 << 18) - 3
    const got = toFloat32(await embedding.read(first * 4, (first + 6) * 4), 'F32')
    const d = config.model_dim
    const amplitude = (Math.sqrt(3) * 2) / Math.sqrt(d)
    for (let i = 0; i < 6; i++) expect(got[i]).toBe(Math.fround(amplitude * synthUniform(3, index, first + i)))
  }, 60_000)
})
