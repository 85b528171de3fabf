import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base.js'
import {CONVERT_FLAG_TABLE, checkFlagTargets} from '../cli/flag-table.js'
import {loadConfigFile} from '../formats/corenet/config.js'
import {dtypeFlag, forceFlag, formatOption, outFlag, toFlag} from '../cli/flags.js'
import {dtypeOptions, mlxQuantFlags, parseSize, quantizationOption} from '../cli/options.js'
import {mergeFlag, peftFlags, peftOptions} from '../cli/peft.js'
import {bytes} from '../cli/render.js'
import {convert, type ConvertResult} from '../convert.js'
import {UsageError} from '../errors.js'
import {MLX_RECIPE_NAMES} from '../formats/mlx/recipe.js'
import {type FormatName} from '../formats/types.js'
import {assertPassed, verifyConversion, type VerifyReport} from '../verify/index.js'
import {reportLines} from '../verify/report.js'
import {qualityGates} from './verify.js'

export default class Convert extends BaseCommand {
  static override summary = 'Stream a checkpoint into another layout (hf, corenet, mlx, onnx, gguf).'
  static override examples = [
    '<%= config.bin %> convert fixtures/tiny-hf --to hf --dtype bf16 --out /tmp/tiny-bf16',
    '<%= config.bin %> convert training_checkpoint_last.pt --to mlx --quantize 4 --verify --out ./OpenELM-270M-mlx-4bit',
  ]
  static override args = {source: Args.string({description: 'source model folder or file', required: true})}
  static override flags = {
    to: toFlag,
    out: outFlag,
    dtype: dtypeFlag,
    force: forceFlag,
    format: formatOption,
    quantize: Flags.integer({char: 'q', aliases: ['q-bits'], description: 'MLX: quantize to this many bits (2, 3, 4, 5, 6, 8); for GGUF use --dtype q8_0'}),
    'group-size': Flags.integer({aliases: ['q-group-size'], description: 'MLX: quantization group size (32, 64, 128; default 64)'}),
    'q-recipe': Flags.string({description: 'MLX: mixed widths as mlx-lm\'s recipes, read for OpenELM (embedding/head, and qkv_proj/proj_2 of the first, last and every third layer get the high width)', options: MLX_RECIPE_NAMES}),
    'quantize-embedding': Flags.string({description: 'MLX: bits for the embedding, which is also the output head (2, 3, 4, 5, 6, 8), or none to keep it in float'}),
    layout: Flags.string({description: 'target layout variant (mlx: mlx-lm, corenet-mlx, npz; onnx: external-data, single-file, contrib-ops)'}),
    'shard-size': Flags.string({description: 'max safetensors shard size, e.g. 5GB (default: 5GB)'}),
    'vocab-size': Flags.integer({description: 'resize the embedding to this many rows (drop rows, or pad with zeros)'}),
    'keep-padded-vocab': Flags.boolean({description: 'CoreNet → other: keep the 32128 padded vocabulary rows', default: false}),
    'training-checkpoint': Flags.boolean({description: 'CoreNet: write the full training dict (optimizer state, counters) when the source had one', default: false}),
    ema: Flags.boolean({description: 'CoreNet source: convert the EMA weights', default: false}),
    config: Flags.string({description: 'source config: a HF config.json or a CoreNet training YAML (model_name + vocab_size)'}),
    verify: Flags.boolean({description: 'after writing, prove the output is the exact conversion of the source, run it in its own runtime, and measure its quality; report in <out>/openelm-verify.json', default: false}),
    'max-kl': Flags.string({description: 'with --verify: quality gate, largest allowed mean KL against the source (nats)'}),
    'min-top1': Flags.string({description: 'with --verify: quality gate, smallest allowed top-1 agreement (0..1)'}),
    'max-ppl-ratio': Flags.string({description: 'with --verify: quality gate, largest allowed perplexity ratio on text'}),
    ...peftFlags,
    merge: mergeFlag,
  }

  async run(): Promise<ConvertResult & {verify?: VerifyReport}> {
    const {args, flags} = await this.parse(Convert)
    checkFlagTargets(CONVERT_FLAG_TABLE, flags, flags.to)
    const gates = qualityGates(flags['max-kl'], flags['min-top1'], flags['max-ppl-ratio'])
    if (!flags.verify && Object.keys(gates).length > 0) throw new UsageError('flag.gate', 'quality gates (--max-kl, --min-top1, --max-ppl-ratio) apply to --verify')
    const peft = await peftOptions(flags, {merge: flags.merge, to: flags.to as FormatName})
    const read = {format: flags.format as FormatName | undefined, ema: flags.ema, config: flags.config ? await loadConfigFile(flags.config) : undefined, ...(peft ? {peft} : {})}
    const mlxQuant = mlxQuantFlags(flags['q-recipe'], flags['quantize-embedding'], flags.to, flags.quantize, flags['group-size'])
    const result = await this.drain(convert(args.source, flags.to as FormatName, flags.out, read, {
      ...dtypeOptions(flags.dtype),
      // With --q-recipe alone, --group-size travels in mlxQuant.
      ...(flags.quantize === undefined && mlxQuant?.recipe !== undefined ? {} : {quantization: quantizationOption(flags.quantize, flags['group-size'])}),
      ...(mlxQuant ? {mlxQuant} : {}),
      layout: flags.layout,
      shardSize: flags['shard-size'] ? parseSize(flags['shard-size']) : undefined,
      vocabSize: flags['vocab-size'],
      keepPaddedVocab: flags['keep-padded-vocab'],
      trainingCheckpoint: flags['training-checkpoint'],
      force: flags.force,
    }))
    const total = result.target.files.reduce((a, f) => a + f.bytes, 0)
    this.log(`${result.source.path} (${result.source.format}, ${result.source.dtype}) → ${result.target.path} (${result.target.format}, ${result.target.dtype}${result.target.quantization ? `, ${result.target.quantization.bits}-bit` : ''})`)
    for (const f of result.target.files) this.log(`  ${f.path}  ${bytes(f.bytes)}`)
    this.log(`  ${result.target.files.length} file${result.target.files.length === 1 ? '' : 's'}, ${bytes(total)}`)
    if (!flags.verify) return result
    const report = await verifyConversion(args.source, result.target.path, {gates, onPhase: (phase) => this.phase(phase)}, read)
    this.phase()
    if (!this.jsonEnabled()) for (const line of reportLines(report)) this.log(line)
    assertPassed(report)
    return {...result, verify: report}
  }
}
