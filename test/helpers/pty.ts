/**
 * Run a command under a pseudo-terminal (util-linux `script`), as a person at a terminal would,
 * and note when each chunk of what it draws arrives: the progress tests assert on the gaps.
 */
import {spawn} from 'node:child_process'

export interface ScreenChunk {
  /** Milliseconds since the command was started. */
  ms: number
  text: string
}

export interface PtyRun {
  chunks: ScreenChunk[]
  /** Everything drawn, in order. */
  text: string
  code: number | null
  /** When the command exited, in ms since its start. */
  ms: number
}

/** A word for sh -c, quoted. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`
}

/** Run `argv` with stdout and stderr on a pty `columns` wide; stdin is not read. */
export function runUnderPty(argv: string[], options: {cwd: string; columns?: number; timeoutMs?: number; env?: NodeJS.ProcessEnv}): Promise<PtyRun> {
  const command = `stty cols ${options.columns ?? 120} rows 40; exec ${argv.map(shellWord).join(' ')}`
  const start = performance.now()
  // -q: no banner; -f: flush each write at once (the timing is the point); -e: the child's exit code.
  const child = spawn('script', ['-qfec', command, '/dev/null'], {cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env})
  const chunks: ScreenChunk[] = []
  child.stdout.on('data', (data: Buffer) => chunks.push({ms: performance.now() - start, text: data.toString('utf8')}))
  child.stderr.on('data', (data: Buffer) => chunks.push({ms: performance.now() - start, text: data.toString('utf8')}))
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000)
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({chunks, text: chunks.map((c) => c.text).join(''), code, ms: performance.now() - start})
    })
  })
}

/** The longest stretch without a screen change, from the first chunk to the exit. */
export function longestSilence(run: PtyRun): {ms: number; after: string} {
  let longest = {ms: 0, after: ''}
  const times = [...run.chunks.map((c) => c.ms), run.ms]
  for (let i = 1; i < times.length; i++) {
    const gap = times[i]! - times[i - 1]!
    if (gap > longest.ms) longest = {ms: gap, after: run.chunks[i - 1]!.text}
  }
  return longest
}
