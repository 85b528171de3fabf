/**
 * MLX's quantized tensors as lazy records: the three tensors `<base>.weight` (U32 codes),
 * `<base>.scales` and `<base>.biases` computed on demand from a float source, and the float record
 * that dequantizes them back. The arithmetic (MLX's affine rule, the bit packing, the
 * dequantization convention) is the `mlx_affine` scheme in src/quant/mlx-affine.ts.
 */
import {FormatError} from '../../errors.js'
import {type EncodeFileTask, type EncodeTask, mapSlotted, quantizerSlots, slottedBlocks} from '../../pool/index.js'
import {checkQuantParams, dequantizeRoundedInto, dequantizeRows} from '../../quant/mlx-affine.js'
import {type Encoded, type SchemeParams} from '../../quant/types.js'
import {dtypeSize, type FloatDType, fromFloat32, toFloat32} from '../../tensor/dtype.js'
import {CHUNK_BYTES, encodeTaskOf, formatShape, readingInto, readIntoOf, type TensorRecord, withReadRowsF32} from '../../tensor/record.js'

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

/** f32 bytes of one row block dequantized: a quarter of a streaming chunk keeps the transient buffers small (RSS target). */
const BLOCK_BYTES = CHUNK_BYTES / 4

/**
 * f32 bytes of one row block quantized, one pool task each (a streaming chunk, as the GGUF
 * quantizers' tasks): each task costs the main thread a source read and two messages, and at a
 * quarter of this (16K tasks at 1.1B) those, not the kernel, bounded 2 workers.
 */
export const ENCODE_BLOCK_BYTES = CHUNK_BYTES

/** Rows per block so that a block's f32 values stay near `bytes`. */
export function blockRows(cols: number, bytes = BLOCK_BYTES): number {
  return Math.max(1, Math.floor(bytes / (cols * 4)))
}

/** The encode task (`scheme`) of rows [r0, r1) of `source` (encodeTaskOf: read by the task itself where it can). */
export function rowsTask(source: TensorRecord, scheme: string, params: SchemeParams, cols: number, r0: number, r1: number): Promise<EncodeTask | EncodeFileTask> {
  return encodeTaskOf(source, scheme, params, r0 * cols, r1 - r0, cols)
}

/**
 * The blocks of [0, blocks) not yet `done`, encoded on the pool in order (`task(b)`: block b's task):
 * [block, its encoding]. The parts are written into slots of shared memory (mapSlotted), each given
 * back once the loop body that got it is done, so it must copy what it keeps.
 */
export async function* encodeBlocks(blocks: number, done: Uint8Array | undefined, task: (b: number) => Promise<EncodeTask | EncodeFileTask>): AsyncGenerator<[number, Encoded]> {
  const todo: number[] = []
  for (let b = 0; b < blocks; b++) if (!done?.[b]) todo.push(b)
  if (todo.length === 0) return
  async function* tasks(): AsyncGenerator<EncodeTask | EncodeFileTask> {
    for (const b of todo) yield await task(b)
  }
  let i = 0
  for await (const encoded of mapSlotted(quantizerSlots(), tasks())) yield [todo[i++]!, encoded]
}

