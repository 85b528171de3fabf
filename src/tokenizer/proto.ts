/**
 * `tokenizer.model`: SentencePiece's ModelProto (protobuf, proto2), decoded and encoded with
 * protobufjs from the subset of `sentencepiece_model.proto` below. Field numbers and defaults are
 * the published ones (checked against Debian's sentencepiece 0.1.97 `sentencepiece_model_pb2`).
 * Fields not listed are skipped when reading and not written.
 */
import {createRequire} from 'node:module'
import type protobuf from 'protobufjs'
import {FormatError} from '../errors.js'
import {MODEL_TYPE, type ModelTypeName, PIECE_TYPE, type PieceType, SENTENCEPIECE_DEFAULTS, type SentencePieceModel} from './model.js'

const SENTENCEPIECE_SCHEMA = `
syntax = "proto2";
package sentencepiece;
message TrainerSpec {
  enum ModelType { UNIGRAM = 1; BPE = 2; WORD = 3; CHAR = 4; }
  optional ModelType model_type = 3 [default = UNIGRAM];
  optional int32 vocab_size = 4 [default = 8000];
  optional bool treat_whitespace_as_suffix = 24 [default = false];
  optional bool byte_fallback = 35 [default = false];
  optional int32 unk_id = 40 [default = 0];
  optional int32 bos_id = 41 [default = 1];
  optional int32 eos_id = 42 [default = 2];
  optional int32 pad_id = 43 [default = -1];
  optional string unk_surface = 44 [default = " \u2047 "];
  optional string unk_piece = 45 [default = "<unk>"];
  optional string bos_piece = 46 [default = "<s>"];
  optional string eos_piece = 47 [default = "</s>"];
  optional string pad_piece = 48 [default = "<pad>"];
}
message NormalizerSpec {
  optional string name = 1;
  optional bytes precompiled_charsmap = 2;
  optional bool add_dummy_prefix = 3 [default = true];
  optional bool remove_extra_whitespaces = 4 [default = true];
  optional bool escape_whitespaces = 5 [default = true];
}
message ModelProto {
  message SentencePiece {
    enum Type { NORMAL = 1; UNKNOWN = 2; CONTROL = 3; USER_DEFINED = 4; UNUSED = 5; BYTE = 6; }
    optional string piece = 1;
    optional float score = 2;
    optional Type type = 3 [default = NORMAL];
  }
  repeated SentencePiece pieces = 1;
  optional TrainerSpec trainer_spec = 2;
  optional NormalizerSpec normalizer_spec = 3;
}
`

/** A tokenizer.model larger than this is not a SentencePiece model (LLaMA-2's is 500 kB). */
export const MAX_TOKENIZER_MODEL_BYTES = 64 * 1024 * 1024

let modelProto: protobuf.Type | undefined
function modelProtoType(): protobuf.Type {
  // protobufjs is loaded on first use, not at start-up.
  modelProto ??= (createRequire(import.meta.url)('protobufjs') as typeof protobuf).parse(SENTENCEPIECE_SCHEMA, {keepCase: true}).root.lookupType('sentencepiece.ModelProto')
  return modelProto
}

interface RawPiece {piece: string; score: number; type: number}
interface RawTrainerSpec {
  model_type: number; treat_whitespace_as_suffix: boolean; byte_fallback: boolean
  unk_id: number; bos_id: number; eos_id: number; pad_id: number; unk_surface: string
}
interface RawNormalizerSpec {
  name: string; precompiled_charsmap: Uint8Array; add_dummy_prefix: boolean; remove_extra_whitespaces: boolean; escape_whitespaces: boolean
}

const MODEL_TYPE_NAMES = Object.fromEntries(Object.entries(MODEL_TYPE).map(([k, v]) => [v, k])) as Record<number, ModelTypeName>
const PIECE_TYPES = new Set<number>(Object.values(PIECE_TYPE))

/**
 * Decode a ModelProto. Anything that is not a well-formed one (truncated, not protobuf, an enum
 * value outside the spec, no pieces) is a FormatError naming `file`. The result is not checked for
 * encodability (duplicates, missing byte pieces): `compileModel` does that.
 */
