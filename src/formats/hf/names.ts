/** HF key names: `transformer.` + the canonical name; no `lm_head` (tied embeddings). */
import {MappingError, shown} from '../../errors.js'

export const HF_PREFIX = 'transformer.'

export function toHfName(canonical: string): string {
  return HF_PREFIX + canonical
}

export function fromHfName(name: string): string {
  if (!name.startsWith(HF_PREFIX)) {
    throw new MappingError('tensor.unknown', `unknown tensor ${shown(name)}: OpenELM HF tensors start with "${HF_PREFIX}" (is this an OpenELM checkpoint?)`, {tensor: name})
  }
  return name.slice(HF_PREFIX.length)
}
