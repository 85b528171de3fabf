/**
 * Deliberately corrupted conversions must FAIL `openelm verify` with a non-zero exit code and
 * name the layer (and tensor) where they diverge; faithful conversions must pass. Each corrupted
 * artifact is built here from the tiny fixture and written as an HF folder.
 */
import {spawnSync} from 'node:child_process'
import {mkdtempSync, readFileSync, rmSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {writeCheckpoint} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {type Checkpoint} from '../src/formats/types.js'
import {layerDims} from '../src/model/config.js'
import {VerificationError} from '../src/errors.js'
import {assertPassed, verify} from '../src/verify/index.js'
import {f32Record, readFloat32, type TensorRecord} from '../src/tensor/record.js'

const repo = path.resolve(import.meta.dirname, '..')
const fixture = path.join(repo, 'fixtures/tiny-hf')
let tmp: string

function cli(...args: string[]): {code: number; stdout: string; stderr: string} {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), ...args], {cwd: repo, encoding: 'utf8', timeout: 60_000})
  return {code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr}
}

/** Write the fixture with `edit` applied to named tensors (f32 values, same shape). */
async function corrupted(name: string, edits: Record<string, (values: Float32Array, shape: readonly number[]) => Float32Array>): Promise<string> {
  const source = await openCheckpoint(fixture)
  const tensors: TensorRecord[] = []
  for (const t of source.tensors) {
    const edit = edits[t.name]
    tensors.push(edit ? f32Record(t.name, t.shape, edit(await readFloat32(t), t.shape)) : t)
  }
  for (const key of Object.keys(edits)) expect(source.tensors.some((t) => t.name === key)).toBe(true)
  const checkpoint: Checkpoint = {...source, tensors}
  const out = path.join(tmp, name)
  const events = writeCheckpoint(checkpoint, 'hf', out, {})
  for (;;) if ((await events.next()).done) break
  await source.close()
  return out
}

function expectFailure(out: string, layer: number, tensor: string): void {
  const r = cli('verify', out, '--against', fixture)
  expect(r.code).toBe(5)
  const line = r.stderr.trim().split('\n').at(-1)!
  expect(line).toMatch(/^Error: verification failed \(exact\)/)
  expect(line).toContain(`first divergent layer: ${layer} (of 4)`)
  expect(line).toContain(`first differing tensor: ${tensor}`)
}

beforeAll(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-verify-corrupt-'))
})
afterAll(() => {
  rmSync(tmp, {recursive: true, force: true})
})

describe('corrupted conversions fail verify and name the layer', () => {
  it('one row of one weight changed (layer 2 proj_2)', async () => {
    const out = await corrupted('row', {
      'layers.2.ffn.proj_2.weight': (v, shape) => {
        const w = v.slice()
        const row = 5
        for (let k = 0; k < shape[1]!; k++) w[row * shape[1]! + k] = w[row * shape[1]! + k]! + 0.05
        return w
      },
    })
    expectFailure(out, 2, 'layers.2.ffn.proj_2.weight')
  })

  it('gate and up halves of proj_1 swapped (layer 1)', async () => {
    const out = await corrupted('gate-up', {
      'layers.1.ffn.proj_1.weight': (v, shape) => {
        const half = (shape[0]! / 2) * shape[1]!
        const w = new Float32Array(v.length)
        w.set(v.subarray(half), 0)
        w.set(v.subarray(0, half), half)
        return w
      },
    })
    expectFailure(out, 1, 'layers.1.ffn.proj_1.weight')
  })

  it('qkv_proj transposed (layer 0, square in the tiny shape)', async () => {
    const out = await corrupted('qkv-transposed', {
      'layers.0.attn.qkv_proj.weight': (v, shape) => {
        const [n, k] = shape as [number, number]
        expect(n).toBe(k)
        const w = new Float32Array(v.length)
        for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) w[j * n + i] = v[i * k + j]!
        return w
      },
    })
    expectFailure(out, 0, 'layers.0.attn.qkv_proj.weight')
  })

  it('RoPE interleaved instead of rotate-half (Q/K rows permuted per head, every layer)', async () => {
    const fixtureCheckpoint = await openCheckpoint(fixture)
    const {config} = fixtureCheckpoint
    await fixtureCheckpoint.close()
    const hd = config.head_dim
    const edits: Record<string, (v: Float32Array, shape: readonly number[]) => Float32Array> = {}
    layerDims(config).forEach(({qHeads, kvHeads}, i) => {
      edits[`layers.${i}.attn.qkv_proj.weight`] = (v, shape) => {
        const d = shape[1]!
        const w = v.slice()
        // Interleaved (GPT-J) order pairs dims (2j, 2j+1); rotate-half pairs (j, j + hd/2).
        for (let h = 0; h < qHeads + kvHeads; h++) {
          for (let j = 0; j < hd / 2; j++) {
            for (const [to, from] of [[2 * j, j], [2 * j + 1, j + hd / 2]] as const) {
              w.set(v.subarray((h * hd + from) * d, (h * hd + from + 1) * d), (h * hd + to) * d)
            }
          }
        }
        return w
      }
    })
    const out = await corrupted('rope-interleaved', edits)
    expectFailure(out, 0, 'layers.0.attn.qkv_proj.weight')
  })
})

