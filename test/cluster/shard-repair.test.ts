/**
 * The controller replaces the replicas of a dead node by itself (docs/replication.md, "Replacing
 * a dead node's replicas"): four nodes in three zones, a volume of 2 shards × 3 replicas placed
 * one per zone; a node that stays
 * down longer than the wait has each of its replicas moved to the node outside the shard's set,
 * and the shards then survive losing a second original member. A repair whose new replica is
 * not opened is tried again after a back-off, and one whose new node dies is finished without it
 * and then repaired in turn. With the wait set to 0 nothing is moved. The controller's metrics
 * show the dead node, the shards under-replicated until their repair, and each move once. A
 * rebalance makes one move at a time, and a dead node's repairs run REPAIRS_IN_FLIGHT_MAX at once.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { decode, encode } from '../../messages/codec';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { ProtocolError, errorReply } from '../../messages/errors';
import { waitFor } from '../support/wait';
import { samples, scrapeMetrics } from '../support/prometheus';
import { controllerMembers, fakeNode, type MemberView } from '../support/controller';
import { writeOnceServed } from '../support/served';
import { REPAIRS_IN_FLIGHT_MAX, REPAIR_BACKOFF_MS_MIN } from '../../cluster/node';
import { freePort } from '../../runtime/free-port';
import { CATALOG_VOLUME_ID } from '../../messages/control';

const page = (b: number): Uint8Array => new Uint8Array(4096).fill(b);
const idx = (nodeId: string): number => Number(nodeId.slice(1)) - 1;

/** One metric of the controller's node (n1) in a scrape. */
type Read = (name: string, labels?: Record<string, string>) => number | undefined;

/** A scrape of the metrics once `cond` holds of it; the controller's metrics come from its node (n1) alone. */
async function scrapeUntil(port: number, what: string, cond: (m: Read) => boolean): Promise<Read> {
  let read: Read = () => undefined;
  await waitFor(what, async () => {
    const text = await scrapeMetrics(port);
    read = (name, labels = {}) => {
      assert.deepEqual(samples(text, name, { ...labels, node: 'n2' }), [], `${name} of a node without the controller`);
      const v = samples(text, name, { ...labels, node: 'n1' });
      assert.ok(v.length <= 1, `${name} ${JSON.stringify(labels)}: ${v.length} series`);
      return v[0];
    };
    if (cond(read)) return true;
    await new Promise((r) => setTimeout(r, 100));
    return false;
  }, 60_000);
  return read;
}

const moves = (m: Read, trigger: string, outcome: string): number | undefined => m('strata_replica_moves_total', { trigger, outcome });

async function replicaSets(c: InProcessCluster, name: string): Promise<string[][]> {
  return (await c.client.volumeInfo(name)).replicaSets!.map((r) => [...r.members]);
}

/**
 * A node that takes a second to answer each open of a replica, with a failure: how many opens it
 * was asked, and the most it held at once.
 */
async function slowFailingNode(nc: NatsConnection, cluster: string, nodeId: string): Promise<{ opens: number; openingMax: number; stop(): void }> {
  let opening = 0;
  const counts = { opens: 0, openingMax: 0 };
  const node = await fakeNode(nc, cluster, nodeId, (m) => {
    counts.opens++;
    counts.openingMax = Math.max(counts.openingMax, ++opening);
    setTimeout(() => {
      opening--;
      try {
        m.respond(encode(errorReply(new ProtocolError('device_failed', `the disk of ${nodeId} failed`))));
      } catch {
        // The connection closed at the end of the test.
      }
    }, 1000);
  });
  return { get opens() { return counts.opens; }, get openingMax() { return counts.openingMax; }, stop: () => node.stop() };
}

