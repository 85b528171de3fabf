/**
 * The ONNX layout transformers.js and onnxruntime load (DESIGN §4.4):
 *   config.json (HF config + "transformers.js_config"), generation_config.json, tokenizer files,
 *   onnx/model.onnx (f32) or onnx/model_fp16.onnx (f16 weights, f32 compute), with the weights in
 *   onnx/<file>_data external data when the model would pass protobuf's 2 GiB limit.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {UsageError, FormatError} from '../../errors.js'
import {atomicDir, pathExists} from '../../io/atomic.js'
import {writeJsonFile} from '../../io/file.js'
import {generationConfigJson, toHfConfigJson} from '../../model/config.js'
import {originConfigKeys} from '../../model/origin.js'
import {type FloatDType} from '../../tensor/dtype.js'
import {castRecord, f32Record, renamed, type TensorRecord} from '../../tensor/record.js'
import {copyTokenizerFiles, readerCheckpoint, remoteCodeFor, resolveConfig} from '../common.js'
import {tokenizerFilesFor, writeTokenizerFiles} from '../tokenizer.js'
import {type Checkpoint, type FormatAdapter, type StoredTensor, type ProgressEvent, type ReadOptions, type WriteOptions, type WriteResult} from '../types.js'
import {int8Records, int8Segment, int8WindowBytes, dequantizedInt8, dequantizedQ4, q4Records, q4Segment, SharedCodes, SharedSlots, slotCount, stepResultBytes, transposedInt8Records} from './int8.js'
import {threadCount} from '../../pool/index.js'
import {q4Blocks} from '../../quant/onnx-q4.js'
import {buildOpenElmGraph, type GraphOptions, INT8_SCALE_SUFFIX, isMatMulWeight, Q4_K_KEY, Q4_SCALES_SUFFIX, LAYOUT_IN_OUT, LAYOUT_KEY, ROPE_COS, ROPE_SIN, ropeTables} from './graph.js'
import {fromOnnxName, toOnnxName} from './names.js'
import {openOnnx} from './read.js'
import {BAND_BYTES, releaseTransposeBuffers, transposedRecord} from './transpose.js'
import {planOnnx, PROTOBUF_LIMIT} from './write.js'

export const ONNX_DIR = 'onnx'
/** File names transformers.js looks for, by weight dtype. */
export const MODEL_FILES: Partial<Record<FloatDType, string>> = {F32: 'model.onnx', F16: 'model_fp16.onnx'}
import {ONNX_VARIANTS, type OnnxVariant, parseOnnxVariants, Q4_FILE, Q4F16_FILE, Q8_FILE, VARIANT_SPECS, variantOfFile} from './variants.js'
export {ONNX_VARIANTS, type OnnxVariant, parseOnnxVariants, Q4_FILE, Q4F16_FILE, Q8_FILE, VARIANT_SPECS, variantOfFile} from './variants.js'

/** `--layout` tokens. */
export const LAYOUT_TOKENS = ['external-data', 'single-file', 'contrib-ops'] as const
const PRODUCER_VERSION = '0.1.0'

/**
 * The window and band of a MatMul weight read back from an ONNX source ([in, out] → [out, in]:
 * transpose.ts; one source pass per window), their buffers made at these sizes once. The window is
 * half the export's: at 3B it is most of what such a read adds to peak RSS (ONNX f16 → mlx -q 4:
 * 293 MB with 64 MiB, 253 MB with 32 MiB, 236 MB with 16 MiB for 23% more CPU), and with each window
 * built once (BlocksAhead.readRange) 32 MiB costs 9% more CPU than 64.
 */
const SOURCE_WINDOW = {windowBytes: 32 * 1024 * 1024, bandBytes: BAND_BYTES}

export interface OnnxLayout {
  /** Force external data on (true) or off (false); undefined = only past 2 GiB. */
  external?: boolean
  rmsNorm: 'decomposed' | 'contrib'
}

export function parseOnnxLayout(layout: string | undefined): OnnxLayout {
  const result: OnnxLayout = {rmsNorm: 'decomposed'}
  for (const token of (layout ?? '').split(',').map((t) => t.trim()).filter(Boolean)) {
    if (token === 'external-data') result.external = true
    else if (token === 'single-file') result.external = false
    else if (token === 'contrib-ops') result.rmsNorm = 'contrib'
    else throw new UsageError('onnx.layout', `unknown ONNX layout "${token}" (expected ${LAYOUT_TOKENS.join(', ')}, comma-separated)`)
  }
  return result
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory()
  } catch {
    return false
  }
}

