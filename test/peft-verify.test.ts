/**
 * verifyPeft: models converted from the CoreNet LoRA/DoRA fixtures (adapters merged) to hf, mlx,
 * gguf and onnx run on the TS engine, against the PyTorch reference that applies the adapters
 * UNMERGED (src/verify/python/peft_ref.py through the worker's forward_peft op). Deliberately wrong
 * merges (alpha for alpha/r, a transposed delta, DoRA without its norm) must fail and name the tensor.
 */
import {execFileSync} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {VerificationError} from '../src/errors.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {type FormatName, type ReadOptions, type WriteOptions} from '../src/formats/types.js'
import {drain} from '../src/progress.js'
import {type MergeFault} from '../src/tensor/lora.js'
import {findPython, TorchWorker} from '../src/verify/backends/torch.js'
import {assertPeftPassed, PEFT_LOGIT_REL, type PeftVerifyReport, verifyPeft} from '../src/verify/peft.js'

const ROOT = path.resolve(import.meta.dirname, '..')
const PEFT = path.join(ROOT, 'fixtures', 'corenet', 'peft')
const LORA = path.join(PEFT, 'lora.pt')
const DORA = path.join(PEFT, 'dora.pt')
const TRAINING = path.join(PEFT, 'lora_training.pt')
const ADAPTER = path.join(PEFT, 'lora_adapter.pt')
const BASE = path.join(ROOT, 'fixtures', 'corenet', 'state_dict_f32.pt')
const TINY_HF = path.join(ROOT, 'fixtures', 'tiny-hf')
const LORA_READ: ReadOptions = {peft: {loraAlpha: 8, embeddingAdapter: 'merge'}}
const DORA_READ: ReadOptions = {peft: {loraAlpha: 3}}
/** Lossless targets: every writer in f32. */
const F32: WriteOptions = {dtype: 'F32'}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'openelm-peft-verify-'))
let worker: TorchWorker
beforeAll(() => {
  worker = TorchWorker.start(findPython())
})
afterAll(async () => {
  await worker.close()
  rmSync(tmp, {recursive: true, force: true})
})

let counter = 0
async function converted(source: string, to: FormatName, read: ReadOptions): Promise<string> {
  const out = path.join(tmp, `${to}-${counter++}`)
  const result = await drain(convert(source, to, out, read, F32))
  return result.target.path
}

function expectPass(report: PeftVerifyReport): void {
  expect(report.failures).toEqual([])
  expect(report.pass).toBe(true)
  expect(report.logits.maxAbs).toBeLessThanOrEqual(report.maxAbsAllowed)
  expect(report.maxAbsAllowed).toBeCloseTo(PEFT_LOGIT_REL * report.logitScale, 12)
  // The logits are far from trivial (a broken pipeline cannot hide under the bound).
  expect(report.logitScale).toBeGreaterThan(3)
  expect(report.tensors.every((t) => t.pass)).toBe(true)
  expect(report.firstDivergentTensor).toBeNull()
  expect(report.firstDivergentLayer).toBeNull()
  expect(report.layers).toHaveLength(4)
}

