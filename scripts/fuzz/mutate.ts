/**
 * Deterministic, format-aware mutations. Each mutation names what it did and what kind of change
 * it is, which tells the classifier what an acceptance may legitimately look like:
 * - `structure`: headers, offsets, counts, opcodes, ZIP fields: must be refused, or read exactly as the seed;
 * - `bytes`: raw byte edits anywhere: may be accepted only as a local change of tensor values;
 * - `tensor`: a change confined to one tensor's values (a same-width dtype relabel, payload edits);
 * - `edit`: a config/metadata value: may be accepted only as a valid model (finite logits, the
 *   tensors unchanged, the config consistent the way Hugging Face's loader reads it).
 */
import {deflateRawSync, inflateRawSync} from 'node:zlib'
import {onnx, varint} from '../../src/formats/onnx/builder.js'
import {buildZip, readStoredZip, type Seed, type ZipMember} from './seeds.js'

export type MutationKind = 'structure' | 'bytes' | 'tensor' | 'edit'

export interface Mutation {
  /** One line: what was changed, replayable from the case number alone. */
  description: string
  kind: MutationKind
  /** The seed file it changes (relative to the seed folder). */
  file: string
  /** For `bytes`: how many bytes the change can have moved or altered. */
  touched?: number
  apply(bytes: Buffer): Buffer
}

// ---- deterministic randomness ---------------------------------------------------------------

export class Rng {
  private state: number
  constructor(seed: number) {
    this.state = seed >>> 0 || 0x9e3779b9
  }
  /** mulberry32 */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0
    let t = this.state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  int(n: number): number {
    return Math.floor(this.next() * n)
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!
  }
}

export function caseRng(masterSeed: number, caseNo: number): Rng {
  let h = (masterSeed ^ Math.imul(caseNo + 1, 0x85ebca6b)) >>> 0
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0
  return new Rng(h ^ (h >>> 16))
}

// ---- hostile values ----------------------------------------------------------------------------

const HOSTILE_NUMBERS = [0, -1, 0.5, 1, 3, -10000, 2 ** 31, 1e9, 2 ** 53, 2 ** 64, 1e308, 1e-300]
const LONG_STRING = 'x'.repeat(70_000)
const HOSTILE_JSON: unknown[] = [...HOSTILE_NUMBERS, '7', '', null, true, [], {}, [1, 2], LONG_STRING, 'a\nb']
/** Raw JSON tokens JSON.stringify cannot write. */
const RAW_TOKENS = ['NaN', 'Infinity', '-Infinity', '1e400', '-0', '0x10', '01']

// ---- generic byte mutations --------------------------------------------------------------------

function byteMutation(file: string, size: number, r: Rng): Mutation {
  const pos = () => (r.next() < 0.6 ? r.int(Math.min(size, 4096)) : r.int(size))
  const op = r.int(9)
  switch (op) {
    case 0: {
      const at = r.next() < 0.5 ? r.int(Math.min(size, 512)) : r.int(size)
      return {description: `truncate ${file} to ${at} bytes`, kind: 'structure', file, apply: (b) => b.subarray(0, at)}
    }
    case 1: {
      const at = pos()
      const bit = r.int(8)
      return {description: `flip bit ${bit} of byte ${at} of ${file}`, kind: 'bytes', file, touched: 1, apply: (b) => setAt(b, at, b[at]! ^ (1 << bit))}
    }
    case 2: {
      const at = pos()
      const v = r.pick([0, 0xff, 0x7f, 0x80, 1])
      return {description: `set byte ${at} of ${file} to ${v}`, kind: 'bytes', file, touched: 1, apply: (b) => setAt(b, at, v)}
    }
    case 3: {
      const at = pos()
      const n = 1 + r.int(64)
      return {description: `zero ${n} bytes at ${at} of ${file}`, kind: 'bytes', file, touched: n, apply: (b) => { const c = Buffer.from(b); c.fill(0, Math.min(at, c.length), Math.min(at + n, c.length)); return c }}
    }
    case 4: {
      const from = pos()
      const n = 1 + r.int(256)
      const to = pos()
      return {
        description: `move ${n} bytes from ${from} to ${to} in ${file}`, kind: 'bytes', file, touched: Math.abs(to - from) + n,
        apply: (b) => { const chunk = b.subarray(from, from + n); const rest = Buffer.concat([b.subarray(0, from), b.subarray(from + n)]); const at = Math.min(to, rest.length); return Buffer.concat([rest.subarray(0, at), chunk, rest.subarray(at)]) },
      }
    }
    case 5: {
      const from = pos()
      const n = 1 + r.int(128)
      return {description: `duplicate ${n} bytes at ${from} of ${file}`, ...shifted(size, from), file, apply: (b) => Buffer.concat([b.subarray(0, from + n), b.subarray(from, from + n), b.subarray(from + n)])}
    }
    case 6: {
      const at = pos()
      const n = 1 + r.int(64)
      return {description: `delete ${n} bytes at ${at} of ${file}`, ...shifted(size, at), file, apply: (b) => Buffer.concat([b.subarray(0, at), b.subarray(at + n)])}
    }
    case 7: {
      const n = 1 + r.int(4096)
      return {description: `append ${n} garbage bytes to ${file}`, kind: 'structure', file, apply: (b) => Buffer.concat([b, garbage(n, n)])}
    }
    default: {
      const at = pos()
      const n = 1 + r.int(32)
      return {description: `insert ${n} bytes at ${at} of ${file}`, ...shifted(size, at), file, apply: (b) => Buffer.concat([b.subarray(0, at), garbage(n, at), b.subarray(at)])}
    }
  }
}

