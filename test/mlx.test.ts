/**
 * MLX layouts end to end: what the mlx-lm folder holds (files, metadata, index, config, card),
 * quantized tensors checked by an independent numpy decoder and a numpy re-statement of MLX's
 * rule, the dequantizing reader, CoreNet's layout, and npz both ways with real numpy.
 */
import {execFileSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert, writeCheckpoint} from '../src/convert.js'
import {ConfigError, FormatError, UsageError} from '../src/errors.js'
import {CORENET_WEIGHTS, mlxFormat} from '../src/formats/mlx/index.js'
import {openNpz} from '../src/formats/mlx/npz.js'
import {detectFormat, openCheckpoint} from '../src/formats/registry.js'
import {openSafetensors} from '../src/formats/safetensors/read.js'
import {type Checkpoint} from '../src/formats/types.js'
import {parameterCount} from '../src/model/config.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {castRecord, readFloat32} from '../src/tensor/record.js'
import {drain} from '../src/progress.js'

const FIXTURE = 'fixtures/tiny-hf'
const PY = '/usr/bin/python3'
const REF = 'test/python/mlx_reference.py'
let tmp: string

function python(...args: string[]): any {
  return JSON.parse(execFileSync(PY, [REF, ...args], {encoding: 'utf8', maxBuffer: 64 * 1024 * 1024}))
}

async function sha(file: string): Promise<string> {
  return createHash('sha256').update(await fs.readFile(file)).digest('hex')
}

async function toMlx(out: string, options: Parameters<typeof convert>[4]): Promise<string> {
  await drain(convert(FIXTURE, 'mlx', out, {}, options))
  return out
}

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-mlx-'))
})
afterAll(async () => {
  await fs.rm(tmp, {recursive: true, force: true})
})

describe('mlx-lm layout, float16 (default)', () => {
  let out: string
  beforeAll(async () => {
    out = await toMlx(path.join(tmp, 'f16'), {})
  })

  it('writes what mlx_lm.load reads: model.safetensors with format mlx, index always, sorted config', async () => {
    expect((await fs.readdir(out)).sort()).toEqual(['README.md', 'config.json', 'generation_config.json', 'model.safetensors', 'model.safetensors.index.json'])
    const st = await openSafetensors(path.join(out, 'model.safetensors'))
    await st.close()
    expect(st.metadata).toEqual({format: 'mlx'})
    expect(st.tensors.every((t) => t.name.startsWith('transformer.') && t.dtype === 'F16')).toBe(true)
    const index = JSON.parse(await fs.readFile(path.join(out, 'model.safetensors.index.json'), 'utf8'))
    const config = presetConfig('tiny')
    expect(index.metadata).toEqual({total_size: st.tensors.reduce((a, t) => a + t.byteLength, 0), total_parameters: parameterCount(config)})
    expect(Object.keys(index.weight_map)).toEqual(st.tensors.map((t) => t.name).sort())
    expect(new Set(Object.values(index.weight_map))).toEqual(new Set(['model.safetensors']))
    const json = JSON.parse(await fs.readFile(path.join(out, 'config.json'), 'utf8'))
    expect(Object.keys(json)).toEqual(Object.keys(json).sort())
    expect(json.model_type).toBe('openelm')
    expect(json.torch_dtype).toBe('float16')
    expect(json.quantization).toBeUndefined()
    const card = await fs.readFile(path.join(out, 'README.md'), 'utf8')
    expect(card.startsWith('---\n')).toBe(true)
    const front = card.split('---\n')[1]!
    expect(front).toContain('library_name: mlx')
    expect(front).toMatch(/tags:\n- openelm\n- mlx/)
  })

  it('reads back as mlx, bit-equal to the source rounded to float16', async () => {
    const a = await openCheckpoint(out)
    const src = await openCheckpoint(FIXTURE)
    expect(a.format).toBe('mlx')
    expect(a.extras.dtype).toBe('F16')
    expect(a.extras.quantization).toBeUndefined()
    for (const [i, t] of a.tensors.entries()) {
      const want = await castRecord(src.tensors[i]!, 'F16').read()
      expect(Buffer.compare(Buffer.from(await t.read()), Buffer.from(want))).toBe(0)
    }
    await a.close()
    await src.close()
  })

  it('is deterministic: the same input gives byte-identical files', async () => {
    const again = await toMlx(path.join(tmp, 'f16-again'), {})
    for (const f of ['model.safetensors', 'model.safetensors.index.json', 'config.json', 'README.md']) {
      expect(await sha(path.join(again, f))).toBe(await sha(path.join(out, f)))
    }
  })

  it('is detected as mlx before hf; the HF fixture stays hf', async () => {
    expect((await detectFormat(out)).name).toBe('mlx')
    expect((await detectFormat(FIXTURE)).name).toBe('hf')
  })

  it('uses bfloat16 by default for the 3B shape, and --dtype overrides', async () => {
    const cfg = presetConfig('3B')
    expect((await import('../src/formats/mlx/index.js')).defaultMlxDType(cfg)).toBe('BF16')
    const bf16 = await toMlx(path.join(tmp, 'bf16'), {dtype: 'BF16'})
    const st = await openSafetensors(path.join(bf16, 'model.safetensors'))
    await st.close()
    expect(new Set(st.tensors.map((t) => t.dtype))).toEqual(new Set(['BF16']))
  })

  it('shards past the shard size as model-0000i-of-0000n with the index naming them', async () => {
    const sharded = await toMlx(path.join(tmp, 'sharded'), {shardSize: 60_000})
    const files = (await fs.readdir(sharded)).filter((f) => f.endsWith('.safetensors')).sort()
    expect(files.length).toBeGreaterThan(1)
    expect(files[0]).toBe(`model-00001-of-${String(files.length).padStart(5, '0')}.safetensors`)
    const back = await openCheckpoint(sharded)
    expect(back.format).toBe('mlx')
    await back.close()
  })
})

