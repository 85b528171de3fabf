/** What `openelm inspect` reports: format, config, per-layer dims, dtypes, sizes, extras. */
import {promises as fs} from 'node:fs'
import {openCheckpoint} from './formats/registry.js'
import {type Checkpoint, type FormatName, type PeftInfo, type ReadOptions, type TrainingState, type Quantization} from './formats/types.js'
import {layerDims, type LayerDims, type OpenElmConfig, parameterCount} from './model/config.js'
import {matchPreset} from './model/presets.js'
import {paddedVocabRows} from './model/vocab.js'
import {type StorageGroup, storageSummary, type TensorStorage, tensorStorage} from './inspect/quant.js'

export interface InspectReport {
  path: string
  format: FormatName
  preset?: string
  configSource: string
  config: OpenElmConfig
  layers: LayerDims[]
  /** Parameters of the config as stored, every embedding row counted (padded ones too). */
  parameters: number
  /** Embedding rows that are padding (CoreNet's 32128 = 32000 tokens + 128), and the count without them. */
  paddedVocabRows?: number
  parametersWithoutPadding?: number
  /** Tensors by the dtype they read as (dequantized): what a runtime computes with, not what the file holds. */
  dtypes: Record<string, number>
  /** Tensors by their storage type in the file (`Q8_0`, `affine 4-bit g64`, `F16`…), largest stored share first. */
  storedTypes?: Record<string, number>
  /** The float dtype of the unquantized parts (and of what quantized parts read as). */
  dtype: string
  /** One label for the weights: the quantized storage with the float types of the rest, else the float dtype(s). */
  weights?: string
  quantization?: Quantization
  tensorCount: number
  /** Bytes of the tensors as they read (dequantized to `dtypes`). */
  tensorBytes: number
  /** Bytes the tensors take in the file (codes, scales, biases, block headers): `storage` summed. */
  storedBytes?: number
  /** Bytes of the model's weight files on disk (headers, vocabulary and padding included), when known. */
  fileBytes?: number
  tokenizerFiles: string[]
  training?: Omit<TrainingState, 'raw'>
  notes: string[]
  info: Record<string, unknown>
  /** LoRA/DoRA adapters (merged on conversion). */
  peft?: PeftInfo
  /** Storage types (quantization) grouped: tensors, stored bytes, bits per weight. */
  storage?: StorageGroup[]
  /** Each tensor's storage type, stored bytes and bits per weight (src/inspect/quant.ts). */
  tensorStorage?: TensorStorage[]
}

const FLOAT_TYPES = new Set(['F32', 'F16', 'BF16', 'F64'])

/** The weights in one label: `Q8_0 (8.5 bpw; F16, F32 for the rest)`, `affine 4-bit g64 (5 bpw; F16 for the rest)`, `F32`. */
export function weightsLabel(storage: readonly StorageGroup[]): string {
  const quantized = storage.filter((g) => !FLOAT_TYPES.has(g.type))
  const floats = storage.filter((g) => FLOAT_TYPES.has(g.type)).map((g) => g.type).sort()
  if (quantized.length === 0) return floats.join('/')
  const main = quantized.map((g) => `${g.type} (${g.bitsPerWeight} bpw)`).join(', ')
  return floats.length === 0 ? main : `${main}; ${floats.join(', ')} for the rest`
}

export function describeCheckpoint(checkpoint: Checkpoint): InspectReport {
  const perTensor = tensorStorage(checkpoint)
  const storage = storageSummary(perTensor)
  const dtypes: Record<string, number> = {}
  for (const t of checkpoint.tensors) dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1
  const storedTypes: Record<string, number> = {}
  for (const g of storage) storedTypes[g.type] = g.tensors
  const training = checkpoint.extras.training
  const padded = paddedVocabRows(checkpoint.config)
  const parameters = parameterCount(checkpoint.config)
  const files = Array.isArray(checkpoint.extras.info.files) ? (checkpoint.extras.info.files as {bytes?: unknown}[]) : []
  const fileBytes = files.length > 0 && files.every((f) => typeof f.bytes === 'number') ? files.reduce((a, f) => a + (f.bytes as number), 0) : undefined
  return {
    path: checkpoint.path,
    format: checkpoint.format,
    preset: matchPreset(checkpoint.config),
    configSource: checkpoint.extras.configSource,
    config: checkpoint.config,
    layers: layerDims(checkpoint.config),
    parameters,
    ...(padded > 0 ? {paddedVocabRows: padded, parametersWithoutPadding: parameterCount({...checkpoint.config, vocab_size: checkpoint.config.vocab_size - padded})} : {}),
    dtypes,
    storedTypes,
    dtype: checkpoint.extras.dtype,
    weights: weightsLabel(storage),
    quantization: checkpoint.extras.quantization,
    tensorCount: checkpoint.tensors.length,
    tensorBytes: checkpoint.tensors.reduce((a, t) => a + t.byteLength, 0),
    storedBytes: storage.reduce((a, g) => a + g.storedBytes, 0),
    ...(fileBytes !== undefined ? {fileBytes} : {}),
    tokenizerFiles: checkpoint.extras.tokenizerFiles,
    training: training ? (({raw: _raw, ...rest}) => rest)(training) : undefined,
    notes: checkpoint.extras.notes,
    info: checkpoint.extras.info,
    ...(checkpoint.extras.peft ? {peft: checkpoint.extras.peft} : {}),
    storage,
    tensorStorage: perTensor,
  }
}

export async function inspect(p: string, options: ReadOptions & {format?: FormatName} = {}): Promise<InspectReport> {
  const checkpoint = await openCheckpoint(p, options)
  try {
    const report = describeCheckpoint(checkpoint)
    if (report.fileBytes !== undefined) return report
    // A single-file checkpoint whose reader lists no files (CoreNet .pt): the file itself.
    const stat = await fs.stat(p).catch(() => undefined)
    return stat?.isFile() ? {...report, fileBytes: stat.size} : report
  } finally {
    await checkpoint.close()
  }
}
