/**
 * The cluster status's merge (mergeClusterStatus) and its view (formatStatus): a shard is
 * healthy only with every replica reported up and not repairing, also in a reply with less
 * detail.
 */
import { strict as assert } from 'node:assert';
import { encode } from '../../messages/codec';
import { mergeClusterStatus, type StatusParts } from '../../cluster/api-router';
import { formatStatus } from '../../observability/status';

type Shard = { shard: number; state: string; replicas?: Array<Record<string, unknown>>; replicaCount?: number };
type Volume = { name: string; shards: Shard[]; shardCount?: number; shardsUp?: number; shardsDegraded?: number; shardsUnavailable?: number };

const nodeView = (id: string, shards: Array<Record<string, unknown>>): Record<string, unknown> => ({
  node: { id, cluster: 'c', version: 'test', uptimeMs: 1000, controller: id === 'n1', healthy: true },
  hosts: [{ hostId: 0, ok: true, restarts: 0 }],
  shards,
});

const replica = (volumeId: string, shard: number, role: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  volumeId, shard, role, state: 'up', term: 2, commitLsn: 10, appliedLsn: 10, ...extra,
});

/**
 * Volume `a` (3 replicas, 4 shards): shard 0's follower on n3 is not reported (n3 is dead: only the
 * leader's lag names it); shard 1's follower on n2 is repairing; shards 2 and 3 are healthy.
 */
function parts(): StatusParts {
  const n1: Array<Record<string, unknown>> = [];
  const n2: Array<Record<string, unknown>> = [];
  for (let shard = 0; shard < 4; shard++) {
    n1.push(replica('va', shard, 'leader', { lag: { n2: 0, n3: shard === 0 ? 7 : 0 } }));
    n2.push(replica('va', shard, 'follower', shard === 1 ? { repairing: true } : {}));
  }
  const n3Shards = [1, 2, 3].map((shard) => replica('va', shard, 'follower'));
  return {
    self: { id: 'n1', cluster: 'c', version: 'test', uptimeMs: 1000 },
    nodes: [nodeView('n1', n1), nodeView('n2', n2), nodeView('n3', n3Shards)],
    members: [{ nodeId: 'n1', live: true }, { nodeId: 'n2', live: true }, { nodeId: 'n3', live: false }],
    catalog: [{ name: 'a', id: 'va', pageCount: 1024, pageSize: 4096, shards: 4, stripePages: 8, replicas: 3 }],
    controllerReachable: true,
  };
}

describe('cluster status merge (mergeClusterStatus)', () => {
  it('full: every replica listed; a repairing one and a missing one make their shards not ok', () => {
    const full = mergeClusterStatus(parts(), 1 << 20);
    assert.equal(full.detail, 'full');
    const shards = (full.volumes as Volume[])[0]!.shards;
    assert.deepEqual(shards.map((s) => s.replicas!.length), [2, 3, 3, 3]);
    assert.equal(shards[1]!.replicas!.find((r) => r.node === 'n2')!.repairing, true);
    const text = formatStatus(full, { nowMs: 0 });
    assert.match(text, /\n +0 .*degraded: n3 missing/);
    assert.match(text, /\n +1 .*degraded: n2 repairing/);
    assert.match(text, /\n +1 +n2 +follower +repairing .*lost records: no vote until repaired/);
    assert.match(text, /\(2 shards not ok\)/);
  });

  it('a member the controller has not heard from since it started (no last seen) is shown dead', () => {
    const p = parts();
    p.nodes = p.nodes.slice(0, 2);
    p.members = [{ nodeId: 'n1', hosts: 1, lastSeenMs: 1, silentMs: 250, live: true }, { nodeId: 'n2', hosts: 1, lastSeenMs: 1, live: true }, { nodeId: 'n3', live: false }];
    const text = formatStatus(mergeClusterStatus(p, 1 << 20), { nowMs: 2001 });
    // The controller's own measure of the silence, not the status's clock against its.
    assert.match(text, /\n +n1 +up .* 0\.3s ago/);
    assert.match(text, /\n +n2 +up .* 2\.0s ago/);
    assert.match(text, /NODES \(3, 1 dead\)/);
    assert.match(text, /\n +n3 +DEAD +- +- +- +- +- +no heartbeat/);
    assert.match(text, /\n +0 +n3 +- +missing .*node DEAD/);
  });

  it('degraded-replicas: only the shards with every replica up and reported drop their replica lists', () => {
    const full = mergeClusterStatus(parts(), 1 << 20);
    const reply = mergeClusterStatus(parts(), encode(full).length - 1);
    assert.equal(reply.detail, 'degraded-replicas');
    const shards = (reply.volumes as Volume[])[0]!.shards;
    assert.deepEqual(shards.map((s) => [s.replicas?.length, s.replicaCount]), [[2, undefined], [3, undefined], [undefined, 3], [undefined, 3]]);
    const text = formatStatus(reply, { nowMs: 0 });
    assert.match(text, /\n +0 .*degraded: n3 missing/);
    assert.match(text, /\n +1 .*degraded: n2 repairing/);
    assert.match(text, /\n +2 +n1 +2 +10 +10 +3\/3 +0 +ok/);
    assert.match(text, /\(2 shards not ok\)/);
  });

  it('summary: the shards counted by state, those missing or repairing a replica as degraded', () => {
    const full = mergeClusterStatus(parts(), 1 << 20);
    const degraded = mergeClusterStatus(parts(), encode(full).length - 1);
    const reply = mergeClusterStatus(parts(), encode(degraded).length - 1);
    assert.equal(reply.detail, 'summary');
    const v = (reply.volumes as Volume[])[0]!;
    assert.deepEqual([v.shards, v.shardCount, v.shardsUp, v.shardsDegraded, v.shardsUnavailable], [[], 4, 4, 2, 0]);
    assert.match(formatStatus(reply, { nowMs: 0 }), /a +id=va +1024 pages × 4096 B +shards=4 +replicas=3 +\(2 shards not ok\)/);
  });
});
