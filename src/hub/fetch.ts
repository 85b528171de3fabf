/**
 * The `fetch` handed to @huggingface/hub: retries transient failures with bounded exponential
 * backoff and reports upload progress of LFS bodies through the library's `progressHint`.
 *
 * Transient: HTTP 5xx, 429 (waiting what `Retry-After` asks, capped), and dropped or refused
 * connections. Everything else (401, 403, 404, 409, 422...) is returned at once so the library
 * raises the Hub's message. Bodies the library sends (strings, Blobs, buffers) can be replayed,
 * so every request is retryable; a streamed body is not and is tried once.
 */

/** Tries per request, the first included. */
export const MAX_ATTEMPTS = 5
/** Delay before the first retry; doubles each time. */
export const BASE_DELAY_MS = 1_000
/** Upper bound of one backoff delay. */
export const MAX_DELAY_MS = 20_000
/** Upper bound of a server-requested `Retry-After` wait (a Hub rate limit resets within minutes). */
export const MAX_RETRY_AFTER_MS = 120_000

export interface RetryPolicy {
  maxAttempts: number
  baseDelayMs: number
  maxDelayMs: number
  maxRetryAfterMs: number
  /** Injectable for tests. */
  sleep: (ms: number) => Promise<void>
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: MAX_ATTEMPTS,
  baseDelayMs: BASE_DELAY_MS,
  maxDelayMs: MAX_DELAY_MS,
  maxRetryAfterMs: MAX_RETRY_AFTER_MS,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
}

export interface RetryNotice {
  method: string
  /** Host and path only: never the query (pre-signed URLs) nor headers. */
  target: string
  attempt: number
  delayMs: number
  reason: string
}

export interface RequestRecord {
  method: string
  target: string
  status?: number
  error?: string
}

export interface HubFetchOptions {
  fetch?: typeof fetch
  retry?: Partial<RetryPolicy>
  onRetry?: (notice: RetryNotice) => void
  onRequest?: (record: RequestRecord) => void
}

/** The shape @huggingface/hub passes next to `init` for uploads it can report progress for. */
interface ProgressHint {
  progressCallback?: (progress: number) => void
  path?: string
  part?: number
  numParts?: number
}

function describeTarget(input: string | URL | Request): string {
  const text = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url
  try {
    const url = new URL(text)
    return `${url.host}${url.pathname}`
  } catch {
    return text.split('?')[0]!
  }
}

/** `Retry-After` as seconds or an HTTP date, in ms; undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (!header) return undefined
  const seconds = Number(header.trim())
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000
  const date = Date.parse(header)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

function isTransientStatus(status: number): boolean {
  return status === 429 || status >= 500
}

function errorReason(error: unknown): string {
  const cause = (error as {cause?: {code?: string; message?: string}}).cause
  return cause?.code ?? cause?.message ?? (error as Error).message ?? String(error)
}

/** Multipart parts report their own fraction; the file's progress is their mean. */
const partProgress = new WeakMap<(progress: number) => void, Map<number, number>>()

function reportProgress(hint: ProgressHint, fraction: number): void {
  const callback = hint.progressCallback
  if (!callback) return
  let value = fraction
  if (hint.part !== undefined && hint.numParts) {
    let parts = partProgress.get(callback)
    if (!parts) partProgress.set(callback, (parts = new Map()))
    parts.set(hint.part, fraction)
    let sum = 0
    for (const p of parts.values()) sum += p
    value = sum / hint.numParts
  }
  // The library reports 1 itself once the response is in; stay just below until then.
  callback(Math.min(value, 0.999_999))
}

/** Wrap a Blob body in a byte-counting stream; Content-Length keeps it a plain (non-chunked) PUT. */
function countingBody(blob: Blob, hint: ProgressHint): {body: ReadableStream<Uint8Array>; length: number} {
  const total = blob.size
  let sent = 0
  const reader = blob.stream().getReader()
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const {done, value} = await reader.read()
      if (done) {
        controller.close()
        return
      }
      sent += value.byteLength
      if (total > 0) reportProgress(hint, sent / total)
      controller.enqueue(value)
    },
    async cancel(reason) {
      await reader.cancel(reason)
    },
  })
  return {body, length: total}
}

function prepareInit(init: RequestInit | undefined): RequestInit | undefined {
  if (!init) return init
  const hint = (init as {progressHint?: ProgressHint}).progressHint
  const {progressHint: _dropped, ...rest} = init as RequestInit & {progressHint?: ProgressHint}
  if (!hint?.progressCallback || !(init.body instanceof Blob)) return rest
  if (hint.path === undefined) return rest // the NDJSON commit: the library spreads it over small files
  const {body, length} = countingBody(init.body, hint)
  const headers = new Headers(init.headers)
  headers.set('Content-Length', String(length))
  return {...rest, headers, body, duplex: 'half'} as RequestInit
}

function replayable(init: RequestInit | undefined): boolean {
  return !(init?.body instanceof ReadableStream)
}

/** A fetch with bounded retries of transient failures. */
export function hubFetch(options: HubFetchOptions = {}): typeof fetch {
  const base = options.fetch ?? globalThis.fetch
  const policy: RetryPolicy = {...DEFAULT_RETRY, ...options.retry}
  const wrapped = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const method = (init?.method ?? 'GET').toUpperCase()
    const target = describeTarget(input)
    const canRetry = replayable(init)
    for (let attempt = 1; ; attempt++) {
      let response: Response | undefined
      let failure: unknown
      try {
        response = await base(input, prepareInit(init))
        options.onRequest?.({method, target, status: response.status})
      } catch (error) {
        if ((error as Error).name === 'AbortError' || init?.signal?.aborted) throw error
        failure = error
        options.onRequest?.({method, target, error: errorReason(error)})
      }
      const transient = failure !== undefined || isTransientStatus(response!.status)
      if (!transient || !canRetry || attempt >= policy.maxAttempts) {
        if (failure !== undefined) throw failure
        return response!
      }
      const backoff = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1))
      const asked = response ? retryAfterMs(response.headers.get('Retry-After')) : undefined
      const delayMs = asked === undefined ? backoff : Math.min(policy.maxRetryAfterMs, asked)
      const reason = failure !== undefined ? `connection failed (${errorReason(failure)})` : `HTTP ${response!.status}`
      await response?.body?.cancel().catch(() => undefined)
      options.onRetry?.({method, target, attempt, delayMs, reason})
      await policy.sleep(delayMs)
    }
  }
  return wrapped as typeof fetch
}