/** The .onnx file a path names: the file itself, or the folder's onnx/model.onnx (else model_fp16, else the first model*.onnx). */
export async function findModelFile(p: string): Promise<string | undefined> {
  if (p.endsWith('.onnx')) return (await pathExists(p)) ? p : undefined
  if (!(await isDir(p))) return undefined
  for (const dir of [path.join(p, ONNX_DIR), p]) {
    let names: string[]
    try {
      names = (await fs.readdir(dir)).filter((n) => /^model.*\.onnx$/.test(n)).sort()
    } catch {
      continue
    }
    if (names.length === 0) continue
    const defaultFile = names.length > 1 ? await configDefaultFile(p) : undefined
    for (const preferred of [defaultFile, ...ONNX_VARIANTS.map((v) => VARIANT_SPECS[v].file)]) if (preferred && names.includes(preferred)) return path.join(dir, preferred)
    if (names.length > 0) return path.join(dir, names[0])
  }
  return undefined
}

/** The file of config.json's `transformers.js_config.dtype` (transformers.js's default), if it names one of ours. */
async function configDefaultFile(root: string): Promise<string | undefined> {
  try {
    const dtype = (JSON.parse(await fs.readFile(path.join(root, 'config.json'), 'utf8')) as Record<string, any>)['transformers.js_config']?.dtype
    return typeof dtype === 'string' && (ONNX_VARIANTS as readonly string[]).includes(dtype) ? VARIANT_SPECS[dtype as OnnxVariant].file : undefined
  } catch {
    return undefined
  }
}

/** The other variant files beside a model file (a multi-variant folder). */
async function siblingVariants(modelFile: string): Promise<string[]> {
  const names = await fs.readdir(path.dirname(modelFile)).catch(() => [] as string[])
  return ONNX_VARIANTS.map((v) => VARIANT_SPECS[v].file).filter((f) => f !== path.basename(modelFile) && names.includes(f))
}

/** The folder holding config.json for a model file (…/onnx/model.onnx → …). */
function modelRoot(modelFile: string): string {
  const dir = path.dirname(modelFile)
  return path.basename(dir) === ONNX_DIR ? path.dirname(dir) : dir
}

