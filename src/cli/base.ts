/**
 * The base every command extends: `--json`, one-line errors with typed exit codes, progress
 * rendering, and clean-up of half-written outputs on Ctrl-C.
 */
import {rmSync} from 'node:fs'
import {Command, Errors} from '@oclif/core'
import {EXIT_CODES, OpenElmError} from '../errors.js'
import {type ProgressEvent} from '../formats/types.js'
import {removePendingTempsSync} from '../io/atomic.js'
import {resolveSource, type ResolvedSource} from '../hub/source.js'
import {downloadLine} from './download-progress.js'
import {ProgressRenderer} from './progress-render.js'
import {nearMiss} from '../model/config.js'

let signalsInstalled = false

/** What is on disk if the process is interrupted now, beyond the temps it removes (set by the command). */
let interruptState: string | undefined

/** The words Ctrl-C prints now: what it removed and what it leaves, nothing it did not do. */
export function interruptMessage(removed: readonly string[], state: string | undefined): string {
  const parts: string[] = []
  if (removed.length > 0) parts.push('partial output removed')
  if (state) parts.push(state)
  return `interrupted${parts.length > 0 ? `: ${parts.join('; ')}` : ''}`
}

/** The longest error line printed for a person (the full text is in --json). */
const MAX_ERROR_LINE = 2000

/** One line, control characters escaped, cut: what a hostile string can do to a terminal stays bounded. */
export function errorLine(message: string): string {
  const line = message.replace(/\r?\n/g, ' ').replace(/[\u0000-\u001f\u007f]/g, (c) => JSON.stringify(c).slice(1, -1))
  return line.length <= MAX_ERROR_LINE ? line : `${line.slice(0, MAX_ERROR_LINE)}… (${line.length} characters)`
}

/**
 * Resolve once everything written to `stream` so far has been handed to the OS: oclif ends an
 * error with process.exit, which would cut a large --json answer at the pipe's buffer (64 KiB).
 */
export function flushed(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.writableLength === 0) resolve()
    else stream.write('', () => resolve())
  })
}

function installSignalCleanup(): void {
  if (signalsInstalled) return
  signalsInstalled = true
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      const removed = removePendingTempsSync(rmSync)
      process.stderr.write(`\n${interruptMessage(removed, interruptState)}\n`)
      process.exit(signal === 'SIGINT' ? 130 : 143)
    })
  }
}

/** Flags whose values are names in any case: `--to MLX`, `--via GGUF,HF`, `--dtype Q4_0` mean the lower-case names. */
const FORMAT_VALUED = new Set(['--to', '--format', '--via', '--dtype', '--outtype'])

/** The argv with the values of those flags lower-cased (both `--to MLX` and `--to=MLX`). */
export function caseFoldFormatValues(argv: readonly string[]): string[] {
  return argv.map((token, i) => {
    const eq = token.indexOf('=')
    if (token.startsWith('--') && eq > 0 && FORMAT_VALUED.has(token.slice(0, eq))) return token.slice(0, eq + 1) + token.slice(eq + 1).toLowerCase()
    return i > 0 && FORMAT_VALUED.has(argv[i - 1]!) ? token.toLowerCase() : token
  })
}

export abstract class BaseCommand extends Command {
  static override enableJsonFlag = true

  protected override async init(): Promise<void> {
    await super.init()
    this.argv = caseFoldFormatValues(this.argv)
    installSignalCleanup()
  }

  /** Say what Ctrl-C would leave from here on (e.g. a complete output not yet verified); no text clears it. */
  protected interruptLeaves(state?: string): void {
    interruptState = state
  }

  /** Show progress when a person is watching: a TTY and no --json. */
  protected get showProgress(): boolean {
    return Boolean(process.stdout.isTTY) && !this.jsonEnabled()
  }

  private renderer: ProgressRenderer | undefined

  /** The one progress renderer of this command (src/cli/progress-render.ts); silent unless showProgress. */
  protected get progress(): ProgressRenderer {
    this.renderer ??= new ProgressRenderer({enabled: this.showProgress})
    return this.renderer
  }

  /** Start a phase of a long operation, shown with a spinner (a person watching only); no label ends it. */
  protected phase(label?: string): void {
    this.progress.phase(label)
  }

