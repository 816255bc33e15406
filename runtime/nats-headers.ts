/**
 * Reading the headers of a received NATS message, with less work than nats.js does.
 *
 * nats.js decodes a message's header block into a map the first time `msg.headers` is read: it
 * decodes the bytes as UTF-8, splits them into lines, and validates and canonicalizes every name
 * on the way into the map. On a shard host that was about a tenth of the thread's CPU for a
 * cached read of one page (see docs/performance.md). Strata reads three or four headers of every
 * request, all ASCII, so `messageHeaders` reads them straight from the header block's bytes.
 *
 * The header block is `NATS/1.0[ status]\r\n` followed by `Name: value\r\n` lines and an empty
 * line. `messageHeaders` gives what `msg.headers.get(name)` gives (the first value of an exact
 * name, trimmed; '' when absent) for every block it reads; it hands the message back to nats.js's
 * decoder when the block is not plain: a status line (`NATS/1.0 503`), a lone CR or LF, an empty
 * name or one with a character outside '!'..'~', or a block over 4 KiB. It reads the fields nats.js keeps the raw message in (`_rdata`, `_msg.hdr`);
 * when a version of nats.js keeps them elsewhere, every message takes the decoder's path, which
 * is slower but the same (the tests check both paths against the decoder).
 */
import type { Msg } from 'nats';
import { ProtocolError } from '../messages/errors';
import { HEADER_SCHEMA, SCHEMA_VERSION } from '../messages/headers';
import { frozenHeaders } from './request-mux';

/** The headers of every Strata reply (encoded once). */
export const REPLY_HEADERS = frozenHeaders({ [HEADER_SCHEMA]: String(SCHEMA_VERSION) });

/** A received message's headers: the value of a name, '' when absent. */
export interface ReceivedHeaders {
  get(name: string): string;
  /**
   * Set when the header block is malformed (nats.js's decoder refused it: a lone CR or LF in a
   * value, a name with a space…): every name then reads as absent, and the receiver answers
   * bad_request. (Left to nats.js, the decoder's exception would end the connection's reader.)
   */
  readonly malformed?: string;
}

/** Longest header block read here; a longer one goes to the nats.js decoder. */
const FAST_HEADER_BYTES_MAX = 4096;
const PREFIX = 'NATS/1.0';

/** Decodes as nats.js does (UTF-8, malformed bytes replaced). */
const UTF8 = new TextDecoder();

const NO_HEADERS: ReceivedHeaders = { get: () => '' };

/** The fields of a nats.js message object that hold the raw message (not part of its API). */
interface RawMsgFields {
  _rdata?: unknown;
  _msg?: { hdr?: unknown };
}

class PlainHeaders implements ReceivedHeaders {
  /** Names and values, in the order of the block: name, value, name, value… */
  constructor(private readonly pairs: string[]) {}

  get(name: string): string {
    const p = this.pairs;
    for (let i = 0; i < p.length; i += 2) if (p[i] === name) return p[i + 1]!;
    return '';
  }
}

/**
 * The plain header block read last on this thread (a copy) and what it read as: the requests of
 * one type and deadline, and every append of a leader, come with the same block, which is then
 * compared, not decoded and split again.
 */
let lastBlock: Uint8Array | undefined;
let lastRead: ReceivedHeaders = NO_HEADERS;
/** Longest block kept as `lastBlock`. */
const LAST_BLOCK_BYTES_MAX = 256;

function isLastBlock(data: Uint8Array, end: number): boolean {
  const last = lastBlock;
  if (last === undefined || last.length !== end) return false;
  // From the end: blocks of one type differ in their deadline, near their end.
  for (let i = end - 1; i >= 0; i--) if (data[i] !== last[i]) return false;
  return true;
}

/** The headers of `msg` (see the module comment); never throws (see `malformed`). */
export function messageHeaders(msg: Msg): ReceivedHeaders {
  const raw = msg as unknown as RawMsgFields;
  const data = raw._rdata;
  const hdr = raw._msg?.hdr;
  if (data instanceof Uint8Array && typeof hdr === 'number' && Number.isInteger(hdr) && hdr <= data.length) {
    if (hdr < 0) return NO_HEADERS; // nats.js marks a message without headers so
    if (isLastBlock(data, hdr)) return lastRead;
    const plain = parsePlainHeaderBlock(data, hdr);
    if (plain !== undefined) {
      if (hdr <= LAST_BLOCK_BYTES_MAX) {
        lastBlock = data.slice(0, hdr);
        lastRead = plain;
      }
      return plain;
    }
  }
  return decoded(msg);
}

/** `headers`, unless their block was malformed: then bad_request ('malformed NATS headers: …'). */
export function wellFormed(headers: ReceivedHeaders): ReceivedHeaders {
  if (headers.malformed !== undefined) throw new ProtocolError('bad_request', `malformed NATS headers: ${headers.malformed}`);
  return headers;
}

function decoded(msg: Msg): ReceivedHeaders {
  let h: Msg['headers'];
  try {
    h = msg.headers;
  } catch (e) {
    const reason = (e instanceof Error ? e.message : String(e)).slice(0, 200);
    return { get: () => '', malformed: reason };
  }
  return h === undefined ? NO_HEADERS : { get: (name: string) => h.get(name) ?? '' };
}

/**
 * Parses `bytes[0, end)` as a plain header block; undefined when it is not one (the caller then
 * uses the nats.js decoder).
 */
export function parsePlainHeaderBlock(bytes: Uint8Array, end: number): ReceivedHeaders | undefined {
  if (end > FAST_HEADER_BYTES_MAX || end < PREFIX.length + 2) return undefined;
  const text = UTF8.decode(bytes.subarray(0, end));
  const first = text.indexOf('\r\n');
  // A status line (`NATS/1.0 503`, `NATS/1.0 408 Request Timeout`) is for the decoder.
  if (first !== PREFIX.length || !text.startsWith(PREFIX)) return undefined;
  const pairs: string[] = [];
  let at = first + 2;
  while (at < text.length) {
    let eol = text.indexOf('\r\n', at);
    if (eol < 0) eol = text.length;
    const line = text.slice(at, eol);
    // A lone CR or LF inside a line is for the decoder (it refuses such a value).
    if (line.includes('\r') || line.includes('\n')) return undefined;
    const colon = line.indexOf(':');
    if (colon === 0) return undefined; // an empty name: the decoder decides
    // A name with a character outside '!'..'~' (a space, a control character, a letter outside
    // ASCII) is for the decoder, which refuses it.
    for (let k = 0; k < colon; k++) {
      const c = line.charCodeAt(k);
      if (c < 0x21 || c > 0x7e) return undefined;
    }
    // A line without a colon is skipped, as the decoder does.
    if (colon > 0) pairs.push(line.slice(0, colon), line.slice(colon + 1).trim());
    at = eol + 2;
  }
  return new PlainHeaders(pairs);
}