export async function readOnnx(p: string, options: ReadOptions = {}): Promise<Checkpoint> {
  const modelFile = await findModelFile(p)
  if (!modelFile) throw new FormatError('onnx.missing', `${p} has no ONNX model (expected onnx/model.onnx or a .onnx file)`, {path: p})
  const root = modelRoot(modelFile)
  const onnxFile = await openOnnx(modelFile)
  try {
    const weights: TensorRecord[] = []
    const derived: string[] = []
    // Our current exports store MatMul weights [in, out] (metadata says so); older ones kept [out, in].
    const inOut = onnxFile.metadata[LAYOUT_KEY] === LAYOUT_IN_OUT
    const byName = new Map(onnxFile.initializers.map((i) => [i.name, i]))
    const stored = new Map<string, StoredTensor>()
    const q4K = JSON.parse(onnxFile.metadata[Q4_K_KEY] ?? '{}') as Record<string, number>
    for (const init of onnxFile.initializers) {
      if (init.name.endsWith(Q4_SCALES_SUFFIX) && q4K[init.name.slice(0, -Q4_SCALES_SUFFIX.length)] !== undefined) continue
      const k = q4K[init.name]
      if (k !== undefined) {
        // MatMulNBits weights: `<name>` U8 [N, K/32, 16] with `<name>_scales` F32 [N·K/32].
        const canonical = fromOnnxName(init.name)!
        const scales = byName.get(`${init.name}${Q4_SCALES_SUFFIX}`)
        const [n, nb, blob] = init.shape as [number, number, number]
        const scaleSize = scales?.dtype === 'F16' ? 2 : 4
        if (init.dtype !== 'U8' || init.shape.length !== 3 || blob !== 16 || nb !== Math.ceil(k / 32) || !scales || (scales.dtype !== 'F32' && scales.dtype !== 'F16') || scales.byteLength !== n * nb * scaleSize) {
          throw new FormatError('onnx.q4', `${modelFile}: MatMulNBits weight ${init.name} must be U8 [N, ceil(${k}/32), 16] with an F32 or F16 ${init.name}${Q4_SCALES_SUFFIX} of N·ceil(${k}/32) values`, {path: modelFile, tensor: init.name})
        }
        weights.push(dequantizedQ4(canonical, n, k, init, scales))
        stored.set(canonical, {name: canonical, shape: [n, k], segments: [q4Segment(init.name, n, k, init, scales)]})
        continue
      }
      // int8 weights: `<name>` codes (I8) with `<name>_scale` (F32, one per output channel).
      if (init.name.endsWith(INT8_SCALE_SUFFIX) && byName.get(init.name.slice(0, -INT8_SCALE_SUFFIX.length))?.dtype === 'I8') continue
      const canonical = fromOnnxName(init.name)
      if (canonical === undefined) {
        derived.push(init.name)
        continue
      }
      const transposed = inOut && isMatMulWeight(canonical) && init.shape.length === 2
      if (init.dtype === 'I8') {
        const scales = byName.get(`${init.name}${INT8_SCALE_SUFFIX}`)
        const rows = transposed ? init.shape[1]! : init.shape[0]!
        if (!scales || scales.dtype !== 'F32' || scales.byteLength !== rows * 4 || init.shape.length !== 2) {
          throw new FormatError('onnx.int8', `${modelFile}: int8 initializer ${init.name} needs an F32 ${init.name}${INT8_SCALE_SUFFIX} of ${rows} values (one per output channel)`, {path: modelFile, tensor: init.name})
        }
        const codes = transposed ? transposedRecord(init, canonical, SOURCE_WINDOW) : renamed(init, canonical)
        weights.push(dequantizedInt8(canonical, codes.shape, codes, scales))
        stored.set(canonical, {name: canonical, shape: codes.shape, segments: [int8Segment(init.name, rows, codes, scales)]})
        continue
      }
      weights.push(transposed ? transposedRecord(init, canonical, SOURCE_WINDOW) : renamed(init, canonical))
    }
    const configPath = path.join(root, 'config.json')
    const resolved = await resolveConfig(weights, configPath, options)
    const others = await siblingVariants(modelFile)
    let variantNote: string | undefined
    if (others.length > 0) {
      const variant = variantOfFile(modelFile)
      variantNote = `${path.basename(modelFile)}${variant ? ` (${variant})` : ''} read; the folder also holds ${others.join(', ')}: name a file (…/${ONNX_DIR}/${others[0]}) to read another`
      resolved.notes.push(variantNote)
    }
    const files = [{path: modelFile, bytes: onnxFile.size}]
    for (const name of onnxFile.externalFiles) {
      const file = path.join(path.dirname(modelFile), name)
      files.push({path: file, bytes: (await fs.stat(file)).size})
    }
    return await readerCheckpoint('onnx', p, resolved, {
      tokenizerDir: root,
      notes: resolved.notes,
      stored,
      info: {
        layout: onnxFile.externalFiles.length > 0 ? 'onnx with external data' : 'onnx (single file)',
        modelFile,
        irVersion: onnxFile.irVersion,
        files,
        derivedInitializers: derived,
        ...(variantNote ? {variantNote} : {}),
      },
    }, onnxFile.close)
  } catch (error) {
    await onnxFile.close()
    throw error
  }
}

export interface OnnxWriteExtra {
  /** Testing hooks (see GraphOptions.sabotage). */
  sabotage?: GraphOptions['sabotage']
}

/** The one variant `--dtype` / `--quantize` ask for (no `--variants`). */
function singleVariant(source: Checkpoint, options: WriteOptions): OnnxVariant {
  const quant = options.quantization
  if (quant && quant.bits !== 8 && quant.bits !== 4) throw new UsageError('onnx.quantize', `ONNX export quantizes to 8 bits (--quantize 8 → ${Q8_FILE}) or 4 bits (--quantize 4 → ${Q4_FILE}, with --dtype f16 → ${Q4F16_FILE}), not ${quant.bits}`)
  if (quant?.bits === 4 && options.dtype === 'F16') return 'q4f16'
  if (quant && options.dtype && options.dtype !== 'F32') throw new UsageError('onnx.quantize', `--quantize ${quant.bits} stores quantized matrices and f32 norms; --dtype ${options.dtype.toLowerCase()} does not apply${quant.bits === 4 ? ' (f16 gives model_q4f16.onnx)' : ''}`)
  if (quant) return quant.bits === 4 ? 'q4' : 'q8'
  const dtype: FloatDType = options.dtype ?? (source.extras.dtype === 'F16' ? 'F16' : 'F32')
  if (dtype === 'F32') return 'fp32'
  if (dtype === 'F16') return 'fp16'
  throw new UsageError('onnx.dtype', `ONNX export supports --dtype f32 or f16, not ${dtype.toLowerCase()} (onnxruntime and transformers.js have no bf16 model file)`)
}

