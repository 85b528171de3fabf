/**
 * Start-up (issue 15): `openelm --help` and `inspect` of the shared 270M folder, each against a bare
 * `node -e 0` in the same run. With oclif.manifest.json (built with dist/) neither imports the other
 * commands' modules; protobufjs / onnx-proto, onnxruntime, node-llama-cpp and transformers.js load
 * only when a command uses them. Targets (issue 15): --help ≤ 0.4 s wall, inspect ≤ 0.6 s.
 */
import {ensureHf270, hf270} from '../sources.js'
import {type BenchCase} from '../types.js'

const bareNode = () => [process.execPath, '-e', '0']

export const cases: BenchCase[] = [
  {
    name: 'startup/help',
    description: 'openelm --help (oclif manifest; no command module imported)',
    command: (ctx) => [...ctx.cli, '--help'],
    baseline: bareNode,
    baselineName: 'node -e 0',
    outputs: () => [],
    bytes: async () => 0,
    targets: {rssMB: 300},
  },
  {
    name: 'startup/inspect-270M',
    description: 'openelm inspect of the 270M f32 HF folder (header only)',
    setup: ensureHf270,
    command: (ctx) => [...ctx.cli, 'inspect', hf270(ctx)],
    baseline: bareNode,
    baselineName: 'node -e 0',
    outputs: () => [],
    bytes: async (ctx) => ctx.sizeOf(hf270(ctx)),
    targets: {rssMB: 300},
  },
]
