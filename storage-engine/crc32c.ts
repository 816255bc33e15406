/**
 * CRC-32C (Castagnoli), slicing-by-8, in plain TypeScript.
 *
 * Every record, segment header, metadata file and image page in Strata carries one.
 * `zlib.crc32` computes the IEEE polynomial, which detects fewer error patterns in
 * storage blocks; CRC-32C is what iSCSI, ext4 metadata and most log formats use.
 *
 * Speed matters (log replay and every append checksum whole pages). Ranges of NATIVE_BYTES_MIN
 * bytes or more go to `@node-rs/crc32` (SIMD, about 3.5× the plain code on this class of machine);
 * shorter ones stay in TypeScript, where a call costs less than crossing into native code. If
 * the native module cannot load (an unsupported platform), everything runs in TypeScript: the
 * same values, slower. The TypeScript body reads 32-bit little-endian words through a
 * Uint32Array view and looks up one flat table of 8 × 256 entries.
 */
const POLY = 0x82f63b78;

/** T[k * 256 + b]: slicing-by-8 tables, flattened into one array. */
const T: Int32Array = (() => {
  const t = new Int32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let j = 0; j < 8; j++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[i] = c;
  }
  for (let i = 0; i < 256; i++) {
    for (let k = 1; k < 8; k++) {
      const prev = t[(k - 1) * 256 + i]!;
      t[k * 256 + i] = (prev >>> 8) ^ t[prev & 0xff]!;
    }
  }
  return t;
})();

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Ranges at least this long use the native implementation when it is available. */
export const NATIVE_BYTES_MIN = 512;

type NativeCrc = (input: Buffer, initialState?: number) => number;

const native: NativeCrc | undefined = (() => {
  if (process.env.STRATA_CRC32C_NATIVE === '0') return undefined;
  try {
    const mod = require('@node-rs/crc32') as { crc32c?: NativeCrc };
    const f = mod.crc32c;
    // Check it against a known vector before trusting it.
    return f && f(Buffer.from('123456789')) === 0xe3069283 ? f : undefined;
  } catch {
    return undefined;
  }
})();

/** True when ranges of NATIVE_BYTES_MIN bytes or more are checksummed in native code. */
export const CRC32C_NATIVE: boolean = native !== undefined;

/** Continues a CRC-32C over `data[start, end)`; pass the previous result as `crc` to chain. */
export function crc32c(data: Uint8Array, crc = 0, start = 0, end = data.length): number {
  if (native !== undefined && end - start >= NATIVE_BYTES_MIN) {
    return native(Buffer.from(data.buffer, data.byteOffset + start, end - start), crc) >>> 0;
  }
  return crc32cPortable(data, crc, start, end);
}

/** The TypeScript implementation (also the reference the native one is tested against). */
export function crc32cPortable(data: Uint8Array, crc = 0, start = 0, end = data.length): number {
  let c = ~crc;
  let i = start;
  // Bytes up to a 4-byte boundary of the underlying buffer.
  while (i < end && ((data.byteOffset + i) & 3) !== 0) c = T[(c ^ data[i++]!) & 0xff]! ^ (c >>> 8);
  const words = (end - i) >>> 3;
  if (words > 0 && LITTLE_ENDIAN) {
    const w = new Uint32Array(data.buffer, data.byteOffset + i, words * 2);
    const n = words * 2;
    for (let k = 0; k < n; k += 2) {
      const a = w[k]! ^ c;
      const b = w[k + 1]!;
      c =
        T[1792 + (a & 0xff)]! ^ T[1536 + ((a >>> 8) & 0xff)]! ^ T[1280 + ((a >>> 16) & 0xff)]! ^ T[1024 + (a >>> 24)]! ^
        T[768 + (b & 0xff)]! ^ T[512 + ((b >>> 8) & 0xff)]! ^ T[256 + ((b >>> 16) & 0xff)]! ^ T[b >>> 24]!;
    }
    i += words * 8;
  }
  while (i < end) c = T[(c ^ data[i++]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Combining: crc(A ‖ B) from crc(A), crc(B) and the length of B, without reading A or B.
// This lets a payload be checksummed on another thread (from a slab handle) while the record
// header around it is checksummed where the record is encoded.
// ---------------------------------------------------------------------------------------------

/** Multiplies a 32×32 GF(2) matrix (rows as words) by a vector. */
function gf2Times(mat: Uint32Array, vec: number): number {
  let sum = 0;
  let i = 0;
  let v = vec >>> 0;
  while (v !== 0) {
    if (v & 1) sum ^= mat[i]!;
    v >>>= 1;
    i++;
  }
  return sum >>> 0;
}

function gf2Square(square: Uint32Array, mat: Uint32Array): void {
  for (let n = 0; n < 32; n++) square[n] = gf2Times(mat, mat[n]!);
}

/** The operator that appends `len` zero bytes to a CRC register (zlib's crc32_combine method). */
function zerosOperator(len: number): Uint32Array {
  // odd: one zero bit; then squared to 2, 4, 8 bits… and multiplied in where len has a 1 bit.
  let odd = new Uint32Array(32);
  let even = new Uint32Array(32);
  odd[0] = POLY;
  let row = 1;
  for (let n = 1; n < 32; n++) {
    odd[n] = row;
    row <<= 1;
  }
  gf2Square(even, odd); // 2 zero bits
  gf2Square(odd, even); // 4 zero bits
  // result = identity
  let result = new Uint32Array(32);
  for (let n = 0; n < 32; n++) result[n] = (1 << n) >>> 0;
  let remaining = len;
  while (remaining > 0) {
    gf2Square(even, odd); // 8, 32, 128… zero bits: one zero byte, 4 bytes, 16 bytes…
    [odd, even] = [even, odd];
    if (remaining % 2 === 1) {
      const next = new Uint32Array(32);
      for (let n = 0; n < 32; n++) next[n] = gf2Times(odd, result[n]!);
      result = next;
    }
    remaining = Math.floor(remaining / 2);
  }
  return result;
}

/** Operators of recently seen lengths (payload sizes repeat: N pages of a fixed page size). */
const ZEROS_CACHE_ENTRIES_MAX = 512;
const zerosCache = new Map<number, Uint32Array>();

/**
 * CRC-32C of the concatenation A ‖ B, given crcA = crc32c(A), crcB = crc32c(B) and the length
 * of B in bytes. Costs a 32×32 bit-matrix product (the operator for a length is cached).
 */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
  if (!Number.isSafeInteger(lengthB) || lengthB < 0) throw new RangeError(`lengthB must be a non-negative integer, got ${lengthB}`);
  if (lengthB === 0) return crcA >>> 0;
  let op = zerosCache.get(lengthB);
  if (op === undefined) {
    op = zerosOperator(lengthB);
    if (zerosCache.size >= ZEROS_CACHE_ENTRIES_MAX) zerosCache.delete(zerosCache.keys().next().value!);
    zerosCache.set(lengthB, op);
  }
  return (gf2Times(op, crcA) ^ crcB) >>> 0;
}
