import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import type { ErrorReply } from '../../messages/errors';
import { rejectsWith } from '../support/expect';
import { apiRequestOnce } from '../support/api';

/**
 * A catalog whose volume list does not fit one message (a NATS server with a max_payload of
 * 16 KiB): volume.list asked whole is `too_large`, and read in pages it is whole.
 */
describe('volume.list in pages, through a NATS server with a max_payload of 16 KiB', function () {
  this.timeout(120_000);
  const VOLUMES = 120;
  // 64 characters each: about 200 bytes of VolumeInfo a volume, 24 KB in all.
  const names = Array.from({ length: VOLUMES }, (_, i) => `list-${String(VOLUMES - i).padStart(3, '0')}-${'x'.repeat(55)}`);
  let c: InProcessCluster;

  before(async () => {
    c = await startCluster({ nodes: 1, hosts: 1, maxPayloadBytes: 16 * 1024, clientTimeoutMs: 20_000 });
    for (let i = 0; i < VOLUMES; i += 10) {
      await Promise.all(names.slice(i, i + 10).map((name) => c.client.createVolume({ name, pageCount: 16, shards: 1, replicas: 1 })));
    }
  });
  after(async () => {
    await c?.stop();
  });

  const raw = (body: unknown): Promise<unknown> => apiRequestOnce(c.client, c.cluster, 'volume.list', body, Date.now() + 10_000, 10_000);

  it('asked whole it is too_large; the client reads it in pages, every volume once, in name order', async () => {
    const whole = (await raw({})) as ErrorReply;
    assert.equal(whole.error?.code, 'too_large', JSON.stringify(whole).slice(0, 300));
    const listed = (await c.client.listVolumes()).map((v) => v.name);
    assert.deepEqual(listed, [...names].sort());
  });

  it('a page: after a name, at most limit, as many as fit; next names its last volume, and the last page has none', async () => {
    const sorted = [...names].sort();
    const first = await c.client.listVolumesPage({ limit: 7 });
    assert.deepEqual(first.volumes.map((v) => v.name), sorted.slice(0, 7));
    assert.equal(first.next, sorted[6]);
    assert.equal(typeof first.epoch, 'number');
    // Without a limit below it, a page is what fits 16 KiB: fewer than all.
    const big = await c.client.listVolumesPage({ after: first.next! });
    assert.ok(big.volumes.length > 7 && big.volumes.length < VOLUMES - 7, `${big.volumes.length} volumes`);
    assert.deepEqual(big.volumes.map((v) => v.name), sorted.slice(7, 7 + big.volumes.length));
    assert.equal(big.next, big.volumes[big.volumes.length - 1]!.name);
    const last = await c.client.listVolumesPage({ after: sorted[VOLUMES - 3]! });
    assert.deepEqual(last.volumes.map((v) => v.name), sorted.slice(VOLUMES - 2));
    assert.equal(last.next, undefined);
    const past = await c.client.listVolumesPage({ after: 'zzz' });
    assert.deepEqual(past.volumes, []);
    assert.equal(past.next, undefined);
    // The same page at the same epoch while nothing changed.
    assert.equal((await c.client.listVolumesPage({ limit: 7 })).epoch, first.epoch);
    await rejectsWith(c.client.listVolumesPage({ limit: 0 }), 'bad_request', /limit/);
    assert.equal(((await raw({ limit: 5000 })) as ErrorReply).error?.code, 'bad_request');
    assert.equal(((await raw({ after: 'A' })) as ErrorReply).error?.code, 'bad_request');
  });
});
