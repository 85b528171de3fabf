/**
 * The fuzzer's seeds: one small, valid checkpoint of every layout the readers accept, written by
 * the tool's own writers from a deterministic synthetic model (plus the committed real
 * `torch.save` fixture), so every run starts from the same bytes.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {crc32 as nodeCrc32, deflateRawSync} from 'node:zlib'
import {writeCheckpoint} from '../../src/convert.js'
import {type FormatName, type WriteOptions} from '../../src/formats/types.js'
import {presetConfig} from '../../src/model/presets.js'
import {synthCheckpoint} from '../../src/model/synth.js'

export interface Seed {
  name: string
  format: FormatName
  /** Folder holding the seed's files; `open` is the path given to the reader, relative to it. */
  dir: string
  open: string
  /** The files a mutation may touch, relative to `dir`. */
  files: string[]
}

const REPO = path.resolve(import.meta.dirname, '..', '..')
/** A real torch.save file (fixtures/make_corenet_fixtures.py): the pickle and ZIP torch writes. */
export const TORCH_FIXTURE = path.join(REPO, 'fixtures', 'corenet', 'state_dict_f32.pt')

interface SeedPlan {
  name: string
  to: FormatName
  options: WriteOptions
  /** The output is a file inside the folder (GGUF, .pt) rather than the folder itself. */
  file?: string
}

const PLANS: SeedPlan[] = [
  {name: 'hf-single', to: 'hf', options: {dtype: 'F16'}},
  {name: 'hf-sharded', to: 'hf', options: {dtype: 'F32', shardSize: 8192}},
  {name: 'mlx-lm-q4', to: 'mlx', options: {dtype: 'F16', quantization: {bits: 4, groupSize: 32, mode: 'affine'}}},
  {name: 'corenet-mlx', to: 'mlx', options: {dtype: 'F16', layout: 'corenet-mlx'}},
  {name: 'npz-stored', to: 'mlx', options: {dtype: 'F16', layout: 'npz'}},
  {name: 'onnx-single', to: 'onnx', options: {dtype: 'F32'}},
  {name: 'onnx-external', to: 'onnx', options: {dtype: 'F32', layout: 'external-data'}},
  {name: 'gguf-f16', to: 'gguf', options: {dtype: 'F16'}, file: 'model.gguf'},
  {name: 'gguf-q8_0', to: 'gguf', options: {quantization: {bits: 8, groupSize: 32, mode: 'q8_0'}}, file: 'model.gguf'},
  {name: 'corenet-pt', to: 'corenet', options: {dtype: 'F32'}, file: 'model.pt'},
]

async function listFiles(dir: string, base = dir): Promise<string[]> {
  const out: string[] = []
  for (const entry of await fs.readdir(dir, {withFileTypes: true})) {
    const p = path.join(dir, entry.name)
    if (entry.isDirectory()) out.push(...(await listFiles(p, base)))
    else if (!/README\.md$/.test(entry.name)) out.push(path.relative(base, p))
  }
  return out.sort()
}

/** Write every seed under `root` (which must be empty or absent). */
export async function makeSeeds(root: string): Promise<Seed[]> {
  await fs.mkdir(root, {recursive: true})
  const source = synthCheckpoint(presetConfig('micro'), {seed: 7})
  const seeds: Seed[] = []
  for (const plan of PLANS) {
    const dir = path.join(root, plan.name)
    const out = plan.file ? path.join(dir, plan.file) : dir
    if (plan.file) await fs.mkdir(dir, {recursive: true})
    const events = writeCheckpoint(source, plan.to, out, plan.options)
    for (;;) if ((await events.next()).done) break
    const open = plan.file ?? '.'
    seeds.push({name: plan.name, format: plan.to, dir, open, files: plan.file ? [plan.file] : await listFiles(dir)})
  }
  // np.savez_compressed's layout: the same members, deflated.
  const deflated = path.join(root, 'npz-deflated')
  await fs.mkdir(deflated, {recursive: true})
  const stored = seeds.find((s) => s.name === 'npz-stored')!
  await fs.copyFile(path.join(stored.dir, 'config.json'), path.join(deflated, 'config.json'))
  const members = readStoredZip(await fs.readFile(path.join(stored.dir, 'weights.npz')))
  await fs.writeFile(path.join(deflated, 'weights.npz'), buildZip(members, true))
  seeds.push({name: 'npz-deflated', format: 'mlx', dir: deflated, open: '.', files: ['config.json', 'weights.npz']})
  const torch = path.join(root, 'torch-pt')
  await fs.mkdir(torch, {recursive: true})
  await fs.copyFile(TORCH_FIXTURE, path.join(torch, 'state_dict_f32.pt'))
  seeds.push({name: 'torch-pt', format: 'corenet', dir: torch, open: 'state_dict_f32.pt', files: ['state_dict_f32.pt']})
  return seeds
}

