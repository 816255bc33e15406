/**
 * The write ids a replica's log holds, for recognizing a write sent to it again.
 *
 * A client gives each write an id (`ShardWriteRequest.writeId`: its random bytes and a count),
 * the same in every try, and the record of the write carries it (page-write.ts, page-zero.ts).
 * A try that reaches a leader whose log already holds a record with its id is answered with that
 * record, once committed, instead of being written a second time: a second copy could overwrite
 * a newer write of the same page. A leader killed or frozen with a write never answers it; the
 * client's next try finds the record in the next leader's log, if it got there (and only then
 * can it commit).
 *
 * A replica notes the id of each record it puts in its log, as leader or follower, and forgets
 * the ids of records cut from its log. It cannot remember every id: it keeps at most
 * WRITE_IDS_MAX, none longer than WRITE_ID_KEEP_MS, and it knows none of the records in its log
 * when it starts (unless the log is empty or its storage read them back), or of an image it
 * installs. It therefore keeps the time since which it knows every id of its log
 * (`completeSinceMs`): an id not found is proof that the log holds no record of that write only
 * for a write first sent after that time (`covers`). For any other, the shard cannot say, and
 * answers that the write's outcome is unknown rather than write it again.
 *
 * Memory: about 50 bytes an id, in typed arrays that grow with the ids held (a ring of slots in
 * the order they were noted, and an open-addressing hash table of slot numbers), not one object
 * per id: a shard taking thousands of writes a second keeps the ids of the last several seconds.
 *
 * Times are of the replica's own monotonic clock. Pure logic: no IO, no clock read.
 */
import { WRITE_ID_BYTES, WRITE_SENT_SKEW_MS } from '../messages/api';

/**
 * Most ids one replica remembers (about 50 bytes each, 3.3 MiB in all): a shard taking more
 * writes than this in the time a client waits before it sends a write again, and the clocks'
 * skew, cannot tell a try from a new write (at 5,000 writes a second, 13 s).
 */
export const WRITE_IDS_MAX = 65_536;

/**
 * The longest an id is kept: a minute, stretched by the clocks' skew. The client's tries of a
 * write with the default 10 s deadline all come within it; a try later than this whose record
 * is not found is answered as of unknown outcome. It bounds the ids held by the write rate.
 */
export const WRITE_ID_KEEP_MS = 60_000 + WRITE_SENT_SKEW_MS;

/**
 * Most ids a replica reads back from its log when it opens it (the newest records'): as many as
 * it keeps. A log holds about a checkpoint's worth of records after its image (65,536 by
 * default), so the ids of a busy shard's whole log are read back, and with them the proof that
 * a write not found is not in it; they are forgotten a minute later, as any others.
 */
export const WRITE_IDS_READ_AT_OPEN = WRITE_IDS_MAX;

/** Slots a WriteIds starts with; it doubles them when full, up to its `max`. */
const SLOTS_FIRST = 256;
const EMPTY = -1;

/** Where in the log a write id's record is. */
export interface WriteIdRecord {
  lsn: number;
  term: number;
}

/** The i-th little-endian u32 of an id (it may be an unaligned view of a payload). */
function word(id: Uint8Array, i: number): number {
  const o = i * 4;
  return (id[o]! | (id[o + 1]! << 8) | (id[o + 2]! << 16) | (id[o + 3]! << 24)) >>> 0;
}

export class WriteIds {
  /** Slots, a ring in the order ids were noted: `head` the oldest, `count` of them in use. */
  private cap = 0;
  private head = 0;
  private count = 0;
  /** Per slot: the id's 4 words, its hash, its record's LSN and term, when it was noted. */
  private words = new Uint32Array(0);
  private hashes = new Uint32Array(0);
  private lsns = new Float64Array(0);
  private terms = new Float64Array(0);
  private atMs = new Float64Array(0);
  /** Per slot: 1 while its id is in the table (not noted again since, cut or forgotten). */
  private live = new Uint8Array(0);
  /** Open addressing with linear probing: slot numbers, EMPTY where none. Twice the slots. */
  private table = new Int32Array(0);
  private held = 0;
  private sinceMs: number;
  /** Per replica: ids a client chose cannot be made to collide in every replica's table. */
  private readonly seed: number;

