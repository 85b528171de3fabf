/**
 * The engine's weight path without intermediate bytes: `readRowsF32Into` (src/tensor/record.ts),
 * the MLX reader's row reader and `dequantizeRoundedInto` (a table per group) must give exactly
 * what `toFloat32(record.read())` / `dequantizeRows` + `roundIntoScalar` give, bit for bit, on
 * every bit width, group size and scale dtype, edge values of scales and biases included.
 */
import {describe, expect, it} from 'vitest'
import {dequantizedRecord, quantizedRecords} from '../src/formats/mlx/quantize.js'
import {dequantizeRoundedInto, dequantizeRows, MLX_AFFINE, QUANT_BITS, QUANT_GROUP_SIZES, roundIntoScalar} from '../src/quant/mlx-affine.js'
import {BF16_SCHEME, F32_SCHEME} from '../src/quant/float.js'
import {castRecord, f32Record, memoryRecord, readRowsF32Into, renamed, type TensorRecord} from '../src/tensor/record.js'
import {type FloatDType, fromFloat32, toFloat32} from '../src/tensor/dtype.js'

function bitsOf(values: Float32Array): Uint32Array {
  return new Uint32Array(values.buffer, values.byteOffset, values.length)
}

/**
 * bitsOf with every NaN as 0x7fc00000. A NaN made by the arithmetic (an Inf scale times code 0) has no
 * sign IEEE 754 defines, and V8 gives it either sign depending on how the loop was compiled (x86's
 * default NaN is negative, a constant-folded one positive): the same expression in two functions
 * can differ there. Every non-NaN value is compared bit for bit.
 */
function bitsOrNaN(values: Float32Array): Uint32Array {
  return bitsOf(values).map((b) => ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0 ? 0x7fc00000 : b))
}

/** A deterministic xorshift stream of 32-bit words. */
function words(n: number, seed: number): Uint32Array {
  let s = seed >>> 0 || 1
  return Uint32Array.from({length: n}, () => {
    s ^= s << 13; s >>>= 0
    s ^= s >>> 17
    s ^= s << 5; s >>>= 0
    return s
  })
}

/** Scales/biases: ordinary values and the edges (±0, subnormals, f16 max, ±Inf, NaN, ties after the multiply-add). */
function params(n: number, seed: number, dtype: FloatDType): Float32Array {
  const edges = [0, -0, 1e-7, -1e-7, 6e-8, 5.96e-8, 6.1e-5, 65504, -65504, 1e30, Infinity, -Infinity, Number.NaN, 0.1, -3.75, 1 / 3, 2049, 1.0009765625]
  const w = words(n, seed)
  const v = Float32Array.from({length: n}, (_, i) => i % 3 === 0 ? edges[(w[i]! >>> 8) % edges.length]! : ((w[i]! / 2 ** 32) - 0.5) * 2 ** ((w[i]! % 24) - 12))
  return toFloat32(fromFloat32(v, dtype), dtype)
}

describe('dequantizeRoundedInto', () => {
  for (const bits of QUANT_BITS) {
    for (const groupSize of QUANT_GROUP_SIZES) {
      it(`${bits}-bit, group ${groupSize}: = dequantizeRows then round, bit for bit (F32, F16, BF16 scales; tables rounded one by one and in a SIMD pass)`, () => {
        // 5 rows: fewer than 256 table values (rounded in JS); 64 rows: every table through the SIMD pass.
        for (const rows of [5, 64]) {
        const cols = groupSize * 3
        const packed = words((rows * cols * bits) / 32, bits * 1000 + groupSize + rows)
        for (const dtype of ['F32', 'F16', 'BF16'] as const) {
          const s = params(rows * 3, bits + groupSize, dtype)
          const b = params(rows * 3, bits * groupSize, dtype)
          const expected = dequantizeRows(packed, s, b, rows, cols, bits, groupSize)
          if (dtype !== 'F32') roundIntoScalar(expected, dtype, expected)
          const out = new Float32Array(rows * cols).fill(7)
          dequantizeRoundedInto(packed, s, b, rows, cols, bits, groupSize, dtype, out)
          expect(bitsOrNaN(out)).toEqual(bitsOrNaN(expected))
        }
        }
      })
    }
  }
})

