/**
 * Message headers of the Strata protocol and pure helpers to write and read them.
 *
 * The helpers work on a minimal `HeaderCarrier` (`get`/`set` of strings), which the NATS
 * message headers satisfy, so this module stays independent of any transport. `get` returns
 * '' for an absent header (as NATS headers do); '' is treated as absent.
 */
import { ProtocolError } from './errors';
import { isMessageType } from './api';
import type { MessageType } from './api';

/** The message type: a request type (e.g. `page.write`); a reply carries its request's type. */
export const HEADER_TYPE = 'Strata-Type';
/** The schema version of the body, a decimal integer. */
export const HEADER_SCHEMA = 'Strata-Schema';
/** The absolute deadline of a request, in ms since the Unix epoch, decimal. */
export const HEADER_DEADLINE = 'Strata-Deadline';
/** W3C trace context, passed through unchanged when well formed. */
export const HEADER_TRACEPARENT = 'traceparent';

/** The schema version this code writes. */
export const SCHEMA_VERSION = 1;
/** Every schema version this code reads. */
export const SCHEMA_VERSIONS_SUPPORTED: readonly number[] = [1];

/** Longest header value this code reads, in characters. */
export const HEADER_VALUE_LENGTH_MAX = 512;
/**
 * Farthest a deadline may lie ahead, in ms: a later deadline is treated as now + this much (it
 * keeps a client with a wrong clock from pinning server resources).
 */
export const DEADLINE_AHEAD_MS_MAX = 5 * 60 * 1000;

/** What reading headers needs (NATS `MsgHdrs` fits). */
export interface HeaderReader {
  /** The header's value, or '' when absent. */
  get(name: string): string;
}

/** What writing headers needs (NATS `MsgHdrs` fits). */
export interface HeaderWriter {
  set(name: string, value: string): void;
}

/** Both sides of a message's headers (NATS `MsgHdrs` fits). */
export interface HeaderCarrier extends HeaderReader, HeaderWriter {}

/** The Strata headers of a message, parsed. */
export interface MessageHeaders {
  type: MessageType;
  schema: number;
  /** Absolute deadline, ms since the Unix epoch. */
  deadlineMs?: number;
  /** A well-formed W3C traceparent; a malformed one is dropped (as W3C trace context asks). */
  traceparent?: string;
}

/** Headers to write; `schema` defaults to SCHEMA_VERSION. */
export interface MessageHeadersInit {
  type: MessageType;
  schema?: number;
  deadlineMs?: number;
  traceparent?: string;
}

/** Writes the Strata headers of a message into `carrier`. */
export function writeHeaders(carrier: HeaderWriter, headers: MessageHeadersInit): void {
  carrier.set(HEADER_TYPE, headers.type);
  carrier.set(HEADER_SCHEMA, String(headers.schema ?? SCHEMA_VERSION));
  if (headers.deadlineMs !== undefined) carrier.set(HEADER_DEADLINE, String(headers.deadlineMs));
  if (headers.traceparent !== undefined) carrier.set(HEADER_TRACEPARENT, headers.traceparent);
}

function headerError(header: string, message: string, extra?: Record<string, unknown>): never {
  throw new ProtocolError('bad_request', `header ${header}: ${message}`, { path: header, ...extra });
}

function quote(value: string): string {
  return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
}

const DECIMAL_PATTERN = /^(0|[1-9][0-9]*)$/;

/**
 * Parses a Strata-Schema value. Absent, malformed or unsupported gives bad_request with
 * details `{ path, supported }`.
 */
export function parseSchemaVersion(value: string): number {
  const supported = [...SCHEMA_VERSIONS_SUPPORTED];
  if (value === '') headerError(HEADER_SCHEMA, 'missing', { supported });
  const version = value.length <= 9 && DECIMAL_PATTERN.test(value) ? Number(value) : NaN;
  if (!SCHEMA_VERSIONS_SUPPORTED.includes(version)) {
    headerError(HEADER_SCHEMA, `unsupported schema version ${quote(value)} (supported: ${supported.join(', ')})`, {
      supported,
    });
  }
  return version;
}

