/**
 * The CI slice of our fuzzer (scripts/fuzz.ts): a fixed range of cases over every seed format,
 * run in a watched worker process exactly as `npm run fuzz` runs them. Every class that is a
 * finding must be zero; the slice must cover every seed and reach both verdicts.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {classCounts, describeCase, FINDINGS, prepare, type Prepared, runCase, runFuzz} from '../scripts/fuzz/run.js'
import {caseRng, chooseMutation} from '../scripts/fuzz/mutate.js'

/** The slice: 600 cases = 50 per seed (12 seeds); measured 20 s on 2 shared cores (limit 3 min). */
const SLICE = {cases: 600, seed: 17}

let prepared: Prepared
beforeAll(async () => {
  prepared = await prepare()
})
afterAll(async () => {
  await fs.rm(prepared.work, {recursive: true, force: true})
})

describe('fuzzer', () => {
  it('replays a case from its number alone', () => {
    for (const k of [0, 5, 123, 4999]) {
      const a = describeCase(prepared, SLICE.seed, k)
      const seed = prepared.seeds[k % prepared.seeds.length]!
      const b = chooseMutation(seed, prepared.bytes.get(seed.name)!, caseRng(SLICE.seed, k))
      expect(a.mutation.description).toBe(b.description)
      expect(a.seed.name).toBe(seed.name)
    }
    expect(describeCase(prepared, SLICE.seed, 1).mutation.description).not.toBe(describeCase(prepared, SLICE.seed + 1, 1).mutation.description)
  })

  it('runs the first case of every seed in-process (what --case replays) without a finding', async () => {
    const results = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map((k) => runCase(prepared, SLICE.seed, k)))
    for (const r of results) expect(FINDINGS).not.toContain(r.class)
    expect(new Set(results.map((r) => r.seed)).size).toBe(12)
  })

  it(`the CI slice (${SLICE.cases} cases, seed ${SLICE.seed}) has no finding`, async () => {
    const start = performance.now()
    const results = await runFuzz(SLICE)
    const seconds = (performance.now() - start) / 1000
    const counts = classCounts(results)
    const findings = results.filter((r) => FINDINGS.includes(r.class))
    expect(findings.map((r) => `case ${r.case} [${r.class}] ${r.seed}: ${r.mutation} → ${r.detail}`)).toEqual([])
    expect(results).toHaveLength(SLICE.cases)
    expect(results.map((r) => r.case)).toEqual(Array.from({length: SLICE.cases}, (_, i) => i))
    // Both verdicts are reached, on every seed.
    expect(counts.reject).toBeGreaterThan(SLICE.cases / 3)
    expect(counts.accept).toBeGreaterThan(SLICE.cases / 10)
    for (const seed of prepared.seeds) expect(results.filter((r) => r.seed === seed.name).length).toBe(SLICE.cases / prepared.seeds.length)
    expect(Math.max(...results.map((r) => r.maxRss ?? 0))).toBeLessThan(300 * 2 ** 20)
    expect(seconds).toBeLessThan(180)
    await fs.writeFile(path.join(prepared.work, 'slice.json'), JSON.stringify({seconds, counts}))
  }, 240_000)

  it('the watchdog pins a hang, a signal and a memory blow-up on the case in flight, and goes on', async () => {
    const outcomes: Record<string, string[]> = {}
    for (const what of ['hang', 'signal', 'memory']) {
      process.env.OPENELM_FUZZ_SELFTEST = `${what}:2`
      try {
        const results = await runFuzz({cases: 4, seed: SLICE.seed, hangMs: 10_000}) // clean cases take ~10 ms; 10 s leaves room for a loaded machine
        outcomes[what] = results.map((r) => `${r.case}:${r.class}`)
      } finally {
        delete process.env.OPENELM_FUZZ_SELFTEST
      }
    }
    for (const [what, list] of Object.entries(outcomes)) {
      expect(list.map((x) => Number(x.split(':')[0]))).toEqual([0, 1, 2, 3])
      expect(list[2]).toBe(`2:${what}`)
      for (const k of [0, 1, 3]) expect(['accept', 'reject']).toContain(list[k]!.split(':')[1])
    }
  }, 120_000)

  /**
   * Findings of `npm run fuzz -- --cases 5000 --seed 1` (and seeds 2, 3), replayed by number. The mutation text is
   * pinned, so a change to the mutators that would silently retarget a case fails here instead.
   */
  const REPLAYED: [number, string, string, string, number?][] = [
    [515, 'state_dict_f32.pt: state_dict_f32/data.pkl: byte 1369 → opcode 0x68', 'reject', 'pickle.tensor'],
    [2394, 'onnx/model.onnx: transformer.token_embeddings.weight external location "model.onnx_data" → "model.onnx"', 'reject', 'onnx.external'],
    [4424, 'flip bit 3 of byte 837 of model.gguf', 'accept', 'valid, judged against the seed'],
    // `--cases 5000 --first 5000 --seed 2`: F32 norms relabelled F16 within their padding.
    [5131, 'model.gguf: GGUF blk.0.attn_q_norm.weight ggml type at 3166 0 → 1', 'reject', 'gguf.padding', 2],
    [9752, 'model.gguf: GGUF blk.0.attn_k_norm.weight ggml type at 3222 0 → 1', 'reject', 'gguf.padding', 2],
    // `--cases 5000 --first 10000 --seed 3`: hangs, num_transformer_layers = 10^9 sized per-layer lists.
    [11544, 'config.json: num_transformer_layers = 1000000000', 'reject', 'config.range', 3],
    [13834, 'config.json: num_transformer_layers = 1000000000', 'reject', 'config.range', 3],
  ]
  for (const [k, mutation, cls, detail, seed = 1] of REPLAYED) {
    it(`fuzz case ${k} (seed ${seed}): ${mutation}`, async () => {
      const r = await runCase(prepared, seed, k)
      expect(r.mutation).toBe(mutation)
      expect([r.class, r.detail]).toEqual([cls, detail])
    })
  }
})
