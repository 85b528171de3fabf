/**
 * MLX affine quantization, exactly as `mx.quantize` computes it (DESIGN §4.3; mlx `ops.cpp`
 * fallback and the CPU backend), and its inverse.
 *
 * Per group of `groupSize` consecutive values of a row, all in fp32:
 *   scale = max((max - min) / (2^bits - 1), 1e-7), negated unless |min| > |max|
 *   edge  = |min| > |max| ? min : max
 *   q0    = rint(edge / scale)
 *   q0 ≠ 0: scale = edge / q0, bias = edge      (so `edge` — and zero — are exact)
 *   q0 = 0: bias = 0
 *   q     = clip(rint((w - bias) / scale), 0, 2^bits - 1)
 * Codes are packed LSB-first into one continuous bit stream per row, stored as little-endian
 * uint32 words (for 3, 5 and 6 bits a code may straddle two words). `w ≈ scales * q + biases`.
 */
import {FormatError, UsageError} from '../../errors.js'
import {bf16BitsToF32, type DType, dtypeSize, f16BitsToF32, f32BitsToBf16Bits, f32BitsToF16Bits, type FloatDType, fromFloat32, toFloat32} from '../../tensor/dtype.js'
import {CHUNK_BYTES, formatShape, type TensorRecord} from '../../tensor/record.js'

export const QUANT_BITS = [2, 3, 4, 5, 6, 8] as const
export const QUANT_GROUP_SIZES = [32, 64, 128] as const
/** MLX's floor on the step size (`eps` in `affine_quantize`), as an f32. */
export const SCALE_EPS = Math.fround(1e-7)

const f32 = Math.fround

/** Round half to even (C's `rint` in the default rounding mode; `Math.round` breaks ties upwards). */
export function rint(x: number): number {
  const f = Math.floor(x)
  const d = x - f
  if (d < 0.5) return f
  if (d > 0.5) return f + 1
  return f % 2 === 0 ? f : f + 1
}

export function checkQuantParams(bits: number, groupSize: number): void {
  if (!(QUANT_BITS as readonly number[]).includes(bits)) throw new UsageError('quantize.bits', `MLX quantization supports 2, 3, 4, 5, 6 or 8 bits, not ${bits}`)
  if (!(QUANT_GROUP_SIZES as readonly number[]).includes(groupSize)) throw new UsageError('quantize.group_size', `MLX quantization supports group sizes 32, 64 or 128, not ${groupSize}`)
}

/** The scale and bias of one group (f32 values), MLX's rule. */
export function groupParams(values: ArrayLike<number>, start: number, count: number, bits: number): {scale: number; bias: number} {
  const nBins = (1 << bits) - 1
  let min = Infinity
  let max = -Infinity
  for (let i = start; i < start + count; i++) {
    const v = values[i]!
    if (v > max) max = v
    if (v < min) min = v
  }
  const minDominates = Math.abs(min) > Math.abs(max)
  let scale = Math.max(f32(f32(max - min) / nBins), SCALE_EPS)
  if (!minDominates) scale = -scale
  const edge = minDominates ? min : max
  const q0 = rint(f32(edge / scale))
  if (q0 !== 0) return {scale: f32(edge / q0), bias: edge}
  return {scale, bias: 0}
}

export interface QuantizedRows {
  /** [rows, cols * bits / 32] little-endian words. */
  packed: Uint32Array
  /** [rows, cols / groupSize], f32 (cast to the float dtype when stored). */
  scales: Float32Array
  biases: Float32Array
}

/**
 * Quantize `rows` rows of `cols` f32 values. Values should already be rounded to the dtype the
 * model is stored in (mlx-lm casts, then quantizes).
 */
export function quantizeRows(values: Float32Array, rows: number, cols: number, bits: number, groupSize: number): QuantizedRows {
  const groups = cols / groupSize
  const packed = new Uint32Array((rows * cols * bits) / 32)
  const scales = new Float32Array(rows * groups)
  const biases = new Float32Array(rows * groups)
  quantizeInto(values, rows * cols, bits, groupSize, packed, scales, biases)
  return {packed, scales, biases}
}

/** 1.5 · 2^52: for |x| < 2^51, (x + RINT_MAGIC) - RINT_MAGIC is x rounded half to even (the double sum has unit ulp). */
const RINT_MAGIC = 6755399441055744

/**
 * The loop behind quantizeRows, into caller-owned arrays: `count` values (whole rows, so whole
 * groups and whole words: the bit stream runs straight across row ends), `packed` holding their
 * words and `scales`/`biases` their groups. Per group one min/max pass and one code pass, with
 * groupParams inlined (no object per group). Bit-identical to groupParams + the rule above.
 */
