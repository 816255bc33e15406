import { strict as assert } from 'node:assert';
import { SegmentLog } from '../../storage-engine/log';
import { SimDisk } from '../../storage-engine/sim-disk';
import { LOG_BLOCK_BYTES } from '../../storage-engine/log-segment';

const rec = (fill: number, bytes = 4096) => ({ term: 1, kind: 1, payload: new Uint8Array(bytes).fill(fill) });
const segFile = (disk: SimDisk): string => `log/${disk.list('log').find((f) => f.endsWith('.log'))!}`;

/** A new log that took one batch of 16 pages (4 KiB each), synced: a batch padded to a block boundary. */
function logOfOneBatch(): { disk: SimDisk; log: SegmentLog } {
  const disk = new SimDisk();
  const log = SegmentLog.open(disk, { dir: 'log' });
  log.write(Array.from({ length: 16 }, (_, i) => rec(i)));
  log.sync();
  return { disk, log };
}

describe('SegmentLog block padding', () => {
  it('pads a large batch to a block boundary; the next batch starts on it; recovery skips the padding', () => {
    const { disk, log } = logOfOneBatch();
    // The log's end, not the file's size: the file also holds the zeros written ahead of it.
    const size1 = log.stats().bytes;
    assert.equal(size1 % LOG_BLOCK_BYTES, 0, 'the batch ends on a block boundary');
    log.write(Array.from({ length: 16 }, (_, i) => rec(100 + i)));
    log.sync();
    assert.equal(log.stats().bytes % LOG_BLOCK_BYTES, 0);
    log.close();
    disk.powerCut();
    const again = SegmentLog.open(disk, { dir: 'log' });
    assert.equal(again.lastLsn, 32, 'padding takes no LSN');
    assert.deepEqual(again.read(17, 17)[0]!.payload, rec(100).payload);
    again.write([rec(7)]);
    again.sync();
    assert.equal(again.read(33, 33)[0]!.payload[0], 7);
  });

  it('does not pad small batches (padding would add more than 1/8)', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: 'log' });
    log.write([rec(1, 100)]);
    log.sync();
    assert.notEqual(log.stats().bytes % LOG_BLOCK_BYTES, 0);
  });

  it('a torn padding record is a torn tail: the records before it are kept', () => {
    const { disk, log } = logOfOneBatch();
    log.close();
    // Damage the last bytes of the file: inside the padding record.
    const file = segFile(disk);
    const size = disk.fileBytes(file).length;
    disk.flipBits(file, size - 8, 4);
    const again = SegmentLog.open(disk, { dir: 'log' });
    assert.equal(again.lastLsn, 16);
    assert.deepEqual(again.corruption, []);
    again.write([rec(9)]);
    again.sync();
    assert.equal(again.read(17, 17)[0]!.payload[0], 9);
  });

  it('a padding record whose header rotted, nothing valid after it, is cut: it held no record', () => {
    const { disk, log } = logOfOneBatch();
    const end = log.stats().bytes;
    log.close();
    // The padding record starts where the 16th record ends; its length field rots.
    const file = segFile(disk);
    const padAt = 64 + 16 * (32 + 4096);
    assert.ok(padAt < end, 'the batch was padded');
    disk.flipBits(file, padAt + 1, 1);
    const again = SegmentLog.open(disk, { dir: 'log' });
    assert.deepEqual(again.corruption, []);
    assert.equal(again.lastLsn, 16);
    assert.equal(disk.durableBytes(file).length, padAt);
  });

  it('records read back byte for byte whether or not padding follows them', () => {
    const a = new SimDisk();
    const la = SegmentLog.open(a, { dir: 'log' });
    la.write(Array.from({ length: 16 }, (_, i) => rec(i)));
    for (let lsn = 1; lsn <= 16; lsn++) assert.equal(la.read(lsn, lsn)[0]!.payload[0], lsn - 1);
  });
});
