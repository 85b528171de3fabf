/**
 * The WebAssembly SIMD kernels (src/simd/kernels.ts) against the scalar reference code they stand in
 * for, bit for bit: the casts over a strided sweep of all 2^32 f32 patterns plus every f16/bf16
 * rounding boundary (ties and one ulp either side), the quantizers on edge blocks.
 */
import {describe, expect, it} from 'vitest'
import {seededRandom} from '../src/generate/sampler.js'
import {f16BitsToF32, f32BitsToBf16Bits, f32BitsToF16Bits} from '../src/tensor/dtype.js'
import {simdKernels} from '../src/simd/kernels.js'

const k = simdKernels()

/** Every pattern the sweep checks: a stride through 2^32, the edge list, and each 16-bit type's rounding boundaries. */
function patterns(): Uint32Array {
  const out: number[] = []
  // 2^32 / 4093 ≈ 1.05 M patterns, every exponent and sign, odd stride so low bits vary.
  for (let x = 0; x < 2 ** 32; x += 4093) out.push(x)
  const edges = [
    0, 0x80000000, // ±0
    0x7f800000, 0xff800000, // ±Inf
    0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fa00000, 0x7f802000, 0x7f801fff, 0x7f80ffff, 0x7fff0000, 0x7f810000, 0x7fbfffff, 0xffffffff, 0x7fffffff, // NaNs: quiet, signalling, payloads below and above the kept bits
    0x00000001, 0x80000001, 0x007fffff, 0x00800000, 0x807fffff, // f32 subnormals, smallest normal
    0x33000000, 0x33000001, 0x32ffffff, 0xb3000000, // 2^-25: ties to 0; just above rounds to the smallest f16 subnormal
    0x33800000, 0x33c00000, 0x38800000, 0x387fffff, 0x387ff000, 0x387fe000, // f16 subnormal/normal boundary
    0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, 0x477fffff, 0x47800000, 0xc77ff000, // 65504, just under 65520, 65520 (ties to Inf), above
    0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x7f7f7fff, // f32 max: bf16 overflow to Inf
    0x3f808000, 0x3f818000, 0x3f801000, 0x3f803000, // bf16 and f16 ties, even and odd
  ]
  out.push(...edges)
  // Each f16 pattern's value, its midpoint to the next pattern (a tie) and one f32 ulp either side.
  const bits = new Uint32Array(1)
  const f = new Float32Array(bits.buffer)
  for (let h = 0; h < 0x7c00; h++) {
    for (const sign of [0, 0x8000]) {
      const a = f16BitsToF32(h | sign)
      const b = f16BitsToF32((h + 1) | sign)
      f[0] = (a + b) / 2 // exact in f32
      out.push(bits[0]! - 1, bits[0]!, bits[0]! + 1)
      f[0] = a
      out.push(bits[0]!)
    }
  }
  // bf16 ties: each upper half with low halves around 0x8000.
  for (let hi = 0; hi < 0x10000; hi += 7) for (const lo of [0x7fff, 0x8000, 0x8001, 0x0000, 0xffff]) out.push(((hi << 16) | lo) >>> 0)
  return Uint32Array.from(out)
}

