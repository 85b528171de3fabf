/**
 * MLX affine quantizer: hand-built groups with hand-derived scales/biases/codes, and for every bit
 * width the packed words against bit patterns worked out from the LSB-first bit-stream rule.
 */
import {describe, expect, it} from 'vitest'
import {dequantizedRecord, dequantizeRows, groupErrorBound, groupParams, quantizedRecords, quantizeRows, rint, SCALE_EPS, unpackRows} from '../src/formats/mlx/quantize.js'
import {f32Record, readFloat32} from '../src/tensor/record.js'
import {toFloat32} from '../src/tensor/dtype.js'

const f32 = Math.fround
const G = 32

function group(fn: (i: number) => number, n = G): Float32Array {
  return Float32Array.from({length: n}, (_, i) => fn(i))
}

function codesOf(values: Float32Array, bits: number, groupSize = G): {codes: number[]; scale: number; bias: number} {
  const q = quantizeRows(values, 1, values.length, bits, groupSize)
  return {codes: [...unpackRows(q.packed, 1, values.length, bits)], scale: q.scales[0]!, bias: q.biases[0]!}
}

describe('rint', () => {
  it('rounds half to even, like C rint', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 2.5001, -3.7].map(rint)).toEqual([0, 2, 2, 0, -2, -2, 2, 3, -4])
  })
})

describe('group parameters (MLX rule, fp32)', () => {
  it('all-zero group: scale is -1e-7 (eps, negated), bias 0, codes 0, dequantizes to exactly 0', () => {
    const {codes, scale, bias} = codesOf(group(() => 0), 4)
    expect(scale).toBe(-SCALE_EPS)
    expect(bias).toBe(0)
    expect(codes.every((c) => c === 0)).toBe(true)
  })

  it('constant group: bias is the constant, codes 0, exact', () => {
    const c = f32(0.3)
    const {codes, scale, bias} = codesOf(group(() => c), 4)
    // scale = eps, negated (|min| = |max|); q0 = rint(c / -eps) ≠ 0 → scale = c / q0, bias = c
    const q0 = rint(f32(c / -SCALE_EPS))
    expect(scale).toBe(f32(c / q0))
    expect(bias).toBe(c)
    expect(codes.every((x) => x === 0)).toBe(true)
  })

  it('all-negative group: min dominates, positive scale, bias = min, exact codes', () => {
    // w_k = -1 + k/16: scale = (15/16)/15 = 1/16, q0 = rint(-1 / (1/16)) = -16, scale = -1/-16, bias = -1
    const {codes, scale, bias} = codesOf(group((i) => -1 + (i % 16) / 16), 4)
    expect(scale).toBe(1 / 16)
    expect(bias).toBe(-1)
    expect(codes).toEqual(Array.from({length: G}, (_, i) => i % 16))
  })

  it('codes round half to even: (w - bias) / scale = 2.5 → 2, 3.5 → 4', () => {
    // scale 1/16, bias -1 as above (codes 0 and 15 fix the range); two elements sit exactly on ties.
    const values = group((i) => (i === 0 ? -1 : i === 1 ? -1 + 15 / 16 : i === 2 ? -1 + 2.5 / 16 : i === 3 ? -1 + 3.5 / 16 : -1 + 8 / 16))
    const {codes, scale, bias} = codesOf(values, 4)
    expect([scale, bias]).toEqual([1 / 16, -1])
    expect(codes.slice(0, 5)).toEqual([0, 15, 2, 4, 8])
  })

  it('min-dominant group with both signs: zero is exact', () => {
    const values = group((i) => (i === 0 ? -2 : i === 1 ? 1 : i === 2 ? 0 : 0.5 * Math.sin(i)))
    const {codes, scale, bias} = codesOf(values, 4)
    // scale = 3/15 = 0.2 (f32), q0 = rint(-2 / 0.2) = -10, scale = -2 / -10, bias = -2
    expect(scale).toBe(f32(-2 / -10))
    expect(bias).toBe(-2)
    expect(codes[0]).toBe(0)
    expect(codes[2]).toBe(10)
    expect(f32(f32(scale * codes[2]!) + bias)).toBe(0)
  })

  it('max-dominant group: negative scale, bias = max, max gets code 0 and min code 15', () => {
    const values = group((i) => (i === 0 ? 2 : i === 1 ? -1 : 0))
    const {codes, scale, bias} = codesOf(values, 4)
    // scale = -(3/15), q0 = rint(2 / -0.2) = -10, scale = 2 / -10 = -0.2, bias = 2
    expect(scale).toBe(f32(2 / -10))
    expect(scale).toBeLessThan(0)
    expect(bias).toBe(2)
    expect(codes[0]).toBe(0)
    expect(codes[1]).toBe(15)
    expect(codes[2]).toBe(10)
  })

  it('one outlier: it is exact, the rest collapse within half a step', () => {
    const values = group((i) => (i === 7 ? 10 : 0.01 * Math.cos(i)))
    const {codes, scale, bias} = codesOf(values, 4)
    const max = 10
    const min = Math.min(...values)
    const step = f32(f32(max - min) / 15)
    const q0 = rint(f32(max / -step))
    expect(q0).toBe(-15)
    expect(scale).toBe(f32(max / q0))
    expect(bias).toBe(10)
    expect(codes[7]).toBe(0)
    for (let i = 0; i < G; i++) expect(Math.abs(f32(f32(scale * codes[i]!) + bias) - values[i]!)).toBeLessThanOrEqual(Math.abs(scale) / 2 + 1e-6)
  })

  it('tiny group (q0 = 0 branch): bias 0 and the scale stays at eps', () => {
    // min -1.6e-9 dominates, so the step (clamped to eps) stays positive; q0 = rint(-1.6e-9 / 1e-7) = 0
    const {scale, bias} = groupParams(group((i) => (i - 16) * 1e-10), 0, G, 4)
    expect(bias).toBe(0)
    expect(scale).toBe(SCALE_EPS)
    // max-dominant tiny group: the step is negated
    expect(groupParams(group((i) => (16 - i) * 1e-10 + 1e-10), 0, G, 4).scale).toBe(-SCALE_EPS)
  })

  it('clips codes to [0, 2^bits - 1]; the error stays within one step of the group range', () => {
    const values = group((i) => Math.sin(i * 1.7) * 3)
    const bound = (bits: number) => groupErrorBound(Math.min(...values), Math.max(...values), bits)
    let clipped = false
    for (const bits of [2, 3, 4, 5, 6, 8]) {
      const q = quantizeRows(values, 1, G, bits, G)
      const deq = dequantizeRows(q.packed, q.scales, q.biases, 1, G, bits, G)
      const codes = unpackRows(q.packed, 1, G, bits)
      expect(Math.max(...codes)).toBeLessThanOrEqual((1 << bits) - 1)
      for (let i = 0; i < G; i++) {
        const err = Math.abs(deq[i]! - values[i]!)
        expect(err).toBeLessThanOrEqual(bound(bits))
        if (err > Math.abs(q.scales[0]!) / 2 * 1.001) clipped = true
      }
    }
    // The rule moves the step to keep the edge exact, so some widths clip the far end (by design).
    expect(clipped).toBe(true)
  })
})

