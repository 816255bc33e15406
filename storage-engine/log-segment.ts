/**
 * The on-disk format of a shard log segment and its in-memory index.
 *
 * Format version 1, described byte for byte in docs/storage-format.md:
 * - a segment file `seg-<baseLsn as 16 lower-case hex digits>.log` starts with a 64-byte header;
 * - then records, each a 32-byte header + payload, padded with zeros to a multiple of 8 bytes;
 *   a record's header carries a check of its own (RECORD_HEADER_CHECK_OFFSET) and a census of
 *   its payload's zeros (RECORD_ZERO_CENSUS_OFFSET), in fields that were reserved (zero) before,
 *   so the format version is unchanged: older records read as before.
 * All integers are little-endian; u64 values are written as two u32 (low word first) and must
 * stay below 2^53.
 *
 * This module holds only pure encoding/decoding and the index; SegmentLog (log.ts) does the IO.
 */
import { crc32c, crc32cCombine } from './crc32c';
import { SECTOR_BYTES, zeroCensus, type FileHandle } from './disk';
import { assert } from './errors';
import { RECORD_PAYLOAD_BYTES_MAX } from './record';

/** Version of the segment and record format written by this code. */
export const LOG_FORMAT_VERSION = 1;
/** First 8 bytes of every segment file. */
export const SEGMENT_MAGIC = 'STRLOGS1';
/** Size of the segment header in bytes. */
export const SEGMENT_HEADER_BYTES = 64;
/** Size of a record header in bytes. */
export const RECORD_HEADER_BYTES = 32;
/**
 * Offset in a record header of its header check: the CRC-32C of the header's bytes 0..3 and
 * 8..27 (all but the record's CRC and the check itself), with bit 0 set so that it is never 0.
 * Records written before the check was introduced hold 0 there (a reserved field then).
 */
export const RECORD_HEADER_CHECK_OFFSET = 28;
/**
 * Offset in a record header of its zero census (u24, bytes 25..27, inside what the header check
 * covers): where its payload held zeros as written, so that recovery can tell a last record
 * whose payload rotted from one a crash cut short (`judgeZeroCensus`). Bits 0..11: 1 + the
 * payload's sectors holding only zeros (`zeroCensus`: sectors of the file, so it depends on where
 * the record lies); bits 12..23: (1 + the offset in the payload of its last non-zero byte) mod
 * 4096. 0 in records written before the census (a reserved field then).
 */
export const RECORD_ZERO_CENSUS_OFFSET = 25;
const CENSUS_LAST_MOD = 4096;
/** Records start at and are padded to multiples of this many bytes. */
export const RECORD_ALIGN_BYTES = 8;
/** Default largest segment file size. */
export const SEGMENT_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;
/** Smallest allowed segmentBytesMax. */
export const SEGMENT_BYTES_MIN = 4 * 1024;
/** Largest allowed segmentBytesMax (record offsets are kept as u32). */
export const SEGMENT_BYTES_LIMIT = 1024 * 1024 * 1024;
/** Largest LSN or term (values are u64 on disk but must be exact JavaScript numbers). */
export const LOG_VALUE_MAX = Number.MAX_SAFE_INTEGER;
/** Largest record kind (stored in one byte). */
export const RECORD_KIND_MAX = 255;

const TWO_POW_32 = 4294967296;
/** hi word of a u64 must not exceed this for the value to stay below 2^53. */
const U64_HI_MAX = 0x1fffff;
const MAGIC_BYTES = Uint8Array.from(SEGMENT_MAGIC, (c) => c.charCodeAt(0));
const HEADER_CRC_OFFSET = SEGMENT_HEADER_BYTES - 4;
const SEGMENT_NAME_RE = /^seg-([0-9a-f]{16})\.log$/;

/** Bytes a record with `payloadBytes` of payload takes in a segment, header and padding included. */
export function recordBytes(payloadBytes: number): number {
  const raw = RECORD_HEADER_BYTES + payloadBytes;
  return raw + ((RECORD_ALIGN_BYTES - (raw % RECORD_ALIGN_BYTES)) % RECORD_ALIGN_BYTES);
}

