import { strict as assert } from 'node:assert';
import { DeviceQueue, type AppendTarget, BATCH_OPS_BUCKETS, SPACE_CHECK_MS, SPACE_RECHECK_BYTES_MIN, defaultSpaceReserve } from '../../actors/device-queue';
import type { Disk, FileHandle } from '../../storage-engine/disk';
import { StorageError } from '../../storage-engine/errors';
import type { LogRecordInput } from '../../storage-engine/record';
import { LOG_WRITE_BATCH_RECORDS_MAX } from '../../storage-engine/log';
import type { HardStateSave, StateSink } from '../../storage-engine/hard-state-journal';

/** A log that counts its writes and syncs and can be told to fail. */
class FakeLog implements AppendTarget {
  lastLsn = 0;
  syncedLsn = 0;
  writes = 0;
  syncs = 0;
  failSync = false;
  failWrite = false;
  written: LogRecordInput[] = [];
  write(records: readonly LogRecordInput[]): number {
    if (this.failWrite) throw new StorageError('io_error', 'ENOSPC', { errno: 'ENOSPC' });
    this.writes++;
    this.written.push(...records);
    this.lastLsn += records.length;
    return this.lastLsn;
  }
  sync(): void {
    this.syncs++;
    if (this.failSync) throw new StorageError('fsync_failed', 'EIO', { errno: 'EIO' });
    this.syncedLsn = this.lastLsn;
  }
}

/** A FakeLog whose flush is asynchronous and finishes only when the test says so. */
class AsyncFakeLog extends FakeLog {
  pendingFlushes: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  writesDuringFlush = 0;
  syncAsync(): Promise<void> {
    this.syncs++;
    const upto = this.lastLsn;
    return new Promise<void>((resolve, reject) => {
      this.pendingFlushes.push({
        resolve: () => {
          this.syncedLsn = upto;
          this.pendingFlushes = this.pendingFlushes.slice(1);
          resolve();
        },
        reject,
      });
    });
  }
  override write(records: readonly LogRecordInput[]): number {
    if (this.pendingFlushes.length > 0) this.writesDuringFlush++;
    return super.write(records);
  }
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A disk whose only working call is read, over one in-memory file per handle. */
function readOnlyDisk(files: Map<FileHandle, Uint8Array>): Disk & { reads: number } {
  const d = {
    reads: 0,
    read(fh: FileHandle, buf: Uint8Array, offset: number): number {
      d.reads++;
      const f = files.get(fh);
      if (!f) throw new StorageError('io_error', 'EBADF');
      const n = Math.max(0, Math.min(buf.length, f.length - offset));
      buf.set(f.subarray(offset, offset + n));
      return n;
    },
  };
  return new Proxy(d, {
    get(target, prop) {
      if (prop in target) return (target as Record<string | symbol, unknown>)[prop];
      return () => {
        throw new Error(`unexpected disk call ${String(prop)}`);
      };
    },
  }) as unknown as Disk & { reads: number };
}

/** A scheduler that runs nothing until the test says so. */
function manualScheduler(): { schedule: (run: () => void) => void; runAll: () => void; pending: () => number } {
  let queue: Array<() => void> = [];
  return {
    schedule: (run) => queue.push(run),
    runAll: () => {
      while (queue.length > 0) {
        const q = queue;
        queue = [];
        for (const run of q) run();
      }
    },
    pending: () => queue.length,
  };
}

const rec = (n: number, bytes = 16): LogRecordInput => ({ term: 1, kind: 1, payload: new Uint8Array(bytes).fill(n & 0xff) });

describe('DeviceQueue', () => {
  it('group-commits appends queued together: one write and one fdatasync per log per batch', async () => {
    const sched = manualScheduler();
    const log = new FakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
    const done = [];
    for (let i = 0; i < 100; i++) done.push(q.append(log, [rec(i), rec(i)]));
    assert.equal(log.writes, 0, 'nothing is written before the batch runs');
    sched.runAll();
    const results = await Promise.all(done);
    assert.equal(log.writes, 1);
    assert.equal(log.syncs, 1);
    assert.equal(log.written.length, 200);
    // LSNs are handed out in submission order, two per submission.
    results.forEach((r, i) => assert.deepEqual(r, { firstLsn: 2 * i + 1, lastLsn: 2 * i + 2 }));
    const s = q.stats();
    assert.equal(s.batches, 1);
    assert.equal(s.syncs, 1);
    assert.equal(s.appendOps, 100);
    assert.equal(s.appendRecords, 200);
    assert.equal(s.batchOpsHistogram[BATCH_OPS_BUCKETS.findIndex((b) => b >= 100)], 1);
  });

  it('writes a target\'s appends in as many log writes as the log\'s bounds on one write need, flushed once: no failed device', async () => {
    // Two appends of 40,000 empty records each are valid alone; one write of both is over the
    // log's 65,536 records (before the check, the device failed, and every shard on it restarted).
    const sched = manualScheduler();
    const log = new FakeLog();
    const write = log.write.bind(log);
    log.write = (records) => {
      if (records.length > LOG_WRITE_BATCH_RECORDS_MAX) throw new StorageError('bad_request', `a write batch holds at most ${LOG_WRITE_BATCH_RECORDS_MAX} records, got ${records.length}`);
      return write(records);
    };
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
    const empty = (n: number): LogRecordInput[] => Array.from({ length: n }, () => ({ term: 1, kind: 2, payload: new Uint8Array(0) }));
    const done = [q.append(log, empty(40_000)), q.append(log, empty(40_000)), q.append(log, [rec(1)])];
    sched.runAll();
    assert.deepEqual(await Promise.all(done), [{ firstLsn: 1, lastLsn: 40_000 }, { firstLsn: 40_001, lastLsn: 80_000 }, { firstLsn: 80_001, lastLsn: 80_001 }]);
    assert.equal(log.writes, 2, 'the first append alone, then the second with the third');
    assert.equal(log.syncs, 1);
    assert.equal(q.stats().state, 'ok');
    assert.equal(q.stats().appendRecords, 80_001);
  });

  it('splits batches at batchOpsMax and batchBytesMax', async () => {
    const sched = manualScheduler();
    const log = new FakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule, batchOpsMax: 10, batchBytesMax: 1000 });
    const done = [];
    for (let i = 0; i < 25; i++) done.push(q.append(log, [rec(i, 16)]));
    sched.runAll();
    await Promise.all(done);
    assert.equal(log.syncs, 3, '25 ops in batches of at most 10');
    const log2 = new FakeLog();
    const done2 = [];
    for (let i = 0; i < 4; i++) done2.push(q.append(log2, [rec(i, 400)]));
    sched.runAll();
    await Promise.all(done2);
    assert.equal(log2.syncs, 2, '4 × 400 bytes in batches of at most 1000 bytes');
  });

