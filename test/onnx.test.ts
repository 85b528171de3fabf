/**
 * ONNX export (issue 6): Debian's onnx checker, onnxruntime-node prefill + cached decode against
 * the TS reference engine (f32, f16, left padding in a batch of two, external data), the reader
 * (round trip, hostile files), deliberately broken exports, and the onnxruntime verify backend.
 * transformers.js generation lives in onnx-transformersjs.test.ts.
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {FormatError, MappingError, UsageError} from '../src/errors.js'
import {type Checkpoint} from '../src/formats/types.js'
import {onnxFormat, readOnnx, writeOnnx, type OnnxWriteExtra} from '../src/formats/onnx/index.js'
import {detectFormat} from '../src/formats/registry.js'
import {type WriteOptions} from '../src/formats/types.js'
import {layerDims} from '../src/model/config.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {castRecord} from '../src/tensor/record.js'
import {runForward} from '../src/verify/engine/index.js'
import {OnnxDecoder, onnxruntimeBackend} from '../src/verify/backends/onnxruntime.js'
import {verify} from '../src/verify/index.js'
import {drain} from '../src/progress.js'

const PYTHON = '/usr/bin/python3'
const CHECKER = path.join(import.meta.dirname, 'python', 'onnx_check.py')
const config = presetConfig('tiny')
const V = config.vocab_size

let root: string
let source: Checkpoint
const dirs: Record<string, string> = {}

async function exportTo(name: string, options: WriteOptions & OnnxWriteExtra): Promise<string> {
  const out = path.join(root, name)
  await drain(writeOnnx(source, out, options))
  dirs[name] = out
  return out
}

function maxAbs(a: Float32Array, b: Float32Array, aOffset = 0, bOffset = 0, n = a.length): number {
  let m = 0
  for (let i = 0; i < n; i++) m = Math.max(m, Math.abs(a[aOffset + i] - b[bOffset + i]))
  return m
}

function argmax(a: Float32Array, offset: number, n: number): number {
  let best = 0
  for (let i = 1; i < n; i++) if (a[offset + i] > a[offset + best]) best = i
  return best
}

function logSoftmax(a: Float32Array, offset: number, n: number): Float64Array {
  let max = -Infinity
  for (let i = 0; i < n; i++) max = Math.max(max, a[offset + i])
  let sum = 0
  for (let i = 0; i < n; i++) sum += Math.exp(a[offset + i] - max)
  const out = new Float64Array(n)
  for (let i = 0; i < n; i++) out[i] = a[offset + i] - max - Math.log(sum)
  return out
}

/** KL(p_ref || p_test) of one row. */
function kl(ref: Float32Array, test: Float32Array, row: number): number {
  const p = logSoftmax(ref, row * V, V)
  const q = logSoftmax(test, row * V, V)
  let s = 0
  for (let i = 0; i < V; i++) s += Math.exp(p[i]) * (p[i] - q[i])
  return s
}

/** Prefill `prompt`, then decode `steps` given tokens one at a time; logits of every position [T, V]. */
async function runCached(dir: string, tokens: number[], prefill: number): Promise<Float32Array> {
  const decoder = await OnnxDecoder.open(dir, config)
  try {
    const out = new Float32Array(tokens.length * V)
    let r = await decoder.step([tokens.slice(0, prefill)], [tokens.slice(0, prefill).map(() => 1)], decoder.emptyCache(1))
    out.set(r.logits, 0)
    for (let t = prefill; t < tokens.length; t++) {
      r = await decoder.step([[tokens[t]]], [Array(t + 1).fill(1)], r.cache)
      out.set(r.logits, t * V)
    }
    return out
  } finally {
    await decoder.close()
  }
}

const TOKENS = [1, 17, 42, 99, 5, 63, 120, 7, 88, 31]

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-onnx-'))
  source = synthCheckpoint(config, {seed: 11, dtype: 'F32'})
  await exportTo('f32', {})
  await exportTo('f16', {dtype: 'F16'})
  await exportTo('external', {layout: 'external-data'})
  await exportTo('rope-swapped', {sabotage: {swapRopeHalves: true}})
  await exportTo('kv-wrong', {sabotage: {kvHeadsDelta: 1}})
  await exportTo('kv-tiled', {sabotage: {tileKvHeads: true}})
}, 60_000)

