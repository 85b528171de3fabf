/**
 * ZIP64: archives past 4 GiB, written by us and by real torch.save, read by the other side.
 * Writes ~8.6 GB of (zero) data and needs ~5 GB of RAM in PyTorch, so it runs only when
 * OPENELM_TEST_ZIP64=1 (the benchmark's 1.1B f32 file also crosses 4 GiB).
 */
import {execFileSync} from 'node:child_process'
import {promises as fs} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {openTorchArchive, tensorRecord} from '../src/formats/corenet/read.js'
import {planTorchSave, writeTorchArchive} from '../src/formats/corenet/write.js'
import {PyDict, TorchTensor} from '../src/formats/corenet/values.js'
import {type TensorRecord} from '../src/tensor/record.js'
import {drain} from '../src/progress.js'

const BIG = 4_300_000_000
const PY = '/usr/bin/python3'
let work: string

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'openelm-zip64-'))
})
afterAll(async () => {
  await fs.rm(work, {recursive: true, force: true})
})

describe.skipIf(process.env.OPENELM_TEST_ZIP64 !== '1')('ZIP64 (> 4 GiB)', () => {
  it('a > 4 GiB archive we write loads in PyTorch; the record after 4 GiB is exact', async () => {
    const zeros: TensorRecord = {
      name: 'big', dtype: 'U8', shape: [BIG], byteLength: BIG,
      read: async (start = 0, end = BIG) => new Uint8Array(end - start),
    }
    const small = new Float32Array([1.5, -2, 3.25, 4])
    const smallRecord: TensorRecord = {name: 'small', dtype: 'F32', shape: [4], byteLength: 16, read: async (s = 0, e = 16) => new Uint8Array(small.buffer).subarray(s, e)}
    const dict = new PyDict(true)
    for (const r of [zeros, smallRecord]) {
      dict.map.set(r.name, new TorchTensor({key: '', dtype: r.dtype, numel: r.shape[0]!, location: 'cpu', source: {record: r}}, 0, [...r.shape], [1], false, false))
    }
    const file = path.join(work, 'ours.pt')
    const bytes = await drain(writeTorchArchive(file, 'ours', planTorchSave(dict)))
    expect(bytes).toBeGreaterThan(BIG)
    const out = execFileSync(PY, ['-c', `
import sys, zipfile, torch, json
z = zipfile.ZipFile(sys.argv[1])
infos = {i.filename: [i.header_offset, i.file_size] for i in z.infolist()}
sd = torch.load(sys.argv[1], weights_only=True)
print(json.dumps({'infos': infos, 'small': sd['small'].tolist(), 'big': list(sd['big'].shape), 'tail': int(sd['big'][-1000:].sum()), 'crc': z.testzip()}))
`, file], {encoding: 'utf8', maxBuffer: 1 << 20})
    const r = JSON.parse(out) as {infos: Record<string, [number, number]>; small: number[]; big: number[]; tail: number; crc: string | null}
    expect(r.small).toEqual([1.5, -2, 3.25, 4])
    expect(r.big).toEqual([BIG])
    expect(r.tail).toBe(0)
    expect(r.crc).toBeNull()
    expect(r.infos['ours/data/1']![0]).toBeGreaterThan(2 ** 32)
    expect(r.infos['ours/data/0']![1]).toBe(BIG)
    // And our reader reads it back.
    const archive = await openTorchArchive(file)
    try {
      const t = (archive.value as PyDict).get('small') as TorchTensor
      expect(Array.from(new Float32Array((await tensorRecord('small', t).read()).slice().buffer))).toEqual([1.5, -2, 3.25, 4])
    } finally {
      await archive.zip.close()
    }
    await fs.rm(file)
  }, 600_000)

  it('a > 4 GiB archive written by torch.save reads exactly', async () => {
    const file = path.join(work, 'torch.pt')
    execFileSync(PY, ['-c', `
import sys, torch
torch.save({'a': torch.zeros(${BIG}, dtype=torch.uint8), 'b': torch.arange(4, dtype=torch.float32) + 0.5}, sys.argv[1])
`, file])
    const archive = await openTorchArchive(file)
    try {
      const top = archive.value as PyDict
      const a = top.get('a') as TorchTensor
      const b = top.get('b') as TorchTensor
      expect(a.shape).toEqual([BIG])
      expect(Array.from(new Float32Array((await tensorRecord('b', b).read()).slice().buffer))).toEqual([0.5, 1.5, 2.5, 3.5])
      const tail = await tensorRecord('a', a).read(BIG - 16, BIG)
      expect(Array.from(tail)).toEqual(new Array(16).fill(0))
    } finally {
      await archive.zip.close()
    }
  }, 600_000)
})