/** Runs `fn` with a node `nx` of cluster `c` whose opens take a second and fail (`slowFailingNode`); ends it after. */
async function withSlowNode(c: InProcessCluster, fn: (nx: Awaited<ReturnType<typeof slowFailingNode>>, nc: NatsConnection) => Promise<void>): Promise<void> {
  const nc = await natsConnect({ servers: c.natsUrl });
  const nx = await slowFailingNode(nc, c.cluster, 'nx');
  try {
    await fn(nx, nc);
  } finally {
    nx.stop();
    await nc.close();
  }
}

describe("the controller replaces a dead node's replicas", function () {
  this.timeout(180_000);
  let c: InProcessCluster;
  before(async () => {
    // n1 and n2 in one failure domain: a shard has a replica on one of them only.
    c = await startCluster({ nodes: 4, hosts: 1, clientTimeoutMs: 5000, zones: ['a', 'a', 'b', 'c'], node: { repairAfterMs: 1000 } });
  });
  after(async () => {
    await c?.stop();
  });

  it('moves each replica of a node down longer than the wait to a live node; a second member down, writes and reads go on; the node back destroys its replicas', async () => {
    const info = await c.client.createVolume({ name: 'rp', pageCount: 64, shards: 2, stripePages: 4, replicas: 3 });
    const vol = c.client.volume('rp');
    // Pages 0..3 are shard 0's, 4..7 shard 1's.
    await vol.writePages([{ page: 0, data: page(1) }, { page: 4, data: page(2) }]);
    const before = await replicaSets(c, 'rp');
    for (const set of before) assert.equal(set.filter((n) => n === 'n1' || n === 'n2').length, 1, `${JSON.stringify(set)}: one replica in zone a`);
    // The status names each node's zone (strata status shows a ZONE column).
    const st = (await c.client.status()) as unknown as { members: Array<{ nodeId: string; zone?: string }> };
    assert.deepEqual(st.members.map((m) => [m.nodeId, m.zone]).sort(), [['n1', 'a'], ['n2', 'a'], ['n3', 'b'], ['n4', 'c']]);
    // A node holding both shards, not n1 (the controller's).
    const dead = ['n2', 'n3', 'n4'].find((n) => before.every((set) => set.includes(n)))!;
    assert.ok(dead !== undefined, JSON.stringify(before));
    c.kill(idx(dead));

    // Within the live window (5 s), the wait (1 s) and a check: both shards moved off it.
    await waitFor(`both shards' replicas moved off ${dead}`, async () => (await replicaSets(c, 'rp')).every((set) => set.length === 3 && !set.includes(dead)), 60_000);
    const after = await replicaSets(c, 'rp');
    for (let s = 0; s < 2; s++) {
      const added = after[s]!.filter((n) => !before[s]!.includes(n));
      assert.equal(added.length, 1, `shard ${s}: ${JSON.stringify(before[s])} -> ${JSON.stringify(after[s])}`);
      assert.deepEqual(after[s]!.filter((n) => n !== added[0]).sort(), before[s]!.filter((n) => n !== dead).sort());
    }
    const status = await c.client.volumeInfo('rp');
    assert.equal(status.replicaSets!.some((r) => r.moving !== undefined), false, 'no move left under way');

    // A second original member of each shard down (not n1): each shard has its new replica and one other.
    const second = ['n2', 'n3', 'n4'].find((n) => n !== dead && after.every((set) => set.includes(n)) && before.every((set) => set.includes(n)));
    if (second !== undefined) {
      c.kill(idx(second));
      for (const [p, v] of [[1, 7], [5, 8]] as const) {
        await writeOnceServed(vol, p, v, `a write to page ${p} with one original member of its shard left`);
      }
      const r = await vol.readPages([0, 1, 4, 5]);
      assert.deepEqual(r.pages.map((x) => x[0]), [1, 7, 2, 8]);
      await c.restart(idx(second));
    } else {
      // The placement put the two shards' sets apart: the pages still read back from the new sets.
      const r = await vol.readPages([0, 4]);
      assert.deepEqual(r.pages.map((x) => x[0]), [1, 2]);
    }

    // The dead node comes back: a member of neither shard now, it destroys both its replicas.
    await c.restart(idx(dead));
    for (let s = 0; s < 2; s++) {
      const dir = path.join(c.dataDirs[idx(dead)]!, 'dev0', 'shards', `${info.id}.${s}`);
      await waitFor(`${dead} destroyed its replica of shard ${s}`, () => !fs.existsSync(dir), 30_000);
    }
    // Nothing moves a replica to it because it holds none, until a rebalance is asked for: after
    // a few of the controller's checks (every 0.5 s), no move under way and none made.
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal((await c.client.volumeInfo('rp')).replicaSets!.some((r) => r.moving !== undefined), false, 'no move under way');
    assert.deepEqual(await replicaSets(c, 'rp'), after, 'nothing moved back');
  });

  it('strata rebalance gives the node that came back replicas again, one move at a time, until the nodes differ by at most one; then it is done', async () => {
    const vol = c.client.volume('rp');
    // Asked with --stop, nothing is asked for, however uneven the nodes.
    const stopped = await c.client.rebalance({ stop: true });
    assert.equal(stopped.rebalancing, false);
    const before = stopped.nodes;
    assert.equal(before.length, 4);
    const counts = (nodes: Array<{ replicas: number }>): number[] => nodes.map((n) => n.replicas);
    assert.ok(Math.max(...counts(before)) - Math.min(...counts(before)) >= 2, JSON.stringify(before));
    const first = await c.client.rebalance();
    assert.equal(first.rebalancing, true);
    await waitFor('the rebalance done', async () => !(await c.client.rebalance({ stop: false })).rebalancing, 60_000);
    const done = await c.client.rebalance({ stop: true });
    assert.ok(Math.max(...counts(done.nodes)) - Math.min(...counts(done.nodes)) <= 1, JSON.stringify(done));
    // Done once the nodes' counts of leaders are the leaders their replicas are (a move may
    // change its shard's leader, which a heartbeat counts a few seconds later).
    const leading = await Promise.all(c.nodes.map(async (n) => {
      let led = 0;
      for (const h of await n!.hostPool.stats()) for (const r of h.device?.shards ?? []) if (r.role === 'leader' && r.volumeId !== CATALOG_VOLUME_ID) led++;
      return led;
    }));
    assert.deepEqual(done.nodes.map((n) => n.leaders), leading, JSON.stringify(done));
    assert.equal(counts(done.nodes).reduce((a, b) => a + b, 0), 6, 'two shards of three replicas');
    for (const set of await replicaSets(c, 'rp')) assert.equal(new Set(set).size, 3);
    assert.deepEqual((await vol.readPages([0, 4])).pages.map((x) => x[0]), [1, 2]);
    // Asked when balanced: done at once.
    assert.equal((await c.client.rebalance()).rebalancing, false);
  });
});

