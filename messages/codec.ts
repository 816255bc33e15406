/**
 * The CBOR codec of every Strata message (cbor-x).
 *
 * - `useRecords: false`: no record extension tags and no structures shared between messages,
 *   so any CBOR decoder of any version (or language) reads what Strata writes.
 * - `mapsAsObjects: true`: CBOR maps decode to plain objects (a key `__proto__` is renamed by
 *   cbor-x, so a message can not change an object's prototype).
 * - `tagUint8Array: false`: a Uint8Array is written as a plain CBOR byte string (no tag 64).
 * - `int64AsNumber: true`: 64-bit integers decode to numbers, never to bigint; the validators
 *   then reject anything beyond Number.MAX_SAFE_INTEGER, where a number is no longer exact.
 *
 * Copies. `decode` returns byte strings as Uint8Array *views* of the input (no copy): a 4 KiB
 * page in a 1 MiB message shares the message's ArrayBuffer. Consequences for callers:
 * - the input must not be reused or mutated while decoded pages are in use;
 * - a page kept for long (a cache entry) pins the whole input buffer, so whoever keeps it copies it
 *   (into the slab) at that point; that is the one copy on the receive path.
 * Indefinite-length byte strings (which Strata never writes) are concatenated, i.e. copied.
 * `encode` copies page data into the output (unavoidable). Its result is a plain Uint8Array view into an
 * internal buffer shared with earlier results (never overwritten), so it must not be transferred
 * (postMessage transfer list) or mutated.
 *
 * The messages that carry pages are written without cbor-x, in plain CBOR that any decoder (this
 * one included) reads back as the same value, into a buffer of the exact size: a shard's read
 * reply (`encodeShardReadReply`) and a shard write request (`encodeShardWriteRequest`). cbor-x
 * writes into a shared buffer and, when a message outgrows it, allocates one four times as large
 * and copies what it wrote so far; for a message of a few pages that is most of its cost. (For
 * appends of many records, cbor-x's reuse of one large buffer measured better than a new
 * buffer of the exact size for each.)
 *
 * cbor-x is loaded without its optional native string extractor (`cbor-x/index-no-eval`, the
 * same decoder and encoder): the extractor scans a message for its strings in one native call,
 * which for a message of a few short keys and a page costs more than it saves. Decoding a read
 * reply of one 4 KiB page took 0.67-1.23 us with it and 0.26-0.29 us without, a write request
 * of one page 1.07-1.62 us against 0.43-0.53 us (300,000 decodes each).
 */
import { Decoder, Encoder } from 'cbor-x/index-no-eval';
import type { Options } from 'cbor-x';
import { ProtocolError, throwIfError, toProtocolError, type ErrorCode } from './errors';
import type { ShardReadReply, ShardWriteRequest } from './api';

/** Default bound on an encoded message: the NATS server's default max_payload (1 MiB). */
export const MESSAGE_BYTES_MAX = 1024 * 1024;

/** Options of `encode` and `decode`. */
export interface CodecOptions {
  /**
   * Bound on the encoded message in bytes; default `MESSAGE_BYTES_MAX`. A client passes the
   * server's max_payload when it is known.
   */
  bytesMax?: number;
  /**
   * Bound on the CBOR data items of a decoded message (every head counts: a map, each key, each
   * value, each element of an array); none by default. Checked by a scan of the bytes before
   * they are decoded: decoding makes an object of each item, and a message of a million empty
   * maps, 1 MB, took the decoder most of a second and 60 MB of heap.
   */
  itemsMax?: number;
}

const CODEC_OPTIONS: Options & { int64AsNumber: boolean } = {
  useRecords: false,
  mapsAsObjects: true,
  tagUint8Array: false,
  int64AsNumber: true,
};

const encoder = new Encoder(CODEC_OPTIONS);
const decoder = new Decoder(CODEC_OPTIONS);

function bytesMaxOf(options: CodecOptions | undefined): number {
  const bytesMax = options?.bytesMax ?? MESSAGE_BYTES_MAX;
  if (!Number.isSafeInteger(bytesMax) || bytesMax <= 0) {
    throw new RangeError(`bytesMax must be a positive integer, got ${String(bytesMax)}`);
  }
  return bytesMax;
}

/**
 * Encodes a message. Throws ProtocolError('too_large') when the result exceeds `bytesMax`
 * (the message is refused before it is sent) and ProtocolError('internal') when the value can not
 * be encoded (a bug of the sender).
 */
