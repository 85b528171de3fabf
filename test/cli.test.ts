/**
 * End-to-end: the real CLI (`bin/dev.js`) spawned from a temp folder, as a user would run it.
 */
import {execFileSync, spawn} from 'node:child_process'
import {createHash} from 'node:crypto'
import {promises as fs, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {writeCheckpoint} from '../src/convert.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {memoryRecord} from '../src/tensor/record.js'

const ROOT = path.resolve(import.meta.dirname, '..')
const DEV = path.join(ROOT, 'bin', 'dev.js')
const FIXTURE = path.join(ROOT, 'fixtures', 'tiny-hf')
const PYTHON = '/usr/bin/python3'
const tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-cli-'))
afterAll(() => rmSync(tmp, {recursive: true, force: true}))

interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

function cli(args: string[], options: {killWhen?: () => boolean} = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [DEV, ...args], {cwd: tmp, env: {...process.env, NO_COLOR: '1', OPENELM_DEBUG: ''}})
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const poll = options.killWhen && setInterval(() => {
      if (options.killWhen!()) {
        clearInterval(poll)
        child.kill('SIGINT')
      }
    }, 50)
    child.on('close', (code, signal) => {
      if (poll) clearInterval(poll)
      resolve({code, signal, stdout, stderr})
    })
  })
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
const fileHash = (p: string) => sha256(readFileSync(p))
const tempSiblings = (dir: string) => readdirSync(dir).filter((n) => n.includes('.openelm-tmp-'))

/** One line on stderr, `Error: ...`, nothing that looks like a stack trace. */
function expectOneLineError(run: Run, code: number, message: RegExp): void {
  expect(run.code, run.stderr).toBe(code)
  const lines = run.stderr.trim().split('\n')
  expect(lines, run.stderr).toHaveLength(1)
  expect(lines[0]).toMatch(/^Error: /)
  expect(lines[0]).toMatch(message)
  expect(run.stderr).not.toMatch(/^\s+at /m)
  expect(run.stderr).not.toContain('internal error')
}

