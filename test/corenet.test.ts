/**
 * CoreNet `.pt`: every fixture made by real torch.save reads bit-exact; every file we write loads
 * in real PyTorch bit-exact with dtypes, sharing and training state kept; CLI round trips.
 */
import {createHash} from 'node:crypto'
import {execFileSync, spawnSync} from 'node:child_process'
import {promises as fs, readFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {type CorenetRaw} from '../src/formats/corenet/read.js'
import {type Checkpoint, type ProgressEvent} from '../src/formats/types.js'
import {PyDict, TorchTensor} from '../src/formats/corenet/values.js'
import {expectedTensors} from '../src/model/tensors.js'
import {presetConfig} from '../src/model/presets.js'
import {castRecord, readIntoOf, resizeRows} from '../src/tensor/record.js'
import {drain} from '../src/progress.js'

const repo = path.resolve(import.meta.dirname, '..')
const fixtures = path.join(repo, 'fixtures', 'corenet')
const tinyHf = path.join(repo, 'fixtures', 'tiny-hf')
const expected = JSON.parse(readFileSync(path.join(fixtures, 'expected.json'), 'utf8')) as {
  files: Record<string, {tensors: Record<string, {dtype: string; shape: number[]; sha256: string}>; ema?: Record<string, {sha256: string}>; iterations?: number; epoch?: number; best_metric?: number; optimizer?: {tensor_bytes: number}}>
}
const PY = '/usr/bin/python3'
const LOADER = path.join(repo, 'test', 'python', 'corenet_load.py')
const TORCH_DTYPES: Record<string, string> = {F32: 'float32', BF16: 'bfloat16', F16: 'float16'}

interface Loaded {
  kind: string
  type?: string
  tensors: Record<string, {dtype: string; shape: number[]; sha256: string; contiguous: boolean; storage: number; offset: number; stride: number[]}>
  rest?: Record<string, unknown>
  order: string[]
  metadata?: unknown
}

function torchLoad(files: string[], unsafe = false): Loaded[] {
  return JSON.parse(execFileSync(PY, [LOADER, ...(unsafe ? ['--unsafe'] : []), ...files], {encoding: 'utf8', maxBuffer: 64 * 1024 * 1024})) as Loaded[]
}

async function digests(checkpoint: Checkpoint): Promise<Record<string, {dtype: string; shape: number[]; sha256: string}>> {
  const out: Record<string, {dtype: string; shape: number[]; sha256: string}> = {}
  for (const t of checkpoint.tensors) {
    out[t.name] = {dtype: TORCH_DTYPES[t.dtype]!, shape: [...t.shape], sha256: createHash('sha256').update(await t.read()).digest('hex')}
  }
  return out
}

function strip(tensors: Record<string, {dtype: string; shape: number[]; sha256: string}>) {
  return Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, {dtype: v.dtype, shape: v.shape, sha256: v.sha256}]))
}

