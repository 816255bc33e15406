/**
 * The cluster status's merge (mergeClusterStatus) and its view (formatStatus): a shard is
 * healthy only with every replica reported up and not repairing, also in a reply with less
 * detail.
 */
import { strict as assert } from 'node:assert';
import { encode } from '../../messages/codec';
import { joinNodeStatus, mergeClusterStatus, splitNodeStatus, UNLISTED_REPLICAS_SHOWN_MAX, type StatusParts } from '../../cluster/api-router';
import { formatStatus } from '../../observability/status';
import { compactStatus, downReplicasView, nodeStatusPart } from '../../cluster/node';
import { validateNodeStatusRequest } from '../../messages/control';
import { ProtocolError } from '../../messages/errors';
import { SHARDS_MAX } from '../../messages/api';
import { CATALOG_VOLUME_ID } from '../../cluster/catalog-shard';

type Shard = { shard: number; state: string; replicas?: Array<Record<string, unknown>>; replicaCount?: number };
type Volume = { name: string; shards: Shard[]; shardCount?: number; shardsUp?: number; shardsDegraded?: number; shardsUnavailable?: number };

const nodeView = (id: string, shards: Array<Record<string, unknown>>): Record<string, unknown> => ({
  node: { id, cluster: 'c', version: 'test', uptimeMs: 1000, controller: id === 'n1', healthy: true },
  hosts: [{ hostId: 0, ok: true, restarts: 0 }],
  shards,
});

