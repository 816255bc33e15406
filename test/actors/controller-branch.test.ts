import { strict as assert } from 'node:assert';
import { Controller, branchNotCopied, branchOfRecords, seedOf, volumeInfo, type VolumeRecord } from '../../actors/controller';
import type { NotCopied } from '../../messages/control';
import { MetaStore } from '../../storage-engine/metadata';
import { SimDisk } from '../../storage-engine/sim-disk';
import { ProtocolError } from '../../messages/errors';

const T0 = 1_700_000_000_000;
const spec = { pageCount: 64, pageSize: 8192, shards: 3, stripePages: 4, replicas: 3 } as const;

/**
 * Nodes a..e (2 hosts each) live at `T0`; a volume 'filler' of one replica on a, b, c first (so
 * that the parent's replicas are not all on host 0), then the parent 'p' on a, b, c.
 */
function cluster(disk = new SimDisk(), opts: { zones?: Record<string, string> } = {}): { c: Controller; disk: SimDisk; parent: VolumeRecord } {
  const c = new Controller({ meta: new MetaStore(disk, '') });
  for (const id of ['a', 'b', 'c']) c.heartbeat(id, 2, T0, opts.zones?.[id]);
  c.create({ name: 'filler', pageCount: 64, pageSize: 4096, shards: 3, stripePages: 4, replicas: 1 }, T0);
  const parent = c.create({ name: 'p', ...spec }, T0);
  for (const id of ['d', 'e']) c.heartbeat(id, 2, T0, opts.zones?.[id]);
  return { c, disk, parent };
}

/** Heartbeats of `ids` at `nowMs` (the others fall silent). */
function beat(c: Controller, ids: readonly string[], nowMs: number, zones: Record<string, string> = {}): void {
  for (const id of ids) c.heartbeat(id, 2, nowMs, zones[id]);
}

const placed = (v: VolumeRecord, shard: number): Array<[string, number]> => v.placements[shard]!.replicas.map((r) => [r.nodeId, r.hostId]);

function refused(code: string, pattern: RegExp, path?: string) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof ProtocolError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    if (path !== undefined) assert.equal((e.details as { path?: unknown } | undefined)?.path, path);
    return true;
  };
}