describe('a rebalance of leaders with no shard to hand over', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  let nc: NatsConnection;
  before(async () => {
    c = await startCluster({ nodes: 1, hosts: 1, clientTimeoutMs: 5000 });
    nc = await natsConnect({ servers: c.natsUrl });
  });
  after(async () => {
    await nc?.close();
    await c?.stop();
  });

  it('asks each uneven pair once; asked again with the leaders and sets unchanged, it is done at once and asks none again', async () => {
    // nx says it leads 3 shards, n1 and ny none; nx holds no shard with a replica on either.
    const asked: string[] = [];
    nc.subscribe(`strata.${c.cluster}.node.nx.shard.handover`, {
      callback: (_e, m) => {
        asked.push((decode(m.data) as { to: string }).to);
        m.respond(encode(errorReply(new ProtocolError('not_found', 'nx leads no shard with a replica on that node'))));
      },
    });
    const nx = await fakeNode(nc, c.cluster, 'nx', () => undefined, 3);
    const ny = await fakeNode(nc, c.cluster, 'ny', () => undefined, 0);
    try {
      await waitFor('the controller counts nx leading 3', async () => (await c.client.rebalance({ stop: true })).nodes.find((n) => n.node === 'nx')?.leaders === 3, 30_000);
      assert.equal((await c.client.rebalance()).rebalancing, true, 'the leaders differ by 3');
      await waitFor('the rebalance done', async () => !(await c.client.rebalance({ stop: false })).rebalancing, 30_000);
      assert.deepEqual(asked.sort(), ['n1', 'ny'], 'each pair asked once');
      // Asked again: nothing to do that was not found so, with the same leaders and sets.
      assert.equal((await c.client.rebalance()).rebalancing, false);
      await new Promise((r) => setTimeout(r, 1500));
      assert.deepEqual(asked.sort(), ['n1', 'ny'], 'no pair asked again');
    } finally {
      nx.stop();
      ny.stop();
    }
  });
});

