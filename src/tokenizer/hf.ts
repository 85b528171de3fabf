/**
 * Hugging Face tokenizer files for a SentencePiece BPE model, both ways.
 *
 * Reading: a LLaMA-style `tokenizer.json` (BPE, byte_fallback, "▁" for spaces, a dummy prefix by
 * a Prepend normalizer or a Metaspace pre-tokenizer) holds a vocabulary and merge ranks but no
 * scores. A tokenizer.json converted from a SentencePiece model lists, for every piece in score
 * order, every split of it into two pieces, so scores follow from the ranks (`scoresFromMerges`):
 * merging the highest score then merges what the merge ranks say. The merges are checked to
 * have that form (every split SentencePiece could use is a merge); a file that does not is refused
 * rather than encoded differently.
 *
 * Writing: `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` as Meta's
 * Llama-2 HF repositories have them (LlamaTokenizer, legacy behaviour: normalizer Prepend("▁") +
 * Replace(" ", "▁"), BOS by the post-processor), with merges made by the rule above.
 */
import {FormatError} from '../errors.js'
import {BYTE_PIECE, PIECE_TYPE, type PieceType, SENTENCEPIECE_DEFAULTS, SPACE_SYMBOL, type SentencePieceModel} from './model.js'

/** A tokenizer.json larger than this is hostile (large BPE vocabularies are a few MB). */
export const MAX_TOKENIZER_JSON_BYTES = 256 * 1024 * 1024

interface AddedToken {id: number; content: string; special?: boolean}
interface BpeModelJson {
  type?: string
  vocab?: unknown
  merges?: unknown
  unk_token?: string | null
  byte_fallback?: boolean
  dropout?: number | null
  continuing_subword_prefix?: string | null
  end_of_word_suffix?: string | null
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Code points of `s` (a surrogate pair is one). */
function codePoints(s: string): string[] {
  return Array.from(s)
}

/** The normalizer/pre-tokenizer pair, as SentencePiece's add_dummy_prefix; anything else is refused. */
function dummyPrefix(json: Record<string, unknown>, file: string): boolean {
  const unsupported = (what: string) => new FormatError('tokenizer.unsupported', `${file}: ${what}; only LLaMA-style tokenizers (spaces as "▁", optional "▁" prefix) are supported`, {path: file})
  const normalizer = json.normalizer
  const pre = json.pre_tokenizer
  const isReplaceSpace = (n: unknown) => isObject(n) && n.type === 'Replace' && isObject(n.pattern) && n.pattern.String === ' ' && n.content === SPACE_SYMBOL
  const isPrepend = (n: unknown) => isObject(n) && n.type === 'Prepend' && n.prepend === SPACE_SYMBOL
  if (normalizer !== null && normalizer !== undefined) {
    if (pre !== null && pre !== undefined) throw unsupported('it has both a normalizer and a pre_tokenizer')
    const steps = isObject(normalizer) && normalizer.type === 'Sequence' && Array.isArray(normalizer.normalizers) ? normalizer.normalizers : [normalizer]
    if (steps.length === 2 && isPrepend(steps[0]) && isReplaceSpace(steps[1])) return true
    if (steps.length === 1 && isReplaceSpace(steps[0])) return false
    throw unsupported(`normalizer ${JSON.stringify(normalizer).slice(0, 120)}`)
  }
  if (isObject(pre) && pre.type === 'Metaspace' && pre.replacement === SPACE_SYMBOL && pre.split !== true) {
    if (typeof pre.prepend_scheme === 'string') return pre.prepend_scheme !== 'never'
    return pre.add_prefix_space !== false
  }
  throw unsupported(`pre_tokenizer ${JSON.stringify(pre ?? null).slice(0, 120)} with no normalizer`)
}

/** The merges as [left, right] pairs, from either the "a b" or the ["a", "b"] form. */
function mergePairs(merges: unknown, file: string): [string, string][] {
  if (!Array.isArray(merges)) throw new FormatError('tokenizer.json', `${file}: model.merges is not a list`, {path: file})
  return merges.map((m, rank) => {
    if (typeof m === 'string') {
      const parts = m.split(' ')
      if (parts.length === 2 && parts[0] !== '' && parts[1] !== '') return [parts[0]!, parts[1]!]
    } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string' && m[0] !== '' && m[1] !== '') {
      return [m[0], m[1]]
    }
    throw new FormatError('tokenizer.json', `${file}: merge ${rank} (${JSON.stringify(m).slice(0, 60)}) is not a pair of pieces`, {path: file})
  })
}

/**
 * Scores from merge ranks. A SentencePiece converter sorts all merges by the score of the piece
 * they make, so pieces with different scores have disjoint, ordered blocks of merges; where the
 * blocks of several pieces interleave, those pieces had equal scores (LLaMA's 16 pieces made only
 * of "▁" all score -1e9). Each group of overlapping blocks gets -(rank of its first merge); pieces
 * no merge makes get `fallback(id)`.
 */
