/**
 * Progress events and their rendering: every writer reports bytes and ends at exactly 100%; the
 * renderer draws bars with rate and ETA, spinner phases redrawn from its timer, one final line per
 * step, and nothing at all when disabled; verify's phase callback becomes generator events.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it, vi} from 'vitest'
import {barLine, doneLine, ProgressRenderer, REDRAW_MS} from '../src/cli/progress-render.js'
import {dtypeOptions} from '../src/cli/options.js'
import {rateAndEta} from '../src/cli/push-progress.js'
import {writeCheckpoint} from '../src/convert.js'
import {type Checkpoint, type FormatName, type ProgressEvent, type WriteOptions} from '../src/formats/types.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {phasesOf} from '../src/progress.js'

let root: string
let source: Checkpoint

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-progress-'))
  // The embedding (32768 × 64 f32 = 8 MiB) spans several 1 MiB write chunks in every format, 4-bit
  // included: bytes move inside a tensor.
  source = synthCheckpoint(presetConfig('tiny', {vocab_size: 32768}), {seed: 3, dtype: 'F32'})
})

afterAll(async () => {
  await fs.rm(root, {recursive: true, force: true})
})

const WRITES: [string, FormatName, string, WriteOptions][] = [
  ['hf f32', 'hf', 'hf', {}],
  ['hf bf16', 'hf', 'hf-bf16', {dtype: 'BF16'}],
  ['corenet', 'corenet', 'model.pt', {}],
  ['mlx 8-bit', 'mlx', 'mlx-q8', {quantization: {bits: 8, groupSize: 32, mode: 'affine'}}],
  ['mlx npz', 'mlx', 'mlx-npz', {layout: 'npz'}],
  ['mlx corenet-mlx', 'mlx', 'mlx-corenet', {layout: 'corenet-mlx'}],
  ['onnx', 'onnx', 'onnx', {}],
  ['onnx int8', 'onnx', 'onnx-q8', {quantization: {bits: 8, groupSize: 0, mode: 'affine'}}],
  ['gguf f16', 'gguf', 'f16.gguf', {dtype: 'F16'}],
  ['gguf q8_0', 'gguf', 'q8_0.gguf', dtypeOptions('q8_0')],
]

describe('writers report bytes', () => {
  it.each(WRITES)('%s: bytes only grow, every tensor is counted, and the last event is 100%%', async (_name, to, out, options) => {
    const events: ProgressEvent[] = []
    const gen = writeCheckpoint(source, to, path.join(root, out), options)
    for (;;) {
      const step = await gen.next()
      if (step.done) break
      events.push(step.value)
    }
    const starts = events.filter((e) => e.type === 'start')
    expect(starts).toHaveLength(1)
    const start = starts[0]!
    expect(start.totalBytes).toBeGreaterThan(1024 * 1024)
    const moves = events.filter((e) => e.type === 'bytes' || e.type === 'tensor')
    let last = 0
    for (const e of moves) {
      expect(e.totalBytes).toBe(start.totalBytes)
      expect(e.bytesDone).toBeGreaterThanOrEqual(last)
      last = e.bytesDone
    }
    expect(last).toBe(start.totalBytes)
    const tensors = events.filter((e) => e.type === 'tensor')
    expect(tensors).toHaveLength(start.total)
    expect(tensors.at(-1)!.index).toBe(start.total)
    // Bytes events inside the 2 MiB embedding: the bar moves between tensor ends.
    expect(events.some((e) => e.type === 'bytes')).toBe(true)
  }, 30_000)
})

/** A stream that records what the renderer writes. */
function sink(columns = 100): {text: () => string; writes: string[]; write: (s: string) => void; columns: number} {
  const writes: string[] = []
  return {writes, write: (s: string) => void writes.push(s), text: () => writes.join(''), columns}
}

