/**
 * The write ids a replica's log holds, for recognizing a write sent to it again.
 *
 * A client gives each write an id (`ShardWriteRequest.writeId`: its random bytes and a count),
 * the same in every try, and the record of the write carries it (page-write.ts, page-zero.ts). A try that reaches a leader
 * whose log already holds a record with its id is answered with that record, once committed,
 * instead of being written a second time: a second copy could overwrite a newer write of the
 * same page. A leader killed or frozen with a write never answers it; the client's next try
 * finds the record in the next leader's log, if it got there (and only then can it commit).
 *
 * A replica notes the id of each record it puts in its log, as leader or follower, and forgets
 * the ids of records cut from its log. It cannot remember every id: it keeps at most
 * WRITE_IDS_MAX, none longer than WRITE_ID_KEEP_MS, and it knows none of the records in its log
 * when it starts (unless the log is empty), or of an image it installs. It therefore keeps the
 * time since which it knows every id of its log (`completeSinceMs`): an id not found is proof
 * that the log holds no record of that write only for a write first sent after that time
 * (`covers`). For any other, the shard cannot say, and answers that the write's outcome is
 * unknown rather than write it again.
 *
 * Times are of the replica's own monotonic clock. Pure logic: no IO, no clock read.
 */
import { WRITE_SENT_SKEW_MS } from '../messages/api';
import { DEADLINE_AHEAD_MS_MAX } from '../messages/headers';

/**
 * Most ids one replica remembers (about 100 bytes each): a shard taking more writes than this
 * in the time a client waits before it sends a write again cannot tell a try from a new write.
 */
export const WRITE_IDS_MAX = 8_192;

/** The longest a try can come after the first: a request's deadline ahead, stretched by the clocks' skew. */
export const WRITE_ID_KEEP_MS = DEADLINE_AHEAD_MS_MAX + WRITE_SENT_SKEW_MS;

/** Where in the log a write id's record is. */
export interface WriteIdRecord {
  lsn: number;
  term: number;
}

interface Noted extends WriteIdRecord {
  key: string;
  atMs: number;
}

/** A write id (WRITE_ID_BYTES) as a map key: each two of its bytes one UTF-16 code unit. */
function keyOf(id: Uint8Array): string {
  const b = (i: number): number => id[i]! | (id[i + 1]! << 8);
  return String.fromCharCode(b(0), b(2), b(4), b(6), b(8), b(10), b(12), b(14));
}

export class WriteIds {
  private readonly byKey = new Map<string, Noted>();
  /**
   * Every id noted, oldest first, in a ring of `max` slots (`head`, `count`): the order they are
   * forgotten in. A slot whose id was noted again since, or cut, is no longer its map entry.
   */
  private readonly ring: Array<Noted | undefined>;
  private head = 0;
  private count = 0;
  private sinceMs: number;

  /** `nowMs`: the replica's start, before which it knows no id (-Infinity for an empty log). */
  constructor(
    nowMs: number,
    private readonly keepMs: number = WRITE_ID_KEEP_MS,
    private readonly max: number = WRITE_IDS_MAX,
  ) {
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`max must be a positive integer, got ${String(max)}`);
    this.ring = new Array<Noted | undefined>(max);
    this.sinceMs = nowMs;
  }

  /** Ids remembered. */
  get size(): number {
    return this.byKey.size;
  }

  /** Every id of the log's records noted since this time is remembered. */
  get completeSinceMs(): number {
    return this.sinceMs;
  }

  /**
   * Notes that the log holds the record of write `id` at `lsn` with `term` (a later record of the
   * same id replaces it), and forgets the oldest ids past the bounds.
   */
  note(id: Uint8Array, lsn: number, term: number, nowMs: number): void {
    while (this.count > 0 && (this.count === this.max || this.ring[this.head]!.atMs < nowMs - this.keepMs)) this.forgetOldest();
    const noted: Noted = { key: keyOf(id), lsn, term, atMs: nowMs };
    this.byKey.set(noted.key, noted);
    this.ring[(this.head + this.count) % this.max] = noted;
    this.count++;
  }

  /** Forgets the oldest slot's id, unless noted again since (or cut): then it was not this one. */
  private forgetOldest(): void {
    const noted = this.ring[this.head]!;
    this.ring[this.head] = undefined;
    this.head = (this.head + 1) % this.max;
    this.count--;
    if (this.byKey.get(noted.key) !== noted) return;
    this.byKey.delete(noted.key);
    this.sinceMs = Math.max(this.sinceMs, noted.atMs);
  }

  /** The record of write `id` in the log, if noted. */
  find(id: Uint8Array): WriteIdRecord | undefined {
    const noted = this.byKey.get(keyOf(id));
    return noted === undefined ? undefined : { lsn: noted.lsn, term: noted.term };
  }

  /**
   * True when an id not found proves that the log holds no record of a write first sent at
   * `sentMs` (this clock): every record noted since then is remembered.
   */
  covers(sentMs: number): boolean {
    return sentMs >= this.sinceMs;
  }

  /** The log's records from `lsn` on were cut: their ids are forgotten (they are no longer there). */
  cut(lsn: number): void {
    for (const [key, noted] of this.byKey) if (noted.lsn >= lsn) this.byKey.delete(key);
  }

  /** The log was replaced (an image installed): every id is forgotten, and nothing before `nowMs` is known. */
  reset(nowMs: number): void {
    this.byKey.clear();
    this.ring.fill(undefined);
    this.head = 0;
    this.count = 0;
    this.sinceMs = Math.max(this.sinceMs, nowMs);
  }
}
