/** Renders `push` events: notes and retries on stderr, a progress bar per large LFS file on a TTY. */
import cliProgress from 'cli-progress'
import {type PushEvent, type PushPhase} from '../hub/push.js'
import {duration} from './download-progress.js'
import {bytes} from './render.js'

/** Files at least this big get their own progress bar; smaller ones only show in the summary. */
export const BAR_MIN_BYTES = 8 * 1024 * 1024

const PHASE_LABELS: Record<PushPhase, string> = {
  authenticating: 'checking the token',
  'creating-repo': 'creating the repo (if missing)',
  'creating-branch': 'creating the branch (if missing)',
  preuploading: 'asking the Hub how to store each file',
  uploading: 'uploading large files (LFS)',
  committing: 'committing',
}

/** ` | 12.50 MiB/s ETA 8s` once a rate is measurable, else nothing. */
export function rateAndEta(done: number, total: number, ms: number): string {
  if (ms < 500 || done <= 0) return ''
  const rate = done / (ms / 1000)
  return ` | ${bytes(rate)}/s${done < total ? ` ETA ${duration((total - done) / rate)}` : ''}`
}

export class PushRenderer {
  private multi: cliProgress.MultiBar | undefined
  private readonly bars = new Map<string, {bar: cliProgress.SingleBar; started: number}>()

  constructor(
    private readonly options: {progress: boolean; quiet: boolean; log: (line: string) => void},
  ) {}

  handle(event: PushEvent): void {
    if (event.type === 'note' || event.type === 'retry') {
      if (!this.options.quiet) this.write(`${event.type === 'retry' ? 'retry' : 'note'}: ${event.message}`)
      return
    }
    if (!this.options.progress) return
    if (event.type === 'phase') this.write(`${PHASE_LABELS[event.phase]}...`)
    else if (event.type === 'file' && event.bytes >= BAR_MIN_BYTES) {
      this.multi ??= new cliProgress.MultiBar({format: '{label} [{bar}] {percentage}% | {done}/{size}{speed} | {name}', hideCursor: true, clearOnComplete: false}, cliProgress.Presets.shades_classic)
      let entry = this.bars.get(`${event.state}:${event.path}`)
      if (!entry) {
        entry = {bar: this.multi.create(event.bytes, 0, {label: event.state === 'hashing' ? 'hash  ' : 'upload', name: event.path, size: bytes(event.bytes), done: bytes(0), speed: ''}), started: performance.now()}
        this.bars.set(`${event.state}:${event.path}`, entry)
      }
      entry.bar.update(event.bytesDone, {done: bytes(event.bytesDone), speed: rateAndEta(event.bytesDone, event.bytes, performance.now() - entry.started)})
    }
  }

  private write(line: string): void {
    if (this.multi) this.multi.log(`${line}\n`)
    else this.options.log(line)
  }

  stop(): void {
    this.multi?.stop()
  }
}
