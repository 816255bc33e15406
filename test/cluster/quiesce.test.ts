import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import type { ReplicaState } from '../../runtime/device-host';
import { waitFor } from '../support/wait';

/** A replica up on a running node of the cluster, with its node and host. */
type Located = ReplicaState & { node: string; hostId: number };

/** The replicas up on `c`'s running nodes, of `volumeId` only when given, but those of node index `skip`. */
async function upReplicas(c: InProcessCluster, opts: { volumeId?: string; skip?: number } = {}): Promise<Located[]> {
  const out: Located[] = [];
  for (const [i, n] of c.nodes.entries()) {
    if (n === undefined || i === opts.skip) continue;
    for (const h of await n.hostPool.stats()) {
      for (const r of h.device?.shards ?? []) if (r.state === 'up' && (opts.volumeId === undefined || r.volumeId === opts.volumeId)) out.push({ ...r, node: `n${i + 1}`, hostId: h.hostId });
    }
  }
  return out;
}

/**
 * Idle shards quiesce in a running cluster (docs/replication.md, "Idle shards"): once a shard
 * has had no request for quiesceAfterMs, its leader heartbeats once a quiesced period, its
 * followers wait for it while they hear from its host (the hosts' pings), and a request wakes
 * it. A quiesced leader's node killed, or cut off from the others, is replaced by its peers.
 */