/**
 * Inserting or deleting bytes shifts everything after them: inside a data region of a format
 * without checksums or exact lengths (GGUF, ONNX external data) that is a valid file with
 * different values, so every byte from the edit to the end counts as touched.
 */
function shifted(size: number, at: number): {kind: MutationKind; touched: number} {
  return {kind: 'bytes', touched: Math.max(1, size - at)}
}

function setAt(b: Buffer, at: number, v: number): Buffer {
  const c = Buffer.from(b)
  if (at < c.length) c[at] = v & 0xff
  return c
}

function garbage(n: number, seed: number): Buffer {
  const r = new Rng(seed)
  return Buffer.from(Array.from({length: n}, () => r.int(256)))
}

// ---- JSON (config.json, shard index, safetensors header) --------------------------------------

function jsonEdit(file: string, text: string, r: Rng): Mutation {
  const json = JSON.parse(text) as Record<string, unknown>
  const keys = Object.keys(json)
  const op = r.int(6)
  if (op === 0) {
    const key = r.pick(keys)
    return {description: `${file}: delete ${key}`, kind: 'edit', file, apply: () => Buffer.from(JSON.stringify(omit(json, key)))}
  }
  if (op === 1) {
    const key = r.pick(keys)
    const token = r.pick(RAW_TOKENS)
    return {description: `${file}: ${key} = ${token} (raw token)`, kind: 'edit', file, apply: () => Buffer.from(JSON.stringify({...json, [key]: '@@RAW@@'}).replace('"@@RAW@@"', token))}
  }
  if (op === 2) {
    const listKeys = keys.filter((k) => Array.isArray(json[k]))
    if (listKeys.length > 0) {
      const key = r.pick(listKeys)
      const list = [...(json[key] as unknown[])]
      const variant = r.int(5)
      const i = r.int(Math.max(1, list.length))
      if (variant === 0) list[i] = typeof list[i] === 'number' ? (list[i] as number) + 1 : 1
      else if (variant === 1) list[i] = typeof list[i] === 'number' ? (list[i] as number) * 2 : 0
      else if (variant === 2) list.pop()
      else if (variant === 3) list.reverse()
      else list[i] = r.pick(HOSTILE_JSON)
      return {description: `${file}: ${key} list edit ${variant} at ${i}`, kind: 'edit', file, apply: () => Buffer.from(JSON.stringify({...json, [key]: list}))}
    }
  }
  if (op === 3) {
    const variant = r.int(4)
    const cut = r.int(text.length)
    const edits = [
      () => text.slice(0, cut),
      () => `\ufeff${text}`,
      () => text.replace(/}\s*$/, ',}'),
      () => text.replace('{', `{"${keys[0]}": 1, `),
    ]
    return {description: `${file}: text damage ${variant}`, kind: 'structure', file, apply: () => Buffer.from(edits[variant]!())}
  }
  const known = ['rope_freq_constant', 'rope_max_length', 'max_context_length', 'bos_token_id', 'eos_token_id', 'vocab_size', 'num_gqa_groups', 'head_dim', 'model_dim', 'num_transformer_layers', 'qkv_multipliers', 'ffn_dim_divisor', 'initializer_range', 'ffn_with_glu', 'activation_fn_name', 'quantization']
  const key = r.next() < 0.7 && file.endsWith('config.json') ? r.pick(known) : r.pick(keys)
  const value = key === 'qkv_multipliers' && r.next() < 0.5 ? r.pick([[0.25, 1.0], [0.5, 0.75], [1.0, 0.5], [0.5, 1.5]]) : r.pick(HOSTILE_JSON)
  return {description: `${file}: ${key} = ${shortJson(value)}`, kind: 'edit', file, apply: () => Buffer.from(JSON.stringify({...json, [key]: value}))}
}

