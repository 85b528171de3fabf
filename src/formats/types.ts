/**
 * The contract between formats. A reader turns a path into a Checkpoint (config + lazy canonical
 * tensors + extras); a writer streams a Checkpoint into its layout, yielding progress events.
 * N formats make 2N adapters, never N² converters.
 */
import {type OpenElmConfig} from '../model/config.js'
import {type ModelOrigin} from '../model/origin.js'
import {type Encoded, type SchemeParams} from '../quant/types.js'
import {type FloatDType} from '../tensor/dtype.js'
import {type TensorRecord} from '../tensor/record.js'
import {type MergeFault} from '../tensor/lora.js'
import {type OutputTokenizer, type TokenizerKind, type TokenizerRequest} from './tokenizer.js'

export const FORMAT_NAMES = ['hf', 'corenet', 'mlx', 'onnx', 'gguf'] as const
export type FormatName = (typeof FORMAT_NAMES)[number]

export interface Quantization {
  bits: number
  groupSize: number
  /** MLX's modes, or a GGUF file type as llama-quantize names it (q8_0, q4_0, …, q4_k_m, …). */
  mode: 'affine' | 'mxfp4' | 'nvfp4' | 'mxfp8' | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q2_k' | 'q3_k_s' | 'q3_k_m' | 'q3_k_l' | 'q4_k_s' | 'q4_k_m' | 'q5_k_s' | 'q5_k_m' | 'q6_k'
}

/** What a checkpoint carries besides the model weights. */
export interface Extras {
  /** Where the config came from: a file, a preset, or inferred from shapes. */
  configSource: 'file' | 'inferred' | 'preset' | 'flag'
  /** The float dtype most of the weights are stored in. */
  dtype: FloatDType
  /** Set when the stored weights are quantized (readers dequantize; this records how). */
  quantization?: Quantization
  /** Tokenizer files found next to the model (absolute paths). */
  tokenizerFiles: string[]
  /** Hugging Face remote code next to the model (configuration_openelm.py and modeling_openelm.py, both or none). */
  remoteCode?: string[]
  /** Rows of the CoreNet padded vocabulary beyond vocab_size, when the source kept them. */
  paddedVocabRows?: number
  /** Training state of a CoreNet training checkpoint (opaque to other formats). */
  training?: TrainingState
  /** Human-readable notes the reader wants shown (e.g. "config inferred from shapes"). */
  notes: string[]
  /** Format-specific facts for `inspect` (layout name, file list, sizes...). */
  info: Record<string, unknown>
  /** Set when the source carried LoRA/DoRA adapters: the tensors are then the merged weights. */
  peft?: PeftInfo
}

/** One adapted module of a CoreNet PEFT checkpoint (corenet/third_party/modeling/lora.py). */
export interface PeftModule {
  /** CoreNet's module path, e.g. `layers.0.attn.qkv_proj`. */
  module: string
  /** The canonical weight the adapter changes. */
  tensor: string
  /** lora.py `Linear` or `Embedding`. */
  type: 'linear' | 'embedding'
  kind: 'lora' | 'dora'
  adapterName: string
  rank: number
  /** Not stored in CoreNet checkpoints: from --lora-alpha or the run's YAML, else unknown. */
  alpha?: number
  rslora: boolean
  /** alpha / r (alpha / sqrt(r) with rslora), when alpha is known. */
  scale?: number
}

/** What `inspect` shows about adapters, and what the unmerged reference needs to rebuild them. */
export interface PeftInfo {
  /** `lora+dora` when some modules use each. */
  kind: 'lora' | 'dora' | 'lora+dora'
  modules: PeftModule[]
  /** Where alpha came from. */
  alphaSource: 'flag' | 'lora-config' | 'unknown'
  /**
   * The embedding adapter: CoreNet applies it to the input lookup only (its tied output layer uses
   * the base weight), which a tied model cannot hold: `merge` (input and output both adapted),
   * `drop` (neither), or `unresolved` (not chosen; the checkpoint can be inspected, not converted).
   */
  embedding?: 'merge' | 'drop' | 'unresolved'
  /** The file the adapters were read from, the dict key inside it ('' for a bare state dict). */
  adapterFile: string
  adapterKey: string
  /** The base weights: the same file, or the checkpoint given with --adapter. */
  base: {path: string; format: FormatName; key?: string}
  /** Settings still missing before the adapters can be merged (one sentence each). */
  unresolved: string[]
}

/** A CoreNet `model.lora.config[]` entry (LayerConfig + LoRAParams of lora.py). */
export interface LoraLayerConfig {
  regex: string
  moduleType: 'linear' | 'embedding'
  adapterName?: string
  r?: number
  alpha: number
  rslora: boolean
  dora?: boolean
}

export interface PeftOptions {
  /** Adapters saved apart from the base (a CoreNet `.pt` holding only adapter tensors). */
  adapter?: string
  /** lora_alpha for every adapted module. */
  loraAlpha?: number
  /** The run's `model.lora.config` (from its YAML). */
  loraConfig?: {file: string; layers: LoraLayerConfig[]}
  /** How to treat an embedding adapter (see PeftInfo.embedding). */
  embeddingAdapter?: 'merge' | 'drop'
  /** `inspect`: open even when settings are missing (merged tensors then refuse to be read). */
  describeOnly?: boolean
  /** Testing only: a deliberately wrong merge, to prove that verification catches it. */
  fault?: MergeFault
}