describe('readRowsF32Into', () => {
  const rows = 48
  const cols = 128
  const values = Float32Array.from({length: rows * cols}, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)))
  const source = f32Record('w', [rows, cols], values)

  async function rowsOf(record: TensorRecord, r0: number, r1: number): Promise<Float32Array> {
    const out = new Float32Array((r1 - r0) * cols).fill(Number.NaN)
    await readRowsF32Into(record, out, r0)
    return out
  }

  it('MLX dequantized records: the row reader = toFloat32(read()), any row range, every bit width, F16/BF16/F32 scales', async () => {
    for (const bits of QUANT_BITS) {
      for (const dtype of ['F16', 'BF16', 'F32'] as const) {
        const q = quantizedRecords(source, 'x', {bits, groupSize: 64}, dtype)
        const deq = dequantizedRecord('w', q.weight, q.scales, q.biases, {bits, groupSize: 64})
        const whole = toFloat32(await deq.read(), deq.dtype)
        for (const [r0, r1] of [[0, rows], [3, 17], [47, 48]] as const) {
          expect(bitsOf(await rowsOf(deq, r0, r1))).toEqual(bitsOf(whole.subarray(r0 * cols, r1 * cols)))
        }
        // A renamed record keeps the row reader; its values are the same.
        expect(bitsOf(await rowsOf(renamed(deq, 'v'), 5, 9))).toEqual(bitsOf(whole.subarray(5 * cols, 9 * cols)))
      }
    }
  })

  it('float records without a row reader: F32, F16 and BF16 widened exactly, with and without a byte reader', async () => {
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      const bytes = fromFloat32(values, dtype)
      const plain = memoryRecord('w', dtype, [rows, cols], bytes)
      const cast = castRecord(source, dtype)
      for (const record of [plain, cast]) {
        expect(bitsOf(await rowsOf(record, 2, 30))).toEqual(bitsOf(toFloat32(bytes, dtype).subarray(2 * cols, 30 * cols)))
      }
    }
  })

  it('refuses a target that is not whole rows inside the tensor', async () => {
    await expect(readRowsF32Into(source, new Float32Array(cols + 1), 0)).rejects.toThrow(/not whole rows/)
    await expect(readRowsF32Into(source, new Float32Array(2 * cols), rows - 1)).rejects.toThrow(/not whole rows/)
  })
})

describe('decodeInto', () => {
  it('MLX affine and the float schemes: decodeInto = decode', () => {
    const rows = 4
    const cols = 128
    const values = Float32Array.from({length: rows * cols}, (_, i) => Math.cos(i * 0.11) * (i % 5))
    for (const params of [{bits: 4, group_size: 64, dtype: 'F16'}, {bits: 3, group_size: 32, dtype: 'BF16'}, {bits: 8, group_size: 128, dtype: 'F32'}] as const) {
      const parts = MLX_AFFINE.encode(values, rows, cols, params)
      const out = new Float32Array(rows * cols)
      MLX_AFFINE.decodeInto!(parts, rows, cols, params, out)
      expect(bitsOf(out)).toEqual(bitsOf(MLX_AFFINE.decode(parts, rows, cols, params)))
    }
    for (const scheme of [F32_SCHEME, BF16_SCHEME]) {
      const parts = scheme.encode(values, rows, cols, {})
      const out = new Float32Array(rows * cols)
      scheme.decodeInto!(parts, rows, cols, {}, out)
      expect(bitsOf(out)).toEqual(bitsOf(scheme.decode(parts, rows, cols, {})))
    }
  })
})

describe('quantizeRows with round', () => {
  it('= quantizeRows of the values rounded first, on the SIMD path (≥ 256 values) and the scalar one, edge values included', async () => {
    const {quantizeRows, roundIntoScalar: round} = await import('../src/quant/mlx-affine.js')
    for (const dtype of ['F16', 'BF16'] as const) {
      for (const [rows, cols] of [[6, 256], [1, 64]] as const) {
        const values = params(rows * cols, rows + cols, 'F32').map((v, i) => (Number.isFinite(v) ? v : i % 7) * (i % 3 === 0 ? 70000 : 1))
        const roundedValues = new Float32Array(values.length)
        round(values, dtype, roundedValues)
        for (const bits of [2, 3, 4, 8]) {
          const a = quantizeRows(roundedValues, rows, cols, bits, 64)
          const b = quantizeRows(values, rows, cols, bits, 64, dtype)
          expect(b.packed).toEqual(a.packed)
          expect(bitsOf(b.scales)).toEqual(bitsOf(a.scales))
          expect(bitsOf(b.biases)).toEqual(bitsOf(a.biases))
        }
      }
    }
  })
})
