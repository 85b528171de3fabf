/**
 * llama-quantize's file types (`--dtype q4_k_m` …): for every tensor of an OpenELM model our plan
 * picks the type real llama-quantize picks (libllama's `llama_model_quantize` through ctypes, run
 * on our F32 GGUF), on a shape whose rows are whole 256-value super-blocks and on the tiny fixture
 * (every fallback). Where the types agree, our file holds the very bytes llama-quantize writes, and
 * `verify --against` proves llama-quantize's own K-quant files exactly.
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
import {LLAMA_FILE_TYPE} from '../src/formats/gguf/types.js'
import {type Checkpoint} from '../src/formats/types.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {verify} from '../src/verify/index.js'
import {compareStored, decideRelation} from '../src/verify/exact.js'
import {runForward} from '../src/verify/engine/index.js'
import {runtimeCheck} from '../src/verify/runtime.js'
import {superBlockConfig} from './helpers/shapes.js'

/** blk.N.ffn_gate/ffn_up → layers.N.ffn.proj_1, blk.N.attn_qkv → layers.N.attn.qkv_proj, … (the tensors the bugs touch). */
function gguf2canonical(name: string): string {
  const [, layer, rest] = /^blk\.(\d+)\.(.*)\.weight$/.exec(name)!
  const map: Record<string, string> = {ffn_gate: 'ffn.proj_1', ffn_up: 'ffn.proj_1', ffn_down: 'ffn.proj_2', attn_qkv: 'attn.qkv_proj', attn_output: 'attn.out_proj'}
  return `layers.${layer}.${map[rest!]}.weight`
}

const repo = path.resolve(import.meta.dirname, '..')
const FTYPES = Object.keys(GGUF_FTYPES)
/** File types whose files are compared byte for byte with llama-quantize's (the others: types only). */
const BYTES = ['q2_k', 'q3_k_m', 'q4_k_m', 'q5_k_s', 'q6_k', 'q4_0']
let work: string

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-gguf-presets-'))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

async function tensors(file: string): Promise<Map<string, {type: string; bytes: Buffer}>> {
  const f = await openGguf(file)
  try {
    const out = new Map<string, {type: string; bytes: Buffer}>()
    for (const t of f.tensors) out.set(t.info.name, {type: t.type, bytes: Buffer.from(await f.readRaw(t))})
    return out
  } finally {
    await f.close()
  }
}

/** Our F32 GGUF of `source`, then llama-quantize of it at every file type, in one Python run. */
async function llamaQuantize(source: Checkpoint, label: string): Promise<Map<string, string>> {
  const f32 = path.join(work, `${label}-f32.gguf`)
  await drain(writeCheckpoint(source, 'gguf', f32, {dtype: 'F32'}))
  const outs = new Map(FTYPES.map((f) => [f, path.join(work, `${label}-lq-${f}.gguf`)]))
  const r = spawnSync('/usr/bin/python3', [path.join(repo, 'test/python/llama_quantize.py'), f32, ...FTYPES.map((f) => `${outs.get(f)}:${LLAMA_FILE_TYPE[GGUF_FTYPES[f]!.fileType]}`)], {encoding: 'utf8'})
  expect(r.status, r.stderr.slice(-3000)).toBe(0)
  return outs
}

const shapes: [string, () => Promise<Checkpoint>][] = [
  ['256-multiple synth (8 layers)', async () => synthCheckpoint(superBlockConfig(8, 64), {seed: 5})],
  ['tiny fixture (fallbacks)', () => openCheckpoint(path.join(repo, 'fixtures/tiny-hf'))],
]

