/**
 * GGUF files carry the real vocabulary (issue 13): a 32000-row model without a tokenizer gets the
 * built-in LLaMA-2 one, piece for piece, score for score and type for type what llama.cpp's own
 * converter embeds (its models/ggml-vocab-llama-spm.gguf); llama.cpp (node-llama-cpp) tokenizes
 * sentences to SentencePiece's ids and detokenizes them back; every piece (token 30143 is "\ufeff")
 * survives GGUF → GGUF; `general.size_label` is written; `--no-tokenizer` keeps the placeholder.
 */
import {spawnSync} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert, writeCheckpoint} from '../src/convert.js'
import {roundedParameterCount, sizeLabel} from '../src/formats/gguf/metadata.js'
import {openGguf, parseGgufHeader} from '../src/formats/gguf/read.js'
import {type GgufKv} from '../src/formats/gguf/types.js'
import {parameterCount} from '../src/model/config.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {llamaSpmMaterial} from './helpers/llama-spm-vocab.js'

const repo = path.resolve(import.meta.dirname, '..')
const PYTHON = '/usr/bin/python3'
const SPM_CHECK = path.join(repo, 'test/python/spm_check.py')

const SENTENCES = [
  'Hello world',
  'The quick brown fox jumps over the lazy dog.',
  '  Two leading spaces, and trailing ones  ',
  'Numbers 1234567 and symbols: #@!%^&*()[]{}',
  'Accents: café, naïve, Ångström; CJK 日本語の文章; emoji 🙂🚀',
  'line one\nline two\ttabbed',
]

let work: string
let bare: string
let gguf: string
let kv: Map<string, GgufKv>

