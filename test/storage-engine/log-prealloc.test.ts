/**
 * SegmentLog writes zeros ahead of small writes so that flushes overwrite blocks the file already
 * has (no journal commit per fdatasync). Recovery reads the zeros as the end of the last segment,
 * damage in them as a torn tail, and a record after them as corruption.
 */
import { strict as assert } from 'node:assert';
import { LOG_PREALLOC_BYTES, LOG_PREALLOC_WRITE_BYTES_MAX, SegmentLog, zerosAheadTo } from '../../storage-engine/log';
import { encodeRecord, LOG_BLOCK_BYTES, recordBytes, segmentName, viewOf } from '../../storage-engine/log-segment';
import type { FileHandle } from '../../storage-engine/disk';
import { StorageError } from '../../storage-engine/errors';
import { SimDisk } from '../../storage-engine/sim-disk';
import { assertHistory, history } from '../support/log-history';

const DIR = 'log';
const FIRST = `${DIR}/${segmentName(1)}`;
const rec = (bytes: number, fill = 1) => ({ term: 1, kind: 1, payload: new Uint8Array(bytes).fill(fill) });

/** Where the zeros written after a small write ending at `end` stop, in a segment of the default limit. */
const aheadTo = (end: number): number => zerosAheadTo(end, 1, 64 * 1024 * 1024);

/** A closed log holding records 1..5, synced, and where its records end. */
function closedLogOf5(): { disk: SimDisk; end: number } {
  const disk = new SimDisk();
  const log = SegmentLog.open(disk, { dir: DIR });
  log.write(history(1, 5));
  log.sync();
  const end = log.stats().bytes;
  log.close();
  return { disk, end };
}

function allZero(bytes: Uint8Array): boolean {
  return bytes.every((b) => b === 0);
}

/** A SimDisk whose writes of zeros (the log's writes ahead) fail with ENOSPC while `failZeros` is set. */
class ZeroWriteFailingDisk extends SimDisk {
  failZeros = false;
  override write(fh: FileHandle, data: Uint8Array, offset: number): void {
    if (this.failZeros && data.length > 0 && allZero(data)) {
      throw new StorageError('io_error', `write of ${data.length} zeros failed: ENOSPC`, { errno: 'ENOSPC' });
    }
    super.write(fh, data, offset);
  }
}

