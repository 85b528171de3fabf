/**
 * Downloads from the Hub (or a plain URL) into the shared Hugging Face cache (see cache.ts), the
 * way `hf download` does: the revision is resolved to a commit sha with
 * `GET /api/models/{repo}/revision/{rev}`, each needed file's ETag read with
 * `HEAD /{repo}/resolve/{sha}/{path}`, the bytes written to `blobs/<etag>.incomplete` (continued
 * with an HTTP Range request after a dropped connection or a killed run), checked (sha256 for LFS
 * files, whose ETag is the sha256; the size otherwise), renamed to `blobs/<etag>` and linked from
 * `snapshots/<sha>/<path>`. A file already in the snapshot is not requested again.
 */
import {createHash} from 'node:crypto'
import {createReadStream, promises as fs} from 'node:fs'
import path from 'node:path'
import {HubError, IoError} from '../errors.js'
import {exists, linkSnapshot, readRef, repoCacheDir, urlCacheDir, writeRef} from './cache.js'
import {resolveEndpoint} from './credentials.js'
import {hubFetch} from './fetch.js'

/** Progress of one file: emitted at its start, every ~100 ms while bytes arrive, and at its end. */
export interface DownloadEvent {
  type: 'download'
  file: string
  /** Bytes of the file on disk so far (a resumed download starts at what was kept). */
  bytes: number
  total?: number
  /** Where this run started (non-zero when resumed). */
  resumedFrom: number
  bytesPerSecond: number
  etaSeconds?: number
  done: boolean
}

export interface DownloadOptions {
  revision?: string
  token?: string
  endpoint?: string
  env?: Record<string, string | undefined>
  fetch?: typeof fetch
  /** Tries per file when the connection drops mid-body (each continues where the last stopped). */
  attempts?: number
}

export interface RepoDownload {
  repo: string
  revision: string
  sha: string
  /** The snapshot folder: what the converters read. */
  path: string
  files: string[]
  /** Files fetched by this run (the rest were in the cache). */
  downloaded: string[]
}

export interface UrlDownload {
  url: string
  path: string
  downloaded: boolean
}

const ROOT_FILES = new Set(['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json'])

/** The files a conversion needs out of a repo listing: config, weights, tokenizer, remote code. */
export function neededFiles(siblings: string[]): string[] {
  const top = siblings.filter((name) => !name.includes('/'))
  const safetensors = top.filter((n) => n.endsWith('.safetensors') || n === 'model.safetensors.index.json')
  const weights = safetensors.some((n) => n.endsWith('.safetensors'))
    ? safetensors
    : top.filter((n) => n.endsWith('.pt') || n.endsWith('.bin') || n === 'pytorch_model.bin.index.json')
  return top.filter((n) => ROOT_FILES.has(n) || n.endsWith('.py') || weights.includes(n)).sort()
}

function authHeaders(token: string | undefined): Record<string, string> {
  return token ? {Authorization: `Bearer ${token}`} : {}
}

function encodePath(file: string): string {
  return file.split('/').map(encodeURIComponent).join('/')
}

/** The Hub's refusal as one typed line: gated (names HF_TOKEN), missing repo or revision (exit 6). */
async function refusal(response: Response, repo: string, revision: string, endpoint: string, token: string | undefined, file?: string): Promise<HubError> {
  const code = response.headers.get('X-Error-Code') ?? ''
  const serverMessage = response.headers.get('X-Error-Message') ?? ''
  await response.body?.cancel().catch(() => undefined)
  const where = file ? `${file} in ${repo}` : repo
  if (code === 'RevisionNotFound') return new HubError('hub.revision_not_found', `revision "${revision}" not found in ${repo} at ${endpoint}`, {repo, revision, status: response.status})
  if (code === 'EntryNotFound') return new HubError('hub.entry_not_found', `${where} not found at revision "${revision}"`, {repo, revision, file, status: response.status})
  if (code === 'GatedRepo' || ((response.status === 401 || response.status === 403) && code !== 'RepoNotFound')) {
    const fix = token ? 'the token given has no access to it: request access on its page, or use a token that has it (HF_TOKEN or --token)' : 'set HF_TOKEN (or pass --token) to a token with access'
    return new HubError('hub.gated', `${repo} is gated or private at ${endpoint}: ${fix}`, {repo, status: response.status, serverMessage})
  }
  if (code === 'RepoNotFound' || response.status === 404) {
    const hint = token ? '' : ' (if it is private, set HF_TOKEN)'
    return new HubError('hub.repo_not_found', `repository ${repo} not found at ${endpoint}${hint}`, {repo, status: response.status})
  }
  return new HubError('hub.http', `the Hub answered HTTP ${response.status} for ${where}${serverMessage ? `: ${serverMessage}` : ''}`, {repo, status: response.status})
}

