import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base.js'
import {ROUNDTRIP_FLAG_TABLE, checkFlagTargets} from '../cli/flag-table.js'
import {dtypeFlag, hubSourceFlags} from '../cli/flags.js'
import {checkHubFlagsApply} from '../hub/source.js'
import {dtypeOptions, quantizationOption} from '../cli/options.js'
import {table} from '../cli/render.js'
import {VerificationError} from '../errors.js'
import {parseVia, roundtrip, type RoundtripReport} from '../roundtrip.js'

export default class Roundtrip extends BaseCommand {
  static override summary = 'Convert a checkpoint through formats and back; fail unless lossless hops are bit-exact and logits agree.'
  static override examples = [
    '<%= config.bin %> roundtrip training_checkpoint_last.pt --via hf,mlx,onnx,corenet',
    '<%= config.bin %> roundtrip fixtures/tiny-hf --via mlx --quantize 4 --json',
  ]
  static override args = {source: Args.string({description: 'checkpoint to test: a path, Hub repo id (owner/name) or checkpoint URL', required: true})}
  static override flags = {
    via: Flags.string({description: 'comma-separated formats to pass through: hf, corenet, mlx, npz, corenet-mlx, onnx, gguf', default: 'hf,mlx,onnx,corenet'}),
    dtype: dtypeFlag,
    quantize: Flags.integer({char: 'q', aliases: ['q-bits'], description: 'quantize MLX hops to this many bits (lossy: checked by logits, not bytes)'}),
    'group-size': Flags.integer({aliases: ['q-group-size'], description: 'quantization group size (default 64)'}),
    keep: Flags.boolean({description: 'keep the intermediate files and print where they are', default: false}),
    ...hubSourceFlags,
  }

  async run(): Promise<RoundtripReport> {
    const {args, flags} = await this.parse(Roundtrip)
    const via = parseVia(flags.via)
    for (const hop of via) checkFlagTargets(ROUNDTRIP_FLAG_TABLE, flags, hop.format)
    // --dtype q8_0 (a GGUF file type) arrives as F16 plus its quantization, as in convert.
    const {dtype, quantization: fileType} = dtypeOptions(flags.dtype)
    const resolved = await this.localSource(args.source, flags)
    checkHubFlagsApply([resolved], flags)
    const report = await this.drain(roundtrip(resolved.path, {
      via,
      dtype,
      quantization: quantizationOption(flags.quantize, flags['group-size']) ?? fileType,
      keep: flags.keep,
    }))
    this.log(table(
      ['hop', 'lossless', 'there: exact', 'logits max |Δ|', 'KL vs source', 'back', 'result'],
      report.hops.map((h) => [
        `${report.source.format} → ${h.via} → ${report.source.format}`,
        h.lossless ? 'yes' : 'no',
        h.there?.weights ? `${h.there.weights.matching}/${h.there.weights.tensors.length} tensors` : '-',
        h.there?.logits ? h.there.logits.maxAbs.toExponential(2) : '-',
        h.there?.quality ? h.there.quality.meanKl.toExponential(2) : '-',
        h.back ? (h.back.mismatching.length === 0 ? (h.backAgainst === 'source' ? 'bit-exact' : 'exact from artifact') : `no (${h.back.first?.tensor})`) : '-',
        h.pass ? 'ok' : `FAIL: ${h.failure}`,
      ]),
    ))
    if (!report.pass) {
      if (this.jsonEnabled()) this.logJson(report)
      throw new VerificationError('roundtrip.failed', `round trip failed at hop ${report.failedHop}: ${report.hops.find((h) => !h.pass)?.failure}`, {hop: report.failedHop})
    }
    return report
  }
}