function omit(json: Record<string, unknown>, key: string): Record<string, unknown> {
  const {[key]: _, ...rest} = json
  return rest
}

function shortJson(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v)
  return s.length > 40 ? `${s.slice(0, 40)}…(${s.length})` : s
}

// ---- safetensors -------------------------------------------------------------------------------

function safetensorsMutation(file: string, b: Buffer, r: Rng): Mutation {
  const n = Number(b.readBigUInt64LE(0))
  const header = JSON.parse(b.subarray(8, 8 + n).toString('utf8')) as Record<string, Record<string, unknown>>
  const data = b.subarray(8 + n)
  const names = Object.keys(header).filter((k) => k !== '__metadata__')
  const rebuild = (h: unknown, text?: string): Buffer => {
    let t = text ?? JSON.stringify(h)
    t += ' '.repeat((8 - (Buffer.byteLength(t) % 8)) % 8)
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(t)))
    return Buffer.concat([len, Buffer.from(t), data])
  }
  const op = r.int(7)
  if (op === 0) {
    const v = r.pick([n + 1, n - 1, n + 8, 0, 7, 2 ** 53, b.length, 100_000_001])
    return {description: `${file}: header length ${n} → ${v}`, kind: 'structure', file, apply: (x) => { const c = Buffer.from(x); c.writeBigUInt64LE(BigInt(v) & 0xffffffffffffffffn); return c }}
  }
  const name = r.pick(names)
  const entry = header[name]!
  if (op === 1) {
    const dtype = entry.dtype as string
    const sameWidth: Record<string, string> = {F16: 'BF16', BF16: 'F16', F32: 'I32', U32: 'F32', I32: 'U32'}
    const v = r.next() < 0.4 && sameWidth[dtype] ? sameWidth[dtype] : r.pick(['F64', 'I8', 'Q4', 'f32', 7, null, 'F8_E4M3'])
    const kind: MutationKind = sameWidth[dtype] === v ? 'tensor' : 'structure'
    return {description: `${file}: ${name} dtype ${dtype} → ${shortJson(v)}`, kind, file, apply: () => rebuild({...header, [name]: {...entry, dtype: v}})}
  }
  if (op === 2) {
    const shape = entry.shape as number[]
    const variants: unknown[] = [[...shape].reverse(), [...shape, 1], shape.slice(1), [], [0], [-1], [1.5], ['3'], [2 ** 53], shape.map((d) => d + 1), undefined]
    const v = r.pick(variants)
    return {description: `${file}: ${name} shape ${shortJson(shape)} → ${shortJson(v)}`, kind: 'structure', file, apply: () => rebuild({...header, [name]: {...entry, shape: v}})}
  }
  if (op === 3) {
    const [b0, e0] = entry.data_offsets as [number, number]
    const variants: unknown[] = [[b0 + 2, e0 + 2], [b0, e0 + 1], [b0 - 1, e0], [e0, b0], [0, 0], [1e20, 1e20 + e0 - b0], ['0', String(e0)], [b0], undefined, [b0 + 0.5, e0 + 0.5]]
    const v = r.pick(variants)
    return {description: `${file}: ${name} data_offsets → ${shortJson(v)}`, kind: 'structure', file, apply: () => rebuild({...header, [name]: {...entry, data_offsets: v}})}
  }
  if (op === 4) {
    const v = r.pick([LONG_STRING, `${name}\n`, '', '\u0000', r.pick(names), `${name}.bias`, 'transformer.lm_head.weight', `x${name}`])
    const text = JSON.stringify(header).replace(JSON.stringify(name), JSON.stringify(v))
    return {description: `${file}: rename ${name} → ${shortJson(v)}`, kind: 'structure', file, apply: () => rebuild(undefined, text)}
  }
  if (op === 5) {
    const v = r.pick([{format: 5}, [], 'x', {format: 'pt', [LONG_STRING]: 'y'}, null])
    return {description: `${file}: __metadata__ → ${shortJson(v)}`, kind: 'structure', file, apply: () => rebuild({...header, __metadata__: v})}
  }
  const v = r.pick([{dtype: 'F32', shape: [1], data_offsets: [0, 4]}, {}, 'x', {dtype: 'F32', shape: [0], data_offsets: [0, 0]}])
  return {description: `${file}: add entry extra = ${shortJson(v)}`, kind: 'structure', file, apply: () => rebuild({...header, 'transformer.extra': v})}
}