describe('merged conversions agree with the unmerged PyTorch reference', () => {
  it.each(['hf', 'mlx', 'gguf', 'onnx'] as const)('LoRA (embedding merged into the tied table) → %s', async (to) => {
    const model = await converted(LORA, to, LORA_READ)
    const report = await verifyPeft(model, LORA, {read: LORA_READ, worker})
    expectPass(report)
    expect(report.model.format).toBe(to)
    expect(report.peft).toMatchObject({kind: 'lora', modules: 17, embedding: 'tied'})
    // 34 canonical tensors; the embedding is checked in both of its uses.
    expect(report.tensors).toHaveLength(35)
    expect(report.tensors.filter((t) => t.use === 'probe')).toHaveLength(16)
    expect(report.tensors.filter((t) => t.name === 'token_embeddings.weight').map((t) => t.use)).toEqual(['input', 'output'])
    // What merging the embedding adapter into a tied table costs against CoreNet's own forward (input-only adapter).
    expect(report.corenetDeviation!.relative).toBeGreaterThan(1e-2)
  })

  it.each(['hf', 'mlx', 'gguf', 'onnx'] as const)('DoRA → %s', async (to) => {
    const model = await converted(DORA, to, DORA_READ)
    const report = await verifyPeft(model, DORA, {read: DORA_READ, worker})
    expectPass(report)
    expect(report.peft).toMatchObject({kind: 'dora', modules: 16, embedding: 'corenet'})
    expect(report.corenetDeviation).toBeUndefined()
  })

  it('a training checkpoint\'s EMA weights; the reference really reads the dict it is given', async () => {
    const emaRead: ReadOptions = {...LORA_READ, ema: true}
    const model = await converted(TRAINING, 'hf', emaRead)
    expectPass(await verifyPeft(model, TRAINING, {read: emaRead, worker}))
    const wrongDict = await verifyPeft(model, TRAINING, {read: LORA_READ, worker})
    expect(wrongDict.pass).toBe(false)
    expect(wrongDict.firstDivergentTensor).toBe('token_embeddings.weight')
  })

  it('adapters saved apart (--adapter), on a CoreNet base and on a HF base with 128 vocabulary rows', async () => {
    const onCorenet: ReadOptions = {peft: {...LORA_READ.peft, adapter: ADAPTER}}
    expectPass(await verifyPeft(await converted(BASE, 'hf', onCorenet), BASE, {read: onCorenet, worker}))
    const onHf = await verifyPeft(await converted(TINY_HF, 'gguf', onCorenet), TINY_HF, {read: onCorenet, worker})
    expectPass(onHf)
    expect(onHf.model.vocab).toBe(128)
  })

  it('the peft_ref module, called as functions, matches the plain reference on CoreNet-merged weights', () => {
    const out = JSON.parse(execFileSync('/usr/bin/python3', [path.join(ROOT, 'test', 'python', 'peft_ref_check.py'), LORA, '8', DORA, '3']).toString()) as Record<string, number>
    expect(out['lora/adapters']).toBe(17)
    expect(out['dora/adapters']).toBe(16)
    for (const kind of ['lora', 'dora']) {
      const bound = PEFT_LOGIT_REL * out[`${kind}/scale`]!
      expect(out[`${kind}/tied`]).toBeLessThanOrEqual(bound)
      expect(out[`${kind}/none`]).toBeLessThanOrEqual(bound)
    }
    // CoreNet's own forward (input-only embedding adapter) is neither merge; DoRA has no embedding adapter.
    expect(out['lora/corenet']).toBeGreaterThan(0.1)
    expect(out['dora/corenet']).toBeLessThanOrEqual(PEFT_LOGIT_REL * out['dora/scale']!)
  })
})

