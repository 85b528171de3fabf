import {writeCheckpoint} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {runForward} from '../src/verify/engine/index.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {promises as fs} from 'node:fs'
async function drain(g: any) { for (;;) { const r = await g.next(); if (r.done) return r.value } }
function metrics(a: Float32Array, b: Float32Array, V: number) {
  const T = a.length / V; let agree = 0, kl = 0, maxAbs = 0
  for (let t = 0; t < T; t++) {
    const x = a.subarray(t*V, t*V+V), y = b.subarray(t*V, t*V+V)
    let ax = 0, ay = 0; for (let i = 0; i < V; i++) { if (x[i]! > x[ax]!) ax = i; if (y[i]! > y[ay]!) ay = i; maxAbs = Math.max(maxAbs, Math.abs(x[i]!-y[i]!)) }
    if (ax === ay) agree++
    let mx = -Infinity, my = -Infinity; for (let i = 0; i < V; i++) { mx = Math.max(mx, x[i]!); my = Math.max(my, y[i]!) }
    let sx = 0, sy = 0; for (let i = 0; i < V; i++) { sx += Math.exp(x[i]!-mx); sy += Math.exp(y[i]!-my) }
    const lx = Math.log(sx), ly = Math.log(sy); let k = 0
    for (let i = 0; i < V; i++) { const lp = x[i]!-mx-lx, lq = y[i]!-my-ly; k += Math.exp(lp)*(lp-lq) }
    kl += k
  }
  return {top1: agree/T, meanKl: kl/T, maxAbs}
}
const preset = process.argv[2]!; const T = Number(process.argv[3] ?? 32)
const src = preset === 'tiny' ? await openCheckpoint('/work/wt/mlx/fixtures/tiny-hf') : synthCheckpoint(presetConfig(preset), {seed: 7})
const V = src.config.vocab_size
const tokens = Array.from({length: T}, (_, i) => (i * 7919 + 13) % V)
let t0 = Date.now()
const ref = await runForward(src, tokens)
console.log('ref forward', (Date.now()-t0)/1000)
const cases = process.argv.slice(4)
for (const c of cases) {
  const out = `/tmp/bench-mlx/agree-${preset}-${c}`
  await fs.rm(out, {recursive: true, force: true})
  const [dt, bits, gs] = c.split(':')
  t0 = Date.now()
  await drain(writeCheckpoint(src, 'mlx', out, {dtype: dt as any, ...(bits ? {quantization: {bits: Number(bits), groupSize: Number(gs ?? 64), mode: 'affine'}} : {})}))
  const tw = (Date.now()-t0)/1000
  const ck = await openCheckpoint(out)
  t0 = Date.now()
  const got = await runForward(ck, tokens)
  console.log(preset, c, JSON.stringify(metrics(ref.logits, got.logits, V)), 'write', tw, 'fwd', (Date.now()-t0)/1000)
  await ck.close()
  await fs.rm(out, {recursive: true, force: true})
}
