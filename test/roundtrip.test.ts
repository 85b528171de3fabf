/**
 * `openelm roundtrip`: a real torch.save training checkpoint through every format and back,
 * lossless hops bit-exact; a corrupted intermediate fails and names its hop; outputs are
 * deterministic (same input, same bytes).
 */
import {spawnSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {convert} from '../src/convert.js'
import {type FormatName} from '../src/formats/types.js'
import {HOP_TARGETS, parseVia, roundtrip, type RoundtripReport} from '../src/roundtrip.js'
import {drain} from '../src/progress.js'

const repo = path.resolve(import.meta.dirname, '..')
const TRAINING = path.join(repo, 'fixtures/corenet/training_checkpoint.pt')
const ALL_FORMATS = Object.keys(HOP_TARGETS).filter((name) => name !== 'corenet-mlx').join(',')
let work: string

async function hashTree(p: string): Promise<Record<string, string>> {
  const stat = await fs.stat(p)
  const files = stat.isDirectory() ? (await fs.readdir(p, {recursive: true})).map((f) => path.join(p, f)) : [p]
  const out: Record<string, string> = {}
  for (const f of files.sort()) {
    if ((await fs.stat(f)).isDirectory()) continue
    out[path.relative(p, f) || path.basename(f)] = createHash('sha256').update(await fs.readFile(f)).digest('hex')
  }
  return out
}

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-roundtrip-test-'))
})

afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe('roundtrip', () => {
  it(`takes a real torch.save training checkpoint through ${ALL_FORMATS} bit-exact`, async () => {
    const report: RoundtripReport = await drain(roundtrip(TRAINING, {via: parseVia(ALL_FORMATS)}))
    expect(report.source.format).toBe('corenet')
    expect(report.hops.map((h) => h.via)).toEqual(ALL_FORMATS.split(','))
    for (const hop of report.hops) {
      expect(hop.failure, hop.via).toBeUndefined()
      expect(hop.pass, hop.via).toBe(true)
      expect(hop.lossless, hop.via).toBe(true)
      // Back in the source format, every tensor is byte-identical to the source.
      expect(hop.backAgainst, hop.via).toBe('source')
      expect(hop.back!.matching, hop.via).toBe(hop.back!.tensors.length)
      expect(hop.back!.tensors).toHaveLength(34)
      // The artifact itself is the exact conversion and computes the same logits.
      expect(hop.there!.verdict, hop.via).toBe('exact')
      expect(hop.there!.logits!.maxAbs, hop.via).toBe(0)
    }
  })

  it('checks a lossy hop exactly: the artifact is the cast of the source, the way back the widening of the artifact', async () => {
    const report = await drain(roundtrip(TRAINING, {via: parseVia('hf'), dtype: 'BF16'}))
    const hop = report.hops[0]!
    expect(hop.lossless).toBe(false)
    expect(hop.pass).toBe(true)
    // The bf16 artifact is the exact cast of the source; back in f32 it is the exact widening of the artifact.
    expect(hop.there!.verdict).toBe('exact')
    expect(hop.there!.weights!.mismatching).toEqual([])
    expect(hop.backAgainst).toBe('artifact')
    expect(hop.back!.mismatching).toEqual([])
    expect(hop.there!.quality!.meanKl).toBeGreaterThan(0)
  })

  it('fails and names the hop when an intermediate file is corrupted', async () => {
    const report = await drain(roundtrip(TRAINING, {
      via: parseVia('onnx,hf,corenet'),
      afterWrite: async (hop, artifact) => {
        if (hop.name !== 'hf') return
        // Flip one byte inside the last tensor's data of the HF artifact.
        const file = path.join(artifact, 'model.safetensors')
        const bytes = await fs.readFile(file)
        bytes[bytes.length - 3]! ^= 0x40
        await fs.writeFile(file, bytes)
      },
    }))
    expect(report.pass).toBe(false)
    expect(report.failedHop).toBe('hf')
    expect(report.hops.find((h) => h.via === 'onnx')!.pass).toBe(true)
    expect(report.hops.find((h) => h.via === 'corenet')!.pass).toBe(true)
    expect(report.hops.find((h) => h.via === 'hf')!.failure).toMatch(/hf artifact/)
  })

  it('exits non-zero on the command line and names the failing hop; cleans its work folder', async () => {
    const before = (await fs.readdir(os.tmpdir())).filter((e) => e.startsWith('openelm-roundtrip-') && !e.startsWith('openelm-roundtrip-test-'))
    const ok = spawnSync(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), 'roundtrip', TRAINING, '--via', 'hf,corenet', '--json'], {cwd: repo, encoding: 'utf8'})
    expect(ok.status, ok.stderr).toBe(0)
    const json = JSON.parse(ok.stdout)
    expect(json.pass).toBe(true)
    expect(json.hops).toHaveLength(2)
    const bad = spawnSync(process.execPath, ['--import', 'tsx', path.join(repo, 'bin/dev.js'), 'roundtrip', TRAINING, '--via', 'hf,nope'], {cwd: repo, encoding: 'utf8'})
    expect(bad.status).toBe(2)
    expect(bad.stderr.trim().split('\n')).toHaveLength(1)
    expect(bad.stderr).toMatch(/unknown format "nope" in --via/)
    const after = (await fs.readdir(os.tmpdir())).filter((e) => e.startsWith('openelm-roundtrip-') && !e.startsWith('openelm-roundtrip-test-'))
    expect(after.sort()).toEqual(before.sort())
  })
})

describe('deterministic output', () => {
  const targets: [string, FormatName, string | undefined, string][] = [
    ['hf', 'hf', undefined, 'hf'],
    ['corenet', 'corenet', undefined, 'model.pt'],
    ['onnx', 'onnx', undefined, 'onnx'],
    ...(['mlx', 'gguf'] as const).filter((f) => HOP_TARGETS[f]).map((f): [string, FormatName, string | undefined, string] => [f, f, undefined, f === 'gguf' ? 'model.gguf' : f]),
  ]
  for (const [name, format, layout, file] of targets) {
    it(`writes byte-identical ${name} files for the same input`, async () => {
      const a = path.join(work, `det-a-${name}`, file)
      const b = path.join(work, `det-b-${name}`, file)
      await drain(convert(TRAINING, format, a, {}, {layout, keepPaddedVocab: true}))
      await drain(convert(TRAINING, format, b, {}, {layout, keepPaddedVocab: true}))
      const [ha, hb] = [await hashTree(a), await hashTree(b)]
      expect(Object.keys(ha).length).toBeGreaterThan(0)
      expect(ha).toEqual(hb)
    })
  }
})
