/**
 * A restricted unpickler for `torch.save` payloads (pickle protocols 2–5). It is a data parser,
 * not a VM: it builds values from the opcodes, knows a fixed list of globals (containers, tensor
 * rebuild functions, storage classes) and refuses every other global, INST/OBJ/NEWOBJ, extension
 * codes and out-of-band buffers with an error naming what it met. Nothing is ever called.
 * Limits bound time and memory against pickle bombs.
 */
import {FormatError} from '../../errors.js'
import {f16BitsToF32} from '../../tensor/dtype.js'
import {PyDict, PyTuple, type PyValue, STORAGE_DTYPES, type TorchStorage, TorchTensor} from './values.js'

/** data.pkl of a 3B model with optimizer state is well under a megabyte; this is far past any real one. */
export const MAX_PICKLE_BYTES = 256 * 1024 * 1024
/** Nesting of containers (a checkpoint nests ~5 deep: dict → optim → state → dict → tensor). */
export const MAX_DEPTH = 64
/** Open MARKs at once (each container under construction holds one). */
export const MAX_MARKS = MAX_DEPTH
/** Memo slots; torch memoizes a few per tensor. */
export const MAX_MEMO = 10_000_000
/** Values reachable when shared references are expanded (billion-laughs via memo references). */
export const MAX_EXPANDED_NODES = 20_000_000
/** Python ints wider than this many bytes are not counters or shapes. */
export const MAX_LONG_BYTES = 64
/** Protocol-0 text arguments (INT, FLOAT, GLOBAL names) are short lines. */
const MAX_LINE_BYTES = 1024
/** UTF-8 as Python wrote it: a leading U+FEFF is part of the string, not a byte-order mark. */
const UTF8 = new TextDecoder('utf-8', {fatal: true, ignoreBOM: true})

