import { strict as assert } from 'node:assert';
import { SegmentLog } from '../../storage-engine/log';
import { SimDisk } from '../../storage-engine/sim-disk';
import { crc32c } from '../../storage-engine/crc32c';
import { StorageError } from '../../storage-engine/errors';

const payload = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill);

describe('SegmentLog records with a precomputed payload checksum', () => {
  it('are byte-for-byte the records the log would have checksummed itself', () => {
    const a = new SimDisk();
    const b = new SimDisk();
    const la = SegmentLog.open(a, { dir: 'log' });
    const lb = SegmentLog.open(b, { dir: 'log' });
    for (const [n, fill] of [[5000, 1], [1, 2], [70000, 3], [0, 4]] as const) {
      const p = payload(n, fill);
      la.write([{ term: 1, kind: 1, payload: p }]);
      lb.write([{ term: 1, kind: 1, payload: p, payloadCrc: crc32c(p) }]);
    }
    la.sync();
    lb.sync();
    const name = a.list('log').find((f) => f.endsWith('.log'))!;
    assert.deepEqual(b.fileBytes(`log/${name}`), a.fileBytes(`log/${name}`));
  });

  it('a wrong payload checksum makes the record invalid: recovery does not keep it', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: 'log' });
    const good = payload(4096, 7);
    log.write([{ term: 1, kind: 1, payload: good, payloadCrc: crc32c(good) }]);
    log.write([{ term: 1, kind: 1, payload: good, payloadCrc: (crc32c(good) ^ 1) >>> 0 }]);
    log.sync();
    log.close();
    const again = SegmentLog.open(disk, { dir: 'log' });
    assert.equal(again.lastLsn, 1, 'the record with the wrong checksum is a torn tail, not data');
    assert.deepEqual(again.read(1, 1)[0]!.payload, good);
  });

  it('refuses a payloadCrc that is not an unsigned 32-bit integer', () => {
    const log = SegmentLog.open(new SimDisk(), { dir: 'log' });
    for (const bad of [-1, 2 ** 32, 1.5, Number.NaN]) {
      assert.throws(() => log.write([{ term: 1, kind: 1, payload: payload(8, 0), payloadCrc: bad }]), (e: StorageError) => e.code === 'bad_request');
    }
  });
});