describe('idle shards quiesce in a running cluster', function () {
  this.timeout(180_000);
  let c: InProcessCluster;
  const SHARDS = 6;
  /** Pages per stripe: page k × 16 is on shard k. */
  const STRIPE = 16;

  const replicas = (): Promise<Located[]> => upReplicas(c);
  const leaders = async (): Promise<Located[]> => (await replicas()).filter((r) => r.role === 'leader' && r.volumeId === volumeId);
  /** Heartbeat entries the hosts of the running nodes sent so far. */
  const heartbeatEntries = async (): Promise<{ entries: number; pings: number }> => {
    const out = { entries: 0, pings: 0 };
    for (const n of c.nodes) for (const h of n === undefined ? [] : await n.hostPool.stats()) {
      out.entries += h.heartbeats?.entries ?? 0;
      out.pings += h.heartbeats?.pings ?? 0;
    }
    return out;
  };
  const allQuiesced = async (): Promise<boolean> => {
    const rs = (await replicas()).filter((r) => r.volumeId === volumeId);
    return rs.length === SHARDS * 3 && rs.every((r) => r.quiesced);
  };
  const writeEveryShard = async (fill: number): Promise<void> => {
    const vol = c.client.volume('q');
    await Promise.all(Array.from({ length: SHARDS }, (_, k) => vol.write(k * STRIPE, new Uint8Array(4096).fill(fill))));
  };
  /** The node leading most of the volume's shards, never n1 (which keeps the catalog), and its index. */
  const busiestNode = async (): Promise<{ victim: string; i: number }> => {
    const byNode = new Map<string, number>();
    for (const r of await leaders()) byNode.set(r.node, (byNode.get(r.node) ?? 0) + 1);
    const victim = ['n2', 'n3'].sort((a, b) => (byNode.get(b) ?? 0) - (byNode.get(a) ?? 0))[0]!;
    return { victim, i: Number(victim.slice(1)) - 1 };
  };
  let volumeId: string;

  before(async () => {
    // Quiesced after 500 ms without a request; a quiesced leader heartbeats once a second (the default).
    c = await startCluster({ nodes: 3, clientTimeoutMs: 10_000, node: { timing: { quiesceAfterMs: 500 } } });
    volumeId = (await c.client.createVolume({ name: 'q', pageCount: SHARDS * STRIPE * 4, shards: SHARDS, stripePages: STRIPE, replicas: 3 }, { deadlineMs: Date.now() + 60_000 })).id;
    await writeEveryShard(1);
  });
  after(async () => {
    await c?.stop();
  });

  it('idle: every replica quiesces, the leaders send a heartbeat a second and the hosts ping; nobody campaigns; a write wakes a shard', async () => {
    await waitFor('every replica quiesces', allQuiesced, 30_000);
    const terms = (await leaders()).map((r) => `${r.shard}:${r.node}@${r.term}`).sort();
    const before = await heartbeatEntries();
    await new Promise((r) => setTimeout(r, 3000));
    const after = await heartbeatEntries();
    const entries = after.entries - before.entries;
    // 6 shards × 2 followers: ~36 in 3 s quiesced (awake: a heartbeat each 100 ms, ~360).
    assert.ok(entries <= 120, `${entries} heartbeats in 3 s`);
    // Each of the 3 hosts pings the 2 other nodes every 100 ms: ~180 in 3 s.
    assert.ok(after.pings - before.pings >= 60, `${after.pings - before.pings} pings in 3 s`);
    assert.deepEqual((await leaders()).map((r) => `${r.shard}:${r.node}@${r.term}`).sort(), terms, 'no election while quiesced');
    assert.ok((await leaders()).every((r) => r.quiesces >= 1));
    // A write wakes its shard, and reads back.
    const vol = c.client.volume('q');
    await vol.write(0, new Uint8Array(4096).fill(2));
    assert.equal((await leaders()).find((r) => r.shard === 0)!.quiesced, false, 'the written shard is awake');
    assert.equal((await vol.read(0))[0], 2);
  });

  it('a quiesced leader\'s node killed: its shards are led again and take writes; the leaders stay awake while it is down, and quiesce once it is back', async () => {
    await waitFor('every replica quiesces', allQuiesced, 30_000);
    const { victim, i } = await busiestNode();
    c.kill(i);
    await waitFor('every shard led by a node still up', async () => {
      const ls = await leaders();
      return ls.length === SHARDS && ls.every((r) => r.node !== victim);
    }, 30_000);
    await writeEveryShard(3);
    const vol = c.client.volume('q');
    for (let k = 0; k < SHARDS; k++) assert.equal((await vol.read(k * STRIPE))[0], 3);
    // The two nodes left hold a majority of each shard, and quiesce again without the third (a
    // follower that is down keeps its leader awake: it probes it).
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok((await leaders()).every((r) => !r.quiesced), 'a leader whose follower is down stays awake');
    await c.restart(i);
    await waitFor('every replica quiesces with the node back', allQuiesced, 60_000);
  });

  it('a quiesced leader\'s node cut off from the others: they elect leaders of their own and take writes', async () => {
    await waitFor('every replica quiesces', allQuiesced, 30_000);
    const { victim, i } = await busiestNode();
    await c.partition([[i]]);
    try {
      // The nodes left stop hearing from it (no ping crosses a partition), and hear from each other.
      await new Promise((r) => setTimeout(r, 1000));
      for (const [j, n] of c.nodes.entries()) {
        if (j === i || n === undefined) continue;
        for (const h of await n.hostPool.stats()) {
          const heard = h.peersHeardMsAgo ?? {};
          assert.ok((heard[victim] ?? Infinity) >= 700, `n${j + 1} heard from ${victim} ${heard[victim]} ms ago, across the partition`);
          const other = [0, 1, 2].find((k) => k !== i && k !== j)!;
          assert.ok((heard[`n${other + 1}`] ?? Infinity) < 700, `n${j + 1} heard from n${other + 1} ${heard[`n${other + 1}`]} ms ago`);
        }
      }
      await waitFor('the other nodes lead every shard', async () => {
        const up = (await replicas()).filter((r) => r.volumeId === volumeId && r.role === 'leader' && r.node !== victim);
        return new Set(up.map((r) => r.shard)).size === SHARDS;
      }, 30_000);
      await writeEveryShard(4);
    } finally {
      await c.heal();
    }
    await waitFor('the cut-off node leads nothing', async () => (await leaders()).every((r) => r.node !== victim), 30_000);
  });
});

/**
 * A node is heard from host by host: the host thread of a quiesced leader stuck while the other
 * hosts of its node run (and ping) does not keep that leader's followers waiting. They go by the
 * pings of the leader's own host, which its heartbeats name (docs/replication.md, "Idle shards").
 */
