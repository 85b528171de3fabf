/** The `Tokenizer` every caller uses: a SentencePiece BPE model plus where it came from. */
import {UsageError} from '../errors.js'
import {compileModel, decodeIds, encodeIds} from './bpe.js'
import {type SentencePieceModel} from './model.js'

export interface EncodeOptions {
  /** Prepend BOS (default: the tokenizer's `addBos`, true for OpenELM). */
  addBos?: boolean
  /** Append EOS (default false). */
  addEos?: boolean
}

export interface Tokenizer {
  /** Where it came from, e.g. "tokenizer.model (/m/tokenizer.model)". */
  readonly name: string
  readonly vocabSize: number
  /** -1 when the model has none. */
  readonly bos: number
  readonly eos: number
  readonly unk: number
  /** Whether `encode` prepends BOS unless told otherwise (tokenizer_config.json's add_bos_token). */
  readonly addBos: boolean
  /** The model as plain data, for the writers (tokenizer.model, tokenizer.json, GGUF). */
  readonly model: SentencePieceModel
  /** SentencePiece's ids for `text`. */
  encode(text: string, options?: EncodeOptions): number[]
  /** Text of `ids` as SentencePiece decodes them. */
  decode(ids: readonly number[]): string
  /** The piece text of one id. */
  pieceOf(id: number): string
}

/** A Tokenizer for `model`; throws FormatError when the model is not one the encoder reproduces. */
export function createTokenizer(model: SentencePieceModel, name: string, options: {addBos?: boolean} = {}): Tokenizer {
  const compiled = compileModel(model, name)
  const addBos = options.addBos ?? true
  return {
    name,
    vocabSize: model.pieces.length,
    bos: model.bos_id,
    eos: model.eos_id,
    unk: model.unk_id,
    addBos,
    model,
    encode(text, encodeOptions = {}) {
      const ids = encodeIds(compiled, text)
      if ((encodeOptions.addBos ?? addBos) && model.bos_id >= 0) ids.unshift(model.bos_id)
      if (encodeOptions.addEos && model.eos_id >= 0) ids.push(model.eos_id)
      return ids
    },
    decode: (ids) => decodeIds(compiled, ids),
    pieceOf(id) {
      if (!Number.isInteger(id) || id < 0 || id >= model.pieces.length) throw new UsageError('tokenizer.id', `token id ${id} is outside the vocabulary (0..${model.pieces.length - 1})`, {id})
      return model.pieces[id]!
    },
  }
}
