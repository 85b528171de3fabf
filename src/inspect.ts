/** What `openelm inspect` reports: format, config, per-layer dims, dtypes, sizes, extras. */
import {openCheckpoint} from './formats/registry.js'
import {type Checkpoint, type FormatName, type PeftInfo, type ReadOptions, type TrainingState, type Quantization} from './formats/types.js'
import {layerDims, type LayerDims, type OpenElmConfig, parameterCount} from './model/config.js'
import {matchPreset} from './model/presets.js'
import {type StorageGroup, storageSummary, type TensorStorage, tensorStorage} from './inspect/quant.js'

export interface InspectReport {
  path: string
  format: FormatName
  preset?: string
  configSource: string
  config: OpenElmConfig
  layers: LayerDims[]
  parameters: number
  dtypes: Record<string, number>
  dtype: string
  quantization?: Quantization
  tensorCount: number
  tensorBytes: number
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

export function describeCheckpoint(checkpoint: Checkpoint): InspectReport {
  const perTensor = tensorStorage(checkpoint)
  const dtypes: Record<string, number> = {}
  for (const t of checkpoint.tensors) dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1
  const training = checkpoint.extras.training
  return {
    path: checkpoint.path,
    format: checkpoint.format,
    preset: matchPreset(checkpoint.config),
    configSource: checkpoint.extras.configSource,
    config: checkpoint.config,
    layers: layerDims(checkpoint.config),
    parameters: parameterCount(checkpoint.config),
    dtypes,
    dtype: checkpoint.extras.dtype,
    quantization: checkpoint.extras.quantization,
    tensorCount: checkpoint.tensors.length,
    tensorBytes: checkpoint.tensors.reduce((a, t) => a + t.byteLength, 0),
    tokenizerFiles: checkpoint.extras.tokenizerFiles,
    training: training ? (({raw: _raw, ...rest}) => rest)(training) : undefined,
    notes: checkpoint.extras.notes,
    info: checkpoint.extras.info,
    ...(checkpoint.extras.peft ? {peft: checkpoint.extras.peft} : {}),
    storage: storageSummary(perTensor),
    tensorStorage: perTensor,
  }
}

export async function inspect(p: string, options: ReadOptions & {format?: FormatName} = {}): Promise<InspectReport> {
  const checkpoint = await openCheckpoint(p, options)
  try {
    return describeCheckpoint(checkpoint)
  } finally {
    await checkpoint.close()
  }
}
