/**
 * The controller's node dies once a volume's create is in the catalog and before any node has
 * opened its replicas (docs/replication.md, "A create its controller did not finish"). The
 * create, never answered, is undone by the controller that takes over when it is sent again, and
 * made anew on the live nodes: every shard of the volume answered as created elects a leader and
 * takes writes while the dead node stays down. Opened again where it was, each shard with a
 * replica on the dead node would have had none (its other replicas, opened by their nodes'
 * reconciliations as replicas that may have lost their storage, wait for every peer's term
 * before they vote). Until then such a volume is neither described nor listed (nor, by its
 * nodes, while no controller answers), and a create of its name with another request id undoes
 * it and is made. Sent by nobody again, it is undone by the next controller by itself.
 */
import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { REPAIR_AFTER_MS_DEFAULT } from '../../cluster/node';
import type { Controller, VolumeRecord } from '../../actors/controller';
import { ProtocolError } from '../../messages/errors';
import { encode } from '../../messages/codec';
import { controllerSubject } from '../../messages/control';
import { connect as natsConnect } from 'nats';
import type { ShardAssignment } from '../../messages/control';
import { eventually, waitFor } from '../support/wait';

const page = (b: number): Uint8Array => new Uint8Array(4096).fill(b);

/** The index of the node that runs the controller, once one does. */
function controllerIndex(c: InProcessCluster): Promise<number> {
  return eventually('a controller', async () => {
    for (const [i, n] of c.nodes.entries()) {
      const st = (await n?.status()) as { node: { controller: boolean } } | undefined;
      if (st?.node.controller === true) return i;
    }
    throw new ProtocolError('unavailable', 'no controller yet');
  });
}

/** The controller's node dies once its next placement of a volume is durable in the catalog, before any shards.open; resolves with that volume. */
function dieWhenPlacing(c: InProcessCluster, ctl: number): Promise<VolumeRecord> {
  const node = c.nodes[ctl] as unknown as { placeVolume: (ctrl: Controller, v: VolumeRecord) => Promise<unknown> };
  return new Promise((resolve) => {
    node.placeVolume = async (ctrl: Controller, v: VolumeRecord): Promise<unknown> => {
      await ctrl.settled();
      c.kill(ctl);
      resolve(v);
      return new Promise(() => undefined);
    };
  });
}

/** Every node's controller leaves a create nobody finished alone (the check that undoes it by itself, `undoAbandoned`, off). */
function keepUnfinished(c: InProcessCluster): void {
  for (const n of c.nodes) if (n !== undefined) (n as unknown as { undoAbandoned: () => void }).undoAbandoned = () => undefined;
}

/** Node `n`'s records of the shards it holds. */
const recordsOf = (n: unknown): ShardAssignment[] => (n as { nodeMeta: { shards: ShardAssignment[] } }).nodeMeta.shards;

/** Sends a create of `vol` straight to the controller (not through an API router, which would send it again), and gives up on its answer. */
async function createGivenUp(cluster: InProcessCluster): Promise<string> {
  const nc = await natsConnect({ servers: cluster.natsUrl });
  try {
    return await nc.request(controllerSubject(cluster.cluster, 'volume.create'), encode({ name: 'vol', pageCount: 64, shards: 4, stripePages: 8, replicas: 3, requestId: 'given-up' }), { timeout: 5000 }).then(
      () => 'answered',
      () => 'not answered',
    );
  } finally {
    await nc.close();
  }
}

/**
 * Four nodes, three of them controller nodes, a first volume made (the controller is seated and
 * knows every node), and the controller's node set to die at its next placement
 * (`dieWhenPlacing`): the cluster, that node's id, and the volume it placed once it did.
 */
async function clusterWhoseControllerDies(repairAfterMs = 3000): Promise<{ cluster: InProcessCluster; ctl: number; deadId: string; unfinished: Promise<VolumeRecord> }> {
  const cluster = await startCluster({ nodes: 4, controllers: 3, hosts: 1, clientTimeoutMs: 20_000, node: { repairAfterMs } });
  await cluster.waitForMembers(4);
  await cluster.client.createVolume({ name: 'warm', pageCount: 16, shards: 1, replicas: 3 });
  const ctl = await controllerIndex(cluster);
  return { cluster, ctl, deadId: cluster.nodes[ctl]!.nodeId, unfinished: dieWhenPlacing(cluster, ctl) };
}

