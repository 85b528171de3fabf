/**
 * A small typed builder over the ONNX protobuf (`onnx-proto`, protobufjs-generated `ModelProto`).
 * Nodes, Constant values, graph inputs/outputs with static or symbolic dims, and weight
 * initializers whose bytes are NOT held here: the writer streams them into the file after the
 * graph has been encoded (see write.ts), so memory stays bounded by one tensor.
 */
import {createRequire} from 'node:module'
import type OnnxProto from 'onnx-proto'
import {type onnx as P} from 'onnx-proto'
import {type DType} from '../../tensor/dtype.js'
import {UsageError} from '../../errors.js'

/**
 * onnx-proto's generated classes, loaded on first use (protobufjs and the generated code cost ~0.2 s
 * of start-up that `inspect` of a non-ONNX folder or `--help` should not pay).
 */
let onnxModule: typeof OnnxProto.onnx | undefined
const loadOnnx = (): typeof OnnxProto.onnx => (onnxModule ??= (createRequire(import.meta.url)('onnx-proto') as typeof OnnxProto).onnx)
export const onnx: typeof OnnxProto.onnx = new Proxy({} as typeof OnnxProto.onnx, {
  get: (_target, key) => Reflect.get(loadOnnx(), key),
  has: (_target, key) => Reflect.has(loadOnnx(), key),
})

/** ONNX `TensorProto.DataType` numbers (onnx.proto). */
export const ONNX_DTYPE: Partial<Record<DType, number>> = {
  F32: 1, U8: 2, I8: 3, U16: 4, I16: 5, I32: 6, I64: 7, BOOL: 9, F16: 10, F64: 11, U32: 12, U64: 13, BF16: 16,
}

export function dtypeFromOnnx(code: number): DType | undefined {
  for (const [dtype, n] of Object.entries(ONNX_DTYPE)) if (n === code) return dtype as DType
  return undefined
}

export function onnxDtype(dtype: DType): number {
  const code = ONNX_DTYPE[dtype]
  if (code === undefined) throw new UsageError('onnx.dtype', `dtype ${dtype} has no ONNX equivalent`)
  return code
}

/** A dim is a fixed size or a symbolic name (`batch_size`). */
export type Dim = number | string

export type AttributeValue = number | number[] | string | {float: number} | {ints: number[]} | P.ITensorProto

/** An initializer whose data the writer streams in (raw_data) or points at (external data). */
export interface InitializerSpec {
  name: string
  dtype: DType
  shape: readonly number[]
  byteLength: number
}

export class GraphBuilder {
  readonly nodes: P.INodeProto[] = []
  readonly inputs: P.IValueInfoProto[] = []
  readonly outputs: P.IValueInfoProto[] = []
  readonly initializers: InitializerSpec[] = []
  /** Operator domains besides the default one (opset version 1 each, e.g. com.microsoft). */
  readonly domains: string[] = []
  /** ModelProto.metadata_props. */
  readonly metadata: Record<string, string> = {}
  private counter = 0
  private readonly constants = new Map<string, string>()

  constructor(readonly name: string) {}

  /** A fresh value name under a readable prefix. */
  fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`
  }

  input(name: string, dtype: DType, dims: readonly Dim[]): string {
    this.inputs.push(valueInfo(name, dtype, dims))
    return name
  }

  output(name: string, dtype: DType, dims: readonly Dim[]): void {
    this.outputs.push(valueInfo(name, dtype, dims))
  }

  initializer(spec: InitializerSpec): string {
    this.initializers.push(spec)
    return spec.name
  }

  /** Add a node; returns its output names (one fresh name per `outputs` count, or the given names). */
  node(opType: string, inputs: readonly string[], options: {outputs?: number | string[]; attrs?: Record<string, AttributeValue>; name?: string; domain?: string} = {}): string[] {
    const outs = Array.isArray(options.outputs)
      ? options.outputs
      : Array.from({length: options.outputs ?? 1}, () => this.fresh(options.name ?? opType))
    this.nodes.push({
      opType,
      input: [...inputs],
      output: outs,
      name: `${options.name ?? opType}_n${this.nodes.length}`,
      domain: options.domain,
      attribute: Object.entries(options.attrs ?? {}).map(([k, v]) => attribute(k, v)),
    })
    return outs
  }

  /** One-output node. */
  op(opType: string, inputs: readonly string[], attrs?: Record<string, AttributeValue>, name?: string): string {
    return this.node(opType, inputs, {attrs, name})[0]
  }

  /** A small constant (deduplicated), emitted as a `Constant` node. */
  constant(dtype: 'I64' | 'F32', dims: readonly number[], values: readonly number[]): string {
    const key = `${dtype}|${dims.join(',')}|${values.join(',')}`
    const known = this.constants.get(key)
    if (known) return known
    const value: P.ITensorProto = {dims: [...dims], dataType: onnxDtype(dtype)}
    if (dtype === 'I64') value.int64Data = [...values]
    else value.floatData = [...values]
    const name = this.node('Constant', [], {attrs: {value}, name: 'const'})[0]
    this.constants.set(key, name)
    return name
  }

  ints(values: readonly number[]): string {
    return this.constant('I64', [values.length], values)
  }

  scalar(value: number): string {
    return this.constant('F32', [], [value])
  }

  /** The GraphProto without initializers (those are appended by the writer). */
  graphProto(): P.IGraphProto {
    return {name: this.name, node: this.nodes, input: this.inputs, output: this.outputs}
  }
}

function valueInfo(name: string, dtype: DType, dims: readonly Dim[]): P.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: onnxDtype(dtype),
        shape: {dim: dims.map((d) => (typeof d === 'number' ? {dimValue: d} : {dimParam: d}))},
      },
    },
  }
}

function attribute(name: string, value: AttributeValue): P.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType
  if (typeof value === 'number') return {name, type: T.INT, i: value}
  if (typeof value === 'string') return {name, type: T.STRING, s: new TextEncoder().encode(value)}
  if (Array.isArray(value)) return {name, type: T.INTS, ints: value}
  if ('float' in value && typeof value.float === 'number') return {name, type: T.FLOAT, f: value.float}
  if ('ints' in value && Array.isArray(value.ints)) return {name, type: T.INTS, ints: value.ints}
  return {name, type: T.TENSOR, t: value as P.ITensorProto}
}

/** Protobuf varint bytes of a non-negative integer below 2^53. */
export function varint(value: number): Uint8Array {
  const out: number[] = []
  let v = value
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80)
    v = Math.floor(v / 0x80)
  }
  out.push(v)
  return Uint8Array.from(out)
}

/** Tag byte(s) of a length-delimited field. */
export function lengthDelimitedTag(field: number): Uint8Array {
  return varint(field * 8 + 2)
}
