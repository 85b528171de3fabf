/**
 * Element types and exact conversions between the float formats.
 *
 * Names follow safetensors (`F32`, `BF16`, ...). All multi-byte values are little-endian.
 */
import {FormatError} from '../errors.js'

export const DTYPES = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'U16', 'U32', 'U64', 'BOOL'] as const
export type DType = (typeof DTYPES)[number]

export const FLOAT_DTYPES = ['F32', 'F16', 'BF16'] as const
export type FloatDType = (typeof FLOAT_DTYPES)[number]

const SIZES: Record<DType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, U16: 2, U32: 4, U64: 8, BOOL: 1,
}

export function dtypeSize(dtype: DType): number {
  return SIZES[dtype]
}

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && (DTYPES as readonly string[]).includes(value)
}

export function isFloatDType(value: unknown): value is FloatDType {
  return typeof value === 'string' && (FLOAT_DTYPES as readonly string[]).includes(value)
}

/** User-facing spellings accepted by `--dtype` and config files. */
const ALIASES: Record<string, FloatDType> = {
  f32: 'F32', fp32: 'F32', float32: 'F32', float: 'F32',
  f16: 'F16', fp16: 'F16', float16: 'F16', half: 'F16',
  bf16: 'BF16', bfloat16: 'BF16',
}

export function parseFloatDType(text: string): FloatDType {
  const dtype = ALIASES[text.toLowerCase()]
  if (!dtype) throw new FormatError('dtype.unknown', `unknown dtype "${text}" (expected f32, f16 or bf16)`)
  return dtype
}

/** The `torch_dtype` string Hugging Face writes for a float dtype. */
export function torchDTypeName(dtype: FloatDType): 'float32' | 'float16' | 'bfloat16' {
  return dtype === 'F32' ? 'float32' : dtype === 'F16' ? 'float16' : 'bfloat16'
}

// ---- scalar conversions --------------------------------------------------------------------

const f32Scratch = new Float32Array(1)
const u32Scratch = new Uint32Array(f32Scratch.buffer)

/** f32 → bf16 bits, round to nearest even; NaN stays a (quiet) NaN with its sign. */
export function f32ToBf16Bits(value: number): number {
  f32Scratch[0] = value
  const bits = u32Scratch[0]!
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) {
    return ((bits >>> 16) | 0x0040) & 0xffff
  }
  const rounded = bits + 0x7fff + ((bits >>> 16) & 1)
  return (rounded >>> 16) & 0xffff
}

export function bf16BitsToF32(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16
  return f32Scratch[0]!
}

/** f32 → IEEE half bits, round to nearest even, with subnormals, overflow to ±Inf, NaN kept. */
export function f32ToF16Bits(value: number): number {
  f32Scratch[0] = value
  const x = u32Scratch[0]!
  const sign = (x >>> 16) & 0x8000
  const exp = (x >>> 23) & 0xff
  let mant = x & 0x7fffff
  if (exp === 0xff) {
    if (mant === 0) return sign | 0x7c00
    return sign | 0x7e00 | (mant >>> 13)
  }
  const e = exp - 127 + 15
  if (e >= 0x1f) return sign | 0x7c00
  if (e <= 0) {
    // Subnormal half (or zero): shift the implicit-one mantissa right, rounding to nearest even.
    if (e < -10) return sign
    mant |= 0x800000
    const shift = 14 - e
    const half = 1 << (shift - 1)
    const rest = mant & ((1 << shift) - 1)
    let result = mant >>> shift
    if (rest > half || (rest === half && (result & 1) === 1)) result += 1
    return sign | result
  }
  let result = (e << 10) | (mant >>> 13)
  const rest = mant & 0x1fff
  if (rest > 0x1000 || (rest === 0x1000 && (result & 1) === 1)) result += 1 // may carry into exponent: correct
  return sign | result
}

const F16_TABLE = (() => {
  const table = new Float32Array(65536)
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1
    const exp = (h >>> 10) & 0x1f
    const mant = h & 0x3ff
    if (exp === 0) table[h] = sign * mant * 2 ** -24
    else if (exp === 0x1f) {
      if (mant === 0) table[h] = sign * Infinity
      else {
        u32Scratch[0] = ((h & 0x8000) << 16) | 0x7f800000 | (mant << 13)
        table[h] = f32Scratch[0]!
      }
    } else table[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15)
  }
  return table
})()

export function f16BitsToF32(bits: number): number {
  return F16_TABLE[bits & 0xffff]!
}

// ---- bulk conversions ----------------------------------------------------------------------

function view<T extends Float32Array | Uint16Array | Float64Array>(
  ctor: new (buffer: ArrayBufferLike, byteOffset: number, length: number) => T,
  bytes: Uint8Array,
  elementSize: number,
): T {
  if (bytes.byteOffset % elementSize === 0) return new ctor(bytes.buffer, bytes.byteOffset, bytes.byteLength / elementSize)
  const copy = new Uint8Array(bytes.byteLength)
  copy.set(bytes)
  return new ctor(copy.buffer, 0, bytes.byteLength / elementSize)
}

/** Decode float bytes (F32, F16, BF16, F64) into a Float32Array. */
export function toFloat32(bytes: Uint8Array, dtype: DType): Float32Array {
  switch (dtype) {
    case 'F32':
      return view(Float32Array, bytes, 4)
    case 'F16': {
      const src = view(Uint16Array, bytes, 2)
      const out = new Float32Array(src.length)
      for (let i = 0; i < src.length; i++) out[i] = F16_TABLE[src[i]!]!
      return out
    }
    case 'BF16': {
      const src = view(Uint16Array, bytes, 2)
      const out = new Float32Array(src.length)
      const outBits = new Uint32Array(out.buffer)
      for (let i = 0; i < src.length; i++) outBits[i] = src[i]! << 16
      return out
    }
    case 'F64':
      return Float32Array.from(view(Float64Array, bytes, 8))
    default:
      throw new FormatError('dtype.not_float', `cannot read ${dtype} data as floats`)
  }
}

/** Encode f32 values as `dtype` bytes (rounding to nearest even for 16-bit types). */
export function fromFloat32(values: Float32Array, dtype: FloatDType): Uint8Array {
  switch (dtype) {
    case 'F32':
      return new Uint8Array(values.buffer, values.byteOffset, values.byteLength)
    case 'F16': {
      const out = new Uint16Array(values.length)
      for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i]!)
      return new Uint8Array(out.buffer)
    }
    case 'BF16': {
      const bits = new Uint32Array(values.buffer, values.byteOffset, values.length)
      const out = new Uint16Array(values.length)
      for (let i = 0; i < values.length; i++) {
        const b = bits[i]!
        if ((b & 0x7f800000) === 0x7f800000 && (b & 0x007fffff) !== 0) out[i] = ((b >>> 16) | 0x0040) & 0xffff
        else out[i] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff
      }
      return new Uint8Array(out.buffer)
    }
  }
}

/** Convert float bytes between dtypes. Identity when equal (returns the same bytes). */
export function castBytes(bytes: Uint8Array, from: DType, to: FloatDType): Uint8Array {
  if (from === to) return bytes
  const f32 = toFloat32(bytes, from)
  // toFloat32 may return a view of `bytes`; fromFloat32 never writes to its input.
  return fromFloat32(f32, to)
}
