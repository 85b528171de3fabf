/**
 * CoreNet LoRA/DoRA checkpoints (fixtures/corenet/peft, real torch.save): the reader merges the
 * adapters into the base weights, and the merged weights equal what CoreNet's own merge computes in
 * PyTorch (test/python/peft_merge.py); settings the checkpoint lacks, malformed adapters and flags
 * that do not apply are refused with one typed error.
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {ConfigError, FormatError, MappingError, type OpenElmError, UsageError} from '../src/errors.js'
import {NO_MERGE_REASONS} from '../src/formats/corenet/peft.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {openSafetensors} from '../src/formats/safetensors/read.js'
import {FORMAT_NAMES, type Checkpoint, type PeftOptions, type ReadOptions} from '../src/formats/types.js'
import {inspect} from '../src/inspect.js'
import {drain} from '../src/progress.js'
import {readChunks, readFloat32} from '../src/tensor/record.js'

const ROOT = path.resolve(import.meta.dirname, '..')
const PEFT = path.join(ROOT, 'fixtures', 'corenet', 'peft')
const LORA = path.join(PEFT, 'lora.pt')
const DORA = path.join(PEFT, 'dora.pt')
const TRAINING = path.join(PEFT, 'lora_training.pt')
const ADAPTER = path.join(PEFT, 'lora_adapter.pt')
const BASE = path.join(ROOT, 'fixtures', 'corenet', 'state_dict_f32.pt')
const TINY_HF = path.join(ROOT, 'fixtures', 'tiny-hf')
const PY = '/usr/bin/python3'
const MERGE = path.join(ROOT, 'test', 'python', 'peft_merge.py')
const expected = JSON.parse(readFileSync(path.join(PEFT, 'expected.json'), 'utf8')) as {files: Record<string, {modules?: string[]; r?: number; alpha?: number}>}
const tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-peft-'))
afterAll(() => rmSync(tmp, {recursive: true, force: true}))

const LORA_READ: ReadOptions = {peft: {loraAlpha: 8, embeddingAdapter: 'merge'}}
const DORA_READ: ReadOptions = {peft: {loraAlpha: 3}}

async function withCheckpoint<T>(p: string, options: ReadOptions, use: (c: Checkpoint) => Promise<T>): Promise<T> {
  const c = await openCheckpoint(p, options)
  try {
    return await use(c)
  } finally {
    await c.close()
  }
}

/** CoreNet's merges in PyTorch, made once (one Python process): job name → {canonical name: f32 values}. */
const MERGE_JOBS = {
  lora: {checkpoint: LORA, alpha: 8},
  lora16: {checkpoint: LORA, alpha: 16},
  dora: {checkpoint: DORA, alpha: 3},
  trainingModel: {checkpoint: TRAINING, alpha: 8, key: 'model_state_dict'},
  trainingEma: {checkpoint: TRAINING, alpha: 8, key: 'ema_state_dict'},
  baseAdapter: {checkpoint: BASE, alpha: 8, adapter: ADAPTER},
}
let mergedByTorch: Promise<Map<string, Map<string, Float32Array>>> | undefined

async function torchMerged(job: keyof typeof MERGE_JOBS): Promise<Map<string, Float32Array>> {
  mergedByTorch ??= (async () => {
    const jobs = Object.entries(MERGE_JOBS).map(([name, j]) => ({...j, out: path.join(tmp, `merged-${name}.safetensors`)}))
    writeFileSync(path.join(tmp, 'jobs.json'), JSON.stringify(jobs))
    execFileSync(PY, [MERGE, path.join(tmp, 'jobs.json')])
    const all = new Map<string, Map<string, Float32Array>>()
    for (const name of Object.keys(MERGE_JOBS)) {
      const file = await openSafetensors(path.join(tmp, `merged-${name}.safetensors`))
      try {
        all.set(name, new Map(await Promise.all(file.tensors.map(async (t) => [t.name, await readFloat32(t)] as const))))
      } finally {
        await file.close()
      }
    }
    return all
  })()
  return (await mergedByTorch).get(job)!
}

