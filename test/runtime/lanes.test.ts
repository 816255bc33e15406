import { strict as assert } from 'node:assert';
import { inLanes } from '../../runtime/lanes';

/** A call that settles when the test says so. */
interface Pending {
  item: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('inLanes', () => {
  it('runs at most `lanes` calls at a time, taking the items in order as calls finish', async () => {
    const started: number[] = [];
    const pending: Pending[] = [];
    let inFlight = 0;
    let inFlightMax = 0;
    let done = false;
    const all = inLanes([0, 1, 2, 3, 4, 5, 6], 3, (item) => {
      started.push(item);
      inFlight++;
      inFlightMax = Math.max(inFlightMax, inFlight);
      return new Promise<void>((resolve, reject) => pending.push({ item, resolve: () => { inFlight--; resolve(); }, reject }));
    }).then(() => { done = true; });
    await tick();
    assert.deepEqual(started, [0, 1, 2], 'three at once, the first three');
    // The second finishes first: its lane takes the next item.
    pending.find((p) => p.item === 1)!.resolve();
    await tick();
    assert.deepEqual(started, [0, 1, 2, 3]);
    for (let i = 0; i < 20 && !done; i++) {
      for (const p of pending.splice(0)) p.resolve();
      await tick();
    }
    await all;
    assert.deepEqual(started, [0, 1, 2, 3, 4, 5, 6], 'each item once, in order');
    assert.equal(inFlightMax, 3);
  });

  it('runs fewer lanes than asked when there are fewer items, and none for no item', async () => {
    let inFlight = 0;
    let inFlightMax = 0;
    await inLanes([1, 2], 8, async () => {
      inFlight++;
      inFlightMax = Math.max(inFlightMax, inFlight);
      await tick();
      inFlight--;
    });
    assert.equal(inFlightMax, 2);
    let calls = 0;
    await inLanes([], 4, async () => { calls++; });
    assert.equal(calls, 0);
  });

  it('rejects at once with the first failure; that lane takes no more items, the others go on', async () => {
    const started: number[] = [];
    const pending: Pending[] = [];
    const all = inLanes([0, 1, 2, 3], 2, (item) => {
      started.push(item);
      return new Promise<void>((resolve, reject) => pending.push({ item, resolve, reject }));
    });
    await tick();
    pending.find((p) => p.item === 0)!.reject(new Error('item 0 failed'));
    await assert.rejects(all, /item 0 failed/);
    assert.deepEqual(started, [0, 1], 'the failed lane took nothing more');
    pending.find((p) => p.item === 1)!.resolve();
    await tick();
    assert.deepEqual(started, [0, 1, 2], 'the other lane went on');
  });

  it('refuses a number of lanes that is not a positive integer', async () => {
    for (const lanes of [0, -1, 1.5, Number.NaN]) {
      await assert.rejects(inLanes([1], lanes, async () => undefined), (e: Error) => e instanceof RangeError && e.message === `lanes must be a positive integer, got ${lanes}`);
    }
  });
});
