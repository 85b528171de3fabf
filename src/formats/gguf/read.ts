/**
 * Validating GGUF reader. Every count, length and offset is checked against the file size before
 * it is trusted; 64-bit fields stay bigint until checked. Tensor data is read lazily.
 */
import {FormatError, quote} from '../../errors.js'
import {RandomAccessFile} from '../../io/file.js'
import {type DType} from '../../tensor/dtype.js'
import {type TensorRecord} from '../../tensor/record.js'
import {schemeFor, SCHEMES} from '../../quant/index.js'
import {
  GGML_BLOCK, GGML_QUANT_SCHEME, GGML_TYPE, GGML_TYPE_NAMES, type GgmlQuantType, isQuantType, GGUF_MAGIC, GGUF_VERSION, GGUF_DEFAULT_ALIGNMENT, type GgmlTypeName, type GgufArray, type GgufHeader,
  type GgufKv, type GgufScalar, type GgufTensorInfo, type GgufValue, type GgufValueTypeName, KNOWN_GGML_TYPES, SCALAR_SIZES,
  VALUE_TYPE_NAMES,
} from './types.js'

/** First read of a file; grown by doubling when the header is longer. */
const FIRST_READ_BYTES = 1 << 20
/** A header beyond this is hostile: a 256k-token vocabulary needs about 10 MB. */
export const MAX_HEADER_BYTES = 512 * 1024 * 1024
/** ggml's GGML_MAX_DIMS. */
export const MAX_DIMS = 4
/** ggml's GGML_MAX_NAME (64) includes the terminating NUL. */
export const MAX_TENSOR_NAME_BYTES = 63
/** Nested arrays deeper than this are hostile (each level costs a stack frame). */
export const MAX_ARRAY_DEPTH = 8
/** Smallest possible encodings, used to bound counts by the bytes left in the file. */
const MIN_KV_BYTES = 8 + 4 + 1 // key length, value type, 1-byte value
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8 // name length, n_dims, one dim, type, offset
const INT64_MAX = (1n << 63n) - 1n

/** ignoreBOM: a string that starts with U+FEFF keeps it (LLaMA-2's token 30143 is "\ufeff"). */
const UTF8 = new TextDecoder('utf-8', {fatal: true, ignoreBOM: true})

/** Thrown internally when the header runs past the bytes read so far (but not past the file). */
class NeedMoreBytes extends Error {}