describe('faithful conversions pass exactly; a wrong rounding rule does not', () => {
  async function converted(name: string, dtype?: 'BF16' | 'F16'): Promise<string> {
    const source = await openCheckpoint(fixture)
    const out = path.join(tmp, name)
    const events = writeCheckpoint(source, 'hf', out, dtype ? {dtype} : {})
    for (;;) if ((await events.next()).done) break
    await source.close()
    return out
  }

  it('f32 → f32: every value identical, logits identical', async () => {
    const report = await verify(await converted('f32'), {against: fixture, promptLength: 32})
    expect(report.pass).toBe(true)
    expect(report.verdict).toBe('exact')
    expect(report.logits!.maxAbs).toBe(0)
    expect(report.weights!.matching).toBe(34)
    expect(report.tokens).toHaveLength(32)
    expect(report.firstDivergentLayer).toBeNull()
  })

  it('bf16 cast through convert --verify: exact (every value is REF rounded to nearest even), quality reported (report written next to the model)', () => {
    const out = path.join(tmp, 'bf16')
    const r = cli('convert', fixture, '--to', 'hf', '--dtype', 'bf16', '--out', out, '--verify')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('PASS (exact)')
    const report = JSON.parse(readFileSync(path.join(out, 'openelm-verify.json'), 'utf8'))
    expect(report.pass).toBe(true)
    expect(report.verdict).toBe('exact')
    expect(report.weights.mismatching).toEqual([])
    expect(report.logits.maxAbs).toBe(0)
    // The cast is lossy against the f32 source: quality says how much.
    expect(report.quality.meanKl).toBeGreaterThan(0)
    expect(report.quality.meanKl).toBeLessThan(1e-3)
  })

  it('f16 rounded by truncation instead of nearest-even fails the exact check and names the first tensor', async () => {
    const source = await openCheckpoint(fixture)
    const tensors: TensorRecord[] = []
    for (const t of source.tensors) {
      const v = await readFloat32(t)
      // f16 by truncation: keep the top 10 mantissa bits (normal range), then back to f32.
      const bits = new Uint32Array(v.buffer.slice(0))
      for (let i = 0; i < bits.length; i++) bits[i] = bits[i]! & 0xffffe000
      const f16ish = new Float32Array(bits.buffer)
      tensors.push(f32Record(t.name, t.shape, f16ish))
    }
    const truncated: Checkpoint = {...source, tensors}
    const dir = path.join(tmp, 'f16-trunc-out')
    const events = writeCheckpoint(truncated, 'hf', dir, {dtype: 'F16'})
    for (;;) if ((await events.next()).done) break
    await source.close()
    const report = await verify(dir, {against: fixture, promptLength: 32})
    expect(report.pass).toBe(false)
    expect(report.relation).toBe('mismatch')
    expect(report.firstDivergentTensor).toBe('token_embeddings.weight')
    expect(() => assertPassed(report)).toThrow(VerificationError)
  })
})
