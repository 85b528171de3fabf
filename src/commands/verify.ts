import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base.js'
import {forceFlag, formatOption} from '../cli/flags.js'
import {UsageError} from '../errors.js'
import {BACKENDS} from '../verify/backends/index.js'
import {type PathKind, type Thresholds} from '../verify/compare.js'
import {assertPassed, DEFAULT_PROMPT_LENGTH, verify, type VerifyReport} from '../verify/index.js'
import {reportLines} from '../verify/report.js'

export default class Verify extends BaseCommand {
  static override summary = 'Run the reference forward pass on a model, and compare it with a reference model.'
  static override examples = [
    '<%= config.bin %> verify ./OpenELM-270M-bf16 --against ./OpenELM-270M',
    '<%= config.bin %> verify ./OpenELM-270M --backend torch --device cuda --prompt-length 32',
    '<%= config.bin %> verify fixtures/tiny-hf --tokens 1,5,17 --save-logits /tmp/logits.safetensors',
  ]
  static override args = {model: Args.string({description: 'model folder or file (any format)', required: true})}
  static override flags = {
    against: Flags.string({description: 'reference model to compare with (any format)'}),
    backend: Flags.string({description: 'forward-pass backend', options: Object.keys(BACKENDS), default: 'ts'}),
    device: Flags.string({description: 'device for the torch backend', options: ['auto', 'cpu', 'cuda'], default: 'auto'}),
    tokens: Flags.string({description: 'comma-separated token ids (default: a seeded prompt)', exclusive: ['prompt-length']}),
    'prompt-length': Flags.integer({description: 'length of the seeded prompt (BOS + random ids)', default: DEFAULT_PROMPT_LENGTH, min: 1}),
    seed: Flags.integer({description: 'seed of the prompt', default: 0}),
    'save-logits': Flags.string({description: "write the model's logits [T, vocab] to this safetensors file"}),
    python: Flags.string({description: 'Python interpreter with torch and msgpack (torch backend)'}),
    path: Flags.string({description: 'threshold set (default: from the dtypes/quantization)', options: ['lossless', 'cast16', 'quant8', 'quant4', 'quant-low']}),
    'max-abs': Flags.string({description: 'override: largest allowed |Δlogit|'}),
    'min-top1': Flags.string({description: 'override: smallest allowed top-1 agreement (0..1)'}),
    'max-kl': Flags.string({description: 'override: largest allowed mean KL (nats)'}),
    'min-cosine': Flags.string({description: 'override: smallest allowed cosine similarity of the logits'}),
    'skip-weights': Flags.boolean({description: 'do not compare weights tensor by tensor', default: false}),
    format: formatOption,
    force: forceFlag,
  }

  async run(): Promise<VerifyReport> {
    const {args, flags} = await this.parse(Verify)
    const report = await verify(args.model, {
      against: flags.against, backend: flags.backend, device: flags.device, python: flags.python,
      tokens: flags.tokens === undefined ? undefined : parseTokens(flags.tokens),
      promptLength: flags['prompt-length'], seed: flags.seed, saveLogits: flags['save-logits'], force: flags.force,
      path: flags.path as PathKind | undefined, weights: !flags['skip-weights'],
      thresholds: thresholdFlags(flags['max-abs'], flags['min-top1'], flags['max-kl'], flags['min-cosine']),
    })
    if (!this.jsonEnabled()) for (const line of reportLines(report)) this.log(line)
    return assertPassed(report)
  }
}

function parseTokens(text: string): number[] {
  return text.split(',').map((s, i) => {
    const v = Number(s.trim())
    if (s.trim() === '' || !Number.isInteger(v)) throw new UsageError('verify.tokens', `--tokens: item ${i} ("${s}") is not an integer token id`)
    return v
  })
}

function thresholdFlags(maxAbs?: string, minTop1?: string, maxKl?: string, minCosine?: string): Partial<Thresholds> {
  const num = (flag: string, text?: string): number | undefined => {
    if (text === undefined) return undefined
    const v = Number(text)
    if (!Number.isFinite(v) || v < 0) throw new UsageError('verify.threshold', `--${flag} must be a non-negative number, got "${text}"`)
    return v
  }
  const out: Partial<Thresholds> = {}
  const a = num('max-abs', maxAbs)
  const t = num('min-top1', minTop1)
  const k = num('max-kl', maxKl)
  if (a !== undefined) out.maxAbs = a
  if (t !== undefined) out.minTop1 = t
  if (k !== undefined) out.maxMeanKl = k
  const c = num('min-cosine', minCosine)
  if (c !== undefined) out.minCosine = c
  return out
}
