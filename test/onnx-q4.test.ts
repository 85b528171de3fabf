/**
 * `--quantize 4` → onnx/model_q4.onnx (issue 14 item 2): MatMulNBits (com.microsoft, bits 4,
 * block 32, symmetric: no zero-point input, default 8) on every linear weight, scheme onnx_q4.
 * TS == the PyTorch reference bit for bit (random rows, padded K, ties, f16 scales); the file
 * passes the onnx checker; read back, its stored blocks are declared so `verify --against SRC`
 * is exact (and a flipped nibble fails, naming the tensor); onnxruntime and transformers.js
 * generate the TS engine's greedy tokens on the dequantized weights.
 */
import {execFileSync} from 'node:child_process'
import {promises as fs, readFileSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {env} from '@huggingface/transformers'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {readOnnx, writeOnnx} from '../src/formats/onnx/index.js'
import {openOnnx} from '../src/formats/onnx/read.js'
import {type Checkpoint} from '../src/formats/types.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {ONNX_Q4, quantizeQ4Rows} from '../src/quant/onnx-q4.js'
import {readFloat32} from '../src/tensor/record.js'
import {runForward} from '../src/verify/engine/index.js'
import {OnnxDecoder} from '../src/verify/backends/onnxruntime.js'
import {verify} from '../src/verify/index.js'
import {seededRandom as prng} from '../src/generate/sampler.js'
import {engineGreedy, tjsGreedy} from './helpers/greedy.js'

const PYTHON = '/usr/bin/python3'
const QUANT_DIR = path.join(import.meta.dirname, '..', 'src', 'verify', 'python')
const REF = path.join(import.meta.dirname, 'python', 'onnx_quant_ref.py')
const CHECKER = path.join(import.meta.dirname, 'python', 'onnx_check.py')
const config = presetConfig('tiny')
const V = config.vocab_size
const TOKENS = [1, 17, 42, 99, 5, 63, 120, 7, 88, 31]
const Q4 = {quantization: {bits: 4, groupSize: 64, mode: 'affine' as const}}

let root: string
let source: Checkpoint

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-onnx-q4-'))
  source = synthCheckpoint(config, {seed: 5, dtype: 'F32'})
  await drain(writeOnnx(source, path.join(root, 'q4'), Q4))
  env.allowRemoteModels = false
  env.allowLocalModels = true
  env.localModelPath = root
}, 60_000)

afterAll(async () => {
  await fs.rm(root, {recursive: true, force: true})
})

describe('onnx_q4 scheme: TS and the PyTorch reference agree bit for bit', () => {
  it('random rows (K padded or not), ties and edge blocks, f32 and f16 scales', () => {
    const cases: {rows: number; cols: number; values: Float32Array}[] = []
    for (const [seed, rows, cols] of [[1, 16, 64], [2, 7, 100], [3, 33, 24], [4, 40, 256]] as const) {
      const u = prng(seed)
      const scale = [0.02, 0.5, 3, 1e-3][seed % 4]!
      cases.push({rows, cols, values: Float32Array.from({length: rows * cols}, () => (u() * 2 - 1) * scale * (u() < 0.01 ? 20 : 1))})
    }
    // Edge rows of 32: -8 dominant with every half step (ties round away from zero after + 8),
    // |max| = |min| (min is taken), all zero (scale 0 → codes 8), one positive extreme, tiny values.
    const edges = [
      Array.from({length: 32}, (_, i) => (i === 0 ? -8 : -8 + (i % 16) + 0.5)),
      Array.from({length: 32}, (_, i) => (i === 0 ? 4 : i === 1 ? -4 : (i % 9) * 0.37 - 1.5)),
      Array.from({length: 32}, () => 0),
      Array.from({length: 32}, (_, i) => (i === 5 ? 9.75 : Math.sin(i))),
      Array.from({length: 32}, (_, i) => (i - 16) * 1e-30),
    ]
    cases.push({rows: edges.length, cols: 32, values: Float32Array.from(edges.flat())})
    for (const dtype of ['F32', 'F16'] as const) {
      const files = cases.map((c, i) => ({input: path.join(root, `in${i}.f32`), out: path.join(root, `out${dtype}${i}.bin`), deq: path.join(root, `deq${dtype}${i}.f32`)}))
      cases.forEach((c, i) => writeFileSync(files[i].input, c.values))
      execFileSync(PYTHON, [REF, QUANT_DIR, 'onnx_q4', JSON.stringify({dtype}), ...cases.flatMap((c, i) => [files[i].input, String(c.rows), String(c.cols), files[i].out, files[i].deq])])
      for (const [i, c] of cases.entries()) {
        const ref = readFileSync(files[i].out)
        const ts = ONNX_Q4.encode(c.values, c.rows, c.cols, {dtype})
        const n = ts.blocks!.byteLength
        expect(Buffer.from(ts.blocks!).equals(ref.subarray(0, n)), `${dtype} blocks, case ${i}`).toBe(true)
        expect(Buffer.from(ts.scales!).equals(ref.subarray(n)), `${dtype} scales, case ${i}`).toBe(true)
        const tsDeq = ONNX_Q4.decode(ts, c.rows, c.cols, {dtype})
        expect(Buffer.from(tsDeq.buffer).equals(readFileSync(files[i].deq)), `${dtype} dequantized, case ${i}`).toBe(true)
      }
    }
    // Asserted outright: -8 dominant → scale 1, code = v + 8 rounded half away; zero block → 8.
    const {blocks, scales} = quantizeQ4Rows(Float32Array.from(edges[0]!), 1, 32, 'F32')
    expect(scales[0]).toBe(1)
    expect([blocks[0] & 0xf, blocks[0] >> 4, blocks[1] & 0xf]).toEqual([0, 2, 3]) // -8, -6.5 → 2 (away), -5.5 → 3
    expect(quantizeQ4Rows(new Float32Array(32), 1, 32, 'F32').blocks[0]).toBe(0x88)
  })
})

