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
import { followersSubject } from '../../messages/raft';
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
    await h.init({ hostId: 0, nodeId, cluster: CLUSTER, natsUrl: server.url, deviceDir: path.join(dir, nodeId), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } });
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
});
