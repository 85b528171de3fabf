/** On-disk safetensors structures, spelled as the spec spells them. */
import {type DType} from '../../tensor/dtype.js'

/** Reference crate's cap on the JSON header. */
export const MAX_HEADER_BYTES = 100_000_000
/** The u64 little-endian header length that starts every file. */
export const N_LEN = 8

export interface HeaderEntry {
  dtype: DType
  shape: number[]
  data_offsets: [number, number]
}

export interface ParsedHeader {
  /** `__metadata__`, when present: string → string. */
  metadata?: Record<string, string>
  /** Entries in the order of their data offsets. */
  tensors: {name: string; entry: HeaderEntry}[]
  /** Byte offset where tensor data starts (8 + header length). */
  dataStart: number
}
