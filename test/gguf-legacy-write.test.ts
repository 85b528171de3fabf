/**
 * GGUF Q4_0, Q4_1, Q5_0, Q5_1 end to end: `convert --to gguf --dtype q4_0 …` writes the ggml types
 * (llama-quantize's rules and fallbacks), llama.cpp loads and runs each file
 * within its measured runtime tolerance, `verify --against` proves every stored block exactly, a
 * wrong rounding rule fails with exit 5, and files written by real llama-quantize (libllama through
 * ctypes) are read and proven exactly too.
 */
import {spawnSync} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {openGguf} from '../src/formats/gguf/read.js'
import {drain} from '../src/progress.js'
import {f32ToF16Bits, toFloat32} from '../src/tensor/dtype.js'
import {verify} from '../src/verify/index.js'

const repo = path.resolve(import.meta.dirname, '..')
const PYTHON = '/usr/bin/python3'
const TYPES = [['q4_0', 2], ['q4_1', 3], ['q5_0', 8], ['q5_1', 9]] as const
let work: string
let source: string

function cli(...args: string[]): {code: number; stdout: string; stderr: string} {
  const r = spawnSync(process.execPath, [path.join(repo, 'bin/dev.js'), ...args], {cwd: repo, encoding: 'utf8', timeout: 120_000})
  return {code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr}
}

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-gguf-legacy-'))
  source = path.join(work, 'tiny')
  await fs.cp(path.join(repo, 'fixtures/tiny-hf'), source, {recursive: true})
  await fs.copyFile(path.join(repo, 'fixtures/tiny-spm/tokenizer.model'), path.join(source, 'tokenizer.model'))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe('GGUF legacy block types', () => {
  for (const [type, fileType] of TYPES) {
    it(`${type}: written with llama.cpp's fallbacks, run by llama.cpp, proven exactly`, async () => {
      const dir = path.join(work, type)
      const result = await drain(convert(source, 'gguf', dir, {}, {dtype: 'F16', quantization: {bits: Number(type[1]), groupSize: 32, mode: type}}))
      const out = path.join(dir, `model-${type}.gguf`)
      expect(result.target.path).toBe(out)
      expect(result.target.quantization).toEqual({bits: Number(type[1]), groupSize: 32, mode: type})
      // llama-quantize's rules: the tied embedding is the output tensor (Q6_K, Q8_0 when its 64-value
      // rows are not whole 256-value blocks); 112/176-column ffn_down and 48-column attn_output rows
      // are not whole 32-value blocks (F16).
      expect(result.notes.join('\n')).toMatch(new RegExp(`5 tensors whose rows are not whole blocks .*token_embd\\.weight \\(Q8_0 for Q6_K\\).*blk\\.1\\.ffn_down\\.weight \\(F16 for ${type.toUpperCase()}\\)`))
      const raw = await openGguf(out)
      expect(raw.kv.get('general.file_type')?.value).toBe(fileType)
      const types = Object.fromEntries(raw.tensors.map((t) => [t.info.name, t.type]))
      await raw.close()
      const T = type.toUpperCase()
      expect([types['token_embd.weight'], types['blk.0.attn_qkv.weight'], types['blk.3.ffn_down.weight'], types['blk.1.ffn_down.weight'], types['blk.1.attn_output.weight'], types['blk.0.attn_norm.weight']])
        .toEqual(['Q8_0', T, T, 'F16', 'F16', 'F32'])
      const report = await verify(out, {against: source, runtime: 'llama.cpp'})
      expect(report.failures).toEqual([])
      expect(report.verdict).toBe('exact')
      expect(report.weights!.mismatching).toEqual([])
      expect(report.weights!.tensors.every((t) => t.identicalElements === t.elements)).toBe(true)
      expect(report.weights!.tensors.some((t) => t.segments.some((s) => s.scheme === `gguf_${type}`))).toBe(true)
      expect(report.logits!.maxAbs).toBe(0)
      expect(report.quality!.meanKl).toBeGreaterThan(0) // really lossy: the comparison is live
      expect(report.runtime).toMatchObject({runtime: 'llama.cpp', storage: `gguf_${type}`, pass: true})
      // The reader gives back exactly the blocks' values: GGUF → GGUF without --dtype keeps each tensor's type and bytes.
      const again = path.join(work, `${type}-again.gguf`)
      await drain(convert(out, 'gguf', again, {}, {}))
      const [a, b] = [await openGguf(out), await openGguf(again)]
      expect(b.tensors.map((t) => [t.info.name, t.type])).toEqual(a.tensors.map((t) => [t.info.name, t.type]))
      for (const [i, t] of a.tensors.entries()) expect(Buffer.compare(await a.readRaw(t), await b.readRaw(b.tensors[i]!)), t.info.name).toBe(0)
      await a.close()
      await b.close()
    })
  }

  it('a wrong rounding rule (floor instead of round, Q4_0) fails verify with exit 5 naming the tensor', async () => {
    const out = path.join(work, 'q4_0', 'model-q4_0.gguf')
    const bad = path.join(work, 'bad-q4_0.gguf')
    await fs.copyFile(out, bad)
    const name = 'blk.2.attn_qkv.weight'
    const src = await openCheckpoint(source)
    const qkv = src.tensors.find((t) => t.name === 'layers.2.attn.qkv_proj.weight')!
    const values = toFloat32(await qkv.read(), qkv.dtype)
    await src.close()
    const file = await openGguf(bad)
    const t = file.tensors.find((x) => x.info.name === name)!
    await file.close()
    // Re-encode with codes = trunc(x/d + 8) (rounding down): same scales, many codes one lower.
    const blocks = new Uint8Array(t.byteLength)
    for (let b = 0; b < t.byteLength / 18; b++) {
      const v = values.subarray(b * 32, b * 32 + 32)
      let m = 0
      for (const x of v) if (Math.abs(x) > Math.abs(m)) m = x
      const d = Math.fround(m / -8)
      const id = d ? Math.fround(1 / d) : 0
      const h = f32ToF16Bits(d)
      blocks[b * 18] = h & 0xff
      blocks[b * 18 + 1] = h >>> 8
      const code = (x: number) => Math.min(15, Math.trunc(Math.fround(Math.fround(x * id) + 8)))
      for (let j = 0; j < 16; j++) blocks[b * 18 + 2 + j] = code(v[j]!) | (code(v[j + 16]!) << 4)
    }
    const handle = await fs.open(bad, 'r+')
    await handle.write(blocks, 0, blocks.byteLength, t.fileOffset)
    await handle.close()
    const r = cli('verify', bad, '--against', source, '--runtime', 'none')
    expect(r.code).toBe(5)
    const line = r.stderr.trim().split('\n').at(-1)!
    expect(line).toMatch(/^Error: verification failed \(exact\)/)
    expect(line).toContain('layers.2.attn.qkv_proj.weight')
  })

  it('the CLI takes --dtype in any case and refuses it for targets without block types', () => {
    const ok = cli('convert', source, '--to', 'gguf', '--dtype', 'Q5_1', '--out', path.join(work, 'cli'), '--json')
    expect(ok.code).toBe(0)
    expect(JSON.parse(ok.stdout).target.quantization).toEqual({bits: 5, groupSize: 32, mode: 'q5_1'})
    const refused = cli('convert', source, '--to', 'hf', '--dtype', 'q4_0', '--out', path.join(work, 'cli-hf'))
    expect(refused.code).toBe(2)
    expect(refused.stderr.trim()).toMatch(/^Error: --dtype q4_0 is for gguf targets, not hf/)
  })
})

