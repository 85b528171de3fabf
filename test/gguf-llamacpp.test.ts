/**
 * llama.cpp (node-llama-cpp's CPU build) loads our GGUF files of the tiny fixture and runs them:
 * F16 gives the TS engine's greedy tokens; Q8_0 passes the 8-bit thresholds of DESIGN §5
 * (top-1 agreement ≥ 0.99, mean KL ≤ 1e-3) against the engine on the source weights.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {llamacppBackend, llamacppContextSize} from '../src/verify/backends/llamacpp.js'
import {runForward} from '../src/verify/engine/index.js'
import {compareLogits as verifyMetrics} from '../src/verify/compare.js'
import {DEFAULT_PROMPT_LENGTH, promptTokens} from '../src/verify/index.js'
import {compareLogits} from './helpers/logits.js'
import {drain} from '../src/progress.js'

const repo = path.resolve(import.meta.dirname, '..')
let work: string
let source: string
/** A token-id prompt: BOS then ids spread over the 128-token vocabulary. */
const PROMPT = [1, 5, 9, 17, 33, 65, 100, 3, 44, 120, 7, 7, 90, 12, 127, 64]

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'gguf-llama-'))
  source = path.join(work, 'tiny')
  await fs.cp(path.join(repo, 'fixtures/tiny-hf'), source, {recursive: true})
  await fs.copyFile(path.join(repo, 'fixtures/tiny-spm/tokenizer.model'), path.join(source, 'tokenizer.model'))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe('llama.cpp runs our GGUF files', () => {
  it('F16: greedy tokens equal the TS engine on the source and on the GGUF', async () => {
    const out = path.join(work, 'tiny-f16.gguf')
    await drain(convert(source, 'gguf', out, {}, {dtype: 'F16'}))
    const src = await openCheckpoint(source)
    const gguf = await openCheckpoint(out)
    const reference = await runForward(src, PROMPT)
    const engineOnGguf = await runForward(gguf, PROMPT)
    const llama = await llamacppBackend.run({path: out, checkpoint: gguf}, PROMPT, {})
    await src.close()
    await gguf.close()
    expect(llama.vocab).toBe(128)
    expect(llama.logits.length).toBe(PROMPT.length * 128)
    const vsSource = compareLogits(reference.logits, llama.logits, 128)
    const vsGguf = compareLogits(engineOnGguf.logits, llama.logits, 128)
    expect(vsSource.greedyB).toEqual(vsSource.greedyA)
    expect(vsGguf.greedyB).toEqual(vsGguf.greedyA)
    expect(vsSource.top1).toBe(1)
    expect(vsSource.meanKl).toBeLessThan(1e-3)
    // f16 weights and llama.cpp's f16 activations: logits agree to a few hundredths.
    expect(vsGguf.maxAbs).toBeLessThan(0.05)
    expect(vsSource.cosineMin).toBeGreaterThan(0.9999)
  })

  it('Q8_0: top-1 agreement ≥ 0.99 and mean KL ≤ 1e-3 against the source', async () => {
    const out = path.join(work, 'tiny-q8_0.gguf')
    await drain(convert(source, 'gguf', out, {}, {dtype: 'F16', quantization: {bits: 8, groupSize: 32, mode: 'q8_0'}}))
    const src = await openCheckpoint(source)
    const gguf = await openCheckpoint(out)
    const reference = await runForward(src, PROMPT)
    const llama = await llamacppBackend.run({path: out, checkpoint: gguf}, PROMPT, {})
    await src.close()
    await gguf.close()
    const m = compareLogits(reference.logits, llama.logits, 128)
    expect(m.top1).toBeGreaterThanOrEqual(0.99)
    expect(m.meanKl).toBeLessThanOrEqual(1e-3)
    expect(m.greedyB).toEqual(m.greedyA)
  })

  it('Q8_0: llama.cpp runs the same weights our reader dequantizes (F32 copy agrees to f32 rounding)', async () => {
    const q8 = path.join(work, 'tiny-q8_0.gguf')
    const asF32 = path.join(work, 'tiny-q8_0-as-f32.gguf')
    await drain(convert(q8, 'gguf', asF32, {}, {dtype: 'F32'}))
    const q = await openCheckpoint(q8)
    const f = await openCheckpoint(asF32)
    const engine = await runForward(q, PROMPT)
    const onQ8 = await llamacppBackend.run({path: q8, checkpoint: q}, PROMPT, {})
    const onF32 = await llamacppBackend.run({path: asF32, checkpoint: f}, PROMPT, {})
    await q.close()
    await f.close()
    // Same weights in F32: llama.cpp and the engine agree closely.
    const exact = compareLogits(engine.logits, onF32.logits, 128)
    expect(exact.meanKl).toBeLessThan(1e-5)
    expect(exact.maxAbs).toBeLessThan(1e-4)
    // The Q8_0 file: what is left is llama.cpp rounding activations to Q8_0 in its matmuls.
    const runtime = compareLogits(engine.logits, onQ8.logits, 128)
    expect(runtime.greedyB).toEqual(runtime.greedyA)
    expect(runtime.meanKl).toBeLessThan(1e-3)
  })

  it('loads a file with the placeholder vocabulary (no tokenizer next to the source)', async () => {
    const out = path.join(work, 'placeholder.gguf')
    await drain(convert(path.join(repo, 'fixtures/tiny-hf'), 'gguf', out, {}, {dtype: 'F32'}))
    const gguf = await openCheckpoint(out)
    const reference = await runForward(gguf, PROMPT)
    const llama = await llamacppBackend.run({path: out, checkpoint: gguf}, PROMPT, {})
    await gguf.close()
    const m = compareLogits(reference.logits, llama.logits, 128)
    expect(m.greedyB).toEqual(m.greedyA)
    expect(m.maxAbs).toBeLessThan(1e-4)
  })

  // node-llama-cpp decodes at most contextSize - 1 tokens before a context shift (erasing history
  // after BOS); with a context exactly as long as the prompt, the last position was evaluated on a
  // truncated history (tiny F16, 32 tokens: that position's KL 0.63, mean KL 0.0197).
  it('a prompt fills no context: llamacppContextSize leaves room for every token', () => {
    expect(llamacppContextSize(1)).toBe(32)
    expect(llamacppContextSize(31)).toBe(32)
    expect(llamacppContextSize(32)).toBe(33)
    expect(llamacppContextSize(128)).toBe(129)
  })

  for (const dtype of ['F16', 'F32'] as const) {
    it(`${dtype}: the default ${DEFAULT_PROMPT_LENGTH}-token prompt and a 128-token one (max_context_length) pass DESIGN §5 on every position`, async () => {
      const out = path.join(work, `tiny-ctx-${dtype}.gguf`)
      await drain(convert(source, 'gguf', out, {}, {dtype}))
      const src = await openCheckpoint(source)
      const gguf = await openCheckpoint(out)
      try {
        for (const length of [DEFAULT_PROMPT_LENGTH, 128]) {
          const tokens = promptTokens(length, 0, 128)
          const reference = await runForward(src, tokens)
          const llama = await llamacppBackend.run({path: out, checkpoint: gguf}, tokens, {})
          // F32 agrees with the engine on the source to 1e-4 (which needs the backend's F32 KV cache
          // and plain attention); F16 agrees on every top-1 (near-ties counted) with mean KL ≤ 1e-3.
          const m = verifyMetrics(reference.logits, llama.logits, length, 128)
          if (dtype === 'F32') expect(m.maxAbs).toBeLessThanOrEqual(1e-4)
          expect(m.top1WithTies).toBeGreaterThanOrEqual(0.99)
          expect(m.meanKl).toBeLessThanOrEqual(1e-3)
          // No position is off (the truncated last position had KL 0.63).
          expect(m.maxKl).toBeLessThan(1e-4)
        }
      } finally {
        await src.close()
        await gguf.close()
      }
    })
  }

  it('runs a non-GGUF checkpoint (the --against reference) on the TS engine', async () => {
    const src = await openCheckpoint(source)
    const viaBackend = await llamacppBackend.run({path: source, checkpoint: src}, PROMPT.slice(0, 4), {})
    const engine = await runForward(src, PROMPT.slice(0, 4))
    await src.close()
    expect([...viaBackend.logits]).toEqual([...engine.logits])
  })
})