describe('ProgressRenderer', () => {
  it('writes nothing when disabled (--json, or stdout not a TTY)', () => {
    const out = sink()
    const r = new ProgressRenderer({enabled: false, stream: out})
    r.phase('model forward')
    r.event({type: 'start', total: 2, totalBytes: 100, label: 'writing safetensors'})
    r.event({type: 'bytes', bytesDone: 50, totalBytes: 100})
    r.log('note: x')
    r.stop()
    expect(out.writes).toEqual([])
  })

  it('a bar shows bytes, percent, rate and ETA, and its final line what, how much and how long', () => {
    expect(barLine('writing x', 512 * 1024, 2 * 1024 * 1024, 1000)).toBe('writing x [█████░░░░░░░░░░░░░░░] 25% 512.00 KiB/2.00 MiB 512.00 KiB/s ETA 3s')
    // Too early for a rate: none shown rather than a wild one.
    expect(barLine('writing x', 1024, 2048, 100)).toBe('writing x [██████████░░░░░░░░░░] 50% 1.00 KiB/2.00 KiB')
    expect(doneLine({label: 'writing x', started: 0, totalBytes: 4 << 20, bytesDone: 4 << 20}, 2000)).toBe('✓ writing x 4.00 MiB in 2.0s (2.00 MiB/s)')
    expect(doneLine({label: 'model forward', started: 0}, 12_345)).toBe('✓ model forward in 12.3s')
    expect(doneLine({label: 'model forward', started: 0}, 125_000, true)).toBe('✗ model forward stopped after 2m05s')
  })

  it('redraws a phase from its timer while no event comes, and ends it with one line', async () => {
    vi.useFakeTimers()
    try {
      let now = 0
      const out = sink()
      const r = new ProgressRenderer({enabled: true, stream: out, now: () => now})
      r.phase('compare weights')
      expect(out.text()).toBe('⠋ compare weights… 0.0s')
      for (let i = 1; i <= 5; i++) {
        now += REDRAW_MS
        await vi.advanceTimersByTimeAsync(REDRAW_MS)
      }
      expect(out.writes).toHaveLength(6)
      expect(out.writes.at(-1)).toBe('\r\x1b[2K⠴ compare weights… 1.0s')
      r.phase('model forward')
      // The finished phase's line stays; the next one is live below it.
      expect(out.text()).toContain('\r\x1b[2K✓ compare weights in 1.0s\n⠋ model forward… 0.0s')
      r.stop()
      expect(out.text().endsWith('\r\x1b[2K✓ model forward in 0.0s\n')).toBe(true)
      const count = out.writes.length
      await vi.advanceTimersByTimeAsync(5 * REDRAW_MS)
      expect(out.writes).toHaveLength(count) // the timer stops with the last step
    } finally {
      vi.useRealTimers()
    }
  })

  it('a write inside a phase takes the phase as its prefix; notes print above the live line', () => {
    let now = 0
    const out = sink(200)
    const r = new ProgressRenderer({enabled: true, stream: out, now: () => now})
    r.event({type: 'phase', label: 'hop 1/2: write mlx'})
    r.event({type: 'start', total: 2, totalBytes: 2048, label: 'writing safetensors'})
    now = 1000
    r.event({type: 'bytes', bytesDone: 1024, totalBytes: 2048})
    r.log('note: kept 1 matrix in F16')
    expect(out.writes.slice(-2)).toEqual(['\r\x1b[2Knote: kept 1 matrix in F16\n', '⠙ hop 1/2: write mlx: writing safetensors [██████████░░░░░░░░░░] 50% 1.00 KiB/2.00 KiB 1.00 KiB/s ETA 1s'])
    r.event({type: 'tensor', name: 'b', index: 2, total: 2, bytesDone: 2048, totalBytes: 2048})
    r.stop()
    expect(out.writes.at(-1)).toBe('\r\x1b[2K✓ hop 1/2: write mlx: writing safetensors 2.00 KiB in 1.0s (2.00 KiB/s)\n')
    expect(out.text()).not.toContain('✓ hop 1/2: write mlx in')
  })

  it('never draws a line wider than the terminal (a wrapped line could not be redrawn)', () => {
    const out = sink(40)
    const r = new ProgressRenderer({enabled: true, stream: out, now: () => 0})
    r.phase('hop 2/3: verify gguf: reference forward (transformed)')
    r.stop()
    for (const line of out.text().split(/\r\x1b\[2K|\n/)) expect(line.length).toBeLessThan(40)
  })
})

describe('phasesOf', () => {
  it('turns a phase callback into events, in order, and returns the result', async () => {
    const events: ProgressEvent[] = []
    const gen = phasesOf('hop 1/1: verify mlx: ', async (onPhase) => {
      onPhase('open model')
      await new Promise((r) => setTimeout(r, 5))
      onPhase('model forward')
      onPhase(undefined)
      return 42
    })
    let result: number
    for (;;) {
      const step = await gen.next()
      if (step.done) {
        result = step.value
        break
      }
      events.push(step.value)
    }
    expect(result).toBe(42)
    expect(events).toEqual([{type: 'phase', label: 'hop 1/1: verify mlx: open model'}, {type: 'phase', label: 'hop 1/1: verify mlx: model forward'}, {type: 'phase'}])
  })

  it('passes the work\'s error on', async () => {
    const gen = phasesOf('', async (onPhase) => {
      onPhase('load')
      throw new Error('no such file')
    })
    await expect((async () => { for await (const _ of gen) void _ })()).rejects.toThrow('no such file')
  })
})

describe('ProgressRenderer steps', () => {
  it('a step of the live phase replaces it: only the steps get final lines', () => {
    let now = 0
    const out = sink()
    const r = new ProgressRenderer({enabled: true, stream: out, now: () => now})
    r.phase('llama.cpp')
    r.phase('llama.cpp: load')
    now = 2500
    r.phase('llama.cpp: forward')
    now = 3000
    r.phase()
    r.phase('reference forward')
    r.stop()
    const finals = out.text().split(/\r\x1b\[2K|\n/).filter((l) => l.startsWith('✓'))
    expect(finals).toEqual(['✓ llama.cpp: load in 2.5s', '✓ llama.cpp: forward in 0.5s', '✓ reference forward in 0.0s'])
  })
})

describe('upload bars', () => {
  it('show a rate and an ETA once one is measurable', () => {
    expect(rateAndEta(0, 100, 2000)).toBe('')
    expect(rateAndEta(1 << 20, 4 << 20, 100)).toBe('')
    expect(rateAndEta(8 << 20, 40 << 20, 2000)).toBe(' | 4.00 MiB/s ETA 8s')
    expect(rateAndEta(40 << 20, 40 << 20, 4000)).toBe(' | 10.00 MiB/s')
  })
})

describe('counts inside a phase', () => {
  it('a phase shows how far it is until it ends', () => {
    const out = sink()
    const r = new ProgressRenderer({enabled: true, stream: out, now: () => 0})
    r.phase('verify: compare weights')
    r.count(45, 130, 'tensors')
    r.log('x')
    expect(out.writes.at(-1)).toBe('⠙ verify: compare weights… 45/130 tensors 0.0s')
    r.phase('verify: model forward')
    expect(out.writes.at(-1)).toBe('⠋ verify: model forward… 0.0s')
    r.event({type: 'count', done: 2, total: 17, unit: 'layers'})
    r.log('y')
    expect(out.writes.at(-1)).toBe('⠙ verify: model forward… 2/17 layers 0.0s')
    r.stop()
  })

  it('phasesOf passes counts on, the latest one only when several wait', async () => {
    const events: ProgressEvent[] = []
    const gen = phasesOf('', async (onPhase, onCount) => {
      onPhase('compare weights')
      for (let i = 0; i < 5; i++) onCount(i, 5, 'tensors')
      await new Promise((r) => setTimeout(r, 5))
      onCount(5, 5, 'tensors')
    })
    for await (const e of gen) events.push(e)
    expect(events).toEqual([{type: 'phase', label: 'compare weights'}, {type: 'count', done: 4, total: 5, unit: 'tensors'}, {type: 'count', done: 5, total: 5, unit: 'tensors'}])
  })

  it('the engine counts its layers, the weight comparison its tensors', async () => {
    const {runForward} = await import('../src/verify/engine/index.js')
    const {compareStored} = await import('../src/verify/exact.js')
    const tiny = synthCheckpoint(presetConfig('tiny'), {seed: 1, dtype: 'F32'})
    const layers: string[] = []
    await runForward(tiny, [1, 2, 3], {onLayer: (done, total) => layers.push(`${done}/${total}`)})
    expect(layers).toEqual(['1/5', '2/5', '3/5', '4/5', '5/5'])
    const seen: number[] = []
    await compareStored(tiny, tiny, (_name, index, total) => { expect(total).toBe(tiny.tensors.length); seen.push(index) })
    expect(seen).toEqual(tiny.tensors.map((_, i) => i))
  })
})

describe('roundtrip hops', () => {
  it('each hop yields its steps as phases, its writes as byte bars, and its verify counts', async () => {
    const {roundtrip, parseVia} = await import('../src/roundtrip.js')
    const src = path.join(root, 'micro-hf')
    const gen = writeCheckpoint(synthCheckpoint(presetConfig('micro'), {seed: 2, dtype: 'F32'}), 'hf', src, {})
    for (let s = await gen.next(); !s.done; s = await gen.next()) void s
    const events: ProgressEvent[] = []
    const trip = roundtrip(src, {via: parseVia('mlx,gguf')})
    let report
    for (;;) {
      const step = await trip.next()
      if (step.done) {
        report = step.value
        break
      }
      events.push(step.value)
    }
    expect(report.pass).toBe(true)
    const phases = events.filter((e) => e.type === 'phase' && e.label).map((e) => (e as {label: string}).label)
    for (const [n, via] of [[1, 'mlx'], [2, 'gguf']] as const) {
      expect(phases).toContain(`hop ${n}/2: to ${via}`)
      expect(phases).toContain(`hop ${n}/2: verify ${via}: compare weights`)
      expect(phases).toContain(`hop ${n}/2: verify ${via}: model forward`)
      expect(phases).toContain(`hop ${n}/2: back to hf`)
      expect(phases).toContain(`hop ${n}/2: compare hf with the source`)
    }
    // Two writes per hop, each a byte bar that ends at its total.
    const starts = events.filter((e) => e.type === 'start')
    expect(starts).toHaveLength(4)
    expect(events.some((e) => e.type === 'count' && e.unit === 'layers' && e.done === e.total)).toBe(true)
  }, 30_000)
})