describe('model_q4.onnx', () => {
  it('MatMulNBits on every linear weight, passes the onnx checker, config says q4', async () => {
    const file = path.join(root, 'q4/onnx/model_q4.onnx')
    const [check] = execFileSync(PYTHON, [CHECKER, file], {encoding: 'utf8'}).trim().split('\n').map((l) => JSON.parse(l))
    expect(check.ok, check.error).toBe(true)
    expect(check.opsets).toEqual({'': 17, 'com.microsoft': 1})
    const d = JSON.parse(execFileSync(PYTHON, [path.join(import.meta.dirname, 'python', 'onnx_layout.py'), 'describe', file], {encoding: 'utf8'}))
    expect(d.ops).toContain('MatMulNBits')
    expect(d.matmul_b).toEqual([]) // no float MatMul weight left
    const cfg = JSON.parse(await fs.readFile(path.join(root, 'q4/config.json'), 'utf8'))
    expect(cfg['transformers.js_config'].dtype).toBe('q4')
  })

  it('reads back as the dequantized weights, stored blocks equal the TS quantizer, verify is exact; a flipped nibble fails', async () => {
    const back = await readOnnx(path.join(root, 'q4'))
    try {
      expect(back.tensors.map((t) => [t.name, t.shape])).toEqual(source.tensors.map((t) => [t.name, t.shape]))
      expect(back.stored!.size).toBe(4 * config.num_transformer_layers)
      for (const [name, stored] of back.stored!) {
        const t = back.tensors.find((x) => x.name === name)!
        const [rows, cols] = t.shape as [number, number]
        const src = await readFloat32(source.tensors.find((x) => x.name === name)!)
        const enc = ONNX_Q4.encode(src, rows, cols, {dtype: 'F32'})
        const parts = await stored.segments[0].read(0, rows)
        expect(Buffer.from(parts.blocks!).equals(Buffer.from(enc.blocks!)), name).toBe(true)
        expect(Buffer.from((await readFloat32(t)).buffer).equals(Buffer.from(ONNX_Q4.decode(enc, rows, cols, {dtype: 'F32'}).buffer)), name).toBe(true)
      }
    } finally {
      await back.close()
    }
    const good = await verify(path.join(root, 'q4'), {against: source, backend: 'onnxruntime'})
    expect(good.verdict).toBe('exact')
    expect(good.pass).toBe(true)
    expect(good.runtime!.storage).toBe('onnx_q4')
    const bad = path.join(root, 'q4-bad')
    await fs.cp(path.join(root, 'q4'), bad, {recursive: true})
    const file = path.join(bad, 'onnx/model_q4.onnx')
    const f = await openOnnx(file)
    const init = f.initializers.find((i) => i.name === 'transformer.layers.2.attn.out_proj.weight')!
    const head = Buffer.from(await init.read(0, 64))
    await f.close()
    const bytes = await fs.readFile(file)
    const offset = bytes.indexOf(head)
    expect(offset).toBeGreaterThan(0)
    bytes[offset] ^= 0x01 // one code off by one
    await fs.writeFile(file, bytes)
    const result = await verify(bad, {against: source})
    expect(result.pass).toBe(false)
    expect(JSON.stringify(result.weights)).toContain('layers.2.attn.out_proj.weight')
  })

  it('onnxruntime: logits equal the TS engine on the dequantized weights (≤ 1e-4), same argmax', async () => {
    const back = await readOnnx(path.join(root, 'q4'))
    const ref = await runForward(back, TOKENS)
    await back.close()
    const decoder = await OnnxDecoder.open(path.join(root, 'q4'), config)
    const r = await decoder.step([TOKENS], [TOKENS.map(() => 1)], decoder.emptyCache(1))
    await decoder.close()
    let maxAbs = 0
    for (let i = 0; i < r.logits.length; i++) maxAbs = Math.max(maxAbs, Math.abs(r.logits[i] - ref.logits[i]))
    expect(r.logits).toHaveLength(TOKENS.length * V)
    expect(maxAbs).toBeLessThanOrEqual(1e-4)
  })

  it('transformers.js loads model_q4.onnx (dtype q4 from config.json): 16 greedy tokens equal the TS engine', async () => {
    const back = await readOnnx(path.join(root, 'q4'))
    const prompt = [1, 17, 42, 99, 5]
    const want = await engineGreedy(back, prompt, 16)
    await back.close()
    expect(want.length).toBeGreaterThan(prompt.length + 8)
    expect(await tjsGreedy('q4', prompt, 16)).toEqual(want)
  }, 60_000)
})
