import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base.js'
import {loadConfigFile} from '../formats/corenet/config.js'
import {formatOption, hubSourceFlags} from '../cli/flags.js'
import {checkHubFlagsApply} from '../hub/source.js'
import {peftFlags, peftLines, peftOptions} from '../cli/peft.js'
import {bytes, count, table} from '../cli/render.js'
import {inspect, type InspectReport} from '../inspect.js'
import {type FormatName} from '../formats/types.js'

const census = (m: Record<string, number>): string => Object.entries(m).map(([d, n]) => `${d}×${n}`).join(' ')

/**
 * The figures, each labelled: parameters (with and without padded vocabulary rows), stored bytes
 * (what the file holds) vs dequantized bytes (what the tensors read as), the files' size, and the
 * stored types of the tensors (not the dtype they read as).
 */
export function headLines(report: InspectReport): string[] {
  const padded = report.paddedVocabRows && report.parametersWithoutPadding !== undefined
    ? ` with ${report.paddedVocabRows} padded vocabulary rows (${count(report.parametersWithoutPadding)} without them)`
    : ''
  const stored = report.storedBytes ?? report.tensorBytes
  const size = [`${bytes(stored)} stored`]
  if (stored !== report.tensorBytes) size.push(`${bytes(report.tensorBytes)} dequantized (read as ${census(report.dtypes)})`)
  if (report.fileBytes !== undefined) size.push(`files ${bytes(report.fileBytes)}`)
  return [
    `parameters  ${count(report.parameters)}${padded}   tensors ${report.tensorCount}`,
    `size        ${size.join(', ')}`,
    `weights     ${report.weights ?? report.dtype}`,
    `dtypes      ${census(report.storedTypes ?? report.dtypes)}${report.storedTypes && stored !== report.tensorBytes ? ' (stored)' : ''}`,
  ]
}

export default class Inspect extends BaseCommand {
  static override summary = 'Detect a checkpoint\'s format and show its config, per-layer shapes, dtypes and extra state.'
  static override examples = [
    '<%= config.bin %> inspect fixtures/tiny-hf',
    '<%= config.bin %> inspect training_checkpoint_last.pt --json',
  ]
  static override args = {path: Args.string({description: 'model folder or file, Hub repo id (owner/name) or checkpoint URL', required: true})}
  static override flags = {
    format: formatOption,
    ema: Flags.boolean({description: 'CoreNet: inspect the EMA weights', default: false}),
    config: Flags.string({description: 'config to use: a HF config.json or a CoreNet training YAML (model_name + vocab_size)'}),
    tensors: Flags.boolean({description: 'also list every tensor\'s storage: type (quantization), bits per weight, stored bytes', default: false}),
    ...peftFlags,
    ...hubSourceFlags,
  }

  async run(): Promise<InspectReport> {
    const {args, flags} = await this.parse(Inspect)
    const peft = await peftOptions(flags, {describeOnly: true})
    const resolved = await this.localSource(args.path, flags)
    checkHubFlagsApply([resolved], flags)
    const report = await inspect(resolved.path, {format: flags.format as FormatName | undefined, ema: flags.ema, config: flags.config ? await loadConfigFile(flags.config) : undefined, peft})
    const c = report.config
    this.log(`${report.path}: ${report.format}${report.preset ? ` (OpenELM-${report.preset} shape)` : ''}`)
    for (const line of headLines(report)) this.log(`  ${line}`)
    this.log(`  config      ${report.configSource}: layers ${c.num_transformer_layers}, model_dim ${c.model_dim}, head_dim ${c.head_dim}, gqa ${c.num_gqa_groups}, vocab ${c.vocab_size}, context ${c.max_context_length}`)
    this.log(`  storage     ${(report.storage ?? []).map((g) => `${g.type} ×${g.tensors} (${g.bitsPerWeight} bpw) ${bytes(g.storedBytes)}`).join(', ')}`)
    const files = Array.isArray(report.info.files) ? (report.info.files as {path: string; bytes: number}[]) : []
    if (files.length > 0) this.log(`  files       ${files.map((f) => `${f.path.split('/').pop()} (${bytes(f.bytes)})`).join(', ')}${report.info.layout ? `   ${String(report.info.layout)}` : ''}`)
    if (report.tokenizerFiles.length > 0) this.log(`  tokenizer   ${report.tokenizerFiles.map((f) => f.split('/').pop()).join(', ')}`)
    if (report.training) {
      const t = report.training
      this.log(`  training    iterations ${t.iterations ?? '-'}, epoch ${t.epoch ?? '-'}, optimizer ${t.hasOptimizer ? bytes(t.optimizerBytes) : 'none'}, EMA ${t.hasEma ? 'yes' : 'no'}, grad scaler ${t.hasGradientScaler ? 'yes' : 'no'}`)
    }
    if (report.peft) for (const line of peftLines(report.peft)) this.log(`  ${line}`)
    for (const note of report.notes) this.log(`  note        ${note}`)
    this.log('')
    this.log(table(['layer', 'q heads', 'kv heads', 'ffn dim'], report.layers.map((l, i) => [i, l.qHeads, l.kvHeads, l.ffnDim])))
    if (flags.tensors) {
      this.log('')
      this.log(table(['tensor', 'shape', 'type', 'bits/weight', 'stored'], (report.tensorStorage ?? []).map((t) => [t.name, t.shape.join('×'), t.type, t.bitsPerWeight, bytes(t.storedBytes)])))
    }
    return report
  }
}
