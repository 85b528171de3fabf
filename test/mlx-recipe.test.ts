/**
 * Per-module MLX quantization: mlx-lm's mixed recipes read for OpenELM, and the embedding's own
 * width. The config.json carries each module's choice the way mlx-lm's loader reads it
 * (`quantization[<module path>]` = {group_size, bits, mode} or false), our reader takes it back,
 * and `verify` proves every tensor exact against the reference quantizer of its own width — in TS
 * and in the PyTorch reference (quant_ref.py).
 */
import {spawnSync} from 'node:child_process'
import {existsSync, promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {storedTensor} from '../src/formats/stored.js'
import {type WriteOptions} from '../src/formats/types.js'
import {usesMoreBits} from '../src/formats/mlx/recipe.js'
import {drain} from '../src/progress.js'
import {verify} from '../src/verify/index.js'

const repo = path.resolve(import.meta.dirname, '..')
const TRAINED = path.join(repo, 'fixtures/trained')
let tmp: string

function cli(...args: string[]): {code: number; stdout: string; stderr: string} {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), ...args], {cwd: repo, encoding: 'utf8', timeout: 120_000})
  return {code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr}
}

async function write(name: string, options: WriteOptions): Promise<string> {
  const out = path.join(tmp, name)
  await drain(convert(TRAINED, 'mlx', out, {}, options))
  return out
}

async function quantizationJson(dir: string): Promise<Record<string, unknown>> {
  return (JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8')) as {quantization: Record<string, unknown>}).quantization
}

/** Bits per canonical tensor as the reader declares them (undefined: kept in float). */
async function widths(dir: string): Promise<Record<string, number | undefined>> {
  const model = await openCheckpoint(dir)
  try {
    return Object.fromEntries(model.tensors.filter((t) => t.shape.length === 2).map((t) => {
      const s = storedTensor(model, t.name)!.segments[0]!
      return [t.name, s.scheme === 'mlx_affine' ? s.params.bits : undefined]
    }))
  } finally {
    await model.close()
  }
}

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-recipe-'))
})
afterAll(async () => {
  await fs.rm(tmp, {recursive: true, force: true})
})

describe('mlx-lm\'s layer rule', () => {
  it('gives more bits to the first and last eighth and every third layer between (270M: 16 layers; 3B: 36)', () => {
    const pick = (n: number) => Array.from({length: n}, (_, i) => i).filter((i) => usesMoreBits(i, n))
    expect(pick(16)).toEqual([0, 1, 4, 7, 10, 13, 14, 15])
    expect(pick(36)).toEqual([0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 31, 32, 33, 34, 35])
    expect(pick(4)).toEqual([2, 3])
  })
})

