/**
 * What a model's own files say it was converted from, for model/origin.ts: the Hub repo a path
 * was downloaded into (the cache's `models--owner--name/snapshots/…`), a folder's config.json
 * `_name_or_path` (transformers writes it on save_pretrained; openelm writes Apple's repo there
 * only when proven) and its card's `base_model`. Files alone are never proof: only a claim.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {type Checkpoint} from '../formats/types.js'
import {appleRelease, type ModelOrigin} from '../model/origin.js'
import {repoOfCachePath} from './cache.js'

/** Bytes read of a config.json or README.md when looking for a claim (either is a few KiB). */
const MAX_CLAIM_FILE_BYTES = 1 << 20

async function readSmall(file: string): Promise<string | undefined> {
  try {
    const handle = await fs.open(file, 'r')
    try {
      const buffer = Buffer.alloc(MAX_CLAIM_FILE_BYTES)
      const {bytesRead} = await handle.read(buffer, 0, MAX_CLAIM_FILE_BYTES, 0)
      return buffer.subarray(0, bytesRead).toString('utf8')
    } finally {
      await handle.close()
    }
  } catch {
    return undefined
  }
}

/** `base_model` of a card's YAML front matter (a scalar, or the first item of a list). */
export function cardBaseModel(text: string): string | undefined {
  const front = /^---\r?\n([\s\S]*?)\r?\n---/.exec(text)?.[1]
  if (!front) return undefined
  const m = /^base_model:[ \t]*(.*)$/m.exec(front)
  if (!m) return undefined
  const scalar = m[1]!.trim()
  if (scalar) return scalar.replace(/^["']|["']$/g, '')
  const item = /^[ \t]*-[ \t]*(.+)$/m.exec(front.slice(m.index + m[0].length + 1))
  return item?.[1]!.trim().replace(/^["']|["']$/g, '')
}

/** The claims a model path makes about its origin: its cache repo, and for a folder its config and card. */
export async function originClaims(p: string): Promise<string[]> {
  const claims: string[] = []
  const repo = repoOfCachePath(path.resolve(p))
  if (repo) claims.push(repo)
  const isDir = await fs.stat(p).then((s) => s.isDirectory(), () => false)
  if (!isDir) return claims
  const config = await readSmall(path.join(p, 'config.json'))
  if (config) {
    try {
      const name = (JSON.parse(config) as Record<string, unknown>)._name_or_path
      if (typeof name === 'string') claims.push(name)
    } catch {
      // Not JSON: the reader reports that; no claim here.
    }
  }
  const card = await readSmall(path.join(p, 'README.md'))
  const base = card ? cardBaseModel(card) : undefined
  if (base) claims.push(base)
  return claims
}

/** Where an open checkpoint came from: Apple's repo when its shape and its files agree, else its own name. */
export async function checkpointOrigin(checkpoint: Checkpoint): Promise<ModelOrigin> {
  if (checkpoint.path.startsWith('synth:')) return {source: checkpoint.path}
  const repo = repoOfCachePath(path.resolve(checkpoint.path))
  const appleRepo = appleRelease(checkpoint.config, await originClaims(checkpoint.path))
  return {...(appleRepo ? {appleRepo} : {}), source: repo ?? path.basename(checkpoint.path)}
}
