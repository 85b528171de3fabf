/**
 * CoreNet's parameter-efficient fine-tuning checkpoints (LoRA and DoRA), merged into the base
 * weights on reading. Facts from corenet/third_party/modeling/lora.py (CoreNet 1aa3acd):
 *
 *  - `add_lora_layers` wraps each module whose name `re.match`-es a `model.lora.config[].regex`
 *    (Apple's projects/openelm/peft_configs/*.yaml: token_embeddings, qkv_proj, out_proj, proj_1/2;
 *    `adapter_name: lora`, r 32, lora_alpha 32, use_dora false) in `Linear` or `Embedding`, so the
 *    wrapped weight is saved as `<module>.base_layer.weight` (the recipes' `rename_scopes_map`).
 *  - `LoraLayer.__init__` / `Linear.update_layer`: `lora_A.<name>` = nn.Linear(in, r) → weight [r, in],
 *    `lora_B.<name>` = nn.Linear(r, out) → weight [out, r]; `scaling = lora_alpha / r`
 *    (`lora_alpha / sqrt(r)` with use_rslora). r and alpha are NOT saved: r is A's row count, alpha
 *    must come from the run's YAML or a flag.
 *  - `Linear.get_delta_weight` = (B @ A) · scaling; `Linear.merge`: W + delta (LoRA), or for DoRA
 *    `m / ‖W + delta‖_dim1 · (W + delta)` with `m` = `lora_magnitude_vector.<name>` [out]
 *    (`_get_weight_norm`: torch.linalg.norm(dim=1), no epsilon; detached in `_apply_dora`).
 *  - `Embedding.update_layer`: `lora_embedding_A.<name>` [r, num_embeddings], `lora_embedding_B.<name>`
 *    [embedding_dim, r] (ParameterDicts); `Embedding.forward` adds F.embedding(ids, Aᵀ) @ Bᵀ · scaling,
 *    i.e. row v of the table gains scaling · (B @ A)[:, v]. DoRA on embeddings is refused there.
 *  - general_gpt.py `GeneralGPTModel.forward` computes the tied logits with
 *    `F.linear(x, weight=self.token_embeddings.weight)`, and `BaseTunerLayer.weight` returns the
 *    BASE layer's weight: the embedding adapter changes the input lookup only. A tied model cannot
 *    hold that, so an embedding adapter is merged into both uses or dropped, by the user's choice.
 */
import {promises as fs} from 'node:fs'
import {ConfigError, FormatError, IoError, MappingError, UsageError} from '../../errors.js'
import {numel, renamed, type TensorRecord} from '../../tensor/record.js'
import {type LowRankDelta, mergedRecord} from '../../tensor/lora.js'
import {dominantDType} from '../common.js'
import {parseYaml, type YamlValue} from './yaml.js'
import {
  type Checkpoint, type FormatName, type LoraLayerConfig, type PeftInfo, type PeftModule, type PeftOptions,
} from '../types.js'

/** Where CoreNet keeps the LoRA layer configs in a training YAML (base_model.py `--model.lora.config`). */
const LORA_PATH = ['model', 'lora', 'config'] as const

/** The tensors a CoreNet LoRA layer adds, by state-dict name (module path, adapter name). */
const PEFT_NAMES = [
  {role: 'base', re: /^(.+)\.base_layer\.weight$/},
  {role: 'bias', re: /^(.+)\.base_layer\.bias$/},
  {role: 'A', re: /^(.+)\.lora_A\.([^.]+)\.weight$/},
  {role: 'B', re: /^(.+)\.lora_B\.([^.]+)\.weight$/},
  {role: 'magnitude', re: /^(.+)\.lora_magnitude_vector\.([^.]+)$/},
  {role: 'embA', re: /^(.+)\.lora_embedding_A\.([^.]+)$/},
  {role: 'embB', re: /^(.+)\.lora_embedding_B\.([^.]+)$/},
] as const
type PeftRole = (typeof PEFT_NAMES)[number]['role']

