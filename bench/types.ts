/**
 * The benchmark case interface. A case file in `bench/cases/*.ts` exports `cases: BenchCase[]`;
 * `npm run bench` runs every case (or those matching `--only <pattern>`), each timed as a child
 * process under `/usr/bin/time -v` against a `cp` of the same bytes in the same run.
 */

export interface BenchContext {
  /** Repository root (commands run here). */
  root: string
  /** Scratch folder for this run's inputs and outputs (`/tmp/bench-<owner>`); cases share it. */
  work: string
  /** argv prefix that runs the built CLI: `[node, <root>/bin/run.js]`. */
  cli: string[]
  /** Run a command untimed (for setup), inheriting stderr; throws on a non-zero exit. */
  exec(argv: string[]): Promise<void>
  /** Total size in bytes of the files under `p` (a file or a folder). */
  sizeOf(p: string): Promise<number>
  /** Remove a file or folder (no error when absent). */
  remove(p: string): Promise<void>
  /** Whether `p` exists. */
  exists(p: string): Promise<boolean>
}

export interface BenchCase {
  /** Unique, stable name (rows in RESULTS.md are keyed by it), e.g. `found/convert-hf-bf16`. */
  name: string
  /** One line for the results table. */
  description: string
  /** Untimed preparation (e.g. synth the source model); may reuse what an earlier case left in `work`. */
  setup?(ctx: BenchContext): Promise<void>
  /** Untimed, before every timed run of the command (e.g. remove what the previous run wrote). */
  beforeEach?(ctx: BenchContext): Promise<void>
  /** The timed command (argv). */
  command(ctx: BenchContext): string[]
  /** The baseline: a `cp` of the same files, timed the same way (argv). */
  baseline?(ctx: BenchContext): string[]
  /** What the baseline is, for the table (default `cp`; e.g. `PyTorch CPU` for the engine case). */
  baselineName?: string
  /** Tokens processed by the command and by the baseline: the table shows tokens/s for both. */
  tokens?: number
  /** Paths the command and the baseline create: removed before each timed run and afterwards. */
  outputs(ctx: BenchContext): string[]
  /** Bytes the command moves (usually the source size), for MB/s. */
  bytes(ctx: BenchContext): Promise<number>
  /** What counts as a pass (DESIGN §7: ratio ≤ 1.25, peak RSS ≤ 300 MB). */
  targets?: {ratio?: number; rssMB?: number}
  /** Paths to remove when the whole run ends (unless `--keep`). */
  cleanup?(ctx: BenchContext): string[]
}

export interface Measurement {
  wallSeconds: number
  /** User + system CPU seconds: on a shared machine, what the command itself cost. */
  cpuSeconds: number
  maxRssKB: number
  exitCode: number
  /** The main thread's CPU seconds, for Node commands (bench/thread-cpu.cjs): what more workers cannot spread. */
  mainCpuSeconds?: number
}
