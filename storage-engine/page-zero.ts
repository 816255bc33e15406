/**
 * Codec of the payload of a `RecordKind.PageZero` log record: a range of volume pages made
 * zeros, atomically. The shard that writes it zeros its own pages in the range; the volume's
 * other pages in it belong to other shards (each gets its own record).
 *
 * Layout (little-endian), 24 bytes, or 40 with a write id:
 *
 * ```
 * offset  size  field
 * 0       4     u32 magic 0x315a5053 ("SPZ1")
 * 4       4     u32 flags: bit 0 (WRITE_ID_FLAG) a write id follows; others 0
 * 8       8     u64 first page
 * 16      8     u64 count, >= 1; first + count <= 2^53 - 1
 * 24      16    the write id (WRITE_ID_BYTES), if flagged (as a page write's, page-write.ts)
 * ```
 *
 * The record carries no page data, so a range of any length costs one small record: what makes
 * zeroing (NBD WRITE_ZEROES and TRIM, `page.zero`) cheap. The record's own CRC-32C (log.ts)
 * covers the payload.
 */
import { StorageError } from './errors';
import { WRITE_ID_BYTES, WRITE_ID_FLAG, checkWriteId, readU64, writeU64 } from './page-write';

/** Magic of a page-zero payload, "SPZ1" read as a little-endian u32. */
export const PAGE_ZERO_MAGIC = 0x315a5053;
/** Bytes of a page-zero payload without a write id. */
export const PAGE_ZERO_BYTES = 24;

/** A range of pages: `first`..`first + count - 1`. */
export interface PageRange {
  first: number;
  count: number;
}

/**
 * Encodes a page-zero payload, with `writeId` at its end if given. Throws StorageError
 * `bad_request` on a range that is not one, or a write id not of WRITE_ID_BYTES bytes.
 */
export function encodePageZero(range: PageRange, writeId?: Uint8Array): Uint8Array {
  const { first, count } = range;
  if (!Number.isSafeInteger(first) || first < 0) throw new StorageError('bad_request', `first page ${String(first)} is not a non-negative integer`);
  if (!Number.isSafeInteger(count) || count < 1 || !Number.isSafeInteger(first + count)) {
    throw new StorageError('bad_request', `page count ${String(count)} is not a positive integer with first + count < 2^53`);
  }
  if (writeId !== undefined) checkWriteId(writeId);
  const out = new Uint8Array(PAGE_ZERO_BYTES + (writeId === undefined ? 0 : WRITE_ID_BYTES));
  const dv = new DataView(out.buffer);
  dv.setUint32(0, PAGE_ZERO_MAGIC, true);
  dv.setUint32(4, writeId === undefined ? 0 : WRITE_ID_FLAG, true);
  writeU64(dv, 8, first);
  writeU64(dv, 16, count);
  if (writeId !== undefined) out.set(writeId, PAGE_ZERO_BYTES);
  return out;
}

/** True if `payload` starts with the page-zero magic (a payload of another kind does not). */
export function isPageZero(payload: Uint8Array): boolean {
  return payload.length >= 4 && new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0, true) === PAGE_ZERO_MAGIC;
}

/**
 * Decodes a page-zero payload. Throws StorageError `corruption` on any mismatch: a payload comes
 * from a log record whose CRC matched, so a malformed one means a bug or damage.
 */
export function decodePageZero(payload: Uint8Array): PageRange {
  if (payload.length !== PAGE_ZERO_BYTES && payload.length !== PAGE_ZERO_BYTES + WRITE_ID_BYTES) {
    throw new StorageError('corruption', `page zero payload is ${payload.length} bytes, expected ${PAGE_ZERO_BYTES} (${PAGE_ZERO_BYTES + WRITE_ID_BYTES} with a write id)`);
  }
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const magic = dv.getUint32(0, true);
  if (magic !== PAGE_ZERO_MAGIC) throw new StorageError('corruption', `page zero magic 0x${magic.toString(16)} is wrong`);
  const flags = dv.getUint32(4, true);
  if ((flags & ~WRITE_ID_FLAG) !== 0) throw new StorageError('corruption', `page zero flags 0x${flags.toString(16)} has unknown bits`);
  const expected = PAGE_ZERO_BYTES + (flags === WRITE_ID_FLAG ? WRITE_ID_BYTES : 0);
  if (payload.length !== expected) throw new StorageError('corruption', `page zero payload is ${payload.length} bytes, expected ${expected}`);
  const first = readU64(dv, 8);
  const count = readU64(dv, 16);
  if (count < 1 || !Number.isSafeInteger(first + count)) throw new StorageError('corruption', `page zero range ${first} + ${count} is not a range`);
  return { first, count };
}

/**
 * The write id a page-zero payload ends with (a view, no copy), or undefined if it has none.
 * Reads the flags and the length only: for a payload whose record checksum matched.
 */
export function writeIdOfPageZero(payload: Uint8Array): Uint8Array | undefined {
  if (payload.length !== PAGE_ZERO_BYTES + WRITE_ID_BYTES) return undefined;
  const flags = new DataView(payload.buffer, payload.byteOffset, 8).getUint32(4, true);
  return flags === WRITE_ID_FLAG ? payload.subarray(PAGE_ZERO_BYTES) : undefined;
}