let work: string
beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-corenet-'))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe('reading torch.save fixtures', () => {
  for (const file of ['state_dict_f32.pt', 'state_dict_bf16.pt', 'views.pt', 'module_prefix.pt', 'training_checkpoint.pt']) {
    it(`reads ${file} bit-exact`, async () => {
      const checkpoint = await openCheckpoint(path.join(fixtures, file))
      try {
        expect(checkpoint.format).toBe('corenet')
        expect(await digests(checkpoint)).toEqual(strip(expected.files[file]!.tensors))
        expect(checkpoint.config.vocab_size).toBe(160)
        expect(checkpoint.config.num_query_heads).toEqual([4, 6, 6, 8])
      } finally {
        await checkpoint.close()
      }
    })
  }

  it('reads a HF-named state dict saved with torch.save (pytorch_model.bin, "transformer." keys) bit-exact', async () => {
    const folderPath = path.join(work, 'hf-torch-bin')
    await fs.mkdir(folderPath)
    const file = path.join(folderPath, 'pytorch_model.bin')
    execFileSync(PY, ['-c', [
      'import sys, torch',
      'sd = torch.load(sys.argv[1], weights_only=True)',
      'torch.save({"transformer." + k: v for k, v in sd.items()}, sys.argv[2])',
    ].join('\n'), path.join(fixtures, 'state_dict_f32.pt'), file])
    const checkpoint = await openCheckpoint(file)
    try {
      expect(checkpoint.format).toBe('corenet')
      expect(await digests(checkpoint)).toEqual(strip(expected.files['state_dict_f32.pt']!.tensors))
      expect(checkpoint.extras.notes.join(' ')).toContain('stripped the "transformer." prefix from 34 tensor names')
    } finally {
      await checkpoint.close()
    }
    // As a HF folder (pytorch_model.bin + config.json), the config file is used.
    await fs.writeFile(path.join(folderPath, 'config.json'), JSON.stringify({model_type: 'openelm', num_transformer_layers: 4, model_dim: 64, head_dim: 8, num_gqa_groups: 2, ffn_dim_divisor: 16, vocab_size: 160, max_context_length: 128}))
    const folder = await openCheckpoint(folderPath)
    try {
      expect(folder.extras.configSource).toBe('file')
      expect(folder.config.max_context_length).toBe(128)
      expect(await digests(folder)).toEqual(strip(expected.files['state_dict_f32.pt']!.tensors))
    } finally {
      await folder.close()
    }
  })

  it('reads every view chunk by chunk the same as whole', async () => {
    const checkpoint = await openCheckpoint(path.join(fixtures, 'views.pt'))
    try {
      const t = checkpoint.tensors.find((r) => r.name === 'layers.0.attn.qkv_proj.weight')!
      const whole = await t.read()
      const parts: Uint8Array[] = []
      for (let s = 0; s < t.byteLength; s += 100) parts.push(await t.read(s, Math.min(t.byteLength, s + 100)))
      expect(Buffer.concat(parts).equals(Buffer.from(whole))).toBe(true)
      expect(checkpoint.extras.notes.join(' ')).not.toContain('module.')
    } finally {
      await checkpoint.close()
    }
  })

  it('contiguous tensors read straight into a caller buffer (cast and row resize too), bit-exact; views keep the gather path', async () => {
    const {SOURCE_TENSOR} = await import('../src/formats/corenet/read.js')
    for (const file of ['state_dict_f32.pt', 'views.pt']) {
      const checkpoint = await openCheckpoint(path.join(fixtures, file))
      try {
        let fastCount = 0
        for (const t of checkpoint.tensors) {
          const fast = readIntoOf(t)
          expect(fast !== undefined).toBe(SOURCE_TENSOR.get(t)!.contiguous)
          if (!fast) continue
          fastCount++
          const whole = Buffer.from(await t.read())
          // A dirty buffer: every byte must be overwritten.
          const target = new Uint8Array(t.byteLength - 8).fill(0xa5)
          await fast(target, 4)
          expect(Buffer.from(target).equals(whole.subarray(4, t.byteLength - 4))).toBe(true)
          await expect(fast(new Uint8Array(8), t.byteLength - 4)).rejects.toThrow(/outside the tensor/)
          const bf16 = castRecord(t, 'BF16')
          const castTarget = new Uint8Array(bf16.byteLength).fill(0xa5)
          await readIntoOf(bf16)!(castTarget, 0)
          expect(Buffer.from(castTarget).equals(Buffer.from(await bf16.read()))).toBe(true)
          if (t.shape.length === 2) {
            const rows = t.shape[0]!
            const rowBytes = t.byteLength / rows
            for (const resized of [resizeRows(t, rows + 3), resizeRows(t, rows + 3, t), resizeRows(t, rows - 1)]) {
              const got = new Uint8Array(resized.byteLength - rowBytes).fill(0xa5)
              await readIntoOf(resized)!(got, rowBytes)
              expect(Buffer.from(got).equals(Buffer.from(await resized.read(rowBytes)))).toBe(true)
            }
            expect((await resizeRows(t, rows + 3).read(t.byteLength)).every((x) => x === 0)).toBe(true)
          }
        }
        expect(fastCount).toBeGreaterThan(0)
      } finally {
        await checkpoint.close()
      }
    }
  })

  it('reads the training state: counters, optimizer size, EMA, scaler', async () => {
    const e = expected.files['training_checkpoint.pt']!
    const checkpoint = await openCheckpoint(path.join(fixtures, 'training_checkpoint.pt'))
    try {
      const training = checkpoint.extras.training!
      expect(training).toMatchObject({iterations: e.iterations, epoch: e.epoch, bestMetric: e.best_metric, hasOptimizer: true, hasEma: true, hasGradientScaler: true})
      expect(training.optimizerBytes).toBe(e.optimizer!.tensor_bytes)
      expect(checkpoint.extras.info.layout).toBe('CoreNet training checkpoint')
    } finally {
      await checkpoint.close()
    }
    const ema = await openCheckpoint(path.join(fixtures, 'training_checkpoint.pt'), {ema: true})
    try {
      expect(Object.fromEntries(Object.entries(await digests(ema)).map(([k, v]) => [k, v.sha256]))).toEqual(Object.fromEntries(Object.entries(e.ema!).map(([k, v]) => [k, v.sha256])))
    } finally {
      await ema.close()
    }
  })

  it('decodes numpy scalars (a metric saved as np.float64) without constructing anything', async () => {
    const file = path.join(work, 'numpy-metric.pt')
    execFileSync(PY, ['-c', `
import sys, torch, numpy as np
sd = torch.load(sys.argv[1], weights_only=True)
torch.save({'iterations': np.int64(7), 'epoch': 2, 'model_state_dict': sd, 'best_metric': np.float64(2.25)}, sys.argv[2])
`, path.join(fixtures, 'state_dict_f32.pt'), file])
    const checkpoint = await openCheckpoint(file)
    try {
      expect(checkpoint.extras.training).toMatchObject({iterations: 7, epoch: 2, bestMetric: 2.25, hasOptimizer: false, optimizerBytes: 0})
    } finally {
      await checkpoint.close()
    }
  })

  it('refuses --ema on a bare state dict', async () => {
    await expect(openCheckpoint(path.join(fixtures, 'state_dict_f32.pt'), {ema: true})).rejects.toThrow(/has no ema_state_dict/)
  })
})

