/**
 * The pickler: turns Python values (see values.ts) into the protocol-2 byte stream `torch.save`
 * writes, using only opcodes PyTorch's weights-only unpickler accepts (plus BINFLOAT for float
 * counters, which torch ≥ 2.0's accepts). Tensors become `_rebuild_tensor_v2` calls over
 * persistent-id storages; the caller names each storage's key.
 */
import {FormatError} from '../../errors.js'
import {PyDict, PyTuple, type PyValue, storageClassFor, type TorchStorage, TorchTensor} from './values.js'

const PROTO = 0x80
const STOP = 0x2e
const MARK = 0x28
const EMPTY_DICT = 0x7d
const EMPTY_LIST = 0x5d
const EMPTY_TUPLE = 0x29
const TUPLE = 0x74
const TUPLE1 = 0x85
const TUPLE2 = 0x86
const TUPLE3 = 0x87
const APPENDS = 0x65
const SETITEMS = 0x75
const BININT = 0x4a
const BININT1 = 0x4b
const BININT2 = 0x4d
const LONG1 = 0x8a
const BINFLOAT = 0x47
const NONE = 0x4e
const NEWTRUE = 0x88
const NEWFALSE = 0x89
const BINUNICODE = 0x58
const BINPUT = 0x71
const LONG_BINPUT = 0x72
const BINGET = 0x68
const LONG_BINGET = 0x6a
const GLOBAL = 0x63
const REDUCE = 0x52
const BUILD = 0x62
const BINPERSID = 0x51
/** pickle's batch size for APPENDS/SETITEMS (CPython's _BATCHSIZE). */
const BATCH = 1000

class ByteSink {
  private parts: Buffer[] = []
  private cur = Buffer.alloc(64 * 1024)
  private n = 0

  byte(b: number): void {
    if (this.n === this.cur.byteLength) this.spill()
    this.cur[this.n++] = b
  }

  bytes(b: Uint8Array): void {
    for (let i = 0; i < b.byteLength; i++) this.byte(b[i]!)
  }

  private spill(): void {
    this.parts.push(this.cur.subarray(0, this.n))
    this.cur = Buffer.alloc(this.cur.byteLength)
    this.n = 0
  }

  result(): Uint8Array {
    this.spill()
    return Buffer.concat(this.parts)
  }
}

/** Key of each storage in the output archive (`data/<key>`). */
export type StorageKeys = (storage: TorchStorage) => string

export function pickle(value: PyValue, storageKey: StorageKeys): Uint8Array {
  const p = new Pickler(storageKey)
  return p.dump(value)
}

class Pickler {
  private readonly out = new ByteSink()
  private readonly memo = new Map<unknown, number>()

  constructor(private readonly storageKey: StorageKeys) {}

  dump(value: PyValue): Uint8Array {
    this.out.byte(PROTO)
    this.out.byte(2)
    this.save(value, 0)
    this.out.byte(STOP)
    return this.out.result()
  }

  private u32(v: number): void {
    const b = Buffer.alloc(4)
    b.writeUInt32LE(v)
    this.out.bytes(b)
  }

  private put(key: unknown): void {
    const index = this.memo.size
    this.memo.set(key, index)
    if (index < 256) {
      this.out.byte(BINPUT)
      this.out.byte(index)
    } else {
      this.out.byte(LONG_BINPUT)
      this.u32(index)
    }
  }

  private get(key: unknown): boolean {
    const index = this.memo.get(key)
    if (index === undefined) return false
    if (index < 256) {
      this.out.byte(BINGET)
      this.out.byte(index)
    } else {
      this.out.byte(LONG_BINGET)
      this.u32(index)
    }
    return true
  }

  private global(module: string, name: string): void {
    const key = `global:${module}.${name}`
    if (this.get(key)) return
    this.out.byte(GLOBAL)
    this.out.bytes(Buffer.from(`${module}\n${name}\n`, 'latin1'))
    this.put(key)
  }

  private str(s: string): void {
    // Memoized like CPython's pickler, so repeated keys cost a BINGET.
    const key = `str:${s}`
    if (this.get(key)) return
    const b = Buffer.from(s, 'utf8')
    this.out.byte(BINUNICODE)
    this.u32(b.byteLength)
    this.out.bytes(b)
    this.put(key)
  }