export function encode(value: unknown, options?: CodecOptions): Uint8Array {
  const bytesMax = bytesMaxOf(options);
  let bytes: Uint8Array;
  try {
    const buffer = encoder.encode(value);
    // cbor-x returns a Node Buffer; hand out a plain Uint8Array view of it (no copy), so that
    // decoding our own output gives plain Uint8Array pages, as decoding a NATS message does.
    bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  } catch (err) {
    throw new ProtocolError('internal', `can not encode message: ${(err as Error).message}`);
  }
  if (bytes.byteLength > bytesMax) {
    throw new ProtocolError(
      'too_large',
      `message of ${bytes.byteLength} bytes exceeds the limit of ${bytesMax} bytes`,
      { bytes: bytes.byteLength, bytesMax },
    );
  }
  return bytes;
}

/** CBOR of a map's first key "error" (1 entry), in the three ways a map's length may be written. */
const ERROR_KEY = [0x65, 0x65, 0x72, 0x72, 0x6f, 0x72];
const ERROR_MAP_HEADS = [[0xa1], [0xb8, 0x01], [0xb9, 0x00, 0x01]];

/**
 * The error code an encoded reply answers (an error reply's code, `internal` for an unknown or
 * malformed one), or undefined when it is not an error reply. Only a reply that starts as an
 * error reply (`{error: …}`) is decoded: for one passed on as it came, without decoding it.
 */
export function encodedErrorCode(bytes: Uint8Array): ErrorCode | undefined {
  const head = ERROR_MAP_HEADS.find((h) => h.every((b, i) => bytes[i] === b) && ERROR_KEY.every((b, i) => bytes[h.length + i] === b));
  if (head === undefined) return undefined;
  try {
    throwIfError(decode(bytes));
    return undefined;
  } catch (e) {
    return toProtocolError(e).code;
  }
}

/**
 * Decodes one CBOR item that must span all of `bytes`. Any malformed, truncated or trailing
 * input gives ProtocolError('bad_request', 'malformed CBOR: …'); input over `bytesMax` gives
 * ProtocolError('too_large') without being parsed. Byte strings come back as views of `bytes`.
 */
export function decode(bytes: Uint8Array, options?: CodecOptions): unknown {
  const bytesMax = bytesMaxOf(options);
  if (!(bytes instanceof Uint8Array)) {
    throw new ProtocolError('bad_request', 'malformed CBOR: the message is not a byte array');
  }
  if (bytes.byteLength > bytesMax) {
    throw new ProtocolError(
      'too_large',
      `message of ${bytes.byteLength} bytes exceeds the limit of ${bytesMax} bytes`,
      { bytes: bytes.byteLength, bytesMax },
    );
  }
  if (bytes.byteLength === 0) {
    throw new ProtocolError('bad_request', 'malformed CBOR: empty message');
  }
  const itemsMax = options?.itemsMax;
  if (itemsMax !== undefined && !itemsWithin(bytes, itemsMax)) {
    throw new ProtocolError('too_large', `message of ${bytes.byteLength} bytes holds more than ${itemsMax} CBOR items, the limit`, { bytes: bytes.byteLength, itemsMax });
  }
  try {
    return decoder.decode(bytes) as unknown;
  } catch (err) {
    // cbor-x throws plain Errors (and RangeError on absurd nesting); none may escape untyped.
    const reason = err instanceof Error ? err.message : String(err);
    throw new ProtocolError('bad_request', `malformed CBOR: ${reason}`);
  }
}

/**
 * Whether `bytes` hold at most `itemsMax` CBOR data item heads, by a walk over the heads that
 * skips the contents of byte and text strings (no object is made). Malformed input is not
 * judged here (the decoder refuses it): the walk stops at a head that runs past the end.
 */
export function itemsWithin(bytes: Uint8Array, itemsMax: number): boolean {
  const end = bytes.byteLength;
  let at = 0;
  let items = 0;
  while (at < end) {
    if (++items > itemsMax) return false;
    const initial = bytes[at++]!;
    const major = initial >> 5;
    const info = initial & 0x1f;
    let n: number;
    if (info < 24) n = info;
    else if (info === 24) n = bytes[at++] ?? 0;
    else if (info === 25) {
      n = ((bytes[at] ?? 0) << 8) | (bytes[at + 1] ?? 0);
      at += 2;
    } else if (info === 26) {
      n = (((bytes[at] ?? 0) << 24) >>> 0) + (((bytes[at + 1] ?? 0) << 16) | ((bytes[at + 2] ?? 0) << 8) | (bytes[at + 3] ?? 0));
      at += 4;
    } else if (info === 27) {
      // Only a string's length is used: one of 2^32 bytes or more runs past any message.
      n = (bytes[at] ?? 0) | (bytes[at + 1] ?? 0) | (bytes[at + 2] ?? 0) | (bytes[at + 3] ?? 0) ? Number.POSITIVE_INFINITY : (((bytes[at + 4] ?? 0) << 24) >>> 0) + (((bytes[at + 5] ?? 0) << 16) | ((bytes[at + 6] ?? 0) << 8) | (bytes[at + 7] ?? 0));
      at += 8;
    } else n = 0; // indefinite length (31) or reserved: its contents are heads of their own
    // A byte or text string of definite length: its contents are not items.
    if ((major === 2 || major === 3) && info !== 31) {
      if (n > end - at) return true;
      at += n;
    }
  }
  return true;
}

