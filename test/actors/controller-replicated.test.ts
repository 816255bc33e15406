/**
 * A controller whose catalog is replicated (ControllerOptions.replicated): each change is made
 * in memory and written after the ones before; `settled` answers for them all; a write that
 * fails leaves the controller taking no change.
 */
import { strict as assert } from 'node:assert';
import { Controller, type CatalogState } from '../../actors/controller';
import { MetaStore } from '../../storage-engine/metadata';
import { SimDisk } from '../../storage-engine/sim-disk';
import { ProtocolError } from '../../messages/errors';
import { encode } from '../../messages/codec';
import { StorageError } from '../../storage-engine/errors';

const T0 = 1_700_000_000_000;
const spec = (name: string) => ({ name, pageCount: 64, pageSize: 4096 as const, shards: 1, stripePages: 16, replicas: 1 as const });

/** A store whose writes wait for the test to let them go, one at a time. */
function gatedStore(initial?: CatalogState) {
  const written: CatalogState[] = [];
  const pending: Array<{ state: CatalogState; done: () => void; fail: (e: Error) => void }> = [];
  return {
    written,
    pending,
    store: {
      state: initial,
      write: (state: CatalogState) =>
        new Promise<void>((resolve, reject) => {
          pending.push({ state, done: () => (written.push(state), resolve()), fail: reject });
        }),
    },
  };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('Controller with a replicated catalog', () => {
  it('needs a MetaStore or a replicated catalog, one of the two', () => {
    assert.throws(() => new Controller({}), (e: unknown) => e instanceof StorageError && e.code === 'bad_request');
    const g = gatedStore();
    assert.throws(() => new Controller({ meta: new MetaStore(new SimDisk(), ''), replicated: g.store }), (e: unknown) => e instanceof StorageError && e.code === 'bad_request');
  });

  it('starts from the state it is given, or an empty catalog with the new tag', () => {
    const fresh = new Controller({ replicated: gatedStore().store, newCatalogTag: 'abc' });
    assert.equal(fresh.tag, 'abc');
    assert.equal(fresh.epoch, 0);
    const g = gatedStore();
    const first = new Controller({ replicated: g.store, newCatalogTag: 'abc' });
    first.heartbeat('a', 1, T0);
    first.create(spec('v'), T0);
    const again = new Controller({ replicated: gatedStore(first['state'] as CatalogState).store, newCatalogTag: 'zzz' });
    assert.equal(again.tag, 'abc');
    assert.equal(again.epoch, 1);
    assert.deepEqual(again.list().map((v) => v.name), ['v']);
  });

  it('a change is seen at once, written in order after the ones before, and settled once its write is done', async () => {
    const g = gatedStore();
    const c = new Controller({ replicated: g.store, newCatalogTag: 'abc' });
    c.heartbeat('a', 1, T0);
    c.create(spec('one'), T0);
    c.create(spec('two'), T0);
    assert.deepEqual(c.list().map((v) => v.name), ['one', 'two']);
    let settled = false;
    const s = c.settled().then(() => (settled = true));
    await tick();
    // One write at a time: the second waits for the first.
    assert.equal(g.pending.length, 1);
    assert.deepEqual(g.pending[0]!.state.volumes.map((v) => v.name), ['one']);
    g.pending.shift()!.done();
    await tick();
    assert.equal(settled, false);
    assert.equal(g.pending.length, 1);
    assert.deepEqual(g.pending[0]!.state.volumes.map((v) => v.name), ['one', 'two']);
    g.pending.shift()!.done();
    await s;
    assert.deepEqual(g.written.map((w) => w.epoch), [1, 2]);
  });

  it('a change that would take the catalog past its bytesMax is refused too_large before anything changes; the controller takes the next change', async () => {
    const g = gatedStore();
    const probe = new Controller({ replicated: gatedStore().store, newCatalogTag: 'abc' });
    probe.heartbeat('a', 1, T0);
    probe.create(spec('one'), T0);
    const oneBytes = encode(probe['state']).byteLength;
    const c = new Controller({ replicated: { ...g.store, bytesMax: oneBytes }, newCatalogTag: 'abc' });
    c.heartbeat('a', 1, T0);
    c.create(spec('one'), T0);
    assert.throws(
      () => c.create(spec('two'), T0),
      (e: unknown) => e instanceof ProtocolError && e.code === 'too_large' && e.details?.['bytesMax'] === oneBytes && (e.details?.['bytes'] as number) > oneBytes,
    );
    assert.deepEqual(c.list().map((v) => v.name), ['one']);
    assert.equal(c.epoch, 1);
    assert.equal(c.storageFailure, undefined, 'not fenced');
    c.delete('one');
    await tick();
    g.pending.shift()!.done();
    await tick();
    g.pending.shift()!.done();
    await c.settled();
    assert.deepEqual(g.written.map((w) => w.volumes.map((v) => v.name)), [['one'], []]);
  });

  it('a catalog larger than a message (1 MiB) but within its bytesMax takes changes, and each is written with the bytes its size was checked on', async () => {
    const written: Array<{ state: CatalogState; encoded: Uint8Array | undefined }> = [];
    const c = new Controller({ replicated: { state: undefined, write: async (state, encoded) => void written.push({ state, encoded }), bytesMax: 16 * 1024 * 1024 }, newCatalogTag: 'abc' });
    c.heartbeat('a', 1, T0);
    let bytes = 0;
    for (let i = 0; bytes <= 1.2 * 1024 * 1024; i++) {
      c.create({ name: `v${i}`, pageCount: 4096, pageSize: 4096, shards: 256, stripePages: 16, replicas: 1 }, T0);
      bytes = encode(c['state'], { bytesMax: Number.MAX_SAFE_INTEGER }).byteLength;
    }
    await c.settled();
    const last = written[written.length - 1]!;
    assert.equal(last.state.epoch, c.epoch);
    assert.deepEqual(last.encoded, encode(last.state, { bytesMax: Number.MAX_SAFE_INTEGER }));
    assert.ok(last.encoded!.byteLength > 1024 * 1024);
  });

  it('a write that fails: settled rejects timeout (the outcome is unknown), later changes are refused and never written', async () => {
    const g = gatedStore();
    const c = new Controller({ replicated: g.store, newCatalogTag: 'abc' });
    c.heartbeat('a', 1, T0);
    c.create(spec('one'), T0);
    c.create(spec('two'), T0);
    await tick();
    g.pending.shift()!.fail(new ProtocolError('stale_term', 'the request expects term 3; the shard is at term 4'));
    await assert.rejects(c.settled(), (e: unknown) => e instanceof ProtocolError && e.code === 'timeout' && /may or may not be kept.*term 3/.test(e.message));
    // The change queued behind it was not written.
    await tick();
    assert.equal(g.pending.length, 0);
    assert.match(c.storageFailure!, /term 3/);
    assert.throws(() => c.create(spec('three'), T0), (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable' && /reads the catalog again/.test(e.message));
    await assert.rejects(c.settled(), (e: unknown) => e instanceof ProtocolError && e.code === 'timeout');
  });
});
