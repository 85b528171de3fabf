/**
 * fixtures/trained: a tiny OpenELM trained on the Brown corpus's training split by
 * scripts/trained/ (Debian's torch, CPU). These tests check what the fixture is for: it has
 * OpenELM's layer-wise scaling at a size every quantizer applies to, its tokenizer is a real
 * SentencePiece model, and it has learnt English — held-out perplexity far below a unigram model's
 * fitted on the same training text, and next-token top-1 far above always guessing the most
 * frequent token. All figures are computed here, by our tokenizer and engine, on held-out text.
 */
import {spawnSync} from 'node:child_process'
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {openCheckpoint} from '../src/formats/registry.js'
import {type Checkpoint} from '../src/formats/types.js'
import {deriveConfig, layerDims} from '../src/model/config.js'
import {heldOutDocuments, trainingDocuments} from '../src/text/corpus.js'
import {loadTokenizer, type Tokenizer} from '../src/tokenizer/index.js'
import {runForward} from '../src/verify/engine/index.js'
import {perplexity} from '../src/verify/quality.js'
import {TRAINED_SHAPE} from '../scripts/trained/shape.js'

const repo = path.resolve(import.meta.dirname, '..')
const FIXTURE = path.join(repo, 'fixtures/trained')
const WINDOW = 128
const WINDOWS = 4

let tokenizer: Tokenizer
let model: Checkpoint
/** BOS + document text, per held-out document, concatenated (as train.py builds its streams). */
let heldout: number[]

function stream(docs: {text: string}[]): number[] {
  const ids: number[] = []
  for (const d of docs) ids.push(...tokenizer.encode(d.text, {addBos: true}))
  return ids
}

beforeAll(async () => {
  tokenizer = await loadTokenizer(FIXTURE)
  model = await openCheckpoint(FIXTURE)
  heldout = stream(heldOutDocuments())
})
afterAll(async () => {
  await model?.close()
})

describe('fixtures/trained', () => {
  it('has the layer-wise scaled shape of scripts/trained/shape.ts, f32, within 8 MB with its tokenizer', async () => {
    const expected = deriveConfig(TRAINED_SHAPE)
    expect(model.config.num_query_heads).toEqual(expected.num_query_heads)
    expect(model.config.num_kv_heads).toEqual(expected.num_kv_heads)
    expect(layerDims(model.config).map((l) => l.ffnDim)).toEqual([128, 256, 384, 512])
    expect(model.config.num_query_heads).toEqual([2, 4, 4, 4])
    expect(model.config.vocab_size).toBe(8192)
    let bytes = 0
    for (const f of await fs.readdir(FIXTURE)) bytes += (await fs.stat(path.join(FIXTURE, f))).size
    expect(bytes).toBeLessThanOrEqual(8 * 1024 * 1024)
    expect([...model.tensors.values()].every((t) => t.dtype === 'F32')).toBe(true)
    // Input widths are multiples of 64 (MLX groups 32/64 and GGUF blocks of 32 apply to every matrix)
    // and of 128 except layer 0's out_proj (2 query heads × 32 = 64 wide).
    const matrices = [...model.tensors.values()].filter((t) => t.shape.length === 2)
    expect(matrices.every((t) => t.shape[1]! % 64 === 0)).toBe(true)
    expect(matrices.filter((t) => t.shape[1]! % 128 !== 0).map((t) => t.name)).toEqual(['layers.0.attn.out_proj.weight'])
  })

  it('ships a SentencePiece tokenizer our encoder reproduces (Debian python3-sentencepiece, held-out lines)', () => {
    const lines = heldOutDocuments().flatMap((d) => d.text.split('\n')).slice(0, 300)
    const r = spawnSync('/usr/bin/python3', [path.join(repo, 'test/python/spm_check.py'), path.join(FIXTURE, 'tokenizer.model')], {
      input: JSON.stringify({encode: lines, decode: []}), maxBuffer: 1 << 28, encoding: 'utf8',
    })
    expect(r.status, r.stderr).toBe(0)
    const answer = JSON.parse(r.stdout) as {encode: number[][]; pieces: number}
    expect(answer.pieces).toBe(8192)
    expect(lines.map((l) => tokenizer.encode(l, {addBos: false}))).toEqual(answer.encode)
    expect(tokenizer.bos).toBe(1)
    expect(tokenizer.eos).toBe(2)
  })

  it('predicts held-out English far better than a unigram model fitted on its training text', async () => {
    // Unigram: add-one counts over the training stream, scored on the same held-out targets.
    const counts = new Float64Array(tokenizer.vocabSize).fill(1)
    let total = tokenizer.vocabSize
    for (const id of stream(trainingDocuments())) {
      counts[id]!++
      total++
    }
    let modelNll = 0
    let unigramNll = 0
    let top1 = 0
    let mostFrequent = 0
    const argmaxCount = counts.indexOf(Math.max(...counts))
    let predictions = 0
    for (let w = 0; w < WINDOWS; w++) {
      const tokens = heldout.slice(w * WINDOW, (w + 1) * WINDOW + 1).slice(0, WINDOW)
      const {logits, vocab} = await runForward(model, tokens)
      modelNll += Math.log(perplexity(logits, tokens, vocab)) * (tokens.length - 1)
      for (let t = 0; t < tokens.length - 1; t++) {
        const next = tokens[t + 1]!
        unigramNll -= Math.log(counts[next]! / total)
        let best = 0
        for (let i = 1; i < vocab; i++) if (logits[t * vocab + i]! > logits[t * vocab + best]!) best = i
        if (best === next) top1++
        if (next === argmaxCount) mostFrequent++
        predictions++
      }
    }
    const ppl = Math.exp(modelNll / predictions)
    const unigram = Math.exp(unigramNll / predictions)
    expect(ppl).toBeLessThan(unigram / 3)
    expect(top1 / predictions).toBeGreaterThan(2 * (mostFrequent / predictions))
    expect(top1 / predictions).toBeGreaterThan(0.15)
  })

  it('records how it was made (train.json) and the numbers agree with a held-out perplexity far below unigram', async () => {
    const train = JSON.parse(await fs.readFile(path.join(FIXTURE, 'train.json'), 'utf8')) as Record<string, number>
    expect(train.heldout_perplexity).toBeLessThan(train.unigram_perplexity! / 3)
    expect(train.heldout_tokens).toBe(heldout.length)
  })
})