describe("the controller's metrics of a repair and of an operator's move", function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  before(async () => {
    // A wait (8 s) longer than the live window (5 s): the node is dead, and its shards
    // under-replicated, for a few seconds before their repair starts.
    c = await startCluster({ nodes: 4, hosts: 1, clientTimeoutMs: 5000, node: { repairAfterMs: 8000 }, telemetry: { metricsPort: await freePort(), metricsHost: '127.0.0.1' } });
  });
  after(async () => {
    await c?.stop();
  });

  it('nodes dead and shards under-replicated while a node is down, then each repair counted once, and a move by the operator under its own trigger', async () => {
    const port = c.telemetry?.metricsPort ?? 0;
    assert.ok(port > 0, 'the process serves its metrics');

    await c.client.createVolume({ name: 'mm', pageCount: 64, shards: 2, stripePages: 4, replicas: 3 });
    await c.client.volume('mm').writePages([{ page: 0, data: page(1) }, { page: 4, data: page(2) }]);
    let m = await scrapeUntil(port, 'every node live', (m) => m('strata_controller_nodes', { state: 'live' }) === 4);
    assert.equal(m('strata_controller_nodes', { state: 'dead' }), 0);
    assert.equal(m('strata_shards_under_replicated'), 0);
    assert.equal(moves(m, 'operator', 'done'), 0);
    assert.equal(moves(m, 'repair', 'done'), 0);

    // The operator moves shard 0's replica off a member (not n1) to the node outside its set.
    const sets = await replicaSets(c, 'mm');
    const from = sets[0]!.find((n) => n !== 'n1')!;
    const to = ['n1', 'n2', 'n3', 'n4'].find((n) => !sets[0]!.includes(n))!;
    await c.client.moveReplica('mm', 0, { from, to });
    // A move refused before it runs (to a member already) is not counted.
    await assert.rejects(c.client.moveReplica('mm', 1, { from: sets[1]![0]!, to: sets[1]![1]! }), (e: { code?: string }) => e.code === 'bad_request');
    m = await scrapeUntil(port, "the operator's move counted", (m) => moves(m, 'operator', 'done') === 1);
    assert.equal(moves(m, 'operator', 'bad_request'), undefined);
    assert.equal(moves(m, 'repair', 'done'), 0);
    assert.equal(m('strata_replica_moves_running'), 0);

    // A node holding a replica of both shards, not n1 (the controller's), is killed.
    const before = await replicaSets(c, 'mm');
    const dead = ['n2', 'n3', 'n4'].find((n) => before.every((set) => set.includes(n)))!;
    assert.ok(dead !== undefined, JSON.stringify(before));
    c.kill(idx(dead));
    m = await scrapeUntil(port, `${dead} dead to the controller`, (m) => m('strata_controller_nodes', { state: 'dead' }) === 1);
    assert.equal(m('strata_controller_nodes', { state: 'live' }), 3);
    // Before the repair (8 s of silence): both shards hold a replica on the dead node.
    assert.equal(moves(m, 'repair', 'done'), 0, 'no repair yet');
    assert.equal(m('strata_shards_under_replicated'), 2);

    m = await scrapeUntil(port, 'both shards repaired', (m) => m('strata_shards_under_replicated') === 0 && m('strata_replica_moves_running') === 0);
    assert.ok((await replicaSets(c, 'mm')).every((set) => set.length === 3 && !set.includes(dead)));
    assert.equal(moves(m, 'repair', 'done'), 2, 'one move per shard moved');
    assert.equal(moves(m, 'operator', 'done'), 1);
    assert.equal(m('strata_replica_repairs_backing_off'), 0);
    assert.equal(m('strata_controller_nodes', { state: 'dead' }), 1, 'still down');

    // Back, it is live again.
    await c.restart(idx(dead));
    m = await scrapeUntil(port, `${dead} live again`, (m) => m('strata_controller_nodes', { state: 'dead' }) === 0);
    assert.equal(m('strata_controller_nodes', { state: 'live' }), 4);
    assert.equal(moves(m, 'repair', 'done'), 2);
    assert.equal(m('strata_controller_nodes_draining'), 0);
    assert.equal(m('strata_controller_rebalancing'), 0);

    // A node marked draining is counted until the mark is taken off (the node back runs no
    // replica: nothing moves). One the cluster does not have (a typo) is refused, not marked.
    await assert.rejects(c.client.drainNode('n9'), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /'n9' is not a node of cluster/.test(e.message));
    assert.deepEqual(await c.client.drainNode(dead), { node: dead, draining: true, replicas: 0 });
    await scrapeUntil(port, 'one node draining', (m) => m('strata_controller_nodes_draining') === 1);
    await c.client.drainNode(dead, { undo: true });
    await scrapeUntil(port, 'no node draining', (m) => m('strata_controller_nodes_draining') === 0);
    // The node back holds nothing: a rebalance moves replicas to it, counted as the controller's own moves, and ends.
    assert.equal((await c.client.rebalance()).rebalancing, true);
    m = await scrapeUntil(port, 'the rebalance done', (m) => m('strata_controller_rebalancing') === 0 && m('strata_replica_moves_running') === 0 && (moves(m, 'repair', 'done') ?? 0) > 2);
    assert.equal((await c.client.rebalance({ stop: true })).rebalancing, false);
  });
});

