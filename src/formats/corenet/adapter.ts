/**
 * PEFT options on any opened checkpoint: `--adapter FILE` (CoreNet adapter tensors saved apart from
 * their base, merged into a base of any format) and the check that adapter-only flags apply.
 */
import {FormatError} from '../../errors.js'
import {type Checkpoint, type ReadOptions} from '../types.js'
import {checkPeftOptionsApply, splitPeft, withAdapters} from './peft.js'
import {type CorenetRaw, openTorchArchive, stateDictRecords, TRAINING_KEYS} from './read.js'
import {PyDict} from './values.js'

/** Merge `options.peft.adapter` into `checkpoint` (which is closed if that fails), then check the flags. */
export async function applyPeftOptions(checkpoint: Checkpoint, options: ReadOptions): Promise<Checkpoint> {
  const peft = options.peft
  if (!peft) return checkpoint
  let result = checkpoint
  try {
    if (peft.adapter) {
      const archive = await openTorchArchive(peft.adapter)
      try {
        const top = archive.value
        if (!(top instanceof PyDict)) throw new FormatError('corenet.not_dict', `${peft.adapter}: the adapter file is not a dict`, {path: peft.adapter})
        // A training dict of an adapters-only run, or a bare state dict of adapter tensors.
        const key = top.map.has(TRAINING_KEYS.model) ? (options.ema ? TRAINING_KEYS.ema : TRAINING_KEYS.model) : ''
        const dict = key ? top.get(key) : top
        if (dict === undefined || dict === null) throw new FormatError('corenet.state_dict', `${peft.adapter}: no ${key}`, {path: peft.adapter})
        const split = splitPeft(stateDictRecords(peft.adapter, key || 'the state dict', dict, []))
        const baseKey = corenetStateDictKey(checkpoint)
        const base = {path: checkpoint.path, format: checkpoint.format, ...(baseKey === undefined ? {} : {key: baseKey})}
        result = withAdapters(checkpoint, split, peft, {adapterFile: peft.adapter, adapterKey: key, base}, () => archive.zip.close())
      } catch (error) {
        await archive.zip.close()
        throw error
      }
    }
    checkPeftOptionsApply(result, peft)
    return result
  } catch (error) {
    await result.close()
    throw error
  }
}

/** The dict key a CoreNet checkpoint's tensors came from ('' for a bare state dict), when known. */
export function corenetStateDictKey(checkpoint: Checkpoint): string | undefined {
  const raw = checkpoint.extras.training?.raw as CorenetRaw | undefined
  return checkpoint.format === 'corenet' ? raw?.modelKey ?? '' : undefined
}
