/**
 * The write ids a shard log's records carry, read back as the log is recovered at open: the
 * recovery's callback (SegmentLog `onRecovered`), the bounded set of ids kept (LogWriteIds), and
 * what ShardStorage hands its replica (`takeWriteIdsAtOpen`): the ids its log holds, and since
 * when they are every id of a record it holds.
 */
import { strict as assert } from 'node:assert';
import { SegmentLog } from '../../storage-engine/log';
import { LogWriteIds, writeIdOfRecord, type LogWriteIdList } from '../../storage-engine/log-write-ids';
import { MetaStore } from '../../storage-engine/metadata';
import { encodePageWrite } from '../../storage-engine/page-write';
import { encodePageZero } from '../../storage-engine/page-zero';
import { ShardStorage, type ShardStorageOptions } from '../../storage-engine/shard-storage';
import { SimDisk } from '../../storage-engine/sim-disk';
import { Slab } from '../../storage-engine/slab';
import { StorageError } from '../../storage-engine/errors';

const PAGE = 4096;
const PAGES = 64;
const slab = new Slab({ slotBytes: PAGE, slotCount: 1024 });
const id = (n: number): Uint8Array => new Uint8Array(16).fill(n);
const data = (n: number): Uint8Array => new Uint8Array(PAGE).fill(n);
const write = (n: number, withId = true, term = 1) => ({ term, kind: 1, payload: encodePageWrite(PAGE, [{ page: n % PAGES, data: data(n) }], undefined, withId ? id(n) : undefined) });
const options = (over: Partial<ShardStorageOptions> = {}): ShardStorageOptions => ({
  dir: 'S', pageSize: PAGE, pageCount: PAGES, cacheBytesMax: 1 << 16, slab, segmentBytesMax: 16 * 1024, writeIdsKept: 100, ...over,
});
/** What a list holds, its ids copied. */
const all = (ids: LogWriteIdList): Array<{ id: Uint8Array; lsn: number; term: number }> => {
  const out: Array<{ id: Uint8Array; lsn: number; term: number }> = [];
  ids.forEach((id, lsn, term) => out.push({ id: id.slice(), lsn, term }));
  assert.equal(out.length, ids.count);
  return out;
};
/** The ids a list holds, by their first byte. */
const firsts = (ids: LogWriteIdList): number[] => all(ids).map((r) => r.id[0]!);

