/**
 * A local stand-in for the Hugging Face Hub, on 127.0.0.1 only, speaking the upload protocol the
 * real @huggingface/hub client uses:
 *   GET  /api/whoami-v2
 *   POST /api/repos/create                         {name, organization, type, visibility?}
 *   GET  /api/models/OWNER/NAME                    (repo exists?)
 *   POST /api/models/OWNER/NAME/branch/BRANCH      {startingPoint?}
 *   POST /api/models/OWNER/NAME/preupload/REV[?create_pr=1]   {files: [{path, size, sample}]}
 *   POST /OWNER/NAME.git/info/lfs/objects/batch    {operation, transfers, objects: [{oid, size}]}
 *   PUT  /storage/basic/OID                        (basic transfer: the whole object)
 *   PUT  /storage/part/OID/N                       (multipart: one part, answers an ETag)
 *   POST /storage/complete/OID                     {oid, parts: [{partNumber, etag}]}
 *   POST /api/models/OWNER/NAME/commit/REV[?create_pr=1]      NDJSON: header, file, lfsFile
 * and the download protocol of `hf download` / the openelm source resolver:
 *   GET  /api/models/OWNER/NAME/revision/REV      {sha, siblings: [{rfilename}]} (404 X-Error-Code RepoNotFound / RevisionNotFound)
 *   HEAD|GET /OWNER/NAME/resolve/REV/PATH         ETag (sha256 for LFS files), X-Repo-Commit, Range → 206;
 *                                                 401 X-Error-Code GatedRepo for a gated repo without the token
 * It stores what it receives (LFS objects are checked against their sha256) so tests can compare
 * the committed tree byte for byte with the folder. Faults are injected per request.
 */
import {createHash} from 'node:crypto'
import http from 'node:http'
import {type AddressInfo} from 'node:net'

export interface RequestLog {
  method: string
  /** Path without the query string. */
  path: string
  query: string
  authorization?: string
  contentType?: string
  /** The Range header of a download. */
  range?: string
  bodyBytes: number
  /** The body of JSON/NDJSON requests (API calls), as text. */
  bodyText?: string
}

/** What a fault hook may do with a request instead of serving it. */
export type Fault =
  | {status: number; body?: unknown; headers?: Record<string, string>}
  | {drop: true}
  | undefined

export type FaultHook = (request: RequestLog, index: number) => Fault

export interface Commit {
  oid: string
  repo: string
  branch: string
  summary: string
  description?: string
  files: Map<string, Buffer>
  lfsPaths: string[]
  pullRequest?: number
}

interface Repo {
  private: boolean
  gated?: boolean
  branches: Map<string, Map<string, Buffer>>
  /** Commit sha of each branch head, and the tree of every commit. */
  heads?: Map<string, string>
  snapshots?: Map<string, Map<string, Buffer>>
  pullRequests: Map<number, Map<string, Buffer>>
}

export interface HubServerOptions {
  /** The only token accepted. */
  token: string
  user?: string
  orgs?: string[]
  /** LFS objects at least this big are uploaded in parts. */
  multipartThreshold?: number
  chunkSize?: number
  /** The Hub's LFS rule, as the server applies it at preupload. */
  lfsThreshold?: number
}

const LFS_SUFFIXES = ['.safetensors', '.bin', '.onnx', '.gguf', '.npz', '.pt', '.model']
const GITATTRIBUTES = Buffer.from('*.safetensors filter=lfs diff=lfs merge=lfs -text\n')

export class HubServer {
  readonly requests: RequestLog[] = []
  readonly commits: Commit[] = []
  readonly repos = new Map<string, Repo>()
  /** LFS storage: oid → bytes. */
  readonly objects = new Map<string, Buffer>()
  fault: FaultHook | undefined
  /** Downloads: send this many bytes of a resolve GET's body, then cut the connection. */
  truncate: ((request: RequestLog, index: number) => number | undefined) | undefined
  /** Downloads: send this many bytes of a resolve GET's body, then send nothing more (a stalled link). */
  stall: ((request: RequestLog, index: number) => number | undefined) | undefined
  url = ''
  private server: http.Server | undefined
  private readonly parts = new Map<string, Map<number, Buffer>>()
  private readonly options: Required<HubServerOptions>

  constructor(options: HubServerOptions) {
    this.options = {user: 'me', orgs: ['openelm-org'], multipartThreshold: 1 << 20, chunkSize: 256 * 1024, lfsThreshold: 10 * 1024 * 1024, ...options}
  }