describe.runIf(existsSync(TRAINED))('per-module widths on the trained fixture', () => {
  it('mixed_3_6: the embedding (= head) and qkv_proj/proj_2 of layers 2-3 at 6 bits, the rest at 3; exact in TS and in PyTorch', async () => {
    const out = await write('mixed_3_6', {mlxQuant: {recipe: 'mixed_3_6'}})
    const q = await quantizationJson(out)
    expect(q).toMatchObject({bits: 3, group_size: 64, mode: 'affine'})
    expect(q['transformer.token_embeddings']).toEqual({group_size: 64, bits: 6, mode: 'affine'})
    expect(q['transformer.layers.2.ffn.proj_2']).toEqual({group_size: 64, bits: 6, mode: 'affine'})
    expect(q['transformer.layers.3.attn.qkv_proj']).toEqual({group_size: 64, bits: 6, mode: 'affine'})
    expect(q['transformer.layers.0.ffn.proj_2']).toEqual({group_size: 64, bits: 3, mode: 'affine'})
    expect(q['transformer.layers.2.attn.out_proj']).toEqual({group_size: 64, bits: 3, mode: 'affine'})
    const w = await widths(out)
    expect(Object.entries(w).filter(([, b]) => b === 6).map(([n]) => n).sort()).toEqual([
      'layers.2.attn.qkv_proj.weight', 'layers.2.ffn.proj_2.weight', 'layers.3.attn.qkv_proj.weight', 'layers.3.ffn.proj_2.weight', 'token_embeddings.weight',
    ])
    expect(Object.values(w).filter((b) => b === 3)).toHaveLength(12)
    for (const backend of ['ts', 'torch']) {
      const report = await verify(out, {against: TRAINED, backend})
      expect(report.failures).toEqual([])
      expect(report.verdict).toBe('exact')
      expect(report.weights!.tensors.every((t) => t.identicalElements === t.elements)).toBe(true)
    }
  })

  it('--quantize-embedding none keeps the embedding in float (config entry false); 8 gives it 8 bits', async () => {
    const none = await write('emb-none', {quantization: {bits: 4, groupSize: 32, mode: 'affine'}, mlxQuant: {embedding: 'none'}})
    expect((await quantizationJson(none))['transformer.token_embeddings']).toBe(false)
    const wn = await widths(none)
    expect(wn['token_embeddings.weight']).toBeUndefined()
    expect(Object.values(wn).filter((b) => b === 4)).toHaveLength(16)
    const eight = await write('emb-8', {quantization: {bits: 4, groupSize: 32, mode: 'affine'}, mlxQuant: {embedding: 8}})
    expect((await quantizationJson(eight))['transformer.token_embeddings']).toEqual({group_size: 32, bits: 8, mode: 'affine'})
    expect((await widths(eight))['token_embeddings.weight']).toBe(8)
    for (const out of [none, eight]) {
      const report = await verify(out, {against: TRAINED, runtime: 'none'})
      expect(report.verdict).toBe('exact')
      expect(report.pass).toBe(true)
    }
    // Keeping the head in float costs less than quantizing it to 4 bits (trained weights, held-out text).
    const uniform = await write('uniform-4', {quantization: {bits: 4, groupSize: 32, mode: 'affine'}})
    const kl = async (dir: string) => (await verify(dir, {against: TRAINED, runtime: 'none', weights: false, promptLength: 128})).quality!.meanKl
    expect(await kl(none)).toBeLessThan(await kl(uniform))
  })

  it('a module marked false that carries scales is refused on reading', async () => {
    const out = await write('false-but-quantized', {quantization: {bits: 4, groupSize: 64, mode: 'affine'}})
    const config = JSON.parse(await fs.readFile(path.join(out, 'config.json'), 'utf8'))
    config.quantization['transformer.layers.1.ffn.proj_1'] = false
    await fs.writeFile(path.join(out, 'config.json'), JSON.stringify(config))
    await expect(openCheckpoint(out)).rejects.toThrow(/layers\.1\.ffn\.proj_1 is not quantized \(false\)/)
  })
})

describe('refusals, before any output', () => {
  it.each([
    [['--to', 'gguf', '--q-recipe', 'mixed_4_6'], /--q-recipe applies to --to mlx/],
    [['--to', 'mlx', '--q-recipe', 'mixed_4_6', '--layout', 'corenet-mlx'], /needs the mlx-lm layout/],
    [['--to', 'mlx', '--q-recipe', 'mixed_4_6', '--quantize', '3'], /sets the widths \(4 and 6 bits\)/],
    [['--to', 'mlx', '--quantize', '4', '--quantize-embedding', '7'], /--quantize-embedding 7 is not supported/],
    [['--to', 'mlx', '--quantize-embedding', '8'], /needs --quantize or --q-recipe/],
    [['--to', 'onnx', '--quantize-embedding', 'none'], /--quantize-embedding applies to --to mlx/],
  ])('%j', (flags, message) => {
    const out = path.join(os.tmpdir(), `openelm-recipe-refused-${process.pid}`)
    const r = cli('convert', 'fixtures/tiny-hf', '--out', out, ...flags)
    expect(r.code).toBe(2)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stderr).toMatch(message)
    expect(existsSync(out)).toBe(false)
  })
})
