/**
 * Codec of the payload of a `RecordKind.PageWrite` log record: one or more (page, data) pairs
 * that a shard applies atomically. A vectored write of many pages is one record.
 *
 * Layout (little-endian), `count` = number of pairs:
 *
 * ```
 * offset               size            field
 * 0                    4               u32 magic 0x31575053 ("SPW1")
 * 4                    4               u32 pageSize (4096 or 8192)
 * 8                    4               u32 count (1 .. 1 MiB / pageSize: 256 or 128)
 * 12                   4               u32 flags: bit 0 (WRITE_ID_FLAG) a write id follows the data; others 0
 * 16                   8 * count       u64 page numbers, in the order given by the writer
 * 16 + 8 * count       pageSize*count  page data, pair i at 16 + 8 * count + i * pageSize
 * end of data          16 if flagged   the write id (WRITE_ID_BYTES) the client gave the write
 * ```
 *
 * The payload length must be exactly `16 + count * (8 + pageSize)`, plus 16 with a write id; the
 * record's own CRC-32C (log.ts) covers the payload, so the codec carries no checksum of its own.
 * The write id lets a shard recognize a write sent to it again (actors/write-ids.ts); a record
 * written before write ids existed has the flag clear and reads the same.
 *
 * Duplicate pages in one record are allowed and the LAST pair for a page wins: applying the
 * pairs in order gives that result, and `pageDataOfPageWrite` returns the last occurrence.
 */
import { WRITE_ID_BYTES } from '../messages/api';
import { crc32c, crc32cCombine } from './crc32c';
import { assert, StorageError } from './errors';
import { combinePageCrcs } from './page-data-crc';
import { RECORD_PAYLOAD_BYTES_MAX } from './record';
import { copyBytes } from './slab';

/** Magic of a page-write payload, "SPW1" read as a little-endian u32. */
export const PAGE_WRITE_MAGIC = 0x31575053;
/** Bytes before the page-number array. */
export const PAGE_WRITE_HEADER_BYTES = 16;
/** Most pages one PageWrite record may carry (a 1 MiB vectored write of 4 KiB pages). */
export const PAGE_WRITE_PAGES_MAX = 256;
/** Most page data bytes one PageWrite record may carry (256 pages of 4 KiB, 128 of 8 KiB). */
export const PAGE_WRITE_DATA_BYTES_MAX = 1024 * 1024;
/** Page numbers are stored as u64 but must stay exact in a JS number. */
export const PAGE_NUMBER_MAX = Number.MAX_SAFE_INTEGER;
/** Bytes of a write id: random, given by the client, the same in every try of one write. */
export { WRITE_ID_BYTES };
/** The flag of a page-write (and page-zero) payload that ends with a write id. */
export const WRITE_ID_FLAG = 1;

/** One (page, data) pair of a page write. `data.length` must equal the page size. */
export interface PageWriteEntry {
  page: number;
  data: Uint8Array;
}

/** True for the page sizes Strata supports. */
export function isPageSize(pageSize: number): pageSize is 4096 | 8192 {
  return pageSize === 4096 || pageSize === 8192;
}

/** Payload bytes of a page write of `count` pages of `pageSize` bytes, with a write id if `withId`. */
export function pageWriteBytes(pageSize: number, count: number, withId = false): number {
  return PAGE_WRITE_HEADER_BYTES + count * (8 + pageSize) + (withId ? WRITE_ID_BYTES : 0);
}

/** Throws StorageError `bad_request` unless `writeId` is WRITE_ID_BYTES bytes. */
export function checkWriteId(writeId: Uint8Array): void {
  if (!(writeId instanceof Uint8Array) || writeId.length !== WRITE_ID_BYTES) {
    throw new StorageError('bad_request', `a write id is ${WRITE_ID_BYTES} bytes, got ${writeId instanceof Uint8Array ? writeId.length : typeof writeId}`);
  }
}

/**
 * Encodes a page write, with `writeId` at its end if given. Throws StorageError `bad_request` on a
 * bad page size, an empty or too long list, a page number that is not a non-negative safe
 * integer, data of the wrong length, or a write id not of WRITE_ID_BYTES bytes.
 */