describe('with the wait before a repair set to 0, the controller moves no replica of a dead node, and moves those of a node an operator drains', function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 4, hosts: 1, clientTimeoutMs: 5000, node: { repairAfterMs: 0 } });
  });
  after(async () => {
    await c?.stop();
  });

  it('a node down past the live window keeps its replicas in the catalog', async () => {
    await c.client.createVolume({ name: 'np', pageCount: 16, shards: 1, stripePages: 16, replicas: 3 });
    const before = await replicaSets(c, 'np');
    const dead = before[0]!.find((n) => n !== 'n1')!;
    c.kill(idx(dead));
    // Dead to the controller after 5 s; a repair with no wait would start at the next check.
    const nc = await natsConnect({ servers: c.natsUrl });
    try {
      await waitFor(`the controller counts ${dead} dead`, async () => {
        const m = (await controllerMembers(nc, c.cluster)).find((x) => x.nodeId === dead);
        // With repairs off, no time until its replicas are replaced is given (strata status).
        assert.equal(m?.repairInMs, undefined);
        return m !== undefined && !m.live;
      }, 30_000);
    } finally {
      await nc.close();
    }
    await new Promise((r) => setTimeout(r, 3000));
    assert.deepEqual(await replicaSets(c, 'np'), before);
    assert.equal((await c.client.volumeInfo('np')).replicaSets!.some((r) => r.moving !== undefined), false);
    await c.restart(idx(dead));
  });

  it("strata drain moves a live node's replicas off it (repairs off), places nothing new on it, and --undo takes the mark off", async () => {
    const vol = c.client.volume('np');
    await writeOnceServed(vol, 2, 6, 'a write to np');
    const before = await replicaSets(c, 'np');
    const drained = before[0]!.find((n) => n !== 'n1')!;
    const first = await c.client.drainNode(drained);
    assert.deepEqual(first, { node: drained, draining: true, replicas: 1 });
    await waitFor(`${drained} holds no replica`, async () => (await c.client.drainNode(drained)).replicas === 0, 60_000);
    const after = await replicaSets(c, 'np');
    assert.equal(after[0]!.includes(drained), false, JSON.stringify(after));
    assert.equal(after[0]!.length, 3);
    for (const n of before[0]!) if (n !== drained) assert.ok(after[0]!.includes(n), `${n} kept: ${JSON.stringify(after)}`);
    assert.equal((await vol.readPages([2])).pages[0]![0], 6);
    // Nothing new on it: a volume of 3 replicas on 4 nodes takes the other three.
    await c.client.createVolume({ name: 'np2', pageCount: 16, shards: 2, stripePages: 8, replicas: 3 });
    for (const set of await replicaSets(c, 'np2')) assert.equal(set.includes(drained), false, JSON.stringify(set));
    // The controller's members say so (strata status shows it).
    const nc = await natsConnect({ servers: c.natsUrl });
    try {
      assert.deepEqual((await controllerMembers(nc, c.cluster, 2000)).filter((m) => m.draining === true).map((m) => m.nodeId), [drained]);
    } finally {
      await nc.close();
    }
    assert.deepEqual(await c.client.drainNode(drained, { undo: true }), { node: drained, draining: false, replicas: 0 });
    // Placed on again: a volume of 4 shards × 3 replicas on 4 nodes uses every node.
    await c.client.createVolume({ name: 'np3', pageCount: 16, shards: 4, stripePages: 4, replicas: 3 });
    assert.ok((await replicaSets(c, 'np3')).some((set) => set.includes(drained)));
  });
});

