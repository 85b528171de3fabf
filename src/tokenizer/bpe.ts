/**
 * SentencePiece's BPE encoding and its decoding, written from SentencePiece's documented
 * behaviour and checked id for id against `python3-sentencepiece` and llama.cpp's test vectors:
 *
 * 1. Normalize (identity rule only): optionally drop leading, trailing and repeated spaces,
 *    prepend the dummy space, escape " " as "▁".
 * 2. Split into symbols: user-defined pieces (longest match, never merged further), else one
 *    Unicode character each.
 * 3. Repeatedly merge the adjacent pair whose concatenation is a piece with the highest score;
 *    ties go to the leftmost pair. A priority queue holds the candidate pairs; entries made stale
 *    by an earlier merge are recognised by their length and skipped (as SentencePiece does).
 * 4. A final symbol that is an UNUSED piece is split back into the pieces it was merged from; one
 *    that is no piece at all becomes its UTF-8 bytes as `<0xXX>` pieces with byte fallback, else
 *    UNK (a run of them one UNK, as SentencePiece fuses them).
 */
import {FormatError, UsageError} from '../errors.js'
import {BYTE_PIECE, bytePiece, PIECE_TYPE, SPACE_SYMBOL, type SentencePieceModel} from './model.js'

/** Lookup tables built once per model. */
export interface CompiledModel {
  readonly model: SentencePieceModel
  /** NORMAL, USER_DEFINED and UNUSED pieces: the ones a merge may produce. */
  readonly mergeable: Map<string, number>
  /** UNKNOWN, CONTROL and BYTE pieces: found by `pieceToId`, never by a merge. */
  readonly reserved: Map<string, number>
  /** USER_DEFINED pieces by first UTF-16 unit, longest first. */
  readonly userDefined: Map<string, string[]>
  /** Id of `<0xXX>` per byte value, -1 where absent. */
  readonly byteIds: Int32Array
  /** Byte value per BYTE piece id, -1 for other ids. */
  readonly byteOf: Int16Array
  /** Longest mergeable piece, in UTF-16 units: longer pairs need no lookup. */
  readonly maxPieceLength: number
  /** Code points that occur in some mergeable piece of two or more characters. */
  readonly joining: Set<number>
  /** Whether any piece is UNUSED (then a text is merged in one piece, see `encodeIds`). */
  readonly hasUnused: boolean
}

/**
 * Check that `model` is one this encoder reproduces exactly and build its lookup tables. `name`
 * says where the model came from, for the error message.
 */
