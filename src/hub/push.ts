/**
 * `push`: upload a model folder to the Hugging Face Hub in one commit, with the real
 * @huggingface/hub client (whoAmI, createRepo, createBranch, commitIter) over an injectable,
 * retrying `fetch`. Library code: yields progress events, returns a result, throws typed errors.
 *
 * Order of requests: whoami (fails fast on a bad token) → create repo (409 "exists" is fine) →
 * create branch for `revision` (409 is fine) → preupload → LFS batch → PUT each LFS object
 * (basic, or multipart parts + completion) → NDJSON commit. The commit is the last request, so
 * nothing is committed unless every LFS upload succeeded.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {pathToFileURL} from 'node:url'
import {GENERATED_CARD_MARKER} from '../formats/common.js'
import {type CommitOperation, type CommitOutput, commitIter, createBranch, createRepo, HubApiError, repoExists, whoAmI} from '@huggingface/hub'
import {HubError, OpenElmError, UsageError, VerificationError} from '../errors.js'
import {buildModelCard, VERIFY_REPORT_FILE, verifyFailed} from './card.js'
import {resolveEndpoint, resolveToken, scrubToken, type TokenSource} from './credentials.js'
import {type LocalFile, isLfs, listFolder, matchesAny, SAMPLE_BYTES, selected} from './files.js'
import {hubFetch, type RetryPolicy} from './fetch.js'

/** A repo id is `owner/name`, each part as the Hub allows them. */
const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/
const CARD_FILE = 'README.md'
/** Per-file progress is reported in steps of at least this fraction (plus the start and the end). */
const PROGRESS_STEP = 0.005

export interface PushOptions {
  /** `owner/name`. */
  repo: string
  token?: string
  endpoint?: string
  /** Branch to commit to (created when missing); default `main`. */
  revision?: string
  createPr?: boolean
  /** Visibility when the repo is created (an existing repo keeps its own). */
  private?: boolean
  commitMessage?: string
  commitDescription?: string
  include?: string[]
  exclude?: string[]
  /** List what would be uploaded; no request is made and no token is needed. */
  dryRun?: boolean
  /** `base_model` of the generated card. */
  baseModel?: string
  /** Remote files matching these globs (and not uploaded now) are deleted in the same commit. */
  delete?: string[]
  /** Keep `model*.safetensors` shards (and a shard index) of an earlier push that this one does not upload. */
  keepStale?: boolean
  /** Push a folder whose `openelm-verify.json` says it failed (refused otherwise); the card warns. */
  allowFailedVerify?: boolean
  /** Injectable transport (tests); wrapped with retries. */
  fetch?: typeof fetch
  retry?: Partial<RetryPolicy>
  /** Environment used for HF_TOKEN / HF_HOME / HF_ENDPOINT (default: process.env). */
  env?: Record<string, string | undefined>
}

export type PushPhase = 'authenticating' | 'creating-repo' | 'creating-branch' | 'preuploading' | 'uploading' | 'committing'

export type PushEvent =
  | {type: 'plan'; files: LocalFile[]; totalBytes: number}
  | {type: 'phase'; phase: PushPhase}
  | {type: 'file'; path: string; state: 'hashing' | 'uploading'; bytesDone: number; bytes: number}
  | {type: 'retry'; message: string}
  | {type: 'note'; message: string}

/** A file of the commit as reported: its repo path, size, storage. */
export type PushedFile = Omit<LocalFile, 'absPath'>

export interface PushResult {
  repo: string
  endpoint: string
  repoUrl: string
  revision: string
  dryRun: boolean
  createdRepo: boolean
  createdBranch: boolean
  commitOid?: string
  commitUrl?: string
  pullRequestUrl?: string
  files: PushedFile[]
  totalBytes: number
  user?: string
  tokenSource?: TokenSource
  /** Remote files this commit deletes (stale shards, --delete matches). */
  deleted: string[]
}

/**
 * Weights of an earlier push that loaders would still pick up next to the new ones: mlx-lm loads
 * every `model*.safetensors` it finds, and transformers follows a shard index when one is there.
 */
export function isStaleWeight(file: string): boolean {
  return /^model[^/]*\.safetensors$/.test(file) || file === 'model.safetensors.index.json'
}

/** Remote paths to delete: --delete matches and (unless kept) stale weights, never a file being uploaded. */
export function deletions(remote: string[], uploading: Set<string>, options: {delete?: string[]; keepStale?: boolean}): string[] {
  return remote.filter((f) => !uploading.has(f) && ((options.delete?.length && matchesAny(f, options.delete)) || (!options.keepStale && isStaleWeight(f)))).sort()
}

