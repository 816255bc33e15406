/**
 * The controller's node down: the catalog cannot be reached, but a volume's pages still can. A
 * node that hosts one of its replicas answers volume.info from its own assignments, so a client
 * that has never seen the volume (a `strata get` or `put`, a restarted application) finds its
 * shards; the catalog's own verbs fail `unavailable`.
 */
import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { connect, type StrataClient } from '../../cluster/client';
import { ProtocolError } from '../../messages/errors';
import { waitFor } from '../support/wait';

const page = (b: number): Uint8Array => new Uint8Array(4096).fill(b);

describe('the controller down', function () {
  this.timeout(90_000);
  let c: InProcessCluster;
  let fresh: StrataClient | undefined;

  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1, clientTimeoutMs: 5000 });
  });
  after(async () => {
    await fresh?.close();
    await c?.stop();
  });

  it("a new client reads and writes a volume's pages through the nodes that host it; the catalog's verbs fail unavailable", async () => {
    const info = await c.client.createVolume({ name: 'kept', pageCount: 64, shards: 2, stripePages: 4, replicas: 3 });
    await c.client.volume('kept').writePages([{ page: 0, data: page(1) }, { page: 4, data: page(2) }]);
    c.kill(0); // n1: the controller
    fresh = await connect({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 5000 });
    const vol = fresh.volume('kept');
    // The shards led by n1 elect a new leader first; the geometry comes from n2 or n3 at once.
    await waitFor('the pages readable without the controller', async () => {
      try {
        const r = await vol.readPages([0, 4]);
        return r.pages[0]![0] === 1 && r.pages[1]![0] === 2;
      } catch (e) {
        if (e instanceof ProtocolError && (e.code === 'unavailable' || e.code === 'timeout' || e.code === 'not_leader')) return false;
        throw e;
      }
    }, 30_000);
    assert.deepEqual(await vol.info(), { ...info });
    await vol.writePages([{ page: 0, data: page(3) }, { page: 5, data: page(4) }]);
    const r = await vol.readPages([0, 4, 5]);
    assert.deepEqual(r.pages.map((p) => p[0]), [3, 2, 4]);
    // What only the catalog knows is not answered from a node.
    await assert.rejects(fresh.listVolumes(), (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable');
    await assert.rejects(fresh.volume('never-made').info(), (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable');
    await assert.rejects(fresh.createVolume({ name: 'late', pageCount: 8 }), (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable');
  });
});