const items = (key: string) => (kv.get(key)!.value as {items: unknown[]}).items

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'gguf-vocab-'))
  bare = path.join(work, 'bare')
  await drain(writeCheckpoint(synthCheckpoint(presetConfig('micro', {vocab_size: 32000}), {seed: 5, dtype: 'F32'}), 'hf', bare, {tokenizerRequest: {none: true}}))
  gguf = path.join(work, 'micro.gguf')
  await drain(convert(bare, 'gguf', gguf, {}, {}))
  const file = await openGguf(gguf)
  kv = file.kv
  await file.close()
}, 60_000)
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe('the vocabulary in our GGUF', () => {
  it('is llama.cpp\'s LLaMA SentencePiece vocabulary: tokens, scores, types, special ids, add_bos', async () => {
    const reference = parseGgufHeader((await llamaSpmMaterial()).gguf)
    const ref = new Map(reference.metadata.map((m) => [m.key, m]))
    const refItems = (key: string) => (ref.get(key)!.value as {items: unknown[]}).items
    expect(kv.get('tokenizer.ggml.model')?.value).toBe('llama')
    expect(items('tokenizer.ggml.tokens')).toHaveLength(32000)
    expect(items('tokenizer.ggml.tokens')).toEqual(refItems('tokenizer.ggml.tokens'))
    expect(items('tokenizer.ggml.scores')).toEqual(refItems('tokenizer.ggml.scores'))
    expect(items('tokenizer.ggml.token_type')).toEqual(refItems('tokenizer.ggml.token_type'))
    expect([kv.get('tokenizer.ggml.bos_token_id')?.value, kv.get('tokenizer.ggml.eos_token_id')?.value, kv.get('tokenizer.ggml.unknown_token_id')?.value]).toEqual([1, 2, 0])
    expect(kv.get('tokenizer.ggml.add_bos_token')?.value).toBe(true)
    expect(kv.get('openelm.vocab_placeholder')).toBeUndefined()
    expect(items('tokenizer.ggml.tokens').some((t) => /PLACEHOLDER/.test(String(t)))).toBe(false)
  })

  it('llama.cpp tokenizes sentences to SentencePiece\'s ids and detokenizes them back', async () => {
    const hf = path.join(work, 'hf')
    await drain(convert(bare, 'hf', hf, {}, {}))
    const answer = spawnSync(PYTHON, [SPM_CHECK, path.join(hf, 'tokenizer.model')], {input: JSON.stringify({encode: SENTENCES}), encoding: 'utf8'})
    expect(answer.status).toBe(0)
    const reference = (JSON.parse(answer.stdout) as {encode: number[][]}).encode
    expect(reference[0]).toEqual([15043, 3186])

    const {getLlama, LlamaLogLevel} = await import('node-llama-cpp')
    const llama = await getLlama({gpu: false, build: 'never', logLevel: LlamaLogLevel.error, progressLogs: false})
    const model = await llama.loadModel({modelPath: gguf, gpuLayers: 0, vocabOnly: true})
    try {
      expect(model.tokens.bos).toBe(1)
      expect(model.tokens.eos).toBe(2)
      for (const [i, text] of SENTENCES.entries()) {
        const ids = model.tokenize(text).map(Number)
        expect(ids, text).toEqual(reference[i])
        expect(model.detokenize(model.tokenize(text)), text).toBe(text)
      }
    } finally {
      await model.dispose()
    }
  }, 60_000)

  it('every piece survives GGUF → GGUF, "\\ufeff" (id 30143) included', async () => {
    const again = path.join(work, 'again.gguf')
    const result = await drain(convert(gguf, 'gguf', again, {}, {}))
    expect(result.tokenizer).toMatchObject({origin: 'source'})
    expect(result.tokenizer!.reason).toMatch(/embedded in the source GGUF/)
    const file = await openGguf(again)
    const tokens = (file.kv.get('tokenizer.ggml.tokens')!.value as {items: string[]}).items
    const scores = (file.kv.get('tokenizer.ggml.scores')!.value as {items: number[]}).items
    const types = (file.kv.get('tokenizer.ggml.token_type')!.value as {items: number[]}).items
    await file.close()
    expect(items('tokenizer.ggml.tokens')[30143]).toBe('\ufeff')
    expect(tokens[30143]).toBe('\ufeff')
    const original = items('tokenizer.ggml.tokens') as string[]
    const differing = tokens.flatMap((t, id) => (t === original[id] ? [] : [id]))
    expect(differing).toEqual([])
    expect(scores).toEqual(items('tokenizer.ggml.scores'))
    expect(types).toEqual(items('tokenizer.ggml.token_type'))
    // Every other key too, but the name (taken from the source's file name).
    const reread = await openGguf(again)
    const keys = [...reread.kv.keys()]
    await reread.close()
    expect(keys).toEqual([...kv.keys()])
  })

  it('--no-tokenizer keeps the placeholder vocabulary and says so', async () => {
    const out = path.join(work, 'placeholder.gguf')
    const result = await drain(convert(bare, 'gguf', out, {}, {tokenizerRequest: {none: true}}))
    expect(result.notes.join('\n')).toMatch(/--no-tokenizer: no tokenizer written: wrote a placeholder vocabulary of 32000 pieces/)
    const file = await openGguf(out)
    expect((file.kv.get('tokenizer.ggml.tokens')!.value as {items: string[]}).items[300]).toBe('[PLACEHOLDER_300]')
    expect(file.kv.get('openelm.vocab_placeholder')?.value).toBe(true)
    await file.close()
  })
})

describe('general.size_label', () => {
  it('names released shapes as llama.cpp\'s converter does from the repo name, others by rounded parameter count', () => {
    expect(sizeLabel(presetConfig('270M'))).toBe('270M')
    expect(sizeLabel(presetConfig('450M'))).toBe('450M')
    expect(sizeLabel(presetConfig('1.1B'))).toBe('1.1B')
    expect(sizeLabel(presetConfig('3B'))).toBe('3B')
    // gguf-py's model_weight_count_rounded_notation: at least two significant digits.
    expect(roundedParameterCount(271_527_168)).toBe('272M')
    expect(roundedParameterCount(1_079_891_456)).toBe('1.1B')
    expect(roundedParameterCount(3_036_647_424)).toBe('3.0B')
    expect(roundedParameterCount(8_500)).toBe('8.5K')
    expect(sizeLabel(presetConfig('micro', {vocab_size: 32000}))).toBe(roundedParameterCount(parameterCount(presetConfig('micro', {vocab_size: 32000}))))
  })

  it('is written to the file', () => {
    const micro = presetConfig('micro', {vocab_size: 32000})
    expect(kv.get('general.size_label')).toEqual({key: 'general.size_label', type: 'STRING', value: roundedParameterCount(parameterCount(micro))})
    expect(kv.get('general.size_label')?.value).toMatch(/^1\.0M$/)
  })
})
