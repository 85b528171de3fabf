/**
 * transformers.js (`@huggingface/transformers`, local files only) loads `model_quantized.onnx`
 * through config.json's `transformers.js_config.dtype = "q8"` and generates greedily what the TS
 * engine generates on the dequantized weights: exactly with onnxruntime's graph optimizations off
 * (random tiny model), and at its default optimizations (int8 activations) on the trained fixture.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {env} from '@huggingface/transformers'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {type Checkpoint} from '../src/formats/types.js'
import {readOnnx, writeOnnx} from '../src/formats/onnx/index.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {engineGreedy, tjsGreedy} from './helpers/greedy.js'

const NEW_TOKENS = 16
const Q8 = {quantization: {bits: 8, groupSize: 64, mode: 'affine' as const}}
let root: string

async function exportAndGreedy(name: string, source: Checkpoint, prompt: number[]): Promise<number[]> {
  await drain(writeOnnx(source, path.join(root, name), Q8))
  const back = await readOnnx(path.join(root, name))
  try {
    return await engineGreedy(back, prompt, NEW_TOKENS)
  } finally {
    await back.close()
  }
}

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-onnx-q8-tjs-'))
  env.allowRemoteModels = false
  env.allowLocalModels = true
  env.localModelPath = root
})

afterAll(async () => {
  await fs.rm(root, {recursive: true, force: true})
})

describe('transformers.js q8 (model_quantized.onnx)', () => {
  it('random tiny model, graph optimizations off: 16 greedy tokens equal the TS engine on the dequantized weights', async () => {
    const prompt = [1, 17, 42, 99, 5]
    const want = await exportAndGreedy('tiny', synthCheckpoint(presetConfig('tiny'), {seed: 5, dtype: 'F32'}), prompt)
    expect(want).toHaveLength(prompt.length + NEW_TOKENS)
    expect(await tjsGreedy('tiny', prompt, NEW_TOKENS, {optimizations: false})).toEqual(want)
  }, 60_000)

  it('trained fixture, default optimizations (int8 activations): 16 greedy tokens equal', async () => {
    const source = await openCheckpoint(path.join(import.meta.dirname, '..', 'fixtures', 'trained'))
    const prompt = [1, 337, 2323, 4144, 776, 8142, 504, 418, 1433, 600, 263] // BOS + "The quick brown fox jumps over the" (fixture tokenizer)
    const want = await exportAndGreedy('trained', source, prompt)
    await source.close()
    expect(want.length).toBeGreaterThan(prompt.length + 8)
    expect(await tjsGreedy('trained', prompt, NEW_TOKENS)).toEqual(want)
  }, 60_000)
})
