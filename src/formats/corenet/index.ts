/** The CoreNet training layout: `torch.save` ZIP archives holding a state dict or a training dict. */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {ZipReader, isZipMagic} from './zip.js'
import {CHECKPOINT_FILES, readCorenet} from './read.js'
import {writeCorenet} from './write.js'
import {type FormatAdapter} from '../types.js'

async function head(p: string): Promise<Uint8Array | undefined> {
  try {
    const handle = await fs.open(p, 'r')
    try {
      const buffer = Buffer.alloc(4)
      const {bytesRead} = await handle.read(buffer, 0, 4, 0)
      return buffer.subarray(0, bytesRead)
    } finally {
      await handle.close()
    }
  } catch {
    return undefined
  }
}

/** A ZIP with exactly an `<archive>/data.pkl`: a torch.save file. */
async function isTorchZip(p: string): Promise<boolean> {
  const bytes = await head(p)
  if (!bytes) return false
  // A `.pt` that is not a ZIP (legacy torch format, truncated) belongs here too: read() says what is wrong.
  if (!isZipMagic(bytes)) return p.endsWith('.pt') || p.endsWith('.pth')
  let zip: ZipReader | undefined
  try {
    zip = await ZipReader.open(p)
    return [...zip.entries.keys()].some((n) => /^[^/]+\/data\.pkl$/.test(n))
  } catch {
    // A `.pt` that is a broken ZIP still belongs to this reader, which reports what is wrong.
    return p.endsWith('.pt') || p.endsWith('.pth')
  } finally {
    await zip?.close()
  }
}

export const corenetFormat: FormatAdapter = {
  name: 'corenet',
  description: 'CoreNet training layout: torch.save .pt (bare state dict or training checkpoint)',
  async detect(p) {
    const stat = await fs.stat(p).catch(() => undefined)
    if (!stat) return false
    if (stat.isFile()) return isTorchZip(p)
    if (!stat.isDirectory()) return false
    for (const name of CHECKPOINT_FILES) if (await isTorchZip(path.join(p, name))) return true
    return false
  },
  read: readCorenet,
  write: writeCorenet,
  // A torch.save checkpoint holds weights only; CoreNet's training config names its tokenizer.
  tokenizerKind: () => 'none',
}
