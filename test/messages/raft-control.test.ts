import { strict as assert } from 'node:assert';
import { validateConfig, validateRaftRequest, validateRaftReply, RAFT_RECORDS_PER_APPEND_MAX, RAFT_SNAPSHOT_CHUNK_BYTES_MAX } from '../../messages/raft';
import { ASSIGNMENTS_PAGE_MAX, DOWN_REPLICAS_PER_HEARTBEAT_MAX, validateShardDigest, validateShardDigestReply, validateShardHandover, validateShardHandoverReply, validateNodeDrain, validateNodeDrainReply, validateRebalance, validateRebalanceReply, validateHeartbeat, validateShardsOpen, validateShardsOpenReply, NOT_COPIED_REASON_MAX, validateShardsDestroy, validateAssignmentsReply, validateNodeRecordsReply, validateShardSeed, validateVolumeGrow, validateShardForceVoteReply, validateShardMove, validateCatalogRecoverRequest, validateControllers } from '../../messages/control';
import { ProtocolError } from '../../messages/errors';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ProtocolError, `expected a ProtocolError, got ${String(e)}`);
    return e.code;
  }
  assert.fail('expected the validator to throw');
}

const rec = (term: number) => ({ term, kind: 1, payload: new Uint8Array(8) });
const append = (extra: Record<string, unknown> = {}) => ({ type: 'append', term: 3, leader: 'n1', prevLsn: 4, prevTerm: 2, records: [rec(2), rec(3)], commitLsn: 4, ...extra });

