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