/** Modules CoreNet's recipes can wrap, by layer type (lora.py supports LinearLayer and Embedding only). */
const LINEAR_MODULE = /^layers\.\d+\.(attn\.qkv_proj|attn\.out_proj|ffn\.proj_1|ffn\.proj_2)$/
const EMBEDDING_MODULE = 'token_embeddings'

/** What `--no-merge` would need per target, and why it is refused today. */
export const NO_MERGE_REASONS: Record<FormatName, string> = {
  hf: 'the hf writer writes merged weights only (unmerged adapters would need a PEFT adapter_model.safetensors + adapter_config.json, not written yet)',
  mlx: 'the mlx writer writes merged weights only (mlx-lm could load unmerged adapters from adapters.safetensors, not written yet)',
  gguf: 'the gguf writer writes merged weights only (llama.cpp takes unmerged adapters as a separate LoRA GGUF, not written yet; it has no DoRA)',
  onnx: 'an ONNX graph has no place for unmerged adapters: the weights are merged',
  corenet: 'the corenet writer writes the canonical (merged) state dict only; keeping base_layer/lora_* tensors is not implemented yet',
}

export function refuseNoMerge(to: FormatName): never {
  throw new UsageError('peft.no_merge', `--no-merge: ${NO_MERGE_REASONS[to]}`, {format: to})
}

interface AdapterParts {
  A?: TensorRecord
  B?: TensorRecord
  magnitude?: TensorRecord
  embA?: TensorRecord
  embB?: TensorRecord
}

interface ModuleParts {
  module: string
  /** `<module>.base_layer.weight`, when this state dict holds the base. */
  base?: TensorRecord
  adapters: Map<string, AdapterParts>
}

/** A state dict split into plain canonical tensors and the modules CoreNet's LoRA layers wrapped. */
export interface PeftSplit {
  /** Every non-adapter tensor under its canonical name (`base_layer.` removed). */
  plain: TensorRecord[]
  modules: Map<string, ModuleParts>
  /** How many adapter tensors (lora_*) there were. */
  adapterTensors: number
}

function parsePeftName(name: string): {role: PeftRole; module: string; adapter?: string} | undefined {
  for (const {role, re} of PEFT_NAMES) {
    const m = re.exec(name)
    if (m) return {role, module: m[1]!, ...(m[2] === undefined ? {} : {adapter: m[2]})}
  }
  return undefined
}

/** Split a state dict's records (prefixes already stripped) by CoreNet's PEFT names. */
export function splitPeft(records: readonly TensorRecord[]): PeftSplit {
  const plain: TensorRecord[] = []
  const modules = new Map<string, ModuleParts>()
  let adapterTensors = 0
  for (const record of records) {
    const parsed = parsePeftName(record.name)
    if (!parsed) {
      plain.push(record)
      continue
    }
    if (parsed.role === 'bias') {
      throw new MappingError('peft.bias', `tensor ${record.name}: OpenELM's linear layers have no bias`, {tensor: record.name})
    }
    const isLinear = LINEAR_MODULE.test(parsed.module)
    const isEmbedding = parsed.module === EMBEDDING_MODULE
    if (!isLinear && !isEmbedding) {
      throw new MappingError('peft.module', `tensor ${record.name}: ${parsed.module} is not a module CoreNet's LoRA layers wrap in OpenELM (token_embeddings, qkv_proj, out_proj, proj_1, proj_2)`, {tensor: record.name})
    }
    const parts: ModuleParts = modules.get(parsed.module) ?? {module: parsed.module, adapters: new Map<string, AdapterParts>()}
    modules.set(parsed.module, parts)
    if (parsed.role === 'base') {
      // Renamed to the canonical name, so the reader's checks see an ordinary weight.
      parts.base = renamed(record, `${parsed.module}.weight`)
      plain.push(parts.base)
      continue
    }
    adapterTensors++
    const wrongType = (parsed.role === 'embA' || parsed.role === 'embB') ? !isEmbedding : !isLinear
    if (wrongType) {
      throw new MappingError('peft.module', `tensor ${record.name}: ${parsed.role === 'embA' || parsed.role === 'embB' ? 'an embedding adapter on a linear layer' : 'a linear adapter on the embedding'} (lora.py's Embedding keeps lora_embedding_A/B, its Linear lora_A/B)`, {tensor: record.name})
    }
    const adapter = parts.adapters.get(parsed.adapter!) ?? {}
    parts.adapters.set(parsed.adapter!, adapter)
    if (adapter[parsed.role as keyof AdapterParts]) throw new MappingError('tensor.duplicate', `tensor ${record.name} appears twice`, {tensor: record.name})
    adapter[parsed.role as keyof AdapterParts] = record
  }
  return {plain, modules, adapterTensors}
}

