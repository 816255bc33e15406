import { strict as assert } from 'node:assert';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { decode } from '../../messages/codec';
import { validateHeartbeatBatch } from '../../runtime/heartbeat-batcher';
import { waitFor } from '../support/wait';

type ShardView = { leader?: string; term: number; state: string };

/**
 * Heartbeats coalesced per pair of nodes (runtime/heartbeat-batcher.ts) in a running cluster:
 * an idle cluster's leaders reach their followers through `strata.<c>.heartbeats.<node>` only,
 * one message per leader's host and node per period, answered by whichever host of that node
 * holds each shard; the leaders keep their terms (no follower went without hearing its leader),
 * and writes still replicate. The hosts also ping each node their peers are on. Then idle shards
 * quiesce (docs/replication.md, "Idle shards"): a heartbeat a second, and a node killed or cut off
 * is still replaced by its peers.
 */
describe('heartbeats coalesced per pair of nodes', function () {
  this.timeout(120_000);
  let c: InProcessCluster;
  let nc: NatsConnection;

  const shards = async (): Promise<ShardView[]> =>
    ((await c.client.status()) as unknown as { volumes: Array<{ name: string; shards: ShardView[] }> }).volumes.find((v) => v.name === 'idle')!.shards;

  before(async () => {
    // Two hosts per node: a node's hosts each take the message and answer their own shards.
    // Its shards do not quiesce: what is counted here is the heartbeats of shards awake.
    c = await startCluster({ nodes: 3, hosts: 2, clientTimeoutMs: 5000, node: { timing: { quiesceAfterMs: 3_600_000 } } });
    nc = await natsConnect({ servers: c.natsUrl });
    // 72 replicas opened and their first leaders elected: more than the client's 5 s on a loaded machine.
    await c.client.createVolume({ name: 'idle', pageCount: 1536, shards: 24, stripePages: 16, replicas: 3 }, { deadlineMs: Date.now() + 100_000 });
    await waitFor('every shard has a leader', async () => (await shards()).every((s) => s.state === 'up' && s.leader !== undefined), 60_000);
  });
  after(async () => {
    await nc?.close();
    await c?.stop();
  });

  it('idle: no heartbeat on a replica\'s own subject, one message per node and period, every term kept', async () => {
    const terms = (await shards()).map((s) => `${s.leader}@${s.term}`);
    const emptyAppends: string[] = [];
    const batches: Array<{ subject: string; entries: number }> = [];
    let pings = 0;
    const own = nc.subscribe(`strata.${c.cluster}.replica.>`, {
      callback: (_e, m) => {
        const req = decode(m.data) as { type?: string; records?: unknown[] };
        if (req.type === 'append' && req.records?.length === 0) emptyAppends.push(m.subject);
      },
    });
    const coalesced = nc.subscribe(`strata.${c.cluster}.heartbeats.>`, {
      callback: (_e, m) => {
        const entries = validateHeartbeatBatch(decode(m.data)).e.length;
        // A ping: no entries, nothing to answer.
        if (m.reply === undefined || m.reply === '') {
          assert.equal(entries, 0);
          pings++;
        } else batches.push({ subject: m.subject, entries });
      },
    });
    await nc.flush();
    await new Promise((r) => setTimeout(r, 2000));
    own.unsubscribe();
    coalesced.unsubscribe();
    assert.deepEqual(emptyAppends, [], 'heartbeats go through the heartbeats subject');
    const entries = batches.reduce((n, b) => n + b.entries, 0);
    // 24 shards, 2 followers each, a heartbeat every 100 ms: ~960 in 2 s; each of the 6 hosts leads
    // about 4, sent to each other node in one message.
    assert.ok(entries >= 100, `${entries} heartbeats in ${batches.length} messages`);
    assert.ok(batches.length * 2 <= entries, `${entries} heartbeats in ${batches.length} messages: coalesced`);
    // Each of the 6 hosts pings the 2 other nodes every 100 ms: ~240 in 2 s.
    assert.ok(pings >= 60, `${pings} pings`);
    assert.deepEqual((await shards()).map((s) => `${s.leader}@${s.term}`), terms, 'no shard changed leader or term');
    // The hosts count what they sent (strata_heartbeat_messages, strata_heartbeat_entries).
    const counted = { messages: 0, entries: 0 };
    for (const n of c.nodes) for (const h of await n!.hostPool.stats()) {
      counted.messages += h.heartbeats?.messages ?? 0;
      counted.entries += h.heartbeats?.entries ?? 0;
    }
    assert.ok(counted.messages > 0 && counted.entries >= 2 * counted.messages, JSON.stringify(counted));
    // Writes replicate as before.
    const vol = c.client.volume('idle');
    await Promise.all(Array.from({ length: 32 }, (_, i) => vol.write(i * 7, new Uint8Array(4096).fill(i + 1))));
    const r = await vol.readPages(Array.from({ length: 32 }, (_, i) => i * 7));
    r.pages.forEach((p, i) => assert.equal(p[0], i + 1));
  });
});
