/**
 * The float "schemes": values stored as f32, f16 or bf16. Encoding is the cast (round to nearest
 * even, src/tensor/dtype.ts); decoding widens to f32 exactly. Identity is bit identity of the
 * stored elements. One part, `data`; a block is a row.
 */
import {castInto, dtypeSize, type FloatDType, fromFloat32, toFloat32} from '../tensor/dtype.js'
import {type EncodingDiff, type Scheme} from './types.js'

function floatScheme(name: string, dtype: FloatDType): Scheme {
  const size = dtypeSize(dtype)
  return {
    name,
    describe: () => dtype,
    bitsPerWeight: () => size * 8,
    blockSize: (_params, cols) => cols,
    parts: (_params, cols) => [{name: 'data', dtype, perRow: cols}],
    check: () => undefined,
    encode: (values) => ({data: fromFloat32(values, dtype)}),
    decode(parts) {
      const values = toFloat32(parts.data!, dtype)
      return values.buffer === parts.data!.buffer ? values.slice() : values
    },
    decodeInto(parts, _rows, _cols, _params, out) {
      castInto(parts.data!, dtype, 'F32', new Uint8Array(out.buffer, out.byteOffset, out.byteLength))
    },
    compare(expected, actual, _source, rows, cols): EncodingDiff {
      const a = expected.data!
      const b = actual.data!
      const diff: EncodingDiff = {elements: rows * cols, identicalElements: 0, blocks: rows, identicalBlocks: 0, accepted: {}, acceptedBlocks: []}
      for (let r = 0; r < rows; r++) {
        let rowSame = true
        for (let c = 0; c < cols; c++) {
          const o = (r * cols + c) * size
          let same = true
          for (let k = 0; k < size; k++) if (a[o + k] !== b[o + k]) same = false
          if (same) diff.identicalElements++
          else {
            rowSame = false
            diff.first ??= {row: r, block: 0, col: c, part: 'data'}
          }
        }
        if (rowSame) diff.identicalBlocks++
      }
      return diff
    },
  }
}

export const F32_SCHEME = floatScheme('f32', 'F32')
export const F16_SCHEME = floatScheme('f16', 'F16')
export const BF16_SCHEME = floatScheme('bf16', 'BF16')

/** The scheme of a tensor stored as plain floats of `dtype`. */
export function floatSchemeName(dtype: FloatDType): 'f32' | 'f16' | 'bf16' {
  return dtype === 'F32' ? 'f32' : dtype === 'F16' ? 'f16' : 'bf16'
}