// ---- ZIP fields (npz, .pt) ---------------------------------------------------------------------

function zipFieldMutation(file: string, b: Buffer, r: Rng): Mutation {
  const sigs: {at: number; sig: number}[] = []
  for (let i = 0; i + 4 <= b.length; i++) {
    if (b[i] !== 0x50 || b[i + 1] !== 0x4b) continue
    const sig = b.readUInt32LE(i)
    if (sig === 0x04034b50 || sig === 0x02014b50 || sig === 0x06054b50 || sig === 0x06064b50 || sig === 0x07064b50) sigs.push({at: i, sig})
  }
  const fields: Record<number, [number, number, string][]> = {
    0x04034b50: [[4, 2, 'version'], [6, 2, 'flags'], [8, 2, 'method'], [14, 4, 'crc'], [18, 4, 'compressed size'], [22, 4, 'size'], [26, 2, 'name length'], [28, 2, 'extra length']],
    0x02014b50: [[8, 2, 'flags'], [10, 2, 'method'], [16, 4, 'crc'], [20, 4, 'compressed size'], [24, 4, 'size'], [28, 2, 'name length'], [30, 2, 'extra length'], [32, 2, 'comment length'], [42, 4, 'local offset']],
    0x06054b50: [[8, 2, 'entries on disk'], [10, 2, 'entries'], [12, 4, 'directory size'], [16, 4, 'directory offset'], [20, 2, 'comment length']],
    0x06064b50: [[24, 8, 'entries'], [32, 8, 'entries'], [40, 8, 'directory size'], [48, 8, 'directory offset']],
    0x07064b50: [[8, 8, 'zip64 record offset']],
  }
  const {at, sig} = r.pick(sigs)
  const [off, width, what] = r.pick(fields[sig]!)
  const max = width === 2 ? 0xffff : width === 4 ? 0xffffffff : 2 ** 53
  const old = width === 2 ? b.readUInt16LE(at + off) : width === 4 ? b.readUInt32LE(at + off) : Number(b.readBigUInt64LE(at + off))
  const v = r.pick([0, 1, old + 1, old - 1, old * 2, max, max - 1, old + 64, 8])
  const clamped = Math.max(0, Math.min(max, v))
  return {
    description: `${file}: ZIP ${what} at ${at + off} (record 0x${sig.toString(16)}) ${old} → ${clamped}`, kind: 'structure', file,
    apply: (x) => { const c = Buffer.from(x); if (width === 2) c.writeUInt16LE(clamped, at + off); else if (width === 4) c.writeUInt32LE(clamped, at + off); else c.writeBigUInt64LE(BigInt(clamped), at + off); return c },
  }
}

/** Rebuild a ZIP with one member changed (CRCs right), so the change reaches the member's parser. */
function memberMutation(file: string, members: ZipMember[], deflate: boolean, index: number, edit: (data: Buffer) => Buffer, description: string, kind: MutationKind): Mutation {
  return {
    description: `${file}: ${members[index]!.name}: ${description}`, kind, file,
    apply: () => buildZip(members.map((m, i) => (i === index ? {name: m.name, data: edit(Buffer.from(m.data))} : m)), deflate, file.endsWith('.pt') ? 64 : 0),
  }
}

// ---- npy headers ---------------------------------------------------------------------------------

