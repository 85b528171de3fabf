/**
 * Rebuild the committed fixtures from presets and fixed seeds (`npm run fixtures`).
 * Deterministic: running it twice gives byte-identical files.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {writeCheckpoint} from '../src/convert.js'
import {presetConfig} from '../src/model/presets.js'
import {synthCheckpoint} from '../src/model/synth.js'
import {drain} from '../src/progress.js'

const root = path.resolve(import.meta.dirname, '..', 'fixtures')

await fs.mkdir(root, {recursive: true})
// tiny-hf: 4 layers with 4/6/6/8 query heads and FFN widths 32..256, f32, seed 1.
await drain(writeCheckpoint(synthCheckpoint(presetConfig('tiny'), {seed: 1, dtype: 'F32'}), 'hf', path.join(root, 'tiny-hf'), {force: true}))
console.log('fixtures written to', root)