describe('writing .pt files PyTorch loads', () => {
  // All outputs are written first, then loaded by one Python process per mode (torch imports are slow).
  const out = (name: string) => path.join(work, name)
  const safe: Record<string, Loaded> = {}
  const unsafe: Record<string, Loaded> = {}
  const sourceDigests: Record<string, Record<string, unknown>> = {}
  let sourceOrder: string[] = []

  beforeAll(async () => {
    const source = await openCheckpoint(tinyHf)
    try {
      sourceOrder = source.tensors.map((t) => t.name)
      for (const dtype of ['F32', 'BF16', 'F16'] as const) {
        await drain(convert(tinyHf, 'corenet', out(`w-${dtype}.pt`), {}, {dtype}))
        sourceDigests[dtype] = {}
        for (const t of source.tensors) {
          sourceDigests[dtype][t.name] = {dtype: TORCH_DTYPES[dtype], shape: [...t.shape], sha256: createHash('sha256').update(await castRecord(t, dtype).read()).digest('hex')}
        }
      }
    } finally {
      await source.close()
    }
    await drain(convert(path.join(fixtures, 'views.pt'), 'corenet', out('views-copy.pt'), {}, {}))
    await drain(convert(path.join(fixtures, 'training_checkpoint.pt'), 'corenet', out('train-copy.pt'), {}, {trainingCheckpoint: true}))
    await drain(convert(path.join(fixtures, 'training_checkpoint.pt'), 'corenet', out('train-dir'), {}, {trainingCheckpoint: true, dtype: 'BF16'}))
    await drain(convert(path.join(fixtures, 'training_checkpoint.pt'), 'corenet', out('bare-dir'), {}, {}))
    const safeFiles = ['w-F32.pt', 'w-BF16.pt', 'w-F16.pt', 'views-copy.pt', 'bare-dir/checkpoint_last.pt'].map(out).concat(path.join(fixtures, 'views.pt'))
    torchLoad(safeFiles).forEach((l, i) => (safe[path.basename(safeFiles[i]!)] = l))
    const unsafeFiles = [out('train-copy.pt'), out('train-dir/training_checkpoint_last.pt'), path.join(fixtures, 'training_checkpoint.pt')]
    torchLoad(unsafeFiles, true).forEach((l, i) => (unsafe[path.basename(unsafeFiles[i]!)] = l))
  }, 120_000)

  for (const dtype of ['F32', 'BF16', 'F16'] as const) {
    it(`HF → .pt in ${dtype} loads with weights_only=True bit-exact, in canonical order`, () => {
      const loaded = safe[`w-${dtype}.pt`]!
      expect(loaded.kind).toBe('state_dict')
      expect(loaded.type).toBe('OrderedDict')
      expect(strip(loaded.tensors)).toEqual(sourceDigests[dtype])
      expect(loaded.order).toEqual(expectedTensors(presetConfig('tiny')).map((e) => e.name))
      expect([...loaded.order].sort()).toEqual([...sourceOrder].sort())
    })
  }

  it('writes byte-identical files for the same input', async () => {
    const a = path.join(work, 'det-a')
    const b = path.join(work, 'det-b')
    await drain(convert(tinyHf, 'corenet', a, {}, {dtype: 'BF16'}))
    await drain(convert(tinyHf, 'corenet', b, {}, {dtype: 'BF16'}))
    const [x, y] = [await fs.readFile(path.join(a, 'checkpoint_last.pt')), await fs.readFile(path.join(b, 'checkpoint_last.pt'))]
    expect(x.byteLength).toBeGreaterThan(300_000)
    expect(x.equals(y)).toBe(true)
  })

  it('.pt → .pt keeps views and shared storages of the source', () => {
    const src = safe['views.pt']!
    const dst = safe['views-copy.pt']!
    expect(dst.tensors).toEqual(src.tensors)
    // q_norm and k_norm share a storage, at offsets 0 and 8; the transposed matrix stays transposed.
    expect(dst.tensors['layers.2.attn.q_norm.weight']!.storage).toBe(dst.tensors['layers.2.attn.k_norm.weight']!.storage)
    expect(dst.tensors['layers.2.attn.k_norm.weight']!.offset).toBe(8)
    expect(dst.tensors['layers.0.attn.qkv_proj.weight']!.contiguous).toBe(false)
    expect(dst.tensors['token_embeddings.weight']!.offset).toBe(8 * 64)
  })

  it('.pt → .pt of a training checkpoint keeps optimizer state, counters and EMA (compared in PyTorch)', () => {
    // torch 1.13's weights-only loader has no BINFLOAT; training dicts hold floats (lr, best_metric).
    const a = unsafe['training_checkpoint.pt']!
    const b = unsafe['train-copy.pt']!
    expect(b.kind).toBe('training')
    expect(b.rest).toEqual(a.rest)
    expect(b.tensors).toEqual(a.tensors)
    expect(b.metadata).toEqual(a.metadata)
    expect(JSON.stringify(b.rest!.optim_state_dict)).toContain('exp_avg_sq')
    expect(b.rest!.best_metric).toEqual({float: '2.5'})
  })

  it('--training-checkpoint into a folder writes training_checkpoint_last.pt; default writes checkpoint_last.pt', async () => {
    expect(await fs.readdir(out('train-dir'))).toEqual(['training_checkpoint_last.pt'])
    const loaded = unsafe['training_checkpoint_last.pt']!
    expect(Object.values(loaded.tensors).every((t) => t.dtype === 'bfloat16')).toBe(true)
    expect(loaded.rest!.iterations).toEqual({int: '1234'})
    expect(loaded.rest!.optim_state_dict).toEqual(unsafe['training_checkpoint.pt']!.rest!.optim_state_dict)
    expect(await fs.readdir(out('bare-dir'))).toEqual(['checkpoint_last.pt'])
    expect(strip(safe['checkpoint_last.pt']!.tensors)).toEqual(strip(expected.files['training_checkpoint.pt']!.tensors))
    const back = await openCheckpoint(out('bare-dir'))
    try {
      expect(back.extras.training).toBeUndefined()
      expect(await digests(back)).toEqual(strip(expected.files['training_checkpoint.pt']!.tensors))
    } finally {
      await back.close()
    }
  })

  it('keeps the raw training dict untouched in memory (model replaced only in the output)', async () => {
    const checkpoint = await openCheckpoint(path.join(fixtures, 'training_checkpoint.pt'))
    try {
      const raw = checkpoint.extras.training!.raw as CorenetRaw
      expect(raw.modelKey).toBe('model_state_dict')
      const optim = raw.dict.get('optim_state_dict') as PyDict
      const state = optim.get('state') as PyDict
      const first = state.map.get(0n) as PyDict
      expect(first.get('exp_avg')).toBeInstanceOf(TorchTensor)
    } finally {
      await checkpoint.close()
    }
  })
})