describe('mlx-lm layout, quantized', () => {
  const cases = [
    {bits: 4, groupSize: 64, dtype: 'F16' as const},
    {bits: 8, groupSize: 64, dtype: 'F16' as const},
    ...[2, 3, 4, 5, 6, 8].map((bits) => ({bits, groupSize: 32, dtype: 'BF16' as const})),
    {bits: 3, groupSize: 128, dtype: 'F32' as const},
  ]
  for (const c of cases) {
    it(`${c.bits}-bit, group ${c.groupSize}, ${c.dtype}: numpy decodes our files within the bound and MLX's rule restated in numpy gives the same codes/scales/biases`, async () => {
      const out = await toMlx(path.join(tmp, `q${c.bits}-${c.groupSize}-${c.dtype}`), {dtype: c.dtype, quantization: {bits: c.bits, groupSize: c.groupSize, mode: 'affine'}})
      const r = python('decode', out, path.join(FIXTURE, 'model.safetensors'), c.dtype, String(c.groupSize), String(c.bits))
      expect(r.metadata).toEqual({format: 'mlx'})
      // Every Linear and the embedding whose last dim splits into groups (tiny: in-dims 64, 32/48/48/64, 32/112/176/256).
      const expected: string[] = []
      if (64 % c.groupSize === 0) {
        expected.push('transformer.token_embeddings.weight')
        for (let i = 0; i < 4; i++) expected.push(`transformer.layers.${i}.attn.qkv_proj.weight`, `transformer.layers.${i}.ffn.proj_1.weight`)
      }
      const ins = {out_proj: [32, 48, 48, 64], proj_2: [32, 112, 176, 256]}
      ins.out_proj.forEach((d, i) => d % c.groupSize === 0 && expected.push(`transformer.layers.${i}.attn.out_proj.weight`))
      ins.proj_2.forEach((d, i) => d % c.groupSize === 0 && expected.push(`transformer.layers.${i}.ffn.proj_2.weight`))
      expect(r.quantized.sort()).toEqual(expected.sort())
      expect(r.codes_equal).toBe(true)
      expect(r.scales_equal).toBe(true)
      expect(r.biases_equal).toBe(true)
      expect(r.worst_error_over_bound).toBeLessThanOrEqual(1)
      expect(r.worst_error_over_bound).toBeGreaterThan(0.3) // the check is not vacuous
      const config = JSON.parse(await fs.readFile(path.join(out, 'config.json'), 'utf8'))
      expect(config.quantization).toEqual({bits: c.bits, group_size: c.groupSize, mode: 'affine'})
      expect(config.quantization_config).toEqual(config.quantization)
    })
  }

  it('reads back dequantized (inspect reports the quantization) and converts to HF float16', async () => {
    const q4 = path.join(tmp, 'q4-64-F16')
    const ck = await openCheckpoint(q4)
    expect(ck.extras.quantization).toEqual({bits: 4, groupSize: 64, mode: 'affine'})
    expect(ck.tensors.every((t) => t.dtype === 'F16')).toBe(true)
    const emb = await readFloat32(ck.tensors[0]!)
    const src = await openCheckpoint(FIXTURE)
    const srcEmb = await readFloat32(src.tensors[0]!)
    let maxErr = 0
    for (let i = 0; i < emb.length; i++) maxErr = Math.max(maxErr, Math.abs(emb[i]! - srcEmb[i]!))
    expect(maxErr).toBeGreaterThan(0)
    expect(maxErr).toBeLessThan(0.2)
    await ck.close()
    await src.close()
    const hf = path.join(tmp, 'q4-to-hf')
    const result = await drain(convert(q4, 'hf', hf, {}, {dtype: 'F16'}))
    expect(result.source.format).toBe('mlx')
    const back = await openCheckpoint(hf)
    expect(back.format).toBe('hf')
    expect(Buffer.compare(Buffer.from(await back.tensors[0]!.read()), Buffer.from(await (await openCheckpoint(q4)).tensors[0]!.read()))).toBe(0)
    await back.close()
  })

  it('refuses q8_0 (GGUF) and bad bit widths with usage errors', async () => {
    await expect(toMlx(path.join(tmp, 'bad'), {quantization: {bits: 8, groupSize: 32, mode: 'q8_0'}})).rejects.toBeInstanceOf(UsageError)
    await expect(toMlx(path.join(tmp, 'bad'), {quantization: {bits: 7, groupSize: 64, mode: 'affine'}})).rejects.toThrow(/not 7/)
    await expect(fs.stat(path.join(tmp, 'bad'))).rejects.toThrow()
  })

  it('a quantized folder whose config lost its quantization is a config error naming the tensor', async () => {
    const broken = path.join(tmp, 'noquant')
    await fs.cp(path.join(tmp, 'q4-64-F16'), broken, {recursive: true})
    const cfg = JSON.parse(await fs.readFile(path.join(broken, 'config.json'), 'utf8'))
    delete cfg.quantization
    delete cfg.quantization_config
    await fs.writeFile(path.join(broken, 'config.json'), JSON.stringify(cfg))
    await expect(openCheckpoint(broken)).rejects.toSatisfy((e: unknown) => e instanceof ConfigError && /is quantized but config.json has no quantization/.test((e as Error).message))
  })
})