function quantizeInto(values: Float32Array, count: number, bits: number, groupSize: number, packed: Uint32Array, scales: Float32Array, biases: Float32Array): void {
  const nBins = (1 << bits) - 1
  const groups = count / groupSize
  let bitPos = 0
  let word = 0 // bits not yet stored, starting at bit (bitPos & ~31)
  for (let g = 0; g < groups; g++) {
    const start = g * groupSize
    const end = start + groupSize
    let min = Infinity
    let max = -Infinity
    for (let i = start; i < end; i++) {
      const v = values[i]!
      if (v > max) max = v
      if (v < min) min = v
    }
    // groupParams, inlined
    const minDominates = Math.abs(min) > Math.abs(max)
    let scale = Math.max(f32(f32(max - min) / nBins), SCALE_EPS)
    if (!minDominates) scale = -scale
    const edge = minDominates ? min : max
    const q0 = rint(f32(edge / scale))
    let bias = 0
    if (q0 !== 0) {
      scale = f32(edge / q0)
      bias = edge
    }
    scales[g] = scale
    biases[g] = bias
    for (let i = start; i < end; i++) {
      // q = clip(rint(f32((w - bias) / scale)), 0, nBins); NaN stays NaN through the clip and packs as 0.
      const x = f32(f32(values[i]! - bias) / scale)
      let q = x + RINT_MAGIC - RINT_MAGIC
      q = q < 0 ? 0 : q > nBins ? nBins : q
      const shift = bitPos & 31
      word |= q << shift
      if (shift + bits >= 32) {
        // The word is full: store it and keep the bits of q that spill into the next one.
        packed[bitPos >>> 5] = word
        word = shift + bits > 32 ? q >>> (32 - shift) : 0
      }
      bitPos += bits
    }
  }
}

/** Unpack the codes of `rows` rows (inverse of the packing in quantizeRows). */
export function unpackRows(packed: Uint32Array, rows: number, cols: number, bits: number): Uint8Array {
  const wordsPerRow = (cols * bits) / 32
  const codes = new Uint8Array(rows * cols)
  const mask = (1 << bits) - 1
  for (let r = 0; r < rows; r++) {
    let bitPos = r * wordsPerRow * 32
    for (let c = 0; c < cols; c++) {
      const word = bitPos >>> 5
      const shift = bitPos & 31
      let q = packed[word]! >>> shift
      if (shift + bits > 32) q |= packed[word + 1]! << (32 - shift)
      codes[r * cols + c] = q & mask
      bitPos += bits
    }
  }
  return codes
}

/** `scales * q + biases` per element, in f32 (the caller rounds to the float dtype once). */
export function dequantizeRows(packed: Uint32Array, scales: Float32Array, biases: Float32Array, rows: number, cols: number, bits: number, groupSize: number): Float32Array {
  const codes = unpackRows(packed, rows, cols, bits)
  const out = new Float32Array(rows * cols)
  // cols is a multiple of groupSize, so element i of the block belongs to group floor(i / groupSize).
  for (let i = 0; i < out.length; i++) {
    const g = Math.floor(i / groupSize)
    out[i] = f32(f32(scales[g]! * codes[i]!) + biases[g]!)
  }
  return out
}

/**
 * Worst-case |w - dequantized| for a group whose values span [min, max], before the scale and
 * bias are rounded to a 16-bit dtype. Not half a step: MLX moves the step to `edge / q0` so that
 * the dominant end (and zero) stay exact, which can shrink it so the far end clips; the shortfall
 * is at most nBins/(nBins+1) of the original step (the edge is at least half the range away from
 * zero, so |q0| ≥ nBins/2). Either way the error stays within one original step.
 */
export function groupErrorBound(min: number, max: number, bits: number): number {
  return Math.max((max - min) / ((1 << bits) - 1), SCALE_EPS) * (1 + 1e-6)
}

// ---- lazy records -----------------------------------------------------------------------------

export interface QuantSpec {
  bits: number
  groupSize: number
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
 * `out[i]` = `values[i]` rounded to nearest even in `dtype` and widened back, bit for bit what
 * `toFloat32(fromFloat32(values, dtype), dtype)` gives (except NaN payloads, which no quantizer
 * output depends on), without the two intermediate arrays. Works on the f32 bits: dropping the low
 * 16 (bf16) or 13 (f16 normals) mantissa bits with round-half-even, a carry moving into the
 * exponent as it should. Inf/NaN (both) and f16 subnormals, zeros and overflow go the slow exact way.
 */
export function roundInto(values: Float32Array, dtype: 'F16' | 'BF16', out: Float32Array): void {
  const n = values.length
  const src = new Int32Array(values.buffer, values.byteOffset, n)
  const dst = new Int32Array(out.buffer, out.byteOffset, n)
  if (dtype === 'BF16') {
    for (let i = 0; i < n; i++) {
      const x = src[i]!
      if ((x & 0x7f800000) === 0x7f800000) out[i] = bf16BitsToF32(f32BitsToBf16Bits(x >>> 0))
      else dst[i] = (x + 0x7fff + ((x >>> 16) & 1)) & 0xffff0000
    }
    return
  }
  for (let i = 0; i < n; i++) {
    const x = src[i]!
    const a = x & 0x7fffffff
    if (a >= 0x38800000 && a < 0x477ff000) {
      // |v| in [2^-14, 65520): an f16 normal after rounding (65520 and up overflow to Inf).
      dst[i] = (x & 0x80000000) | ((a + 0xfff + ((a >>> 13) & 1)) & 0x7fffe000)
    } else {
      out[i] = f16BitsToF32(f32BitsToF16Bits(x >>> 0))
    }
  }
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