export function encodePageWrite(pageSize: number, pages: readonly PageWriteEntry[], into?: Uint8Array, writeId?: Uint8Array): Uint8Array {
  if (!isPageSize(pageSize)) throw new StorageError('bad_request', `page size ${pageSize} is not 4096 or 8192`, { pageSize });
  const count = pages.length;
  if (count < 1 || count > PAGE_WRITE_PAGES_MAX) {
    throw new StorageError('bad_request', `a page write carries 1..${PAGE_WRITE_PAGES_MAX} pages, got ${count}`, { count });
  }
  if (count * pageSize > PAGE_WRITE_DATA_BYTES_MAX) {
    throw new StorageError('bad_request', `page write of ${count} pages of ${pageSize} bytes exceeds ${PAGE_WRITE_DATA_BYTES_MAX} bytes`, { count });
  }
  if (writeId !== undefined) checkWriteId(writeId);
  const bytes = pageWriteBytes(pageSize, count, writeId !== undefined);
  assert(bytes <= RECORD_PAYLOAD_BYTES_MAX, 'a page write fits a record payload', { bytes });
  if (into !== undefined && into.length < bytes) {
    throw new StorageError('bad_request', `output buffer of ${into.length} bytes is smaller than the ${bytes} bytes of the page write`);
  }
  const out = into === undefined ? new Uint8Array(bytes) : into.subarray(0, bytes);
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  dv.setUint32(0, PAGE_WRITE_MAGIC, true);
  dv.setUint32(4, pageSize, true);
  dv.setUint32(8, count, true);
  dv.setUint32(12, writeId === undefined ? 0 : WRITE_ID_FLAG, true);
  const dataStart = pageWriteDataStart(count);
  for (let i = 0; i < count; i++) {
    const entry = pages[i]!;
    const page = entry.page;
    if (!Number.isSafeInteger(page) || page < 0) {
      throw new StorageError('bad_request', `page number ${String(page)} is not a non-negative integer`, { index: i });
    }
    if (!(entry.data instanceof Uint8Array) || entry.data.length !== pageSize) {
      throw new StorageError('bad_request', `data of page ${page} is not ${pageSize} bytes`, { index: i, page });
    }
    writeU64(dv, PAGE_WRITE_HEADER_BYTES + 8 * i, page);
    copyBytes(out, entry.data, dataStart + i * pageSize);
  }
  if (writeId !== undefined) out.set(writeId, dataStart + count * pageSize);
  return out;
}

/** Validated header of a page-write payload. */
export interface PageWriteHeader {
  pageSize: 4096 | 8192;
  count: number;
  /** The payload ends with a write id. */
  withId: boolean;
}

/**
 * Validates the structure of a payload (magic, page size, count, exact length, page numbers)
 * and returns its header. Throws StorageError `corruption` on any mismatch: a payload comes from
 * a log record whose CRC matched, so a malformed one means a bug or damage, not user input.
 * If `pageSize` is given, the payload's page size must equal it.
 */
export function readPageWriteHeader(payload: Uint8Array, pageSize?: number): PageWriteHeader {
  if (payload.length < PAGE_WRITE_HEADER_BYTES) {
    throw new StorageError('corruption', `page write payload of ${payload.length} bytes is shorter than its header`);
  }
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const magic = dv.getUint32(0, true);
  if (magic !== PAGE_WRITE_MAGIC) throw new StorageError('corruption', `page write magic 0x${magic.toString(16)} is wrong`);
  const size = dv.getUint32(4, true);
  if (!isPageSize(size)) throw new StorageError('corruption', `page write page size ${size} is not 4096 or 8192`);
  if (pageSize !== undefined && size !== pageSize) {
    throw new StorageError('corruption', `page write page size ${size} differs from the store's ${pageSize}`, { pageSize: size });
  }
  const count = dv.getUint32(8, true);
  if (count < 1 || count * size > PAGE_WRITE_DATA_BYTES_MAX) {
    throw new StorageError('corruption', `page write count ${count} out of 1..${PAGE_WRITE_DATA_BYTES_MAX / size}`);
  }
  const flags = dv.getUint32(12, true);
  if ((flags & ~WRITE_ID_FLAG) !== 0) throw new StorageError('corruption', `page write flags 0x${flags.toString(16)} has unknown bits`);
  const withId = flags === WRITE_ID_FLAG;
  const expected = pageWriteBytes(size, count, withId);
  if (payload.length !== expected) {
    throw new StorageError('corruption', `page write payload is ${payload.length} bytes, expected ${expected} for ${count} pages${withId ? ' and a write id' : ''}`);
  }
  return { pageSize: size, count, withId };
}

/**
 * Page numbers of a page write in payload order (duplicates included), without touching the
 * page data. Validates the structure like `readPageWriteHeader`.
 */
export function pagesOfPageWrite(payload: Uint8Array, pageSize?: number): number[] {
  const { count } = readPageWriteHeader(payload, pageSize);
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const pages = new Array<number>(count);
  for (let i = 0; i < count; i++) pages[i] = readU64(dv, PAGE_WRITE_HEADER_BYTES + 8 * i);
  return pages;
}

/** Where the data of a page write of `count` pages starts in its payload (page i's at + i × page size). */
export function pageWriteDataStart(count: number): number {
  return PAGE_WRITE_HEADER_BYTES + 8 * count;
}

/**
 * The CRC-32C of a page-write payload of `count` pages of `pageSize` bytes (`encodePageWrite`),
 * made from `dataCrc`, the CRC-32C of its pages' data in order (PAGE_DATA_CRC, as a client sent
 * it and its shard's host checked it against the pages it received), and the payload's bytes
 * around that data: a pass over the header, the page numbers and the write id, not over the
 * data. A payload whose data is not the data `dataCrc` was made of (a page changed in memory
 * between that check and the copy into the payload) fails the checksum this gives.
 */
