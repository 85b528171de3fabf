import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base.js'
import {CONVERT_FLAG_TABLE, checkFlagTargets} from '../cli/flag-table.js'
import {loadConfigFile} from '../formats/corenet/config.js'
import {convertThreadsFlag} from '../cli/flags.js'
import {applyThreads} from '../pool/index.js'
import {dtypeFlag, forceFlag, formatOption, hubSourceFlags, outFlag, toFlag} from '../cli/flags.js'
import {checkHubFlagsApply, isRepoId} from '../hub/source.js'
import {PushRenderer} from '../cli/push-progress.js'
import {push, type PushResult} from '../hub/push.js'
import {resolveToken} from '../hub/credentials.js'
import {type OnnxVariant, parseOnnxVariants, variantTargets} from '../formats/onnx/variants.js'
import {dtypeOptions, mlxQuantFlags, parseSize, quantizationOption, checkOutFits} from '../cli/options.js'
import {mergeFlag, peftFlags, peftOptions} from '../cli/peft.js'
import {tokenizerFlags, tokenizerRequest} from '../cli/tokenizer.js'
import {bytes} from '../cli/render.js'
import {convert, type ConvertResult} from '../convert.js'
import {UsageError} from '../errors.js'
import {MLX_RECIPE_NAMES} from '../formats/mlx/recipe.js'
import {MLX_FP_MODE_NAMES} from '../quant/mlx-fp.js'
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
  static override args = {source: Args.string({description: 'source model folder or file, Hub repo id (owner/name) or checkpoint URL', required: true})}
  static override flags = {
    to: toFlag,
    out: outFlag,
    dtype: dtypeFlag,
    force: forceFlag,
    threads: convertThreadsFlag,
    format: formatOption,
    quantize: Flags.integer({char: 'q', aliases: ['q-bits'], description: 'MLX: quantize to this many bits (2, 3, 4, 5, 6, 8); ONNX: 8 (weight-only int8, onnx/model_quantized.onnx) or 4 (MatMulNBits, onnx/model_q4.onnx; with --dtype f16 onnx/model_q4f16.onnx); for GGUF use --dtype q8_0'}),
    'group-size': Flags.integer({aliases: ['q-group-size'], description: 'MLX: quantization group size (32, 64, 128; default 64)'}),
    'q-mode': Flags.string({description: 'MLX: quantization mode, as mlx-lm\'s --q-mode: affine (default; --quantize N), or mxfp4, nvfp4, mxfp8 (MLX\'s floating-point formats; width and group size fixed by the mode)', options: ['affine', ...MLX_FP_MODE_NAMES]}),
    'q-recipe': Flags.string({description: 'MLX: mixed widths as mlx-lm\'s recipes, read for OpenELM (embedding/head, and qkv_proj/proj_2 of the first, last and every third layer get the high width)', options: MLX_RECIPE_NAMES}),
    'quantize-embedding': Flags.string({description: 'MLX: bits for the embedding, which is also the output head (2, 3, 4, 5, 6, 8), or none to keep it in float'}),
    layout: Flags.string({description: 'target layout variant (mlx: mlx-lm, corenet-mlx, npz; onnx: external-data, single-file, contrib-ops)'}),
    variants: Flags.string({description: 'ONNX: several model files in one onnx/ folder, comma-separated transformers.js dtypes: fp32, fp16, q8, q4, q4f16 (model.onnx, model_fp16.onnx, model_quantized.onnx, model_q4.onnx, model_q4f16.onnx); the first is the one transformers.js loads by default'}),
    'shard-size': Flags.string({description: 'max safetensors shard size, e.g. 5GB (default: 5GB)'}),
    'vocab-size': Flags.integer({description: 'resize the embedding to this many rows (drop rows, or pad with zeros)'}),
    'keep-padded-vocab': Flags.boolean({description: 'CoreNet → other: keep the 32128 padded vocabulary rows', default: false}),
    'token-embedding-type': Flags.string({description: "GGUF: the token embedding's ggml type whatever --dtype's rules say (llama-quantize's --token-embedding-type), e.g. q8_0, q6_k, f16"}),
    'output-tensor-type': Flags.string({description: "GGUF: the output head's ggml type (llama-quantize's --output-tensor-type); OpenELM's head is the tied token embedding, so this sets token_embd unless --token-embedding-type is given"}),
    'training-checkpoint': Flags.boolean({description: 'CoreNet: write the full training dict (optimizer state, counters) when the source had one', default: false}),
    ema: Flags.boolean({description: 'CoreNet source: convert the EMA weights', default: false}),
    config: Flags.string({description: 'source config: a HF config.json or a CoreNet training YAML (model_name + vocab_size)'}),
    verify: Flags.boolean({description: 'after writing, prove the output is the exact conversion of the source, run it in its own runtime, and measure its quality; report in <out>/openelm-verify.json', default: false}),
    'max-kl': Flags.string({description: 'with --verify: quality gate, largest allowed mean KL against the source (nats)'}),
    'min-top1': Flags.string({description: 'with --verify: quality gate, smallest allowed top-1 agreement (0..1)'}),
    'max-ppl-ratio': Flags.string({description: 'with --verify: quality gate, largest allowed perplexity ratio on text'}),
    ...peftFlags,
    merge: mergeFlag,
    ...hubSourceFlags,
    push: Flags.string({description: 'after converting (and --verify), push the output folder to this Hub repo, OWNER/NAME (uses --token/HF_TOKEN, --endpoint/HF_ENDPOINT)'}),
    'keep-stale': Flags.boolean({description: 'with --push: keep model*.safetensors shards of an earlier push that this one does not replace', default: false}),
    ...tokenizerFlags,
  }

  async run(): Promise<ConvertResult & {verify?: VerifyReport; push?: PushResult}> {
    const {args, flags} = await this.parse(Convert)
    applyThreads(flags.threads)
    checkFlagTargets(CONVERT_FLAG_TABLE, flags, flags.to)
    checkOutFits(flags.to, flags.out)
    const onnxVariants = flags.variants === undefined ? undefined : checkVariantsFlag(flags.variants, flags.quantize, flags.dtype)
    const gates = qualityGates(flags['max-kl'], flags['min-top1'], flags['max-ppl-ratio'])
    if (!flags.verify && Object.keys(gates).length > 0) throw new UsageError('flag.gate', 'quality gates (--max-kl, --min-top1, --max-ppl-ratio) apply to --verify')
    const peft = await peftOptions(flags, {merge: flags.merge, to: flags.to as FormatName})
    const read = {format: flags.format as FormatName | undefined, ema: flags.ema, config: flags.config ? await loadConfigFile(flags.config) : undefined, ...(peft ? {peft} : {})}
    const fpMode = flags['q-mode'] !== undefined && flags['q-mode'] !== 'affine'
    // With --q-recipe alone (affine), --group-size travels in mlxQuant.
    const quantization = flags.quantize === undefined && flags['q-recipe'] !== undefined && !fpMode ? undefined : quantizationOption(flags.quantize, flags['group-size'], flags['q-mode'], flags.to)
    const tokenizer = tokenizerRequest(flags, flags.to, flags.layout)
    const mlxQuant = mlxQuantFlags(flags['q-recipe'], flags['quantize-embedding'], flags.to, flags.quantize ?? (fpMode ? quantization?.bits : undefined), flags['group-size'])
    if (flags.push !== undefined && !isRepoId(flags.push)) throw new UsageError('push.repo', `invalid --push "${flags.push}" (expected OWNER/NAME, e.g. me/OpenELM-270M-mlx)`)
    if (flags['keep-stale'] && flags.push === undefined) throw new UsageError('flag.keep_stale', '--keep-stale applies to --push')
    // No token, no work: the conversion would be for nothing.
    if (flags.push !== undefined) await resolveToken(flags.token)
    const resolved = await this.localSource(args.source, flags)
    checkHubFlagsApply([resolved], flags, flags.push !== undefined)
    const source = resolved.path
    const result = await this.drain(convert(source, flags.to as FormatName, flags.out, read, {
      ...dtypeOptions(flags.dtype),
      ...(quantization ? {quantization} : {}), // else --dtype q8_0 keeps its own
      ...(mlxQuant ? {mlxQuant} : {}),
      layout: flags.layout,
      ...(onnxVariants ? {onnxVariants} : {}),
      shardSize: flags['shard-size'] ? parseSize(flags['shard-size']) : undefined,
      vocabSize: flags['vocab-size'],
      keepPaddedVocab: flags['keep-padded-vocab'],
      trainingCheckpoint: flags['training-checkpoint'],
      ...(flags['token-embedding-type'] ? {ggufTokenEmbeddingType: flags['token-embedding-type']} : {}),
      ...(flags['output-tensor-type'] ? {ggufOutputTensorType: flags['output-tensor-type']} : {}),
      force: flags.force,
      ...(tokenizer ? {tokenizerRequest: tokenizer} : {}),
    }))
    const total = result.target.files.reduce((a, f) => a + f.bytes, 0)
    this.log(`${result.source.path} (${result.source.format}, ${result.source.dtype}) → ${result.target.path} (${result.target.format}, ${result.target.dtype}${result.target.quantization ? `, ${['affine', 'q8_0'].includes(result.target.quantization.mode) ? `${result.target.quantization.bits}-bit` : result.target.quantization.mode}` : ''})`)
    for (const f of result.target.files) this.log(`  ${f.path}  ${bytes(f.bytes)}`)
    this.log(`  ${result.target.files.length} file${result.target.files.length === 1 ? '' : 's'}, ${bytes(total)}`)
    if (onnxVariants) this.log(`  variants: ${onnxVariants.join(', ')} (transformers.js loads ${onnxVariants[0]} unless given another dtype)`)
    if (result.tokenizer) this.log(`  tokenizer: ${result.tokenizer.reason}`)
    if (result.tokenizer?.chatTemplate) this.log(`  chat template: ${result.tokenizer.chatTemplate}`)
    let verified: VerifyReport | undefined
    if (flags.verify) {
      this.interruptLeaves(`output complete at ${result.target.path}, verification interrupted — not verified`)
      const variants = onnxVariants && onnxVariants.length > 1 ? variantTargets(result.target.path, result.target.files, onnxVariants) : undefined
      const report = await verifyConversion(source, result.target.path, {gates, ...(variants ? {variants} : {}), onPhase: (phase) => this.phase(phase === undefined ? undefined : `verify: ${phase}`), onCount: (done, total, unit) => this.progress.count(done, total, unit)}, read)
      this.phase()
      if (!this.jsonEnabled()) for (const line of reportLines(report)) this.log(line)
      this.interruptLeaves()
      verified = assertPassed(report)
    }
    if (flags.push === undefined) return verified ? {...result, verify: verified} : result
    this.interruptLeaves(`output complete at ${result.target.path}${verified ? ' (verified)' : ''}, push to ${flags.push} interrupted`)
    const pushed = await this.pushOutput(result.target.path, flags.push, flags.token, flags.endpoint, flags['keep-stale'])
    return {...result, ...(verified ? {verify: verified} : {}), push: pushed}
  }

  /** `push` of the finished output, rendered as the push command renders it. */
  private async pushOutput(dir: string, repo: string, token: string | undefined, endpoint: string | undefined, keepStale: boolean): Promise<PushResult> {
    const renderer = new PushRenderer({progress: this.showProgress, quiet: this.jsonEnabled(), log: (line) => this.logToStderr(line)})
    const events = push(dir, {repo, token, endpoint, keepStale})
    try {
      for (;;) {
        const step = await events.next()
        if (step.done) {
          const pushed = step.value
          if (pushed.deleted.length > 0) this.log(`deleted ${pushed.deleted.join(', ')}`)
          this.log(`pushed ${pushed.files.length} files to ${pushed.repo}: ${pushed.commitUrl}`)
          return pushed
        }
        renderer.handle(step.value)
      }
    } finally {
      renderer.stop()
    }
  }
}

/** `--variants` (ONNX only, by the flag table): known names, and it replaces --quantize / --dtype. */
function checkVariantsFlag(list: string, quantize: number | undefined, dtype: string | undefined): OnnxVariant[] {
  if (quantize !== undefined || dtype !== undefined) throw new UsageError('onnx.variants', '--variants names every model file to write; drop --quantize / --dtype')
  return parseOnnxVariants(list)
}
