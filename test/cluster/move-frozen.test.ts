import { strict as assert } from 'node:assert';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { startDevCluster, demoPage, type DevCluster } from '../../cluster/dev';
import { decode, encode } from '../../messages/codec';
import { controllerSubject } from '../../messages/control';
import { waitFor } from '../support/wait';

/**
 * A replica moved off a node frozen with SIGSTOP (a paused VM): the node keeps its NATS
 * connection, so it takes the requests sent to it and answers none. The move asks the shard's
 * leader to change its set, trying the nodes of the set in turn; the frozen one, first in the
 * set, must not hold the move until its deadline.
 */
describe('strata dev: a replica moved off a node process frozen with SIGSTOP', function () {
  this.timeout(120_000);
  let c: DevCluster | undefined;
  let nc: NatsConnection | undefined;
  let frozenPid: number | undefined;
  after(async () => {
    if (frozenPid !== undefined) {
      try {
        process.kill(frozenPid, 'SIGCONT');
      } catch {
        // Gone already.
      }
    }
    await nc?.close();
    await c?.client.close().catch(() => undefined);
    await c?.stop();
  });

  /**
   * The volume's replica sets, from the controller: a node whose controller did not answer it in
   * time (on a loaded machine) answers volume.info with the geometry it knows, without them.
   */
  async function replicaSetsOf(name: string): Promise<Array<{ shard: number; members: string[] }>> {
    let sets: Array<{ shard: number; members: string[] }> | undefined;
    await waitFor('the replica sets in volume.info', async () => {
      sets = ((await c!.client.volumeInfo(name)) as { replicaSets?: Array<{ shard: number; members: string[] }> }).replicaSets;
      return sets !== undefined;
    }, 30_000);
    return sets!;
  }

  it('is done within its deadline: the nodes the controller counts live are asked first, and the frozen one, once silent, is waited for no longer', async () => {
    c = await startDevCluster({ nodes: 4, hosts: 1 });
    nc = await natsConnect({ servers: c.natsUrl });
    await c.client.createVolume({ name: 'mv', pageCount: 64, shards: 4, stripePages: 16, replicas: 3 });
    const vol = c.client.volume('mv');
    await vol.writePages(Array.from({ length: 64 }, (_, page) => ({ page, data: demoPage(4096, page, 1) })));
    // A shard whose set begins with n4 (not a controller node): the order the move asks in.
    const sets = await replicaSetsOf('mv');
    const set = sets.find((r) => r.members[0] === 'n4');
    assert.ok(set !== undefined, `a shard whose set begins with n4: ${JSON.stringify(sets)}`);
    const to = ['n1', 'n2', 'n3', 'n4'].find((n) => !set.members.includes(n))!;
    frozenPid = c.nodes.find((n) => n.id === 'n4')!.pid;
    process.kill(frozenPid, 'SIGSTOP');
    await waitFor('n4 no longer counted live', async () => {
      const r = decode((await nc!.request(controllerSubject('dev', 'members'), encode({}), { timeout: 5000 })).data) as { members: Array<{ nodeId: string; live: boolean }> };
      return r.members.find((m) => m.nodeId === 'n4')?.live === false;
    }, 30_000);
    // A deadline well short of MOVE_TIMEOUT_MS_MIN: asked first and waited for, n4 would take it all.
    const moved = await c.client.moveReplica('mv', set.shard, { from: 'n4', to }, { deadlineMs: Date.now() + 20_000 });
    assert.deepEqual([...moved.members].sort(), [...set.members.filter((m) => m !== 'n4'), to].sort());
    // The shard serves, from its new set.
    const first = set.shard * 16;
    const { pages } = await vol.readPages([first]);
    assert.ok(Buffer.from(pages[0]!).equals(Buffer.from(demoPage(4096, first, 1))));
  });

  it('is done within its deadline also when the node froze just before it, still counted live: asked first, it is found silent once its heartbeats stop, and the next node asked', async () => {
    // n4 back, and counted live again.
    process.kill(frozenPid!, 'SIGCONT');
    frozenPid = undefined;
    await waitFor('n4 counted live again', async () => {
      const r = decode((await nc!.request(controllerSubject('dev', 'members'), encode({}), { timeout: 5000 })).data) as { members: Array<{ nodeId: string; live: boolean }> };
      return r.members.find((m) => m.nodeId === 'n4')?.live === true;
    }, 30_000);
    await c!.client.createVolume({ name: 'mv2', pageCount: 64, shards: 4, stripePages: 16, replicas: 3 });
    const sets = await replicaSetsOf('mv2');
    const set = sets.find((r) => r.members[0] === 'n4');
    assert.ok(set !== undefined, `a shard whose set begins with n4: ${JSON.stringify(sets)}`);
    const to = ['n1', 'n2', 'n3', 'n4'].find((n) => !set.members.includes(n))!;
    frozenPid = c!.nodes.find((n) => n.id === 'n4')!.pid;
    process.kill(frozenPid, 'SIGSTOP');
    const moved = await c!.client.moveReplica('mv2', set.shard, { from: 'n4', to }, { deadlineMs: Date.now() + 25_000 });
    assert.deepEqual([...moved.members].sort(), [...set.members.filter((m) => m !== 'n4'), to].sort());
  });
});