export function compileModel(model: SentencePieceModel, name: string): CompiledModel {
  const unsupported = (what: string) => new FormatError('tokenizer.unsupported', `${name}: ${what}`, {path: name})
  if (model.model_type !== 'BPE') throw unsupported(`SentencePiece ${model.model_type} models are not supported (only BPE, as LLaMA's tokenizer is)`)
  if (model.precompiled_charsmap.byteLength > 0) throw unsupported(`the "${model.normalizer}" normalizer (a precompiled character map) is not supported, only "identity"`)
  if (model.treat_whitespace_as_suffix) throw unsupported('treat_whitespace_as_suffix is not supported')
  const n = model.pieces.length
  if (n === 0) throw new FormatError('tokenizer.empty', `${name} has no pieces`, {path: name})
  if (model.scores.length !== n || model.types.length !== n) {
    throw new FormatError('tokenizer.shape', `${name}: ${n} pieces but ${model.scores.length} scores and ${model.types.length} types`, {path: name})
  }
  const mergeable = new Map<string, number>()
  const reserved = new Map<string, number>()
  const userDefined = new Map<string, string[]>()
  const byteIds = new Int32Array(256).fill(-1)
  const byteOf = new Int16Array(n).fill(-1)
  let maxPieceLength = 0
  const joining = new Set<number>()
  let hasUnused = false
  for (let id = 0; id < n; id++) {
    const piece = model.pieces[id]!
    const type = model.types[id]!
    if (Number.isNaN(model.scores[id])) throw new FormatError('tokenizer.score', `${name}: piece ${id} ("${piece}") has score NaN`, {path: name})
    if (piece === '') throw new FormatError('tokenizer.piece', `${name}: piece ${id} is empty`, {path: name})
    const normal = type === PIECE_TYPE.NORMAL || type === PIECE_TYPE.USER_DEFINED || type === PIECE_TYPE.UNUSED
    const table = normal ? mergeable : reserved
    if (mergeable.has(piece) || reserved.has(piece)) throw new FormatError('tokenizer.duplicate', `${name}: the piece "${piece}" appears twice (ids ${mergeable.get(piece) ?? reserved.get(piece)} and ${id})`, {path: name})
    table.set(piece, id)
    if (normal) {
      maxPieceLength = Math.max(maxPieceLength, piece.length)
      const chars = Array.from(piece)
      if (chars.length > 1) for (const c of chars) joining.add(c.codePointAt(0)!)
    }
    if (type === PIECE_TYPE.UNUSED) hasUnused = true
    if (type === PIECE_TYPE.USER_DEFINED) {
      const list = userDefined.get(piece[0]!) ?? []
      list.push(piece)
      userDefined.set(piece[0]!, list)
    }
    if (type === PIECE_TYPE.BYTE) {
      const m = BYTE_PIECE.exec(piece)
      if (!m) throw new FormatError('tokenizer.piece', `${name}: BYTE piece ${id} is "${piece}", not <0xXX>`, {path: name})
      byteIds[parseInt(m[1]!, 16)] = id
      byteOf[id] = parseInt(m[1]!, 16)
    }
  }
  for (const list of userDefined.values()) list.sort((a, b) => b.length - a.length)
  const special = (what: string, id: number, optional: boolean) => {
    if (optional && id === -1) return
    if (!Number.isInteger(id) || id < 0 || id >= n) throw new FormatError('tokenizer.special', `${name}: ${what} id ${id} is outside 0..${n - 1}`, {path: name})
  }
  special('unk', model.unk_id, false)
  if (model.types[model.unk_id] !== PIECE_TYPE.UNKNOWN) throw new FormatError('tokenizer.special', `${name}: the unk piece ${model.unk_id} ("${model.pieces[model.unk_id]}") is not of type UNKNOWN`, {path: name})
  special('bos', model.bos_id, true)
  special('eos', model.eos_id, true)
  special('pad', model.pad_id, true)
  if (model.byte_fallback) {
    const missing = [...byteIds.keys()].filter((b) => byteIds[b] === -1)
    if (missing.length > 0) throw new FormatError('tokenizer.bytes', `${name}: byte_fallback is on but ${missing.length} byte pieces are missing (first ${bytePiece(missing[0]!)})`, {path: name})
  }
  return {model, mergeable, reserved, userDefined, byteIds, byteOf, maxPieceLength, joining, hasUnused}
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/** SentencePiece's normalizer with the identity rule. Returns "" for text that normalizes to nothing. */
export function normalize(model: SentencePieceModel, text: string): string {
  // A lone surrogate has no UTF-8 form: U+FFFD, as TextEncoder (and any UTF-8 input) gives.
  let s = text.replace(LONE_SURROGATE, '\ufffd')
  if (model.remove_extra_whitespaces) s = s.replace(/^ +/, '').replace(/ {2,}/g, ' ')
  if (s === '') return ''
  if (model.add_dummy_prefix) s = ' ' + s
  const space = model.escape_whitespaces ? SPACE_SYMBOL : ' '
  if (model.escape_whitespaces) s = s.replaceAll(' ', SPACE_SYMBOL)
  // Trailing spaces go after escaping, so a literal "▁" at the end goes too (as in SentencePiece).
  if (model.remove_extra_whitespaces) while (s.endsWith(space)) s = s.slice(0, -space.length)
  return s
}

/** A binary max-heap of candidate merges: higher score first, then smaller left index. */
class PairQueue {
  private score: Float64Array
  private left: Int32Array
  private right: Int32Array
  private size: Int32Array
  length = 0

  constructor(capacity: number) {
    this.score = new Float64Array(capacity)
    this.left = new Int32Array(capacity)
    this.right = new Int32Array(capacity)
    this.size = new Int32Array(capacity)
  }

  push(score: number, left: number, right: number, size: number): void {
    if (this.length === this.score.length) this.grow()
    let i = this.length++
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.before(score, left, parent)) break
      this.move(parent, i)
      i = parent
    }
    this.score[i] = score
    this.left[i] = left
    this.right[i] = right
    this.size[i] = size
  }

  /** Remove the top entry into `out` ([left, right, size]). */
  pop(out: Int32Array): void {
    out[0] = this.left[0]!
    out[1] = this.right[0]!
    out[2] = this.size[0]!
    const last = --this.length
    if (last === 0) return
    const score = this.score[last]!
    const left = this.left[last]!
    const right = this.right[last]!
    const size = this.size[last]!
    let i = 0
    for (;;) {
      let child = 2 * i + 1
      if (child >= last) break
      if (child + 1 < last && this.beforeAt(child + 1, child)) child++
      if (!this.beforeEntry(child, score, left)) break
      this.move(child, i)
      i = child
    }
    this.score[i] = score
    this.left[i] = left
    this.right[i] = right
    this.size[i] = size
  }

  /** Does (score, left) come before entry j? */
  private before(score: number, left: number, j: number): boolean {
    return score > this.score[j]! || (score === this.score[j]! && left < this.left[j]!)
  }
  /** Does entry i come before (score, left)? */
  private beforeEntry(i: number, score: number, left: number): boolean {
    return this.score[i]! > score || (this.score[i]! === score && this.left[i]! < left)
  }
  private beforeAt(i: number, j: number): boolean {
    return this.beforeEntry(i, this.score[j]!, this.left[j]!)
  }
  private move(from: number, to: number): void {
    this.score[to] = this.score[from]!
    this.left[to] = this.left[from]!
    this.right[to] = this.right[from]!
    this.size[to] = this.size[from]!
  }
  private grow(): void {
    const n = this.score.length * 2
    const score = new Float64Array(n); score.set(this.score); this.score = score
    const left = new Int32Array(n); left.set(this.left); this.left = left
    const right = new Int32Array(n); right.set(this.right); this.right = right
    const size = new Int32Array(n); size.set(this.size); this.size = size
  }
}

