/**
 * The YAML subset CoreNet's training configs use: nested block mappings by indentation, block
 * sequences ("- item", of scalars or mappings), flow sequences of scalars ("[a, b]"), plain and
 * quoted scalars, comments, and anchors/aliases on scalars (`&name 32128` … `*name`, as CoreNet's
 * OpenELM configs use for vocab size and context length). Tags, multi-line scalars, flow mappings
 * and anchors on blocks are refused with the line number, never guessed at.
 */
import {ConfigError} from '../../errors.js'

export type YamlValue = null | boolean | number | string | YamlValue[] | {[key: string]: YamlValue}

interface Line {
  indent: number
  text: string
  number: number
}

function fail(line: number, message: string): never {
  throw new ConfigError('yaml.syntax', `YAML line ${line}: ${message}`, {line})
}

/** Remove a trailing comment (a '#' after whitespace, outside quotes). */
function stripComment(text: string): string {
  let quote: string | undefined
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (quote) {
      if (c === quote) quote = undefined
    } else if (c === '"' || c === "'") quote = c
    else if (c === '#' && (i === 0 || /\s/.test(text[i - 1]!))) return text.slice(0, i)
  }
  return text
}

export function parseScalar(raw: string, line: number, anchors = new Map<string, YamlValue>()): YamlValue {
  const text = raw.trim()
  const anchor = /^&([^\s\[\]{},]+)\s+(.+)$/.exec(text)
  if (anchor) {
    const value = parseScalar(anchor[2]!, line, anchors)
    anchors.set(anchor[1]!, value)
    return value
  }
  const alias = /^\*([^\s\[\]{},]+)$/.exec(text)
  if (alias) {
    if (!anchors.has(alias[1]!)) fail(line, `alias *${alias[1]} refers to no anchor defined before it`)
    return anchors.get(alias[1]!)!
  }
  if (text === '' || text === '~' || text === 'null' || text === 'Null' || text === 'NULL') return null
  if (/^(true|True|TRUE)$/.test(text)) return true
  if (/^(false|False|FALSE)$/.test(text)) return false
  if (text.startsWith('"')) {
    if (!text.endsWith('"') || text.length < 2) fail(line, `unterminated string ${text}`)
    try {
      return JSON.parse(text) as string
    } catch {
      fail(line, `bad double-quoted string ${text}`)
    }
  }
  if (text.startsWith("'")) {
    if (!text.endsWith("'") || text.length < 2) fail(line, `unterminated string ${text}`)
    return text.slice(1, -1).replaceAll("''", "'")
  }
  if (text.startsWith('[') || text.startsWith('{')) {
    if (!text.endsWith(text.startsWith('[') ? ']' : '}')) fail(line, `flow collection "${text.slice(0, 20)}" does not end where it should`)
    // JSON-shaped flow collections (CoreNet's dataset lists) parse as JSON, trailing commas allowed.
    try {
      return JSON.parse(text.replace(/,\s*([\]}])/g, '$1')) as YamlValue
    } catch {
      // not JSON: plain scalars only
    }
    const inner = text.slice(1, -1).trim()
    if (text.startsWith('[') && !/[[\]{}]/.test(inner)) return inner === '' ? [] : inner.split(',').map((item) => parseScalar(item, line, anchors))
    fail(line, `unsupported flow collection "${text.slice(0, 30)}"`)
  }
  if (/^[&*!|>]/.test(text)) fail(line, `unsupported YAML construct "${text.slice(0, 20)}"`)
  if (/^[-+]?(\d[\d_]*)$/.test(text)) return Number(text.replaceAll('_', ''))
  if (/^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$/.test(text)) return Number(text)
  if (/^[-+]?\.(inf|Inf|INF)$/.test(text)) return text.startsWith('-') ? -Infinity : Infinity
  if (/^\.(nan|NaN|NAN)$/.test(text)) return Number.NaN
  return text
}

