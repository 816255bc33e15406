/**
 * A digest of a run of log records: CRC-32C chained over each record's LSN, term, kind and the
 * CRC-32C of its payload. Two replicas of a shard that hold the same records over a range have
 * the same digest of it; records that differ in any of those (or a range cut at another LSN)
 * give another, but for a collision of 1 in 2^32. Online, a shard's replicas are compared this
 * way (`strata shard check`): by Raft's log matching rule, the committed records every replica
 * holds must be the same.
 */
import { crc32c } from './crc32c';
import { StorageError } from './errors';
import type { SegmentLog } from './log';

/** Payload bytes one digest reads at most: a call holds its thread for one disk read of this much. */
export const DIGEST_BYTES_MAX = 16 * 1024 * 1024;
/** Bytes of the log read at a time. */
const DIGEST_STEP_BYTES = 4 * 1024 * 1024;

export interface LogDigest {
  fromLsn: number;
  /** The last LSN digested: `toLsn` asked, or less when the payloads reached DIGEST_BYTES_MAX (always at least `fromLsn`). */
  toLsn: number;
  records: number;
  digest: number;
}

/**
 * The digest of the records `fromLsn..toLsn` of `log`, cut after DIGEST_BYTES_MAX of payloads.
 * Errors: `bad_request` (fromLsn above toLsn), `trimmed` (below the log's first LSN),
 * `out_of_range` (above its last), `corruption` (a record whose checksum fails).
 */
export function digestRecords(log: SegmentLog, fromLsn: number, toLsn: number): LogDigest {
  if (!Number.isSafeInteger(fromLsn) || !Number.isSafeInteger(toLsn) || fromLsn < 1 || fromLsn > toLsn) {
    throw new StorageError('bad_request', `digest of LSNs ${fromLsn}..${toLsn}: expected 1 <= fromLsn <= toLsn`);
  }
  const scratch = new Uint8Array(24);
  const view = new DataView(scratch.buffer);
  let digest = 0;
  let bytes = 0;
  let lsn = fromLsn;
  while (lsn <= toLsn && (lsn === fromLsn || bytes < DIGEST_BYTES_MAX)) {
    const records = log.read(lsn, toLsn, { bytesMax: Math.max(1, Math.min(DIGEST_STEP_BYTES, DIGEST_BYTES_MAX - bytes)) });
    for (const r of records) {
      view.setFloat64(0, r.lsn, true);
      view.setFloat64(8, r.term, true);
      view.setUint32(16, r.kind, true);
      view.setUint32(20, crc32c(r.payload), true);
      digest = crc32c(scratch, digest);
      bytes += r.payload.length;
    }
    lsn = records[records.length - 1]!.lsn + 1;
  }
  return { fromLsn, toLsn: lsn - 1, records: lsn - fromLsn, digest };
}