/** Worst per-tensor max |Δ| / max(1, max |ref|) over the tensors of `c` (rows common to both). */
async function worstRelative(c: Checkpoint, ref: Map<string, Float32Array>): Promise<number> {
  let worst = 0
  expect(new Set(c.tensors.map((t) => t.name))).toEqual(new Set(ref.keys()))
  for (const t of c.tensors) {
    const mine = await readFloat32(t)
    const theirs = ref.get(t.name)!
    const n = Math.min(mine.length, theirs.length)
    let maxAbs = 0
    let scale = 1
    for (let i = 0; i < n; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(mine[i]! - theirs[i]!))
      scale = Math.max(scale, Math.abs(theirs[i]!))
    }
    worst = Math.max(worst, maxAbs / scale)
  }
  return worst
}

async function rejection(p: Promise<unknown>): Promise<OpenElmError> {
  try {
    await p
  } catch (error) {
    return error as OpenElmError
  }
  throw new Error('expected a rejection')
}

describe('reading CoreNet PEFT checkpoints', () => {
  it('finds every adapter CoreNet named (LoRA: embedding + 16 linear layers), with rank, alpha and scale', async () => {
    await withCheckpoint(LORA, LORA_READ, async (c) => {
      const info = c.extras.peft!
      expect(info.kind).toBe('lora')
      expect(info.modules.map((m) => m.module)).toEqual(expected.files['lora.pt']!.modules)
      expect(info.modules).toHaveLength(17)
      expect(new Set(info.modules.map((m) => `${m.adapterName} r${m.rank} a${m.alpha} s${m.scale} ${m.kind}`))).toEqual(new Set(['lora r4 a8 s2 lora']))
      expect(info.modules[0]).toMatchObject({module: 'token_embeddings', tensor: 'token_embeddings.weight', type: 'embedding'})
      expect(info).toMatchObject({alphaSource: 'flag', embedding: 'merge', adapterKey: '', base: {path: LORA, format: 'corenet', key: ''}, unresolved: []})
      // Canonical tensors only: no base_layer / lora_* names reach the writers.
      expect(c.tensors.map((t) => t.name).filter((n) => n.includes('lora') || n.includes('base_layer'))).toEqual([])
      expect(c.tensors).toHaveLength(34)
      expect(c.extras.dtype).toBe('F32')
    })
  })

  it('merges LoRA exactly as CoreNet does (W + alpha/r · B·A; the embedding row-wise), within 1e-6 of PyTorch', async () => {
    const ref = await torchMerged('lora')
    await withCheckpoint(LORA, LORA_READ, async (c) => {
      expect(await worstRelative(c, ref)).toBeLessThan(1e-6)
      // The adapters do change the weights: a reader that ignored them would be far off.
      const base = await withCheckpoint(BASE, {}, async (b) => readFloat32(b.tensors.find((t) => t.name === 'layers.0.attn.qkv_proj.weight')!))
      const merged = ref.get('layers.0.attn.qkv_proj.weight')!
      expect(Math.max(...merged.map((v, i) => Math.abs(v - base[i]!)))).toBeGreaterThan(0.01)
    })
  })

  it('merges DoRA as CoreNet does (m / ‖W + s·B·A‖ per output row), within 1e-6 of PyTorch', async () => {
    const ref = await torchMerged('dora')
    await withCheckpoint(DORA, DORA_READ, async (c) => {
      const info = c.extras.peft!
      expect(info.kind).toBe('dora')
      expect(info.modules.map((m) => m.module)).toEqual(expected.files['dora.pt']!.modules)
      expect(info.embedding).toBeUndefined()
      expect(new Set(info.modules.map((m) => `${m.rank} ${m.scale}`))).toEqual(new Set(['2 1.5']))
      expect(await worstRelative(c, ref)).toBeLessThan(1e-6)
    })
  })

  it('gives the same bytes whatever the chunking (rows split across reads, DoRA norms per row)', async () => {
    await withCheckpoint(DORA, DORA_READ, async (c) => {
      const t = c.tensors.find((x) => x.name === 'layers.2.ffn.proj_1.weight')!
      const whole = await t.read()
      const parts: Uint8Array[] = []
      for await (const chunk of readChunks(t, 1000)) parts.push(chunk.slice())
      expect(Buffer.concat(parts).equals(Buffer.from(whole))).toBe(true)
      const odd = await t.read(6, 4 * 70 + 2)
      expect(Buffer.from(odd).equals(Buffer.from(whole.subarray(6, 4 * 70 + 2)))).toBe(true)
    })
  })

  it('reads a training checkpoint: the model or the EMA dict, without its adapters\' optimizer state', async () => {
    const model = await torchMerged('trainingModel')
    const ema = await torchMerged('trainingEma')
    await withCheckpoint(TRAINING, LORA_READ, async (c) => {
      expect(await worstRelative(c, model)).toBeLessThan(1e-6)
      expect(c.extras.training).toMatchObject({iterations: 4375, epoch: 3, hasOptimizer: true, hasEma: true})
      expect(c.extras.training!.raw).toBeUndefined()
      expect(c.extras.notes.join('\n')).toMatch(/optimizer state belongs to the adapters/)
      expect(c.extras.peft!.adapterKey).toBe('model_state_dict')
    })
    await withCheckpoint(TRAINING, {...LORA_READ, ema: true}, async (c) => {
      expect(await worstRelative(c, ema)).toBeLessThan(1e-6)
      expect(c.extras.peft!.adapterKey).toBe('ema_state_dict')
      // The EMA adapters differ from the model's: reading the wrong dict would show.
      expect(await worstRelative(c, model)).toBeGreaterThan(1e-3)
    })
  })

  it('takes alpha and rslora from the run\'s YAML (--lora-config) and checks it against the checkpoint', async () => {
    const yaml = {file: path.join(PEFT, 'lora.yaml'), layers: (await import('../src/formats/corenet/peft.js')).loraConfigFromYaml(
      (await import('../src/formats/corenet/yaml.js')).parseYaml(readFileSync(path.join(PEFT, 'lora.yaml'), 'utf8')), 'lora.yaml')}
    expect(yaml.layers.map((l) => [l.regex, l.moduleType, l.r, l.alpha, l.rslora, l.dora])).toEqual([
      ['.*token_embedding.*', 'embedding', 4, 8, false, false],
      ['.*out_proj.*', 'linear', 4, 8, false, false],
      ['.*qkv_proj.*', 'linear', 4, 8, false, false],
      ['.*proj_\\d.*', 'linear', 4, 8, false, false],
    ])
    const viaFlag = await withCheckpoint(LORA, LORA_READ, async (c) => Promise.all(c.tensors.map((t) => t.read())))
    const viaYaml = await withCheckpoint(LORA, {peft: {loraConfig: yaml, embeddingAdapter: 'merge'}}, async (c) => {
      expect(c.extras.peft!.alphaSource).toBe('lora-config')
      return Promise.all(c.tensors.map((t) => t.read()))
    })
    viaYaml.forEach((b, i) => expect(Buffer.from(b).equals(Buffer.from(viaFlag[i]!))).toBe(true))

    // use_rslora: scaling = alpha / sqrt(r) = 8 / 2 = 4, i.e. what alpha 16 gives without it.
    const rs = {file: 'rs.yaml', layers: yaml.layers.map((l) => ({...l, rslora: true}))}
    const ref = await torchMerged('lora16')
    await withCheckpoint(LORA, {peft: {loraConfig: rs, embeddingAdapter: 'merge'}}, async (c) => {
      expect(new Set(c.extras.peft!.modules.map((m) => m.scale))).toEqual(new Set([4]))
      expect(await worstRelative(c, ref)).toBeLessThan(1e-6)
    })

    // A config that contradicts the checkpoint is refused, naming the module.
    const wrongRank = {file: 'r.yaml', layers: yaml.layers.map((l) => ({...l, r: 8}))}
    const e1 = await rejection(openCheckpoint(LORA, {peft: {loraConfig: wrongRank, embeddingAdapter: 'merge'}}))
    expect(e1).toBeInstanceOf(ConfigError)
    expect(e1.message).toMatch(/token_embeddings has rank 4 in the checkpoint, r 8 in the config/)
    const wrongDora = {file: 'd.yaml', layers: yaml.layers.map((l) => ({...l, dora: l.moduleType === 'linear'}))}
    const e2 = await rejection(openCheckpoint(LORA, {peft: {loraConfig: wrongDora, embeddingAdapter: 'merge'}}))
    expect(e2.message).toMatch(/layers\.0\.attn\.qkv_proj is LoRA in the checkpoint, use_dora true/)
    const noFfn = {file: 'f.yaml', layers: yaml.layers.filter((l) => !l.regex.includes('proj_'))}
    const e3 = await rejection(openCheckpoint(LORA, {peft: {loraConfig: noFfn, embeddingAdapter: 'merge'}}))
    expect(e3.message).toMatch(/no regex of model\.lora\.config matches layers\.0\.ffn\.proj_1/)
    const twice = {file: 't.yaml', layers: [...yaml.layers, {...yaml.layers[1]!, regex: '.*attn.*'}]}
    const e4 = await rejection(openCheckpoint(LORA, {peft: {loraConfig: twice, embeddingAdapter: 'merge'}}))
    expect(e4.message).toMatch(/layers\.0\.attn\.qkv_proj matches 2 regexes/)
  })

  it('--embedding-adapter drop keeps the base embedding bit for bit', async () => {
    const base = await withCheckpoint(BASE, {}, async (c) => c.tensors.find((t) => t.name === 'token_embeddings.weight')!.read())
    await withCheckpoint(LORA, {peft: {loraAlpha: 8, embeddingAdapter: 'drop'}}, async (c) => {
      const emb = await c.tensors.find((t) => t.name === 'token_embeddings.weight')!.read()
      expect(Buffer.from(emb).equals(Buffer.from(base))).toBe(true)
      expect(c.extras.peft!.embedding).toBe('drop')
      expect(c.extras.notes.join('\n')).toMatch(/embedding adapter was dropped/)
    })
  })

  it('merges adapters saved apart (--adapter) into a CoreNet base and into a HF base with fewer vocabulary rows', async () => {
    const ref = await torchMerged('baseAdapter')
    const read: ReadOptions = {peft: {...LORA_READ.peft, adapter: ADAPTER}}
    await withCheckpoint(BASE, read, async (c) => {
      expect(c.extras.peft).toMatchObject({adapterFile: ADAPTER, adapterKey: '', base: {path: BASE, format: 'corenet', key: ''}})
      expect(c.extras.peft!.modules).toHaveLength(17)
      expect(await worstRelative(c, ref)).toBeLessThan(1e-6)
    })
    await withCheckpoint(TINY_HF, read, async (c) => {
      expect(c.format).toBe('hf')
      expect(c.config.vocab_size).toBe(128)
      expect(c.extras.notes.join('\n')).toMatch(/embedding adapter covers 160 rows, the base 128/)
      expect(await worstRelative(c, ref)).toBeLessThan(1e-6) // first 128 rows of the embedding
    })
  })

  it('inspect shows the adapters and what is missing before a conversion, without refusing', async () => {
    const report = await inspect(LORA, {peft: {describeOnly: true}})
    expect(report.peft).toMatchObject({kind: 'lora', alphaSource: 'unknown', embedding: 'unresolved'})
    expect(report.peft!.modules.every((m) => m.alpha === undefined && m.scale === undefined && m.rank === 4)).toBe(true)
    expect(report.peft!.unresolved).toHaveLength(2)
    expect(report.peft!.unresolved[0]).toMatch(/lora_alpha is not stored in CoreNet checkpoints/)
    expect(report.peft!.unresolved[1]).toMatch(/--embedding-adapter merge .* or drop/)
    expect(report.tensorCount).toBe(34)
    const plain = await inspect(BASE, {peft: {describeOnly: true}})
    expect(plain.peft).toBeUndefined()
  })
})