function networkError(error: unknown, target: string): HubError {
  const cause = (error as {cause?: {code?: string; message?: string}}).cause
  return new HubError('hub.network', `cannot reach ${target}: ${cause?.code ?? cause?.message ?? (error as Error).message}`, {target})
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** Bytes gathered before one write to the partial file. */
const WRITE_BYTES = 8 << 20

/** A sha256 already fed with the first `length` bytes of `file` (the part kept from an earlier try). */
async function hashPrefix(file: string, length: number): Promise<ReturnType<typeof createHash>> {
  const hash = createHash('sha256')
  if (length > 0) for await (const chunk of createReadStream(file, {start: 0, end: length - 1})) hash.update(chunk as Buffer)
  return hash
}

async function sizeOf(file: string): Promise<number> {
  try {
    return (await fs.stat(file)).size
  } catch {
    return 0
  }
}

/**
 * Fetch `url` into `blob` through `blob.incomplete`, resuming from what is there with a Range
 * request, retrying a dropped connection; checks the size and (when `sha256` is given) the hash.
 */
async function* fetchBlob(url: string, blob: string, file: string, headers: Record<string, string>, doFetch: typeof fetch, expected: {size?: number; sha256?: string}, attempts: number): AsyncGenerator<DownloadEvent, void> {
  const partial = `${blob}.incomplete`
  await fs.mkdir(path.dirname(blob), {recursive: true})
  let lastError: unknown
  for (let attempt = 1; attempt <= attempts; attempt++) {
    let digest: string | undefined
    let have = await sizeOf(partial)
    if (expected.size !== undefined && have > expected.size) {
      await fs.rm(partial, {force: true})
      have = 0
    }
    const resumedFrom = have
    const started = Date.now()
    let response: Response
    try {
      response = await doFetch(url, {headers: {...headers, ...(have > 0 ? {Range: `bytes=${have}-`} : {})}})
    } catch (error) {
      lastError = error
      continue
    }
    if (response.status === 416 && expected.size !== undefined && have === expected.size) {
      await response.body?.cancel().catch(() => undefined)
    } else if (response.status !== 200 && response.status !== 206) {
      await response.body?.cancel().catch(() => undefined)
      throw new HubError('hub.http', `downloading ${file} failed: HTTP ${response.status}`, {file, status: response.status})
    } else {
      if (response.status === 200 && have > 0) have = 0 // the server ignored the Range: start over
      const total = expected.size ?? (response.headers.get('Content-Length') ? Number(response.headers.get('Content-Length')) + have : undefined)
      const handle = await fs.open(partial, have > 0 ? 'a' : 'w')
      // The sha256 is computed as the bytes arrive (after the kept prefix), not by reading the file again.
      const hash = expected.sha256 ? await hashPrefix(partial, have) : undefined
      let bytes = have
      let lastEmit = 0
      const event = (done: boolean): DownloadEvent => {
        const seconds = (Date.now() - started) / 1000
        const bytesPerSecond = seconds > 0 ? (bytes - resumedFrom) / seconds : 0
        const etaSeconds = total !== undefined && bytesPerSecond > 0 ? (total - bytes) / bytesPerSecond : undefined
        return {type: 'download', file, bytes, total, resumedFrom: have, bytesPerSecond, etaSeconds, done}
      }
      yield event(false)
      // Chunks are gathered into writes of WRITE_BYTES: one syscall per 8 MiB, not per 64 KiB (1 MiB batches measured ~1.5 s more CPU per GB); a killed process loses at most the unwritten batch.
      let batch: Uint8Array[] = []
      let batched = 0
      const flush = async () => {
        if (batched === 0) return
        const data = batch.length === 1 ? batch[0]! : Buffer.concat(batch, batched)
        batch = []
        batched = 0
        await handle.write(data)
      }
      try {
        for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
          hash?.update(chunk)
          batch.push(chunk)
          batched += chunk.byteLength
          bytes += chunk.byteLength
          if (batched >= WRITE_BYTES) await flush()
          if (Date.now() - lastEmit > 100) {
            lastEmit = Date.now()
            yield event(false)
          }
        }
      } catch (error) {
        lastError = error
        continue // keep what arrived (flushed below); the next attempt asks for the rest
      } finally {
        await flush()
        await handle.close()
      }
      digest = hash?.digest('hex')
      yield event(true)
    }
    const size = await sizeOf(partial)
    if (expected.size !== undefined && size !== expected.size) {
      lastError = new Error(`got ${size} of ${expected.size} bytes`)
      continue
    }
    if (expected.sha256 && (digest ?? (await sha256File(partial))) !== expected.sha256) {
      await fs.rm(partial, {force: true})
      throw new HubError('hub.checksum', `downloaded ${file} does not match its sha256 ${expected.sha256} (removed; run again)`, {file})
    }
    await fs.rename(partial, blob)
    return
  }
  throw new HubError('hub.download', `downloading ${file} failed after ${attempts} tries (${(lastError as Error)?.message ?? 'connection dropped'}); run again to resume`, {file})
}

