/**
 * Wording of what `convert` prints: counts agree in number with what was written.
 */
import {spawnSync} from 'node:child_process'
import {mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {CONVERT_FLAG_TABLE, checkFlagTargets} from '../src/cli/flag-table.js'
import {loadConfigFile} from '../src/formats/corenet/config.js'

const ROOT = path.resolve(import.meta.dirname, '..')
const DEV = path.join(ROOT, 'bin', 'dev.js')
const FIXTURE = path.join(ROOT, 'fixtures', 'tiny-hf')
const tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-wording-'))
afterAll(() => rmSync(tmp, {recursive: true, force: true}))

describe('convert summary wording', () => {
  it('says "1 file" for a single-file output, not "1 files"', () => {
    const out = path.join(tmp, 'one.gguf')
    const run = spawnSync(process.execPath, [DEV, 'convert', FIXTURE, '--to', 'gguf', '--out', out], {cwd: tmp, encoding: 'utf8', env: {...process.env, NO_COLOR: '1'}})
    expect(run.status, run.stderr).toBe(0)
    expect(readdirSync(tmp)).toContain('one.gguf')
    expect(run.stdout).toMatch(/^ {2}1 file, /m)
    expect(run.stdout).not.toMatch(/\b1 files\b/)
  }, 60_000)
})

describe('config typos', () => {
  const good = JSON.parse(readFileSync(path.join(FIXTURE, 'config.json'), 'utf8')) as Record<string, unknown>

  it('names the file and the near miss for a misspelt required field', async () => {
    const {num_transformer_layers: layers, ...rest} = good
    const file = path.join(tmp, 'typo.json')
    writeFileSync(file, JSON.stringify({...rest, num_transformer_layer: layers}))
    const error = await loadConfigFile(file).then(() => undefined, (e: Error & {details?: Record<string, unknown>}) => e)
    expect(error?.message).toBe(`${file} lacks the number field num_transformer_layers (it has num_transformer_layer: did you mean num_transformer_layers?)`)
    expect(error?.details).toMatchObject({path: file, field: 'num_transformer_layers', nearMiss: 'num_transformer_layer'})
  })

  it('suggests nothing when no key is close, and still names the file', async () => {
    const {num_transformer_layers: _layers, ...rest} = good
    const file = path.join(tmp, 'missing.json')
    writeFileSync(file, JSON.stringify(rest))
    await expect(loadConfigFile(file)).rejects.toThrow(new RegExp(`^${file.replaceAll('.', '\\.')} lacks the number field num_transformer_layers$`))
  })

  it('reads the correct file unchanged', async () => {
    const file = path.join(tmp, 'good.json')
    writeFileSync(file, JSON.stringify(good))
    expect((await loadConfigFile(file)).num_transformer_layers).toBe(good.num_transformer_layers)
  })
})

describe('aliases users of mlx-lm and llama.cpp type', () => {
  const run = (args: string[]) => spawnSync(process.execPath, [DEV, ...args], {cwd: tmp, encoding: 'utf8', env: {...process.env, NO_COLOR: '1'}})

  it('-q and --q-group-size mean --quantize and --group-size', () => {
    const out = path.join(tmp, 'mlx-q')
    const r = run(['convert', FIXTURE, '--to', 'mlx', '-q', '4', '--q-group-size', '32', '--out', out])
    expect(r.status, r.stderr).toBe(0)
    const config = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')) as {quantization: {bits: number; group_size: number}}
    expect(config.quantization).toMatchObject({bits: 4, group_size: 32})
  }, 60_000)

  it('--q-bits means --quantize and --outtype means --dtype', () => {
    const mlx = path.join(tmp, 'mlx-qbits')
    const r1 = run(['convert', FIXTURE, '--to', 'mlx', '--q-bits', '8', '--out', mlx])
    expect(r1.status, r1.stderr).toBe(0)
    expect((JSON.parse(readFileSync(path.join(mlx, 'config.json'), 'utf8')) as {quantization: {bits: number; group_size: number}}).quantization).toMatchObject({bits: 8, group_size: 64})
    const hf = path.join(tmp, 'hf-bf16')
    const r2 = run(['convert', FIXTURE, '--to', 'hf', '--outtype', 'bf16', '--out', hf])
    expect(r2.status, r2.stderr).toBe(0)
    const header = readFileSync(path.join(hf, 'model.safetensors'))
    const n = Number(header.readBigUInt64LE(0))
    const entries = Object.entries(JSON.parse(header.subarray(8, 8 + n).toString('utf8')) as Record<string, {dtype?: string}>).filter(([k]) => k !== '__metadata__')
    expect(entries.length).toBeGreaterThan(0)
    expect(new Set(entries.map(([, v]) => v.dtype))).toEqual(new Set(['BF16']))
  }, 60_000)
})

describe('convert flag table: a flag that cannot apply is refused before any work', () => {
  // Every (flag, target) pair the table restricts, walked without spawning: the check is pure data.
  const targets = ['hf', 'mlx', 'corenet', 'gguf', 'onnx'] as const
  const given: Record<string, unknown> = {quantize: 4, 'group-size': 32, dtype: 'q8_0', 'training-checkpoint': true, layout: 'npz', 'token-embedding-type': 'q8_0', 'output-tensor-type': 'q8_0', variants: 'q4', 'shard-size': '1MB'}
  for (const [flag, rule] of Object.entries(CONVERT_FLAG_TABLE)) {
    for (const target of targets) {
      it(`--${flag} with --to ${target}: ${rule.targets.includes(target) ? 'passes the check' : 'refused'}`, () => {
        const check = () => checkFlagTargets(CONVERT_FLAG_TABLE, {[flag]: given[flag]}, target)
        if (rule.targets.includes(target)) expect(check).not.toThrow()
        else expect(check).toThrow(new RegExp(`^--${flag}( q8_0)? is for ${rule.targets.join('/')} targets, not ${target}`))
      })
    }
  }

  it('dtype values other than q8_0 pass for every target', () => {
    for (const target of targets) expect(() => checkFlagTargets(CONVERT_FLAG_TABLE, {dtype: 'f16'}, target)).not.toThrow()
  })

  it('the CLI exits 2 with one line and writes nothing (--to hf --quantize 4, --to hf --dtype q8_0)', () => {
    for (const [args, line] of [
      [['--to', 'hf', '--quantize', '4'], '--quantize is for mlx/onnx targets, not hf (for GGUF use --dtype q8_0, q4_0, …)'],
      [['--to', 'hf', '--dtype', 'q8_0'], '--dtype q8_0 is for gguf targets, not hf'],
      [['--to', 'hf', '--layout', 'npz'], '--layout is for mlx/onnx targets, not hf'],
      [['--to', 'gguf', '--shard-size', '1MB'], '--shard-size is for hf/mlx targets, not gguf'],
      // Flags that depend on the source: refused after reading its header, before any output.
      [['--to', 'mlx', '--ema'], '--ema applies to CoreNet training checkpoints; '],
      [['--to', 'mlx', '--keep-padded-vocab'], '--keep-padded-vocab applies to CoreNet sources (their 32128 padded vocabulary rows); '],
    ] as const) {
      const out = path.join(tmp, `refused-${args.join('')}`)
      const r = spawnSync(process.execPath, [DEV, 'convert', FIXTURE, ...args, '--out', out], {cwd: tmp, encoding: 'utf8', env: {...process.env, NO_COLOR: '1'}})
      expect(r.status).toBe(2)
      expect(r.stderr.trim().split('\n').filter((l) => !/npm warn/.test(l))).toHaveLength(1)
      expect(r.stderr).toContain(line)
      expect(readdirSync(tmp).filter((f) => f.startsWith('refused-'))).toEqual([])
    }
  }, 180_000)
})

describe('roundtrip: every hop is checked before the first runs', () => {
  it('--via mlx,gguf --quantize 4 and --via gguf,hf --dtype q8_0 exit 2 at once, naming the flag', () => {
    for (const [args, line] of [
      [['--via', 'mlx,gguf', '--quantize', '4'], '--quantize is for mlx targets, not gguf'],
      [['--via', 'gguf,hf', '--dtype', 'q8_0'], '--dtype q8_0 is for gguf targets, not hf'],
    ] as const) {
      const t0 = Date.now()
      const r = spawnSync(process.execPath, [DEV, 'roundtrip', FIXTURE, ...args], {cwd: tmp, encoding: 'utf8', env: {...process.env, NO_COLOR: '1'}})
      expect(r.status).toBe(2)
      expect(r.stderr).toContain(line)
      expect(r.stdout).toBe('')
      expect(Date.now() - t0).toBeLessThan(30_000)
    }
  }, 60_000)
})

describe('did you mean', () => {
  it('a mistyped flag exits 2 with one line suggesting the near one', () => {
    const r = spawnSync(process.execPath, [DEV, 'convert', FIXTURE, '--to', 'mlx', '--quantise', '4', '--out', path.join(tmp, 'typo')], {cwd: tmp, encoding: 'utf8', env: {...process.env, NO_COLOR: '1'}})
    expect(r.status).toBe(2)
    expect(r.stderr.trim()).toBe('Error: Nonexistent flag: --quantise (did you mean --quantize?) (see openelm convert --help)')
  }, 60_000)
})
