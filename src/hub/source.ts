/**
 * What a MODEL argument names: a local path (always first, even when it is also spelled like a
 * repo id), an `http(s)://` URL of a checkpoint, or a Hub repo id `owner/name`. Remote sources are
 * downloaded into the shared cache and answered with the local path the converters read.
 */
import {promises as fs} from 'node:fs'
import {HubError, UsageError} from '../errors.js'
import {type DownloadEvent, type DownloadOptions, downloadRepo, downloadUrl, type RepoDownload, type UrlDownload} from './download.js'

export type SourceKind = 'local' | 'repo' | 'url'

export interface ResolvedSource {
  kind: SourceKind
  /** What the user wrote. */
  spec: string
  /** The local file or folder to read. */
  path: string
  repo?: RepoDownload
  url?: UrlDownload
}

/** `owner/name` as the Hub spells repo ids (letters, digits, `-`, `_`, `.`; no leading/trailing separators). */
const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}\/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$/

export function isRepoId(spec: string): boolean {
  return REPO_ID.test(spec) && !spec.includes('..') && !spec.endsWith('.') && !/[-.]{2}/.test(spec)
}

export function isUrl(spec: string): boolean {
  return /^https?:\/\//i.test(spec)
}

/** File endings of model files, never of a repo id a person would type. */
const FILE_ENDINGS = /\.(pt|pth|bin|safetensors|gguf|onnx|npz|json|yaml|yml|model)$/i

/**
 * A missing `dir/file` is a local path with a typo, not a repo id, when `dir` is a local folder
 * (`fixtures/nope`) or the name ends like a model file (`models/model.gguf`): the reader's
 * "does not exist" is the right answer, not a request to the Hub.
 */
export async function looksLocal(spec: string): Promise<boolean> {
  if (FILE_ENDINGS.test(spec)) return true
  try {
    return (await fs.stat(spec.split('/')[0]!)).isDirectory()
  } catch {
    return false
  }
}

async function present(spec: string): Promise<boolean> {
  try {
    await fs.lstat(spec)
    return true
  } catch {
    return false
  }
}

/**
 * Turn a source argument into a local path, downloading when it names the Hub or a URL.
 */
export async function* resolveSource(spec: string, options: DownloadOptions = {}): AsyncGenerator<DownloadEvent, ResolvedSource> {
  if (await present(spec)) return {kind: 'local', spec, path: spec}
  if (isUrl(spec)) {
    const url = yield* downloadUrl(spec, options)
    return {kind: 'url', spec, path: url.path, url}
  }
  if (isRepoId(spec) && !(await looksLocal(spec))) {
    try {
      const repo = yield* downloadRepo(spec, options)
      return {kind: 'repo', spec, path: repo.path, repo}
    } catch (error) {
      // A typo in a local path reads like a repo id: say both were tried.
      if (error instanceof HubError && (error.code === 'hub.repo_not_found' || error.code === 'hub.network')) {
        throw new HubError(error.code, `${spec} is not a local path, and ${error.message}`, error.details)
      }
      throw error
    }
  }
  return {kind: 'local', spec, path: spec}
}

/**
 * The Hub source flags apply only when a source is remote (a flag applies or is refused):
 * `--revision` to a repo id; `--token` and `--endpoint` to a repo id or, for `convert --push`, the push.
 */
export function checkHubFlagsApply(sources: ResolvedSource[], flags: {revision?: string; token?: string; endpoint?: string}, pushing = false): void {
  const names = `${sources.map((s) => s.spec).join(' and ')} ${sources.length === 1 ? 'is' : 'are'} not one`
  if (flags.revision !== undefined && !sources.some((s) => s.kind === 'repo')) {
    throw new UsageError('flag.revision', `--revision applies to a Hub repo id, and ${names}`)
  }
  for (const flag of ['token', 'endpoint'] as const) {
    if (flags[flag] !== undefined && !pushing && !sources.some((s) => s.kind === 'repo')) {
      throw new UsageError(`flag.${flag}`, `--${flag} applies to a Hub repo id${pushing ? '' : ' (or convert --push)'}, and ${names}`)
    }
  }
}
