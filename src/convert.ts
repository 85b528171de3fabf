/** The conversion pipeline: open any checkpoint, fit its vocabulary to the target, stream it out. */
import {openCheckpoint, adapterFor} from './formats/registry.js'
import {type Checkpoint, type FormatName, type ProgressEvent, type ReadOptions, type WriteOptions, type WriteResult} from './formats/types.js'
import {resolveOutputTokenizer} from './formats/tokenizer.js'
import {checkpointOrigin} from './hub/origin.js'
import {UsageError} from './errors.js'
import {CORENET_VOCAB, isTrainingLayout, targetVocab, type VocabChange, withVocab} from './model/vocab.js'

/** Which tokenizer went into the output, and why (`origin` none: the output has none). */
export interface TokenizerChoice {
  origin: 'flag' | 'source' | 'built-in' | 'none'
  /** The tokenizer's name ("built-in LLaMA-2 tokenizer (…)", "tokenizer.model (/m/tokenizer.model)"). */
  name?: string
  reason: string
  vocabSize?: number
  /** Where the chat template written came from (absent: none written beyond what copied files hold). */
  chatTemplate?: string
}

export interface ConvertResult {
  source: {path: string; format: FormatName; dtype: string}
  target: WriteResult & {format: FormatName}
  vocab?: VocabChange
  /** Absent for formats that hold no tokenizer (CoreNet .pt). */
  tokenizer?: TokenizerChoice
  notes: string[]
}

/** Write an open checkpoint in format `to`. */
export async function* writeCheckpoint(checkpoint: Checkpoint, to: FormatName, out: string, options: WriteOptions): AsyncGenerator<ProgressEvent, ConvertResult> {
  const notes = [...checkpoint.extras.notes]
  const rows = targetVocab(checkpoint, to, options.layout, options)
  const {checkpoint: fitted, change} = rows === undefined ? {checkpoint} : withVocab(checkpoint, rows)
  if (change?.rowsDropped) notes.push(`dropped ${change.rowsDropped} padded vocabulary rows (${change.from} → ${change.to}); pass --keep-padded-vocab to keep them`)
  if (change?.rowsPadded) notes.push(`padded the vocabulary with ${change.rowsPadded} zero rows (${change.from} → ${change.to})`)
  const adapter = adapterFor(to)
  // The format says what tokenizer its runtime loads; the tokenizer itself is settled once, here.
  const kind = adapter.tokenizerKind(options)
  const embedding = fitted.tensors.find((t) => t.name === 'token_embeddings.weight')
  const tokenizer = kind === 'none' ? undefined : await resolveOutputTokenizer(fitted, embedding?.shape[0] ?? fitted.config.vocab_size, options.tokenizerRequest)
  for (const message of notes) yield {type: 'note', message}
  const origin = options.origin ?? (await checkpointOrigin(checkpoint))
  const result = yield* adapter.write(fitted, out, {...options, origin, ...(tokenizer ? {tokenizer} : {})})
  return {
    source: {path: checkpoint.path, format: checkpoint.format, dtype: checkpoint.extras.dtype},
    target: {...result, format: to},
    vocab: change,
    ...(tokenizer ? {
      tokenizer: {
        origin: tokenizer.origin, reason: tokenizer.reason,
        ...(tokenizer.tokenizer ? {name: tokenizer.tokenizer.name, vocabSize: tokenizer.tokenizer.vocabSize} : {}),
        ...(tokenizer.chatTemplateReason ? {chatTemplate: tokenizer.chatTemplateReason} : {}),
      },
    } : {}),
    notes: [...notes, ...result.notes],
  }
}

export async function* convert(source: string, to: FormatName, out: string, readOptions: ReadOptions & {format?: FormatName}, writeOptions: WriteOptions): AsyncGenerator<ProgressEvent, ConvertResult> {
  const checkpoint = await openCheckpoint(source, readOptions)
  try {
    // A user's --keep-padded-vocab on a source without padded rows would do nothing: refused.
    // (roundtrip's hops pass keepPaddedVocab to writeCheckpoint as "never drop rows" for any source.)
    if (writeOptions.keepPaddedVocab && !isTrainingLayout(checkpoint)) {
      throw new UsageError('flag.keep_padded_vocab', `--keep-padded-vocab applies to CoreNet sources (their ${CORENET_VOCAB} padded vocabulary rows); ${checkpoint.path} is ${checkpoint.format}`)
    }
    return yield* writeCheckpoint(checkpoint, to, out, writeOptions)
  } finally {
    await checkpoint.close()
  }
}
