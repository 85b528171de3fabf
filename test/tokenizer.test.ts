/**
 * The SentencePiece tokenizer (src/tokenizer) against real references:
 * - the built-in LLaMA-2 vocabulary equals llama.cpp's ggml-vocab-llama-spm.gguf (converted from
 *   Meta's tokenizer.model) piece for piece, score for score, type for type;
 * - the encoder reproduces llama.cpp's LLaMA SPM test vectors;
 * - Debian's python3-sentencepiece, loading the tokenizer.model we write, encodes held-out Brown
 *   lines and hand-made edge lines to our ids and decodes random id sequences to our text (also
 *   for other normalizer flags, UNUSED/USER_DEFINED pieces, and the tiny fixture model);
 * - tokenizer.json (ours and one with Meta's own merges), GGUF vocabularies and transformers.js
 *   give the same ids; bad files are one-line FormatErrors naming the file.
 */
import {spawnSync} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {AutoTokenizer, env} from '@huggingface/transformers'
import llamaTokenizerJs from 'llama-tokenizer-js'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {ConfigError, FormatError, OpenElmError} from '../src/errors.js'
import {openGguf, parseGgufHeader} from '../src/formats/gguf/read.js'
import {parseTokenizerJson} from '../src/formats/gguf/tokenizer.js'
import {type GgufKv} from '../src/formats/gguf/types.js'
import {planGguf, writeGguf} from '../src/formats/gguf/write.js'
import {drain} from '../src/progress.js'
import {heldOutDocuments, heldOutText} from '../src/text/corpus.js'
import {
  createTokenizer, decodeBytes, findTokenizer, hfTokenizerFiles, isPlaceholderVocabulary, LLAMA2_NAME, llama2Model, llama2Tokenizer, loadTokenizer,
  mergesFromModel, modelFromGgufVocabulary, modelFromTokenizerJson, PIECE_TYPE, readSentencePieceModel, type SentencePieceModel, type Tokenizer,
  tokenizerJson, writeSentencePieceModel,
} from '../src/tokenizer/index.js'
import {llamaSpmMaterial, type LlamaSpmMaterial} from './helpers/llama-spm-vocab.js'

const repo = path.resolve(import.meta.dirname, '..')
const PYTHON = '/usr/bin/python3'
const SPM_CHECK = path.join(repo, 'test/python/spm_check.py')
const TINY_SPM = path.join(repo, 'fixtures/tiny-spm/tokenizer.model')

/** Hand-made lines for the edge cases of normalization, byte fallback and merging. */
const EDGE = [
  '', ' ', '  ', '   ', 'a', ' a', 'a ', '  a  b   c ', '\t', ' \t a \t', 'a\tb\t\tc', '\n', '\n\n\n', ' \n ', 'a\nb\n', '\r\n', 'line one\r\nline two',
  '0', '12345 67.890', '3.14159265358979', '1,000,000', '!!!???...,,,;;', '--- *** ###', '"quoted" (parens) [brackets] {braces}',
  'café naïve Ærøskøbing Ŝŝ façade', 'Ångström Ñandú Œuvre', '日本語のテキストです', '中文 测试 句子', '한국어 텍스트',
  '😀 👍🏽 🇫🇷 👨‍👩‍👧', '✅ only emoji that has its own token', '\ufeff', '\ufeffHello', 'x\ufeffy',
  '\u0001\u0007\u001f', '\u00a0a\u2003b\u3000c', 'e\u0301 combining', '\ud7ff\ue000\uffff', '\u{10ffff}\u{1f9d1}\u{e0041}', 'ﬁ ﬂ ＡＢＣ',
  'مرحبا بالعالم', 'שלום עולם', 'x\u2581y', '\u2581', '\u2581\u2581a', 'a'.repeat(200), ' '.repeat(40) + 'x', '<s>', '</s>', '<unk>', '<0x41>',
  'Hello world', ' Hello world', 'Hello World!', "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
]
/** 300 held-out Brown lines (real English prose, never seen by the trained fixture). */
const BROWN = heldOutText().split('\n').slice(0, 300)
/** Whole documents (paragraphs joined by "\n"): the encoder cuts text where no merge can cross. */
const DOCUMENTS = heldOutDocuments().slice(0, 4).map((d) => d.text)
const LINES = [...EDGE, ...BROWN, ...DOCUMENTS]

