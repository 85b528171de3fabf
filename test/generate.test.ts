/**
 * `generate` pieces: the engine's KV-cache session against full forward passes, the sampler
 * (greedy ties, seeded reproducibility, temperature and top-p), and streamed SentencePiece text.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {AutoTokenizer, env} from '@huggingface/transformers'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {openCheckpoint} from '../src/formats/registry.js'
import {type Checkpoint} from '../src/formats/types.js'
import {argmax, Sampler, seededRandom, StreamDecoder} from '../src/generate/index.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {encodeWithSpecials} from '../src/generate/special.js'
import {hfTokenizerFiles} from '../src/tokenizer/files.js'
import {llama2Tokenizer} from '../src/tokenizer/llama2.js'
import {type Tokenizer} from '../src/tokenizer/tokenizer.js'
import {runForward} from '../src/verify/engine/index.js'
import {EngineSession} from '../src/verify/engine/session.js'

const ROOT = path.resolve(import.meta.dirname, '..')

/** max |a - b| / max(1, max |a|). */
function relDiff(a: Float32Array, b: Float32Array): number {
  expect(b.length).toBe(a.length)
  let diff = 0
  let scale = 1
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!))
    scale = Math.max(scale, Math.abs(a[i]!))
  }
  return diff / scale
}

describe('engine session (KV cache)', () => {
  let fixture: Checkpoint
  beforeAll(async () => {
    fixture = await openCheckpoint(path.join(ROOT, 'fixtures/tiny-hf'))
  })
  afterAll(async () => {
    await fixture.close()
  })

  /**
   * Greedy decoding one token per step through the cache; at every step the full forward pass of
   * the whole sequence so far must give the same last-position logits (to f32 summation order)
   * and the same argmax.
   */
  async function checkAgainstFull(checkpoint: Checkpoint, prompt: number[], steps: number): Promise<number[]> {
    const session = await EngineSession.open(checkpoint, {capacity: prompt.length + steps, threads: 0})
    try {
      const sequence = [...prompt]
      let logits = await session.append(prompt)
      const generated: number[] = []
      for (let step = 0; step < steps; step++) {
        const full = await runForward(checkpoint, sequence, {threads: 0})
        const vocab = full.vocab
        const last = full.logits.slice((sequence.length - 1) * vocab)
        expect(relDiff(last, logits), `step ${step}`).toBeLessThan(1e-5)
        const next = argmax(logits)
        expect(next, `step ${step}`).toBe(argmax(last))
        generated.push(next)
        sequence.push(next)
        logits = await session.append([next])
      }
      expect(session.position).toBe(prompt.length + steps)
      return generated
    } finally {
      await session.close()
    }
  }

  it('tiny fixture: decode step by step equals a full forward at every step', async () => {
    const generated = await checkAgainstFull(fixture, [1, 5, 9, 17, 33, 65], 24)
    // Not a stuck loop on one token: the check covers changing inputs.
    expect(new Set(generated).size).toBeGreaterThan(1)
  })

  it('synth model of another shape (micro, bf16 weights): same', async () => {
    const synth = synthCheckpoint(presetConfig('micro'), {seed: 11, dtype: 'BF16'})
    await checkAgainstFull(synth, [1, 40, 2, 17], 20)
  })

  it('a prefill of the whole sequence gives the full forward pass at every position', async () => {
    const tokens = [1, 100, 28, 101, 100, 126, 116, 39, 125]
    const session = await EngineSession.open(fixture, {threads: 0})
    const full = await runForward(fixture, tokens, {threads: 0})
    const all = await session.append(tokens.slice(0, 4), {all: true})
    const rest = await session.append(tokens.slice(4), {all: true})
    await session.close()
    const joined = new Float32Array(all.length + rest.length)
    joined.set(all)
    joined.set(rest, all.length)
    expect(relDiff(full.logits, joined)).toBeLessThan(1e-5)
  })

  it('weights read from the file at every step give the same logits as weights held in memory', async () => {
    const tokens = [1, 5, 9, 17, 33]
    const logits: Float32Array[] = []
    for (const resident of [true, false]) {
      const session = await EngineSession.open(fixture, {threads: 0, resident})
      expect(session.resident).toBe(resident)
      logits.push(await session.append(tokens.slice(0, 4)), await session.append(tokens.slice(4)))
      await session.close()
    }
    expect(logits[2]).toEqual(logits[0])
    expect(logits[3]).toEqual(logits[1])
  })

  it('refuses positions past its capacity and ids outside the vocabulary', async () => {
    const session = await EngineSession.open(fixture, {capacity: 3, threads: 0})
    try {
      await expect(session.append([1, 2, 3, 4])).rejects.toThrow(/4 positions do not fit the session's 3/)
      await expect(session.append([1, 128])).rejects.toThrow(/ids must be integers in \[0, 128\)/)
      await session.append([1, 2, 3])
      await expect(session.append([4])).rejects.toThrow(/do not fit/)
    } finally {
      await session.close()
    }
  })
})

describe('sampler', () => {
  it('greedy is the argmax, the lowest id on a tie', () => {
    expect(argmax([0.1, 3, -2, 3])).toBe(1)
    expect(new Sampler().next(Float32Array.from([0, 0, 5, 5, 1]))).toBe(2)
  })

  it('a seed gives the same tokens on every run, another seed other tokens', () => {
    const logits = Float32Array.from({length: 50}, (_, i) => Math.sin(i * 1.7))
    const draw = (seed: number) => {
      const s = new Sampler({temperature: 1, topP: 0.9, seed})
      return Array.from({length: 40}, () => s.next(logits))
    }
    expect(draw(7)).toEqual(draw(7))
    expect(draw(7)).not.toEqual(draw(8))
    // The generator itself: fixed values for a fixed seed (mulberry32).
    const r = seededRandom(1)
    const values = [r(), r(), r()]
    expect(values.every((v) => v >= 0 && v < 1)).toBe(true)
    const again = seededRandom(1)
    expect([again(), again(), again()]).toEqual(values)
  })

  it('draws tokens with softmax(logits / T) frequencies', () => {
    const probs = [0.5, 0.3, 0.15, 0.05]
    const temperature = 0.7
    // logits whose softmax at this temperature is `probs`
    const logits = Float32Array.from(probs, (p) => temperature * Math.log(p))
    const s = new Sampler({temperature, seed: 3})
    const counts = [0, 0, 0, 0]
    const n = 20000
    for (let i = 0; i < n; i++) counts[s.next(logits)]!++
    counts.forEach((c, i) => expect(Math.abs(c / n - probs[i]!)).toBeLessThan(0.015))
  })

  it('top-p keeps the smallest most-likely set reaching p', () => {
    const logits = Float32Array.from([0.5, 0.3, 0.15, 0.05].map(Math.log))
    const s = new Sampler({temperature: 1, topP: 0.75, seed: 9})
    const seen = new Set<number>()
    for (let i = 0; i < 2000; i++) seen.add(s.next(logits))
    // 0.5 < 0.75 ≤ 0.5 + 0.3: tokens 0 and 1 only.
    expect([...seen].sort()).toEqual([0, 1])
    const narrow = new Sampler({temperature: 1, topP: 0.01, seed: 9})
    for (let i = 0; i < 100; i++) expect(narrow.next(logits)).toBe(0)
  })

  it('refuses bad values', () => {
    expect(() => new Sampler({temperature: -1})).toThrow(/--temperature must be a number ≥ 0/)
    expect(() => new Sampler({temperature: 1, topP: 0})).toThrow(/--top-p must be in \(0, 1\]/)
    expect(() => new Sampler({topP: 1.5})).toThrow(/--top-p/)
    expect(() => new Sampler({seed: 1.5})).toThrow(/--seed/)
  })
})

describe('streamed text', () => {
  let llama: Tokenizer
  beforeAll(async () => {
    llama = await llama2Tokenizer()
  })

  /** Feed `generated` one id at a time; the chunks must join to decode(prompt + generated) minus decode(prompt). */
  function streamed(prompt: number[], generated: number[]): string[] {
    const stream = new StreamDecoder(llama, prompt)
    const chunks = generated.map((id) => stream.push(id))
    chunks.push(stream.flush())
    const whole = llama.decode([...prompt, ...generated])
    const before = llama.decode(prompt)
    expect(whole.startsWith(before)).toBe(true)
    expect(chunks.join('')).toBe(whole.slice(before.length))
    return chunks
  }

  it('"▁" is a space between tokens, and the prompt\'s text is not repeated', () => {
    const prompt = llama.encode('Hello', {addBos: true})
    expect(prompt).toEqual([1, 15043])
    const chunks = streamed(prompt, llama.encode('world, again', {addBos: false}))
    expect(chunks[0]).toBe(' world')
  })

  it('after BOS alone the first piece loses its dummy-prefix space, as SentencePiece decodes', () => {
    const chunks = streamed([1], [15043, 3186])
    expect(chunks.slice(0, 2)).toEqual(['Hello', ' world'])
  })

  it('byte-fallback pieces are joined into UTF-8; a character is held back until its last byte', () => {
    // "🦙" has no piece: four byte pieces <0xF0><0x9F><0xA6><0x99>.
    const ids = llama.encode('a 🦙 and 猫 and é', {addBos: false})
    const bytePieces = ids.filter((id) => /^<0x[0-9A-F]{2}>$/.test(llama.pieceOf(id)))
    expect(bytePieces.length).toBeGreaterThanOrEqual(4)
    const chunks = streamed([1], ids)
    expect(chunks.join('')).toBe('a 🦙 and 猫 and é')
    expect(chunks.some((c) => c.includes('\ufffd'))).toBe(false)
    const first = ids.findIndex((id) => llama.pieceOf(id) === '<0xF0>')
    expect(chunks.slice(first, first + 3)).toEqual(['', '', ''])
    expect(chunks[first + 3]).toBe('🦙')
  })

  it('an unfinished or invalid byte sequence decodes as SentencePiece does (U+FFFD per byte)', () => {
    const byte = (b: number) => 3 + b
    // <0xE2><0x82> then a word: the character never completes.
    const chunks = streamed([1, 15043], [byte(0xe2), byte(0x82), 3186])
    expect(chunks).toEqual(['', '', '\ufffd\ufffd world', ''])
    // cut off at the end: flush gives what was held back
    const cut = streamed([1], [byte(0x41), byte(0xc3)])
    expect(cut).toEqual(['A', '', '\ufffd'])
    // a stray continuation byte is invalid at once
    expect(streamed([1], [byte(0xa9)])[0]).toBe('\ufffd')
  })

  it('control pieces (EOS) add no text', () => {
    expect(streamed([1, 15043], [3186, 2])).toEqual([' world', '', ''])
  })
})

describe('special tokens written in text (chat templates)', () => {
  it('encode as Hugging Face tokenizers do without add_special_tokens (transformers.js on our tokenizer.json)', async () => {
    const llama = await llama2Tokenizer()
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-special-'))
    try {
      const dir = path.join(root, 'llama2')
      await fs.mkdir(dir)
      for (const [name, bytes] of Object.entries(hfTokenizerFiles(llama.model, {withModel: false}))) await fs.writeFile(path.join(dir, name), bytes)
      env.allowRemoteModels = false
      env.localModelPath = root + path.sep
      const tok = await AutoTokenizer.from_pretrained('llama2')
      const texts = [
        '<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHi there</s>\n<|assistant|>\n',
        '<s>Hello</s>world',
        'a</s> b<unk>c',
        '<s> <|user|>\n 🦙 x</s>\n',
        'no specials at all',
      ]
      for (const text of texts) expect(encodeWithSpecials(llama, text), text).toEqual(tok.encode(text, {add_special_tokens: false}))
      expect(encodeWithSpecials(llama, '<s>Hello</s>world')).toEqual([1, 15043, 2, 3186])
      // Plain encode keeps SentencePiece's reading: "</s>" is ordinary text there.
      expect(llama.encode('a</s>', {addBos: false})).not.toContain(2)
    } finally {
      await fs.rm(root, {recursive: true, force: true})
    }
  })
})
