/**
 * The Hugging Face cache layout, shared with `hf download` and the Python tools:
 *   $HF_HUB_CACHE (default $HF_HOME/hub, HF_HOME default ~/.cache/huggingface)
 *     models--OWNER--NAME/
 *       blobs/<etag>                 the bytes (LFS files: etag = sha256)
 *       blobs/<etag>.incomplete      a download in progress (resumed with an HTTP Range request)
 *       refs/<revision>              the commit sha a branch or tag pointed at
 *       snapshots/<sha>/<path>       relative symlinks into blobs/
 * URL checkpoints live under $HF_HOME/openelm/urls/<sha256 of the URL>/ in the same way.
 */
import {createHash} from 'node:crypto'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

type Env = Record<string, string | undefined>

export function hfHome(env: Env = process.env): string {
  return env.HF_HOME || path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'huggingface')
}

export function hubCacheDir(env: Env = process.env): string {
  return env.HF_HUB_CACHE || path.join(hfHome(env), 'hub')
}

/** `models--owner--name` under the hub cache. */
export function repoCacheDir(repo: string, env: Env = process.env): string {
  return path.join(hubCacheDir(env), `models--${repo.split('/').join('--')}`)
}

/**
 * The repo id of a path inside a repo's cache snapshot (`…/models--owner--name/snapshots/<sha>/…`),
 * as huggingface_hub names its folders; undefined for any other path. Owner names hold no `--`.
 */
export function repoOfCachePath(p: string): string | undefined {
  const m = /(?:^|[\\/])models--([A-Za-z0-9][A-Za-z0-9_.-]*?)--([A-Za-z0-9][A-Za-z0-9_.-]*)[\\/]snapshots[\\/][^\\/]+(?:[\\/]|$)/.exec(p)
  return m ? `${m[1]}/${m[2]}` : undefined
}

/** The cache folder of one URL: $HF_HOME/openelm/urls/<sha256(url) prefix>. */
export function urlCacheDir(url: string, env: Env = process.env): string {
  return path.join(hfHome(env), 'openelm', 'urls', createHash('sha256').update(url).digest('hex').slice(0, 32))
}

/** A revision name as a refs/ file (branches may hold slashes; the Hub tools keep them as folders). */
export function refPath(repoDir: string, revision: string): string {
  return path.join(repoDir, 'refs', ...revision.split('/'))
}

export async function readRef(repoDir: string, revision: string): Promise<string | undefined> {
  if (/^[0-9a-f]{40}$/.test(revision)) return revision
  try {
    const sha = (await fs.readFile(refPath(repoDir, revision), 'utf8')).trim()
    return /^[0-9a-f]{40}$/.test(sha) ? sha : undefined
  } catch {
    return undefined
  }
}

export async function writeRef(repoDir: string, revision: string, sha: string): Promise<void> {
  if (revision === sha) return
  const file = refPath(repoDir, revision)
  await fs.mkdir(path.dirname(file), {recursive: true})
  const temp = `${file}.${process.pid}.tmp`
  await fs.writeFile(temp, sha)
  await fs.rename(temp, file)
}

export async function exists(file: string): Promise<boolean> {
  try {
    await fs.stat(file)
    return true
  } catch {
    return false
  }
}

/** Point snapshots/<sha>/<file> at blobs/<etag> with a relative link (what huggingface_hub writes). */
export async function linkSnapshot(repoDir: string, sha: string, file: string, etag: string): Promise<string> {
  const target = path.join(repoDir, 'snapshots', sha, ...file.split('/'))
  await fs.mkdir(path.dirname(target), {recursive: true})
  const relative = path.relative(path.dirname(target), path.join(repoDir, 'blobs', etag))
  const temp = `${target}.${process.pid}.link`
  await fs.rm(temp, {force: true})
  await fs.symlink(relative, temp)
  await fs.rename(temp, target)
  return target
}