describe("CoreNet's MLX layout", () => {
  it('writes weights.safetensors with canonical names, the 32128 training vocab and CoreNet config.json', async () => {
    const source: Checkpoint = synthCheckpoint(presetConfig('micro', {vocab_size: 32000}), {seed: 3})
    const out = path.join(tmp, 'corenet-mlx')
    await drain(writeCheckpoint(source, 'mlx', out, {layout: 'corenet-mlx', quantization: {bits: 4, groupSize: 32, mode: 'affine'}}))
    // 32128 rows: CoreNet's padded LLaMA-2 vocabulary, so the built-in LLaMA-2 tokenizer.model goes along.
    expect((await fs.readdir(out)).sort()).toEqual(['config.json', 'tokenizer.model', CORENET_WEIGHTS])
    const config = JSON.parse(await fs.readFile(path.join(out, 'config.json'), 'utf8'))
    expect(config).toEqual({model_name: 'OpenELM-micro', vocab_size: 32128, max_context_length: 64, quantization: {group_size: 32, bits: 4}})
    const st = await openSafetensors(path.join(out, CORENET_WEIGHTS))
    await st.close()
    const names = st.tensors.map((t) => t.name)
    expect(names).toContain('layers.0.attn.qkv_proj.scales')
    expect(names.some((n) => n.startsWith('transformer.'))).toBe(false)
    // QuantizedLinear.quantize_module (what CoreNet's convert.py uses) leaves the embedding float.
    const emb = st.tensors.find((t) => t.name === 'token_embeddings.weight')!
    expect([emb.dtype, emb.shape]).toEqual(['F16', [32128, 32]])
    expect(names).not.toContain('token_embeddings.scales')
    expect((await detectFormat(out)).name).toBe('mlx')
    const back = await openCheckpoint(out)
    expect(back.config.vocab_size).toBe(32128)
    expect(back.extras.info.layout).toBe('corenet-mlx')
    await back.close()
  })

  it('names a released shape by its CoreNet model_name and reads it back as that preset', async () => {
    const {corenetConfig, configFromCorenet} = await import('../src/formats/mlx/config.js')
    const c = corenetConfig(presetConfig('1.1B', {vocab_size: 32128}), undefined)
    expect(c).toEqual({json: {model_name: 'OpenELM-1_1B', vocab_size: 32128, max_context_length: 2048}, known: true})
    expect(configFromCorenet(c.json)).toEqual(presetConfig('1.1B', {vocab_size: 32128}))
  })
})