/**
 * The three tensors MLX stores for a quantized matrix: `<base>.weight` (U32 codes),
 * `<base>.scales` and `<base>.biases` (in `dtype`), computed on demand from `source` (first
 * rounded to `dtype`, as mlx-lm casts before quantizing) by the `mlx_affine` scheme's encode, row
 * block by row block on the worker pool (src/pool; in order, so the same bytes for any thread count).
 * - Each row block (aligned so chunked reads never redo one) is read and quantized once and gives
 *   both its codes and its scales/biases.
 * - Scales and biases (1/groupSize of the elements) are collected for the whole tensor as blocks
 *   are computed, shared by both records, and dropped once both were read.
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
  const step = blockRows(cols, ENCODE_BLOCK_BYTES)
  const blocks = Math.ceil(rows / step)
  const pSize = dtypeSize(dtype)
  const paramBytes = rows * groups * pSize
  const weightBytes = rows * wordsPerRow * 4
  const rowBytes = wordsPerRow * 4
  const params = {bits, group_size: groupSize, dtype}

  /** Scales/biases (`dtype` bytes) of the blocks computed so far, until both records are made. */
  let pending: {scales: Uint8Array; biases: Uint8Array; done: Uint8Array} | undefined
  let made: {scales: Uint8Array; biases: Uint8Array} | undefined
  let making: Promise<{scales: Uint8Array; biases: Uint8Array}> | undefined
  const served = {scales: 0, biases: 0, weight: 0}
  /** Codes of the whole tensor, made by the scales/biases pass for the weight (inAll: blocks present). */
  let allPacked: {packed: Uint8Array; inAll: Uint8Array} | undefined

  const task = (b: number) => rowsTask(source, 'mlx_affine', params, cols, b * step, Math.min(rows, (b + 1) * step))
  /** Keep block `b`'s scales/biases (while the whole-tensor ones are still wanted). */
  const keepParams = (b: number, encoded: Encoded) => {
    if (made) return
    const p = (pending ??= {scales: new Uint8Array(paramBytes), biases: new Uint8Array(paramBytes), done: new Uint8Array(blocks)})
    p.scales.set(encoded.scales!, b * step * groups * pSize)
    p.biases.set(encoded.biases!, b * step * groups * pSize)
    p.done[b] = 1
  }

  const makeParams = async () => {
    await ahead.settled()
    const keepCodes = served.weight < weightBytes
    if (keepCodes) allPacked ??= {packed: new Uint8Array(weightBytes), inAll: new Uint8Array(blocks)}
    for await (const [b, encoded] of encodeBlocks(blocks, pending?.done, task)) {
      keepParams(b, encoded)
      if (allPacked && keepCodes) {
        allPacked.packed.set(encoded.weight!, b * step * rowBytes)
        allPacked.inAll[b] = 1
      }
    }
    const p = pending!
    made = {scales: p.scales, biases: p.biases}
    pending = undefined
    return made
  }
  const allParams = async () => made ?? (making ??= makeParams().finally(() => {
    making = undefined
  }))
  const paramRecord = (part: 'scales' | 'biases'): TensorRecord => {
    const count = (from: number, to: number) => {
      served[part] += to - from
      if (served.scales >= paramBytes && served.biases >= paramBytes) made = undefined
    }
    return readingInto({name: `${base}.${part}`, dtype, shape: [rows, groups], byteLength: paramBytes}, async (target, start) => {
      target.set((await allParams())[part].subarray(start, start + target.byteLength))
      count(start, start + target.byteLength)
    })
  }

  /** The weight read before the scales/biases: its blocks computed ahead on the pool. */
  const ahead = slottedBlocks(quantizerSlots(), blocks, task, 'weight', keepParams)
  const packedBlock = async (b: number): Promise<Uint8Array> => {
    if (allPacked?.inAll[b]) return allPacked.packed.subarray(b * step * rowBytes, Math.min(rows, (b + 1) * step) * rowBytes)
    return ahead.get(b)
  }

  // The writer reads into its own buffers (readInto): nothing allocated per chunk.
  const readWeightInto = async (target: Uint8Array, start: number) => {
    await ahead.readRangeInto(target, start, step * rowBytes, weightBytes, packedBlock)
    served.weight += target.byteLength
    if (served.weight >= weightBytes) allPacked = undefined
  }
  const weight = readingInto({name: `${base}.weight`, dtype: 'U32', shape: [rows, wordsPerRow], byteLength: weightBytes}, readWeightInto)
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
  const fastWeight = readIntoOf(weight)
  const record: TensorRecord = {
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
  // The same values as `read` widened to f32 (dequantized, rounded to the scales' dtype), written
  // straight into the caller's rows, all in one pass (the target bounds the memory): the engine's
  // matmul reads its weight blocks this way.
  return withReadRowsF32(record, async (target, r0) => {
    const r1 = r0 + target.length / cols
    const packed = new Uint32Array((r1 - r0) * words)
    const packedBytes = new Uint8Array(packed.buffer)
    if (fastWeight) await fastWeight(packedBytes, r0 * words * 4)
    else packedBytes.set(await weight.read(r0 * words * 4, r1 * words * 4))
    const s = toFloat32(await scales.read(r0 * groups * size, r1 * groups * size), dtype)
    const z = toFloat32(await biases.read(r0 * groups * size, r1 * groups * size), dtype)
    dequantizeRoundedInto(packed, s, z, r1 - r0, cols, bits, groupSize, dtype, target)
  })
}
