/**
 * `--output-tensor-type` and `--token-embedding-type` against real llama-quantize (libllama's
 * `llama_model_quantize` through ctypes, its params' output_tensor_type / token_embedding_type set):
 * OpenELM's head is the tied token embedding, so llama.cpp gives token_embd the output type (with
 * its fallback) unless a token-embedding type is also given. Every tensor's type, and token_embd's
 * bytes, equal llama-quantize's; the CLI refuses an unknown type and the output type on a float file.
 */
import {spawnSync} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {writeCheckpoint} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {quantizationOf} from '../src/formats/gguf/index.js'
import {GGUF_FTYPES} from '../src/formats/gguf/presets.js'
import {openGguf} from '../src/formats/gguf/read.js'
import {GGML_BLOCK, GGML_TYPE, LLAMA_FILE_TYPE} from '../src/formats/gguf/types.js'
import {type Checkpoint, type WriteOptions} from '../src/formats/types.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {superBlockConfig} from './helpers/shapes.js'

const repo = path.resolve(import.meta.dirname, '..')
const DEV = path.join(repo, 'bin/dev.js')
const FIXTURE = path.join(repo, 'fixtures/tiny-hf')
let work: string

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-gguf-overrides-'))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

interface Case {
  label: string
  ftype: string
  output?: keyof typeof GGML_TYPE
  token?: keyof typeof GGML_TYPE
}

/** ftype 'f16' is llama_ftype MOSTLY_F16 (1). */
const ftypeNumber = (f: string) => (f === 'f16' ? 1 : LLAMA_FILE_TYPE[GGUF_FTYPES[f]!.fileType])

const CASES: Case[] = [
  {label: 'q4_k_m, output q8_0', ftype: 'q4_k_m', output: 'Q8_0'},
  {label: 'q4_0, output q4_k (fallback on short rows)', ftype: 'q4_0', output: 'Q4_K'},
  {label: 'q5_k_s, output q8_0 and token q4_0 (token wins)', ftype: 'q5_k_s', output: 'Q8_0', token: 'Q4_0'},
  {label: 'q6_k, token q5_1', ftype: 'q6_k', token: 'Q5_1'},
  {label: 'f16, token q8_0', ftype: 'f16', token: 'Q8_0'},
]

async function types(file: string): Promise<{types: Record<string, string>; embd: Buffer}> {
  const f = await openGguf(file)
  try {
    const embd = f.tensors.find((t) => t.info.name === 'token_embd.weight')!
    return {types: Object.fromEntries(f.tensors.map((t) => [t.info.name, t.type])), embd: Buffer.from(await f.readRaw(embd))}
  } finally {
    await f.close()
  }
}

const shapes: [string, () => Promise<Checkpoint>][] = [
  ['256-multiple synth', async () => synthCheckpoint(superBlockConfig(4, 64), {seed: 9})],
  ['tiny fixture', () => openCheckpoint(FIXTURE)],
]

