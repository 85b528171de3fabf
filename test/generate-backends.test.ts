/**
 * `openelm generate` end to end: the same greedy tokens from the TS engine, the PyTorch reference,
 * onnxruntime (our ONNX export, through its past_key_values cache) and llama.cpp (our GGUF), on
 * the tiny fixture and on a synth model of the same shape, both f32 and converted here; EOS stops
 * generation; seeded sampling repeats; the CLI streams text and refuses what it cannot run.
 */
import {spawn} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert, writeCheckpoint} from '../src/convert.js'
import {generate, type GenerateOptions, type GenerateResult} from '../src/generate/index.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {loadTokenizer} from '../src/tokenizer/find.js'

const ROOT = path.resolve(import.meta.dirname, '..')
const DEV = path.join(ROOT, 'bin', 'dev.js')
const TOKENIZER = path.join(ROOT, 'fixtures/tiny-spm/tokenizer.model')
const PROMPT = 'the quick brown fox jumps over'
const MAX = 24
let work: string

/** A model folder (hf) with the tiny tokenizer, and its ONNX and F32 GGUF conversions. */
interface Model {
  hf: string
  onnx: string
  gguf: string
}
const models: Record<string, Model> = {}

async function withConversions(name: string, hf: string): Promise<Model> {
  await fs.copyFile(TOKENIZER, path.join(hf, 'tokenizer.model'))
  const onnx = path.join(work, `${name}-onnx`)
  const gguf = path.join(work, `${name}.gguf`)
  await drain(convert(hf, 'onnx', onnx, {}, {}))
  await drain(convert(hf, 'gguf', gguf, {}, {dtype: 'F32'}))
  return {hf, onnx, gguf}
}

async function run(model: string, options: GenerateOptions): Promise<{result: GenerateResult; chunks: string[]}> {
  const events = generate(model, options)
  const chunks: string[] = []
  for (;;) {
    const step = await events.next()
    if (step.done) return {result: step.value, chunks}
    if (step.value.type !== 'prompt') chunks.push(step.value.text)
  }
}

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-generate-'))
  const fixture = path.join(work, 'fixture')
  await fs.cp(path.join(ROOT, 'fixtures/tiny-hf'), fixture, {recursive: true})
  models.fixture = await withConversions('fixture', fixture)
  const synth = path.join(work, 'synth')
  await drain(writeCheckpoint(synthCheckpoint(presetConfig('tiny'), {seed: 13, dtype: 'F32'}), 'hf', synth, {}))
  models.synth = await withConversions('synth', synth)
}, 120_000)
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe.each(['fixture', 'synth'])('greedy tokens agree across backends (%s, f32)', (name) => {
  it('ts, torch, onnxruntime and llama.cpp generate the same ids and text', async () => {
    const m = models[name]!
    const ts = await run(m.hf, {prompt: PROMPT, maxTokens: MAX})
    const torch = await run(m.hf, {prompt: PROMPT, maxTokens: MAX, backend: 'torch', device: 'cpu'})
    const ort = await run(m.onnx, {prompt: PROMPT, maxTokens: MAX, backend: 'onnxruntime'})
    const llama = await run(m.gguf, {prompt: PROMPT, maxTokens: MAX, backend: 'llama.cpp', threads: 1})
    const tokenizer = await loadTokenizer(TOKENIZER)
    expect(ts.result.prompt.ids).toEqual(tokenizer.encode(PROMPT, {addBos: true}))
    expect(ts.result.prompt.ids[0]).toBe(1)
    expect(ts.result.generated.ids).toHaveLength(MAX)
    // Not one token repeated: the agreement covers a changing sequence.
    expect(new Set(ts.result.generated.ids).size).toBeGreaterThanOrEqual(3)
    expect(ts.result.finishReason).toBe('length')
    // The text streamed is the decoding of the generated ids after the prompt.
    expect(ts.chunks.join('')).toBe(ts.result.generated.text)
    const all = tokenizer.decode([...ts.result.prompt.ids, ...ts.result.generated.ids])
    expect(all).toBe(tokenizer.decode(ts.result.prompt.ids) + ts.result.generated.text)
    for (const other of [torch, ort, llama]) {
      expect(other.result.prompt.ids, other.result.backend).toEqual(ts.result.prompt.ids)
      expect(other.result.generated.ids, other.result.backend).toEqual(ts.result.generated.ids)
      expect(other.result.generated.text, other.result.backend).toBe(ts.result.generated.text)
    }
    expect([ts, torch, ort, llama].map((r) => [r.result.backend, r.result.device])).toEqual([['ts', 'cpu'], ['torch', 'cpu'], ['onnxruntime', 'cpu'], ['llama.cpp', 'cpu']])
    for (const r of [ts, torch, ort, llama]) {
      expect(r.result.timing.decodeSteps).toBe(MAX - 1)
      expect(r.result.timing.tokensPerSecond).toBeGreaterThan(0)
    }
  }, 120_000)
})

