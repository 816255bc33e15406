import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';

/**
 * A volume of many shards takes its nodes seconds to open (a few fsyncs per shard replica): the
 * controller waits for them as long as the requester waits, not its own requestTimeoutMs.
 */
describe('volume.create of many shards waits for the nodes as long as its requester does', function () {
  this.timeout(120_000);
  let c: InProcessCluster | undefined;
  after(async () => {
    await c?.stop();
  });

  it('256 shards whose opens take longer than the controller\'s requestTimeoutMs (1 s) are created within the requester\'s deadline', async () => {
    c = await startCluster({ nodes: 1, hosts: 1, node: { requestTimeoutMs: 1000 }, clientTimeoutMs: 60_000 });
    const t0 = performance.now();
    const info = await c.client.createVolume({ name: 'wide', pageCount: 4096, shards: 256, stripePages: 16 });
    const tookMs = performance.now() - t0;
    assert.equal(info.shards, 256);
    assert.ok(tookMs > 1000, `the opens took ${tookMs.toFixed(0)} ms, longer than requestTimeoutMs: the test shows nothing otherwise`);
    // Every shard serves.
    const vol = c.client.volume('wide');
    const pages = Array.from({ length: 256 }, (_, s) => s * 16);
    await vol.writePages(pages.map((page) => ({ page, data: new Uint8Array(4096).fill(page % 251) })));
    const back = await vol.readPages(pages);
    back.pages.forEach((p, i) => assert.equal(p[0], pages[i]! % 251));
  });
});
