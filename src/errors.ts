/**
 * Typed errors. Every error the tool raises on purpose is an OpenElmError with a stable `code`,
 * so commands can map it to a one-line message and an exit code, and tests can tell them apart.
 */
export type ErrorKind = 'usage' | 'format' | 'mapping' | 'config' | 'verify' | 'hub' | 'io' | 'dependency'

export const EXIT_CODES: Record<ErrorKind, number> = {
  usage: 2,
  format: 3,
  mapping: 3,
  config: 3,
  io: 4,
  verify: 5,
  hub: 6,
  dependency: 7,
}

/** Longest prefix of a string from a file that a message quotes. */
export const MAX_QUOTED_CHARS = 80

/**
 * A string from a file (a tensor name, a key, a JSON snippet) as a message shows it: escaped
 * (JSON string syntax, so control characters and newlines stay on one line) and cut to a short
 * prefix with its full length, so a hostile 1 MB name never floods a terminal.
 */
export function quote(value: string, max = MAX_QUOTED_CHARS): string {
  if (value.length <= max) return JSON.stringify(value)
  return `${JSON.stringify(value.slice(0, max))}… (${value.length} characters)`
}

/** A name from a file as messages show it: tame names (printable ASCII, short) as they are, others quoted. */
export function shown(name: string): string {
  return /^[\x21-\x7e]{1,80}$/.test(name) ? name : quote(name)
}

/** Text already serialised (a JSON value, a shape) cut to a short one-line prefix. */
export function clip(text: string, max = MAX_QUOTED_CHARS): string {
  const line = text.replace(/[\u0000-\u001f\u007f]/g, (c) => JSON.stringify(c).slice(1, -1))
  return line.length <= max ? line : `${line.slice(0, max)}… (${text.length} characters)`
}

export class OpenElmError extends Error {
  readonly kind: ErrorKind
  /** A machine-readable reason, e.g. `safetensors.overlap`. */
  readonly code: string
  readonly details: Record<string, unknown>

  constructor(kind: ErrorKind, code: string, message: string, details: Record<string, unknown> = {}) {
    super(message)
    this.name = new.target.name
    this.kind = kind
    this.code = code
    this.details = details
  }
}

/** A file is not what it claims to be: truncated, malformed, hostile, or of an unsupported variant. */
export class FormatError extends OpenElmError {
  constructor(code: string, message: string, details: Record<string, unknown> = {}) {
    super('format', code, message, details)
  }
}

/** A tensor name or shape does not map onto the OpenELM layout. */
export class MappingError extends OpenElmError {
  constructor(code: string, message: string, details: Record<string, unknown> = {}) {
    super('mapping', code, message, details)
  }
}

/** A config is missing, inconsistent, or contradicts the tensors. */
export class ConfigError extends OpenElmError {
  constructor(code: string, message: string, details: Record<string, unknown> = {}) {
    super('config', code, message, details)
  }
}

/** Wrong flags or arguments. */
export class UsageError extends OpenElmError {
  constructor(code: string, message: string, details: Record<string, unknown> = {}) {
    super('usage', code, message, details)
  }
}

/** Filesystem trouble: missing path, output exists, cannot write. */
export class IoError extends OpenElmError {
  constructor(code: string, message: string, details: Record<string, unknown> = {}) {
    super('io', code, message, details)
  }
}

/** A verification ran and the artifact does not compute what the reference computes. */
export class VerificationError extends OpenElmError {
  constructor(code: string, message: string, details: Record<string, unknown> = {}) {
    super('verify', code, message, details)
  }
}

/** The Hub refused or failed a request. */
export class HubError extends OpenElmError {
  constructor(code: string, message: string, details: Record<string, unknown> = {}) {
    super('hub', code, message, details)
  }
}

/** An optional runtime (python3, torch, onnxruntime, llama.cpp) is missing or broken. */
export class DependencyError extends OpenElmError {
  constructor(code: string, message: string, details: Record<string, unknown> = {}) {
    super('dependency', code, message, details)
  }
}
