/**
 * The ONNX float export's fast paths (issue 15): the writer's ring of chunk buffers written behind
 * the reads, and MatMul weights transposed band by band straight into a window in a kernel module's
 * memory (two band slots, the next band read while one is transposed). Every path gives the bytes of
 * the element loop (OPENELM_SIMD=0), and the files read back bit-exact.
 */
import {createHash} from 'node:crypto'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'
import {readOnnx, writeOnnx} from '../src/formats/onnx/index.js'
import {releaseTransposeBuffers, transposedRecord} from '../src/formats/onnx/transpose.js'
import {type Checkpoint} from '../src/formats/types.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {BLOCK_BYTES, resetTransposeKernel, transposeWindow} from '../src/simd/transpose.js'
import {castRecord, f32Record, memoryRecord, readChunksInto, readIntoOf, readViewOf, withReadInto} from '../src/tensor/record.js'

/** f32 values with the edge cases (NaN payloads, ±Inf, ±0, subnormals, f16 ties and overflow) among ordinary ones. */
function edgeValues(n: number): Float32Array {
  const special = [NaN, Infinity, -Infinity, 0, -0, 1e-45, -1e-45, 1.1754942e-38, 5.960464477539063e-8, 2.980232238769531e-8, 65504, 65520, -65536, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 3.4028235e38]
  const out = Float32Array.from({length: n}, (_, i) => Math.sin(i * 0.731) * 40)
  const bits = new Uint32Array(out.buffer)
  for (let i = 0; i < n; i += 7) out[i] = special[(i / 7) % special.length]!
  for (let i = 3; i < n; i += 97) bits[i] = 0x7fc00000 | (i & 0x3fffff) // NaNs with payloads
  return out
}

/** The element loop: [rows, cols] → [cols, rows] by hand. */
function transposed(bytes: Uint8Array, rows: number, cols: number, size: number): Uint8Array {
  const out = new Uint8Array(bytes.byteLength)
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out.set(bytes.subarray((r * cols + c) * size, (r * cols + c + 1) * size), (c * rows + r) * size)
  }
  return out
}

/** `run` with SIMD, then with the element loops (OPENELM_SIMD=0); no kept transpose buffers either time. */
async function simdThenScalar<T>(run: () => Promise<T>): Promise<[T, T]> {
  releaseTransposeBuffers()
  const simd = await run()
  process.env.OPENELM_SIMD = '0'
  resetTransposeKernel()
  releaseTransposeBuffers()
  try {
    return [simd, await run()]
  } finally {
    delete process.env.OPENELM_SIMD
    resetTransposeKernel()
    releaseTransposeBuffers()
  }
}

afterEach(() => {
  delete process.env.OPENELM_SIMD
  resetTransposeKernel()
  releaseTransposeBuffers()
})

