/**
 * Transpose-free ONNX weights (issue 14, item 2): MatMul weights are [in, out] initializers fed
 * straight into MatMul, the tied head is one Gemm(transB) on the [vocab, d] embedding, the
 * reader transposes back (streamed, ranged reads) and still reads older exports that kept
 * [out, in] behind a Transpose node.
 */
import {execFileSync} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {readOnnx, writeOnnx} from '../src/formats/onnx/index.js'
import {int8Records, int8WindowBytes, q4Records, SharedCodes, transposedInt8Records} from '../src/formats/onnx/int8.js'
import {closeSharedPool, setThreads} from '../src/pool/index.js'
import {openOnnx} from '../src/formats/onnx/read.js'
import {transposedRecord} from '../src/formats/onnx/transpose.js'
import {quantizedRecords} from '../src/formats/mlx/quantize.js'
import {resetTransposeKernel} from '../src/simd/transpose.js'
import {type Checkpoint} from '../src/formats/types.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {castRecord, f32Record, readIntoOf} from '../src/tensor/record.js'
import {OnnxDecoder} from '../src/verify/backends/onnxruntime.js'

const PYTHON = '/usr/bin/python3'
const LAYOUT = path.join(import.meta.dirname, 'python', 'onnx_layout.py')
const config = presetConfig('tiny')
const TOKENS = [1, 17, 42, 99, 5, 63, 120, 7]

let root: string
let source: Checkpoint

async function logitsOf(dir: string): Promise<Float32Array> {
  const decoder = await OnnxDecoder.open(dir, config)
  try {
    return (await decoder.step([TOKENS], [TOKENS.map(() => 1)], decoder.emptyCache(1))).logits
  } finally {
    await decoder.close()
  }
}

/** An f32 [rows, cols] record of value(i), and a copy of it that counts the bytes read from it. */
function countedSource(rows: number, cols: number, value: (i: number) => number) {
  const plain = f32Record('w', [rows, cols], Float32Array.from({length: rows * cols}, (_, i) => value(i)))
  let bytes = 0
  const counted = {...plain, read: async (start = 0, end = plain.byteLength) => ((bytes += end - start), plain.read(start, end))}
  return {plain, counted, bytesRead: () => bytes}
}

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-onnx-layout-'))
  source = synthCheckpoint(config, {seed: 5, dtype: 'F32'})
  await drain(writeOnnx(source, path.join(root, 'f32'), {}))
  await drain(writeOnnx(source, path.join(root, 'f16'), {dtype: 'F16'}))
}, 60_000)

afterAll(async () => {
  await fs.rm(root, {recursive: true, force: true})
})