export function pageWritePayloadCrc(payload: Uint8Array, pageSize: number, count: number, dataCrc: number): number {
  const start = pageWriteDataStart(count);
  const end = start + count * pageSize;
  assert(end <= payload.length, 'the page data lies within the payload', { end, length: payload.length });
  return crc32c(payload, crc32cCombine(crc32c(payload, 0, 0, start), dataCrc, end - start), end, payload.length);
}

/** A page-write payload's page numbers, each page's CRC-32C and the payload's (`pageWriteCrcs`). */
export interface PageWriteCrcs {
  /** Page numbers in payload order (duplicates included). */
  pages: number[];
  /** crcs[i]: the CRC-32C of the data of the i-th pair. */
  crcs: number[];
  /** The CRC-32C of the whole payload, made from `crcs` (`pageWritePayloadCrc`). */
  payloadCrc: number;
}

/**
 * The checksum of each page of a page-write payload and of the whole payload made from them: one
 * pass over the data. A reader that checks the payload against its record's checksum with
 * `payloadCrc` may then use each page's checksum as that of its data as stored. Undefined for a
 * payload that is not a well-formed page write of `pageSize` (its record's own check then tells
 * damage from a malformed record).
 */
export function pageWriteCrcs(payload: Uint8Array, pageSize: number): PageWriteCrcs | undefined {
  let pages: number[];
  try {
    pages = pagesOfPageWrite(payload, pageSize);
  } catch {
    return undefined;
  }
  const crcs = pageWriteDataCrcs(payload, pageSize, pages.length);
  return { pages, crcs, payloadCrc: pageWritePayloadCrc(payload, pageSize, pages.length, combinePageCrcs(crcs, pageSize)) };
}

/** The CRC-32C of the data of each of the `count` pages of a page-write payload, in payload order. */
export function pageWriteDataCrcs(payload: Uint8Array, pageSize: number, count: number): number[] {
  const start = pageWriteDataStart(count);
  const crcs = new Array<number>(count);
  for (let i = 0; i < count; i++) crcs[i] = crc32c(payload, 0, start + i * pageSize, start + (i + 1) * pageSize);
  return crcs;
}

/**
 * Decodes a page write into its pairs, in payload order; `data` are views into `payload` (no
 * copy), valid as long as the payload is. Apply them in order (the last pair for a page wins).
 * Throws StorageError `corruption` on a malformed payload or a page size other than `pageSize`.
 */
export function decodePageWrite(payload: Uint8Array, pageSize: number): PageWriteEntry[] {
  const pages = pagesOfPageWrite(payload, pageSize);
  const dataStart = pageWriteDataStart(pages.length);
  const out = new Array<PageWriteEntry>(pages.length);
  for (let i = 0; i < pages.length; i++) {
    const start = dataStart + i * pageSize;
    out[i] = { page: pages[i]!, data: payload.subarray(start, start + pageSize) };
  }
  return out;
}

/**
 * The data (a view, no copy) the page write leaves in `page`: the last pair for that page, or
 * undefined if the write does not touch it. Validates like `decodePageWrite`.
 */
export function pageDataOfPageWrite(payload: Uint8Array, pageSize: number, page: number): Uint8Array | undefined {
  const pages = pagesOfPageWrite(payload, pageSize);
  for (let i = pages.length - 1; i >= 0; i--) {
    if (pages[i] === page) {
      const start = pageWriteDataStart(pages.length) + i * pageSize;
      return payload.subarray(start, start + pageSize);
    }
  }
  return undefined;
}

/**
 * The write id a page-write payload ends with (a view, no copy), or undefined if it has none.
 * Reads the flags and the length only: for a payload whose record checksum matched.
 */
export function writeIdOfPageWrite(payload: Uint8Array): Uint8Array | undefined {
  if (payload.length < PAGE_WRITE_HEADER_BYTES + WRITE_ID_BYTES) return undefined;
  const flags = new DataView(payload.buffer, payload.byteOffset, PAGE_WRITE_HEADER_BYTES).getUint32(12, true);
  return flags === WRITE_ID_FLAG ? payload.subarray(payload.length - WRITE_ID_BYTES) : undefined;
}

/** Writes a non-negative safe integer as a little-endian u64. */
export function writeU64(dv: DataView, offset: number, value: number): void {
  dv.setUint32(offset, value % 0x1_0000_0000, true);
  dv.setUint32(offset + 4, Math.floor(value / 0x1_0000_0000), true);
}

/** Reads a little-endian u64; throws StorageError `corruption` if it exceeds 2^53 - 1. */
export function readU64(dv: DataView, offset: number): number {
  const lo = dv.getUint32(offset, true);
  const hi = dv.getUint32(offset + 4, true);
  if (hi > 0x1fffff) throw new StorageError('corruption', `u64 at offset ${offset} exceeds 2^53 - 1`, { offset });
  return hi * 0x1_0000_0000 + lo;
}
