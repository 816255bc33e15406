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
 * `encodeShardReadReply` writes the most frequent reply of all, a shard's answer to a read, without
 * cbor-x: the same value in plain CBOR (any decoder, this one included, reads it back equal), in
 * about a third of the time.
 */
import { Decoder, Encoder } from 'cbor-x';
import type { Options } from 'cbor-x';
import { ProtocolError } from './errors';
import type { ShardReadReply } from './api';

/** Default bound on an encoded message: the NATS server's default max_payload (1 MiB). */
export const MESSAGE_BYTES_MAX = 1024 * 1024;

/** Options of `encode` and `decode`. */
export interface CodecOptions {
  /**
   * Bound on the encoded message in bytes; default `MESSAGE_BYTES_MAX`. A client passes the
   * server's max_payload when it is known.
   */
  bytesMax?: number;
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
  try {
    return decoder.decode(bytes) as unknown;
  } catch (err) {
    // cbor-x throws plain Errors (and RangeError on absurd nesting); none may escape untyped.
    const reason = err instanceof Error ? err.message : String(err);
    throw new ProtocolError('bad_request', `malformed CBOR: ${reason}`);
  }
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

/** A map key as CBOR (a text string of ASCII). */
function keyBytes(key: string): Uint8Array {
  const out = new Uint8Array(1 + key.length);
  writeHead(out, 0, 3, key.length);
  for (let i = 0; i < key.length; i++) out[1 + i] = key.charCodeAt(i);
  return out;
}

const KEY_PAGES = keyBytes('pages');
const KEY_LSN = keyBytes('lsn');
const KEY_TERM = keyBytes('term');

function checkUint(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new ProtocolError('internal', `can not encode message: ${what} ${String(n)} is not a non-negative safe integer`);
}

/**
 * Encodes a shard.read reply (see the module comment) into a buffer from `alloc` (by default a
 * new one). Same errors as `encode`: 'too_large' over `bytesMax`, 'internal' for a value that is
 * not a reply (a number that is not a non-negative safe integer, a page that is not bytes).
 */
export function encodeShardReadReply(
  reply: ShardReadReply,
  options?: CodecOptions & { alloc?: (bytes: number) => Uint8Array },
): Uint8Array {
  const bytesMax = bytesMaxOf(options);
  const { pages, lsn, term } = reply;
  checkUint(lsn, 'lsn');
  if (term !== undefined) checkUint(term, 'term');
  let bytes = 1 + KEY_PAGES.length + headBytes(pages.length) + KEY_LSN.length + headBytes(lsn);
  if (term !== undefined) bytes += KEY_TERM.length + headBytes(term);
  for (const page of pages) {
    if (!(page instanceof Uint8Array)) throw new ProtocolError('internal', 'can not encode message: a page is not a Uint8Array');
    bytes += headBytes(page.length) + page.length;
  }
  if (bytes > bytesMax) {
    throw new ProtocolError('too_large', `message of ${bytes} bytes exceeds the limit of ${bytesMax} bytes`, { bytes, bytesMax });
  }
  const out = options?.alloc?.(bytes) ?? new Uint8Array(bytes);
  if (out.length !== bytes) throw new ProtocolError('internal', `can not encode message: a buffer of ${out.length} bytes for ${bytes}`);
  let at = writeHead(out, 0, 5, term === undefined ? 2 : 3);
  out.set(KEY_PAGES, at);
  at = writeHead(out, at + KEY_PAGES.length, 4, pages.length);
  for (const page of pages) {
    at = writeHead(out, at, 2, page.length);
    out.set(page, at);
    at += page.length;
  }
  out.set(KEY_LSN, at);
  at = writeHead(out, at + KEY_LSN.length, 0, lsn);
  if (term !== undefined) {
    out.set(KEY_TERM, at);
    at = writeHead(out, at + KEY_TERM.length, 0, term);
  }
  return out;
}
