/**
 * The reference forward pass: TS engine vs golden logits from the PyTorch reference, the torch
 * backend (Debian's python3 + torch) vs the TS engine, the metrics, and dependency errors.
 */
import {spawnSync} from 'node:child_process'
import {chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {DependencyError} from '../src/errors.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {openSafetensors} from '../src/formats/safetensors/read.js'
import {type Checkpoint} from '../src/formats/types.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {f32Record, readFloat32} from '../src/tensor/record.js'
import {BACKENDS} from '../src/verify/backends/index.js'
import {compareLogits} from '../src/verify/compare.js'
import {runForward} from '../src/verify/engine/index.js'
import {linear, MatmulPool, matmulThreads} from '../src/verify/engine/matmul.js'
import {requestedThreads} from '../src/pool/index.js'
import {normRopeHead, ropeTables} from '../src/verify/engine/ops.js'
import {promptTokens, verify} from '../src/verify/index.js'

const repo = path.resolve(import.meta.dirname, '..')
const fixture = path.join(repo, 'fixtures/tiny-hf')
const golden = JSON.parse(readFileSync(path.join(repo, 'fixtures/golden/tiny-hf.tokens.json'), 'utf8')) as {tokens: number[]}
let tmp: string
let tiny: Checkpoint

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-verify-'))
  tiny = await openCheckpoint(fixture)
})
afterAll(async () => {
  await tiny.close()
  rmSync(tmp, {recursive: true, force: true})
})

async function goldenLogits(): Promise<Float32Array> {
  const file = await openSafetensors(path.join(repo, 'fixtures/golden/tiny-hf.logits.safetensors'))
  try {
    expect(file.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([['logits', 'F32', [golden.tokens.length, 128]]])
    return await readFloat32(file.tensors[0]!)
  } finally {
    await file.close()
  }
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!))
  return m
}