describe("a repair whose new node fails: tried again after a back-off, finished without the node once it is dead, then repaired in turn", function () {
  this.timeout(180_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1, clientTimeoutMs: 5000, node: { repairAfterMs: 1000 }, telemetry: { metricsPort: await freePort(), metricsHost: '127.0.0.1' } });
  });
  after(async () => {
    await c?.stop();
  });

  it('a node nx whose opens fail is asked again no sooner than the back-off; once nx is dead the shard is n1, n2, nx, and then n1, n2 and the dead node back', async () => {
    await c.client.createVolume({ name: 'fx', pageCount: 16, shards: 1, stripePages: 16, replicas: 3 });
    const vol = c.client.volume('fx');
    await vol.writePages([{ page: 3, data: page(7) }]);
    assert.deepEqual((await replicaSets(c, 'fx'))[0]!.sort(), ['n1', 'n2', 'n3']);
    /** Waits until the shard's set is `want` (sorted, comma-separated), with no move under way. */
    const waitSet = (want: string): Promise<void> =>
      waitFor(`the shard's set is ${want}`, async () => {
        const r = (await c.client.volumeInfo('fx')).replicaSets![0]!;
        return r.moving === undefined && [...r.members].sort().join(',') === want;
      }, 60_000);
    const nc = await natsConnect({ servers: c.natsUrl });
    // A node 'nx' the controller hears from (the only live node outside the shard once n3 is
    // down), whose opens fail.
    const opens: number[] = [];
    // The controller's warnings of a failed repair (its node writes its log to stderr).
    const warned: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]): boolean {
      if (typeof chunk === 'string' && chunk.includes("could not move a dead or draining node's replica")) warned.push(chunk);
      return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof process.stderr.write;
    const members = (): Promise<MemberView[]> => controllerMembers(nc, c.cluster, 2000);
    const nx = await fakeNode(nc, c.cluster, 'nx', (m) => {
      opens.push(Date.now());
      m.respond(encode(errorReply(new ProtocolError('device_failed', 'the disk of nx failed'))));
    });
    try {
      c.kill(2);
      await waitFor('the repair asked nx twice to open the new replica', () => opens.length >= 2, 60_000);
      // The second try waited for the back-off after the first failure.
      assert.ok(opens[1]! - opens[0]! >= REPAIR_BACKOFF_MS_MIN - 100, `tries ${opens[1]! - opens[0]!} ms apart`);
      assert.deepEqual((await c.client.volumeInfo('fx')).replicaSets![0]!.moving, { from: 'n3', to: 'nx' });
      // Each failed try counted under its error code; the shard waits for its back-off.
      const port = c.telemetry?.metricsPort ?? 0;
      await scrapeUntil(port, 'two failed repairs counted, the shard backing off', (m) => (moves(m, 'repair', 'unavailable') ?? 0) >= 2 && m('strata_replica_repairs_backing_off') === 1);
      // The back-off doubled on the second failure; the repair failing the same way was logged once.
      const { id } = await c.client.volumeInfo('fx');
      const backoff = (c.nodes[0] as unknown as { repairBackoff: Map<string, { waitMs: number }> }).repairBackoff.get(`${id}.0`);
      assert.equal(backoff?.waitMs, 2 * REPAIR_BACKOFF_MS_MIN);
      assert.equal(warned.length, 1, warned.join(''));
      // n3, dead and still holding its replica, is being replaced now (strata status).
      assert.deepEqual((await members()).filter((x) => x.nodeId === 'n3').map((x) => [x.live, x.repairInMs]), [[false, 0]]);

      // nx dies: the move is finished without it (n1 and n2 are a majority of both sets).
      nx.stop();
      await waitSet('n1,n2,nx');
      const before = opens.length;
      // Served meanwhile by n1 and n2.
      await writeOnceServed(vol, 4, 8, 'a write with nx in the set');

      // n3 comes back: nx, dead, is replaced by it (n3's old replica was destroyed, it is given the shard again).
      await c.restart(2);
      await waitSet('n1,n2,n3');
      assert.equal(opens.length, before, 'nx was not asked to open once dead');
      // Finished without nx, then nx replaced by n3: two repairs done, none waiting.
      const m = await scrapeUntil(port, 'the repairs done counted', (m) => moves(m, 'repair', 'done') === 2);
      // nx, dead and holding no replica now, has none to replace.
      assert.deepEqual((await members()).filter((x) => x.nodeId === 'nx').map((x) => [x.live, x.repairInMs]), [[false, undefined]]);
      assert.equal(m('strata_replica_repairs_backing_off'), 0);
      assert.equal(m('strata_shards_under_replicated'), 0);
      const r = await vol.readPages([3, 4]);
      assert.deepEqual(r.pages.map((x) => x[0]), [7, 8]);
      // n3 holds the shard again and serves as a member: with n2 down, n1 and n3 carry writes.
      c.kill(1);
      await writeOnceServed(vol, 5, 9, 'a write with n1 and n3');
      assert.deepEqual((await vol.readPages([3, 4, 5])).pages.map((x) => x[0]), [7, 8, 9]);
    } finally {
      nx.stop();
      process.stderr.write = write;
      await nc.close();
    }
  });
});