class Cursor {
  pos = 0
  private readonly view: DataView
  constructor(private readonly bytes: Uint8Array, private readonly fileSize: number, readonly file: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  /** Bytes left in the file after the cursor. */
  get remaining(): number {
    return this.fileSize - this.pos
  }

  need(n: number, what: string): void {
    if (this.pos + n <= this.bytes.byteLength) return
    if (this.pos + n > this.fileSize) {
      throw new FormatError('gguf.truncated', `${this.file}: ${what} at offset ${this.pos} runs past the end of the file (${this.fileSize} bytes)`, {path: this.file, field: what})
    }
    throw new NeedMoreBytes()
  }

  u8(what: string): number { this.need(1, what); return this.view.getUint8(this.pos++) }
  i8(what: string): number { this.need(1, what); return this.view.getInt8(this.pos++) }
  u16(what: string): number { this.need(2, what); const v = this.view.getUint16(this.pos, true); this.pos += 2; return v }
  i16(what: string): number { this.need(2, what); const v = this.view.getInt16(this.pos, true); this.pos += 2; return v }
  u32(what: string): number { this.need(4, what); const v = this.view.getUint32(this.pos, true); this.pos += 4; return v }
  i32(what: string): number { this.need(4, what); const v = this.view.getInt32(this.pos, true); this.pos += 4; return v }
  f32(what: string): number { this.need(4, what); const v = this.view.getFloat32(this.pos, true); this.pos += 4; return v }
  f64(what: string): number { this.need(8, what); const v = this.view.getFloat64(this.pos, true); this.pos += 8; return v }
  u64(what: string): bigint { this.need(8, what); const v = this.view.getBigUint64(this.pos, true); this.pos += 8; return v }
  i64(what: string): bigint { this.need(8, what); const v = this.view.getBigInt64(this.pos, true); this.pos += 8; return v }

  /** A count that must fit in what is left of the file, each item taking at least `minBytes`. */
  count(what: string, minBytes: number): number {
    const at = this.pos
    const n = this.u64(what)
    if (n * BigInt(minBytes) > BigInt(this.remaining)) {
      throw new FormatError('gguf.count', `${this.file}: ${what} ${n} at offset ${at} needs at least ${n * BigInt(minBytes)} bytes, but only ${this.remaining} remain`, {path: this.file, field: what})
    }
    return Number(n)
  }

  string(what: string): string {
    const length = this.count(`${what} length`, 1)
    this.need(length, what)
    const bytes = this.bytes.subarray(this.pos, this.pos + length)
    this.pos += length
    let text: string
    try {
      text = UTF8.decode(bytes)
    } catch {
      throw new FormatError('gguf.utf8', `${this.file}: ${what} at offset ${this.pos - length} is not valid UTF-8`, {path: this.file, field: what})
    }
    return text
  }
}

function valueTypeName(type: number, file: string, what: string): GgufValueTypeName {
  const name = VALUE_TYPE_NAMES[type]
  if (name === undefined) throw new FormatError('gguf.value_type', `${file}: ${what} has unknown value type ${type} (expected 0-12)`, {path: file, field: what})
  return name
}

function readScalar(c: Cursor, type: GgufValueTypeName, what: string): GgufScalar {
  switch (type) {
    case 'UINT8': return c.u8(what)
    case 'INT8': return c.i8(what)
    case 'UINT16': return c.u16(what)
    case 'INT16': return c.i16(what)
    case 'UINT32': return c.u32(what)
    case 'INT32': return c.i32(what)
    case 'FLOAT32': return c.f32(what)
    case 'FLOAT64': return c.f64(what)
    case 'UINT64': return c.u64(what)
    case 'INT64': return c.i64(what)
    case 'STRING': return c.string(what)
    case 'BOOL': {
      const at = c.pos
      const b = c.u8(what)
      if (b > 1) throw new FormatError('gguf.bool', `${c.file}: ${what} at offset ${at} is a BOOL with value ${b} (expected 0 or 1)`, {path: c.file, field: what})
      return b === 1
    }
    case 'ARRAY': throw new Error('unreachable: arrays are read by readValue')
  }
}

function readValue(c: Cursor, type: GgufValueTypeName, what: string, depth: number, file: string): GgufValue {
  if (type !== 'ARRAY') return readScalar(c, type, what)
  if (depth >= MAX_ARRAY_DEPTH) throw new FormatError('gguf.array_depth', `${file}: ${what} nests arrays deeper than ${MAX_ARRAY_DEPTH}`, {path: file, field: what})
  const itemType = valueTypeName(c.u32(`${what} item type`), file, what)
  // STRING items take 8 bytes (their length), ARRAY items 12 (type + count).
  const minItem = itemType === 'STRING' ? 8 : itemType === 'ARRAY' ? 12 : SCALAR_SIZES[itemType]!
  const n = c.count(`${what} array length`, minItem)
  const items: (GgufScalar | GgufArray)[] = new Array(n)
  for (let i = 0; i < n; i++) items[i] = readValue(c, itemType, what, depth + 1, file)
  return {itemType, items}
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment
}

/** Byte size of a tensor of `type` with ggml dims `ne`, checking block divisibility. */
export function tensorBytes(name: string, type: GgmlTypeName, ne: readonly number[]): number {
  const block = GGML_BLOCK[type]
  if (ne[0]! % block.elements !== 0) {
    throw new FormatError('gguf.block', `tensor ${name}: row length ${ne[0]} is not a multiple of the ${type} block size ${block.elements}`, {tensor: name})
  }
  return (ne.reduce((a, b) => a * b, 1) / block.elements) * block.bytes
}

/**
 * Parse and validate a header from the first bytes of a file of `fileSize` bytes. Throws
 * NeedMoreBytes (internal) when `bytes` ends before the header does.
 */
function parseHeaderBytes(bytes: Uint8Array, fileSize: number, file: string): GgufHeader {
  const c = new Cursor(bytes, fileSize, file)
  if (fileSize < 4) throw new FormatError('gguf.truncated', `${file}: ${fileSize} bytes is too short for a GGUF file`, {path: file})
  const magic = c.u32('magic')
  if (magic !== GGUF_MAGIC) {
    const shown = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ')
    throw new FormatError('gguf.magic', `${file}: not a GGUF file (magic bytes ${shown}, expected 47 47 55 46 "GGUF")`, {path: file})
  }
  const version = c.u32('version')
  if (version !== GGUF_VERSION) {
    throw new FormatError('gguf.version', `${file}: GGUF version ${version} is not supported (expected ${GGUF_VERSION})`, {path: file})
  }
  const tensorCountAt = c.pos
  const tensorCount = c.u64('tensor_count')
  if (tensorCount * BigInt(MIN_TENSOR_INFO_BYTES) > BigInt(c.remaining)) {
    throw new FormatError('gguf.count', `${file}: tensor_count ${tensorCount} at offset ${tensorCountAt} cannot fit in the ${c.remaining} bytes left`, {path: file, field: 'tensor_count'})
  }
  const kvCountAt = c.pos
  const kvCount = c.u64('metadata_kv_count')
  if (kvCount * BigInt(MIN_KV_BYTES) > BigInt(c.remaining)) {
    throw new FormatError('gguf.count', `${file}: metadata_kv_count ${kvCount} at offset ${kvCountAt} cannot fit in the ${c.remaining} bytes left`, {path: file, field: 'metadata_kv_count'})
  }

  const metadata: GgufKv[] = []
  const keys = new Set<string>()
  for (let i = 0; i < Number(kvCount); i++) {
    const key = c.string(`metadata key #${i}`)
    if (keys.has(key)) throw new FormatError('gguf.duplicate_key', `${file}: metadata key ${quote(key)} appears twice`, {path: file, field: key})
    keys.add(key)
    const type = valueTypeName(c.u32(`"${key}" value type`), file, `"${key}"`)
    metadata.push({key, type, value: readValue(c, type, `"${key}"`, 0, file)})
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT
  const alignKv = metadata.find((kv) => kv.key === 'general.alignment')
  if (alignKv) {
    const a = alignKv.value
    if (alignKv.type !== 'UINT32' || typeof a !== 'number' || a === 0 || (a & (a - 1)) !== 0) {
      throw new FormatError('gguf.alignment', `${file}: general.alignment must be a UINT32 power of two, got ${alignKv.type} ${String(a)}`, {path: file, field: 'general.alignment'})
    }
    alignment = a
  }

  const tensorInfos: GgufTensorInfo[] = []
  const names = new Set<string>()
  for (let i = 0; i < Number(tensorCount); i++) {
    const name = c.string(`tensor #${i} name`)
    if (Buffer.byteLength(name) > MAX_TENSOR_NAME_BYTES) {
      throw new FormatError('gguf.tensor_name', `${file}: tensor name ${quote(name)} is ${Buffer.byteLength(name)} bytes (limit ${MAX_TENSOR_NAME_BYTES})`, {path: file, tensor: name})
    }
    if (names.has(name)) throw new FormatError('gguf.duplicate_tensor', `${file}: tensor ${name} appears twice`, {path: file, tensor: name})
    names.add(name)
    const nDims = c.u32(`tensor ${name} n_dimensions`)
    if (nDims < 1 || nDims > MAX_DIMS) {
      throw new FormatError('gguf.dims', `${file}: tensor ${name} has ${nDims} dimensions (expected 1-${MAX_DIMS})`, {path: file, tensor: name})
    }
    const dimensions: bigint[] = []
    let elements = 1n
    for (let d = 0; d < nDims; d++) {
      const ne = c.u64(`tensor ${name} dimension ${d}`)
      if (ne > INT64_MAX) throw new FormatError('gguf.dims_overflow', `${file}: tensor ${name} dimension ${d} is ${ne}, above INT64_MAX`, {path: file, tensor: name})
      elements *= ne
      if (elements > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new FormatError('gguf.dims_overflow', `${file}: tensor ${name} dimensions [${[...dimensions, ne].join(', ')}] overflow (more than 2^53 elements)`, {path: file, tensor: name})
      }
      dimensions.push(ne)
    }
    const type = c.u32(`tensor ${name} type`)
    const offset = c.u64(`tensor ${name} offset`)
    tensorInfos.push({name, n_dimensions: nDims, dimensions, type, offset})
  }

  const dataOffset = alignUp(c.pos, alignment)
  const dataBytes = fileSize - dataOffset
  const spans: {name: string; start: bigint; end: bigint}[] = []
  for (const info of tensorInfos) {
    const typeName = GGML_TYPE_NAMES[info.type]
    if (typeName === undefined || !decodable(typeName)) {
      const known = KNOWN_GGML_TYPES[info.type]
      if (known) throw new FormatError('gguf.unsupported_type', `${file}: tensor ${info.name} has ggml type ${known} (${info.type}), which this tool cannot decode (supported: ${SUPPORTED_TYPES().join(', ')})`, {path: file, tensor: info.name, type: known})
      throw new FormatError('gguf.unknown_type', `${file}: tensor ${info.name} has unknown ggml type ${info.type}`, {path: file, tensor: info.name})
    }
    if (info.offset % BigInt(alignment) !== 0n) {
      throw new FormatError('gguf.misaligned', `${file}: tensor ${info.name} offset ${info.offset} is not a multiple of the alignment ${alignment}`, {path: file, tensor: info.name})
    }
    const size = BigInt(tensorBytes(info.name, typeName, info.dimensions.map(Number)))
    if (info.offset + size > BigInt(Math.max(0, dataBytes))) {
      throw new FormatError('gguf.out_of_bounds', `${file}: tensor ${info.name} data [${info.offset}, ${info.offset + size}) runs past the end of the data section (${Math.max(0, dataBytes)} bytes)`, {path: file, tensor: info.name})
    }
    spans.push({name: info.name, start: info.offset, end: info.offset + size})
  }
  spans.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0))
  for (let i = 1; i < spans.length; i++) {
    if (spans[i]!.start < spans[i - 1]!.end) {
      throw new FormatError('gguf.overlap', `${file}: tensors ${spans[i - 1]!.name} and ${spans[i]!.name} overlap`, {path: file, tensor: spans[i]!.name})
    }
  }
  // gguf-py and llama.cpp pack tensor data back to back, each padded to the alignment: bytes no
  // tensor accounts for mean a tensor's type or shape was changed to a smaller one.
  const align = BigInt(alignment)
  spans.forEach((span, i) => {
    const expected = i === 0 ? 0n : ((spans[i - 1]!.end + align - 1n) / align) * align
    if (span.start !== expected) {
      throw new FormatError('gguf.gap', `${file}: tensor ${span.name} starts at data offset ${span.start}, but the previous tensor's data ends at ${i === 0 ? 0n : spans[i - 1]!.end} (${span.start - expected} bytes unaccounted for: a tensor's type or shape does not match its data)`, {path: file, tensor: span.name})
    }
  })
  const last = spans.at(-1)
  if (last && BigInt(dataBytes) > ((last.end + align - 1n) / align) * align) {
    throw new FormatError('gguf.gap', `${file}: the data section has ${BigInt(dataBytes) - last.end} bytes after the last tensor ${last.name} (more than the alignment padding: a tensor's type or shape does not match its data)`, {path: file, tensor: last.name})
  }
  return {version, tensor_count: tensorCount, metadata_kv_count: kvCount, metadata, tensorInfos, alignment, dataOffset, fileSize}
}