/** True when a state dict's names are those of a CoreNet PEFT model. */
export function hasPeftNames(records: readonly TensorRecord[]): boolean {
  return records.some((r) => parsePeftName(r.name) !== undefined)
}

// ---- the run's LoRA settings --------------------------------------------------------------------

function field(value: YamlValue | undefined, key: string): YamlValue | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? value[key] : undefined
}

/** `model.lora.config` of a CoreNet training YAML (LoRAConfig.from_json's input). */
export function loraConfigFromYaml(value: YamlValue, file = 'config'): LoraLayerConfig[] {
  let list: YamlValue | undefined = value
  for (const key of LORA_PATH) list = field(list, key)
  if (!Array.isArray(list) || list.length === 0) {
    throw new ConfigError('peft.lora_config', `${file}: no ${LORA_PATH.join('.')} list (the LoRA settings of a CoreNet PEFT run)`, {path: file})
  }
  return list.map((entry, i) => {
    const where = `${file}: ${LORA_PATH.join('.')}[${i}]`
    const regex = field(entry, 'regex')
    const moduleType = field(entry, 'module_type')
    const params = field(entry, 'params')
    if (typeof regex !== 'string') throw new ConfigError('peft.lora_config', `${where}.regex must be a string`, {path: file})
    if (moduleType !== 'linear' && moduleType !== 'embedding') throw new ConfigError('peft.lora_config', `${where}.module_type must be linear or embedding (lora.py make_lora_layer)`, {path: file})
    const num = (key: string, required: boolean): number | undefined => {
      const v = field(params, key)
      if (v === undefined || v === null) {
        if (required) throw new ConfigError('peft.lora_config', `${where}.params.${key} is missing`, {path: file})
        return undefined
      }
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError('peft.lora_config', `${where}.params.${key} must be a number`, {path: file})
      return v
    }
    const bool = (key: string): boolean | undefined => {
      const v = field(params, key)
      if (v === undefined || v === null) return undefined
      if (typeof v !== 'boolean') throw new ConfigError('peft.lora_config', `${where}.params.${key} must be true or false`, {path: file})
      return v
    }
    const adapterName = field(params, 'adapter_name')
    const r = num('r', false)
    if (r !== undefined && !(Number.isInteger(r) && r > 0)) throw new ConfigError('peft.lora_config', `${where}.params.r must be a positive integer`, {path: file})
    const dora = bool('use_dora')
    return {
      regex, moduleType,
      ...(typeof adapterName === 'string' ? {adapterName} : {}),
      ...(r === undefined ? {} : {r}),
      alpha: num('lora_alpha', true)!,
      rslora: bool('use_rslora') ?? false,
      ...(dora === undefined ? {} : {dora}),
    }
  })
}