/** Hand-built bad safetensors files, each a one-byte-different sibling of a valid one. */
function badFiles(): Record<string, {file: string; message: RegExp}> {
  const make = (name: string, header: string, data: number, n?: bigint) => {
    const text = Buffer.from(header)
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(n ?? BigInt(text.byteLength))
    const file = path.join(tmp, `${name}.safetensors`)
    writeFileSync(file, Buffer.concat([len, text, Buffer.alloc(data)]))
    return file
  }
  const a = '"transformer.a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}'
  return {
    truncated: {file: make('truncated', `{${a}}`, 15), message: /file is truncated: the header describes \d+ bytes but the file has \d+/},
    header2e62: {file: make('header2e62', `{${a}}`, 16, 2n ** 62n), message: /header length 4611686018427387904 exceeds the 100000000-byte limit/},
    overlap: {file: make('overlap', `{${a},"transformer.b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, 16), message: /tensor "transformer.b" at bytes 8..16 overlaps/},
    duplicate: {file: make('duplicate', `{${a},${a}}`, 16), message: /tensor "transformer.a" appears twice in the header/},
    dtype: {file: make('dtype', `{"transformer.a":{"dtype":"F7","shape":[2,2],"data_offsets":[0,16]}}`, 16), message: /tensor "transformer.a" has unknown dtype "F7"/},
  }
}

describe('inspect', () => {
  it('prints format, preset, parameters, dtypes and the per-layer table', async () => {
    const run = await cli(['inspect', FIXTURE])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toContain(`${FIXTURE}: hf (OpenELM-tiny shape)`)
    expect(run.stdout).toContain('parameters  156,288   tensors 34\n  size        610.50 KiB stored, files 613.91 KiB\n  weights     F32\n')
    expect(run.stdout).toContain('config      file: layers 4, model_dim 64, head_dim 8, gqa 2, vocab 128, context 128')
    expect(run.stdout).toContain('dtypes      F32×34')
    expect(run.stdout).toContain('files       model.safetensors (613.91 KiB)   single safetensors')
    const table = run.stdout.split('\n').filter((l) => /^\d+\s/.test(l)).map((l) => l.trim().split(/\s+/).map(Number))
    expect(table).toEqual([[0, 4, 2, 32], [1, 6, 3, 112], [2, 6, 3, 176], [3, 8, 4, 256]])
    expect(run.stderr).toBe('')
  })

  it('--json prints one machine-readable report', async () => {
    const run = await cli(['inspect', FIXTURE, '--json'])
    expect(run.code).toBe(0)
    const report = JSON.parse(run.stdout)
    expect(report).toMatchObject({
      path: FIXTURE, format: 'hf', preset: 'tiny', configSource: 'file', parameters: 156288, dtype: 'F32', dtypes: {F32: 34},
      tensorCount: 34, tensorBytes: 156288 * 4, tokenizerFiles: [], notes: [],
      layers: [{qHeads: 4, kvHeads: 2, ffnDim: 32}, {qHeads: 6, kvHeads: 3, ffnDim: 112}, {qHeads: 6, kvHeads: 3, ffnDim: 176}, {qHeads: 8, kvHeads: 4, ffnDim: 256}],
    })
    expect(report.config.num_query_heads).toEqual([4, 6, 6, 8])
    expect(report.info.layout).toBe('single safetensors')
  })

  it('a path that does not exist or is not a model: one line, non-zero exit', async () => {
    expectOneLineError(await cli(['inspect', 'nope']), 4, /nope does not exist/)
    await fs.mkdir(path.join(tmp, 'empty-dir'))
    expectOneLineError(await cli(['inspect', 'empty-dir']), 3, /empty-dir is an empty folder: there is no model in it to read/)
    await fs.mkdir(path.join(tmp, 'notes-dir'))
    await fs.writeFile(path.join(tmp, 'notes-dir', 'README.txt'), 'not a model')
    expectOneLineError(await cli(['inspect', 'notes-dir']), 3, /notes-dir is not .*this tool recognises/)
  })
})

describe('bad safetensors files: one-line error, non-zero exit, no stack trace, no output', () => {
  const files = badFiles()
  for (const [name, {file, message}] of Object.entries(files)) {
    it(`${name}: inspect and convert both refuse it`, async () => {
      const out = path.join(tmp, `out-${name}`)
      const [inspectRun, convertRun, jsonRun] = await Promise.all([
        cli(['inspect', file]),
        cli(['convert', file, '--to', 'hf', '--dtype', 'bf16', '--out', out]),
        name === 'overlap' ? cli(['inspect', file, '--json']) : undefined,
      ])
      expectOneLineError(inspectRun, 3, message)
      expect(inspectRun.stdout).toBe('')
      expectOneLineError(convertRun, 3, message)
      expect(readdirSync(tmp)).not.toContain(`out-${name}`)
      expect(tempSiblings(tmp)).toEqual([])
      if (!jsonRun) return
      expect(jsonRun.code).toBe(3)
      const json = JSON.parse(jsonRun.stdout)
      expect(json.error.kind).toBe('format')
      expect(json.error.code).toMatch(/^safetensors\./)
      expect(json.error.message).toMatch(message)
    })
  }
})

describe('convert', () => {
  it('--dtype bf16 is bit-identical to torch\'s round-to-nearest-even of the f32 source (ties, subnormals, overflow, NaN)', async () => {
    // An f32 source whose embedding holds the values where rounding is decided.
    const synth = synthCheckpoint(presetConfig('tiny'), {seed: 4, dtype: 'F32'})
    const edge = new Uint32Array(128 * 64)
    let state = 99
    for (let i = 0; i < edge.length; i++) {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0
      const kinds = [state, (state & 0xffff0000) | 0x8000, (state & 0xffff0000) | 0x7fff, (state & 0xffff0000) | 0x8001, state & 0x807fffff, 0x7f7fffff, 0x7f7f8000, 0xff800000, 0x7fc00001, 0x7f800001]
      edge[i] = kinds[i % kinds.length]! >>> 0
    }
    const tensors = synth.tensors.map((t) => (t.name === 'token_embeddings.weight' ? memoryRecord(t.name, 'F32', t.shape, new Uint8Array(edge.buffer)) : t))
    const src = path.join(tmp, 'edge-f32')
    const gen = writeCheckpoint({...synth, tensors}, 'hf', src, {})
    while (!(await gen.next()).done);
    const out = path.join(tmp, 'edge-bf16')
    const run = await cli(['convert', src, '--to', 'hf', '--dtype', 'bf16', '--out', out])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toContain(`→ ${out} (hf, BF16)`)
    const check = JSON.parse(execFileSync(PYTHON, [path.join(import.meta.dirname, 'python', 'bf16_check.py'), path.join(src, 'model.safetensors'), path.join(out, 'model.safetensors')]).toString())
    const nans = edge.filter((b) => (b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0).length
    expect(nans).toBeGreaterThanOrEqual(1638)
    expect(check).toEqual({tensors: 34, elements: 156288, mismatches: [], nans})
    expect(JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')).torch_dtype).toBe('bfloat16')
  })

  it('--json returns source, target files with sizes, and notes', async () => {
    const out = path.join(tmp, 'json-out')
    const run = await cli(['convert', FIXTURE, '--to', 'hf', '--shard-size', '200KB', '--out', out, '--json'])
    expect(run.code, run.stderr).toBe(0)
    const result = JSON.parse(run.stdout)
    expect(result.source).toEqual({path: FIXTURE, format: 'hf', dtype: 'F32'})
    expect(result.target.format).toBe('hf')
    expect(result.target.dtype).toBe('F32')
    expect(result.notes).toEqual([])
    const names = result.target.files.map((f: {path: string}) => path.basename(f.path))
    expect(names).toContain('model.safetensors.index.json')
    expect(names.filter((n: string) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(n)).length).toBeGreaterThan(2)
    for (const f of result.target.files) expect(f.bytes).toBe(readFileSync(path.resolve(tmp, f.path)).byteLength)
  })

  it('refuses an existing --out without --force, replaces it with --force', async () => {
    const out = path.join(tmp, 'existing')
    await fs.mkdir(out)
    writeFileSync(path.join(out, 'precious.txt'), 'keep me')
    expectOneLineError(await cli(['convert', FIXTURE, '--to', 'hf', '--out', out]), 4, /output .*existing already exists \(pass --force to replace it\)/)
    expect(readdirSync(out)).toEqual(['precious.txt'])
    const forced = await cli(['convert', FIXTURE, '--to', 'hf', '--out', out, '--force'])
    expect(forced.code, forced.stderr).toBe(0)
    expect(readdirSync(out).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors'])
    expect(tempSiblings(tmp)).toEqual([])
  })

  it('bad flags: one line, exit 2', async () => {
    const [noOut, badSize] = await Promise.all([
      cli(['convert', FIXTURE, '--to', 'hf']),
      cli(['convert', FIXTURE, '--to', 'hf', '--out', 'x', '--shard-size', '5XB']),
    ])
    expectOneLineError(noOut, 2, /^Error: Missing required flag out\b/)
    expectOneLineError(badSize, 2, /invalid size "5XB"/)
    expect(readdirSync(tmp)).not.toContain('x')
  })
})

describe('synth', () => {
  let s270: string
  beforeAll(() => {
    s270 = path.join(tmp, 's270')
  })

  it('--preset 270M has exactly 271,527,168 parameters and the per-layer lists of DESIGN §3', async () => {
    const run = await cli(['synth', '--preset', '270M', '--dtype', 'bf16', '--out', s270, '--json'])
    expect(run.code, run.stderr).toBe(0)
    const result = JSON.parse(run.stdout)
    expect(result.parameters).toBe(271_527_168)
    expect(result.target.dtype).toBe('BF16')
    const config = JSON.parse(readFileSync(path.join(s270, 'config.json'), 'utf8'))
    const rep = (v: number, n: number) => Array.from({length: n}, () => v)
    expect(config.num_query_heads).toEqual([...rep(12, 5), ...rep(16, 7), ...rep(20, 4)])
    expect(config.num_kv_heads).toEqual([...rep(3, 5), ...rep(4, 7), ...rep(5, 4)])
    expect(config.ffn_multipliers).toEqual([0.5, 0.73, 0.97, 1.2, 1.43, 1.67, 1.9, 2.13, 2.37, 2.6, 2.83, 3.07, 3.3, 3.53, 3.77, 4.0])
    expect(config.vocab_size).toBe(32000)
    // Count the elements the file really holds, with an independent reader.
    const script = 'import json,struct,sys; f=open(sys.argv[1],"rb"); n=struct.unpack("<Q",f.read(8))[0]; h=json.loads(f.read(n)); h.pop("__metadata__",None)\n'
      + 'import math; print(json.dumps({"params": sum(math.prod(e["shape"]) for e in h.values()), "tensors": len(h), "dtypes": sorted({e["dtype"] for e in h.values()})}))'
    const facts = JSON.parse(execFileSync(PYTHON, ['-c', script, path.join(s270, 'model.safetensors')]).toString())
    expect(facts).toEqual({params: 271_527_168, tensors: 2 + 8 * 16, dtypes: ['BF16']})
    const inspect = JSON.parse((await cli(['inspect', s270, '--json'])).stdout)
    expect(inspect.preset).toBe('270M')
    expect(inspect.parameters).toBe(271_527_168)
    expect(inspect.layers.map((l: {ffnDim: number}) => l.ffnDim)).toEqual([768, 1024, 1280, 1536, 1792, 2048, 2560, 2816, 3072, 3328, 3584, 3840, 4352, 4608, 4864, 5120])
    rmSync(s270, {recursive: true, force: true})
  })

  it('same seed → byte-identical files; the text output names the preset and files', async () => {
    const [a, b, c] = await Promise.all([
      cli(['synth', '--preset', 'tiny', '--seed', '5', '--dtype', 'f16', '--out', 'seed5a']),
      cli(['synth', '--preset', 'tiny', '--seed', '5', '--dtype', 'f16', '--out', 'seed5b']),
      cli(['synth', '--preset', 'tiny', '--seed', '6', '--dtype', 'f16', '--out', 'seed6']),
    ])
    for (const r of [a, b, c]) expect(r.code, r.stderr).toBe(0)
    expect(a.stdout).toContain('synth tiny (seed 5, 156,288 parameters) → seed5a (hf, F16)')
    for (const f of ['model.safetensors', 'config.json', 'generation_config.json']) {
      expect(fileHash(path.join(tmp, 'seed5a', f))).toBe(fileHash(path.join(tmp, 'seed5b', f)))
    }
    expect(fileHash(path.join(tmp, 'seed5a', 'model.safetensors'))).not.toBe(fileHash(path.join(tmp, 'seed6', 'model.safetensors')))
  })

  it('an unknown preset is a one-line usage error', async () => {
    expectOneLineError(await cli(['synth', '--preset', '7B', '--out', 'x']), 2, /7B/)
  })

  it('Ctrl-C during a long write leaves no output and no temp folder', async () => {
    const parent = path.join(tmp, 'interrupt')
    await fs.mkdir(parent)
    // Interrupt once the temp sibling exists, i.e. in the middle of writing 4.3 GB.
    let sawTemp = false
    const run = await cli(['synth', '--preset', '1.1B', '--out', path.join(parent, 'big')], {
      killWhen: () => (sawTemp ||= tempSiblings(parent).length > 0),
    })
    expect(sawTemp).toBe(true)
    expect(run.code).toBe(130)
    expect(run.stderr).toContain('interrupted: partial output removed')
    expect(readdirSync(parent)).toEqual([])
  })
})