describe('a create whose controller dies before any node opened its replicas', function () {
  this.timeout(180_000);
  let c: InProcessCluster | undefined;

  afterEach(async () => {
    await c?.stop();
    c = undefined;
  });

  it('is made anew on the live nodes when sent again: every shard has a leader and takes writes while the dead node stays down', async () => {
    const set = await clusterWhoseControllerDies();
    c = set.cluster;
    const { cluster, ctl, deadId } = set;
    // Its placement of the next create: the catalog change durable, then the node dies before a
    // single shards.open is sent.
    const unfinished: VolumeRecord[] = [];
    void set.unfinished.then((v) => unfinished.push(v));
    const spec = { name: 'vol', pageCount: 64, shards: 4, stripePages: 8, replicas: 3 as const, requestId: 'create-vol-1' };
    // The client's tries and the API router's sends again reach the controller that takes over.
    const created = await cluster.client.createVolume(spec);
    assert.equal(unfinished.length, 1, 'the dead controller placed the volume once');
    assert.ok(unfinished[0]!.placements.some((p) => p.replicas.some((r) => r.nodeId === deadId)), 'the unfinished create placed replicas on the node that died');
    assert.notEqual(created.id, unfinished[0]!.id, 'the create its controller did not finish was made anew, under another id');
    const again = await cluster.client.createVolume(spec);
    assert.equal(again.id, created.id, 'sent again, answered with the same volume');
    const info = (await cluster.client.volumeInfo('vol')) as unknown as { replicaSets: Array<{ members: string[] }> };
    assert.equal(info.replicaSets.length, 4);
    for (const [shard, set] of info.replicaSets.entries()) assert.ok(!set.members.includes(deadId), `shard ${shard} placed on the dead node ${deadId}: ${set.members.join(',')}`);
    const vol = cluster.client.volume('vol');
    for (let shard = 0; shard < 4; shard++) {
      await eventually(`a write to shard ${shard}`, () => vol.writePages([{ page: shard * 8, data: page(shard + 1) }], { deadlineMs: Date.now() + 4000 }), 60_000);
    }
    for (let shard = 0; shard < 4; shard++) assert.deepEqual(await vol.read(shard * 8), page(shard + 1), `shard ${shard} reads back its write`);
    assert.equal(cluster.nodes[ctl], undefined, 'the dead node stayed down');
  });

  it('until then is neither described nor listed, and a create of its name with another request id undoes it and is made', async () => {
    const set = await clusterWhoseControllerDies();
    c = set.cluster;
    const { cluster, deadId, unfinished } = set;
    keepUnfinished(cluster);
    // Straight to the controller, not through an API router (which would send it again): its
    // requester gives up.
    const nc = await natsConnect({ servers: cluster.natsUrl });
    try {
      const lost = nc.request(controllerSubject(cluster.cluster, 'volume.create'), encode({ name: 'vol', pageCount: 64, shards: 4, stripePages: 8, replicas: 3, requestId: 'given-up' }), { timeout: 5000 }).then(
        () => 'answered',
        () => 'not answered',
      );
      const v = await unfinished;
      assert.equal(await lost, 'not answered');
      // The next controller holds the volume, not placed: not described, not listed.
      await controllerIndex(cluster);
      const described = await eventually('the next controller', () => cluster.client.volumeInfo('vol').then(() => 'described', (e: ProtocolError) => (e.code === 'not_found' ? e.message : Promise.reject(e))));
      assert.match(described, /its create has not been answered yet/);
      assert.deepEqual((await cluster.client.listVolumes()).map((x) => x.name), ['warm']);
      // Another create of the name: made, on the live nodes.
      const made = await cluster.client.createVolume({ name: 'vol', pageCount: 64, shards: 4, stripePages: 8, replicas: 3, requestId: 'another' });
      assert.notEqual(made.id, v.id);
      assert.deepEqual((await cluster.client.listVolumes()).map((x) => x.name).sort(), ['vol', 'warm']);
      const info = (await cluster.client.volumeInfo('vol')) as unknown as { replicaSets: Array<{ members: string[] }> };
      for (const [shard, set] of info.replicaSets.entries()) assert.ok(!set.members.includes(deadId), `shard ${shard} placed on the dead node ${deadId}: ${set.members.join(',')}`);
      const vol = cluster.client.volume('vol');
      for (let shard = 0; shard < 4; shard++) {
        await eventually(`a write to shard ${shard}`, () => vol.writePages([{ page: shard * 8, data: page(shard + 1) }], { deadlineMs: Date.now() + 4000 }), 60_000);
      }
    } finally {
      await nc.close();
    }
  });

  it('is not described by its nodes while no controller answers, and its nodes describe a volume once its create is answered', async () => {
    // Dead nodes not replaced (the default wait): the dead controller nodes stay controller nodes.
    const set = await clusterWhoseControllerDies(REPAIR_AFTER_MS_DEFAULT);
    c = set.cluster;
    const { cluster, ctl } = set;
    keepUnfinished(cluster);
    // The first volume's records: its create is answered, and its nodes reconciled since.
    await waitFor('the records of the answered create without the mark', () => {
      const held = cluster.nodes.flatMap((n) => (n === undefined ? [] : recordsOf(n).filter((a) => a.volumeName === 'warm')));
      return held.length === 3 && held.every((a) => a.placing === undefined);
    }, 30_000);
    const answered = cluster.nodes.filter((n) => n !== undefined && recordsOf(n).some((a) => a.volumeName === 'warm'));
    for (const n of answered) assert.equal(n!.localVolumeInfo('warm')?.name, 'warm', `node ${n!.nodeId} describes the answered volume`);
    assert.equal(await createGivenUp(cluster), 'not answered');
    const v = await set.unfinished;
    // The next controller places the volume's replicas on the live nodes at their
    // reconciliation, marked: each live node records its own, and describes none.
    const ctl2 = await controllerIndex(cluster);
    assert.notEqual(ctl2, ctl);
    const live = (): Array<{ i: number; n: NonNullable<InProcessCluster['nodes'][number]> }> => cluster.nodes.flatMap((n, i) => (n === undefined ? [] : [{ i, n }]));
    const holders = new Set(v.placements.flatMap((p) => p.replicas.map((r) => r.nodeId)));
    const liveHolders = (): ReturnType<typeof live> => live().filter(({ n }) => holders.has(n.nodeId));
    assert.ok(liveHolders().some(({ i }) => i !== ctl2), 'a node that stays live holds a replica of the unfinished volume');
    await waitFor('every live node it is placed on records its replicas of the unfinished volume', () => liveHolders().every(({ n }) => recordsOf(n).some((a) => a.volumeId === v.id)), 30_000);
    for (const { n } of liveHolders()) {
      assert.ok(recordsOf(n).filter((a) => a.volumeId === v.id).every((a) => a.placing === true), `node ${n.nodeId} records the volume as placing`);
      assert.equal(n.localVolumeInfo('vol'), undefined, `node ${n.nodeId} describes the unfinished volume`);
    }
    // A second controller node dies: the catalog shard has no majority, no controller answers,
    // and the API routers answer from their nodes' records.
    cluster.kill(ctl2);
    await eventually('no controller', () => cluster.client.listVolumes().then(() => Promise.reject(new ProtocolError('timeout', 'a controller answers')), (e: ProtocolError) => (e.code === 'unavailable' ? e.code : Promise.reject(e))), 60_000, ['timeout']);
    const got = await cluster.client.volumeInfo('vol').then(
      (info) => `described as ${JSON.stringify(info)}`,
      (e: ProtocolError) => e.code,
    );
    assert.equal(got, 'unavailable');
  });

  it('sent by nobody again, is undone by the next controller by itself: its replicas destroyed on the live nodes, its name free', async () => {
    const set = await clusterWhoseControllerDies();
    c = set.cluster;
    const { cluster, ctl } = set;
    assert.equal(await createGivenUp(cluster), 'not answered');
    const v = await set.unfinished;
    await controllerIndex(cluster);
    const seated = (): Controller | undefined => cluster.nodes.map((n) => (n as unknown as { controller?: Controller } | undefined)?.controller).find((x) => x !== undefined);
    await waitFor('the next controller undoes the unfinished volume', () => {
      const ctrl = seated();
      return ctrl !== undefined && !ctrl.list().some((x) => x.id === v.id);
    }, 60_000);
    await waitFor('no live node holds a replica of it', () => cluster.nodes.every((n) => n === undefined || !recordsOf(n).some((a) => a.volumeId === v.id)), 60_000);
    assert.equal(cluster.nodes[ctl], undefined, 'the dead node stayed down');
    assert.deepEqual((await cluster.client.listVolumes()).map((x) => x.name), ['warm']);
    const made = await cluster.client.createVolume({ name: 'vol', pageCount: 64, shards: 4, stripePages: 8, replicas: 3, requestId: 'another' });
    assert.notEqual(made.id, v.id);
  });
});