describe('refusals', () => {
  it('refuses to merge without alpha or without an embedding choice, before reading any weight', async () => {
    const e = await rejection(openCheckpoint(LORA))
    expect(e).toBeInstanceOf(UsageError)
    expect(e.code).toBe('peft.unresolved')
    expect(e.message).toMatch(/lora_alpha is not stored .*; token_embeddings has a LoRA adapter/)
    const e2 = await rejection(openCheckpoint(LORA, {peft: {loraAlpha: 8}}))
    expect(e2.message).not.toMatch(/lora_alpha/)
    expect(e2.message).toMatch(/--embedding-adapter merge/)
    // DoRA without an embedding adapter needs alpha only.
    const e3 = await rejection(openCheckpoint(DORA))
    expect(e3.message).toMatch(/lora_alpha is not stored/)
    expect(e3.message).not.toMatch(/embedding/)
  })

  it('refuses flags that do not apply', async () => {
    const cases: [string, PeftOptions, RegExp][] = [
      [BASE, {loraAlpha: 8}, /--lora-alpha does not apply: .* has no LoRA\/DoRA adapters/],
      [TINY_HF, {loraAlpha: 8, embeddingAdapter: 'drop'}, /--lora-alpha, --embedding-adapter do not apply/],
      [DORA, {loraAlpha: 3, embeddingAdapter: 'merge'}, /--embedding-adapter does not apply: .* has no embedding adapter/],
      [LORA, {loraAlpha: 8, embeddingAdapter: 'merge', adapter: ADAPTER}, /already carries adapters/],
      [BASE, {loraAlpha: 8, embeddingAdapter: 'merge', adapter: LORA}, /holds token_embeddings\.weight, which is not an adapter tensor/],
      [BASE, {loraAlpha: 8, adapter: BASE}, /holds layers\.0\.attn\.k_norm\.weight, which is not an adapter tensor/],
    ]
    for (const [p, peft, message] of cases) {
      const e = await rejection(openCheckpoint(p, {peft}))
      expect(e.message, p).toMatch(message)
      expect(['usage', 'format']).toContain(e.kind)
    }
  })

  it('--no-merge is refused for every target, with the reason', async () => {
    const {peftOptions} = await import('../src/cli/peft.js')
    for (const to of FORMAT_NAMES) {
      const e = await rejection(peftOptions({}, {merge: false, to}))
      expect(e).toBeInstanceOf(UsageError)
      expect(e.message).toBe(`--no-merge: ${NO_MERGE_REASONS[to]}`)
    }
    await expect(peftOptions({'lora-alpha': 'x'})).rejects.toThrow(/--lora-alpha x: expected a positive number/)
    await expect(peftOptions({'lora-alpha': '8', 'lora-config': 'a.yaml'})).rejects.toThrow(/not both/)
    expect(await peftOptions({'lora-alpha': '0.5'})).toEqual({loraAlpha: 0.5})
  })

  it('rejects malformed adapters with a typed error naming the tensor (files made by torch.save)', async () => {
    const q = 'layers.1.attn.qkv_proj'
    const cases: [string, string, new (...a: never[]) => OpenElmError, RegExp][] = [
      ['a-shape', `sd['${q}.lora_A.lora.weight'] = torch.zeros(4, 65)`, FormatError, /lora_A\.lora\.weight has shape \[4, 65\], expected \[4, 64\]/],
      ['b-shape', `sd['${q}.lora_B.lora.weight'] = torch.zeros(96, 3)`, FormatError, /lora_B\.lora\.weight has shape \[96, 3\], expected \[96, 4\]/],
      ['no-b', `del sd['${q}.lora_B.lora.weight']`, FormatError, /layers\.1\.attn\.qkv_proj has no lora_B\.lora/],
      ['two', `sd['${q}.lora_A.other.weight'] = sd['${q}.lora_A.lora.weight']; sd['${q}.lora_B.other.weight'] = sd['${q}.lora_B.lora.weight']`, FormatError, /has 2 adapters \(lora, other\)/],
      ['norm', `sd['layers.0.attn_norm.lora_A.lora.weight'] = torch.zeros(4, 64)`, MappingError, /layers\.0\.attn_norm is not a module CoreNet's LoRA layers wrap/],
      ['emb-on-linear', `sd['${q}.lora_embedding_A.lora'] = torch.zeros(4, 64)`, MappingError, /an embedding adapter on a linear layer/],
      ['bias', `sd['${q}.base_layer.bias'] = torch.zeros(96)`, MappingError, /OpenELM's linear layers have no bias/],
      ['mag', `sd['${q}.lora_magnitude_vector.lora'] = torch.ones(95)`, FormatError, /DoRA magnitude .* has shape \[95\], expected \[96\]/],
      ['base-only', `del sd['${q}.lora_A.lora.weight']; del sd['${q}.lora_B.lora.weight']`, FormatError, /layers\.1\.attn\.qkv_proj\.base_layer\.weight has no adapter tensors beside it/],
      ['emb-short', `sd['token_embeddings.lora_embedding_A.lora'] = torch.zeros(4, 100)`, FormatError, /lora_embedding_A\.lora has shape \[4, 100\], expected \[4, 160\]/],
    ]
    // Every file from one Python process; the last is a DoRA checkpoint with a zero-norm row.
    const script = ['import collections, torch']
    for (const [name, body] of cases) {
      script.push(`sd = collections.OrderedDict(torch.load(${JSON.stringify(LORA)}))`, body, `torch.save(sd, ${JSON.stringify(path.join(tmp, `${name}.pt`))})`)
    }
    script.push(`sd = collections.OrderedDict(torch.load(${JSON.stringify(DORA)}))`,
      `sd['${q}.base_layer.weight'][5] = 0`, `sd['${q}.lora_B.lora.weight'][5] = 0`, `torch.save(sd, ${JSON.stringify(path.join(tmp, 'dora-zero.pt'))})`)
    execFileSync(PY, ['-c', script.join('\n')])
    for (const [name, , type, message] of cases) {
      const e = await rejection(openCheckpoint(path.join(tmp, `${name}.pt`), LORA_READ))
      expect(e, name).toBeInstanceOf(type)
      expect(e.message, name).toMatch(message)
    }
    // A zero-norm DoRA row cannot be normalised: the read fails with the row, never NaN weights.
    await withCheckpoint(path.join(tmp, 'dora-zero.pt'), DORA_READ, async (c) => {
      const e = await rejection(c.tensors.find((t) => t.name === `${q}.weight`)!.read())
      expect(e.message).toMatch(/row 5 of the DoRA weight has norm 0/)
    })
  })
})

describe('convert and inspect commands', () => {
  const dev = path.join(ROOT, 'bin', 'dev.js')
  const cli = (args: string[]) => spawnSync(process.execPath, [dev, ...args], {cwd: tmp, encoding: 'utf8', env: {...process.env, NO_COLOR: '1'}})

  it('convert merges with --lora-config/--embedding-adapter; a .pt output loads in PyTorch with the merged weights', async () => {
    const out = path.join(tmp, 'merged.pt')
    const run = cli(['convert', LORA, '--to', 'corenet', '--out', out, '--lora-config', path.join(PEFT, 'lora.yaml'), '--embedding-adapter', 'merge', '--json'])
    expect(run.status, run.stderr).toBe(0)
    const result = JSON.parse(run.stdout) as {notes: string[]}
    expect(result.notes).toContain('merged LoRA adapters into 17 weights (f32)')
    const ref = await torchMerged('lora')
    const loaded = JSON.parse(execFileSync(PY, ['-c', [
      'import json, sys, torch',
      `sd = torch.load(${JSON.stringify(out)}, weights_only=True)`,
      'print(json.dumps({k: v.flatten().tolist() for k, v in sd.items()}))',
    ].join('\n')], {maxBuffer: 1 << 28}).toString()) as Record<string, number[]>
    expect(new Set(Object.keys(loaded))).toEqual(new Set(ref.keys()))
    for (const [name, values] of Object.entries(loaded)) {
      const theirs = ref.get(name)!
      expect(Math.max(...values.map((v, i) => Math.abs(v - theirs[i]!))), name).toBeLessThan(1e-6)
    }
  })

  it('refuses with one line and exit 2 (missing alpha), before writing anything', () => {
    const run = cli(['convert', LORA, '--to', 'hf', '--out', path.join(tmp, 'a')])
    expect(run.status, run.stderr).toBe(2)
    const lines = run.stderr.trim().split('\n')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^Error: .*lora_alpha is not stored in CoreNet checkpoints/)
    expect(readdirSync(tmp).filter((n) => n === 'a' || n.includes('.openelm-tmp-'))).toEqual([])
  })

  it('inspect prints kind, rank, alpha and the adapted modules', () => {
    const text = cli(['inspect', DORA, '--lora-alpha', '3'])
    expect(text.status, text.stderr).toBe(0)
    expect(text.stdout).toMatch(/peft {8}DoRA, adapter "lora", r 2, alpha 3 \(--lora-alpha\), scale 1\.5; merged into the weights on conversion/)
    expect(text.stdout).toMatch(/16 adapted modules: qkv_proj ×4, out_proj ×4, proj_1 ×4, proj_2 ×4/)
  })
})

it('writes nothing when a conversion is refused', async () => {
  const out = path.join(tmp, 'refused')
  await expect(drain(convert(LORA, 'hf', out, {}, {}))).rejects.toThrow(/lora_alpha/)
  expect(readdirSync(tmp).filter((n) => n.includes('refused'))).toEqual([])
})
