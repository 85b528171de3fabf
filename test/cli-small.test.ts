/**
 * Small things a new user hits (issue 16, point 7): an --out named like a file for a folder target,
 * a .pt read as safetensors, an empty folder, and the seeded verify prompt on a padded vocabulary.
 */
import {spawnSync} from 'node:child_process'
import {existsSync, mkdirSync, mkdtempSync, rmSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {promptTokens} from '../src/verify/prompt.js'

const ROOT = path.resolve(import.meta.dirname, '..')
const DEV = path.join(ROOT, 'bin', 'dev.js')
const FIXTURE = path.join(ROOT, 'fixtures', 'tiny-hf')
const PT = path.join(ROOT, 'fixtures', 'corenet', 'training_checkpoint.pt')
const tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-small-'))
afterAll(() => rmSync(tmp, {recursive: true, force: true}))

const cli = (...args: string[]) => spawnSync(process.execPath, [DEV, ...args], {cwd: tmp, encoding: 'utf8', env: {...process.env, NO_COLOR: '1'}, timeout: 60_000})

describe('--out for a folder target', () => {
  it('--to onnx --out t.onnx is refused in one line with exit 2, writing nothing', () => {
    const out = path.join(tmp, 't.onnx')
    const r = cli('convert', FIXTURE, '--to', 'onnx', '--out', out)
    expect(r.status).toBe(2)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stderr.trim()).toBe(`Error: --out ${out}: --to onnx writes a folder (onnx/model.onnx, config.json, tokenizer: what transformers.js loads), not one .onnx file; pass a folder name, e.g. --out ${path.join(tmp, 't')}-onnx`)
    expect(existsSync(out)).toBe(false)
  })

  it('--to hf --out m.safetensors is refused too; a .gguf or .pt name stays a file for gguf and corenet', () => {
    const r = cli('convert', FIXTURE, '--to', 'hf', '--out', path.join(tmp, 'm.safetensors'))
    expect(r.status).toBe(2)
    expect(r.stderr).toContain('--to hf writes a Hugging Face folder')
    const pt = cli('convert', FIXTURE, '--to', 'corenet', '--out', path.join(tmp, 'c.pt'))
    expect(pt.status, pt.stderr).toBe(0)
    expect(pt.stdout).toMatch(/^ {2}1 file, /m)
  })
})

describe('reading the wrong thing', () => {
  it('inspect X.pt --format hf says it is a ZIP (PyTorch checkpoint), not safetensors', () => {
    const r = cli('inspect', PT, '--format', 'hf')
    expect(r.status).toBe(3)
    expect(r.stderr.trim()).toBe(`Error: ${PT}: this is a ZIP (PyTorch checkpoint), not safetensors`)
  })

  it('an empty folder says so, and does not advise --format', () => {
    const empty = path.join(tmp, 'empty')
    mkdirSync(empty)
    for (const args of [['inspect', empty], ['convert', empty, '--to', 'hf', '--out', path.join(tmp, 'never')]]) {
      const r = cli(...args)
      expect(r.status).toBe(3)
      expect(r.stderr.trim()).toBe(`Error: ${empty} is an empty folder: there is no model in it to read (expected a model folder, or a .pt/.safetensors/.gguf file)`)
      expect(r.stderr).not.toContain('--format')
    }
    expect(existsSync(path.join(tmp, 'never'))).toBe(false)
  })
})

describe('verify labels what ran', () => {
  it('an ONNX export without --against: FINITE naming the runtime that agreed; --device cuda is run on CUDA or refused in one line', () => {
    const onnx = path.join(tmp, 'tiny-onnx')
    expect(cli('convert', FIXTURE, '--to', 'onnx', '--out', onnx).status).toBe(0)
    const r = cli('verify', onnx, '--prompt-length', '6')
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout.trim().split('\n').at(-1)).toBe('FINITE — logits finite on 6 tokens (ts engine, cpu); onnxruntime (cpu) agrees with the ts engine on the same file; no reference (pass --against SRC to prove a conversion)')
    const cuda = cli('verify', onnx, '--backend', 'onnxruntime', '--device', 'cuda', '--prompt-length', '6')
    if (cuda.status === 0) {
      expect(cuda.stdout).toContain('onnxruntime (cuda) agrees with the ts engine')
    } else {
      // No CUDA provider here: one line naming it, not a native log dump and not a CPU run labelled cuda.
      expect(cuda.status).toBe(3)
      expect(cuda.stderr.trim().split('\n')).toHaveLength(1)
      expect(cuda.stderr).toMatch(/^Error: onnxruntime could not load .*model\.onnx: .*Cuda/)
    }
  }, 120_000)
})

describe('the seeded verify prompt', () => {
  it('is the same ids for 32000 and 32128 embedding rows, all real tokens', () => {
    for (const seed of [0, 1, 7]) {
      const a = promptTokens(64, seed, 32000)
      const b = promptTokens(64, seed, 32128)
      expect(b).toEqual(a)
      expect(a[0]).toBe(1)
      expect(Math.max(...a)).toBeLessThan(32000)
      expect(Math.min(...a.slice(1))).toBeGreaterThanOrEqual(3)
    }
    // A different vocabulary really draws differently (the test can fail).
    expect(promptTokens(64, 0, 128)).not.toEqual(promptTokens(64, 0, 32000))
  })
})
