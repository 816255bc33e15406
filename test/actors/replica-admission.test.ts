/**
 * A replica whose device refuses an append (its queue is full: other shards of the device are
 * busy): the append is refused before the records get LSNs, so the replica's log position never
 * runs ahead of its log, and the records that come next land at the right LSNs.
 */
import { strict as assert } from 'node:assert';
import { Replica } from '../../actors/replica';
import { DeviceQueue } from '../../actors/device-queue';
import { SimDisk } from '../../storage-engine/sim-disk';
import { Slab } from '../../storage-engine/slab';
import { ShardStorage } from '../../storage-engine/shard-storage';
import { decodePageWrite, encodePageWrite } from '../../storage-engine/page-write';
import { RecordKind } from '../../storage-engine/record';
import type { StorageError } from '../../storage-engine/errors';
import type { ShardGeometry } from '../../actors/shard';
import type { AppendReply } from '../../messages/raft';

const geometry: ShardGeometry = { volumeId: 'v1', shard: 0, shards: 1, pageCount: 256, pageSize: 4096, stripePages: 256 };

function pageData(n: number): Uint8Array {
  return new Uint8Array(4096).fill(n);
}

function record(term: number, page: number): { term: number; kind: number; payload: Uint8Array } {
  return { term, kind: RecordKind.PageWrite, payload: encodePageWrite(4096, [{ page, data: pageData(page) }]) };
}

/** One replica of `members` on a simulated disk, its device queue holding at most two operations. */
function replicaOf(self: string, members: string[]): { replica: Replica; queue: DeviceQueue; storage: ShardStorage; fill: () => Promise<unknown> } {
  const disk = new SimDisk();
  const slab = new Slab({ slotBytes: 4096, slotCount: 64 });
  const storage = ShardStorage.open(disk, {
    dir: 'shard', pageSize: 4096, pageCount: 256, cacheBytesMax: 1 << 20, slab, segmentBytesMax: 1 << 20, repairFromPeers: members.length > 1,
  });
  const queue = new DeviceQueue({ disk, name: self, queueOpsMax: 2 });
  const replica = new Replica({
    geometry, self, members, log: storage.log, store: storage.store, queue, hardState: storage,
    transport: { send: () => Promise.reject(new Error('unreachable')) }, snapshots: storage, nowMs: 0, clock: () => 0,
  });
  // Fills the device's queue for a moment, as other shards' IO on the same device does.
  const fill = (): Promise<unknown> => Promise.all([queue.task(() => 1), queue.task(() => 2)]);
  return { replica, queue, storage, fill };
}

/** The page of each page write the log holds, in LSN order (other records left out). */
function logPages(storage: ShardStorage): number[] {
  return storage.log
    .read(storage.log.firstLsn, storage.log.lastLsn)
    .filter((r) => r.kind === RecordKind.PageWrite)
    .map((r) => decodePageWrite(r.payload, 4096)[0]!.page);
}

