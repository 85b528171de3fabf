/**
 * The exact check of quantized artifacts: correct conversions pass with every code identical and
 * logits equal to REF transformed; every injected quantizer bug fails with exit 5 and names the
 * tensor — on a random model and on the trained fixture. Which check caught each bug (codes,
 * logits) is printed at the end for the docs.
 */
import {spawnSync} from 'node:child_process'
import {existsSync, promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert, writeCheckpoint} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {compareStored, decideRelation} from '../src/verify/exact.js'
import {type WriteOptions} from '../src/formats/types.js'
import {drain} from '../src/progress.js'
import {verify} from '../src/verify/index.js'
import {injectMlxBug, injectQ8MaxBug, MLX_BUGS} from './helpers/inject.js'

const repo = path.resolve(import.meta.dirname, '..')
const FIXTURES = [
  {name: 'random', path: path.join(repo, 'fixtures/tiny-hf')},
  {name: 'trained', path: path.join(repo, 'fixtures/trained')},
].filter((f) => existsSync(f.path))
const TENSOR = 'layers.1.attn.qkv_proj.weight'
let tmp: string
const caught: Record<string, {codes: boolean; logits: boolean; firstTensor: string | null}> = {}

function cli(...args: string[]): {code: number; stdout: string; stderr: string} {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), ...args], {cwd: repo, encoding: 'utf8', timeout: 120_000})
  return {code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr}
}

async function convertTo(source: string, name: string, to: 'mlx' | 'gguf', options: WriteOptions): Promise<string> {
  const out = path.join(tmp, name)
  await drain(convert(source, to, out, {}, options))
  return out
}

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-exact-'))
})
afterAll(async () => {
  console.log(`injected bugs caught: ${JSON.stringify(caught)}`)
  await fs.rm(tmp, {recursive: true, force: true})
})

describe.each(FIXTURES)('correct conversions of the $name fixture pass exactly', ({name, path: source}) => {
  const cases: [string, 'mlx' | 'gguf', WriteOptions][] = [
    ['mlx-2bit-g32', 'mlx', {quantization: {bits: 2, groupSize: 32, mode: 'affine'}}],
    ['mlx-3bit-g128-f32', 'mlx', {dtype: 'F32', quantization: {bits: 3, groupSize: 128, mode: 'affine'}}],
    ['mlx-4bit-g64', 'mlx', {quantization: {bits: 4, groupSize: 64, mode: 'affine'}}],
    ['mlx-5bit-g32-bf16', 'mlx', {dtype: 'BF16', quantization: {bits: 5, groupSize: 32, mode: 'affine'}}],
    ['mlx-6bit-g64', 'mlx', {quantization: {bits: 6, groupSize: 64, mode: 'affine'}}],
    ['mlx-8bit-g32', 'mlx', {quantization: {bits: 8, groupSize: 32, mode: 'affine'}}],
    ['mlx-bf16', 'mlx', {dtype: 'BF16'}],
    ['gguf-q8_0', 'gguf', {dtype: 'F16', quantization: {bits: 8, groupSize: 32, mode: 'q8_0'}}],
  ]
  for (const [label, to, options] of cases) {
    it(label, async () => {
      const out = await convertTo(source, `${name}-${label}${to === 'gguf' ? '.gguf' : ''}`, to, options)
      const report = await verify(out, {against: source, runtime: 'none'})
      expect(report.failures).toEqual([])
      expect(report.verdict).toBe('exact')
      expect(report.relation).toBe('derived')
      expect(report.weights!.mismatching).toEqual([])
      expect(report.weights!.tensors.every((t) => t.identicalElements === t.elements)).toBe(true)
      expect(report.logits!.maxAbs).toBe(0)
      // Quantized paths really are lossy: the comparison is live.
      if (options.quantization) expect(report.quality!.meanKl).toBeGreaterThan(0)
      const quantized = report.weights!.tensors.filter((t) => t.segments.some((s) => s.scheme !== 'f16' && s.scheme !== 'bf16' && s.scheme !== 'f32'))
      if (options.quantization) expect(quantized.length).toBeGreaterThan(0)
    })
  }
})

