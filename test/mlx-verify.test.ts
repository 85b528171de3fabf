/**
 * Logit agreement of MLX conversions with their source, through the TS reference forward pass:
 * float16, bfloat16 and 8-bit meet DESIGN §5; 4-bit meets its documented threshold; quantization
 * broken on purpose (MSB-first packing, swapped scales/biases) fails.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {openSafetensors} from '../src/formats/safetensors/read.js'
import {FLOAT16_THRESHOLD, Q4_THRESHOLD, Q8_THRESHOLD, type AgreementThreshold} from '../src/formats/mlx/thresholds.js'
import {type WriteOptions} from '../src/formats/types.js'
import {compareLogits, type LogitMetrics} from '../src/verify/compare.js'
import {runForward} from '../src/verify/engine/index.js'
import {verify} from '../src/verify/index.js'
import {drain} from '../src/progress.js'

const FIXTURE = 'fixtures/tiny-hf'
const V = 128
/** The tiny model's whole context: 128 positions of a fixed token pattern. */
const TOKENS = Array.from({length: 128}, (_, i) => (i * 7919 + 13) % V)
let tmp: string
let reference: Float32Array

type Agreement = Pick<LogitMetrics, 'top1' | 'meanKl'>

function agreement(ref: Float32Array, got: Float32Array, vocab: number): Agreement {
  const {top1, meanKl} = compareLogits(ref, got, ref.length / vocab, vocab)
  return {top1, meanKl}
}

function passes(a: Agreement, t: AgreementThreshold): boolean {
  return a.top1 >= t.minTop1 && a.meanKl <= t.maxMeanKl
}

async function measure(dir: string): Promise<Agreement> {
  const ck = await openCheckpoint(dir)
  try {
    return agreement(reference, (await runForward(ck, TOKENS, {threads: 0})).logits, V)
  } finally {
    await ck.close()
  }
}

async function toMlx(name: string, options: WriteOptions): Promise<string> {
  const out = path.join(tmp, name)
  await drain(convert(FIXTURE, 'mlx', out, {}, options))
  return out
}

/** Rewrite model.safetensors in place with `edit(header, data)`. */
async function editSafetensors(dir: string, edit: (header: Record<string, any>, data: Buffer) => void): Promise<void> {
  const file = path.join(dir, 'model.safetensors')
  const bytes = await fs.readFile(file)
  const n = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'))
  const data = Buffer.from(bytes.subarray(8 + n))
  edit(header, data)
  let json = JSON.stringify(header)
  json += ' '.repeat(Math.ceil(json.length / 8) * 8 - json.length)
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(json.length))
  await fs.writeFile(file, Buffer.concat([len, Buffer.from(json), data]))
}

const results: Record<string, Agreement> = {}

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-mlx-verify-'))
  const src = await openCheckpoint(FIXTURE)
  reference = (await runForward(src, TOKENS, {threads: 0})).logits
  await src.close()
})
afterAll(async () => {
  // The measured numbers, for docs/mlx.md.
  console.log(JSON.stringify(results))
  await fs.rm(tmp, {recursive: true, force: true})
})

describe('MLX logit agreement on the tiny fixture (128 positions)', () => {
  const good: [string, WriteOptions, AgreementThreshold][] = [
    ['f16', {dtype: 'F16'}, FLOAT16_THRESHOLD],
    ['bf16', {dtype: 'BF16'}, FLOAT16_THRESHOLD],
    ['q8-g64', {dtype: 'F16', quantization: {bits: 8, groupSize: 64, mode: 'affine'}}, Q8_THRESHOLD],
    ['q4-g64', {dtype: 'F16', quantization: {bits: 4, groupSize: 64, mode: 'affine'}}, Q4_THRESHOLD],
    ['q4-g32', {dtype: 'F16', quantization: {bits: 4, groupSize: 32, mode: 'affine'}}, Q4_THRESHOLD],
  ]
  for (const [name, options, threshold] of good) {
    it(`${name} passes (top-1 ≥ ${threshold.minTop1}, mean KL ≤ ${threshold.maxMeanKl})`, async () => {
      const a = await measure(await toMlx(name, options))
      results[name] = a
      expect(a.top1).toBeGreaterThanOrEqual(threshold.minTop1)
      expect(a.meanKl).toBeLessThanOrEqual(threshold.maxMeanKl)
      expect(a.meanKl).toBeGreaterThan(0) // lossy paths really differ: the comparison is live
    })
  }

  it('4-bit with scales and biases swapped fails', async () => {
    const dir = await toMlx('q4-swapped', {dtype: 'F16', quantization: {bits: 4, groupSize: 64, mode: 'affine'}})
    await editSafetensors(dir, (header) => {
      for (const key of Object.keys(header)) {
        if (!key.endsWith('.scales')) continue
        const other = key.replace(/\.scales$/, '.biases')
        ;[header[key], header[other]] = [header[other], header[key]]
      }
    })
    const a = await measure(dir)
    results['q4-swapped'] = a
    expect(passes(a, Q4_THRESHOLD)).toBe(false)
  })

  for (const bits of [4, 8]) {
    it(`${bits}-bit packed MSB-first (wrong bit order) fails`, async () => {
      const dir = await toMlx(`q${bits}-msb`, {dtype: 'F16', quantization: {bits, groupSize: 64, mode: 'affine'}})
      const st = await openSafetensors(path.join(dir, 'model.safetensors'))
      await st.close()
      await editSafetensors(dir, (header, data) => {
        const perWord = 32 / bits
        const mask = (1 << bits) - 1
        for (const [name, e] of Object.entries(header)) {
          if (name === '__metadata__' || e.dtype !== 'U32') continue
          const [begin, end] = e.data_offsets as [number, number]
          for (let p = begin; p < end; p += 4) {
            const w = data.readUInt32LE(p)
            let r = 0
            for (let k = 0; k < perWord; k++) r |= ((w >>> (k * bits)) & mask) << ((perWord - 1 - k) * bits)
            data.writeUInt32LE(r >>> 0, p)
          }
        }
      })
      const a = await measure(dir)
      results[`q${bits}-msb`] = a
      expect(passes(a, bits === 8 ? Q8_THRESHOLD : Q4_THRESHOLD)).toBe(false)
    })
  }
})

describe('openelm verify (library) on MLX folders', () => {
  for (const [name, options] of [
    ['lib-f16', {dtype: 'F16'}],
    ['lib-bf16', {dtype: 'BF16'}],
    ['lib-q8', {dtype: 'F16', quantization: {bits: 8, groupSize: 64, mode: 'affine'}}],
  ] as [string, WriteOptions][]) {
    it(`${name}: passes against the source over the tiny model's 128 positions`, async () => {
      const report = await verify(await toMlx(name, options), {against: FIXTURE, tokens: TOKENS})
      expect(report.pass).toBe(true)
      expect(report.path).toBe(name === 'lib-q8' ? 'quant8' : 'cast16')
    })
  }

  it('a folder with scales and biases swapped fails verify', async () => {
    const dir = await toMlx('lib-q8-swapped', {dtype: 'F16', quantization: {bits: 8, groupSize: 64, mode: 'affine'}})
    await editSafetensors(dir, (header) => {
      for (const key of Object.keys(header)) {
        if (key.endsWith('.scales')) [header[key], header[key.replace(/\.scales$/, '.biases')]] = [header[key.replace(/\.scales$/, '.biases')], header[key]]
      }
    })
    const report = await verify(dir, {against: FIXTURE, tokens: TOKENS})
    expect(report.pass).toBe(false)
  })
})