describe('CLI round trips', () => {
  const cli = (args: string[]) => spawnSync(path.join(repo, 'bin', 'dev.js'), args, {cwd: repo, encoding: 'utf8', env: {...process.env, NODE_ENV: 'development'}})

  it('convert X.pt --to hf --vocab-size 128 --json reports dropped rows, and back to .pt is bit-exact', async () => {
    const hf = path.join(work, 'cli-hf')
    const r = cli(['convert', path.join(fixtures, 'state_dict_f32.pt'), '--to', 'hf', '--vocab-size', '128', '--out', hf, '--json'])
    expect(r.status, r.stderr).toBe(0)
    const result = JSON.parse(r.stdout) as {vocab: {from: number; to: number; rowsDropped: number}; target: {format: string}}
    expect(result.vocab).toMatchObject({from: 160, to: 128, rowsDropped: 32})
    // The HF model equals the tiny fixture bit for bit (the fixture was made from it).
    const a = await openCheckpoint(hf)
    const b = await openCheckpoint(tinyHf)
    try {
      expect(await digests(a)).toEqual(await digests(b))
    } finally {
      await a.close()
      await b.close()
    }
    const pt = path.join(work, 'cli-back.pt')
    const back = cli(['convert', hf, '--to', 'corenet', '--vocab-size', '160', '--out', pt])
    expect(back.status, back.stderr).toBe(0)
    const [loaded] = torchLoad([pt])
    const want = expected.files['state_dict_f32.pt']!.tensors
    for (const [name, t] of Object.entries(loaded!.tensors)) {
      if (name === 'token_embeddings.weight') {
        expect(t.shape).toEqual([160, 64])
        continue
      }
      expect(t.sha256).toBe(want[name]!.sha256)
    }
  })

  it('inspect shows training counters, optimizer size, EMA and scaler', () => {
    const r = cli(['inspect', path.join(fixtures, 'training_checkpoint.pt')])
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/iterations 1234, epoch 3, optimizer 1\.21 MiB, EMA yes, grad scaler yes/)
  })
})