  /** `nowMs`: the replica's start, before which it knows no id (-Infinity for an empty log). */
  constructor(
    nowMs: number,
    private readonly keepMs: number = WRITE_ID_KEEP_MS,
    private readonly max: number = WRITE_IDS_MAX,
    random: () => number = Math.random,
  ) {
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`max must be a positive integer, got ${String(max)}`);
    this.sinceMs = nowMs;
    this.seed = Math.floor(random() * 0x1_0000_0000) >>> 0;
  }

  /** Ids remembered. */
  get size(): number {
    return this.held;
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
    this.expire(nowMs);
    while (this.count === this.max) this.forgetOldest();
    if (this.count === this.cap) this.resize(Math.min(this.max, Math.max(SLOTS_FIRST, this.cap * 2)));
    const hash = this.hashOf(id);
    const at = this.lookup(id, hash);
    if (at !== undefined) this.unlink(at.pos, at.slot);
    const s = (this.head + this.count) % this.cap;
    this.count++;
    for (let i = 0; i < 4; i++) this.words[s * 4 + i] = word(id, i);
    this.hashes[s] = hash;
    this.lsns[s] = lsn;
    this.terms[s] = term;
    this.atMs[s] = nowMs;
    this.live[s] = 1;
    const mask = this.table.length - 1;
    let pos = hash & mask;
    while (this.table[pos] !== EMPTY) pos = (pos + 1) & mask;
    this.table[pos] = s;
    this.held++;
  }

  /**
   * Forgets the ids noted more than keepMs before `nowMs`, and gives back the memory of slots
   * mostly unused since (a burst of writes over). Done as ids are noted, and by the replica's tick.
   */
  expire(nowMs: number): void {
    while (this.count > 0 && this.atMs[this.head]! < nowMs - this.keepMs) this.forgetOldest();
    if (this.cap > SLOTS_FIRST && this.count <= this.cap / 4) this.resize(Math.max(SLOTS_FIRST, Math.floor(this.cap / 2)));
  }

  /** Slots allocated (they grow with the ids held, and shrink back). */
  get capacity(): number {
    return this.cap;
  }

  /** The record of write `id` in the log, if noted. */
  find(id: Uint8Array): WriteIdRecord | undefined {
    if (this.held === 0) return undefined;
    const at = this.lookup(id, this.hashOf(id));
    return at === undefined ? undefined : { lsn: this.lsns[at.slot]!, term: this.terms[at.slot]! };
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
    for (let i = 0; i < this.count; i++) {
      const s = (this.head + i) % this.cap;
      if (this.live[s] === 1 && this.lsns[s]! >= lsn) this.unlink(this.positionOf(s), s);
    }
  }

  /** The log was replaced (an image installed): every id is forgotten, and nothing before `nowMs` is known. */
  reset(nowMs: number): void {
    this.live.fill(0);
    this.table.fill(EMPTY);
    this.head = 0;
    this.count = 0;
    this.held = 0;
    this.sinceMs = Math.max(this.sinceMs, nowMs);
  }

  /** Forgets the oldest slot's id, unless noted again since (or cut): then it was not this one. */
  private forgetOldest(): void {
    const s = this.head;
    this.head = (this.head + 1) % this.cap;
    this.count--;
    if (this.live[s] !== 1) return;
    this.unlink(this.positionOf(s), s);
    this.sinceMs = Math.max(this.sinceMs, this.atMs[s]!);
  }

  private hashOf(id: Uint8Array): number {
    if (id.length !== WRITE_ID_BYTES) throw new RangeError(`a write id has ${WRITE_ID_BYTES} bytes, got ${id.length}`);
    let h = this.seed;
    for (let i = 0; i < 4; i++) {
      h = Math.imul(h ^ word(id, i), 0x9e3779b1);
      h ^= h >>> 15;
    }
    return h >>> 0;
  }

  /** The live slot holding `id`, and its place in the table. */
  private lookup(id: Uint8Array, hash: number): { slot: number; pos: number } | undefined {
    if (this.cap === 0) return undefined;
    const mask = this.table.length - 1;
    const w0 = word(id, 0), w1 = word(id, 1), w2 = word(id, 2), w3 = word(id, 3);
    for (let pos = hash & mask; ; pos = (pos + 1) & mask) {
      const s = this.table[pos]!;
      if (s === EMPTY) return undefined;
      const o = s * 4;
      if (this.hashes[s] === hash && this.words[o] === w0 && this.words[o + 1] === w1 && this.words[o + 2] === w2 && this.words[o + 3] === w3) return { slot: s, pos };
    }
  }

  /** The table position of live slot `s`. */
  private positionOf(s: number): number {
    const mask = this.table.length - 1;
    let pos = this.hashes[s]! & mask;
    while (this.table[pos] !== s) pos = (pos + 1) & mask;
    return pos;
  }

  /** Takes slot `s` (at table position `pos`) out of the table, shifting back the entries after it. */
  private unlink(pos: number, s: number): void {
    this.live[s] = 0;
    this.held--;
    const mask = this.table.length - 1;
    let hole = pos;
    for (let j = (hole + 1) & mask; this.table[j] !== EMPTY; j = (j + 1) & mask) {
      const home = this.hashes[this.table[j]!]! & mask;
      // The entry at j may move into the hole unless its home lies cyclically in (hole, j].
      const stays = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (stays) continue;
      this.table[hole] = this.table[j]!;
      hole = j;
    }
    this.table[hole] = EMPTY;
  }

  /** Moves the slots in use into `cap` slots (at least `count`), keeping the ring's order, and rebuilds the table. */
  private resize(cap: number): void {
    const words = new Uint32Array(cap * 4);
    const hashes = new Uint32Array(cap);
    const lsns = new Float64Array(cap);
    const terms = new Float64Array(cap);
    const atMs = new Float64Array(cap);
    const live = new Uint8Array(cap);
    let tableSize = 1;
    while (tableSize < cap * 2) tableSize *= 2;
    const table = new Int32Array(tableSize).fill(EMPTY);
    for (let i = 0; i < this.count; i++) {
      const from = (this.head + i) % this.cap;
      words.set(this.words.subarray(from * 4, from * 4 + 4), i * 4);
      hashes[i] = this.hashes[from]!;
      lsns[i] = this.lsns[from]!;
      terms[i] = this.terms[from]!;
      atMs[i] = this.atMs[from]!;
      live[i] = this.live[from]!;
      if (live[i] === 1) {
        let pos = hashes[i]! & (tableSize - 1);
        while (table[pos] !== EMPTY) pos = (pos + 1) & (tableSize - 1);
        table[pos] = i;
      }
    }
    this.cap = cap;
    this.head = 0;
    this.words = words;
    this.hashes = hashes;
    this.lsns = lsns;
    this.terms = terms;
    this.atMs = atMs;
    this.live = live;
    this.table = table;
  }
}