afterAll(async () => {
  await fs.rm(root, {recursive: true, force: true})
})

describe('onnx export: layout and the Debian onnx checker', () => {
  it('writes the transformers.js folder layout', async () => {
    expect((await fs.readdir(dirs.f32)).sort()).toEqual(['config.json', 'generation_config.json', 'onnx'])
    expect(await fs.readdir(path.join(dirs.f32, 'onnx'))).toEqual(['model.onnx'])
    expect(await fs.readdir(path.join(dirs.f16, 'onnx'))).toEqual(['model_fp16.onnx'])
    expect((await fs.readdir(path.join(dirs.external, 'onnx'))).sort()).toEqual(['model.onnx', 'model.onnx_data'])
    const f32Config = JSON.parse(await fs.readFile(path.join(dirs.f32, 'config.json'), 'utf8'))
    expect(f32Config.model_type).toBe('openelm')
    expect(f32Config.num_kv_heads).toEqual(layerDims(config).map((d) => d.kvHeads))
    expect(f32Config['transformers.js_config']).toEqual({dtype: 'fp32'})
    const f16Config = JSON.parse(await fs.readFile(path.join(dirs.f16, 'config.json'), 'utf8'))
    expect(f16Config['transformers.js_config']).toEqual({dtype: 'fp16'})
    expect(f16Config.torch_dtype).toBe('float16')
    const extConfig = JSON.parse(await fs.readFile(path.join(dirs.external, 'config.json'), 'utf8'))
    expect(extConfig['transformers.js_config']).toEqual({dtype: 'fp32', use_external_data_format: true})
    const gen = JSON.parse(await fs.readFile(path.join(dirs.f32, 'generation_config.json'), 'utf8'))
    expect([gen.bos_token_id, gen.eos_token_id]).toEqual([1, 2])
  })

  it('passes onnx.checker.check_model (IR 8, opset 17) for f32, f16 and external data, with static KV head dims', () => {
    const files = [path.join(dirs.f32, 'onnx/model.onnx'), path.join(dirs.f16, 'onnx/model_fp16.onnx'), path.join(dirs.external, 'onnx/model.onnx')]
    const lines = execFileSync(PYTHON, [CHECKER, ...files], {encoding: 'utf8'}).trim().split('\n').map((l) => JSON.parse(l))
    expect(lines).toHaveLength(3)
    for (const line of lines) {
      expect(line.error).toBeUndefined()
      expect(line.ok).toBe(true)
      expect(line.ir_version).toBe(8)
      expect(line.opsets).toEqual({'': 17})
      const inputs = Object.fromEntries(line.inputs)
      expect(inputs.input_ids).toEqual(['batch_size', 'sequence_length'])
      expect(inputs.attention_mask).toEqual(['batch_size', 'total_sequence_length'])
      expect(inputs.position_ids).toBeUndefined()
      layerDims(config).forEach((d, i) => {
        expect(inputs[`past_key_values.${i}.key`]).toEqual(['batch_size', d.kvHeads, 'past_sequence_length', config.head_dim])
        expect(inputs[`past_key_values.${i}.value`]).toEqual(['batch_size', d.kvHeads, 'past_sequence_length', config.head_dim])
      })
      expect(line.outputs).toEqual(['logits', ...layerDims(config).flatMap((_, i) => [`present.${i}.key`, `present.${i}.value`])])
    }
  }, 30_000)

  it('is deterministic: the same input gives byte-identical files', async () => {
    const again = await exportTo('f32-again', {})
    const hash = async (p: string) => createHash('sha256').update(await fs.readFile(p)).digest('hex')
    expect(await hash(path.join(again, 'onnx/model.onnx'))).toBe(await hash(path.join(dirs.f32, 'onnx/model.onnx')))
    expect(await hash(path.join(again, 'config.json'))).toBe(await hash(path.join(dirs.f32, 'config.json')))
  })

  it('rejects bf16 and quantization with a usage error', async () => {
    await expect(drain(writeOnnx(source, path.join(root, 'bf16'), {dtype: 'BF16'}))).rejects.toBeInstanceOf(UsageError)
    await expect(drain(writeOnnx(source, path.join(root, 'q'), {quantization: {bits: 3, groupSize: 32, mode: 'affine'}}))).rejects.toBeInstanceOf(UsageError)
    await expect(drain(writeOnnx(source, path.join(root, 'lay'), {layout: 'sharded'}))).rejects.toBeInstanceOf(UsageError)
    await expect(fs.stat(path.join(root, 'bf16'))).rejects.toThrow()
  })
})