// A slice of bench/verify-sweep.ts (which runs every bit width × group size × 20 seeds per shape):
// correct conversions of random models of other shapes and seeds never fail the code check.
describe('correct conversions never fail: random micro and tiny models, 3 seeds', () => {
  const sweep: [string, WriteOptions][] = [
    ['mlx-2bit-g64', {dtype: 'F16', quantization: {bits: 2, groupSize: 64, mode: 'affine'}}],
    ['mlx-3bit-g32', {dtype: 'BF16', quantization: {bits: 3, groupSize: 32, mode: 'affine'}}],
    ['mlx-5bit-g32', {dtype: 'F16', quantization: {bits: 5, groupSize: 32, mode: 'affine'}}],
    ['mlx-6bit-g32-f32', {dtype: 'F32', quantization: {bits: 6, groupSize: 32, mode: 'affine'}}],
    ['mlx-8bit-g64', {dtype: 'F16', quantization: {bits: 8, groupSize: 64, mode: 'affine'}}],
    ['gguf-q8_0', {dtype: 'F16', quantization: {bits: 8, groupSize: 32, mode: 'q8_0'}}],
  ]
  for (const preset of ['micro', 'tiny']) {
    for (const seed of [3, 7, 11]) {
      it(`${preset} seed ${seed}`, async () => {
        const source = synthCheckpoint(presetConfig(preset), {seed})
        for (const [label, options] of sweep) {
          const gguf = label.startsWith('gguf')
          const out = path.join(tmp, `sweep-${preset}-${seed}-${label}${gguf ? '.gguf' : ''}`)
          await drain(writeCheckpoint(source, gguf ? 'gguf' : 'mlx', out, options))
          const model = await openCheckpoint(out)
          try {
            const exact = await compareStored(source, model)
            expect({label, mismatching: exact.mismatching}).toEqual({label, mismatching: []})
            expect((await decideRelation(source, model, exact)).relation).toBe('derived')
            expect(exact.tensors.some((t) => t.segments.some((s) => s.scheme === 'mlx_affine' || s.scheme === 'gguf_q8_0'))).toBe(true)
          } finally {
            await model.close()
          }
        }
      })
    }
  }
})

describe.each(FIXTURES)('injected quantizer bugs fail with exit 5 and name the tensor ($name fixture)', ({name, path: source}) => {
  for (const bug of MLX_BUGS) {
    it(`MLX 4-bit g32: ${bug}`, async () => {
      const out = await convertTo(source, `${name}-bug-${bug}`, 'mlx', {quantization: {bits: 4, groupSize: 32, mode: 'affine'}})
      await injectMlxBug(out, source, TENSOR, bug, 4, 32)
      const r = cli('verify', out, '--against', source)
      expect(r.code).toBe(5)
      const line = r.stderr.trim().split('\n').at(-1)!
      expect(line).toMatch(/^Error: verification failed \(exact\)/)
      expect(line).toContain(TENSOR)
      const report = await verify(out, {against: source})
      expect(report.weights!.mismatching).toEqual([TENSOR])
      expect(report.firstDivergentTensor).toBe(TENSOR)
      caught[`${name}:mlx:${bug}`] = {codes: report.weights!.mismatching.length > 0, logits: !report.logits!.pass, firstTensor: report.firstDivergentTensor}
    })
  }

  it('GGUF Q8_0: scale from max instead of absmax', async () => {
    const out = await convertTo(source, `${name}-bug-q8.gguf`, 'gguf', {dtype: 'F16', quantization: {bits: 8, groupSize: 32, mode: 'q8_0'}})
    await injectQ8MaxBug(out, source, TENSOR, 'blk.1.attn_qkv.weight')
    const r = cli('verify', out, '--against', source, '--runtime', 'none')
    expect(r.code).toBe(5)
    const line = r.stderr.trim().split('\n').at(-1)!
    expect(line).toContain(TENSOR)
    expect(line).toContain('blk.1.attn_qkv.weight')
    const report = await verify(out, {against: source, runtime: 'none'})
    expect(report.weights!.mismatching).toEqual([TENSOR])
    caught[`${name}:gguf:q8-max-not-absmax`] = {codes: true, logits: !report.logits!.pass, firstTensor: report.firstDivergentTensor}
  })
})