describe('files written by real llama-quantize (libllama through ctypes)', () => {
  for (const [type, fileType] of [['q4_0', 2], ['q5_1', 9]] as const) {
    it(`${type}: read, and every block proven exactly against the source`, async () => {
      const f32 = path.join(work, `lq-${type}-f32.gguf`)
      await drain(convert(source, 'gguf', f32, {}, {dtype: 'F32'}))
      const out = path.join(work, `lq-${type}.gguf`)
      const r = spawnSync(PYTHON, [path.join(repo, 'test/python/llama_quantize.py'), f32, out, String(fileType)], {encoding: 'utf8'})
      expect(r.status, r.stderr.slice(-2000)).toBe(0)
      const report = await verify(out, {against: source, runtime: 'none'})
      expect(report.failures).toEqual([])
      expect(report.verdict).toBe('exact')
      expect(report.weights!.mismatching).toEqual([])
      // llama-quantize stores the tied embedding as it stores output tensors: Q8_0 here (64 columns
      // are not whole 256-value blocks for its Q6_K choice), as we do.
      const schemes = new Set(report.weights!.tensors.flatMap((t) => t.segments.map((s) => s.scheme)))
      expect([...schemes].sort()).toEqual(['f16', 'f32', `gguf_${type}`, 'gguf_q8_0'].sort())
    })
  }
})