describe('a quiesced leader\'s host thread stuck while its node runs', function () {
  this.timeout(180_000);
  let c: InProcessCluster;
  const SHARDS = 8;
  const STRIPE = 16;
  /** Long enough that followers going by the node alone (3 quiesced periods: 12 s) would wait it out. */
  const STALL_MS = 10_000;
  let volumeId: string;

  /** The volume's replicas on the running nodes but `skip`. */
  const replicas = (skip?: number): Promise<Located[]> => upReplicas(c, { volumeId, skip });

  before(async () => {
    // Two hosts a node; quiesced after 500 ms, a quiesced leader heartbeats every 4 s.
    c = await startCluster({ nodes: 3, hosts: 2, clientTimeoutMs: 20_000, node: { timing: { quiesceAfterMs: 500, quiescedHeartbeatMs: 4000 } } });
    volumeId = (await c.client.createVolume({ name: 'h', pageCount: SHARDS * STRIPE * 4, shards: SHARDS, stripePages: STRIPE, replicas: 3 }, { deadlineMs: Date.now() + 60_000 })).id;
    const vol = c.client.volume('h');
    await Promise.all(Array.from({ length: SHARDS }, (_, k) => vol.write(k * STRIPE, new Uint8Array(4096).fill(1))));
  });
  after(async () => {
    await c?.stop();
  });

  it('its shards are led on other nodes while it is stuck, the shards its node\'s other host leads keep their leaders, and every shard takes writes', async () => {
    await waitFor('every replica quiesces', async () => {
      const rs = await replicas();
      return rs.length === SHARDS * 3 && rs.every((r) => r.quiesced);
    }, 30_000);
    // The host of n2 or n3 leading most shards (n1 keeps the catalog); the other host of its node leads some too, or none.
    const leaders = (await replicas()).filter((r) => r.role === 'leader');
    const count = (node: string, host: number): number => leaders.filter((r) => r.node === node && r.hostId === host).length;
    const [node, host] = (['n2', 'n3'] as const).flatMap((n) => [[n, 0], [n, 1]] as const).sort((a, b) => count(b[0], b[1]) - count(a[0], a[1]))[0]!;
    const i = Number(node.slice(1)) - 1;
    const stuckShards = leaders.filter((r) => r.node === node && r.hostId === host);
    const kept = leaders.filter((r) => !(r.node === node && r.hostId === host)).map((r) => `${r.shard}:${r.node}@${r.term}`).sort();
    assert.ok(stuckShards.length >= 1, 'the host chosen leads a shard');

    const stalled = c.nodes[i]!.hostPool.stallHost(host, STALL_MS);
    try {
      await waitFor('the shards the stuck host led are led on other nodes', async () => {
        const now = (await replicas(i)).filter((r) => r.role === 'leader');
        return stuckShards.every((s) => now.some((r) => r.shard === s.shard && r.term > s.term));
      }, STALL_MS - 2000);
      // The other nodes hear from the node's other host, not from the stuck one.
      await new Promise((r) => setTimeout(r, 1000));
      for (const [j, n] of c.nodes.entries()) {
        if (j === i) continue;
        for (const h of await n!.hostPool.stats()) {
          const heard = h.peerHostsHeardMsAgo ?? {};
          assert.ok((heard[`${node}/${host}`] ?? Infinity) >= 1000, `n${j + 1} host ${h.hostId} heard from ${node}/${host} ${heard[`${node}/${host}`]} ms ago, while it is stuck`);
          assert.ok((heard[`${node}/${1 - host}`] ?? Infinity) < 700, `n${j + 1} host ${h.hostId} heard from ${node}/${1 - host} ${heard[`${node}/${1 - host}`]} ms ago`);
          assert.ok((h.peersHeardMsAgo?.[node] ?? Infinity) < 700, `n${j + 1} host ${h.hostId} heard from ${node} as a node`);
        }
      }
      // The leaders of the other shards, those on the stuck host's node included, were not deposed.
      const still = (await replicas(i)).filter((r) => r.role === 'leader').map((r) => `${r.shard}:${r.node}@${r.term}`);
      for (const l of kept.filter((k) => !k.includes(`:${node}@`))) assert.ok(still.includes(l), `${l} still leads`);
    } finally {
      await stalled;
    }
    const keptOnNode = kept.filter((k) => k.includes(`:${node}@`));
    const now = (await replicas()).filter((r) => r.role === 'leader').map((r) => `${r.shard}:${r.node}@${r.term}`);
    for (const l of keptOnNode) assert.ok(now.includes(l), `${l}, on the stuck host's node, still leads`);
    const vol = c.client.volume('h');
    await Promise.all(Array.from({ length: SHARDS }, (_, k) => vol.write(k * STRIPE, new Uint8Array(4096).fill(2))));
    for (let k = 0; k < SHARDS; k++) assert.equal((await vol.read(k * STRIPE))[0], 2);
  });
});
