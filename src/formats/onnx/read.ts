/**
 * Reads the initializers of an ONNX model without loading it: a protobuf scanner walks
 * ModelProto.graph (field 7) → GraphProto.initializer (field 5) in the file, decodes each
 * TensorProto's small fields and records where its `raw_data` (field 9) lies, or its external
 * data location/offset/length. Tensors become lazy records reading straight from the files.
 */
import path from 'node:path'
import {FormatError, quote, shown} from '../../errors.js'
import {RandomAccessFile} from '../../io/file.js'
import {type DType, dtypeSize} from '../../tensor/dtype.js'
import {formatShape, numel, type TensorRecord, withReadInto} from '../../tensor/record.js'
import {dtypeFromOnnx} from './builder.js'

const WIRE_VARINT = 0
const WIRE_FIXED64 = 1
const WIRE_LEN = 2
const WIRE_FIXED32 = 5
/** Protobuf strings keep a leading U+FEFF (it is a character of the name, not a byte-order mark). */
const UTF8 = new TextDecoder('utf-8', {ignoreBOM: true})
/** A TensorProto's non-data fields are small; anything bigger is not a sane header. */
const MAX_TENSOR_HEADER_BYTES = 1 << 20
/** Window read at a time while scanning field tags. */
const SCAN_WINDOW = 64 * 1024

export interface OnnxInitializer extends TensorRecord {
  /** raw_data in the model file, or external data. */
  storage: 'raw_data' | 'external'
  /** Where external data lies. */
  externalSpan?: {file: string; offset: number; length: number}
}

export interface OnnxFile {
  path: string
  size: number
  initializers: OnnxInitializer[]
  externalFiles: string[]
  irVersion?: number
  /** ModelProto.metadata_props. */
  metadata: Record<string, string>
  close(): Promise<void>
}

/** Positional protobuf scanner over a file region. */
class Scanner {
  private window: Uint8Array = new Uint8Array(0)
  private windowStart = 0

  constructor(private readonly file: RandomAccessFile, public pos: number, readonly end: number) {}

  private async byteAt(p: number): Promise<number> {
    if (p < this.windowStart || p >= this.windowStart + this.window.byteLength) {
      const length = Math.min(SCAN_WINDOW, this.file.size - p)
      if (length <= 0) throw new FormatError('onnx.truncated', `${this.file.path}: protobuf runs past the end of the file at offset ${p}`, {path: this.file.path})
      this.window = await this.file.read(p, length)
      this.windowStart = p
    }
    return this.window[p - this.windowStart]
  }

  async varint(): Promise<number> {
    let value = 0
    let scale = 1
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw this.error('varint runs past its message')
      const b = await this.byteAt(this.pos++)
      value += (b & 0x7f) * scale
      if (b < 0x80) {
        if (!Number.isSafeInteger(value)) throw this.error('varint exceeds 2^53')
        return value
      }
      scale *= 128
    }
    throw this.error('varint longer than 10 bytes')
  }

  /** Next field: number, wire type, and for length-delimited fields the payload range. */
  async field(): Promise<{field: number; wire: number; start: number; length: number}> {
    const tag = await this.varint()
    const field = Math.floor(tag / 8)
    const wire = tag % 8
    const start = this.pos
    let length = 0
    if (wire === WIRE_VARINT) {
      await this.varint()
      return {field, wire, start, length: this.pos - start}
    }
    if (wire === WIRE_FIXED64) length = 8
    else if (wire === WIRE_FIXED32) length = 4
    else if (wire === WIRE_LEN) {
      length = await this.varint()
    } else throw this.error(`unsupported wire type ${wire} (field ${field})`)
    const payload = this.pos
    if (payload + length > this.end) throw this.error(`field ${field} (${length} bytes) runs past its message`)
    this.pos = payload + length
    return {field, wire, start: payload, length}
  }

  error(message: string): FormatError {
    return new FormatError('onnx.protobuf', `${this.file.path}: malformed ONNX protobuf at offset ${this.pos}: ${message}`, {path: this.file.path})
  }
}

/** Decode varints from an in-memory buffer (packed repeated fields, small messages). */
function decodeVarints(bytes: Uint8Array): number[] {
  const out: number[] = []
  let value = 0
  let scale = 1
  for (const b of bytes) {
    value += (b & 0x7f) * scale
    if (b < 0x80) {
      out.push(value)
      value = 0
      scale = 1
    } else scale *= 128
  }
  return out
}

interface TensorHeader {
  name: string
  dims: number[]
  dataType: number
  raw?: {offset: number; length: number}
  floatData?: {offset: number; length: number}
  external: Record<string, string>
  dataLocation: number
}

