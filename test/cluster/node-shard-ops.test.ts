/**
 * A node's shard opens and destroys (shards.open, shards.destroy, reconciliation) that
 * overlap. A fake controller (this test's NATS connection) drives one real node.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StrataNode } from '../../cluster/node';
import { encode, decode } from '../../messages/codec';
import { controllerSubject, nodeSubject, type ShardAssignment } from '../../messages/control';
import { waitFor } from '../support/wait';
import { nodeRig } from '../support/node-rig';

const CLUSTER = 'shardops';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('overlapping shard opens and destroys on a node', function () {
  this.timeout(60_000);
  const rig = nodeRig('strata-shard-ops-');
  const nodes = rig.nodes;

  /**
   * A fake controller whose catalog is at epoch 2: volume `vx` was created at epoch 1 and
   * deleted at epoch 2 (its create undone), so the node's assignments hold its tombstone.
   */
  function serveFakeCatalog(): void {
    rig.fake.subscribe(controllerSubject(CLUSTER, 'heartbeat'), { callback: (_e, msg) => msg.respond(encode({ epoch: 2 })) });
    rig.fake.subscribe(controllerSubject(CLUSTER, 'assignments'), {
      callback: (_e, msg) => msg.respond(encode({ epoch: 2, shards: [], tombstones: ['vx'] })),
    });
  }

  async function startNode(id: string): Promise<StrataNode> {
    const n = await StrataNode.start({ nodeId: id, cluster: CLUSTER, natsUrl: rig.nats.url, dataDir: path.join(rig.root, id), hosts: 1, controller: false, heartbeatMs: 50 });
    nodes.push(n);
    return n;
  }

  const shard = (nodeId: string, volumeId: string, s: number): ShardAssignment => ({
    volumeId, volumeName: volumeId, shard: s, shards: 4, pageCount: 64, pageSize: 4096, stripePages: 1, hostId: 0, members: [nodeId],
  });
  const openOnHosts = async (n: StrataNode): Promise<string[]> =>
    (await n.hostPool.stats()).flatMap((h) => (h.device?.shards ?? []).map((x) => `${x.volumeId}.${x.shard}`)).sort();
  /** The shards the node has recorded durably as its own (what it reopens at its next start). */
  const recorded = (n: StrataNode): string[] => (n as unknown as { nodeMeta: { shards: ShardAssignment[] } }).nodeMeta.shards.map((a) => `${a.volumeId}.${a.shard}`).sort();
  const request = async (subject: string, body: unknown): Promise<unknown> => decode((await rig.fake.request(subject, encode(body), { timeout: 10_000 })).data);

  it('a destroy that arrives while the shards\' open still runs (the controller undoing a create whose open timed out) leaves none of them open or recorded', async () => {
    serveFakeCatalog();
    const node = await startNode('ops1');
    // The host is slow for a moment (a busy device): the open of vx's shards takes 1.5 s.
    const stalled = node.hostPool.stallHost(0, 1500);
    await sleep(50);
    // The controller's open: it gives up before the node answers (its requestTimeoutMs)...
    const open = request(nodeSubject(CLUSTER, 'ops1', 'shards.open'), { shards: [0, 1, 2, 3].map((s) => shard('ops1', 'vx', s)) });
    await sleep(200);
    // ...undoes the create (vx tombstoned, epoch 2, which the node has reconciled with already)
    // and tells the node to destroy vx's shards.
    const destroyed = await request(nodeSubject(CLUSTER, 'ops1', 'shards.destroy'), { volumeId: 'vx', shards: [0, 1, 2, 3] });
    assert.deepEqual(destroyed, { ok: true });
    await stalled;
    await open;
    // Heartbeats go on (epoch 2, already reconciled): nothing more comes to destroy vx's shards.
    await sleep(1000);
    assert.deepEqual(await openOnHosts(node), [], 'shards of the deleted volume vx are still open on the host');
    assert.deepEqual(recorded(node), [], 'shards of the deleted volume vx are recorded by the node (reopened at its next start)');
    assert.deepEqual(fs.readdirSync(path.join(rig.root, 'ops1', 'dev0', 'shards')).filter((n) => n.startsWith('vx.') && !n.endsWith('.discard')), [], 'vx shard directories left on disk');
  });

  it('two opens of the same shards at once (the controller\'s shards.open and a reconciliation) record each shard once', async () => {
    serveFakeCatalog();
    const node = await startNode('ops2');
    const stalled = node.hostPool.stallHost(0, 500);
    await sleep(50);
    const body = { shards: [0, 1].map((s) => shard('ops2', 'vy', s)) };
    const [a, b] = await Promise.all([
      request(nodeSubject(CLUSTER, 'ops2', 'shards.open'), body),
      request(nodeSubject(CLUSTER, 'ops2', 'shards.open'), body),
    ]);
    await stalled;
    assert.deepEqual([a, b], [{ ok: true }, { ok: true }]);
    await waitFor('both shards open', async () => (await openOnHosts(node)).length === 2);
    assert.deepEqual(recorded(node), ['vy.0', 'vy.1'], 'each shard recorded once');
  });

  it('a digest, forced vote, handover or set change of a shard the node holds no replica of is not_found naming it; a handover to a node it leads no shard with too', async () => {
    serveFakeCatalog();
    await startNode('ops3');
    await request(nodeSubject(CLUSTER, 'ops3', 'shards.open'), { shards: [shard('ops3', 'vz', 0)] });
    const noReplica = "node 'ops3' holds no replica of shard 1 of volume vz";
    for (const [verb, body] of [
      ['shard.digest', { volumeId: 'vz', shard: 1 }],
      ['shard.forceVote', { volumeId: 'vz', shard: 1 }],
      ['shard.handover', { volumeId: 'vz', shard: 1 }],
      ['shard.reconfigure', { volumeId: 'vz', shard: 1, members: ['ops3'] }],
    ] as const) {
      const r = (await request(nodeSubject(CLUSTER, 'ops3', verb), body)) as { error?: { code: string; message: string } };
      assert.deepEqual({ code: r.error?.code, message: r.error?.message }, { code: 'not_found', message: noReplica }, verb);
    }
    // vz.0's only replica is this node's: no shard led here has one on 'elsewhere'.
    const r = (await request(nodeSubject(CLUSTER, 'ops3', 'shard.handover'), { to: 'elsewhere' })) as { error?: { code: string; message: string } };
    assert.deepEqual({ code: r.error?.code, message: r.error?.message }, { code: 'not_found', message: "node 'ops3' leads no shard with a replica on node 'elsewhere'" });
  });
});