describe('npz layout (numpy zip of .npy)', () => {
  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    it(`${dtype}: numpy reads ours, and we read numpy's stored and compressed re-saves byte for byte`, async () => {
      const out = await toMlx(path.join(tmp, `npz-${dtype}`), {layout: 'npz', dtype})
      const file = path.join(out, 'weights.npz')
      expect((await detectFormat(out)).name).toBe('mlx')
      const ours = await openCheckpoint(out)
      const described = python('npz-describe', file)
      expect(Object.keys(described).sort()).toEqual(ours.tensors.map((t) => t.name).sort())
      for (const t of ours.tensors) {
        const [descr, shape, sum, first] = described[t.name]
        expect(descr).toBe({F32: '<f4', F16: '<f2', BF16: '|V2'}[dtype])
        expect(shape).toEqual(t.shape)
        const v = await readFloat32(t)
        expect(first).toEqual([...v.subarray(0, 4)])
        expect(sum).toBeCloseTo(v.reduce((a, x) => a + x, 0), 3)
      }
      for (const mode of ['stored', 'compressed']) {
        const resaved = path.join(tmp, `npz-${dtype}-${mode}.npz`)
        python('npz-resave', file, resaved, mode)
        const npz = await openNpz(resaved)
        expect(npz.methods).toEqual([mode === 'stored' ? 'stored' : 'deflate'])
        const theirs = new Map(npz.tensors.map((t) => [t.name, t]))
        for (const t of ours.tensors) {
          const u = theirs.get(t.name)!
          expect([u.dtype, u.shape]).toEqual([t.dtype, t.shape])
          expect(Buffer.compare(Buffer.from(await u.read()), Buffer.from(await t.read()))).toBe(0)
        }
        await npz.close()
        // and the re-saved file opens as a checkpoint on its own
        const ck = await openCheckpoint(resaved, {config: ours.config})
        expect(ck.format).toBe('mlx')
        await ck.close()
      }
      await ours.close()
    })
  }

  it('quantized npz keeps uint32 codes numpy can read', async () => {
    const out = await toMlx(path.join(tmp, 'npz-q4'), {layout: 'npz', quantization: {bits: 4, groupSize: 32, mode: 'affine'}})
    const described = python('npz-describe', path.join(out, 'weights.npz'))
    expect(described['layers.0.attn.qkv_proj.weight'][0]).toBe('<u4')
    expect(described['layers.0.attn.qkv_proj.weight'][1]).toEqual([64, 8])
    expect(described['layers.0.attn.qkv_proj.scales'][1]).toEqual([64, 2])
    expect(described['token_embeddings.weight'][0]).toBe('<f2')
    const ck = await openCheckpoint(out)
    expect(ck.extras.quantization).toEqual({bits: 4, groupSize: 32, mode: 'affine'})
    await ck.close()
  })

  it('a truncated or foreign .npz is a format error, not a crash', async () => {
    const good = path.join(tmp, 'npz-F16', 'weights.npz')
    const bytes = await fs.readFile(good)
    const cut = path.join(tmp, 'cut.npz')
    await fs.writeFile(cut, bytes.subarray(0, bytes.length - 100))
    await expect(openNpz(cut)).rejects.toBeInstanceOf(FormatError)
    const junk = path.join(tmp, 'junk.npz')
    await fs.writeFile(junk, Buffer.alloc(4096, 7))
    await expect(openNpz(junk)).rejects.toThrow(/not a ZIP archive/)
    expect(mlxFormat.name).toBe('mlx')
  })
})

describe('CLI', () => {
  it('convert --to mlx --quantize 4 --json reports the quantization; a bad layout is a one-line usage error', () => {
    const out = path.join(tmp, 'cli-q4')
    const json = JSON.parse(execFileSync('./bin/dev.js', ['convert', FIXTURE, '--to', 'mlx', '--quantize', '4', '--group-size', '32', '--out', out, '--json'], {encoding: 'utf8'}))
    expect(json.target.format).toBe('mlx')
    expect(json.target.quantization).toEqual({bits: 4, groupSize: 32, mode: 'affine'})
    let stderr = ''
    let status = 0
    try {
      execFileSync('./bin/dev.js', ['convert', FIXTURE, '--to', 'mlx', '--layout', 'gguf', '--out', path.join(tmp, 'cli-bad')], {encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']})
    } catch (error) {
      ;({stderr, status} = error as {stderr: string; status: number})
    }
    expect(status).toBe(2)
    expect(stderr.trim()).toBe('Error: unknown MLX layout "gguf" (expected mlx-lm, corenet-mlx, npz)')
  })
})
