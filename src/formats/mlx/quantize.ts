/**
 * MLX's quantized tensors as lazy records: the three tensors `<base>.weight` (U32 codes),
 * `<base>.scales` and `<base>.biases` computed on demand from a float source, and the float record
 * that dequantizes them back. The arithmetic (MLX's affine rule, the bit packing, the
 * dequantization convention) is the `mlx_affine` scheme in src/quant/mlx-affine.ts.
 */
import {FormatError} from '../../errors.js'
import {
  checkQuantParams, dequantizeRows, quantizeInto, roundInto, unpackRows,
} from '../../quant/mlx-affine.js'
import {type DType, dtypeSize, type FloatDType, fromFloat32, toFloat32} from '../../tensor/dtype.js'
import {CHUNK_BYTES, formatShape, type TensorRecord} from '../../tensor/record.js'

export {
  checkQuantParams, dequantizeRows, groupErrorBound, groupParams, QUANT_BITS, QUANT_GROUP_SIZES, quantizeRows, rint, roundInto, SCALE_EPS, unpackRows,
} from '../../quant/mlx-affine.js'

// ---- lazy records -----------------------------------------------------------------------------

export interface QuantSpec {
  bits: number
  groupSize: number
  /** MLX's quantization mode (default affine; mxfp4/nvfp4/mxfp8: src/formats/mlx/fp.ts). */
  mode?: 'affine' | 'mxfp4' | 'nvfp4' | 'mxfp8'
}

/** f32 bytes of one row block: a quarter of a streaming chunk keeps the transient buffers small (RSS target). */
const BLOCK_BYTES = CHUNK_BYTES / 4

/** Rows per block so that a block's f32 values stay near BLOCK_BYTES. */
function blockRows(cols: number): number {
  return Math.max(1, Math.floor(BLOCK_BYTES / (cols * 4)))
}

/** Rows [r0, r1) of `source` as f32 (a view of the bytes read when it is f32 already). */
async function readRows(source: TensorRecord, cols: number, r0: number, r1: number): Promise<Float32Array> {
  const size = dtypeSize(source.dtype)
  return toFloat32(await source.read(r0 * cols * size, r1 * cols * size), source.dtype)
}

/** Reused for the rounded values of one block; only ever used synchronously (between awaits). */
let roundScratch = new Float32Array(0)

/** `values` (from `from`) rounded to `dtype`, as f32: the values themselves when no rounding applies, else in roundScratch. */
function roundedRows(values: Float32Array, from: DType, dtype: FloatDType): Float32Array {
  if (dtype === 'F32' || from === dtype) return values
  if (roundScratch.length < values.length) roundScratch = new Float32Array(Math.max(values.length, BLOCK_BYTES / 4))
  const out = roundScratch.subarray(0, values.length)
  roundInto(values, dtype, out)
  return out
}

/**
 * The three tensors MLX stores for a quantized matrix: `<base>.weight` (U32 codes),
 * `<base>.scales` and `<base>.biases` (in `dtype`), computed on demand from `source` (first
 * rounded to `dtype`, as mlx-lm casts before quantizing).
 * - Each row block (aligned so chunked reads never redo one) is read and rounded once and gives
 *   both its codes and its scales/biases.
 * - Scales and biases (1/groupSize of the elements) are collected for the whole tensor as blocks
 *   are computed, turned into `dtype` bytes when first asked for, shared by both records, and
 *   dropped once both were read.
 * - When they are asked for before the weight (the usual order: `.biases` < `.scales` < `.weight`),
 *   that pass keeps the codes of the whole tensor (bits/32 of the f32 size) for the weight to
 *   serve, and drops them once the weight was read.
 */
