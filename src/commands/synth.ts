import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base.js'
import {threadsFlag} from '../cli/flags.js'
import {applyThreads} from '../pool/index.js'
import {dtypeFlag, forceFlag, outFlag} from '../cli/flags.js'
import {dtypeOptions} from '../cli/options.js'
import {bytes, count} from '../cli/render.js'
import {type ConvertResult, writeCheckpoint} from '../convert.js'
import {FORMAT_NAMES, type FormatName} from '../formats/types.js'
import {parameterCount} from '../model/config.js'
import {presetConfig, PRESET_NAMES} from '../model/presets.js'
import {synthCheckpoint} from '../model/synth.js'

export default class Synth extends BaseCommand {
  static override summary = 'Write a deterministic random-weight OpenELM of any preset shape (for tests and benchmarks).'
  static override examples = [
    '<%= config.bin %> synth --preset 270M --to hf --dtype bf16 --out /tmp/openelm-270m',
    '<%= config.bin %> synth --preset tiny --to corenet --seed 7 --out /tmp/tiny.pt',
  ]
  static override flags = {
    preset: Flags.string({description: 'model shape', options: PRESET_NAMES, required: true}),
    to: Flags.string({description: 'target format', options: [...FORMAT_NAMES], default: 'hf'}),
    out: outFlag,
    dtype: dtypeFlag,
    seed: Flags.integer({description: 'random seed (same seed → byte-identical files)', default: 0}),
    'vocab-size': Flags.integer({description: 'override the preset vocabulary size'}),
    layout: Flags.string({description: 'target layout variant (mlx: mlx-lm, corenet-mlx, npz)'}),
    force: forceFlag,
    threads: threadsFlag,
  }

  async run(): Promise<ConvertResult & {parameters: number}> {
    const {flags} = await this.parse(Synth)
    applyThreads(flags.threads)
    const config = presetConfig(flags.preset, flags['vocab-size'] === undefined ? {} : {vocab_size: flags['vocab-size']})
    const {dtype, quantization} = dtypeOptions(flags.dtype ?? 'f32')
    const checkpoint = synthCheckpoint(config, {seed: flags.seed, dtype})
    const result = await this.drain(writeCheckpoint(checkpoint, flags.to as FormatName, flags.out, {dtype, quantization, layout: flags.layout, vocabSize: flags['vocab-size'], force: flags.force}))
    const parameters = parameterCount(config)
    this.log(`synth ${flags.preset} (seed ${flags.seed}, ${count(parameters)} parameters) → ${result.target.path} (${result.target.format}, ${result.target.dtype})`)
    for (const f of result.target.files) this.log(`  ${f.path}  ${bytes(f.bytes)}`)
    return {...result, parameters}
  }
}
