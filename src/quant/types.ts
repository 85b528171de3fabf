/**
 * The contract every storage scheme implements: how f32 source values become stored parts (the
 * deterministic transformation a writer applies), how a runtime reads them back, and how two
 * encodings of the same rows are compared for the exact check of `verify`.
 *
 * Every tensor is seen as a matrix [rows, cols] (a 1-D tensor is one row). An encoding is a set of
 * named parts, each a little-endian byte array whose leading dimension is the rows: the same
 * layout the PyTorch reference (src/verify/python/quant_ref.py) uses under the same scheme name.
 */
import {type DType, type FloatDType} from '../tensor/dtype.js'

/** Parts of an encoding of whole rows, by part name (`data`; `weight`/`scales`/`biases`; `blocks`). */
export type Encoded = Record<string, Uint8Array>

/** Scheme parameters as plain JSON (they travel to the Python reference unchanged). */
export interface SchemeParams {
  bits?: number
  group_size?: number
  dtype?: FloatDType
}

export interface PartLayout {
  name: string
  dtype: DType
  perRow: number
}

/** Where two encodings of the same rows first differ. */
export interface FirstDifference {
  /** Row within the compared rows. */
  row: number
  /** Block (group) within the row. */
  block: number
  /** First differing element (column) of that block. */
  col: number
  /** Which part differs first: codes (`weight`/`blocks`), `scales`, `biases`, or `data`. */
  part: string
}

/** The comparison of an expected encoding with an actual one, over some rows. */
export interface EncodingDiff {
  /** Values compared (rows × cols). */
  elements: number
  /** Values whose code (or float bits) is identical. */
  identicalElements: number
  /** Blocks compared (a quantization group / block; for float schemes a row). */
  blocks: number
  /** Blocks identical in every part. */
  identicalBlocks: number
  /** Differing blocks accepted under a documented rule, by rule name. */
  accepted: Record<string, number>
  /** Indices (row * blocksPerRow + block) of the accepted blocks, so the expected forward can take them from the artifact. */
  acceptedBlocks: number[]
  first?: FirstDifference
}

export interface Scheme {
  readonly name: string
  /** Human-readable, e.g. "4-bit affine, group 64, F16 scales". */
  describe(params: SchemeParams): string
  /** Stored bits per weight, parts included. */
  bitsPerWeight(params: SchemeParams): number
  /** Elements per block (comparison unit) for rows of `cols` values. */
  blockSize(params: SchemeParams, cols: number): number
  /** The parts of an encoding: element dtype and elements per row, for rows of `cols` values. */
  parts(params: SchemeParams, cols: number): PartLayout[]
  /** Throws (a typed error) when the params or the row length cannot be stored in this scheme. */
  check(params: SchemeParams, cols: number): void
  /** The reference transformation: f32 values of `rows` whole rows → parts. */
  encode(values: Float32Array, rows: number, cols: number, params: SchemeParams): Encoded
  /**
   * `encode` written into `into` (a view of each part's exact size) instead of new arrays, where a
   * scheme has it: a pool task that writes its result in place (src/pool/tasks.ts `into`) makes no
   * buffer per step for its thread's collector to free late.
   */
  encodeInto?(values: Float32Array, rows: number, cols: number, params: SchemeParams, into: Encoded): void
  /** Parts → f32 values, the dequantization convention the readers and the engine use. */
  decode(parts: Encoded, rows: number, cols: number, params: SchemeParams): Float32Array
  /** `decode` written into `out` (rows × cols values) instead of a new array, where a scheme has it. */
  decodeInto?(parts: Encoded, rows: number, cols: number, params: SchemeParams, out: Float32Array): void
  /**
   * Compare the expected parts (from `encode(source)`) with the actual stored parts. `source` holds
   * the f32 source values, so documented alternative roundings can be recognised.
   */
  compare(expected: Encoded, actual: Encoded, source: Float32Array, rows: number, cols: number, params: SchemeParams): EncodingDiff
}

/** An empty diff to accumulate into. */
export function emptyDiff(): EncodingDiff {
  return {elements: 0, identicalElements: 0, blocks: 0, identicalBlocks: 0, accepted: {}, acceptedBlocks: []}
}

/** Add `part` (computed for rows starting at `rowOffset`) into `total`. */
export function addDiff(total: EncodingDiff, part: EncodingDiff, rowOffset: number, blocksPerRow: number): void {
  total.elements += part.elements
  total.identicalElements += part.identicalElements
  total.blocks += part.blocks
  total.identicalBlocks += part.identicalBlocks
  for (const [rule, n] of Object.entries(part.accepted)) total.accepted[rule] = (total.accepted[rule] ?? 0) + n
  for (const b of part.acceptedBlocks) total.acceptedBlocks.push(b + rowOffset * blocksPerRow)
  if (!total.first && part.first) total.first = {...part.first, row: part.first.row + rowOffset}
}

/** Bytes equal over [a0, a0+n) of a and [b0, b0+n) of b. */
export function bytesEqual(a: Uint8Array, a0: number, b: Uint8Array, b0: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[a0 + i] !== b[b0 + i]) return false
  return true
}
