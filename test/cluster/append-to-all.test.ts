import { strict as assert } from 'node:assert';
import { connect as natsConnect, createInbox, type NatsConnection } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { encode, decode } from '../../messages/codec';
import { followersSubject } from '../../messages/raft';
import type { VolumeInfo } from '../../messages/api';
import { waitFor } from '../support/wait';

type ShardView = { leader?: string; term: number; state: string; replicas: Array<{ node: string }> };

/**
 * A leader's appends to all its followers at once (`strata.<c>.followers.<volumeId>.<shard>.
 * <leader>`), between the hosts of a running cluster: sent, answered by each follower on its own
 * reply subject, and refused when no leader of that subject could have sent them.
 */
describe('appends to all followers in one message, between hosts', function () {
  this.timeout(90_000);
  let c: InProcessCluster;
  let nc: NatsConnection;
  let info: VolumeInfo;

  const shard = async (): Promise<ShardView> =>
    ((await c.client.status()) as unknown as { volumes: Array<{ name: string; shards: ShardView[] }> }).volumes.find((v) => v.name === 'v-all')!.shards[0]!;
  const led = async (): Promise<ShardView> => {
    let s: ShardView | undefined;
    await waitFor('the shard has a leader', async () => (s = await shard()).state === 'up' && s.leader !== undefined);
    return s!;
  };
  /** The replica stats of the shard on every node. */
  const replicas = async (): Promise<Array<{ role: string; lastLsn: number; appliedLsn: number; appendsSent: number; appendsToAll: number }>> => {
    const out = [];
    for (const n of c.nodes) for (const h of await n!.hostPool.stats()) for (const r of h.device?.shards ?? []) if (r.volumeId === info.id) out.push(r);
    return out;
  };

  before(async () => {
    c = await startCluster({ nodes: 3, hosts: 1, clientTimeoutMs: 5000 });
    nc = await natsConnect({ servers: c.natsUrl });
    info = await c.client.createVolume({ name: 'v-all', pageCount: 256, shards: 1, replicas: 3 });
  });
  after(async () => {
    await nc?.close();
    await c?.stop();
  });

  it('writes reach the followers as appends to all of them, seen on the leader\'s subject; every replica holds every write', async () => {
    const s = await led();
    const seen: number[] = [];
    const spy = nc.subscribe(followersSubject(c.cluster, info.id, 0, s.leader!), { callback: (_e, m) => void seen.push(m.data.length) });
    await nc.flush();
    const vol = c.client.volume('v-all');
    const before = (await replicas()).find((r) => r.role === 'leader')!;
    for (let i = 0; i < 20; i++) await vol.write(i, new Uint8Array(4096).fill(i + 1));
    await Promise.all(Array.from({ length: 64 }, (_, i) => vol.write(32 + i, new Uint8Array(4096).fill(i + 100))));
    spy.unsubscribe();
    const after = (await replicas()).find((r) => r.role === 'leader')!;
    const toAll = after.appendsToAll - before.appendsToAll;
    const sent = after.appendsSent - before.appendsSent;
    assert.ok(toAll >= 10, `${toAll} of ${sent} append messages went to all followers`);
    assert.ok(seen.length >= toAll, `${seen.length} messages seen on the subject for ${toAll} sent`);
    assert.ok(seen.every((n) => n > 4096), 'each carries a page');
    await waitFor('every replica applied every write', async () => {
      const rs = await replicas();
      return rs.length === 3 && rs.every((r) => r.appliedLsn === rs[0]!.lastLsn && r.lastLsn === rs[0]!.lastLsn);
    });
    const pages = (await vol.readPages(Array.from({ length: 20 }, (_, i) => i))).pages;
    pages.forEach((p, i) => assert.equal(p[0], i + 1));
  });

  it('a leader with faults injected sends each follower its own message, and counts none as a message to all', async () => {
    const s = await led();
    const leader = Number(s.leader!.slice(1)) - 1;
    const stats = async (): Promise<{ appendsSent: number; appendsToAll: number }> => (await replicas()).find((r) => r.role === 'leader')!;
    // A delay of 1 ms: each follower gets its own message (docs/replication.md).
    await c.degrade(leader, { delayMs: 1 });
    const seen: number[] = [];
    const spy = nc.subscribe(followersSubject(c.cluster, info.id, 0, s.leader!), { callback: (_e, m) => void seen.push(m.data.length) });
    await nc.flush();
    try {
      const before = await stats();
      const vol = c.client.volume('v-all');
      for (let i = 0; i < 20; i++) await vol.write(100 + i, new Uint8Array(4096).fill(i + 1));
      await nc.flush();
      const after = await stats();
      assert.equal(seen.length, 0, 'nothing went on the followers subject');
      assert.equal(after.appendsToAll - before.appendsToAll, 0, `appendsToAll grew by ${after.appendsToAll - before.appendsToAll}`);
      assert.ok(after.appendsSent - before.appendsSent >= 20, `${after.appendsSent - before.appendsSent} append messages counted for 20 writes to two followers`);
    } finally {
      spy.unsubscribe();
      await c.heal();
    }
  });

  it('on a leader\'s subject, a message that is not an append from that leader is refused by each follower, on its own reply subject', async () => {
    const s = await led();
    const followers = s.replicas.map((r) => r.node).filter((n) => n !== s.leader).sort();
    const other = followers[0]!;
    const ask = async (body: unknown): Promise<Record<string, { error?: { code: string; message: string } }>> => {
      const inbox = createInbox();
      const replies: Record<string, { error?: { code: string; message: string } }> = {};
      const sub = nc.subscribe(`${inbox}.>`, { callback: (_e, m) => void (replies[m.subject.slice(inbox.length + 1)] = decode(m.data) as never) });
      await nc.flush();
      nc.publish(followersSubject(c.cluster, info.id, 0, s.leader!), encode(body), { reply: inbox });
      await waitFor('both followers answered', async () => Object.keys(replies).length >= 2);
      sub.unsubscribe();
      return replies;
    };
    // An append naming another member than the subject's leader, and a vote.
    for (const body of [
      { type: 'append', term: s.term, leader: other, prevLsn: 0, prevTerm: 0, records: [], commitLsn: 0 },
      { type: 'vote', term: s.term + 1, candidate: s.leader, lastLsn: 0, lastTerm: 0 },
    ]) {
      const replies = await ask(body);
      assert.deepEqual(Object.keys(replies).sort(), followers, 'each follower answered on the reply subject followed by its id');
      for (const f of followers) {
        assert.equal(replies[f]!.error?.code, 'bad_request', JSON.stringify(replies[f]));
        assert.match(replies[f]!.error!.message, new RegExp(`takes appends from ${s.leader} only`));
      }
    }
    const after = await led();
    assert.equal(after.term, s.term, 'no replica took a term from them');
    assert.equal(after.leader, s.leader);
    await c.client.volume('v-all').write(200, new Uint8Array(4096).fill(7));
  });
});