describe('TS engine', () => {
  it('matches the golden logits of the PyTorch reference within 1e-4 (tiny fixture)', async () => {
    const expected = await goldenLogits()
    const r = await runForward(tiny, golden.tokens)
    expect(r.vocab).toBe(128)
    expect(r.logits.length).toBe(golden.tokens.length * 128)
    const diff = maxAbsDiff(r.logits, expected)
    expect(diff).toBeLessThanOrEqual(1e-4)
    // The logits are far from trivial: a broken engine cannot sneak under the bound.
    expect(Math.max(...expected.map(Math.abs))).toBeGreaterThan(3)
  })

  it('gives the same logits on worker threads and on the main thread, and per-layer hidden states', async () => {
    const tokens = golden.tokens.slice(0, 9)
    const threaded = await runForward(tiny, tokens, {collectHidden: true, threads: 2})
    const single = await runForward(tiny, tokens, {threads: 0})
    expect(maxAbsDiff(threaded.logits, single.logits)).toBe(0)
    expect(threaded.hidden).toHaveLength(4)
    for (const h of threaded.hidden!) expect(h.length).toBe(9 * 64)
    expect(single.hidden).toBeUndefined()
  })

  it.each([true, false])('linear() matches a naive matmul for odd shapes, streamed in blocks over worker threads (simd %s)', async (simd) => {
    const pool = new MatmulPool(2, {simd})
    expect(pool.usesSimd).toBe(simd) // Node 20 has WebAssembly SIMD
    try {
      for (const [T, N, K] of [[1, 7, 5], [6, 13, 9], [9, 4100, 300], [7, 4098, 256], [2, 4, 4]] as const) {
        const x = Float32Array.from({length: T * K}, (_, i) => Math.sin(i * 0.37))
        const w = Float32Array.from({length: N * K}, (_, i) => Math.cos(i * 0.11))
        const y = await linear(pool, x, T, f32Record('w', [N, K], w))
        expect(y.length).toBe(T * N)
        let worst = 0
        for (let t = 0; t < T; t++) {
          for (let n = 0; n < N; n++) {
            let acc = 0
            for (let k = 0; k < K; k++) acc += x[t * K + k]! * w[n * K + k]!
            worst = Math.max(worst, Math.abs(y[t * N + n]! - acc))
          }
        }
        expect(worst).toBeLessThan(1e-4)
      }
    } finally {
      await pool.close()
    }
  })

  it('is causal: logits of a prefix do not depend on later tokens', async () => {
    const a = await runForward(tiny, [1, 7, 9, 11])
    const b = await runForward(tiny, [1, 7, 9, 100, 5])
    expect(maxAbsDiff(a.logits.subarray(0, 3 * 128), b.logits.subarray(0, 3 * 128))).toBeLessThan(1e-6)
    expect(maxAbsDiff(a.logits.subarray(3 * 128, 4 * 128), b.logits.subarray(3 * 128, 4 * 128))).toBeGreaterThan(1e-3)
  })

  it('reads bf16 weights by widening them (same result as the widened f32 copy)', async () => {
    const config = presetConfig('tiny')
    const bf16 = synthCheckpoint(config, {seed: 3, dtype: 'BF16'})
    const widened: Checkpoint = {...bf16, tensors: await Promise.all(bf16.tensors.map(async (t) => {
      return f32Record(t.name, t.shape, await readFloat32(t))
    }))}
    const tokens = [1, 2, 3, 4, 5]
    expect(maxAbsDiff((await runForward(bf16, tokens)).logits, (await runForward(widened, tokens)).logits)).toBe(0)
  })

  it('applies rotate-half RoPE after the q/k norm', () => {
    const hd = 4
    const {cos, sin} = ropeTables(3, hd, 10000)
    // position 2: angles [2, 2·10000^(-1/2)] duplicated
    expect(cos[2 * hd]).toBeCloseTo(Math.cos(2), 6)
    expect(sin[2 * hd + 3]).toBeCloseTo(Math.sin(0.02), 6)
    const v = new Float32Array([1, 2, 3, 4])
    normRopeHead(v, 0, hd, new Float32Array([1, 1, 1, 1]), cos, sin, 2, new Float32Array(hd))
    const s = 1 / Math.sqrt((1 + 4 + 9 + 16) / 4 + 1e-6)
    const [x1, x2, x3, x4] = [1 * s, 2 * s, 3 * s, 4 * s]
    expect(v[0]).toBeCloseTo(x1 * Math.cos(2) - x3 * Math.sin(2), 5)
    expect(v[1]).toBeCloseTo(x2 * Math.cos(0.02) - x4 * Math.sin(0.02), 5)
    expect(v[2]).toBeCloseTo(x3 * Math.cos(2) + x1 * Math.sin(2), 5)
    expect(v[3]).toBeCloseTo(x4 * Math.cos(0.02) + x2 * Math.sin(0.02), 5)
  })

  it('rejects token ids outside the vocabulary', async () => {
    await expect(runForward(tiny, [1, 128])).rejects.toThrow(/token 1 is 128: ids must be integers in \[0, 128\)/)
    await expect(runForward(tiny, [])).rejects.toThrow(/no tokens/)
  })
})

describe('torch backend (Debian python3 + torch, CPU)', () => {
  it('matches the TS engine, logits and every layer', async () => {
    const tokens = golden.tokens
    const ts = await BACKENDS.ts!.run({path: fixture, checkpoint: tiny}, tokens, {collectHidden: true})
    const torch = await BACKENDS.torch!.run({path: fixture, checkpoint: tiny}, tokens, {device: 'cpu', collectHidden: true})
    expect(torch.vocab).toBe(128)
    expect(maxAbsDiff(ts.logits, torch.logits)).toBeLessThanOrEqual(1e-4)
    expect(torch.hidden).toHaveLength(4)
    for (let i = 0; i < 4; i++) expect(maxAbsDiff(ts.hidden![i]!, torch.hidden![i]!)).toBeLessThanOrEqual(1e-4)
    // and the golden file came from this reference
    expect(maxAbsDiff(torch.logits, await goldenLogits())).toBeLessThanOrEqual(1e-5)
  })

  it('verify --backend torch compares two models end to end', async () => {
    const report = await verify(fixture, {against: fixture, backend: 'torch', device: 'cpu', promptLength: 8})
    expect(report.pass).toBe(true)
    expect(report.engine.name).toBe('torch')
    expect(report.verdict).toBe('exact')
    expect(report.weights!.matching).toBe(34)
    expect(report.logits!.maxAbs).toBe(0)
  })

  it('a missing Python is a DependencyError naming it', async () => {
    const run = BACKENDS.torch!.run({path: fixture, checkpoint: tiny}, [1, 2], {python: path.join(tmp, 'no-such-python')})
    await expect(run).rejects.toThrow(DependencyError)
    await expect(BACKENDS.torch!.run({path: fixture, checkpoint: tiny}, [1, 2], {python: path.join(tmp, 'no-such-python')}))
      .rejects.toThrow(/Python not found: .*no-such-python .*--python PATH/)
  })

  it('a Python without torch/msgpack says what to install, in one line, with exit code 7 from the CLI', () => {
    // Debian's interpreter without site-packages: neither msgpack nor torch importable.
    const fake = path.join(tmp, 'python-bare')
    writeFileSync(fake, '#!/bin/sh\nexec /usr/bin/python3 -S -E "$@"\n')
    chmodSync(fake, 0o755)
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), 'verify', fixture, '--backend', 'torch', '--python', fake],
      {cwd: repo, encoding: 'utf8', timeout: 60_000})
    expect(r.status).toBe(7)
    const lines = r.stderr.trim().split('\n')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^Error: the Python module msgpack is not installed for .*: install it with `.* -m pip install msgpack`/)
  })

  it('asking for CUDA without it is a DependencyError (or runs, where torch has CUDA)', async () => {
    try {
      const r = await BACKENDS.torch!.run({path: fixture, checkpoint: tiny}, [1, 2], {device: 'cuda'})
      expect(r.vocab).toBe(128)
    } catch (error) {
      expect(error).toBeInstanceOf(DependencyError)
      expect((error as Error).message).toMatch(/^CUDA is not available to torch .* use --device cpu$/)
    }
  })
})

