#!/usr/bin/env node
/**
 * Writes oclif.manifest.json from the built commands in dist/ (run after `tsc`, by `npm run build`
 * and `prepare`): with it, `openelm --help` and `inspect` start without importing every command
 * module and what each one pulls in. It is a build output (git-ignored); bin/dev.js ignores it, so
 * the TypeScript sources never meet a stale manifest.
 */
import {promises as fs} from 'node:fs'
import path from 'node:path'
// Describe the built JS: oclif maps dist/ to src/*.ts when NODE_ENV is development or test (npm
// scripts run under a test runner inherit it), which would put TypeScript paths in the manifest.
process.env.NODE_ENV = 'production'
const {Plugin} = await import('@oclif/core')

const root = path.resolve(import.meta.dirname, '..')
const plugin = new Plugin({root, type: 'core', isRoot: true, ignoreManifest: true, errorOnManifestCreate: true})
await plugin.load()
const file = path.join(root, 'oclif.manifest.json')
const tmp = `${file}.tmp-${process.pid}`
await fs.writeFile(tmp, JSON.stringify(plugin.manifest, null, 2) + '\n')
await fs.rename(tmp, file)