describe.each(shapes)('tensor type overrides on the %s', (label, make) => {
  let source: Checkpoint
  let f32: string
  const key = label.split(' ')[0]!
  beforeAll(async () => {
    source = await make()
    f32 = path.join(work, `${key}-f32.gguf`)
    await drain(writeCheckpoint(source, 'gguf', f32, {dtype: 'F32'}))
  }, 120_000)
  afterAll(async () => {
    await source.close()
  })

  it.each(CASES)('$label: every tensor\'s type and token_embd\'s bytes equal llama-quantize\'s', async (c) => {
    const theirs = path.join(work, `${key}-lq-${c.label.replace(/\W+/g, '_')}.gguf`)
    const env = {...process.env, LQ_OUTPUT_TENSOR_TYPE: c.output ? String(GGML_TYPE[c.output]) : '', LQ_TOKEN_EMBEDDING_TYPE: c.token ? String(GGML_TYPE[c.token]) : ''}
    const r = spawnSync('/usr/bin/python3', [path.join(repo, 'test/python/llama_quantize.py'), f32, theirs, String(ftypeNumber(c.ftype))], {encoding: 'utf8', env})
    expect(r.status, r.stderr.slice(-3000)).toBe(0)
    const ours = path.join(work, `${key}-ours-${c.label.replace(/\W+/g, '_')}.gguf`)
    const options: WriteOptions = {
      ...(c.ftype === 'f16' ? {dtype: 'F16'} : {dtype: 'F16', quantization: quantizationOf(c.ftype)}),
      ...(c.output ? {ggufOutputTensorType: c.output.toLowerCase()} : {}),
      ...(c.token ? {ggufTokenEmbeddingType: c.token.toLowerCase()} : {}),
    }
    await drain(writeCheckpoint(source, 'gguf', ours, options))
    const [a, b] = [await types(ours), await types(theirs)]
    expect(a.types).toEqual(b.types)
    // The override really set token_embd (when its rows are whole blocks of the type, no fallback).
    const wanted = (c.token ?? c.output)!
    const cols = source.tensors.find((t) => t.name === 'token_embeddings.weight')!.shape[1]!
    if (cols % GGML_BLOCK[wanted].elements === 0) expect(a.types['token_embd.weight']).toBe(wanted)
    else expect(a.types['token_embd.weight']).not.toBe(wanted)
    expect(Buffer.compare(a.embd, b.embd)).toBe(0)
  }, 120_000)
})

describe('convert --output-tensor-type on the CLI', () => {
  const run = (args: string[]) => spawnSync(process.execPath, [DEV, 'convert', FIXTURE, ...args], {cwd: work, encoding: 'utf8', env: {...process.env, NO_COLOR: '1'}})
  const stderrLines = (s: string) => s.trim().split('\n').filter((l) => l && !/npm warn/.test(l))

  it('sets the tied head (token_embd) under a quantized file type', async () => {
    const out = path.join(work, 'cli-out.gguf')
    const r = run(['--to', 'gguf', '--dtype', 'q4_0', '--output-tensor-type', 'q8_0', '--out', out])
    expect(r.status, r.stderr).toBe(0)
    expect((await types(out)).types['token_embd.weight']).toBe('Q8_0')
  }, 120_000)

  it('--dtype Q4_K (llama-quantize\'s alias) writes the Q4_K_M file type, Q6_K its own', async () => {
    for (const [dtype, name, ftype] of [['Q4_K', 'model-q4_k_m.gguf', 'MOSTLY_Q4_K_M'], ['q3_k', 'model-q3_k_m.gguf', 'MOSTLY_Q3_K_M'], ['q6_k', 'model-q6_k.gguf', 'MOSTLY_Q6_K']] as const) {
      const out = path.join(work, `alias-${dtype}`)
      const r = run(['--to', 'gguf', '--dtype', dtype, '--out', out])
      expect(r.status, r.stderr).toBe(0)
      const f = await openGguf(path.join(out, name))
      expect(f.kv.get('general.file_type')?.value).toBe(LLAMA_FILE_TYPE[ftype])
      await f.close()
    }
    const r = run(['--to', 'hf', '--dtype', 'q4_k', '--out', path.join(work, 'alias-hf')])
    expect(r.status).toBe(2)
    expect(r.stderr).toContain('--dtype q4_k is for gguf targets, not hf')
  }, 180_000)

  it('refuses an unknown type and a float file type with one line, exit 2, nothing written', async () => {
    for (const [args, line] of [
      [['--to', 'gguf', '--dtype', 'q4_0', '--output-tensor-type', 'iq4_nl'], '--output-tensor-type iq4_nl is not a type this tool writes'],
      [['--to', 'gguf', '--dtype', 'f16', '--output-tensor-type', 'q8_0'], '--output-tensor-type applies to quantized GGUF types'],
      [['--to', 'hf', '--output-tensor-type', 'q8_0'], '--output-tensor-type is for gguf targets, not hf'],
    ] as const) {
      const out = path.join(work, `refused-${args.join('')}`)
      const r = run([...args, '--out', out])
      expect(r.status, r.stderr).toBe(2)
      expect(stderrLines(r.stderr)).toHaveLength(1)
      expect(r.stderr).toContain(line)
      await expect(fs.access(out)).rejects.toThrow()
    }
  }, 120_000)
})