describe('bit packing, LSB-first, one bit stream per row', () => {
  // Row 0 carries `codesFor(bits)`, row 1 the same codes reversed. Values are -1 + code / 2^bits,
  // so the group rule gives scale 2^-bits, bias -1 and exactly these codes (0 and 2^bits - 1 are present).
  const codesFor = (bits: number): number[] => {
    const n = (1 << bits) - 1
    if (bits <= 5) return Array.from({length: G}, (_, i) => i % (n + 1))
    if (bits === 6) return Array.from({length: G}, (_, i) => (i === 1 ? n : (i * 5) % 64))
    return Array.from({length: G}, (_, i) => (i === 1 ? n : (i * 29) % 256))
  }
  // Words worked out from the rule: code i occupies bits [i*bits, (i+1)*bits) of the row's stream,
  // word k holds stream bits [32k, 32k+32), bit 0 = least significant. E.g. 3 bits, codes 0..7,0..:
  // 0<<0 | 1<<3 | 2<<6 | 3<<9 | 4<<12 | 5<<15 | 6<<18 | 7<<21 | 0<<24 | 1<<27 | (2 & 3)<<30 = 0x88fac688,
  // and code 10's high bit (2>>2 = 0) starts word 1.
  const expected: Record<number, [number[], number[]]> = {
    2: [[0xe4e4e4e4, 0xe4e4e4e4], [0x1b1b1b1b, 0x1b1b1b1b]],
    3: [[0x88fac688, 0xc688fac6, 0xfac688fa], [0x77053977, 0x39770539, 0x05397705]],
    4: [[0x76543210, 0xfedcba98, 0x76543210, 0xfedcba98], [0x89abcdef, 0x01234567, 0x89abcdef, 0x01234567]],
    5: [[0x8a418820, 0xc5a92839, 0xca307b9a, 0x38bdab49, 0xffbbcdeb], [0x75be77df, 0x3a56d7c6, 0x35cf8465, 0xc74254b6, 0x00443214]],
    6: [[0x543cafc0, 0x2b688de6, 0x2c607cdf, 0x647da550, 0x2f78ceea, 0x6d644c1c], [0x8731159b, 0x9bb3e3d0, 0x41569f92, 0xb7f0118b, 0x97a3a2dc, 0x03f28f51]],
    8: [[0x573aff00, 0xcbae9174, 0x3f2205e8, 0xb396795c, 0x270aedd0, 0x9b7e6144, 0x0ff2d5b8, 0x8366492c], [0x2c496683, 0xb8d5f20f, 0x44617e9b, 0xd0ed0a27, 0x5c7996b3, 0xe805223f, 0x7491aecb, 0x00ff3a57]],
  }
  for (const bits of [2, 3, 4, 5, 6, 8]) {
    it(`${bits}-bit codes pack into the hand-computed words`, () => {
      const codes = codesFor(bits)
      const rows = [codes, [...codes].reverse()]
      const values = Float32Array.from(rows.flat().map((c) => -1 + c / 2 ** bits))
      const q = quantizeRows(values, 2, G, bits, G)
      expect([...q.scales]).toEqual([2 ** -bits, 2 ** -bits])
      expect([...q.biases]).toEqual([-1, -1])
      expect(q.packed.length).toBe((2 * G * bits) / 32)
      const words = (G * bits) / 32
      expect([...q.packed.subarray(0, words)]).toEqual(expected[bits]![0])
      expect([...q.packed.subarray(words)]).toEqual(expected[bits]![1])
      expect([...unpackRows(q.packed, 2, G, bits)]).toEqual(rows.flat())
    })
  }

  it('a 3-bit code straddling a word boundary is split low bits first', () => {
    // code 10 sits at stream bits 30..32: its two low bits end word 0, its high bit starts word 1.
    const codes = Array.from({length: G}, (_, i) => (i === 10 ? 7 : i === 0 ? 0 : 0))
    codes[1] = 7 // make the range 0..7 so codes are exact
    const values = Float32Array.from(codes.map((c) => -1 + c / 8))
    const q = quantizeRows(values, 1, G, 3, G)
    expect(q.packed[0]).toBe(((7 << 3) | (3 << 30)) >>> 0)
    expect(q.packed[1]).toBe(1)
    expect(q.packed[2]).toBe(0)
  })
})