export function quantizedRecords(source: TensorRecord, base: string, spec: QuantSpec, dtype: FloatDType): {weight: TensorRecord; scales: TensorRecord; biases: TensorRecord} {
  checkQuantParams(spec.bits, spec.groupSize)
  if (source.shape.length !== 2) throw new FormatError('quantize.rank', `cannot quantize ${source.name}: shape ${formatShape(source.shape)} is not 2-D`)
  const [rows, cols] = source.shape as [number, number]
  if (cols % spec.groupSize !== 0) throw new FormatError('quantize.shape', `cannot quantize ${source.name}: last dim ${cols} is not a multiple of the group size ${spec.groupSize}`)
  const {bits, groupSize} = spec
  const groups = cols / groupSize
  const wordsPerRow = (cols * bits) / 32
  const step = blockRows(cols)
  const blocks = Math.ceil(rows / step)
  const paramBytes = rows * groups * dtypeSize(dtype)
  const weightBytes = rows * wordsPerRow * 4
  const rowBytes = wordsPerRow * 4

  /** f32 scales/biases of the blocks computed so far, until the `dtype` bytes are made. */
  let pending: {scales: Float32Array; biases: Float32Array; done: Uint8Array} | undefined
  let params: {scales: Uint8Array; biases: Uint8Array} | undefined
  const served = {scales: 0, biases: 0, weight: 0}
  /** Codes of the whole tensor, made by the scales/biases pass for the weight (inAll: blocks present). */
  let allPacked: {packed: Uint32Array; inAll: Uint8Array} | undefined
  let cache: {block: number; packed: Uint32Array} | undefined

  /** Read and round block `b` once; its codes go to `packed`, its params to `pending` (when still wanted). */
  const computeBlock = async (b: number, packed: Uint32Array): Promise<void> => {
    const r0 = b * step
    const r1 = Math.min(rows, r0 + step)
    const raw = await readRows(source, cols, r0, r1)
    // From here on synchronous (roundScratch is shared).
    const values = roundedRows(raw, source.dtype, dtype)
    const p = params ? undefined : (pending ??= {scales: new Float32Array(rows * groups), biases: new Float32Array(rows * groups), done: new Uint8Array(blocks)})
    const n = (r1 - r0) * groups
    const scales = p ? p.scales.subarray(r0 * groups, r0 * groups + n) : new Float32Array(n)
    const biases = p ? p.biases.subarray(r0 * groups, r0 * groups + n) : new Float32Array(n)
    quantizeInto(values, (r1 - r0) * cols, bits, groupSize, packed, scales, biases)
    if (p) p.done[b] = 1
  }

  const allParams = async () => {
    if (params) return params
    const keepCodes = served.weight < weightBytes
    if (keepCodes) allPacked ??= {packed: new Uint32Array(rows * wordsPerRow), inAll: new Uint8Array(blocks)}
    for (let b = 0; b < blocks; b++) {
      if (pending?.done[b]) continue
      const w0 = b * step * wordsPerRow
      const w1 = Math.min(rows, (b + 1) * step) * wordsPerRow
      if (allPacked && keepCodes) {
        await computeBlock(b, allPacked.packed.subarray(w0, w1))
        allPacked.inAll[b] = 1
      } else {
        await computeBlock(b, new Uint32Array(w1 - w0))
      }
    }
    if (params) return params // made meanwhile by a concurrent call
    const p = pending!
    params = {scales: fromFloat32(p.scales, dtype), biases: fromFloat32(p.biases, dtype)}
    pending = undefined
    return params
  }
  const paramRecord = (part: 'scales' | 'biases'): TensorRecord => ({
    name: `${base}.${part}`, dtype, shape: [rows, groups], byteLength: paramBytes,
    async read(start = 0, end = paramBytes) {
      const bytes = (await allParams())[part].slice(start, end)
      served[part] += end - start
      if (served.scales >= paramBytes && served.biases >= paramBytes) params = undefined
      return bytes
    },
  })

  const packedBlock = async (b: number): Promise<Uint8Array> => {
    let packed: Uint32Array
    if (allPacked?.inAll[b]) {
      packed = allPacked.packed.subarray(b * step * wordsPerRow, Math.min(rows, (b + 1) * step) * wordsPerRow)
    } else {
      if (!cache || cache.block !== b) {
        const r0 = b * step
        const words = new Uint32Array((Math.min(rows, r0 + step) - r0) * wordsPerRow)
        await computeBlock(b, words)
        cache = {block: b, packed: words}
      }
      packed = cache.packed
    }
    return new Uint8Array(packed.buffer, packed.byteOffset, packed.byteLength)
  }

  const weight: TensorRecord = {
    name: `${base}.weight`, dtype: 'U32', shape: [rows, wordsPerRow], byteLength: weightBytes,
    async read(start = 0, end = weightBytes) {
      const out = new Uint8Array(end - start)
      for (let b = Math.floor(start / rowBytes / step); b * step * rowBytes < end; b++) {
        const r0 = b * step
        const r1 = Math.min(rows, r0 + step)
        const bytes = await packedBlock(b)
        const from = Math.max(start, r0 * rowBytes)
        const to = Math.min(end, r1 * rowBytes)
        out.set(bytes.subarray(from - r0 * rowBytes, to - r0 * rowBytes), from - start)
      }
      served.weight += end - start
      if (served.weight >= weightBytes) {
        allPacked = undefined
        cache = undefined
      }
      return out
    },
  }
  return {weight, scales: paramRecord('scales'), biases: paramRecord('biases')}
}

