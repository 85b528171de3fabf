/**
 * Record what a command draws on a terminal, as text: runs it under a pseudo-terminal
 * (test/helpers/pty.ts), then prints the final screen (what stays after every \r redraw) and a
 * timeline of the live line, one sample per `--every` seconds, with the longest silence.
 *
 *   tsx scripts/screen-capture.ts [--every 5] -- openelm convert X --to mlx --quantize 4 --verify --out Y
 */
import path from 'node:path'
import {longestSilence, runUnderPty, type PtyRun} from '../test/helpers/pty.js'

const repo = path.resolve(import.meta.dirname, '..')

/** The terminal's lines after `text`: \r\x1b[2K clears the line, \r\n ends it. */
export function screenOf(text: string): {lines: string[]; live: string} {
  const lines: string[] = []
  let live = ''
  for (const part of text.split(/(\r\n|\r\x1b\[2K|\r)/)) {
    if (part === '\r\n') {
      lines.push(live)
      live = ''
    } else if (part === '\r\x1b[2K' || part === '\r') live = ''
    else live += part
  }
  return {lines, live}
}

function timeline(run: PtyRun, everyMs: number): string[] {
  const rows: string[] = []
  let text = ''
  let next = 0
  for (const chunk of run.chunks) {
    text += chunk.text
    if (chunk.ms < next) continue
    const {lines, live} = screenOf(text)
    const shown = live || lines.at(-1) || ''
    rows.push(`${(chunk.ms / 1000).toFixed(1).padStart(6)}s  ${shown}`)
    next = chunk.ms + everyMs
  }
  return rows
}

const argv = process.argv.slice(2)
const dash = argv.indexOf('--')
const options = argv.slice(0, dash < 0 ? 0 : dash)
const command = argv.slice(dash + 1)
const every = Number(options[options.indexOf('--every') + 1] ?? 5)
if (command[0] === 'openelm') command.splice(0, 1, process.execPath, '--import', 'tsx', path.join(repo, 'bin/dev.js'))
const run = await runUnderPty(command, {cwd: process.cwd(), columns: 110, timeoutMs: 3_600_000})
const silence = longestSilence(run)
const first = run.chunks[0]?.ms ?? run.ms
console.log(`exit ${run.code} after ${(run.ms / 1000).toFixed(1)} s; first output at ${(first / 1000).toFixed(1)} s; ${run.chunks.length} screen updates; longest silence after that ${(silence.ms / 1000).toFixed(2)} s, after ${JSON.stringify(silence.after.slice(-80))}`)
console.log('\n--- final screen ---')
console.log(screenOf(run.text.endsWith('\r\n') ? run.text : `${run.text}\r\n`).lines.join('\n'))
console.log(`\n--- live line, sampled every ${every} s ---`)
console.log(timeline(run, every * 1000).join('\n'))