export function scoresFromMerges(pieces: readonly string[], merges: readonly [string, string][], fallback: (id: number) => number): number[] {
  const span = new Map<string, [number, number]>()
  merges.forEach(([l, r], rank) => {
    const p = l + r
    const s = span.get(p)
    if (s) s[1] = rank
    else span.set(p, [rank, rank])
  })
  const groupScore = new Map<string, number>()
  let groupStart = -1
  let groupEnd = -1
  // Blocks in order of their first merge; a block that starts before the group ends joins it.
  for (const [p, [first, last]] of [...span.entries()].sort((a, b) => a[1][0] - b[1][0])) {
    if (first > groupEnd) groupStart = first
    groupEnd = Math.max(groupEnd, last)
    groupScore.set(p, -groupStart)
  }
  return pieces.map((p, id) => groupScore.get(p) ?? fallback(id))
}

/**
 * Parse a tokenizer.json into the SentencePiece model it was converted from (see the file
 * comment). Wrong shapes and unsupported kinds of tokenizer are a one-line FormatError naming `file`.
 */
export function modelFromTokenizerJson(json: unknown, file = 'tokenizer.json'): SentencePieceModel {
  const bad = (what: string) => new FormatError('tokenizer.json', `${file}: ${what}`, {path: file})
  if (!isObject(json)) throw bad('not a JSON object')
  const model = json.model as BpeModelJson | undefined
  if (!isObject(model)) throw bad('no "model" object')
  if (model.type !== 'BPE') throw new FormatError('tokenizer.unsupported', `${file}: model type ${JSON.stringify(model.type ?? null)} is not supported (only SentencePiece-style BPE, as LLaMA's)`, {path: file})
  if (!isObject(model.vocab)) throw bad('model.vocab is not an object of piece → id')
  if (model.continuing_subword_prefix || model.end_of_word_suffix) throw new FormatError('tokenizer.unsupported', `${file}: continuing_subword_prefix/end_of_word_suffix are not SentencePiece features`, {path: file})
  const addDummyPrefix = dummyPrefix(json, file)

  const entries = Object.entries(model.vocab)
  const added = json.added_tokens ?? []
  if (!Array.isArray(added)) throw bad('added_tokens is not a list')
  const size = Math.max(entries.length, ...added.map((a) => (isObject(a) && Number.isInteger(a.id) ? (a.id as number) + 1 : 0)))
  const pieces: (string | undefined)[] = new Array(size)
  for (const [piece, id] of entries) {
    if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= size || pieces[id as number] !== undefined) throw bad(`piece ${JSON.stringify(piece)} has id ${JSON.stringify(id)}, outside 0..${size - 1} or repeated`)
    pieces[id as number] = piece
  }
  const specials = new Map<number, boolean>()
  for (const a of added as AddedToken[]) {
    if (!isObject(a) || !Number.isInteger(a.id) || a.id < 0 || typeof a.content !== 'string' || a.content === '') throw bad(`added token ${JSON.stringify(a).slice(0, 80)} has no id or content`)
    if (pieces[a.id] !== undefined && pieces[a.id] !== a.content) throw bad(`added token ${JSON.stringify(a.content)} has id ${a.id}, which the vocabulary gives to ${JSON.stringify(pieces[a.id])}`)
    pieces[a.id] = a.content
    specials.set(a.id, a.special === true)
  }
  for (let id = 0; id < size; id++) if (pieces[id] === undefined) throw bad(`no piece has id ${id}`)
  const vocab = pieces as string[]
  const ids = new Map(vocab.map((p, id) => [p, id]))
  if (ids.size !== vocab.length) throw bad('a piece appears twice')

  const unkId = typeof model.unk_token === 'string' ? ids.get(model.unk_token) : undefined
  if (unkId === undefined) throw bad(`model.unk_token ${JSON.stringify(model.unk_token ?? null)} is not a piece`)
  const byteFallback = model.byte_fallback === true
  const types: PieceType[] = vocab.map((p, id) => {
    if (id === unkId) return PIECE_TYPE.UNKNOWN
    if (specials.has(id)) return specials.get(id) ? PIECE_TYPE.CONTROL : PIECE_TYPE.USER_DEFINED
    if (byteFallback && BYTE_PIECE.test(p)) return PIECE_TYPE.BYTE
    return PIECE_TYPE.NORMAL
  })

  const merges = mergePairs(model.merges ?? [], file)
  checkMerges(vocab, types, ids, merges, file)
  const scores = scoresFromMerges(vocab, merges, () => 0)
  const special = (piece: string) => {
    const id = ids.get(piece)
    return id !== undefined && types[id] === PIECE_TYPE.CONTROL ? id : -1
  }
  return {
    model_type: 'BPE',
    pieces: vocab,
    scores,
    types,
    unk_id: unkId,
    bos_id: special('<s>'),
    eos_id: special('</s>'),
    pad_id: -1,
    byte_fallback: byteFallback,
    unk_surface: SENTENCEPIECE_DEFAULTS.unk_surface,
    treat_whitespace_as_suffix: false,
    normalizer: 'identity',
    precompiled_charsmap: new Uint8Array(0),
    add_dummy_prefix: addDummyPrefix,
    remove_extra_whitespaces: false,
    escape_whitespaces: true,
  }
}