/** Parse a header held entirely in memory (tests, tools). */
export function parseGgufHeader(bytes: Uint8Array, file = '<buffer>'): GgufHeader {
  return parseHeaderBytes(bytes, bytes.byteLength, file)
}

/** Read the header of an open file, growing the read until the header fits. */
async function readHeader(f: RandomAccessFile): Promise<GgufHeader> {
  let length = Math.min(f.size, FIRST_READ_BYTES)
  for (;;) {
    const bytes = await f.read(0, length)
    try {
      return parseHeaderBytes(bytes, f.size, f.path)
    } catch (error) {
      if (!(error instanceof NeedMoreBytes)) throw error
    }
    if (length >= MAX_HEADER_BYTES) {
      throw new FormatError('gguf.header_size', `${f.path}: GGUF header is larger than ${MAX_HEADER_BYTES} bytes`, {path: f.path})
    }
    length = Math.min(f.size, length * 2, MAX_HEADER_BYTES)
  }
}

export interface GgufTensor {
  info: GgufTensorInfo
  type: GgmlTypeName
  /** Row-major shape (the reverse of the ggml dims). */
  shape: number[]
  /** Bytes as stored. */
  byteLength: number
  /** Absolute file offset of the data. */
  fileOffset: number
}

export interface GgufFile {
  path: string
  header: GgufHeader
  /** Metadata by key, in file order. */
  kv: Map<string, GgufKv>
  tensors: GgufTensor[]
  /** A lazy record of the tensor as floats: F32/F16/BF16 as stored, quantized types dequantized to F32. */
  record(tensor: GgufTensor, name?: string): TensorRecord
  /** The stored bytes, unchanged. */
  readRaw(tensor: GgufTensor, start?: number, end?: number): Promise<Uint8Array>
  close(): Promise<void>
}

