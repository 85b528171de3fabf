import {execFileSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {FormatError} from '../src/errors.js'
import {
  bf16BitsToF32, castBytes, castInto, dtypeSize, f16BitsToF32, f32BitsToBf16Bits, f32BitsToF16Bits, f32ToBf16Bits, f32ToF16Bits,
  fromFloat32, parseFloatDType, toFloat32,
} from '../src/tensor/dtype.js'

const PYTHON = '/usr/bin/python3'
const tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-dtype-'))
afterAll(() => rmSync(tmp, {recursive: true, force: true}))

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
const ALL16 = Uint16Array.from({length: 65536}, (_, i) => i)
const bytesOf = (a: Uint16Array | Uint32Array | Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
const f32FromBits = (bits: number) => new Float32Array(Uint32Array.of(bits).buffer)[0]!
const bitsOfF32 = (v: number) => new Uint32Array(Float32Array.of(v).buffer)[0]!
const isF16NaN = (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0
const isBf16NaN = (h: number) => (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0
const isF32NaN = (b: number) => (b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0

/** IEEE half decoded from its definition, independent of the implementation's table. */
function halfByDefinition(h: number): number {
  const sign = h & 0x8000 ? -1 : 1
  const exp = (h >>> 10) & 0x1f
  const mant = h & 0x3ff
  if (exp === 0) return sign * mant * 2 ** -24
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN
  return sign * (1 + mant / 1024) * 2 ** (exp - 15)
}

describe('dtype sizes and names', () => {
  it('has the safetensors element sizes', () => {
    expect(['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'U16', 'U32', 'U64', 'BOOL'].map((d) => dtypeSize(d as never)))
      .toEqual([8, 4, 2, 2, 8, 4, 2, 1, 1, 2, 4, 8, 1])
  })
  it('parses the user spellings of --dtype and rejects others', () => {
    expect(['f32', 'FP32', 'float32', 'f16', 'half', 'float16', 'bf16', 'BFloat16'].map(parseFloatDType))
      .toEqual(['F32', 'F32', 'F32', 'F16', 'F16', 'F16', 'BF16', 'BF16'])
    expect(() => parseFloatDType('f8')).toThrow(FormatError)
    expect(() => parseFloatDType('f8')).toThrow(/unknown dtype "f8"/)
  })
})

describe('f16: all 65,536 bit patterns', () => {
  it('decodes every pattern to the value its definition gives', () => {
    for (let h = 0; h < 65536; h++) {
      const want = halfByDefinition(h)
      const got = f16BitsToF32(h)
      if (Number.isNaN(want)) expect(Number.isNaN(got)).toBe(true)
      else if (got !== want || Object.is(got, -0) !== Object.is(want, -0)) throw new Error(`f16 0x${h.toString(16)}: ${got} != ${want}`)
    }
  })
  it('16 → 32 → 16 is the identity, bit for bit (bulk path, NaN payloads included)', () => {
    const f32 = castBytes(bytesOf(ALL16), 'F16', 'F32')
    expect(f32.byteLength).toBe(65536 * 4)
    const back = new Uint16Array(castBytes(f32, 'F32', 'F16').slice().buffer)
    let mismatches = 0
    for (let h = 0; h < 65536; h++) if (back[h] !== h) mismatches++
    expect(mismatches).toBe(0)
  })
  it('16 → 32 → 16 through the scalar functions: identity, NaN stays NaN with its sign', () => {
    let nans = 0
    for (let h = 0; h < 65536; h++) {
      const back = f32ToF16Bits(f16BitsToF32(h))
      if (isF16NaN(h)) {
        nans++
        expect(isF16NaN(back)).toBe(true)
        expect(back & 0x8000).toBe(h & 0x8000)
      } else if (back !== h) throw new Error(`f16 0x${h.toString(16)} came back as 0x${back.toString(16)}`)
    }
    expect(nans).toBe(2 * 1023)
  })
})

describe('bf16: all 65,536 bit patterns', () => {
  it('decodes every pattern as the top half of an f32', () => {
    const f32 = new Uint32Array(castBytes(bytesOf(ALL16), 'BF16', 'F32').slice().buffer)
    for (let h = 0; h < 65536; h++) if (f32[h] !== h << 16 >>> 0) throw new Error(`bf16 0x${h.toString(16)}`)
    for (let h = 0; h < 65536; h += 257) {
      const v = bf16BitsToF32(h)
      if (isBf16NaN(h)) expect(Number.isNaN(v)).toBe(true)
      else expect(v).toBe(f32FromBits(h << 16 >>> 0))
    }
  })
  it('16 → 32 → 16 is the identity, bit for bit (bulk path, NaN payloads included)', () => {
    const back = new Uint16Array(castBytes(castBytes(bytesOf(ALL16), 'BF16', 'F32'), 'F32', 'BF16').slice().buffer)
    let mismatches = 0
    for (let h = 0; h < 65536; h++) if (back[h] !== h) mismatches++
    expect(mismatches).toBe(0)
  })
  it('16 → 32 → 16 through the scalar functions; NaN stays NaN with its sign', () => {
    for (let h = 0; h < 65536; h++) {
      const back = f32ToBf16Bits(bf16BitsToF32(h))
      if (isBf16NaN(h)) {
        expect(isBf16NaN(back)).toBe(true)
        expect(back & 0x8000).toBe(h & 0x8000)
      } else if (back !== h) throw new Error(`bf16 0x${h.toString(16)} came back as 0x${back.toString(16)}`)
    }
  })
  it('f16 ↔ bf16 casts go through exact f32', () => {
    const values = Uint16Array.of(0x3c00, 0xc000, 0x0001, 0x7bff, 0x7c00, 0x0000, 0x8000)
    const bf16 = new Uint16Array(castBytes(bytesOf(values), 'F16', 'BF16').slice().buffer)
    // 1, -2, 2^-24, 65504 → bf16 rounds 65504 (0x477fe000) to 0x4780 (65536), +Inf, +0, -0
    expect([...bf16].map((b) => b.toString(16))).toEqual(['3f80', 'c000', '3380', '4780', '7f80', '0', '8000'])
  })
})

describe('f32 → f16 rounding (round to nearest even)', () => {
  const cases: [string, number, number][] = [
    ['1', 1, 0x3c00],
    ['-2', -2, 0xc000],
    ['+0', 0, 0x0000],
    ['-0', -0, 0x8000],
    ['largest half 65504', 65504, 0x7bff],
    ['just below the overflow tie rounds down', 65519.99609375, 0x7bff],
    ['65520 ties to even → +Inf', 65520, 0x7c00],
    ['overflow → +Inf', 1e10, 0x7c00],
    ['overflow → -Inf', -1e10, 0xfc00],
    ['+Inf', Infinity, 0x7c00],
    ['-Inf', -Infinity, 0xfc00],
    ['tie 1 + 2^-11 → 1 (even)', 1 + 2 ** -11, 0x3c00],
    ['tie 1 + 3·2^-11 → 1 + 2^-9 (even)', 1 + 3 * 2 ** -11, 0x3c02],
    ['above the tie rounds up', 1 + 2 ** -11 + 2 ** -20, 0x3c01],
    ['smallest normal 2^-14', 2 ** -14, 0x0400],
    ['largest subnormal', 1023 * 2 ** -24, 0x03ff],
    ['rounds up into the smallest normal', 2 ** -14 - 2 ** -26, 0x0400],
    ['smallest subnormal 2^-24', 2 ** -24, 0x0001],
    ['2^-25 ties to even → 0', 2 ** -25, 0x0000],
    ['-2^-25 ties to even → -0', -(2 ** -25), 0x8000],
    ['just above 2^-25 → smallest subnormal', 2 ** -25 * (1 + 2 ** -23), 0x0001],
    ['3·2^-25 ties to even → 2·2^-24', 3 * 2 ** -25, 0x0002],
    ['5·2^-25 ties to even → 2·2^-24', 5 * 2 ** -25, 0x0002],
    ['far underflow → 0', 1e-30, 0x0000],
    ['f32 subnormal → 0', f32FromBits(0x00000001), 0x0000],
  ]
  for (const [label, value, bits] of cases) {
    it(label, () => {
      expect(f32ToF16Bits(value)).toBe(bits)
      expect(f32BitsToF16Bits(bitsOfF32(value))).toBe(bits)
      expect(new Uint16Array(fromFloat32(Float32Array.of(value), 'F16').slice().buffer)[0]).toBe(bits)
    })
  }
  it('NaN stays NaN (quiet, signalling, negative)', () => {
    for (const nan of [0x7fc00000, 0x7f800001, 0xffc00000, 0x7fffffff, 0xff802000]) {
      const h = f32BitsToF16Bits(nan)
      expect(isF16NaN(h)).toBe(true)
      expect(h & 0x8000).toBe((nan >>> 16) & 0x8000)
    }
    expect(isF16NaN(f32ToF16Bits(NaN))).toBe(true)
  })
})

describe('f32 → bf16 rounding (round to nearest even)', () => {
  const cases: [string, number, number][] = [
    ['1', 0x3f800000, 0x3f80],
    ['tie 1 + 2^-8 → 1 (even)', 0x3f808000, 0x3f80],
    ['tie 1 + 3·2^-8 → 1 + 2^-6 (even)', 0x3f818000, 0x3f82],
    ['above the tie rounds up', 0x3f808001, 0x3f81],
    ['below the tie rounds down', 0x3f807fff, 0x3f80],
    ['-0', 0x80000000, 0x8000],
    ['largest f32 → +Inf', 0x7f7fffff, 0x7f80],
    ['largest bf16 stays', 0x7f7f0000, 0x7f7f],
    ['tie below the largest bf16 → even', 0x7f7e8000, 0x7f7e],
    ['tie at the largest bf16 → +Inf', 0x7f7f8000, 0x7f80],
    ['-Inf', 0xff800000, 0xff80],
    ['+Inf', 0x7f800000, 0x7f80],
    ['f32 subnormal rounds down to 0', 0x00000001, 0x0000],
    ['f32 subnormal tie → 0 (even)', 0x00008000, 0x0000],
    ['f32 subnormal tie → 2 (even)', 0x00018000, 0x0002],
    ['f32 subnormal rounds up into a bf16 subnormal', 0x00008001, 0x0001],
    ['largest f32 subnormal → smallest normal', 0x007fffff, 0x0080],
  ]
  for (const [label, bits, want] of cases) {
    it(label, () => {
      expect(f32BitsToBf16Bits(bits)).toBe(want)
      expect(f32ToBf16Bits(f32FromBits(bits))).toBe(want)
      expect(new Uint16Array(fromFloat32(new Float32Array(Uint32Array.of(bits).buffer), 'BF16').slice().buffer)[0]).toBe(want)
    })
  }
  it('NaN stays NaN (quiet, signalling, negative)', () => {
    for (const nan of [0x7fc00000, 0x7f800001, 0xffc00000, 0x7fffffff, 0xff800100]) {
      const h = f32BitsToBf16Bits(nan)
      expect(isBf16NaN(h)).toBe(true)
      expect(h & 0x8000).toBe((nan >>> 16) & 0x8000)
    }
  })
})

describe('cross-check against numpy (f16) and torch (bf16)', () => {
  /** Random bit patterns plus the ones where rounding is decided: ties, subnormals, overflow, NaN. */
  function testValues(): Uint32Array {
    let state = 0x12345678
    const rand = () => {
      state ^= state << 13
      state ^= state >>> 17
      state ^= state << 5
      return state >>> 0
    }
    const out: number[] = []
    for (let i = 0; i < 60000; i++) out.push(rand())
    for (let i = 0; i < 20000; i++) {
      const r = rand()
      // f16 ties (low 13 bits exactly half) and neighbours, across the half range incl. subnormals
      const exp = 100 + (r % 60)
      const base = ((r & 0x80000000) | (exp << 23) | (rand() & 0x7fe000)) >>> 0
      out.push(base | 0x1000, base | 0x0fff, base | 0x1001)
      // bf16 ties and neighbours at any exponent
      const b = (rand() & 0xffff0000) >>> 0
      out.push(b | 0x8000, b | 0x7fff, b | 0x8001)
    }
    for (let e = 0; e < 256; e++) for (const m of [0, 1, 0x1000, 0x8000, 0x7fffff, 0x400000, 0x3ff000]) out.push(((e << 23) | m) >>> 0, ((1 << 31) | (e << 23) | m) >>> 0)
    out.push(0x477fefff, 0x477ff000, 0x477ff001, 0x33000000, 0x33000001, 0x33400000, 0x387fc000, 0x7f7fffff, 0x7f7f8000)
    return Uint32Array.from(out)
  }

  it('matches bit for bit on random and edge values (NaN: both NaN)', () => {
    const values = testValues()
    const input = path.join(tmp, 'in.f32')
    writeFileSync(input, bytesOf(values))
    execFileSync(PYTHON, [path.join(import.meta.dirname, 'python', 'dtype_ref.py'), input, path.join(tmp, 'f16'), path.join(tmp, 'bf16')])
    const refF16 = new Uint16Array(readFileSync(path.join(tmp, 'f16')).buffer.slice(0))
    const refBf16 = new Uint16Array(readFileSync(path.join(tmp, 'bf16')).buffer.slice(0))
    expect(refF16.length).toBe(values.length)
    const f32 = new Float32Array(values.buffer)
    const ourF16 = new Uint16Array(fromFloat32(f32, 'F16').slice().buffer)
    const ourBf16 = new Uint16Array(fromFloat32(f32, 'BF16').slice().buffer)
    let checked = 0
    let nans = 0
    for (let i = 0; i < values.length; i++) {
      if (isF32NaN(values[i]!)) {
        nans++
        expect(isF16NaN(ourF16[i]!) && isF16NaN(refF16[i]!)).toBe(true)
        expect(isBf16NaN(ourBf16[i]!) && isBf16NaN(refBf16[i]!)).toBe(true)
        continue
      }
      if (ourF16[i] !== refF16[i] || f32BitsToF16Bits(values[i]!) !== refF16[i]) {
        throw new Error(`f16 of 0x${values[i]!.toString(16)}: ours 0x${ourF16[i]!.toString(16)}, numpy 0x${refF16[i]!.toString(16)}`)
      }
      if (ourBf16[i] !== refBf16[i] || f32BitsToBf16Bits(values[i]!) !== refBf16[i]) {
        throw new Error(`bf16 of 0x${values[i]!.toString(16)}: ours 0x${ourBf16[i]!.toString(16)}, torch 0x${refBf16[i]!.toString(16)}`)
      }
      checked++
    }
    expect(checked).toBeGreaterThan(150000)
    expect(nans).toBeGreaterThan(100)
  })

  it('decodes all 65,536 f16 patterns exactly as numpy does (NaN payloads included)', () => {
    const input = path.join(tmp, 'all.f16')
    writeFileSync(input, bytesOf(ALL16))
    const script = 'import sys, numpy as np; np.fromfile(sys.argv[1], dtype="<f2").astype("<f4").tofile(sys.argv[2])'
    execFileSync(PYTHON, ['-c', script, input, path.join(tmp, 'all.f32')])
    const ref = new Uint32Array(readFileSync(path.join(tmp, 'all.f32')).buffer.slice(0))
    const ours = new Uint32Array(toFloat32(bytesOf(ALL16), 'F16').buffer)
    let mismatches = 0
    for (let h = 0; h < 65536; h++) if (ours[h] !== ref[h]) mismatches++
    expect(mismatches).toBe(0)
  })
})

describe('bulk helpers', () => {
  it('reads unaligned byte views correctly', () => {
    const buf = new Uint8Array(13)
    buf.set(bytesOf(Float32Array.of(1.5, -2.25, 3)), 1)
    expect([...toFloat32(buf.subarray(1), 'F32')]).toEqual([1.5, -2.25, 3])
    const h = new Uint8Array(7)
    h.set(bytesOf(Uint16Array.of(0x3c00, 0xc100, 0x3555)), 1)
    expect([...toFloat32(h.subarray(1), 'F16')]).toEqual([1, -2.5, f16BitsToF32(0x3555)])
  })
  it('widens F64 and refuses integer data as floats', () => {
    expect([...toFloat32(new Uint8Array(Float64Array.of(0.5, 1e300).buffer), 'F64')]).toEqual([0.5, Infinity])
    expect(() => toFloat32(new Uint8Array(8), 'I64')).toThrow(/cannot read I64 data as floats/)
  })
  it('castInto writes the same bits as castBytes, at aligned and unaligned output offsets, odd lengths included', () => {
    const bits = Uint32Array.from({length: 1001}, (_, i) => (Math.imul(i + 7, 2654435761) ^ (i % 13 === 0 ? 0x7f800001 : 0)) >>> 0)
    bits[500] = 0x7fc00000
    bits[501] = 0x3f808000
    const src = bytesOf(bits)
    for (const to of ['BF16', 'F16'] as const) {
      const want = castBytes(src, 'F32', to)
      for (const offset of [0, 2, 4]) {
        const out = new Uint8Array(2 * bits.length + 8)
        castInto(src, 'F32', to, out.subarray(offset, offset + 2 * bits.length))
        expect(sha(out.subarray(offset, offset + 2 * bits.length))).toBe(sha(want))
      }
    }
    const back = new Uint8Array(4 * bits.length)
    castInto(castBytes(src, 'F32', 'BF16'), 'BF16', 'F32', back)
    expect(sha(back)).toBe(sha(castBytes(castBytes(src, 'F32', 'BF16'), 'BF16', 'F32')))
    expect(() => castInto(src, 'F32', 'BF16', new Uint8Array(10))).toThrow(RangeError)
  })
  it('castBytes between equal dtypes returns the same bytes', () => {
    const b = bytesOf(Float32Array.of(1, 2))
    expect(castBytes(b, 'F32', 'F32')).toBe(b)
  })
})
