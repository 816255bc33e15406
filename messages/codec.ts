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
 */
import { Decoder, Encoder } from 'cbor-x';
import type { Options } from 'cbor-x';
import { ProtocolError } from './errors';

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
