import { strict as assert } from 'node:assert';
import { withTimeout } from '../../runtime/timeout';
import { timersHeld } from '../support/manual-clock';

describe('withTimeout', () => {
  it('settles as the promise does when it comes first', async () => {
    assert.equal(await withTimeout(Promise.resolve(7), 1000, () => new Error('late')), 7);
    await assert.rejects(withTimeout(Promise.reject(new Error('own')), 1000, () => new Error('late')), /own/);
  });

  it('rejects with the given error once the time passes first', async () => {
    const never = new Promise<number>(() => undefined);
    // The timers it sets are held here, and fire when the test says: a manual clock.
    const { value: p, timers } = timersHeld((): Promise<number> => withTimeout(never, 30, () => new RangeError('too slow')));
    assert.deepEqual(timers.map((t) => t.ms), [30], 'one timer, of its deadline');
    let settled = false;
    p.then(() => (settled = true), () => (settled = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, 'not settled before its deadline passes');
    timers[0]!.fire();
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, true, 'settled once its deadline passed');
    await assert.rejects(p, (e: Error) => e instanceof RangeError && e.message === 'too slow');
  });

  it('leaves no timer behind once the promise settled first: its error is never made', async () => {
    let lateCalls = 0;
    const late = (): Error => {
      lateCalls++;
      return new Error('late');
    };
    assert.equal(await withTimeout(Promise.resolve(7), 30, late), 7);
    await assert.rejects(withTimeout(Promise.reject(new Error('own')), 30, late), /own/);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(lateCalls, 0, 'the timers were cleared');
  });
});