/** The variants an export writes: `--variants`, else the one --dtype / --quantize name. */
export function onnxVariantsFor(source: Checkpoint, options: WriteOptions): OnnxVariant[] {
  if (options.onnxVariants === undefined) return [singleVariant(source, options)]
  if (options.quantization || options.dtype) throw new UsageError('onnx.variants', '--variants names every model file to write; drop --quantize / --dtype')
  return parseOnnxVariants(options.onnxVariants.join(','))
}

/** One model file planned: graph (shared builder), its initializers' sources, where the bytes go. */
function planVariant(source: Checkpoint, variant: OnnxVariant, layout: OnnxLayout, sabotage: GraphOptions['sabotage'], lastFile: boolean): {file: string; dtype: FloatDType; plan: ReturnType<typeof planOnnx>; dataName: string; notes: string[]; release: () => void} {
  const {file, dtype, quant} = VARIANT_SPECS[variant]
  const config = source.config
  const graph = buildOpenElmGraph(config, {dtype, quant, rmsNorm: layout.rmsNorm, sabotage})
  const sources = new Map<string, TensorRecord>()
  let shared: SharedCodes | undefined
  // The workers' step results (q4 blocks and scales, the embedding's int8 codes) go into these slots.
  const slots = quant ? new SharedSlots(largestStepResult(source, quant), slotCount(threadCount())) : undefined
  // A q4 file's MatMulNBits scales, one matrix at a time (kept from the blocks' steps until read).
  const q4Scales = quant === 'q4' || quant === 'q4f16' ? new SharedCodes(largestQ4Scales(source, quant)) : undefined
  for (const t of source.tensors) {
    const name = toOnnxName(t.name)
    const matmul = isMatMulWeight(t.name) && t.shape.length === 2
    if ((quant === 'q4' || quant === 'q4f16') && matmul) {
      const {blocks, scales} = q4Records(t, name, `${name}${Q4_SCALES_SUFFIX}`, quant === 'q4f16' ? 'F16' : 'F32', {slots: slots!, scales: q4Scales!})
      sources.set(name, blocks)
      sources.set(scales.name, scales)
      continue
    }
    if (quant === 'q8' && (matmul || t.name === 'token_embeddings.weight')) {
      // The embedding (Gather, stored as is) is read in order: its codes are quantized per read.
      // A matrix's codes are made transposed by the workers, in the file's one shared buffer.
      const scalesName = `${name}${INT8_SCALE_SUFFIX}`
      const {codes, scales} = matmul ? transposedInt8Records(t, name, scalesName, (shared ??= new SharedCodes(largestCodesWindow(source)))) : int8Records(t, name, scalesName, {streamed: true, slots})
      sources.set(name, codes)
      sources.set(scales.name, scales)
      continue
    }
    const cast = castRecord(t, dtype)
    // The last model file's windows may live in a kernel's memory (freed only by a full GC).
    sources.set(name, matmul ? transposedRecord(cast, name, {windowInKernel: lastFile}) : cast)
  }
  const {cos, sin} = ropeTables(config)
  sources.set(ROPE_COS, f32Record(ROPE_COS, [config.rope_max_length, config.head_dim], cos))
  sources.set(ROPE_SIN, f32Record(ROPE_SIN, [config.rope_max_length, config.head_dim], sin))

  const dataName = `${file}_data`
  let plan = planOnnx(graph, sources, layout.external === true ? dataName : undefined, PRODUCER_VERSION)
  const notes: string[] = []
  if (layout.external === undefined && plan.modelBytes > PROTOBUF_LIMIT) {
    plan = planOnnx(graph, sources, dataName, PRODUCER_VERSION)
    notes.push(`weights of ${file} written to ${ONNX_DIR}/${dataName} (the model passes protobuf's 2 GiB limit)`)
  } else if (layout.external === false && plan.modelBytes > PROTOBUF_LIMIT) {
    throw new UsageError('onnx.too_big', `${file} needs ${plan.modelBytes} bytes, past protobuf's 2 GiB limit: drop --layout single-file`)
  }
  return {file, dtype, plan, dataName, notes, release: () => {
    shared?.release()
    slots?.release()
    q4Scales?.release()
  }}
}

/** Bytes of the largest MatMul weight's MatMulNBits scales (f32, or f16 for q4f16). */
function largestQ4Scales(source: Checkpoint, quant: 'q4' | 'q4f16'): number {
  const matrices = source.tensors.filter((t) => isMatMulWeight(t.name) && t.shape.length === 2)
  return Math.max(0, ...matrices.map((t) => t.shape[0]! * q4Blocks(t.shape[1]!) * (quant === 'q4f16' ? 2 : 4)))
}