interface PythonAnswer {version: string; pieces: number; encode: number[][]; decode: string[]}

/** Debian's python3-sentencepiece on `modelFile`: each text encoded (no BOS), each id list decoded. */
function python(modelFile: string, encode: readonly string[], decode: readonly number[][] = []): PythonAnswer {
  const r = spawnSync(PYTHON, [SPM_CHECK, modelFile], {input: JSON.stringify({encode, decode}), maxBuffer: 1 << 28, encoding: 'utf8'})
  if (r.status !== 0) throw new Error(`${SPM_CHECK} failed (needs Debian's python3-sentencepiece): ${r.stderr}`)
  return JSON.parse(r.stdout) as PythonAnswer
}

/** Deterministic id sequences mixing byte pieces, space pieces and ordinary pieces. */
function randomIdLists(count: number, vocab: number, seed: number, special: readonly number[] = []): number[][] {
  let state = seed
  const rnd = () => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648
  const lists: number[][] = []
  for (let i = 0; i < count; i++) {
    const n = 1 + Math.floor(rnd() * 8)
    lists.push(Array.from({length: n}, () => {
      const u = rnd()
      if (u < 0.3) return Math.floor(rnd() * Math.min(vocab, 260))
      if (u < 0.45 && special.length > 0) return special[Math.floor(rnd() * special.length)]!
      return Math.floor(rnd() * vocab)
    }))
  }
  return lists
}

/** Index of the first element where two long arrays differ (-1: equal), to keep large comparisons fast. */
function firstDifference(a: readonly unknown[], b: readonly unknown[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (!Object.is(a[i], b[i])) return i
  return -1
}
const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b)

const encodeAll = (t: Tokenizer, texts: readonly string[]) => texts.map((x) => t.encode(x, {addBos: false}))

let work: string
let llama: Tokenizer
let llamaModelFile: string
let material: LlamaSpmMaterial
/** python-sentencepiece's ids for LINES with our LLaMA-2 tokenizer.model: the reference below. */
let reference: number[][]

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'tokenizer-test-'))
  llama = await llama2Tokenizer()
  llamaModelFile = path.join(work, 'llama2.model')
  await fs.writeFile(llamaModelFile, writeSentencePieceModel(llama.model))
  material = await llamaSpmMaterial()
  reference = python(llamaModelFile, LINES).encode
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

function ggufArrays(kv: readonly GgufKv[]): {tokens: string[]; scores: number[]; types: number[]; get: (key: string) => unknown} {
  const get = (key: string) => kv.find((k) => k.key === key)?.value
  const items = (key: string) => (get(key) as {items: unknown[]}).items
  return {tokens: items('tokenizer.ggml.tokens') as string[], scores: items('tokenizer.ggml.scores') as number[], types: items('tokenizer.ggml.token_type') as number[], get}
}

