/**
 * A mistyped command is a usage error: one line naming what was typed and the nearest command,
 * exit 2, no stack trace and no prompt (oclif's default throws with a stack in development mode).
 */
import {type Hook} from '@oclif/core'
import {nearMiss} from '../model/config.js'

const hook: Hook<'command_not_found'> = async function (options) {
  // With a space topic separator oclif joins the words it could not resolve with ':'.
  const typed = options.id.split(':')[0] ?? options.id
  const commands = options.config.commandIDs.filter((id) => !id.includes(':'))
  const near = nearMiss(typed, commands)
  const hint = near ? `did you mean "${near}"?` : `commands: ${commands.sort().join(', ')}`
  const message = `unknown command "${typed}" — ${hint}`
  if (options.argv?.includes('--json')) process.stdout.write(`${JSON.stringify({error: {kind: 'usage', code: 'command.unknown', command: typed, ...(near ? {nearMiss: near} : {}), message}})}\n`)
  process.stderr.write(`Error: ${message} (see ${options.config.bin} --help)\n`)
  process.exitCode = 2
}

export default hook