describe('onnx export: onnxruntime-node against the TS reference engine', () => {
  it('f32: prefill then decode steps feeding present.* back match runForward (max abs ≤ 1e-4)', async () => {
    const ref = await runForward(source, TOKENS)
    const onnxLogits = await runCached(dirs.f32, TOKENS, 4)
    expect(maxAbs(onnxLogits, ref.logits)).toBeLessThanOrEqual(1e-4)
    // The cache grows by one position per step, keyed by the static KV head counts.
    const decoder = await OnnxDecoder.open(dirs.f32, config)
    const r = await decoder.step([TOKENS.slice(0, 3)], [[1, 1, 1]], decoder.emptyCache(1))
    layerDims(config).forEach((d, i) => expect(r.cache[i].key.dims).toEqual([1, d.kvHeads, 3, config.head_dim]))
    await decoder.close()
  })

  it('caches keys after k_norm and before RoPE (present.key of position 0 is the same in any context)', async () => {
    // RoPE at position 0 is the identity, so compare a later position: an un-rotated cached key
    // depends only on that token, whatever position it sits at.
    const decoder = await OnnxDecoder.open(dirs.f32, config)
    const a = await decoder.step([[1, 50, 60]], [[1, 1, 1]], decoder.emptyCache(1))
    const b = await decoder.step([[60]], [[1]], decoder.emptyCache(1))
    const hd = config.head_dim
    const kv = layerDims(config)[0].kvHeads
    const keyA = a.cache[0].key.data as Float32Array // [1, kv, 3, hd]
    const keyB = b.cache[0].key.data as Float32Array // [1, kv, 1, hd]
    for (let h = 0; h < kv; h++) {
      expect(maxAbs(keyA, keyB, (h * 3 + 2) * hd, h * hd, hd)).toBeLessThanOrEqual(1e-6)
    }
    await decoder.close()
  })

  it('left padding in a batch of two: each row matches its own unpadded run', async () => {
    const rowA = [1, 9, 44, 3, 71, 100]
    const rowB = [1, 23, 60, 8]
    const pad = rowA.length - rowB.length
    const decodeA = [12, 77, 5]
    const decodeB = [90, 2, 64]
    const refA = await runForward(source, [...rowA, ...decodeA])
    const refB = await runForward(source, [...rowB, ...decodeB])
    const decoder = await OnnxDecoder.open(dirs.f32, config)
    try {
      const ids = [rowA, [...Array(pad).fill(0), ...rowB]]
      const mask = [rowA.map(() => 1), [...Array(pad).fill(0), ...rowB.map(() => 1)]]
      let r = await decoder.step(ids, mask, decoder.emptyCache(2))
      const T = rowA.length
      let worst = maxAbs(r.logits, refA.logits, 0, 0, T * V)
      worst = Math.max(worst, maxAbs(r.logits, refB.logits, (T + pad) * V, 0, rowB.length * V))
      for (let s = 0; s < decodeA.length; s++) {
        mask[0].push(1)
        mask[1].push(1)
        r = await decoder.step([[decodeA[s]], [decodeB[s]]], mask, r.cache)
        worst = Math.max(worst, maxAbs(r.logits, refA.logits, 0, (T + s) * V, V))
        worst = Math.max(worst, maxAbs(r.logits, refB.logits, V, (rowB.length + s) * V, V))
      }
      expect(worst).toBeLessThanOrEqual(1e-4)
    } finally {
      await decoder.close()
    }
  })

  it('f16: top-1 agreement ≥ 0.99 and mean KL ≤ 1e-3 against the f32 reference; exact against its own f16 weights', async () => {
    const ref = await runForward(source, TOKENS)
    const onnxLogits = await runCached(dirs.f16, TOKENS, 5)
    let agree = 0
    let klSum = 0
    for (let t = 0; t < TOKENS.length; t++) {
      if (argmax(ref.logits, t * V, V) === argmax(onnxLogits, t * V, V)) agree++
      klSum += kl(ref.logits, onnxLogits, t)
    }
    expect(agree / TOKENS.length).toBeGreaterThanOrEqual(0.99)
    expect(klSum / TOKENS.length).toBeLessThanOrEqual(1e-3)
    // f16 weights, f32 compute: the reference run on the same f16 weights agrees to f32 precision.
    const f16 = await readOnnx(dirs.f16)
    expect(f16.extras.dtype).toBe('F16')
    const ref16 = await runForward(f16, TOKENS)
    expect(maxAbs(onnxLogits, ref16.logits)).toBeLessThanOrEqual(1e-4)
    await f16.close()
  })

  it('external data: the same logits as the single-file export', async () => {
    const ref = await runForward(source, TOKENS)
    expect(maxAbs(await runCached(dirs.external, TOKENS, 6), ref.logits)).toBeLessThanOrEqual(1e-4)
  })

  it('broken exports fail the comparison: swapped RoPE halves, tiled GQA heads, wrong KV head count', async () => {
    const ref = await runForward(source, TOKENS)
    expect(maxAbs(await runCached(dirs['rope-swapped'], TOKENS, 4), ref.logits)).toBeGreaterThan(1e-2)
    expect(maxAbs(await runCached(dirs['kv-tiled'], TOKENS, 4), ref.logits)).toBeGreaterThan(1e-2)
    // The declared cache shape no longer matches the config's KV heads: onnxruntime refuses it.
    await expect(runCached(dirs['kv-wrong'], TOKENS, 4)).rejects.toBeInstanceOf(FormatError)
  })

  it('--layout contrib-ops (SimplifiedLayerNormalization) runs in onnxruntime with the same logits', async () => {
    const dir = await exportTo('contrib', {layout: 'contrib-ops'})
    const ref = await runForward(source, TOKENS)
    expect(maxAbs(await runCached(dir, TOKENS, 3), ref.logits)).toBeLessThanOrEqual(1e-4)
  })

  it('the onnxruntime verify backend returns [T, vocab] logits equal to the reference', async () => {
    const checkpoint = await readOnnx(dirs.f32)
    const ref = await runForward(source, TOKENS)
    const result = await onnxruntimeBackend.run({path: dirs.f32, checkpoint}, TOKENS, {})
    expect(onnxruntimeBackend.name).toBe('onnxruntime')
    expect(result.vocab).toBe(V)
    expect(result.logits).toHaveLength(TOKENS.length * V)
    expect(maxAbs(result.logits, ref.logits)).toBeLessThanOrEqual(1e-4)
    await checkpoint.close()
  })
})