/**
 * The merges must be what SentencePiece would do: every merge joins two pieces into a piece, and
 * every split of a NORMAL piece into two possible symbols (pieces or single characters) is a merge.
 */
function checkMerges(vocab: readonly string[], types: readonly PieceType[], ids: Map<string, number>, merges: readonly [string, string][], file: string): void {
  const refuse = (what: string) => new FormatError('tokenizer.unsupported', `${file}: ${what}; the merges are not those of a SentencePiece BPE model`, {path: file})
  const known = new Set<string>()
  merges.forEach(([l, r], rank) => {
    if (!ids.has(l) || !ids.has(r) || !ids.has(l + r)) throw new FormatError('tokenizer.json', `${file}: merge ${rank} "${l} ${r}" uses a piece that is not in the vocabulary`, {path: file})
    known.add(`${l}\u0000${r}`)
  })
  const symbol = (s: string) => {
    const id = ids.get(s)
    if (id !== undefined) return types[id] === PIECE_TYPE.NORMAL || types[id] === PIECE_TYPE.USER_DEFINED || types[id] === PIECE_TYPE.UNUSED
    return codePoints(s).length === 1
  }
  for (let id = 0; id < vocab.length; id++) {
    if (types[id] !== PIECE_TYPE.NORMAL) continue
    const chars = codePoints(vocab[id]!)
    for (let k = 1; k < chars.length; k++) {
      const l = chars.slice(0, k).join('')
      const r = chars.slice(k).join('')
      if (symbol(l) && symbol(r) && !known.has(`${l}\u0000${r}`)) throw refuse(`"${vocab[id]}" can be made from "${l}" + "${r}" but that is no merge`)
    }
  }
}

/**
 * The merges a SentencePiece BPE model stands for, as transformers' converter makes them (and as
 * Meta's Llama-2 tokenizer.json has them, merge for merge): every split of a piece a merge can make
 * (NORMAL, UNUSED) into two pieces that can be symbols (NORMAL, UNUSED, USER_DEFINED), sorted by
 * the score of the piece made (highest first), then by the ids of the left and right halves.
 */
export function mergesFromModel(model: SentencePieceModel): [string, string][] {
  const ids = new Map(model.pieces.map((p, id) => [p, id]))
  const symbol = (id: number | undefined) => id !== undefined && (model.types[id] === PIECE_TYPE.NORMAL || model.types[id] === PIECE_TYPE.UNUSED || model.types[id] === PIECE_TYPE.USER_DEFINED)
  const all: {l: number; r: number; score: number}[] = []
  model.pieces.forEach((piece, id) => {
    if (model.types[id] !== PIECE_TYPE.NORMAL && model.types[id] !== PIECE_TYPE.UNUSED) return
    const chars = codePoints(piece)
    for (let k = 1; k < chars.length; k++) {
      const l = ids.get(chars.slice(0, k).join(''))
      const r = ids.get(chars.slice(k).join(''))
      if (symbol(l) && symbol(r)) all.push({l: l!, r: r!, score: model.scores[id]!})
    }
  })
  all.sort((a, b) => b.score - a.score || a.l - b.l || a.r - b.r)
  return all.map(({l, r}) => [model.pieces[l]!, model.pieces[r]!])
}

/** HF's AddedToken fields, as Meta's Llama-2 files spell them. */
function addedToken(content: string, normalized: boolean) {
  return {content, lstrip: false, normalized, rstrip: false, single_word: false}
}

export interface HfTokenizerOptions {
  /** tokenizer_config.json's add_bos_token (default true, as OpenELM expects BOS). */
  addBos?: boolean
  /** tokenizer_config.json's model_max_length (default 2048, OpenELM's max_context_length). */
  modelMaxLength?: number
  /** A Jinja chat template for tokenizer_config.json (OpenELM-Instruct). */
  chatTemplate?: string
}

