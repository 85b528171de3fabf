/**
 * MLX's floating-point modes (mxfp4, nvfp4, mxfp8) as lazy records: `<base>.weight` (U32 codes) and
 * `<base>.scales` (U8), no biases, computed on demand from a float source row block by row block;
 * and the float record that dequantizes them back. The arithmetic is src/quant/mlx-fp.ts.
 */
import {FormatError} from '../../errors.js'
import {MLX_FP_MODES, type MlxFpMode} from '../../quant/mlx-fp.js'
import {schemeFor} from '../../quant/index.js'
import {dtypeSize, type FloatDType, fromFloat32, toFloat32} from '../../tensor/dtype.js'
import {formatShape, readingInto, type TensorRecord} from '../../tensor/record.js'
import {quantizerSlots, slottedBlocks} from '../../pool/index.js'
import {blockRows, ENCODE_BLOCK_BYTES, encodeBlocks, rowsTask} from './quantize.js'
import {type StoredTensor} from '../types.js'

/**
 * `<base>.weight` and `<base>.scales` of `source` quantized in `mode` (scheme `mlx_<mode>`: rounded
 * to `dtype` first, as mlx-lm casts, then quantizes), computed row block by row block on the worker
 * pool (src/pool; blocks ahead of the reader, the same bytes for any thread count). The weight keeps
 * only the blocks around the one read; the scales of the blocks it computed (1 byte per group) are
 * kept for the scales record, which computes any block still missing when it is read.
 */
export function fpQuantizedRecords(source: TensorRecord, base: string, mode: MlxFpMode, dtype: FloatDType): {weight: TensorRecord; scales: TensorRecord} {
  const {bits, groupSize} = MLX_FP_MODES[mode]
  if (source.shape.length !== 2) throw new FormatError('quantize.rank', `cannot quantize ${source.name}: shape ${formatShape(source.shape)} is not 2-D`)
  const [rows, cols] = source.shape as [number, number]
  if (cols % groupSize !== 0) throw new FormatError('quantize.shape', `cannot quantize ${source.name}: last dim ${cols} is not a multiple of ${mode}'s group size ${groupSize}`)
  const step = blockRows(cols, ENCODE_BLOCK_BYTES)
  const blocks = Math.ceil(rows / step)
  const weightRow = (cols * bits) / 8
  const scalesRow = cols / groupSize
  const scheme = `mlx_${mode}`

  const task = (b: number) => rowsTask(source, scheme, {dtype}, cols, b * step, Math.min(rows, (b + 1) * step))
  /** Scales of the blocks computed so far (done[b]), until the scales record was read to its end. */
  let kept: {scales: Uint8Array; done: Uint8Array} | undefined
  const keep = (b: number, scales: Uint8Array) => {
    kept ??= {scales: new Uint8Array(rows * scalesRow), done: new Uint8Array(blocks)}
    kept.scales.set(scales, b * step * scalesRow)
    kept.done[b] = 1
  }
  const weightBlocks = slottedBlocks(quantizerSlots(), blocks, task, 'weight', (b, encoded) => keep(b, encoded.scales!))
  let making: Promise<Uint8Array> | undefined
  const allScales = async (): Promise<Uint8Array> => {
    await weightBlocks.settled()
    for await (const [b, encoded] of encodeBlocks(blocks, kept?.done, task)) keep(b, encoded.scales!)
    return kept!.scales
  }
  const scalesOf = () => making ??= allScales().finally(() => {
    making = undefined
  })

  const record = (part: 'weight' | 'scales', rowBytes: number, shape: number[]): TensorRecord => {
    const byteLength = rows * rowBytes
    // The writer reads into its own buffers (readInto): nothing allocated per chunk.
    const readInto = async (target: Uint8Array, start: number) => {
      if (part === 'weight') return weightBlocks.readRangeInto(target, start, step * rowBytes, byteLength)
      target.set((await scalesOf()).subarray(start, start + target.byteLength))
      if (start + target.byteLength >= byteLength) kept = undefined
    }
    return readingInto({name: `${base}.${part}`, dtype: part === 'weight' ? 'U32' : 'U8', shape, byteLength}, readInto)
  }
  return {weight: record('weight', weightRow, [rows, (cols * bits) / 32]), scales: record('scales', scalesRow, [rows, scalesRow])}
}

