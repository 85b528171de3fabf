/**
 * Which Apple release a model was converted from. A shape alone proves nothing (anyone can train
 * a 270M-shaped model): Apple's repo is named only when the weights' shape is a released preset
 * *and* the source says it is that repo (a Hub repo id it was downloaded from, a config's
 * `_name_or_path`, a card's `base_model`). Everything else is named by its own file name.
 */
import {type OpenElmConfig} from './config.js'
import {APPLE_REPOS, matchPreset} from './presets.js'

/** What a converted model came from: Apple's repo when proven, else the source's own name. */
export interface ModelOrigin {
  /** `apple/OpenELM-270M` (or `-Instruct`): the shape matches the release and the source names it. */
  appleRepo?: string
  /** How the source is called: the Hub repo id, else its file or folder name. */
  source: string
}

const HUB_URL = /^https?:\/\/huggingface\.co\//i

/**
 * The Apple repo one of `claims` names, when `config` has that release's shape (vocabulary rows
 * ignored: padding does not change the model). Case as Apple spells it.
 */
export function appleRelease(config: OpenElmConfig, claims: readonly (string | undefined)[]): string | undefined {
  const preset = matchPreset(config)
  const repo = preset ? APPLE_REPOS[preset] : undefined
  if (!repo) return undefined
  for (const claim of claims) {
    const id = claim?.trim().replace(HUB_URL, '').replace(/\/+$/, '')
    if (!id) continue
    if (id.toLowerCase() === repo.toLowerCase()) return repo
    if (id.toLowerCase() === `${repo}-instruct`.toLowerCase()) return `${repo}-Instruct`
  }
  return undefined
}

/**
 * The config.json key that records a proven origin (`_name_or_path`, as transformers' save_pretrained
 * writes the repo a model was loaded from); nothing for an unproven one.
 */
export function originConfigKeys(origin: ModelOrigin | undefined): Record<string, string> {
  return origin?.appleRepo ? {_name_or_path: origin.appleRepo} : {}
}
