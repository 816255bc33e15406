/**
 * A replicated controller (docs/replication.md, "A replicated controller"): the catalog is the
 * catalog shard, replicated on the controller nodes; the node whose replica leads it runs the
 * controller. Its node killed, another runs it with the same catalog; a controller of a term
 * that has passed cannot write the catalog; a majority of the controller nodes down leaves the
 * pages served and the catalog unavailable until one comes back; a controller node whose data
 * directory was lost rejoins without losing the catalog.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { StrataNode } from '../../cluster/node';
import { Controller } from '../../actors/controller';
import { CATALOG_PAGE_SIZE, CatalogShard } from '../../cluster/catalog-shard';
import { connect as connectClient, pagesPerRequest } from '../../cluster/client';
import { ProtocolError, throwIfError } from '../../messages/errors';
import { connect as natsConnect, type NatsConnection, type Subscription } from 'nats';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { decode, encode } from '../../messages/codec';
import { controllerSubject } from '../../messages/control';
import { eventually, waitFor } from '../support/wait';

const page = (b: number): Uint8Array => new Uint8Array(4096).fill(b);

/**
 * The index of the node that runs the controller, and its term; undefined while none does. A
 * deposed controller keeps its seat until its next check of the catalog shard (every 200 ms, later
 * on a loaded machine), so for a moment two nodes may say they run it, each in its own term: the
 * one of the later term is the controller (the other's reads and writes of the catalog are refused).
 * Two nodes in the same term would be two controllers.
 */
async function controllerOf(c: InProcessCluster): Promise<{ index: number; term: number } | undefined> {
  const found: Array<{ index: number; term: number }> = [];
  await Promise.all(
    c.nodes.map(async (n, index) => {
      const st = (await n?.status()) as { node: { controller: boolean; controllerTerm?: number } } | undefined;
      if (st?.node.controller === true) found.push({ index, term: st.node.controllerTerm! });
    }),
  );
  assert.equal(new Set(found.map((f) => f.term)).size, found.length, `one node runs the controller in a term at most, found ${JSON.stringify(found)}`);
  return found.sort((a, b) => b.term - a.term)[0];
}

/** The node that runs the controller once one does, other than node `except` if given. */
function controllerOnceOne(c: InProcessCluster, except?: number): Promise<{ index: number; term: number }> {
  return eventually('another controller', async () => {
    const now = await controllerOf(c);
    if (now === undefined || now.index === except) throw new ProtocolError('unavailable', 'not yet');
    return now;
  });
}

