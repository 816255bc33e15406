/**
 * A node that goes while volumes are created (docs/replication.md, "A node that goes"): one
 * stopped cleanly says so first (controller.leaving), and the controller places nothing new on
 * it from then on; one that died since its last heartbeat is found when a create's open meets no
 * responders on it: it is not live from then on, and the create is placed again on the live
 * nodes. Either way the node is live again at its next heartbeat.
 */
import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { decode, encode } from '../../messages/codec';
import { controllerSubject } from '../../messages/control';
import { goneFromServer } from '../support/served';

interface Member {
  nodeId: string;
  live: boolean;
  silentMs?: number;
}

describe('a node that goes while volumes are created', function () {
  this.timeout(120_000);
  let c: InProcessCluster;

  before(async () => {
    c = await startCluster({ nodes: 4, hosts: 1 });
  });
  after(async () => {
    await c?.stop();
  });

  /** The controller's view of node `id` (controller.members). */
  async function member(id: string): Promise<Member> {
    const reply = decode(await c.client.rawRequest(controllerSubject(c.cluster, 'members'), encode({}))) as { members: Member[] };
    const m = reply.members.find((x) => x.nodeId === id);
    assert.ok(m !== undefined, `the controller knows ${id}`);
    return m;
  }

  /** Creates a volume of 4 shards of one replica each (spread over the live nodes) and returns the nodes that hold them. */
  async function createSpread(name: string): Promise<string[]> {
    await c.client.createVolume({ name, pageCount: 256, shards: 4, stripePages: 16, replicas: 1 });
    const info = await c.client.volumeInfo(name);
    return [...new Set(info.replicaSets!.flatMap((r) => r.members))].sort();
  }

  it('stopped cleanly, it says so: not live at once (before its silence would say it), nothing new placed on it; live again once back', async () => {
    await c.waitForMembers(4);
    assert.deepEqual(await createSpread('before'), ['n1', 'n2', 'n3', 'n4']);
    await c.stopNode(3);
    const gone = await member('n4');
    assert.ok(gone.silentMs !== undefined && gone.silentMs < 5000, `asked within the live window (silent ${gone.silentMs} ms)`);
    assert.equal(gone.live, false, 'not live once it said it stops');
    assert.deepEqual(await createSpread('after-stop'), ['n1', 'n2', 'n3']);
    await c.restart(3);
    await c.waitForMembers(4);
    assert.equal((await member('n4')).live, true);
  });

  it('killed: a create placed on it meets no responders there, and is placed again on the live nodes; the node is not live from then on', async () => {
    await c.waitForMembers(4);
    c.kill(3);
    // The API's requests no longer go to n4's router (which died with them); the controller still
    // counts n4 live (it heard from it within its live window).
    await goneFromServer(c, 'n4');
    // n4 holds the fewest replicas: the first placement puts a shard on it.
    assert.deepEqual(await createSpread('after-kill'), ['n1', 'n2', 'n3']);
    const gone = await member('n4');
    assert.ok(gone.silentMs !== undefined && gone.silentMs < 5000, `asked within the live window (silent ${gone.silentMs} ms)`);
    assert.equal(gone.live, false);
    assert.deepEqual(await createSpread('after-kill-2'), ['n1', 'n2', 'n3']);
    await c.restart(3);
    await c.waitForMembers(4);
    assert.equal((await member('n4')).live, true);
  });
});
