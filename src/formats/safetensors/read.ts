/**
 * Streaming safetensors reader. The header is checked against every rule of the reference crate
 * before anything is trusted; tensor bytes are read on demand with positional reads.
 */
import {clip, FormatError, quote} from '../../errors.js'
import {jsonErrorSummary, RandomAccessFile} from '../../io/file.js'
import {dtypeSize, isDType} from '../../tensor/dtype.js'
import {type TensorRecord, withFileRange, withReadInto} from '../../tensor/record.js'
import {type HeaderEntry, MAX_HEADER_BYTES, N_LEN, type ParsedHeader} from './types.js'

function fail(code: string, file: string, message: string, details: Record<string, unknown> = {}): never {
  throw new FormatError(`safetensors.${code}`, `${file}: ${message}`, {path: file, ...details})
}

/**
 * The keys of the top-level JSON object, in order, duplicates kept (JSON.parse silently keeps
 * the last of a duplicate; the reference crate rejects them).
 */
export function topLevelKeys(text: string): string[] {
  const keys: string[] = []
  let depth = 0
  let expectKey = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c === '"') {
      let j = i + 1
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1
      if (depth === 1 && expectKey) {
        keys.push(JSON.parse(text.slice(i, j + 1)) as string)
        expectKey = false
      }
      i = j
    } else if (c === '{' || c === '[') {
      depth++
      if (depth === 1) expectKey = true
    } else if (c === '}' || c === ']') depth--
    else if (c === ',' && depth === 1) expectKey = true
  }
  return keys
}

/** Validate a header (the JSON bytes) against the file size. */
export function parseHeader(headerBytes: Uint8Array, fileSize: number, file = '<buffer>'): ParsedHeader {
  let text: string
  try {
    text = new TextDecoder('utf-8', {fatal: true}).decode(headerBytes)
  } catch {
    fail('header_utf8', file, 'header is not valid UTF-8')
  }
  // The reference crate insists on an object at byte 0 (no leading whitespace or BOM).
  if (!text.startsWith('{')) fail('header_start', file, `header does not start with "{" (got ${JSON.stringify(text.slice(0, 8))})`)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    fail('header_json', file, `header is not valid JSON (${jsonErrorSummary(text, error as Error)})`)
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('header_json', file, 'header is not a JSON object')
  const keys = topLevelKeys(text)
  const seen = new Set<string>()
  for (const k of keys) {
    if (seen.has(k)) fail('duplicate_key', file, `tensor ${quote(k)} appears twice in the header`, {tensor: k})
    seen.add(k)
  }
  const header = json as Record<string, unknown>
  let metadata: Record<string, string> | undefined
  const tensors: ParsedHeader['tensors'] = []
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (typeof value !== 'object' || value === null || Array.isArray(value) || !Object.values(value).every((v) => typeof v === 'string')) {
        fail('metadata', file, '__metadata__ must be an object of strings')
      }
      metadata = value as Record<string, string>
      continue
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('header_entry', file, `tensor ${quote(name)} has no {dtype, shape, data_offsets} entry`, {tensor: name})
    const {dtype, shape, data_offsets} = value as Record<string, unknown>
    for (const [field, v] of [['dtype', dtype], ['shape', shape], ['data_offsets', data_offsets]] as const) {
      if (v === undefined) fail('header_entry', file, `tensor ${quote(name)} lacks the field ${field}`, {tensor: name, field})
    }
    if (!isDType(dtype)) fail('dtype', file, `tensor ${quote(name)} has unknown dtype ${clip(JSON.stringify(dtype) ?? String(dtype), 40)}`, {tensor: name})
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      fail('shape', file, `tensor ${quote(name)} has an invalid shape ${clip(JSON.stringify(shape) ?? String(undefined), 40)} (expected a list of non-negative integers)`, {tensor: name})
    }
    if (!Array.isArray(data_offsets) || data_offsets.length !== 2 || !data_offsets.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      fail('offsets', file, `tensor ${quote(name)} has invalid data_offsets ${clip(JSON.stringify(data_offsets) ?? String(undefined), 40)} (expected [begin, end] byte offsets)`, {tensor: name})
    }
    const [begin, end] = data_offsets as [number, number]
    if (end < begin) fail('offsets', file, `tensor ${quote(name)} ends (${end}) before it begins (${begin})`, {tensor: name})
    let elements = 1n
    for (const d of shape as number[]) elements *= BigInt(d)
    const expected = elements * BigInt(dtypeSize(dtype))
    if (expected > BigInt(Number.MAX_SAFE_INTEGER)) fail('overflow', file, `tensor ${quote(name)} shape ${clip(JSON.stringify(shape) ?? String(undefined), 40)} overflows`, {tensor: name})
    if (BigInt(end - begin) !== expected) {
      fail('size_mismatch', file, `tensor ${quote(name)} spans ${end - begin} bytes but ${dtype} ${clip(JSON.stringify(shape) ?? String(undefined), 40)} needs ${expected}`, {tensor: name})
    }
    tensors.push({name, entry: {dtype, shape: shape as number[], data_offsets: [begin, end]}})
  }
  tensors.sort((a, b) => a.entry.data_offsets[0] - b.entry.data_offsets[0] || a.entry.data_offsets[1] - b.entry.data_offsets[1])
  let cursor = 0
  for (const {name, entry} of tensors) {
    const [begin, end] = entry.data_offsets
    if (begin < cursor) fail('overlap', file, `tensor ${quote(name)} at bytes ${begin}..${end} overlaps the previous tensor (ending at ${cursor})`, {tensor: name})
    if (begin > cursor) fail('gap', file, `tensor ${quote(name)} starts at ${begin}, leaving a gap after byte ${cursor}`, {tensor: name})
    cursor = end
  }
  const dataStart = N_LEN + headerBytes.byteLength
  if (dataStart + cursor > fileSize) {
    fail('truncated', file, `file is truncated: the header describes ${dataStart + cursor} bytes but the file has ${fileSize}`)
  }
  if (dataStart + cursor < fileSize) {
    fail('file_length', file, `file has ${fileSize - dataStart - cursor} bytes past the last tensor (the header describes ${dataStart + cursor}, the file has ${fileSize})`)
  }
  return {metadata, tensors, dataStart}
}

