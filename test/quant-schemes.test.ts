/**
 * The storage schemes' own contract (src/quant): encode/decode round trips, part layouts, and the
 * comparison — identical, mismatched (with the first difference named), and MLX's documented
 * alternatives (its Metal kernel's rule, a half-away tie) accepted and named.
 */
import {describe, expect, it} from 'vitest'
import {SCHEMES, schemeFor} from '../src/quant/index.js'
import {metalGroup, MLX_AFFINE, unpackRows} from '../src/quant/mlx-affine.js'
import {GGUF_Q8_0} from '../src/quant/q8_0.js'
import {dtypeSize, fromFloat32} from '../src/tensor/dtype.js'

function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1
  return Float32Array.from({length: n}, () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0
    return s / 2 ** 32 - 0.5
  })
}

function packLsb(codes: ArrayLike<number>, bits: number): Uint8Array {
  const words = new Uint32Array(Math.ceil((codes.length * bits) / 32))
  for (let i = 0; i < codes.length; i++) {
    const bit = i * bits
    words[bit >>> 5] = (words[bit >>> 5]! | (codes[i]! << (bit & 31))) >>> 0
    if ((bit & 31) + bits > 32) words[(bit >>> 5) + 1] = (words[(bit >>> 5) + 1]! | (codes[i]! >>> (32 - (bit & 31)))) >>> 0
  }
  return new Uint8Array(words.buffer)
}

describe('every scheme', () => {
  const cases: [string, Record<string, unknown>][] = [
    ['f32', {}], ['f16', {}], ['bf16', {}], ['gguf_q8_0', {}],
    ['mlx_affine', {bits: 3, group_size: 32, dtype: 'F16'}], ['mlx_affine', {bits: 4, group_size: 64, dtype: 'BF16'}], ['mlx_affine', {bits: 8, group_size: 128, dtype: 'F32'}],
  ]
  for (const [name, params] of cases) {
    it(`${name} ${JSON.stringify(params)}: parts have their declared sizes, decode∘encode is stable, identical encodings compare identical`, () => {
      const scheme = schemeFor(name)
      const rows = 3
      const cols = 256
      const values = random(rows * cols, 7)
      const encoded = scheme.encode(values, rows, cols, params)
      for (const part of scheme.parts(params, cols)) expect(encoded[part.name]!.byteLength, part.name).toBe(rows * part.perRow * dtypeSize(part.dtype))
      const decoded = scheme.decode(encoded, rows, cols, params)
      expect(decoded).toHaveLength(rows * cols)
      // Encoding the decoded values again gives the same codes (a quantizer's fixed point, a cast's identity).
      if (name !== 'mlx_affine') expect(scheme.decode(scheme.encode(decoded, rows, cols, params), rows, cols, params)).toEqual(decoded)
      const diff = scheme.compare(encoded, encoded, values, rows, cols, params)
      expect(diff.identicalElements).toBe(rows * cols)
      expect(diff.identicalBlocks).toBe(diff.blocks)
      expect(diff.first).toBeUndefined()
    })
  }

  it('every registered scheme reports bits per weight', () => {
    expect(SCHEMES.f16!.bitsPerWeight({})).toBe(16)
    expect(GGUF_Q8_0.bitsPerWeight({})).toBe(8.5)
    expect(MLX_AFFINE.bitsPerWeight({bits: 4, group_size: 64, dtype: 'F16'})).toBe(4.5)
    expect(() => schemeFor('q4_k')).toThrow(/unknown storage scheme "q4_k"/)
  })
})

describe('comparison', () => {
  it('names the first differing code: row, block, column, part', () => {
    const params = {bits: 4, group_size: 32, dtype: 'F16' as const}
    const values = random(2 * 64, 3)
    const expected = MLX_AFFINE.encode(values, 2, 64, params)
    const codes = unpackRows(new Uint32Array(expected.weight!.slice().buffer), 2, 64, 4)
    codes[64 + 40] = codes[64 + 40]! === 15 ? 14 : codes[64 + 40]! + 1
    const actual = {...expected, weight: packLsb(codes, 4)}
    const diff = MLX_AFFINE.compare(expected, actual, values, 2, 64, params)
    expect(diff.identicalElements).toBe(127)
    expect(diff.identicalBlocks).toBe(3)
    expect(diff.accepted).toEqual({})
    expect(diff.first).toEqual({row: 1, block: 1, col: 40, part: 'weight'})
  })

  it("accepts a group quantized by MLX's Metal rule (all-negative group: its max starts at 0), and names the rule", () => {
    const params = {bits: 4, group_size: 32, dtype: 'F32' as const}
    const values = Float32Array.from({length: 32}, (_, i) => -1 - i / 31)
    const expected = MLX_AFFINE.encode(values, 1, 32, params)
    const metal = metalGroup(values, 0, 32, 4, 'F32')
    const actual = {weight: packLsb(metal.codes, 4), scales: fromFloat32(Float32Array.of(metal.scale), 'F32'), biases: fromFloat32(Float32Array.of(metal.bias), 'F32')}
    // The two rules really differ here (CPU: range [-2, -1]; Metal: [-2, 0]).
    expect(Buffer.from(actual.scales).equals(Buffer.from(expected.scales!))).toBe(false)
    const diff = MLX_AFFINE.compare(expected, actual, values, 1, 32, params)
    expect(diff.accepted).toEqual({'mlx-metal-rule': 1})
    expect(diff.acceptedBlocks).toEqual([0])
    expect(diff.first).toBeUndefined()
  })

  it('accepts a code rounded half away from zero on an exact tie, and only there', () => {
    // Range [0, 15] at 4 bits: scale −1, bias 15, q = rint(15 − w); w = 2.5 is a tie (12.5).
    const params = {bits: 4, group_size: 32, dtype: 'F16' as const}
    const values = Float32Array.from({length: 32}, (_, i) => (i === 0 ? 0 : i === 1 ? 15 : i === 2 ? 2.5 : 7))
    const expected = MLX_AFFINE.encode(values, 1, 32, params)
    const codes = unpackRows(new Uint32Array(expected.weight!.slice().buffer), 1, 32, 4)
    expect(codes[2]).toBe(12)
    const tie = Uint8Array.from(codes)
    tie[2] = 13
    expect(MLX_AFFINE.compare(expected, {...expected, weight: packLsb(tie, 4)}, values, 1, 32, params).accepted).toEqual({'tie-half-away': 1})
    const notTie = Uint8Array.from(codes)
    notTie[3] = notTie[3]! + 1 // 15 − 7 = 8 exactly: no tie
    const diff = MLX_AFFINE.compare(expected, {...expected, weight: packLsb(notTie, 4)}, values, 1, 32, params)
    expect(diff.accepted).toEqual({})
    expect(diff.first).toEqual({row: 0, block: 0, col: 3, part: 'weight'})
  })

  it('Q8_0: a changed scale is named as the scale, a changed code as the code', () => {
    const values = random(64, 11)
    const expected = GGUF_Q8_0.encode(values, 1, 64, {})
    const scale = expected.blocks!.slice()
    scale[34] = scale[34]! ^ 1
    expect(GGUF_Q8_0.compare(expected, {blocks: scale}, values, 1, 64, {}).first).toEqual({row: 0, block: 1, col: 32, part: 'scales'})
    const code = expected.blocks!.slice()
    code[34 + 2 + 5] = (code[34 + 2 + 5]! + 1) & 0xff
    expect(GGUF_Q8_0.compare(expected, {blocks: code}, values, 1, 64, {}).first).toEqual({row: 0, block: 1, col: 37, part: 'blocks'})
  })
})