describe('metrics', () => {
  it('computes max/mean abs, cosine, top-1 and KL in f64', () => {
    const ref = new Float32Array([0, 1, 2, 0, 0, 1])
    const cand = new Float32Array([0, 1, 2, 1, 0, 0])
    const m = compareLogits(ref, cand, 2, 3)
    expect(m.maxAbs).toBe(1)
    expect(m.meanAbs).toBeCloseTo(2 / 6, 12)
    expect(m.top1Reference).toEqual([2, 2])
    expect(m.top1Candidate).toEqual([2, 0])
    expect(m.top1).toBe(0.5)
    // row 1 identical (KL 0); row 2: KL(softmax([0,0,1]) ‖ softmax([1,0,0]))
    const z = Math.E + 2
    const p = [1 / z, 1 / z, Math.E / z]
    const q = [Math.E / z, 1 / z, 1 / z]
    const kl = p.reduce((acc, pi, i) => acc + pi * Math.log(pi / q[i]!), 0)
    expect(m.meanKl).toBeCloseTo(kl / 2, 12)
    expect(m.maxKl).toBeCloseTo(kl, 12)
    expect(m.cosine).toBeCloseTo(5 / 6, 6)
    expect(m.top1WithTies).toBe(0.5) // a gap of 1 nat is no tie
    // a near-tie in the reference (gap 0.01 nats) flipped by the candidate counts as agreement
    const tie = compareLogits(new Float32Array([1, 1.01, 0]), new Float32Array([1.02, 1, 0]), 1, 3)
    expect([tie.top1, tie.top1WithTies, tie.nearTies]).toEqual([0, 1, 1])
    const noTie = compareLogits(new Float32Array([1, 1.2, 0]), new Float32Array([1.3, 1, 0]), 1, 3)
    expect([noTie.top1, noTie.top1WithTies, noTie.nearTies]).toEqual([0, 0, 0])
    // NaN never passes
    expect(compareLogits(ref, new Float32Array([0, NaN, 2, 0, 0, 1]), 2, 3).maxAbs).toBe(Infinity)
  })

  it('draws a deterministic prompt that starts with BOS', () => {
    const p = promptTokens(16, 0, 32000)
    expect(p[0]).toBe(1)
    expect(p).toHaveLength(16)
    expect(promptTokens(16, 0, 32000)).toEqual(p)
    expect(promptTokens(16, 1, 32000)).not.toEqual(p)
    for (const t of p) expect(t).toBeLessThan(32000)
  })

  it("gives a model with CoreNet's 32128 padded rows the same prompt as its 32000-row conversion", () => {
    expect(promptTokens(32, 0, 32128)).toEqual(promptTokens(32, 0, 32000))
    expect(promptTokens(32, 0, 32128).every((t) => t < 32000)).toBe(true)
  })
})