describe('wrong merges fail and name the tensor', () => {
  async function broken(source: string, read: ReadOptions, fault: MergeFault): Promise<PeftVerifyReport> {
    const model = await converted(source, 'hf', {...read, peft: {...read.peft, fault}})
    return verifyPeft(model, source, {read, worker})
  }

  function failing(report: PeftVerifyReport): string[] {
    return [...new Set(report.tensors.filter((t) => !t.pass).map((t) => t.name))]
  }

  async function adaptedShapes(source: string, read: ReadOptions): Promise<Map<string, readonly number[]>> {
    const c = await openCheckpoint(source, read)
    try {
      return new Map(c.extras.peft!.modules.map((m) => [m.tensor, c.tensors.find((t) => t.name === m.tensor)!.shape]))
    } finally {
      await c.close()
    }
  }

  it('alpha instead of alpha / r: every adapted weight fails, the embedding first', async () => {
    const report = await broken(LORA, LORA_READ, 'alpha-scale')
    expect(report.pass).toBe(false)
    expect(failing(report)).toEqual([...(await adaptedShapes(LORA, LORA_READ)).keys()])
    expect(report.firstDivergentTensor).toBe('token_embeddings.weight')
    expect(report.firstDivergentLayer).toBe(0)
    expect(report.failures[0]).toMatch(/^max abs logit difference/)
    expect(() => assertPeftPassed(report)).toThrow(VerificationError)
    expect(() => assertPeftPassed(report)).toThrow(/first divergent tensor: token_embeddings\.weight; first divergent layer: 0/)
  })

  it('a transposed delta (Aᵀ·Bᵀ): exactly the square adapted weights fail', async () => {
    const report = await broken(LORA, LORA_READ, 'transpose')
    const square = [...(await adaptedShapes(LORA, LORA_READ))].filter(([, s]) => s[0] === s[1]).map(([n]) => n)
    expect(square).toEqual(['layers.0.attn.qkv_proj.weight', 'layers.0.ffn.proj_1.weight', 'layers.3.attn.out_proj.weight'])
    expect(report.pass).toBe(false)
    expect(failing(report)).toEqual(square)
    expect(report.firstDivergentTensor).toBe('layers.0.attn.qkv_proj.weight')
    expect(report.failures.join('\n')).toMatch(/3 tensor check\(s\) fail, first layers\.0\.attn\.qkv_proj\.weight: differs from the unmerged reference/)
    expect(Math.min(...report.tensors.filter((t) => !t.pass).map((t) => t.relative))).toBeGreaterThan(1e-2)
  })

  it('DoRA without its normalisation: every DoRA weight fails', async () => {
    const report = await broken(DORA, DORA_READ, 'dora-no-norm')
    expect(report.pass).toBe(false)
    expect(failing(report)).toEqual([...(await adaptedShapes(DORA, DORA_READ)).keys()])
    expect(report.firstDivergentTensor).toBe('layers.0.attn.qkv_proj.weight')
    expect(() => assertPeftPassed(report)).toThrow(/first divergent tensor: layers\.0\.attn\.qkv_proj\.weight/)
  })

  it('an embedding adapter dropped where the reference merges it: only the embedding fails, in both uses', async () => {
    const model = await converted(LORA, 'onnx', {peft: {loraAlpha: 8, embeddingAdapter: 'drop'}})
    const report = await verifyPeft(model, LORA, {read: LORA_READ, worker})
    expect(report.pass).toBe(false)
    expect(report.tensors.filter((t) => !t.pass).map((t) => `${t.name} ${t.use}`)).toEqual(['token_embeddings.weight input', 'token_embeddings.weight output'])
  })
})

describe('verify and convert --verify take a LoRA/DoRA checkpoint as the source (phase 2)', () => {
  const cli = (...args: string[]) => {
    try {
      return {code: 0, stdout: execFileSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bin/dev.js'), ...args], {cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 180_000}), stderr: ''}
    } catch (error) {
      const e = error as {status: number; stdout: string; stderr: string}
      return {code: e.status, stdout: e.stdout, stderr: e.stderr}
    }
  }

  it('convert lora.pt --to mlx --quantize 4 --verify: exact against the merged source, and the merge against the unmerged reference', () => {
    const out = path.join(tmp, 'phase2-mlx-q4')
    const r = cli('convert', LORA, '--to', 'mlx', '--quantize', '4', '--group-size', '32', '--lora-alpha', '8', '--embedding-adapter', 'merge', '--verify', '--out', out, '--json')
    expect(r.code, r.stderr).toBe(0)
    const report = JSON.parse(r.stdout).verify
    expect(report.verdict).toBe('exact')
    expect(report.weights.mismatching).toEqual([])
    expect(report.peft.pass).toBe(true)
    expect(report.peft.relMaxAbs).toBeLessThan(PEFT_LOGIT_REL)
    expect(report.checks.some((c: string) => c.startsWith('adapters: REF\'s lora merge vs its adapters applied unmerged'))).toBe(true)
  })

  it('verify OUT --against dora.pt --lora-alpha 3 passes; the wrong alpha (the merge it describes is not OUT) fails with exit 5', () => {
    const out = path.join(tmp, 'phase2-dora-hf')
    expect(cli('convert', DORA, '--to', 'hf', '--lora-alpha', '3', '--out', out).code).toBe(0)
    const good = cli('verify', out, '--against', DORA, '--lora-alpha', '3', '--json')
    expect(good.code, good.stderr).toBe(0)
    expect(JSON.parse(good.stdout).peft.pass).toBe(true)
    const wrong = cli('verify', out, '--against', DORA, '--lora-alpha', '6')
    expect(wrong.code).toBe(5)
    expect(wrong.stderr).toMatch(/tensors are not REF's transformation, first layers\.0\.attn\.qkv_proj\.weight/)
  })
})
