/**
 * Streaming ONNX writer. The whole ModelProto is planned from names, dtypes and shapes first; the
 * graph (small) is encoded with protobufjs, and each initializer's bytes are streamed straight
 * into the file, either as the TensorProto's `raw_data` field (protobuf fields may come in any
 * order, and every message length is known in advance) or into an external data file at a
 * planned offset. Memory stays bounded by WRITE_BEHIND chunks whatever the model size.
 */
import {type onnx as P} from 'onnx-proto'
import {FormatError} from '../../errors.js'
import {FileWriter} from '../../io/file.js'
import {CHUNK_BYTES, readChunksInto, readViewOf, type TensorRecord} from '../../tensor/record.js'
import {type ProgressEvent} from '../types.js'
import {type GraphBuilder, lengthDelimitedTag, onnx, onnxDtype, varint} from './builder.js'
import {IR_VERSION, OPSET} from './graph.js'

/** protobuf messages (and so a self-contained .onnx file) cannot exceed 2 GiB - 1. */
export const PROTOBUF_LIMIT = 2 ** 31 - 1
/** External data offsets are aligned like onnx's own saver does, so runtimes can mmap them. */
export const EXTERNAL_ALIGNMENT = 4096
const GRAPH_FIELD = 7
const INITIALIZER_FIELD = 5
const RAW_DATA_FIELD = 9
/**
 * Chunks written behind the reads (CHUNK_BYTES each). 32 (about one 1.1B matrix's window of writes,
 * queued while the next window is built) was no faster than 2 on the loaded 2 shared cores, and its
 * 30 MB more would take 3B `--variants` past 300 MB (bench/RESULTS.md, branch onnxfloat).
 */
export const WRITE_BEHIND = 4

export interface OnnxPlan {
  /** Bytes of the .onnx file. */
  modelBytes: number
  /** Bytes of the external data file (0 when inline). */
  dataBytes: number
  external: boolean
  write(modelFile: string, dataFile: string | undefined): AsyncGenerator<ProgressEvent, void>
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  return Buffer.concat(parts)
}

/**
 * The bytes of `record` in chunks: views of its own memory where it has them (a transposed matrix's
 * window), else read into `ring` (from buffer `from` on). `settled`: the writes of what was yielded.
 */
async function* chunksOf(record: TensorRecord, ring: readonly Uint8Array[], from: number, settled: () => Promise<void>): AsyncGenerator<Uint8Array> {
  const view = readViewOf(record)
  if (!view) {
    yield* readChunksInto(record, CHUNK_BYTES, [...ring.slice(from), ...ring.slice(0, from)])
    return
  }
  for (let at = 0; at < record.byteLength;) {
    const bytes = await view(at, Math.min(record.byteLength, at + CHUNK_BYTES), settled)
    at += bytes.byteLength
    yield bytes
  }
}

/**
 * Plan a model file for `graph`, with `sources` giving each initializer's bytes. `external`
 * names the data file (relative to the model file) or is undefined for raw_data in the model.
 */
