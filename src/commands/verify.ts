import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base.js'
import {forceFlag, formatOption, hubSourceFlags, verifyThreadsFlag} from '../cli/flags.js'
import {applyThreads} from '../pool/index.js'
import {checkHubFlagsApply} from '../hub/source.js'
import {peftFlags, peftOptions} from '../cli/peft.js'
import {UsageError} from '../errors.js'
import {type QualityGates} from '../verify/quality.js'
import {assertPassed, BACKEND_NAMES, DEFAULT_PROMPT_LENGTH, verify, type VerifyReport} from '../verify/index.js'
import {reportLines} from '../verify/report.js'
import {RUNTIMES} from '../verify/runtime.js'

export default class Verify extends BaseCommand {
  static override summary = 'Prove a model is the exact conversion of its source, run it in its own runtime, and measure its quality.'
  static override description = `With --against: the reference applies MODEL's own transformation (cast, quantizer) to REF with its own implementation and compares what MODEL stores code for code, then the logits of both (exact verdict); the artifact's runtime (llama.cpp for GGUF, onnxruntime for ONNX) is compared with the engine on the same file; KL, top-1 and perplexity against REF are reported (gated only with --max-kl, --min-top1, --max-ppl-ratio). Without --against: the model runs, its logits are finite, and its runtime agrees with the engine.`
  static override examples = [
    '<%= config.bin %> verify ./OpenELM-270M-mlx-4bit --against ./OpenELM-270M',
    '<%= config.bin %> verify model-q8_0.gguf --against training_checkpoint_last.pt --max-kl 0.01',
    '<%= config.bin %> verify ./OpenELM-270M --backend torch --device cuda --against ./OpenELM-270M-bf16',
    '<%= config.bin %> verify fixtures/tiny-hf --tokens 1,5,17 --save-logits /tmp/logits.safetensors',
  ]
  static override args = {model: Args.string({description: 'model folder or file (any format), Hub repo id (owner/name) or checkpoint URL', required: true})}
  static override flags = {
    against: Flags.string({description: 'the source MODEL was converted from (any format; a path, Hub repo id or checkpoint URL)'}),
    backend: Flags.string({description: 'reference engine (ts: built in, CPU; torch: PyTorch reference), or a runtime the artifact must run in (onnxruntime, llama.cpp)', options: [...BACKEND_NAMES], default: 'ts'}),
    runtime: Flags.string({description: "the artifact's own runtime: auto (its format's, when installed), none, or one by name", options: ['auto', 'none', ...RUNTIMES], default: 'auto'}),
    device: Flags.string({description: 'device of the torch engine and the runtimes (the ts engine is CPU only)', options: ['auto', 'cpu', 'cuda'], default: 'auto'}),
    prompt: Flags.string({description: 'text to run, tokenized with the model\'s tokenizer (BOS prepended); its tokens are printed', exclusive: ['tokens', 'text-file']}),
    'text-file': Flags.string({description: 'a UTF-8 text file to run (perplexity on your own text)', exclusive: ['tokens', 'prompt']}),
    tokenizer: Flags.string({description: 'tokenizer to use: a folder, tokenizer.model or tokenizer.json (default: the model\'s own, else LLaMA-2\'s for 32000-row models)'}),
    tokens: Flags.string({description: 'comma-separated token ids', exclusive: ['prompt', 'text-file', 'prompt-length']}),
    'prompt-length': Flags.integer({description: `tokens of held-out Brown corpus text (models with a tokenizer) or of seeded ids (default ${DEFAULT_PROMPT_LENGTH}); cuts --prompt/--text-file`, min: 1}),
    seed: Flags.integer({description: 'seed of the random ids (models without a tokenizer)', default: 0}),
    'save-logits': Flags.string({description: "write the model's logits [T, vocab] to this safetensors file"}),
    python: Flags.string({description: 'Python interpreter with torch and msgpack (torch backend)'}),
    'max-kl': Flags.string({description: 'quality gate: largest allowed mean KL against REF (nats)'}),
    'min-top1': Flags.string({description: 'quality gate: smallest allowed top-1 agreement with REF (0..1)'}),
    'max-ppl-ratio': Flags.string({description: 'quality gate: largest allowed perplexity(MODEL) / perplexity(REF) on text'}),
    'skip-weights': Flags.boolean({description: 'do not compare stored weights code for code (logits only)', default: false}),
    threads: verifyThreadsFlag,
    ...peftFlags,
    format: formatOption,
    force: forceFlag,
    ...hubSourceFlags,
  }

  async run(): Promise<VerifyReport> {
    const {args, flags} = await this.parse(Verify)
    if (flags.threads !== undefined && flags.backend === 'torch') throw new UsageError('flag.threads', '--threads applies to the ts engine and the weight check; --backend torch runs both in PyTorch')
    applyThreads(flags.threads)
    const gates = qualityGates(flags['max-kl'], flags['min-top1'], flags['max-ppl-ratio'])
    if (!flags.against && Object.keys(gates).length > 0) throw new UsageError('flag.gate', 'quality gates (--max-kl, --min-top1, --max-ppl-ratio) compare with a reference: pass --against SRC')
    if (!flags.against && flags['skip-weights']) throw new UsageError('flag.skip_weights', '--skip-weights applies to a comparison with --against')
    const peft = await peftOptions(flags)
    if (peft && !flags.against) throw new UsageError('flag.peft', 'the LoRA/DoRA flags (--adapter, --lora-alpha, --lora-config, --embedding-adapter) describe the --against checkpoint: pass --against')
    const model = await this.localSource(args.model, flags)
    const against = flags.against === undefined ? undefined : await this.localSource(flags.against, flags)
    checkHubFlagsApply(against ? [model, against] : [model], flags)
    const report = await verify(model.path, {
      against: against?.path, ...(peft ? {againstRead: {peft}} : {}), backend: flags.backend, runtime: flags.runtime, device: flags.device, python: flags.python,
      tokens: flags.tokens === undefined ? undefined : parseTokens(flags.tokens),
      text: flags.prompt, textFile: flags['text-file'], tokenizer: flags.tokenizer,
      promptLength: flags['prompt-length'], seed: flags.seed, saveLogits: flags['save-logits'], force: flags.force,
      weights: !flags['skip-weights'], gates,
      onPhase: (phase) => this.phase(phase),
      onCount: (done, total, unit) => this.progress.count(done, total, unit),
    })
    this.phase()
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

export function qualityGates(maxKl?: string, minTop1?: string, maxPplRatio?: string): QualityGates {
  const num = (flag: string, text?: string): number | undefined => {
    if (text === undefined) return undefined
    const v = Number(text)
    if (text.trim() === '' || !Number.isFinite(v) || v < 0) throw new UsageError('verify.gate', `--${flag} must be a non-negative number, got "${text}"`)
    return v
  }
  const out: QualityGates = {}
  const k = num('max-kl', maxKl)
  const t = num('min-top1', minTop1)
  const p = num('max-ppl-ratio', maxPplRatio)
  if (k !== undefined) out.maxKl = k
  if (t !== undefined) {
    if (t > 1) throw new UsageError('verify.gate', `--min-top1 is a fraction in [0, 1], got ${t}`)
    out.minTop1 = t
  }
  if (p !== undefined) out.maxPplRatio = p
  return out
}
