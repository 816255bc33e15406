/** WriteIds: the bounded memory of a log's write ids, and the time since which it is complete. */
import { strict as assert } from 'node:assert';
import { WRITE_IDS_MAX, WRITE_ID_KEEP_MS, WriteIds } from '../../actors/write-ids';
import { WRITE_SENT_SKEW_MS } from '../../messages/api';
import { TIMEOUT_MS_DEFAULT } from '../../cluster/client';

const id = (n: number): Uint8Array => {
  const b = new Uint8Array(16);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
};

describe('write ids (actors/write-ids.ts)', () => {
  it('finds what was noted, the latest record of an id; complete since its start', () => {
    const w = new WriteIds(100);
    assert.equal(w.find(id(1)), undefined);
    w.note(id(1), 5, 2, 110);
    w.note(id(2), 6, 2, 111);
    w.note(id(1), 9, 3, 112);
    assert.deepEqual(w.find(id(1)), { lsn: 9, term: 3 });
    assert.deepEqual(w.find(id(2)), { lsn: 6, term: 2 });
    assert.equal(w.size, 2);
    assert.equal(w.completeSinceMs, 100);
    assert.equal(w.covers(100), true);
    assert.equal(w.covers(99), false, 'a write first sent before the start may be in the log unnoted');
  });

  it('keeps at most `max` ids: forgetting the oldest makes it complete only since that id was noted', () => {
    const w = new WriteIds(0, 60_000, 3);
    for (let i = 1; i <= 5; i++) w.note(id(i), i, 1, i * 10);
    assert.equal(w.size, 3);
    assert.equal(w.find(id(1)), undefined);
    assert.equal(w.find(id(2)), undefined);
    assert.deepEqual(w.find(id(3)), { lsn: 3, term: 1 });
    assert.equal(w.completeSinceMs, 20, 'the last one forgotten was noted at 20');
    assert.equal(w.covers(19), false);
    assert.equal(w.covers(20), true);
  });

  it('forgets ids older than keepMs as it notes new ones, which leaves it complete since then', () => {
    const w = new WriteIds(0, 1000);
    w.note(id(1), 1, 1, 100);
    w.note(id(2), 2, 1, 600);
    w.note(id(3), 3, 1, 1500);
    assert.equal(w.find(id(1)), undefined);
    assert.deepEqual(w.find(id(2)), { lsn: 2, term: 1 });
    assert.equal(w.completeSinceMs, 100);
    // A write first sent after the id forgotten was noted: its record would have been noted after.
    assert.equal(w.covers(500), true);
  });

  it('gives back the memory of a burst once its ids are forgotten, without a write to note', () => {
    const w = new WriteIds(0, 1000, 65_536);
    for (let i = 0; i < 5000; i++) w.note(id(i), i + 1, 1, i / 10);
    assert.ok(w.capacity >= 5000, String(w.capacity));
    w.expire(400);
    assert.equal(w.size, 5000, 'none older than keepMs yet');
    w.expire(2000);
    for (let i = 0; i < 8; i++) w.expire(2000 + i);
    assert.equal(w.size, 0);
    assert.equal(w.capacity, 256);
    assert.equal(w.completeSinceMs, 499.9);
    w.note(id(1), 9000, 2, 2100);
    assert.deepEqual(w.find(id(1)), { lsn: 9000, term: 2 });
  });

  it('forgets the ids of records cut from the log, and every id when the log is replaced', () => {
    const w = new WriteIds(0);
    for (let i = 1; i <= 4; i++) w.note(id(i), 10 + i, 1, i);
    w.cut(13);
    assert.deepEqual([1, 2, 3, 4].map((i) => w.find(id(i))?.lsn), [11, 12, undefined, undefined]);
    assert.equal(w.completeSinceMs, 0, 'a record cut is no longer in the log: nothing unknown');
    w.reset(50);
    assert.equal(w.size, 0);
    assert.equal(w.completeSinceMs, 50);
    assert.equal(w.covers(49), false);
  });

  it('keeps ids for every try of a write with the default deadline, and the clocks\' skew; a positive bound', () => {
    assert.ok(WRITE_ID_KEEP_MS >= TIMEOUT_MS_DEFAULT + WRITE_SENT_SKEW_MS);
    assert.ok(WRITE_IDS_MAX >= 1024);
    assert.throws(() => new WriteIds(0, 1000, 0), /max must be a positive integer, got 0/);
    assert.throws(() => new WriteIds(0).note(new Uint8Array(15), 1, 1, 0), /a write id has 16 bytes, got 15/);
  });

  it('answers as a plain map of every id noted would, through growth, collisions, ids noted again, cuts, resets and the bounds', () => {
    /** The same bookkeeping with one object per id: a Map, and the order they were noted in. */
    class Model {
      readonly byKey = new Map<string, { lsn: number; term: number; atMs: number; n: number }>();
      readonly order: Array<{ key: string; atMs: number; n: number }> = [];
      sinceMs: number;
      private n = 0;
      constructor(nowMs: number, private readonly keepMs: number, private readonly max: number) {
        this.sinceMs = nowMs;
      }
      private forgetOldest(): void {
        const o = this.order.shift()!;
        if (this.byKey.get(o.key)?.n !== o.n) return;
        this.byKey.delete(o.key);
        this.sinceMs = Math.max(this.sinceMs, o.atMs);
      }
      expire(nowMs: number): void {
        while (this.order.length > 0 && this.order[0]!.atMs < nowMs - this.keepMs) this.forgetOldest();
      }
      note(key: string, lsn: number, term: number, nowMs: number): void {
        while (this.order.length > 0 && (this.order.length === this.max || this.order[0]!.atMs < nowMs - this.keepMs)) this.forgetOldest();
        const n = ++this.n;
        this.byKey.set(key, { lsn, term, atMs: nowMs, n });
        this.order.push({ key, atMs: nowMs, n });
      }
      cut(lsn: number): void {
        for (const [k, v] of this.byKey) if (v.lsn >= lsn) this.byKey.delete(k);
      }
      reset(nowMs: number): void {
        this.byKey.clear();
        this.order.length = 0;
        this.sinceMs = Math.max(this.sinceMs, nowMs);
      }
    }
    let state = 12345;
    const rand = (): number => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 0x1_0000_0000);
    const pool = Array.from({ length: 700 }, (_, i) => {
      const b = new Uint8Array(16);
      // A few clients' random bytes, each with its counts.
      new DataView(b.buffer).setUint32(0, 0xdead0000 + (i % 3), true);
      new DataView(b.buffer).setUint32(8, i, true);
      return b;
    });
    const keyOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');
    for (const [max, keepMs] of [[500, 1000], [64, 100_000], [2000, 50]] as const) {
      const w = new WriteIds(0, keepMs, max, rand);
      const m = new Model(0, keepMs, max);
      let now = 0;
      let lsn = 0;
      for (let op = 0; op < 6000; op++) {
        const r = rand();
        now += Math.floor(rand() * 4);
        if (r < 0.05) {
          now += Math.floor(rand() * keepMs);
          w.expire(now);
          m.expire(now);
        } else if (r < 0.9) {
          const id = pool[Math.floor(rand() * pool.length)]!;
          lsn++;
          w.note(id, lsn, 1 + (lsn >> 8), now);
          m.note(keyOf(id), lsn, 1 + (lsn >> 8), now);
        } else if (r < 0.995) {
          const at = lsn - Math.floor(rand() * 20);
          w.cut(at);
          m.cut(at);
          lsn = at - 1;
        } else {
          w.reset(now);
          m.reset(now);
        }
        if (op % 50 === 0 || op === 5999) {
          for (const id of pool) {
            const want = m.byKey.get(keyOf(id));
            assert.deepEqual(w.find(id), want === undefined ? undefined : { lsn: want.lsn, term: want.term }, `max ${max}, op ${op}`);
          }
          assert.equal(w.size, m.byKey.size);
          assert.equal(w.completeSinceMs, m.sinceMs);
        }
      }
    }
  });
});