describe('stopping and sampling', () => {
  it('stops at EOS (the config\'s eos_token_id when there is no tokenizer)', async () => {
    const m = models.fixture!
    const greedy = await run(m.hf, {tokens: [1, 5, 9, 17], maxTokens: 12})
    const ids = greedy.result.generated.ids
    // Make the 4th greedy token this model's EOS: generation must end there.
    const eos = ids[3]!
    expect(ids.indexOf(eos)).toBe(3)
    const folder = path.join(work, 'eos')
    await fs.mkdir(folder)
    const config = JSON.parse(await fs.readFile(path.join(m.hf, 'config.json'), 'utf8')) as Record<string, unknown>
    await fs.writeFile(path.join(folder, 'config.json'), JSON.stringify({...config, eos_token_id: eos}))
    await fs.copyFile(path.join(m.hf, 'model.safetensors'), path.join(folder, 'model.safetensors'))
    const stopped = await run(folder, {tokens: [1, 5, 9, 17], maxTokens: 12})
    expect(stopped.result.generated.ids).toEqual(ids.slice(0, 4))
    expect(stopped.result.finishReason).toBe('eos')
    expect(stopped.result.tokenizer).toBeNull()
  })

  it('sampling with a seed repeats on every run and differs from greedy', async () => {
    const m = models.synth!
    const options = {prompt: PROMPT, maxTokens: 16, temperature: 1.5, topP: 0.95, seed: 42}
    const a = await run(m.hf, options)
    const b = await run(m.hf, options)
    const other = await run(m.hf, {...options, seed: 43})
    const greedy = await run(m.hf, {prompt: PROMPT, maxTokens: 16})
    expect(a.result.generated.ids).toEqual(b.result.generated.ids)
    expect(a.result.generated.ids).not.toEqual(other.result.generated.ids)
    expect(a.result.generated.ids).not.toEqual(greedy.result.generated.ids)
    expect(a.result.sampling).toEqual({greedy: false, temperature: 1.5, topP: 0.95, seed: 42})
  })

  it('never picks an id past the tokenizer\'s pieces (padding rows of a larger embedding)', async () => {
    // 200 embedding rows, 128 pieces: near-flat random logits would pick a padding row ~1 time in 3.
    const folder = path.join(work, 'padded')
    await drain(writeCheckpoint(synthCheckpoint(presetConfig('tiny', {vocab_size: 200}), {seed: 3, dtype: 'F32'}), 'hf', folder, {}))
    const r = await run(folder, {prompt: PROMPT, maxTokens: 48, temperature: 5, seed: 1, tokenizer: TOKENIZER})
    expect(r.result.generated.ids).toHaveLength(48)
    expect(Math.max(...r.result.generated.ids)).toBeLessThan(128)
    expect(new Set(r.result.generated.ids).size).toBeGreaterThan(20)
  })

  it('stops at the model\'s context length', async () => {
    // tiny's max_context_length is 128: a 120-token prompt leaves room for 8 more positions.
    const tokens = [1, ...Array.from({length: 119}, (_, i) => 3 + (i % 100))]
    const r = await run(models.fixture!.hf, {tokens, maxTokens: 64})
    expect(r.result.generated.ids).toHaveLength(9)
    expect(r.result.finishReason).toBe('context')
  })
})