/**
 * gguf-py and llama.cpp pad each tensor's data to the alignment with zero bytes. Padding that is
 * not zero means a tensor was relabelled to a smaller type or shape within its padding (an F32
 * norm read as F16 would otherwise be accepted, half its bytes left over as "padding").
 */
async function checkPadding(f: RandomAccessFile, alignment: number, tensors: readonly GgufTensor[]): Promise<void> {
  const sorted = [...tensors].sort((a, b) => a.fileOffset - b.fileOffset)
  for (const t of sorted) {
    const end = t.fileOffset + t.byteLength
    const padded = Math.min(f.size, Math.ceil(end / alignment) * alignment)
    if (padded <= end) continue
    const pad = await f.read(end, padded - end)
    if (pad.some((b) => b !== 0)) {
      throw new FormatError('gguf.padding', `${f.path}: the ${padded - end} padding bytes after tensor ${quote(t.info.name)} are not zero (its type or shape does not match its data)`, {path: f.path, tensor: t.info.name})
    }
  }
}

export async function openGguf(p: string): Promise<GgufFile> {
  const f = await RandomAccessFile.open(p)
  let header: GgufHeader
  try {
    header = await readHeader(f)
  } catch (error) {
    await f.close()
    throw error
  }
  const tensors: GgufTensor[] = header.tensorInfos.map((info) => {
    const type = GGML_TYPE_NAMES[info.type]!
    const ne = info.dimensions.map(Number)
    return {info, type, shape: [...ne].reverse(), byteLength: tensorBytes(info.name, type, ne), fileOffset: header.dataOffset + Number(info.offset)}
  })
  try {
    await checkPadding(f, header.alignment, tensors)
  } catch (error) {
    await f.close()
    throw error
  }
  const readRaw = (t: GgufTensor, start = 0, end = t.byteLength) => f.read(t.fileOffset + start, end - start)
  return {
    path: p,
    header,
    kv: new Map(header.metadata.map((kv) => [kv.key, kv])),
    tensors,
    readRaw,
    record: (t, name = t.info.name) => (isQuantType(t.type) ? quantRecord(t, name, readRaw) : plainRecord(t, name, readRaw)),
    close: () => f.close(),
  }
}