export function planOnnx(graph: GraphBuilder, sources: ReadonlyMap<string, TensorRecord>, external: string | undefined, producerVersion: string): OnnxPlan {
  for (const init of graph.initializers) {
    const source = sources.get(init.name)
    if (!source) throw new FormatError('onnx.initializer', `no tensor for ONNX initializer ${init.name}`, {tensor: init.name})
    if (source.byteLength !== init.byteLength || source.dtype !== init.dtype) {
      throw new FormatError('onnx.initializer', `tensor ${init.name}: ${source.dtype} ${source.byteLength} bytes, graph expects ${init.dtype} ${init.byteLength} bytes`, {tensor: init.name})
    }
  }
  const modelHead = onnx.ModelProto.encode({
    irVersion: IR_VERSION,
    producerName: 'openelm',
    producerVersion,
    opsetImport: [{domain: '', version: OPSET}, ...graph.domains.map((domain) => ({domain, version: 1}))],
    metadataProps: Object.entries(graph.metadata).map(([key, value]) => ({key, value})),
  }).finish()
  const graphHead = onnx.GraphProto.encode(graph.graphProto()).finish()

  // Per initializer: the encoded TensorProto minus raw_data, plus where its bytes go.
  let dataOffset = 0
  const entries = graph.initializers.map((init) => {
    const tensor: P.ITensorProto = {dims: [...init.shape], dataType: onnxDtype(init.dtype), name: init.name}
    let dataStart = 0
    if (external !== undefined) {
      dataStart = Math.ceil(dataOffset / EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT
      dataOffset = dataStart + init.byteLength
      tensor.externalData = [
        {key: 'location', value: external},
        {key: 'offset', value: String(dataStart)},
        {key: 'length', value: String(init.byteLength)},
      ]
      tensor.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL
    }
    const head = onnx.TensorProto.encode(tensor).finish()
    const rawPrefix = external === undefined ? concat([lengthDelimitedTag(RAW_DATA_FIELD), varint(init.byteLength)]) : new Uint8Array(0)
    const tensorBytes = head.byteLength + rawPrefix.byteLength + (external === undefined ? init.byteLength : 0)
    const prefix = concat([lengthDelimitedTag(INITIALIZER_FIELD), varint(tensorBytes), head, rawPrefix])
    return {init, prefix, dataStart, inlineBytes: prefix.byteLength + (external === undefined ? init.byteLength : 0)}
  })
  const graphBytes = graphHead.byteLength + entries.reduce((n, e) => n + e.inlineBytes, 0)
  const graphPrefix = concat([lengthDelimitedTag(GRAPH_FIELD), varint(graphBytes)])
  const modelBytes = modelHead.byteLength + graphPrefix.byteLength + graphBytes
  const totalBytes = entries.reduce((n, e) => n + e.init.byteLength, 0)

  return {
    modelBytes,
    dataBytes: dataOffset,
    external: external !== undefined,
    async* write(modelFile, dataFile) {
      yield {type: 'start', total: entries.length, totalBytes, label: 'writing onnx'}
      const model = await FileWriter.create(modelFile)
      const data = external !== undefined && dataFile ? await FileWriter.create(dataFile) : undefined
      // Writes run one after another in the background (a FileWriter takes one write at a time: its
      // small writes share one pending buffer) from a ring of WRITE_BEHIND chunk buffers, while this
      // thread reads (casts, transposes) the next chunks: the disk keeps writing while a transposed
      // matrix's window is being built.
      let tail: Promise<void> = Promise.resolve()
      const enqueue = (writer: FileWriter, bytes: Uint8Array): Promise<void> => {
        const written = tail.then(() => writer.write(bytes))
        written.catch(() => undefined) // awaited later (its slot, or the tail); never an unhandled rejection meanwhile
        tail = written
        return written
      }
      try {
        enqueue(model, modelHead)
        enqueue(model, graphPrefix)
        enqueue(model, graphHead)
        let done = 0
        // Chunk k goes into ring[k mod WRITE_BEHIND]; its write is awaited before chunk k + WRITE_BEHIND is read.
        const ring = Array.from({length: WRITE_BEHIND}, () => new Uint8Array(CHUNK_BYTES))
        const busy: Array<Promise<void> | undefined> = []
        let k = 0
        let dataAt = 0
        for (const [index, entry] of entries.entries()) {
          enqueue(model, entry.prefix)
          const target = data ?? model
          if (data && dataAt < entry.dataStart) enqueue(data, new Uint8Array(entry.dataStart - dataAt))
          let written = 0
          for await (const chunk of chunksOf(sources.get(entry.init.name)!, ring, k % WRITE_BEHIND, () => tail)) {
            busy[k % WRITE_BEHIND] = enqueue(target, chunk)
            k++
            await busy[k % WRITE_BEHIND]
            busy[k % WRITE_BEHIND] = undefined
            written += chunk.byteLength
            yield {type: 'bytes', bytesDone: done + written, totalBytes}
          }
          if (written !== entry.init.byteLength) {
            throw new FormatError('onnx.initializer', `tensor ${entry.init.name}: source gave ${written} bytes, expected ${entry.init.byteLength}`, {tensor: entry.init.name})
          }
          done += written
          dataAt = entry.dataStart + written
          yield {type: 'tensor', name: entry.init.name, index: index + 1, total: entries.length, bytesDone: done, totalBytes}
        }
        await tail
        if (model.position !== modelBytes) throw new FormatError('onnx.plan', `wrote ${model.position} model bytes, planned ${modelBytes}`)
        await model.close()
        await data?.close()
      } catch (error) {
        await tail.catch(() => undefined)
        await model.abort()
        await data?.abort()
        throw error
      }
    },
  }
}