  it('syncs each log of a batch once', async () => {
    const sched = manualScheduler();
    const a = new FakeLog();
    const b = new FakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
    const done = [q.append(a, [rec(1)]), q.append(b, [rec(2)]), q.append(a, [rec(3)]), q.append(b, [rec(4)])];
    sched.runAll();
    await Promise.all(done);
    assert.deepEqual([a.writes, a.syncs, b.writes, b.syncs], [1, 1, 1, 1]);
    assert.equal(q.stats().syncs, 2);
  });

  it('refuses submissions over the queue bounds with overloaded, and accepts again once drained', async () => {
    const sched = manualScheduler();
    const log = new FakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule, queueOpsMax: 3, queueBytesMax: 100 });
    const ok = [q.append(log, [rec(1)]), q.append(log, [rec(2)]), q.append(log, [rec(3)])];
    await assert.rejects(q.append(log, [rec(4)]), (e: StorageError) => e.code === 'overloaded' && e.details?.queueOps === 3);
    const q2 = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule, queueBytesMax: 100 });
    const ok2 = q2.append(log, [rec(5, 60)]);
    await assert.rejects(q2.append(log, [rec(6, 60)]), (e: StorageError) => e.code === 'overloaded');
    sched.runAll();
    await Promise.all([...ok, ok2]);
    const again = q.append(log, [rec(7)]);
    sched.runAll();
    assert.deepEqual(await again, { firstLsn: 5, lastLsn: 5 }, 'accepted again once the queue drained');
    assert.equal(q.stats().rejectedOverloaded, 1);
    assert.equal(q2.stats().rejectedOverloaded, 1);
  });

  it('fails every append of a batch whose fdatasync fails, acknowledges none, and marks the device failed', async () => {
    const sched = manualScheduler();
    const a = new FakeLog();
    const b = new FakeLog();
    b.failSync = true;
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule, name: 'dev0' });
    const settled: Array<PromiseSettledResult<unknown>> = [];
    const done = [q.append(a, [rec(1)]), q.append(b, [rec(2)]), q.append(a, [rec(3)])].map((p) =>
      p.then(
        (v) => settled.push({ status: 'fulfilled', value: v }),
        (e) => settled.push({ status: 'rejected', reason: e }),
      ),
    );
    sched.runAll();
    await Promise.all(done);
    assert.equal(settled.length, 3);
    for (const s of settled) {
      assert.equal(s.status, 'rejected', 'no append of a batch with a failed fsync is acknowledged');
      assert.equal((s as PromiseRejectedResult).reason.code, 'fsync_failed');
    }
    assert.equal(q.failed, true);
    assert.equal(q.stats().state, 'failed');
    await assert.rejects(q.append(a, [rec(4)]), (e: StorageError) => e.code === 'device_failed');
    await assert.rejects(q.read(1, 0, 10), (e: StorageError) => e.code === 'device_failed');
    assert.equal(a.writes, 1, 'nothing is written after the failure');
  });

  it('checkAppend throws what an append would be refused with now, and nothing when it would be queued', async () => {
    const sched = manualScheduler();
    const log = new FakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule, queueOpsMax: 1, queueBytesMax: 100 });
    q.checkAppend([rec(1)]);
    assert.throws(() => q.checkAppend([rec(1, 101)]), (e: StorageError) => e.code === 'too_large');
    const queued = q.append(log, [rec(1)]);
    assert.throws(() => q.checkAppend([rec(2)]), (e: StorageError) => e.code === 'overloaded' && e.details?.queueOps === 1);
    sched.runAll();
    await queued;
    q.checkAppend([rec(2)]);
    const drained = q.drain();
    assert.throws(() => q.checkAppend([rec(2)]), (e: StorageError) => e.code === 'closed');
    await drained;
  });

  it('an append larger than the whole queue holds is too_large, not overloaded (waiting cannot help)', async () => {
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: manualScheduler().schedule, queueBytesMax: 100 });
    await assert.rejects(q.append(new FakeLog(), [rec(1, 101)]), (e: StorageError) => e.code === 'too_large' && e.details?.queueBytesMax === 100);
    assert.equal(q.stats().rejectedOverloaded, 0);
  });

  it('reports how long the batch in progress has run (a hung flush shows), and 0 when idle', async () => {
    const sched = manualScheduler();
    const log = new AsyncFakeLog();
    let now = 1000;
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule, clock: { nowMs: () => now } });
    assert.equal(q.stats().batchRunningMs, 0);
    const done = q.append(log, [rec(1)]);
    const other = q.append(log, [rec(2)]);
    sched.runAll();
    await settle();
    now += 12_000; // the flush does not come back
    assert.equal(q.stats().batchRunningMs, 12_000);
    log.pendingFlushes[0]!.resolve();
    await Promise.all([done, other]);
    await settle();
    assert.equal(q.stats().batchRunningMs, 0);
  });

  it('with an asynchronous flush: the logs of a batch flush at once, and its appends are answered once every one is durable; a failure of one fails the batch after all settled', async () => {
    const sched = manualScheduler();
    const [a, b, c] = [new AsyncFakeLog(), new AsyncFakeLog(), new AsyncFakeLog()];
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
    let answered = 0;
    const first = [q.append(a, [rec(1)]), q.append(b, [rec(2)]), q.append(c, [rec(3)])].map((p) => p.then(() => answered++));
    sched.runAll();
    await settle();
    assert.deepEqual([a, b, c].map((l) => l.pendingFlushes.length), [1, 1, 1], 'all three flushes in flight together');
    b.pendingFlushes[0]!.resolve();
    c.pendingFlushes[0]!.resolve();
    await settle();
    assert.equal(answered, 0, 'nothing answered while one flush is in flight');
    a.pendingFlushes[0]!.resolve();
    await Promise.all(first);
    assert.equal(answered, 3);
    assert.equal(q.stats().syncs, 3);

    const second = [q.append(a, [rec(4)]), q.append(b, [rec(5)])];
    sched.runAll();
    await settle();
    assert.deepEqual([a, b].map((l) => l.pendingFlushes.length), [1, 1]);
    a.pendingFlushes[0]!.reject(new StorageError('fsync_failed', 'EIO', { errno: 'EIO' }));
    await settle();
    assert.equal(q.failed, false, 'the batch waits for its other flush before it fails');
    b.pendingFlushes[0]!.resolve();
    for (const p of second) await assert.rejects(p, (e: StorageError) => e.code === 'fsync_failed');
    assert.equal(q.failed, true);
  });

  it('with an asynchronous flush: appends are answered only once it is durable, the next batch gathers meanwhile', async () => {
    const sched = manualScheduler();
    const log = new AsyncFakeLog();
    const files = new Map<FileHandle, Uint8Array>([[1, Uint8Array.of(1, 2, 3, 4)]]);
    const q = new DeviceQueue({ disk: readOnlyDisk(files), schedule: sched.schedule });
    let answered = 0;
    const first = [q.append(log, [rec(1)]), q.append(log, [rec(2)])].map((p) => p.then((r) => (answered++, r)));
    sched.runAll();
    await settle();
    assert.equal(log.writes, 1);
    assert.equal(log.pendingFlushes.length, 1, 'the flush is in flight');
    assert.equal(answered, 0, 'nothing is acknowledged before its flush completes');
    // Work arriving meanwhile waits for the next batch: no write while the flush is in flight.
    const second = Promise.all([q.append(log, [rec(3)]), q.append(log, [rec(4)])]);
    const read = q.read(1, 1, 2);
    sched.runAll();
    await settle();
    assert.equal(log.writes, 1, 'no batch starts while the previous flush is in flight');
    log.pendingFlushes[0]!.resolve();
    assert.deepEqual(await Promise.all(first), [{ firstLsn: 1, lastLsn: 1 }, { firstLsn: 2, lastLsn: 2 }]);
    assert.equal(log.syncedLsn, 2);
    sched.runAll(); // the flush's end kicked the next batch
    await settle();
    assert.equal(log.writes, 2);
    assert.deepEqual([...(await read)], [2, 3], 'a read of the next batch does not wait for its flush');
    log.pendingFlushes[0]!.resolve();
    assert.deepEqual(await second, [{ firstLsn: 3, lastLsn: 3 }, { firstLsn: 4, lastLsn: 4 }]);
    assert.equal(log.writesDuringFlush, 0);
    assert.equal(q.stats().syncs, 2);
    await q.drain();
  });

  it('with an asynchronous flush that fails: no append of the batch is acknowledged and the device is fenced', async () => {
    const sched = manualScheduler();
    const log = new AsyncFakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule, name: 'dev1' });
    const done = [q.append(log, [rec(1)]), q.append(log, [rec(2)])].map((p) => p.then(() => 'ok', (e: StorageError) => e.code));
    sched.runAll();
    await settle();
    log.pendingFlushes[0]!.reject(new StorageError('fsync_failed', 'EIO', { errno: 'EIO' }));
    assert.deepEqual(await Promise.all(done), ['fsync_failed', 'fsync_failed']);
    assert.equal(q.failed, true);
    await assert.rejects(q.append(log, [rec(3)]), (e: StorageError) => e.code === 'device_failed');
    assert.equal(log.writes, 1, 'nothing is written after the failure');
  });

  it('a batch of one append flushes on the calling thread (no thread-pool hop for a lone writer)', async () => {
    const sched = manualScheduler();
    const log = new AsyncFakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
    const p = q.append(log, [rec(1), rec(2)]); // one append of two records: still one writer
    sched.runAll();
    assert.equal(log.pendingFlushes.length, 0, 'the blocking sync was used');
    assert.equal(log.syncedLsn, 2);
    assert.deepEqual(await p, { firstLsn: 1, lastLsn: 2 });
    assert.throws(() => new DeviceQueue({ disk: readOnlyDisk(new Map()), asyncSyncMinOps: 0 }), /asyncSyncMinOps/);
  });

  it('asyncSync false, or flushNow, flushes on the calling thread even when the target could do it asynchronously', async () => {
    const sched = manualScheduler();
    const log = new AsyncFakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule, asyncSync: false });
    const p = q.append(log, [rec(1)]);
    sched.runAll();
    assert.deepEqual(await p, { firstLsn: 1, lastLsn: 1 });
    assert.equal(log.pendingFlushes.length, 0, 'the blocking sync was used');
    const q2 = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
    const p2 = q2.append(log, [rec(2)]);
    q2.flushNow();
    assert.deepEqual(await p2, { firstLsn: 2, lastLsn: 2 });
    assert.equal(log.pendingFlushes.length, 0);
  });

  it('an append to a target closed while it waited fails alone with closed; the device and the other targets go on', async () => {
    for (const async of [false, true]) {
      const sched = manualScheduler();
      const closedLog = new FakeLog();
      closedLog.write = () => {
        throw new StorageError('closed', 'log shards/v1.0 is closed');
      };
      const other = async ? new AsyncFakeLog() : new FakeLog();
      const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
      const gone = q.append(closedLog, [rec(1)]);
      const kept = [q.append(other, [rec(2)]), q.append(other, [rec(3)])];
      sched.runAll();
      if (other instanceof AsyncFakeLog) other.pendingFlushes[0]!.resolve();
      await assert.rejects(gone, (e: StorageError) => e.code === 'closed');
      assert.deepEqual((await Promise.all(kept)).map((r) => r.lastLsn), [1, 2]);
      assert.equal(q.failed, false, 'the device is not failed by a closed shard');
      const later = q.append(other, [rec(4)]); // alone in its batch: flushed on the thread
      sched.runAll();
      assert.equal((await later).lastLsn, 3);
      // Only closed targets in a batch: nothing to flush, nothing failed.
      const alone = q.append(closedLog, [rec(5)]);
      sched.runAll();
      await assert.rejects(alone, (e: StorageError) => e.code === 'closed');
      assert.equal(q.failed, false);
    }
  });

  it('a target closed while the asynchronous flushes of its batch run (its replica destroyed meanwhile): its appends fail alone with closed, the others are acknowledged, the device goes on', async () => {
    const sched = manualScheduler();
    const first = new AsyncFakeLog();
    const second = new AsyncFakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
    const kept = [q.append(first, [rec(1)]), q.append(first, [rec(2)])];
    const gone = q.append(second, [rec(3)]).then(() => 'acknowledged', (e: StorageError) => e.code);
    sched.runAll();
    await settle();
    assert.deepEqual([first.pendingFlushes.length, second.pendingFlushes.length], [1, 1], 'both flushes in flight');
    // The second target's shard is closed meanwhile: its flush ends with closed.
    second.pendingFlushes[0]!.reject(new StorageError('closed', 'log shards/v1.0 is closed'));
    first.pendingFlushes[0]!.resolve();
    assert.deepEqual((await Promise.all(kept)).map((r) => r.lastLsn), [1, 2]);
    assert.equal(await gone, 'closed');
    assert.equal(q.failed, false, 'the device is not failed by a shard closed during a flush');
    const later = q.append(first, [rec(4)]);
    sched.runAll();
    assert.equal((await later).lastLsn, 3);
    await q.drain();
  });

  it('fails the batch and the device on a write error (ENOSPC)', async () => {
    const sched = manualScheduler();
    const log = new FakeLog();
    log.failWrite = true;
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
    const p = q.append(log, [rec(1)]);
    sched.runAll();
    await assert.rejects(p, (e: StorageError) => e.code === 'device_failed');
    assert.equal(log.syncs, 0);
    assert.equal(q.failed, true);
  });

  it('coalesces adjacent and overlapping reads of one file into one disk read', async () => {
    const sched = manualScheduler();
    const file = new Uint8Array(64 * 1024);
    for (let i = 0; i < file.length; i++) file[i] = (i * 7) & 0xff;
    const other = new Uint8Array(8192).fill(9);
    const disk = readOnlyDisk(new Map([[3, file], [4, other]]));
    const q = new DeviceQueue({ disk, schedule: sched.schedule });
    const reads = [];
    // 32 adjacent 1 KiB blocks submitted in scrambled order, one overlapping read, one other file.
    const order = Array.from({ length: 32 }, (_, i) => (i * 13) % 32);
    for (const i of order) reads.push(q.read(3, i * 1024, 1024).then((b) => ({ i, b })));
    const overlap = q.read(3, 1000, 100);
    const fromOther = q.read(4, 0, 4096);
    sched.runAll();
    for (const { i, b } of await Promise.all(reads)) assert.deepEqual(b, file.subarray(i * 1024, (i + 1) * 1024));
    assert.deepEqual(await overlap, file.subarray(1000, 1100));
    assert.deepEqual(await fromOther, other.subarray(0, 4096));
    assert.equal(disk.reads, 2, 'one read for the 33 reads of file 3, one for file 4');
    assert.equal(q.stats().readOps, 34);
  });

  it('does not merge reads with a gap, nor past readCoalesceBytesMax, and returns short reads at EOF', async () => {
    const sched = manualScheduler();
    const file = new Uint8Array(10000).fill(1);
    const disk = readOnlyDisk(new Map([[1, file]]));
    const q = new DeviceQueue({ disk, schedule: sched.schedule, readCoalesceBytesMax: 4096 });
    const p = [q.read(1, 0, 2048), q.read(1, 2048, 2048), q.read(1, 4096, 2048), q.read(1, 8192, 4096)];
    await assert.rejects(q.read(1, 0, 8192), (e: StorageError) => e.code === 'too_large');
    sched.runAll();
    const out = await Promise.all(p);
    assert.equal(disk.reads, 3, '[0,4096) merged; [4096,6144) would exceed the bound; [8192..) has a gap');
    assert.equal(out[3]!.length, 10000 - 8192, 'short read at end of file');
  });

  it('a read error fails only the reads that needed it', async () => {
    const sched = manualScheduler();
    const disk = readOnlyDisk(new Map([[1, new Uint8Array(100)]]));
    const q = new DeviceQueue({ disk, schedule: sched.schedule });
    const bad = q.read(99, 0, 10);
    const good = q.read(1, 0, 10);
    sched.runAll();
    await assert.rejects(bad, (e: StorageError) => e.code === 'io_error');
    assert.equal((await good).length, 10);
    assert.equal(q.failed, false);
  });

  it('runs tasks in queue order between batches', async () => {
    const sched = manualScheduler();
    const log = new FakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
    const seen: string[] = [];
    const a = q.append(log, [rec(1)]).then(() => seen.push('append1'));
    const t = q.task(() => {
      seen.push(`task saw synced=${log.syncedLsn}`);
      return 42;
    });
    const b = q.append(log, [rec(2)]).then(() => seen.push('append2'));
    const failing = q.task(() => {
      throw new StorageError('io_error', 'boom');
    });
    sched.runAll();
    assert.equal(await t, 42);
    await Promise.all([a, b]);
    await assert.rejects(failing, (e: StorageError) => e.code === 'io_error');
    assert.deepEqual(seen.slice(0, 1), ['task saw synced=1']);
    assert.equal(log.syncs, 2, 'the task split the appends into two batches');
    assert.equal(q.failed, false, 'a failing task does not fail the device');
  });

  it('a task whose fsync fails fences the device, as a failed flush of a batch does: nothing after it is acknowledged', async () => {
    const sched = manualScheduler();
    const log = new FakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
    // A save of a term and vote (a metadata file: write, fdatasync, rename, fsyncDir) whose fsync fails.
    const save = q.task(() => {
      throw new StorageError('fsync_failed', 'fsyncDir shard: EIO', { errno: 'EIO' });
    });
    const after = q.append(log, [rec(1)]);
    const task = q.task(() => 1);
    sched.runAll();
    await assert.rejects(save, (e: StorageError) => e.code === 'fsync_failed');
    await assert.rejects(after, (e: StorageError) => e.code === 'device_failed');
    await assert.rejects(task, (e: StorageError) => e.code === 'device_failed');
    assert.equal(q.failed, true);
    assert.equal(log.syncs, 0, 'no later flush runs on the failed device');
    assert.throws(() => q.checkAppend([rec(2)]), (e: StorageError) => e.code === 'device_failed');
  });

  describe('saves of terms and votes (saveState)', () => {
    /** A sink that records each batch it is given, and can be told to fail. */
    class FakeSink implements StateSink {
      batches: HardStateSave[][] = [];
      fail: StorageError | undefined;
      saveMany(saves: readonly HardStateSave[]): void {
        if (this.fail) throw this.fail;
        this.batches.push([...saves]);
      }
    }

    it('saves queued together to one sink are written in one batch; a task, an append or another sink ends it, in queue order', async () => {
      const sched = manualScheduler();
      const log = new FakeLog();
      const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
      const sink = new FakeSink();
      const other = new FakeSink();
      const seen: string[] = [];
      const saves = Array.from({ length: 5 }, (_, i) => q.saveState(sink, `s${i}`, { term: i }).then(() => seen.push(`s${i}`)));
      const t = q.task(() => seen.push(`task after ${sink.batches.length} batch`));
      const s5 = q.saveState(sink, 's5', { term: 5 });
      const o = q.saveState(other, 'o', { term: 1 });
      const s6 = q.saveState(sink, 's6', { term: 6 });
      const a = q.append(log, [rec(1)]);
      const s7 = q.saveState(sink, 's7', { term: 7 });
      sched.runAll();
      await Promise.all([...saves, t, s5, o, s6, a, s7]);
      assert.deepEqual(sink.batches.map((b) => b.map((x) => x.key)), [['s0', 's1', 's2', 's3', 's4'], ['s5'], ['s6'], ['s7']]);
      assert.deepEqual(sink.batches[0]![2], { key: 's2', value: { term: 2 } });
      assert.deepEqual(other.batches.map((b) => b.map((x) => x.key)), [['o']]);
      assert.ok(seen.includes('task after 1 batch'), seen.join(', '));
      const st = q.stats();
      assert.equal(st.stateSaves, 9);
      assert.equal(st.stateBatches, 5);
    });

    it('a save whose check refuses it (its store closed) is refused alone and not written', async () => {
      const sched = manualScheduler();
      const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
      const sink = new FakeSink();
      const a = q.saveState(sink, 'a', { term: 1 });
      const closed = q.saveState(sink, 'b', { term: 1 }, () => {
        throw new StorageError('closed', 'shard b is closed');
      });
      const c = q.saveState(sink, 'c', { term: 1 }, () => undefined);
      sched.runAll();
      await Promise.all([a, c]);
      await assert.rejects(closed, (e: StorageError) => e.code === 'closed');
      assert.deepEqual(sink.batches.map((b) => b.map((x) => x.key)), [['a', 'c']]);
      assert.equal(q.failed, false);
    });

    it('a failed fdatasync of a batch fails every save in it and fences the device; another error fails the batch alone', async () => {
      const sched = manualScheduler();
      const q = new DeviceQueue({ disk: readOnlyDisk(new Map()), schedule: sched.schedule });
      const sink = new FakeSink();
      sink.fail = new StorageError('io_error', 'ENOSPC', { errno: 'ENOSPC' });
      const full = [q.saveState(sink, 'a', { term: 1 }), q.saveState(sink, 'b', { term: 1 })];
      sched.runAll();
      for (const p of full) await assert.rejects(p, (e: StorageError) => e.code === 'io_error');
      assert.equal(q.failed, false);
      sink.fail = new StorageError('fsync_failed', 'EIO', { errno: 'EIO' });
      const failed = [q.saveState(sink, 'a', { term: 2 }), q.saveState(sink, 'b', { term: 2 })];
      const after = q.task(() => 1);
      sched.runAll();
      for (const p of failed) await assert.rejects(p, (e: StorageError) => e.code === 'fsync_failed');
      await assert.rejects(after, (e: StorageError) => e.code === 'device_failed');
      assert.equal(q.failed, true);
      assert.equal(q.stats().stateSaves, 0);
    });
  });

  it('drain waits for queued work and then refuses new work', async () => {
    const log = new FakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()) });
    const p = [q.append(log, [rec(1)]), q.append(log, [rec(2)])];
    await q.drain();
    assert.equal(log.syncedLsn, 2);
    await Promise.all(p);
    await assert.rejects(q.append(log, [rec(3)]), (e: StorageError) => e.code === 'closed');
  });

  it('batches naturally under the default scheduler: appends submitted in one tick share one fdatasync', async () => {
    const log = new FakeLog();
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()) });
    await Promise.all(Array.from({ length: 64 }, (_, i) => q.append(log, [rec(i)])));
    assert.equal(log.syncs, 1);
    assert.equal(log.syncedLsn, 64);
  });

  it('rejects bad arguments with bad_request', async () => {
    const q = new DeviceQueue({ disk: readOnlyDisk(new Map()) });
    await assert.rejects(q.append(new FakeLog(), []), (e: StorageError) => e.code === 'bad_request');
    await assert.rejects(q.read(1, -1, 10), (e: StorageError) => e.code === 'bad_request');
    await assert.rejects(q.read(1, 0, 0), (e: StorageError) => e.code === 'bad_request');
    assert.throws(() => new DeviceQueue({ disk: readOnlyDisk(new Map()), queueOpsMax: 0 }), (e: StorageError) => e.code === 'bad_request');
  });

  describe('space', () => {
    const MIB = 1024 * 1024;
    /** A disk that says what the test sets of its space (and throws when told to). */
    function spaceDisk(space: { freeBytes: number; sizeBytes: number; fail?: boolean }): Disk {
      return {
        space: () => {
          if (space.fail === true) throw new StorageError('io_error', 'statfs: EIO');
          return { freeBytes: space.freeBytes, sizeBytes: space.sizeBytes };
        },
      } as unknown as Disk;
    }
    const GIB = 1024 ** 3;
    const write = (n: number): LogRecordInput => ({ term: 1, kind: 1, payload: new Uint8Array(8).fill(n) });
    const zero: LogRecordInput = { term: 1, kind: 4, payload: new Uint8Array(24) };
    const noop: LogRecordInput = { term: 1, kind: 2, payload: new Uint8Array(0) };

    it('keeps 5 % of the device free by default, at most 1 GiB', () => {
      assert.equal(defaultSpaceReserve(10 * GIB), Math.floor(0.5 * GIB));
      assert.equal(defaultSpaceReserve(100 * GIB), GIB);
      const q = new DeviceQueue({ disk: spaceDisk({ freeBytes: 50 * GIB, sizeBytes: 100 * GIB }) });
      assert.deepEqual(q.stats().space, { freeBytes: 50 * GIB, sizeBytes: 100 * GIB, reserveBytes: GIB, state: 'ok' });
    });

    it('under its reserve refuses page writes no_space; under half of it, appends of page writes too; records without page data go on', () => {
      let now = 0;
      const space = { freeBytes: 5000, sizeBytes: 100_000 };
      const q = new DeviceQueue({ disk: spaceDisk(space), spaceReserveBytes: 2000, clock: { nowMs: () => now } });
      q.checkWriteSpace();
      q.checkAppend([write(1)]);
      // Read again only after SPACE_CHECK_MS.
      space.freeBytes = 1500;
      q.checkWriteSpace();
      now += SPACE_CHECK_MS;
      assert.throws(() => q.checkWriteSpace(), (e: StorageError) => e.code === 'no_space' && /has 1500 bytes free, under its reserve of 2000 bytes: page writes are refused until space is freed/.test(e.message) && e.details?.['freeBytes'] === 1500);
      q.checkAppend([write(1), zero]);
      assert.equal(q.stats().space?.state, 'low');
      space.freeBytes = 999;
      q.forgetSpace();
      assert.throws(() => q.checkAppend([noop, write(2)]), (e: StorageError) => e.code === 'no_space' && /under half of its reserve/.test(e.message));
      q.checkAppend([noop, zero]);
      assert.equal(q.stats().space?.state, 'critical');
      assert.equal(q.stats().rejectedNoSpace, 2);
      // Space freed: taken again.
      space.freeBytes = 2000;
      now += SPACE_CHECK_MS;
      q.checkWriteSpace();
      q.checkAppend([write(3)]);
      assert.equal(q.stats().space?.state, 'ok');
    });

    /** A disk whose free space and bytes written the test sets, counting its readings. */
    function countingDisk(freeBytes: number, sizeBytes = 1000 * MIB): { disk: Disk; free: number; written: number; statfs: number } {
      const t = {
        free: freeBytes,
        written: 0,
        statfs: 0,
        disk: undefined as unknown as Disk,
      };
      t.disk = {
        space: () => {
          t.statfs++;
          return { freeBytes: t.free, sizeBytes };
        },
        bytesWritten: () => t.written,
      } as unknown as Disk;
      return t;
    }

    it('between two readings of the disk, takes off what the device wrote and the appends queued since; reads again once a quarter of its margin was written', async () => {
      const now = 0;
      const disk = countingDisk(10 * MIB, 100 * MIB);
      const sched = manualScheduler();
      const q = new DeviceQueue({ disk: disk.disk, spaceReserveBytes: 2 * MIB, clock: { nowMs: () => now }, schedule: sched.schedule });
      assert.equal(q.space()!.freeBytes, 10 * MIB);
      // Written since, within the same second: taken off, the disk not asked again (its margin
      // over the reserve is 8 MiB: asked again after 2 MiB written).
      disk.written = 1.5 * MIB;
      assert.deepEqual(q.space(), { freeBytes: 8.5 * MIB, sizeBytes: 100 * MIB, reserveBytes: 2 * MIB, state: 'ok' });
      assert.equal(disk.statfs, 1);
      // Appends queued count too: 7 MiB of records leave 1.5 MiB, under the reserve.
      const log = new FakeLog();
      const appended = q.append(log, Array.from({ length: 7 }, (_, i) => rec(i, MIB)));
      const queued = q.space()!;
      assert.ok(queued.freeBytes <= 1.5 * MIB && queued.state === 'low', JSON.stringify(queued));
      assert.throws(() => q.checkWriteSpace(), (e: StorageError) => e.code === 'no_space');
      assert.equal(disk.statfs, 1);
      // Written: no longer queued, and past a quarter of the margin, so the disk is asked again.
      sched.runAll();
      await appended;
      disk.written += 7 * MIB;
      disk.free = 1.5 * MIB;
      assert.deepEqual(q.space(), { freeBytes: 1.5 * MIB, sizeBytes: 100 * MIB, reserveBytes: 2 * MIB, state: 'low' });
      assert.equal(disk.statfs, 2);
      // Under the reserve, asked again after each SPACE_RECHECK_BYTES_MIN written: space freed shows.
      disk.free = 20 * MIB;
      disk.written += SPACE_RECHECK_BYTES_MIN;
      assert.equal(q.space()!.state, 'ok');
      assert.equal(disk.statfs, 3);
    });

    it('takes off, between two readings, what others write to the same filesystem at the rate the readings found', () => {
      let now = 0;
      const t = countingDisk(100 * MIB);
      const q = new DeviceQueue({ disk: t.disk, spaceReserveBytes: 2 * MIB, clock: { nowMs: () => now } });
      assert.equal(q.space()!.freeBytes, 100 * MIB);
      // The device writes 1 MiB, and others 10 MiB, in 1,024 ms.
      now = 500;
      t.written = MIB;
      assert.equal(q.space()!.freeBytes, 99 * MIB, 'no rate of others known yet');
      now = 1024;
      t.free = 89 * MIB;
      assert.equal(q.space()!.freeBytes, 89 * MIB);
      assert.equal(t.statfs, 2);
      // Half that time later, before the next reading, others wrote 5 MiB more at that rate.
      now = 1536;
      assert.equal(q.space()!.freeBytes, 84 * MIB);
      assert.equal(t.statfs, 2);
    });

    it('makes no rate of a fall over less than SPACE_RATE_WINDOW_MS; reads again once others wrote, at their rate, a quarter of its margin; a lower rate found halves the old one', () => {
      let now = 0;
      const t = countingDisk(40 * MIB);
      const q = new DeviceQueue({ disk: t.disk, spaceReserveBytes: 2 * MIB, clock: { nowMs: () => now } });
      q.space();
      // Others write 8 MiB in 1,024 ms: 8 KiB a millisecond.
      now = 1024;
      t.free = 32 * MIB;
      assert.equal(q.space()!.freeBytes, 32 * MIB);
      // 10 ms later the device has written past a quarter of its margin (7.5 MiB) and the disk
      // is asked again: others wrote 1 MiB in those 10 ms, too short a time to make a rate of.
      now = 1034;
      t.written = 8 * MIB;
      t.free = 23 * MIB;
      assert.equal(q.space()!.freeBytes, 23 * MIB);
      assert.equal(t.statfs, 3);
      now = 1162;
      assert.equal(q.space()!.freeBytes, 22 * MIB, 'others at 8 KiB a millisecond, not 100');
      // The margin is now 21 MiB: asked again after 5.25 MiB, which others write in 672 ms.
      now = 1674;
      assert.equal(q.space()!.freeBytes, 18 * MIB);
      assert.equal(t.statfs, 3);
      now = 1706;
      t.free = 22 * MIB;
      assert.equal(q.space()!.freeBytes, 22 * MIB, 'asked again: what others wrote at their rate came to a quarter of the margin');
      assert.equal(t.statfs, 4);
      // Others were found slower (2 MiB in 682 ms, 3 KiB a millisecond): the rate is halved, to
      // 4 KiB a millisecond, not taken down to theirs at once.
      now = 1962;
      assert.equal(q.space()!.freeBytes, 21 * MIB);
      assert.equal(t.statfs, 4);
    });

    it('refuses a write of a given size (an image sent by a leader) that would take it under half its reserve', () => {
      const t = countingDisk(10 * MIB);
      const q = new DeviceQueue({ disk: t.disk, spaceReserveBytes: 4 * MIB, clock: { nowMs: () => 0 } });
      q.checkRoomFor(8 * MIB, 'an image');
      assert.throws(
        () => q.checkRoomFor(8 * MIB + 1, 'an image'),
        (e: StorageError) =>
          e.code === 'no_space' && e.message === 'device device has 10.0 MiB free, with a reserve of 4.0 MiB: an image of 8.0 MiB would take it under half of that, and is refused until space is freed (pages made zeros, then checkpointed; volumes deleted; replicas moved)' &&
          e.details?.['bytes'] === 8 * MIB + 1,
      );
      assert.equal(q.stats().rejectedNoSpace, 1);
      // A disk that does not say refuses nothing.
      new DeviceQueue({ disk: {} as Disk }).checkRoomFor(Number.MAX_SAFE_INTEGER, 'an image');
    });

    it('a full disk refuses page writes with no reserve; a disk that does not say, fails to, or says a size of 0 refuses nothing', () => {
      const space = { freeBytes: 0, sizeBytes: 100_000, fail: false };
      const q = new DeviceQueue({ disk: spaceDisk(space), spaceReserveBytes: 0 });
      assert.throws(() => q.checkWriteSpace(), (e: StorageError) => e.code === 'no_space');
      space.fail = true;
      q.forgetSpace();
      q.checkWriteSpace();
      assert.equal(q.stats().space, undefined);
      space.fail = false;
      space.sizeBytes = 0;
      q.forgetSpace();
      q.checkWriteSpace();
      assert.equal(q.stats().space, undefined, 'a filesystem of no size says nothing');
      const silent = new DeviceQueue({ disk: {} as Disk });
      silent.checkWriteSpace();
      assert.equal(silent.stats().space, undefined);
      assert.throws(() => new DeviceQueue({ disk: {} as Disk, spaceReserveBytes: -1 }), (e: StorageError) => e.code === 'bad_request');
    });
  });
});
