/**
 * The appends a host's replica hears: those each node of its shard's set sends, as leader, to
 * all its followers (`followers.<volumeId>.<shard>.<node>`). A move of a replica changes the set
 * while the shard runs, so the host follows the set of both the shard's spec (with the set it
 * moves from, for a replica a move adds) and the replica's configuration.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, createInbox, type NatsConnection } from 'nats';
import { ActorHost } from '../../runtime/actor-host';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { encode, decode } from '../../messages/codec';
import { followersSubject, replicaSubject } from '../../messages/raft';
import { heartbeatsSubject, type HeartbeatBatchReply } from '../../runtime/heartbeat-batcher';
import { waitFor } from '../support/wait';

const CLUSTER = 'peers';
const spec = (members: string[], priorMembers?: string[]) => ({
  volumeId: 'v1', volumeName: 'v1', shard: 0, shards: 1, pageCount: 64, pageSize: 4096 as const, stripePages: 16, members,
  ...(priorMembers === undefined ? {} : { priorMembers }),
});

describe('a host follows the leaders of its shards\' sets', function () {
  this.timeout(60_000);
  let server: NatsServerHandle;
  let dir: string;
  let nc: NatsConnection;
  const hosts: ActorHost[] = [];
  before(async () => {
    server = await startNatsServer({ jetstream: false });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-peers-'));
    nc = await natsConnect({ servers: server.url });
  });
  after(async () => {
    for (const h of hosts) await h.stop();
    await nc?.close();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function host(nodeId: string): Promise<ActorHost> {
    const h = new ActorHost();
    hosts.push(h);
    await h.init({ hostId: 0, hostCount: 1, nodeId, cluster: CLUSTER, natsUrl: server.url, deviceDir: path.join(dir, nodeId), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } });
    return h;
  }

  /** Whether node `self`'s host answers an append `leader` sends to all its followers (any answer: a refusal is one). */
  async function answers(leader: string, self: string, volumeId = 'v1'): Promise<boolean> {
    const inbox = createInbox();
    const got = new Promise<boolean>((resolve) => {
      const sub = nc.subscribe(`${inbox}.${self}`, { max: 1, callback: () => resolve(true) });
      setTimeout(() => {
        sub.unsubscribe();
        resolve(false);
      }, 1000);
    });
    const append = { type: 'append', term: 1, leader, prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0, leaderLastLsn: 0 };
    nc.publish(followersSubject(CLUSTER, volumeId, 0, leader), encode(append), { reply: inbox });
    return got;
  }

  it('a replica a move adds hears the leaders of both sets; an open with the new set follows it too', async () => {
    const n4 = await host('n4');
    // n4 joins {n1,n2,n3} -> {n1,n2,n4}: the leader may be n3 (of the set before only).
    await n4.openShard({ ...spec(['n1', 'n2', 'n4'], ['n1', 'n2', 'n3']), existing: false });
    for (const leader of ['n1', 'n2', 'n3']) assert.equal(await answers(leader, 'n4'), true, `n4 hears ${leader}`);
    assert.equal(await answers('n5', 'n4'), false, 'n5 is in neither set');

    const n1 = await host('n1');
    await n1.openShard(spec(['n1', 'n2', 'n3']));
    assert.equal(await answers('n4', 'n1'), false, 'n4 is not in the set n1 was opened with');
    // The node's record after the move: opened again with the new set, n1 hears n4 (which may lead now).
    await n1.openShard({ ...spec(['n1', 'n2', 'n4']), existing: true });
    assert.equal(await answers('n4', 'n1'), true, 'n1 hears n4 after an open with the new set');
    assert.equal(await answers('n2', 'n1'), true);
    const reply = await new Promise<unknown>((resolve) => {
      const inbox = createInbox();
      nc.subscribe(`${inbox}.n1`, { max: 1, callback: (_e, m) => resolve(decode(m.data)) });
      nc.publish(followersSubject(CLUSTER, 'v1', 0, 'n2'), encode({ type: 'append', term: 1, leader: 'n9', prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0, leaderLastLsn: 0 }), { reply: inbox });
    });
    // Only the member a subject names may send on it.
    assert.match(JSON.stringify(reply), /takes appends from n2 only/);
  });

  it('a replica whose set its leader changes hears the new members once the change is in its log, before its node\'s record names them', async () => {
    const m1 = await host('m1');
    // A set of one, which leads itself; its change to {m1, m2} stays joint (m2 never answers).
    await m1.openShard({ ...spec(['m1']), volumeId: 'v2' });
    assert.equal(await answers('m2', 'm1', 'v2'), false);
    // Without m2 the joint set has no majority: the leader does not finish, and steps down.
    await assert.rejects(m1.reconfigure('v2', 0, ['m1', 'm2'], Date.now() + 500), (e: unknown) => ['timeout', 'not_leader'].includes(String((e as { code?: string }).code)));
    assert.deepEqual((await m1.stats()).device?.shards.find((x) => x.volumeId === 'v2')?.config, { members: ['m1', 'm2'], prior: ['m1'] });
    // Within a sync of the host (every 250 ms, and after the reconfigure): it may have ended before the change was in the log.
    await waitFor('m1 hears m2, of the joint configuration in force', () => answers('m2', 'm1', 'v2'), 5000);
  });

  it('a follower hears the member its leader adds once the change is in its log, though its own host neither opens the shard again nor changes its set', async () => {
    const hosts = new Map([['p1', await host('p1')], ['p2', await host('p2')]]);
    const s = (members: string[]) => ({ ...spec(members), volumeId: 'v3' });
    for (const h of hosts.values()) await h.openShard(s(['p1', 'p2']));
    const shardOn = async (id: string) => (await hosts.get(id)!.stats()).device?.shards.find((x) => x.volumeId === 'v3');
    let leader = '';
    await waitFor('v3 has a leader', async () => {
      for (const id of hosts.keys()) if ((await shardOn(id))?.role === 'leader') leader = id;
      return leader !== '';
    }, 10_000);
    const follower = leader === 'p1' ? 'p2' : 'p1';
    assert.equal(await answers('p3', follower, 'v3'), false, `p3 is not in the set ${follower} was opened with`);
    // p1 and p2 are a majority of both {p1,p2} and {p1,p2,p3}: the change is done without p3.
    await hosts.get(leader)!.reconfigure('v3', 0, ['p1', 'p2', 'p3'], Date.now() + 10_000);
    await waitFor(`${follower} has the new set in its log`, async () => JSON.stringify((await shardOn(follower))?.config) === JSON.stringify({ members: ['p1', 'p2', 'p3'] }), 10_000);
    await waitFor(`${follower} hears p3, a member of the set in force`, () => answers('p3', follower, 'v3'), 5000);
  });

  it('a host pings the nodes of its shards\' peers: a node from when a shard names it, no longer once no shard does', async () => {
    const q1 = await host('q1');
    const pings = new Map<string, number>([['q2', 0], ['q3', 0]]);
    const subs = [...pings.keys()].map((node) => nc.subscribe(heartbeatsSubject(CLUSTER, node), {
      callback: (_e, m) => {
        const b = decode(m.data) as { from: string; e: unknown[] };
        if (b.from === 'q1' && b.e.length === 0) pings.set(node, pings.get(node)! + 1);
      },
    }));
    try {
      const count = async (node: string, ms: number): Promise<number> => {
        const before = pings.get(node)!;
        await new Promise((r) => setTimeout(r, ms));
        return pings.get(node)! - before;
      };
      await q1.openShard({ ...spec(['q1', 'q2']), volumeId: 'v6' });
      await waitFor('pings to q2', async () => (await count('q2', 300)) > 0, 5000);
      assert.equal(await count('q3', 300), 0, 'no shard of q1 names q3');
      // A shard that names q3 too: q3 is pinged from then on.
      await q1.openShard({ ...spec(['q1', 'q3']), volumeId: 'v7' });
      await waitFor('pings to q3', async () => (await count('q3', 300)) > 0, 5000);
      // The shard naming q2 closed: q2 is no longer pinged, q3 still is.
      await q1.closeShard('v6', 0, false);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await count('q2', 500), 0, 'q2 no longer pinged');
      assert.ok((await count('q3', 500)) > 0, 'q3 still pinged');
    } finally {
      for (const sub of subs) sub.unsubscribe();
    }
  });

  it('a replica a move adds, opened again with the new set alone while its log still holds the joint configuration, still hears the nodes of the set before', async () => {
    const q1 = await host('q1');
    const s = (members: string[], priorMembers?: string[]) => ({ ...spec(members, priorMembers), volumeId: 'v4' });
    // q1 joins {q2,q3} -> {q1,q2}.
    await q1.openShard({ ...s(['q1', 'q2'], ['q2', 'q3']), existing: false });
    assert.equal(await answers('q3', 'q1', 'v4'), true);
    // Its node's record once the move is done names the new set alone; the replica has not learned that the change is done.
    await q1.openShard({ ...s(['q1', 'q2']), existing: true });
    assert.deepEqual((await q1.stats()).device?.shards.find((x) => x.volumeId === 'v4')?.config, { members: ['q1', 'q2'], prior: ['q2', 'q3'] });
    assert.equal(await answers('q3', 'q1', 'v4'), true, 'q3, of the set before, may still lead the joint configuration');
    assert.equal(await answers('q4', 'q1', 'v4'), false, 'q4 is in neither set');
  });

  it('a replica a move adds whose storage cannot be opened: a leader of either set is answered why it is down', async () => {
    const r1 = await host('r1');
    // A file where the replica's directory goes: its storage cannot be made.
    fs.mkdirSync(path.join(dir, 'r1', 'shards'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'r1', 'shards', 'v5.0'), 'not a directory');
    // r1 joins {r2,r3} -> {r1,r2}.
    await assert.rejects(r1.openShard({ ...spec(['r1', 'r2'], ['r2', 'r3']), volumeId: 'v5', existing: false }), (e: unknown) => (e as { code?: string }).code === 'io_error');
    assert.equal((await r1.stats()).device?.shards.find((x) => x.volumeId === 'v5')?.state, 'down');
    for (const leader of ['r2', 'r3']) assert.equal(await answers(leader, 'r1', 'v5'), true, `r1 answers ${leader}`);
  });

  /** The answer of the host that serves `subject` to `body`. */
  async function ask(subject: string, body: unknown): Promise<unknown> {
    return decode((await nc.request(subject, encode(body), { timeout: 10_000 })).data);
  }

  /** Whether the host that serves `subject` answers `body` within a second. */
  async function answered(subject: string, body: unknown): Promise<boolean> {
    return nc.request(subject, encode(body), { timeout: 1000 }).then(() => true, () => false);
  }

  it('a heartbeats message carries appends without records from the node that sent it only: each other entry is refused bad_request, the good one answered', async () => {
    const h1 = await host('h1');
    await h1.openShard({ ...spec(['h1', 'h2', 'h3']), volumeId: 'v6' });
    await h1.openShard({ ...spec(['h1', 'h2', 'h3']), volumeId: 'v7' });
    await h1.openShard({ ...spec(['h1', 'h2', 'h3']), volumeId: 'v8' });
    await h1.openShard({ ...spec(['h1', 'h2', 'h3']), volumeId: 'v9' });
    const heartbeat = { type: 'append', term: 1, leader: 'h2', prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0, leaderLastLsn: 0 };
    const entries: Array<[string, number, Uint8Array]> = [
      ['v6', 0, encode(heartbeat)],
      // Another node's append, one with records, and a message that is not an append.
      ['v7', 0, encode({ ...heartbeat, leader: 'h3' })],
      ['v8', 0, encode({ ...heartbeat, records: [{ term: 1, kind: 0, payload: new Uint8Array(1) }], leaderLastLsn: 1 })],
      ['v9', 0, encode({ type: 'vote', term: 2, candidate: 'h2', lastLsn: 0, lastTerm: 0 })],
    ];
    const reply = (await ask(heartbeatsSubject(CLUSTER, 'h1'), { from: 'h2', e: entries })) as HeartbeatBatchReply;
    const answers = new Map(reply.r.map(([volumeId, , data]) => [volumeId, decode(data) as { error?: { code: string; message: string } }]));
    assert.deepEqual([...answers.keys()].sort(), ['v6', 'v7', 'v8', 'v9']);
    assert.equal(answers.get('v6')!.error, undefined, JSON.stringify(answers.get('v6')));
    for (const v of ['v7', 'v8', 'v9']) {
      const error = answers.get(v)!.error;
      assert.equal(error?.code, 'bad_request', `${v}: ${JSON.stringify(answers.get(v))}`);
      assert.match(error!.message, /takes appends without records from their leader only$/);
    }
    // A message that is not a heartbeats message at all is refused as a whole.
    const malformed = (await ask(heartbeatsSubject(CLUSTER, 'h1'), { from: 'h2', e: 'not a list' })) as { error?: { code: string; message: string } };
    assert.equal(malformed.error?.code, 'bad_request', JSON.stringify(malformed));
    assert.match(malformed.error!.message, /^a heartbeats message is \{ from, host\?, e: /);
  });

  it('a host cut off from a node (a partition) leaves what that node sends unanswered: its replication messages and its heartbeats', async () => {
    const u1 = await host('u1');
    await u1.openShard({ ...spec(['u1', 'u2', 'u3']), volumeId: 'v11' });
    const heartbeat = (leader: string, term = 1) => ({ type: 'append', term, leader, prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0, leaderLastLsn: 0 });
    const subject = replicaSubject(CLUSTER, 'v11', 0, 'u1');
    const term = async (): Promise<number | undefined> => (await u1.stats()).device?.shards.find((x) => x.volumeId === 'v11')?.term;
    const batch = (from: string) => ({ from, e: [['v11', 0, encode(heartbeat(from))]] });
    assert.equal(await answered(subject, heartbeat('u2')), true, 'u2 is heard before the partition');
    assert.equal(await answered(heartbeatsSubject(CLUSTER, 'u1'), batch('u2')), true);
    await u1.setFaults({ unreachable: ['u2'] });
    const before = await term();
    assert.equal(typeof before, 'number');
    assert.equal(await answered(subject, heartbeat('u2', 7)), false, 'a replication message from u2 goes unanswered');
    assert.equal(await term(), before, 'and its replica never sees it (its term stays)');
    assert.equal(await answered(heartbeatsSubject(CLUSTER, 'u1'), batch('u2')), false, 'a heartbeats message from u2 goes unanswered');
    assert.equal(await answered(subject, heartbeat('u3')), true, 'u3 is still heard');
    await u1.setFaults({});
    assert.equal(await answered(subject, heartbeat('u2')), true, 'u2 is heard again once the partition heals');
  });

  it('a host handing its shards\' leadership away before it stops refuses to take one over (timeoutNow): unavailable', async () => {
    const t1 = await host('t1');
    await t1.openShard({ ...spec(['t1', 't2', 't3']), volumeId: 'v10' });
    const timeoutNow = { type: 'timeoutNow', term: 1, leader: 't2' };
    const subject = replicaSubject(CLUSTER, 'v10', 0, 't1');
    // Running: the replica answers (it refuses, t2 not being the leader it knows).
    assert.equal((await ask(subject, timeoutNow) as { error?: unknown }).error, undefined);
    // Its stop hands its leaderships over first, while it still takes replication messages.
    const state = t1 as unknown as { handingOff: boolean };
    state.handingOff = true;
    try {
      const reply = (await ask(subject, timeoutNow)) as { error?: { code: string; message: string } };
      assert.equal(reply.error?.code, 'unavailable', JSON.stringify(reply));
      assert.match(reply.error!.message, /^host 0 of node 't1' is stopping$/);
    } finally {
      state.handingOff = false;
    }
  });
});
