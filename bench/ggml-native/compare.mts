/**
 * Our GGUF quantizers against ggml's own C (bench/ggml-native/ggml-quantize, built by build.sh): the
 * same f32 values (the prefix of a one-file safetensors model), block for block, and the time of each.
 *
 *   npx tsx bench/ggml-native/compare.mts BIN_DIR SAFETENSORS [MB] [THREADS]
 *
 * For every build in BIN_DIR (strict, gcc-fma, clang-fma) and type: the blocks that differ from ours.
 * Then ggml's quantizer time on 1 and THREADS threads (the strict build) beside ours in one thread.
 */
import {execFileSync} from 'node:child_process'
import {existsSync, openSync, readFileSync, readSync, rmSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {SCHEMES} from '../../src/quant/index.js'

const [binDir, model, mbText = '64', threadsText = '2'] = process.argv.slice(2)
if (!binDir || !model) throw new Error('usage: compare.mts BIN_DIR SAFETENSORS [MB] [THREADS]')
const bytes = Number(mbText) * 1024 * 1024
const fd = openSync(model, 'r')
const head = Buffer.alloc(8)
readSync(fd, head, 0, 8, 0)
const data = new Uint8Array(bytes)
readSync(fd, data, 0, bytes, 8 + Number(head.readBigUInt64LE(0)))
const values = new Float32Array(data.buffer)
const types = ['q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'q8_0', 'q4_0'] as const
const blockBytes: Record<(typeof types)[number], number> = {q2_k: 84, q3_k: 110, q4_k: 144, q5_k: 176, q6_k: 210, q8_0: 34, q4_0: 18}
const builds = ['strict', 'gcc-fma', 'clang-fma'].filter((b) => existsSync(path.join(binDir, `ggml-quantize-${b}`)))
const out = path.join(os.tmpdir(), `ggml-native-${process.pid}.bin`)

console.log(`${(bytes / 2 ** 20).toFixed(0)} MiB of f32 from ${model}; builds: ${builds.join(', ')}`)
console.log('| type | ours, 1 thread | ggml strict, 1 thread | ggml strict, ' + threadsText + ' threads | ' + builds.map((b) => `blocks differing from ours: ${b}`).join(' | ') + ' |')
console.log('|---|---:|---:|---:|' + builds.map(() => '---:|').join(''))
for (const type of types) {
  const t0 = performance.now()
  const ours = SCHEMES[`gguf_${type}`]!.encode(values, values.length / 4096, 4096, {}).blocks!
  const oursMBps = bytes / 1e3 / (performance.now() - t0)
  const size = blockBytes[type]
  const differing: string[] = []
  const timed: Record<string, number> = {}
  for (const build of builds) {
    const bin = path.join(binDir, `ggml-quantize-${build}`)
    const report = JSON.parse(execFileSync(bin, ['time', model, type, '1', String(bytes), out], {encoding: 'utf8'})) as {MBps: number}
    if (build === 'strict') {
      timed.one = report.MBps
      timed.many = (JSON.parse(execFileSync(bin, ['time', model, type, threadsText, String(bytes)], {encoding: 'utf8'})) as {MBps: number}).MBps
    }
    const theirs = readFileSync(out)
    if (theirs.length !== ours.length) throw new Error(`${type} ${build}: ${theirs.length} bytes, ours ${ours.length}`)
    let n = 0
    for (let o = 0; o < theirs.length; o += size) if (Buffer.compare(theirs.subarray(o, o + size), Buffer.from(ours.buffer, ours.byteOffset + o, size)) !== 0) n++
    differing.push(`${n} of ${theirs.length / size} (${((100 * n) / (theirs.length / size)).toFixed(2)} %)`)
  }
  console.log(`| ${type} | ${oursMBps.toFixed(0)} MB/s | ${timed.one ?? '–'} MB/s | ${timed.many ?? '–'} MB/s | ${differing.join(' | ')} |`)
}
rmSync(out, {force: true})