describe('transpose window in a kernel module\'s memory', () => {
  it('transposes a band from either slot into the window as rows, edges included, like the element loop', () => {
    const window = transposeWindow(1 << 20)!
    expect(window).toBeDefined()
    for (const size of [2, 4] as const) {
      for (const [rows, stride, first, cols] of [[8, 8, 0, 8], [13, 29, 3, 21], [1, 9, 0, 9], [9, 1, 0, 1], [37, 53, 5, 40], [64, 200, 17, 150], [45, 40, 3, 36], [100, 64, 0, 64]] as const) {
        for (const slot of [0, 1]) {
          const band = window.band(slot, rows * stride * size)
          for (let i = 0; i < band.length; i++) band[i] = (i * 151 + 3 * slot + (i >> 9)) & 255
          const src = band.slice()
          // Rows r0.. of a window of `cols` rows of `outRow` elements (as a band after the first).
          const r0 = 5
          const outRow = rows + r0 + 2
          const win = new Uint8Array(window.buffer, 0, cols * outRow * size)
          win.fill(0xee)
          expect(window.fits(win.byteLength, rows * stride, size)).toBe(true)
          window.columns(slot, rows, stride, first, cols, size, r0 * size, outRow * size)
          const want = new Uint8Array(win.byteLength).fill(0xee)
          for (let c = 0; c < cols; c++) {
            for (let r = 0; r < rows; r++) want.set(src.subarray((r * stride + first + c) * size, (r * stride + first + c + 1) * size), (c * outRow + r0 + r) * size)
          }
          expect(Buffer.from(win).equals(Buffer.from(want)), `size ${size} ${rows}x${stride} from ${first}, ${cols} columns, slot ${slot}`).toBe(true)
        }
      }
    }
    expect(window.fits(window.windowBytes + 1, 8, 4)).toBe(false)
    expect(window.fits(64, BLOCK_BYTES, 2)).toBe(false)
    expect(window.fits(64, 8, 1)).toBe(false)
    expect(() => window.columns(0, 8, 8, 0, 8, 4, window.windowBytes - 16, 32)).toThrow(RangeError)
  })

  it('transposedRecord: the window path gives the element loop\'s bytes (f32, f16 with edge values; many bands and windows; read and readInto)', async () => {
    for (const [rows, cols] of [[37, 53], [130, 24], [1, 40], [40, 1], [300, 257]] as const) {
      const values = edgeValues(rows * cols)
      for (const dtype of ['F32', 'F16'] as const) {
        const size = dtype === 'F32' ? 4 : 2
        const bytes = await castRecord(f32Record('w', [rows, cols], values), dtype).read()
        // A reader that fills its target before its first await, as a page-cached file nearly does:
        // a band read into the wrong slot would overwrite the band being transposed.
        const src = withReadInto({...memoryRecord('w', dtype, [rows, cols], bytes)}, async (target, start) => target.set(bytes.subarray(start, start + target.byteLength)))
        const want = transposed(bytes, rows, cols, size)
        const [fast, scalar] = await simdThenScalar(async () => {
          const out: Buffer[] = []
          for (const limits of [{}, {windowBytes: 5 * rows * size, bandBytes: 3 * cols * size}, {windowBytes: 1, bandBytes: 1}].map((l) => ({...l, windowInKernel: true}))) {
            // No kept buffer: the window is made anew (in a kernel's memory where SIMD is on).
            releaseTransposeBuffers()
            const t = transposedRecord(src, 'w', limits)
            const pieces = new Uint8Array(t.byteLength)
            for (let at = 0; at < t.byteLength; at += 5 * size) await readIntoOf(t)!(pieces.subarray(at, Math.min(t.byteLength, at + 5 * size)), at)
            out.push(Buffer.from(await t.read()), Buffer.from(pieces))
          }
          return out
        })
        for (const [i, bytes] of fast.entries()) {
          expect(bytes.equals(Buffer.from(want)), `${rows}x${cols} ${dtype} #${i} (SIMD)`).toBe(true)
          expect(bytes.equals(scalar[i]!), `${rows}x${cols} ${dtype} #${i} (scalar)`).toBe(true)
        }
      }
    }
  })

  it('transposedRecord: views of a kernel window are its bytes, and stay so until `settled` is awaited (the next record\'s window included); no views of JS windows', async () => {
    const shapes = [[37, 53], [130, 24], [300, 257]] as const
    const sources = shapes.map(([rows, cols]) => {
      const bytes = new Uint8Array(edgeValues(rows * cols).buffer)
      return {rows, cols, bytes, src: withReadInto({...memoryRecord('w', 'F32', [rows, cols], bytes)}, async (target, start) => target.set(bytes.subarray(start, start + target.byteLength)))}
    })
    const want = Buffer.concat(sources.map(({rows, cols, bytes}) => transposed(bytes, rows, cols, 4)))
    for (const limits of [{}, {windowBytes: 5 * 300 * 4, bandBytes: 3 * 257 * 4}].map((l) => ({...l, windowInKernel: true}))) {
      releaseTransposeBuffers()
      // Views not yet "written": copied only when the record says it will reuse their memory (or at the end).
      let pending: Uint8Array[] = []
      const parts: Buffer[] = []
      const settled = async () => {
        parts.push(...pending.map((v) => Buffer.from(v)))
        pending = []
      }
      // All records made first, read one after another: they share the window buffer.
      const records = sources.map(({src}) => transposedRecord(src, 'w', limits))
      for (const record of records) {
        const view = readViewOf(record)!
        expect(view).toBeDefined()
        for (let at = 0; at < record.byteLength;) {
          const bytes = await view(at, Math.min(record.byteLength, at + 1000), settled)
          expect(bytes.byteLength).toBeGreaterThan(0)
          pending.push(bytes)
          at += bytes.byteLength
        }
      }
      await settled()
      expect(Buffer.concat(parts).equals(want), JSON.stringify(limits)).toBe(true)
    }
    expect(readViewOf(transposedRecord(sources[0]!.src, 'w'))).toBeUndefined()
    process.env.OPENELM_SIMD = '0'
    resetTransposeKernel()
    expect(readViewOf(transposedRecord(sources[0]!.src, 'w', {windowInKernel: true}))).toBeUndefined()
  })

  it('transposedRecord: a source without a no-allocation reader is read into the band slots too', async () => {
    const [rows, cols] = [70, 33]
    const bytes = new Uint8Array(edgeValues(rows * cols).buffer)
    const plain = memoryRecord('w', 'F32', [rows, cols], bytes)
    releaseTransposeBuffers()
    const got = await transposedRecord(plain, 'w', {bandBytes: 4 * cols * 4, windowInKernel: true}).read()
    expect(Buffer.from(got).equals(Buffer.from(transposed(bytes, rows, cols, 4)))).toBe(true)
  })
})

