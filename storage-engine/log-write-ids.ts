/**
 * The write ids of a shard log's records, as the log's recovery finds them at open (SegmentLog
 * `onRecovered`): for the replica that opens the log, so that it still recognizes a write sent
 * again after it restarted (actors/write-ids.ts) without reading its log a second time.
 *
 * Bounded: the newest `max` ids are kept (about 32 bytes each, in typed arrays that grow with
 * them); `droppedThroughLsn` says which records' ids were not kept, and with it whether the ids
 * kept are all the log holds.
 */
import { WRITE_ID_BYTES, writeIdOfPageWrite } from './page-write';
import { writeIdOfPageZero } from './page-zero';
import { RecordKind } from './record';
import { StorageError } from './errors';

/** The write id a record of `kind` carries (a view of `payload`), if any. `payload`'s checksum matched. */
export function writeIdOfRecord(kind: number, payload: Uint8Array): Uint8Array | undefined {
  if (kind === RecordKind.PageWrite) return writeIdOfPageWrite(payload);
  if (kind === RecordKind.PageZero) return writeIdOfPageZero(payload);
  return undefined;
}

/** Write ids found in a log, each with its record's place. */
export interface LogWriteIdList {
  /** How many. */
  readonly count: number;
  /** Calls `fn` for each, in LSN order; `id` is a view, valid during the call only. */
  forEach(fn: (id: Uint8Array, lsn: number, term: number) => void): void;
}

/** Ids kept before the ring grows. */
const SLOTS_FIRST = 1024;

export class LogWriteIds implements LogWriteIdList {
  /** Per slot: the id's bytes, its record's LSN and term; in LSN order until `max`, then a ring whose oldest is at `next`. */
  private ids = new Uint8Array(0);
  private lsns = new Float64Array(0);
  private terms = new Float64Array(0);
  private used = 0;
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
    let slot: number;
    if (this.used < this.max) {
      if (this.used === this.lsns.length) this.grow();
      slot = this.used++;
    } else {
      slot = this.next;
      this.droppedThrough = this.lsns[slot]!;
      this.next = (this.next + 1) % this.max;
    }
    this.ids.set(id, slot * WRITE_ID_BYTES);
    this.lsns[slot] = lsn;
    this.terms[slot] = term;
  };

  /** The LSN of the newest record whose id was not kept (0: every id found was kept). */
  get droppedThroughLsn(): number {
    return this.droppedThrough;
  }

  get count(): number {
    return this.used;
  }

  forEach(fn: (id: Uint8Array, lsn: number, term: number) => void): void {
    const start = this.used < this.max ? 0 : this.next;
    for (let i = 0; i < this.used; i++) {
      const slot = (start + i) % this.used;
      fn(this.ids.subarray(slot * WRITE_ID_BYTES, (slot + 1) * WRITE_ID_BYTES), this.lsns[slot]!, this.terms[slot]!);
    }
  }

  private grow(): void {
    const cap = Math.min(this.max, Math.max(SLOTS_FIRST, this.lsns.length * 2));
    const ids = new Uint8Array(cap * WRITE_ID_BYTES);
    ids.set(this.ids);
    const lsns = new Float64Array(cap);
    lsns.set(this.lsns);
    const terms = new Float64Array(cap);
    terms.set(this.terms);
    this.ids = ids;
    this.lsns = lsns;
    this.terms = terms;
  }
}
