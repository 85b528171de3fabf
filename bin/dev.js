#!/usr/bin/env node
// Development entry point: runs the TypeScript sources through tsx, from any working directory
// (`node --import tsx` would resolve tsx against the caller's folder instead of this package).
import {fileURLToPath} from 'node:url'
import {register} from 'tsx/esm/api'

register()
// What execute({development: true}) sets, set before the plugins below load: oclif maps dist/ to the
// TypeScript sources only when NODE_ENV is development or test (else a stale dist/ would run).
process.env.NODE_ENV = 'development'
const {execute, Plugin} = await import('@oclif/core')
// oclif.manifest.json describes the last build of dist/ (`npm run build`), and the sources here may
// have moved on since: the plugins are loaded here with the manifest ignored (oclif's Config has no
// such option for its root plugin), then handed to oclif as they are.
const root = fileURLToPath(new URL('..', import.meta.url))
const self = new Plugin({root, type: 'core', isRoot: true, ignoreManifest: true})
await self.load()
const plugins = new Map([[self.name, self]])
for (const name of self.pjson.oclif.plugins ?? []) {
  const plugin = new Plugin({name, root, type: 'core'})
  await plugin.load()
  plugins.set(plugin.name, plugin)
}
await execute({development: true, loadOptions: {root, plugins}})
