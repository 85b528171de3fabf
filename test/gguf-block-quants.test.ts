/**
 * ggml's block types — legacy 32-value blocks (Q4_0, Q4_1, Q5_0, Q5_1) and the 256-value K-quants
 * (Q2_K … Q6_K): our TS quantizer, the PyTorch
 * reference (quant_ref.py) and llama.cpp's own compiled `quantize_row_*_ref` / `dequantize_row_*`
 * (node-llama-cpp's libggml-base.so, through ctypes) give the same bytes and the same values, on
 * weight-like rows (several seeds and scales) and on edge rows. Also: the exact comparison names the
 * first differing block and part.
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {SCHEMES} from '../src/quant/index.js'
import {seededRandom as prng} from '../src/generate/sampler.js'

const PYTHON = '/usr/bin/python3'
const GGML_REF = path.join(import.meta.dirname, 'python', 'ggml_ref.py')
const TYPES = ['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_K', 'q3_K', 'q4_K', 'q5_K', 'q6_K'] as const
const tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-ggml-blocks-'))
afterAll(() => rmSync(tmp, {recursive: true, force: true}))

const probe = spawnSync(PYTHON, [GGML_REF, 'q4_0', '/dev/null', path.join(tmp, 'probe')], {encoding: 'utf8'})
const unavailable = probe.status === 3 ? probe.stderr.trim() : undefined

/** Weight-like rows: normal values at one scale per seed, 1% outliers ×20, some heavy-tailed. */
function weights(seed: number, n: number): number[] {
  const u = prng(seed)
  const scale = [0.02, 0.5, 3, 1e-3, 70][seed % 5]!
  return Array.from({length: n}, () => {
    const g = Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u())
    const heavy = seed % 2 === 0 ? 1 : 1 / Math.max(0.05, u())
    return (u() < 0.01 ? 20 : 1) * g * scale * heavy
  })
}

/** One 32-value block each: the cases a rounding or sign rule gets wrong. */
function edgeBlocks(): number[] {
  const block = (f: (j: number) => number) => Array.from({length: 32}, (_, j) => f(j))
  return [
    ...block(() => 0),
    ...block((j) => (j % 2 ? -0 : 0)),
    ...block(() => 0.75),
    ...block(() => -2.5),
    ...block((j) => (j === 5 ? 1000 : 0.01 * j)),
    ...block((j) => (j === 9 ? -1000 : 0.01 * j)),
    ...block((j) => (j === 0 ? -3 : j === 1 ? 3 : 0.1)), // equal magnitudes: the first one sets the sign
    ...block((j) => (j === 0 ? 3 : j === 1 ? -3 : -0.1)),
    ...block((j) => 1e-30 * (j - 16)),
    ...block((j) => 1e-41 * (j + 1)), // subnormal inputs
    ...block((j) => 1e30 * (j % 3 - 1)),
    ...block((j) => (j % 2 ? 1 : -1) * (j / 31)),
    ...block((j) => (j - 8) * 0.5), // multiples of the step: x/d + 8.5 lands on k + 0.5 for Q4_0
    ...block((j) => j - 16), // Q5_0 codes on exact ties
    ...block((j) => j / 15), // Q4_1 grid points
    ...block((j) => j / 31 - 7), // Q5_1 grid points, offset
    ...block((j) => 65504 * (j % 2 ? 1 : -1)),
    ...block((j) => 2 ** (j - 16)),
  ]
}

/** 256-value super-blocks: zero and constant sub-blocks next to live ones, outliers, a signed ramp. */
function superBlocks(): number[] {
  const sb = (f: (j: number) => number) => Array.from({length: 256}, (_, j) => f(j))
  return [
    ...sb(() => 0),
    ...sb(() => -1.25),
    ...sb((j) => (j < 128 ? 0 : Math.sin(j) * 0.1)), // half the sub-blocks all zero
    ...sb((j) => (j % 16 === 0 ? 0.5 : 1e-9 * j)), // one value per sub-block dominates
    ...sb((j) => (j === 77 ? -500 : Math.cos(j) * 0.02)),
    ...sb((j) => (j - 128) / 64),
    ...sb((j) => (j % 32 < 16 ? 0.25 : -0.25)),
    ...sb((j) => ((j * 7919) % 13) - 6), // integers: exact ties for the scale searches
    ...sb((j) => 1e-20 * Math.sin(j)),
    ...sb((j) => 3e4 * Math.sin(j * 0.3)),
  ]
}

/** libggml's and quant_ref.py's blocks and dequantized values of `values`, for every type, in one Python run. */
function run(values: Float32Array): Map<string, {ggml: Uint8Array; ggmlValues: Float32Array; ref: Uint8Array; refValues: Float32Array}> {
  const input = path.join(tmp, 'input.f32')
  writeFileSync(input, values)
  const prefix = path.join(tmp, 'out')
  execFileSync(PYTHON, [GGML_REF, TYPES.join(','), input, prefix, '--ref'], {encoding: 'utf8'})
  const f32 = (file: string) => {
    const b = readFileSync(file)
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4)
  }
  return new Map(TYPES.map((type) => {
    const p = `${prefix}.${type}`
    return [type, {ggml: new Uint8Array(readFileSync(`${p}.ggml`)), ggmlValues: f32(`${p}.ggml.f32`), ref: new Uint8Array(readFileSync(`${p}.ref`)), refValues: f32(`${p}.ref.f32`)}]
  }))
}

