import { strict as assert } from 'node:assert';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { encode, decode } from '../../messages/codec';
import { followersSubject, replicaSubject, TERM_MAX } from '../../messages/raft';
import { LSN_MAX, type VolumeInfo } from '../../messages/api';
import { waitFor } from '../support/wait';
import { encodePageWrite } from '../../storage-engine/page-write';
import { encodePageZero } from '../../storage-engine/page-zero';

type ShardView = { leader?: string; term: number; state: string; replicas: Array<{ node: string; term?: number; state?: string; commitLsn?: number }> };
type NodeView = { hosts: Array<{ deviceRestarts: number; restarts: number }>; shards: Array<{ volumeId: string; state: string; term: number; repliesIgnored?: number }> };

/**
 * Replication messages that no member of the shard could have sent (found by
 * test/support/fuzz-subjects.ts): each is refused bad_request, and the shard keeps its leader,
 * its term and its replicas.
 */
describe('replication messages no member could have sent are refused, the shard serves on', function () {
  this.timeout(90_000);
  let c: InProcessCluster;
  let nc: NatsConnection;
  let info: VolumeInfo;

  const shard = async (): Promise<ShardView> => ((await c.client.status()) as unknown as { volumes: Array<{ name: string; shards: ShardView[] }> }).volumes.find((v) => v.name === 'v-forged')!.shards[0]!;
  const led = async (): Promise<ShardView> => {
    let s: ShardView | undefined;
    await waitFor('the shard has a leader', async () => (s = await shard()).state === 'up' && s.leader !== undefined);
    return s!;
  };
  const send = async (node: string, body: unknown): Promise<{ error?: { code: string; message: string }; term?: number }> =>
    decode((await nc.request(replicaSubject(c.cluster, info.id, 0, node), encode(body), { timeout: 5000 })).data) as { error?: { code: string; message: string } };
  const restarts = async (): Promise<number[]> =>
    Promise.all(c.nodes.map(async (n) => ((await n!.status()) as unknown as NodeView).hosts.reduce((t, h) => t + h.deviceRestarts, 0)));
  const hostRestarts = async (): Promise<number[]> =>
    Promise.all(c.nodes.map(async (n) => ((await n!.status()) as unknown as NodeView).hosts.reduce((t, h) => t + h.restarts, 0)));
  const down = async (): Promise<number> =>
    (await Promise.all(c.nodes.map(async (n) => ((await n!.status()) as unknown as NodeView).shards.filter((s) => s.volumeId === info.id && s.state === 'down').length))).reduce((a, b) => a + b, 0);
  const writeAndRead = async (page: number): Promise<void> => {
    const vol = c.client.volume('v-forged');
    const data = new Uint8Array(4096).fill(page);
    await vol.write(page, data);
    assert.deepEqual(Buffer.from((await vol.readPages([page])).pages[0]!), Buffer.from(data));
  };

  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1, clientTimeoutMs: 5000 });
    nc = await natsConnect({ servers: c.natsUrl });
    info = await c.client.createVolume({ name: 'v-forged', pageCount: 64, shards: 1, replicas: 3 });
    await writeAndRead(1);
  });
  after(async () => {
    await nc?.close();
    await c?.stop();
  });

  it('an append of a far newer term from a node that is not a member: refused, and the shard keeps its leader and term', async () => {
    const before = await led();
    const follower = before.replicas.find((r) => r.node !== before.leader)!.node;
    const reply = await send(follower, { type: 'append', term: TERM_MAX, leader: 'zz', prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0 });
    assert.equal(reply.error?.code, 'bad_request', JSON.stringify(reply));
    assert.match(reply.error!.message, /'zz' is not another member/);
    const after = await led();
    assert.equal(after.term, before.term, 'no replica took the message\'s term');
    await writeAndRead(2);
  });

  it('a vote from a node that is not a member, and a message naming the receiver itself as the sender: refused', async () => {
    const s = await led();
    const vote = await send(s.leader!, { type: 'vote', term: s.term + 1, candidate: 'zz', lastLsn: LSN_MAX, lastTerm: TERM_MAX });
    assert.equal(vote.error?.code, 'bad_request', JSON.stringify(vote));
    const self = await send(s.leader!, { type: 'append', term: s.term + 1, leader: s.leader, prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0 });
    assert.equal(self.error?.code, 'bad_request', JSON.stringify(self));
    assert.equal((await led()).term, s.term);
  });

  it("on a leader's subject to its followers, a vote or an append naming another member: refused by each follower, and the shard keeps its leader and term", async () => {
    const s = await led();
    const [a, b] = s.replicas.map((r) => r.node).filter((n) => n !== s.leader);
    const toFollowers = async (body: unknown): Promise<Map<string, { error?: { code: string; message: string } }>> => {
      const inbox = `_INBOX.forged${Math.random().toString(36).slice(2)}`;
      const got = new Map<string, { error?: { code: string; message: string } }>();
      const sub = nc.subscribe(`${inbox}.*`, { callback: (_e, m) => got.set(m.subject.slice(inbox.length + 1), decode(m.data) as { error?: { code: string; message: string } }) });
      nc.publish(followersSubject(c.cluster, info.id, 0, s.leader!), encode(body), { reply: inbox });
      await waitFor('both followers answer', () => got.size === 2, 5000);
      sub.unsubscribe();
      return got;
    };
    const forged = [
      { type: 'vote', term: s.term + 1, candidate: a, lastLsn: LSN_MAX, lastTerm: TERM_MAX },
      { type: 'append', term: s.term + 1, leader: b, prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0 },
    ];
    for (const body of forged) {
      const replies = await toFollowers(body);
      assert.deepEqual([...replies.keys()].sort(), [a, b].sort());
      for (const [node, reply] of replies) {
        assert.equal(reply.error?.code, 'bad_request', `${node}: ${JSON.stringify(reply)}`);
        assert.match(reply.error!.message, new RegExp(`takes appends from ${s.leader} only`));
      }
    }
    const after = await led();
    assert.equal(after.term, s.term, 'no replica took the message\'s term');
    assert.equal(after.leader, s.leader);
    await writeAndRead(3);
  });

  it('a vote in the name of a member (the leader) with a term past TERM_MAX: refused, no replica takes the term', async () => {
    const s = await led();
    const follower = s.replicas.find((r) => r.node !== s.leader)!.node;
    for (const term of [LSN_MAX, TERM_MAX + 1]) {
      const reply = await send(follower, { type: 'vote', term, candidate: s.leader, lastLsn: LSN_MAX, lastTerm: TERM_MAX });
      assert.equal(reply.error?.code, 'out_of_range', JSON.stringify(reply));
    }
    const after = await led();
    assert.equal(after.term, s.term, 'no replica took the message\'s term');
    assert.ok(after.replicas.every((r) => (r.term ?? 0) < TERM_MAX), JSON.stringify(after.replicas));
    await writeAndRead(5);
  });

  it('snapshots shorter than an image, or whose last chunk does not end it, six times each: refused; no restart', async () => {
    const before = await restarts();
    for (let i = 0; i < 6; i++) {
      const s = await led();
      const follower = s.replicas.find((r) => r.node !== s.leader)!.node;
      const term = Math.max(s.term, ...s.replicas.map((r) => r.term ?? 0));
      const empty = await send(follower, { type: 'snapshot', term, leader: s.leader, lsn: 1_000_000, lastTerm: term, bytes: 0, offset: 0, data: new Uint8Array(0), done: true });
      assert.equal(empty.error?.code, 'bad_request', JSON.stringify(empty));
      assert.match(empty.error!.message, /bytes: an image is at least 44 bytes/);
      const cut = await send(follower, { type: 'snapshot', term, leader: s.leader, lsn: 1_000_000, lastTerm: term, bytes: 4096, offset: 0, data: new Uint8Array(100), done: true });
      assert.equal(cut.error?.code, 'bad_request', JSON.stringify(cut));
      assert.match(cut.error!.message, /done: the image is 4096 bytes, this chunk ends at 100/);
    }
    assert.deepEqual(await restarts(), before, 'no replica was restarted');
    assert.equal(await down(), 0);
    await writeAndRead(6);
  });

  it('appends in the leader\'s own term from another member, sent to the leader, six times: refused; no restart, the replica is not left down', async () => {
    const before = await restarts();
    for (let i = 0; i < 6; i++) {
      const s = await led();
      const other = s.replicas.find((r) => r.node !== s.leader)!.node;
      const reply = await send(s.leader!, { type: 'append', term: s.term, leader: other, prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0 });
      assert.equal(reply.error?.code, 'bad_request', JSON.stringify(reply));
    }
    assert.deepEqual(await restarts(), before, 'no replica was restarted');
    assert.equal(await down(), 0);
    await writeAndRead(3);
  });

  it('appends that would overwrite a committed record on a follower, six times: refused; no restart, the replica is not left down', async () => {
    const before = await restarts();
    for (let i = 0; i < 6; i++) {
      // A follower that knows LSN 1 is committed: one that has just opened its replica (a
      // restart) knows only what its image holds until its leader tells it more, and may take
      // the record as a leader's of a newer term would be.
      let s!: ShardView;
      let follower: string | undefined;
      await waitFor('a follower that knows LSN 1 is committed', async () => {
        s = await led();
        follower = s.replicas.find((r) => r.node !== s.leader && r.state === 'up' && (r.commitLsn ?? 0) >= 1)?.node;
        return follower !== undefined;
      });
      // LSN 1 is committed (term 1); a record of a newer term in its place. (The follower's
      // term may be ahead of the status's: sent again past the term it answers.)
      let term = Math.max(s.term, ...s.replicas.map((r) => r.term ?? 0)) + 1;
      // (A well-formed page write: the record is refused for where it goes, not for what it is.)
      const payload = encodePageWrite(4096, [{ page: 4, data: new Uint8Array(4096).fill(4) }]);
      let reply = await send(follower!, { type: 'append', term, leader: s.leader, prevLsn: 0, prevTerm: 0, records: [{ term, kind: 1, payload }], commitLsn: 0 });
      for (let k = 0; k < 3 && reply.error === undefined && typeof reply.term === 'number' && reply.term >= term; k++) {
        term = reply.term + 1;
        reply = await send(follower!, { type: 'append', term, leader: s.leader, prevLsn: 0, prevTerm: 0, records: [{ term, kind: 1, payload }], commitLsn: 0 });
      }
      assert.equal(reply.error?.code, 'bad_request', `${follower}: ${JSON.stringify(reply)}; the shard before: ${JSON.stringify(s)}; restarts ${JSON.stringify(await restarts())} ${JSON.stringify(await hostRestarts())}`);
      assert.match(reply.error!.message, /the record at LSN 1 is committed with term/);
    }
    assert.deepEqual(await restarts(), before, 'no replica was restarted');
    assert.equal(await down(), 0);
    await writeAndRead(4);
  });
  it('appends whose records are not ones a leader writes (a page write cut short, of another page size, past the last page; a range made zeros past the last page or malformed; an unknown kind; a no-op with data), in a newer term, matching the follower\'s log and committing them: refused before anything changes', async () => {
    const good = (page: number, pageSize = 4096): Uint8Array => encodePageWrite(pageSize, [{ page, data: new Uint8Array(pageSize).fill(7) }]);
    const cases: Array<{ what: string; kind: number; payload: Uint8Array; message: RegExp }> = [
      { what: 'a page write of 6 bytes', kind: 1, payload: new Uint8Array(6), message: /records\[0\]: page write payload of 6 bytes is shorter than its header/ },
      { what: 'a page write of 8 KiB pages', kind: 1, payload: good(3, 8192), message: /records\[0\]: page write page size 8192 differs from the store's 4096/ },
      { what: 'a page write past the last page', kind: 1, payload: good(64), message: /records\[0\]: writes page 64, outside 0\.\.63/ },
      { what: 'a range made zeros past the last page', kind: 4, payload: encodePageZero({ first: 60, count: 5 }), message: /records\[0\]: zeros pages 60\.\.64, outside 0\.\.63/ },
      { what: 'a range made zeros that is not one', kind: 4, payload: new Uint8Array(24), message: /records\[0\]: page zero magic 0x0 is wrong/ },
      { what: 'a record of kind 5', kind: 5, payload: new Uint8Array(4), message: /records\[0\]\.kind: 5 is not a kind of record a leader writes/ },
      { what: 'a no-op with data', kind: 2, payload: new Uint8Array(3), message: /records\[0\]: a no-op record carries no payload, this one 3 bytes/ },
    ];
    const hostsBefore = await hostRestarts();
    const before = await restarts();
    for (const k of cases) {
      const s = await led();
      const follower = s.replicas.find((r) => r.node !== s.leader)!.node;
      const info2 = (await c.client.status()) as unknown as { volumes: Array<{ name: string; shards: Array<{ commitLsn: number }> }> };
      const commitLsn = info2.volumes.find((v) => v.name === 'v-forged')!.shards[0]!.commitLsn;
      const term = Math.max(s.term, ...s.replicas.map((r) => r.term ?? 0)) + 1;
      // A well-formed record after the bad one: neither is taken.
      const records = [{ term, kind: k.kind, payload: k.payload }, { term, kind: 1, payload: good(9) }];
      const reply = await send(follower, { type: 'append', term, leader: s.leader, prevLsn: commitLsn, prevTerm: s.term, records, commitLsn: commitLsn + 2 });
      assert.equal(reply.error?.code, 'bad_request', `${k.what}: ${JSON.stringify(reply)}`);
      assert.match(reply.error!.message, k.message, k.what);
      const after = await led();
      assert.equal(after.term, s.term, `${k.what}: no replica took the message's term`);
    }
    assert.deepEqual(await hostRestarts(), hostsBefore, 'no host thread exited');
    assert.deepEqual(await restarts(), before, 'no replica was restarted');
    assert.equal(await down(), 0);
    await writeAndRead(9);
  });
  it('answers to the leader\'s appends that acknowledge more than the append held: taken as no answer; no thread ends, the shard serves once they stop', async () => {
    const s = await led();
    const leader = s.leader!;
    const followers = s.replicas.map((r) => r.node).filter((n) => n !== leader);
    const hostsBefore = await hostRestarts();
    let forged = 0;
    const answer = (to: string, term: number): void => {
      nc.publish(to, encode({ term, success: true, matchLsn: 1_000_000_000, lastLsn: 1_000_000_000 }));
      forged++;
    };
    // Anyone on the server sees the leader's appends and their reply subjects, and can answer
    // before the followers, which answer once their records are durable.
    const subs = [
      nc.subscribe(replicaSubject(c.cluster, info.id, 0, '*'), { callback: (_e, m) => {
        const body = decode(m.data) as { type?: string; term?: number; leader?: string };
        if (body.type === 'append' && body.leader === leader && m.reply) answer(m.reply, body.term!);
      } }),
      nc.subscribe(followersSubject(c.cluster, info.id, 0, leader), { callback: (_e, m) => {
        const body = decode(m.data) as { term?: number };
        if (m.reply) for (const f of followers) answer(`${m.reply}.${f}`, body.term!);
      } }),
    ];
    await nc.flush();
    // Writes while the answers are forged: their appends are answered wrongly, most often first
    // (a follower answers once its record is durable). Written until the leader has met one
    // (on a loaded machine the followers' answers may come first now and then).
    const vol = c.client.volume('v-forged');
    const leaderNode = c.nodes.find((n) => n?.nodeId === leader)!;
    const ignoredNow = async (): Promise<number> => ((await leaderNode.status()) as unknown as NodeView).shards.find((x) => x.volumeId === info.id)?.repliesIgnored ?? 0;
    const outcomes: string[] = [];
    for (let i = 0; i < 20 && (await ignoredNow()) === 0; i++) {
      outcomes.push(await vol.write(10, new Uint8Array(4096).fill(10 + i)).then(() => 'ok', (e: { code?: string }) => e.code ?? 'error'));
    }
    for (const sub of subs) sub.unsubscribe();
    await nc.flush();
    const ignored = await ignoredNow();
    assert.ok(ignored >= 1, `the leader counts the answers it ignored (${ignored} of ${forged}, ${outcomes.length} writes)`);
    assert.deepEqual(await hostRestarts(), hostsBefore, 'no host thread exited');
    assert.deepEqual(outcomes.filter((o) => !['ok', 'timeout', 'unavailable'].includes(o)), [], 'each write during the forging is answered');
    await writeAndRead(11);
  });
});