describe('readChunksInto with a ring of buffers', () => {
  it('puts chunk k into buffer k mod n, so n - 1 chunks may still be in use', async () => {
    const values = new Uint8Array(10 * 1024)
    for (let i = 0; i < values.length; i++) values[i] = (i * 7) & 255
    const record = withReadInto({...memoryRecord('b', 'U8', [values.length], values)}, async (target, start) => target.set(values.subarray(start, start + target.byteLength)))
    const ring = [new Uint8Array(4096), new Uint8Array(4096), new Uint8Array(4096)]
    const seen: Uint8Array[] = []
    for await (const chunk of readChunksInto(record, 1000, ring)) seen.push(chunk)
    expect(seen.map((c) => c.byteLength)).toEqual([...Array(10).fill(1000), 240])
    seen.forEach((c, k) => expect(c.buffer).toBe(ring[k % 3]!.buffer))
    // Every chunk but the last n - 1 has been overwritten since; those are still what was read.
    for (const k of [8, 9, 10]) expect(Buffer.from(seen[k]!)).toEqual(Buffer.from(values.subarray(k * 1000, k * 1000 + seen[k]!.byteLength)))
  })
})

describe('onnx float export: the written files', () => {
  // Tensors past one writer chunk (the embedding: 5000 × 64 f32 = 1.2 MiB) and more chunks than
  // the writer's ring holds.
  const config = presetConfig('tiny', {vocab_size: 5000})
  let root: string
  let source: Checkpoint
  const hash = async (dir: string): Promise<Record<string, string>> => {
    const files = (await fs.readdir(path.join(dir, 'onnx'))).sort()
    return Object.fromEntries(await Promise.all(files.map(async (f) => [f, createHash('sha256').update(await fs.readFile(path.join(dir, 'onnx', f))).digest('hex')] as const)))
  }

  beforeAll(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-onnx-float-'))
    source = synthCheckpoint(config, {seed: 23, dtype: 'F32'})
  })
  afterAll(async () => {
    await fs.rm(root, {recursive: true, force: true})
  })

  it('f32 (external data) and f16 (raw_data): the same bytes with SIMD (windows in a kernel\'s memory: one model file) and with the element loop, read back bit-exact', async () => {
    for (const [name, options, dtype] of [['f32', {layout: 'external-data'}, 'F32'], ['f16', {dtype: 'F16'}, 'F16']] as const) {
      const [simd, scalar] = await simdThenScalar(async () => {
        const out = path.join(root, `${name}-${process.env.OPENELM_SIMD === '0' ? 'scalar' : 'simd'}`)
        await drain(writeOnnx(source, out, options))
        return out
      })
      expect(await hash(simd)).toEqual(await hash(scalar))
      const back = await readOnnx(simd)
      try {
        expect(back.tensors.map((t) => t.name)).toEqual(source.tensors.map((t) => t.name))
        for (const [i, t] of back.tensors.entries()) {
          const want = await castRecord(source.tensors[i]!, dtype).read()
          expect(Buffer.compare(Buffer.from(await t.read()), Buffer.from(want)), `${name} ${t.name}`).toBe(0)
        }
      } finally {
        await back.close()
      }
    }
  }, 60_000)
})
