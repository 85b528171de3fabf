/**
 * Streaming GGUF writer. `planGguf` lays out the whole file from names, types and shapes first
 * (header, tensor infos, aligned offsets); `writeGguf(file, plan)` then streams each tensor through
 * its cast or Q8_0 quantizer in plan order, so the wrong call order cannot happen and memory stays
 * bounded by one chunk.
 */
import {FormatError} from '../../errors.js'
import {FileWriter} from '../../io/file.js'
import {dtypeSize, type FloatDType, toFloat32} from '../../tensor/dtype.js'
import {type EncodeFileTask, type EncodeTask, mapSlotted, quantizerSlots} from '../../pool/index.js'
import {castRecord, CHUNK_BYTES, encodeTaskOf, readChunksInto, type TensorRecord} from '../../tensor/record.js'
import {type ProgressEvent} from '../types.js'
import {schemeFor} from '../../quant/index.js'
import {tensorBytes, MAX_DIMS, MAX_TENSOR_NAME_BYTES} from './read.js'
import {
  GGML_BLOCK, GGML_QUANT_SCHEME, GGML_TYPE, isQuantType, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GGUF_VALUE_TYPE, type GgmlTypeName, type GgufArray, type GgufKv,
  type GgufValue, type GgufValueTypeName,
} from './types.js'

export interface GgufTensorInput {
  /** The GGUF tensor name. */
  name: string
  /** The type stored on disk. */
  type: GgmlTypeName
  /** Float values (any float dtype), row-major; written with reversed dims. */
  source: TensorRecord
  /**
   * The tensor's bytes already in `type` (a GGUF source's blocks), rows [r0, r1) at a time: copied
   * unchanged instead of quantizing the dequantized values again, as llama-quantize does for a tensor
   * whose type does not change.
   */
  stored?: (r0: number, r1: number) => Promise<Uint8Array>
}

export interface GgufPlan {
  header: Uint8Array
  alignment: number
  tensors: {input: GgufTensorInput; offset: number; byteLength: number}[]
  /** Total file size. */
  size: number
}

/** Little-endian byte sink for the header. */
class HeaderBuilder {
  private parts: Uint8Array[] = []
  length = 0

  bytes(b: Uint8Array): void {
    this.parts.push(b)
    this.length += b.byteLength
  }

  private fixed(size: number, set: (v: DataView) => void): void {
    const b = new Uint8Array(size)
    set(new DataView(b.buffer))
    this.bytes(b)
  }

  u32(v: number): void { this.fixed(4, (d) => d.setUint32(0, v, true)) }
  u64(v: bigint | number): void { this.fixed(8, (d) => d.setBigUint64(0, BigInt(v), true)) }
  string(s: string): void {
    const b = Buffer.from(s, 'utf8')
    this.u64(b.byteLength)
    this.bytes(b)
  }

