/**
 * Hostile and broken `.pt` files, built byte by byte next to a valid control: each is refused with
 * a one-line typed error, in bounded time and memory, and nothing in them is ever executed.
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {promises as fs, existsSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {FormatError} from '../src/errors.js'
import {openCheckpoint} from '../src/formats/registry.js'
import {openTorchArchive} from '../src/formats/corenet/read.js'
import {MAX_DEPTH, MAX_EXPANDED_NODES, unpickle} from '../src/formats/corenet/unpickle.js'
import {ZipReader, ZipWriter} from '../src/formats/corenet/zip.js'

const repo = path.resolve(import.meta.dirname, '..')
const fixture = path.join(repo, 'fixtures', 'corenet', 'state_dict_f32.pt')
let work: string

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-hostile-'))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

const op = (s: string) => Buffer.from(s, 'latin1')
function u32(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(n)
  return b
}
function binunicode(s: string): Buffer {
  return Buffer.concat([op('X'), u32(Buffer.byteLength(s)), Buffer.from(s)])
}

/** A torch-style archive around arbitrary data.pkl bytes (plus storage records). */
async function archive(name: string, pkl: Uint8Array, records: Record<string, Uint8Array> = {}): Promise<string> {
  const file = path.join(work, `${name}.pt`)
  const zip = await ZipWriter.create(file)
  await zip.record('archive/data.pkl', pkl)
  for (const [k, v] of Object.entries(records)) await zip.record(`archive/data/${k}`, v)
  await zip.record('archive/version', op('3\n'))
  await zip.finish()
  return file
}

/** Open it and return the error, checking the error contract on the way. */
async function refusal(file: string): Promise<FormatError> {
  const before = process.memoryUsage().rss
  const start = performance.now()
  let caught: unknown
  try {
    const c = await openCheckpoint(file)
    await c.close()
  } catch (error) {
    caught = error
  }
  expect(caught).toBeInstanceOf(FormatError)
  const error = caught as FormatError
  expect(error.message).not.toContain('\n')
  expect(performance.now() - start).toBeLessThan(5000)
  expect(process.memoryUsage().rss - before).toBeLessThan(200 * 1024 * 1024)
  return error
}

/** os.system('touch MARKER') as pickle.dumps(obj, protocol=2) writes it for a __reduce__ exploit. */
function systemPayload(marker: string): Buffer {
  return Buffer.concat([op('\x80\x02cposix\nsystem\nq\x00'), binunicode(`touch ${marker}`), op('q\x01\x85q\x02Rq\x03.')])
}

describe('hostile pickles', () => {
  it('a __reduce__ calling os.system is refused, naming it, and runs nothing', async () => {
    // Control: the payload is live — CPython's own unpickler runs it.
    const live = path.join(work, 'control-marker')
    execFileSync('/usr/bin/python3', ['-c', 'import pickle,sys; pickle.loads(open(sys.argv[1],"rb").read())', await archivePayload('control', live)])
    expect(existsSync(live)).toBe(true)
    const marker = path.join(work, 'marker')
    const error = await refusal(await archive('system', systemPayload(marker)))
    expect(error.code).toBe('pickle.global')
    expect(error.message).toMatch(/refusing global posix\.system/)
    expect(existsSync(marker)).toBe(false)
  })

  it('GLOBAL builtins.eval is refused', async () => {
    const pkl = Buffer.concat([op('\x80\x02cbuiltins\neval\n'), binunicode('1+1'), op('\x85R.')])
    expect((await refusal(await archive('eval', pkl))).message).toMatch(/refusing global builtins\.eval/)
  })

  it('STACK_GLOBAL builtins.eval (protocol 4) is refused', async () => {
    const pkl = op('\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x031+1\x85R.')
    expect((await refusal(await archive('stack-eval', pkl))).message).toMatch(/refusing global builtins\.eval/)
  })

  it('INST and OBJ are refused, naming the opcode', async () => {
    const inst = op("\x80\x02(S'touch x'\nios\nsystem\n.")
    const e1 = await refusal(await archive('inst', inst))
    expect(e1.code).toBe('pickle.refused_opcode')
    expect(e1.message).toMatch(/INST \(os\.system\)/)
    const obj = op('\x80\x02(ccollections\nOrderedDict\no.')
    expect((await refusal(await archive('obj', obj))).message).toMatch(/refusing opcode OBJ/)
    const newobj = op('\x80\x02ccollections\nOrderedDict\n)\x81.')
    expect((await refusal(await archive('newobj', newobj))).message).toMatch(/refusing opcode NEWOBJ/)
  })

  it('a storage key pointing outside the archive is refused', async () => {
    const tensor = (key: string) => Buffer.concat([
      op('\x80\x02}(X\x01\x00\x00\x00actorch._utils\n_rebuild_tensor_v2\n(('),
      binunicode('storage'), op('ctorch\nFloatStorage\n'), binunicode(key), binunicode('cpu'),
      op('K\x02tQK\x00K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRu.'),
    ])
    const escape = await refusal(await archive('escape', tensor('../../etc/passwd'), {'0': new Uint8Array(8)}))
    expect(escape.code).toBe('pickle.persistent_id')
    expect(escape.message).toContain('"../../etc/passwd"')
    const missing = await refusal(await archive('missing', tensor('7'), {'0': new Uint8Array(8)}))
    expect(missing.message).toMatch(/storage "7" has no record archive\/data\/7/)
    // Control: the same pickle over a real record is read.
    const ok = await openTorchArchive(await archive('ok', tensor('0'), {'0': new Uint8Array(8)}))
    expect(ok.storages.get('0')!.numel).toBe(2)
    await ok.zip.close()
    // A view reaching past its storage.
    const past = Buffer.from(tensor('0'))
    past[past.indexOf(op('K\x00K\x02\x85'))+1] = 1
    expect((await refusal(await archive('past', past, {'0': new Uint8Array(8)}))).message).toMatch(/reaches element 2 of a storage with 2 elements/)
  })

  it('deep nesting is refused (marks and containers)', async () => {
    const marks = Buffer.concat([op('\x80\x02'), Buffer.alloc(100_000, '('.charCodeAt(0))])
    expect((await refusal(await archive('marks', marks))).code).toBe('pickle.depth')
    const lists = Buffer.concat([op('\x80\x02'), Buffer.alloc(100_000, ']'.charCodeAt(0)), Buffer.alloc(99_999, 'a'.charCodeAt(0)), op('.')])
    const e = await refusal(await archive('lists', lists))
    expect(e.code).toBe('pickle.depth')
    expect(e.message).toContain(`deeper than ${MAX_DEPTH}`)
  })

  it('a billion-laughs pickle (shared references) is refused quickly', async () => {
    // Level 0 is a list of 10 strings; each next level is a list of 10 references to the previous.
    const parts: Buffer[] = [op('\x80\x02](')]
    for (let i = 0; i < 10; i++) parts.push(binunicode('lol'))
    parts.push(op('eq\x000'))
    for (let level = 1; level <= 9; level++) {
      parts.push(op('](' + `h${String.fromCharCode(level - 1)}`.repeat(10) + 'e'), op(`q${String.fromCharCode(level)}`), op(level < 9 ? '0' : ''))
    }
    parts.push(op('.'))
    const e = await refusal(await archive('laughs', Buffer.concat(parts)))
    expect(e.code).toBe('pickle.bomb')
    expect(e.message).toContain(String(MAX_EXPANDED_NODES))
  })

  it('huge declared lengths and repeat counts are refused without allocating', () => {
    const cases: [string, Buffer][] = [
      ['BINUNICODE', Buffer.concat([op('\x80\x02X'), u32(0xfffffff0), op('abc')])],
      ['LONG4', Buffer.concat([op('\x80\x02\x8b'), u32(0x7fffffff), op('.')])],
      ['BINBYTES8', op('\x80\x04\x8e\xff\xff\xff\xff\xff\xff\x00\x00.')],
      ['no STOP', op('\x80\x02]')],
      ['cycle', op('\x80\x02]q\x00h\x00a.')],
    ]
    for (const [what, bytes] of cases) {
      let caught: unknown
      try {
        unpickle(bytes)
      } catch (error) {
        caught = error
      }
      expect(caught, what).toBeInstanceOf(FormatError)
      expect((caught as Error).message).not.toContain('\n')
    }
  })
})