export function readSentencePieceModel(bytes: Uint8Array, file = 'tokenizer.model'): SentencePieceModel {
  const type = modelProtoType()
  let obj: {pieces: RawPiece[]; trainer_spec?: RawTrainerSpec; normalizer_spec?: RawNormalizerSpec}
  try {
    obj = type.toObject(type.decode(bytes), {defaults: true, enums: Number, bytes: Uint8Array}) as typeof obj
  } catch (error) {
    throw new FormatError('tokenizer.protobuf', `${file} is not a SentencePiece model: ${(error as Error).message}`, {path: file})
  }
  if (obj.pieces.length === 0) throw new FormatError('tokenizer.empty', `${file} has no pieces`, {path: file})
  const trainer = obj.trainer_spec
  const normalizer = obj.normalizer_spec
  const modelType = MODEL_TYPE_NAMES[trainer?.model_type ?? MODEL_TYPE.UNIGRAM]
  if (modelType === undefined) throw new FormatError('tokenizer.protobuf', `${file}: model_type ${trainer!.model_type} is not one of SentencePiece's (1-4)`, {path: file})
  const types = obj.pieces.map((p, id) => {
    if (!PIECE_TYPES.has(p.type)) throw new FormatError('tokenizer.protobuf', `${file}: piece ${id} has type ${p.type}, not one of SentencePiece's (1-6)`, {path: file})
    return p.type as PieceType
  })
  const d = SENTENCEPIECE_DEFAULTS
  return {
    model_type: modelType,
    pieces: obj.pieces.map((p) => p.piece),
    scores: obj.pieces.map((p) => p.score),
    types,
    unk_id: trainer?.unk_id ?? d.unk_id,
    bos_id: trainer?.bos_id ?? d.bos_id,
    eos_id: trainer?.eos_id ?? d.eos_id,
    pad_id: trainer?.pad_id ?? d.pad_id,
    byte_fallback: trainer?.byte_fallback ?? d.byte_fallback,
    unk_surface: trainer?.unk_surface ?? d.unk_surface,
    treat_whitespace_as_suffix: trainer?.treat_whitespace_as_suffix ?? d.treat_whitespace_as_suffix,
    normalizer: normalizer?.name ?? d.normalizer,
    // A copy as a plain Uint8Array (protobufjs hands out a Buffer view on Node).
    precompiled_charsmap: new Uint8Array(normalizer?.precompiled_charsmap ?? []),
    add_dummy_prefix: normalizer?.add_dummy_prefix ?? d.add_dummy_prefix,
    remove_extra_whitespaces: normalizer?.remove_extra_whitespaces ?? d.remove_extra_whitespaces,
    escape_whitespaces: normalizer?.escape_whitespaces ?? d.escape_whitespaces,
  }
}

/**
 * Encode `model` as a ModelProto (the bytes of a `tokenizer.model`). Every field this tool knows
 * is written explicitly, so a reader never depends on proto2 defaults; the same model gives the
 * same bytes. Special piece names are taken from the pieces at the special ids.
 */
export function writeSentencePieceModel(model: SentencePieceModel): Uint8Array {
  const type = modelProtoType()
  const name = (id: number, fallback: string) => (id >= 0 && id < model.pieces.length ? model.pieces[id]! : fallback)
  const message = type.fromObject({
    pieces: model.pieces.map((piece, id) => ({piece, score: model.scores[id], type: model.types[id]})),
    trainer_spec: {
      model_type: MODEL_TYPE[model.model_type],
      vocab_size: model.pieces.length,
      treat_whitespace_as_suffix: model.treat_whitespace_as_suffix,
      byte_fallback: model.byte_fallback,
      unk_id: model.unk_id,
      bos_id: model.bos_id,
      eos_id: model.eos_id,
      pad_id: model.pad_id,
      unk_surface: model.unk_surface,
      unk_piece: name(model.unk_id, '<unk>'),
      bos_piece: name(model.bos_id, '<s>'),
      eos_piece: name(model.eos_id, '</s>'),
      pad_piece: name(model.pad_id, '<pad>'),
    },
    normalizer_spec: {
      name: model.normalizer,
      precompiled_charsmap: model.precompiled_charsmap,
      add_dummy_prefix: model.add_dummy_prefix,
      remove_extra_whitespaces: model.remove_extra_whitespaces,
      escape_whitespaces: model.escape_whitespaces,
    },
  })
  return type.encode(message).finish()
}