/**
 * The values of `values` from index `from` on, at most `countMax` of them, whose encoded sizes
 * add up to at most `bytesMax`: a page of a list made to fit one message. At least one when any
 * is left (one too large alone is then refused where the page is encoded).
 */
export function pageWithin<T>(values: readonly T[], from: number, bytesMax: number, countMax = Number.POSITIVE_INFINITY): T[] {
  const page: T[] = [];
  let used = 0;
  for (let i = from; i < values.length && page.length < countMax; i++) {
    used += encode(values[i], { bytesMax: Number.MAX_SAFE_INTEGER }).length;
    if (used > bytesMax && page.length > 0) break;
    page.push(values[i]!);
  }
  return page;
}

/** Bytes of a CBOR head (major type and argument) whose argument is `n`. */
function headBytes(n: number): number {
  return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x100000000 ? 5 : 9;
}

/** Writes the CBOR head (major type, argument `n`) at `at`; returns the position after it. */
function writeHead(out: Uint8Array, at: number, major: number, n: number): number {
  const m = major << 5;
  if (n < 24) {
    out[at] = m | n;
    return at + 1;
  }
  if (n < 0x100) {
    out[at] = m | 24;
    out[at + 1] = n;
    return at + 2;
  }
  if (n < 0x10000) {
    out[at] = m | 25;
    out[at + 1] = n >>> 8;
    out[at + 2] = n & 0xff;
    return at + 3;
  }
  if (n < 0x100000000) {
    out[at] = m | 26;
    writeUint32(out, at + 1, n);
    return at + 5;
  }
  out[at] = m | 27;
  writeUint32(out, at + 1, Math.floor(n / 0x100000000));
  writeUint32(out, at + 5, n >>> 0);
  return at + 9;
}

function writeUint32(out: Uint8Array, at: number, n: number): void {
  out[at] = n >>> 24;
  out[at + 1] = (n >>> 16) & 0xff;
  out[at + 2] = (n >>> 8) & 0xff;
  out[at + 3] = n & 0xff;
}

/** A text string of ASCII characters as CBOR (map keys, ids). */
function keyBytes(key: string): Uint8Array {
  const head = headBytes(key.length);
  const out = new Uint8Array(head + key.length);
  writeHead(out, 0, 3, key.length);
  for (let i = 0; i < key.length; i++) out[head + i] = key.charCodeAt(i);
  return out;
}

const KEY_PAGES = keyBytes('pages');
const KEY_LSN = keyBytes('lsn');
const KEY_TERM = keyBytes('term');
const KEY_PAGE = keyBytes('page');
const KEY_DATA = keyBytes('data');
const KEY_DEADLINE_MS = keyBytes('deadlineMs');
const KEY_WRITE_ID = keyBytes('writeId');
const KEY_SENT_MS = keyBytes('sentMs');
const KEY_CRC = keyBytes('crc');

/** Options of the encoders of page messages: those of `encode`, and where the output goes. */
export type PageMessageOptions = CodecOptions & {
  /** Returns a buffer of exactly the given length (default: a new Uint8Array). */
  alloc?: (bytes: number) => Uint8Array;
};