/** The control payload as a bare pickle file (for CPython's unpickler). */
async function archivePayload(name: string, marker: string): Promise<string> {
  const file = path.join(work, `${name}.pkl`)
  await fs.writeFile(file, systemPayload(marker))
  return file
}

describe('broken ZIP containers', () => {
  it('the control fixture opens', async () => {
    const zip = await ZipReader.open(fixture)
    expect(zip.entries.has('state_dict_f32/data.pkl')).toBe(true)
    await zip.close()
  })

  it('a truncated archive is refused at every cut', async () => {
    const bytes = await fs.readFile(fixture)
    for (const cut of [10, 1000, Math.floor(bytes.byteLength / 2), bytes.byteLength - 30, bytes.byteLength - 1]) {
      const file = path.join(work, `cut-${cut}.pt`)
      await fs.writeFile(file, bytes.subarray(0, cut))
      const e = await refusal(file)
      expect(e.code, `cut at ${cut}`).toMatch(/^zip\./)
    }
  })

  it('overlapping records are refused', async () => {
    const file = await archive('overlap-src', op('\x80\x02}.'), {'0': new Uint8Array(64)})
    const bytes = Buffer.from(await fs.readFile(file))
    // Grow the first central-directory entry's sizes so its data runs over the next record.
    const cd = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]))
    bytes.writeUInt32LE(200, cd + 20)
    bytes.writeUInt32LE(200, cd + 24)
    const bad = path.join(work, 'overlap.pt')
    await fs.writeFile(bad, bytes)
    const e = await refusal(bad)
    expect(e.code).toBe('zip.overlap')
    expect(e.message).toMatch(/records "archive\/data.pkl" and "archive\/data\/0" overlap/)
  })

  it('a corrupted data.pkl fails its CRC', async () => {
    const bytes = Buffer.from(await fs.readFile(fixture))
    bytes[100] ^= 0xff
    const bad = path.join(work, 'crc.pt')
    await fs.writeFile(bad, bytes)
    expect((await refusal(bad)).code).toBe('zip.crc')
  })

  it('the CLI prints one line and exits non-zero on a hostile file', async () => {
    const marker = path.join(work, 'cli-marker')
    const file = await archive('cli-system', systemPayload(marker))
    const r = spawnSync(path.join(repo, 'bin', 'dev.js'), ['inspect', file], {cwd: repo, encoding: 'utf8'})
    expect(r.status).toBe(3)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stderr).toMatch(/^Error: .*refusing global posix\.system/)
    expect(existsSync(marker)).toBe(false)
  })
})

describe('other torch files', () => {
  it('a legacy (non-ZIP) torch.save file is named as such', async () => {
    const file = path.join(work, 'legacy.pt')
    execFileSync('/usr/bin/python3', ['-c', 'import sys, torch; torch.save({"a": torch.ones(2)}, sys.argv[1], _use_new_zipfile_serialization=False)', file])
    const e = await refusal(file)
    expect(e.code).toBe('corenet.legacy_format')
  })
})