/** `--lora-config FILE`: the run's CoreNet YAML (its model.lora.config list). */
export async function loadLoraConfigFile(file: string): Promise<{file: string; layers: LoraLayerConfig[]}> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (error) {
    throw new IoError('file.open', `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {path: file})
  }
  return {file, layers: loraConfigFromYaml(parseYaml(text), file)}
}

/** The config entry CoreNet would have used for `module` (re.match: anchored at the start only). */
function matchLayerConfig(module: string, config: {file: string; layers: LoraLayerConfig[]}): LoraLayerConfig {
  const hits = config.layers.filter((layer) => {
    let re: RegExp
    try {
      re = new RegExp(`^(?:${layer.regex})`)
    } catch (error) {
      throw new ConfigError('peft.lora_config', `${config.file}: regex ${JSON.stringify(layer.regex)} is not valid: ${(error as Error).message}`, {path: config.file})
    }
    return re.test(module)
  })
  if (hits.length === 0) throw new ConfigError('peft.lora_config', `${config.file}: no regex of model.lora.config matches ${module}, which has adapters in the checkpoint`, {path: config.file, module})
  // lora.py add_lora_layers: "Layer {name} matched multiple regexes".
  if (hits.length > 1) throw new ConfigError('peft.lora_config', `${config.file}: ${module} matches ${hits.length} regexes of model.lora.config (CoreNet refuses that too)`, {path: config.file, module})
  return hits[0]!
}

// ---- merging ------------------------------------------------------------------------------------

export const ALPHA_MISSING = 'lora_alpha is not stored in CoreNet checkpoints: pass --lora-alpha (Apple\'s projects/openelm/peft_configs use 32, with r 32) or --lora-config with the run\'s training YAML'
export const EMBEDDING_UNCHOSEN = 'token_embeddings has a LoRA adapter, which CoreNet applies to the input lookup only (its tied output layer keeps the base weight) and a tied model cannot hold: pass --embedding-adapter merge (input and output both adapted, as mlx-lm\'s fuse does) or drop'

interface Resolved {
  info: PeftModule
  delta: LowRankDelta
}

function resolveModule(parts: ModuleParts, options: PeftOptions, file: string): Resolved | undefined {
  if (parts.adapters.size === 0) return undefined
  if (parts.adapters.size > 1) {
    throw new FormatError('peft.adapters', `${file}: ${parts.module} has ${parts.adapters.size} adapters (${[...parts.adapters.keys()].join(', ')}); a CoreNet checkpoint does not record which are active`, {path: file, module: parts.module})
  }
  const [adapterName, a] = [...parts.adapters.entries()][0]!
  const type = parts.module === EMBEDDING_MODULE ? 'embedding' : 'linear'
  const first = type === 'embedding' ? a.embA : a.A
  const second = type === 'embedding' ? a.embB : a.B
  const missing = type === 'embedding' ? (!a.embA ? 'lora_embedding_A' : 'lora_embedding_B') : (!a.A ? 'lora_A' : 'lora_B')
  if (!first || !second) throw new FormatError('peft.incomplete', `${file}: ${parts.module} has no ${missing}.${adapterName} beside its other adapter tensors`, {path: file, module: parts.module})
  if (first.shape.length !== 2) throw new FormatError('peft.shape', `${file}: ${first.name} has shape [${first.shape.join(', ')}] (expected [r, ...])`, {path: file, tensor: first.name})
  const rank = first.shape[0]!
  const kind = a.magnitude ? 'dora' : 'lora'
  let alpha: number | undefined
  let rslora = false
  if (options.loraAlpha !== undefined) alpha = options.loraAlpha
  else if (options.loraConfig) {
    const layer = matchLayerConfig(parts.module, options.loraConfig)
    const where = `${options.loraConfig.file}: ${parts.module}`
    if (layer.moduleType !== type) throw new ConfigError('peft.lora_config', `${where} is a ${type} adapter in the checkpoint, module_type ${layer.moduleType} in the config`, {module: parts.module})
    if (layer.r !== undefined && layer.r !== rank) throw new ConfigError('peft.lora_config', `${where} has rank ${rank} in the checkpoint, r ${layer.r} in the config`, {module: parts.module})
    if (layer.dora !== undefined && layer.dora !== (kind === 'dora')) throw new ConfigError('peft.lora_config', `${where} is ${kind === 'dora' ? 'DoRA' : 'LoRA'} in the checkpoint, use_dora ${layer.dora} in the config`, {module: parts.module})
    if (layer.adapterName !== undefined && layer.adapterName !== adapterName) throw new ConfigError('peft.lora_config', `${where} has adapter "${adapterName}" in the checkpoint, adapter_name "${layer.adapterName}" in the config`, {module: parts.module})
    alpha = layer.alpha
    rslora = layer.rslora
  }
  // Linear.update_layer: scaling = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.
  const scale = alpha === undefined ? undefined : options.fault === 'alpha-scale' ? alpha : rslora ? alpha / Math.sqrt(rank) : alpha / rank
  const info: PeftModule = {
    module: parts.module, tensor: `${parts.module}.weight`, type, kind, adapterName, rank,
    ...(alpha === undefined ? {} : {alpha}), rslora, ...(scale === undefined ? {} : {scale}),
  }
  const delta: LowRankDelta = type === 'embedding'
    ? {u: first, uTransposed: true, v: second, vTransposed: true, rank, scale: scale ?? NaN, ...(options.fault ? {fault: options.fault} : {})}
    : {u: second, uTransposed: false, v: first, vTransposed: false, rank, scale: scale ?? NaN,
      ...(a.magnitude ? {magnitude: a.magnitude} : {}), ...(options.fault ? {fault: options.fault} : {})}
  return {info, delta}
}

/** A record that refuses to be read until the missing settings are given (inspect only). */
function unresolvedRecord(base: TensorRecord, reasons: string[]): TensorRecord {
  const error = () => new UsageError('peft.unresolved', `${base.name}: ${reasons.join('; ')}`, {tensor: base.name})
  return {name: base.name, dtype: 'F32', shape: base.shape, byteLength: numel(base.shape) * 4, read: () => Promise.reject(error())}
}

/**
 * The unmerged inputs of each merge (base weights under canonical names, adapter tensors under
 * their stored names), for the reference that applies the adapters itself (src/verify/peft.ts).
 */
const UNMERGED = new WeakMap<PeftInfo, TensorRecord[]>()

export function unmergedRecords(info: PeftInfo): TensorRecord[] | undefined {
  return UNMERGED.get(info)
}

export interface MergeContext {
  /** The file the adapters came from, and its dict key ('' for a bare state dict). */
  adapterFile: string
  adapterKey: string
  base: PeftInfo['base']
}

/**
 * Replace each adapted weight in `tensors` (canonical names) by its lazily merged record.
 * Returns the new records, what `inspect` shows, and notes.
 */
export function mergeAdapters(
  tensors: readonly TensorRecord[], modules: Map<string, ModuleParts>, options: PeftOptions, context: MergeContext,
): {tensors: TensorRecord[]; info: PeftInfo; notes: string[]} {
  const file = context.adapterFile
  const resolved = new Map<string, Resolved>()
  for (const parts of modules.values()) {
    const r = resolveModule(parts, options, file)
    if (r) resolved.set(r.info.tensor, r)
  }
  const byName = new Map(tensors.map((t) => [t.name, t]))
  for (const tensor of resolved.keys()) {
    if (!byName.has(tensor)) throw new MappingError('peft.no_base', `${file}: adapters for ${tensor.slice(0, -'.weight'.length)}, but the base has no ${tensor}`, {tensor})
  }
  const kinds = new Set([...resolved.values()].map((r) => r.info.kind))
  const embedding = resolved.has(`${EMBEDDING_MODULE}.weight`) ? (options.embeddingAdapter ?? 'unresolved') : undefined
  const unresolved: string[] = []
  if ([...resolved.values()].some((r) => r.info.alpha === undefined)) unresolved.push(ALPHA_MISSING)
  if (embedding === 'unresolved') unresolved.push(EMBEDDING_UNCHOSEN)
  if (unresolved.length > 0 && !options.describeOnly) {
    throw new UsageError('peft.unresolved', `${file}: ${unresolved.join('; ')}`, {path: file})
  }
  const notes: string[] = []
  const out = tensors.map((t) => {
    const r = resolved.get(t.name)
    if (!r) return t
    if (r.info.type === 'embedding' && embedding === 'drop') return t
    if (unresolved.length > 0) return unresolvedRecord(t, unresolved)
    return mergedRecord(t, r.delta)
  })
  const list = [...resolved.values()].map((r) => r.info)
  const emb = list.find((m) => m.type === 'embedding')
  if (emb) {
    const rows = byName.get(emb.tensor)!.shape[0]!
    const covered = resolved.get(emb.tensor)!.delta.u.shape[1]!
    if (covered > rows) notes.push(`the embedding adapter covers ${covered} rows, the base ${rows}: rows past ${rows} are not used`)
    if (embedding === 'merge') notes.push('the embedding adapter is merged into the tied embedding: input and output layer both adapted (CoreNet\'s own forward adapts the input only)')
    if (embedding === 'drop') notes.push('the embedding adapter was dropped: the embedding keeps its base weight (CoreNet\'s own forward adapts the input lookup)')
  }
  if (unresolved.length === 0) notes.push(`merged ${kinds.has('dora') ? (kinds.has('lora') ? 'LoRA and DoRA' : 'DoRA') : 'LoRA'} adapters into ${list.length - (embedding === 'drop' ? 1 : 0)} weights (f32)`)
  const alphaSource = options.loraAlpha !== undefined ? 'flag' : options.loraConfig ? 'lora-config' : 'unknown'
  const info: PeftInfo = {
    kind: kinds.size === 2 ? 'lora+dora' : kinds.has('dora') ? 'dora' : 'lora',
    modules: list, alphaSource, ...(embedding ? {embedding} : {}),
    adapterFile: context.adapterFile, adapterKey: context.adapterKey, base: context.base, unresolved,
  }
  const adapterRecords = [...modules.values()].flatMap((m) => [...m.adapters.values()].flatMap((a) => Object.values(a) as TensorRecord[]))
  UNMERGED.set(info, [...tensors, ...adapterRecords])
  return {tensors: out, info, notes}
}

/** Modules whose base weight is in a state dict but whose adapters are not: only valid with --adapter. */
export function baseOnlyModules(split: PeftSplit): string[] {
  return [...split.modules.values()].filter((m) => m.base && m.adapters.size === 0).map((m) => m.module)
}

/**
 * `--adapter FILE` on an opened base checkpoint (any format): merge the adapter tensors of `split`
 * (the adapter file's state dict) into the base's canonical weights.
 */
export function withAdapters(
  checkpoint: Checkpoint, split: PeftSplit, options: PeftOptions, context: MergeContext, close: () => Promise<void>,
): Checkpoint {
  if (checkpoint.extras.peft) {
    throw new UsageError('peft.adapter_twice', `--adapter: ${checkpoint.path} already carries adapters; convert it without --adapter`, {path: checkpoint.path})
  }
  const stray = split.plain[0]
  if (stray) {
    throw new FormatError('peft.not_adapter', `--adapter ${context.adapterFile}: holds ${stray.name}, which is not an adapter tensor (a whole checkpoint? convert it directly, without --adapter)`, {path: context.adapterFile, tensor: stray.name})
  }
  if (split.adapterTensors === 0) throw new FormatError('peft.no_adapters', `--adapter ${context.adapterFile}: no LoRA/DoRA tensors in it`, {path: context.adapterFile})
  const merged = mergeAdapters(checkpoint.tensors, split.modules, options, context)
  const baseClose = checkpoint.close
  return {
    ...checkpoint,
    tensors: merged.tensors,
    extras: {...checkpoint.extras, dtype: dominantDType(merged.tensors), notes: [...checkpoint.extras.notes, ...merged.notes], peft: merged.info},
    async close() {
      try {
        await close()
      } finally {
        await baseClose()
      }
    },
  }
}

/** `--lora-alpha`, `--lora-config`, `--embedding-adapter` apply only to a checkpoint with adapters. */
export function checkPeftOptionsApply(checkpoint: Checkpoint, options: PeftOptions): void {
  if (checkpoint.extras.peft) {
    if (options.embeddingAdapter && !checkpoint.extras.peft.embedding) {
      throw new UsageError('peft.flag', `--embedding-adapter does not apply: ${checkpoint.path} has no embedding adapter`, {path: checkpoint.path})
    }
    return
  }
  const given = [
    options.loraAlpha !== undefined && '--lora-alpha',
    options.loraConfig && '--lora-config',
    options.embeddingAdapter && '--embedding-adapter',
  ].filter(Boolean)
  if (given.length > 0) throw new UsageError('peft.flag', `${given.join(', ')} ${given.length > 1 ? 'do' : 'does'} not apply: ${checkpoint.path} has no LoRA/DoRA adapters`, {path: checkpoint.path})
}
