/**
 * The false-failure sweep of the exact check: correct conversions must never fail. For each preset
 * shape and seed, a synth model (random weights, the preset's real shapes) is converted to MLX at
 * every bit width × group size (f16 scales; bf16 for one width) and to GGUF Q8_0, then verified
 * against the in-memory source. Counts every verdict; any failure is printed with its reason.
 *
 *   npx tsx bench/verify-sweep.ts [--presets tiny,micro,270M] [--seeds 20] [--full-seeds 1]
 *                                 [--configs all|smoke] [--out bench/out/verify-sweep.json]
 *
 * `--full-seeds N`: the first N seeds of each preset run the whole verify (codes, then the logits of
 * MODEL and REF transformed, and quality); later seeds compare the stored codes only (`weights`:
 * the logits of identical codes through the same engine are identical by construction, and cost a
 * forward pass each). Large presets take minutes per conversion: pass fewer seeds for them.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {parseArgs} from 'node:util'
import {writeCheckpoint} from '../src/convert.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {type FormatName, type WriteOptions} from '../src/formats/types.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'
import {compareStored, decideRelation} from '../src/verify/exact.js'
import {verify} from '../src/verify/index.js'

const {values} = parseArgs({options: {
  presets: {type: 'string', default: 'micro,tiny'},
  seeds: {type: 'string', default: '20'},
  'full-seeds': {type: 'string', default: '1'},
  configs: {type: 'string', default: 'all'},
  out: {type: 'string', default: 'bench/out/verify-sweep.json'},
}})

interface Config {label: string; to: FormatName; options: WriteOptions}

function configs(which: string): Config[] {
  const out: Config[] = []
  for (const bits of [2, 3, 4, 5, 6, 8]) {
    for (const groupSize of [32, 64, 128]) {
      out.push({label: `mlx-${bits}bit-g${groupSize}`, to: 'mlx', options: {dtype: 'F16', quantization: {bits, groupSize, mode: 'affine'}}})
    }
  }
  out.push({label: 'mlx-4bit-g64-bf16', to: 'mlx', options: {dtype: 'BF16', quantization: {bits: 4, groupSize: 64, mode: 'affine'}}})
  out.push({label: 'gguf-q8_0', to: 'gguf', options: {dtype: 'F16', quantization: {bits: 8, groupSize: 32, mode: 'q8_0'}}})
  if (which === 'smoke') return out.filter((c) => ['mlx-4bit-g64', 'mlx-8bit-g32', 'mlx-3bit-g128', 'gguf-q8_0'].includes(c.label))
  return out
}

interface Row {preset: string; seed: number; config: string; mode: 'full' | 'weights'; pass: boolean; reason?: string; seconds: number; quantizedTensors: number}

const presets = values.presets!.split(',')
const seeds = Number(values.seeds)
const fullSeeds = Number(values['full-seeds'])
const work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-sweep-'))
const rows: Row[] = []
const started = performance.now()
try {
  for (const preset of presets) {
    const config = presetConfig(preset)
    for (let seed = 0; seed < seeds; seed++) {
      const source = synthCheckpoint(config, {seed})
      for (const c of configs(values.configs!)) {
        const out = path.join(work, `${preset}-${seed}-${c.label}${c.to === 'gguf' ? '.gguf' : ''}`)
        const t0 = performance.now()
        await drain(writeCheckpoint(source, c.to, out, c.options))
        const mode = seed < fullSeeds ? 'full' : 'weights'
        let pass: boolean
        let reason: string | undefined
        let quantizedTensors = 0
        if (mode === 'full') {
          const report = await verify(out, {against: source, runtime: 'none'})
          pass = report.pass && report.verdict === 'exact' && report.logits!.maxAbs === 0
          reason = pass ? undefined : report.failures.join('; ') || `verdict ${report.verdict}, logits max |Δ| ${report.logits?.maxAbs}`
          quantizedTensors = report.weights!.tensors.filter((t) => t.segments.some((s) => s.scheme === 'mlx_affine' || s.scheme === 'gguf_q8_0')).length
        } else {
          const model = await openCheckpoint(out)
          try {
            const exact = await compareStored(source, model)
            const decision = await decideRelation(source, model, exact)
            pass = decision.relation === 'derived'
            reason = pass ? undefined : `${decision.relation}: ${decision.reason}; first ${JSON.stringify(exact.first)}`
            quantizedTensors = exact.tensors.filter((t) => t.segments.some((s) => s.scheme === 'mlx_affine' || s.scheme === 'gguf_q8_0')).length
          } finally {
            await model.close()
          }
        }
        await fs.rm(out, {recursive: true, force: true})
        const row: Row = {preset, seed, config: c.label, mode, pass, ...(reason ? {reason} : {}), seconds: (performance.now() - t0) / 1000, quantizedTensors}
        rows.push(row)
        if (!pass) console.log(`FALSE FAILURE ${preset} seed ${seed} ${c.label}: ${reason}`)
      }
      console.log(`${preset} seed ${seed}: ${rows.filter((r) => r.preset === preset && r.seed === seed && r.pass).length}/${configs(values.configs!).length} pass (${((performance.now() - started) / 1000).toFixed(0)} s)`)
    }
  }
} finally {
  await fs.rm(work, {recursive: true, force: true})
}
const failures = rows.filter((r) => !r.pass)
const summary = {
  presets, seeds, fullSeeds, configs: configs(values.configs!).map((c) => c.label), runs: rows.length,
  full: rows.filter((r) => r.mode === 'full').length, weightsOnly: rows.filter((r) => r.mode === 'weights').length,
  falseFailures: failures.length, seconds: (performance.now() - started) / 1000, machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`,
}
await fs.mkdir(path.dirname(values.out!), {recursive: true})
await fs.writeFile(values.out!, JSON.stringify({summary, rows}, null, 1))
console.log(JSON.stringify(summary))
process.exitCode = failures.length > 0 ? 1 : 0