  value(type: GgufValueTypeName, v: GgufValue, key: string): void {
    const bad = () => new FormatError('gguf.value', `metadata "${key}": ${String(v)} is not a valid ${type}`, {field: key})
    const int = (lo: number, hi: number) => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw bad()
      return v
    }
    const big = (lo: bigint, hi: bigint) => {
      if (typeof v !== 'bigint' && !(typeof v === 'number' && Number.isInteger(v))) throw bad()
      const b = BigInt(v)
      if (b < lo || b > hi) throw bad()
      return b
    }
    switch (type) {
      case 'UINT8': { const n = int(0, 0xff); this.fixed(1, (d) => d.setUint8(0, n)); return }
      case 'INT8': { const n = int(-0x80, 0x7f); this.fixed(1, (d) => d.setInt8(0, n)); return }
      case 'UINT16': { const n = int(0, 0xffff); this.fixed(2, (d) => d.setUint16(0, n, true)); return }
      case 'INT16': { const n = int(-0x8000, 0x7fff); this.fixed(2, (d) => d.setInt16(0, n, true)); return }
      case 'UINT32': { const n = int(0, 0xffffffff); this.fixed(4, (d) => d.setUint32(0, n, true)); return }
      case 'INT32': { const n = int(-0x80000000, 0x7fffffff); this.fixed(4, (d) => d.setInt32(0, n, true)); return }
      case 'UINT64': { const n = big(0n, (1n << 64n) - 1n); this.fixed(8, (d) => d.setBigUint64(0, n, true)); return }
      case 'INT64': { const n = big(-(1n << 63n), (1n << 63n) - 1n); this.fixed(8, (d) => d.setBigInt64(0, n, true)); return }
      case 'FLOAT32': { if (typeof v !== 'number') throw bad(); this.fixed(4, (d) => d.setFloat32(0, v, true)); return }
      case 'FLOAT64': { if (typeof v !== 'number') throw bad(); this.fixed(8, (d) => d.setFloat64(0, v, true)); return }
      case 'BOOL': { if (typeof v !== 'boolean') throw bad(); this.fixed(1, (d) => d.setUint8(0, v ? 1 : 0)); return }
      case 'STRING': { if (typeof v !== 'string') throw bad(); this.string(v); return }
      case 'ARRAY': {
        if (typeof v !== 'object') throw bad()
        const arr = v as GgufArray
        this.u32(GGUF_VALUE_TYPE[arr.itemType])
        this.u64(arr.items.length)
        for (const item of arr.items) this.value(arr.itemType, item, key)
        return
      }
    }
  }

  concat(): Uint8Array {
    return Buffer.concat(this.parts, this.length)
  }
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment
}

/** Lay out the file: header (KVs, tensor infos with aligned offsets) and the data section. */
export function planGguf(metadata: readonly GgufKv[], tensors: readonly GgufTensorInput[]): GgufPlan {
  const alignKv = metadata.find((kv) => kv.key === 'general.alignment')
  const alignment = alignKv ? (alignKv.value as number) : GGUF_DEFAULT_ALIGNMENT
  if (alignKv && (alignKv.type !== 'UINT32' || !Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0)) {
    throw new FormatError('gguf.alignment', `general.alignment must be a UINT32 power of two, got ${String(alignKv.value)}`, {field: 'general.alignment'})
  }
  const h = new HeaderBuilder()
  h.u32(GGUF_MAGIC)
  h.u32(GGUF_VERSION)
  h.u64(tensors.length)
  h.u64(metadata.length)
  const keys = new Set<string>()
  for (const kv of metadata) {
    if (keys.has(kv.key)) throw new FormatError('gguf.duplicate_key', `metadata key "${kv.key}" would be written twice`, {field: kv.key})
    keys.add(kv.key)
    h.string(kv.key)
    h.u32(GGUF_VALUE_TYPE[kv.type])
    h.value(kv.type, kv.value, kv.key)
  }
  const planned: GgufPlan['tensors'] = []
  const names = new Set<string>()
  let offset = 0
  for (const input of tensors) {
    const {name, type, source} = input
    if (names.has(name)) throw new FormatError('gguf.duplicate_tensor', `tensor ${name} would be written twice`, {tensor: name})
    names.add(name)
    if (Buffer.byteLength(name) > MAX_TENSOR_NAME_BYTES) throw new FormatError('gguf.tensor_name', `tensor name ${name} is longer than ${MAX_TENSOR_NAME_BYTES} bytes`, {tensor: name})
    if (source.shape.length < 1 || source.shape.length > MAX_DIMS) throw new FormatError('gguf.dims', `tensor ${name} has ${source.shape.length} dimensions (expected 1-${MAX_DIMS})`, {tensor: name})
    const ne = [...source.shape].reverse()
    const byteLength = tensorBytes(name, type, ne)
    h.string(name)
    h.u32(ne.length)
    for (const d of ne) h.u64(d)
    h.u32(GGML_TYPE[type])
    h.u64(offset)
    planned.push({input, offset, byteLength})
    offset = alignUp(offset + byteLength, alignment)
  }
  const headerLength = alignUp(h.length, alignment)
  h.bytes(new Uint8Array(headerLength - h.length))
  return {header: h.concat(), alignment, tensors: planned, size: headerLength + offset}
}