describe('SegmentLog zeros written ahead', () => {
  it('writes zeros ahead of a small write; the next writes land in them; recovery keeps them as the end', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR });
    log.write(history(1, 5));
    log.sync();
    const end1 = log.stats().bytes;
    const size = aheadTo(end1);
    assert.equal(disk.fileBytes(FIRST).length, size);
    assert.equal(disk.durableBytes(FIRST).length, size, 'the zeros are durable with the records');
    assert.ok(allZero(disk.durableBytes(FIRST).subarray(end1)));

    const before = disk.counters.bytesWritten;
    log.write(history(6, 10));
    log.sync();
    const end2 = log.stats().bytes;
    assert.equal(disk.counters.bytesWritten - before, end2 - end1, 'only the records are written');
    assert.equal(disk.fileBytes(FIRST).length, size, 'the file does not grow');

    log.close();
    disk.powerCut();
    const again = SegmentLog.open(disk, { dir: DIR });
    assert.deepEqual(again.corruption, []);
    assert.equal(again.lastLsn, 10);
    assert.equal(disk.durableBytes(FIRST).length, size, 'recovery does not cut the zeros off');
    assertHistory(again, 1, 10);
    again.write(history(11, 12));
    again.sync();
    assert.equal(disk.fileBytes(FIRST).length, size, 'appends after recovery land in the zeros');
    disk.powerCut();
    assertHistory(SegmentLog.open(disk, { dir: DIR }), 1, 12);
  });

  it('writes more zeros when a small write runs past them; a large write only extends the file', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR });
    log.write([rec(1000)]);
    const first = disk.fileBytes(FIRST).length;
    let n = 1;
    while (log.stats().bytes + recordBytes(4096) <= first) {
      log.write([rec(4096)]);
      n++;
    }
    assert.equal(disk.fileBytes(FIRST).length, first, 'writes inside the zeros do not grow the file');
    log.write([rec(4096)]);
    assert.equal(disk.fileBytes(FIRST).length, aheadTo(log.stats().bytes), 'a write past them writes the next step');

    // One write of 2 MiB (at least LOG_PREALLOC_WRITE_BYTES_MAX) that runs past the zeros.
    const big = LOG_PREALLOC_BYTES;
    assert.ok(2 * big >= LOG_PREALLOC_WRITE_BYTES_MAX);
    log.write([rec(big, 2), rec(big, 2)]);
    assert.equal(disk.fileBytes(FIRST).length, log.stats().bytes, 'no zeros after a large write');
    log.write([rec(100, 3)]);
    assert.equal(disk.fileBytes(FIRST).length, aheadTo(log.stats().bytes), 'the next small write writes zeros again');
    log.sync();
    log.close();
    disk.powerCut();
    const again = SegmentLog.open(disk, { dir: DIR });
    assert.deepEqual(again.corruption, []);
    assert.equal(again.lastLsn, n + 4);
    assert.equal(again.read(n + 2, n + 2)[0]!.payload.length, big);
  });

  it('stops the zeros at the segment limit; a sealed segment ends at its last record', () => {
    const segmentBytesMax = 60000; // not a block multiple: the records never fill it exactly
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: DIR, segmentBytesMax });
    log.write([rec(100)]);
    assert.equal(disk.fileBytes(FIRST).length, segmentBytesMax);
    while (log.stats().segments === 1) log.write([rec(4000)]);
    log.sync();
    const sealed = disk.durableBytes(FIRST);
    assert.ok(sealed.length < segmentBytesMax, 'the sealed segment was cut to its records');
    const lastLsn = log.lastLsn;
    log.close();
    disk.powerCut();
    const again = SegmentLog.open(disk, { dir: DIR, segmentBytesMax });
    assert.deepEqual(again.corruption, [], 'a sealed segment followed by a valid one is whole');
    assert.equal(again.lastLsn, lastLsn);
    assert.equal(disk.durableBytes(FIRST).length, sealed.length);
  });

  it('a failed write of the zeros fails the log for good; what was synced stays, and recovery finds no damage', () => {
    const disk = new ZeroWriteFailingDisk();
    const log = SegmentLog.open(disk, { dir: DIR });
    log.write(history(1, 5));
    log.sync();
    disk.failZeros = true;
    let lsn = 5;
    // Small writes land in the zeros until one runs past them and has to write the next ones.
    const failure = (() => {
      for (;;) {
        try {
          log.write([{ term: 1, kind: 1, payload: new Uint8Array(4096).fill(7) }]);
          lsn++;
        } catch (e) {
          return e;
        }
      }
    })();
    assert.ok(failure instanceof StorageError && failure.code === 'io_error', String(failure));
    assert.ok(lsn > 5, 'writes inside the zeros went through');
    assert.throws(() => log.write(history(lsn + 1, lsn + 1)), (e: unknown) => e instanceof StorageError && e.code === 'device_failed');
    assert.throws(() => log.sync(), (e: unknown) => e instanceof StorageError && e.code === 'device_failed');
    assertHistory(log, 1, 5);
    log.close();
    disk.failZeros = false;
    disk.powerCut();
    const again = SegmentLog.open(disk, { dir: DIR });
    assert.deepEqual(again.corruption, []);
    assert.equal(again.lastLsn, 5, 'the unsynced writes are gone, the synced ones stay');
    assertHistory(again, 1, 5);
  });

  it('damage in the zeros with nothing valid after it is a torn tail: cut off durably', () => {
    const { disk, end } = closedLogOf5();
    disk.flipBits(FIRST, end + 1000, 1);
    const again = SegmentLog.open(disk, { dir: DIR });
    assert.deepEqual(again.corruption, []);
    assert.equal(again.lastLsn, 5);
    assert.equal(disk.durableBytes(FIRST).length, end, 'everything after the last record was cut off');
    assertHistory(again, 1, 5);
  });

  it('damage in the zeros right after the last record, where a next header would be, is a torn tail: zeros but for a check are no record', () => {
    for (const at of [28, 31]) {
      const { disk, end } = closedLogOf5();
      disk.flipBits(FIRST, end + at, 1);
      const again = SegmentLog.open(disk, { dir: DIR });
      assert.deepEqual(again.corruption, [], `byte ${at}`);
      assert.equal(again.lastLsn, 5);
      assert.equal(disk.durableBytes(FIRST).length, end, 'everything after the last record was cut off');
    }
  });

  it('a valid record after the zeros is corruption, not the end', () => {
    const { disk, end } = closedLogOf5();
    // Record 7 where record 6 would be followed by a gap: data past the zeros proves a loss.
    const stray = new Uint8Array(recordBytes(64));
    encodeRecord(stray, viewOf(stray), 0, 7, 1, 1, new Uint8Array(64).fill(9));
    const fh = disk.open(FIRST);
    disk.write(fh, stray, end + 4096);
    disk.fdatasync(fh);
    disk.close(fh);
    const again = SegmentLog.open(disk, { dir: DIR });
    assert.equal(again.corruption.length, 1);
    assert.equal(again.corruption[0]!.fromLsn, 6);
    assert.equal(again.lastLsn, 5);
    assert.ok(disk.durableBytes(FIRST).length > end + 4096, 'nothing was cut off');
  });
});

describe('zerosAheadTo', () => {
  it('adds LOG_PREALLOC_BYTES to a small write, block aligned, capped at the limit; nothing to a large write', () => {
    assert.equal(zerosAheadTo(5000, 4096, 1 << 30), Math.floor((5000 + LOG_PREALLOC_BYTES) / LOG_BLOCK_BYTES) * LOG_BLOCK_BYTES);
    assert.equal(zerosAheadTo(5000, 4096, 9000), 9000);
    assert.equal(zerosAheadTo(70000, 4096, 60000), 70000, 'never below the end (a record larger than the segment limit)');
    assert.equal(zerosAheadTo(5000, LOG_PREALLOC_WRITE_BYTES_MAX, 1 << 30), 5000);
    assert.equal(zerosAheadTo(5000, LOG_PREALLOC_WRITE_BYTES_MAX - 1, 1 << 30) > 5000, true);
  });
});
