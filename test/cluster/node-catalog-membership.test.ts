/**
 * A node's side of a change of the controller nodes (docs/replication.md, "Changing the
 * controller nodes"), against a fake controller: it joins and leaves the catalog shard when told
 * (`catalog.join`, `catalog.leave`), follows the controller nodes its assignments name, not those
 * a heartbeat answer alone names (a deposed controller may answer one), does not leave within
 * its grace after a join, and keeps its record of a change over its `--controllers`.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StrataNode } from '../../cluster/node';
import { CATALOG_VOLUME_ID } from '../../cluster/catalog-shard';
import type { Msg } from 'nats';
import { encode, decode } from '../../messages/codec';
import { controllerSubject, nodeSubject } from '../../messages/control';
import { RealDisk } from '../../storage-engine/real-disk';
import { NODE_META, nodeMetaStore, type NodeMeta } from '../../cluster/data-dir-layout';
import { waitFor } from '../support/wait';
import { nodeRig } from '../support/node-rig';

const CLUSTER = 'catmember';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('a node joining and leaving the controller nodes', function () {
  this.timeout(60_000);
  const rig = nodeRig('strata-catalog-member-');
  const nodes = rig.nodes;
  /** What the fake controller names as the controller nodes: in heartbeat answers, and in assignments. */
  let hinted: string[] | undefined;
  let assigned: string[] | undefined;
  let assignmentsAsked = 0;

  beforeEach(() => {
    hinted = undefined;
    assigned = undefined;
    assignmentsAsked = 0;
    rig.fake.subscribe(controllerSubject(CLUSTER, 'heartbeat'), { callback: (_e, msg) => msg.respond(encode({ epoch: 2, ...(hinted ? { controllers: hinted } : {}) })) });
    rig.fake.subscribe(controllerSubject(CLUSTER, 'assignments'), {
      callback: (_e, msg) => {
        assignmentsAsked++;
        msg.respond(encode({ epoch: 2, shards: [], tombstones: [], ...(assigned ? { controllers: assigned } : {}) }));
      },
    });
  });

  async function startNode(id: string, controllers: string[] | undefined): Promise<StrataNode> {
    const n = await StrataNode.start({
      nodeId: id, cluster: CLUSTER, natsUrl: rig.nats.url, dataDir: path.join(rig.root, id), hosts: 1, heartbeatMs: 50,
      ...(controllers !== undefined ? { controller: controllers.includes(id), controllers } : { controller: false }),
    });
    nodes.push(n);
    return n;
  }
  const stopNode = async (n: StrataNode): Promise<void> => {
    nodes.splice(nodes.indexOf(n), 1);
    await n.stop();
  };
  const holdsCatalog = async (n: StrataNode): Promise<boolean> => (await n.hostPool.stats()).some((h) => (h.device?.shards ?? []).some((s) => s.volumeId === CATALOG_VOLUME_ID));
  const catalogDir = (id: string): string => path.join(rig.root, id, 'dev0', 'shards', `${CATALOG_VOLUME_ID}.0`);
  const record = (id: string): NodeMeta['catalog'] => nodeMetaStore(new RealDisk(path.join(rig.root, id))).read<NodeMeta>(NODE_META)!.catalog;
  const request = async (subject: string, body: unknown): Promise<{ error?: { code: string; message: string } } & Record<string, unknown>> =>
    decode((await rig.fake.request(subject, encode(body), { timeout: 10_000 })).data) as { error?: { code: string; message: string } } & Record<string, unknown>;

  it('leaves on what its assignments name, not on a heartbeat answer alone; started again with its first list, it stays out; named again, it joins as a replica whose storage was lost', async () => {
    let n = await startNode('m1', ['m1', 'x1', 'x2']);
    await waitFor('its replica of the catalog shard open', () => holdsCatalog(n));
    // A heartbeat answer that leaves it out (a deposed controller's, say): it asks its
    // assignments, which name nobody, and keeps its replica.
    hinted = ['x1', 'x2', 'x3'];
    await waitFor('its assignments asked', () => assignmentsAsked >= 2);
    await sleep(300);
    assert.equal(await holdsCatalog(n), true);
    assert.ok(fs.existsSync(catalogDir('m1')));
    // Its assignments leave it out too: it destroys its replica, and records it.
    assigned = ['x1', 'x2', 'x3'];
    await waitFor('its replica of the catalog shard destroyed', async () => !(await holdsCatalog(n)) && !fs.existsSync(catalogDir('m1')));
    assert.deepEqual(record('m1'), { member: false, members: ['x1', 'x2', 'x3'] });
    // Started again with the list it was first started with: its record holds (the controller
    // names no controller nodes meanwhile, as while a change is under way).
    hinted = assigned = undefined;
    await stopNode(n);
    n = await startNode('m1', ['m1', 'x1', 'x2']);
    await sleep(500);
    assert.equal(await holdsCatalog(n), false);
    assert.equal(fs.existsSync(catalogDir('m1')), false);
    // Named again by its assignments: it opens a replica, as one whose storage was lost (it may have acknowledged records).
    hinted = assigned = ['m1', 'x1', 'x3'];
    await waitFor('its replica of the catalog shard open again', () => holdsCatalog(n));
    assert.deepEqual(record('m1'), { member: true, members: ['m1', 'x1', 'x3'] });
    const st = (await n.hostPool.stats()).flatMap((h) => h.device?.shards ?? []).find((s) => s.volumeId === CATALOG_VOLUME_ID) as { repairing?: unknown } | undefined;
    assert.ok(st !== undefined && st.repairing !== undefined && st.repairing !== false, `opened as a replica whose storage was lost: ${JSON.stringify(st)}`);
  });

  it('joins when told, and does not leave on its assignments within its grace after; leaves when told, once', async () => {
    const n = await startNode('m2', ['x1', 'x2', 'x3']);
    await sleep(300);
    assert.equal(await holdsCatalog(n), false);
    const joined = await request(nodeSubject(CLUSTER, 'm2', 'catalog.join'), { members: ['m2', 'x1', 'x2'], prior: ['x1', 'x2', 'x3'] });
    assert.deepEqual(joined, { node: 'm2', done: true });
    assert.equal(await holdsCatalog(n), true);
    assert.deepEqual(record('m2'), { member: true, members: ['m2', 'x1', 'x2'] });
    assert.deepEqual(await request(nodeSubject(CLUSTER, 'm2', 'catalog.join'), { members: ['m2', 'x1', 'x2'], prior: ['x1', 'x2', 'x3'] }), { node: 'm2', done: false });
    // The change that adds it is not made yet: a controller names the set before it.
    hinted = assigned = ['x1', 'x2', 'x3'];
    await sleep(800);
    assert.equal(await holdsCatalog(n), true, 'kept within its grace after the join');
    const left = await request(nodeSubject(CLUSTER, 'm2', 'catalog.leave'), { members: ['x1', 'x2', 'x3'] });
    assert.deepEqual(left, { node: 'm2', done: true });
    assert.equal(await holdsCatalog(n), false);
    assert.equal(fs.existsSync(catalogDir('m2')), false);
    assert.deepEqual(record('m2'), { member: false, members: ['x1', 'x2', 'x3'] });
    assert.deepEqual(await request(nodeSubject(CLUSTER, 'm2', 'catalog.leave'), { members: ['x1', 'x2', 'x3'] }), { node: 'm2', done: false });
  });

  it('refuses a join whose members do not name it and a leave whose members do, bad_request, and changes nothing', async () => {
    const n = await startNode('m4', ['x1', 'x2', 'x3']);
    const join = await request(nodeSubject(CLUSTER, 'm4', 'catalog.join'), { members: ['x1', 'x2', 'x4'], prior: ['x1', 'x2', 'x3'] });
    assert.equal(join.error?.code, 'bad_request', JSON.stringify(join));
    assert.equal(join.error!.message, "members: x1,x2,x4 do not name node 'm4'");
    const leave = await request(nodeSubject(CLUSTER, 'm4', 'catalog.leave'), { members: ['m4', 'x1', 'x2'] });
    assert.equal(leave.error?.code, 'bad_request', JSON.stringify(leave));
    assert.equal(leave.error!.message, "members: m4,x1,x2 name node 'm4': it stays a controller node");
    assert.equal(await holdsCatalog(n), false);
    assert.deepEqual(record('m4'), undefined);
  });

  it('refuses a join that comes while it stops, unavailable, and records and opens nothing', async () => {
    // The controller takes the node's word that it stops (controller.leaving) and answers it once
    // the join is answered: the node is stopping, and still takes requests, meanwhile.
    const leaving: Msg[] = [];
    rig.fake.subscribe(controllerSubject(CLUSTER, 'leaving'), { callback: (_e, msg) => void leaving.push(msg) });
    await rig.fake.flush();
    const n = await startNode('m5', ['x1', 'x2', 'x3']);
    const stopped = stopNode(n);
    try {
      await waitFor('the node says it stops', () => leaving.length > 0);
      const join = await request(nodeSubject(CLUSTER, 'm5', 'catalog.join'), { members: ['m5', 'x1', 'x2'], prior: ['x1', 'x2', 'x3'] });
      assert.equal(join.error?.code, 'unavailable', JSON.stringify(join));
      assert.equal(join.error!.message, "node 'm5' stops");
    } finally {
      for (const m of leaving) m.respond(encode({ ok: true }));
      await stopped;
    }
    assert.equal(record('m5'), undefined);
    assert.equal(fs.existsSync(catalogDir('m5')), false);
  });

  it('a node started without --controllers refuses to join', async () => {
    await startNode('m3', undefined);
    const r = await request(nodeSubject(CLUSTER, 'm3', 'catalog.join'), { members: ['m3', 'x1', 'x2'], prior: ['x1', 'x2', 'x3'] });
    assert.equal(r.error?.code, 'bad_request');
    assert.match(r.error!.message, /started without --controllers/);
    assert.equal(record('m3'), undefined);
  });
});