/** Checks the stored pair and returns [rows, cols]. */
function fpShape(name: string, weight: TensorRecord, scales: TensorRecord, mode: MlxFpMode): [number, number] {
  const {bits, groupSize} = MLX_FP_MODES[mode]
  const fail = (message: string): never => {
    throw new FormatError('mlx.quantized_shape', `quantized tensor ${name} (${mode}): ${message}`, {tensor: name})
  }
  if (weight.dtype !== 'U32') fail(`packed weight is ${weight.dtype}, expected U32`)
  if (scales.dtype !== 'U8') fail(`scales are ${scales.dtype}, expected U8 (${mode === 'nvfp4' ? 'fp8 e4m3' : 'e8m0'} bytes)`)
  if (weight.shape.length !== 2 || scales.shape.length !== 2) fail('weight and scales must be 2-D')
  const [rows, words] = weight.shape as [number, number]
  const cols = (words * 32) / bits
  if (cols % groupSize !== 0) fail(`${words} packed words per row do not hold whole groups of ${groupSize}`)
  if (scales.shape[0] !== rows || scales.shape[1] !== cols / groupSize) fail(`scales has shape ${formatShape(scales.shape)}, expected [${rows}, ${cols / groupSize}]`)
  return [rows, cols]
}

/** The float record (in `dtype`) standing for `name`, dequantizing row block by row block. */
export function fpDequantizedRecord(name: string, weight: TensorRecord, scales: TensorRecord, mode: MlxFpMode, dtype: FloatDType): TensorRecord {
  const [rows, cols] = fpShape(name, weight, scales, mode)
  const scheme = schemeFor(`mlx_${mode}`)
  const {bits, groupSize} = MLX_FP_MODES[mode]
  const size = dtypeSize(dtype)
  const rowBytes = cols * size
  const byteLength = rows * rowBytes
  const step = blockRows(cols)
  const wRow = (cols * bits) / 8
  const sRow = cols / groupSize
  return {
    name, dtype, shape: [rows, cols], byteLength,
    async read(start = 0, end = byteLength) {
      const out = new Uint8Array(end - start)
      for (let r0 = Math.floor(start / rowBytes / step) * step; r0 * rowBytes < end; r0 += step) {
        const r1 = Math.min(rows, r0 + step)
        const parts = {weight: await weight.read(r0 * wRow, r1 * wRow), scales: await scales.read(r0 * sRow, r1 * sRow)}
        const bytes = fromFloat32(scheme.decode(parts, r1 - r0, cols, {dtype}), dtype)
        const from = Math.max(start, r0 * rowBytes)
        const to = Math.min(end, r1 * rowBytes)
        out.set(bytes.subarray(from - r0 * rowBytes, to - r0 * rowBytes), from - start)
      }
      return out
    },
  }
}

/** The stored form: scheme `mlx_<mode>`, parts `weight`/`scales` as stored, params {dtype}. */
export function fpStored(record: TensorRecord, weight: TensorRecord, scales: TensorRecord, mode: MlxFpMode, dtype: FloatDType): StoredTensor {
  const [rows] = record.shape as [number, number]
  const wRow = weight.byteLength / rows
  const sRow = scales.byteLength / rows
  return {
    name: record.name,
    shape: record.shape,
    segments: [{
      row0: 0, rows, scheme: `mlx_${mode}`, params: {dtype}, label: weight.name,
      read: async (r0, r1) => ({weight: await weight.read(r0 * wRow, r1 * wRow), scales: await scales.read(r0 * sRow, r1 * sRow)}),
    }],
  }
}
