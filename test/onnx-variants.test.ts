/**
 * ONNX variants (issue 14 item 2): `--variants fp32,fp16,q8,q4,q4f16` writes every model file
 * transformers.js knows into one onnx/ folder in one run, from the one graph builder (each file
 * byte-identical to its single-variant export); `model_q4f16.onnx` is MatMulNBits with f16 scales
 * (scheme onnx_q4, dtype F16) running in f16, checked by the onnx checker and exact against the
 * source; config.json's transformers.js_config names the default; the folder reads as that
 * default and says which others it holds; transformers.js loads each dtype from the folder and
 * generates the TS engine's greedy tokens on that file's weights (trained fixture).
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {existsSync, promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {env, ModelRegistry} from '@huggingface/transformers'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {CONVERT_FLAG_TABLE, checkFlagTargets} from '../src/cli/flag-table.js'
import {ONNX_VARIANTS, onnxVariantsFor, parseOnnxVariants, readOnnx, VARIANT_SPECS, writeOnnx} from '../src/formats/onnx/index.js'
import {variantTargets} from '../src/formats/onnx/variants.js'
import {openOnnx} from '../src/formats/onnx/read.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {type Checkpoint} from '../src/formats/types.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {ONNX_Q4} from '../src/quant/onnx-q4.js'
import {readFloat32} from '../src/tensor/record.js'
import {inspect} from '../src/inspect.js'
import {verify, verifyConversion} from '../src/verify/index.js'
import {reportLines} from '../src/verify/report.js'
import {renderVerifyReport} from '../src/hub/card.js'
import {engineGreedy, tjsGreedy} from './helpers/greedy.js'

const PYTHON = '/usr/bin/python3'
const CHECKER = path.join(import.meta.dirname, 'python', 'onnx_check.py')
const LAYOUT = path.join(import.meta.dirname, 'python', 'onnx_layout.py')
const TRAINED = path.join(import.meta.dirname, '..', 'fixtures', 'trained')
const DEV = path.join(import.meta.dirname, '..', 'bin', 'dev.js')
const PROMPT = [1, 450, 1576, 310, 278, 3681] // token ids below the fixture's 8192
const NEW_TOKENS = 12
let root: string
let source: Checkpoint
const ALL = 'all'

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-onnx-variants-'))
  source = await openCheckpoint(TRAINED)
  await drain(writeOnnx(source, path.join(root, ALL), {onnxVariants: ['q4f16', 'fp32', 'fp16', 'q8', 'q4']}))
  env.allowRemoteModels = false
  env.allowLocalModels = true
  env.localModelPath = root
}, 60_000)

afterAll(async () => {
  await source?.close()
  await fs.rm(root, {recursive: true, force: true})
})

describe('--variants: five model files in one folder', () => {
  it('writes every file, config.json names the first as transformers.js\'s dtype, each file equals its single-variant export', async () => {
    const names = (await fs.readdir(path.join(root, ALL, 'onnx'))).sort()
    expect(names).toEqual(ONNX_VARIANTS.map((v) => VARIANT_SPECS[v].file).sort())
    const cfg = JSON.parse(await fs.readFile(path.join(root, ALL, 'config.json'), 'utf8'))
    expect(cfg['transformers.js_config']).toEqual({dtype: 'q4f16'})
    // One graph builder: the q4f16 and q8 files of the multi-variant run are byte-identical to single runs.
    await drain(writeOnnx(source, path.join(root, 'one-q4f16'), {quantization: {bits: 4, groupSize: 64, mode: 'affine'}, dtype: 'F16'}))
    await drain(writeOnnx(source, path.join(root, 'one-q8'), {onnxVariants: ['q8']}))
    for (const [dir, file] of [['one-q4f16', 'model_q4f16.onnx'], ['one-q8', 'model_quantized.onnx']]) {
      expect((await fs.readFile(path.join(root, dir, 'onnx', file))).equals(await fs.readFile(path.join(root, ALL, 'onnx', file))), file).toBe(true)
    }
    expect(JSON.parse(await fs.readFile(path.join(root, 'one-q8', 'config.json'), 'utf8'))['transformers.js_config']).toEqual({dtype: 'q8'})
  })

  it('model_q4f16.onnx: MatMulNBits with f16 scales fed f16 activations, f16 norms and embedding; passes the onnx checker', async () => {
    const file = path.join(root, ALL, 'onnx', 'model_q4f16.onnx')
    const [check] = execFileSync(PYTHON, [CHECKER, file], {encoding: 'utf8'}).trim().split('\n').map((l) => JSON.parse(l))
    expect(check.ok, check.error).toBe(true)
    expect(check.opsets).toEqual({'': 17, 'com.microsoft': 1})
    const d = JSON.parse(execFileSync(PYTHON, [LAYOUT, 'describe', file], {encoding: 'utf8'}))
    expect(d.ops).toContain('MatMulNBits')
    expect(d.matmul_b).toEqual([])
    const f = await openOnnx(file)
    try {
      const types = new Map(f.initializers.map((i) => [i.name, i.dtype]))
      expect(types.get('transformer.layers.0.attn.qkv_proj.weight_scales')).toBe('F16')
      expect(types.get('transformer.layers.0.attn.qkv_proj.weight')).toBe('U8')
      expect(types.get('transformer.token_embeddings.weight')).toBe('F16')
      expect(types.get('transformer.norm.weight')).toBe('F16')
    } finally {
      await f.close()
    }
  })

  it('the folder reads as the config\'s default (q4f16) and names the others; each file reads as its own storage', async () => {
    const folder = await readOnnx(path.join(root, ALL))
    try {
      expect(path.basename(String(folder.extras.info?.modelFile))).toBe('model_q4f16.onnx')
      expect(folder.extras.notes.join('\n')).toMatch(/model_q4f16\.onnx \(q4f16\) read; the folder also holds model\.onnx, model_fp16\.onnx, model_quantized\.onnx, model_q4\.onnx/)
    } finally {
      await folder.close()
    }
    const storage: Record<string, string[]> = {}
    for (const v of ONNX_VARIANTS) {
      const c = await readOnnx(path.join(root, ALL, 'onnx', VARIANT_SPECS[v].file))
      storage[v] = [...new Set([...(c.stored?.values() ?? [])].map((s) => `${s.segments[0]!.scheme}${s.segments[0]!.params.dtype ? `:${s.segments[0]!.params.dtype}` : ''}`))]
      await c.close()
    }
    expect(storage).toEqual({fp32: [], fp16: [], q8: ['onnx_int8'], q4: ['onnx_q4:F32'], q4f16: ['onnx_q4:F16']})
  })

  it('inspect: each tensor\'s storage type and stored bytes equal its initializers in the file (q8, q4, q4f16, fp16)', async () => {
    const want: Record<string, {matrix: string; embedding: string}> = {
      q8: {matrix: 'int8', embedding: 'int8'}, q4: {matrix: 'q4', embedding: 'F32'}, q4f16: {matrix: 'q4 (f16 scales)', embedding: 'F16'}, fp16: {matrix: 'F16', embedding: 'F16'},
    }
    for (const [v, types] of Object.entries(want)) {
      const file = path.join(root, ALL, 'onnx', VARIANT_SPECS[v as 'q8'].file)
      const r = await inspect(file)
      const f = await openOnnx(file)
      try {
        const bytes = new Map(f.initializers.map((i) => [i.name, i.byteLength]))
        for (const t of r.tensorStorage!) {
          const name = `transformer.${t.name}`
          const inFile = bytes.get(name)! + (bytes.get(`${name}_scales`) ?? bytes.get(`${name}_scale`) ?? 0)
          expect(t.storedBytes, `${v} ${t.name}`).toBe(inFile)
        }
        const type = (n: string) => r.tensorStorage!.find((t) => t.name === n)!.type
        expect([type('layers.0.ffn.proj_1.weight'), type('token_embeddings.weight')], v).toEqual([types.matrix, types.embedding])
      } finally {
        await f.close()
      }
    }
  })

  it('q4f16 stored blocks and f16 scales equal the quantizer; verify is exact, and onnxruntime (f16 MatMulNBits) is held to its own tolerance; a scale one ulp off fails', async () => {
    const file = path.join(root, ALL, 'onnx', 'model_q4f16.onnx')
    const back = await readOnnx(file)
    try {
      const name = 'layers.1.ffn.proj_2.weight'
      const [rows, cols] = back.tensors.find((t) => t.name === name)!.shape as [number, number]
      const enc = ONNX_Q4.encode(await readFloat32(source.tensors.find((t) => t.name === name)!), rows, cols, {dtype: 'F16'})
      const parts = await back.stored!.get(name)!.segments[0]!.read(0, rows)
      expect(Buffer.from(parts.blocks!).equals(Buffer.from(enc.blocks!))).toBe(true)
      expect(Buffer.from(parts.scales!).equals(Buffer.from(enc.scales!))).toBe(true)
    } finally {
      await back.close()
    }
    // The folder verifies its default (q4f16) and the report says so.
    const r = await verify(path.join(root, ALL), {against: source, backend: 'onnxruntime'})
    expect(r.notes.join('\n')).toContain('model_q4f16.onnx (q4f16) read; the folder also holds model.onnx, model_fp16.onnx, model_quantized.onnx, model_q4.onnx: name a file')
    expect(r.verdict).toBe('exact')
    expect(r.pass).toBe(true)
    expect(r.runtime!.storage).toBe('onnx_q4f16')
    expect(r.runtime!.relMaxAbs).toBeGreaterThan(0) // f16 arithmetic: not the f32 engine's numbers
    expect(r.runtime!.relMaxAbs).toBeLessThanOrEqual(r.runtime!.tolerance.maxRelAbs)
    // One f16 scale one ulp off: the exact check fails and names the tensor.
    const bad = path.join(root, 'q4f16-bad')
    await fs.mkdir(path.join(bad, 'onnx'), {recursive: true})
    await fs.copyFile(path.join(root, ALL, 'config.json'), path.join(bad, 'config.json'))
    const f = await openOnnx(file)
    const init = f.initializers.find((i) => i.name === 'transformer.layers.2.attn.out_proj.weight_scales')!
    const head = Buffer.from(await init.read(0, 32))
    await f.close()
    const bytes = await fs.readFile(file)
    const offset = bytes.indexOf(head)
    expect(offset).toBeGreaterThan(0)
    bytes[offset] ^= 0x01
    await fs.writeFile(path.join(bad, 'onnx', 'model_q4f16.onnx'), bytes)
    const broken = await verify(bad, {against: source, runtime: 'none'})
    expect(broken.pass).toBe(false)
    expect(JSON.stringify(broken.weights)).toContain('layers.2.attn.out_proj.weight')
  }, 30_000)

  it('transformers.js loads each dtype from the one folder: greedy tokens equal the TS engine on that file', async () => {
    const got: Record<string, number[]> = {}
    const want: Record<string, number[]> = {}
    for (const v of ONNX_VARIANTS) {
      const back = await readOnnx(path.join(root, ALL, 'onnx', VARIANT_SPECS[v].file))
      want[v] = await engineGreedy(back, PROMPT, NEW_TOKENS)
      await back.close()
      got[v] = await tjsGreedy(ALL, PROMPT, NEW_TOKENS, {dtype: v})
    }
    expect(got).toEqual(want)
    expect(want.fp32!.length).toBeGreaterThan(PROMPT.length + 6)
  }, 60_000)

  it('transformers.js picks each dtype\'s file and, with external data, its _data file from use_external_data_format keyed per file', async () => {
    // The one folder without external data: one file per dtype, the config's dtype by default.
    const files = async (dir: string, dtype?: string) => ((await ModelRegistry.get_model_files(dir, dtype ? {dtype: dtype as 'q4'} : {})) as string[]).filter((f) => f.startsWith('onnx/'))
    expect(await files(ALL)).toEqual(['onnx/model_q4f16.onnx'])
    for (const v of ONNX_VARIANTS) expect(await files(ALL, v), v).toEqual([`onnx/${VARIANT_SPECS[v].file}`])
    // External data for every file (--layout external-data): config.json lists each file's _data.
    const tiny = synthCheckpoint(presetConfig('tiny'), {seed: 3, dtype: 'F32'})
    await drain(writeOnnx(tiny, path.join(root, 'ext'), {onnxVariants: ['fp16', 'q4', 'q4f16'], layout: 'external-data'}))
    const cfg = JSON.parse(await fs.readFile(path.join(root, 'ext', 'config.json'), 'utf8'))
    expect(cfg['transformers.js_config']).toEqual({dtype: 'fp16', use_external_data_format: {'model_fp16.onnx': 1, 'model_q4.onnx': 1, 'model_q4f16.onnx': 1}})
    for (const v of ['fp16', 'q4', 'q4f16'] as const) {
      const want = [`onnx/${VARIANT_SPECS[v].file}`, `onnx/${VARIANT_SPECS[v].file}_data`]
      expect(await files('ext', v), v).toEqual(want)
      for (const f of want) expect(existsSync(path.join(root, 'ext', f)), f).toBe(true)
    }
    expect(await files('ext', 'q8')).toEqual(['onnx/model_quantized.onnx']) // not written, and no _data named for it
  })

  it('--variants is refused before any work: unknown name (CLI, exit 2, nothing written), with --quantize / --dtype, for another target', () => {
    const out = path.join(root, 'refused')
    const r = spawnSync(process.execPath, [DEV, 'convert', TRAINED, '--to', 'onnx', '--variants', 'q4,q3', '--out', out], {encoding: 'utf8', env: {...process.env, NO_COLOR: '1'}, timeout: 60_000})
    expect(r.status, r.stderr).toBe(2)
    expect(r.stderr.trim()).toMatch(/unknown ONNX variant "q3" \(expected fp32, fp16, q8, q4, q4f16, comma-separated\)$/)
    expect(existsSync(out)).toBe(false)
    expect(() => onnxVariantsFor(source, {onnxVariants: ['q4'], quantization: {bits: 8, groupSize: 64, mode: 'affine'}})).toThrow('--variants names every model file to write; drop --quantize / --dtype')
    expect(() => parseOnnxVariants('q4,q4')).toThrow('ONNX variant "q4" is listed twice')
    expect(parseOnnxVariants('f16, quantized,Q4F16')).toEqual(['fp16', 'q8', 'q4f16'])
    expect(() => checkFlagTargets(CONVERT_FLAG_TABLE, {variants: 'q4'}, 'mlx')).toThrow('--variants is for onnx targets, not mlx')
  }, 60_000)

  it('convert --verify with variants verifies every model file against the source: the report lists each, and a broken q8 file fails the folder by name', async () => {
    const tiny = path.join(import.meta.dirname, '..', 'fixtures', 'tiny-hf')
    const tinySource = await openCheckpoint(tiny)
    const dir = path.join(root, 'verified')
    const broken = path.join(root, 'broken-q8')
    try {
      const written = await drain(writeOnnx(tinySource, dir, {onnxVariants: ['fp16', 'q8', 'q4']}))
      const targets = variantTargets(dir, written.files, ['fp16', 'q8', 'q4'])
      expect(targets.map((t) => path.relative(dir, t.path))).toEqual(['', 'onnx/model_quantized.onnx', 'onnx/model_q4.onnx'])
      const good = await verifyConversion(tiny, dir, {variants: targets})
      expect(good.pass).toBe(true)
      expect(good.variants?.map((v) => [v.variant, v.report.pass, v.report.verdict, v.report.weights?.mismatching.length])).toEqual([['q8', true, 'exact', 0], ['q4', true, 'exact', 0]])
      expect(good.variants?.map((v) => Object.keys(v.report.model.storage).sort())).toEqual([['f32', 'onnx_int8'], ['f32', 'onnx_q4']])
      expect(good.notes.some((n) => n.includes('the folder also holds'))).toBe(false)
      // The source's own forward pass ran once, for the first file; the others reuse it, and their quality
      // figures equal a verify of that file alone.
      expect('reference forward (source)' in good.seconds).toBe(true)
      expect(good.variants?.map((v) => 'reference forward (source)' in v.report.seconds)).toEqual([false, false])
      expect(good.variants?.every((v) => v.report.notes.some((n) => n.startsWith('the reference\'s own forward pass was reused')))).toBe(true)
      const alone = await verify(targets[1]!.path, {against: tiny})
      expect(good.variants![0]!.report.quality).toEqual(alone.quality)
      expect(alone.notes.some((n) => n.includes('was reused'))).toBe(false)
      expect(good.notes).toContain("the folder's 3 model files were each verified against the source: fp16 (the default) above, q8 (model_quantized.onnx), q4 (model_q4.onnx) below")
      const lines = reportLines(good).join('\n')
      expect(lines).toMatch(/variant q8: PASS \(exact\)\nvariant q4: .*model_q4\.onnx/)
      const saved = JSON.parse(await fs.readFile(path.join(dir, 'openelm-verify.json'), 'utf8'))
      expect(saved.variants.map((v: {variant: string}) => v.variant)).toEqual(['q8', 'q4'])
      expect(renderVerifyReport(saved)).toContain('Variant `q4` (`model_q4.onnx`): **PASS (exact)**')

      // The q8 file replaced by one whose graph swaps the rotary halves: its weights are still exact, its runtime is not.
      await drain(writeOnnx(tinySource, broken, {onnxVariants: ['q8'], sabotage: {swapRopeHalves: true}}))
      await fs.copyFile(path.join(broken, 'onnx', VARIANT_SPECS.q8.file), path.join(dir, 'onnx', VARIANT_SPECS.q8.file))
      const bad = await verifyConversion(tiny, dir, {variants: targets})
      expect(bad.pass).toBe(false)
      expect(bad.variants?.map((v) => v.report.pass)).toEqual([false, true])
      expect(bad.failures.length).toBeGreaterThan(0)
      expect(bad.failures.every((f) => f.startsWith('q8: onnxruntime'))).toBe(true)
      expect(reportLines(bad).join('\n')).toMatch(/variant q8: FAIL: onnxruntime/)
    } finally {
      await tinySource.close()
    }
  }, 120_000)
})