/** Files of `repo` at `revision` (none when the repo or the branch does not exist yet). */
async function remoteFiles(endpoint: string, repo: string, revision: string, token: string, doFetch: typeof fetch): Promise<string[]> {
  const response = await doFetch(`${endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`, {headers: {Authorization: `Bearer ${token}`}})
  if (response.status === 404) {
    await response.body?.cancel().catch(() => undefined)
    return []
  }
  if (!response.ok) {
    await response.body?.cancel().catch(() => undefined)
    throw new HubError(`hub.http_${response.status}`, `listing the files of ${repo}@${revision} failed: HTTP ${response.status}`, {status: response.status})
  }
  const info = (await response.json()) as {siblings?: {rfilename: string}[]}
  return (info.siblings ?? []).map((s) => s.rfilename)
}

function validate(options: PushOptions): void {
  if (!REPO_ID.test(options.repo)) {
    throw new UsageError('push.repo', `invalid --repo "${options.repo}" (expected OWNER/NAME, e.g. me/OpenELM-270M-mlx)`)
  }
  if (options.revision !== undefined && (options.revision === '' || /\s|\.\.|^\/|\/$/.test(options.revision))) {
    throw new UsageError('push.revision', `invalid --revision "${options.revision}" (expected a branch name)`)
  }
}

/** Pre-signed storage URLs carry short-lived credentials in their query: keep them out of messages. */
function stripQueries(text: string): string {
  return text.replace(/(https?:\/\/[^\s?]+)\?[^\s]*/g, '$1')
}

/** Turn anything the Hub client throws into a HubError whose text never holds the token. */
function toHubError(error: unknown, action: string, token: string | undefined): OpenElmError {
  if (error instanceof OpenElmError) return error
  const scrub = (text: string) => scrubToken(stripQueries(text), token)
  if (error instanceof HubApiError) {
    const status = error.statusCode
    const hint = status === 401 ? ' (check the token: --token, HF_TOKEN or the token file)' : status === 403 ? ' (the token lacks write access to this repo or namespace)' : ''
    return new HubError(`hub.http_${status}`, scrub(`${action} failed: HTTP ${status}: ${error.message}${hint}`), {status, url: scrub(error.url)})
  }
  const err = error as Error & {cause?: {code?: string; message?: string}}
  if (err instanceof TypeError && /fetch failed|network|socket/i.test(err.message)) {
    const cause = err.cause?.code ?? err.cause?.message ?? err.message
    return new HubError('hub.network', scrub(`${action} failed: could not reach the Hub (${cause}) after retries`))
  }
  return new HubError('hub.client', scrub(`${action} failed: ${err.message ?? String(error)}`))
}

/** One file (`push model.gguf`): uploaded at the repo root under its own name, as `hf upload` does; no card. */
async function singleFile(file: string, options: PushOptions, notes: string[]): Promise<{files: LocalFile[]; card?: string} | undefined> {
  const stat = await fs.stat(file).catch(() => undefined)
  if (!stat?.isFile()) return undefined
  const name = path.basename(file)
  if (!selected(name, options)) throw new UsageError('push.empty', `nothing to upload: ${name} is excluded by --include/--exclude`, {path: file})
  const handle = await fs.open(file, 'r')
  let sample: Uint8Array
  try {
    const buffer = Buffer.alloc(SAMPLE_BYTES)
    sample = buffer.subarray(0, (await handle.read(buffer, 0, SAMPLE_BYTES, 0)).bytesRead)
  } finally {
    await handle.close()
  }
  notes.push(`${file} is one file: uploading it as ${name} at the root of ${options.repo}; no model card is generated and no other remote file is touched (push the model folder for a card)`)
  return {files: [{path: name, absPath: file, bytes: stat.size, lfs: isLfs(name, stat.size, sample)}]}
}