  /** Drain a library generator, rendering its events; returns the generator's result. */
  protected async drain<T>(events: AsyncGenerator<ProgressEvent, T>): Promise<T> {
    let failed = true
    try {
      for (;;) {
        const step = await events.next()
        if (step.done) {
          failed = false
          return step.value
        }
        const event = step.value
        if (event.type === 'note') {
          if (this.progress.enabled) this.progress.log(`note: ${event.message}`)
          else if (!this.jsonEnabled()) this.logToStderr(`note: ${event.message}`)
        } else this.progress.event(event)
      }
    } finally {
      this.progress.stop(failed)
    }
  }

  /**
   * A source argument as a local path: a local path as it is; a Hub repo id (`owner/name`, with
   * the hubSourceFlags) or a checkpoint URL downloaded into the Hugging Face cache first, with a
   * progress line on a TTY.
   */
  protected async localSource(spec: string, flags: {revision?: string; token?: string; endpoint?: string}): Promise<ResolvedSource> {
    const events = resolveSource(spec, {revision: flags.revision, token: flags.token, endpoint: flags.endpoint})
    let shown = false
    try {
      for (;;) {
        const step = await events.next()
        if (step.done) {
          const repo = step.value.repo
          if (repo && repo.downloaded.length > 0 && !this.jsonEnabled()) this.logToStderr(`note: ${repo.repo}@${repo.sha.slice(0, 12)}: downloaded ${repo.downloaded.length} of ${repo.files.length} files into ${repo.path}`)
          return step.value
        }
        if (this.showProgress) {
          process.stderr.write(`\r\x1b[2K${downloadLine(step.value)}${step.value.done ? '\n' : ''}`)
          shown = !step.value.done
        }
      }
    } finally {
      if (shown) process.stderr.write('\n')
    }
  }

  protected override async catch(error: Error & {exitCode?: number; oclif?: {exit?: number}}): Promise<unknown> {
    // A phase still live ends as stopped, on its own line, before the error's line.
    this.renderer?.stop(true)
    if (error instanceof OpenElmError) {
      const code = EXIT_CODES[error.kind]
      if (this.jsonEnabled()) this.logJson({error: {...error.details, kind: error.kind, code: error.code, message: error.message}})
      this.logToStderr(`Error: ${errorLine(error.message)}`)
      await Promise.all([flushed(process.stdout), flushed(process.stderr)])
      this.exit(code)
    }
    if (error instanceof Errors.ExitError) throw error
    // oclif's own parse errors (unknown flag, missing arg) are already one line.
    if (error.oclif?.exit !== undefined || error instanceof Errors.CLIError) {
      const lines = error.message.split('\n').map((l) => l.trim()).filter((l) => l && !/^The following errors? occurred:?$/.test(l) && !/^See more help with/.test(l))
      const unknown = /^Nonexistent flags?: --([\w-]+)/.exec(lines[0] ?? '')
      const known = Object.entries((this.constructor as {flags?: Record<string, {aliases?: string[]}>}).flags ?? {}).flatMap(([n, f]) => [n, ...(f.aliases ?? [])])
      const near = unknown ? nearMiss(unknown[1], known) : undefined
      if (near) lines[0] += ` (did you mean --${near}?)`
      this.logToStderr(`Error: ${lines.join('; ')} (see ${this.config.bin} ${this.id ?? ''} --help)`.replace(/ +\(see/, ' (see').replace(/  +/g, ' '))
      this.exit(2)
    }
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOSPC' || code === 'EACCES' || code === 'EROFS' || code === 'ENOENT') {
      this.logToStderr(`Error: ${errorLine(error.message)}`)
      await flushed(process.stderr)
      this.exit(EXIT_CODES.io)
    }
    // Unexpected: still one line, with a hint to report it.
    this.logToStderr(`Error: internal error: ${errorLine(error.message)} (please report this; set OPENELM_DEBUG=1 for a stack trace)`)
    if (process.env.OPENELM_DEBUG) this.logToStderr(error.stack ?? '')
    await Promise.all([flushed(process.stdout), flushed(process.stderr)])
    this.exit(1)
  }
}
