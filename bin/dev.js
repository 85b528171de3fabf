#!/usr/bin/env node
// Development entry point: runs the TypeScript sources through tsx, from any working directory
// (`node --import tsx` would resolve tsx against the caller's folder instead of this package).
import {register} from 'tsx/esm/api'

register()
const {execute} = await import('@oclif/core')
await execute({development: true, dir: import.meta.url})
