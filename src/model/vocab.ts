/**
 * Vocabulary rows: CoreNet trains with 32128 embedding rows (32000 Llama tokens + padding);
 * the HF repos keep 32000. Converting drops or pads rows, and says so.
 */
import {type Checkpoint, type FormatName} from '../formats/types.js'
import {resizeRows} from '../tensor/record.js'
import {GLOBAL_TENSORS} from './tensors.js'

export const CORENET_VOCAB = 32128
export const HF_VOCAB = 32000

export interface VocabChange {
  from: number
  to: number
  /** Rows removed (to < from) or zero rows added (to > from). */
  rowsDropped: number
  rowsPadded: number
}

/**
 * Embedding rows past the tokenizer's that a checkpoint carries as padding: CoreNet's 32128-row
 * layout holds LLaMA-2's 32000 tokens and 128 rows no token reaches. 0 for any other size.
 */
export function paddedVocabRows(config: {vocab_size: number}): number {
  return config.vocab_size === CORENET_VOCAB ? CORENET_VOCAB - HF_VOCAB : 0
}

/** Whether `source` is in a training layout (CoreNet `.pt`, CoreNet-named MLX), whose padded rows --keep-padded-vocab keeps. */
export function isTrainingLayout(source: Checkpoint): boolean {
  return source.format === 'corenet' || source.extras.info.layout === 'corenet-mlx'
}

/** The row count a target format should get, or undefined to keep the source's. */
export function targetVocab(source: Checkpoint, to: FormatName, layout: string | undefined, options: {vocabSize?: number; keepPaddedVocab?: boolean}): number | undefined {
  if (options.vocabSize !== undefined) return options.vocabSize
  const rows = source.config.vocab_size
  const trainingLayout = to === 'corenet' || layout === 'corenet-mlx'
  if (trainingLayout) return rows === HF_VOCAB ? CORENET_VOCAB : undefined
  if (isTrainingLayout(source) && rows === CORENET_VOCAB && !options.keepPaddedVocab) return HF_VOCAB
  return undefined
}

/** A view of `source` with `rows` embedding rows (zero padding past the source). */
export function withVocab(source: Checkpoint, rows: number): {checkpoint: Checkpoint; change?: VocabChange} {
  const from = source.config.vocab_size
  if (rows === from) return {checkpoint: source}
  const tensors = source.tensors.map((t) => (t.name === GLOBAL_TENSORS.token_embeddings ? resizeRows(t, rows) : t))
  const change: VocabChange = {from, to: rows, rowsDropped: Math.max(0, from - rows), rowsPadded: Math.max(0, rows - from)}
  // The embedding's stored form (a quantized source's blocks) no longer describes the resized record.
  const stored = source.stored && new Map([...source.stored].filter(([name]) => name !== GLOBAL_TENSORS.token_embeddings))
  return {checkpoint: {...source, config: {...source.config, vocab_size: rows}, tensors, ...(stored ? {stored} : {})}, change}
}
