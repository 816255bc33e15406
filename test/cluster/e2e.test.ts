import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { demoPage } from '../../cluster/dev';
import { ProtocolError } from '../../messages/errors';

describe('cluster end to end (one node, real NATS)', function () {
  this.timeout(60_000);
  let c: InProcessCluster;

  before(async () => {
    c = await startCluster({ nodes: 1, hosts: 2 });
  });
  after(async () => {
    await c?.stop();
  });

  it('creates, lists, describes and deletes volumes durably', async () => {
    const info = await c.client.createVolume({ name: 'v-admin', pageCount: 1000, shards: 3, stripePages: 10 });
    assert.equal(info.name, 'v-admin');
    assert.equal(info.pageSize, 4096);
    assert.equal(info.shards, 3);
    assert.ok((await c.client.listVolumes()).some((v) => v.name === 'v-admin'));
    // The controller's answer also names each shard's replicas (one node here).
    const { replicaSets, ...described } = await c.client.volumeInfo('v-admin');
    assert.deepEqual(described, info);
    assert.deepEqual(replicaSets, [0, 1, 2].map((shard) => ({ shard, members: ['n1'] })));
    await assert.rejects(c.client.createVolume({ name: 'v-admin', pageCount: 10 }), (e: ProtocolError) => e.code === 'already_exists');
    await c.client.deleteVolume('v-admin');
    await assert.rejects(c.client.volumeInfo('v-admin'), (e: ProtocolError) => e.code === 'not_found');
  });

  it('writes then reads single pages and vectored requests across shards', async () => {
    await c.client.createVolume({ name: 'v-rw', pageCount: 512, shards: 4, stripePages: 8 });
    const vol = c.client.volume('v-rw');
    const w1 = await vol.write(5, demoPage(4096, 5, 1));
    assert.ok(w1.lsn >= 1);
    assert.deepEqual((await vol.readPages([5])).pages[0], demoPage(4096, 5, 1));
    const pages = Array.from({ length: 100 }, (_, i) => ({ page: i * 5, data: demoPage(4096, i * 5, 2) }));
    await vol.writePages(pages);
    const got = await vol.readPages(pages.map((p) => p.page));
    got.pages.forEach((d, i) => assert.deepEqual(d, pages[i]!.data, `page ${pages[i]!.page}`));
    // A page never written reads as zeros.
    assert.deepEqual((await vol.readPages([1])).pages[0], new Uint8Array(4096));
  });

  it('reads a page as of an earlier LSN', async () => {
    await c.client.createVolume({ name: 'v-lsn', pageCount: 64 });
    const vol = c.client.volume('v-lsn');
    const a = await vol.write(3, demoPage(4096, 3, 1));
    const b = await vol.write(3, demoPage(4096, 3, 2));
    assert.ok(b.lsn > a.lsn);
    assert.deepEqual((await vol.readPages([3], { lsn: a.lsn })).pages[0], demoPage(4096, 3, 1));
    assert.deepEqual((await vol.readPages([3], { lsn: b.lsn })).pages[0], demoPage(4096, 3, 2));
    assert.deepEqual((await vol.readPages([3], { lsn: a.lsn - 1 })).pages[0], new Uint8Array(4096));
  });

  it('serves the generic api.page.* path the same as the direct path', async () => {
    await c.client.createVolume({ name: 'v-api', pageCount: 128, shards: 2, stripePages: 4 });
    const data = demoPage(4096, 9, 7);
    const w = await c.client.apiRequest('page.write', { volume: 'v-api', pages: [{ page: 9, data }, { page: 10, data }] });
    assert.ok(w.lsn >= 1);
    const r = await c.client.apiRequest('page.read', { volume: 'v-api', pages: [9, 10] });
    assert.deepEqual(r.pages[0], data);
    assert.deepEqual(r.pages[1], data);
    const f = await c.client.apiRequest('volume.flush', { volume: 'v-api' });
    assert.ok(f.lsn >= 1);
  });
});