// ---- a minimal ZIP codec for the seeds and the ZIP-aware mutations --------------------------

export interface ZipMember {
  name: string
  data: Uint8Array
}

/** Members of a ZIP whose entries are all stored (the npz writer's and torch's output). */
export function readStoredZip(bytes: Uint8Array): ZipMember[] {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let eocd = b.length - 22
  while (eocd >= 0 && b.readUInt32LE(eocd) !== 0x06054b50) eocd--
  if (eocd < 0) throw new Error('seed is not a ZIP')
  const count = b.readUInt16LE(eocd + 10)
  let q = b.readUInt32LE(eocd + 16)
  const members: ZipMember[] = []
  for (let i = 0; i < count; i++) {
    const size = b.readUInt32LE(q + 20)
    const nameLen = b.readUInt16LE(q + 28)
    const name = b.subarray(q + 46, q + 46 + nameLen).toString('utf8')
    const local = b.readUInt32LE(q + 42)
    const dataOffset = local + 30 + b.readUInt16LE(local + 26) + b.readUInt16LE(local + 28)
    members.push({name, data: b.subarray(dataOffset, dataOffset + size)})
    q += 46 + nameLen + b.readUInt16LE(q + 30) + b.readUInt16LE(q + 32)
  }
  return members
}

/**
 * A ZIP of `members` (stored or deflated), CRCs and sizes correct, no ZIP64; with `align`, each
 * member's data starts on that boundary (padded by an "FB" extra field of 'Z's, as torch.save does).
 */
export function buildZip(members: readonly ZipMember[], deflate: boolean, align = 0): Buffer {
  const parts: Buffer[] = []
  const central: Buffer[] = []
  let offset = 0
  for (const m of members) {
    const name = Buffer.from(m.name, 'utf8')
    const data = deflate ? deflateRawSync(m.data) : Buffer.from(m.data)
    const crc = nodeCrc32(m.data) >>> 0
    const pad = align > 0 ? (align - ((offset + 30 + name.length + 4) % align)) % align : -4
    const extra = Buffer.alloc(pad + 4, 'Z')
    if (pad >= 0) {
      extra.writeUInt16LE(0x4246, 0)
      extra.writeUInt16LE(pad, 2)
    }
    const local = Buffer.alloc(30)
    local.writeUInt32LE(0x04034b50, 0)
    local.writeUInt16LE(20, 4)
    local.writeUInt16LE(deflate ? 8 : 0, 8)
    local.writeUInt32LE(crc, 14)
    local.writeUInt32LE(data.length, 18)
    local.writeUInt32LE(m.data.byteLength, 22)
    local.writeUInt16LE(name.length, 26)
    local.writeUInt16LE(extra.length, 28)
    const c = Buffer.alloc(46)
    c.writeUInt32LE(0x02014b50, 0)
    c.writeUInt16LE(20, 4)
    c.writeUInt16LE(20, 6)
    c.writeUInt16LE(deflate ? 8 : 0, 10)
    c.writeUInt32LE(crc, 16)
    c.writeUInt32LE(data.length, 20)
    c.writeUInt32LE(m.data.byteLength, 24)
    c.writeUInt16LE(name.length, 28)
    c.writeUInt32LE(offset, 42)
    central.push(c, name)
    parts.push(local, name, extra, data)
    offset += 30 + name.length + extra.length + data.length
  }
  const cd = Buffer.concat(central)
  const end = Buffer.alloc(22)
  end.writeUInt32LE(0x06054b50, 0)
  end.writeUInt16LE(members.length, 8)
  end.writeUInt16LE(members.length, 10)
  end.writeUInt32LE(cd.length, 12)
  end.writeUInt32LE(offset, 16)
  return Buffer.concat([...parts, cd, end])
}