describe('lazy quantized / dequantized records', () => {
  const rows = 40
  const cols = 128
  const values = Float32Array.from({length: rows * cols}, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)))
  const source = f32Record('layers.0.ffn.proj_2.weight', [rows, cols], values)

  it('ranged reads equal the whole tensor, and dequantizing reproduces the values within the bound', async () => {
    const {weight, scales, biases} = quantizedRecords(source, 'x', {bits: 4, groupSize: 64}, 'F32')
    expect(weight.shape).toEqual([rows, cols * 4 / 32])
    expect(scales.shape).toEqual([rows, 2])
    const whole = await weight.read()
    const parts = new Uint8Array(weight.byteLength)
    for (let s = 0; s < weight.byteLength; s += 52) parts.set(await weight.read(s, Math.min(weight.byteLength, s + 52)), s)
    expect(Buffer.compare(Buffer.from(whole), Buffer.from(parts))).toBe(0)
    const deq = dequantizedRecord('w', weight, scales, biases, {bits: 4, groupSize: 64})
    const out = await readFloat32(deq)
    for (let g = 0; g < values.length / 64; g++) {
      const v = values.subarray(g * 64, g * 64 + 64)
      const bound = groupErrorBound(Math.min(...v), Math.max(...v), 4)
      for (let i = g * 64; i < g * 64 + 64; i++) expect(Math.abs(out[i]! - values[i]!)).toBeLessThanOrEqual(bound)
    }
    const slice = toFloat32(await deq.read(4 * 100, 4 * 300), 'F32')
    expect([...slice]).toEqual([...out.subarray(100, 300)])
  })

  it('rounds the source to the storage dtype before quantizing (as mlx-lm casts first)', async () => {
    const f16 = quantizedRecords(source, 'x', {bits: 8, groupSize: 32}, 'F16')
    expect(f16.scales.dtype).toBe('F16')
    expect(f16.weight.dtype).toBe('U32')
    const f16Values = toFloat32(new Uint8Array((await import('../src/tensor/dtype.js')).fromFloat32(values, 'F16')), 'F16')
    const ref = quantizeRows(f16Values, rows, cols, 8, 32)
    expect(Buffer.compare(Buffer.from(await f16.weight.read()), Buffer.from(ref.packed.buffer))).toBe(0)
  })

  it('rejects shapes that do not split into groups, and bad parameters, with typed errors', () => {
    expect(() => quantizedRecords(f32Record('a.weight', [2, 48], new Float32Array(96)), 'a', {bits: 4, groupSize: 32}, 'F16')).toThrow(/last dim 48 is not a multiple of the group size 32/)
    expect(() => quantizedRecords(source, 'x', {bits: 7, groupSize: 64}, 'F16')).toThrow(/2, 3, 4, 5, 6 or 8 bits, not 7/)
    expect(() => quantizedRecords(source, 'x', {bits: 4, groupSize: 16}, 'F16')).toThrow(/group sizes 32, 64 or 128, not 16/)
    const {weight, scales, biases} = quantizedRecords(source, 'x', {bits: 4, groupSize: 64}, 'F32')
    expect(() => dequantizedRecord('w', weight, biases, scales, {bits: 4, groupSize: 32})).toThrow(/scales has shape \[40, 2\], expected \[40, 4\]/)
  })
})
