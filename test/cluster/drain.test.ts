import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { ProtocolError } from '../../messages/errors';

describe('strata drain of a node the controller has not heard from', function () {
  this.timeout(60_000);
  let c: InProcessCluster | undefined;
  after(async () => {
    await c?.stop();
  });

  it('answers a node marked already (emptied and stopped, under a controller started since), and refuses one the cluster never had', async () => {
    c = await startCluster({ nodes: 2, hosts: 1 });
    assert.deepEqual(await c.client.drainNode('n2'), { node: 'n2', draining: true, replicas: 0 });
    // n2 stops; the controller's node starts again: it has not heard from n2, which holds no replica.
    await c.stopNode(1);
    await c.stopNode(0);
    await c.restart(0);
    assert.deepEqual(await c.client.drainNode('n2'), { node: 'n2', draining: true, replicas: 0 }, 'run again, it says how many replicas are left');
    await assert.rejects(c.client.drainNode('n3'), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /'n3' is not a node of cluster/.test(e.message));
    assert.deepEqual(await c.client.drainNode('n2', { undo: true }), { node: 'n2', draining: false, replicas: 0 });
  });
});