function npyMutation(file: string, b: Buffer, deflated: boolean, r: Rng): Mutation {
  const members = deflated ? inflateMembers(b) : readStoredZip(b)
  const index = r.int(members.length)
  const op = r.int(5)
  const editHeader = (f: (dict: string) => string) => (data: Buffer): Buffer => {
    const len = data.readUInt16LE(8)
    const dict = f(data.subarray(10, 10 + len).toString('latin1'))
    const head = Buffer.alloc(10)
    data.copy(head, 0, 0, 8)
    head.writeUInt16LE(Buffer.byteLength(dict, 'latin1'), 8)
    return Buffer.concat([head, Buffer.from(dict, 'latin1'), data.subarray(10 + len)])
  }
  if (op === 0) {
    const v = r.pick(['<f4', '>f2', '|O', '<V2', '<i2', '<c8', "<f2'", ''])
    const kind: MutationKind = v === '<V2' || v === '<i2' ? 'tensor' : 'structure'
    return memberMutation(file, members, deflated, index, editHeader((d) => d.replace(/'descr': '[^']*'/, `'descr': '${v}'`)), `descr → ${v}`, kind)
  }
  if (op === 1) {
    const v = r.pick(['()', '(0,)', '(-1,)', '(1099511627776, 1099511627776)', '(3,', '(1, 2, 3, 4, 5)', '(2.5,)', '(64, 32, 1)'])
    return memberMutation(file, members, deflated, index, editHeader((d) => d.replace(/'shape': \([^)]*\)/, `'shape': ${v}`)), `shape → ${v}`, 'structure')
  }
  if (op === 2) {
    return memberMutation(file, members, deflated, index, editHeader((d) => d.replace('False', 'True')), 'fortran_order True', 'structure')
  }
  if (op === 3) {
    const v = r.pick([0, 1, 9, 0xffff, 200])
    return memberMutation(file, members, deflated, index, (data) => { const c = Buffer.from(data); c.writeUInt16LE(v, 8); return c }, `header length → ${v}`, 'structure')
  }
  // A deflate bomb: the member becomes megabytes of zeros that compress to a few kilobytes.
  const mb = r.pick([1, 16, 64])
  return {
    description: `${file}: ${members[index]!.name}: ${mb} MB of zeros (a deflate bomb) in place of the member`, kind: 'structure', file,
    apply: () => bombZip(members, index, mb * 1024 * 1024),
  }
}

function inflateMembers(b: Buffer): ZipMember[] {
  // The deflated seed's members, inflated (the codec above writes no data descriptors).
  const out: ZipMember[] = []
  let p = 0
  while (p + 30 <= b.length && b.readUInt32LE(p) === 0x04034b50) {
    const csize = b.readUInt32LE(p + 18)
    const nameLen = b.readUInt16LE(p + 26)
    const extra = b.readUInt16LE(p + 28)
    const name = b.subarray(p + 30, p + 30 + nameLen).toString('utf8')
    const start = p + 30 + nameLen + extra
    out.push({name, data: inflateRawSync(b.subarray(start, start + csize))})
    p = start + csize
  }
  return out
}

function bombZip(members: ZipMember[], index: number, size: number): Buffer {
  const base = buildZip(members.map((m, i) => (i === index ? {name: m.name, data: Buffer.alloc(0)} : m)), true)
  return patchMember(base, index, deflateRawSync(Buffer.alloc(size)), size)
}

/** Replace member `index`'s compressed stream, updating local and central sizes and offsets. */
function patchMember(b: Buffer, index: number, stream: Buffer, size: number): Buffer {
  const locals: {at: number; end: number}[] = []
  let p = 0
  while (p + 30 <= b.length && b.readUInt32LE(p) === 0x04034b50) {
    const end = p + 30 + b.readUInt16LE(p + 26) + b.readUInt16LE(p + 28) + b.readUInt32LE(p + 18)
    locals.push({at: p, end})
    p = end
  }
  const target = locals[index]!
  const headerEnd = target.end - b.readUInt32LE(target.at + 18)
  const header = Buffer.from(b.subarray(target.at, headerEnd))
  header.writeUInt32LE(stream.length, 18)
  header.writeUInt32LE(size, 22)
  const delta = stream.length - b.readUInt32LE(target.at + 18)
  const before = b.subarray(0, target.at)
  const after = Buffer.from(b.subarray(target.end))
  // Central directory entries follow the last local record.
  let q = p - target.end
  let count = 0
  while (q + 46 <= after.length && after.readUInt32LE(q) === 0x02014b50) {
    const local = after.readUInt32LE(q + 42)
    if (count === index) {
      after.writeUInt32LE(stream.length, q + 20)
      after.writeUInt32LE(size, q + 24)
    }
    if (local > target.at) after.writeUInt32LE(local + delta, q + 42)
    q += 46 + after.readUInt16LE(q + 28) + after.readUInt16LE(q + 30) + after.readUInt16LE(q + 32)
    count++
  }
  const eocd = after.length - 22
  after.writeUInt32LE(after.readUInt32LE(eocd + 16) + delta, eocd + 16)
  return Buffer.concat([before, header, stream, after])
}

// ---- pickle opcodes (.pt data.pkl) ---------------------------------------------------------------

function pickleMutation(file: string, b: Buffer, r: Rng): Mutation {
  const members = readStoredZip(b)
  const index = members.findIndex((m) => m.name.endsWith('/data.pkl'))
  const pkl = Buffer.from(members[index]!.data)
  const text = pkl.toString('latin1')
  const op = r.int(6)
  const replaceText = (from: string, to: string) => (data: Buffer) => Buffer.from(data.toString('latin1').replace(from, to), 'latin1')
  if (op === 0 && text.includes('FloatStorage')) {
    const v = r.pick(['HalfStorage', 'BFloat16Storage', 'DoubleStorage', 'IntStorage', 'LongStorage', 'ByteStorage', 'BoolStorage', 'QInt8Storage'])
    return memberMutation(file, members, false, index, replaceText('FloatStorage', v), `storage class FloatStorage → ${v}`, 'structure')
  }
  if (op === 1) {
    const v = r.pick(['os\nsystem', 'builtins\neval', 'builtins\nset', 'torch\nload', 'collections\ndefaultdict', 'torch._utils\n_rebuild_parameter'])
    const from = r.pick(['torch._utils\n_rebuild_tensor_v2', 'collections\nOrderedDict'])
    return memberMutation(file, members, false, index, replaceText(from, v), `global ${from.replace('\n', '.')} → ${v.replace('\n', '.')}`, 'structure')
  }
  if (op === 2) {
    // Arguments of BININT1 ('K'), BININT2 ('M') and BININT ('J'): storage numels, offsets, sizes, strides.
    const sites: {at: number; width: number}[] = []
    for (let i = 0; i < pkl.length - 1; i++) {
      if (pkl[i] === 0x4b) sites.push({at: i + 1, width: 1})
      else if (pkl[i] === 0x4d) sites.push({at: i + 1, width: 2})
      else if (pkl[i] === 0x4a) sites.push({at: i + 1, width: 4})
    }
    const {at, width} = r.pick(sites)
    const v = r.pick([0, 1, 2, 0xff, 0x7fff, 0x7fffffff, -1])
    return memberMutation(file, members, false, index, (data) => {
      const c = Buffer.from(data)
      if (width === 1) c[at] = v & 0xff
      else if (width === 2) c.writeUInt16LE(v & 0xffff, at)
      else c.writeInt32LE(v === 0xff ? 255 : v | 0, at)
      return c
      // Sizes, offsets and strides are per-tensor view semantics torch itself accepts (a stride-0
      // view is legal): a change may only alter that one tensor, or be refused.
    }, `integer operand at ${at} (${width} bytes) → ${v}`, 'tensor')
  }
  if (op === 3) {
    const at = r.int(pkl.length)
    return memberMutation(file, members, false, index, (data) => data.subarray(0, at), `truncated to ${at} bytes`, 'structure')
  }
  if (op === 4) {
    const at = r.int(pkl.length)
    const v = r.pick([0x28, 0x29, 0x2e, 0x4e, 0x5d, 0x7d, 0x94, 0x71, 0x68, 0x30, 0x85, 0x52, 0x62, 0xff])
    return memberMutation(file, members, false, index, (data) => { const c = Buffer.from(data); c[at] = v; return c }, `byte ${at} → opcode 0x${v.toString(16)}`, 'structure')
  }
  // Storage keys: point a tensor at another or a missing record.
  const key = /X\x01\x00\x00\x00(\d)/.exec(text)
  if (key) return memberMutation(file, members, false, index, replaceText(key[0], `X\x01\x00\x00\x00${key[1] === '0' ? '1' : '0'}`), `storage key ${key[1]} → another`, 'structure')
  return memberMutation(file, members, false, index, (data) => Buffer.concat([data, Buffer.from('N.')]), 'trailing opcodes after STOP', 'structure')
}

// ---- ONNX protobuf ---------------------------------------------------------------------------------

function onnxMutation(file: string, b: Buffer, r: Rng): Mutation {
  const op = r.int(4)
  if (op === 0) {
    // Raw varint sites anywhere in the top-level walk: tags and lengths, re-encoded in place.
    const sites = varintSites(b, 0, b.length, 0)
    const site = r.pick(sites)
    const v = r.pick([0, 1, site.value + 1, site.value - 1, site.value * 2, 2 ** 35, 2 ** 53])
    return {
      description: `${file}: varint (${site.what}) at ${site.at} ${site.value} → ${v}`, kind: 'structure', file,
      apply: (x) => Buffer.concat([x.subarray(0, site.at), varint(Math.max(0, v)), x.subarray(site.end)]),
    }
  }
  const model = onnx.ModelProto.decode(b)
  const inits = model.graph?.initializer ?? []
  const i = r.int(inits.length)
  const init = inits[i]!
  const encode = () => Buffer.from(onnx.ModelProto.encode(model).finish())
  if (op === 1 && (init.externalData?.length ?? 0) > 0) {
    const entry = r.pick(init.externalData!)
    const v = entry.key === 'location' ? r.pick(['../model.onnx_data', '/etc/passwd', 'missing.bin', '', 'model.onnx']) : r.pick(['', '-1', '0x40', '1e3', ' 64', '99999999999999999999', '4096.0', '+0'])
    return {description: `${file}: ${init.name} external ${entry.key} ${shortJson(entry.value)} → ${shortJson(v)}`, kind: 'structure', file, apply: () => { entry.value = v; return encode() }}
  }
  if (op === 1 || op === 2) {
    const variant = r.int(4)
    const dims = (init.dims ?? []).map(Number)
    const v = [[...dims].reverse(), [...dims, 1], dims.map((d) => d + 1), [0]][variant]!
    return {description: `${file}: ${init.name} dims ${shortJson(dims)} → ${shortJson(v)}`, kind: 'structure', file, apply: () => { init.dims = v; return encode() }}
  }
  const v = r.pick([10, 16, 11, 0, 99, 7])
  const sameWidth = (init.dataType === 1 && v === 6) || (init.dataType === 10 && v === 16) || (init.dataType === 16 && v === 10)
  return {description: `${file}: ${init.name} data_type ${init.dataType} → ${v}`, kind: sameWidth ? 'tensor' : 'structure', file, apply: () => { init.dataType = v; return encode() }}
}

interface VarintSite {
  at: number
  end: number
  value: number
  what: string
}

function readVarint(b: Buffer, at: number): {value: number; end: number} | undefined {
  let value = 0
  let scale = 1
  for (let i = 0; i < 10 && at + i < b.length; i++) {
    const byte = b[at + i]!
    value += (byte & 0x7f) * scale
    if (byte < 0x80) return {value, end: at + i + 1}
    scale *= 128
  }
  return undefined
}

/** Tags and lengths of a protobuf message and of the graph/initializer messages inside it. */
function varintSites(b: Buffer, start: number, end: number, depth: number): VarintSite[] {
  const sites: VarintSite[] = []
  let p = start
  while (p < end && sites.length < 4000) {
    const tag = readVarint(b, p)
    if (!tag) break
    sites.push({at: p, end: tag.end, value: tag.value, what: `tag of field ${Math.floor(tag.value / 8)}`})
    const wire = tag.value % 8
    const field = Math.floor(tag.value / 8)
    p = tag.end
    if (wire === 0) {
      const v = readVarint(b, p)
      if (!v) break
      sites.push({at: p, end: v.end, value: v.value, what: `value of field ${field}`})
      p = v.end
    } else if (wire === 2) {
      const len = readVarint(b, p)
      if (!len) break
      sites.push({at: p, end: len.end, value: len.value, what: `length of field ${field}`})
      const bodyStart = len.end
      // ModelProto.graph (7) → GraphProto.initializer (5) → TensorProto.external_data (13)
      if (depth < 3 && ((depth === 0 && field === 7) || (depth === 1 && field === 5) || (depth === 2 && field === 13))) sites.push(...varintSites(b, bodyStart, bodyStart + len.value, depth + 1))
      p = bodyStart + len.value
    } else if (wire === 1) p += 8
    else if (wire === 5) p += 4
    else break
  }
  return sites
}

// ---- GGUF ------------------------------------------------------------------------------------------

interface GgufSite {
  at: number
  width: 4 | 8
  what: string
  float?: boolean
  /** The config-bearing KV this value belongs to, when an edit of it is a config edit. */
  key?: string
}

const GGUF_SCALAR_WIDTH: Record<number, number> = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

function ggufSites(b: Buffer): GgufSite[] {
  const sites: GgufSite[] = [{at: 4, width: 4, what: 'version'}, {at: 8, width: 8, what: 'tensor_count'}, {at: 16, width: 8, what: 'metadata_kv_count'}]
  const tensorCount = Number(b.readBigUInt64LE(8))
  const kvCount = Number(b.readBigUInt64LE(16))
  let p = 24
  const str = (what: string): string => {
    sites.push({at: p, width: 8, what: `${what} length`})
    const n = Number(b.readBigUInt64LE(p))
    const s = b.subarray(p + 8, p + 8 + n).toString('utf8')
    p += 8 + n
    return s
  }
  const value = (type: number, key: string): void => {
    if (type === 8) {
      str(`${key} string`)
      return
    }
    if (type === 9) {
      sites.push({at: p, width: 4, what: `${key} array item type`})
      const item = b.readUInt32LE(p)
      sites.push({at: p + 4, width: 8, what: `${key} array count`})
      const n = Number(b.readBigUInt64LE(p + 4))
      p += 12
      if (item === 8) {
        for (let i = 0; i < n; i++) str(`${key}[${i}]`)
      } else {
        const w = GGUF_SCALAR_WIDTH[item] ?? 4
        if (n <= 64 && (w === 4 || w === 8)) for (let i = 0; i < n; i++) sites.push({at: p + i * w, width: w as 4 | 8, what: `${key}[${i}]`, float: item === 6 || item === 12, key})
        p += n * w
      }
      return
    }
    const w = GGUF_SCALAR_WIDTH[type] ?? 4
    if (w === 4 || w === 8) sites.push({at: p, width: w as 4 | 8, what: key, float: type === 6 || type === 12, key})
    p += w
  }
  for (let i = 0; i < kvCount; i++) {
    const key = str('key')
    sites.push({at: p, width: 4, what: `${key} value type`})
    const type = b.readUInt32LE(p)
    p += 4
    value(type, key)
  }
  for (let i = 0; i < tensorCount; i++) {
    const name = str('tensor name')
    sites.push({at: p, width: 4, what: `${name} n_dims`})
    const nDims = b.readUInt32LE(p)
    p += 4
    for (let d = 0; d < nDims; d++) {
      sites.push({at: p, width: 8, what: `${name} dim ${d}`})
      p += 8
    }
    sites.push({at: p, width: 4, what: `${name} ggml type`})
    sites.push({at: p + 4, width: 8, what: `${name} offset`})
    p += 12
  }
  return sites
}

function ggufMutation(file: string, b: Buffer, r: Rng): Mutation {
  const sites = ggufSites(b)
  const configSites = sites.filter((s) => s.key?.startsWith('openelm.') || s.key?.startsWith('tokenizer.ggml.bos') || s.key?.startsWith('tokenizer.ggml.eos'))
  const site = r.next() < 0.35 && configSites.length > 0 ? r.pick(configSites) : r.pick(sites)
  const old = site.float ? (site.width === 4 ? b.readFloatLE(site.at) : b.readDoubleLE(site.at)) : site.width === 4 ? b.readUInt32LE(site.at) : Number(b.readBigUInt64LE(site.at))
  const values = site.float ? [0, -1, -10000, Number.NaN, Number.POSITIVE_INFINITY, 1e30, 0.5, old * 2] : [0, 1, old + 1, old - 1, old * 2, 2 ** 31, 0xffffffff, ...(site.width === 8 ? [2 ** 53, 2 ** 63] : [])]
  const v = r.pick(values)
  const kind: MutationKind = site.key ? 'edit' : 'structure'
  return {
    description: `${file}: GGUF ${site.what} at ${site.at} ${old} → ${v}`, kind, file,
    apply: (x) => {
      const c = Buffer.from(x)
      if (site.float) {
        if (site.width === 4) c.writeFloatLE(v, site.at)
        else c.writeDoubleLE(v, site.at)
      } else if (site.width === 4) c.writeUInt32LE(Math.max(0, Math.min(0xffffffff, v)) >>> 0, site.at)
      else c.writeBigUInt64LE(BigInt(Math.max(0, Math.min(2 ** 64 - 1, v))) & 0xffffffffffffffffn, site.at)
      return c
    },
  }
}

// ---- choosing --------------------------------------------------------------------------------------

/** The mutation of case `r` on `seed`, given the seed files' bytes. */
export function chooseMutation(seed: Seed, bytes: ReadonlyMap<string, Buffer>, r: Rng): Mutation {
  const file = r.pick(seed.files)
  const b = bytes.get(file)!
  const generic = r.next() < 0.3
  // Raw bytes of a JSON file are config edits: a change that still parses is a different config.
  if (generic) return file.endsWith('.json') ? {...byteMutation(file, b.length, r), kind: 'edit'} : byteMutation(file, b.length, r)
  if (file.endsWith('.json')) return jsonEdit(file, b.toString('utf8'), r)
  if (file.endsWith('.safetensors')) return safetensorsMutation(file, b, r)
  if (file.endsWith('.gguf')) return ggufMutation(file, b, r)
  if (file.endsWith('.onnx')) return onnxMutation(file, b, r)
  if (file.endsWith('.npz')) return r.next() < 0.35 ? zipFieldMutation(file, b, r) : npyMutation(file, b, seed.name === 'npz-deflated', r)
  if (file.endsWith('.pt')) return r.next() < 0.3 ? zipFieldMutation(file, b, r) : pickleMutation(file, b, r)
  return byteMutation(file, b.length, r)
}
