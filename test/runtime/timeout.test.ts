import { strict as assert } from 'node:assert';
import { withTimeout } from '../../runtime/timeout';

describe('withTimeout', () => {
  it('settles as the promise does when it comes first', async () => {
    assert.equal(await withTimeout(Promise.resolve(7), 1000, () => new Error('late')), 7);
    await assert.rejects(withTimeout(Promise.reject(new Error('own')), 1000, () => new Error('late')), /own/);
  });

  it('rejects with the given error once the time passes first', async () => {
    const never = new Promise<number>(() => undefined);
    const t0 = Date.now();
    await assert.rejects(withTimeout(never, 30, () => new RangeError('too slow')), (e: Error) => e instanceof RangeError && e.message === 'too slow');
    assert.ok(Date.now() - t0 >= 25);
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
