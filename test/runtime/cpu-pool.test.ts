import { strict as assert } from 'node:assert';
import { CpuPool } from '../../runtime/cpu-pool';
import runTask, { type CpuTask } from '../../runtime/cpu-tasks';
import { crc32c } from '../../storage-engine/crc32c';
import { Slab } from '../../storage-engine/slab';
import { StorageError } from '../../storage-engine/errors';

describe('CpuPool', function () {
  this.timeout(20_000);
  it('checksums a slab slot by handle on a pool thread, equal to the inline checksum', async () => {
    const pool = new CpuPool();
    try {
      const slab = new Slab({ slotBytes: 65536, slotCount: 4 });
      const slot = slab.alloc();
      const view = slab.view(slot);
      for (let i = 0; i < view.length; i++) view[i] = (i * 31) & 0xff;
      const part = view.subarray(100, 60000);
      assert.equal(await pool.crc32c(slab.sab, part.byteOffset, part.length), crc32c(part));
      assert.equal(pool.stats().tasks, 1);
      assert.equal(pool.stats().checksums, 1);
    } finally {
      await pool.close();
    }
  });

  it('refuses a range outside the buffer, and refuses work over its queue bound with overloaded', async () => {
    const pool = new CpuPool({ maxQueue: 1 });
    try {
      const sab = new SharedArrayBuffer(1024);
      await assert.rejects(pool.crc32c(sab, 1000, 100), /outside/);
      const big = new SharedArrayBuffer(8 * 1024 * 1024);
      const results = await Promise.allSettled(Array.from({ length: 20 }, () => pool.crc32c(big, 0, big.byteLength)));
      const refused = results.filter((r) => r.status === 'rejected' && (r.reason as StorageError).code === 'overloaded').length;
      assert.ok(refused > 0, 'some tasks were refused');
      assert.equal(pool.stats().refused, refused);
      assert.ok(results.some((r) => r.status === 'fulfilled'));
    } finally {
      await pool.close();
    }
    await assert.rejects(pool.crc32c(new SharedArrayBuffer(8), 0, 8), (e: StorageError) => e.code === 'closed');
  });

  it('touches slab memory on a pool thread without changing it; a bad range is refused, a closed pool refuses', async () => {
    const pool = new CpuPool();
    try {
      const slab = new Slab({ slotBytes: 8192, slotCount: 64 });
      const all = new Uint8Array(slab.sab);
      for (let i = 0; i < all.length; i++) all[i] = (i * 7) & 0xff;
      const before = Buffer.from(all);
      // 64 slots, the first 4 KiB of each: its first and last word.
      assert.equal(await pool.touch(slab.sab, slab.byteOffsetOf(0), 8192, 64, 4096), 128);
      assert.deepEqual(Buffer.from(all), before, 'no byte changed');
      await assert.rejects(pool.touch(slab.sab, slab.byteOffsetOf(63), 8192, 2, 4096), /past the/);
      assert.equal(pool.stats().tasks, 2);
      assert.equal(pool.stats().checksums, 0);
    } finally {
      await pool.close();
    }
    await assert.rejects(pool.touch(new SharedArrayBuffer(8), 0, 0, 1, 4), (e: StorageError) => e.code === 'closed');
  });
});

describe('CPU pool tasks (runtime/cpu-tasks.ts), as a pool thread runs them', () => {
  it('refuses a task that is not one: a crc32c task without a SharedArrayBuffer, an unknown operation', () => {
    assert.throws(() => runTask({ op: 'crc32c', sab: new ArrayBuffer(8) as unknown as SharedArrayBuffer, offset: 0, length: 8 }), /^TypeError: crc32c task: sab must be a SharedArrayBuffer$/);
    assert.throws(() => runTask({ op: 'nope' } as unknown as CpuTask), /^TypeError: unknown CPU task nope$/);
    const sab = new SharedArrayBuffer(8);
    new Uint8Array(sab).set([1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(runTask({ op: 'crc32c', sab, offset: 0, length: 8 }), crc32c(Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8)));
  });
});

