/**
 * The model card (`README.md`) written when a pushed folder has none: YAML front matter the Hub
 * indexes (library, base model, tags, license, pipeline), then what the folder holds (format,
 * dtype/quantization, per-layer shapes) and the last verification report `convert --verify`
 * left in the folder. Built in memory; the user's folder is never modified.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {type FormatName} from '../formats/types.js'
import {inspect, type InspectReport} from '../inspect.js'
import {appleRelease} from '../model/origin.js'
import {type VerifyReport} from '../verify/index.js'
import {checkRows, qualityRows, resultWord} from '../verify/report.js'
import {repoOfCachePath} from './cache.js'
import {originClaims} from './origin.js'
import {GENERATED_CARD_MARKER} from '../formats/common.js'

/** Written by `openelm convert --verify` next to the model. */
export const VERIFY_REPORT_FILE = 'openelm-verify.json'
/** The license Apple's OpenELM repos declare (`license: other` + this name). */
export const OPENELM_LICENSE_NAME = 'apple-sample-code-license'
export const OPENELM_LICENSE_LINK = 'https://huggingface.co/apple/OpenELM/blob/main/LICENSE'
/** Metric rows shown from a verification report; the full report is uploaded next to the card. */
const MAX_METRIC_ROWS = 60
/** Nesting followed when collecting metrics from a report whose exact shape we do not own. */
const MAX_METRIC_DEPTH = 4

/** The Hub `library_name` for each format that has a loader library. */
const LIBRARY_NAMES: Partial<Record<FormatName, string>> = {hf: 'transformers', mlx: 'mlx', onnx: 'onnx'}

const FORMAT_TITLES: Record<FormatName, string> = {
  hf: 'Hugging Face transformers (safetensors)',
  mlx: 'MLX',
  onnx: 'ONNX',
  gguf: 'GGUF (llama.cpp)',
  corenet: 'CoreNet (PyTorch)',
}

export interface CardOptions {
  /** Target repo, `owner/name`. */
  repo: string
  /** `--base-model`; otherwise Apple's repo when the shape matches a release and `claims` name it (model/origin.ts). */
  baseModel?: string
  /** What the folder says it came from (hub/origin.ts originClaims): a claim, proof only with a matching shape. */
  claims?: string[]
  /** The source's own name (repo id or file name) when known and Apple's repo is not proven: "Converted from `…`". */
  sourceName?: string
  /**
   * Text written at convert time (a card a writer generated): kept, without its front matter and H1,
   * as a section before the license.
   */
  convertText?: string
  /** The folder's verify report failed and the push was allowed anyway (`--allow-failed-verify`): the card says so. */
  failedVerifyAllowed?: boolean
}

export interface ModelCard {
  text: string
  /** Front matter values, for tests and `--json`. */
  metadata: Record<string, string | string[]>
  notes: string[]
}

function yamlScalar(value: string): string {
  return /^[A-Za-z0-9][A-Za-z0-9._\/-]*$/.test(value) ? value : JSON.stringify(value)
}

function frontMatter(metadata: Record<string, string | string[]>): string {
  const lines = ['---']
  for (const [key, value] of Object.entries(metadata)) {
    if (Array.isArray(value)) {
      lines.push(`${key}:`)
      for (const item of value) lines.push(`- ${yamlScalar(item)}`)
    } else {
      lines.push(`${key}: ${yamlScalar(value)}`)
    }
  }
  lines.push('---')
  return lines.join('\n')
}

