import { strict as assert } from 'node:assert';
import { SimDisk } from '../../storage-engine/sim-disk';
import { SegmentLog } from '../../storage-engine/log';
import { PageStore } from '../../storage-engine/page-store';
import { Slab } from '../../storage-engine/slab';
import { encodePageWrite } from '../../storage-engine/page-write';
import { RecordKind } from '../../storage-engine/record';

describe('PageStore keeps applied pages in its cache', () => {
  it('a page read right after its write is served from the cache, without a disk read', () => {
    const disk = new SimDisk();
    const log = SegmentLog.open(disk, { dir: 'log' });
    const store = PageStore.open(disk, log, { dir: 'store', pageSize: 4096, pageCount: 64, cacheBytesMax: 1 << 20, slab: new Slab({ slotBytes: 4096, slotCount: 512 }) });
    const data = (fill: number) => new Uint8Array(4096).fill(fill);
    // Page 5 twice in one record: the later one wins, in the cache as on disk.
    const payload = encodePageWrite(4096, [{ page: 3, data: data(3) }, { page: 5, data: data(1) }, { page: 5, data: data(9) }]);
    log.write([{ term: 1, kind: RecordKind.PageWrite, payload }]);
    log.sync();
    store.apply({ term: 1, kind: RecordKind.PageWrite, payload, lsn: 1 });
    const readsBefore = disk.counters.reads;
    const hitsBefore = store.stats().cache.hits;
    assert.deepEqual(store.getPage(3), data(3));
    assert.deepEqual(store.getPage(5), data(9));
    assert.equal(disk.counters.reads, readsBefore, 'no disk read');
    assert.equal(store.stats().cache.hits - hitsBefore, 2);
  });
});
