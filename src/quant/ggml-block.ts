/**
 * The common shape of ggml's block types (Q4_0 … Q6_K): a row is a run of fixed-size blocks, each
 * a header (scales, mins) and packed codes, stored as one part `blocks` of raw block bytes. A type
 * supplies its quantizer, its dequantizer and how to read one element's code out of a block; this
 * module turns that into a `Scheme` (bits per weight, layout, shape check, exact comparison).
 */
import {UsageError} from '../errors.js'
import {f16BitsToF32, f32ToF16Bits} from '../tensor/dtype.js'
import {bytesEqual, type EncodingDiff, type Scheme} from './types.js'

/** The documented alternatives `compare` accepts for ggml blocks (docs/verify.md). */
export const GGML_ACCEPTED = {fma: 'ggml-fma'} as const

/** Store `v` as an IEEE half (round to nearest even), little-endian, at byte `o`: ggml's GGML_FP32_TO_FP16. */
export function putHalf(out: Uint8Array, o: number, v: number): void {
  const bits = f32ToF16Bits(v)
  out[o] = bits & 0xff
  out[o + 1] = bits >>> 8
}

/** The little-endian IEEE half at byte `o`, as f32. */
export function readHalf(b: Uint8Array, o: number): number {
  return f16BitsToF32(b[o]! | (b[o + 1]! << 8))
}

export interface GgmlBlockType {
  /** Scheme name, `gguf_<type>` (e.g. `gguf_q4_0`). */
  name: string
  /** ggml's type name (e.g. `Q4_0`). */
  type: string
  /** Values per block. */
  elements: number
  /** Bytes per block. */
  bytes: number
  /** Byte ranges [start, end) of a block that hold its scales and mins (reported as part `scales` when they differ). */
  scaleBytes: readonly (readonly [number, number])[]
  describe: string
  /** ggml's `quantize_row_<type>_ref` over whole blocks, into `out` (zeroed, of the blocks' size) when given. */
  quantize(values: Float32Array, out?: Uint8Array): Uint8Array
  /** ggml's `dequantize_row_<type>` over whole blocks. */
  dequantize(bytes: Uint8Array): Float32Array
  /** The integer code of element `j` of the block starting at byte `o` (for counting identical elements). */
  code(bytes: Uint8Array, o: number, j: number): number
  /**
   * The quantizer as a build of ggml that contracts `a*b + c` into fused multiply-adds computes it
   * (rule `ggml-fma`), where that changes blocks; `compare` runs it on differing blocks only.
   */
  quantizeFused?(values: Float32Array): Uint8Array
}

export function ggmlBlockScheme(t: GgmlBlockType): Scheme {
  return {
    name: t.name,
    describe: () => t.describe,
    bitsPerWeight: () => (t.bytes * 8) / t.elements,
    blockSize: () => t.elements,
    parts: (_params, cols) => [{name: 'blocks', dtype: 'U8', perRow: (cols / t.elements) * t.bytes}],
    check(params, cols) {
      if (Object.keys(params).length > 0) throw new UsageError('quantize.params', `${t.type} takes no parameters, got ${JSON.stringify(params)}`)
      if (cols % t.elements !== 0) throw new UsageError('quantize.shape', `${t.type} needs rows of whole ${t.elements}-value blocks, not ${cols} values`)
    },
    encode: (values) => ({blocks: t.quantize(values)}),
    encodeInto(values, rows, cols, _params, into) {
      // Zeroed first: a quantizer ORs some fields into its (fresh, zero) output.
      const blocks = into.blocks!.fill(0)
      t.quantize(values.subarray(0, rows * cols), blocks)
    },
    decode: (parts) => t.dequantize(parts.blocks!),
    compare: (expected, actual, source, rows, cols) => compareBlocks(t, expected.blocks!, actual.blocks!, source, rows, cols),
  }
}

/**
 * Blocks of one compare call the fused quantizer may reject before it is no longer tried: it is
 * scalar (~1 ms a super-block), and a file that is not the conversion differs everywhere; one
 * rejected block already fails the tensor, so past this its other blocks count as mismatches.
 */
const FUSED_TRIES = 8

/**
 * Block by block: identical blocks, and elements whose code and block header are identical. A block
 * of `b` that differs from `a` but is what the fused quantizer makes of its source values is
 * accepted under `ggml-fma` (tried until FUSED_TRIES blocks were not).
 */
function compareBlocks(t: GgmlBlockType, a: Uint8Array, b: Uint8Array, source: Float32Array, rows: number, cols: number): EncodingDiff {
  const perRow = cols / t.elements
  const diff: EncodingDiff = {elements: rows * cols, identicalElements: 0, blocks: rows * perRow, identicalBlocks: 0, accepted: {}, acceptedBlocks: []}
  let fusedMisses = 0
  for (let block = 0; block < rows * perRow; block++) {
    const o = block * t.bytes
    let sameBytes = true
    for (let k = 0; k < t.bytes; k++) {
      if (a[o + k] !== b[o + k]) {
        sameBytes = false
        break
      }
    }
    if (sameBytes) {
      diff.identicalBlocks++
      diff.identicalElements += t.elements
      continue
    }
    let headerSame = true
    for (const [start, end] of t.scaleBytes) for (let k = start; k < end; k++) if (a[o + k] !== b[o + k]) headerSame = false
    let firstCode = -1
    for (let j = 0; j < t.elements; j++) {
      if (t.code(a, o, j) === t.code(b, o, j)) {
        if (headerSame) diff.identicalElements++
      } else if (firstCode < 0) firstCode = j
    }
    if (t.quantizeFused && fusedMisses < FUSED_TRIES) {
      if (bytesEqual(t.quantizeFused(source.subarray(block * t.elements, (block + 1) * t.elements)), 0, b, o, t.bytes)) {
        diff.accepted[GGML_ACCEPTED.fma] = (diff.accepted[GGML_ACCEPTED.fma] ?? 0) + 1
        diff.acceptedBlocks.push(block)
        continue
      }
      fusedMisses++
    }
    if (!diff.first) {
      const g = block % perRow
      diff.first = {row: Math.floor(block / perRow), block: g, col: g * t.elements + Math.max(0, firstCode), part: headerSame ? 'blocks' : 'scales'}
    }
  }
  return diff
}
