/** The LoRA/DoRA flags (`convert`, `inspect`) and their library options. */
import {Flags} from '@oclif/core'
import {UsageError} from '../errors.js'
import {loadLoraConfigFile, refuseNoMerge} from '../formats/corenet/peft.js'
import {type FormatName, type PeftInfo, type PeftOptions} from '../formats/types.js'

export const peftFlags = {
  adapter: Flags.string({description: 'CoreNet LoRA/DoRA adapters saved apart from their base (a .pt of lora_* tensors), merged into it'}),
  'lora-alpha': Flags.string({description: 'LoRA/DoRA: lora_alpha of the run (not stored in CoreNet checkpoints; Apple\'s peft_configs use 32)'}),
  'lora-config': Flags.string({description: 'LoRA/DoRA: the run\'s CoreNet YAML, for its model.lora.config (alpha, rslora per module)'}),
  'embedding-adapter': Flags.string({
    description: 'LoRA on token_embeddings: merge (adapts input and tied output) or drop; CoreNet adapts the input only, which a tied model cannot hold',
    options: ['merge', 'drop'],
  }),
}

/** `--merge` / `--no-merge` (convert): every writer merges today, so --no-merge is refused with its reason. */
export const mergeFlag = Flags.boolean({
  description: 'merge LoRA/DoRA adapters into the weights (--no-merge is refused: no target writes unmerged adapters yet)',
  allowNo: true,
  default: true,
})

export interface PeftFlagValues {
  adapter?: string
  'lora-alpha'?: string
  'lora-config'?: string
  'embedding-adapter'?: string
}

/** Flags → options; refuses --no-merge (for `to`) and contradictory flags before any work. */
export async function peftOptions(flags: PeftFlagValues, extra: {describeOnly?: boolean; merge?: boolean; to?: FormatName} = {}): Promise<PeftOptions | undefined> {
  if (extra.merge === false && extra.to) refuseNoMerge(extra.to)
  const alphaText = flags['lora-alpha']
  if (alphaText !== undefined && flags['lora-config'] !== undefined) throw new UsageError('peft.flag', 'give --lora-alpha or --lora-config, not both')
  let loraAlpha: number | undefined
  if (alphaText !== undefined) {
    loraAlpha = Number(alphaText)
    if (alphaText.trim() === '' || !Number.isFinite(loraAlpha) || loraAlpha <= 0) throw new UsageError('peft.flag', `--lora-alpha ${alphaText}: expected a positive number`)
  }
  const options: PeftOptions = {
    ...(flags.adapter ? {adapter: flags.adapter} : {}),
    ...(loraAlpha === undefined ? {} : {loraAlpha}),
    ...(flags['lora-config'] ? {loraConfig: await loadLoraConfigFile(flags['lora-config'])} : {}),
    ...(flags['embedding-adapter'] ? {embeddingAdapter: flags['embedding-adapter'] as 'merge' | 'drop'} : {}),
    ...(extra.describeOnly ? {describeOnly: true} : {}),
  }
  return Object.keys(options).length > 0 ? options : undefined
}

const KIND_NAMES = {lora: 'LoRA', dora: 'DoRA', 'lora+dora': 'LoRA and DoRA'} as const

function distinct<T>(values: T[]): T[] {
  return [...new Set(values)]
}

/** `inspect`'s lines about adapters (without indentation). */
export function peftLines(info: PeftInfo): string[] {
  const ms = info.modules
  const names = distinct(ms.map((m) => m.adapterName)).map((n) => `"${n}"`).join(', ')
  const alphas = distinct(ms.map((m) => m.alpha)).filter((a) => a !== undefined)
  const scales = distinct(ms.map((m) => m.scale)).filter((s) => s !== undefined)
  const alpha = alphas.length === 0 ? 'alpha unknown (not stored in the checkpoint)' : `alpha ${alphas.join('/')} (${info.alphaSource === 'flag' ? '--lora-alpha' : '--lora-config'}), scale ${scales.join('/')}`
  const roles = new Map<string, number>()
  for (const m of ms) {
    const role = m.module.split('.').at(-1)!
    roles.set(role, (roles.get(role) ?? 0) + 1)
  }
  const modules = [...roles].map(([role, n]) => (role === 'token_embeddings' ? `token_embeddings (${info.embedding === 'unresolved' ? 'merge or drop: not chosen' : info.embedding})` : `${role} ×${n}`)).join(', ')
  const source = info.adapterFile === info.base.path ? '' : `, from ${info.adapterFile}`
  return [
    `peft        ${KIND_NAMES[info.kind]}, adapter ${names}, r ${distinct(ms.map((m) => m.rank)).join('/')}, ${alpha}${source}; merged into the weights on conversion`,
    `            ${ms.length} adapted modules: ${modules}`,
    ...info.unresolved.map((u) => `            to convert: ${u}`),
  ]
}