function markdownTable(headers: string[], rows: (string | number)[][]): string {
  const escape = (cell: string | number) => String(cell).replace(/\|/g, '\\|').replace(/\n/g, ' ')
  return [
    `| ${headers.join(' | ')} |`,
    `| ${headers.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((row) => `| ${row.map(escape).join(' | ')} |`),
  ].join('\n')
}

function formatNumber(n: number): string {
  if (Number.isInteger(n)) return String(n)
  const abs = Math.abs(n)
  return abs !== 0 && (abs < 1e-3 || abs >= 1e6) ? n.toExponential(3) : String(Number(n.toPrecision(6)))
}

/** Pass/fail from whichever verdict field a report carries. */
function verdict(report: Record<string, unknown>): boolean | undefined {
  for (const key of ['passed', 'pass', 'ok', 'success']) if (typeof report[key] === 'boolean') return report[key] as boolean
  const status = report.status ?? report.result ?? report.verdict
  if (typeof status === 'string') {
    if (/^(pass(ed)?|ok|success)$/i.test(status)) return true
    if (/^(fail(ed|ure)?|error|mismatch)$/i.test(status)) return false
  }
  return undefined
}

/** Every numeric leaf (and boolean verdicts below the top) as `a.b[0].c → value`, depth-limited. */
function collectMetrics(value: unknown, prefix: string, depth: number, out: [string, string][]): void {
  if (out.length >= MAX_METRIC_ROWS) return
  if (typeof value === 'number' && Number.isFinite(value)) out.push([prefix, formatNumber(value)])
  else if (typeof value === 'boolean' && prefix.includes('.')) out.push([prefix, value ? 'pass' : 'fail'])
  else if (depth < MAX_METRIC_DEPTH && Array.isArray(value)) value.forEach((v, i) => collectMetrics(v, `${prefix}[${i}]`, depth + 1, out))
  else if (depth < MAX_METRIC_DEPTH && value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) collectMetrics(v, prefix ? `${prefix}.${k}` : k, depth + 1, out)
  }
}

/**
 * A report `openelm verify` wrote (verdict, checks, pass): the result in its own words, then the named
 * checks with their thresholds and the quality metrics, as the terminal shows them. Undefined for any
 * other shape (the generic rendering below takes it).
 */
function namedVerifyTables(report: Record<string, unknown>): string | undefined {
  if (typeof report.verdict !== 'string' || typeof report.pass !== 'boolean' || !Array.isArray(report.checks)) return undefined
  try {
    const r = report as unknown as VerifyReport
    const lines = [`**Result: ${resultWord(r)}**`]
    if (!r.pass && Array.isArray(r.failures) && r.failures.length > 0) lines.push('', `Failures: ${r.failures.join('; ')}`)
    const checks = checkRows(r)
    if (checks.length > 0) lines.push('', markdownTable(['check', 'value', 'threshold', 'result'], checks))
    const quality = qualityRows(r)
    if (quality) lines.push('', 'Quality against the source (held-out text):', '', markdownTable(['metric', 'value', 'gate', 'result'], quality))
    for (const {variant, report: v} of Array.isArray(r.variants) ? r.variants : []) {
      lines.push('', `Variant \`${variant}\` (\`${path.basename(v.model.path)}\`): **${resultWord(v)}**`)
      const vChecks = checkRows(v)
      if (vChecks.length > 0) lines.push('', markdownTable(['check', 'value', 'threshold', 'result'], vChecks))
      const vQuality = qualityRows(v)
      if (vQuality) lines.push('', markdownTable(['metric', 'value', 'gate', 'result'], vQuality))
    }
    return lines.join('\n')
  } catch {
    return undefined
  }
}

/** Render `openelm-verify.json` whatever its exact shape: verdict, descriptive fields, metric table. */
export function renderVerifyReport(json: unknown): string {
  if (!json || typeof json !== 'object' || Array.isArray(json)) return 'The verification report could not be read (not a JSON object).'
  const report = json as Record<string, unknown>
  const named = namedVerifyTables(report)
  if (named) return named
  const lines: string[] = []
  const passed = verdict(report)
  lines.push(`**Result: ${passed === undefined ? 'unknown' : passed ? 'PASS' : 'FAIL'}**`)
  const fields = Object.entries(report).filter(([, v]) => typeof v === 'string' && (v as string).length <= 200)
  if (fields.length > 0) {
    lines.push('')
    for (const [k, v] of fields) lines.push(`- ${k}: \`${String(v).replace(/`/g, "'")}\``)
  }
  const metrics: [string, string][] = []
  collectMetrics(report, '', 0, metrics)
  if (metrics.length > 0) {
    lines.push('', markdownTable(['metric', 'value'], metrics))
    if (metrics.length >= MAX_METRIC_ROWS) lines.push('', `(first ${MAX_METRIC_ROWS} values; the full report is in \`${VERIFY_REPORT_FILE}\`)`)
  }
  return lines.join('\n')
}

/** Whether the folder's verify report says it failed (false: passed or unknown; undefined: no readable report). */
export async function verifyFailed(dir: string): Promise<boolean | undefined> {
  const r = await readVerifyReport(dir)
  if (!r || !('json' in r) || !r.json || typeof r.json !== 'object' || Array.isArray(r.json)) return undefined
  return verdict(r.json as Record<string, unknown>) === false
}

async function readVerifyReport(dir: string): Promise<{json?: unknown; error?: string} | undefined> {
  let text: string
  try {
    text = await fs.readFile(path.join(dir, VERIFY_REPORT_FILE), 'utf8')
  } catch {
    return undefined
  }
  try {
    return {json: JSON.parse(text)}
  } catch {
    return {error: `${VERIFY_REPORT_FILE} is not valid JSON; the card leaves the verification section out`}
  }
}

function dtypeLine(report: InspectReport): string {
  if (report.weights) return report.weights
  const q = report.quantization
  if (!q) return report.dtype
  if (q.mode !== 'q8_0' && q.mode !== 'affine') return `MLX ${q.mode} (${report.dtype} for the rest)`
  return q.mode === 'q8_0' ? `Q8_0 blocks (${report.dtype} for the rest)` : `${q.bits}-bit affine, group size ${q.groupSize} (${report.dtype} scales)`
}