async function filesWithCard(dir: string, options: PushOptions, notes: string[]): Promise<{files: LocalFile[]; card?: string}> {
  const single = await singleFile(dir, options, notes)
  if (single) return single
  const {files, skipped} = await listFolder(dir, {include: options.include, exclude: options.exclude})
  if (skipped.length > 0) notes.push(`skipped ${skipped.join(', ')}`)
  const existing = await fs.readFile(path.join(dir, CARD_FILE), 'utf8').catch(() => undefined)
  // A card a writer generated (marked) is extended with the full card; a person's card is kept as is.
  const generatedCard = existing?.includes(GENERATED_CARD_MARKER) ?? false
  let card: string | undefined
  if ((existing === undefined || generatedCard) && selected(CARD_FILE, options)) {
    const built = await buildModelCard(dir, {repo: options.repo, baseModel: options.baseModel, failedVerifyAllowed: options.allowFailedVerify, ...(generatedCard ? {convertText: existing} : {})})
    if (generatedCard) {
      notes.push(...built.notes, `${CARD_FILE} was generated by openelm: uploading it extended with the per-layer table and verification report, its text as the Conversion section (the folder is not modified)`)
      card = built.text
      const at = files.findIndex((f) => f.path === CARD_FILE)
      if (at >= 0) files.splice(at, 1)
    } else {
      notes.push(...built.notes, `no ${CARD_FILE} in the folder: a model card is generated in memory and uploaded as README.md (the folder is not modified)`)
      card = built.text
    }
    const bytes = Buffer.byteLength(card)
    files.push({path: CARD_FILE, bytes, lfs: isLfs(CARD_FILE, bytes, Buffer.from(card).subarray(0, SAMPLE_BYTES)), generated: true})
    files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
  }
  if (files.length === 0) throw new UsageError('push.empty', `nothing to upload from ${dir} (check --include/--exclude)`, {path: dir})
  return {files, card}
}