describe('a rebalance runs one move at a time', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1, clientTimeoutMs: 5000, node: { repairAfterMs: 1000 } });
  });
  after(async () => {
    await c?.stop();
  });

  it('to a node nx that takes a second to open a replica: the next move starts only once the one before has ended', async () => {
    // 4 shards × 3 replicas on the three nodes: 4 each, nx none.
    await c.client.createVolume({ name: 'rb', pageCount: 16, shards: 4, stripePages: 4, replicas: 3 });
    await withSlowNode(c, async (nx, nc) => {
      await waitFor('nx live to the controller', async () => (await controllerMembers(nc, c.cluster)).some((m) => m.nodeId === 'nx' && m.live), 10_000);
      const asked = await c.client.rebalance();
      assert.equal(asked.rebalancing, true);
      assert.deepEqual(asked.nodes.map((n) => [n.node, n.replicas]), [['n1', 4], ['n2', 4], ['n3', 4], ['nx', 0]]);
      await waitFor('nx asked to open two replicas', () => nx.opens >= 2, 30_000);
      assert.equal(nx.openingMax, 1, 'one open at a time');
    });
  });
});

describe('the repairs of a dead node run REPAIRS_IN_FLIGHT_MAX at once at most', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1, clientTimeoutMs: 5000, node: { repairAfterMs: 1000 } });
  });
  after(async () => {
    await c?.stop();
  });

  it(`n3 dead with ${REPAIRS_IN_FLIGHT_MAX + 1} shards to replace on nx, which takes a second to open a replica: ${REPAIRS_IN_FLIGHT_MAX} opens at once, then the next`, async () => {
    const shards = REPAIRS_IN_FLIGHT_MAX + 1;
    await c.client.createVolume({ name: 'rq', pageCount: 16, shards, stripePages: 1, replicas: 3 });
    await withSlowNode(c, async (nx) => {
      c.kill(2);
      await waitFor(`nx asked to open a replica of each of the ${shards} shards`, () => nx.opens >= shards, 30_000);
      assert.equal(nx.openingMax, REPAIRS_IN_FLIGHT_MAX);
    });
  });
});

