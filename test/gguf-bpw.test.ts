/**
 * Bits per weight of a 1.1B-shape OpenELM (issue 14: Q4_K_M within 1% of llama-quantize's own
 * figure for that shape): real llama-quantize (libllama's `llama_model_quantize` through ctypes,
 * `dry_run`, so it plans every tensor and sums the sizes without reading any data) run on a
 * header-only F32 GGUF of the 1.1B shape (a sparse file: our header, the data area left as a hole),
 * against the plan our writer uses (`ggufTensors`, the same plan bench/gguf-bpw.ts prints).
 */
import {spawnSync} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {ggufTensors} from '../src/formats/gguf/index.js'
import {openelmMetadata} from '../src/formats/gguf/metadata.js'
import {GGUF_FTYPES} from '../src/formats/gguf/presets.js'
import {tensorBytes} from '../src/formats/gguf/read.js'
import {loadVocab} from '../src/formats/gguf/tokenizer.js'
import {LLAMA_FILE_TYPE} from '../src/formats/gguf/types.js'
import {planGguf} from '../src/formats/gguf/write.js'
import {type Checkpoint} from '../src/formats/types.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'

const repo = path.resolve(import.meta.dirname, '..')
const FTYPES = ['q4_k_m', 'q2_k', 'q3_k_m', 'q4_k_s', 'q5_k_m', 'q6_k', 'q4_0', 'q8_0']
let work: string
let source: Checkpoint
/** llama-quantize's dry run per file type: each tensor's type, and its totals. */
const theirs = new Map<string, {types: Record<string, string>; mib: number; bpw: number}>()

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-gguf-bpw-'))
  source = synthCheckpoint(presetConfig('1.1B'), {seed: 0})
  const {inputs} = ggufTensors(source, 'F32')
  const vocab = await loadVocab([], source.config.vocab_size, {bos: source.config.bos_token_id, eos: source.config.eos_token_id})
  const plan = planGguf(openelmMetadata(source.config, {name: 'OpenELM-1_1B', fileType: 'ALL_F32', vocab}), inputs)
  const f32 = path.join(work, 'f32.gguf')
  const fh = await fs.open(f32, 'w')
  await fh.write(plan.header)
  await fh.truncate(plan.size)
  await fh.close()
  const r = spawnSync('/usr/bin/python3', [path.join(repo, 'test/python/llama_quantize.py'), f32, ...FTYPES.map((f) => `${path.join(work, `${f}.gguf`)}:${LLAMA_FILE_TYPE[GGUF_FTYPES[f]!.fileType]}`)], {encoding: 'utf8', env: {...process.env, LQ_DRY_RUN: '1'}, maxBuffer: 64 << 20})
  expect(r.status, r.stderr.slice(-3000)).toBe(0)
  const log = r.stdout + r.stderr
  let types: Record<string, string> = {}
  let i = 0
  for (const line of log.split('\n')) {
    const t = /^\[\s*\d+\/\s*\d+\]\s+(\S+)\s+- \[[^\]]*\], type =\s+(\w+), size =.*?(?:\((\w+)\))?\s*$/.exec(line)
    if (t) types[t[1]!] = (t[3] ?? t[2]!).toUpperCase()
    const q = /quant size\s*=\s*([\d.]+) MiB \(([\d.]+) BPW\)/.exec(line)
    if (q) {
      theirs.set(FTYPES[i++]!, {types, mib: Number(q[1]), bpw: Number(q[2])})
      types = {}
    }
  }
  expect(theirs.size).toBe(FTYPES.length)
}, 300_000)
afterAll(async () => {
  await source?.close()
  await fs.rm(work, {recursive: true, force: true})
})

describe('bits per weight of the 1.1B shape against llama-quantize\'s dry run', () => {
  it.each(FTYPES)('%s: every tensor\'s type, the size and the bits per weight equal llama-quantize\'s', (ftype) => {
    const {inputs} = ggufTensors(source, ftype)
    let bytes = 0
    let params = 0
    for (const t of inputs) {
      params += t.source.shape.reduce((a, b) => a * b, 1)
      bytes += tensorBytes(t.name, t.type, [...t.source.shape].reverse())
    }
    const lq = theirs.get(ftype)!
    expect(Object.fromEntries(inputs.map((t) => [t.name, t.type]))).toEqual(lq.types)
    const mib = bytes / 2 ** 20
    const bpw = (bytes * 8) / params
    // llama-quantize prints MiB and BPW to two decimals.
    expect(Math.abs(mib - lq.mib)).toBeLessThanOrEqual(0.005 + 1e-9)
    expect(Math.abs(bpw - lq.bpw)).toBeLessThanOrEqual(0.005 + 1e-9)
    expect(Math.abs(bpw - lq.bpw) / lq.bpw).toBeLessThan(0.01)
  })

  it('Q4_K_M of the 1.1B shape is 5.02 bits per weight (llama-quantize: 5.02)', () => {
    expect(theirs.get('q4_k_m')!.bpw).toBe(5.02)
  })
})