/** Unclosed '[' / '{' on a line (outside quotes). */
function flowDepth(text: string): number {
  let depth = 0
  let quote: string | undefined
  for (const c of text) {
    if (quote) {
      if (c === quote) quote = undefined
    } else if (c === '"' || c === "'") quote = c
    else if (c === '[' || c === '{') depth++
    else if (c === ']' || c === '}') depth--
  }
  return depth
}

/** Split "key: value" (key may be quoted); undefined when the line is not a mapping entry. */
function splitKey(text: string, line: number): [string, string] | undefined {
  const m = /^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^'"\s#][^:#]*?)\s*:(?:\s+(.*)|)$/.exec(text)
  if (!m) return undefined
  const key = parseScalar(m[1]!, line)
  return [String(key), m[2] ?? '']
}

export function parseYaml(source: string): YamlValue {
  const lines: Line[] = []
  const raw = source.split(/\r?\n/)
  for (let i = 0; i < raw.length; i++) {
    if (/^\s*\t/.test(raw[i]!)) fail(i + 1, 'tabs are not allowed for indentation')
    let text = stripComment(raw[i]!).trimEnd()
    if (text.trim() === '' || text.trim() === '---' || text.trim() === '...') continue
    const number = i + 1
    // A flow collection ("[", "{") may span lines: join them into one logical line.
    while (flowDepth(text) > 0) {
      if (++i >= raw.length) fail(number, 'flow collection is never closed')
      text += ` ${stripComment(raw[i]!).trim()}`
    }
    lines.push({indent: text.length - text.trimStart().length, text: text.trim(), number})
  }
  let pos = 0
  const anchors = new Map<string, YamlValue>()

  function block(indent: number): YamlValue {
    const first = lines[pos]
    if (!first || first.indent < indent) return null
    if (first.text === '-' || first.text.startsWith('- ')) return sequence(first.indent)
    return mapping(first.indent)
  }

  function sequence(indent: number): YamlValue[] {
    const out: YamlValue[] = []
    while (pos < lines.length && lines[pos]!.indent === indent && (lines[pos]!.text === '-' || lines[pos]!.text.startsWith('- '))) {
      const line = lines[pos]!
      const rest = line.text.slice(1).trim()
      pos++
      if (rest === '') {
        out.push(block(indent + 1))
      } else if (splitKey(rest, line.number)) {
        // "- key: value" starts a mapping whose keys align with "key".
        lines[--pos] = {indent: indent + 2, text: rest, number: line.number}
        out.push(mapping(indent + 2))
      } else {
        out.push(parseScalar(rest, line.number, anchors))
      }
    }
    return out
  }

  function mapping(indent: number): {[key: string]: YamlValue} {
    const out: {[key: string]: YamlValue} = {}
    while (pos < lines.length) {
      const line = lines[pos]!
      if (line.indent < indent) break
      if (line.indent > indent) fail(line.number, `unexpected indentation (${line.indent} spaces, expected ${indent})`)
      const kv = splitKey(line.text, line.number)
      if (!kv) fail(line.number, `expected "key: value", got "${line.text.slice(0, 40)}"`)
      const [key, rest] = kv
      if (Object.hasOwn(out, key)) fail(line.number, `duplicate key "${key}"`)
      pos++
      if (rest.trim() === '') {
        const next = lines[pos]
        // A block sequence may sit at the same indentation as its key.
        if (next && (next.indent > indent || (next.indent === indent && (next.text === '-' || next.text.startsWith('- '))))) out[key] = block(next.indent)
        else out[key] = null
      } else {
        if (/^&\S+$/.test(rest.trim())) fail(line.number, 'anchors on blocks are not supported')
        out[key] = parseScalar(rest, line.number, anchors)
      }
    }
    return out
  }

  const value = block(0)
  if (pos < lines.length) fail(lines[pos]!.number, `unexpected content "${lines[pos]!.text.slice(0, 40)}"`)
  return value
}