async function readTensorHeader(file: RandomAccessFile, start: number, length: number): Promise<TensorHeader> {
  const s = new Scanner(file, start, start + length)
  const header: TensorHeader = {name: '', dims: [], dataType: 0, external: {}, dataLocation: 0}
  const text = async (f: {start: number; length: number}): Promise<string> => {
    if (f.length > MAX_TENSOR_HEADER_BYTES) throw s.error(`string field of ${f.length} bytes`)
    return UTF8.decode(await file.read(f.start, f.length))
  }
  const varintAt = async (f: {start: number; length: number}): Promise<number> => decodeVarints(await file.read(f.start, f.length))[0]
  while (s.pos < s.end) {
    const f = await s.field()
    switch (f.field) {
      case 1: // dims (packed or not)
        if (f.wire === WIRE_LEN) header.dims.push(...decodeVarints(await file.read(f.start, Math.min(f.length, MAX_TENSOR_HEADER_BYTES))))
        else header.dims.push(await varintAt(f))
        break
      case 2:
        header.dataType = await varintAt(f)
        break
      case 4:
        header.floatData = {offset: f.start, length: f.length}
        break
      case 8:
        header.name = await text(f)
        break
      case 9:
        header.raw = {offset: f.start, length: f.length}
        break
      case 13: { // StringStringEntryProto {key = 1, value = 2}
        const entry = new Scanner(file, f.start, f.start + f.length)
        let key = ''
        let value = ''
        while (entry.pos < entry.end) {
          const e = await entry.field()
          if (e.field === 1) key = await text(e)
          else if (e.field === 2) value = await text(e)
        }
        header.external[key] = value
        break
      }
      case 14:
        header.dataLocation = await varintAt(f)
        break
      default:
        break
    }
  }
  return header
}

/** A StringStringEntryProto {key = 1, value = 2} (metadata_props). */
async function stringEntry(file: RandomAccessFile, f: {start: number; length: number}): Promise<{key: string; value: string}> {
  const s = new Scanner(file, f.start, f.start + f.length)
  let key = ''
  let value = ''
  while (s.pos < s.end) {
    const e = await s.field()
    if (e.length > MAX_TENSOR_HEADER_BYTES) throw s.error(`string field of ${e.length} bytes`)
    const text = e.wire === WIRE_LEN ? UTF8.decode(await file.read(e.start, e.length)) : ''
    if (e.field === 1) key = text
    else if (e.field === 2) value = text
  }
  return {key, value}
}

/** Open an .onnx file and describe its initializers as lazy records. */
export async function openOnnx(modelPath: string): Promise<OnnxFile> {
  const file = await RandomAccessFile.open(modelPath)
  const dataFiles = new Map<string, RandomAccessFile>()
  const close = async (): Promise<void> => {
    await file.close()
    for (const f of dataFiles.values()) await f.close()
  }
  try {
    const initializers: OnnxInitializer[] = []
    let irVersion: number | undefined
    const metadata: Record<string, string> = {}
    const top = new Scanner(file, 0, file.size)
    let sawGraph = false
    while (top.pos < top.end) {
      const f = await top.field()
      if (f.field === 1 && f.wire === WIRE_VARINT) irVersion = decodeVarints(await file.read(f.start, f.length))[0]
      if (f.field === 14 && f.wire === WIRE_LEN) {
        const entry = await stringEntry(file, f)
        metadata[entry.key] = entry.value
      }
      if (f.field !== 7 || f.wire !== WIRE_LEN) continue
      sawGraph = true
      const graph = new Scanner(file, f.start, f.start + f.length)
      while (graph.pos < graph.end) {
        const g = await graph.field()
        if (g.field !== 5 || g.wire !== WIRE_LEN) continue
        const header = await readTensorHeader(file, g.start, g.length)
        initializers.push(await initializerRecord(modelPath, file, header, dataFiles))
      }
    }
    if (!sawGraph) throw new FormatError('onnx.no_graph', `${modelPath} has no ONNX graph (is it an ONNX model?)`, {path: modelPath})
    // Writers give each initializer its own range of an external file; shared or overlapping
    // ranges mean an offset was altered and a tensor would read another's bytes.
    const spans = initializers.filter((i) => i.externalSpan).map((i) => ({name: i.name, ...i.externalSpan!})).sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : a.offset - b.offset))
    for (let i = 1; i < spans.length; i++) {
      const [a, b] = [spans[i - 1]!, spans[i]!]
      if (a.file === b.file && b.offset < a.offset + a.length) {
        throw new FormatError('onnx.external_overlap', `${modelPath}: initializers ${shown(a.name)} and ${shown(b.name)} overlap in ${quote(a.file)} ([${a.offset}, ${a.offset + a.length}) and [${b.offset}, ${b.offset + b.length}))`, {path: modelPath, tensor: b.name})
      }
    }
    const names = new Set<string>()
    for (const init of initializers) {
      if (names.has(init.name)) throw new FormatError('onnx.duplicate', `${modelPath}: initializer ${init.name} appears twice`, {path: modelPath, tensor: init.name})
      names.add(init.name)
    }
    return {path: modelPath, size: file.size, initializers, externalFiles: [...dataFiles.keys()], irVersion, metadata, close}
  } catch (error) {
    await close()
    throw error
  }
}

