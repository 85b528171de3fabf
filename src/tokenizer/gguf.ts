/**
 * A SentencePiece model from a GGUF file's `tokenizer.ggml.*` arrays (the GGUF reader hands them
 * over as plain values; this floor does not read GGUF). llama.cpp's "llama" tokenizer is
 * SentencePiece BPE: GGUF keeps pieces, scores and types, and the rest is llama.cpp's fixed
 * behaviour (identity normalizer, no whitespace removal, byte fallback when byte pieces exist, a
 * dummy prefix unless `tokenizer.ggml.add_space_prefix` is false).
 */
import {FormatError} from '../errors.js'
import {PIECE_TYPE, type PieceType, SENTENCEPIECE_DEFAULTS, type SentencePieceModel} from './model.js'

export interface GgufVocabulary {
  /** `tokenizer.ggml.model`; only "llama" (SentencePiece) is supported. Absent means "llama". */
  model?: string
  tokens: readonly string[]
  scores?: readonly number[]
  /** `tokenizer.ggml.token_type`: SentencePiece's piece types. */
  types?: readonly number[]
  bos?: number
  eos?: number
  unk?: number
  /** `tokenizer.ggml.add_space_prefix` (default true). */
  addSpacePrefix?: boolean
}

/** Pieces our old writer put in when no tokenizer was available: `[PLACEHOLDER_<id>]`. */
const PLACEHOLDER = /^\[PLACEHOLDER_\d+\]$/

/** True for the placeholder vocabulary (token ids only, no text) an older openelm wrote. */
export function isPlaceholderVocabulary(tokens: readonly string[]): boolean {
  return tokens.some((t) => PLACEHOLDER.test(t))
}

/** The model a GGUF vocabulary stands for; `file` names the GGUF in errors. */
export function modelFromGgufVocabulary(v: GgufVocabulary, file: string): SentencePieceModel {
  const bad = (what: string) => new FormatError('tokenizer.gguf', `${file}: ${what}`, {path: file})
  if (v.model !== undefined && v.model !== 'llama') throw new FormatError('tokenizer.unsupported', `${file}: tokenizer.ggml.model "${v.model}" is not supported (only "llama", SentencePiece)`, {path: file})
  const n = v.tokens.length
  if (n === 0) throw bad('tokenizer.ggml.tokens is empty')
  if (v.scores && v.scores.length !== n) throw bad(`${n} tokens but ${v.scores.length} scores`)
  if (v.types && v.types.length !== n) throw bad(`${n} tokens but ${v.types.length} token types`)
  const types = (v.types ?? v.tokens.map(() => PIECE_TYPE.NORMAL)).map((t, id) => {
    if (!Number.isInteger(t) || t < PIECE_TYPE.NORMAL || t > PIECE_TYPE.BYTE) throw bad(`token ${id} has type ${t}, not one of 1-6`)
    return t as PieceType
  })
  return {
    model_type: 'BPE',
    pieces: [...v.tokens],
    scores: v.scores ? [...v.scores] : v.tokens.map(() => 0),
    types,
    unk_id: v.unk ?? 0,
    bos_id: v.bos ?? 1,
    eos_id: v.eos ?? 2,
    pad_id: -1,
    byte_fallback: types.includes(PIECE_TYPE.BYTE),
    unk_surface: SENTENCEPIECE_DEFAULTS.unk_surface,
    treat_whitespace_as_suffix: false,
    normalizer: 'identity',
    precompiled_charsmap: new Uint8Array(0),
    add_dummy_prefix: v.addSpacePrefix ?? true,
    remove_extra_whitespaces: false,
    escape_whitespaces: true,
  }
}
