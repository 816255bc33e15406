/**
 * Typed errors of the storage engine. Each has a stable `code` (the same words the wire
 * protocol uses, see docs/protocol.md) so that callers branch on `code`, never on text.
 */
export type StorageErrorCode =
  | 'io_error'          // the disk reported an error (EIO, ENOSPC...) on a read or write
  | 'fsync_failed'      // fdatasync/fsync failed: the data of that batch is not durable
  | 'device_failed'     // the device had a fatal error earlier and takes no more writes
  | 'overloaded'        // a bounded queue or slab is full; retry later
  | 'no_space'          // the device's free space is below its reserve: page writes are refused
  | 'corruption'        // a checksum or structure check failed in the middle of the data
  | 'trimmed'           // the LSN asked for is older than the retained history
  | 'future_lsn'        // the LSN asked for is newer than the last one applied
  | 'out_of_range'      // page number, offset or size outside the allowed range
  | 'too_large'         // a request, record or read is bigger than its bound
  | 'bad_request'       // an argument is malformed (wrong length, wrong type)
  | 'closed'            // the object was closed
  | 'invariant';        // an internal assertion failed (a bug): stop, do not go on

export class StorageError extends Error {
  override readonly name: string = 'StorageError';
  readonly code: StorageErrorCode;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: StorageErrorCode, message: string, details?: Record<string, unknown>, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.code = code;
    this.details = details;
  }
}

/** A corrupt range found by recovery: records fromLsn..toLsn (inclusive, as far as known) are unreadable. */
export interface CorruptionReport {
  file: string;
  offset: number;
  fromLsn: number;
  /** Last LSN known to be lost; the next valid record found after the damage has toLsn + 1. */
  toLsn: number;
  reason: string;
}

export class CorruptionError extends StorageError {
  override readonly name = 'CorruptionError';
  readonly reports: CorruptionReport[];
  constructor(message: string, reports: CorruptionReport[]) {
    super('corruption', message, { reports });
    this.reports = reports;
  }
}

/** Asserts an invariant; a failure is a bug, reported with the `invariant` code. */
export function assert(cond: unknown, message: string, details?: Record<string, unknown>): asserts cond {
  if (!cond) throw new StorageError('invariant', `invariant violated: ${message}`, details);
}

/** The OS error code of a failed `fs` call (`ENOENT`, `EIO`…), or 'EUNKNOWN' when it has none. */
export function errnoOf(e: unknown): string {
  if (e !== null && typeof e === 'object' && 'code' in e && typeof (e as { code: unknown }).code === 'string') {
    return (e as { code: string }).code;
  }
  return 'EUNKNOWN';
}