describe('verify --backend onnxruntime', () => {
  it('passes for the f32 and f16 exports against the source, fails for broken exports', async () => {
    const f32 = await verify(dirs.f32, {backend: 'onnxruntime', against: source})
    expect(f32.runtime!.runtime).toBe('onnxruntime')
    expect(f32.engine.name).toBe('ts')
    expect(f32.pass).toBe(true)
    expect(f32.logits!.maxAbs).toBe(0)
    expect(f32.runtime!.maxAbs).toBeLessThanOrEqual(1e-4)
    const f16 = await verify(dirs.f16, {backend: 'onnxruntime', against: source})
    expect(f16.verdict).toBe('exact')
    expect(f16.quality!.meanKl).toBeGreaterThan(0)
    expect(f16.pass).toBe(true)
    const swapped = await verify(dirs['rope-swapped'], {backend: 'onnxruntime', against: source})
    expect(swapped.pass).toBe(false)
    expect(swapped.weights!.mismatching).toHaveLength(0) // same weights: only the runtime check catches it
    expect(swapped.runtime!.pass).toBe(false)
    const tiled = await verify(dirs['kv-tiled'], {backend: 'onnxruntime', against: source})
    expect(tiled.pass).toBe(false)
    await expect(verify(dirs['kv-wrong'], {backend: 'onnxruntime', against: source})).rejects.toBeInstanceOf(FormatError)
  })

  it('the CLI exits non-zero on a broken export and zero on a good one', () => {
    const run = (dir: string) => spawnSync(path.join(import.meta.dirname, '..', 'bin', 'dev.js'), ['verify', dir, '--backend', 'onnxruntime', '--against', dirs.f32, '--json'], {encoding: 'utf8'})
    const good = run(dirs.external)
    expect(good.status).toBe(0)
    expect(JSON.parse(good.stdout).pass).toBe(true)
    const bad = run(dirs['rope-swapped'])
    expect(bad.status).not.toBe(0)
  }, 60_000)
})

