/**
 * Hub source case: the shared 270M f32 HF folder served by the local Hub server (the test helper,
 * on 127.0.0.1, in this untimed bench process), and `convert apple/OpenELM-270M --to mlx` timed
 * from an empty HF cache: download into the HF cache layout + conversion, against `cp` of the
 * source folder. The cache is emptied before every timed run so each one downloads.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
import {HubServer, startHubServer} from '../../test/helpers/hub-server.js'
import {cpOf, ensureHf270, hf270} from '../sources.js'
import {type BenchCase, type BenchContext} from '../types.js'

let server: HubServer | undefined
const REPO = 'apple/OpenELM-270M'
const home = (ctx: BenchContext) => path.join(ctx.work, 'hf-home-hub')
const out = (ctx: BenchContext) => path.join(ctx.work, 'out-hub-270M-mlx')
const cp = (ctx: BenchContext) => path.join(ctx.work, 'cp-hub-270M')

export const cases: BenchCase[] = [
  {
    name: 'hub/270M-to-mlx',
    description: `convert ${REPO} --to mlx from the local Hub server on 127.0.0.1 (empty HF cache: downloads 1.09 GB into it, then converts)`,
    async setup(ctx) {
      await ensureHf270(ctx)
      server = await startHubServer({token: 'hf_bench'})
      server.unref()
      const files = new Map<string, Buffer>()
      for (const name of await fs.readdir(hf270(ctx))) files.set(name, await fs.readFile(path.join(hf270(ctx), name)))
      server.publish(REPO, files)
    },
    async beforeEach(ctx) {
      await ctx.remove(home(ctx))
    },
    command: (ctx) => ['env', `HF_ENDPOINT=${server!.url}`, `HF_HOME=${home(ctx)}`, ...ctx.cli, 'convert', REPO, '--to', 'mlx', '--out', out(ctx)],
    baseline: (ctx) => cpOf(ctx, hf270(ctx), path.basename(cp(ctx))),
    outputs: (ctx) => [out(ctx), cp(ctx)],
    bytes: (ctx) => ctx.sizeOf(hf270(ctx)),
    targets: {rssMB: 300},
    cleanup: (ctx) => [home(ctx)],
  },
]
