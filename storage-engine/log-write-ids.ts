/**
 * The write ids of a shard log's records, as the log's recovery finds them at open (SegmentLog
 * `onRecovered`): for the replica that opens the log, so that it still recognizes a write sent
 * again after it restarted (actors/write-ids.ts) without reading its log a second time.
 *
 * Bounded: the newest `max` ids are kept, oldest first; `droppedThroughLsn` says which records'
 * ids were not kept, and with it whether the ids kept are all the log holds.
 */
import { writeIdOfPageWrite } from './page-write';
import { writeIdOfPageZero } from './page-zero';
import { RecordKind } from './record';
import { StorageError } from './errors';

/** The write id a record of `kind` carries (a view of `payload`), if any. `payload`'s checksum matched. */
export function writeIdOfRecord(kind: number, payload: Uint8Array): Uint8Array | undefined {
  if (kind === RecordKind.PageWrite) return writeIdOfPageWrite(payload);
  if (kind === RecordKind.PageZero) return writeIdOfPageZero(payload);
  return undefined;
}

/** A write id found in a log, with its record's place. */
export interface LogWriteId {
  id: Uint8Array;
  lsn: number;
  term: number;
}

export class LogWriteIds {
  /** The ids kept: in LSN order until `max`, then a ring whose oldest is at `next`. */
  private readonly ring: LogWriteId[] = [];
  private next = 0;
  private droppedThrough = 0;

  /** `max`: most ids kept (0: none, every record with an id counts as dropped). */
  constructor(private readonly max: number) {
    if (!Number.isSafeInteger(max) || max < 0) throw new StorageError('bad_request', `write ids kept must be a non-negative integer, got ${String(max)}`);
  }

  /** For SegmentLog `onRecovered`: notes the id of the record, if it has one (its bytes copied). */
  readonly onRecovered = (lsn: number, term: number, kind: number, payload: Uint8Array): void => {
    const id = writeIdOfRecord(kind, payload);
    if (id === undefined) return;
    if (this.max === 0) {
      this.droppedThrough = lsn;
      return;
    }
    const kept = { id: id.slice(), lsn, term };
    if (this.ring.length < this.max) {
      this.ring.push(kept);
      return;
    }
    this.droppedThrough = this.ring[this.next]!.lsn;
    this.ring[this.next] = kept;
    this.next = (this.next + 1) % this.max;
  };

  /** The LSN of the newest record whose id was not kept (0: every id found was kept). */
  get droppedThroughLsn(): number {
    return this.droppedThrough;
  }

  /** The ids kept, in LSN order. */
  list(): LogWriteId[] {
    return [...this.ring.slice(this.next), ...this.ring.slice(0, this.next)];
  }
}
