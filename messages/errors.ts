/**
 * Error codes and the error reply of the Strata wire protocol.
 *
 * Every failed request is answered with `{ error: { code, message, details? } }`. Callers branch
 * on `code`, never on `message`. The list of codes, when each is used and whether a client should
 * retry is in docs/protocol.md; `ERROR_CODE_RETRYABLE` is the same table in code.
 */

/** Every error code of the wire protocol. Adding a code is a compatible change (see versioning). */
export const ERROR_CODES = [
  /** The request is malformed: bad CBOR, wrong type, missing field, bad header, unsupported schema. */
  'bad_request',
  /** The named volume (or other object) does not exist. */
  'not_found',
  /** A volume with that name exists already. */
  'already_exists',
  /** A page number or LSN lies outside the valid range of the volume or shard. */
  'out_of_range',
  /** The request is bigger than a limit (pages per request, data bytes, message bytes); split it. */
  'too_large',
  /** A bounded queue is full; retry after a back-off. */
  'overloaded',
  /** The receiver is not the leader of the shard; details may name the leader and its term. */
  'not_leader',
  /** The deadline passed before the request completed; a write may or may not have been applied. */
  'timeout',
  /** No quorum or no host for the shard right now; retry after a back-off. */
  'unavailable',
  /** A device failed during the request; the shard fails over or is repaired. */
  'device_failed',
  /**
   * The device holding the shard's replica is short of free space: page writes are refused
   * until space is freed (pages made zeros then checkpointed, volumes deleted, replicas moved);
   * reads, ranges made zeros and deletes go on.
   */
  'no_space',
  /** Stored data failed a checksum or structure check and no healthy copy could serve it. */
  'corruption',
  /** The LSN asked for is older than the retained history. */
  'trimmed',
  /** The LSN asked for is newer than the last LSN applied (and waiting for it timed out). */
  'future_lsn',
  /** Fencing: the message carries a term (or generation) older than the receiver's. */
  'stale_term',
  /**
   * The NATS server does not let the caller's user send to the subject (its permissions,
   * docs/replication.md "Locking the subjects"); raised by the client library, never sent.
   */
  'forbidden',
  /** Anything else: a bug or an unexpected exception. Details are logged by the server. */
  'internal',
] as const;

/** One of `ERROR_CODES`. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Whether a client may retry a request that failed with a code (after the action in docs/protocol.md). */
export const ERROR_CODE_RETRYABLE: Readonly<Record<ErrorCode, boolean>> = {
  bad_request: false,
  not_found: false,
  already_exists: false,
  out_of_range: false,
  too_large: false,
  overloaded: true,
  not_leader: true,
  timeout: true,
  unavailable: true,
  device_failed: true,
  no_space: false,
  corruption: false,
  trimmed: false,
  future_lsn: true,
  stale_term: true,
  forbidden: false,
  internal: false,
};

/** Bound on the length of an error message put on the wire, in UTF-16 code units. */
export const ERROR_MESSAGE_LENGTH_MAX = 1024;

/** Extra facts about an error, e.g. `{ path: 'pages[3].data' }`; plain CBOR-encodable values. */
export type ErrorDetails = Readonly<Record<string, unknown>>;

/** The `error` member of an error reply. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: ErrorDetails;
}

/** An error reply as it travels on the wire. No successful reply has a top-level `error` field. */
export interface ErrorReply {
  error: ErrorBody;
}

const ERROR_CODE_SET: ReadonlySet<string> = new Set<string>(ERROR_CODES);

/** True if `value` is one of the protocol's error codes. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && ERROR_CODE_SET.has(value);
}

/** True if a request failed with `code` may be retried (see `ERROR_CODE_RETRYABLE`). */
export function isRetryable(code: ErrorCode): boolean {
  return ERROR_CODE_RETRYABLE[code];
}

/** A typed protocol error: what a validator throws and what an error reply turns back into. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  readonly code: ErrorCode;
  readonly details: ErrorDetails | undefined;

  constructor(code: ErrorCode, message: string, details?: ErrorDetails) {
    super(message);
    this.code = code;
    this.details = details;
  }

  /** The wire form of this error (the `error` member of an error reply). */
  toBody(): ErrorBody {
    const message =
      this.message.length > ERROR_MESSAGE_LENGTH_MAX
        ? `${this.message.slice(0, ERROR_MESSAGE_LENGTH_MAX - 1)}…`
        : this.message;
    return this.details === undefined
      ? { code: this.code, message }
      : { code: this.code, message, details: this.details };
  }
}

/** True if `err` is a ProtocolError. */
export function isProtocolError(err: unknown): err is ProtocolError {
  return err instanceof ProtocolError;
}

/** A CBOR map as decoded: a plain object (not an array, bytes or a class instance). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * The storage engine's codes that are not protocol codes (storage-engine/errors.ts), as the
 * protocol code a client acts on: a failed write or flush of a device is `device_failed` (the
 * shard fails over or is repaired), a replica closed under the request (its volume deleted, its
 * host stopping) `unavailable`. `invariant` (a bug) stays `internal`.
 */
const STORAGE_CODES: ReadonlyMap<string, ErrorCode> = new Map<string, ErrorCode>([
  ['io_error', 'device_failed'],
  ['fsync_failed', 'device_failed'],
  ['closed', 'unavailable'],
]);

/**
 * Maps any thrown value to a ProtocolError: a ProtocolError is returned as is; an Error (of any
 * layer) whose string `code` is a protocol code keeps that code, its message and plain-object
 * `details`; one with a storage code of STORAGE_CODES takes the protocol code it stands for, and
 * says which in `details.storageCode`; anything else becomes `internal` with the message
 * "internal error" (the original is for the server's log, not for the client).
 */
export function toProtocolError(err: unknown): ProtocolError {
  if (err instanceof ProtocolError) return err;
  if (err instanceof Error) {
    const code: unknown = (err as { code?: unknown }).code;
    const details: unknown = (err as { details?: unknown }).details;
    if (isErrorCode(code)) return new ProtocolError(code, err.message, isPlainObject(details) ? details : undefined);
    const mapped = typeof code === 'string' ? STORAGE_CODES.get(code) : undefined;
    if (mapped !== undefined) return new ProtocolError(mapped, err.message, { ...(isPlainObject(details) ? details : {}), storageCode: code });
  }
  return new ProtocolError('internal', 'internal error');
}

/** The error reply for any thrown value (through `toProtocolError`). */
export function errorReply(err: unknown): ErrorReply {
  return { error: toProtocolError(err).toBody() };
}

/** True if a decoded reply is an error reply (has a top-level `error` member). */
export function isErrorReply(reply: unknown): reply is ErrorReply {
  return isPlainObject(reply) && Object.prototype.hasOwnProperty.call(reply, 'error');
}

/**
 * Throws the ProtocolError carried by an error reply; returns any other reply unchanged.
 * An error code this version does not know becomes `internal` with `details.remoteCode` set;
 * a malformed error member becomes `internal` too.
 */
export function throwIfError<T>(reply: T | ErrorReply): T {
  if (!isErrorReply(reply)) return reply as T;
  const body: unknown = reply.error;
  if (!isPlainObject(body) || typeof body.code !== 'string' || typeof body.message !== 'string') {
    throw new ProtocolError('internal', 'malformed error reply', { path: 'error' });
  }
  const details = isPlainObject(body.details) ? body.details : undefined;
  if (!isErrorCode(body.code)) {
    throw new ProtocolError('internal', body.message, { ...details, remoteCode: body.code });
  }
  throw new ProtocolError(body.code, body.message, details);
}
