/**
 * Logit agreement of MLX conversions with their source (TS reference forward pass).
 *   npx tsx bench/mlx-agreement.ts PRESET|tiny POSITIONS CASE...
 * CASE is DTYPE[:BITS[:GROUP]], e.g. F16, BF16, F16:8:64, F16:4:32. `tiny` uses fixtures/tiny-hf,
 * other presets a synth model (seed 7). Prints top-1 agreement, mean KL, max |Δlogit| per case.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {writeCheckpoint} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {type WriteOptions} from '../src/formats/types.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {parseFloatDType} from '../src/tensor/dtype.js'
import {compareLogits} from '../src/verify/compare.js'
import {runForward} from '../src/verify/engine/index.js'
import {drain} from '../src/progress.js'

const [preset = 'tiny', positions = '32', ...cases] = process.argv.slice(2)
const src = preset === 'tiny' ? await openCheckpoint('fixtures/tiny-hf') : synthCheckpoint(presetConfig(preset), {seed: 7})
const V = src.config.vocab_size
const tokens = Array.from({length: Number(positions)}, (_, i) => (i * 7919 + 13) % V)
let t0 = Date.now()
const ref = await runForward(src, tokens)
console.log(`reference forward ${(Date.now() - t0) / 1000} s`)
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-mlx-agreement-'))
try {
  for (const c of cases) {
    const [dtype, bits, group] = c.split(':')
    const options: WriteOptions = {dtype: parseFloatDType(dtype!), ...(bits ? {quantization: {bits: Number(bits), groupSize: Number(group ?? 64), mode: 'affine'}} : {})}
    const out = path.join(dir, c.replaceAll(':', '-'))
    t0 = Date.now()
    await drain(writeCheckpoint(src, 'mlx', out, options))
    const written = (Date.now() - t0) / 1000
    const ck = await openCheckpoint(out)
    t0 = Date.now()
    const got = await runForward(ck, tokens)
    const m = compareLogits(ref.logits, got.logits, tokens.length, V)
    console.log(`${preset} ${c}: top-1 ${m.top1.toFixed(4)}, mean KL ${m.meanKl.toExponential(3)}, max |Δ| ${m.maxAbs.toFixed(4)} (write ${written} s, forward ${(Date.now() - t0) / 1000} s)`)
    await ck.close()
    await fs.rm(out, {recursive: true, force: true})
  }
} finally {
  await fs.rm(dir, {recursive: true, force: true})
}