/** Reads and checks only the Strata-Schema header (see `parseSchemaVersion`); returns the version. */
export function checkSchemaHeader(carrier: HeaderReader | undefined): number {
  return parseSchemaVersion(carrier?.get(HEADER_SCHEMA) ?? '');
}

/** Parses a Strata-Type value: absent or unknown gives bad_request. */
export function parseMessageType(value: string): MessageType {
  if (value === '') headerError(HEADER_TYPE, 'missing');
  if (!isMessageType(value)) headerError(HEADER_TYPE, `unknown message type ${quote(value)}`);
  return value;
}

/** Parses a Strata-Deadline value: '' gives undefined; anything but a safe decimal integer gives bad_request. */
export function parseDeadline(value: string): number | undefined {
  if (value === '') return undefined;
  const deadlineMs = value.length <= 16 && DECIMAL_PATTERN.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(deadlineMs)) {
    headerError(HEADER_DEADLINE, `expected ms since the Unix epoch as a decimal integer, got ${quote(value)}`);
  }
  return deadlineMs;
}

const TRACEPARENT_PATTERN = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_PARENT_ID = '0'.repeat(16);

/**
 * Returns a traceparent value if it is well formed per W3C Trace Context (version ≠ ff, non-zero
 * ids, no suffix for version 00), else undefined: a bad traceparent is ignored, never an error.
 */
export function parseTraceparent(value: string): string | undefined {
  if (value === '' || value.length > HEADER_VALUE_LENGTH_MAX) return undefined;
  const m = TRACEPARENT_PATTERN.exec(value);
  if (m === null) return undefined;
  const [, version, traceId, parentId, , suffix] = m;
  if (version === 'ff' || traceId === ZERO_TRACE_ID || parentId === ZERO_PARENT_ID) return undefined;
  if (version === '00' && suffix !== undefined) return undefined;
  return value;
}

/** Options of `readHeaders`. */
export interface ReadHeadersOptions {
  /** The type the subject implies (API subjects); another Strata-Type gives bad_request. */
  expectType?: MessageType;
}

/**
 * Reads and checks the Strata headers of a request: Strata-Type and Strata-Schema are required,
 * Strata-Deadline and traceparent optional. Throws ProtocolError('bad_request') with `{ path }`
 * naming the header (and `{ supported }` for the schema).
 */
export function readHeaders(carrier: HeaderReader | undefined, options?: ReadHeadersOptions): MessageHeaders {
  const get = (name: string): string => {
    const value = carrier?.get(name) ?? '';
    if (value.length > HEADER_VALUE_LENGTH_MAX) headerError(name, `value longer than ${HEADER_VALUE_LENGTH_MAX} characters`);
    return value;
  };
  const schema = parseSchemaVersion(get(HEADER_SCHEMA));
  const type = parseMessageType(get(HEADER_TYPE));
  if (options?.expectType !== undefined && type !== options.expectType) {
    headerError(HEADER_TYPE, `expected ${quote(options.expectType)} for this subject, got ${quote(type)}`);
  }
  const headers: MessageHeaders = { type, schema };
  const deadlineMs = parseDeadline(get(HEADER_DEADLINE));
  if (deadlineMs !== undefined) headers.deadlineMs = deadlineMs;
  const traceparent = parseTraceparent(carrier?.get(HEADER_TRACEPARENT) ?? '');
  if (traceparent !== undefined) headers.traceparent = traceparent;
  return headers;
}

/**
 * The time left before `deadlineMs` at `nowMs`, in ms, capped at DEADLINE_AHEAD_MS_MAX; no
 * deadline gives the cap. A deadline at or before `nowMs` throws ProtocolError('timeout').
 * The caller passes the clock reading (this module reads no clock).
 */
export function deadlineRemainingMs(deadlineMs: number | undefined, nowMs: number): number {
  if (deadlineMs === undefined) return DEADLINE_AHEAD_MS_MAX;
  const remainingMs = deadlineMs - nowMs;
  if (remainingMs <= 0) {
    throw new ProtocolError('timeout', `deadline passed ${-remainingMs} ms ago`, { deadlineMs, nowMs });
  }
  return Math.min(remainingMs, DEADLINE_AHEAD_MS_MAX);
}
