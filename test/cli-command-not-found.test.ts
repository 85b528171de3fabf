/** A mistyped command: one line with the nearest command, exit 2, no stack trace, JSON under --json. */
import {spawnSync} from 'node:child_process'
import {rmSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'

const bin = path.resolve(import.meta.dirname, '..', 'bin', 'dev.js')
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], {encoding: 'utf8'})

describe('unknown command', () => {
  it('suggests the nearest command in one line, exit 2', () => {
    const r = run('conver', 'fixtures/tiny-hf', '--to', 'mlx')
    expect(r.status).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr.trim().split('\n')).toEqual(['Error: unknown command "conver" — did you mean "convert"? (see openelm --help)'])
  })

  it('lists the commands when nothing is close, and answers in JSON under --json', () => {
    const r = run('frobnicate', '--json')
    expect(r.status).toBe(2)
    expect(r.stderr).not.toMatch(/\bat \S+ \(/)
    expect(r.stderr).toMatch(/commands: .*convert.*verify/)
    const json = JSON.parse(r.stdout) as {error: {kind: string; code: string; command: string; nearMiss?: string}}
    expect(json.error).toMatchObject({kind: 'usage', code: 'command.unknown', command: 'frobnicate'})
    expect(json.error.nearMiss).toBeUndefined()
    expect(JSON.parse(run('verfy', '--json').stdout).error.nearMiss).toBe('verify')
  })
})

describe('format names in any case', () => {
  it('lower-cases the values of --to, --format and --via only', async () => {
    const {caseFoldFormatValues} = await import('../src/cli/base.js')
    expect(caseFoldFormatValues(['X.PT', '--to', 'MLX', '--format=HF', '--via', 'GGUF,Hf', '--out', 'Out/Dir', '--to=Onnx'])).toEqual(['X.PT', '--to', 'mlx', '--format=hf', '--via', 'gguf,hf', '--out', 'Out/Dir', '--to=onnx'])
  })

  it('converts with `--to MLX` and round-trips with `--via GGUF,HF` end to end', () => {
    const out = path.join(os.tmpdir(), `openelm-case-${process.pid}`)
    try {
      const r = run('convert', 'fixtures/tiny-hf', '--to', 'MLX', '--out', out, '--json')
      expect(r.status, r.stderr).toBe(0)
      expect(JSON.parse(r.stdout).target.path).toBe(out)
      expect(JSON.parse(run('inspect', out, '--json').stdout).format).toBe('mlx')
      const rt = run('roundtrip', 'fixtures/tiny-hf', '--via', 'GGUF,HF', '--json')
      expect(rt.status, rt.stderr).toBe(0)
      expect(JSON.parse(rt.stdout).hops.map((h: {via: string}) => h.via)).toEqual(['gguf', 'hf'])
    } finally {
      rmSync(out, {recursive: true, force: true})
    }
  }, 120_000)

  it('accepts `inspect --format HF` end to end', () => {
    const r = run('inspect', 'fixtures/tiny-hf', '--format', 'HF', '--json')
    expect(r.status).toBe(0)
    expect(JSON.parse(r.stdout).format).toBe('hf')
  })
})