describe('CoreNet padded vocabulary (32128 ↔ 32000)', () => {
  it('drops the 128 padded rows to HF by default and reports them; --keep-padded-vocab keeps them; back pads with zeros', async () => {
    const {synthCheckpoint} = await import('../src/model/synth.js')
    const {writeCheckpoint} = await import('../src/convert.js')
    const pt = path.join(work, 'v32128-pt')
    const synth = synthCheckpoint(presetConfig('micro', {vocab_size: 32128}), {seed: 5, dtype: 'F32'})
    const written = await drain(writeCheckpoint(synth, 'corenet', pt, {}))
    expect(written.vocab).toBeUndefined()
    const hf = path.join(work, 'v32000-hf')
    const toHf = await drain(convert(pt, 'hf', hf, {}, {}))
    expect(toHf.vocab).toEqual({from: 32128, to: 32000, rowsDropped: 128, rowsPadded: 0})
    expect(toHf.notes.join('\n')).toMatch(/dropped 128 padded vocabulary rows/)
    const kept = await drain(convert(pt, 'hf', path.join(work, 'v32128-hf'), {}, {keepPaddedVocab: true}))
    expect(kept.vocab).toBeUndefined()
    // Kept rows come back exactly: .pt → HF (32128 rows) → .pt gives the same tensors bit for bit.
    const keptBack = path.join(work, 'v-kept-back')
    const again = await drain(convert(path.join(work, 'v32128-hf'), 'corenet', keptBack, {}, {}))
    expect(again.vocab).toBeUndefined()
    const original = await fs.readFile(path.join(pt, 'checkpoint_last.pt'))
    expect(original.equals(await fs.readFile(path.join(keptBack, 'checkpoint_last.pt')))).toBe(true)
    const a0 = await openCheckpoint(pt)
    const b0 = await openCheckpoint(keptBack)
    try {
      for (let i = 0; i < a0.tensors.length; i++) expect(Buffer.from(await b0.tensors[i]!.read()).equals(Buffer.from(await a0.tensors[i]!.read()))).toBe(true)
      expect(b0.config.vocab_size).toBe(32128)
    } finally {
      await a0.close()
      await b0.close()
    }
    const back = path.join(work, 'v-back')
    const toPt = await drain(convert(hf, 'corenet', back, {}, {}))
    expect(toPt.vocab).toEqual({from: 32000, to: 32128, rowsDropped: 0, rowsPadded: 128})
    const a = await openCheckpoint(pt)
    const b = await openCheckpoint(back)
    try {
      const ea = a.tensors[0]!
      const eb = b.tensors[0]!
      expect(eb.shape).toEqual([32128, 32])
      const rowBytes = 32 * 4
      expect(Buffer.from(await eb.read(0, 32000 * rowBytes)).equals(Buffer.from(await ea.read(0, 32000 * rowBytes)))).toBe(true)
      expect((await eb.read(32000 * rowBytes)).every((x) => x === 0)).toBe(true)
      for (let i = 1; i < a.tensors.length; i++) expect(Buffer.from(await b.tensors[i]!.read()).equals(Buffer.from(await a.tensors[i]!.read()))).toBe(true)
    } finally {
      await a.close()
      await b.close()
    }
  })
})