function etagOf(headers: Headers): string | undefined {
  const raw = headers.get('X-Linked-Etag') ?? headers.get('ETag')
  return raw?.replace(/^W\//, '').replace(/"/g, '').trim() || undefined
}

function sizeHeader(headers: Headers): number | undefined {
  const raw = headers.get('X-Linked-Size') ?? headers.get('Content-Length')
  return raw === null ? undefined : Number(raw)
}

/** Download the files a conversion needs from `repo` at `revision` into the HF cache. */
export async function* downloadRepo(repo: string, options: DownloadOptions = {}): AsyncGenerator<DownloadEvent, RepoDownload> {
  const env = options.env ?? process.env
  const endpoint = resolveEndpoint(options.endpoint, env)
  const revision = options.revision ?? 'main'
  const token = options.token?.trim() || env.HF_TOKEN?.trim() || undefined
  const doFetch = hubFetch({fetch: options.fetch, retry: {maxAttempts: 3, baseDelayMs: 200}})
  const repoDir = repoCacheDir(repo, env)
  const headers = authHeaders(token)

  if (env.HF_HUB_OFFLINE === '1' || env.HF_HUB_OFFLINE === 'true') {
    const sha = await readRef(repoDir, revision)
    const snapshot = sha && path.join(repoDir, 'snapshots', sha)
    if (!snapshot || !(await exists(snapshot))) throw new HubError('hub.offline', `HF_HUB_OFFLINE is set and ${repo}@${revision} is not in the cache ${repoDir}`, {repo, revision})
    const files = (await fs.readdir(snapshot)).sort()
    return {repo, revision, sha, path: snapshot, files, downloaded: []}
  }

  const apiUrl = `${endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`
  let response: Response
  try {
    response = await doFetch(apiUrl, {headers})
  } catch (error) {
    throw networkError(error, endpoint)
  }
  if (!response.ok) throw await refusal(response, repo, revision, endpoint, token)
  const info = (await response.json()) as {sha?: string; siblings?: {rfilename: string}[]}
  const sha = info.sha
  if (!sha || !/^[0-9a-f]{40}$/.test(sha)) throw new HubError('hub.response', `the Hub gave no commit sha for ${repo}@${revision}`, {repo, revision})
  const files = neededFiles((info.siblings ?? []).map((s) => s.rfilename))
  if (!files.includes('config.json') && !files.some((f) => /\.(safetensors|pt|bin)$/.test(f))) {
    throw new HubError('hub.no_model', `${repo}@${revision} holds no config.json and no weights (.safetensors, .pt, .bin)`, {repo, revision})
  }
  const snapshot = path.join(repoDir, 'snapshots', sha)
  const downloaded: string[] = []
  for (const file of files) {
    if (await exists(path.join(snapshot, file))) continue
    const url = `${endpoint}/${repo}/resolve/${sha}/${encodePath(file)}`
    let head: Response
    try {
      head = await doFetch(url, {method: 'HEAD', headers, redirect: 'manual'})
    } catch (error) {
      throw networkError(error, endpoint)
    }
    if (head.status >= 400) throw await refusal(head, repo, revision, endpoint, token, file)
    const etag = etagOf(head.headers)
    if (!etag) throw new HubError('hub.response', `the Hub gave no ETag for ${file} in ${repo}`, {repo, file})
    const size = sizeHeader(head.headers)
    const blob = path.join(repoDir, 'blobs', etag)
    if (!(await exists(blob))) {
      yield* fetchBlob(url, blob, file, headers, doFetch, {size, sha256: /^[0-9a-f]{64}$/.test(etag) ? etag : undefined}, options.attempts ?? 5)
      downloaded.push(file)
    }
    await linkSnapshot(repoDir, sha, file, etag)
  }
  await writeRef(repoDir, revision, sha)
  await fs.mkdir(snapshot, {recursive: true})
  return {repo, revision, sha, path: snapshot, files, downloaded}
}

/** Download a checkpoint URL into $HF_HOME/openelm/urls/<hash>/<file name>; cached after the first run. */
export async function* downloadUrl(url: string, options: DownloadOptions = {}): AsyncGenerator<DownloadEvent, UrlDownload> {
  const env = options.env ?? process.env
  const dir = urlCacheDir(url, env)
  const name = decodeURIComponent(new URL(url).pathname.split('/').pop() || 'checkpoint.pt')
  if (!/^[^/\\]+$/.test(name) || name === '.' || name === '..') throw new IoError('url.name', `cannot name a file after ${url}`, {url})
  const file = path.join(dir, name)
  if (await exists(file)) return {url, path: file, downloaded: false}
  const doFetch = hubFetch({fetch: options.fetch, retry: {maxAttempts: 3, baseDelayMs: 200}})
  let head: Response
  try {
    head = await doFetch(url, {method: 'HEAD'})
  } catch (error) {
    throw networkError(error, new URL(url).host)
  }
  await head.body?.cancel().catch(() => undefined)
  if (head.status === 404) throw new HubError('url.not_found', `${url} not found (HTTP 404)`, {url, status: 404})
  if (!head.ok) throw new HubError('hub.http', `${url} answered HTTP ${head.status}`, {url, status: head.status})
  const size = sizeHeader(head.headers)
  yield* fetchBlob(url, file, name, {}, doFetch, {size}, options.attempts ?? 5)
  return {url, path: file, downloaded: true}
}