describe('verify without a reference', () => {
  it('runs the model alone and --save-logits writes one F32 tensor `logits` [T, vocab]', async () => {
    const file = path.join(tmp, 'logits.safetensors')
    const report = await verify(fixture, {tokens: golden.tokens, saveLogits: file})
    expect(report.pass).toBe(true)
    expect(report.summary!.finite).toBe(true)
    const saved = await openSafetensors(file)
    try {
      expect(saved.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([['logits', 'F32', [golden.tokens.length, 128]]])
      expect(maxAbsDiff(await readFloat32(saved.tensors[0]!), await goldenLogits())).toBeLessThanOrEqual(1e-4)
    } finally {
      await saved.close()
    }
  })
})

describe('what ran, and what cannot run', () => {
  const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), ...args], {cwd: repo, encoding: 'utf8', timeout: 120_000})

  it('a runtime that cannot run the format is refused in one line with exit 2, before any work', async () => {
    await expect(verify(fixture, {backend: 'llama.cpp'})).rejects.toThrow(/llama\.cpp runs gguf files; .*tiny-hf is hf \(no runtime of its own/)
    await expect(verify(fixture, {runtime: 'onnxruntime', against: fixture})).rejects.toThrow(/onnxruntime runs onnx files/)
    const r = cli('verify', fixture, '--backend', 'onnxruntime')
    expect(r.status).toBe(2)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
  })

  it('--device cuda on the CPU-only ts engine is refused with exit 2, naming what would run on CUDA', async () => {
    await expect(verify(fixture, {device: 'cuda'})).rejects.toThrow(/the ts engine runs on the CPU only; use --backend torch/)
    const r = cli('verify', fixture, '--device', 'cuda')
    expect(r.status).toBe(2)
    expect(r.stderr).toMatch(/^Error: --device cuda: the ts engine runs on the CPU only/)
  })

  it('without --against the verdict is named for what it checked: the engine and the device that ran', async () => {
    const report = await verify(fixture, {promptLength: 8})
    expect(report.verdict).toBe('finite')
    expect(report.pass).toBe(true)
    expect(report.engine).toEqual({name: 'ts', device: 'cpu', threads: matmulThreads(requestedThreads())})
    expect(report.checks).toEqual(['logits finite (ts engine, cpu)'])
    const r = cli('verify', fixture, '--prompt-length', '8')
    expect(r.status).toBe(0)
    expect(r.stdout).toContain('engine ts (cpu)')
    expect(r.stdout).not.toMatch(/PASS/)
    expect(r.stdout.trim().split('\n').at(-1)).toBe('FINITE — logits finite on 8 tokens (ts engine, cpu); no reference (pass --against SRC to prove a conversion)')
    const j = cli('verify', fixture, '--prompt-length', '8', '--json')
    expect(j.status).toBe(0)
    const json = JSON.parse(j.stdout)
    expect(json.verdict).toBe('finite')
    expect(json.tokens).toHaveLength(8)
  })

  it('--threads sets the weight check\'s workers and the ts engine\'s matmul workers, and is named in the report; refused for --backend torch and for a bad count', () => {
    const j = cli('verify', fixture, '--against', fixture, '--prompt-length', '8', '--threads', '1', '--json')
    expect(j.status).toBe(0)
    const json = JSON.parse(j.stdout)
    expect(json.engine).toEqual({name: 'ts', device: 'cpu', threads: 1})
    expect(json.checks[0]).toMatch(/^weights: \d+ tensors compared code for code with the ts reference transformation of REF \(in the main thread\)$/)
    const two = JSON.parse(cli('verify', fixture, '--against', fixture, '--prompt-length', '8', '--threads', '2', '--json').stdout)
    expect(two.engine.threads).toBe(2)
    expect(two.checks[0]).toMatch(/\(2 worker threads\)$/)
    expect(two.weights).toEqual(json.weights)
    for (const [args, message] of [[['--threads', '1', '--backend', 'torch'], /^Error: --threads applies to the ts engine and the weight check; --backend torch runs both in PyTorch$/], [['--threads', '0'], /^Error: --threads must be a whole number of threads from 1 to 256, not "0"$/]] as const) {
      const r = cli('verify', fixture, '--against', fixture, ...args)
      expect(r.status).toBe(2)
      expect(r.stderr.trim()).toMatch(message)
    }
  }, 120_000)

  it('quality gates need a reference, and are refused without one', () => {
    const r = cli('verify', fixture, '--max-kl', '0.1')
    expect(r.status).toBe(2)
    expect(r.stderr).toContain('quality gates (--max-kl, --min-top1, --max-ppl-ratio) compare with a reference')
  })

  it('an f16 GGUF is a sibling of a bf16 folder of the same source: quality only, not 130 failed tensors', async () => {
    const {drain} = await import('../src/progress.js')
    const {convert} = await import('../src/convert.js')
    const gguf = path.join(tmp, 'sibling-f16.gguf')
    const bf16 = path.join(tmp, 'sibling-bf16')
    await drain(convert(fixture, 'gguf', gguf, {}, {dtype: 'F16'}))
    await drain(convert(fixture, 'hf', bf16, {}, {dtype: 'BF16'}))
    const report = await verify(gguf, {against: bf16, runtime: 'none', promptLength: 16})
    expect(report.verdict).toBe('quality-only')
    expect(report.relation).toBe('sibling')
    expect(report.pass).toBe(true)
    expect(report.notes.join(' ')).toMatch(/not a conversion of REF/)
    expect(report.quality!.meanKl).toBeLessThan(1e-3)
    // An opt-in gate still applies to a sibling.
    const gated = await verify(gguf, {against: bf16, runtime: 'none', promptLength: 16, gates: {maxKl: 0}})
    expect(gated.pass).toBe(false)
    expect(gated.failures[0]).toMatch(/mean KL .* > 0 \(--max-kl\)/)
    // And the same f16 GGUF against its true f32 source is exact.
    const exact = await verify(gguf, {against: fixture, runtime: 'none', promptLength: 16})
    expect(exact.verdict).toBe('exact')
    expect(exact.relation).toBe('derived')
  })
})