/** Starts a node with `opts` in a new data directory, which must refuse to start `bad_request`, saying `why`. */
async function refusedToStart(opts: Omit<Parameters<typeof StrataNode.start>[0], 'dataDir'>, why: RegExp): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-refused-'));
  try {
    await assert.rejects(StrataNode.start({ ...opts, dataDir: dir }), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && why.test(e.message));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function names(c: InProcessCluster): Promise<string[]> {
  return (await c.client.listVolumes()).map((v) => v.name).sort();
}


describe('a replicated controller', function () {
  this.timeout(180_000);
  let c: InProcessCluster;

  before(async () => {
    // n1..n3 are the controller nodes; n4 is not.
    c = await startCluster({ nodes: 4, controllers: 3, hosts: 1, clientTimeoutMs: 5000 });
  });
  after(async () => {
    await c?.stop();
  });

  it('one controller node runs it; killed, another runs it with the same catalog, and a controller of a past term cannot write the catalog', async () => {
    await c.client.createVolume({ name: 'a', pageCount: 64, shards: 2, stripePages: 4, replicas: 3 });
    await c.client.volume('a').writePages([{ page: 0, data: page(1) }, { page: 4, data: page(2) }]);
    const first = await controllerOnceOne(c);
    assert.ok(first.index < 3, 'a controller node runs it');
    c.kill(first.index);
    const second = await controllerOnceOne(c);
    assert.notEqual(second.index, first.index);
    assert.ok(second.index < 3 && second.term > first.term);
    assert.deepEqual(await eventually('the catalog listed', () => names(c)), ['a']);
    // It places volumes once it has heard from the nodes, and the old volume's pages read.
    await eventually('a create', () => c.client.createVolume({ name: 'b', pageCount: 64, shards: 1, replicas: 3 }));
    const r = await eventually('a read', () => c.client.volume('a').readPages([0, 4]));
    assert.deepEqual(r.pages.map((p) => p[0]), [1, 2]);
    // The past term's writes are refused by the catalog shard's leader; so are its reads.
    const stale = new CatalogShard(c.client, { term: first.term, timeoutMs: 5000 });
    await assert.rejects(stale.write({ version: 1, epoch: 99, nextId: 1, volumes: [], tombstones: [] }), (e: unknown) => e instanceof ProtocolError && (e.code === 'stale_term' || e.code === 'not_leader'));
    await assert.rejects(stale.load(), (e: unknown) => e instanceof ProtocolError && (e.code === 'stale_term' || e.code === 'not_leader'));
    const current = new CatalogShard(c.client, { term: second.term, timeoutMs: 5000 });
    const held = await current.load();
    assert.deepEqual(held!.volumes.map((v) => v.name).sort(), ['a', 'b']);
    // The killed node comes back as a follower: still one controller, the same catalog.
    await c.restart(first.index);
    await c.waitForMembers(4);
    assert.equal((await controllerOf(c))!.index, second.index);
    assert.deepEqual(await names(c), ['a', 'b']);
  });

  it('strata shard handover of the catalog shard moves the controller to the node named, at once; a node that is not a controller node is refused', async () => {
    await eventually('a create', () => c.client.createVolume({ name: 'seat', pageCount: 64, shards: 1, replicas: 3 }));
    const first = await controllerOnceOne(c);
    const to = [0, 1, 2].find((i) => i !== first.index)!;
    const catalogName = (await c.client.status()).catalogShard as { name: string };
    await assert.rejects(c.client.handOver(catalogName.name, 0, { to: 'n4' }), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /'n4' holds no replica/.test(e.message));
    const r = await eventually('the handover', () => c.client.handOver(catalogName.name, 0, { to: `n${to + 1}` }));
    assert.equal(r.to, `n${to + 1}`);
    assert.equal(r.volumeId, 'v0-catalog');
    const next = await controllerOnceOne(c, first.index);
    assert.equal(next.index, to, 'the controller runs where the catalog shard now leads');
    assert.ok(next.term > first.term);
    // The new controller has the catalog, and changes it.
    assert.ok((await eventually('the catalog listed', () => names(c))).includes('seat'));
    await eventually('a delete', () => c.client.deleteVolume('seat'));
  });

  it('a node whose replica comes to lead the catalog shard does not take the controller\'s seat while a controller node that keeps the catalog alone answers in the cluster; once that one is gone, it does', async () => {
    const first = await controllerOnceOne(c);
    const to = [0, 1, 2].find((i) => i !== first.index)!;
    // Each controller node's takeovers that fail, and why.
    const refused: Array<{ index: number; message: string }> = [];
    const restores = [0, 1, 2].map((index) => {
      const n = c.nodes[index] as unknown as { takeSeat: (term: number) => Promise<void> };
      const saved = n.takeSeat;
      n.takeSeat = async (term) => {
        try {
          await saved.call(n, term);
        } catch (e) {
          refused.push({ index, message: (e as Error).message });
          throw e;
        }
      };
      return () => (n.takeSeat = saved);
    });
    // A node started with --controller alone (while no controller ran, say) answers the controller's claim.
    const nc = await natsConnect({ servers: c.natsUrl });
    const alone = { instance: 'alone-1', nodeId: 'n9', hostname: 'elsewhere', pid: 4242, sinceMs: 0 };
    const sub = nc.subscribe(controllerSubject(c.cluster, 'claim'), { callback: (_e, msg) => msg.respond(encode(alone)) });
    try {
      await nc.flush();
      const catalogName = (await c.client.status()).catalogShard as { name: string };
      await eventually('the handover', () => c.client.handOver(catalogName.name, 0, { to: `n${to + 1}` }));
      await waitFor(`n${to + 1} refuses to take the seat`, () => refused.some((r) => r.index === to), 20_000);
      assert.equal(
        refused.find((r) => r.index === to)!.message,
        `a controller node that keeps the catalog alone runs in cluster '${c.cluster}' (node 'n9' (process 4242 on host 'elsewhere', started at 1970-01-01T00:00:00.000Z)): stop it; this node runs the controller once it is gone`,
      );
      assert.equal(await controllerOf(c), undefined, 'no node runs the controller beside it');
    } finally {
      sub.unsubscribe();
      await nc.close();
      for (const restore of restores) restore();
    }
    const next = await controllerOnceOne(c);
    assert.equal(next.index, to, 'the node whose replica leads the catalog shard runs the controller');
  });

  it('a controller that cannot confirm that its replica still leads the catalog shard (its host stalled) answers no read from memory; the next controller does', async () => {
    await eventually('a create', () => c.client.createVolume({ name: 'confirm', pageCount: 64, shards: 1, replicas: 3 }));
    const first = await controllerOnceOne(c);
    const nc = await natsConnect({ servers: c.natsUrl });
    try {
      // Its replica can neither renew its lease nor answer: a deposed leader that has not noticed.
      const stalled = c.nodes[first.index]!.hostPool.stallHost(0, 2500);
      // Sent at once: the node still serves the controller's subjects (it notices within a second).
      const reply = decode((await nc.request(controllerSubject(c.cluster, 'volume.list'), encode({}), { timeout: 5000 })).data) as { error?: { code: string; message: string }; volumes?: unknown[] };
      assert.equal(reply.volumes, undefined, 'no catalog from memory');
      assert.equal(reply.error?.code, 'unavailable', JSON.stringify(reply));
      assert.match(reply.error.message, /could not confirm that it still runs the controller/);
      assert.equal((reply.error as { details?: { notController?: boolean } }).details?.notController, true, 'it says it did nothing');
      // Strata's client sends such a request again, and the next controller answers it.
      const client = await connectClient({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 20_000 });
      try {
        assert.ok((await client.listVolumes()).some((v) => v.name === 'confirm'));
      } finally {
        await client.close();
      }
      await stalled;
      await controllerOnceOne(c);
      assert.ok((await eventually('the catalog listed', () => names(c))).includes('confirm'));
      await eventually('a delete', () => c.client.deleteVolume('confirm'));
    } finally {
      await nc.close();
    }
  });

  it('a majority of the controller nodes down: pages still served, the catalog unavailable; one back, the controller runs again', async () => {
    // A volume of one replica, and two controller nodes killed that do not hold it.
    await eventually('a create', () => c.client.createVolume({ name: 'solo', pageCount: 64, shards: 1, replicas: 1 }));
    await c.client.volume('solo').write(3, page(9));
    const info = await c.client.volume('solo').info({ refresh: true });
    const holder = info.replicaSets![0]!.members[0]!;
    const killed = [0, 1, 2].filter((i) => `n${i + 1}` !== holder).slice(0, 2);
    for (const i of killed) c.kill(i);
    assert.deepEqual((await eventually('a read without the controller', () => c.client.volume('solo').read([3])))[0]![0], 9);
    // Once the survivor's replica has noticed it leads no majority (an election timeout), no
    // node runs the controller, and the catalog's verbs fail.
    await waitFor('no controller', async () => (await controllerOf(c)) === undefined, 10_000);
    await assert.rejects(c.client.listVolumes(), (e: unknown) => e instanceof ProtocolError && (e.code === 'unavailable' || e.code === 'timeout'));
    await c.restart(killed[0]!);
    assert.deepEqual(await eventually('the catalog listed again', () => names(c)), ['a', 'b', 'solo']);
    await c.restart(killed[1]!);
    await c.waitForMembers(4);
  });

  it('a controller node whose data directory was lost rejoins; the catalog is kept when the controller then moves', async () => {
    const at = await controllerOnceOne(c);
    const wiped = [0, 1, 2].find((i) => i !== at.index)!;
    await c.stopNode(wiped);
    fs.rmSync(c.dataDirs[wiped]!, { recursive: true, force: true });
    await c.restart(wiped);
    await c.waitForMembers(4);
    // The lost replica is given the shard back by its leader before it votes; then the
    // controller's node is killed, and the wiped one and the third elect a leader between them.
    await eventually('a change after the rejoin', () => c.client.createVolume({ name: 'c', pageCount: 64, shards: 1, replicas: 3 }));
    await new Promise((r) => setTimeout(r, 1000));
    c.kill(at.index);
    assert.deepEqual(await eventually('the catalog listed', () => names(c), 60_000), ['a', 'b', 'c', 'solo']);
    await c.restart(at.index);
    await c.waitForMembers(4);
  });

  it("the controller's catalog write fails (its disk): that change (its outcome unknown there) is sent again with its request id, those queued behind it too, and the next controller answers each done; the catalog takes changes again", async () => {
    const doomed = ['gone-0', 'gone-1', 'gone-2', 'gone-3'];
    for (const name of doomed) await eventually('a create', () => c.client.createVolume({ name, pageCount: 64, shards: 1, replicas: 3 }));
    const at = await controllerOnceOne(c);
    const client = await connectClient({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 30_000 });
    try {
      // Every fdatasync of the device holding its replica of the catalog shard fails from now on.
      await c.failFsync(at.index, Infinity, 0);
      // Deletes: a change of the catalog alone (a create could be placed on the failing disk).
      const outcomes = await Promise.allSettled(doomed.map((name) => client.deleteVolume(name)));
      // The change whose write failed was answered there as of unknown outcome; the client sent
      // it again (its request id), and the next controller answered it as the catalog holds it.
      // Those queued behind it were not run there (the node gave its seat up first): sent again,
      // the next controller made them.
      const failed = outcomes.flatMap((o) => (o.status === 'rejected' ? [String(o.reason)] : []));
      assert.deepEqual(failed, [], 'every delete was answered done');
    } finally {
      await client.close();
    }
    const next = await controllerOnceOne(c, at.index);
    assert.ok(next.term > at.term);
    // And the catalog takes changes again.
    await eventually('a create', () => c.client.createVolume({ name: 'd', pageCount: 64, shards: 1, replicas: 3 }));
    const listed = await names(c);
    assert.ok(listed.includes('d') && doomed.every((n) => !listed.includes(n)), listed.join(', '));
    c.kill(at.index);
    await c.restart(at.index);
    await c.waitForMembers(4);
  });

  it('a node that would keep the catalog alone does not start in the cluster', async () => {
    await refusedToStart({ nodeId: 'n9', cluster: c.cluster, natsUrl: c.natsUrl, hosts: 1, controller: true }, /has a controller already/);
  });
});

describe('a replicated controller whose catalog takes several shard writes', function () {
  this.timeout(180_000);
  let c: InProcessCluster;
  before(async () => {
    // A 16 KiB max_payload: one 8 KiB page a request, so a catalog of a few volumes is several
    // writes of one region before its header's.
    c = await startCluster({ nodes: 3, controllers: 3, hosts: 1, maxPayloadBytes: 16 * 1024, clientTimeoutMs: 5000 });
  });
  after(async () => {
    await c?.stop();
  });

  it('keeps every change through takeovers, by a kill and by a clean stop (which hands the catalog shard over)', async () => {
    const want: string[] = [];
    const createSome = async (from: number, count: number): Promise<void> => {
      for (let i = from; i < from + count; i++) {
        const name = `volume-with-a-long-name-to-fill-the-catalog-${String(i).padStart(3, '0')}`;
        await eventually('a create', async () => {
          try {
            await c.client.createVolume({ name, pageCount: 64, shards: 4, stripePages: 16, replicas: 1 });
          } catch (e) {
            if (!(e instanceof ProtocolError && e.code === 'already_exists')) throw e;
          }
        });
        want.push(name);
      }
    };
    await createSome(0, 30);
    const first = await controllerOnceOne(c);
    const held = await new CatalogShard(c.client, { term: first.term, timeoutMs: 5000 }).load();
    assert.equal(held!.volumes.length, 30);
    // Two pages of a region or more, each its own write, then the header's.
    assert.ok(encode(held).length > CATALOG_PAGE_SIZE, `a catalog of ${encode(held).length} bytes`);
    assert.equal(pagesPerRequest(CATALOG_PAGE_SIZE, c.client.maxPayloadBytes), 1);
    c.kill(first.index);
    assert.deepEqual(await eventually('the catalog listed', () => names(c)), [...want].sort());
    await createSome(30, 10);
    await c.restart(first.index);
    await c.waitForMembers(3);
    // A clean stop hands the shard's leadership over at once: the controller moves with it.
    const second = await controllerOnceOne(c);
    const stopped = Date.now();
    await c.stopNode(second.index);
    await controllerOnceOne(c);
    const tookMs = Date.now() - stopped;
    assert.deepEqual(await eventually('the catalog listed', () => names(c)), [...want].sort());
    await createSome(40, 5);
    assert.deepEqual(await names(c), [...want].sort());
    await c.restart(second.index);
    await c.waitForMembers(3);
    console.log(`      (the controller ran on another node ${tookMs} ms after the clean stop began)`);
  });

  /** Volumes to delete, created if they are not there yet (a create retried may find its first try done). */
  async function volumesToDelete(prefix: string, count: number): Promise<string[]> {
    const doomed = Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
    for (const name of doomed) {
      await eventually('a create', () => c.client.createVolume({ name, pageCount: 64, shards: 1, replicas: 1 }).then(() => undefined, (e: unknown) => {
        if (!(e instanceof ProtocolError && e.code === 'already_exists')) throw e;
      }));
    }
    return doomed;
  }

  /**
   * Deletes each of `doomed` and creates each of `fresh` at once, each through a client of its own
   * (queued at the controller, each a few catalog writes here), while `move` moves the controller;
   * every change must be answered done (a delete done twice would be answered not_found the
   * second time, a create already_exists), none of `doomed` be left and every one of `fresh` be
   * there. A change refused, of unknown outcome on the catalog ("may or may not be kept"), or never
   * answered (an answer lost as the stopping node's connection closed, or with a killed node)
   * fails it. Each change goes with a request id (the client's), so it is sent again, by the
   * client or by an API router, when its answer does not come.
   */
  async function changedWhile(doomed: string[], fresh: string[], move: () => Promise<unknown>): Promise<void> {
    // Each of its three tries waits a third of this: a try lost with a killed node is sent again
    // once its third has passed, and the next controller then makes a dozen queued changes, one
    // at a time, each several catalog writes (more than 5 s on a loaded 2-core machine).
    const client = await connectClient({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 30_000 });
    try {
      const changes = Promise.allSettled([...doomed.map((name) => client.deleteVolume(name)), ...fresh.map((name) => client.createVolume({ name, pageCount: 64, shards: 1, replicas: 1 }))]);
      await new Promise((r) => setTimeout(r, 20));
      await move();
      const outcomes = await changes;
      const names = [...doomed, ...fresh];
      assert.deepEqual(outcomes.flatMap((o, i) => (o.status === 'rejected' ? [`${names[i]}: ${String(o.reason)}`] : [])), [], 'every change was answered done');
      const listed = (await client.listVolumes()).map((v) => v.name);
      assert.deepEqual(doomed.filter((n) => listed.includes(n)), [], 'none deleted is left');
      assert.deepEqual(fresh.filter((n) => !listed.includes(n)), [], 'every one created is there');
    } finally {
      await client.close();
    }
  }

  it('changes sent while the catalog shard is handed over are all done and answered, each once: the controller gives its seat up first, finishes the change it runs, and leaves those queued to the next one', async () => {
    const doomed = await volumesToDelete('handed', 8);
    const first = await controllerOnceOne(c);
    const to = `n${((first.index + 1) % 3) + 1}`;
    const catalogName = ((await c.client.status()).catalogShard as { name: string }).name;
    await changedWhile(doomed, ['handed-new-0', 'handed-new-1'], () => eventually('the handover', () => c.client.handOver(catalogName, 0, { to })));
    assert.equal(`n${(await controllerOnceOne(c, first.index)).index + 1}`, to);
  });

  it("changes sent while the controller's node is killed are all done and answered, each once: those it or its API router had taken are sent again, to the next controller, which answers each as the catalog holds it (its request id)", async () => {
    const doomed = await volumesToDelete('killed', 8);
    const first = await controllerOnceOne(c);
    await changedWhile(doomed, ['killed-new-0', 'killed-new-1', 'killed-new-2', 'killed-new-3'], async () => c.kill(first.index));
    await c.restart(first.index);
    await c.waitForMembers(3);
  });

  it('a change that the seat\'s subscriptions deliver after the seat was given up is refused notController, not made on that seat\'s controller; the next controller makes it', async () => {
    const [name] = await volumesToDelete('late', 1);
    const first = await controllerOnceOne(c);
    const node = c.nodes[first.index] as unknown as { seat?: { subs: Subscription[] }; leaveSeat(why: string, planned?: boolean): void };
    const subject = controllerSubject(c.cluster, 'volume.delete');
    const sub = node.seat!.subs.find((s) => s.getSubject() === subject)!;
    node.leaveSeat('a test gives the seat up', true);
    // As a message the server routed to the subscription before its drain reached the server.
    const reply = await new Promise<unknown>((resolve) => {
      const late = { subject, reply: 'late-reply', data: encode({ name }), headers: undefined, respond: (bytes: Uint8Array) => (resolve(decode(bytes)), true) };
      (sub as unknown as { callback(err: null, msg: unknown): void }).callback(null, late);
    });
    assert.throws(() => throwIfError(reply), (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable' && e.details?.notController === true, JSON.stringify(reply));
    await eventually('the delete', () => c.client.deleteVolume(name!));
    assert.ok(!(await names(c)).includes(name!));
  });

  it("changes sent while the controller's node stops cleanly are all done and answered, each once", async () => {
    const doomed = await volumesToDelete('stopping', 8);
    const first = await controllerOnceOne(c);
    await changedWhile(doomed, ['stopping-new-0', 'stopping-new-1'], () => c.stopNode(first.index));
    await c.restart(first.index);
    await c.waitForMembers(3);
  });
});

describe('a controller that just took its seat, before it places a volume', function () {
  it('waits past its first second for as many nodes as the volume needs to be heard from (their heartbeats may have waited for the controller that died), then places', async () => {
    const c = new Controller({ replicated: { state: undefined, write: async () => undefined } });
    c.heartbeat('n1', 1, Date.now());
    // Seated 1.1 s ago: the first second, in which it waits for every node placed on, is over.
    const seated = { controllerSinceMs: (): number => Date.now() - 1100, stopped: false };
    const heardFromNodes = (StrataNode.prototype as unknown as { heardFromNodes(c: Controller, want: number, deadlineMs: number): Promise<void> }).heardFromNodes;
    const order: string[] = [];
    const waited = heardFromNodes.call(seated, c, 2, Date.now() + 30_000).then(() => order.push(`placed with ${c.liveNodes(Date.now()).length} live`));
    await new Promise((r) => setTimeout(r, 300));
    order.push('n2 heard from');
    c.heartbeat('n2', 1, Date.now());
    await waited;
    assert.deepEqual(order, ['n2 heard from', 'placed with 2 live']);
  });
});

describe('a replicated controller whose node gave up its seat (Controller.retire)', function () {
  const spec = { pageCount: 64, pageSize: 4096 as const, shards: 1, stripePages: 8, replicas: 1 as const };

  it('takes no change, writes none it had not written, and is waited for until the write under way ends', async () => {
    const written: number[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const c = new Controller({
      replicated: {
        state: undefined,
        write: async (next) => {
          if (written.length === 0) await gate; // the first write is under way when the seat is given up
          written.push(next.epoch);
        },
      },
    });
    c.heartbeat('n1', 1, Date.now());
    c.create({ name: 'a', ...spec }, Date.now());
    await new Promise((r) => setImmediate(r));
    c.create({ name: 'b', ...spec }, Date.now());
    const first = c.settled().then(() => 'settled', (e: ProtocolError) => e.code);
    let ended = false;
    const retired = c.retire('gave up the seat').then(() => (ended = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(ended, false, 'the write under way has not ended');
    assert.throws(() => c.create({ name: 'c', ...spec }, Date.now()), (e: ProtocolError) => e.code === 'unavailable' && e.details?.['notController'] === true && /no longer runs \(gave up the seat\)/.test(e.message));
    release();
    await retired;
    assert.deepEqual(written, [1], "the change under way was written; the one queued after it was not");
    assert.equal(await first, 'timeout', 'outcome unknown to whoever waits for it');
  });

  it('is retired by its node giving up the seat', () => {
    const c = new Controller({ replicated: { state: undefined, write: async () => undefined } });
    c.heartbeat('n1', 1, Date.now());
    const node = { seat: { term: 3, subs: [], sinceMs: 0 }, controller: c, nodeId: 'n1', repairTimer: undefined, log: { warn: () => undefined, info: () => undefined }, retiredCatalogWrites: Promise.resolve() };
    (StrataNode.prototype as unknown as { leaveSeat(why: string): void }).leaveSeat.call(node, 'its replica of the catalog shard no longer leads it');
    assert.throws(() => c.create({ name: 'a', ...spec }, Date.now()), (e: ProtocolError) => e.code === 'unavailable' && /gave up the seat of term 3/.test(e.message));
    assert.notEqual(node.retiredCatalogWrites, undefined);
  });
});

describe('a replicated controller beside a controller node that keeps the catalog alone', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 1, hosts: 1 });
  });
  after(async () => {
    await c?.stop();
  });

  it('a node with controllers does not start', async () => {
    await refusedToStart({ nodeId: 'n2', cluster: c.cluster, natsUrl: c.natsUrl, hosts: 1, controller: true, controllers: ['n2', 'n3', 'n4'] }, /keeps the catalog alone/);
  });
});

describe('a new cluster started with --new-cluster', function () {
  this.timeout(120_000);
  let server: NatsServerHandle | undefined;
  let dir: string;
  const nodes: StrataNode[] = [];
  before(async () => {
    server = await startNatsServer({ jetstream: false });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-new-'));
  });
  after(async () => {
    for (const n of nodes) await n.stop().catch(() => undefined);
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('two of its three controller nodes run the controller without the third; a majority of the cluster is enough', async () => {
    const start = (id: string): Promise<StrataNode> =>
      StrataNode.start({ nodeId: id, cluster: 'nc', natsUrl: server!.url, dataDir: path.join(dir, id), hosts: 1, controller: true, controllers: ['n1', 'n2', 'n3'], newCluster: true });
    nodes.push(await start('n1'), await start('n2'));
    const client = await connectClient({ servers: server!.url, cluster: 'nc', timeoutMs: 5000 });
    try {
      // n3 never starts: the catalog shard elects on n1 and n2, and the controller takes changes.
      await eventually('a create', () => client.createVolume({ name: 'first', pageCount: 64, shards: 1, replicas: 1 }));
      await client.volume('first').write(1, page(3));
      assert.deepEqual((await client.listVolumes()).map((v) => v.name), ['first']);
      assert.equal((await client.volume('first').readPages([1])).pages[0]![0], 3);
    } finally {
      await client.close();
    }
  });
});

describe('a cluster that had one controller node, started again with a replicated controller', function () {
  this.timeout(120_000);
  let dir: string;
  let c: InProcessCluster | undefined;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-import-'));
  });
  after(async () => {
    await c?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the catalog n1 kept alone is written to the catalog shard and set aside; its volumes read on', async () => {
    c = await startCluster({ nodes: 3, hosts: 1, dataDir: dir, cluster: 'imp', clientTimeoutMs: 5000 });
    const before = await c.client.createVolume({ name: 'old', pageCount: 64, shards: 2, stripePages: 4, replicas: 3 });
    await c.client.volume('old').writePages([{ page: 0, data: page(5) }, { page: 4, data: page(6) }]);
    await c.stop();
    c = undefined;
    assert.ok(fs.existsSync(path.join(dir, 'node1', 'controller')));
    c = await startCluster({ nodes: 3, hosts: 1, dataDir: dir, cluster: 'imp', controllers: 3, clientTimeoutMs: 5000 });
    const listed = await eventually('the catalog listed', () => c!.client.listVolumes());
    assert.deepEqual(listed.map((v) => [v.name, v.id]), [['old', before.id]]);
    const r = await eventually('a read', () => c!.client.volume('old').readPages([0, 4]));
    assert.deepEqual(r.pages.map((p) => p[0]), [5, 6]);
    // Set aside once in the shard: a later catalog shard emptied would never take it again.
    assert.equal(fs.existsSync(path.join(dir, 'node1', 'controller')), false);
    assert.ok(fs.existsSync(path.join(dir, 'node1', 'controller.imported')));
    // New volumes take ids the old catalog never issued.
    const next = await eventually('a create', () => c!.client.createVolume({ name: 'new', pageCount: 64, shards: 1, replicas: 3 }));
    assert.notEqual(next.id, before.id);
    assert.equal(next.id.split('-')[1], before.id.split('-')[1]);
  });
});

describe('a node of a cluster with a replicated controller, and a deposed controller', function () {
  this.timeout(60_000);
  let server: NatsServerHandle | undefined;
  let nc: NatsConnection | undefined;
  let node: StrataNode | undefined;
  let dir: string;
  after(async () => {
    await node?.stop();
    await nc?.close();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('does not act on assignments of an older epoch of the catalog it reconciled with; a newer one it does', async () => {
    server = await startNatsServer({ jetstream: false });
    nc = await natsConnect({ servers: server.url });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-deposed-'));
    // The controller here is the test: it answers heartbeats and assignments with `epoch`.
    let epoch = 5;
    let shards: unknown[] = [
      { volumeId: 'v1-t', volumeName: 'x', shard: 0, shards: 1, pageCount: 16, pageSize: 4096, stripePages: 16, hostId: 0, members: ['n2'] },
    ];
    nc.subscribe('strata.dep.controller.heartbeat', { callback: (_e, m) => m.respond(encode({ epoch, catalog: 't' })) });
    nc.subscribe('strata.dep.controller.assignments', {
      callback: (_e, m) => m.respond(encode({ epoch, tombstones: [], shards, catalog: 't', issuedBelow: 10 })),
    });
    await nc.flush();
    // n2 is not a controller node: it opens no replica of the catalog shard, and follows the test.
    node = await StrataNode.start({ nodeId: 'n2', cluster: 'dep', natsUrl: server.url, dataDir: dir, hosts: 1, controller: false, controllers: ['c1', 'c2', 'c3'], heartbeatMs: 100 });
    const replicaDir = path.join(dir, 'dev0', 'shards', 'v1-t.0');
    await waitFor('the replica opened', () => fs.existsSync(replicaDir), 10_000);
    type Peek = { reconciledEpoch: number };
    await waitFor('reconciled with epoch 5', () => (node as unknown as Peek).reconciledEpoch === 5, 10_000);
    // A controller deposed a moment ago answers an older epoch, which no longer places the volume
    // here: the replica of a volume the catalog issued and does not place would be destroyed.
    epoch = 3;
    shards = [];
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(fs.existsSync(replicaDir), 'the replica is kept');
    assert.equal((node as unknown as Peek).reconciledEpoch, 5);
    // A newer epoch that no longer places it: destroyed.
    epoch = 6;
    await waitFor('the replica destroyed', () => !fs.existsSync(replicaDir), 10_000);
  });

  it('beats at once when a controller says it took over (controller.seated), whatever its period', async () => {
    const beats: string[] = [];
    nc!.subscribe('strata.dep2.controller.heartbeat', { callback: (_e, m) => (beats.push(String((decode(m.data) as { nodeId: string }).nodeId)), m.respond(encode({ epoch: 0 }))) });
    nc!.subscribe('strata.dep2.controller.assignments', { callback: (_e, m) => m.respond(encode({ epoch: 0, tombstones: [], shards: [] })) });
    await nc!.flush();
    const dir2 = path.join(dir, 'slow');
    const slow = await StrataNode.start({ nodeId: 'n3', cluster: 'dep2', natsUrl: server!.url, dataDir: dir2, hosts: 1, controller: false, controllers: ['c1', 'c2', 'c3'], heartbeatMs: 600_000 });
    try {
      // Its start beats once; the next would be ten minutes later.
      await waitFor('the first heartbeat', () => beats.length === 1, 5000);
      nc!.publish('strata.dep2.controller.seated', encode({ node: 'c2', term: 4 }));
      await waitFor('a heartbeat on the new controller\'s word', () => beats.length === 2, 5000);
      assert.deepEqual(beats, ['n3', 'n3']);
    } finally {
      await slow.stop();
    }
  });

  it('sends a heartbeat awaiting its answer again when a controller takes its seat meanwhile: the one before may have died with it, and the next one places nothing until it hears from the nodes', async () => {
    // The test is the controller: it answers every heartbeat but the second, which is lost with
    // the controller it reached. The node's heartbeat waits 10 s for an answer (its request
    // timeout), and its period is ten minutes.
    const beats: string[] = [];
    nc!.subscribe('strata.dep3.controller.heartbeat', {
      callback: (_e, m) => {
        beats.push(String((decode(m.data) as { nodeId: string }).nodeId));
        if (beats.length !== 2) m.respond(encode({ epoch: 0 }));
      },
    });
    nc!.subscribe('strata.dep3.controller.assignments', { callback: (_e, m) => m.respond(encode({ epoch: 0, tombstones: [], shards: [] })) });
    await nc!.flush();
    const dir3 = path.join(dir, 'lost');
    const n4 = await StrataNode.start({ nodeId: 'n4', cluster: 'dep3', natsUrl: server!.url, dataDir: dir3, hosts: 1, controller: false, controllers: ['c1', 'c2', 'c3'], heartbeatMs: 600_000 });
    try {
      await waitFor('the first heartbeat', () => beats.length === 1, 5000);
      nc!.publish('strata.dep3.controller.seated', encode({ node: 'c2', term: 4 }));
      await waitFor('the heartbeat the controller loses', () => beats.length === 2, 5000);
      // The next controller takes its seat while that heartbeat waits for its answer.
      nc!.publish('strata.dep3.controller.seated', encode({ node: 'c3', term: 5 }));
      await waitFor('the heartbeat sent again to the next controller', () => beats.length === 3, 5000);
      assert.deepEqual(beats, ['n4', 'n4', 'n4']);
    } finally {
      await n4.stop();
    }
  });
});