/** Push `dir` to the Hub. Yields progress; returns what was committed (or would be, under dryRun). */
export async function* push(dir: string, options: PushOptions): AsyncGenerator<PushEvent, PushResult> {
  validate(options)
  const env = options.env ?? process.env
  const endpoint = resolveEndpoint(options.endpoint, env)
  const revision = options.revision ?? 'main'
  const notes: string[] = []
  const failed = await verifyFailed(dir)
  if (failed && !options.allowFailedVerify) {
    throw new VerificationError('push.failed_verify', `${dir} failed verification (${VERIFY_REPORT_FILE} says FAIL): not pushing it; fix the conversion, or pass --allow-failed-verify to upload it with a warning in the card`, {path: dir})
  }
  if (failed) notes.push(`${VERIFY_REPORT_FILE} says this folder FAILED verification: pushing it because of --allow-failed-verify; the model card says so`)
  const {files, card} = await filesWithCard(dir, {...options, allowFailedVerify: Boolean(failed)}, notes)
  for (const message of notes.splice(0)) yield {type: 'note', message}
  const totalBytes = files.reduce((sum, f) => sum + f.bytes, 0)
  yield {type: 'plan', files, totalBytes}
  const result: PushResult = {repo: options.repo, endpoint, repoUrl: `${endpoint}/${options.repo}`, revision, dryRun: Boolean(options.dryRun), createdRepo: false, createdBranch: false, files: files.map(({absPath: _abs, ...f}) => f), totalBytes, deleted: []}
  if (options.dryRun) {
    if (options.delete?.length) yield {type: 'note', message: 'which remote files --delete removes is decided at push time: a dry run makes no request'}
    return result
  }

  const {token, source} = await resolveToken(options.token, env)
  result.tokenSource = source
  const pending: PushEvent[] = []
  const fetch = hubFetch({
    fetch: options.fetch,
    retry: options.retry,
    onRetry: (n) => pending.push({type: 'retry', message: `${n.method} ${n.target}: ${n.reason}; retry ${n.attempt} in ${(n.delayMs / 1000).toFixed(1)} s`}),
  })
  const common = {hubUrl: endpoint, accessToken: token, fetch}
  /** Run one Hub call, mapping its errors; retry notices raised meanwhile are yielded after it. */
  async function* call<T>(action: string, run: () => Promise<T>): AsyncGenerator<PushEvent, T> {
    try {
      return await run()
    } catch (error) {
      throw toHubError(error, action, token)
    } finally {
      yield* pending.splice(0)
    }
  }
  if (!token.startsWith('hf_')) throw new HubError('hub.token_format', `the token from ${source === 'file' ? 'the token file' : source === 'env' ? 'HF_TOKEN' : '--token'} does not look like a Hugging Face token (it must start with "hf_")`)

  yield {type: 'phase', phase: 'authenticating'}
  const me = yield* call('checking the token (whoami)', () => whoAmI(common))
  result.user = me.name

  yield {type: 'phase', phase: 'creating-repo'}
  result.createdRepo = yield* call(`creating ${options.repo}`, async () => {
    try {
      await createRepo({...common, repo: {type: 'model', name: options.repo}, ...(options.private && {private: true})})
      return true
    } catch (error) {
      if (error instanceof HubApiError && error.statusCode === 409) return false
      // No right to create in this namespace, but the repo may exist and accept our commits.
      if (error instanceof HubApiError && error.statusCode === 403 && (await repoExists({...common, repo: {type: 'model', name: options.repo}}))) return false
      throw error
    }
  })
  yield {type: 'note', message: result.createdRepo ? `created ${options.private ? 'private ' : ''}repo ${result.repoUrl}` : `repo ${options.repo} exists`}
  if (!result.createdRepo && options.private) yield {type: 'note', message: '--private only applies when the repo is created; the existing repo keeps its visibility'}

  if (revision !== 'main') {
    yield {type: 'phase', phase: 'creating-branch'}
    result.createdBranch = yield* call(`creating branch ${revision}`, async () => {
      try {
        await createBranch({...common, repo: {type: 'model', name: options.repo}, branch: revision})
        return true
      } catch (error) {
        if (error instanceof HubApiError && error.statusCode === 409) return false
        throw error
      }
    })
    if (result.createdBranch) yield {type: 'note', message: `created branch ${revision}`}
  }

  const operations: CommitOperation[] = files.map((f) => ({
    operation: 'addOrUpdate',
    path: f.path,
    content: f.generated ? new Blob([card!]) : pathToFileURL(f.absPath!),
  }))
  // One file adds or replaces that file only: earlier weights beside it are not stale.
  const keepStale = options.keepStale || (files.length === 1 && files[0]!.absPath === dir)
  if (!result.createdRepo && (!keepStale || options.delete?.length)) {
    const remote = yield* call(`listing the files of ${options.repo}`, () => remoteFiles(endpoint, options.repo, revision, token, fetch))
    result.deleted = deletions(remote, new Set(files.map((f) => f.path)), {...options, keepStale})
    for (const file of result.deleted) operations.push({operation: 'delete', path: file})
    if (result.deleted.length > 0) yield {type: 'note', message: `deleting ${result.deleted.join(', ')} from ${options.repo} in the same commit${keepStale ? '' : ' (stale weights of an earlier push; --keep-stale keeps them)'}`}
  }
  const sizes = new Map(files.map((f) => [f.path, f.bytes]))
  const lastProgress = new Map<string, number>()
  const iterator = commitIter({
    ...common,
    repo: {type: 'model', name: options.repo},
    operations,
    title: options.commitMessage ?? `Upload ${options.repo.split('/')[1]} with openelm`,
    description: options.commitDescription,
    branch: revision,
    isPullRequest: options.createPr,
    // Plain LFS (basic + multipart), the protocol tested offline; see docs/push.md.
    useXet: false,
  })
  const action = `uploading to ${options.repo}${revision === 'main' ? '' : `@${revision}`}`
  let output: CommitOutput | undefined
  for (;;) {
    let step: IteratorResult<Awaited<ReturnType<typeof iterator.next>>['value']>
    try {
      step = await iterator.next()
    } catch (error) {
      yield* pending.splice(0)
      throw toHubError(error, action, token)
    }
    yield* pending.splice(0)
    if (step.done) {
      output = step.value as CommitOutput | undefined
      break
    }
    const event = step.value as Exclude<typeof step.value, CommitOutput | undefined>
    if (event.event === 'phase') {
      yield {type: 'phase', phase: event.phase === 'preuploading' ? 'preuploading' : event.phase === 'uploadingLargeFiles' ? 'uploading' : 'committing'}
    } else if (event.state !== 'error') {
      const key = `${event.state}:${event.path}`
      const last = lastProgress.get(key)
      if (last !== undefined && event.progress < 1 && event.progress - last < PROGRESS_STEP) continue
      lastProgress.set(key, event.progress)
      const bytes = sizes.get(event.path) ?? 0
      yield {type: 'file', path: event.path, state: event.state, bytesDone: Math.round(event.progress * bytes), bytes}
    }
  }
  if (!output?.commit?.oid) throw new HubError('hub.commit', `${action} failed: the Hub did not return a commit`)
  result.commitOid = output.commit.oid
  result.commitUrl = output.commit.url
  if (output.pullRequestUrl) result.pullRequestUrl = output.pullRequestUrl
  return result
}

/** Drain `push` without progress (for scripts and tests). */
export async function pushFolder(dir: string, options: PushOptions): Promise<PushResult> {
  const it = push(dir, options)
  for (;;) {
    const step = await it.next()
    if (step.done) return step.value
  }
}
