/** Slab: allocation bounds, double free, views, and concurrent alloc/free from several threads. */
import { strict as assert } from 'node:assert';
import * as nodePath from 'node:path';
import { Worker } from 'node:worker_threads';
import { MEMORY_PAGE_BYTES, Slab, SLAB_SLOT_COUNT_MAX, copyBytes, touchForWrite } from '../../storage-engine/slab';
import { expectStorageError } from '../support/expect';

describe('Slab', () => {
  it('allocates every slot once, then overloaded; tryAlloc gives -1', () => {
    for (const slotCount of [1, 31, 32, 33, 100]) {
      const slab = new Slab({ slotBytes: 64, slotCount });
      const seen = new Set<number>();
      for (let i = 0; i < slotCount; i++) {
        const s = slab.alloc();
        assert.ok(s >= 0 && s < slotCount, `slot ${s} out of range`);
        assert.ok(!seen.has(s), `slot ${s} handed out twice`);
        seen.add(s);
      }
      expectStorageError(() => slab.alloc(), 'overloaded');
      assert.equal(slab.tryAlloc(), -1);
      assert.deepEqual(slab.stats(), { slotBytes: 64, slotsTotal: slotCount, slotsUsed: slotCount });
    }
  });

  it('a freed slot can be allocated again', () => {
    const slab = new Slab({ slotBytes: 16, slotCount: 40 });
    const slots = Array.from({ length: 40 }, () => slab.alloc());
    slab.free(slots[35]!);
    assert.equal(slab.stats().slotsUsed, 39);
    assert.equal(slab.alloc(), slots[35]);
    assert.equal(slab.tryAlloc(), -1);
    for (const s of slots) slab.free(s);
    assert.equal(slab.stats().slotsUsed, 0);
  });

  it('detects a double free and bad slot ids with invariant', () => {
    const slab = new Slab({ slotBytes: 8, slotCount: 10 });
    const s = slab.alloc();
    slab.free(s);
    expectStorageError(() => slab.free(s), 'invariant');
    assert.equal(slab.stats().slotsUsed, 0);
    for (const bad of [-1, 10, 1.5, NaN, 32]) expectStorageError(() => slab.free(bad), 'invariant');
    expectStorageError(() => slab.free(9), 'invariant'); // in range, never allocated
  });

  it('views are slotBytes long, do not overlap, and need an allocated slot', () => {
    const slab = new Slab({ slotBytes: 24, slotCount: 70 });
    const slots = Array.from({ length: 70 }, () => slab.alloc());
    const views = slots.map((s) => slab.view(s));
    slots.forEach((s, i) => {
      assert.equal(views[i]!.length, 24);
      assert.equal(views[i]!.byteOffset % 8, 0);
      assert.equal(views[i]!.buffer, slab.sab);
      views[i]!.fill(s + 1);
    });
    const ranges = views.map((v) => [v.byteOffset, v.byteOffset + v.length] as const).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i - 1]![1] <= ranges[i]![0], 'views overlap');
    assert.ok(ranges[ranges.length - 1]![1] <= slab.sab.byteLength);
    slots.forEach((s, i) => assert.ok(views[i]!.every((b) => b === s + 1), `slot ${s} was overwritten`));
    // A view is not a copy.
    slab.view(slots[0]!)[3] = 200;
    assert.equal(views[0]![3], 200);
    slab.free(slots[1]!);
    expectStorageError(() => slab.view(slots[1]!), 'invariant');
    expectStorageError(() => slab.view(70), 'invariant');
  });

  it('attach reads the geometry from the buffer and shares allocations and data', () => {
    const a = new Slab({ slotBytes: 4096, slotCount: 3 });
    const s0 = a.alloc();
    a.view(s0).fill(7);
    const b = Slab.attach(a.sab);
    assert.deepEqual(b.stats(), { slotBytes: 4096, slotsTotal: 3, slotsUsed: 1 });
    assert.ok(b.view(s0).every((x) => x === 7));
    const s1 = b.alloc();
    const s2 = a.alloc();
    assert.equal(new Set([s0, s1, s2]).size, 3);
    expectStorageError(() => b.alloc(), 'overloaded');
    a.free(s1);
    expectStorageError(() => b.free(s1), 'invariant');
  });

  it('attach refuses a buffer that is not a slab', () => {
    expectStorageError(() => Slab.attach(new SharedArrayBuffer(16)), 'bad_request');
    assert.match(expectStorageError(() => Slab.attach(new SharedArrayBuffer(4096)), 'bad_request').message, /is not a slab \(bad magic or layout version\)/);
    // A staged copy (shared, misaligned) that would not fit is refused before a byte is copied.
    const dst = new Uint8Array(new SharedArrayBuffer(16));
    assert.throws(() => copyBytes(dst, new Uint8Array(8).fill(1), 9), (e: unknown) => e instanceof RangeError && /^copyBytes: 8 bytes at 9 do not fit 16$/.test(e.message));
    assert.deepEqual([...dst], new Array(16).fill(0));
    const good = new Slab({ slotBytes: 8, slotCount: 4 });
    const copy = new SharedArrayBuffer(good.sab.byteLength + 8);
    new Uint8Array(copy).set(new Uint8Array(good.sab));
    expectStorageError(() => Slab.attach(copy), 'bad_request');
    expectStorageError(() => Slab.attach(new ArrayBuffer(4096) as unknown as SharedArrayBuffer), 'bad_request');
  });

  it('bounds slotBytes and slotCount', () => {
    for (const opts of [
      { slotBytes: 0, slotCount: 1 },
      { slotBytes: 12, slotCount: 1 },
      { slotBytes: 8, slotCount: 0 },
      { slotBytes: 8, slotCount: SLAB_SLOT_COUNT_MAX + 1 },
      { slotBytes: 8.5, slotCount: 1 },
      { slotBytes: 32 * 1024 * 1024, slotCount: 1 },
    ]) {
      expectStorageError(() => new Slab(opts), 'bad_request');
    }
    expectStorageError(() => new Slab({ slotBytes: 8192, slotCount: SLAB_SLOT_COUNT_MAX }), 'too_large');
    const big = new Slab({ slotBytes: 8, slotCount: SLAB_SLOT_COUNT_MAX });
    assert.equal(big.stats().slotsTotal, SLAB_SLOT_COUNT_MAX);
  });

  it('threads attached to one buffer never get the same slot twice', async function () {
    this.timeout(60_000);
    const slotCount = 48; // small, so that the threads contend for words and often find the slab full
    const slab = new Slab({ slotBytes: 64, slotCount });
    const threads = 3;
    const iterations = 300_000;
    // ctl[0]: threads ready; ctl[1]: go flag.
    const ctl = new Int32Array(new SharedArrayBuffer(8));
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      const { Slab } = require(workerData.slabPath);
      const { id, iterations, holdMax } = workerData;
      const slab = Slab.attach(workerData.sab);
      const ctl = new Int32Array(workerData.ctl);
      Atomics.add(ctl, 0, 1);
      Atomics.wait(ctl, 1, 0);
      const held = [];
      let allocs = 0, full = 0, violations = 0;
      const owner = (s) => { const v = slab.view(s); return new Int32Array(v.buffer, v.byteOffset, 1); };
      for (let i = 0; i < iterations; i++) {
        // Mostly alloc until holdMax, then free a few: a deterministic, uneven pattern.
        if (held.length < holdMax && (i % 7) !== (id % 7)) {
          const s = slab.tryAlloc();
          if (s < 0) { full++; continue; }
          allocs++;
          if (Atomics.compareExchange(owner(s), 0, 0, id) !== 0) violations++;
          held.push(s);
        } else if (held.length > 0) {
          const s = held.splice((i * 31) % held.length, 1)[0];
          if (Atomics.compareExchange(owner(s), 0, id, 0) !== id) violations++;
          slab.free(s);
        }
      }
      for (const s of held) {
        if (Atomics.compareExchange(owner(s), 0, id, 0) !== id) violations++;
        slab.free(s);
      }
      parentPort.postMessage({ allocs, full, violations });
    `;
    const slabPath = nodePath.join(__dirname, '..', '..', 'storage-engine', 'slab.js');
    const results = Array.from({ length: threads }, (_, i) => {
      const worker = new Worker(code, {
        eval: true,
        workerData: { sab: slab.sab, ctl: ctl.buffer, slabPath, id: i + 1, iterations, holdMax: 20 },
      });
      return new Promise<{ allocs: number; full: number; violations: number }>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
        worker.once('exit', (exitCode) => {
          if (exitCode !== 0) reject(new Error(`worker exited with ${exitCode}`));
        });
      });
    });
    // Release all threads at once so that they really run concurrently.
    while (Atomics.load(ctl, 0) < threads) await new Promise((r) => setTimeout(r, 5));
    Atomics.store(ctl, 1, 1);
    Atomics.notify(ctl, 1);
    const done = await Promise.all(results);
    for (const r of done) {
      assert.equal(r.violations, 0, 'a slot was handed out twice');
      assert.ok(r.allocs > 1000, `too few allocations: ${r.allocs}`);
    }
    assert.ok(done.some((r) => r.full > 0), 'the threads never filled the slab: no contention was tested');
    assert.equal(slab.stats().slotsUsed, 0);
    assert.equal(slab.tryAlloc() >= 0, true);
  });
});

describe('copyBytes', () => {
  const pattern = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
  it('copies like set between ordinary and shared memory at every relative alignment, also past its staging buffer', () => {
    for (const [srcShared, dstShared] of [[false, true], [true, false], [true, true], [false, false]] as const) {
      for (const len of [1, 7, 4096, 64 * 1024 + 13, 200_000]) {
        for (const srcOff of [0, 3, 8]) {
          for (const at of [0, 5, 16]) {
            const srcBase = new Uint8Array(srcShared ? new SharedArrayBuffer(len + 16) : new ArrayBuffer(len + 16));
            srcBase.set(pattern(len, srcOff + at), srcOff);
            const src = srcBase.subarray(srcOff, srcOff + len);
            const dst = new Uint8Array(dstShared ? new SharedArrayBuffer(len + 32) : new ArrayBuffer(len + 32)).subarray(1);
            dst.fill(0xee);
            copyBytes(dst, src, at);
            const want = new Uint8Array(len + 31).fill(0xee);
            want.set(pattern(len, srcOff + at), at);
            assert.deepEqual(Buffer.from(dst), Buffer.from(want), `src ${srcShared ? 'shared' : 'plain'}+${srcOff} → dst ${dstShared ? 'shared' : 'plain'}+1 at ${at}, ${len} bytes`);
          }
        }
      }
    }
  });

  it('refuses a copy that does not fit, as set does', () => {
    const dst = new Uint8Array(new SharedArrayBuffer(64));
    assert.throws(() => copyBytes(dst, new Uint8Array(60), 5), RangeError);
    assert.throws(() => copyBytes(dst, new Uint8Array(65)), RangeError);
  });
});

describe('Slab.slotsReached and byteOffsetOf', () => {
  it('slotsReached is one past the highest slot allocated through the instance; byteOffsetOf is where a view starts', () => {
    const slab = new Slab({ slotBytes: 8192, slotCount: 100 });
    assert.equal(slab.slotsReached, 0);
    const a = slab.alloc();
    const b = slab.alloc();
    assert.equal(slab.slotsReached, Math.max(a, b) + 1);
    slab.free(b);
    assert.equal(slab.slotsReached, Math.max(a, b) + 1, 'a free does not lower it');
    assert.equal(slab.byteOffsetOf(a), slab.view(a).byteOffset);
    for (const s of [a, 57, 99]) assert.equal(slab.byteOffsetOf(s), slab.byteOffsetOf(0) + s * 8192);
    expectStorageError(() => slab.byteOffsetOf(100), 'invariant');
    // Another thread's instance (attach) counts its own allocations only.
    const other = Slab.attach(slab.sab);
    assert.equal(other.slotsReached, 0);
    assert.equal(other.alloc() >= 0, true);
    assert.equal(other.slotsReached > 0, true);
  });
});

describe('touchForWrite', () => {
  const pattern = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 131 + 7) & 0xff);

  it('changes no byte, and touches a word every memory page of each region and its last word', () => {
    const sab = new SharedArrayBuffer(64 * 1024);
    const bytes = new Uint8Array(sab);
    bytes.set(pattern(bytes.length));
    // One region of a page: its first and last word. Three pages and a bit: four steps and the last word.
    assert.equal(touchForWrite(sab, 64, 0, 1, MEMORY_PAGE_BYTES), 2);
    assert.equal(touchForWrite(sab, 0, 0, 1, 3 * MEMORY_PAGE_BYTES + 8), 5);
    // Eight regions of 100 bytes, 8 KiB apart: each its first and last word.
    assert.equal(touchForWrite(sab, 4, 8192, 8, 100), 16);
    // A region of one word: that word.
    assert.equal(touchForWrite(sab, sab.byteLength - 4, 0, 1, 4), 1);
    assert.equal(touchForWrite(sab, 0, 8, 0, 4096), 0);
    assert.equal(touchForWrite(sab, 0, 8, 3, 0), 0);
    assert.deepEqual(Buffer.from(bytes), Buffer.from(pattern(bytes.length)), 'no byte changed');
  });

  it('reaches regions past 2 GiB of a buffer (a slab may be up to 4 GiB)', () => {
    // Address space only: nothing but the touched pages is ever committed.
    const sab = new SharedArrayBuffer(2 ** 31 + 8192);
    const tail = new Uint8Array(sab, 2 ** 31, 8192);
    tail.set(pattern(8192));
    assert.equal(touchForWrite(sab, 2 ** 31, 4096, 2, 4096), 4);
    assert.equal(touchForWrite(sab, 0, 2 ** 31, 2, 4096), 4);
    assert.deepEqual(Buffer.from(tail), Buffer.from(pattern(8192)));
  });

  it('refuses a region past the buffer, an unaligned offset, stride or size, a negative count and a plain ArrayBuffer', () => {
    const sab = new SharedArrayBuffer(16 * 1024);
    assert.throws(() => touchForWrite(sab, 0, 8192, 2, 8200), /past the 16384-byte buffer/);
    assert.throws(() => touchForWrite(sab, 16 * 1024 - 4, 0, 1, 8), /past the/);
    assert.throws(() => touchForWrite(sab, 2, 0, 1, 4), /multiples of 4/);
    assert.throws(() => touchForWrite(sab, 0, 6, 2, 4), /multiples of 4/);
    assert.throws(() => touchForWrite(sab, 0, 8, 2, 6), /multiples of 4/);
    assert.throws(() => touchForWrite(sab, 0, 8, -1, 4), RangeError);
    assert.throws(() => touchForWrite(new ArrayBuffer(64) as unknown as SharedArrayBuffer, 0, 0, 1, 4), TypeError);
  });

  it('loses no write of another thread that writes the same memory meanwhile', async function () {
    this.timeout(20_000);
    const words = 4 * 1024; // 16 KiB: four memory pages
    const rounds = 2000;
    const sab = new SharedArrayBuffer(words * 4);
    const ctl = new Int32Array(new SharedArrayBuffer(8));
    // The writer adds 1 to every word, plainly (as a page copy writes), round after round, while
    // this thread keeps touching: a touch that read a word and wrote it back plainly would now and
    // then put back a value the writer had already added to, and that round would be lost for good.
    const code = `
      const { workerData } = require('node:worker_threads');
      const w = new Int32Array(workerData.sab);
      const ctl = new Int32Array(workerData.ctl);
      // Starts once this thread has begun touching, so that the two overlap however late it runs.
      while (Atomics.load(ctl, 0) === 0);
      for (let round = 1; round <= workerData.rounds; round++) for (let i = 0; i < w.length; i++) w[i] = w[i] + 1;
      Atomics.store(ctl, 1, 1);
    `;
    const worker = new Worker(code, { eval: true, workerData: { sab, ctl: ctl.buffer, rounds } });
    const exited = new Promise<number>((resolve, reject) => {
      worker.once('exit', resolve);
      worker.once('error', reject);
    });
    // Every word, not only one per page: as many races as possible, until the writer is done.
    let touches = touchForWrite(sab, 0, 4, words, 4);
    Atomics.store(ctl, 0, 1);
    while (Atomics.load(ctl, 1) === 0) touches += touchForWrite(sab, 0, 4, words, 4);
    assert.equal(await exited, 0);
    assert.ok(touches > words, 'the touches went on while the writer wrote');
    const w = new Int32Array(sab);
    for (let i = 0; i < words; i++) assert.equal(w[i], rounds, `word ${i} lost ${rounds - w[i]!} of the writer's rounds`);
  });
});