describe.skipIf(!k)('SIMD casts against the scalar reference', () => {
  const all = patterns()
  const src = new Int32Array(all.buffer)

  it('f32 → f16: every pattern of the sweep, bit for bit (NaN payloads, subnormals, ties, overflow)', () => {
    const got = new Uint16Array(src.length)
    k!.castF32(src, got, 'F16')
    let bad = -1
    for (let i = 0; i < all.length; i++) {
      if (got[i] !== f32BitsToF16Bits(all[i]!)) {
        bad = i
        break
      }
    }
    expect(bad === -1 ? 'all equal' : `0x${all[bad]!.toString(16)} → 0x${got[bad]!.toString(16)}, scalar 0x${f32BitsToF16Bits(all[bad]!).toString(16)}`).toBe('all equal')
    expect(all.length).toBeGreaterThan(1_300_000)
  })

  it('f32 → bf16: every pattern of the sweep, bit for bit', () => {
    const got = new Uint16Array(src.length)
    k!.castF32(src, got, 'BF16')
    let bad = -1
    for (let i = 0; i < all.length; i++) {
      if (got[i] !== f32BitsToBf16Bits(all[i]!)) {
        bad = i
        break
      }
    }
    expect(bad === -1 ? 'all equal' : `0x${all[bad]!.toString(16)} → 0x${got[bad]!.toString(16)}, scalar 0x${f32BitsToBf16Bits(all[bad]!).toString(16)}`).toBe('all equal')
  })

  it('f32 → f16/bf16 → f32 (roundInto): the exact widening of the scalar cast on every pattern, and roundIntoScalar on every non-NaN', async () => {
    const {roundInto, roundIntoScalar} = await import('../src/quant/mlx-affine.js')
    const {toFloat32} = await import('../src/tensor/dtype.js')
    const values = new Float32Array(all.buffer)
    for (const dtype of ['F16', 'BF16'] as const) {
      const scalar16 = Uint16Array.from(all, (x) => (dtype === 'F16' ? f32BitsToF16Bits(x) : f32BitsToBf16Bits(x)))
      const exact = new Uint32Array(toFloat32(new Uint8Array(scalar16.buffer), dtype).buffer)
      const got = new Float32Array(values.length)
      roundInto(values, dtype, got)
      const gotBits = new Uint32Array(got.buffer)
      const ref = new Float32Array(values.length)
      roundIntoScalar(values, dtype, ref)
      const refBits = new Uint32Array(ref.buffer)
      let bad = ''
      for (let i = 0; i < all.length && !bad; i++) {
        if (gotBits[i] !== exact[i]) bad = `${dtype} 0x${all[i]!.toString(16)}: 0x${gotBits[i]!.toString(16)} vs exact 0x${exact[i]!.toString(16)}`
        else if (!Number.isNaN(ref[i]) && refBits[i] !== gotBits[i]) bad = `${dtype} 0x${all[i]!.toString(16)}: 0x${gotBits[i]!.toString(16)} vs roundIntoScalar 0x${refBits[i]!.toString(16)}`
        else if (Number.isNaN(ref[i]) !== Number.isNaN(got[i])) bad = `${dtype} 0x${all[i]!.toString(16)}: NaN mismatch`
      }
      expect(bad || 'all equal').toBe('all equal')
      // In place, as the MLX writer calls it.
      const inPlace = values.slice()
      roundInto(inPlace, dtype, inPlace)
      expect(Buffer.from(inPlace.buffer).equals(Buffer.from(got.buffer))).toBe(true)
    }
  })

  it('known values: 65504 stays, 65520 overflows to Inf, 2^-25 ties to 0, NaN keeps its payload', () => {
    const x = Int32Array.from([0x477fe000, 0x477ff000, 0x33000000, 0x33000001, 0x7f802000, 0x7f800001, 0xff800000 | 0, 0x80000000 | 0])
    const h = new Uint16Array(8)
    k!.castF32(x, h, 'F16')
    expect([...h]).toEqual([0x7bff, 0x7c00, 0x0000, 0x0001, 0x7c01, 0x7e00, 0xfc00, 0x8000])
    const b = new Uint16Array(8)
    k!.castF32(Int32Array.from([0x7f800001, 0x7f810000, 0x7f7fffff, 0x3f808000, 0x3f818000, 0xffc00000 | 0, 1, 0x3f808001]), b, 'BF16')
    expect([...b]).toEqual([0x7fc0, 0x7f81, 0x7f80, 0x3f80, 0x3f82, 0xffc0, 0x0000, 0x3f81])
  })

  it('lengths that are not a multiple of 8, and in place (output over the first half of the input)', () => {
    const random = seededRandom(7)
    for (const n of [1, 7, 9, 65535, 65536 + 13, 3 * 65536 + 5]) {
      const values = new Int32Array(n)
      for (let i = 0; i < n; i++) values[i] = (random() * 2 ** 32) | 0
      const want = Uint16Array.from(values, (v) => f32BitsToF16Bits(v >>> 0))
      const inPlace = values.slice()
      k!.castF32(inPlace, new Uint16Array(inPlace.buffer, 0, n), 'F16')
      expect(Buffer.from(inPlace.buffer, 0, 2 * n).equals(Buffer.from(want.buffer))).toBe(true)
    }
  })
})