  async start(): Promise<string> {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((error: Error) => {
        if (!res.headersSent) this.json(res, 500, {error: `test server: ${error.message}`})
        else res.destroy()
      })
    })
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this.url
  }

  /** Let the process exit while the server still listens (benchmarks). */
  unref(): void {
    this.server?.unref()
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections()
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()))
  }

  /** The tree of a branch (or PR) after the last commit. */
  tree(repo: string, ref = 'main'): Map<string, Buffer> | undefined {
    const r = this.repos.get(repo)
    const pr = /^refs\/pr\/(\d+)$/.exec(ref)
    return pr ? r?.pullRequests.get(Number(pr[1])) : r?.branches.get(ref)
  }

  /** Put a repo on the server as if someone had pushed `files` to `branch` (a new commit each call). */
  publish(repo: string, files: Map<string, Buffer>, options: {branch?: string; gated?: boolean} = {}): string {
    let r = this.repos.get(repo)
    if (!r) this.repos.set(repo, (r = {private: false, branches: new Map(), pullRequests: new Map()}))
    if (options.gated !== undefined) r.gated = options.gated
    const branch = options.branch ?? 'main'
    r.branches.set(branch, new Map(files))
    return this.recordHead(r, branch)
  }

  private recordHead(r: Repo, branch: string): string {
    const tree = r.branches.get(branch)!
    const hash = createHash('sha1').update(branch).update(String(Date.now())).update(String(Math.random()))
    for (const [name, data] of [...tree].sort(([a], [b]) => (a < b ? -1 : 1))) hash.update(name).update(data)
    const sha = hash.digest('hex')
    r.heads ??= new Map()
    r.snapshots ??= new Map()
    r.heads.set(branch, sha)
    r.snapshots.set(sha, tree)
    return sha
  }

  /** Commit sha a branch points at (recorded for every branch the server holds). */
  head(repo: string, branch = 'main'): string | undefined {
    const r = this.repos.get(repo)
    if (!r) return undefined
    if (!r.heads?.has(branch) && r.branches.has(branch)) this.recordHead(r, branch)
    return r.heads?.get(branch)
  }

  /** GET requests for file bytes (what a cache hit must not make). */
  downloads(repo?: string): RequestLog[] {
    return this.requests.filter((q) => q.method === 'GET' && /^\/[^/]+\/[^/]+\/resolve\//.test(q.path) && (!repo || q.path.startsWith(`/${repo}/resolve/`)))
  }

  private errorCode(res: http.ServerResponse, status: number, code: string, message: string): void {
    res.writeHead(status, {'Content-Type': 'application/json', 'X-Error-Code': code, 'X-Error-Message': message})
    res.end(JSON.stringify({error: message}))
  }

  private treeAt(r: Repo, repo: string, rev: string): {sha: string; tree: Map<string, Buffer>} | undefined {
    if (r.branches.has(rev)) {
      const sha = this.head(repo, rev)!
      return {sha, tree: r.branches.get(rev)!}
    }
    const tree = r.snapshots?.get(rev)
    return tree ? {sha: rev, tree} : undefined
  }

  private revisionInfo(repo: string, rev: string, res: http.ServerResponse): void {
    const r = this.repos.get(repo)
    if (!r) return this.errorCode(res, 404, 'RepoNotFound', 'Repository not found')
    const at = this.treeAt(r, repo, rev)
    if (!at) return this.errorCode(res, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`)
    this.json(res, 200, {id: repo, modelId: repo, sha: at.sha, private: r.private, gated: r.gated ? 'manual' : false, siblings: [...at.tree.keys()].sort().map((rfilename) => ({rfilename}))})
  }

  private resolveFile(repo: string, rev: string, file: string, req: http.IncomingMessage, log: RequestLog, index: number, res: http.ServerResponse): void {
    const r = this.repos.get(repo)
    if (!r) return this.errorCode(res, 404, 'RepoNotFound', 'Repository not found')
    if (r.gated && !this.authorized(req)) return this.errorCode(res, 401, 'GatedRepo', `Access to model ${repo} is restricted. You must have access to it and be authenticated to access it. Please log in.`)
    const at = this.treeAt(r, repo, rev)
    if (!at) return this.errorCode(res, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`)
    const data = at.tree.get(file)
    if (!data) return this.errorCode(res, 404, 'EntryNotFound', `${file} does not exist on "${rev}"`)
    const lfs = LFS_SUFFIXES.some((suffix) => file.endsWith(suffix))
    const etag = lfs ? createHash('sha256').update(data).digest('hex') : createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex')
    const headers: Record<string, string> = {ETag: `"${etag}"`, 'X-Repo-Commit': at.sha, 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream'}
    if (lfs) headers['X-Linked-Etag'] = `"${etag}"`
    let body = data
    let status = 200
    const range = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''))
    if (range) {
      const start = Number(range[1])
      if (start >= data.length) {
        res.writeHead(416, {'Content-Range': `bytes */${data.length}`})
        res.end()
        return
      }
      body = data.subarray(start)
      status = 206
      headers['Content-Range'] = `bytes ${start}-${data.length - 1}/${data.length}`
    }
    headers['Content-Length'] = String(body.length)
    res.writeHead(status, headers)
    if (log.method === 'HEAD') return void res.end()
    const pause = this.stall?.(log, index)
    if (pause !== undefined && pause < body.length) {
      res.write(body.subarray(0, pause))
      return
    }
    const cut = this.truncate?.(log, index)
    if (cut !== undefined && cut < body.length) {
      res.write(body.subarray(0, cut), () => setTimeout(() => res.destroy(), 20))
      return
    }
    res.end(body)
  }

  private json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    res.writeHead(status, {'Content-Type': 'application/json', ...headers})
    res.end(JSON.stringify(body))
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url)
    const log: RequestLog = {method: req.method ?? 'GET', path: decodeURIComponent(url.pathname), query: url.search, authorization: req.headers.authorization, contentType: req.headers['content-type'], range: req.headers.range, bodyBytes: 0}
    const index = this.requests.push(log) - 1
    const fault = this.fault?.(log, index)
    if (fault && 'drop' in fault) {
      // Take part of the body, then cut the connection mid-request.
      await new Promise<void>((resolve) => {
        req.once('data', () => resolve())
        req.once('end', () => resolve())
      })
      req.socket.destroy()
      return
    }
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const body = Buffer.concat(chunks)
    log.bodyBytes = body.length
    if (/json/.test(log.contentType ?? '')) log.bodyText = body.toString('utf8')
    if (fault) {
      const isJson = fault.body !== undefined && typeof fault.body !== 'string'
      res.writeHead(fault.status, {...(isJson ? {'Content-Type': 'application/json'} : {}), ...fault.headers})
      res.end(isJson ? JSON.stringify(fault.body) : (fault.body as string | undefined) ?? '')
      return
    }
    await this.route(log, url, body, req, res)
  }

  private authorized(req: http.IncomingMessage): boolean {
    return req.headers.authorization === `Bearer ${this.options.token}`
  }

  private async route(log: RequestLog, url: URL, body: Buffer, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const p = log.path
    const m = log.method
    let match: RegExpExecArray | null
    // Storage URLs are pre-signed: no Authorization header (the client sends none).
    if (m === 'PUT' && (match = /^\/storage\/basic\/([0-9a-f]{64})$/.exec(p))) return this.putBasic(match[1]!, body, res)
    if (m === 'PUT' && (match = /^\/storage\/part\/([0-9a-f]{64})\/(\d+)$/.exec(p))) return this.putPart(match[1]!, Number(match[2]), body, res)
    if (m === 'POST' && (match = /^\/storage\/complete\/([0-9a-f]{64})$/.exec(p))) return this.complete(match[1]!, body, res)

    // Downloads: public repos need no token; gated ones check it per file, as the Hub does.
    if (m === 'GET' && (match = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(p))) return this.revisionInfo(match[1]!, match[2]!, res)
    if ((m === 'GET' || m === 'HEAD') && (match = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(p))) return this.resolveFile(match[1]!, match[2]!, match[3]!, req, log, this.requests.indexOf(log), res)

    if (!this.authorized(req)) return this.json(res, 401, {error: 'Invalid credentials in Authorization header'})
    if (m === 'GET' && p === '/api/whoami-v2') {
      return this.json(res, 200, {type: 'user', id: 'u1', name: this.options.user, fullname: 'Test User', email: 'me@example.com', emailVerified: true, isPro: false, canPay: false, avatarUrl: '', periodEnd: null, billingMode: 'prepaid', orgs: this.options.orgs.map((name) => ({type: 'org', id: name, name, fullname: name})), auth: {type: 'access_token', accessToken: {displayName: 'test', role: 'write', createdAt: '2024-01-01T00:00:00.000Z'}}})
    }
    if (m === 'POST' && p === '/api/repos/create') return this.createRepo(JSON.parse(body.toString('utf8')), res)
    if (m === 'GET' && (match = /^\/api\/models\/([^/]+\/[^/]+)$/.exec(p))) {
      return this.repos.has(match[1]!) ? this.json(res, 200, {id: match[1]}) : this.json(res, 404, {error: 'Repository not found'})
    }
    if (m === 'POST' && (match = /^\/api\/models\/([^/]+\/[^/]+)\/branch\/(.+)$/.exec(p))) return this.createBranch(match[1]!, match[2]!, JSON.parse(body.toString('utf8') || '{}'), res)
    if (m === 'POST' && (match = /^\/api\/models\/([^/]+\/[^/]+)\/preupload\/(.+)$/.exec(p))) return this.preupload(match[1]!, match[2]!, JSON.parse(body.toString('utf8')), res)
    if (m === 'POST' && (match = /^\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/.exec(p))) return this.batch(match[1]!, JSON.parse(body.toString('utf8')), res)
    if (m === 'POST' && (match = /^\/api\/models\/([^/]+\/[^/]+)\/commit\/(.+)$/.exec(p))) return this.commit(match[1]!, match[2]!, url.searchParams.get('create_pr') === '1', log, body, res)
    return this.json(res, 404, {error: `test server: no route for ${m} ${p}`})
  }

  private createRepo(payload: {name: string; organization?: string; type?: string; visibility?: string}, res: http.ServerResponse): void {
    const owner = payload.organization ?? this.options.user
    if (owner !== this.options.user && !this.options.orgs.includes(owner)) return this.json(res, 404, {error: `Organization "${owner}" not found`})
    const id = `${owner}/${payload.name}`
    if (this.repos.has(id)) return this.json(res, 409, {error: 'You already created this model repo', url: `${this.url}/${id}`})
    // A new repo starts with one commit holding .gitattributes, like the Hub's.
    this.repos.set(id, {private: payload.visibility === 'private', branches: new Map([['main', new Map([['.gitattributes', GITATTRIBUTES]])]]), pullRequests: new Map()})
    this.json(res, 200, {url: `${this.url}/${id}`, name: id, id: `repo-${this.repos.size}`})
  }

  private createBranch(repo: string, branch: string, payload: {startingPoint?: string}, res: http.ServerResponse): void {
    const r = this.repos.get(repo)
    if (!r) return this.json(res, 404, {error: 'Repository not found'})
    if (r.branches.has(branch)) return this.json(res, 409, {error: 'Reference already exists'})
    const from = r.branches.get(payload.startingPoint ?? 'main')
    if (!from) return this.json(res, 404, {error: 'Invalid rev id'})
    r.branches.set(branch, new Map(from))
    this.json(res, 200, {})
  }

  private preupload(repo: string, rev: string, payload: {files: {path: string; size: number; sample: string}[]}, res: http.ServerResponse): void {
    const r = this.repos.get(repo)
    if (!r) return this.json(res, 404, {error: 'Repository not found'})
    if (!r.branches.has(rev)) return this.json(res, 404, {error: 'Revision Not Found'})
    const files = payload.files.map((f) => {
      const sample = Buffer.from(f.sample, 'base64')
      const lfs = f.size >= this.options.lfsThreshold || sample.includes(0) || LFS_SUFFIXES.some((s) => f.path.endsWith(s))
      return {path: f.path, uploadMode: lfs ? 'lfs' : 'regular', shouldIgnore: false}
    })
    this.json(res, 200, {files, commitOid: 'f'.repeat(40)})
  }

  private batch(repo: string, payload: {operation: string; transfers: string[]; objects: {oid: string; size: number}[]}, res: http.ServerResponse): void {
    if (!this.repos.has(repo)) return this.json(res, 404, {message: 'Repository not found'})
    if (payload.operation !== 'upload') return this.json(res, 422, {message: 'only upload is supported'})
    const multipart = payload.transfers.includes('multipart')
    const objects = payload.objects.map(({oid, size}) => {
      if (this.objects.has(oid)) return {oid, size} // already stored: no action
      if (multipart && size >= this.options.multipartThreshold) {
        const header: Record<string, string> = {chunk_size: String(this.options.chunkSize)}
        const count = Math.ceil(size / this.options.chunkSize)
        for (let i = 1; i <= count; i++) header[String(i).padStart(5, '0')] = `${this.url}/storage/part/${oid}/${i}?X-Signature=sig${i}`
        return {oid, size, authenticated: true, actions: {upload: {href: `${this.url}/storage/complete/${oid}`, header}}}
      }
      return {oid, size, authenticated: true, actions: {upload: {href: `${this.url}/storage/basic/${oid}?X-Signature=sig`}}}
    })
    res.writeHead(200, {'Content-Type': 'application/vnd.git-lfs+json', 'X-Request-Id': `req-${this.requests.length}`})
    res.end(JSON.stringify({transfer: multipart ? 'multipart' : 'basic', objects}))
  }

  private putBasic(oid: string, body: Buffer, res: http.ServerResponse): void {
    const sha = createHash('sha256').update(body).digest('hex')
    if (sha !== oid) return this.json(res, 400, {error: `sha256 mismatch: got ${sha}`})
    this.objects.set(oid, body)
    res.writeHead(200)
    res.end()
  }

  private putPart(oid: string, part: number, body: Buffer, res: http.ServerResponse): void {
    let parts = this.parts.get(oid)
    if (!parts) this.parts.set(oid, (parts = new Map()))
    parts.set(part, body)
    res.writeHead(200, {ETag: `"etag-${part}-${createHash('md5').update(body).digest('hex')}"`})
    res.end()
  }

  private complete(oid: string, body: Buffer, res: http.ServerResponse): void {
    const payload = JSON.parse(body.toString('utf8')) as {oid: string; parts: {partNumber: number; etag: string}[]}
    const parts = this.parts.get(oid)
    if (payload.oid !== oid || !parts) return this.json(res, 400, {error: 'unknown upload'})
    const buffers: Buffer[] = []
    for (const {partNumber, etag} of [...payload.parts].sort((a, b) => a.partNumber - b.partNumber)) {
      const data = parts.get(partNumber)
      if (!data || etag !== `"etag-${partNumber}-${createHash('md5').update(data).digest('hex')}"`) return this.json(res, 400, {error: `bad part ${partNumber}`})
      buffers.push(data)
    }
    const whole = Buffer.concat(buffers)
    if (createHash('sha256').update(whole).digest('hex') !== oid) return this.json(res, 400, {error: 'sha256 mismatch after completion'})
    this.objects.set(oid, whole)
    this.parts.delete(oid)
    this.json(res, 200, {})
  }

  private commit(repo: string, rev: string, createPr: boolean, log: RequestLog, body: Buffer, res: http.ServerResponse): void {
    const r = this.repos.get(repo)
    if (!r) return this.json(res, 404, {error: 'Repository not found'})
    const base = r.branches.get(rev)
    if (!base) return this.json(res, 404, {error: 'Revision Not Found'})
    if (log.contentType !== 'application/x-ndjson') return this.json(res, 400, {error: 'expected application/x-ndjson'})
    const lines = body.toString('utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as {key: string; value: Record<string, unknown>})
    const header = lines[0]
    if (header?.key !== 'header') return this.json(res, 400, {error: 'first line must be the header'})
    const files = new Map(base)
    const lfsPaths: string[] = []
    for (const {key, value} of lines.slice(1)) {
      if (key === 'file') {
        if (value.encoding !== 'base64') return this.json(res, 400, {error: 'expected base64'})
        files.set(value.path as string, Buffer.from(value.content as string, 'base64'))
      } else if (key === 'lfsFile') {
        const data = this.objects.get(value.oid as string)
        if (!data || data.length !== value.size || value.algo !== 'sha256') return this.json(res, 422, {error: `LFS object for ${String(value.path)} was not uploaded`})
        files.set(value.path as string, data)
        lfsPaths.push(value.path as string)
      } else if (key === 'deletedFile') {
        files.delete(value.path as string)
      } else {
        return this.json(res, 400, {error: `unknown key ${key}`})
      }
    }
    const oid = createHash('sha1').update(body).update(String(this.commits.length)).digest('hex')
    const commit: Commit = {oid, repo, branch: rev, summary: header.value.summary as string, description: header.value.description as string | undefined, files, lfsPaths}
    let pullRequestUrl: string | undefined
    if (createPr) {
      commit.pullRequest = r.pullRequests.size + 1
      r.pullRequests.set(commit.pullRequest, files)
      pullRequestUrl = `${this.url}/${repo}/discussions/${commit.pullRequest}`
    } else {
      r.branches.set(rev, files)
      this.recordHead(r, rev)
    }
    this.commits.push(commit)
    this.json(res, 200, {success: true, commitOid: oid, commitUrl: `${this.url}/${repo}/commit/${oid}`, hookOutput: '', ...(pullRequestUrl && {pullRequestUrl})})
  }
}

export async function startHubServer(options: HubServerOptions): Promise<HubServer> {
  const server = new HubServer(options)
  await server.start()
  return server
}