describe('a replica its live node reports down is replaced', function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 4, hosts: 1, clientTimeoutMs: 5000, node: { repairAfterMs: 1000 } });
  });
  after(async () => {
    await c?.stop();
  });

  it("a node whose disk fails for good keeps heartbeating; its replica, left down, is moved to the fourth node and the pages read back", async () => {
    await c.client.createVolume({ name: 'fd', pageCount: 16, shards: 1, stripePages: 16, replicas: 3 });
    const vol = c.client.volume('fd');
    await writeOnceServed(vol, 1, 3, 'a write to fd');
    const [before] = await replicaSets(c, 'fd');
    const broken = before!.find((n) => n !== 'n1')!;
    const spare = ['n1', 'n2', 'n3', 'n4'].find((n) => !before!.includes(n))!;
    // Every fdatasync of its device fails from now on: each reopen of the replica fails again,
    // until it is left down. Writes go on on the other two.
    await c.failFsync(idx(broken), Infinity);
    let value = 4;
    // What the controller's members say of the node meanwhile (strata status shows it).
    const seen: MemberView[] = [];
    const nc = await natsConnect({ servers: c.natsUrl });
    try {
      await waitFor(`the replica on ${broken} replaced by one on ${spare}`, async () => {
        await writeOnceServed(vol, 2, value++ % 256, 'a write to fd while a replica is broken');
        seen.push((await controllerMembers(nc, c.cluster, 2000)).find((m) => m.nodeId === broken)!);
        const [set] = await replicaSets(c, 'fd');
        return set!.length === 3 && !set!.includes(broken);
      }, 90_000);
      // The node stayed live all along: its replica, not the node, was replaced.
      assert.ok(seen.every((m) => m.live), JSON.stringify(seen));
      assert.ok(seen.some((m) => m.replicasDown === 1 && m.replicasDownRepairInMs !== undefined), `the replica reported down: ${JSON.stringify(seen)}`);
      // Once replaced, the node holds no replica to report down.
      await waitFor(`${broken} reports no replica down`, async () => (await controllerMembers(nc, c.cluster, 2000)).find((m) => m.nodeId === broken)?.replicasDown === undefined, 30_000);
    } finally {
      await nc.close();
    }
    const [after] = await replicaSets(c, 'fd');
    assert.deepEqual([...after!].sort(), [...before!.filter((n) => n !== broken), spare].sort());
    const read = await vol.readPages([1, 2]);
    assert.equal(read.pages[0]![0], 3);
    assert.equal(read.pages[1]![0], (value - 1) % 256);
    // The new set serves without the broken node: a majority of it (the spare among them) acknowledges.
    await writeOnceServed(vol, 3, 9, 'a write to fd after the repair');
    assert.equal((await vol.readPages([3])).pages[0]![0], 9);
  });
});