/** The slot size of a file's SharedSlots: the largest step result among its quantized tensors (q4: the MatMul weights; q8: the embedding). */
function largestStepResult(source: Checkpoint, quant: 'q8' | 'q4' | 'q4f16'): number {
  const uses = source.tensors.filter((t) => t.shape.length === 2 && (quant === 'q8' ? t.name === 'token_embeddings.weight' : isMatMulWeight(t.name)))
  return Math.max(0, ...uses.map((t) => stepResultBytes(t.shape[0]!, t.shape[1]!, quant)))
}

/** The shared int8 codes buffer's size: the largest MatMul weight's codes window. */
function largestCodesWindow(source: Checkpoint): number {
  return Math.max(0, ...source.tensors.filter((t) => isMatMulWeight(t.name) && t.shape.length === 2).map((t) => int8WindowBytes(t.shape[0]!, t.shape[1]!)))
}

export async function* writeOnnx(source: Checkpoint, out: string, options: WriteOptions & OnnxWriteExtra): AsyncGenerator<ProgressEvent, WriteResult> {
  const variants = onnxVariantsFor(source, options)
  const layout = parseOnnxLayout(options.layout)
  const config = source.config
  // Every variant is planned (and refused) before any byte is written.
  const plans = variants.map((v, i) => planVariant(source, v, layout, options.sabotage, i === variants.length - 1))
  const notes = plans.flatMap((p) => p.notes)
  if (layout.rmsNorm === 'contrib') notes.push('RMSNorm uses onnxruntime\'s SimplifiedLayerNormalization (not a standard ONNX op: onnx.checker rejects it)')
  if (variants.length > 1) notes.push(`${variants.length} model files (${variants.join(', ')}); transformers.js loads ${variants[0]} unless given another dtype`)

  // transformers.js_config: `dtype` is the file transformers.js loads by default (the first
  // variant); `use_external_data_format` says which files have a `_data` file (by full name when
  // there are several, as transformers.js resolves it per file).
  const tjsConfig: Record<string, unknown> = {dtype: variants[0]}
  const external = plans.filter((p) => p.plan.external)
  if (external.length > 0) tjsConfig.use_external_data_format = variants.length === 1 ? true : Object.fromEntries(external.map((p) => [p.file, 1]))
  const dtype = plans[0]!.dtype
  return yield* atomicDir(out, options.force ?? false, async function* (dir) {
    await fs.mkdir(path.join(dir, ONNX_DIR))
    // The tokenizer files first (listed last): building them leaves tens of MB of heap garbage,
    // which at the end of a big export stacked on what the model files' buffers had left.
    const tokenizer = await tokenizerFilesFor('hf-files', source, options)
    const tokenizerFiles = await writeTokenizerFiles(dir, tokenizer.files)
    const files: {path: string; bytes: number}[] = []
    for (const p of plans) {
      const modelPath = path.join(dir, ONNX_DIR, p.file)
      const dataPath = p.plan.external ? path.join(dir, ONNX_DIR, p.dataName) : undefined
      yield* p.plan.write(modelPath, dataPath)
      // An fp16 file's 64 MiB float window must not stay alive under the next file's int8 codes,
      // nor a q8 file's codes buffer under the next file.
      releaseTransposeBuffers()
      p.release()
      files.push({path: modelPath, bytes: p.plan.modelBytes})
      if (dataPath) files.push({path: dataPath, bytes: p.plan.dataBytes})
    }
    const configPath = path.join(dir, 'config.json')
    files.push({path: configPath, bytes: await writeJsonFile(configPath, toHfConfigJson(config, dtype, {auto_map: remoteCodeFor(source, false).autoMap, 'transformers.js_config': tjsConfig, ...originConfigKeys(options.origin)}))})
    const gen = path.join(dir, 'generation_config.json')
    files.push({path: gen, bytes: await writeJsonFile(gen, generationConfigJson(config))})
    files.push(...tokenizerFiles)
    notes.push(...tokenizer.notes)
    return {path: out, files: files.map((f) => ({path: path.join(out, path.relative(dir, f.path)), bytes: f.bytes})), dtype, notes}
  })
}

export const onnxFormat: FormatAdapter = {
  name: 'onnx',
  description: 'ONNX for onnxruntime / transformers.js: onnx/model.onnx (+ model_fp16.onnx, external data past 2 GiB), KV cache I/O',
  async detect(p) {
    return (await findModelFile(p)) !== undefined
  },
  read: readOnnx,
  write: writeOnnx,
  tokenizerKind: () => 'hf-files',
}