async function initializerRecord(modelPath: string, file: RandomAccessFile, h: TensorHeader, dataFiles: Map<string, RandomAccessFile>): Promise<OnnxInitializer> {
  const where = `${modelPath}: initializer ${h.name || '(unnamed)'}`
  const dtype: DType | undefined = dtypeFromOnnx(h.dataType)
  if (!dtype) throw new FormatError('onnx.dtype', `${where} has unsupported data_type ${h.dataType}`, {path: modelPath, tensor: h.name})
  const byteLength = numel(h.dims) * dtypeSize(dtype)
  const shape = [...h.dims]
  const mismatch = (length: number): FormatError =>
    new FormatError('onnx.size', `${where}: ${length} data bytes for shape ${formatShape(shape)} ${dtype} (expected ${byteLength})`, {path: modelPath, tensor: h.name})
  if (h.dataLocation === 1) {
    const location = h.external.location
    if (!location || path.isAbsolute(location) || location.split(/[\\/]/).includes('..')) {
      throw new FormatError('onnx.external', `${where}: external data location ${JSON.stringify(location ?? null)} must be a file name next to the model`, {path: modelPath, tensor: h.name})
    }
    // onnxruntime parses these as decimal integers; "" or "0x10" must not silently become 0 or NaN.
    const decimal = (key: 'offset' | 'length', fallback: number): number => {
      const text = h.external[key]
      if (text === undefined) return fallback
      const n = /^[0-9]{1,16}$/.test(text) ? Number(text) : Number.NaN
      if (!Number.isSafeInteger(n)) throw new FormatError('onnx.external', `${where}: external data ${key} ${quote(text)} is not a decimal byte count`, {path: modelPath, tensor: h.name, field: key})
      return n
    }
    const offset = decimal('offset', 0)
    const length = decimal('length', byteLength)
    if (length !== byteLength) throw mismatch(length)
    if (location === path.basename(modelPath)) {
      throw new FormatError('onnx.external', `${where}: external data location ${quote(location)} is the model file itself`, {path: modelPath, tensor: h.name})
    }
    const dataPath = path.join(path.dirname(modelPath), location)
    let data = dataFiles.get(location)
    if (!data) {
      data = await RandomAccessFile.open(dataPath)
      dataFiles.set(location, data)
    }
    if (offset + length > data.size) {
      throw new FormatError('onnx.external', `${where}: external data [${offset}, ${offset + length}) runs past the end of ${location} (${data.size} bytes)`, {path: modelPath, tensor: h.name})
    }
    return readingFrom(data, offset, {name: h.name, dtype, shape, byteLength, storage: 'external', externalSpan: {file: location, offset, length}})
  }
  const raw = h.raw ?? (dtype === 'F32' ? h.floatData : undefined)
  if (!raw) throw new FormatError('onnx.data', `${where} stores its values in a typed field this reader does not support (expected raw_data or external data)`, {path: modelPath, tensor: h.name})
  if (raw.length !== byteLength) throw mismatch(raw.length)
  return readingFrom(file, raw.offset, {name: h.name, dtype, shape, byteLength, storage: 'raw_data'})
}

/**
 * The initializer whose bytes lie at `offset` in `file`, with a reader into the caller's buffer: the
 * transposed records of a MatMul weight (transpose.ts) read their source band by band into one kept
 * buffer (a fresh 4 MiB band per read: some 20 GB of garbage over a 3B conversion, which the
 * allocator kept: ONNX f16 → mlx -q 4 at 3B, 365 → 304 MB peak RSS, 58 → 34 s CPU).
 */
function readingFrom(file: RandomAccessFile, offset: number, init: Omit<OnnxInitializer, 'read'>): OnnxInitializer {
  const inside = (start: number, end: number) => {
    if (start < 0 || end < start || end > init.byteLength) throw new RangeError(`${init.name}: bytes ${start}..${end} are outside the tensor (${init.byteLength} bytes)`)
  }
  const record: OnnxInitializer = {
    ...init,
    read: async (start = 0, end = init.byteLength) => {
      inside(start, end)
      return file.read(offset + start, end - start)
    },
  }
  return withReadInto(record, async (target, start) => {
    inside(start, start + target.byteLength)
    await file.readInto(target, offset + start)
  })
}