describe('write ids read back from a log at open', () => {
  it('writeIdOfRecord finds the id of a page write or a range made zeros that carries one, and no other', () => {
    assert.deepEqual(writeIdOfRecord(1, write(3).payload), id(3));
    assert.equal(writeIdOfRecord(1, write(3, false).payload), undefined);
    assert.deepEqual(writeIdOfRecord(4, encodePageZero({ first: 2, count: 3 }, id(9))), id(9));
    assert.equal(writeIdOfRecord(4, encodePageZero({ first: 2, count: 3 })), undefined);
    // A no-op record (empty) and a page write's bytes under another kind: none.
    assert.equal(writeIdOfRecord(2, new Uint8Array(0)), undefined);
    assert.equal(writeIdOfRecord(3, write(3).payload), undefined);
  });

  it('LogWriteIds keeps the newest ids, copies of their bytes, in LSN order, and says through which LSN it dropped some', () => {
    const ids = new LogWriteIds(3);
    const buf = write(1).payload;
    ids.onRecovered(1, 1, 1, buf);
    buf.fill(0); // the recovery's buffer is reused
    ids.onRecovered(2, 1, 2, new Uint8Array(0));
    assert.deepEqual(all(ids), [{ id: id(1), lsn: 1, term: 1 }]);
    assert.equal(ids.droppedThroughLsn, 0);
    for (let lsn = 3; lsn <= 7; lsn++) ids.onRecovered(lsn, 2, 1, write(lsn).payload);
    assert.deepEqual(all(ids).map((r) => [r.lsn, r.term, r.id[0]]), [[5, 2, 5], [6, 2, 6], [7, 2, 7]]);
    assert.equal(ids.droppedThroughLsn, 4);
    const none = new LogWriteIds(0);
    none.onRecovered(8, 2, 1, write(8).payload);
    assert.deepEqual(all(none), []);
    // Past the first slots, and then past the bound: the newest, in order.
    const many = new LogWriteIds(3000);
    for (let lsn = 1; lsn <= 3500; lsn++) many.onRecovered(lsn, 1, 1, write(lsn & 0xff).payload);
    const kept = all(many);
    assert.deepEqual([kept.length, kept[0]!.lsn, kept[2999]!.lsn, many.droppedThroughLsn], [3000, 501, 3500, 500]);
    assert.ok(kept.every((r, i) => r.lsn === 501 + i && r.id[0] === (r.lsn & 0xff)));
    assert.equal(none.droppedThroughLsn, 8);
    assert.throws(() => new LogWriteIds(-1), (e: unknown) => e instanceof StorageError && e.code === 'bad_request');
    assert.throws(() => new LogWriteIds(1.5), (e: unknown) => e instanceof StorageError && e.code === 'bad_request');
  });

  it('the recovery passes each valid record, in order, with its term, kind and payload; none after a torn tail', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: 'L', segmentBytesMax: 16 * 1024 });
    const records = [write(1), { term: 1, kind: 2, payload: new Uint8Array(0) }, write(2), { term: 2, kind: 4, payload: encodePageZero({ first: 0, count: 2 }, id(7)) }, write(3, true, 2), write(4, false, 2)];
    for (const r of records) log.write([r]);
    log.sync();
    log.write([write(5, true, 2)]); // not synced: torn by the power cut
    log.close();
    disk.powerCut({ tear: { path: `L/${disk.list('L')[0]!}`, keepBytes: 100 } });
    const seen: Array<{ lsn: number; term: number; kind: number; payload: Uint8Array }> = [];
    const again = SegmentLog.open(disk, { dir: 'L', segmentBytesMax: 16 * 1024, onRecovered: (lsn, term, kind, payload) => seen.push({ lsn, term, kind, payload: payload.slice() }) });
    try {
      assert.equal(again.lastLsn, records.length);
      assert.deepEqual(seen, records.map((r, i) => ({ lsn: i + 1, term: r.term, kind: r.kind, payload: r.payload })));
    } finally {
      again.close();
    }
  });

  describe('ShardStorage takeWriteIdsAtOpen', () => {
    /** A storage on `disk` whose log got `records` (synced, nothing applied), closed. */
    function written(disk: SimDisk, records: ReturnType<typeof write>[], over: Partial<ShardStorageOptions> = {}): void {
      const st = ShardStorage.open(disk, options(over));
      st.log.write(records);
      st.log.sync();
      st.close();
    }

    it('a log that still starts at LSN 1: the ids of its records, every id it ever held; once per open', () => {
      const disk = new SimDisk();
      written(disk, [write(1), write(2, false), write(3)]);
      const st = ShardStorage.open(disk, options());
      try {
        const at = st.takeWriteIdsAtOpen(Date.now());
        assert.deepEqual(all(at.ids).map((r) => [r.lsn, r.term, r.id[0]]), [[1, 1, 1], [3, 1, 3]]);
        assert.equal(at.completeAgoMs, Number.POSITIVE_INFINITY);
        const again = st.takeWriteIdsAtOpen(Date.now());
        assert.deepEqual([again.ids.count, all(again.ids), again.completeAgoMs], [0, [], undefined]);
      } finally {
        st.close();
      }
    });

    it('more records with ids than it keeps: the newest, and not known to be every id', () => {
      const disk = new SimDisk();
      written(disk, [write(1), write(2), write(3)]);
      const st = ShardStorage.open(disk, options({ writeIdsKept: 2 }));
      try {
        const at = st.takeWriteIdsAtOpen(Date.now());
        assert.deepEqual(firsts(at.ids), [2, 3]);
        assert.equal(at.completeAgoMs, undefined);
      } finally {
        st.close();
      }
    });

    it('records the open cuts (never made durable before a device failure) are left out', () => {
      const disk = new SimDisk();
      written(disk, [write(1), write(2), write(3), write(4)]);
      const st = ShardStorage.open(disk, options({ afterDeviceFailure: true, durableLsn: 2 }));
      try {
        assert.equal(st.log.lastLsn, 2);
        assert.deepEqual(firsts(st.takeWriteIdsAtOpen(Date.now()).ids), [1, 2]);
      } finally {
        st.close();
      }
    });

    it('a log trimmed behind an image: every id since its checkpoint pointer was written; not known from a pointer that does not say when', () => {
      const disk = new SimDisk();
      const madeAt = 1_700_000_000_000;
      const st = ShardStorage.open(disk, options({ wallClock: () => madeAt }));
      let lsn = 0;
      for (let round = 0; round < 3; round++) {
        st.log.write(Array.from({ length: 20 }, (_, k) => write(lsn + k + 1)));
        st.log.sync();
        for (const r of st.log.read(lsn + 1, lsn + 20)) st.store.apply(r);
        lsn += 20;
        st.store.checkpoint();
      }
      st.log.write([write(lsn + 1), write(lsn + 2)]);
      st.log.sync();
      const firstLsn = st.log.firstLsn;
      assert.ok(firstLsn > 1, 'the log was trimmed');
      st.close();
      const again = ShardStorage.open(disk, options());
      try {
        const at = again.takeWriteIdsAtOpen(madeAt + 5000);
        assert.equal(at.completeAgoMs, 5000);
        assert.deepEqual(all(at.ids).map((r) => r.lsn), Array.from({ length: lsn + 2 - firstLsn + 1 }, (_, k) => firstLsn + k));
      } finally {
        again.close();
      }
      // The same pointer as an earlier build wrote it, without its time.
      const meta = new MetaStore(disk, 'S');
      const { madeAtMs, ...older } = meta.read<Record<string, unknown>>('checkpoint')!;
      assert.equal(madeAtMs, madeAt);
      meta.write('checkpoint', older);
      const old = ShardStorage.open(disk, options());
      try {
        const at = old.takeWriteIdsAtOpen(madeAt + 5000);
        assert.equal(at.completeAgoMs, undefined);
        assert.equal(at.ids.count, lsn + 2 - firstLsn + 1, 'the ids its log holds all the same');
      } finally {
        old.close();
      }
      // A pointer whose time is not a time is damaged: not known, and the store opens from its images.
      meta.write('checkpoint', { ...older, madeAtMs: -1 });
      const bad = ShardStorage.open(disk, options());
      try {
        assert.equal(bad.takeWriteIdsAtOpen(madeAt + 5000).completeAgoMs, undefined);
        assert.equal(bad.store.stats().imageLsn, older['lsn']);
      } finally {
        bad.close();
      }
    });
  });
});