  private int(v: bigint): void {
    if (v >= 0n && v < 256n) {
      this.out.byte(BININT1)
      this.out.byte(Number(v))
    } else if (v >= 0n && v < 65536n) {
      this.out.byte(BININT2)
      this.out.byte(Number(v) & 0xff)
      this.out.byte(Number(v) >> 8)
    } else if (v >= -(2n ** 31n) && v < 2n ** 31n) {
      const b = Buffer.alloc(4)
      b.writeInt32LE(Number(v))
      this.out.byte(BININT)
      this.out.bytes(b)
    } else {
      // Two's complement little-endian, shortest form (CPython's encode_long).
      const bytes: number[] = []
      let x = v
      for (;;) {
        bytes.push(Number(x & 0xffn))
        x >>= 8n
        const sign = bytes[bytes.length - 1]! & 0x80
        if ((x === 0n && !sign) || (x === -1n && sign)) break
      }
      this.out.byte(LONG1)
      this.out.byte(bytes.length)
      this.out.bytes(Uint8Array.from(bytes))
    }
  }

  private tuple(items: PyValue[], depth: number): void {
    if (items.length === 0) {
      this.out.byte(EMPTY_TUPLE)
      return
    }
    if (items.length <= 3) {
      for (const item of items) this.save(item, depth + 1)
      this.out.byte([TUPLE1, TUPLE2, TUPLE3][items.length - 1]!)
    } else {
      this.out.byte(MARK)
      for (const item of items) this.save(item, depth + 1)
      this.out.byte(TUPLE)
    }
  }

  private batched<T>(items: T[], write: (item: T) => void, op: number): void {
    for (let i = 0; i < items.length; i += BATCH) {
      const batch = items.slice(i, i + BATCH)
      this.out.byte(MARK)
      for (const item of batch) write(item)
      this.out.byte(op)
    }
  }

  private tensor(t: TorchTensor, depth: number): void {
    if (t.parameter) this.global('torch._utils', '_rebuild_parameter')
    this.global('torch._utils', '_rebuild_tensor_v2')
    this.out.byte(MARK)
    // Persistent id ('storage', torch.<Type>Storage, key, location, numel).
    this.out.byte(MARK)
    this.str('storage')
    this.global('torch', storageClassFor(t.storage.dtype))
    this.str(this.storageKey(t.storage))
    this.str(t.storage.location)
    this.int(BigInt(t.storage.numel))
    this.out.byte(TUPLE)
    this.out.byte(BINPERSID)
    this.int(BigInt(t.offset))
    this.tuple(t.shape.map((d) => BigInt(d)), depth)
    this.tuple(t.stride.map((d) => BigInt(d)), depth)
    this.out.byte(t.requiresGrad && !t.parameter ? NEWTRUE : NEWFALSE)
    this.emptyOrderedDict()
    this.out.byte(TUPLE)
    this.out.byte(REDUCE)
    if (t.parameter) {
      this.out.byte(t.requiresGrad ? NEWTRUE : NEWFALSE)
      this.emptyOrderedDict()
      this.out.byte(TUPLE3)
      this.out.byte(REDUCE)
    }
  }

  private emptyOrderedDict(): void {
    this.global('collections', 'OrderedDict')
    this.out.byte(EMPTY_TUPLE)
    this.out.byte(REDUCE)
  }

  private save(v: PyValue, depth: number): void {
    if (depth > 1000) throw new FormatError('pickle.depth', 'value nests too deeply to pickle')
    if (v === null) this.out.byte(NONE)
    else if (v === true) this.out.byte(NEWTRUE)
    else if (v === false) this.out.byte(NEWFALSE)
    else if (typeof v === 'bigint') this.int(v)
    else if (typeof v === 'number') {
      const b = Buffer.alloc(8)
      b.writeDoubleBE(v)
      this.out.byte(BINFLOAT)
      this.out.bytes(b)
    } else if (typeof v === 'string') this.str(v)
    else if (v instanceof Uint8Array) throw new FormatError('pickle.bytes', 'bytes values cannot be written in a weights-only checkpoint')
    else if (v instanceof TorchTensor) this.tensor(v, depth)
    else if (v instanceof PyTuple) this.tuple(v.items, depth)
    else if ((Array.isArray(v) || v instanceof PyDict) && this.get(v)) {
      // the same list/dict object again: a memo reference, as pickle writes it
    } else if (Array.isArray(v)) {
      this.out.byte(EMPTY_LIST)
      this.put(v)
      this.batched(v, (item) => this.save(item, depth + 1), APPENDS)
    } else if (v instanceof PyDict) {
      if (v.ordered) this.emptyOrderedDict()
      else this.out.byte(EMPTY_DICT)
      this.put(v)
      this.batched([...v.map.entries()], ([k, item]) => {
        this.save(typeof k === 'number' ? k : (k as PyValue), depth + 1)
        this.save(item, depth + 1)
      }, SETITEMS)
      if (v.ordered && v.state !== undefined) {
        this.save(v.state, depth + 1)
        this.out.byte(BUILD)
      }
    } else throw new FormatError('pickle.type', `cannot pickle a value of type ${typeof v}`)
  }
}
