/** The conversion pipeline: open any checkpoint, fit its vocabulary to the target, stream it out. */
import {openCheckpoint, adapterFor} from './formats/registry.js'
import {type Checkpoint, type FormatName, type ProgressEvent, type ReadOptions, type WriteOptions, type WriteResult} from './formats/types.js'
import {targetVocab, type VocabChange, withVocab} from './model/vocab.js'

export interface ConvertResult {
  source: {path: string; format: FormatName; dtype: string}
  target: WriteResult & {format: FormatName}
  vocab?: VocabChange
  notes: string[]
}

/** Write an open checkpoint in format `to`. */
export async function* writeCheckpoint(checkpoint: Checkpoint, to: FormatName, out: string, options: WriteOptions): AsyncGenerator<ProgressEvent, ConvertResult> {
  const notes = [...checkpoint.extras.notes]
  const rows = targetVocab(checkpoint, to, options.layout, options)
  const {checkpoint: fitted, change} = rows === undefined ? {checkpoint} : withVocab(checkpoint, rows)
  if (change?.rowsDropped) notes.push(`dropped ${change.rowsDropped} padded vocabulary rows (${change.from} → ${change.to}); pass --keep-padded-vocab to keep them`)
  if (change?.rowsPadded) notes.push(`padded the vocabulary with ${change.rowsPadded} zero rows (${change.from} → ${change.to})`)
  for (const message of notes) yield {type: 'note', message}
  const result = yield* adapterFor(to).write(fitted, out, options)
  return {
    source: {path: checkpoint.path, format: checkpoint.format, dtype: checkpoint.extras.dtype},
    target: {...result, format: to},
    vocab: change,
    notes: [...notes, ...result.notes],
  }
}

export async function* convert(source: string, to: FormatName, out: string, readOptions: ReadOptions & {format?: FormatName}, writeOptions: WriteOptions): AsyncGenerator<ProgressEvent, ConvertResult> {
  const checkpoint = await openCheckpoint(source, readOptions)
  try {
    return yield* writeCheckpoint(checkpoint, to, out, writeOptions)
  } finally {
    await checkpoint.close()
  }
}