describe('onnx weight layout', () => {
  it('feeds every MatMul an [in, out] initializer, no Transpose of a weight, the head a Gemm(transB) on the embedding', () => {
    const d = JSON.parse(execFileSync(PYTHON, [LAYOUT, 'describe', path.join(root, 'f32/onnx/model.onnx')], {encoding: 'utf8'}))
    expect(d.metadata['openelm.matmul_weights']).toBe('in_out')
    expect(d.transpose_of_initializer).toEqual([])
    // 4 MatMuls per layer, each on an initializer whose shape is the canonical one reversed.
    expect(d.matmul_b).toHaveLength(4 * config.num_transformer_layers)
    const canonical = new Map(source.tensors.map((t) => [`transformer.${t.name}`, t.shape]))
    for (const [name, dims] of d.matmul_b) expect(dims).toEqual([...canonical.get(name)!].reverse())
    expect(d.gemm).toEqual([['transformer.token_embeddings.weight', [config.vocab_size, config.model_dim], 1]])
    expect(d.gather).toEqual([['transformer.token_embeddings.weight', [config.vocab_size, config.model_dim]]])
    // f16: weights reach MatMul through a Cast only, never a Transpose.
    const h = JSON.parse(execFileSync(PYTHON, [LAYOUT, 'describe', path.join(root, 'f16/onnx/model_fp16.onnx')], {encoding: 'utf8'}))
    expect(h.transpose_of_initializer).toEqual([])
    expect(h.cast_of_initializer).toBe(source.tensors.length)
  })

  it('reads an older export (weights [out, in] behind Transpose, no metadata) bit-exact, and it runs to the same logits', async () => {
    const legacy = path.join(root, 'legacy')
    await fs.cp(path.join(root, 'f32'), legacy, {recursive: true})
    execFileSync(PYTHON, [LAYOUT, 'legacy', path.join(root, 'f32/onnx/model.onnx'), path.join(legacy, 'onnx/model.onnx')])
    const d = JSON.parse(execFileSync(PYTHON, [LAYOUT, 'describe', path.join(legacy, 'onnx/model.onnx')], {encoding: 'utf8'}))
    expect(d.transpose_of_initializer).toHaveLength(4 * config.num_transformer_layers)
    expect(d.metadata).toEqual({})
    for (const dir of [legacy, path.join(root, 'f32')]) {
      const back = await readOnnx(dir)
      try {
        expect(back.tensors.map((t) => [t.name, t.shape])).toEqual(source.tensors.map((t) => [t.name, t.shape]))
        for (const [i, t] of back.tensors.entries()) {
          expect(Buffer.compare(Buffer.from(await t.read()), Buffer.from(await source.tensors[i].read())), t.name).toBe(0)
        }
      } finally {
        await back.close()
      }
    }
    const [a, b] = [await logitsOf(legacy), await logitsOf(path.join(root, 'f32'))]
    let maxAbs = 0
    for (let i = 0; i < a.length; i++) maxAbs = Math.max(maxAbs, Math.abs(a[i] - b[i]))
    expect(a.length).toBe(TOKENS.length * config.vocab_size)
    expect(maxAbs).toBeLessThanOrEqual(1e-5)
  })

  it('transposedRecord: ranged reads across windows and bands equal the plain transpose (f32, f16), and it is its own inverse', async () => {
    const [rows, cols] = [37, 53]
    const values = Float32Array.from({length: rows * cols}, (_, i) => Math.sin(i * 1.7) * 10)
    const want = new Float32Array(rows * cols)
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) want[c * rows + r] = values[r * cols + c]
    for (const dtype of ['F32', 'F16'] as const) {
      const src = castRecord(f32Record('w', [rows, cols], values), dtype)
      const expected = await castRecord(f32Record('w', [cols, rows], want), dtype).read()
      const size = dtype === 'F32' ? 4 : 2
      for (const limits of [{}, {windowBytes: 3 * rows * size, bandBytes: 5 * cols * size}, {windowBytes: 1, bandBytes: 1}]) {
        const t = transposedRecord(src, 'w', limits)
        expect(t.shape).toEqual([cols, rows])
        expect(Buffer.from(await t.read())).toEqual(Buffer.from(expected))
        for (const [s, e] of [[0, 7], [size * rows - 3, size * rows * 4 + 5], [11, t.byteLength], [t.byteLength - 2, t.byteLength]]) {
          expect(Buffer.from(await t.read(s, e)), `${dtype} [${s}, ${e})`).toEqual(Buffer.from(expected.subarray(s, e)))
        }
        expect(Buffer.from(await transposedRecord(t, 'w', limits).read())).toEqual(Buffer.from(await src.read()))
      }
    }
  })
  it('transposedRecord: the SIMD kernel and the element loop give the same bytes (f32, f16; read and readInto; odd shapes and windows)', async () => {
    for (const [rows, cols] of [[37, 53], [64, 96], [8, 1], [130, 24]] as const) {
      const values = Float32Array.from({length: rows * cols}, (_, i) => Math.cos(i * 0.37) * 100)
      for (const dtype of ['F32', 'F16'] as const) {
        const size = dtype === 'F32' ? 4 : 2
        const read = async (): Promise<Buffer[]> => {
          const out: Buffer[] = []
          for (const limits of [{}, {windowBytes: 5 * rows * size, bandBytes: 3 * cols * size}]) {
            const t = transposedRecord(castRecord(f32Record('w', [rows, cols], values), dtype), 'w', limits)
            out.push(Buffer.from(await t.read()))
            const into = new Uint8Array(t.byteLength)
            for (let at = 0; at < into.byteLength; at += 3 * size) await readIntoOf(t)!(into.subarray(at, Math.min(into.byteLength, at + 3 * size)), at)
            out.push(Buffer.from(into))
          }
          return out
        }
        const fast = await read()
        process.env.OPENELM_SIMD = '0'
        resetTransposeKernel()
        const scalar = await read()
        delete process.env.OPENELM_SIMD
        resetTransposeKernel()
        for (const [i, bytes] of fast.entries()) expect(bytes.equals(scalar[i]!), `${rows}x${cols} ${dtype} #${i}`).toBe(true)
      }
    }
  })
  it('transposedRecord holds no buffer between reads: one window serves the record that read last, a re-read after the last byte is served from it, another record takes it over', async () => {
    const [rows, cols] = [8, 16]
    const src = f32Record('w', [rows, cols], Float32Array.from({length: rows * cols}, (_, i) => i))
    let sourceReads = 0
    const counted = {...src, read: async (s?: number, e?: number) => (sourceReads++, src.read(s, e))}
    const limits = {windowBytes: 4 * rows * rows}
    const t = transposedRecord(counted, 'w', limits)
    const u = transposedRecord(counted, 'u', limits)
    const half = t.byteLength / 2
    const want = Buffer.from(await transposedRecord(src, 'w').read())
    expect(Buffer.from(await t.read(0, half))).toEqual(want.subarray(0, half))
    const afterFirst = sourceReads
    await t.read(0, half) // the same window again: taken back as it was
    expect(sourceReads).toBe(afterFirst)
    expect(Buffer.from(await t.read(half, t.byteLength))).toEqual(want.subarray(half))
    const afterLast = sourceReads
    await t.read(half, t.byteLength) // after the last byte, still the same window (a reader going back over the tensor)
    expect(sourceReads).toBe(afterLast)
    await u.read(0, half) // another record takes the one window over…
    const afterOther = sourceReads
    expect(Buffer.from(await t.read(half, t.byteLength))).toEqual(want.subarray(half)) // …so this one reads its source again
    expect(sourceReads).toBeGreaterThan(afterOther)
  })
  it('transposedRecord: many matrices each read to the end and then from the start again (the MLX quantizer on an ONNX source) keep one window, not one per matrix', async () => {
    const [rows, cols] = [512, 512] // 1 MiB of f32: one window per matrix
    // Windows and bands of at most 1 MiB: a new buffer is made at the most a window may take.
    const limits = {windowBytes: 1024 * 1024, bandBytes: 1024 * 1024}
    const records = Array.from({length: 24}, (_, k) => transposedRecord(f32Record(`w${k}`, [rows, cols], Float32Array.from({length: rows * cols}, (_, i) => (i * (k + 1)) % 97)), `w${k}`, limits))
    const target = new Uint8Array(64 * 1024)
    const before = process.memoryUsage().arrayBuffers
    for (const r of records) {
      for (let at = 0; at < r.byteLength; at += target.byteLength) await readIntoOf(r)!(target, at)
      await readIntoOf(r)!(target, 0)
    }
    // Each matrix's window is 1 MiB: one kept per matrix (the old rule) would be 24 MiB more.
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(6 * 1024 * 1024)
  })
  it('an ONNX source read by the MLX quantizer as the writer reads (two chunks at a time, on 1 and 2 threads): one source pass per window, the same bytes', async () => {
    // Source [in 512, out 1024] f32: transposed [1024, 512], MLX row blocks of 128 rows, windows of 256.
    const [rows, cols] = [512, 1024]
    const {plain, counted, bytesRead} = countedSource(rows, cols, (i) => Math.sin(i * 0.37) * 2)
    const limits = {windowBytes: 256 * rows * 4}
    const spec = {bits: 4, groupSize: 64}
    const want = Buffer.from(await quantizedRecords(transposedRecord(plain, 'w'), 'w', spec, 'F16').weight.read())
    try {
      for (const threads of [1, 2]) {
        setThreads(threads)
        const {weight} = quantizedRecords(transposedRecord(counted, 'w', limits), 'w', spec, 'F16')
        const before = bytesRead()
        // Chunks of 300 rows (not a whole number of blocks or windows), the next asked for before the last is done.
        const chunk = 300 * (weight.byteLength / cols)
        const reads: Array<Promise<Uint8Array>> = []
        for (let at = 0; at < weight.byteLength; at += chunk) reads.push(weight.read(at, Math.min(weight.byteLength, at + chunk)))
        const parts: Uint8Array[] = []
        for (const read of reads) parts.push(await read)
        expect(Buffer.concat(parts)).toEqual(want)
        expect(bytesRead() - before, `${threads} thread(s)`).toBe(4 * rows * cols * 4) // 4 windows, each built once
      }
    } finally {
      setThreads(undefined)
      await closeSharedPool()
    }
  }, 60_000)
  it('ONNX initializers read into the caller\'s buffer (the transposed records\' bands reuse one), the bytes of read(); outside the tensor is an error', async () => {
    const file = await openOnnx(path.join(root, 'f16/onnx/model_fp16.onnx'))
    try {
      for (const init of file.initializers) {
        const into = new Uint8Array(init.byteLength)
        await readIntoOf(init)!(into, 0)
        expect(Buffer.from(into), init.name).toEqual(Buffer.from(await init.read()))
      }
      const last = file.initializers[file.initializers.length - 1]!
      await expect(readIntoOf(last)!(new Uint8Array(2), last.byteLength - 1)).rejects.toThrow(/outside the tensor/)
      await expect(last.read(0, last.byteLength + 1)).rejects.toThrow(/outside the tensor/)
    } finally {
      await file.close()
    }
  })
  it('transposed int8 codes: the int8 codes transposed by hand and their scales, on 1 and 2 threads; one source pass per window, the windows of every matrix in one shared buffer', async () => {
    const [rows, cols] = [48, 40]
    const {plain, counted, bytesRead} = countedSource(rows, cols, (i) => Math.sin(i * 0.61) * 3)
    const whole = int8Records(plain, 'w', 'w_scale')
    const direct = new Int8Array((await whole.codes.read()).slice().buffer)
    const want = new Int8Array(rows * cols)
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) want[c * rows + r] = direct[r * cols + c]!
    const wantScales = Buffer.from(await whole.scales.read())
    try {
      for (const threads of [1, 2]) {
        setThreads(threads)
        // One window (the whole matrix), then windows of 7 output rows (6 windows: 6 passes).
        for (const [windowBytes, passes] of [[undefined, 1], [7 * rows, 6]] as const) {
          const shared = new SharedCodes(int8WindowBytes(rows, cols, windowBytes))
          const {codes, scales} = transposedInt8Records(counted, 'w', 'w_scale', shared, windowBytes)
          const before = bytesRead()
          // In chunks that straddle the windows, through readInto as the writer reads.
          const got = new Uint8Array(codes.byteLength)
          for (let at = 0; at < got.byteLength; at += 100) await readIntoOf(codes)!(got.subarray(at, Math.min(got.byteLength, at + 100)), at)
          expect(bytesRead() - before, `${threads} thread(s), window ${windowBytes}`).toBe(passes * rows * cols * 4)
          expect(Buffer.from(got)).toEqual(Buffer.from(want.buffer))
          expect(Buffer.from(await scales.read())).toEqual(wantScales)
          expect(bytesRead() - before).toBe(passes * rows * cols * 4) // the scales came from those passes
          // A second matrix takes the buffer over: the first one's codes are computed again if read again.
          const other = transposedInt8Records(counted, 'v', 'v_scale', shared, windowBytes)
          expect(Buffer.from(await other.codes.read())).toEqual(Buffer.from(want.buffer))
          expect(Buffer.from(await codes.read(0, rows))).toEqual(Buffer.from(want.buffer, 0, rows))
        }
      }
    } finally {
      setThreads(undefined)
      await closeSharedPool()
    }
  }, 60_000)
  it('streamed int8 codes (the embedding) read in chunks that split rows, then the scales: one pass, the scales from the codes\' reads', async () => {
    const [rows, cols] = [30, 48]
    const {plain, counted, bytesRead} = countedSource(rows, cols, (i) => Math.sin(i * 0.43) * 5)
    const whole = int8Records(plain, 'w', 'w_scale')
    const {codes, scales} = int8Records(counted, 'w', 'w_scale', {streamed: true})
    const parts: Buffer[] = []
    for (let at = 0; at < codes.byteLength; at += 100) parts.push(Buffer.from(await codes.read(at, Math.min(codes.byteLength, at + 100))))
    const read = bytesRead()
    expect(Buffer.concat(parts)).toEqual(Buffer.from(await whole.codes.read()))
    expect(Buffer.from(await scales.read())).toEqual(Buffer.from(await whole.scales.read()))
    expect(bytesRead()).toBe(read) // no pass for the scales
  })
  it('q4 scales come from the blocks\' own tasks when every block was read first (the writer\'s order): one pass for both', async () => {
    const [rows, cols] = [16, 64]
    const {plain, counted, bytesRead} = countedSource(rows, cols, (i) => Math.cos(i * 0.29) * 2)
    const want = q4Records(plain, 'w', 'w_scales')
    const {blocks, scales} = q4Records(counted, 'w', 'w_scales')
    expect(Buffer.from(await blocks.read())).toEqual(Buffer.from(await want.blocks.read()))
    expect(Buffer.from(await scales.read())).toEqual(Buffer.from(await want.scales.read()))
    expect(bytesRead()).toBe(rows * cols * 4)
  })
  it('q4 scales are let go once read to their last byte (the writer keeps every record until the file is done): a second read computes them again', async () => {
    const [rows, cols] = [16, 64]
    const {counted, bytesRead} = countedSource(rows, cols, (i) => Math.cos(i * 0.29) * 2)
    const {scales} = q4Records(counted, 'w', 'w_scales')
    const half = scales.byteLength / 2
    const first = Buffer.concat([await scales.read(0, half), await scales.read(half, scales.byteLength)])
    expect(bytesRead()).toBe(rows * cols * 4) // one pass for both reads: kept until the last byte was read
    const again = Buffer.from(await scales.read())
    expect(bytesRead()).toBe(2 * rows * cols * 4) // released: computed again, the same bytes
    expect(again).toEqual(first)
  })
})