/**
 * Chunks of a tensor's on-disk bytes: cast for float types, whole blocks quantized by the type's
 * scheme. Quantization runs on the worker pool (src/pool), results in order, and casts in this
 * thread: the same bytes for any thread count.
 */
async function* encodedChunks(input: GgufTensorInput, chunkBytes = CHUNK_BYTES, buffer?: Uint8Array): AsyncGenerator<Uint8Array> {
  const {type, source} = input
  if (input.stored) {
    const rows = source.shape.length === 1 ? 1 : source.shape[0]!
    const rowBytes = tensorBytes(input.name, type, [...source.shape].reverse()) / rows
    const step = Math.max(1, Math.floor(chunkBytes / rowBytes))
    for (let r0 = 0; r0 < rows; r0 += step) yield await input.stored(r0, Math.min(rows, r0 + step))
    return
  }
  const size = dtypeSize(source.dtype)
  if (!isQuantType(type)) {
    // In this thread, into one reused buffer when the source reads into buffers (the writer is done
    // with a chunk before it asks for the next): no allocation per chunk. A cast on the pool costs more
    // in messages than the cast itself (bench/RESULTS.md, "The pool's per-task cost").
    yield* readChunksInto(castRecord(source, type), Math.max(4, Math.floor(chunkBytes / 4) * 4), buffer)
    return
  }
  const scheme = GGML_QUANT_SCHEME[type]
  schemeFor(scheme)
  const block = GGML_BLOCK[type].elements
  const elements = source.byteLength / size
  const step = Math.max(block, Math.floor(chunkBytes / 4 / block) * block)
  async function* tasks(): AsyncGenerator<EncodeTask | EncodeFileTask> {
    // A file-backed source is read by the workers (encodeFile); else read here into a spare buffer
    // that the finished task gives back (a worker's, or this thread's on 1 thread).
    for (let first = 0; first < elements; first += step) yield await encodeTaskOf(source, scheme, {}, first, 1, Math.min(step, elements - first))
  }
  // Each task's blocks are written into a slot of shared memory, free again once the writer has
  // written them (FileWriter: the caller's buffer is free once write resolves): mapSlotted.
  for await (const encoded of mapSlotted(quantizerSlots(), tasks())) yield encoded.blocks!
}

/** Stream the planned file into `file` (which must not exist). Returns the bytes written. */
export async function* writeGguf(file: string, plan: GgufPlan): AsyncGenerator<ProgressEvent, number> {
  const writer = await FileWriter.create(file)
  const totalBytes = plan.size
  try {
    await writer.write(plan.header)
    const buffer = new Uint8Array(CHUNK_BYTES)
    let index = 0
    for (const t of plan.tensors) {
      const start = writer.position
      if (start !== plan.header.byteLength + t.offset) throw new FormatError('gguf.plan', `tensor ${t.input.name} would start at ${start}, not at its planned offset`, {tensor: t.input.name})
      let written = 0
      for await (const chunk of encodedChunks(t.input, CHUNK_BYTES, buffer)) {
        await writer.write(chunk)
        written += chunk.byteLength
        yield {type: 'bytes', bytesDone: writer.position, totalBytes}
      }
      if (written !== t.byteLength) throw new FormatError('gguf.short_write', `tensor ${t.input.name} produced ${written} bytes, expected ${t.byteLength}`, {tensor: t.input.name})
      const padded = alignUp(written, plan.alignment)
      await writer.write(new Uint8Array(padded - written))
      yield {type: 'tensor', name: t.input.name, index: ++index, total: plan.tensors.length, bytesDone: writer.position, totalBytes}
    }
    await writer.close()
  } catch (error) {
    await writer.abort()
    throw error
  }
  return plan.size
}