describe('the built-in LLaMA-2 tokenizer', () => {
  it("equals llama.cpp's ggml-vocab-llama-spm.gguf: 32,000 pieces, scores and types", () => {
    const v = ggufArrays(parseGgufHeader(material.gguf, 'ggml-vocab-llama-spm.gguf').metadata)
    expect(v.tokens.length).toBe(32000)
    expect(llama.model.pieces).toEqual(v.tokens) // includes piece 30143 "\ufeff" (the reader keeps the BOM)
    expect(llama.model.pieces[30143]).toBe('\ufeff')
    // GGUF stores float32: compare each score as a float32.
    expect(llama.model.scores.map((s) => Math.fround(s))).toEqual(v.scores)
    expect(llama.model.types).toEqual(v.types)
    expect([llama.unk, llama.bos, llama.eos]).toEqual([v.get('tokenizer.ggml.unknown_token_id'), v.get('tokenizer.ggml.bos_token_id'), v.get('tokenizer.ggml.eos_token_id')])
    expect(v.get('tokenizer.ggml.model')).toBe('llama')
    expect(llama.model.scores.filter((s) => s === -1e9).length).toBe(16)
    expect(llama.name).toBe(LLAMA2_NAME)
  })

  it('"Hello world" is [1, 15043, 3186] with BOS, and decodes back', () => {
    expect(llama.encode('Hello world')).toEqual([1, 15043, 3186])
    expect(llama.encode('Hello world', {addBos: false, addEos: true})).toEqual([15043, 3186, 2])
    expect(llama.decode([1, 15043, 3186])).toBe('Hello world')
    expect([llama.pieceOf(15043), llama.pieceOf(13), llama.vocabSize]).toEqual(['▁Hello', '<0x0A>', 32000])
    expect(() => llama.pieceOf(32000)).toThrow(/outside the vocabulary/)
    expect(() => llama.decode([32000])).toThrow(OpenElmError)
  })

  it("reproduces every llama.cpp LLaMA SPM test vector (.inp → .out)", () => {
    expect(material.vectors.length).toBeGreaterThanOrEqual(40)
    const ours = material.vectors.map(([text]) => llama.encode(text, {addBos: false}))
    expect(ours).toEqual(material.vectors.map(([, ids]) => ids))
  })
})

describe('against python3-sentencepiece', () => {
  it('our tokenizer.model loads in SentencePiece and encodes 300 Brown lines and the edge lines to our ids', () => {
    expect(BROWN.length).toBe(300)
    expect(encodeAll(llama, LINES)).toEqual(reference)
    // A few values by hand, so the comparison cannot pass on two empty lists.
    expect(reference[0]).toEqual([])
    expect(reference[1]).toEqual([259])
    expect(reference[EDGE.indexOf('\t')]).toEqual([29871, 12])
    expect(reference[EDGE.indexOf('\ufeff')]).toEqual([29871, 30143])
    expect(reference.slice(EDGE.length).flat().length).toBeGreaterThan(10000)
    expect(DOCUMENTS.every((d) => d.split('\n').length > 3)).toBe(true)
    expect(llama.model.pieces.some((p) => p.length > 1 && p.includes('\n'))).toBe(false) // so "\n" cuts the text
  })

  it('decodes 300 random id sequences (bytes, spaces, control, UNK) to the same text', () => {
    const lists = [[29871, 15043], [1, 29871, 15043], [13, 29871, 15043], [0, 15043], [228, 191, 65], [243, 162, 155, 132], ...randomIdLists(300, 32000, 11, [0, 1, 2, 259, 29871, 1678])]
    const py = python(llamaModelFile, [], lists)
    expect(lists.map((ids) => llama.decode(ids))).toEqual(py.decode)
    expect(py.decode.slice(0, 6)).toEqual([' Hello', ' Hello', '\n  Hello', ' ⁇  Hello', '\ufffd\ufffd>', '😁']) // E1 BC: a cut 3-byte character
  })

  it('matches for every combination of add_dummy_prefix, remove_extra_whitespaces and escape_whitespaces', async () => {
    const base = await llama2Model()
    const lists = randomIdLists(80, 32000, 5, [29871, 259, 1678, 268])
    for (const [add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces] of [[false, false, true], [true, true, true], [false, true, true], [true, false, false]]) {
      const model: SentencePieceModel = {...base, add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces}
      const file = path.join(work, 'variant.model')
      await fs.writeFile(file, writeSentencePieceModel(model))
      const t = createTokenizer(model, 'variant')
      const py = python(file, EDGE, lists)
      expect(encodeAll(t, EDGE), JSON.stringify({add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces})).toEqual(py.encode)
      expect(lists.map((ids) => t.decode(ids))).toEqual(py.decode)
    }
  })

  it('matches with UNUSED pieces (split back) and USER_DEFINED pieces (matched whole)', async () => {
    const base = await llama2Model()
    const pieces = [...base.pieces]
    const types = [...base.types]
    for (const id of [15043, 278, 292]) types[id] = PIECE_TYPE.UNUSED // ▁Hello, ▁the, ing
    ;[pieces[31999], pieces[31998], pieces[31997]] = ['<|user|>', '<|assistant|>', '<|a']
    types[31999] = types[31998] = types[31997] = PIECE_TYPE.USER_DEFINED
    const model = {...base, pieces, types}
    const file = path.join(work, 'user.model')
    await fs.writeFile(file, writeSentencePieceModel(model))
    const texts = ['Hello world', 'the thing is singing', '<|user|>Hello<|assistant|> the<|a', 'x<|user|><|user|>y', ...BROWN.slice(0, 50)]
    const py = python(file, texts)
    expect(encodeAll(createTokenizer(model, 'user'), texts)).toEqual(py.encode)
    expect(py.encode[0]).toEqual([379, 3156, 3186]) // ▁Hello is UNUSED: ▁H + ello
    expect(py.encode[2]).toEqual([29871, 31999, 10994, 31998, 266, 29872, 31997])
  })

  it('matches on the tiny fixture model: whitespace removal, no byte fallback (UNK runs fused), a USER_DEFINED piece', async () => {
    const t = await loadTokenizer(TINY_SPM)
    expect([t.model.remove_extra_whitespaces, t.model.byte_fallback, t.vocabSize]).toEqual([true, false, 128])
    const texts = [...EDGE, '<0x0A>', 'the<0x0A>quick', '   the   lazy dog   ', ...BROWN.slice(0, 100)]
    const lists = randomIdLists(100, 128, 3)
    const py = python(TINY_SPM, texts, lists)
    expect(encodeAll(t, texts)).toEqual(py.encode)
    expect(lists.map((ids) => t.decode(ids))).toEqual(py.decode)
    expect(py.encode[EDGE.indexOf('12345 67.890')]).toEqual([100, 0, 100, 0]) // "▁", one UNK for "12345", ...
  })
})