describe('Controller branches (volume.branch)', () => {
  it("copies the parent's geometry, records the branch point, and places every replica on the node and host of the parent's", () => {
    const { c, parent } = cluster();
    // The parent's replicas are not all on host 0: the test of the hosts means something.
    assert.ok(parent.placements.some((p) => p.replicas.some((r) => r.hostId !== 0)), JSON.stringify(parent.placements));
    const epoch = c.epoch;
    const b = c.branch({ name: 'b', parent: 'p', lsns: [12, 0, 40] }, T0 + 1);
    assert.equal(c.epoch, epoch + 1);
    assert.notEqual(b.id, parent.id);
    assert.deepEqual(
      { name: b.name, pageCount: b.pageCount, pageSize: b.pageSize, shards: b.shards, stripePages: b.stripePages, replicas: b.replicas, createdAt: b.createdAt },
      { name: 'b', pageCount: 64, pageSize: 8192, shards: 3, stripePages: 4, replicas: 3, createdAt: T0 + 1 },
    );
    assert.deepEqual(b.branch, { parent: 'p', parentId: parent.id, lsns: [12, 0, 40] });
    for (let s = 0; s < 3; s++) assert.deepEqual(placed(b, s), placed(parent, s), `shard ${s}`);
    // Shown by volume.info and volume.list; a volume that is no branch shows none.
    assert.deepEqual(volumeInfo(c.get('b')).branch, { parent: 'p', parentId: parent.id, lsns: [12, 0, 40] });
    assert.equal('branch' in volumeInfo(c.get('p')), false);
    assert.deepEqual(c.list().find((v) => v.name === 'b')?.branch?.lsns, [12, 0, 40]);
    // Each node is assigned the branch's shards on the hosts of its parent's replicas, with their seed.
    for (const node of ['a', 'b', 'c']) {
      const mine = c.assignments(node).shards.filter((s) => s.volume.id === b.id);
      const theirs = c.assignments(node).shards.filter((s) => s.volume.id === parent.id);
      assert.deepEqual(mine.map((s) => [s.placement.shard, s.hostId, s.role]), theirs.map((s) => [s.placement.shard, s.hostId, s.role]), node);
      assert.deepEqual(mine.map((s) => seedOf(s.volume, s.placement.shard)), mine.map((s) => ({ volumeId: parent.id, lsn: [12, 0, 40][s.placement.shard] })));
    }
  });

  it('seedOf: the parent id and the shard\'s LSN for a branch; nothing for a volume that is no branch, or a shard it does not have', () => {
    const { c, parent } = cluster();
    const b = c.branch({ name: 'b', parent: 'p', lsns: [5, 6, 7] }, T0 + 1);
    assert.deepEqual(seedOf(b, 0), { volumeId: parent.id, lsn: 5 });
    assert.deepEqual(seedOf(b, 2), { volumeId: parent.id, lsn: 7 });
    assert.equal(seedOf(b, 3), undefined);
    assert.equal(seedOf(b, -1), undefined);
    assert.equal(seedOf(b, 0.5), undefined);
    assert.equal(seedOf(parent, 0), undefined);
  });

  it('branchNotCopied: refuses a branch one of whose shards no replica could copy: no_space when each had no room, else unavailable; not one a replica of each shard copied', () => {
    const { c } = cluster();
    const b = c.branch({ name: 'b', parent: 'p', lsns: [5, 6, 7] }, T0 + 1);
    const nodesOf = (shard: number): string[] => b.placements[shard]!.replicas.map((r) => r.nodeId);
    const space = (shard: number, node: string): NotCopied => ({ volumeId: b.id, shard, reason: `${node} is full`, noSpace: true });
    const down = (shard: number): NotCopied => ({ volumeId: b.id, shard, reason: 'no replica of the parent here', noSpace: false });
    const answers = (entries: Array<[string, NotCopied]>): Map<string, NotCopied[]> => {
      const m = new Map<string, NotCopied[]>();
      for (const [node, n] of entries) m.set(node, [...(m.get(node) ?? []), n]);
      return m;
    };
    assert.equal(branchNotCopied(b, new Map()), undefined, 'every replica copied');
    // Two of shard 1's three replicas not copied: the third sends the others the shard.
    const [x, y, z] = nodesOf(1) as [string, string, string];
    assert.equal(branchNotCopied(b, answers([[x, space(1, x)], [y, space(1, y)]])), undefined);
    // Not copied on another shard's node does not count for shard 1, nor another volume's.
    assert.equal(branchNotCopied(b, answers([[x, space(1, x)], [y, space(1, y)], [z, space(0, z)]])), undefined);
    assert.equal(branchNotCopied(b, answers([[x, space(1, x)], [y, space(1, y)], [z, { ...space(1, z), volumeId: 'other' }]])), undefined);
    const full = branchNotCopied(b, answers([[x, space(1, x)], [y, space(1, y)], [z, space(1, z)]]));
    assert.ok(full instanceof ProtocolError && full.code === 'no_space', String(full));
    assert.equal(full.message, `branch 'b' of 'p' was not made: no device of its replicas of shard 1 has room for a copy of the parent's pages over its reserve of free space (node ${x}: ${x} is full; node ${y}: ${y} is full; node ${z}: ${z} is full)`);
    assert.deepEqual(full.details, { shard: 1 });
    const mixed = branchNotCopied(b, answers([[x, space(1, x)], [y, down(1)], [z, space(1, z)]]));
    assert.ok(mixed instanceof ProtocolError && mixed.code === 'unavailable', String(mixed));
    assert.match(mixed.message, /no replica of its shard 1 could copy the parent's pages at the branch point, and none has them to send the others \(.*no replica of the parent here/);
    // A volume that is no branch is never refused so.
    assert.equal(branchNotCopied(c.get('p'), answers([[x, { ...space(1, x), volumeId: c.get('p').id }]])), undefined);
  });

  it("replaces a replica on a node that is not live by a live node outside the shard's set, in a failure domain of none of the others first", () => {
    const zones = { a: 'z1', b: 'z2', c: 'z3', d: 'z1', e: 'z4' };
    const { c, parent } = cluster(new SimDisk(), { zones });
    // 'c' falls silent: every shard's replica on it goes elsewhere. 'd' comes first by id and
    // holds no more, but is in a's zone: 'e' is taken.
    beat(c, ['a', 'b', 'd', 'e'], T0 + 10_000, zones);
    const b = c.branch({ name: 'b', parent: 'p', lsns: [1, 2, 3] }, T0 + 10_000);
    for (let s = 0; s < 3; s++) {
      const want = placed(parent, s).map(([n, h]): [string, number] => (n === 'c' ? ['e', -1] : [n, h]));
      const got = placed(b, s);
      assert.deepEqual(got.map(([n]) => n), want.map(([n]) => n), `shard ${s}`);
      // The ones kept on their hosts; the new one on a host of its node.
      got.forEach(([n, h], i) => (n === 'e' ? assert.ok(h === 0 || h === 1) : assert.equal(h, want[i]![1])));
    }
    // Without zones, the least loaded node, the first by id among equals: 'd', then 'e' as 'd' takes load.
    const plain = cluster();
    beat(plain.c, ['a', 'b', 'd', 'e'], T0 + 10_000);
    const nz = plain.c.branch({ name: 'b', parent: 'p', lsns: [1, 2, 3] }, T0 + 10_000);
    assert.deepEqual([0, 1, 2].map((s) => placed(nz, s).map(([n]) => n).find((n) => !['a', 'b'].includes(n))), ['d', 'e', 'd']);
    // Their seed is the parent's all the same (they wait for their peers when they cannot copy).
    assert.deepEqual(seedOf(nz, 1), { volumeId: plain.parent.id, lsn: 2 });
  });

  it('replaces a replica on a draining node, as create places nothing new on one', () => {
    const { c, parent } = cluster();
    c.drain('b', false);
    const b = c.branch({ name: 'b', parent: 'p', lsns: [1, 2, 3] }, T0 + 1);
    for (let s = 0; s < 3; s++) {
      const nodes = placed(b, s).map(([n]) => n);
      assert.equal(nodes.includes('b'), false, `shard ${s}: ${nodes.join(',')}`);
      assert.deepEqual(nodes.filter((n) => n !== 'd' && n !== 'e'), placed(parent, s).map(([n]) => n).filter((n) => n !== 'b'));
    }
  });

  it("follows a move of the parent's replica under way: the set it changes to, the added node on its host", () => {
    const { c } = cluster();
    c.beginMove('p', 1, 'a', 'd', T0 + 1);
    const parent = c.get('p');
    const adding = parent.placements[1]!.adding!;
    const b = c.branch({ name: 'b', parent: 'p', lsns: [1, 2, 3] }, T0 + 2);
    assert.deepEqual(placed(b, 1), parent.placements[1]!.replicas.map((r) => (r.nodeId === 'a' ? [adding.nodeId, adding.hostId] : [r.nodeId, r.hostId])));
    assert.equal(b.placements[1]!.adding, undefined, 'the branch has no move under way');
    assert.deepEqual(placed(b, 0), placed(parent, 0));
  });

  it('refuses, writing nothing: a parent that does not exist, lsns that are not one per shard, a name taken or not a name, a shard without a majority to copy from or a node to replace one on', () => {
    const { c } = cluster();
    const epoch = c.epoch;
    assert.throws(() => c.branch({ name: 'b', parent: 'nope', lsns: [1] }, T0 + 1), refused('not_found', /^parent: volume 'nope' does not exist$/, 'parent'));
    assert.throws(() => c.branch({ name: 'b', parent: 'p', lsns: [1, 2] }, T0 + 1), refused('bad_request', /^lsns: volume 'p' has 3 shards, so a branch of it takes 3 LSNs .*got 2$/, 'lsns'));
    assert.throws(() => c.branch({ name: 'b', parent: 'p', lsns: [1, 2, 3, 4] }, T0 + 1), refused('bad_request', /got 4$/, 'lsns'));
    assert.throws(() => c.branch({ name: 'b', parent: 'p', lsns: [] }, T0 + 1), refused('bad_request', /got 0$/, 'lsns'));
    assert.throws(() => c.branch({ name: 'b', parent: 'p', lsns: [1, -2, 3] }, T0 + 1), refused('bad_request', /^lsns\[1\]: /, 'lsns[1]'));
    assert.throws(() => c.branch({ name: 'filler', parent: 'p', lsns: [1, 2, 3] }, T0 + 1), refused('already_exists', /^volume 'filler' already exists$/));
    assert.throws(() => c.branch({ name: 'p', parent: 'p', lsns: [1, 2, 3] }, T0 + 1), refused('already_exists', /^volume 'p' already exists$/));
    assert.throws(() => c.branch({ name: 'Not A Name', parent: 'p', lsns: [1, 2, 3] }, T0 + 1), refused('bad_request', /^name: /, 'name'));
    // Two of the three replicas' nodes silent: one replica alone could not elect a leader.
    beat(c, ['a', 'd', 'e'], T0 + 10_000);
    assert.throws(() => c.branch({ name: 'b', parent: 'p', lsns: [1, 2, 3] }, T0 + 10_000), refused('unavailable', /^shard 0 of volume 'p' has 1 of its 3 replicas on live nodes that are not draining/));
    // A majority live, but the replica of a silent node has nowhere to go: the live nodes are the shard's own.
    beat(c, ['a', 'b'], T0 + 20_000);
    assert.throws(() => c.branch({ name: 'b', parent: 'p', lsns: [1, 2, 3] }, T0 + 20_000), refused('unavailable', /^the replica of shard 0 on node 'c' \(not live, or draining\) has no live node that is not draining and holds none of the shard to go to$/));
    assert.equal(c.epoch, epoch);
    assert.deepEqual(c.list().map((v) => v.name), ['filler', 'p']);
  });

  it("refuses a branch past the catalog's bounds as create does", () => {
    const full = new Controller({ meta: new MetaStore(new SimDisk(), ''), volumesMax: 1 });
    full.heartbeat('a', 1, T0);
    full.create({ name: 'p', pageCount: 8, pageSize: 4096, shards: 1, stripePages: 8, replicas: 1 }, T0);
    assert.throws(() => full.branch({ name: 'b', parent: 'p', lsns: [0] }, T0), refused('too_large', /holds 1 volumes, its limit/));
    const replicas = new Controller({ meta: new MetaStore(new SimDisk(), ''), replicasMax: 3 });
    replicas.heartbeat('a', 1, T0);
    replicas.create({ name: 'p', pageCount: 8, pageSize: 4096, shards: 2, stripePages: 4, replicas: 1 }, T0);
    assert.throws(() => replicas.branch({ name: 'b', parent: 'p', lsns: [0, 0] }, T0), refused('too_large', /needs 2 shard replicas and the cluster holds 2 of its limit of 3/));
  });

  it('is durable: a controller started again on the catalog holds the branch and its branch point', () => {
    const { c, disk, parent } = cluster();
    const b = c.branch({ name: 'b', parent: 'p', lsns: [9, 8, 7] }, T0 + 1);
    const again = new Controller({ meta: new MetaStore(disk, '') });
    assert.deepEqual(again.get('b'), b);
    assert.deepEqual(again.get('b').branch, { parent: 'p', parentId: parent.id, lsns: [9, 8, 7] });
    assert.deepEqual(seedOf(again.get('b'), 1), { volumeId: parent.id, lsn: 8 });
  });

  it('after creation the two are independent: deleting the parent leaves the branch, deleting a branch leaves the parent', () => {
    const { c, parent } = cluster();
    const b1 = c.branch({ name: 'b1', parent: 'p', lsns: [1, 1, 1] }, T0 + 1);
    const b2 = c.branch({ name: 'b2', parent: 'p', lsns: [2, 2, 2] }, T0 + 2);
    c.delete('b2');
    assert.deepEqual(c.get('p'), parent);
    c.delete('p');
    assert.deepEqual(c.get('b1'), b1, 'the branch is as it was, its branch point naming the parent it came from');
    assert.deepEqual(c.assignments('a').tombstones, [b2.id, parent.id]);
    // A branch of a branch; and a new volume may take the parent's name.
    const bb = c.branch({ name: 'p', parent: 'b1', lsns: [5, 5, 5] }, T0 + 3);
    assert.deepEqual(bb.branch, { parent: 'b1', parentId: b1.id, lsns: [5, 5, 5] });
    assert.deepEqual(placed(bb, 2), placed(b1, 2));
  });

  it("a recovery gives a branch its branch point back from its replicas' seeds, under the parent's name when it is known", () => {
    type Rec = Parameters<Controller['planRecovery']>[0][number]['shards'][number];
    const rec = (volumeId: string, volumeName: string, shard: number, seed?: { volumeId: string; lsn: number }): Rec => ({
      volumeId, volumeName, shard, shards: 2, pageCount: 64, pageSize: 4096, stripePages: 4, hostId: 0, members: ['n1'], createdAt: T0, ...(seed === undefined ? {} : { seed }),
    });
    const c = new Controller({ meta: new MetaStore(new SimDisk(), ''), newCatalogTag: 'new' });
    const nodes = [{
      nodeId: 'n1', hosts: 1,
      shards: [rec('v1-old', 'p', 0), rec('v1-old', 'p', 1), rec('v2-old', 'b', 0, { volumeId: 'v1-old', lsn: 4 }), rec('v2-old', 'b', 1, { volumeId: 'v1-old', lsn: 9 }), rec('v3-old', 'orphan', 0, { volumeId: 'v9-old', lsn: 1 }), rec('v3-old', 'orphan', 1, { volumeId: 'v9-old', lsn: 1 })],
    }];
    const plan = c.planRecovery(nodes, T0);
    assert.deepEqual(plan.skipped, []);
    const by = new Map(plan.add.map((v) => [v.name, v]));
    assert.deepEqual(by.get('b')!.branch, { parent: 'p', parentId: 'v1-old', lsns: [4, 9] });
    assert.equal(by.get('p')!.branch, undefined);
    assert.deepEqual(by.get('orphan')!.branch, { parent: 'v9-old', parentId: 'v9-old', lsns: [1, 1] }, 'a parent no one knows the name of: its id for its name, the branch point kept');
    // Records that disagree, or a shard without a seed: none either.
    assert.deepEqual(branchOfRecords([rec('v2', 'b', 0, { volumeId: 'v1', lsn: 4 }), rec('v2', 'b', 1, { volumeId: 'v7', lsn: 4 })], 2, () => 'p'), {});
    assert.deepEqual(branchOfRecords([rec('v2', 'b', 0, { volumeId: 'v1', lsn: 4 }), rec('v2', 'b', 0, { volumeId: 'v1', lsn: 5 }), rec('v2', 'b', 1, { volumeId: 'v1', lsn: 4 })], 2, () => 'p'), {});
    assert.deepEqual(branchOfRecords([rec('v2', 'b', 0, { volumeId: 'v1', lsn: 4 }), rec('v2', 'b', 1)], 2, () => 'p'), {});
    assert.deepEqual(branchOfRecords([rec('v2', 'b', 0, { volumeId: 'v1', lsn: 4 })], 2, () => 'p'), {});
    // The parent in the catalog: its name from there.
    const c2 = new Controller({ meta: new MetaStore(new SimDisk(), '') });
    c2.heartbeat('n1', 1, T0);
    const p = c2.create({ name: 'p2', pageCount: 64, pageSize: 4096, shards: 2, stripePages: 4, replicas: 1 }, T0);
    const found = c2.planRecovery([{ nodeId: 'n1', hosts: 1, shards: [rec('v5-old', 'b', 0, { volumeId: p.id, lsn: 1 }), rec('v5-old', 'b', 1, { volumeId: p.id, lsn: 2 })] }], T0);
    assert.deepEqual(found.add[0]!.branch, { parent: 'p2', parentId: p.id, lsns: [1, 2] });
  });
});
