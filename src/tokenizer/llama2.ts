/**
 * The built-in LLaMA-2 tokenizer, for OpenELM models that come without one (Apple ships none and
 * Meta's repository is gated). The 32,000 pieces come from `llama-tokenizer-js` (MIT), which
 * carries LLaMA-1/2's vocabulary but no scores; the scores and types follow Meta's
 * `tokenizer.model`, whose rule is (checked piece for piece against llama.cpp's
 * `models/ggml-vocab-llama-spm.gguf`, converted from it):
 *
 *   id 0 `<unk>` UNKNOWN, ids 1-2 `<s>` `</s>` CONTROL, ids 3-258 `<0x00>`-`<0xFF>` BYTE, all
 *   score 0; every other id i is NORMAL with score -(i - 259), except the 16 pieces made only of
 *   "▁", whose score is -1e9 (they merge last).
 */
import {DependencyError} from '../errors.js'
import {bytePiece, PIECE_TYPE, type PieceType, type SentencePieceModel, SENTENCEPIECE_DEFAULTS} from './model.js'
import {createTokenizer, type Tokenizer} from './tokenizer.js'

export const LLAMA2_NAME = 'built-in LLaMA-2 tokenizer (vocabulary from llama-tokenizer-js 1.2.2, MIT)'
export const LLAMA2_VOCAB_SIZE = 32000
/** First NORMAL piece: after <unk> <s> </s> and the 256 byte pieces. */
const FIRST_NORMAL = 259
/** Score of the pieces made only of "▁" in Meta's model. */
export const WHITESPACE_ONLY_SCORE = -1e9
const WHITESPACE_ONLY = /^\u2581+$/

/** The LLaMA-2 model as plain data, from a vocabulary in id order. */
export function llama2ModelFromVocabulary(vocabulary: readonly string[]): SentencePieceModel {
  const fail = (what: string) => new DependencyError('tokenizer.llama2', `llama-tokenizer-js does not hold LLaMA-2's vocabulary: ${what}`)
  if (vocabulary.length !== LLAMA2_VOCAB_SIZE) throw fail(`${vocabulary.length} pieces, expected ${LLAMA2_VOCAB_SIZE}`)
  const pieces = [...vocabulary]
  const scores: number[] = []
  const types: PieceType[] = []
  for (let id = 0; id < pieces.length; id++) {
    const piece = pieces[id]!
    if (typeof piece !== 'string') throw fail(`piece ${id} is not a string`)
    if (id === 0) {
      if (piece !== '<unk>') throw fail(`piece 0 is "${piece}", not <unk>`)
      types.push(PIECE_TYPE.UNKNOWN)
      scores.push(0)
    } else if (id < 3) {
      if (piece !== (id === 1 ? '<s>' : '</s>')) throw fail(`piece ${id} is "${piece}"`)
      types.push(PIECE_TYPE.CONTROL)
      scores.push(0)
    } else if (id < FIRST_NORMAL) {
      if (piece !== bytePiece(id - 3)) throw fail(`piece ${id} is "${piece}", not ${bytePiece(id - 3)}`)
      types.push(PIECE_TYPE.BYTE)
      scores.push(0)
    } else {
      types.push(PIECE_TYPE.NORMAL)
      scores.push(WHITESPACE_ONLY.test(piece) ? WHITESPACE_ONLY_SCORE : -(id - FIRST_NORMAL))
    }
  }
  return {
    model_type: 'BPE',
    pieces,
    scores,
    types,
    unk_id: 0,
    bos_id: 1,
    eos_id: 2,
    pad_id: -1,
    byte_fallback: true,
    unk_surface: SENTENCEPIECE_DEFAULTS.unk_surface,
    treat_whitespace_as_suffix: false,
    normalizer: 'identity',
    precompiled_charsmap: new Uint8Array(0),
    add_dummy_prefix: true,
    remove_extra_whitespaces: false,
    escape_whitespaces: true,
  }
}

let cached: Promise<SentencePieceModel> | undefined

/** LLaMA-2's SentencePiece model (loaded once; the package decodes its vocabulary on import). */
export function llama2Model(): Promise<SentencePieceModel> {
  cached ??= import('llama-tokenizer-js').then((m) => llama2ModelFromVocabulary(m.default.vocabById))
  return cached
}

/** The built-in LLaMA-2 tokenizer (BOS prepended by default, as OpenELM expects). */
export async function llama2Tokenizer(): Promise<Tokenizer> {
  return createTokenizer(await llama2Model(), LLAMA2_NAME)
}
