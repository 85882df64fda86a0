// A small MessagePack decoder for the price frames of SPEC §7: a map {i, p, s, q, d?} or an array
// of them. It reads every type those frames can hold (maps, arrays, unsigned and signed ints,
// float32/64, strings, nil, booleans); anything else is an error, never a guess.

const utf8 = new TextDecoder("utf-8", { fatal: true });

export class MsgpackError extends Error {}

export function decode(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;

  function need(count) {
    if (at + count > bytes.length) throw new MsgpackError(`truncated at byte ${at}`);
    const start = at;
    at += count;
    return start;
  }
  const u8 = () => view.getUint8(need(1));
  const u16 = () => view.getUint16(need(2));
  const u32 = () => view.getUint32(need(4));
  const u64 = () => {
    const value = view.getBigUint64(need(8));
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new MsgpackError("uint64 above 2^53");
    return Number(value);
  };
  const i64 = () => {
    const value = view.getBigInt64(need(8));
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new MsgpackError("int64 outside ±2^53");
    }
    return Number(value);
  };
  const str = (length) => utf8.decode(bytes.subarray(need(length), at));
  const array = (length) => Array.from({ length }, () => value());
  const map = (length) => {
    const out = {};
    for (let n = 0; n < length; n += 1) {
      const key = value();
      if (typeof key !== "string" && typeof key !== "number") {
        throw new MsgpackError("a map key must be a string or a number");
      }
      out[key] = value();
    }
    return out;
  };

  function value() {
    const type = u8();
    if (type <= 0x7f) return type; // positive fixint
    if (type >= 0xe0) return type - 0x100; // negative fixint
    if (type >= 0x80 && type <= 0x8f) return map(type & 0x0f);
    if (type >= 0x90 && type <= 0x9f) return array(type & 0x0f);
    if (type >= 0xa0 && type <= 0xbf) return str(type & 0x1f);
    switch (type) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xca: return view.getFloat32(need(4));
      case 0xcb: return view.getFloat64(need(8));
      case 0xcc: return u8();
      case 0xcd: return u16();
      case 0xce: return u32();
      case 0xcf: return u64();
      case 0xd0: return view.getInt8(need(1));
      case 0xd1: return view.getInt16(need(2));
      case 0xd2: return view.getInt32(need(4));
      case 0xd3: return i64();
      case 0xd9: return str(u8());
      case 0xda: return str(u16());
      case 0xdb: return str(u32());
      case 0xdc: return array(u16());
      case 0xdd: return array(u32());
      case 0xde: return map(u16());
      case 0xdf: return map(u32());
      default: throw new MsgpackError(`unsupported type 0x${type.toString(16)} at byte ${at - 1}`);
    }
  }

  const result = value();
  if (at !== bytes.length) throw new MsgpackError(`${bytes.length - at} bytes after the value`);
  return result;
}