interface Cli {
  code: number | null
  stdout: string
  stderr: string
}

function cli(args: string[]): Promise<Cli> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [DEV, ...args], {cwd: work, env: {...process.env, NO_COLOR: '1', OPENELM_DEBUG: ''}})
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('close', (code) => resolve({code, stdout, stderr}))
  })
}

function expectRefusal(r: Cli, pattern: RegExp): void {
  expect(r.code, r.stderr).toBe(2)
  const lines = r.stderr.trim().split('\n')
  expect(lines, r.stderr).toHaveLength(1)
  expect(lines[0]).toMatch(/^Error: /)
  expect(lines[0]).toMatch(pattern)
  expect(r.stdout).toBe('')
}

describe('the CLI', () => {
  it('streams the prompt and the generated text, then tokens/s; --json has ids, text, timing, backend', async () => {
    const m = models.fixture!
    const expected = await run(m.hf, {prompt: PROMPT, maxTokens: 8})
    const text = await cli(['generate', m.hf, '--prompt', PROMPT, '--max-tokens', '8'])
    expect(text.code, text.stderr).toBe(0)
    expect(text.stdout).toBe(`${PROMPT}${expected.result.generated.text}\n`)
    expect(text.stderr).toMatch(/^8 tokens \(length\) in [\d.]+ s, [\d.]+ tokens\/s; prompt \d+ tokens at [\d.]+ tokens\/s; ts on cpu\n$/)
    const json = await cli(['generate', m.gguf, '--backend', 'llama.cpp', '--threads', '1', '--prompt', PROMPT, '--max-tokens', '8', '--json'])
    expect(json.code, json.stderr).toBe(0)
    const parsed = JSON.parse(json.stdout) as GenerateResult
    expect(parsed.backend).toBe('llama.cpp')
    expect(parsed.device).toBe('cpu')
    expect(parsed.prompt.ids).toEqual(expected.result.prompt.ids)
    expect(parsed.generated.ids).toEqual(expected.result.generated.ids)
    expect(parsed.generated.text).toBe(expected.result.generated.text)
    expect(parsed.timing.totalSeconds).toBeGreaterThan(0)
  }, 60_000)

  it('refuses a backend that cannot run the format, cuda on ts, and bad flags, with one line and exit 2', async () => {
    const m = models.fixture!
    expectRefusal(await cli(['generate', m.hf, '--backend', 'onnxruntime', '--prompt', 'a']), /--backend onnxruntime runs onnx models; .* is hf/)
    expectRefusal(await cli(['generate', m.onnx, '--backend', 'llama.cpp', '--prompt', 'a']), /--backend llama.cpp runs gguf models; .* is onnx/)
    expectRefusal(await cli(['generate', m.hf, '--device', 'cuda', '--prompt', 'a']), /ts engine runs on the CPU only/)
    expectRefusal(await cli(['generate', m.hf, '--prompt', 'a', '--top-p', '0.5']), /--top-p applies to sampling/)
    expectRefusal(await cli(['generate', path.join(ROOT, 'fixtures/tiny-hf'), '--prompt', 'a']), /no tokenizer for .*: pass --tokenizer PATH/)
    // A backend that cannot start: one line, its own exit code, and nothing on stdout (not even the prompt).
    const noPython = await cli(['generate', m.hf, '--backend', 'torch', '--python', path.join(work, 'no-python'), '--prompt', 'a'])
    expect(noPython.code, noPython.stderr).toBe(7)
    expect(noPython.stderr.trim().split('\n')).toHaveLength(1)
    expect(noPython.stdout).toBe('')
  }, 60_000)
})