function isUint(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

/** The output buffer of a page message of `bytes` bytes, after the size checks of `encode`. */
function outputOf(bytes: number, options: PageMessageOptions | undefined): Uint8Array {
  const bytesMax = bytesMaxOf(options);
  if (bytes > bytesMax) {
    throw new ProtocolError('too_large', `message of ${bytes} bytes exceeds the limit of ${bytesMax} bytes`, { bytes, bytesMax });
  }
  const out = options?.alloc?.(bytes) ?? new Uint8Array(bytes);
  if (out.length !== bytes) throw new ProtocolError('internal', `can not encode message: a buffer of ${out.length} bytes for ${bytes}`);
  return out;
}

function putBytes(out: Uint8Array, at: number, bytes: Uint8Array): number {
  out.set(bytes, at);
  return at + bytes.length;
}

/**
 * Encodes a shard.write request (see the module comment). A value of another shape (another
 * field, a page number that is not a non-negative safe integer, data that is not bytes) is
 * encoded by `encode` instead, so the result is always what `encode` would mean.
 */
export function encodeShardWriteRequest(req: ShardWriteRequest, options?: PageMessageOptions): Uint8Array {
  const { pages, crc, term, deadlineMs, writeId, sentMs } = req;
  let fields = 1;
  for (const key in req) {
    if (key === 'pages' || ((key === 'crc' || key === 'term' || key === 'deadlineMs' || key === 'writeId' || key === 'sentMs') && req[key] !== undefined)) continue;
    return encode(req, options);
  }
  if (!Array.isArray(pages)) return encode(req, options);
  let bytes = 1 + KEY_PAGES.length + headBytes(pages.length);
  for (const p of pages) {
    if (p === null || typeof p !== 'object' || Object.keys(p).length !== 2 || !isUint(p.page) || !(p.data instanceof Uint8Array)) return encode(req, options);
    bytes += 1 + KEY_PAGE.length + headBytes(p.page) + KEY_DATA.length + headBytes(p.data.length) + p.data.length;
  }
  if (crc !== undefined) {
    if (!isUint(crc)) return encode(req, options);
    bytes += KEY_CRC.length + headBytes(crc);
    fields++;
  }
  if (term !== undefined) {
    if (!isUint(term)) return encode(req, options);
    bytes += KEY_TERM.length + headBytes(term);
    fields++;
  }
  if (deadlineMs !== undefined) {
    if (!isUint(deadlineMs)) return encode(req, options);
    bytes += KEY_DEADLINE_MS.length + headBytes(deadlineMs);
    fields++;
  }
  if (writeId !== undefined) {
    if (!(writeId instanceof Uint8Array)) return encode(req, options);
    bytes += KEY_WRITE_ID.length + headBytes(writeId.length) + writeId.length;
    fields++;
  }
  if (sentMs !== undefined) {
    if (!isUint(sentMs)) return encode(req, options);
    bytes += KEY_SENT_MS.length + headBytes(sentMs);
    fields++;
  }
  const out = outputOf(bytes, options);
  let at = writeHead(out, 0, 5, fields);
  at = writeHead(out, putBytes(out, at, KEY_PAGES), 4, pages.length);
  for (const p of pages) {
    at = writeHead(out, at, 5, 2);
    at = writeHead(out, putBytes(out, at, KEY_PAGE), 0, p.page);
    at = writeHead(out, putBytes(out, at, KEY_DATA), 2, p.data.length);
    at = putBytes(out, at, p.data);
  }
  if (crc !== undefined) at = writeHead(out, putBytes(out, at, KEY_CRC), 0, crc);
  if (term !== undefined) at = writeHead(out, putBytes(out, at, KEY_TERM), 0, term);
  if (deadlineMs !== undefined) at = writeHead(out, putBytes(out, at, KEY_DEADLINE_MS), 0, deadlineMs);
  if (writeId !== undefined) at = putBytes(out, writeHead(out, putBytes(out, at, KEY_WRITE_ID), 2, writeId.length), writeId);
  if (sentMs !== undefined) at = writeHead(out, putBytes(out, at, KEY_SENT_MS), 0, sentMs);
  return out;
}

function checkUint(n: number, what: string): void {
  if (!isUint(n)) throw new ProtocolError('internal', `can not encode message: ${what} ${String(n)} is not a non-negative safe integer`);
}

/**
 * Encodes a shard.read reply (see the module comment) into a buffer from `alloc` (by default a
 * new one). Same errors as `encode`: 'too_large' over `bytesMax`, 'internal' for a value that is
 * not a reply (a number that is not a non-negative safe integer, a page that is not bytes).
 */
export function encodeShardReadReply(reply: ShardReadReply, options?: PageMessageOptions): Uint8Array {
  const { pages, lsn, term, crc } = reply;
  checkUint(lsn, 'lsn');
  if (term !== undefined) checkUint(term, 'term');
  if (crc !== undefined) checkUint(crc, 'crc');
  let bytes = 1 + KEY_PAGES.length + headBytes(pages.length) + KEY_LSN.length + headBytes(lsn);
  if (term !== undefined) bytes += KEY_TERM.length + headBytes(term);
  if (crc !== undefined) bytes += KEY_CRC.length + headBytes(crc);
  for (const page of pages) {
    if (!(page instanceof Uint8Array)) throw new ProtocolError('internal', 'can not encode message: a page is not a Uint8Array');
    bytes += headBytes(page.length) + page.length;
  }
  const out = outputOf(bytes, options);
  let at = writeHead(out, 0, 5, 2 + (term === undefined ? 0 : 1) + (crc === undefined ? 0 : 1));
  at = writeHead(out, putBytes(out, at, KEY_PAGES), 4, pages.length);
  for (const page of pages) at = putBytes(out, writeHead(out, at, 2, page.length), page);
  at = writeHead(out, putBytes(out, at, KEY_LSN), 0, lsn);
  if (term !== undefined) at = writeHead(out, putBytes(out, at, KEY_TERM), 0, term);
  if (crc !== undefined) at = writeHead(out, putBytes(out, at, KEY_CRC), 0, crc);
  return out;
}
