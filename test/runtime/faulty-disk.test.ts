import { strict as assert } from 'node:assert';
import { FaultyDisk } from '../../runtime/faulty-disk';
import { SimDisk } from '../../storage-engine/sim-disk';
import { expectStorageError } from '../support/expect';
import type { StorageError } from '../../storage-engine/errors';

describe('runtime/FaultyDisk', () => {
  it('refuses a fault that is not one: a count of failures that is not positive, free bytes that are not a non-negative integer', () => {
    const disk = new FaultyDisk(new SimDisk());
    for (const times of [0, -1, Number.NaN]) assert.match(expectStorageError(() => disk.failFsync(times), 'bad_request').message, /^times must be positive/);
    for (const bytes of [-1, 1.5, Number.NaN]) assert.match(expectStorageError(() => disk.setFreeBytes(bytes), 'bad_request').message, /^free bytes must be a non-negative integer/);
    disk.setFreeBytes(0);
    disk.setFreeBytes(undefined);
  });

  it('injected fdatasync failures hit the blocking and the asynchronous flush alike, then stop', async () => {
    const sim = new SimDisk();
    const disk = new FaultyDisk(sim);
    const fh = disk.open('f', { create: true });
    disk.fsyncDir('');
    disk.write(fh, Uint8Array.of(1, 2, 3), 0);
    disk.failFsync(2);
    expectStorageError(() => disk.fdatasync(fh), 'fsync_failed', 'EIO');
    await assert.rejects(disk.fdatasyncAsync(fh), (e: StorageError) => e.code === 'fsync_failed' && e.details?.['injected'] === true);
    assert.equal(disk.injected, 2);
    // Over a disk without an asynchronous flush, the flush is the blocking one: durable after it.
    await disk.fdatasyncAsync(fh);
    sim.powerCut();
    const again = sim.open('f');
    const buf = new Uint8Array(3);
    assert.equal(sim.read(again, buf, 0), 3);
    assert.deepEqual([...buf], [1, 2, 3]);
  });
});
