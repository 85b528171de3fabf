/**
 * transformers.js (`@huggingface/transformers`, remote models off) loads exported folders from disk
 * and greedy generation of 16 tokens from a prompt of token ids equals greedy decoding with the
 * TS reference engine — for f32, f16 (picked through config.json's transformers.js_config.dtype)
 * and external data; a broken export (swapped RoPE halves) gives other tokens.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {AutoModelForCausalLM, env, Tensor} from '@huggingface/transformers'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {type Checkpoint, type WriteOptions} from '../src/formats/types.js'
import {readOnnx, writeOnnx, type OnnxWriteExtra} from '../src/formats/onnx/index.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {runForward} from '../src/verify/engine/index.js'

const config = presetConfig('tiny')
const NEW_TOKENS = 16
const PROMPT = [1, 17, 42, 99, 5]
let root: string
let source: Checkpoint

async function exportTo(name: string, options: WriteOptions & OnnxWriteExtra): Promise<string> {
  const out = path.join(root, name)
  const gen = writeOnnx(source, out, options)
  while (!(await gen.next()).done);
  return name
}

/** Greedy decoding with the TS engine (full recompute each step), stopping at EOS as generate() does. */
const memo = new Map<string, number[]>()
async function tsGreedy(checkpoint: Checkpoint, prompt: number[], steps: number): Promise<number[]> {
  const key = `${checkpoint.path}|${checkpoint.extras.dtype}|${prompt.join(',')}|${steps}`
  if (!memo.has(key)) memo.set(key, await greedyUncached(checkpoint, prompt, steps))
  return memo.get(key)!
}

async function greedyUncached(checkpoint: Checkpoint, prompt: number[], steps: number): Promise<number[]> {
  const tokens = [...prompt]
  for (let s = 0; s < steps; s++) {
    const {logits, vocab} = await runForward(checkpoint, tokens)
    const row = (tokens.length - 1) * vocab
    let best = 0
    for (let i = 1; i < vocab; i++) if (logits[row + i] > logits[row + best]) best = i
    tokens.push(best)
    if (best === config.eos_token_id) break
  }
  return tokens
}

async function tjsGreedy(name: string, prompt: number[]): Promise<number[]> {
  const model = await AutoModelForCausalLM.from_pretrained(name, {local_files_only: true})
  try {
    const ids = new Tensor('int64', BigInt64Array.from(prompt.map(BigInt)), [1, prompt.length])
    const mask = new Tensor('int64', BigInt64Array.from(prompt.map(() => 1n)), [1, prompt.length])
    const out = (await model.generate({input_ids: ids, attention_mask: mask, max_new_tokens: NEW_TOKENS, do_sample: false})) as Tensor
    return Array.from(out.data as BigInt64Array, Number)
  } finally {
    await model.dispose()
  }
}

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-onnx-tjs-'))
  // Seed chosen so the greedy continuation does not hit EOS early (all 16 tokens are compared).
  source = synthCheckpoint(config, {seed: 5, dtype: 'F32'})
  env.allowRemoteModels = false
  env.allowLocalModels = true
  env.localModelPath = root
}, 60_000)

afterAll(async () => {
  await fs.rm(root, {recursive: true, force: true})
})

describe('transformers.js loads the export and generates what the TS engine generates', () => {
  it('f32: 16 greedy tokens equal', async () => {
    const want = await tsGreedy(source, PROMPT, NEW_TOKENS)
    expect(want).toHaveLength(PROMPT.length + NEW_TOKENS)
    expect(await tjsGreedy(await exportTo('f32', {}), PROMPT)).toEqual(want)
  }, 60_000)

  it('a left-padded batch of two: each row generates what the TS engine generates for it alone', async () => {
    const name = await exportTo('batch', {})
    const rowA = PROMPT
    const rowB = [1, 30, 7]
    const pad = rowA.length - rowB.length
    const model = await AutoModelForCausalLM.from_pretrained(name, {local_files_only: true})
    try {
      const ids = new Tensor('int64', BigInt64Array.from([...rowA, ...Array(pad).fill(0), ...rowB].map(BigInt)), [2, rowA.length])
      const mask = new Tensor('int64', BigInt64Array.from([...rowA.map(() => 1), ...Array(pad).fill(0), ...rowB.map(() => 1)].map(BigInt)), [2, rowA.length])
      const out = (await model.generate({input_ids: ids, attention_mask: mask, max_new_tokens: NEW_TOKENS, do_sample: false})) as Tensor
      const width = out.dims[1]
      const rows = [0, 1].map((r) => Array.from((out.data as BigInt64Array).slice(r * width, (r + 1) * width), Number))
      const wantB = await tsGreedy(source, rowB, NEW_TOKENS)
      expect(rows[0]).toEqual(await tsGreedy(source, rowA, NEW_TOKENS))
      expect(rows[1].slice(pad, pad + wantB.length)).toEqual(wantB)
      expect(wantB.length).toBeGreaterThan(rowB.length + 8)
    } finally {
      await model.dispose()
    }
  }, 60_000)

  it('f16 (model_fp16.onnx chosen by config.json): equal to the TS engine on the f16 weights', async () => {
    const name = await exportTo('f16', {dtype: 'F16'})
    const f16 = await readOnnx(path.join(root, name))
    const want = await tsGreedy(f16, PROMPT, NEW_TOKENS)
    await f16.close()
    expect(await tjsGreedy(name, PROMPT)).toEqual(want)
  }, 60_000)

  it('external data (use_external_data_format): equal', async () => {
    const want = await tsGreedy(source, PROMPT, NEW_TOKENS)
    expect(await tjsGreedy(await exportTo('external', {layout: 'external-data'}), PROMPT)).toEqual(want)
  }, 60_000)

  it('a broken export (swapped RoPE halves) generates different tokens', async () => {
    const want = await tsGreedy(source, PROMPT, NEW_TOKENS)
    const got = await tjsGreedy(await exportTo('rope-swapped', {sabotage: {swapRopeHalves: true}}), PROMPT)
    expect(got.slice(0, PROMPT.length)).toEqual(PROMPT)
    expect(got).not.toEqual(want)
  }, 60_000)
})
