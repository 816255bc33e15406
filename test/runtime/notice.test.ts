import { strict as assert } from 'node:assert';
import { Notice, NOTICED } from '../../runtime/notice';

describe('runtime/notice', () => {
  it('a wait settles as its promise does, or resolves NOTICED when the notice comes first; nothing is kept once it ended', async () => {
    const n = new Notice();
    assert.equal(await n.race(Promise.resolve(7)), 7);
    await assert.rejects(n.race(Promise.reject(new Error('failed'))), /failed/);
    let resolveLate = (_: string): void => undefined;
    const late = new Promise<string>((r) => (resolveLate = r));
    const waits = [n.race(late), n.race(late)];
    assert.equal(n.waits, 2);
    n.notify();
    assert.deepEqual(await Promise.all(waits), [NOTICED, NOTICED]);
    assert.equal(n.waits, 0);
    resolveLate('done');
    assert.equal(await late, 'done', 'the promise goes on for whoever else waits on it');
  });

  it('not latched, a notice ends only the waits under way; latched, it ends every later one at once too', async () => {
    const never = new Promise<never>(() => undefined);
    const seated = new Notice();
    seated.notify();
    assert.equal(await seated.race(Promise.resolve('answer')), 'answer');
    const stopping = new Notice(true);
    stopping.notify();
    assert.equal(await stopping.race(never), NOTICED);
    assert.equal(await stopping.race(Promise.reject(new Error('ignored'))), NOTICED, 'a rejection after the notice is not left unhandled');
    assert.equal(stopping.waits, 0);
  });
});