describe('verify on text', () => {
  const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), ...args], {cwd: repo, encoding: 'utf8', timeout: 120_000})
  let model: string
  beforeAll(async () => {
    model = path.join(tmp, 'micro-llama-vocab')
    const {drain} = await import('../src/progress.js')
    const {writeCheckpoint} = await import('../src/convert.js')
    // No tokenizer files beside it: the built-in LLaMA-2 tokenizer is what verify falls back to.
    await drain(writeCheckpoint(synthCheckpoint(presetConfig('micro', {vocab_size: 32000})), 'hf', model, {tokenizerRequest: {none: true}}))
  })

  it('--prompt tokenizes exactly as SentencePiece does (LLaMA-2, a 32000-row model) and prints the tokens', async () => {
    const r = cli('verify', model, '--prompt', 'The quick brown fox', '--json')
    expect(r.status, r.stderr).toBe(0)
    const report = JSON.parse(r.stdout)
    // SentencePiece itself, on the tokenizer.model we write for the built-in LLaMA-2 vocabulary.
    const {llama2Model, writeSentencePieceModel} = await import('../src/tokenizer/index.js')
    const spm = path.join(tmp, 'llama2.model')
    writeFileSync(spm, writeSentencePieceModel(await llama2Model()))
    const py = spawnSync('/usr/bin/python3', [path.join(repo, 'test/python/spm_check.py'), spm], {input: JSON.stringify({encode: ['The quick brown fox']}), encoding: 'utf8'})
    expect(py.status, py.stderr).toBe(0)
    expect(report.tokens).toEqual([1, ...JSON.parse(py.stdout).encode[0]])
    expect(report.tokens).toEqual([1, 450, 4996, 17354, 1701, 29916])
    expect(report.prompt.source).toBe('text')
    expect(report.prompt.tokenizer).toMatch(/LLaMA-2/)
    const human = cli('verify', model, '--prompt', 'The quick brown fox')
    expect(human.stdout).toContain('prompt tokens: <s>=1 ▁The=450 ▁quick=4996 ▁brown=17354 ▁fo=1701 x=29916')
  })

  it('without a prompt, a model with a tokenizer runs held-out Brown corpus text; without one, seeded ids', async () => {
    const withText = await verify(model, {promptLength: 16})
    expect(withText.prompt.source).toBe('corpus')
    expect(withText.tokens).toHaveLength(16)
    expect(withText.prompt.text).toMatch(/^Vincent G\. Ierulli has been appointed/)
    const seeded = await verify(fixture, {promptLength: 16})
    expect(seeded.prompt).toEqual({source: 'seeded', seed: 0})
  })

  it('--prompt on a model without a tokenizer says to pass --tokenizer, in one line', async () => {
    await expect(verify(fixture, {text: 'hello'})).rejects.toThrow(/no tokenizer for .*tiny-hf .*pass --tokenizer PATH/)
  })
})