function firstByteDifference(a: Uint8Array, b: Uint8Array): string | undefined {
  if (a.byteLength !== b.byteLength) return `${a.byteLength} bytes vs ${b.byteLength}`
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return `byte ${i}: ${a[i]} vs ${b[i]}`
  return undefined
}

function firstValueDifference(a: Float32Array, b: Float32Array): string | undefined {
  const ab = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const bb = new Uint32Array(b.buffer, b.byteOffset, b.length)
  if (a.length !== b.length) return `${a.length} values vs ${b.length}`
  for (let i = 0; i < a.length; i++) if (ab[i] !== bb[i]) return `value ${i}: ${a[i]} vs ${b[i]}`
  return undefined
}

describe.skipIf(unavailable !== undefined)(`ggml legacy blocks: TS == quant_ref.py == libggml${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  const inputs: [string, Float32Array][] = [
    ...[1, 2, 3, 4, 5, 6].map((seed): [string, Float32Array] => [`seed${seed}`, Float32Array.from(weights(seed, 32 * 96))]),
    ['edges', Float32Array.from([...edgeBlocks(), ...Array.from({length: 192}, (_, j) => (j % 5) * 0.125 - 0.25)])], // 768 values: whole super-blocks too
    ['super-blocks', Float32Array.from(superBlocks())],
  ]
  const all = new Float32Array(inputs.reduce((n, [, v]) => n + v.length, 0))
  const at = new Map<string, [number, number]>()
  let offset = 0
  for (const [name, v] of inputs) {
    all.set(v, offset)
    at.set(name, [offset, offset + v.length])
    offset += v.length
  }
  let results: ReturnType<typeof run>
  beforeAll(() => {
    results = run(all)
  })
  for (const type of TYPES) {
    it(`${type}: identical blocks and dequantized values`, () => {
      const scheme = SCHEMES[`gguf_${type.toLowerCase()}`]!
      const bytesPerValue = scheme.parts({}, 256)[0]!.perRow / 256
      const {ggml: allGgml, ggmlValues: allGgmlValues, ref: allRef, refValues: allRefValues} = results.get(type)!
      for (const [name, values] of inputs) {
        const [v0, v1] = at.get(name)!
        const [b0, b1] = [v0 * bytesPerValue, v1 * bytesPerValue]
        const [ggml, ref] = [allGgml.subarray(b0, b1), allRef.subarray(b0, b1)]
        const ours = scheme.encode(values, 1, values.length, {}).blocks!
        expect(firstByteDifference(ours, ggml), `${type} ${name}: TS vs libggml`).toBeUndefined()
        expect(firstByteDifference(ref, ggml), `${type} ${name}: quant_ref.py vs libggml`).toBeUndefined()
        expect(firstValueDifference(scheme.decode({blocks: ggml}, 1, values.length, {}), allGgmlValues.subarray(v0, v1)), `${type} ${name}: TS decode vs libggml`).toBeUndefined()
        expect(firstValueDifference(allRefValues.subarray(v0, v1), allGgmlValues.subarray(v0, v1)), `${type} ${name}: quant_ref.py decode vs libggml`).toBeUndefined()
      }
    })
  }
})

describe('ggml legacy block schemes', () => {
  it('declare their layout and bits per weight', () => {
    expect(TYPES.map((t) => SCHEMES[`gguf_${t.toLowerCase()}`]!.bitsPerWeight({}))).toEqual([4.5, 5, 5.5, 6, 2.625, 3.4375, 4.5, 5.5, 6.5625])
    expect(SCHEMES.gguf_q4_k!.parts({}, 512)).toEqual([{name: 'blocks', dtype: 'U8', perRow: 288}])
    expect(() => SCHEMES.gguf_q6_k!.check({}, 64)).toThrow(/whole 256-value blocks, not 64/)
    expect(SCHEMES.gguf_q5_1!.parts({}, 64)).toEqual([{name: 'blocks', dtype: 'U8', perRow: 48}])
    expect(() => SCHEMES.gguf_q4_0!.check({}, 48)).toThrow(/whole 32-value blocks, not 48/)
  })

  it('compare names the first differing block, element and part', () => {
    const scheme = SCHEMES.gguf_q5_0!
    const values = Float32Array.from(weights(7, 2 * 64))
    const expected = scheme.encode(values, 2, 64, {})
    expect(scheme.compare(expected, expected, values, 2, 64, {})).toMatchObject({elements: 128, identicalElements: 128, blocks: 4, identicalBlocks: 4})
    const codes = {blocks: expected.blocks!.slice()}
    codes.blocks[3 * 22 + 6 + 2] ^= 0x10 // block 3 (row 1, block 1): element 18's low nibble bit
    expect(scheme.compare(expected, codes, values, 2, 64, {})).toMatchObject({identicalBlocks: 3, identicalElements: 127, first: {row: 1, block: 1, col: 32 + 18, part: 'blocks'}})
    const scale = {blocks: expected.blocks!.slice()}
    scale.blocks[22] ^= 1 // block 1's d
    expect(scheme.compare(expected, scale, values, 2, 64, {})).toMatchObject({identicalBlocks: 3, identicalElements: 96, first: {row: 0, block: 1, part: 'scales'}})
  })
})
