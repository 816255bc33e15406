/** SlabWarmer: how far ahead of the slots reached it warms, in bounded steps, one at a time. */
import { strict as assert } from 'node:assert';
import { SlabWarmer } from '../../runtime/slab-warmer';
import { Slab } from '../../storage-engine/slab';

interface Call {
  offset: number;
  stride: number;
  count: number;
  bytes: number;
  resolve(touches: number): void;
  reject(e: Error): void;
}

/** A touch that waits to be answered, recording what it was asked. */
function fakeTouch(): { calls: Call[]; touch: (sab: SharedArrayBuffer, offset: number, stride: number, count: number, bytes: number) => Promise<number> } {
  const calls: Call[] = [];
  return {
    calls,
    touch: (_sab, offset, stride, count, bytes) => new Promise<number>((resolve, reject) => calls.push({ offset, stride, count, bytes, resolve, reject })),
  };
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('SlabWarmer', () => {
  it('warms nothing before the first slot is allocated, then the window above the slots reached, in steps, one at a time, each following the last', async () => {
    const slab = new Slab({ slotBytes: 8192, slotCount: 10_000 });
    const { calls, touch } = fakeTouch();
    const warmer = new SlabWarmer({ slab, touch, aheadSlotsMin: 100, aheadSlotsMax: 1000, stepSlots: 64 });
    warmer.poke();
    assert.equal(calls.length, 0, 'nothing allocated, nothing warmed');
    for (let i = 0; i < 10; i++) slab.alloc();
    warmer.poke();
    assert.equal(calls.length, 1);
    // Above the 10 slots in use (their memory is resident since they were written).
    assert.deepEqual({ ...calls[0]!, resolve: undefined, reject: undefined }, { offset: slab.byteOffsetOf(10), stride: 8192, count: 64, bytes: 4096, resolve: undefined, reject: undefined });
    warmer.poke();
    assert.equal(calls.length, 1, 'one step at a time');
    calls[0]!.resolve(128);
    await settle();
    assert.deepEqual(warmer.stats(), { warmedSlots: 74, steps: 1, touches: 128, failures: 0 });
    // The window: 10 reached + at least 100 ahead = 110; the next step, started by the first's
    // end, ends there.
    assert.equal(calls.length, 2);
    assert.equal(calls[1]!.offset, slab.byteOffsetOf(74));
    assert.equal(calls[1]!.count, 110 - 74);
    calls[1]!.resolve(72);
    await settle();
    assert.equal(warmer.stats().warmedSlots, 110);
    assert.equal(calls.length, 2, 'the window is warm: no step follows');
    warmer.poke();
    assert.equal(calls.length, 2);
  });

  it('waits until the lead falls under half the window, then warms the whole window again; the window grows with the slots reached up to its bound', async () => {
    const slab = new Slab({ slotBytes: 8192, slotCount: 100_000 });
    const { calls, touch } = fakeTouch();
    const warmer = new SlabWarmer({ slab, touch, aheadSlotsMin: 100, aheadSlotsMax: 1000, stepSlots: 10_000 });
    const warmTo = async (): Promise<void> => {
      for (;;) {
        const before = calls.length;
        warmer.poke();
        if (calls.length === before) return;
        calls[calls.length - 1]!.resolve(1);
        await settle();
      }
    };
    slab.alloc();
    await warmTo();
    assert.equal(warmer.stats().warmedSlots, 101, '1 reached + 100 ahead');
    while (slab.slotsReached < 51) slab.alloc();
    warmer.poke();
    assert.equal(calls.length, 1, 'a lead of 50 is half the window: not due yet');
    slab.alloc();
    await warmTo();
    assert.equal(warmer.stats().warmedSlots, 52 + 100, 'due under half the window, and warmed to the whole window');
    // Past the minimum the window is as large as the slots reached, up to its bound.
    while (slab.slotsReached < 600) slab.alloc();
    await warmTo();
    assert.equal(warmer.stats().warmedSlots, 1200);
    while (slab.slotsReached < 5000) slab.alloc();
    await warmTo();
    assert.equal(warmer.stats().warmedSlots, 6000, 'at most aheadSlotsMax above');
  });

  it('stops at the last slot', async () => {
    const slab = new Slab({ slotBytes: 64, slotCount: 300 });
    const { calls, touch } = fakeTouch();
    const warmer = new SlabWarmer({ slab, touch, aheadSlotsMin: 256, stepSlots: 1000, bytesPerSlot: 4096 });
    while (slab.slotsReached < 200) slab.alloc();
    warmer.poke();
    assert.equal(calls[0]!.offset, slab.byteOffsetOf(200));
    assert.equal(calls[0]!.count, 100);
    assert.equal(calls[0]!.bytes, 64, 'never more than a slot');
    calls[0]!.resolve(200);
    await settle();
    assert.equal(warmer.stats().warmedSlots, 300);
    warmer.poke();
    assert.equal(calls.length, 1);
  });

  it('counts a failed step, refused or thrown, and tries again on a later poke, not at once; after close it starts none', async () => {
    const slab = new Slab({ slotBytes: 8192, slotCount: 1000 });
    const { calls, touch } = fakeTouch();
    let throwNext = true;
    const warmer = new SlabWarmer({
      slab,
      stepSlots: 50,
      touch: (...args) => {
        if (throwNext) {
          throwNext = false;
          throw new Error('pool gone');
        }
        return touch(...args);
      },
    });
    slab.alloc();
    warmer.poke();
    await settle();
    assert.deepEqual(warmer.stats(), { warmedSlots: 0, steps: 0, touches: 0, failures: 1 });
    warmer.poke();
    assert.equal(calls[0]!.count, 50);
    calls[0]!.reject(new Error('CPU pool queue is full'));
    await settle();
    assert.equal(warmer.stats().failures, 2);
    assert.equal(calls.length, 1, 'a failed step is not followed at once, though the window is short');
    warmer.poke();
    assert.equal(calls[1]!.offset, slab.byteOffsetOf(1), 'the failed slots above the one in use are warmed again');
    calls[1]!.resolve(100);
    await settle();
    assert.equal(warmer.stats().warmedSlots, 51);
    assert.equal(calls.length, 3, 'a step that succeeded and left the window short is followed at once');
    warmer.close();
    calls[2]!.resolve(100);
    await settle();
    warmer.poke();
    assert.equal(calls.length, 3, 'closed: no step follows, none starts');
    assert.equal(warmer.stats().warmedSlots, 101, 'the step running at close still counts');
  });

  it('refuses options that are not positive integers, and a size per slot that is not a multiple of 4', () => {
    const slab = new Slab({ slotBytes: 8192, slotCount: 10 });
    const touch = fakeTouch().touch;
    assert.throws(() => new SlabWarmer({ slab, touch, stepSlots: 0 }), /stepSlots/);
    assert.throws(() => new SlabWarmer({ slab, touch, bytesPerSlot: 0 }), /bytesPerSlot/);
    assert.throws(() => new SlabWarmer({ slab, touch, aheadSlotsMax: 1.5 }), /aheadSlotsMax/);
    assert.throws(() => new SlabWarmer({ slab, touch, aheadSlotsMin: -1 }), /^RangeError: SlabWarmer: aheadSlotsMin must be an integer >= 0, got -1$/);
    assert.throws(() => new SlabWarmer({ slab, touch, bytesPerSlot: 4094 }), /multiple of 4/);
  });
});