function plainRecord(t: GgufTensor, name: string, readRaw: GgufFile['readRaw']): TensorRecord {
  return {name, dtype: t.type as DType, shape: t.shape, byteLength: t.byteLength, read: (start, end) => readRaw(t, start, end)}
}

/** A quantized type dequantized lazily to F32 by its scheme: a byte range reads only the blocks it covers. */
function quantRecord(t: GgufTensor, name: string, readRaw: GgufFile['readRaw']): TensorRecord {
  const {elements: perBlock, bytes: blockBytes} = GGML_BLOCK[t.type]
  const scheme = schemeFor(GGML_QUANT_SCHEME[t.type as GgmlQuantType])
  const byteLength = t.shape.reduce((a, b) => a * b, 1) * 4
  return {
    name, dtype: 'F32', shape: t.shape, byteLength,
    async read(start = 0, end = byteLength) {
      const firstBlock = Math.floor(start / 4 / perBlock)
      const lastBlock = Math.ceil(end / 4 / perBlock)
      const raw = await readRaw(t, firstBlock * blockBytes, lastBlock * blockBytes)
      const count = (lastBlock - firstBlock) * perBlock
      const values = scheme.decode({blocks: raw}, 1, count, {})
      const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength)
      const skip = start - firstBlock * perBlock * 4
      return bytes.subarray(skip, skip + (end - start))
    },
  }
}

/** Whether this build reads a ggml type: the float types, and each quantized type whose scheme is registered. */
function decodable(type: GgmlTypeName): boolean {
  return !isQuantType(type) || Object.hasOwn(SCHEMES, GGML_QUANT_SCHEME[type])
}

const SUPPORTED_TYPES = () => (Object.keys(GGML_TYPE) as GgmlTypeName[]).filter(decodable)

/** A metadata value as a plain JS value (arrays flattened to JS arrays), for reports. */
export function plainValue(value: GgufValue): unknown {
  if (typeof value === 'object') return value.items.map(plainValue)
  return value
}