describe('Replica whose device refuses an append (queue full)', function () {
  it('a follower answers the append overloaded and keeps its position; the leader sends it again and every record lands at its LSN', async () => {
    const { replica: b, queue, storage, fill } = replicaOf('b', ['a', 'b', 'c']);
    try {
      const append = (prevLsn: number, pages: number[], commitLsn = 0): Promise<AppendReply> =>
        b.handle({ type: 'append', term: 1, leader: 'a', prevLsn, prevTerm: prevLsn === 0 ? 0 : 1, records: pages.map((p) => record(1, p)), commitLsn, leaderLastLsn: prevLsn + pages.length }) as Promise<AppendReply>;
      assert.equal((await append(0, [1, 2])).success, true);
      const full = fill();
      await assert.rejects(append(2, [3, 4]), (e: StorageError) => e.code === 'overloaded');
      assert.equal(b.stats().lastLsn, 2, 'the refused records have no LSNs');
      await full;
      // The leader's next message starts where the follower is.
      const reply = await append(2, [3, 4, 5], 5);
      assert.deepEqual([reply.success, reply.matchLsn], [true, 5]);
      assert.deepEqual(logPages(storage), [1, 2, 3, 4, 5]);
    } finally {
      b.close();
      await queue.drain();
      storage.close();
    }
  });

  it('a leader refuses the write overloaded, having given it no LSN; the next write commits at the next LSN and reads right', async () => {
    const { replica: a, queue, storage, fill } = replicaOf('a', ['a']);
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      a.tick(1);
      for (let i = 0; i < 200 && !a.isLeader; i++) await new Promise((r) => setTimeout(r, 1));
      assert.ok(a.isLeader);
      const first = await a.write([{ page: 1, data: pageData(1) }]);
      const full = fill();
      await assert.rejects(a.write([{ page: 2, data: pageData(2) }]), (e: StorageError) => e.code === 'overloaded' && e.details?.['recordLsn'] === undefined);
      assert.equal(a.stats().lastLsn, first.lsn);
      await full;
      const third = await a.write([{ page: 3, data: pageData(3) }], { deadlineMs: Date.now() + 2000 });
      assert.equal(third.lsn, first.lsn + 1);
      const read = await a.read([1, 2, 3], { deadlineMs: Date.now() + 1000, nowMs: Date.now() });
      assert.deepEqual(read.pages.map((p) => p[0]), [1, 0, 3]);
      assert.deepEqual(logPages(storage), [1, 3]);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      a.close();
      await queue.drain();
      storage.close();
    }
  });

  it('a follower whose log holds prevLsn with another term answers from before that term\'s run, marked a conflict', async () => {
    const { replica: b, queue, storage } = replicaOf('b', ['a', 'b', 'c']);
    try {
      // Four records of term 1 from leader a, never committed.
      const first = (await b.handle({ type: 'append', term: 1, leader: 'a', prevLsn: 0, prevTerm: 0, records: [1, 2, 3, 4].map((p) => record(1, p)), commitLsn: 0, leaderLastLsn: 4 })) as AppendReply;
      assert.equal(first.success, true);
      // Leader c of term 2 holds other records from LSN 1 on: its first probe does not match at 4.
      const reply = (await b.handle({ type: 'append', term: 2, leader: 'c', prevLsn: 4, prevTerm: 2, records: [], commitLsn: 0, leaderLastLsn: 6 })) as AppendReply;
      assert.deepEqual(reply, { term: 2, success: false, lastLsn: 0, conflict: true });
    } finally {
      b.close();
      await queue.drain();
      storage.close();
    }
  });

  it('a leader refuses what reaches it malformed without the API\'s checks: a page of the wrong size, a map past the volume, a digest of no range; nothing is appended', async () => {
    const { replica: a, queue, storage } = replicaOf('a', ['a']);
    try {
      a.tick(1);
      for (let i = 0; i < 200 && !a.isLeader; i++) await new Promise((r) => setTimeout(r, 1));
      assert.ok(a.isLeader);
      const before = a.stats().lastLsn;
      await assert.rejects(
        a.write([{ page: 1, data: pageData(1) }, { page: 2, data: new Uint8Array(4095) }]),
        (e: StorageError) => e.code === 'bad_request' && e.details?.['path'] === 'pages[1].data' && /expected 4096 bytes, got 4095/.test(e.message),
      );
      await assert.rejects(a.map(200, 57, { deadlineMs: Date.now() + 1000, nowMs: Date.now() }), (e: StorageError) => e.code === 'out_of_range' && /pages 200\.\.256 are not all in the volume \(0\.\.255\)/.test(e.message));
      for (const [first, count] of [[-1, 1], [0, 0], [1.5, 2]] as const) {
        assert.throws(() => a.digest(undefined, { lsn: before, first, count }), (e: StorageError) => e.code === 'bad_request' && /is not a range/.test(e.message), `${first} + ${count}`);
      }
      assert.equal(a.stats().lastLsn, before);
      // The term's first record may still be on its way to the log: read it once it is there.
      for (let i = 0; i < 1000 && storage.log.lastLsn < before; i++) await new Promise((r) => setImmediate(r));
      assert.equal(storage.log.lastLsn, before);
      assert.deepEqual(logPages(storage), []);
      // A map within the volume is answered.
      assert.equal((await a.map(200, 56, { deadlineMs: Date.now() + 1000, nowMs: Date.now() })).end, 256);
    } finally {
      a.close();
      await queue.drain();
      storage.close();
    }
  });
});