/** Globals a torch checkpoint may name, and nothing else. */
const ALLOWED_GLOBALS = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
  'torch.Size',
  '_codecs.encode',
  // numpy scalars (a float metric saved as np.float64): decoded to plain numbers, never constructed.
  'numpy.core.multiarray.scalar',
  'numpy._core.multiarray.scalar',
  'numpy.dtype',
  ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`),
])

class PyGlobal {
  constructor(readonly path: string) {}
}

/** A numpy dtype named by a pickle (only used to decode a numpy scalar's bytes). */
class NumpyDType {
  order = '<'
  constructor(readonly code: string) {}
}

/** numpy dtype codes a scalar may use, and how to decode their bytes. */
const NUMPY_SCALARS: Record<string, (v: DataView, le: boolean) => PyValue> = {
  f2: (v, le) => f16BitsToF32(v.getUint16(0, le)),
  f4: (v, le) => v.getFloat32(0, le),
  f8: (v, le) => v.getFloat64(0, le),
  i1: (v) => BigInt(v.getInt8(0)),
  i2: (v, le) => BigInt(v.getInt16(0, le)),
  i4: (v, le) => BigInt(v.getInt32(0, le)),
  i8: (v, le) => v.getBigInt64(0, le),
  u1: (v) => BigInt(v.getUint8(0)),
  u2: (v, le) => BigInt(v.getUint16(0, le)),
  u4: (v, le) => BigInt(v.getUint32(0, le)),
  u8: (v, le) => v.getBigUint64(0, le),
  b1: (v) => v.getUint8(0) !== 0,
}

class Mark {}
const MARK = new Mark()

type StackItem = PyValue | PyGlobal | Mark

export interface UnpickleResult {
  value: PyValue
  /** Storages by key, in order of first reference. */
  storages: Map<string, TorchStorage>
  /** Pickle protocol declared by PROTO (0 when absent). */
  protocol: number
  /** Opcode names seen, for diagnostics. */
  opcodes: Set<string>
}

const OPCODE_NAMES: Record<number, string> = {
  0x80: 'PROTO', 0x95: 'FRAME', 0x2e: 'STOP', 0x28: 'MARK', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP',
  0x7d: 'EMPTY_DICT', 0x5d: 'EMPTY_LIST', 0x29: 'EMPTY_TUPLE', 0x74: 'TUPLE', 0x85: 'TUPLE1', 0x86: 'TUPLE2',
  0x87: 'TUPLE3', 0x6c: 'LIST', 0x64: 'DICT', 0x61: 'APPEND', 0x65: 'APPENDS', 0x73: 'SETITEM', 0x75: 'SETITEMS',
  0x4a: 'BININT', 0x4b: 'BININT1', 0x4d: 'BININT2', 0x49: 'INT', 0x4c: 'LONG', 0x8a: 'LONG1', 0x8b: 'LONG4',
  0x47: 'BINFLOAT', 0x46: 'FLOAT', 0x4e: 'NONE', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x58: 'BINUNICODE',
  0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x56: 'UNICODE', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING',
  0x53: 'STRING', 0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES', 0x8e: 'BINBYTES8', 0x96: 'BYTEARRAY8',
  0x71: 'BINPUT', 0x72: 'LONG_BINPUT', 0x70: 'PUT', 0x68: 'BINGET', 0x6a: 'LONG_BINGET', 0x67: 'GET', 0x94: 'MEMOIZE',
  0x63: 'GLOBAL', 0x93: 'STACK_GLOBAL', 0x52: 'REDUCE', 0x62: 'BUILD', 0x51: 'BINPERSID', 0x50: 'PERSID',
  0x69: 'INST', 0x6f: 'OBJ', 0x81: 'NEWOBJ', 0x92: 'NEWOBJ_EX', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4',
  0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET',
}

/** Opcodes that construct arbitrary objects; refused outright. */
const REFUSED = new Set(['INST', 'OBJ', 'NEWOBJ', 'NEWOBJ_EX', 'EXT1', 'EXT2', 'EXT4', 'NEXT_BUFFER', 'READONLY_BUFFER', 'PERSID', 'EMPTY_SET', 'ADDITEMS', 'FROZENSET'])

/** Storage keys are short identifiers ("0", "1", ... in torch); anything else could escape `data/`. */
const STORAGE_KEY = /^[A-Za-z0-9_]{1,64}$/

export function unpickle(data: Uint8Array, where = 'data.pkl'): UnpickleResult {
  return new Unpickler(data, where).run()
}

class Unpickler {
  private pos = 0
  private stack: StackItem[] = []
  private marks: number[] = []
  private memo = new Map<number, StackItem>()
  private storages = new Map<string, TorchStorage>()
  private protocol = 0
  private opcodes = new Set<string>()
  private readonly dv: DataView

  constructor(private readonly data: Uint8Array, private readonly where: string) {
    this.dv = new DataView(data.buffer, data.byteOffset, data.byteLength)
    if (data.byteLength > MAX_PICKLE_BYTES) this.fail('pickle.too_large', `${data.byteLength} bytes exceeds the limit of ${MAX_PICKLE_BYTES}`)
  }

  private fail(code: string, message: string): never {
    throw new FormatError(code, `${this.where}: ${message}`, {where: this.where, offset: this.pos})
  }

  private need(n: number): number {
    if (n < 0 || this.pos + n > this.data.byteLength) this.fail('pickle.truncated', `pickle ends inside an argument at byte ${this.pos} (wants ${n} more bytes)`)
    const at = this.pos
    this.pos += n
    return at
  }

  private bytes(n: number): Uint8Array {
    const at = this.need(n)
    return this.data.subarray(at, at + n)
  }

  private u8(): number {
    return this.data[this.need(1)]!
  }

  private u16(): number {
    return this.dv.getUint16(this.need(2), true)
  }

  private u32(): number {
    return this.dv.getUint32(this.need(4), true)
  }

  private u64(): number {
    const at = this.need(8)
    const v = this.dv.getBigUint64(at, true)
    if (v > BigInt(this.data.byteLength)) this.fail('pickle.length', `length ${v} at byte ${at} exceeds the pickle`)
    return Number(v)
  }

  private line(): string {
    const end = this.data.indexOf(0x0a, this.pos)
    if (end < 0 || end - this.pos > MAX_LINE_BYTES) this.fail('pickle.line', `unterminated or overlong text argument at byte ${this.pos}`)
    const text = Buffer.from(this.data.subarray(this.pos, end)).toString('latin1')
    this.pos = end + 1
    return text
  }

  private utf8(n: number): string {
    try {
      return UTF8.decode(this.bytes(n))
    } catch (error) {
      if (error instanceof FormatError) throw error
      this.fail('pickle.utf8', `string at byte ${this.pos - n} is not valid UTF-8`)
    }
  }

  private push(v: StackItem): void {
    this.stack.push(v)
  }

  private pop(): StackItem {
    const floor = this.marks.length ? this.marks[this.marks.length - 1]! : 0
    if (this.stack.length <= floor) this.fail('pickle.stack', `stack underflow at byte ${this.pos}`)
    return this.stack.pop()!
  }

  private popValue(): PyValue {
    const v = this.pop()
    if (v instanceof Mark || v instanceof PyGlobal) this.fail('pickle.stack', `unexpected ${v instanceof Mark ? 'mark' : `global ${v.path}`} used as a value at byte ${this.pos}`)
    return v
  }

  private top(): StackItem {
    const floor = this.marks.length ? this.marks[this.marks.length - 1]! : 0
    if (this.stack.length <= floor) this.fail('pickle.stack', `stack underflow at byte ${this.pos}`)
    return this.stack[this.stack.length - 1]!
  }

  private popMark(): StackItem[] {
    const at = this.marks.pop()
    if (at === undefined) this.fail('pickle.mark', `no MARK on the stack at byte ${this.pos}`)
    return this.stack.splice(at)
  }

  private values(items: StackItem[]): PyValue[] {
    for (const v of items) if (v instanceof Mark || v instanceof PyGlobal) this.fail('pickle.stack', `a ${v instanceof Mark ? 'mark' : `global ${v.path}`} used as a value at byte ${this.pos}`)
    return items as PyValue[]
  }

  private tupleItems(items: StackItem[]): PyValue[] {
    for (const v of items) if (v instanceof Mark) this.fail('pickle.stack', `a mark used as a value at byte ${this.pos}`)
    return items as PyValue[]
  }

  private memoPut(index: number): void {
    if (this.memo.size >= MAX_MEMO && !this.memo.has(index)) this.fail('pickle.memo', `more than ${MAX_MEMO} memo entries`)
    this.memo.set(index, this.top())
  }

  private memoGet(index: number): void {
    if (!this.memo.has(index)) this.fail('pickle.memo', `memo key ${index} was never stored (byte ${this.pos})`)
    this.push(this.memo.get(index)!)
  }

  private global(path: string): PyGlobal {
    if (!ALLOWED_GLOBALS.has(path)) {
      this.fail('pickle.global', `refusing global ${path}: only tensors, storages and containers may be unpickled`)
    }
    return new PyGlobal(path)
  }

  private int(text: string): bigint | boolean {
    if (text === '00') return false
    if (text === '01') return true
    if (!/^[+-]?\d+L?$/.test(text)) this.fail('pickle.int', `bad integer literal "${text.slice(0, 40)}"`)
    return BigInt(text.replace(/L$/, ''))
  }

  private long(n: number): bigint {
    if (n > MAX_LONG_BYTES) this.fail('pickle.long', `integer of ${n} bytes exceeds the limit of ${MAX_LONG_BYTES}`)
    const b = this.bytes(n)
    let v = 0n
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!)
    if (n > 0 && b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n)
    return v
  }

  private setItems(target: StackItem, items: PyValue[]): void {
    if (!(target instanceof PyDict)) this.fail('pickle.setitem', `SETITEM(S) on a ${describe(target)} at byte ${this.pos}`)
    if (items.length % 2) this.fail('pickle.setitem', `odd number of items for SETITEMS at byte ${this.pos}`)
    for (let i = 0; i < items.length; i += 2) target.map.set(dictKey(items[i]!, (m) => this.fail('pickle.key', m)), items[i + 1]!)
  }

  private append(target: StackItem, items: PyValue[]): void {
    if (!Array.isArray(target)) this.fail('pickle.append', `APPEND(S) on a ${describe(target)} at byte ${this.pos}`)
    for (const item of items) target.push(item)
  }

  private reduce(fn: StackItem, args: StackItem): PyValue {
    if (!(fn instanceof PyGlobal)) this.fail('pickle.reduce', `REDUCE of a ${describe(fn)} at byte ${this.pos}: only known globals may be called`)
    if (!(args instanceof PyTuple)) this.fail('pickle.reduce', `REDUCE of ${fn.path} with non-tuple arguments`)
    const a = args.items
    switch (fn.path) {
      case 'collections.OrderedDict': {
        if (a.length !== 0) this.fail('pickle.reduce', 'OrderedDict with constructor arguments is not supported')
        return new PyDict(true)
      }
      case 'torch.Size': {
        if (a.length !== 1 || !(a[0] instanceof PyTuple)) this.fail('pickle.reduce', 'torch.Size takes one tuple')
        return a[0]
      }
      case '_codecs.encode': {
        if (a.length !== 2 || typeof a[0] !== 'string' || a[1] !== 'latin1') this.fail('pickle.reduce', '_codecs.encode is only accepted for latin1 bytes')
        return Uint8Array.from(Buffer.from(a[0], 'latin1'))
      }
      case 'torch._utils._rebuild_tensor_v2':
        return this.rebuildTensor(a)
      case 'numpy.dtype': {
        if (typeof a[0] !== 'string' || !NUMPY_SCALARS[a[0]]) this.fail('pickle.numpy', `numpy dtype ${JSON.stringify(a[0])} is not a scalar type this reader decodes`)
        return new NumpyDType(a[0]) as unknown as PyValue
      }
      case 'numpy.core.multiarray.scalar':
      case 'numpy._core.multiarray.scalar': {
        const [dtype, data] = a as unknown[]
        if (!(dtype instanceof NumpyDType) || !(data instanceof Uint8Array)) this.fail('pickle.numpy', 'numpy scalar needs (dtype, bytes)')
        const width = Number(dtype.code.slice(1))
        if (data.byteLength !== width) this.fail('pickle.numpy', `numpy ${dtype.code} scalar with ${data.byteLength} bytes`)
        return NUMPY_SCALARS[dtype.code]!(new DataView(data.buffer, data.byteOffset, data.byteLength), dtype.order !== '>')
      }
      case 'torch._utils._rebuild_parameter':
      case 'torch._utils._rebuild_parameter_with_state': {
        const t = a[0]
        if (!(t instanceof TorchTensor) || typeof a[1] !== 'boolean') this.fail('pickle.tensor', `${fn.path} expects (tensor, requires_grad, hooks)`)
        return new TorchTensor(t.storage, t.offset, t.shape, t.stride, a[1], true)
      }
      default:
        this.fail('pickle.reduce', `${fn.path} cannot be called (it is a storage type)`)
    }
  }

  private rebuildTensor(a: PyValue[]): TorchTensor {
    const bad = (what: string): never => this.fail('pickle.tensor', `_rebuild_tensor_v2: ${what}`)
    if (a.length < 6 || a.length > 7) bad(`expected 6 or 7 arguments, got ${a.length}`)
    const storage = a[0] as unknown
    if (!isStorage(storage)) bad('first argument is not a storage persistent id')
    const s = storage as TorchStorage
    const offset = smallInt(a[1], 'storage offset', bad)
    if (!(a[2] instanceof PyTuple) || !(a[3] instanceof PyTuple)) bad('size and stride must be tuples')
    const shape = (a[2] as PyTuple).items.map((v) => smallInt(v, 'size', bad))
    const stride = (a[3] as PyTuple).items.map((v) => smallInt(v, 'stride', bad))
    if (shape.length !== stride.length) bad(`size has ${shape.length} dims but stride has ${stride.length}`)
    if (typeof a[4] !== 'boolean') bad('requires_grad is not a bool')
    const hooks = a[5]
    if (!(hooks instanceof PyDict) || hooks.map.size > 0) bad('backward hooks must be an empty OrderedDict')
    // Every element must fall inside the storage.
    let last = offset
    let empty = false
    for (let i = 0; i < shape.length; i++) {
      if (shape[i] === 0) empty = true
      else last += (shape[i]! - 1) * stride[i]!
    }
    if (!empty && last >= s.numel) bad(`view (offset ${offset}, size [${shape.join(', ')}], stride [${stride.join(', ')}]) reaches element ${last} of a storage with ${s.numel} elements`)
    return new TorchTensor(s, offset, shape, stride, a[4] as boolean, false)
  }

  private persistent(pid: PyValue): TorchStorage {
    const bad = (what: string): never => this.fail('pickle.persistent_id', `persistent id ${what}`)
    if (!(pid instanceof PyTuple) || pid.items.length !== 5 || pid.items[0] !== 'storage') bad('is not a ("storage", type, key, location, numel) tuple')
    const [, typeItem, key, location, numel] = (pid as PyTuple).items as unknown[]
    if (!(typeItem instanceof PyGlobal) || !typeItem.path.startsWith('torch.') || !STORAGE_DTYPES[typeItem.path.slice(6)]) bad('does not name a torch storage class')
    if (typeof key !== 'string' || !STORAGE_KEY.test(key)) bad(`has storage key ${JSON.stringify(key)}, which is not a plain record name`)
    if (typeof location !== 'string') bad('has a non-string location')
    const n = smallInt(numel as PyValue, 'numel', bad)
    const dtype = STORAGE_DTYPES[(typeItem as PyGlobal).path.slice(6)]!
    const known = this.storages.get(key as string)
    if (known) {
      if (known.dtype !== dtype || known.numel !== n) bad(`reuses storage key ${key as string} with another type or size`)
      return known
    }
    const storage: TorchStorage = {key: key as string, dtype, numel: n, location: location as string}
    this.storages.set(key as string, storage)
    return storage
  }

  run(): UnpickleResult {
    const d = this.data
    while (this.pos < d.byteLength) {
      const at = this.pos
      const op = d[this.pos++]!
      const name = OPCODE_NAMES[op]
      if (!name) this.fail('pickle.opcode', `unknown opcode 0x${op.toString(16)} at byte ${at}`)
      this.opcodes.add(name)
      if (REFUSED.has(name)) {
        let detail = ''
        if (name === 'INST') {
          const module = this.line()
          detail = ` (${module}.${this.line()})`
        }
        this.fail('pickle.refused_opcode', `refusing opcode ${name}${detail} at byte ${at}: it constructs arbitrary objects`)
      }
      switch (name) {
        case 'PROTO': {
          this.protocol = this.u8()
          if (this.protocol > 5) this.fail('pickle.protocol', `unsupported pickle protocol ${this.protocol}`)
          break
        }
        case 'FRAME': this.u64(); break
        case 'STOP': {
          const value = this.popValue()
          if (this.stack.length || this.marks.length) this.fail('pickle.stack', `${this.stack.length} items left on the stack at STOP`)
          checkShape(value, (code, m) => this.fail(code, m))
          return {value, storages: this.storages, protocol: this.protocol, opcodes: this.opcodes}
        }
        case 'MARK': {
          if (this.marks.length >= MAX_MARKS) this.fail('pickle.depth', `more than ${MAX_MARKS} nested MARKs`)
          this.marks.push(this.stack.length)
          break
        }
        case 'POP': this.pop(); break
        case 'POP_MARK': this.popMark(); break
        case 'DUP': this.push(this.top()); break
        case 'EMPTY_DICT': this.push(new PyDict(false)); break
        case 'EMPTY_LIST': this.push([]); break
        case 'EMPTY_TUPLE': this.push(new PyTuple([])); break
        // Tuples may hold a storage class: the persistent id of a storage is such a tuple.
        case 'TUPLE': this.push(new PyTuple(this.tupleItems(this.popMark()))); break
        case 'TUPLE1': this.push(new PyTuple([this.popValue()])); break
        case 'TUPLE2': {
          const b = this.popValue()
          this.push(new PyTuple([this.popValue(), b]))
          break
        }
        case 'TUPLE3': {
          const c = this.popValue()
          const b = this.popValue()
          this.push(new PyTuple([this.popValue(), b, c]))
          break
        }
        case 'LIST': this.push(this.values(this.popMark())); break
        case 'DICT': {
          const dict = new PyDict(false)
          this.setItems(dict, this.values(this.popMark()))
          this.push(dict)
          break
        }
        case 'APPEND': {
          const v = this.popValue()
          this.append(this.top(), [v])
          break
        }
        case 'APPENDS': {
          const items = this.values(this.popMark())
          this.append(this.top(), items)
          break
        }
        case 'SETITEM': {
          const v = this.popValue()
          const k = this.popValue()
          this.setItems(this.top(), [k, v])
          break
        }
        case 'SETITEMS': {
          const items = this.values(this.popMark())
          this.setItems(this.top(), items)
          break
        }
        case 'BININT': this.push(BigInt(this.dv.getInt32(this.need(4), true))); break
        case 'BININT1': this.push(BigInt(this.u8())); break
        case 'BININT2': this.push(BigInt(this.u16())); break
        case 'INT': this.push(this.int(this.line())); break
        case 'LONG': {
          const text = this.line()
          const v = this.int(text)
          if (typeof v === 'boolean') this.fail('pickle.int', `bad long literal "${text}"`)
          this.push(v)
          break
        }
        case 'LONG1': this.push(this.long(this.u8())); break
        case 'LONG4': {
          const n = this.dv.getInt32(this.need(4), true)
          if (n < 0) this.fail('pickle.long', `negative LONG4 length ${n}`)
          this.push(this.long(n))
          break
        }
        case 'BINFLOAT': this.push(this.dv.getFloat64(this.need(8), false)); break
        case 'FLOAT': {
          const text = this.line()
          const v = Number(text)
          if (text.trim() === '' || (Number.isNaN(v) && !/^[+-]?nan$/i.test(text.trim()))) this.fail('pickle.float', `bad float literal "${text.slice(0, 40)}"`)
          this.push(v)
          break
        }
        case 'NONE': this.push(null); break
        case 'NEWTRUE': this.push(true); break
        case 'NEWFALSE': this.push(false); break
        case 'BINUNICODE': this.push(this.utf8(this.u32())); break
        case 'SHORT_BINUNICODE': this.push(this.utf8(this.u8())); break
        case 'BINUNICODE8': this.push(this.utf8(this.u64())); break
        case 'UNICODE': this.push(this.line().replace(/\\u([0-9a-fA-F]{4})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)))); break
        case 'BINSTRING': {
          const n = this.dv.getInt32(this.need(4), true)
          if (n < 0) this.fail('pickle.length', `negative BINSTRING length ${n}`)
          this.push(Buffer.from(this.bytes(n)).toString('latin1'))
          break
        }
        // Python 2 str: torch decodes these as ASCII/latin-1 text.
        case 'SHORT_BINSTRING': this.push(Buffer.from(this.bytes(this.u8())).toString('latin1')); break
        case 'STRING': {
          const text = this.line()
          const m = /^(['"])(.*)\1$/.exec(text)
          if (!m) this.fail('pickle.string', 'bad STRING literal')
          this.push(m[2]!)
          break
        }
        case 'BINBYTES': this.push(this.bytes(this.u32()).slice()); break
        case 'SHORT_BINBYTES': this.push(this.bytes(this.u8()).slice()); break
        case 'BINBYTES8':
        case 'BYTEARRAY8': this.push(this.bytes(this.u64()).slice()); break
        case 'BINPUT': this.memoPut(this.u8()); break
        case 'LONG_BINPUT': this.memoPut(this.u32()); break
        case 'PUT': this.memoPut(Number(this.int(this.line()))); break
        case 'MEMOIZE': this.memoPut(this.memo.size); break
        case 'BINGET': this.memoGet(this.u8()); break
        case 'LONG_BINGET': this.memoGet(this.u32()); break
        case 'GET': this.memoGet(Number(this.int(this.line()))); break
        case 'GLOBAL': {
          const module = this.line()
          const attr = this.line()
          this.push(this.global(`${module}.${attr}`))
          break
        }
        case 'STACK_GLOBAL': {
          const attr = this.popValue()
          const module = this.popValue()
          if (typeof module !== 'string' || typeof attr !== 'string') this.fail('pickle.global', 'STACK_GLOBAL needs two strings')
          this.push(this.global(`${module}.${attr}`))
          break
        }
        case 'REDUCE': {
          const args = this.pop()
          const fn = this.pop()
          this.push(this.reduce(fn, args))
          break
        }
        case 'BUILD': {
          const state = this.popValue()
          const target = this.top()
          if (target instanceof PyDict && target.ordered) target.state = state
          else if ((target as unknown) instanceof NumpyDType) {
            // numpy dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags)
            const order = state instanceof PyTuple ? state.items[1] : undefined
            if (typeof order !== 'string' || !['<', '>', '|', '='].includes(order)) this.fail('pickle.numpy', 'numpy dtype state without a byte order')
            ;(target as unknown as NumpyDType).order = order
          } else if (target instanceof TorchTensor) {
            // Parameter/tensor python attributes: torch's weights-only loader accepts them; nothing to keep.
          } else this.fail('pickle.build', `BUILD on a ${describe(target)} is not allowed`)
          break
        }
        case 'BINPERSID': this.push(this.persistent(this.popValue())); break
        default:
          this.fail('pickle.opcode', `opcode ${name} is not supported`)
      }
      if (this.stack.length > MAX_MEMO) this.fail('pickle.stack', `stack grew past ${MAX_MEMO} items`)
    }
    this.fail('pickle.truncated', 'pickle ends without STOP')
  }
}

function isStorage(v: unknown): boolean {
  return typeof v === 'object' && v !== null && 'key' in v && 'numel' in v && 'dtype' in v && !(v instanceof PyDict) && !(v instanceof PyTuple) && !(v instanceof TorchTensor)
}

function smallInt(v: PyValue | undefined, what: string, bad: (m: string) => never): number {
  if (typeof v !== 'bigint' || v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) bad(`${what} ${typeof v === 'bigint' ? String(v) : `of type ${describe(v)}`} is not a non-negative integer`)
  return Number(v)
}

function dictKey(k: PyValue, fail: (m: string) => never): string | bigint | number | boolean | null {
  if (typeof k === 'string' || typeof k === 'bigint' || typeof k === 'number' || typeof k === 'boolean' || k === null) return k
  fail(`dict key of type ${describe(k)} is not supported`)
}

function describe(v: unknown): string {
  if (v === null) return 'None'
  if (Array.isArray(v)) return 'list'
  if (v instanceof PyDict) return v.ordered ? 'OrderedDict' : 'dict'
  if (v instanceof PyTuple) return 'tuple'
  if (v instanceof TorchTensor) return 'tensor'
  if (v instanceof PyGlobal) return `global ${v.path}`
  if (v instanceof Uint8Array) return 'bytes'
  if (v instanceof Mark) return 'mark'
  return typeof v
}

/** Children of a container value. */
export function children(v: PyValue): PyValue[] {
  if (Array.isArray(v)) return v
  if (v instanceof PyTuple) return v.items
  if (v instanceof PyDict) return v.state === undefined ? [...v.map.values()] : [...v.map.values(), v.state]
  return []
}

/**
 * Reject cycles, nesting deeper than MAX_DEPTH and structures that expand (through shared
 * references) past MAX_EXPANDED_NODES, so every later walk is bounded. Linear in distinct objects.
 */
function checkShape(root: PyValue, fail: (code: string, message: string) => never): void {
  const size = new Map<object, number>()
  const depth = new Map<object, number>()
  const visiting = new Set<object>()
  // Iterative post-order walk (no recursion, so hostile nesting cannot overflow the JS stack).
  type Frame = {v: object; kids: PyValue[]; i: number; size: number; depth: number}
  const frames: Frame[] = []
  const enter = (v: PyValue): void => {
    if ((v as unknown) instanceof PyGlobal) fail('pickle.global', `global ${(v as unknown as PyGlobal).path} used as a value`)
    if (v === null || typeof v !== 'object' || v instanceof Uint8Array || v instanceof TorchTensor) return
    if (size.has(v)) return
    if (visiting.has(v)) fail('pickle.cycle', 'the pickle contains a container that refers to itself')
    if (frames.length >= MAX_DEPTH) fail('pickle.depth', `containers nest deeper than ${MAX_DEPTH}`)
    visiting.add(v)
    frames.push({v, kids: children(v), i: 0, size: 1, depth: 1})
  }
  enter(root)
  while (frames.length) {
    const f = frames[frames.length - 1]!
    if (f.i < f.kids.length) {
      const kid = f.kids[f.i++]!
      if ((kid as unknown) instanceof PyGlobal) enter(kid)
      else if (kid !== null && typeof kid === 'object' && !(kid instanceof Uint8Array) && !(kid instanceof TorchTensor)) {
        if (size.has(kid)) {
          f.size += size.get(kid)!
          f.depth = Math.max(f.depth, depth.get(kid)! + 1)
        } else {
          enter(kid)
        }
      } else f.size += 1
      if (f.size > MAX_EXPANDED_NODES) fail('pickle.bomb', `the pickle expands to more than ${MAX_EXPANDED_NODES} values through shared references`)
      continue
    }
    frames.pop()
    visiting.delete(f.v)
    size.set(f.v, f.size)
    depth.set(f.v, f.depth)
    if (f.depth > MAX_DEPTH) fail('pickle.depth', `containers nest deeper than ${MAX_DEPTH}`)
    const parent = frames[frames.length - 1]
    if (parent) {
      parent.size += f.size
      parent.depth = Math.max(parent.depth, f.depth + 1)
      if (parent.size > MAX_EXPANDED_NODES) fail('pickle.bomb', `the pickle expands to more than ${MAX_EXPANDED_NODES} values through shared references`)
    }
  }
}