describe('replication message validators', () => {
  it('accept well-formed vote, append and snapshot requests and their replies', () => {
    assert.deepEqual(validateRaftRequest({ type: 'vote', term: 2, candidate: 'n2', lastLsn: 9, lastTerm: 1 }), { type: 'vote', term: 2, candidate: 'n2', lastLsn: 9, lastTerm: 1 });
    assert.deepEqual(validateRaftRequest({ type: 'vote', term: 2, candidate: 'n2', lastLsn: 9, lastTerm: 1, transfer: true }), { type: 'vote', term: 2, candidate: 'n2', lastLsn: 9, lastTerm: 1, transfer: true });
    assert.deepEqual(validateRaftRequest({ type: 'timeoutNow', term: 4, leader: 'n1' }), { type: 'timeoutNow', term: 4, leader: 'n1' });
    assert.deepEqual(validateRaftReply('timeoutNow', { term: 4, ok: true }), { term: 4, ok: true });
    assert.equal((validateRaftRequest(append()) as { records: unknown[] }).records.length, 2);
    const snap = validateRaftRequest({ type: 'snapshot', term: 3, leader: 'n1', lsn: 10, lastTerm: 2, bytes: 100, offset: 90, data: new Uint8Array(10), done: true });
    assert.equal(snap.type, 'snapshot');
    assert.deepEqual(validateRaftReply('append', { term: 3, success: true, matchLsn: 6, lastLsn: 6 }), { term: 3, success: true, matchLsn: 6, lastLsn: 6 });
    assert.deepEqual(validateRaftReply('vote', { term: 3, granted: false }), { term: 3, granted: false });
    // The answer to a term-0 prevote (the probe of a replica whose storage was lost) carries the last LSN.
    assert.deepEqual(validateRaftReply('prevote', { term: 3, granted: false, lastLsn: 0 }), { term: 3, granted: false, lastLsn: 0 });
    assert.deepEqual(validateRaftReply('prevote', { term: 3, granted: false, lastLsn: 12 }), { term: 3, granted: false, lastLsn: 12 });
    // With the answering replica's members (both sets during a change).
    assert.deepEqual(validateRaftReply('prevote', { term: 3, granted: false, lastLsn: 0, members: ['n1', 'n4'] }), { term: 3, granted: false, lastLsn: 0, members: ['n1', 'n4'] });
    // The last chunk of an image carries the replica set at its LSN: sorted, a prior set equal to it dropped.
    const withConfig = validateRaftRequest({ type: 'snapshot', term: 3, leader: 'n1', lsn: 10, lastTerm: 2, bytes: 10, offset: 0, data: new Uint8Array(10), done: true, config: { members: ['n4', 'n1', 'n2'], prior: ['n3', 'n2', 'n1'] } });
    assert.deepEqual((withConfig as { config?: unknown }).config, { members: ['n1', 'n2', 'n4'], prior: ['n1', 'n2', 'n3'] });
    assert.deepEqual(validateConfig({ members: ['n2', 'n1'], prior: ['n1', 'n2'] }), { members: ['n1', 'n2'] });
    // At the bounds: a set of 7, and an answer naming both sets of a change of 7 to 7 others.
    const seven = (from: number): string[] => Array.from({ length: 7 }, (_, i) => `n${String.fromCharCode(97 + from + i)}`);
    assert.deepEqual(validateConfig({ members: seven(0), prior: seven(7) }), { members: seven(0), prior: seven(7) });
    assert.deepEqual(validateRaftReply('vote', { term: 3, granted: true, members: [...seven(0), ...seven(7)] }), { term: 3, granted: true, members: [...seven(0), ...seven(7)] });
  });

  it('refuse every malformed field with a typed error', () => {
    assert.equal(code(() => validateRaftRequest('vote')), 'bad_request');
    assert.equal(code(() => validateRaftRequest({ type: 'gossip' })), 'bad_request');
    assert.equal(code(() => validateRaftRequest({ type: 'vote', term: -1, candidate: 'n2', lastLsn: 0, lastTerm: 0 })), 'bad_request');
    assert.equal(code(() => validateRaftRequest({ type: 'vote', term: 1, candidate: 'n.2', lastLsn: 0, lastTerm: 0 })), 'bad_request');
    assert.equal(code(() => validateRaftRequest({ type: 'vote', term: 1, candidate: 'n2', lastLsn: 0, lastTerm: 0, transfer: false })), 'bad_request');
    assert.equal(code(() => validateRaftRequest({ type: 'prevote', term: 1, candidate: 'n2', lastLsn: 0, lastTerm: 0, transfer: true })), 'bad_request', 'a prevote is never handed over');
    assert.equal(code(() => validateRaftRequest({ type: 'timeoutNow', term: 1 })), 'bad_request');
    assert.equal(code(() => validateRaftRequest({ type: 'timeoutNow', term: 2 ** 49, leader: 'n1' })), 'out_of_range');
    assert.equal(code(() => validateRaftReply('timeoutNow', { term: 1, ok: 'yes' })), 'bad_request');
    assert.equal(code(() => validateRaftRequest(append({ records: 'x' }))), 'bad_request');
    assert.equal(code(() => validateRaftRequest(append({ records: [{ term: 3, kind: 256, payload: new Uint8Array(1) }] }))), 'bad_request');
    assert.equal(code(() => validateRaftRequest(append({ records: [{ term: 3, kind: 1, payload: 'not bytes' }] }))), 'bad_request');
    assert.equal(code(() => validateRaftRequest(append({ records: [rec(3), rec(2)] }))), 'bad_request', 'terms must not decrease');
    assert.equal(code(() => validateRaftRequest(append({ records: [rec(4)] }))), 'bad_request', 'no record above the leader\'s term');
    assert.equal(code(() => validateRaftRequest(append({ records: [rec(1)] }))), 'bad_request', 'no record below prevTerm');
    assert.equal(code(() => validateRaftRequest(append({ records: new Array(RAFT_RECORDS_PER_APPEND_MAX + 1).fill(rec(3)) }))), 'too_large');
    assert.equal(code(() => validateRaftRequest({ type: 'snapshot', term: 3, leader: 'n1', lsn: 10, lastTerm: 2, bytes: 100, offset: 95, data: new Uint8Array(10), done: true })), 'out_of_range');
    // A chunk over the bound, within the image: too_large (a chunk at the bound is taken).
    const big = RAFT_SNAPSHOT_CHUNK_BYTES_MAX + 1;
    assert.equal(code(() => validateRaftRequest({ type: 'snapshot', term: 3, leader: 'n1', lsn: 10, lastTerm: 2, bytes: 2 * big, offset: 0, data: new Uint8Array(big), done: false })), 'too_large');
    assert.equal(validateRaftRequest({ type: 'snapshot', term: 3, leader: 'n1', lsn: 10, lastTerm: 2, bytes: 2 * big, offset: 0, data: new Uint8Array(big - 1), done: false }).type, 'snapshot');
    assert.equal(code(() => validateRaftReply('append', { term: 3, success: 'yes', lastLsn: 1 })), 'bad_request');
    assert.equal(code(() => validateRaftReply('prevote', { term: 3, granted: false, lastLsn: -1 })), 'bad_request');
    assert.equal(code(() => validateRaftReply('prevote', { term: 3, granted: false, lastLsn: '0' })), 'bad_request');
    assert.equal(code(() => validateRaftReply('prevote', { term: 3, granted: false, members: ['n.1'] })), 'bad_request');
    assert.equal(code(() => validateRaftReply('prevote', { term: 3, granted: false, members: new Array(15).fill('n1') })), 'bad_request');
    // A replica set: 1..7 distinct ids.
    assert.equal(code(() => validateConfig({ members: [] })), 'bad_request');
    assert.equal(code(() => validateConfig({ members: ['n1', 'n1'] })), 'bad_request');
    assert.equal(code(() => validateConfig({ members: new Array(8).fill(0).map((_, i) => `n${i}`) })), 'bad_request');
    assert.equal(code(() => validateConfig({ members: ['n1'], prior: 'n2' })), 'bad_request');
    assert.equal(code(() => validateRaftRequest({ type: 'snapshot', term: 3, leader: 'n1', lsn: 10, lastTerm: 2, bytes: 10, offset: 0, data: new Uint8Array(10), done: true, config: { members: 'n1' } })), 'bad_request');
  });
});