const utf8 = new TextEncoder()

/**
 * The piece ids SentencePiece gives `text` (no BOS/EOS). Merges never cross a character that
 * occurs in no multi-character piece (for LLaMA: "\n" and most rare characters), so the text is
 * cut there and each part merged on its own: the same result with a smaller queue. Models with
 * UNUSED pieces are merged in one piece, since SentencePiece's record of how an UNUSED piece was
 * made is shared by the whole text.
 */
export function encodeIds(compiled: CompiledModel, text: string): number[] {
  const s = normalize(compiled.model, text)
  const ids: number[] = []
  const unmerge = new Map<string, [string, string]>()
  if (s === '') return ids
  if (compiled.hasUnused) {
    encodeSegment(compiled, s, ids, unmerge)
    return ids
  }
  let from = 0
  for (let i = 0; i < s.length;) {
    const cp = s.codePointAt(i)!
    const size = cp > 0xffff ? 2 : 1
    if (!compiled.joining.has(cp)) {
      if (i > from) encodeSegment(compiled, s.slice(from, i), ids, unmerge)
      encodeSegment(compiled, s.slice(i, i + size), ids, unmerge)
      from = i + size
    }
    i += size
  }
  if (from < s.length) encodeSegment(compiled, s.slice(from), ids, unmerge)
  return ids
}

/** BPE-merge the normalized text `s` and append its ids to `ids`. */
function encodeSegment(compiled: CompiledModel, s: string, ids: number[], unmerge: Map<string, [string, string]>): void {
  const {model, mergeable, reserved, userDefined, maxPieceLength} = compiled
  // Symbols: start offset and length (UTF-16 units; 0 once merged away) and list links.
  const n = s.length
  const start = new Int32Array(n)
  const len = new Int32Array(n)
  const frozen = new Uint8Array(n)
  let count = 0
  for (let i = 0; i < n;) {
    let size = 0
    const candidates = userDefined.size > 0 ? userDefined.get(s[i]!) : undefined
    if (candidates) {
      const match = candidates.find((p) => s.startsWith(p, i))
      if (match) {
        size = match.length
        frozen[count] = 1
      }
    }
    if (size === 0) {
      const c = s.charCodeAt(i)
      size = c >= 0xd800 && c <= 0xdbff && i + 1 < n ? 2 : 1
    }
    start[count] = i
    len[count] = size
    count++
    i += size
  }
  const prev = new Int32Array(count)
  const next = new Int32Array(count)
  for (let i = 0; i < count; i++) {
    prev[i] = i - 1
    next[i] = i + 1 < count ? i + 1 : -1
  }

  // Each merge adds at most two pairs, so 2n entries are rarely outgrown.
  const queue = new PairQueue(Math.max(16, 2 * count))
  const consider = (left: number, right: number) => {
    if (left < 0 || right < 0 || frozen[left] || frozen[right]) return
    const size = len[left]! + len[right]!
    if (size > maxPieceLength) return
    const piece = s.substr(start[left]!, size)
    const id = mergeable.get(piece)
    if (id === undefined) return
    queue.push(model.scores[id]!, left, right, size)
    // A merged UNUSED piece remembers what it was made of, to be split back at the end.
    if (model.types[id] === PIECE_TYPE.UNUSED) unmerge.set(piece, [s.substr(start[left]!, len[left]!), s.substr(start[right]!, len[right]!)])
  }
  for (let i = 1; i < count; i++) consider(i - 1, i)
  const top = new Int32Array(3)
  while (queue.length > 0) {
    queue.pop(top)
    const left = top[0]!
    const right = top[1]!
    if (len[left] === 0 || len[right] === 0 || len[left]! + len[right]! !== top[2]) continue // stale
    len[left] = top[2]!
    len[right] = 0
    const after = next[right]!
    next[left] = after
    if (after >= 0) prev[after] = left
    consider(prev[left]!, left)
    consider(left, after)
  }

  const emit = (piece: string) => {
    const id = reserved.get(piece) ?? mergeable.get(piece)
    if (id !== undefined && model.types[id] === PIECE_TYPE.UNUSED) {
      const parts = unmerge.get(piece)
      if (parts) {
        emit(parts[0])
        emit(parts[1])
        return
      }
    }
    if (id !== undefined && id !== model.unk_id) {
      ids.push(id)
    } else if (model.byte_fallback) {
      for (const b of utf8.encode(piece)) ids.push(compiled.byteIds[b]!)
    } else if (ids.length === 0 || ids[ids.length - 1] !== model.unk_id) {
      ids.push(model.unk_id) // a run of unknown symbols is one UNK
    }
  }
  for (let i = 0; i >= 0; i = next[i]!) emit(s.substr(start[i]!, len[i]!))
}