describe('onnx reader', () => {
  it('detects the folder and a bare .onnx file', async () => {
    expect((await detectFormat(dirs.f32)).name).toBe('onnx')
    expect((await detectFormat(path.join(dirs.f16, 'onnx/model_fp16.onnx'))).name).toBe('onnx')
    expect(await onnxFormat.detect(root)).toBe(false)
  })

  it('reads weights back bit-exact (raw_data and external data), f16 as F16 records', async () => {
    for (const [name, dtype] of [['f32', 'F32'], ['external', 'F32'], ['f16', 'F16']] as const) {
      const back = await readOnnx(dirs[name])
      expect(back.format).toBe('onnx')
      expect(back.config).toEqual(source.config)
      expect(back.tensors.map((t) => t.name)).toEqual(source.tensors.map((t) => t.name))
      expect(back.extras.info.derivedInitializers).toEqual(['rope.cos_cached', 'rope.sin_cached'])
      for (const [i, t] of back.tensors.entries()) {
        expect(t.dtype).toBe(dtype)
        expect(t.shape).toEqual(source.tensors[i].shape)
        const want = await castRecord(source.tensors[i], dtype).read()
        expect(Buffer.compare(Buffer.from(await t.read()), Buffer.from(want))).toBe(0)
      }
      // Ranged reads hit the right bytes.
      const emb = back.tensors[0]
      expect(Buffer.from(await emb.read(40, 72))).toEqual(Buffer.from((await castRecord(source.tensors[0], dtype).read()).subarray(40, 72)))
      await back.close()
    }
  })

  it('a truncated model file is a FormatError naming the file', async () => {
    const dir = path.join(root, 'truncated')
    await fs.cp(dirs.f32, dir, {recursive: true})
    const file = path.join(dir, 'onnx/model.onnx')
    const bytes = await fs.readFile(file)
    await fs.writeFile(file, bytes.subarray(0, bytes.length - 1000))
    const error = await readOnnx(dir).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(FormatError)
    expect((error as Error).message).toContain('model.onnx')
  })

  it('external data pointing outside the folder, or past the data file, is refused', async () => {
    const dir = path.join(root, 'hostile')
    await fs.cp(dirs.external, dir, {recursive: true})
    const file = path.join(dir, 'onnx/model.onnx')
    const bytes = await fs.readFile(file)
    // Same-length rewrite of the location string: "model.onnx_data" → "../../etc/pass".
    const evil = Buffer.from(bytes.toString('latin1').replaceAll('model.onnx_data', '../../etc/pass_'), 'latin1')
    await fs.writeFile(file, evil)
    await expect(readOnnx(dir)).rejects.toThrow(/external data location/)
    await fs.writeFile(file, bytes)
    await fs.truncate(path.join(dir, 'onnx/model.onnx_data'), 1000)
    await expect(readOnnx(dir)).rejects.toThrow(/runs past the end of model.onnx_data/)
  })

  it('garbage, empty and text files named .onnx are FormatErrors, not crashes', async () => {
    const dir = path.join(root, 'garbage')
    await fs.mkdir(dir)
    const file = path.join(dir, 'model.onnx')
    // Deterministic pseudo-random bytes.
    const bytes = new Uint8Array(5000)
    let x = 12345
    for (let i = 0; i < bytes.length; i++) bytes[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24
    for (const content of [bytes, new Uint8Array(0), new TextEncoder().encode('hello world, not a model')]) {
      await fs.writeFile(file, content)
      const error = await readOnnx(file).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(FormatError)
      expect((error as Error).message).toContain('model.onnx')
    }
  })

  it('an unknown initializer name is a MappingError', async () => {
    const dir = path.join(root, 'renamed')
    await fs.cp(dirs.f32, dir, {recursive: true})
    const file = path.join(dir, 'onnx/model.onnx')
    const bytes = await fs.readFile(file)
    await fs.writeFile(file, Buffer.from(bytes.toString('latin1').replaceAll('transformer.norm.weight', 'xxxxxxxxxxx.norm.weight'), 'latin1'))
    await expect(readOnnx(dir)).rejects.toBeInstanceOf(MappingError)
  })
})
