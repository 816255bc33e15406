/** PageCache: byte bound under churn, LRU order, counters, slab slots owned and freed. */
import { strict as assert } from 'node:assert';
import { StorageError } from '../../storage-engine/errors';
import { crc32c } from '../../storage-engine/crc32c';
import { PageCache } from '../../storage-engine/page-cache';
import { Slab } from '../../storage-engine/slab';
import { prng } from '../support/prng';
import { flipInSlab } from '../support/slab';

const PAGE = 4096;

function data(seed: number): Uint8Array {
  const d = new Uint8Array(PAGE);
  for (let i = 0; i < PAGE; i += 64) d[i] = (seed * 7 + i) & 0xff;
  d[0] = seed & 0xff;
  d[1] = (seed >>> 8) & 0xff;
  return d;
}

/** Deterministic PRNG (mulberry32). */
describe('PageCache', () => {
  it('returns copies of what was put and counts hits and misses', () => {
    const slab = new Slab({ slotBytes: PAGE, slotCount: 8 });
    const cache = new PageCache({ slab, pageSize: PAGE, cacheBytesMax: 4 * PAGE });
    const out = new Uint8Array(PAGE);
    assert.equal(cache.get(1, 10, out), false);
    const d = data(1);
    assert.equal(cache.put(1, 10, d), true);
    d.fill(0xee); // the cache holds a copy
    assert.equal(cache.get(1, 10, out), true);
    assert.deepEqual(out, data(1));
    assert.equal(cache.get(1, 11, out), false, 'another version of the page is another key');
    assert.equal(cache.get(2, 10, out), false);
    const s = cache.stats();
    assert.deepEqual({ hits: s.hits, misses: s.misses, evictions: s.evictions, bytes: s.bytes, entries: s.entries }, { hits: 1, misses: 3, evictions: 0, bytes: PAGE, entries: 1 });
    assert.equal(slab.stats().slotsUsed, 1);
  });

  it('checks each copy out against the checksum the page was put with: a page changed in the slab is dropped, counted, and read as a miss', () => {
    const slab = new Slab({ slotBytes: PAGE, slotCount: 8 });
    const cache = new PageCache({ slab, pageSize: PAGE, cacheBytesMax: 4 * PAGE });
    const out = new Uint8Array(PAGE);
    cache.put(1, 10, data(1));
    cache.put(2, 10, data(2));
    assert.equal(cache.get(1, 10, out), true);
    assert.equal(cache.lastCrc, crc32c(data(1)), 'the checksum of the page copied out');
    cache.put(1, 10, data(3)); // the same key given other bytes: its checksum follows
    assert.equal(cache.get(1, 10, out), true);
    assert.deepEqual(out, data(3));
    assert.equal(cache.lastCrc, crc32c(data(3)));
    // One bit of page 2 changes in the shared memory, under the cache.
    flipInSlab(slab, data(2), 100, 0x04);
    const misses = cache.stats().misses;
    const used = slab.stats().slotsUsed;
    assert.equal(cache.get(2, 10, out), false, 'not served');
    assert.equal(cache.has(2, 10), false, 'dropped');
    assert.equal(cache.stats().damaged, 1);
    assert.equal(cache.stats().misses, misses + 1);
    assert.equal(slab.stats().slotsUsed, used - 1, 'its slot given back');
    assert.equal(cache.get(1, 10, out), true, 'the other page is served');
    assert.equal(cache.put(2, 10, data(2)), true, 'put again, from its log or image');
    assert.equal(cache.get(2, 10, out), true);
    assert.deepEqual(out, data(2));
  });

  it('evicts the least recently used entry, where a get counts as a use', () => {
    const slab = new Slab({ slotBytes: PAGE, slotCount: 16 });
    const cache = new PageCache({ slab, pageSize: PAGE, cacheBytesMax: 3 * PAGE + 100 });
    const out = new Uint8Array(PAGE);
    cache.put(1, 1, data(1));
    cache.put(2, 1, data(2));
    cache.put(3, 1, data(3));
    assert.ok(cache.get(1, 1, out)); // order now 2, 3, 1
    cache.put(4, 1, data(4)); // evicts 2
    assert.equal(cache.has(2, 1), false);
    assert.ok(cache.has(1, 1) && cache.has(3, 1) && cache.has(4, 1));
    cache.put(5, 1, data(5)); // evicts 3
    assert.equal(cache.has(3, 1), false);
    assert.equal(cache.stats().evictions, 2);
    assert.equal(slab.stats().slotsUsed, 3, 'evicted slots went back to the slab');
    // Re-putting an existing key refreshes it instead of adding an entry.
    cache.put(1, 1, data(1));
    cache.put(6, 1, data(6)); // evicts 4 (1 was refreshed)
    assert.equal(cache.has(4, 1), false);
    assert.ok(cache.has(1, 1));
    assert.equal(cache.stats().entries, 3);
  });

  it('stays within its byte bound under random churn and frees every slot on clear', () => {
    const slab = new Slab({ slotBytes: PAGE, slotCount: 64 });
    const bytesMax = 10 * PAGE + 123;
    const cache = new PageCache({ slab, pageSize: PAGE, cacheBytesMax: bytesMax });
    const rnd = prng(42);
    const out = new Uint8Array(PAGE);
    let puts = 0;
    for (let i = 0; i < 5000; i++) {
      const page = Math.floor(rnd() * 40);
      const v = Math.floor(rnd() * 3);
      if (rnd() < 0.5) {
        if (!cache.has(page, v)) puts++;
        cache.put(page, v, data(page * 3 + v));
      } else if (cache.get(page, v, out)) {
        assert.deepEqual(out, data(page * 3 + v), 'a hit returns the content put under that key');
      }
      const s = cache.stats();
      assert.ok(s.bytes <= bytesMax, `bytes ${s.bytes} within ${bytesMax}`);
      assert.equal(slab.stats().slotsUsed, s.entries, 'one slab slot per entry');
    }
    const s = cache.stats();
    assert.equal(s.entries, 10);
    assert.equal(s.evictions, puts - 10, 'every put beyond capacity evicted one entry');
    cache.clear();
    assert.equal(slab.stats().slotsUsed, 0);
    assert.equal(cache.stats().bytes, 0);
  });

  it('delete and dropBelow free slots', () => {
    const slab = new Slab({ slotBytes: PAGE, slotCount: 8 });
    const cache = new PageCache({ slab, pageSize: PAGE, cacheBytesMax: 8 * PAGE });
    for (let v = 1; v <= 5; v++) cache.put(9, v, data(v));
    assert.equal(cache.delete(9, 3), true);
    assert.equal(cache.delete(9, 3), false);
    assert.equal(slab.stats().slotsUsed, 4);
    assert.equal(cache.dropBelow(4), 2); // versions 1 and 2
    assert.ok(!cache.has(9, 1) && !cache.has(9, 2) && cache.has(9, 4) && cache.has(9, 5));
    assert.equal(slab.stats().slotsUsed, 2);
  });

  it('dropBelowSteps drops in steps; entries added or deleted between its steps are handled right', () => {
    const slab = new Slab({ slotBytes: PAGE, slotCount: 16 });
    const cache = new PageCache({ slab, pageSize: PAGE, cacheBytesMax: 16 * PAGE });
    for (let p = 0; p < 6; p++) cache.put(p, p + 1, data(p)); // versions 1..6
    const steps = cache.dropBelowSteps(5, 2);
    assert.equal(steps.next().done, false, 'a step of 2 entries');
    assert.ok(!cache.has(0, 1) && !cache.has(1, 2) && cache.has(2, 3), 'the first two only');
    // Between steps: one to be dropped is deleted, one below and one above the bound are added.
    assert.equal(cache.delete(3, 4), true);
    cache.put(7, 2, data(7));
    cache.put(8, 9, data(8));
    let r = steps.next();
    let stepsTaken = 2;
    while (r.done !== true) {
      r = steps.next();
      stepsTaken++;
    }
    assert.equal(r.value, 4, 'versions 1, 2 and 3, and the version 2 added meanwhile (version 4 was deleted meanwhile)');
    assert.ok(stepsTaken >= 3, `${stepsTaken} steps`);
    assert.deepEqual([[4, 5], [5, 6], [8, 9], [7, 2], [2, 3]].map(([p, v]) => cache.has(p!, v!)), [true, true, true, false, false]);
    assert.equal(slab.stats().slotsUsed, 3, 'every dropped or deleted slot freed once');
  });

  it('keeps many versions of a few pages as a plain LRU map of (page, version) would (model check)', () => {
    // Few pages and many versions: each page's versions are a long chain in the cache's index,
    // taken out at its head, its middle and its end by evictions, deletes and drops.
    const entriesMax = 24;
    const slab = new Slab({ slotBytes: PAGE, slotCount: 64 });
    const cache = new PageCache({ slab, pageSize: PAGE, cacheBytesMax: entriesMax * PAGE });
    const rnd = prng(7);
    const out = new Uint8Array(PAGE);
    /** The model: (page, version) → content seed, in LRU order (least recently used first). */
    const model = new Map<string, number>();
    const touch = (key: string, seed: number): void => {
      model.delete(key);
      model.set(key, seed);
    };
    const key = (page: number, v: number): string => `${page}:${v}`;
    let puts = 0;
    for (let i = 0; i < 20_000; i++) {
      const page = Math.floor(rnd() * 4);
      const v = Math.floor(rnd() * 40);
      const k = key(page, v);
      const op = rnd();
      if (op < 0.45) {
        const seed = page * 1000 + v;
        if (!model.has(k) && model.size >= entriesMax) model.delete(model.keys().next().value!);
        touch(k, seed);
        assert.equal(cache.put(page, v, data(seed)), true);
        puts++;
      } else if (op < 0.8) {
        const hit = cache.get(page, v, out);
        assert.equal(hit, model.has(k), `get ${k} at step ${i}`);
        if (hit) {
          assert.deepEqual(out, data(model.get(k)!), `content of ${k}`);
          touch(k, model.get(k)!);
        }
      } else if (op < 0.95) {
        assert.equal(cache.delete(page, v), model.delete(k), `delete ${k} at step ${i}`);
      } else {
        const below = Math.floor(rnd() * 12);
        let n = 0;
        for (const [mk] of model) {
          if (Number(mk.split(':')[1]) < below) {
            model.delete(mk);
            n++;
          }
        }
        assert.equal(cache.dropBelow(below), n, `dropBelow ${below} at step ${i}`);
      }
      assert.equal(cache.stats().entries, model.size, `entries at step ${i}`);
      assert.equal(slab.stats().slotsUsed, model.size, 'one slab slot per entry');
      if (i % 100 === 0) {
        for (let p = 0; p < 4; p++) for (let w = 0; w < 40; w++) assert.equal(cache.has(p, w), model.has(key(p, w)), `has ${key(p, w)} at step ${i}`);
      }
    }
    assert.ok(puts > 5000 && cache.stats().evictions > 1000, `churn: ${puts} puts, ${cache.stats().evictions} evictions`);
    cache.clear();
    assert.equal(slab.stats().slotsUsed, 0);
    for (let p = 0; p < 4; p++) for (let w = 0; w < 40; w++) assert.equal(cache.has(p, w), false);
  });

  it('when the shared slab is full, evicts its own entries to make room', () => {
    const slab = new Slab({ slotBytes: PAGE, slotCount: 3 });
    const other = slab.alloc(); // someone else's buffer
    const cache = new PageCache({ slab, pageSize: PAGE, cacheBytesMax: 10 * PAGE });
    assert.ok(cache.put(1, 1, data(1)));
    assert.ok(cache.put(2, 1, data(2)));
    assert.ok(cache.put(3, 1, data(3)), 'made room by evicting its own LRU entry');
    assert.equal(cache.has(1, 1), false);
    assert.equal(cache.stats().evictions, 1);
    assert.equal(cache.stats().entries, 2);
    assert.equal(slab.stats().slotsUsed, 3);
    cache.clear();
    slab.free(other);
    assert.equal(slab.stats().slotsUsed, 0);
  });

  it('rejects a put it cannot place and caches nothing with a zero bound', () => {
    const slab = new Slab({ slotBytes: PAGE, slotCount: 2 });
    const x = slab.alloc();
    const y = slab.alloc();
    const cache = new PageCache({ slab, pageSize: PAGE, cacheBytesMax: 4 * PAGE });
    assert.equal(cache.put(1, 1, data(1)), false);
    assert.equal(cache.stats().rejects, 1);
    slab.free(x);
    slab.free(y);
    const off = new PageCache({ slab, pageSize: PAGE, cacheBytesMax: PAGE - 1 });
    assert.equal(off.put(1, 1, data(1)), false);
    assert.equal(off.stats().rejects, 1);
    assert.equal(slab.stats().slotsUsed, 0);
  });

  it('rejects bad options and wrong buffer sizes', () => {
    const slab = new Slab({ slotBytes: PAGE, slotCount: 2 });
    assert.throws(() => new PageCache({ slab, pageSize: 8192, cacheBytesMax: 8192 }), (e: unknown) => e instanceof StorageError && e.code === 'bad_request');
    assert.throws(() => new PageCache({ slab, pageSize: PAGE, cacheBytesMax: -1 }), (e: unknown) => e instanceof StorageError && e.code === 'bad_request');
    for (const pageSize of [0, -4096, 1.5]) {
      assert.throws(() => new PageCache({ slab, pageSize, cacheBytesMax: 8192 }), (e: unknown) => e instanceof StorageError && e.code === 'bad_request' && /is not a positive integer/.test(e.message));
    }
    const cache = new PageCache({ slab, pageSize: PAGE, cacheBytesMax: PAGE });
    assert.throws(() => cache.put(1, 1, new Uint8Array(10)), (e: unknown) => e instanceof StorageError && e.code === 'invariant');
    assert.throws(() => cache.get(1, 1, new Uint8Array(10)), (e: unknown) => e instanceof StorageError && e.code === 'invariant');
  });
});