const REPLACEMENT = '\ufffd'

/**
 * Bytes → text the way SentencePiece turns a run of byte pieces into text: one valid UTF-8
 * character at a time, and each byte that does not start one becomes U+FFFD on its own
 * (a WHATWG decoder would give one U+FFFD per maximal invalid subsequence instead).
 */
export function decodeBytes(bytes: readonly number[]): string {
  let out = ''
  const trail = (i: number) => i < bytes.length && (bytes[i]! & 0xc0) === 0x80
  const valid = (cp: number) => cp < 0xd800 || (cp >= 0xe000 && cp <= 0x10ffff)
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i]!
    let cp = -1
    let size = 1
    if (b < 0x80) {
      cp = b
    } else if ((b & 0xe0) === 0xc0 && trail(i + 1)) {
      const c = ((b & 0x1f) << 6) | (bytes[i + 1]! & 0x3f)
      if (c >= 0x80) [cp, size] = [c, 2]
    } else if ((b & 0xf0) === 0xe0 && trail(i + 1) && trail(i + 2)) {
      const c = ((b & 0x0f) << 12) | ((bytes[i + 1]! & 0x3f) << 6) | (bytes[i + 2]! & 0x3f)
      if (c >= 0x800 && valid(c)) [cp, size] = [c, 3]
    } else if ((b & 0xf8) === 0xf0 && trail(i + 1) && trail(i + 2) && trail(i + 3)) {
      const c = ((b & 0x07) << 18) | ((bytes[i + 1]! & 0x3f) << 12) | ((bytes[i + 2]! & 0x3f) << 6) | (bytes[i + 3]! & 0x3f)
      if (c >= 0x10000 && valid(c)) [cp, size] = [c, 4]
    }
    out += cp >= 0 ? String.fromCodePoint(cp) : REPLACEMENT
    i += size
  }
  return out
}

/**
 * Ids → text as SentencePiece decodes: control pieces vanish, UNK shows as `unk_surface`, runs of
 * byte pieces are re-assembled as UTF-8, "▁" becomes a space. The dummy prefix: the first piece
 * that starts with "▁" loses it while nothing has been written yet and no earlier piece lost one
 * (so [▁, ▁Hello] is " Hello", as python-sentencepiece 0.1.97 decodes it).
 */
export function decodeIds(compiled: CompiledModel, ids: readonly number[]): string {
  const {model, byteOf} = compiled
  const n = model.pieces.length
  const stripPrefix = model.add_dummy_prefix || model.remove_extra_whitespaces
  let out = ''
  let bytes: number[] = []
  let atStart = true
  let prefixSeen = false
  const flush = () => {
    if (bytes.length === 0) return
    out += decodeBytes(bytes)
    bytes = []
  }
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= n) throw new UsageError('tokenizer.id', `token id ${id} is outside the vocabulary (0..${n - 1})`, {id})
    const type = model.types[id]
    if (type === PIECE_TYPE.BYTE) {
      bytes.push(byteOf[id]!)
      continue
    }
    flush()
    if (out !== '' || prefixSeen) atStart = false
    if (type === PIECE_TYPE.CONTROL) continue
    if (type === PIECE_TYPE.UNKNOWN) {
      out += model.unk_surface
      continue
    }
    let piece = model.pieces[id]!
    if (atStart && stripPrefix && piece.startsWith(SPACE_SYMBOL)) {
      piece = piece.slice(SPACE_SYMBOL.length)
      // With remove_extra_whitespaces every leading "▁" piece loses it: [▁, ▁, ▁o] is "o".
      prefixSeen = !model.remove_extra_whitespaces
    }
    out += piece.replaceAll(SPACE_SYMBOL, ' ')
  }
  flush()
  return out
}
