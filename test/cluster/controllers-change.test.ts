/**
 * Changing the controller nodes of a running cluster (docs/replication.md, "Changing the
 * controller nodes"; `strata controllers`): the catalog shard's replica set changes through a
 * joint configuration; a node added opens a replica first, a node taken out destroys its own,
 * also when it was down when told, or ran the controller. Every node is started again with the
 * list it was first started with: its record of the change holds over it.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { connect as natsConnect } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { CATALOG_VOLUME_ID } from '../../cluster/catalog-shard';
import { ProtocolError } from '../../messages/errors';
import { decode, encode } from '../../messages/codec';
import { controllerSubject, nodeSubject, type ControllersReply } from '../../messages/control';
import { RealDisk } from '../../storage-engine/real-disk';
import { NODE_META, nodeMetaStore, type NodeMeta } from '../../cluster/data-dir-layout';
import type { ControllerSnapshot } from '../../observability/metrics';
import { inspect, inspectText } from '../../cluster/inspect';
import { eventually, waitFor } from '../support/wait';

const sorted = (xs: readonly string[]): string[] => [...xs].sort();

/** Whether node i of `c` (running) has a replica of the catalog shard open. */
async function holdsCatalog(c: InProcessCluster, i: number): Promise<boolean> {
  const st = (await c.nodes[i]!.status()) as { shards: Array<{ volumeId: string }> };
  return st.shards.some((s) => s.volumeId === CATALOG_VOLUME_ID);
}

/** The index of the node of `c` that runs the controller now (one of the latest term). */
function controllerIndex(c: InProcessCluster): Promise<number> {
  return eventually('a controller', async () => {
    const found: Array<{ index: number; term: number }> = [];
    for (const [index, n] of c.nodes.entries()) {
      const st = (await n?.status()) as { node: { controller: boolean; controllerTerm?: number } } | undefined;
      if (st?.node.controller === true) found.push({ index, term: st.node.controllerTerm! });
    }
    if (found.length === 0) throw new ProtocolError('unavailable', 'none yet');
    return found.sort((a, b) => b.term - a.term)[0]!.index;
  });
}

