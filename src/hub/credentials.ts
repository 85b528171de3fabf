/**
 * Where the Hub token and endpoint come from, in the same order as the `hf` CLI:
 * token: `--token`, else `HF_TOKEN`, else the file at `$HF_TOKEN_PATH`, else `$HF_HOME/token`
 * (`HF_HOME` defaults to `~/.cache/huggingface`); endpoint: `--endpoint`, else `HF_ENDPOINT`,
 * else the public Hub. The token value never appears in a message: only where it was found.
 */
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {HubError, UsageError} from '../errors.js'

export const DEFAULT_ENDPOINT = 'https://huggingface.co'

export type TokenSource = 'flag' | 'env' | 'file'

export interface ResolvedToken {
  token: string
  source: TokenSource
  /** The token file, when the token came from one. */
  file?: string
}

type Env = Record<string, string | undefined>

/** `$HF_TOKEN_PATH`, else `$HF_HOME/token`, else `~/.cache/huggingface/token`. */
export function tokenFilePath(env: Env = process.env): string {
  if (env.HF_TOKEN_PATH) return env.HF_TOKEN_PATH
  const home = env.HF_HOME || path.join(os.homedir(), '.cache', 'huggingface')
  return path.join(home, 'token')
}

/** A human description of every place a token is looked for, for the "no token" message. */
export function tokenSearchDescription(env: Env = process.env): string {
  return `--token, the HF_TOKEN environment variable, or the token file ${tokenFilePath(env)}`
}

export async function resolveToken(flag: string | undefined, env: Env = process.env): Promise<ResolvedToken> {
  const fromFlag = flag?.trim()
  if (fromFlag) return {token: fromFlag, source: 'flag'}
  const fromEnv = env.HF_TOKEN?.trim()
  if (fromEnv) return {token: fromEnv, source: 'env'}
  const file = tokenFilePath(env)
  let text: string | undefined
  try {
    text = await fs.readFile(file, 'utf8')
  } catch {
    text = undefined
  }
  const fromFile = text?.trim()
  if (fromFile) return {token: fromFile, source: 'file', file}
  throw new HubError('hub.no_token', `no Hugging Face token found: pass --token, set HF_TOKEN, or write a token to ${file} (run "hf auth login")`, {tokenFile: file})
}

/** `--endpoint`, else `HF_ENDPOINT`, else https://huggingface.co; no trailing slash. */
export function resolveEndpoint(flag: string | undefined, env: Env = process.env): string {
  const raw = (flag?.trim() || env.HF_ENDPOINT?.trim() || DEFAULT_ENDPOINT).replace(/\/+$/, '')
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new UsageError('hub.endpoint', `invalid Hub endpoint "${raw}" (expected a URL like ${DEFAULT_ENDPOINT})`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new UsageError('hub.endpoint', `invalid Hub endpoint "${raw}" (expected http:// or https://)`)
  }
  return raw
}

const TOKEN_MASK = '***'

/** Replace every occurrence of the token in `text` (the Hub or a proxy may echo headers back). */
export function scrubToken(text: string, token: string | undefined): string {
  if (!token) return text
  return text.split(token).join(TOKEN_MASK)
}