describe('round trip and bytes', () => {
  it('decode(encode(x)) is x for every line, except a literal "▁" (U+2581), which SentencePiece also decodes as a space', () => {
    const failures = LINES.filter((x) => llama.decode(llama.encode(x)) !== x)
    expect(failures).toEqual(LINES.filter((x) => x.includes('\u2581')))
    expect(failures.length).toBe(3)
    expect(llama.decode(llama.encode('x\u2581y'))).toBe('x y')
  })

  it('a lone surrogate encodes as U+FFFD (it has no UTF-8 form)', () => {
    expect(llama.encode('a\ud800b')).toEqual(llama.encode('a\ufffdb'))
    expect(llama.encode('\udc00')).toEqual(llama.encode('\ufffd'))
    expect(llama.encode('\u{1f600}')).toEqual([1, 29871, 243, 162, 155, 131]) // a pair stays one character
  })

  it('re-assembles byte pieces like SentencePiece: one U+FFFD per byte that starts no valid character', () => {
    expect(decodeBytes([0x41, 0xc3, 0xa9])).toBe('Aé')
    expect(decodeBytes([0xe2, 0x82, 0x41])).toBe('\ufffd\ufffdA') // truncated 3-byte sequence: 2 × U+FFFD
    expect(decodeBytes([0xed, 0xa0, 0x80])).toBe('\ufffd'.repeat(3)) // an encoded surrogate
    expect(decodeBytes([0xc0, 0xaf])).toBe('\ufffd\ufffd') // overlong
    expect(decodeBytes([0xf0, 0x9f, 0x98, 0x81, 0xff])).toBe('😁\ufffd')
    expect(decodeBytes([0xf4, 0x90, 0x80, 0x80])).toBe('\ufffd'.repeat(4)) // above U+10FFFF
  })
})

