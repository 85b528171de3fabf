/**
 * A `--require` preload for bench runs (bench/run.ts sets it through NODE_OPTIONS): records each
 * thread's CPU seconds (utime + stime from /proc/self/task/<tid>/stat, sampled every 100 ms because
 * a finished worker's task disappears) and writes them at exit to the file in
 * OPENELM_BENCH_THREAD_CPU as {main, others}: the main thread's seconds, and every other thread's
 * (pool workers, V8's helpers, libuv's I/O threads). The main thread's share bounds how far more
 * workers can scale a path: wall ≥ max(main, total / cores).
 */
'use strict'
const fs = require('node:fs')
const {isMainThread} = require('node:worker_threads')

const file = process.env.OPENELM_BENCH_THREAD_CPU
if (file && isMainThread) {
  const ticksPerSecond = 100 // USER_HZ on Linux
  const seen = new Map()
  const sample = () => {
    let tids
    try {
      tids = fs.readdirSync('/proc/self/task')
    } catch {
      return
    }
    for (const tid of tids) {
      try {
        const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
        const ticks = Number(fields[11]) + Number(fields[12])
        if (ticks > (seen.get(tid) ?? -1)) seen.set(tid, ticks)
      } catch {
        // The thread ended between the listing and the read: its last sample stands.
      }
    }
  }
  setInterval(sample, 100).unref()
  process.on('exit', () => {
    sample()
    const main = (seen.get(String(process.pid)) ?? 0) / ticksPerSecond
    let others = 0
    for (const [tid, ticks] of seen) if (tid !== String(process.pid)) others += ticks / ticksPerSecond
    try {
      fs.writeFileSync(file, JSON.stringify({main, others}))
    } catch {
      // A bench aid: never fail the measured command.
    }
  })
}
