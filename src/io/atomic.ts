/**
 * Outputs are built under a temporary sibling and renamed into place when complete, so an
 * interrupted or failed conversion never leaves a half-written model and never touches the source.
 */
import {randomBytes} from 'node:crypto'
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {IoError} from '../errors.js'

/** Temp paths live beside the target so the final rename stays on one filesystem. */
export const TEMP_MARKER = '.openelm-tmp-'

const liveTemps = new Set<string>()

/** Track a scratch path (a round trip's work folder) so Ctrl-C removes it too. */
export function trackTemp(p: string): () => void {
  liveTemps.add(p)
  return () => liveTemps.delete(p)
}

/** Paths of outputs still being written; a signal handler removes them. */
export function pendingTemps(): string[] {
  return [...liveTemps]
}

export function tempSibling(target: string): string {
  return path.join(path.dirname(path.resolve(target)), `${TEMP_MARKER}${path.basename(target)}-${process.pid}-${randomBytes(4).toString('hex')}`)
}

export async function pathExists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p)
    return true
  } catch {
    return false
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Remove temp siblings of `target` left by a process that was killed outright (SIGKILL, power
 * loss): their names carry the writer's pid, and a pid that no longer runs cannot finish them.
 */
export async function removeStaleTemps(target: string): Promise<string[]> {
  const parent = path.dirname(path.resolve(target))
  const prefix = `${TEMP_MARKER}${path.basename(target)}-`
  let entries: string[]
  try {
    entries = await fs.readdir(parent)
  } catch {
    return []
  }
  const removed: string[] = []
  for (const entry of entries) {
    if (!entry.startsWith(prefix)) continue
    const pid = Number(entry.slice(prefix.length).split('-')[0])
    if (!Number.isInteger(pid) || pid === process.pid || processAlive(pid)) continue
    await fs.rm(path.join(parent, entry), {recursive: true, force: true})
    removed.push(entry)
  }
  return removed
}

async function checkTarget(target: string, force: boolean): Promise<void> {
  if ((await pathExists(target)) && !force) {
    throw new IoError('output.exists', `output ${target} already exists (pass --force to replace it)`, {path: target})
  }
  const parent = path.dirname(path.resolve(target))
  if (!(await pathExists(parent))) await fs.mkdir(parent, {recursive: true})
  await removeStaleTemps(target)
}

async function replace(temp: string, target: string): Promise<void> {
  if (await pathExists(target)) {
    const old = tempSibling(target)
    await fs.rename(target, old)
    await fs.rename(temp, target)
    await fs.rm(old, {recursive: true, force: true})
  } else {
    await fs.rename(temp, target)
  }
}

/**
 * Run `build(tempDir)` in a fresh temporary directory and rename it to `target` when it returns.
 * On any error the temporary directory is removed and `target` is left as it was.
 */
export async function* atomicDir<Y, T>(target: string, force: boolean, build: (dir: string) => AsyncGenerator<Y, T>): AsyncGenerator<Y, T> {
  await checkTarget(target, force)
  const temp = tempSibling(target)
  await fs.mkdir(temp)
  liveTemps.add(temp)
  try {
    const result = yield* build(temp)
    await replace(temp, target)
    return result
  } finally {
    liveTemps.delete(temp)
    await fs.rm(temp, {recursive: true, force: true})
  }
}

/** Same for a single file. */
export async function* atomicFile<Y, T>(target: string, force: boolean, build: (file: string) => AsyncGenerator<Y, T>): AsyncGenerator<Y, T> {
  await checkTarget(target, force)
  const temp = tempSibling(target)
  liveTemps.add(temp)
  try {
    const result = yield* build(temp)
    await replace(temp, target)
    return result
  } finally {
    liveTemps.delete(temp)
    await fs.rm(temp, {force: true})
  }
}

/** Remove every temporary output still being written (used on SIGINT/SIGTERM). */
export function removePendingTempsSync(rmSync: (p: string, o: {recursive: boolean; force: boolean}) => void): string[] {
  const removed = [...liveTemps]
  for (const p of liveTemps) {
    try {
      rmSync(p, {recursive: true, force: true})
    } catch {
      // best effort on the way out
    }
  }
  liveTemps.clear()
  return removed
}