describe.each(shapes)('llama-quantize file types on the %s', (label, make) => {
  let source: Checkpoint
  let lq: Map<string, string>
  const key = label.split(' ')[0]!
  beforeAll(async () => {
    source = await make()
    lq = await llamaQuantize(source, key)
  }, 120_000)
  afterAll(async () => {
    await source.close()
  })

  it('every tensor gets the type llama-quantize gives it, for every file type', async () => {
    for (const ftype of FTYPES) {
      const ours = path.join(work, `${key}-ours-${ftype}.gguf`)
      const result = await drain(writeCheckpoint(source, 'gguf', ours, {dtype: 'F16', quantization: quantizationOf(ftype)}))
      expect(result.target.quantization?.mode).toBe(ftype)
      const theirs = await openGguf(lq.get(ftype)!)
      const mine = await openGguf(ours)
      const types = (f: typeof mine) => Object.fromEntries(f.tensors.map((t) => [t.info.name, t.type]))
      expect({ftype, types: types(mine)}).toEqual({ftype, types: types(theirs)})
      expect(mine.kv.get('general.file_type')?.value).toBe(theirs.kv.get('general.file_type')?.value)
      await theirs.close()
      await mine.close()
      if (!BYTES.includes(ftype)) await fs.rm(ours)
    }
  }, 300_000)

  it('our files hold llama-quantize\'s bytes, tensor for tensor', async () => {
    for (const ftype of BYTES) {
      const [a, b] = [await tensors(path.join(work, `${key}-ours-${ftype}.gguf`)), await tensors(lq.get(ftype)!)]
      for (const [name, t] of b) expect({ftype, name, same: Buffer.compare(a.get(name)!.bytes, t.bytes) === 0}).toEqual({ftype, name, same: true})
    }
  })

  it.skipIf(key !== '256-multiple')('our q4_k_m file runs in llama.cpp within its tolerance and verifies exactly', async () => {
    const report = await verify(path.join(work, `${key}-ours-q4_k_m.gguf`), {against: source, runtime: 'llama.cpp'})
    expect(report.failures).toEqual([])
    expect(report.verdict).toBe('exact')
    expect(report.runtime).toMatchObject({runtime: 'llama.cpp', storage: 'gguf_q4_k', pass: true})
    expect(report.quality!.meanKl).toBeGreaterThan(0)
  })

  it.skipIf(key !== '256-multiple')('the q2_k, q3_k_m, q5_k_s and q6_k files run in llama.cpp within their tolerances (every K block type)', async () => {
    const tokens = Array.from({length: 16}, (_, i) => (i * 37 + 1) % 256)
    const seen = new Set<string>()
    for (const ftype of ['q2_k', 'q3_k_m', 'q5_k_s', 'q6_k']) {
      const file = path.join(work, `${key}-ours-${ftype}.gguf`)
      const gguf = await openCheckpoint(file)
      try {
        for (const t of (await tensors(file)).values()) seen.add(t.type)
        const engine = await runForward(gguf, tokens)
        const check = await runtimeCheck('llama.cpp', gguf, file, tokens, {name: 'ts', logits: engine.logits, vocab: 256}, 'cpu')
        expect({ftype, storage: check.storage, failures: check.failures}).toEqual({ftype, storage: `gguf_${GGUF_FTYPES[ftype]!.base.toLowerCase()}`, failures: []})
        expect(check.meanKl).toBeGreaterThan(0) // llama.cpp really ran (its Q8_K activations differ from f32)
      } finally {
        await gguf.close()
      }
    }
    expect([...seen].filter((t) => t.endsWith('_K')).sort()).toEqual(['Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K'])
  })

  it.skipIf(key !== '256-multiple')('GGUF → GGUF copies blocks whose type does not change, as llama-quantize does', async () => {
    const q4km = path.join(work, `${key}-ours-q4_k_m.gguf`)
    const original = await tensors(q4km)
    const gguf = await openCheckpoint(q4km)
    try {
      const kept = path.join(work, `${key}-kept.gguf`)
      const result = await drain(writeCheckpoint(gguf, 'gguf', kept, {}))
      expect(result.notes.join('\n')).toContain(`${[...original.values()].filter((t) => t.type.startsWith('Q')).length} tensors already in their target type were copied block for block`)
      for (const [name, t] of await tensors(kept)) expect({name, type: t.type, same: Buffer.compare(t.bytes, original.get(name)!.bytes) === 0}).toEqual({name, type: original.get(name)!.type, same: true})
      // To q4_k_s: the tensors that stay Q4_K/Q6_K are copied; the others are quantized from the dequantized values.
      const s = path.join(work, `${key}-small.gguf`)
      await drain(writeCheckpoint(gguf, 'gguf', s, {quantization: quantizationOf('q4_k_s')}))
      const smaller = await tensors(s)
      const same = [...smaller].filter(([name, t]) => t.type === original.get(name)!.type && t.type.startsWith('Q'))
      expect(same.length).toBeGreaterThan(0)
      for (const [name, t] of same) expect({name, same: Buffer.compare(t.bytes, original.get(name)!.bytes) === 0}).toEqual({name, same: true})
      // Without the stored blocks, quantizing the dequantized K-quant values again changes codes:
      // the copy is what keeps the file lossless.
      const again = path.join(work, `${key}-again.gguf`)
      await drain(writeCheckpoint({...gguf, stored: undefined}, 'gguf', again, {}))
      const changed = [...(await tensors(again))].filter(([name, t]) => Buffer.compare(t.bytes, original.get(name)!.bytes) !== 0)
      expect(changed.length).toBeGreaterThan(0)
    } finally {
      await gguf.close()
    }
  })

  it.skipIf(key !== '256-multiple')('K-quant writer bugs fail the exact check, naming the tensor', async () => {
    // Each rewrites one super-block of one tensor of our q4_k_m file the way a broken writer would.
    const q4km = path.join(work, `${key}-ours-q4_k_m.gguf`)
    const file = await openGguf(q4km)
    const q4k = file.tensors.find((t) => t.type === 'Q4_K' && t.info.name.startsWith('blk.'))!
    const q6k = file.tensors.find((t) => t.type === 'Q6_K' && t.info.name.startsWith('blk.'))!
    await file.close()
    const bugs: [string, typeof q4k, (block: Uint8Array) => void][] = [
      // Q4_K: d, dmin (f16), 12 bytes of 6-bit scales/mins, 128 bytes of 4-bit codes.
      ['one code off by one', q4k, (b) => { const lo = b[16]! & 0x0f; b[16] = (b[16]! & 0xf0) | (lo === 15 ? 14 : lo + 1) }],
      ['scale and min of a sub-block swapped', q4k, (b) => { [b[4], b[8]] = [b[8]!, b[4]!] }],
      // Q6_K: 128 bytes low bits, 64 bytes high bits, 16 int8 scales, d (f16) last.
      ['d stored as bf16', q6k, (b) => {
        const h = b[208]! | (b[209]! << 8)
        const f = new Float32Array([((h & 0x8000) ? -1 : 1) * (1 + (h & 0x3ff) / 1024) * 2 ** (((h >>> 10) & 0x1f) - 15)])
        const bf = new Uint32Array(f.buffer)[0]! >>> 16
        b[208] = bf & 0xff
        b[209] = bf >>> 8
      }],
    ]
    for (const [bug, t, inject] of bugs) {
      const bad = path.join(work, `${key}-bug.gguf`)
      await fs.copyFile(q4km, bad)
      const handle = await fs.open(bad, 'r+')
      const block = Buffer.alloc(t.type === 'Q4_K' ? 144 : 210)
      const at = t.fileOffset + block.byteLength * 3
      await handle.read(block, 0, block.byteLength, at)
      const before = Buffer.from(block)
      inject(block)
      expect(Buffer.compare(block, before)).not.toBe(0)
      await handle.write(block, 0, block.byteLength, at)
      await handle.close()
      const opened = await openCheckpoint(bad)
      // Only the touched tensor and one untouched one are re-encoded (the K searches are slow in a test).
      const model = {...opened, tensors: opened.tensors.filter((r) => [gguf2canonical(t.info.name), 'layers.7.attn.out_proj.weight'].includes(r.name))}
      expect(model.tensors.length).toBe(2)
      const exact = await compareStored(source, model)
      const relation = await decideRelation(source, model, exact)
      await opened.close()
      expect({bug, mismatching: exact.mismatching, label: exact.first?.label, relation: relation.relation})
        .toEqual({bug, mismatching: [gguf2canonical(t.info.name)], label: t.info.name, relation: 'mismatch'})
    }
  })

  it('verify --against proves llama-quantize\'s own files exactly', async () => {
    for (const ftype of ['q4_k_m', 'q3_k_s']) {
      const report = await verify(lq.get(ftype)!, {against: source, runtime: 'none'})
      expect({ftype, failures: report.failures, verdict: report.verdict, mismatching: report.weights!.mismatching}).toEqual({ftype, failures: [], verdict: 'exact', mismatching: []})
      expect(report.weights!.tensors.every((t) => t.identicalElements === t.elements)).toBe(true)
    }
  })
})