/** How to run the pushed repo in its format's usual runtime: a fenced, copy-paste snippet (undefined: none). */
export function usageSnippet(format: FormatName, repo: string, fileName?: string, tokenizerRepo = repo): string | undefined {
  switch (format) {
    case 'mlx': return ['With [mlx-lm](https://github.com/ml-explore/mlx-lm) (Apple silicon):', '', '```sh', `mlx_lm.generate --model ${repo} --prompt "Once upon a time"`, '```'].join('\n')
    case 'gguf': return ['With [llama.cpp](https://github.com/ggml-org/llama.cpp):', '', '```sh', `llama-cli --hf-repo ${repo} --hf-file ${fileName ?? 'model.gguf'} -p "Once upon a time" -n 64`, '```'].join('\n')
    case 'onnx': return ['With [transformers.js](https://huggingface.co/docs/transformers.js):', '', '```js', "import {pipeline} from '@huggingface/transformers'", `const generator = await pipeline('text-generation', '${repo}')`, "console.log(await generator('Once upon a time', {max_new_tokens: 64}))", '```'].join('\n')
    case 'hf': return ['With [transformers](https://huggingface.co/docs/transformers) (OpenELM\'s modelling code lives in the repo, hence `trust_remote_code`):', '', '```python', 'from transformers import AutoModelForCausalLM, AutoTokenizer', `model = AutoModelForCausalLM.from_pretrained("${repo}", trust_remote_code=True)`, `tokenizer = AutoTokenizer.from_pretrained("${tokenizerRepo}")`, 'ids = tokenizer("Once upon a time", return_tensors="pt").input_ids', 'print(tokenizer.decode(model.generate(ids, max_new_tokens=64)[0]))', '```'].join('\n')
    case 'corenet': return ['With the `openelm` CLI (in PyTorch, a CoreNet checkpoint loads with `torch.load(path, weights_only=True)`):', '', '```sh', `huggingface-cli download ${repo} ${fileName ?? 'model.pt'} --local-dir .`, `openelm generate ${fileName ?? 'model.pt'} --prompt "Once upon a time"`, '```'].join('\n')
    default: return undefined
  }
}

/** Endings of the formats that are one file (GGUF, CoreNet). */
const SINGLE_FILE_MODEL = /\.(gguf|pt|pth)$/i

/** The one single-file model in `dir`, if there is exactly one. */
async function singleModelFile(dir: string): Promise<string | undefined> {
  const names = await fs.readdir(dir).catch(() => [] as string[])
  const models = names.filter((n) => SINGLE_FILE_MODEL.test(n))
  return models.length === 1 ? path.join(dir, models[0]!) : undefined
}

/**
 * The source a verify report proved this folder a conversion of (`relation: derived`): its name (the
 * Hub repo it was downloaded into, else its file or folder name) and that repo as a claim.
 */
function verifiedSource(json: unknown): {name: string; repo?: string} | undefined {
  if (!json || typeof json !== 'object') return undefined
  const r = json as {relation?: unknown; against?: {path?: unknown}}
  if (r.relation !== 'derived' || typeof r.against?.path !== 'string') return undefined
  const repo = repoOfCachePath(path.resolve(r.against.path))
  return {name: repo ?? path.basename(r.against.path), ...(repo ? {repo} : {})}
}

/** Build the card for `dir`. A folder this tool cannot read still gets a minimal card (with a note). */
export async function buildModelCard(dir: string, options: CardOptions): Promise<ModelCard> {
  const notes: string[] = []
  let report: InspectReport | undefined
  try {
    report = await inspect(dir)
  } catch (error) {
    // A folder holding one single-file model (`model.gguf`, `model.pt`) next to its verify report: that file.
    const single = await singleModelFile(dir)
    report = single ? await inspect(single).catch(() => undefined) : undefined
    if (!report) notes.push(`model card: could not read the model in ${dir} (${(error as Error).message}); writing a minimal card`)
  }
  const verify = await readVerifyReport(dir)
  if (verify?.error) notes.push(verify.error)
  const source = verifiedSource(verify && 'json' in verify ? verify.json : undefined)
  const claims = options.claims ?? [...(await originClaims(dir)), ...(source?.repo ? [source.repo] : [])]
  const sourceName = options.sourceName ?? source?.name
  const card = renderModelCard(report, verify && 'json' in verify ? verify.json : undefined, {...options, claims, ...(sourceName ? {sourceName} : {})})
  return {...card, notes: [...notes, ...card.notes]}
}

/**
 * A card written at convert time, as a section of the full card: front matter, the marker and its
 * H1 dropped, its headings one level below the section's; empty text gives undefined.
 */
