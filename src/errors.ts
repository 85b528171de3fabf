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