describe('archive layout mirrors torch.save', () => {
  it('records, order and 64-byte alignment', async () => {
    const {ZipReader} = await import('../src/formats/corenet/zip.js')
    const dir = path.join(work, 'layout')
    await drain(convert(path.join(fixtures, 'state_dict_bf16.pt'), 'corenet', dir, {}, {}))
    const zip = await ZipReader.open(path.join(dir, 'checkpoint_last.pt'))
    try {
      const names = [...zip.entries.keys()]
      const storageKeys = Array.from({length: 34}, (_, i) => String(i)).sort()
      expect(names).toEqual(['checkpoint_last/data.pkl', 'checkpoint_last/byteorder', ...storageKeys.map((k) => `checkpoint_last/data/${k}`), 'checkpoint_last/version', 'checkpoint_last/.data/serialization_id'])
      for (const e of zip.entries.values()) expect(e.dataOffset % 64, e.name).toBe(0)
      expect(Buffer.from(await zip.read(zip.entry('checkpoint_last/byteorder'))).toString()).toBe('little')
      expect(Buffer.from(await zip.read(zip.entry('checkpoint_last/version'))).toString()).toBe('3\n')
      // Local headers as torch's miniz writes them: flags 0x0808, sizes in a data descriptor.
      const head = await zip.file.read(0, 30)
      expect(Buffer.from(head).readUInt16LE(6)).toBe(0x0808)
      expect(Buffer.from(head).readUInt32LE(18)).toBe(0)
    } finally {
      await zip.close()
    }
  })
})

describe('pickler: any torch.save dict of tensors and plain values', () => {
  it('re-pickles a dict with every value kind, views and shared storages, equal in PyTorch', async () => {
    const {openTorchArchive} = await import('../src/formats/corenet/read.js')
    const {planTorchSave, writeTorchArchive} = await import('../src/formats/corenet/write.js')
    const script = path.join(repo, 'test', 'python', 'corenet_generic.py')
    const src = path.join(work, 'generic.pt')
    const dst = path.join(work, 'generic-copy.pt')
    execFileSync(PY, [script, 'make', src])
    const archive = await openTorchArchive(src)
    try {
      await drain(writeTorchArchive(dst, 'generic-copy', planTorchSave(archive.value)))
      // Every view (transposed, strided, permuted; 1-, 2-, 4- and 8-byte elements) reads as its contiguous bytes.
      const {tensorRecord} = await import('../src/formats/corenet/read.js')
      const want = JSON.parse(execFileSync(PY, [script, 'digests', src], {encoding: 'utf8'})) as Record<string, string>
      const sd = (archive.value as PyDict).get('sd') as PyDict
      const got: Record<string, string> = {}
      for (const [k, v] of sd.map) {
        const record = tensorRecord(String(k), v as TorchTensor)
        const parts: Uint8Array[] = []
        for (let s = 0; s < record.byteLength; s += 24) parts.push(await record.read(s, Math.min(record.byteLength, s + 24)))
        got[String(k)] = createHash('sha256').update(Buffer.concat(parts)).digest('hex')
      }
      expect(got).toEqual(want)
      expect(Object.keys(got)).toContain('f64_3d')
    } finally {
      await archive.zip.close()
    }
    expect(execFileSync(PY, [script, 'compare', src, dst], {encoding: 'utf8'}).trim()).toBe('same')
  })
})