/** `tokenizer.json` for `model` (a plain object; JSON.stringify it). */
export function tokenizerJson(model: SentencePieceModel, options: HfTokenizerOptions = {}): Record<string, unknown> {
  if (model.model_type !== 'BPE') throw new FormatError('tokenizer.unsupported', `a SentencePiece ${model.model_type} model has no BPE tokenizer.json`)
  if (!model.escape_whitespaces || model.remove_extra_whitespaces || model.treat_whitespace_as_suffix || model.precompiled_charsmap.byteLength > 0) {
    throw new FormatError('tokenizer.unsupported', 'only models with the identity normalizer, escaped spaces and no whitespace removal (as LLaMA\'s) have a tokenizer.json here')
  }
  const addBos = options.addBos ?? true
  const merges = mergesFromModel(model)
  const spaced = merges.some(([l, r]) => l.includes(' ') || r.includes(' '))
  const vocab: Record<string, number> = {}
  model.pieces.forEach((p, id) => (vocab[p] = id))
  const added = model.pieces.flatMap((content, id) => {
    const t = model.types[id]
    if (t !== PIECE_TYPE.UNKNOWN && t !== PIECE_TYPE.CONTROL && t !== PIECE_TYPE.USER_DEFINED) return []
    return [{id, content, single_word: false, lstrip: false, rstrip: false, normalized: t === PIECE_TYPE.USER_DEFINED, special: t !== PIECE_TYPE.USER_DEFINED}]
  })
  const bos = model.bos_id >= 0 ? model.pieces[model.bos_id]! : undefined
  const withBos = addBos && bos !== undefined
  const seq = (id: 'A' | 'B', type_id: number) => ({Sequence: {id, type_id}})
  const bosToken = (type_id: number) => ({SpecialToken: {id: bos, type_id}})
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: {
      type: 'Sequence',
      normalizers: [
        ...(model.add_dummy_prefix ? [{type: 'Prepend', prepend: SPACE_SYMBOL}] : []),
        {type: 'Replace', pattern: {String: ' '}, content: SPACE_SYMBOL},
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: withBos ? [bosToken(0), seq('A', 0)] : [seq('A', 0)],
      pair: withBos ? [bosToken(0), seq('A', 0), bosToken(1), seq('B', 1)] : [seq('A', 0), seq('B', 1)],
      special_tokens: withBos ? {[bos]: {id: bos, ids: [model.bos_id], tokens: [bos]}} : {},
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        {type: 'Replace', pattern: {String: SPACE_SYMBOL}, content: ' '},
        {type: 'ByteFallback'},
        {type: 'Fuse'},
        ...(model.add_dummy_prefix ? [{type: 'Strip', content: ' ', start: 1, stop: 0}] : []),
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: model.pieces[model.unk_id],
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: model.byte_fallback,
      ignore_merges: false,
      vocab,
      // "a b" strings unless a piece holds a space (then the newer [a, b] form).
      merges: spaced ? merges : merges.map(([l, r]) => `${l} ${r}`),
    },
  }
}

/** `tokenizer_config.json` for LlamaTokenizer / LlamaTokenizerFast. */
export function tokenizerConfig(model: SentencePieceModel, options: HfTokenizerOptions = {}): Record<string, unknown> {
  const piece = (id: number) => (id >= 0 ? model.pieces[id] : null)
  const decoder: Record<string, unknown> = {}
  model.pieces.forEach((content, id) => {
    const t = model.types[id]
    if (t === PIECE_TYPE.UNKNOWN || t === PIECE_TYPE.CONTROL || t === PIECE_TYPE.USER_DEFINED) {
      decoder[String(id)] = {...addedToken(content, t === PIECE_TYPE.USER_DEFINED), special: t !== PIECE_TYPE.USER_DEFINED}
    }
  })
  return {
    add_bos_token: options.addBos ?? true,
    add_eos_token: false,
    added_tokens_decoder: decoder,
    bos_token: piece(model.bos_id),
    ...(options.chatTemplate !== undefined ? {chat_template: options.chatTemplate} : {}),
    clean_up_tokenization_spaces: false,
    eos_token: piece(model.eos_id),
    legacy: true,
    model_max_length: options.modelMaxLength ?? 2048,
    pad_token: piece(model.pad_id),
    padding_side: 'right',
    sp_model_kwargs: {},
    tokenizer_class: 'LlamaTokenizer',
    unk_token: piece(model.unk_id),
  }
}

/** `special_tokens_map.json`. */
export function specialTokensMap(model: SentencePieceModel): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  if (model.bos_id >= 0) out.bos_token = addedToken(model.pieces[model.bos_id]!, false)
  if (model.eos_id >= 0) out.eos_token = addedToken(model.pieces[model.eos_id]!, false)
  if (model.pad_id >= 0) out.pad_token = addedToken(model.pieces[model.pad_id]!, false)
  out.unk_token = addedToken(model.pieces[model.unk_id]!, false)
  return out
}