export interface TrainingState {
  iterations?: number
  epoch?: number
  bestMetric?: number
  hasOptimizer: boolean
  optimizerBytes: number
  hasEma: boolean
  hasGradientScaler: boolean
  /** The full unpickled training dict minus the model, kept for `.pt → .pt` conversion. */
  raw?: unknown
}

/**
 * A row range of a canonical tensor as the artifact stores it, in a storage scheme's encoding
 * (src/quant): what `verify` compares, code for code, with the reference's own transformation.
 */
export interface StoredSegment {
  /** First canonical row this segment holds, and how many. */
  row0: number
  rows: number
  /** Scheme name (src/quant/index.ts SCHEMES) and its parameters. */
  scheme: string
  params: SchemeParams
  /** What the file calls it, for messages (e.g. `blk.0.ffn_gate.weight`). */
  label: string
  /** The parts of rows [r0, r1) of this segment (relative to row0). */
  read(r0: number, r1: number): Promise<Encoded>
}

/** How one canonical tensor is stored: its segments cover rows 0..shape[0) in order. */
export interface StoredTensor {
  name: string
  shape: readonly number[]
  segments: StoredSegment[]
}

export interface Checkpoint {
  format: FormatName
  path: string
  config: OpenElmConfig
  /** Canonical names, canonical order, shapes checked against the config. */
  tensors: TensorRecord[]
  extras: Extras
  /**
   * The stored form of tensors that are not plain floats (quantized ones), by canonical name.
   * Tensors absent here are stored as their record's float dtype (see formats/stored.ts).
   */
  stored?: ReadonlyMap<string, StoredTensor>
  /** Release file handles. */
  close(): Promise<void>
}

export interface ReadOptions {
  /** Use this config instead of the file's / inferred one. */
  config?: OpenElmConfig
  /** CoreNet: read `ema_state_dict` instead of `model_state_dict`. */
  ema?: boolean
  /** LoRA/DoRA adapters: settings the checkpoint does not store, and adapters saved apart. */
  peft?: PeftOptions
}

export interface WriteOptions {
  dtype?: FloatDType
  quantization?: Quantization
  /** MLX: per-module widths (a mixed recipe, the embedding's own width). */
  mlxQuant?: {recipe?: string; embedding?: number | 'none'; groupSize?: number}
  /** GGUF `--token-embedding-type`: the token embedding's ggml type, whatever the file type says (llama-quantize's flag). */
  ggufTokenEmbeddingType?: string
  /** GGUF `--output-tensor-type`: the output head's ggml type (OpenELM's is the tied token embedding), llama-quantize's flag. */
  ggufOutputTensorType?: string
  /** Format-specific layout (`mlx-lm`, `corenet-mlx`, `npz`...). */
  layout?: string
  /** ONNX `--variants`: several model files in one onnx/ folder (fp32, fp16, q8, q4, q4f16). */
  onnxVariants?: string[]
  /** Max bytes per safetensors shard. */
  shardSize?: number
  /** Target vocabulary rows (pad with zeros or drop rows). */
  vocabSize?: number
  keepPaddedVocab?: boolean
  /** CoreNet: write the full training dict when the source had one. */
  trainingCheckpoint?: boolean
  /** Replace an existing output. */
  force?: boolean
  /** `--tokenizer PATH` / `--no-tokenizer`, settled by `convert` into `tokenizer`. */
  tokenizerRequest?: TokenizerRequest
  /**
   * The tokenizer to write (settled by `convert`, formats/tokenizer.ts). Absent when a writer is
   * called directly: folder formats then copy the source's tokenizer files.
   */
  tokenizer?: OutputTokenizer
  /**
   * What the source is (settled by `convert`, hub/origin.ts): Apple's repo only when proven, else its
   * file name. Cards and config.json's `_name_or_path` say it; absent, they claim nothing.
   */
  origin?: ModelOrigin
}

/**
 * What a long operation tells its caller while it runs. A write is `start`, then `bytes` as data
 * goes out (at least once per write chunk) and `tensor` as each tensor completes, its last
 * `bytesDone` equal to `totalBytes`. `phase` starts a named step that has no byte count (a
 * roundtrip hop's verify); the next `phase` or `start` ends it, as does a `phase` with no label; `count`
 * says how far the live phase is (tensors compared, layers run).
 */
export type ProgressEvent =
  | {type: 'start'; total: number; totalBytes: number; label: string}
  | {type: 'tensor'; name: string; index: number; total: number; bytesDone: number; totalBytes: number}
  | {type: 'bytes'; bytesDone: number; totalBytes: number}
  | {type: 'phase'; label?: string}
  | {type: 'count'; done: number; total: number; unit: string}
  | {type: 'note'; message: string}

export interface WriteResult {
  /** The final output path (a folder or a file). */
  path: string
  files: {path: string; bytes: number}[]
  dtype: FloatDType
  quantization?: Quantization
  notes: string[]
}

export interface FormatAdapter {
  readonly name: FormatName
  readonly description: string
  /** Cheap sniffing: true when `path` looks like this format. */
  detect(path: string): Promise<boolean>
  read(path: string, options?: ReadOptions): Promise<Checkpoint>
  write(source: Checkpoint, out: string, options: WriteOptions): AsyncGenerator<ProgressEvent, WriteResult>
  /** What tokenizer this format's runtime loads, for the layout in `options` (formats/tokenizer.ts). */
  tokenizerKind(options: Pick<WriteOptions, 'layout'>): TokenizerKind
}
