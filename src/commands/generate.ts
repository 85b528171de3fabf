import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base.js'
import {formatOption} from '../cli/flags.js'
import {UsageError} from '../errors.js'
import {type FormatName} from '../formats/types.js'
import {DEFAULT_MAX_TOKENS, generate, GENERATE_BACKENDS, type GenerateResult} from '../generate/index.js'

export default class Generate extends BaseCommand {
  static override summary = 'Generate text from a model in any format: greedy by default, streamed as it is made.'
  static override description = `The prompt is tokenized with the model's tokenizer (tokenizer.model / tokenizer.json beside it, a GGUF's own vocabulary, --tokenizer, or LLaMA-2's for 32000-row models), BOS prepended, run once with a KV cache, then one token per step until EOS or --max-tokens. Backends: ts (built in, CPU), torch (the PyTorch reference), onnxruntime (ONNX exports), llama.cpp (GGUF files). With the same f32 model, greedy tokens are the same on every backend.`
  static override examples = [
    '<%= config.bin %> generate ./OpenELM-270M --prompt "Once upon a time"',
    '<%= config.bin %> generate model.gguf --backend llama.cpp --prompt "The capital of France is" --max-tokens 16',
    '<%= config.bin %> generate ./OpenELM-270M-onnx --backend onnxruntime --prompt "Hello" --temperature 0.8 --top-p 0.9 --seed 7',
    '<%= config.bin %> generate ./OpenELM-270M --prompt "Hello" --json',
  ]
  static override args = {model: Args.string({description: 'model folder or file (any format)', required: true})}
  static override flags = {
    prompt: Flags.string({char: 'p', description: 'prompt text (BOS is prepended)', exclusive: ['tokens']}),
    tokens: Flags.string({description: 'the prompt as comma-separated token ids, used as given (no BOS added)', exclusive: ['prompt']}),
    'max-tokens': Flags.integer({description: 'tokens to generate at most (stops earlier at EOS)', default: DEFAULT_MAX_TOKENS, min: 1}),
    temperature: Flags.string({description: 'sampling temperature; 0 = greedy (the argmax, lowest id on a tie)', default: '0'}),
    'top-p': Flags.string({description: 'nucleus sampling: keep the most likely tokens up to this probability mass (with --temperature > 0)', default: '1'}),
    seed: Flags.integer({description: 'seed of the sampler (same seed, same tokens; default 0)', min: 0}),
    backend: Flags.string({description: 'where the model runs: ts (built in, CPU), torch (PyTorch reference), onnxruntime (ONNX), llama.cpp (GGUF)', options: [...GENERATE_BACKENDS], default: 'ts'}),
    device: Flags.string({description: 'device of the torch, onnxruntime and llama.cpp backends (ts is CPU only)', options: ['auto', 'cpu', 'cuda'], default: 'auto'}),
    threads: Flags.integer({description: 'CPU threads of the ts engine and llama.cpp (default: one per core)', min: 1}),
    chat: Flags.boolean({description: 'Instruct models: wrap --prompt as the user\'s turn of OpenELM-Instruct\'s chat template (<|user|> … </s> <|assistant|>)', default: false}),
    system: Flags.string({description: 'with --chat: a system message before the user\'s turn', dependsOn: ['chat']}),
    tokenizer: Flags.string({description: "tokenizer to use: a folder, tokenizer.model or tokenizer.json (default: the model's own, else LLaMA-2's for 32000-row models)"}),
    python: Flags.string({description: 'Python interpreter with torch and msgpack (torch backend)'}),
    format: formatOption,
  }

  async run(): Promise<GenerateResult> {
    const {args, flags} = await this.parse(Generate)
    const temperature = parseNumber('temperature', flags.temperature)
    const topP = parseNumber('top-p', flags['top-p'])
    if (topP !== 1 && temperature === 0) throw new UsageError('flag.top_p', '--top-p applies to sampling: pass --temperature > 0 with it')
    if (flags.seed !== undefined && temperature === 0) throw new UsageError('flag.seed', '--seed applies to sampling: pass --temperature > 0 with it')
    const tokens = flags.tokens === undefined ? undefined : parseTokens(flags.tokens)
    if (flags.prompt === undefined && tokens === undefined) throw new UsageError('flag.prompt', 'give the prompt: --prompt TEXT (or --tokens IDS)')
    if (flags.python !== undefined && flags.backend !== 'torch') throw new UsageError('flag.python', '--python applies to --backend torch')
    if (flags.threads !== undefined && !['ts', 'llama.cpp'].includes(flags.backend)) throw new UsageError('flag.threads', '--threads applies to --backend ts and llama.cpp')
    const events = generate(args.model, {
      prompt: flags.prompt, tokens, maxTokens: flags['max-tokens'], temperature, topP, seed: flags.seed ?? 0,
      backend: flags.backend, device: flags.device, threads: flags.threads, tokenizer: flags.tokenizer, python: flags.python,
      format: flags.format as FormatName | undefined,
      ...(flags.chat ? {chat: flags.system !== undefined ? {system: flags.system} : {}} : {}),
    })
    const stream = !this.jsonEnabled()
    let hasTokenizer = true
    /** The prompt as typed, still to be written before the first token. */
    let echo = ''
    let result: GenerateResult
    if (stream) this.phase('loading the model')
    for (;;) {
      const step = await events.next()
      if (step.done) {
        result = step.value
        break
      }
      const event = step.value
      if (!stream) continue
      if (event.type === 'prompt') {
        hasTokenizer = event.tokenizer !== undefined
        // Text continues the prompt as typed; without a tokenizer the ids are printed instead.
        // With --chat only the answer is printed (the prompt was wrapped in the template).
        // The prompt is written with the first token, after the spinner's line: a spinner drawn
        // after it on the same line would erase it when cleared.
        if (flags.prompt !== undefined && !flags.chat) echo = flags.prompt
        else if (!hasTokenizer) this.logToStderr('note: no tokenizer for this model: printing token ids')
        this.phase('running the prompt')
      } else {
        this.phase()
        process.stdout.write(echo + (event.type === 'token' && !hasTokenizer ? ` ${event.id}` : event.text))
        echo = ''
      }
    }
    if (stream) {
      this.phase()
      process.stdout.write(echo)
      process.stdout.write('\n')
      const t = result.timing
      const speed = t.tokensPerSecond === null ? '' : `, ${t.tokensPerSecond.toFixed(1)} tokens/s`
      this.logToStderr(`${result.generated.ids.length} tokens (${result.finishReason}) in ${(t.prefillSeconds + t.decodeSeconds).toFixed(2)} s${speed}; prompt ${result.prompt.ids.length} tokens at ${t.prefillTokensPerSecond.toFixed(1)} tokens/s; ${result.backend} on ${result.device}`)
    }
    return result
  }
}

function parseNumber(flag: string, text: string): number {
  const v = Number(text)
  if (text.trim() === '' || !Number.isFinite(v)) throw new UsageError(`flag.${flag}`, `--${flag} must be a number, got "${text}"`)
  return v
}

function parseTokens(text: string): number[] {
  return text.split(',').map((s, i) => {
    const v = Number(s.trim())
    if (s.trim() === '' || !Number.isInteger(v)) throw new UsageError('generate.tokens', `--tokens: item ${i} ("${s}") is not an integer token id`)
    return v
  })
}
