/**
 * A SentencePiece model as plain data: the fields of `sentencepiece_model.proto` this tool uses,
 * spelled as the proto spells them. Every loader (tokenizer.model, tokenizer.json, a GGUF
 * vocabulary, the built-in LLaMA-2 vocabulary) produces one; the encoder and the writers read one.
 */

/** `ModelProto.SentencePiece.Type`; llama.cpp's `tokenizer.ggml.token_type` uses the same numbers. */
export const PIECE_TYPE = {NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6} as const
export type PieceType = (typeof PIECE_TYPE)[keyof typeof PIECE_TYPE]

/** `TrainerSpec.ModelType`. */
export const MODEL_TYPE = {UNIGRAM: 1, BPE: 2, WORD: 3, CHAR: 4} as const
export type ModelTypeName = keyof typeof MODEL_TYPE

/** U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's escaped space. */
export const SPACE_SYMBOL = '\u2581'

export interface SentencePieceModel {
  model_type: ModelTypeName
  /** Piece text by id. */
  pieces: string[]
  /** float32 scores by id (higher merges first in BPE). */
  scores: number[]
  types: PieceType[]
  unk_id: number
  bos_id: number
  /** -1 when the model has no such piece. */
  eos_id: number
  pad_id: number
  /** Unknown characters become `<0xXX>` pieces of their UTF-8 bytes instead of UNK. */
  byte_fallback: boolean
  /** What `decode` writes for UNK (SentencePiece's default is " ⁇ "). */
  unk_surface: string
  treat_whitespace_as_suffix: boolean
  /** NormalizerSpec.name ("identity" for LLaMA). */
  normalizer: string
  /** Non-empty for rule-based normalizers (nmt_nfkc, ...), which this encoder does not implement. */
  precompiled_charsmap: Uint8Array
  add_dummy_prefix: boolean
  remove_extra_whitespaces: boolean
  escape_whitespaces: boolean
}

/** SentencePiece's defaults (proto2 field defaults) for everything but the vocabulary. */
export const SENTENCEPIECE_DEFAULTS = {
  model_type: 'UNIGRAM',
  unk_id: 0,
  bos_id: 1,
  eos_id: 2,
  pad_id: -1,
  byte_fallback: false,
  unk_surface: ' \u2047 ',
  treat_whitespace_as_suffix: false,
  normalizer: '',
  add_dummy_prefix: true,
  remove_extra_whitespaces: true,
  escape_whitespaces: true,
} as const

/** `<0xXX>` with upper-case hex, as SentencePiece names byte pieces. */
export function bytePiece(byte: number): string {
  return `<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`
}

export const BYTE_PIECE = /^<0x([0-9A-F]{2})>$/