export interface SafetensorsFile {
  path: string
  metadata?: Record<string, string>
  /** In data-offset order, with the file's own names. */
  tensors: TensorRecord[]
  entries: Map<string, HeaderEntry>
  size: number
  close(): Promise<void>
}

/** What a file whose first bytes are not a safetensors header length is, when its magic says so. */
function otherFileKind(head: Uint8Array): string | undefined {
  if (head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04) return 'a ZIP (PyTorch checkpoint)'
  if (head[0] === 0x47 && head[1] === 0x47 && head[2] === 0x55 && head[3] === 0x46) return 'a GGUF file'
  if (head[0] === 0x80 && head[1]! >= 2 && head[1]! <= 5) return 'a pickle (legacy PyTorch checkpoint)'
  return undefined
}

export async function openSafetensors(p: string): Promise<SafetensorsFile> {
  const file = await RandomAccessFile.open(p)
  try {
    if (file.size < N_LEN) fail('header_too_small', p, `file has ${file.size} bytes, fewer than the ${N_LEN}-byte header length`)
    const lenBytes = await file.read(0, N_LEN)
    const n = new DataView(lenBytes.buffer, lenBytes.byteOffset, N_LEN).getBigUint64(0, true)
    const other = otherFileKind(lenBytes)
    if (other && (n > BigInt(MAX_HEADER_BYTES) || Number(n) + N_LEN > file.size)) fail('not_safetensors', p, `this is ${other}, not safetensors`)
    if (n > BigInt(MAX_HEADER_BYTES)) fail('header_too_large', p, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`)
    if (Number(n) + N_LEN > file.size) fail('header_length', p, `header length ${n} runs past the end of the file (${file.size} bytes)`)
    const parsed = parseHeader(await file.read(N_LEN, Number(n)), file.size, p)
    const tensors = parsed.tensors.map(({name, entry}): TensorRecord => {
      const base = parsed.dataStart + entry.data_offsets[0]
      const byteLength = entry.data_offsets[1] - entry.data_offsets[0]
      // A range outside the tensor is a caller's bug; never hand out a neighbour's bytes.
      const check = (start: number, end: number) => {
        if (start < 0 || end < start || end > byteLength) throw new RangeError(`${name}: bytes ${start}..${end} are outside the tensor (${byteLength} bytes)`)
      }
      const record: TensorRecord = {
        name, dtype: entry.dtype, shape: entry.shape, byteLength,
        read: async (start = 0, end = byteLength) => {
          check(start, end)
          return file.read(base + start, end - start)
        },
      }
      return withFileRange(withReadInto(record, async (target, start) => {
        check(start, start + target.byteLength)
        await file.readInto(target, base + start)
      }), {fd: file.fd, offset: base})
    })
    return {
      path: p, metadata: parsed.metadata, tensors, size: file.size,
      entries: new Map(parsed.tensors.map(({name, entry}) => [name, entry])),
      close: () => file.close(),
    }
  } catch (error) {
    await file.close()
    throw error
  }
}