describe('control message validators', () => {
  const assignment = { volumeId: 'v1', volumeName: 'db', shard: 1, shards: 2, pageCount: 64, pageSize: 4096, stripePages: 8, hostId: 0, members: ['n1', 'n2', 'n3'] };

  it('accept well-formed heartbeats, assignments and destroy requests', () => {
    assert.deepEqual(validateHeartbeat({ nodeId: 'n1', hosts: 2 }), { nodeId: 'n1', hosts: 2 });
    assert.deepEqual(validateHeartbeat({ nodeId: 'n1', hosts: 2, zone: 'eu-west-1a' }), { nodeId: 'n1', hosts: 2, zone: 'eu-west-1a' });
    assert.equal(code(() => validateHeartbeat({ nodeId: 'n1', hosts: 2, zone: 'rack 1' })), 'bad_request');
    assert.equal(code(() => validateHeartbeat({ nodeId: 'n1', hosts: 2, zone: 7 })), 'bad_request');
    const down = [{ volumeId: 'v1', shard: 3, forMs: 12_000 }];
    assert.deepEqual(validateHeartbeat({ nodeId: 'n1', hosts: 2, down }), { nodeId: 'n1', hosts: 2, down });
    assert.equal(code(() => validateHeartbeat({ nodeId: 'n1', hosts: 2, down: Array(DOWN_REPLICAS_PER_HEARTBEAT_MAX + 1).fill(down[0]) })), 'too_large');
    assert.equal(code(() => validateHeartbeat({ nodeId: 'n1', hosts: 2, down: [{ ...down[0], shard: 256 }] })), 'out_of_range');
    assert.equal(code(() => validateHeartbeat({ nodeId: 'n1', hosts: 2, down: [{ ...down[0], forMs: -1 }] })), 'bad_request');
    assert.equal(code(() => validateHeartbeat({ nodeId: 'n1', hosts: 2, down: [{ shard: 1, forMs: 0 }] })), 'bad_request');
    assert.equal(code(() => validateHeartbeat({ nodeId: 'n1', hosts: 2, down: { volumeId: 'v1' } })), 'bad_request');
    assert.deepEqual(validateShardsOpen({ shards: [assignment] }).shards[0], assignment);
    // A node's answer to an open: an older node's `{ ok: true }`, or the branch replicas it could not copy, and why.
    assert.deepEqual(validateShardsOpenReply({ ok: true }), { ok: true });
    const notCopied = [{ volumeId: 'v2', shard: 1, reason: 'the copy could take 9 bytes', noSpace: true }];
    assert.deepEqual(validateShardsOpenReply({ ok: true, notCopied }), { ok: true, notCopied });
    assert.deepEqual(validateShardsDestroy({ volumeId: 'v1', shards: [0, 1] }), { volumeId: 'v1', shards: [0, 1] });
    assert.equal(validateAssignmentsReply({ epoch: 3, shards: [assignment], tombstones: ['v9'] }).epoch, 3);
  });

  it('refuse malformed ones with typed errors', () => {
    assert.equal(code(() => validateHeartbeat({ nodeId: 'n 1', hosts: 2 })), 'bad_request');
    assert.equal(code(() => validateHeartbeat({ nodeId: 'n1', hosts: 0 })), 'bad_request');
    assert.equal(code(() => validateHeartbeat({ nodeId: 'n1', hosts: 65 })), 'out_of_range');
    assert.equal(code(() => validateShardsOpen({ shards: [{ ...assignment, shard: 2 }] })), 'out_of_range', 'shard beyond the volume');
    assert.equal(code(() => validateShardsOpen({ shards: [{ ...assignment, pageSize: 5000 }] })), 'bad_request');
    assert.equal(code(() => validateShardsOpen({ shards: [{ ...assignment, members: 'n1' }] })), 'bad_request');
    assert.equal(code(() => validateShardsOpen({ shards: [{ ...assignment, members: ['n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7', 'n8'] }] })), 'too_large');
    assert.equal(code(() => validateShardsDestroy({ volumeId: 'v/1', shards: [0] })), 'bad_request');
    const nc = { volumeId: 'v2', shard: 1, reason: 'full', noSpace: true };
    assert.equal(code(() => validateShardsOpenReply({})), 'bad_request');
    assert.equal(code(() => validateShardsOpenReply({ ok: true, notCopied: [{ ...nc, noSpace: 'yes' }] })), 'bad_request');
    assert.equal(code(() => validateShardsOpenReply({ ok: true, notCopied: [{ ...nc, shard: 256 }] })), 'out_of_range');
    assert.equal(code(() => validateShardsOpenReply({ ok: true, notCopied: [{ ...nc, volumeId: 'v 2' }] })), 'bad_request');
    assert.equal(code(() => validateShardsOpenReply({ ok: true, notCopied: [{ ...nc, reason: 'x'.repeat(NOT_COPIED_REASON_MAX + 1) }] })), 'bad_request');
    assert.equal(code(() => validateShardsOpenReply({ ok: true, notCopied: nc })), 'bad_request');
    // No members, members twice, and a volume name that is not one: refused, not cut or emptied.
    assert.equal(code(() => validateShardsOpen({ shards: [{ ...assignment, members: [] }] })), 'bad_request');
    assert.equal(code(() => validateShardsOpen({ shards: [{ ...assignment, members: ['n1', 'n1', 'n1'] }] })), 'bad_request');
    assert.equal(code(() => validateShardsOpen({ shards: [{ ...assignment, volumeName: 'x'.repeat(200) }] })), 'bad_request');
    assert.equal(code(() => validateShardsOpen({ shards: [{ ...assignment, volumeName: 7 }] })), 'bad_request');
    // Pages of assignments: at most ASSIGNMENTS_PAGE_MAX each, and `next` after the first.
    assert.equal(code(() => validateAssignmentsReply({ epoch: 3, shards: new Array(ASSIGNMENTS_PAGE_MAX + 1).fill(assignment), tombstones: [] })), 'too_large');
    assert.equal(code(() => validateAssignmentsReply({ epoch: 3, shards: [], tombstones: [], next: 0 })), 'bad_request');
    assert.equal(validateAssignmentsReply({ epoch: 3, shards: [assignment], tombstones: [], next: 1 }).next, 1);
    const issued = validateAssignmentsReply({ epoch: 3, shards: [], tombstones: [], catalog: 'a1b2', issuedBelow: 40 });
    assert.equal(issued.catalog, 'a1b2');
    assert.equal(issued.issuedBelow, 40);
    assert.equal(code(() => validateAssignmentsReply({ epoch: 3, shards: [], tombstones: [], catalog: 'a b' })), 'bad_request');
    assert.equal(code(() => validateAssignmentsReply({ epoch: 3, shards: [], tombstones: [], issuedBelow: 0 })), 'bad_request');
  });

  it('an assignment of a volume whose create was not answered carries placing: true, kept by the validation; anything else there is refused', () => {
    const placing = { ...assignment, placing: true };
    assert.deepEqual(validateShardsOpen({ shards: [placing] }).shards[0], placing);
    assert.equal(validateAssignmentsReply({ epoch: 3, shards: [placing], tombstones: [] }).shards[0]!.placing, true);
    assert.equal(validateNodeRecordsReply({ nodeId: 'n1', hosts: 1, shards: [placing] }).shards[0]!.placing, true);
    assert.equal('placing' in validateShardsOpen({ shards: [assignment] }).shards[0]!, false, 'absent: placed');
    assert.equal(code(() => validateShardsOpen({ shards: [{ ...assignment, placing: false }] })), 'bad_request');
    assert.equal(code(() => validateShardsOpen({ shards: [{ ...assignment, placing: 'yes' }] })), 'bad_request');
  });

  it("a branch volume's assignment names its seed: the parent's volume id and the shard's LSN, each checked with its path", () => {
    const seeded = { ...assignment, seed: { volumeId: 'v0-ab12', lsn: 40 } };
    assert.deepEqual(validateShardsOpen({ shards: [seeded] }).shards[0], seeded);
    assert.deepEqual(validateAssignmentsReply({ epoch: 3, shards: [seeded], tombstones: [] }).shards[0]!.seed, { volumeId: 'v0-ab12', lsn: 40 });
    assert.deepEqual(validateNodeRecordsReply({ nodeId: 'n1', hosts: 1, shards: [seeded] }).shards[0]!.seed, { volumeId: 'v0-ab12', lsn: 40 });
    assert.deepEqual(validateShardSeed({ volumeId: 'v1', lsn: 0 }, 'seed'), { volumeId: 'v1', lsn: 0 });
    assert.equal('seed' in validateShardsOpen({ shards: [assignment] }).shards[0]!, false);
    const refused = (seed: unknown, path: string): void => {
      assert.throws(() => validateShardsOpen({ shards: [{ ...assignment, seed }] }), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && (e.details as { path?: string }).path === `shards[0].seed${path}`, JSON.stringify(seed));
    };
    refused('v1', '');
    refused({ lsn: 4 }, '.volumeId');
    refused({ volumeId: 'v.1', lsn: 4 }, '.volumeId');
    refused({ volumeId: 'v1' }, '.lsn');
    refused({ volumeId: 'v1', lsn: -1 }, '.lsn');
    refused({ volumeId: 'v1', lsn: 2 ** 53 }, '.lsn');
    refused({ volumeId: 'v1', lsn: '4' }, '.lsn');
  });

  it('node.drain: a node id and an optional boolean undo, nothing else; its reply', () => {
    assert.deepEqual(validateNodeDrain({ node: 'n4' }), { node: 'n4' });
    assert.deepEqual(validateNodeDrain({ node: 'n4', undo: true }), { node: 'n4', undo: true });
    assert.equal(code(() => validateNodeDrain({})), 'bad_request');
    assert.equal(code(() => validateNodeDrain({ node: 'a.b' })), 'bad_request');
    assert.equal(code(() => validateNodeDrain({ node: 'n4', undo: 'yes' })), 'bad_request');
    assert.equal(code(() => validateNodeDrain({ node: 'n4', force: true })), 'bad_request');
    assert.deepEqual(validateNodeDrainReply({ node: 'n4', draining: false, replicas: 3 }), { node: 'n4', draining: false, replicas: 3 });
    assert.equal(code(() => validateNodeDrainReply({ node: 'n4', draining: true, replicas: -1 })), 'bad_request');
  });

  it('rebalance: an optional boolean stop, nothing else; its reply names each node with its count', () => {
    assert.deepEqual(validateRebalance({}), {});
    assert.deepEqual(validateRebalance({ stop: true }), { stop: true });
    assert.equal(code(() => validateRebalance({ stop: 1 })), 'bad_request');
    assert.equal(code(() => validateRebalance({ now: true })), 'bad_request');
    assert.deepEqual(validateRebalanceReply({ rebalancing: true, nodes: [{ node: 'n1', replicas: 4 }] }), { rebalancing: true, nodes: [{ node: 'n1', replicas: 4 }] });
    assert.equal(code(() => validateRebalanceReply({ rebalancing: true, nodes: [{ node: 'n 1', replicas: 4 }] })), 'bad_request');
    assert.equal(code(() => validateRebalanceReply({ rebalancing: true, nodes: new Array(1025).fill({ node: 'n1', replicas: 0 }) })), 'too_large');
    assert.deepEqual(validateRebalanceReply({ rebalancing: false, nodes: [{ node: 'n1', replicas: 4, leaders: 2 }] }).nodes, [{ node: 'n1', replicas: 4, leaders: 2 }]);
    assert.equal(code(() => validateRebalanceReply({ rebalancing: false, nodes: [{ node: 'n1', replicas: 4, leaders: -1 }] })), 'bad_request');
  });

  it("shard.handover: a shard (volumeId and shard) and an optional target, or a target alone; its reply; a heartbeat's count of leaders", () => {
    assert.deepEqual(validateShardHandover({ volumeId: 'v1', shard: 3 }), { volumeId: 'v1', shard: 3 });
    assert.deepEqual(validateShardHandover({ volumeId: 'v1', shard: 3, to: 'n2' }), { volumeId: 'v1', shard: 3, to: 'n2' });
    assert.deepEqual(validateShardHandover({ to: 'n2' }), { to: 'n2' });
    assert.equal(code(() => validateShardHandover({})), 'bad_request', 'neither a shard nor a target');
    assert.equal(code(() => validateShardHandover({ volumeId: 'v1' })), 'bad_request', 'a volume without its shard');
    assert.equal(code(() => validateShardHandover({ shard: 1, to: 'n2' })), 'bad_request', 'a shard without its volume');
    assert.equal(code(() => validateShardHandover({ volumeId: 'v1', shard: 256 })), 'out_of_range');
    assert.equal(code(() => validateShardHandover({ to: 'n 2' })), 'bad_request');
    assert.equal(code(() => validateShardHandover({ to: 'n2', now: true })), 'bad_request');
    assert.deepEqual(validateShardHandoverReply({ node: 'n1', volumeId: 'v1', shard: 3, term: 7, to: 'n2' }), { node: 'n1', volumeId: 'v1', shard: 3, term: 7, to: 'n2' });
    assert.equal(code(() => validateShardHandoverReply({ node: 'n1', volumeId: 'v1', shard: 3, term: 7 })), 'bad_request');
    assert.deepEqual(validateHeartbeat({ nodeId: 'n1', hosts: 1, leading: 12 }), { nodeId: 'n1', hosts: 1, leading: 12 });
    assert.equal(code(() => validateHeartbeat({ nodeId: 'n1', hosts: 1, leading: -1 })), 'bad_request');
  });

  it('shard.digest: a shard, and a range of LSNs or none; its reply, whose count must be the range\'s', () => {
    assert.deepEqual(validateShardDigest({ volumeId: 'v1', shard: 3 }), { volumeId: 'v1', shard: 3 });
    assert.deepEqual(validateShardDigest({ volumeId: 'v1', shard: 3, fromLsn: 5, toLsn: 5 }), { volumeId: 'v1', shard: 3, fromLsn: 5, toLsn: 5 });
    assert.deepEqual(validateShardDigest({ volumeId: 'v1', shard: 3, fromLsn: null, toLsn: null }), { volumeId: 'v1', shard: 3 });
    assert.equal(code(() => validateShardDigest({ volumeId: 'v1', shard: 3, fromLsn: 5 })), 'bad_request', 'fromLsn without toLsn');
    assert.equal(code(() => validateShardDigest({ volumeId: 'v1', shard: 3, toLsn: 5 })), 'bad_request', 'toLsn without fromLsn');
    assert.equal(code(() => validateShardDigest({ volumeId: 'v1', shard: 3, fromLsn: 6, toLsn: 5 })), 'bad_request', 'reversed');
    assert.equal(code(() => validateShardDigest({ volumeId: 'v1', shard: 3, fromLsn: 0, toLsn: 5 })), 'bad_request', 'LSN 0');
    assert.equal(code(() => validateShardDigest({ volumeId: 'v1', shard: 3, fromLsn: 1.5, toLsn: 5 })), 'bad_request');
    assert.equal(code(() => validateShardDigest({ volumeId: 'v1', shard: 256 })), 'out_of_range');
    assert.equal(code(() => validateShardDigest({ volumeId: 'v1', shard: 3, lsn: 4 })), 'bad_request', 'an unknown field');
    assert.equal(code(() => validateShardDigest({ shard: 3 })), 'bad_request');
    const reply = { node: 'n1', volumeId: 'v1', shard: 3, role: 'leader', term: 2, firstLsn: 1, lastLsn: 9, commitLsn: 9 };
    assert.deepEqual(validateShardDigestReply(reply), reply);
    const withDigest = { ...reply, fromLsn: 2, toLsn: 5, records: 4, digest: 0xfeedbeef };
    assert.deepEqual(validateShardDigestReply(withDigest), withDigest);
    assert.equal(code(() => validateShardDigestReply({ ...withDigest, records: 3 })), 'bad_request', 'a count that is not the range\'s');
    assert.equal(code(() => validateShardDigestReply({ ...withDigest, toLsn: 1 })), 'bad_request', 'toLsn below fromLsn');
    assert.equal(code(() => validateShardDigestReply({ ...withDigest, digest: 2 ** 32 })), 'out_of_range');
    assert.equal(code(() => validateShardDigestReply({ ...reply, role: 'boss' })), 'bad_request');
  });

  it('control requests refuse unknown fields and the cases their own checks name, each with its own message', () => {
    const refused = (f: () => unknown, re: RegExp): void => {
      const e = (() => {
        try {
          f();
        } catch (err) {
          return err;
        }
        return undefined;
      })();
      assert.ok(e instanceof ProtocolError && e.code === 'bad_request' && re.test(e.message), `${String(e)} does not match ${re}`);
    };
    assert.deepEqual(validateVolumeGrow({ volumeId: 'v1', pageCount: 10 }), { volumeId: 'v1', pageCount: 10 });
    refused(() => validateVolumeGrow({ volumeId: 'v1', pageCount: 10, shards: 2 }), /^shards: not a field of volume\.grow$/);
    refused(() => validateShardForceVoteReply({ node: 'n1', volumeId: 'v1', shard: 0, wasRepairing: 'yes', term: 3 }), /^wasRepairing: expected a boolean$/);
    assert.equal(validateShardForceVoteReply({ node: 'n1', volumeId: 'v1', shard: 0, wasRepairing: false, term: 3 }).wasRepairing, false);
    const discarded = { node: 'n1', volumeId: 'v1', shard: 0, wasRepairing: true, term: 3, discarded: { fromLsn: 97, keptLsn: 96 } };
    assert.deepEqual(validateShardForceVoteReply(discarded), discarded);
    refused(() => validateShardForceVoteReply({ ...discarded, discarded: { fromLsn: 0, keptLsn: 96 } }), /^discarded\.fromLsn: /);
    refused(() => validateShardForceVoteReply({ ...discarded, discarded: 96 }), /^discarded: /);
    refused(() => validateShardDigest({ volumeId: 'v1', shard: 0, pages: { lsn: 1, first: 0, count: 4, all: true } }), /^pages\.all: not a field of shard\.digest pages$/);
    const move = { volume: 'db', shard: 0, from: 'n1', to: 'n4' };
    assert.deepEqual(validateShardMove(move), move);
    refused(() => validateShardMove({ ...move, force: true }), /^force: unknown field$/);
    refused(() => validateShardMove({ ...move, to: 'n1' }), /^from and to are the same node 'n1'/);
    assert.deepEqual(validateCatalogRecoverRequest({ apply: true }), { apply: true });
    refused(() => validateCatalogRecoverRequest({ apply: true, all: true }), /^all: unknown field$/);
    assert.deepEqual(validateControllers({ members: ['n1', 'n2', 'n3'] }), { members: ['n1', 'n2', 'n3'] });
    refused(() => validateControllers({ members: ['n1', 'n2', 'n3'], force: true }), /^force: unknown field$/);
    refused(() => validateControllers({ members: ['n1', 'n2'] }), /^members: expected 3\.\.7 distinct node ids, got 2$/);
    refused(() => validateControllers({ members: ['n1', 'n2', 'n2'] }), /^members: expected 3\.\.7 distinct node ids, got 3 with one listed twice$/);
  });
});
