/**
 * Log record types shared by the log, the page store and the actors.
 *
 * LSNs are contiguous integers: the first record of a shard is LSN 1, each record the next.
 * (A byte-offset LSN would make "previous LSN" depend on record sizes;
 * contiguous numbers make log matching in replication a plain comparison.) LSN 0 means
 * "before any record". LSNs and terms stay below 2^53 and are stored as u64 on disk.
 */
export const enum RecordKind {
  /** Payload: page-write batch (see page-write.ts): one or more (page, data) pairs, applied atomically. */
  PageWrite = 1,
  /** Empty payload: written by a new leader at the start of its term (replication). */
  Noop = 2,
  /** Payload: CBOR replica-set configuration (replication / membership change). */
  Config = 3,
  /** Payload: a range of pages made zeros (see page-zero.ts): the shard's own pages in it, atomically. */
  PageZero = 4,
}

export interface LogRecordInput {
  term: number;
  kind: number;
  payload: Uint8Array;
  /**
   * crc32c(payload), when the writer already computed it (e.g. on a CPU-pool thread from a slab
   * handle). The log then combines it with the header's checksum instead of reading the payload
   * again. A wrong value makes the record fail its checksum on every later read.
   */
  payloadCrc?: number;
}

export interface LogRecord extends LogRecordInput {
  lsn: number;
}

/** Largest record payload the log accepts (a vectored write of 256 pages of 4 KiB, or 128 of 8 KiB, plus headers). */
export const RECORD_PAYLOAD_BYTES_MAX = 1024 * 1024 + 64 * 1024;
