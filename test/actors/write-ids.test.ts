/** WriteIds: the bounded memory of a log's write ids, and the time since which it is complete. */
import { strict as assert } from 'node:assert';
import { WRITE_IDS_MAX, WRITE_ID_KEEP_MS, WriteIds } from '../../actors/write-ids';
import { DEADLINE_AHEAD_MS_MAX } from '../../messages/headers';

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

  it('keeps ids for a request\'s longest deadline and more; a positive bound', () => {
    assert.ok(WRITE_ID_KEEP_MS > DEADLINE_AHEAD_MS_MAX);
    assert.ok(WRITE_IDS_MAX >= 1024);
    assert.throws(() => new WriteIds(0, 1000, 0), /max must be a positive integer, got 0/);
  });
});