export function convertSection(text: string): string | undefined {
  const body = text.replace(/^\uFEFF?---\r?\n[\s\S]*?\r?\n---[ \t]*(\r?\n|$)/, '').replace(GENERATED_CARD_MARKER, '')
  const lines: string[] = []
  let fence = false
  for (const line of body.split(/\r?\n/)) {
    if (/^\s*(```|~~~)/.test(line)) fence = !fence
    if (!fence && /^#\s/.test(line)) continue
    lines.push(!fence && /^#{2,5}\s/.test(line) ? `#${line}` : line)
  }
  const out = lines.join('\n').replace(/\n{3,}/g, '\n\n').trim()
  return out === '' ? undefined : out
}

/** The card text from an inspect report (absent: unreadable model) and a parsed verify report. */
export function renderModelCard(report: InspectReport | undefined, verifyReport: unknown, options: CardOptions): ModelCard {
  const notes: string[] = []
  const baseModel = options.baseModel ?? (report ? appleRelease(report.config, options.claims ?? []) : undefined)
  const metadata: Record<string, string | string[]> = {}
  const library = report ? LIBRARY_NAMES[report.format] : undefined
  if (library) metadata.library_name = library
  if (baseModel) metadata.base_model = baseModel
  if (baseModel && report?.quantization) metadata.base_model_relation = 'quantized'
  const tags = ['openelm']
  if (report) {
    if (report.format === 'hf') tags.push('safetensors')
    else tags.push(report.format)
    if (report.quantization) tags.push(report.quantization.mode === 'affine' ? `${report.quantization.bits}-bit` : report.quantization.mode)
  }
  metadata.tags = tags
  metadata.license = 'other'
  metadata.license_name = OPENELM_LICENSE_NAME
  metadata.license_link = OPENELM_LICENSE_LINK
  metadata.pipeline_tag = 'text-generation'

  const name = options.repo.split('/').pop() ?? options.repo
  const body: string[] = [`# ${name}`, '']
  const as = report ? ` to ${FORMAT_TITLES[report.format]}` : ''
  body.push(
    baseModel
      ? `Converted from [${baseModel}](https://huggingface.co/${baseModel})${as} with the \`openelm\` CLI.`
      : options.sourceName
        ? `Converted from \`${options.sourceName.replace(/`/g, "'")}\`${as} with the \`openelm\` CLI.`
        : `An OpenELM model${report ? ` in ${FORMAT_TITLES[report.format]} format` : ''}, published with the \`openelm\` CLI.`,
  )
  if (report) {
    const c = report.config
    body.push(
      '',
      '## Model',
      '',
      `- Format: ${FORMAT_TITLES[report.format]}`,
      `- Weights: ${dtypeLine(report)}`,
      `- Parameters: ${report.parameters.toLocaleString('en-US')}${report.paddedVocabRows && report.parametersWithoutPadding !== undefined ? ` (${report.parametersWithoutPadding.toLocaleString('en-US')} without the ${report.paddedVocabRows} padded vocabulary rows)` : ''}`,
      `- Layers: ${c.num_transformer_layers}, model dim ${c.model_dim}, head dim ${c.head_dim}, vocabulary ${c.vocab_size}, context ${c.max_context_length}`,
      '',
      'OpenELM uses layer-wise scaling: every layer has its own number of query/KV heads and FFN width.',
      '',
      markdownTable(['layer', 'query heads', 'KV heads', 'FFN dim'], report.layers.map((l, i) => [i, l.qHeads, l.kvHeads, l.ffnDim])),
    )
  }
  const usage = report ? usageSnippet(report.format, options.repo, report.format === 'gguf' || report.format === 'corenet' ? path.basename(report.path) : undefined, report.tokenizerFiles.length > 0 ? options.repo : 'meta-llama/Llama-2-7b-hf') : undefined
  if (usage) body.push('', '## Usage', '', usage)
  const verification = verifyReport === undefined ? undefined : renderVerifyReport(verifyReport)
  if (verification) {
    body.push('', '## Verification', '')
    if (options.failedVerifyAllowed) body.push('> **Warning: this model FAILED verification** and was uploaded anyway (`openelm push --allow-failed-verify`). Do not rely on it computing what its source computes.', '')
    body.push(`From \`${VERIFY_REPORT_FILE}\` (written by \`openelm convert --verify\`).`, '', verification)
  }
  const convertText = options.convertText === undefined ? undefined : convertSection(options.convertText)
  if (convertText) body.push('', '## Conversion', '', convertText)
  body.push('', '## License', '', `Apple's OpenELM weights are released under the [Apple sample code license](${OPENELM_LICENSE_LINK}).`, '')
  return {text: `${frontMatter(metadata)}\n\n${body.join('\n')}`, metadata, notes}
}
