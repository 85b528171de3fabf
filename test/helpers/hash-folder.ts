import {createHash} from 'node:crypto'
import {promises as fs} from 'node:fs'
import path from 'node:path'

/** sha256 of every file under `dir`, by its path relative to `dir` ('/'-separated), in name order. */
export async function hashFolder(dir: string, out: Record<string, string> = {}, prefix = ''): Promise<Record<string, string>> {
  for (const e of (await fs.readdir(dir, {withFileTypes: true})).sort((a, b) => a.name.localeCompare(b.name))) {
    if (e.isDirectory()) await hashFolder(path.join(dir, e.name), out, `${prefix}${e.name}/`)
    else out[prefix + e.name] = createHash('sha256').update(await fs.readFile(path.join(dir, e.name))).digest('hex')
  }
  return out
}