describe('tokenizer.json', () => {
  /** Meta's merges for LLaMA-2, in rank order, as llama-tokenizer-js carries them. */
  const metaMerges = () => [...llamaTokenizerJs.merges.entries()].sort((a, b) => a[1] - b[1]).map(([k]) => k)

  it("the merges we derive from LLaMA-2's scores are Meta's 61,249 merges, in order", () => {
    const ours = mergesFromModel(llama.model).map(([l, r]) => `${l} ${r}`)
    expect(ours.length).toBe(61249)
    expect(ours).toEqual(metaMerges())
  })

  it("a tokenizer.json with Meta's merges gives the ids of tokenizer.model (scores recovered from ranks)", () => {
    const json = tokenizerJson(llama.model) as {model: {merges: unknown}}
    json.model.merges = metaMerges()
    const model = modelFromTokenizerJson(json)
    expect(model.pieces).toEqual(llama.model.pieces)
    expect(model.types).toEqual(llama.model.types)
    expect(model.byte_fallback).toBe(true)
    // The 15 "▁"-only pieces whose merges interleave share one score, below every other merge.
    const spaces = [268, 308, 418, 462, 539, 632, 795, 965, 1669, 1678, 3986, 4706, 9651, 18884].map((id) => model.scores[id])
    expect(new Set(spaces).size).toBe(1)
    expect(spaces[0]).toBeLessThan(Math.min(...model.scores.filter((_, id) => id >= 259 && !/^▁+$/.test(model.pieces[id]!))))
    const t = createTokenizer(model, 'tokenizer.json')
    expect(encodeAll(t, LINES)).toEqual(reference)
    expect(encodeAll(t, material.vectors.map(([text]) => text))).toEqual(material.vectors.map(([, ids]) => ids))
  })

  it('the Metaspace form (normalizer null, pre_tokenizer Metaspace) reads the same', () => {
    const json = tokenizerJson(llama.model) as Record<string, unknown>
    json.normalizer = null
    json.pre_tokenizer = {type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false}
    const t = createTokenizer(modelFromTokenizerJson(json), 'metaspace')
    expect(encodeAll(t, LINES.slice(0, 80))).toEqual(reference.slice(0, 80))
  })

  it('the files we write load in transformers.js, which encodes like SentencePiece', async () => {
    const root = path.join(work, 'tjs')
    const dir = path.join(root, 'llama2')
    await fs.mkdir(dir, {recursive: true})
    const files = hfTokenizerFiles(llama.model)
    expect(Object.keys(files).sort()).toEqual(['special_tokens_map.json', 'tokenizer.json', 'tokenizer.model', 'tokenizer_config.json'])
    for (const [name, bytes] of Object.entries(files)) await fs.writeFile(path.join(dir, name), bytes)
    const config = JSON.parse(Buffer.from(files['tokenizer_config.json']!).toString('utf8'))
    expect(config).toMatchObject({add_bos_token: true, add_eos_token: false, bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', legacy: true, tokenizer_class: 'LlamaTokenizer'})
    expect(JSON.parse(Buffer.from(files['special_tokens_map.json']!).toString('utf8')).bos_token.content).toBe('<s>')
    expect(sameBytes(hfTokenizerFiles(llama.model)['tokenizer.json']!, files['tokenizer.json']!)).toBe(true) // deterministic

    env.allowRemoteModels = false
    env.localModelPath = root + path.sep
    const tok = await AutoTokenizer.from_pretrained('llama2')
    // transformers.js, like HF tokenizers, reads "<s>" in text as the special token; SentencePiece does not.
    const texts = LINES.filter((x) => !/<\/?s>|<unk>/.test(x))
    expect(texts.length).toBe(LINES.length - 3)
    expect(texts.map((x) => tok.encode(x))).toEqual(texts.map((x) => [1, ...reference[LINES.indexOf(x)]!]))
    expect(tok.decode(llama.encode('Hello world'), {skip_special_tokens: true})).toBe('Hello world')
    // And our own loader reads the folder back to the same tokenizer (tokenizer.model first).
    const back = await loadTokenizer(dir)
    expect(back.name).toMatch(/^tokenizer\.model/)
    await fs.rm(path.join(dir, 'tokenizer.model'))
    const fromJson = await loadTokenizer(dir)
    expect(fromJson.name).toMatch(/^tokenizer\.json/)
    expect(encodeAll(fromJson, LINES)).toEqual(reference)
  })

  it('rejects wrong shapes and other kinds of tokenizer with a one-line FormatError naming the file', () => {
    const base = JSON.stringify(tokenizerJson(llama.model))
    const good = () => JSON.parse(base) as {model: Record<string, unknown>} & Record<string, unknown>
    const cases: [string, unknown, RegExp][] = [
      ['not an object', [1, 2], /not a JSON object/],
      ['no model', {}, /no "model" object/],
      ['unigram', {model: {type: 'Unigram', vocab: [['<unk>', 0]]}}, /model type "Unigram" is not supported/],
      ['wordpiece', {model: {type: 'WordPiece', vocab: {}}}, /"WordPiece" is not supported/],
      ['vocab list', {...good(), model: {...good().model, vocab: ['a']}}, /model.vocab is not an object/],
      ['id repeated', {...good(), model: {...good().model, vocab: {'<unk>': 0, '<s>': 0}}}, /repeated/],
      ['byte-level', {...good(), normalizer: null, pre_tokenizer: {type: 'ByteLevel'}}, /pre_tokenizer .*ByteLevel.* not supported|only LLaMA-style/],
      ['bad merge', {...good(), model: {...good().model, merges: ['▁ t', 'xyz']}}, /merge 1 .* not a pair/],
      ['unknown piece', {...good(), model: {...good().model, merges: ['▁ qqqq']}}, /not in the vocabulary/],
      ['missing merges', {...good(), model: {...good().model, merges: (good().model.merges as string[]).slice(0, 1000)}}, /can be made from .* but that is no merge/],
      ['no unk', {...good(), model: {...good().model, unk_token: '<nope>'}}, /unk_token "<nope>" is not a piece/],
    ]
    for (const [what, json, message] of cases) {
      let error: unknown
      try {
        modelFromTokenizerJson(json, '/m/tokenizer.json')
      } catch (e) {
        error = e
      }
      expect(error, what).toBeInstanceOf(FormatError)
      expect((error as Error).message, what).toMatch(message)
      expect((error as Error).message, what).toMatch(/^\/m\/tokenizer\.json: /)
      expect((error as Error).message.includes('\n'), what).toBe(false)
    }
  })
})

describe('GGUF vocabularies', () => {
  it("llama.cpp's GGUF vocabulary encodes like tokenizer.model", () => {
    const v = ggufArrays(parseGgufHeader(material.gguf, 'vocab.gguf').metadata)
    const model = modelFromGgufVocabulary({model: 'llama', tokens: v.tokens, scores: v.scores, types: v.types, bos: 1, eos: 2, unk: 0}, 'vocab.gguf')
    expect(model.byte_fallback).toBe(true)
    expect(encodeAll(createTokenizer(model, 'gguf'), LINES)).toEqual(reference)
    expect(() => modelFromGgufVocabulary({model: 'gpt2', tokens: ['a']}, 'x.gguf')).toThrow(/"gpt2" is not supported/)
    expect(() => modelFromGgufVocabulary({tokens: ['a', 'b'], types: [1]}, 'x.gguf')).toThrow(/2 tokens but 1 token types/)
  })

  it('every one of the 32,000 LLaMA-2 pieces survives a GGUF write → read round trip (U+FEFF included)', async () => {
    const file = path.join(work, 'vocab.gguf')
    const metadata: GgufKv[] = [
      {key: 'tokenizer.ggml.model', type: 'STRING', value: 'llama'},
      {key: 'tokenizer.ggml.tokens', type: 'ARRAY', value: {itemType: 'STRING', items: llama.model.pieces}},
      {key: 'tokenizer.ggml.scores', type: 'ARRAY', value: {itemType: 'FLOAT32', items: llama.model.scores}},
      {key: 'tokenizer.ggml.token_type', type: 'ARRAY', value: {itemType: 'INT32', items: llama.model.types}},
    ]
    await drain(writeGguf(file, planGguf(metadata, [])))
    const gguf = await openGguf(file)
    try {
      const v = ggufArrays(gguf.header.metadata)
      expect(v.tokens).toEqual(llama.model.pieces)
      expect(v.tokens[30143]).toBe('\ufeff')
      expect(v.scores).toEqual(llama.model.scores)
      expect(v.types).toEqual(llama.model.types)
    } finally {
      await gguf.close()
    }
  })

  it('a GGUF vocabulary made from tokenizer.json (formats/gguf) merges the "▁"-only pieces last and encodes like tokenizer.model', () => {
    const json = tokenizerJson(llama.model)
    const v = parseTokenizerJson(json)
    const merged = (id: number) => v.types[id] === PIECE_TYPE.NORMAL && [...v.tokens[id]!].length > 1
    const others = v.scores.filter((_, id) => merged(id) && !/^▁+$/.test(v.tokens[id]!))
    for (const id of [259, 268, 1678, 462]) expect(v.scores[id]!, String(id)).toBeLessThan(Math.min(...others))
    const t = createTokenizer(modelFromGgufVocabulary({...v, model: 'llama'}, 'from-json.gguf'), 'gguf')
    expect(encodeAll(t, LINES)).toEqual(reference)
  })

  it('recognises the placeholder vocabulary an older writer made', () => {
    expect(isPlaceholderVocabulary(['<unk>', '<s>', '</s>', '[PLACEHOLDER_3]'])).toBe(true)
    expect(isPlaceholderVocabulary(llama.model.pieces)).toBe(false)
  })
})

describe('findTokenizer', () => {
  async function folder(name: string, files: Record<string, Uint8Array | string>): Promise<string> {
    const dir = path.join(work, name)
    await fs.mkdir(dir, {recursive: true})
    for (const [file, content] of Object.entries(files)) await fs.writeFile(path.join(dir, file), content)
    return dir
  }
  const tinyBytes = () => fs.readFile(TINY_SPM)

  it('takes tokenizer.model, else tokenizer.json, else a real GGUF vocabulary, else LLaMA-2 for 32000/32128 rows', async () => {
    const both = await folder('both', {'tokenizer.model': await tinyBytes(), ...hfTokenizerFiles(llama.model, {withModel: false})})
    const fromModel = await findTokenizer(path.join(both, 'model.safetensors'), 32000)
    expect(fromModel!.name).toBe(`tokenizer.model (${path.join(both, 'tokenizer.model')})`)
    expect(fromModel!.vocabSize).toBe(128)

    const json = await folder('json', hfTokenizerFiles(llama.model, {withModel: false, addBos: false}))
    const fromJson = await findTokenizer(json, 32128)
    expect(fromJson!.name).toMatch(/^tokenizer\.json/)
    expect(fromJson!.addBos).toBe(false) // tokenizer_config.json's add_bos_token
    expect(fromJson!.encode('Hello world')).toEqual([15043, 3186])

    const empty = await folder('empty', {})
    const v = ggufArrays(parseGgufHeader(material.gguf, 'vocab.gguf').metadata)
    const embedded = {file: path.join(empty, 'm.gguf'), vocabulary: {tokens: v.tokens, scores: v.scores, types: v.types}, addBos: true}
    expect((await findTokenizer(path.join(empty, 'm.gguf'), 32000, embedded))!.name).toBe(`GGUF vocabulary (${path.join(empty, 'm.gguf')})`)
    const placeholder = {...embedded, vocabulary: {tokens: v.tokens.map((t, id) => (id > 258 ? `[PLACEHOLDER_${id}]` : t))}}
    expect((await findTokenizer(path.join(empty, 'm.gguf'), 32000, placeholder))!.name).toBe(LLAMA2_NAME)
    expect((await findTokenizer(empty, 32128))!.name).toBe(LLAMA2_NAME)
    expect((await findTokenizer(empty, 32000))!.encode('Hello world')).toEqual([1, 15043, 3186])
    expect(await findTokenizer(empty, 128)).toBeUndefined()
    expect(await findTokenizer(path.join(empty, 'm.gguf'), 300, placeholder)).toBeUndefined()
  })

  it('refuses a tokenizer with more pieces than the embedding has rows', async () => {
    const dir = await folder('small', {'tokenizer.model': await tinyBytes()})
    await expect(findTokenizer(dir, 100)).rejects.toThrow(ConfigError)
    await expect(findTokenizer(dir, 100)).rejects.toThrow(/has 128 pieces but the model has 100 embedding rows/)
  })

  it('reports corrupt or unsupported tokenizer files as one-line FormatErrors naming the file', async () => {
    const llamaBytes = await fs.readFile(llamaModelFile)
    const unigram = writeSentencePieceModel({...(await llama2Model()), model_type: 'UNIGRAM'})
    const charsmap = writeSentencePieceModel({...(await llama2Model()), normalizer: 'nmt_nfkc', precompiled_charsmap: Uint8Array.from([1, 2, 3])})
    const cases: [string, Record<string, Uint8Array | string>, RegExp][] = [
      ['truncated', {'tokenizer.model': llamaBytes.subarray(0, 250_001)}, /is not a SentencePiece model/],
      ['truncated-early', {'tokenizer.model': llamaBytes.subarray(0, 7)}, /is not a SentencePiece model/],
      ['garbage', {'tokenizer.model': Uint8Array.from({length: 4096}, (_, i) => (i * 7919 + 13) & 0xff)}, /is not a SentencePiece model|not one of SentencePiece's/],
      ['empty', {'tokenizer.model': new Uint8Array(0)}, /has no pieces/],
      ['unigram', {'tokenizer.model': unigram}, /UNIGRAM models are not supported/],
      ['charsmap', {'tokenizer.model': charsmap}, /"nmt_nfkc" normalizer .* is not supported/],
      ['json-syntax', {'tokenizer.json': '{"model": '}, /is not valid JSON/],
      ['json-shape', {'tokenizer.json': '{"model": {"type": "BPE", "vocab": 3}}'}, /model.vocab is not an object/],
      ['config-syntax', {'tokenizer.model': llamaBytes, 'tokenizer_config.json': '{'}, /tokenizer_config.json is not valid JSON/],
    ]
    for (const [name, files, message] of cases) {
      const dir = await folder(`bad-${name}`, files)
      let error: unknown
      try {
        await findTokenizer(dir, 32000)
      } catch (e) {
        error = e
      }
      expect(error, name).toBeInstanceOf(FormatError)
      expect((error as Error).message, name).toMatch(message)
      expect((error as Error).message, name).toContain(dir)
      expect((error as Error).message.includes('\n'), name).toBe(false)
    }
  })
})

describe('tokenizer.model writer', () => {
  it('writes what it reads: the same model back, and the same bytes for the same model', async () => {
    const bytes = writeSentencePieceModel(llama.model)
    const back = readSentencePieceModel(bytes)
    for (const key of ['pieces', 'scores', 'types'] as const) expect(firstDifference(back[key], llama.model[key]), key).toBe(-1)
    expect({...back, pieces: [], scores: [], types: []}).toEqual({...llama.model, pieces: [], scores: [], types: []})
    expect(sameBytes(writeSentencePieceModel(back), bytes)).toBe(true)
    const tiny = readSentencePieceModel(await fs.readFile(TINY_SPM))
    expect(readSentencePieceModel(writeSentencePieceModel(tiny))).toEqual(tiny)
    expect(python(llamaModelFile, []).pieces).toBe(32000)
  })
})