const replica = (volumeId: string, shard: number, role: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  volumeId, shard, role, state: 'up', term: 2, commitLsn: 10, appliedLsn: 10, storage: { logBytes: 4096, imageBytes: 8192, imagePages: 2 }, ...extra,
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

describe('a node\'s replicas reported down, as the controller\'s members show them (downReplicasView)', () => {
  it('counts every one, and times the first the controller would replace: never the only copy of a shard', () => {
    const down = new Map([['va.0', 1_000], ['vs.0', 500], ['va.1', 3_000]]);
    const sole = (key: string): boolean => key === 'vs.0';
    assert.deepEqual(downReplicasView(down, 10_000, 600_000, sole), { replicasDown: 3, replicasDownRepairInMs: 591_000 });
    assert.deepEqual(downReplicasView(down, 10_000, 600_000, () => false), { replicasDown: 3, replicasDownRepairInMs: 590_500 });
    assert.deepEqual(downReplicasView(new Map([['vs.0', 500]]), 10_000, 600_000, sole), { replicasDown: 1 }, 'only a sole copy down: not replaced');
    assert.deepEqual(downReplicasView(down, 10_000, 0, () => false), { replicasDown: 3 }, 'repairs off');
    assert.deepEqual(downReplicasView(down, 700_000, 600_000, sole), { replicasDown: 3, replicasDownRepairInMs: 0 });
    assert.deepEqual(downReplicasView(new Map(), 10_000, 600_000, sole), {});
  });
});

describe('cluster status merge (mergeClusterStatus)', () => {
  it('the only copy of a shard repairing (its log damaged, or its storage lost) is shown waiting for an operator', () => {
    const sole: StatusParts = {
      self: { id: 'n1', cluster: 'c', version: 'test', uptimeMs: 1000 },
      nodes: [nodeView('n1', [replica('vs', 0, 'follower', { repairing: true })])],
      members: [{ nodeId: 'n1', live: true }],
      catalog: [{ name: 's', id: 'vs', pageCount: 64, pageSize: 4096, shards: 1, stripePages: 8, replicas: 1 }],
      controllerReachable: true,
    };
    const text = formatStatus(mergeClusterStatus(sole, 1 << 20), { nowMs: 0 });
    assert.match(text, /\n +0 +n1 +follower +repairing .*the only copy lost records: waits for force-vote/);
  });

  it('full: every replica listed; a repairing one and a missing one make their shards not ok', () => {
    const full = mergeClusterStatus(parts(), 1 << 20);
    assert.equal(full.detail, 'full');
    const shards = (full.volumes as Volume[])[0]!.shards;
    assert.deepEqual(shards.map((s) => s.replicas!.length), [2, 3, 3, 3]);
    assert.equal(shards[1]!.replicas!.find((r) => r.node === 'n2')!.repairing, true);
    const text = formatStatus(full, { nowMs: 0 });
    assert.match(text, /\n +0 .*degraded: n3 missing/);
    assert.match(text, /\n +1 .*degraded: n2 repairing/);
    assert.match(text, /\n +1 +n2 +follower +repairing .*lost records or storage: no vote until repaired/);
    assert.match(text, /\(2 shards not ok\)/);
    // The bytes of the 11 replicas reported, 12 KiB each, together.
    assert.match(text, /a +id=va +1024 pages × 4096 B +shards=4 +replicas=3 +stored=132\.0 KiB +\(2 shards not ok\)/);
  });

  it('replicas of volumes the catalog does not list are named (up to 64) and counted; none when the catalog is not at hand', () => {
    const p = parts();
    // A volume opened on n2 by hand (shards.open), of 70 shards, and one on n1.
    for (let shard = 0; shard < 70; shard++) (p.nodes[1]!.shards as Array<Record<string, unknown>>).push(replica('vx', shard, 'leader'));
    (p.nodes[0]!.shards as Array<Record<string, unknown>>).push(replica('vy', 0, 'leader'));
    const full = mergeClusterStatus(p, 1 << 20);
    assert.equal(full.unlistedReplicaCount, 71);
    const named = full.unlistedReplicas as Array<{ node: string; volumeId: string; shard: number }>;
    assert.equal(named.length, UNLISTED_REPLICAS_SHOWN_MAX);
    assert.deepEqual(named.slice(0, 2), [{ node: 'n1', volumeId: 'vy', shard: 0 }, { node: 'n2', volumeId: 'vx', shard: 0 }]);
    assert.ok(named.every((r) => r.volumeId !== 'va'), 'a listed volume\'s replicas are not among them');
    const text = formatStatus(full, { nowMs: 0 });
    assert.match(text, /REPLICAS OF VOLUMES THE CATALOG DOES NOT LIST \(71\)/);
    assert.match(text, /\n +n2 +volume vx shard 0\n/);
    assert.match(text, /… 7 more/);
    // Without the controller, or without its whole list, nothing can be said to be unlisted.
    for (const without of [{ controllerReachable: false, catalog: [] }, { catalogError: 'too_large', catalog: [] }]) {
      const merged = mergeClusterStatus({ ...p, ...without }, 1 << 20);
      assert.equal(merged.unlistedReplicaCount, undefined, JSON.stringify(without));
      assert.doesNotMatch(formatStatus(merged, { nowMs: 0 }), /CATALOG DOES NOT LIST/);
    }
    // Every replica listed: no such part.
    assert.equal(mergeClusterStatus(parts(), 1 << 20).unlistedReplicas, undefined);
  });

  it('a replica whose storage was lost names the peers whose term it waits for, through the node\'s compact status', () => {
    const p = parts();
    const n2 = p.nodes[1]!;
    (n2.shards as Array<Record<string, unknown>>)[1] = replica('va', 1, 'follower', { repairing: true, awaitingTerms: ['n3'], lastLsn: 0 });
    // As a node answers in parts: only the merged fields of each shard travel.
    const compacted = compactStatus(n2);
    const sent = (compacted.shards as Array<Record<string, unknown>>).find((sh) => sh.shard === 1)!;
    assert.deepEqual(sent.awaitingTerms, ['n3']);
    assert.equal(sent.lastLsn, undefined, 'not a merged field');
    const full = mergeClusterStatus(p, 1 << 20);
    const r = (full.volumes as Volume[])[0]!.shards[1]!.replicas!.find((x) => x.node === 'n2')!;
    assert.deepEqual(r.awaitingTerms, ['n3']);
    assert.match(formatStatus(full, { nowMs: 0 }), /\n +1 +n2 +follower +repairing .*storage lost: no vote before the term of n3$/m);
    r.awaitingTerms = ['n1', 'n3'];
    assert.match(formatStatus(full, { nowMs: 0 }), /\n +1 +n2 +follower +repairing .*storage lost: no vote before the terms of n1, n3$/m);
  });

  it('a move of a replica: the leader\'s set and the one it changes from, through the node\'s compact status; a replica moved off is named so', () => {
    const p = parts();
    const joint = { members: ['n1', 'n2', 'n4'], prior: ['n1', 'n2', 'n3'] };
    // Shard 2 is changing its set (n3 to n4); shard 3's change is done, and n3 still holds its replica.
    const n1 = [replica('va', 2, 'leader', { config: joint }), replica('va', 3, 'leader', { config: { members: ['n1', 'n2', 'n4'] } })];
    const n2 = [replica('va', 2, 'follower', { config: joint }), replica('va', 3, 'follower', { config: { members: ['n1', 'n2', 'n4'] } })];
    const n3 = [replica('va', 2, 'follower', { config: { members: ['n1', 'n2', 'n3'] } }), replica('va', 3, 'follower', { config: { members: ['n1', 'n2', 'n3'] } })];
    const n4 = [replica('va', 2, 'follower', { config: joint }), replica('va', 3, 'follower', { config: { members: ['n1', 'n2', 'n4'] } })];
    p.nodes = [nodeView('n1', n1), nodeView('n2', n2), nodeView('n3', n3), nodeView('n4', n4)].map((n) => compactStatus(n));
    // The compact status keeps a leader's set, and a follower's during a change only.
    assert.deepEqual((p.nodes[1]!.shards as Array<Record<string, unknown>>).map((sh) => sh.config), [joint, undefined]);
    const full = mergeClusterStatus(p, 1 << 20);
    const shards = (full.volumes as Array<{ shards: Array<Record<string, unknown>> }>)[0]!.shards;
    assert.deepEqual(shards[2]!.members, ['n1', 'n2', 'n4']);
    assert.deepEqual(shards[2]!.priorMembers, ['n1', 'n2', 'n3']);
    assert.deepEqual(shards[3]!.members, ['n1', 'n2', 'n4']);
    assert.equal(shards[3]!.priorMembers, undefined);
    const text = formatStatus(full, { nowMs: 0 });
    assert.match(text, /\n +2 .*moving: n1,n2,n3 -> n1,n2,n4/);
    assert.match(text, /\n +3 +n3 +follower +up .*not a member: moved off \(destroyed soon\)/);
    assert.doesNotMatch(text, /\n +2 +n3 .*not a member/);
  });

  it('the catalog shard with no leader (a majority of the controller nodes dead): its members from a replica that reports, those not reporting shown missing', () => {
    const p = parts();
    const members = { members: ['n1', 'n2', 'n3'] };
    p.nodes = [nodeView('n1', [replica(CATALOG_VOLUME_ID, 0, 'follower', { config: members })])].map((n) => compactStatus(n));
    p.members = [{ nodeId: 'n1', live: true }, { nodeId: 'n2', live: false }, { nodeId: 'n3', live: false }];
    p.controllerReachable = false;
    p.catalog = [];
    const merged = mergeClusterStatus(p, 1 << 20) as { catalogShard: { replicas: number; shards: Array<Record<string, unknown>> } };
    assert.equal(merged.catalogShard.replicas, 3);
    assert.equal(merged.catalogShard.shards[0]!.state, 'no_leader');
    assert.deepEqual(merged.catalogShard.shards[0]!.members, ['n1', 'n2', 'n3']);
    const text = formatStatus(merged, { nowMs: 0 });
    assert.match(text, /replicas=3/);
    assert.match(text, /\n +0 +- +2 +10 +10 +1\/3 /);
    assert.match(text, /\n +0 +n2 +- +missing .*node DEAD/);
    assert.match(text, /\n +0 +n3 +- +missing .*node DEAD/);
  });

  it(`a catalog entry of more shards than a volume may have (SHARDS_MAX, ${SHARDS_MAX}) is shown with that many`, () => {
    const p = parts();
    const merged = mergeClusterStatus({ ...p, catalog: [{ ...p.catalog[0]!, shards: 1_000_000 }] }, 1 << 30) as { volumes: Volume[] };
    assert.equal(merged.volumes[0]!.shards.length, SHARDS_MAX);
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
    assert.match(text, /\n +n3 +DEAD +- +- +- +- +- +- +- +no heartbeat/);
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
    // The replicas of the healthy shards not listed: no sum of their storage, which would be a part.
    assert.doesNotMatch(text, /stored=/);
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

describe("a node's status in parts (a node of more shards than one message holds)", () => {
  const many = (id: string, count: number): Record<string, unknown> =>
    nodeView(id, Array.from({ length: count }, (_, i) => replica(`v${i % 7}`, i, i % 3 === 0 ? 'leader' : 'follower', { lag: i % 3 === 0 ? { n2: 0, n3: 1 } : {} })));

  it('is split into parts that each fit, repeat the node, and carry every shard once, in order', () => {
    const status = many('n1', 500);
    const bytesMax = 8 * 1024;
    assert.ok(encode(status).length > 3 * bytesMax, 'the whole does not fit');
    const parts = splitNodeStatus(status, bytesMax);
    assert.ok(parts.length >= 4);
    parts.forEach((p, i) => {
      assert.ok(encode(p).length <= bytesMax, `part ${i}: ${encode(p).length} bytes`);
      assert.equal(p.part, i);
      assert.equal(p.parts, parts.length);
      assert.deepEqual(p.node, status.node);
      assert.deepEqual(p.hosts, status.hosts);
    });
    assert.deepEqual(parts.flatMap((p) => p.shards as unknown[]), status.shards);
    // Joined again: the status as it was, without part numbers.
    assert.deepEqual(joinNodeStatus([...parts].reverse()), [status]);
  });

  it('a status that fits goes whole, and passes the join as it is', () => {
    const status = many('n2', 3);
    assert.deepEqual(splitNodeStatus(status, 1 << 20), [status]);
    assert.deepEqual(joinNodeStatus([status]), [status]);
  });

  it('parts of several nodes are joined per node; a node whose part is missing says so, and the merge shows its shards not reported', () => {
    const a = splitNodeStatus(many('n1', 300), 8 * 1024);
    const b = splitNodeStatus(many('n2', 300), 8 * 1024);
    const lost = b[1]!;
    const joined = joinNodeStatus([a[0]!, b[0]!, ...a.slice(1), ...b.slice(2), b[0]!]);
    assert.equal(joined.length, 2);
    const n1 = joined.find((n) => (n.node as { id: string }).id === 'n1')!;
    const n2 = joined.find((n) => (n.node as { id: string }).id === 'n2')!;
    assert.equal((n1.shards as unknown[]).length, 300);
    assert.equal(n1.partsMissing, undefined);
    assert.equal(n2.partsMissing, 1, 'one part of n2 did not arrive (a repeated part counts once)');
    assert.equal((n2.shards as unknown[]).length, 300 - (lost.shards as unknown[]).length);
    const merged = mergeClusterStatus(
      { self: n1.node as Record<string, unknown>, nodes: joined, members: [], catalog: [{ name: 'v0', id: 'v0', shards: 300, replicas: 1 }], controllerReachable: true },
      1 << 24,
    ) as { volumes: Volume[] };
    const reported = (lost.shards as Array<{ volumeId: string; shard: number }>).find((sh) => sh.volumeId === 'v0')!;
    const shard = merged.volumes[0]!.shards[reported.shard]!;
    // The lost part's shard of v0 is reported by n1 only.
    assert.deepEqual(shard.replicas!.map((r) => r.node), ['n1']);
  });

  it('answers that are not parts (no node id, bad part numbers) pass the join as they are', () => {
    const odd = [
      { shards: [] },
      { node: { id: 'x' }, part: 3, parts: 2, shards: [] },
      { node: { id: 'y' }, part: 0, parts: 0 },
      { node: { id: 'z' }, part: -1, parts: 2, shards: [] },
      { node: { id: 7 }, part: 0, parts: 1, shards: [] },
    ];
    assert.deepEqual(joinNodeStatus(odd), odd);
  });

  it('of a node\'s parts, a repeated one counts as it came first, and a stray one of another count is left out', () => {
    const a = splitNodeStatus(many('n1', 300), 8 * 1024);
    const repeated = { ...a[0]!, shards: [] };
    const stray = { ...a[0]!, part: a.length, parts: a.length + 1, shards: [{ volumeId: 'v9', shard: 0, role: 'leader', state: 'up' }] };
    const [joined] = joinNodeStatus([...a, repeated, stray]);
    assert.deepEqual(joined!.shards, a.flatMap((p) => p.shards as unknown[]));
    assert.equal(joined!.partsMissing, undefined);
  });
});

describe("a node's own status subject past one message (nodeStatusPart)", () => {
  // A node's full view: every field of each shard, and each host's per-shard mailbox list.
  const full = (count: number): Record<string, unknown> => {
    const shards = Array.from({ length: count }, (_, i) =>
      replica(`v${i % 5}`, i, i % 2 === 0 ? 'leader' : 'follower', { hostId: i % 2, volumeName: `vol${i % 5}`, lag: {}, leaseValid: true }),
    );
    const mailbox = (host: number): Array<Record<string, unknown>> =>
      shards.filter((sh) => sh.hostId === host).map((sh) => ({ volumeId: sh.volumeId, shard: sh.shard, leader: sh.role === 'leader', depth: 1, bytes: 4096, admitted: 10, rejectedOverloaded: 2, errors: 1 }));
    return { ...nodeView('n1', shards), hosts: [0, 1].map((hostId) => ({ hostId, ok: true, restarts: 0, mailbox: mailbox(hostId) })) };
  };

  it('a status that fits is answered whole, as it is', () => {
    const status = full(4);
    assert.equal(nodeStatusPart(status, 0, 1 << 20), status);
  });

  it('a larger one in parts that each fit, every shard once with all its fields and its own mailbox, the hosts with theirs summed', () => {
    const status = full(300);
    const bytesMax = 8 * 1024;
    assert.ok(encode(status).length > 4 * bytesMax);
    const first = nodeStatusPart(status, 0, bytesMax);
    const count = first.parts as number;
    assert.ok(count >= 4, String(count));
    const parts = Array.from({ length: count }, (_, i) => nodeStatusPart(status, i, bytesMax));
    parts.forEach((p, i) => {
      assert.ok(encode(p).length <= bytesMax, `part ${i}: ${encode(p).length} bytes`);
      assert.deepEqual([p.part, p.parts], [i, count]);
      assert.deepEqual(p.node, status.node);
      assert.deepEqual(p.hosts, [0, 1].map((hostId) => ({ hostId, ok: true, restarts: 0, mailboxes: { count: 150, depth: 150, bytes: 150 * 4096, rejectedOverloaded: 300, errors: 150 } })));
    });
    const shards = parts.flatMap((p) => p.shards as Array<Record<string, unknown>>);
    assert.deepEqual(
      shards.map(({ mailbox, ...sh }) => sh),
      status.shards,
    );
    assert.ok(shards.every((sh) => JSON.stringify(sh.mailbox) === JSON.stringify({ leader: sh.role === 'leader', depth: 1, bytes: 4096, admitted: 10, rejectedOverloaded: 2, errors: 1 })));
  });

  it('one part when its mailbox lists summed make it fit; a part past the last is out_of_range, naming how many', () => {
    const status = full(40);
    const bytesMax = encode(status).length - 1;
    const only = nodeStatusPart(status, 0, bytesMax);
    assert.deepEqual([only.part, only.parts, (only.shards as unknown[]).length], [0, 1, 40]);
    assert.throws(
      () => nodeStatusPart(status, 1, bytesMax),
      (e: unknown) => e instanceof ProtocolError && e.code === 'out_of_range' && /part 1 asked for; it has 1 part/.test(e.message) && (e.details as { parts?: number }).parts === 1,
    );
    assert.throws(() => nodeStatusPart(full(3), 1, 1 << 20), (e: unknown) => e instanceof ProtocolError && e.code === 'out_of_range');
  });

  it('its request: nothing or a part number; anything else is refused', () => {
    assert.deepEqual(validateNodeStatusRequest({}), {});
    assert.deepEqual(validateNodeStatusRequest({ part: 3 }), { part: 3 });
    for (const bad of [null, [], { part: -1 }, { part: 1.5 }, { part: '1' }]) {
      assert.throws(() => validateNodeStatusRequest(bad), (e: unknown) => e instanceof ProtocolError && (e.code === 'bad_request' || e.code === 'out_of_range'), JSON.stringify(bad));
    }
  });
});