/** Largest record, in bytes on disk. */
export const RECORD_BYTES_MAX = recordBytes(RECORD_PAYLOAD_BYTES_MAX);

/** File name of the segment whose first record has `baseLsn`. */
export function segmentName(baseLsn: number): string {
  assert(Number.isSafeInteger(baseLsn) && baseLsn >= 1, 'segment base LSN is a positive safe integer', { baseLsn });
  return `seg-${baseLsn.toString(16).padStart(16, '0')}.log`;
}

/** Base LSN encoded in a segment file name, or undefined if `name` is not a segment name. */
export function parseSegmentName(name: string): number | undefined {
  const m = SEGMENT_NAME_RE.exec(name);
  if (m === null) return undefined;
  const base = parseInt(m[1]!, 16);
  if (!Number.isSafeInteger(base) || base < 1) return undefined;
  return base;
}

/** Reads a u64 written as two little-endian u32; -1 if it is not below 2^53. */
export function getU64(view: DataView, pos: number): number {
  const lo = view.getUint32(pos, true);
  const hi = view.getUint32(pos + 4, true);
  if (hi > U64_HI_MAX) return -1;
  return hi * TWO_POW_32 + lo;
}

/** Writes a value below 2^53 as two little-endian u32. */
export function setU64(view: DataView, pos: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, 'u64 value is a non-negative safe integer', { value });
  view.setUint32(pos, value % TWO_POW_32, true);
  view.setUint32(pos + 4, Math.floor(value / TWO_POW_32), true);
}

