/**
 * GGUF on-disk vocabulary (ggml/docs/gguf.md, gguf-py `constants.py`). Field names in the
 * interfaces below are spelled as the spec spells them (`tensor_count`, `n_dimensions`);
 * computed values are camelCase.
 */

/** "GGUF" read as a little-endian uint32. */
export const GGUF_MAGIC = 0x46554747
export const GGUF_VERSION = 3
export const GGUF_DEFAULT_ALIGNMENT = 32

/** Metadata value types (`gguf_metadata_value_type`). */
export const GGUF_VALUE_TYPE = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const
export type GgufValueTypeName = keyof typeof GGUF_VALUE_TYPE
export type GgufValueType = (typeof GGUF_VALUE_TYPE)[GgufValueTypeName]

export const VALUE_TYPE_NAMES = Object.fromEntries(Object.entries(GGUF_VALUE_TYPE).map(([k, v]) => [v, k])) as Record<number, GgufValueTypeName>

/** Bytes of a fixed-size scalar value type (STRING and ARRAY are variable). */
export const SCALAR_SIZES: Partial<Record<GgufValueTypeName, number>> = {
  UINT8: 1, INT8: 1, UINT16: 2, INT16: 2, UINT32: 4, INT32: 4, FLOAT32: 4, BOOL: 1, UINT64: 8, INT64: 8, FLOAT64: 8,
}

/** A scalar value: 64-bit integers stay bigint so nothing above 2^53 is rounded. */
export type GgufScalar = number | bigint | boolean | string

/** An array value; its items may themselves be arrays (nested). */
export interface GgufArray {
  itemType: GgufValueTypeName
  items: (GgufScalar | GgufArray)[]
}

export type GgufValue = GgufScalar | GgufArray

/** One `gguf_metadata_kv_t`. */
export interface GgufKv {
  key: string
  type: GgufValueTypeName
  value: GgufValue
}

/** ggml tensor types this tool reads and writes (`ggml_type`). */
export const GGML_TYPE = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  BF16: 30,
} as const
export type GgmlTypeName = keyof typeof GGML_TYPE

/**
 * Every ggml type id the spec defines, so an id we cannot decode is told apart from one that is
 * not a ggml type at all. Ids 4, 5 (Q4_2, Q4_3) and 31-33 were removed upstream.
 */
export const KNOWN_GGML_TYPES: Record<number, string> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 8: 'Q8_0', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K',
  12: 'Q4_K', 13: 'Q5_K', 14: 'Q6_K', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S', 20: 'IQ4_NL',
  21: 'IQ3_S', 22: 'IQ2_S', 23: 'IQ4_XS', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64', 29: 'IQ1_M', 30: 'BF16',
  34: 'TQ1_0', 35: 'TQ2_0', 39: 'MXFP4',
}

/** Elements per block and bytes per block of each supported ggml type. */
export const GGML_BLOCK: Record<GgmlTypeName, {elements: number; bytes: number}> = {
  F32: {elements: 1, bytes: 4},
  F16: {elements: 1, bytes: 2},
  BF16: {elements: 1, bytes: 2},
  // ggml `block_q8_0`: f16 scale d, then 32 int8 quants.
  Q8_0: {elements: 32, bytes: 34},
  // ggml-common.h: block_q4_0 (d, 16 bytes of nibbles), q4_1 (+ m), q5_0 (+ 4 bytes of fifth bits), q5_1.
  Q4_0: {elements: 32, bytes: 18},
  Q4_1: {elements: 32, bytes: 20},
  Q5_0: {elements: 32, bytes: 22},
  Q5_1: {elements: 32, bytes: 24},
  // The 256-value super-blocks (QK_K).
  Q2_K: {elements: 256, bytes: 84},
  Q3_K: {elements: 256, bytes: 110},
  Q4_K: {elements: 256, bytes: 144},
  Q5_K: {elements: 256, bytes: 176},
  Q6_K: {elements: 256, bytes: 210},
}

/** The quantized ggml types, and the storage scheme (src/quant) that encodes and decodes each. */
export const GGML_QUANT_SCHEME = {
  Q8_0: 'gguf_q8_0', Q4_0: 'gguf_q4_0', Q4_1: 'gguf_q4_1', Q5_0: 'gguf_q5_0', Q5_1: 'gguf_q5_1',
  Q2_K: 'gguf_q2_k', Q3_K: 'gguf_q3_k', Q4_K: 'gguf_q4_k', Q5_K: 'gguf_q5_k', Q6_K: 'gguf_q6_k',
} as const
export type GgmlQuantType = keyof typeof GGML_QUANT_SCHEME

export function isQuantType(type: string): type is GgmlQuantType {
  return Object.hasOwn(GGML_QUANT_SCHEME, type)
}

export const GGML_TYPE_NAMES = Object.fromEntries(Object.entries(GGML_TYPE).map(([k, v]) => [v, k])) as Record<number, GgmlTypeName>

/** `general.file_type` values (llama.cpp `llama_ftype`). */
export const LLAMA_FILE_TYPE = {
  ALL_F32: 0,
  MOSTLY_F16: 1,
  MOSTLY_Q4_0: 2,
  MOSTLY_Q4_1: 3,
  MOSTLY_Q8_0: 7,
  MOSTLY_Q5_0: 8,
  MOSTLY_Q5_1: 9,
  MOSTLY_Q2_K: 10,
  MOSTLY_Q3_K_S: 11,
  MOSTLY_Q3_K_M: 12,
  MOSTLY_Q3_K_L: 13,
  MOSTLY_Q4_K_S: 14,
  MOSTLY_Q4_K_M: 15,
  MOSTLY_Q5_K_S: 16,
  MOSTLY_Q5_K_M: 17,
  MOSTLY_Q6_K: 18,
  MOSTLY_BF16: 32,
} as const

/** SentencePiece / llama.cpp token types (`tokenizer.ggml.token_type`). */
export const TOKEN_TYPE = {NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6} as const

/** One `gguf_tensor_info_t`, as stored (dimensions innermost first). */
export interface GgufTensorInfo {
  name: string
  n_dimensions: number
  /** ggml order: dimensions[0] is the row length. */
  dimensions: bigint[]
  type: number
  /** Relative to the start of the tensor data section. */
  offset: bigint
}

/** A parsed and validated header. */
export interface GgufHeader {
  version: number
  tensor_count: bigint
  metadata_kv_count: bigint
  metadata: GgufKv[]
  tensorInfos: GgufTensorInfo[]
  alignment: number
  /** Absolute file offset of the tensor data section. */
  dataOffset: number
  fileSize: number
}