/** Groups of `size` values each exercising an edge, then random groups, `groups` in all. */
function edgeGroups(size: number, groups: number, seed: number): Float32Array {
  const random = seededRandom(seed)
  const f = (bits: number) => new Float32Array(new Uint32Array([bits]).buffer)[0]!
  const fill = (g: (i: number) => number) => Float32Array.from({length: size}, (_, i) => g(i))
  const list: Float32Array[] = [
    fill(() => 0),
    fill((i) => (i % 2 ? -0 : 0)),
    fill((i) => (i === 3 ? NaN : i - 7)),
    fill(() => NaN),
    fill((i) => (i === 0 ? Infinity : i)),
    fill((i) => (i === 1 ? -Infinity : i)),
    fill((i) => (i === 0 ? Infinity : i === 1 ? -Infinity : 0)),
    fill((i) => (i % 3 ? f(i + 1) : -f(i))), // f32 subnormals: d underflows or 1/d overflows
    fill((i) => f(0x00800000 + i) * (i % 2 ? 1 : -1)), // smallest normals
    fill((i) => (i === 0 ? 3e38 : i === 1 ? -3.4e38 : i * 1e37)), // near f32 max
    fill((i) => (i % 2 ? 127 : -127) * (i / size)), // Q8_0 codes near ±127
    fill((i) => (i === 0 ? 127 : i - 0.5)), // Q8_0 ties: x·1 = k + ½
    fill((i) => (i === 0 ? 15 : i === 1 ? 0 : (i % 15) + 0.5)), // MLX 4-bit ties: scale 1, bias 0
    fill((i) => (i === 0 ? -15 : (i % 15) - 14.5)), // min dominates, ties
    fill(() => 42.5), // constant group
    fill((i) => (i === 5 ? -1e-7 : 1e-9 * i)), // steps under SCALE_EPS
    fill((i) => 65504 - i), // f16 max region (the Q8_0 scale)
    fill((i) => (i === 0 ? 1e-6 : 0)), // scale rounds to an f16 subnormal
  ]
  const out = new Float32Array(size * groups)
  for (let g = 0; g < groups; g++) {
    const group = g < list.length ? list[g]! : fill(() => (random() - 0.5) * 10 ** (random() * 8 - 4))
    out.set(group, g * size)
  }
  return out
}

describe.skipIf(!k)('SIMD quantizers against the scalar reference', () => {
  it('Q8_0: edge blocks and random blocks, bit for bit', async () => {
    const {quantizeQ8_0, quantizeQ8_0Scalar} = await import('../src/quant/q8_0.js')
    const values = edgeGroups(32, 4096 + 64, 11) // more than one kernel chunk
    const got = quantizeQ8_0(values)
    const want = quantizeQ8_0Scalar(values)
    expect(got.length).toBe(want.length)
    const first = got.findIndex((b, i) => b !== want[i])
    expect(first === -1 ? 'identical' : `block ${Math.floor(first / 34)} byte ${first % 34}: ${got[first]} vs ${want[first]}`).toBe('identical')
  })

  it('MLX affine: every bit width and group size, edge groups and random groups, bit for bit', async () => {
    const {quantizeInto, quantizeIntoScalar} = await import('../src/quant/mlx-affine.js')
    for (const groupSize of [32, 64, 128]) {
      const values = edgeGroups(groupSize, 65536 / groupSize + 8, groupSize)
      const count = values.length
      for (const bits of [2, 3, 4, 5, 6, 8]) {
        const run = (fn: typeof quantizeInto) => {
          const packed = new Uint32Array((count * bits) / 32)
          const scales = new Float32Array(count / groupSize)
          const biases = new Float32Array(count / groupSize)
          fn(values, count, bits, groupSize, packed, scales, biases)
          return Buffer.concat([Buffer.from(packed.buffer), Buffer.from(scales.buffer), Buffer.from(biases.buffer)])
        }
        const got = run(quantizeInto)
        const want = run(quantizeIntoScalar)
        const first = got.findIndex((b, i) => b !== want[i])
        expect(first === -1 ? 'identical' : `bits ${bits} group ${groupSize}: byte ${first} of ${got.length}`).toBe('identical')
      }
    }
  })
})

describe('pooled casts in place', () => {
  it('an owned f32 → f16/bf16 cast task writes over its own input and returns that half, same bytes as castBytes', async () => {
    const {runTask} = await import('../src/pool/tasks.js')
    const {castBytes} = await import('../src/tensor/dtype.js')
    const random = seededRandom(3)
    for (const to of ['F16', 'BF16'] as const) {
      for (const n of [3, 1000, 65536 * 2 + 9]) {
        const values = Float32Array.from({length: n}, () => (random() - 0.5) * 1e5)
        const bytes = new Uint8Array(values.buffer)
        const want = Buffer.from(castBytes(bytes.slice(), 'F32', to))
        const got = runTask({kind: 'cast', bytes, from: 'F32', to, owned: true})
        expect(got.buffer).toBe(values.buffer)
        expect(got.byteLength).toBe(2 * n)
        expect(Buffer.from(got).equals(want)).toBe(true)
        // Not owned: the input is left as it was.
        const keep = new Uint8Array(new Float32Array(values.length).fill(1.5).buffer)
        const other = runTask({kind: 'cast', bytes: keep, from: 'F32', to})
        expect(other.buffer).not.toBe(keep.buffer)
        expect(new Float32Array(keep.buffer).every((v) => v === 1.5)).toBe(true)
      }
    }
  })
})