describe('changing the controller nodes', function () {
  this.timeout(240_000);
  let c: InProcessCluster;

  /** The catalog shard's replica directory on node i. */
  const catalogDir = (i: number): string => path.join(c.dataDirs[i]!, 'dev0', 'shards', `${CATALOG_VOLUME_ID}.0`);
  /** Node i's record of itself. */
  const record = (i: number): NodeMeta => nodeMetaStore(new RealDisk(c.dataDirs[i]!)).read<NodeMeta>(NODE_META)!;
  /** Waits until exactly the nodes `ids` (of those running) hold a replica of the catalog shard, and the others' directories are gone. */
  const catalogOn = async (ids: readonly string[]): Promise<void> => {
    const untilMs = Date.now() + 30_000;
    for (;;) {
      const wrong: string[] = [];
      for (const [i, n] of c.nodes.entries()) {
        if (n === undefined) continue;
        const want = ids.includes(`n${i + 1}`);
        const holds = await holdsCatalog(c, i);
        const dir = fs.existsSync(catalogDir(i));
        if (holds !== want || dir !== want) wrong.push(`n${i + 1} ${holds ? 'holds' : 'holds no'} replica, ${dir ? 'has' : 'has no'} directory, record ${JSON.stringify(record(i).catalog)}`);
      }
      if (wrong.length === 0) return;
      if (Date.now() > untilMs) assert.fail(`the catalog shard's replicas not on ${ids.join(',')} alone within 30 s: ${wrong.join('; ')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  before(async () => {
    // n1..n3 are the controller nodes at first; n4 and n5 are not.
    c = await startCluster({ nodes: 5, controllers: 3, hosts: 1, clientTimeoutMs: 5000 });
    await c.waitForMembers(5);
  });
  after(async () => {
    await c?.stop();
  });

  it('answers the set in force; a set that names a node the cluster does not have, or too few, is refused, and nothing changes', async () => {
    const r = await eventually('the set', () => c.client.controllers());
    assert.deepEqual(sorted(r.members), ['n1', 'n2', 'n3']);
    assert.deepEqual(sorted(r.prior), ['n1', 'n2', 'n3']);
    assert.equal(r.changed, false);
    await assert.rejects(c.client.controllers(['n1', 'n2', 'n9']), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /node 'n9' is not a node of cluster/.test(e.message));
    await assert.rejects(c.client.controllers(['n1', 'n2']), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /3\.\.7 distinct node ids/.test(e.message));
    // The controller checks them too (a request not from Strata's client).
    const nc = await natsConnect({ servers: c.natsUrl });
    try {
      for (const [body, why] of [
        [{ members: ['n1', 'n1', 'n2'] }, /listed twice/],
        [{ members: ['n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7', 'n8'] }, /too_large|at most 7/],
        [{ members: ['n1', 'n2', 'n3'], extra: 1 }, /extra: unknown field/],
        [{ members: 'n1,n2,n3' }, /members/],
      ] as const) {
        const reply = decode(
          (await eventually('an answer', async () => {
            const m = await nc.request(controllerSubject(c.cluster, 'controllers'), encode(body), { timeout: 5000 });
            const err = (decode(m.data) as { error?: { code: string } }).error;
            if (err?.code === 'unavailable') throw new ProtocolError('unavailable', 'moving');
            return m;
          })).data,
        ) as { error?: { code: string; message: string } };
        assert.ok(reply.error !== undefined && ['bad_request', 'too_large'].includes(reply.error.code) && why.test(`${reply.error.code} ${reply.error.message}`), JSON.stringify(reply));
      }
      // A node told to join a set that does not name it, or to leave one that does, refuses.
      const join = decode((await nc.request(nodeSubject(c.cluster, 'n4', 'catalog.join'), encode({ members: ['n1', 'n2', 'n3'], prior: ['n1', 'n2', 'n3'] }), { timeout: 5000 })).data) as { error?: { code: string; message: string } };
      assert.equal(join.error?.code, 'bad_request');
      assert.match(join.error!.message, /do not name node 'n4'/);
      const leave = decode((await nc.request(nodeSubject(c.cluster, 'n1', 'catalog.leave'), encode({ members: ['n1', 'n2', 'n3'] }), { timeout: 5000 })).data) as { error?: { code: string; message: string } };
      assert.equal(leave.error?.code, 'bad_request');
      assert.match(leave.error!.message, /it stays a controller node/);
    } finally {
      await nc.close();
    }
    assert.deepEqual(sorted((await eventually('the set', () => c.client.controllers())).members), ['n1', 'n2', 'n3']);
    await catalogOn(['n1', 'n2', 'n3']);
  });

  it("a change whose set change fails answers why: a leader that steps down sends the requester to the next controller; another failure keeps its code, and nothing changes", async () => {
    const i = await controllerIndex(c);
    const pool = (c.nodes[i] as unknown as { pool: { reconfigure: (...args: unknown[]) => Promise<unknown> } }).pool;
    const saved = pool.reconfigure;
    const nc = await natsConnect({ servers: c.natsUrl });
    const ask = async (): Promise<{ error?: { code: string; message: string; details?: Record<string, unknown> } }> =>
      decode((await nc.request(controllerSubject(c.cluster, 'controllers'), encode({ members: ['n1', 'n2', 'n3'] }), { timeout: 10_000 })).data) as { error?: { code: string; message: string; details?: Record<string, unknown> } };
    try {
      pool.reconfigure = async () => {
        throw new ProtocolError('not_leader', 'the stand-in leads no more');
      };
      const stepped = await ask();
      assert.equal(stepped.error?.code, 'unavailable', JSON.stringify(stepped));
      assert.match(stepped.error!.message, /^the catalog shard's leader on node 'n\d' stepped down during the change to n\d,n\d,n\d \(the stand-in leads no more\); retry: the next controller finishes it$/);
      assert.equal(stepped.error!.details?.['notController'], true);
      pool.reconfigure = async () => {
        throw new ProtocolError('timeout', 'the stand-in did not commit it');
      };
      const late = await ask();
      assert.equal(late.error?.code, 'timeout', JSON.stringify(late));
      assert.match(late.error!.message, /^the catalog shard's set was not changed to n\d,n\d,n\d: the stand-in did not commit it \(the change may still be made: strata controllers shows the set in force\)$/);
    } finally {
      pool.reconfigure = saved;
      await nc.close();
    }
    assert.deepEqual(sorted((await eventually('the set', () => c.client.controllers())).members), ['n1', 'n2', 'n3']);
  });

  it('a change that a node added does not join is refused, naming the node, and nothing changes', async () => {
    const n4 = c.nodes[3] as unknown as { joinCatalog: (...args: unknown[]) => Promise<boolean> };
    const saved = n4.joinCatalog;
    n4.joinCatalog = async () => {
      throw new ProtocolError('unavailable', 'the stand-in opens no replica');
    };
    const nc = await natsConnect({ servers: c.natsUrl });
    try {
      const reply = decode((await nc.request(controllerSubject(c.cluster, 'controllers'), encode({ members: ['n1', 'n2', 'n4'] }), { timeout: 10_000 })).data) as { error?: { code: string; message: string } };
      assert.equal(reply.error?.code, 'unavailable', JSON.stringify(reply));
      assert.equal(reply.error!.message, "node 'n4' did not open a replica of the catalog shard: the stand-in opens no replica; the controller nodes were not changed");
    } finally {
      n4.joinCatalog = saved;
      await nc.close();
    }
    assert.deepEqual(sorted((await eventually('the set', () => c.client.controllers())).members), ['n1', 'n2', 'n3']);
    await catalogOn(['n1', 'n2', 'n3']);
  });

  it('while a change is under way (the catalog shard in a joint configuration), a change to another set is refused, naming both sets; the change under way asked again goes on', async () => {
    const before = (await eventually('the set', () => c.client.controllers())).members;
    const i = await controllerIndex(c);
    const outsiders = ['n1', 'n2', 'n3', 'n4', 'n5'].filter((n) => !before.includes(n));
    // The controller's replica of the catalog shard says it is changing its set from all five
    // nodes to the set in force (as after a change cut short).
    const prior = [...before, ...outsiders];
    const node = c.nodes[i] as unknown as { catalogReplicaConfig: () => Promise<{ leading: boolean; members: string[]; prior?: string[] } | undefined> };
    const saved = node.catalogReplicaConfig;
    node.catalogReplicaConfig = async () => {
      const real = await saved.call(node);
      return real?.leading === true ? { ...real, members: [...real.members], prior } : real;
    };
    const nc = await natsConnect({ servers: c.natsUrl });
    const ask = async (members: string[]): Promise<Partial<ControllersReply> & { error?: { code: string; message: string; details?: Record<string, unknown> } }> =>
      decode((await nc.request(controllerSubject(c.cluster, 'controllers'), encode({ members }), { timeout: 10_000 })).data) as Partial<ControllersReply> & { error?: { code: string; message: string; details?: Record<string, unknown> } };
    try {
      const other = sorted([...before.filter((n) => n !== `n${i + 1}`).slice(1), `n${i + 1}`, outsiders[0]!]);
      const refused = await ask(other);
      assert.equal(refused.error?.code, 'unavailable', JSON.stringify(refused));
      assert.equal(refused.error!.message, `the controller nodes are changing from ${prior.join(',')} to ${before.join(',')}; retry once that is done`);
      assert.deepEqual(refused.error!.details, { members: before, prior });
      // The set the change under way goes to: not refused, it goes on from the same prior set.
      const again = await ask(before);
      assert.equal(again.error, undefined, JSON.stringify(again));
      assert.deepEqual(again.members, before);
      assert.deepEqual(again.prior, prior);
      assert.equal(again.changed, false);
    } finally {
      node.catalogReplicaConfig = saved;
      await nc.close();
    }
    assert.deepEqual(sorted((await eventually('the set', () => c.client.controllers())).members), sorted(before));
    await catalogOn(before);
  });

  it('replaces a controller node that is not the controller: n4 joins with a new replica, the one taken out destroys its own; the catalog is kept, and asked again, the change is answered done', async () => {
    await eventually('a create', () => c.client.createVolume({ name: 'a', pageCount: 64, shards: 1, replicas: 3 }));
    const seat = await controllerIndex(c);
    const out = [0, 1, 2].find((i) => i !== seat)!;
    const target = ['n1', 'n2', 'n3'].filter((n) => n !== `n${out + 1}`).concat('n4');
    const r = await eventually('the change', () => c.client.controllers(target));
    assert.equal(r.changed, true);
    assert.deepEqual(sorted(r.members), sorted(target));
    assert.deepEqual(sorted(r.prior), ['n1', 'n2', 'n3']);
    assert.deepEqual(r.left, [`n${out + 1}`], 'the node taken out was told, and destroyed its replica');
    assert.deepEqual(r.leaving, []);
    await catalogOn(target);
    assert.deepEqual(record(3).catalog, { member: true, members: target });
    assert.deepEqual(record(out).catalog?.member, false);
    // strata inspect shows the record.
    const seen = inspect(c.dataDirs[out]!);
    assert.deepEqual(seen.node?.catalog, { member: false, members: target });
    assert.match(inspectText(seen), new RegExp(`taken out of the controller nodes by a change \\(its record; set ${target.join(',')}\\)`));
    assert.match(inspectText(inspect(c.dataDirs[3]!)), new RegExp(`a controller node by a change of the controller nodes \\(its record; set ${target.join(',')}\\)`));
    const again = await eventually('the change asked again', () => c.client.controllers(target));
    assert.equal(again.changed, false);
    assert.deepEqual(sorted(again.members), sorted(target));
    // The catalog is the same, and takes changes.
    await eventually('a create', () => c.client.createVolume({ name: 'b', pageCount: 64, shards: 1, replicas: 3 }));
    assert.deepEqual((await eventually('the list', () => c.client.listVolumes())).map((v) => v.name).sort(), ['a', 'b']);
    // The node taken out, started again with the list it was first started with, stays out;
    // n4, started again with a list that does not name it, stays in.
    await c.stopNode(out);
    await c.restart(out);
    await c.stopNode(3);
    await c.restart(3);
    await c.waitForMembers(5);
    await catalogOn(target);
    assert.deepEqual(sorted((await eventually('the set', () => c.client.controllers())).members), sorted(target));
  });

  it('the new set runs the controller without the node taken out: two of its nodes killed in turn, the third and one of them elect', async () => {
    const set = sorted((await eventually('the set', () => c.client.controllers())).members);
    const idx = set.map((n) => Number(n.slice(1)) - 1);
    // One of the set down: the other two still run the controller and change the catalog.
    c.kill(idx[0]!);
    await eventually('a create without one controller node', () => c.client.createVolume({ name: 'c', pageCount: 64, shards: 1, replicas: 1 }), 60_000);
    assert.ok(set.includes(`n${(await controllerIndex(c)) + 1}`), 'the controller runs on a node of the set');
    await c.restart(idx[0]!);
    await c.waitForMembers(5);
    await catalogOn(set);
  });

  it('a change that takes out the node running the controller: the controller moves to a node of the new set, and the old one destroys its replica once it hears from it', async () => {
    const before = sorted((await eventually('the set', () => c.client.controllers())).members);
    const seat = await controllerIndex(c);
    const outsider = [0, 1, 2, 3, 4].find((i) => !before.includes(`n${i + 1}`))!;
    const target = sorted(before.filter((n) => n !== `n${seat + 1}`).concat(`n${outsider + 1}`));
    const r = await eventually('the change', () => c.client.controllers(target));
    assert.deepEqual(sorted(r.members), target);
    if (r.node === `n${seat + 1}`) {
      // Answered by the controller it took out: its own replica goes once the next controller answers its heartbeat.
      assert.equal(r.changed, true);
      assert.deepEqual(r.leaving, [`n${seat + 1}`]);
    } else {
      // Its replica stepped down before the change was committed (it lost contact with the new
      // set: a loaded machine), and the client asked the next controller, which found it made.
      assert.ok(target.includes(r.node), `answered by ${r.node}, of the new set`);
    }
    await catalogOn(target);
    const next = await controllerIndex(c);
    assert.ok(target.includes(`n${next + 1}`), `the controller runs on ${next + 1}, of the new set`);
    assert.deepEqual(record(seat).catalog?.member, false);
    await eventually('a create', () => c.client.createVolume({ name: 'd', pageCount: 64, shards: 1, replicas: 3 }));
    assert.deepEqual((await eventually('the list', () => c.client.listVolumes())).map((v) => v.name).sort(), ['a', 'b', 'c', 'd']);
  });

  it('a node added and made the controller, then taken out within its grace after the join, destroys its replica once the next controller leaves it out', async () => {
    const before = sorted((await eventually('the set', () => c.client.controllers())).members);
    const seat = await controllerIndex(c);
    const x = [0, 1, 2, 3, 4].find((i) => !before.includes(`n${i + 1}`))!;
    const out = before.find((n) => n !== `n${seat + 1}`)!;
    const withX = sorted(before.filter((n) => n !== out).concat(`n${x + 1}`));
    assert.equal((await eventually('the change', () => c.client.controllers(withX))).changed, true);
    await eventually('the handover', () => c.client.handOver('strata-catalog', 0, { to: `n${x + 1}` }));
    await waitFor(`n${x + 1} runs the controller`, async () => (await controllerIndex(c)) === x, 30_000);
    // Taken out again at once: it runs the controller, so it is not told; the next controller's
    // heartbeat answers leave it out, and its replica's log holds the set that added it.
    const back = sorted(withX.filter((n) => n !== `n${x + 1}`).concat(out));
    const r = await eventually('the change back', () => c.client.controllers(back));
    assert.deepEqual(sorted(r.members), back);
    await catalogOn(back);
  });

  it("a change cut short by a kill of the controller's node, the nodes added cut off: the catalog shard's next leader finishes it (or the change asked again makes it), and asked again, it is answered done", async () => {
    await eventually('a create', () => c.client.createVolume({ name: 'e', pageCount: 64, shards: 1, replicas: 3 }));
    const before = sorted((await eventually('the set', () => c.client.controllers())).members);
    const seat = await controllerIndex(c);
    const kept = before.find((n) => n !== `n${seat + 1}`)!;
    const outsiders = [0, 1, 2, 3, 4].filter((i) => !before.includes(`n${i + 1}`));
    const target = sorted([kept, ...outsiders.map((i) => `n${i + 1}`)]);
    // The nodes added cannot exchange replication messages with anyone: they join (a control
    // message), but the joint configuration cannot be committed without them.
    await c.partition(outsiders.map((i) => [i]));
    const change = c.client.controllers(target, { deadlineMs: Date.now() + 6000 }).catch((e: unknown) => e);
    await waitFor('the nodes added joined', async () => (await Promise.all(outsiders.map((i) => holdsCatalog(c, i)))).every((x) => x), 10_000);
    await new Promise((r) => setTimeout(r, 300));
    c.kill(seat);
    await new Promise((r) => setTimeout(r, 1000));
    await c.heal();
    await change;
    await c.restart(seat);
    await c.waitForMembers(5);
    const r = await eventually('the change asked again', () => c.client.controllers(target), 60_000);
    assert.deepEqual(sorted(r.members), target);
    await catalogOn(target);
    const again = await eventually('the change asked once more', () => c.client.controllers(target));
    assert.equal(again.changed, false);
    // The catalog kept every volume, and takes changes.
    await eventually('a create', () => c.client.createVolume({ name: 'f', pageCount: 64, shards: 1, replicas: 3 }));
    assert.deepEqual((await eventually('the list', () => c.client.listVolumes())).map((v) => v.name).sort(), ['a', 'b', 'c', 'd', 'e', 'f']);
  });

  /** Waits until the controller counts node i not live (no heartbeat for its live window). */
  const notLive = (i: number): Promise<void> =>
    waitFor(`n${i + 1} counted not live`, async () => {
      const st = await c.client.status().catch(() => undefined);
      const m = (st?.members as Array<{ nodeId: string; live: boolean }> | undefined)?.find((x) => x.nodeId === `n${i + 1}`);
      return m !== undefined && !m.live;
    }, 30_000);

  it('grows to five controller nodes; a new set without a live majority is refused, and nothing changes', async () => {
    const all = ['n1', 'n2', 'n3', 'n4', 'n5'];
    const r = await eventually('the change', () => c.client.controllers(all), 60_000);
    assert.equal(r.changed, true);
    assert.deepEqual(sorted(r.members), all);
    assert.deepEqual([...r.left, ...r.leaving], []);
    await catalogOn(all);
    const seat = await controllerIndex(c);
    const [d1, d2] = [0, 1, 2, 3, 4].filter((i) => i !== seat);
    c.kill(d1!);
    c.kill(d2!);
    await notLive(d1!);
    await notLive(d2!);
    await assert.rejects(c.client.controllers(sorted([`n${d1! + 1}`, `n${d2! + 1}`, `n${seat + 1}`])), (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable' && /1 of the new controller nodes are live .* a majority of 3 is 2/.test(e.message));
    assert.deepEqual(sorted((await eventually('the set', () => c.client.controllers())).members), all);
    await c.restart(d1!);
    await c.restart(d2!);
    await c.waitForMembers(5);
    await catalogOn(all);
  });

  it('a node taken out while it is down destroys its replica when it is back; a node added must be live', async () => {
    const seat = await controllerIndex(c);
    const [down, told] = [0, 1, 2, 3, 4].filter((i) => i !== seat);
    c.kill(down!);
    await notLive(down!);
    const target = sorted(['n1', 'n2', 'n3', 'n4', 'n5'].filter((n) => n !== `n${down! + 1}` && n !== `n${told! + 1}`).slice(0, 3));
    assert.ok(target.includes(`n${seat + 1}`));
    const r: ControllersReply = await eventually('the change', () => c.client.controllers(target), 60_000);
    assert.equal(r.changed, true);
    assert.deepEqual(r.left, [`n${told! + 1}`]);
    assert.deepEqual(r.leaving, [`n${down! + 1}`], 'the node down could not be told');
    // The node down is not live: it cannot be added back.
    const withDown = sorted([...target.filter((n) => n !== target.find((x) => x !== `n${seat + 1}`)), `n${down! + 1}`]);
    await assert.rejects(c.client.controllers(withDown), (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable' && new RegExp(`node 'n${down! + 1}' is not live`).test(e.message));
    // Back, with its replica and its record saying it is a controller node: the controller's
    // heartbeat answers leave it out, and it destroys its replica.
    assert.notEqual(record(down!).catalog?.member, false);
    assert.ok(fs.existsSync(catalogDir(down!)));
    await c.restart(down!);
    await c.waitForMembers(5);
    await catalogOn(target);
    assert.equal(record(down!).catalog?.member, false);
    assert.deepEqual(sorted((await eventually('the set', () => c.client.controllers())).members), target);
  });
});

describe('the controller replacing a controller node by itself', function () {
  this.timeout(180_000);
  let c: InProcessCluster;

  const setBecomes = (want: string[]): Promise<void> =>
    waitFor(`the controller nodes ${want.join(',')}`, async () => {
      const r = await c.client.controllers().catch(() => undefined);
      return r !== undefined && sorted(r.members).join() === sorted(want).join();
    }, 60_000);

  before(async () => {
    // n1..n3 are the controller nodes; a node silent for 1.5 s is dead.
    c = await startCluster({ nodes: 4, controllers: 3, hosts: 1, clientTimeoutMs: 5000, node: { repairAfterMs: 1500 } });
    await c.waitForMembers(4);
  });
  after(async () => {
    await c?.stop();
  });

  it('a controller node dead past the repair wait is replaced by the node that is not one; back, it destroys its replica', async () => {
    const seat = await controllerIndex(c);
    const dead = [0, 1, 2].find((i) => i !== seat)!;
    c.kill(dead);
    const want = sorted(['n1', 'n2', 'n3'].filter((n) => n !== `n${dead + 1}`).concat('n4'));
    await setBecomes(want);
    await waitFor('n4 holds a replica of the catalog shard', () => holdsCatalog(c, 3), 30_000);
    // The controller counts the replacement, and its controller nodes live (strata_controller_node_changes_total, strata_catalog_nodes).
    const stats = (c.nodes[await controllerIndex(c)] as unknown as { controllerStats(): ControllerSnapshot | undefined }).controllerStats()!;
    assert.ok(stats.controllerNodeChanges!.some((x) => x.trigger === 'repair' && x.outcome === 'done' && x.count >= 1), JSON.stringify(stats.controllerNodeChanges));
    await waitFor('the controller nodes counted live', () => {
      const now = (c.nodes.find((n) => n !== undefined && (n as unknown as { controllerStats(): ControllerSnapshot | undefined }).controllerStats()?.controllerNodes !== undefined) as unknown as { controllerStats(): ControllerSnapshot }).controllerStats();
      return now.controllerNodes!.live === 3 && now.controllerNodes!.dead === 0;
    });
    await c.restart(dead);
    await waitFor('the node back destroys its replica', async () => !(await holdsCatalog(c, dead)), 30_000);
    assert.deepEqual(sorted((await eventually('the set', () => c.client.controllers())).members), want);
  });

  it('a controller node marked draining, the controller\'s own, is replaced at once; the controller moves', async () => {
    const seat = await controllerIndex(c);
    const set = sorted((await eventually('the set', () => c.client.controllers())).members);
    const outsider = [0, 1, 2, 3].find((i) => !set.includes(`n${i + 1}`))!;
    await eventually('the drain', () => c.client.drainNode(`n${seat + 1}`));
    const want = sorted(set.filter((n) => n !== `n${seat + 1}`).concat(`n${outsider + 1}`));
    await setBecomes(want);
    await waitFor('the drained node destroys its replica', async () => !(await holdsCatalog(c, seat)), 30_000);
    assert.notEqual(await controllerIndex(c), seat);
    // A draining node is not added back (the controller would replace it again at once).
    await assert.rejects(c.client.controllers(sorted(want.slice(1).concat(`n${seat + 1}`))), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && new RegExp(`node 'n${seat + 1}' is draining`).test(e.message));
    await eventually('the drain undone', () => c.client.drainNode(`n${seat + 1}`, { undo: true }));
  });
});