/**
 * A float record (in the scales' dtype) that dequantizes `<base>.weight/.scales/.biases` on
 * demand, row block by row block. `name` is the canonical name it stands for.
 */
export function dequantizedRecord(name: string, weight: TensorRecord, scales: TensorRecord, biases: TensorRecord, spec: QuantSpec): TensorRecord {
  const {bits, groupSize} = spec
  const fail = (message: string): never => {
    throw new FormatError('mlx.quantized_shape', `quantized tensor ${name}: ${message}`, {tensor: name})
  }
  if (weight.dtype !== 'U32') fail(`packed weight is ${weight.dtype}, expected U32`)
  if (weight.shape.length !== 2 || scales.shape.length !== 2 || biases.shape.length !== 2) fail('weight, scales and biases must be 2-D')
  if (scales.dtype !== biases.dtype || !['F32', 'F16', 'BF16'].includes(scales.dtype)) fail(`scales (${scales.dtype}) and biases (${biases.dtype}) must share one float dtype`)
  const [rows, words] = weight.shape as [number, number]
  const cols = (words * 32) / bits
  if (!Number.isInteger(cols) || cols % groupSize !== 0) fail(`${words} packed words per row do not hold whole groups of ${groupSize} ${bits}-bit codes`)
  const groups = cols / groupSize
  for (const [label, r] of [['scales', scales], ['biases', biases]] as const) {
    if (r.shape[0] !== rows || r.shape[1] !== groups) fail(`${label} has shape ${formatShape(r.shape)}, expected [${rows}, ${groups}] for ${bits}-bit codes in groups of ${groupSize}`)
  }
  const dtype = scales.dtype as FloatDType
  const size = dtypeSize(dtype)
  const rowBytes = cols * size
  const byteLength = rows * rowBytes
  const step = blockRows(cols)
  return {
    name, dtype, shape: [rows, cols], byteLength,
    async read(start = 0, end = byteLength) {
      const out = new Uint8Array(end - start)
      for (let r0 = Math.floor(start / rowBytes / step) * step; r0 * rowBytes < end; r0 += step) {
        const r1 = Math.min(rows, r0 + step)
        const packedBytes = await weight.read(r0 * words * 4, r1 * words * 4)
        const packed = new Uint32Array(packedBytes.slice().buffer)
        const s = toFloat32(await scales.read(r0 * groups * size, r1 * groups * size), dtype)
        const b = toFloat32(await biases.read(r0 * groups * size, r1 * groups * size), dtype)
        const bytes = fromFloat32(dequantizeRows(packed, s, b, r1 - r0, cols, bits, groupSize), dtype)
        const from = Math.max(start, r0 * rowBytes)
        const to = Math.min(end, r1 * rowBytes)
        out.set(bytes.subarray(from - r0 * rowBytes, to - r0 * rowBytes), from - start)
      }
      return out
    },
  }
}
