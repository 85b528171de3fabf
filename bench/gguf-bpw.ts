/**
 * Bits per weight of each llama-quantize file type (`--dtype q4_k_m` …) for OpenELM's released
 * shapes, from the per-tensor plan the writer uses (src/formats/gguf/presets.ts; test/gguf-presets
 * proves the plan equals real llama-quantize's). Counts every stored tensor byte (norms in F32,
 * the tied embedding once) over the parameters (padded vocabulary rows included, as written).
 *
 *   npx tsx bench/gguf-bpw.ts [--shapes 270M,450M,1.1B,3B]
 */
import {parseArgs} from 'node:util'
import {ggufTensors} from '../src/formats/gguf/index.js'
import {GGUF_FTYPES} from '../src/formats/gguf/presets.js'
import {tensorBytes} from '../src/formats/gguf/read.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'

const {values} = parseArgs({options: {shapes: {type: 'string', default: '270M,450M,1.1B,3B'}}})
const shapes = values.shapes!.split(',')
const rows: Record<string, string[]> = {}
for (const shape of shapes) {
  const source = synthCheckpoint(presetConfig(shape), {seed: 0})
  for (const ftype of Object.keys(GGUF_FTYPES)) {
    const {inputs} = ggufTensors(source, ftype)
    let bytes = 0
    let params = 0
    for (const t of inputs) {
      const n = t.source.shape.reduce((a, b) => a * b, 1)
      params += n
      bytes += tensorBytes(t.name, t.type, [...t.source.shape].reverse())
    }
    ;(rows[ftype] ??= []).push(`${((bytes * 8) / params).toFixed(3)} (${(bytes / 2 ** 20).toFixed(0)} MiB)`)
  }
  await source.close()
}
console.log(`| --dtype | ${shapes.join(' | ')} |`)
console.log(`|---|${shapes.map(() => '---').join('|')}|`)
for (const [ftype, cells] of Object.entries(rows)) console.log(`| ${ftype} | ${cells.join(' | ')} |`)