/** A DataView over exactly the bytes of `buf`. */
export function viewOf(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** The fields of a segment header. */
export interface SegmentHeader {
  baseLsn: number;
  /** Term of record baseLsn-1 (0 if none), so that log matching works after a trim. */
  prevTerm: number;
  /** The segment size limit in force when the segment was created. */
  segmentBytesMax: number;
}

/** Encodes a segment header (64 bytes). */
export function encodeSegmentHeader(h: SegmentHeader): Uint8Array {
  assert(h.segmentBytesMax >= SEGMENT_BYTES_MIN && h.segmentBytesMax <= SEGMENT_BYTES_LIMIT, 'segmentBytesMax in bounds', {
    segmentBytesMax: h.segmentBytesMax,
  });
  const buf = new Uint8Array(SEGMENT_HEADER_BYTES);
  const view = viewOf(buf);
  buf.set(MAGIC_BYTES, 0);
  view.setUint32(8, LOG_FORMAT_VERSION, true);
  view.setUint32(12, h.segmentBytesMax, true);
  setU64(view, 16, h.baseLsn);
  setU64(view, 24, h.prevTerm);
  view.setUint32(HEADER_CRC_OFFSET, crc32c(buf, 0, 0, HEADER_CRC_OFFSET), true);
  return buf;
}

/** Result of decoding a segment header: the header, or why it is invalid. */
export type DecodedSegmentHeader =
  | { ok: true; header: SegmentHeader }
  | { ok: false; reason: string; unsupportedVersion: boolean };

/** Decodes and checks a segment header; `bytes` holds what could be read of the file's first 64 bytes. */
export function decodeSegmentHeader(bytes: Uint8Array): DecodedSegmentHeader {
  const bad = (reason: string, unsupportedVersion = false): DecodedSegmentHeader => ({ ok: false, reason, unsupportedVersion });
  if (bytes.length < SEGMENT_HEADER_BYTES) return bad(`segment header short: ${bytes.length} of ${SEGMENT_HEADER_BYTES} bytes`);
  for (let i = 0; i < MAGIC_BYTES.length; i++) {
    if (bytes[i] !== MAGIC_BYTES[i]) return bad('segment header magic mismatch');
  }
  const view = viewOf(bytes);
  if (view.getUint32(HEADER_CRC_OFFSET, true) !== crc32c(bytes, 0, 0, HEADER_CRC_OFFSET)) {
    return bad('segment header checksum mismatch');
  }
  const version = view.getUint32(8, true);
  if (version !== LOG_FORMAT_VERSION) return bad(`unsupported segment format version ${version}`, true);
  const segmentBytesMax = view.getUint32(12, true);
  const baseLsn = getU64(view, 16);
  const prevTerm = getU64(view, 24);
  if (segmentBytesMax < SEGMENT_BYTES_MIN || segmentBytesMax > SEGMENT_BYTES_LIMIT) {
    return bad(`segment header segmentBytesMax ${segmentBytesMax} out of bounds`);
  }
  if (baseLsn < 1) return bad('segment header baseLsn out of bounds');
  if (prevTerm < 0) return bad('segment header prevTerm out of bounds');
  return { ok: true, header: { baseLsn, prevTerm, segmentBytesMax } };
}

/**
 * Encodes one record at `pos` of `out`, reserved and padding bytes included (zeros), so `out`
 * may be a reused buffer. Returns the position after the record's padding. `fileOffset`, where
 * the record will lie in its segment file, gives its header a zero census
 * (RECORD_ZERO_CENSUS_OFFSET); without it the field is 0.
 */
export function encodeRecord(
  out: Uint8Array,
  view: DataView,
  pos: number,
  lsn: number,
  term: number,
  kind: number,
  payload: Uint8Array,
  payloadCrc?: number,
  fileOffset?: number,
): number {
  const len = payload.length;
  view.setUint32(pos, len, true);
  setU64(view, pos + 8, lsn);
  setU64(view, pos + 16, term);
  out[pos + 24] = kind;
  const census = fileOffset === undefined ? 0 : zeroCensusField(payload, fileOffset + RECORD_HEADER_BYTES);
  out[pos + RECORD_ZERO_CENSUS_OFFSET] = census & 0xff;
  out[pos + RECORD_ZERO_CENSUS_OFFSET + 1] = (census >>> 8) & 0xff;
  out[pos + RECORD_ZERO_CENSUS_OFFSET + 2] = census >>> 16;
  // Before the record's CRC, which covers it.
  view.setUint32(pos + RECORD_HEADER_CHECK_OFFSET, recordHeaderCheck(out, pos), true);
  out.set(payload, pos + RECORD_HEADER_BYTES);
  out.fill(0, pos + RECORD_HEADER_BYTES + len, pos + recordBytes(len));
  view.setUint32(pos + 4, recordCrc(out, pos, len, payloadCrc), true);
  return pos + recordBytes(len);
}

/** The zero census field of `payload` written at file offset `at` (RECORD_ZERO_CENSUS_OFFSET). */
function zeroCensusField(payload: Uint8Array, at: number): number {
  const c = zeroCensus(payload, at, at, at + payload.length);
  return lastField(c.lastNonZero - at) * 0x1000 + c.zeroSectors + 1;
}

function lastField(lastInPayload: number): number {
  return (lastInPayload + 1) % CENSUS_LAST_MOD;
}

/**
 * What the zero census of a record's header says of its payload as read (`buf[rel]` is the
 * record's first byte, `payloadAt` the file offset of its payload), when the record's CRC
 * does not match: `torn` when a crash that cut its write short may have left it so, `rotted`
 * when only damage since it was written whole can, `none` when the header has no census (a
 * record written before it). A crash leaves zeros where the write did not reach: it can add
 * zero sectors, and, with as many, only move the last non-zero byte back within its sector (the
 * sector would otherwise be one of zeros more). A rotted byte makes a zero sector non-zero, or
 * changes a byte's value, which leaves the census as it was or takes a zero sector away, or
 * moves the last non-zero byte forward; only rot that turns data into zeros can look like what
 * a crash leaves (and reads as torn).
 */
export function judgeZeroCensus(buf: Uint8Array, rel: number, payloadAt: number): 'torn' | 'rotted' | 'none' {
  const field = buf[rel + RECORD_ZERO_CENSUS_OFFSET]! | (buf[rel + RECORD_ZERO_CENSUS_OFFSET + 1]! << 8) | (buf[rel + RECORD_ZERO_CENSUS_OFFSET + 2]! << 16);
  if (field === 0) return 'none';
  const len = new DataView(buf.buffer, buf.byteOffset + rel, 4).getUint32(0, true);
  const start = rel + RECORD_HEADER_BYTES;
  const now = zeroCensus(buf, payloadAt - start, payloadAt, payloadAt + len);
  const zeroSectors = (field & 0xfff) - 1;
  if (now.zeroSectors !== zeroSectors) return now.zeroSectors > zeroSectors ? 'torn' : 'rotted';
  const back = (((field >>> 12) - lastField(now.lastNonZero - payloadAt)) % CENSUS_LAST_MOD + CENSUS_LAST_MOD) % CENSUS_LAST_MOD;
  return back > 0 && back < SECTOR_BYTES ? 'torn' : 'rotted';
}

/**
 * A padding record fills the rest of a 4 KiB block after a large write batch, so that the next
 * batch starts on a block boundary (an fdatasync of whole blocks is measurably cheaper than one
 * that rewrites a partial block). It has LSN 0 (no real record does) and this kind; recovery and
 * reads skip it.
 */
export const PAD_KIND = 255;
/** Writes are padded to multiples of this many bytes (when padding adds at most 1/8 to a batch). */
export const LOG_BLOCK_BYTES = 4096;

/** Encodes a padding record of exactly `totalBytes` bytes (a multiple of 8, at least a header). */
export function encodePadding(out: Uint8Array, view: DataView, pos: number, totalBytes: number): number {
  assert(totalBytes >= RECORD_HEADER_BYTES && totalBytes % RECORD_ALIGN_BYTES === 0, 'padding size', { totalBytes });
  const len = totalBytes - RECORD_HEADER_BYTES;
  out.fill(0, pos, pos + totalBytes);
  view.setUint32(pos, len, true);
  out[pos + 24] = PAD_KIND;
  view.setUint32(pos + RECORD_HEADER_CHECK_OFFSET, recordHeaderCheck(out, pos), true);
  view.setUint32(pos + 4, recordCrc(out, pos, len), true);
  return pos + totalBytes;
}

/** True for a valid record header that is padding (LSN 0, kind PAD_KIND). */
export function isPadding(view: DataView, rel: number): boolean {
  return getU64(view, rel + 8) === 0 && view.getUint8(rel + 24) === PAD_KIND;
}

/**
 * The header check of the record at `pos` (RECORD_HEADER_CHECK_OFFSET): tells a header written
 * whole and damaged since from one a crash cut short, at recovery (a record CRC that does not
 * match cannot: the length it is computed over may be what rotted).
 */
export function recordHeaderCheck(buf: Uint8Array, pos: number): number {
  return (crc32c(buf, crc32c(buf, 0, pos, pos + 4), pos + 8, pos + RECORD_HEADER_CHECK_OFFSET) | 1) >>> 0;
}

/**
 * CRC-32C of the record at `pos`: over its length field, the rest of its header after the crc,
 * and its payload. With `payloadCrc` (the CRC-32C of its payload, made by whoever wrote or reads
 * the payload), from the header and that, without a pass over the payload.
 */
export function recordCrc(buf: Uint8Array, pos: number, payloadBytes: number, payloadCrc?: number): number {
  const c = crc32c(buf, 0, pos, pos + 4);
  if (payloadCrc === undefined) return crc32c(buf, c, pos + 8, pos + RECORD_HEADER_BYTES + payloadBytes);
  return crc32cCombine(crc32c(buf, c, pos + 8, pos + RECORD_HEADER_BYTES), payloadCrc, payloadBytes);
}

/**
 * In-memory index of one segment: per record its offset, payload length and term, in growable
 * typed arrays (no per-record objects), so reads and termAt are O(1) seeks.
 */
export class SegmentIndex {
  readonly name: string;
  readonly baseLsn: number;
  readonly prevTerm: number;
  readonly segmentBytesMax: number;
  /** Open handle, or undefined while closed (sealed segments are opened on demand). */
  fh: FileHandle | undefined = undefined;
  /** Bytes of the segment in use: header plus whole records. */
  endOffset = SEGMENT_HEADER_BYTES;
  /**
   * Size of the segment file: endOffset plus the zeros written ahead of the next records (only the
   * active segment has any; see SegmentLog's preallocation).
   */
  fileBytes = SEGMENT_HEADER_BYTES;
  /**
   * Set on the empty stand-in a log opens with when its first segment's header is damaged: its
   * `prevTerm` (0) is not the term of the record before `baseLsn`, which is unknown.
   */
  prevTermLost = false;
  private countValue = 0;
  private offsets: Uint32Array;
  private lengths: Uint32Array;
  private terms: Float64Array;

  constructor(name: string, header: SegmentHeader, capacityHint = 64) {
    this.name = name;
    this.baseLsn = header.baseLsn;
    this.prevTerm = header.prevTerm;
    this.segmentBytesMax = header.segmentBytesMax;
    const cap = Math.max(16, capacityHint);
    this.offsets = new Uint32Array(cap);
    this.lengths = new Uint32Array(cap);
    this.terms = new Float64Array(cap);
  }

  /** Number of records. */
  get count(): number {
    return this.countValue;
  }

  /** LSN of the last record (baseLsn-1 when empty). */
  get lastLsn(): number {
    return this.baseLsn + this.countValue - 1;
  }

  /** Term of the last record (prevTerm when empty). */
  get lastTerm(): number {
    return this.countValue === 0 ? this.prevTerm : this.terms[this.countValue - 1]!;
  }

  /** Appends a record to the index; it must start at endOffset. */
  push(offset: number, payloadBytes: number, term: number): void {
    assert(offset === this.endOffset, 'record appended at the segment end', { offset, endOffset: this.endOffset });
    if (this.countValue === this.offsets.length) this.grow();
    const i = this.countValue;
    this.offsets[i] = offset;
    this.lengths[i] = payloadBytes;
    this.terms[i] = term;
    this.countValue = i + 1;
    this.endOffset = offset + recordBytes(payloadBytes);
  }

  /** Skips a padding record at the segment end (not indexed: it has no LSN). */
  skip(offset: number, bytes: number): void {
    assert(offset === this.endOffset, 'padding appended at the segment end', { offset, endOffset: this.endOffset });
    this.endOffset = offset + bytes;
  }

  offsetAt(i: number): number {
    assert(i >= 0 && i < this.countValue, 'record index in segment', { i, count: this.countValue });
    return this.offsets[i]!;
  }

  payloadBytesAt(i: number): number {
    assert(i >= 0 && i < this.countValue, 'record index in segment', { i, count: this.countValue });
    return this.lengths[i]!;
  }

  termAt(i: number): number {
    assert(i >= 0 && i < this.countValue, 'record index in segment', { i, count: this.countValue });
    return this.terms[i]!;
  }

  /** Keeps the first `count` records; endOffset becomes the offset of the first one dropped. */
  truncateTo(count: number): void {
    assert(count >= 0 && count <= this.countValue, 'truncation count in segment', { count, have: this.countValue });
    this.endOffset = count === this.countValue ? this.endOffset : this.offsets[count]!;
    this.countValue = count;
  }

  private grow(): void {
    const cap = this.offsets.length * 2;
    const offsets = new Uint32Array(cap);
    offsets.set(this.offsets);
    const lengths = new Uint32Array(cap);
    lengths.set(this.lengths);
    const terms = new Float64Array(cap);
    terms.set(this.terms);
    this.offsets = offsets;
    this.lengths = lengths;
    this.terms = terms;
  }
}
