import { strict as assert } from 'node:assert';
import { Controller, DELETES_REMEMBERED_MAX, RESIZES_REMEMBERED_MAX, MEMBER_SILENCE_MS_MAX, NODES_MAX, REMOVED_PER_SHARD_MAX, idNumber, volumeInfo } from '../../actors/controller';
import { MetaStore } from '../../storage-engine/metadata';
import { SimDisk } from '../../storage-engine/sim-disk';
import { ProtocolError } from '../../messages/errors';
import { StorageError } from '../../storage-engine/errors';

function controller(): Controller {
  return new Controller({ meta: new MetaStore(new SimDisk(), '') });
}

const T0 = 1_700_000_000_000;

describe('Controller membership is bounded', () => {
  it(`a heartbeat from one node more than NODES_MAX (${NODES_MAX}) is refused too_large; members keep heartbeating`, () => {
    const c = controller();
    for (let i = 0; i < NODES_MAX; i++) c.heartbeat(`n${i}`, 1, T0);
    assert.throws(
      () => c.heartbeat('one-too-many', 1, T0 + 1),
      (e: unknown) => e instanceof ProtocolError && e.code === 'too_large' && /1024 nodes, its limit; node 'one-too-many'/.test(e.message),
    );
    c.heartbeat('n0', 2, T0 + 2);
    assert.equal(c.knownNodes().length, NODES_MAX);
    assert.equal(c.knownNodes().find((m) => m.nodeId === 'n0')?.hosts, 2);
    assert.equal(c.knownNodes().some((m) => m.nodeId === 'one-too-many'), false);
  });

  it('resizes: grows durably, the same size changes nothing, never shrinks, an unknown volume is not found', () => {
    const disk = new SimDisk();
    const c = new Controller({ meta: new MetaStore(disk, '') });
    c.heartbeat('n1', 1, T0);
    c.create({ name: 'v', pageCount: 64, pageSize: 4096, shards: 2, stripePages: 4, replicas: 1 }, T0);
    const epoch = c.epoch;
    assert.equal(c.checkResize('v', 128).pageCount, 64, 'checked, not recorded');
    assert.equal(c.epoch, epoch);
    assert.equal(c.resize('v', 64).pageCount, 64);
    assert.equal(c.epoch, epoch, 'the same size: no change');
    assert.equal(c.resize('v', 128).pageCount, 128);
    assert.equal(c.epoch, epoch + 1);
    assert.equal(c.get('v').placements.length, 2, 'the placements stay');
    assert.throws(() => c.resize('v', 127), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /does not shrink/.test(e.message));
    assert.throws(() => c.checkResize('w', 256), (e: unknown) => e instanceof ProtocolError && e.code === 'not_found');
    assert.equal(new Controller({ meta: new MetaStore(disk, '') }).get('v').pageCount, 128, 'durable');
  });

  it('forgets a member silent longer than MEMBER_SILENCE_MS_MAX unless it holds shard placements', () => {
    const c = controller();
    c.heartbeat('a', 1, T0);
    c.heartbeat('b', 1, T0);
    // One replica of one shard: placed on 'a' (the first live node in order).
    const v = c.create({ name: 'v', pageCount: 64, pageSize: 4096, shards: 1, stripePages: 16, replicas: 1 }, T0);
    assert.deepEqual(v.placements[0]!.replicas.map((r) => r.nodeId), ['a']);
    // Silent, but not yet for long enough: kept (shown dead by status).
    c.heartbeat('c', 1, T0 + MEMBER_SILENCE_MS_MAX);
    assert.deepEqual(c.knownNodes().map((m) => m.nodeId), ['a', 'b', 'c']);
    c.heartbeat('c', 1, T0 + MEMBER_SILENCE_MS_MAX + 60_001);
    assert.deepEqual(c.knownNodes().map((m) => m.nodeId), ['a', 'c']);
    // Once its volume is gone, 'a' is forgotten too.
    c.delete('v');
    c.heartbeat('c', 1, T0 + MEMBER_SILENCE_MS_MAX + 120_002);
    assert.deepEqual(c.knownNodes().map((m) => m.nodeId), ['c']);
  });

  it('started again on its catalog, names the nodes holding placements it has not heard from (shown dead by status)', () => {
    const disk = new SimDisk();
    const first = new Controller({ meta: new MetaStore(disk, '') });
    for (const id of ['a', 'b', 'c']) first.heartbeat(id, 1, T0);
    first.create({ name: 'v', pageCount: 64, pageSize: 4096, shards: 2, stripePages: 16, replicas: 3 }, T0);
    assert.deepEqual(first.placedUnheard(), []);
    // The controller restarts: 'c' died meanwhile, 'a' and 'b' heartbeat again.
    const again = new Controller({ meta: new MetaStore(disk, '') });
    again.heartbeat('a', 1, T0 + 10_000);
    again.heartbeat('b', 1, T0 + 10_000);
    assert.deepEqual(again.knownNodes().map((m) => m.nodeId), ['a', 'b']);
    assert.deepEqual(again.placedUnheard(), ['c']);
  });

  it('a full membership admits a new node once a silent member without placements is forgotten', () => {
    const c = new Controller({ meta: new MetaStore(new SimDisk(), ''), nodesMax: 2 });
    c.heartbeat('a', 1, T0);
    c.heartbeat('b', 1, T0);
    assert.throws(() => c.heartbeat('c', 1, T0 + 1), (e: unknown) => e instanceof ProtocolError && e.code === 'too_large');
    c.heartbeat('a', 1, T0 + MEMBER_SILENCE_MS_MAX);
    // 'b' is silent too long now, but membership is checked once a minute.
    assert.throws(() => c.heartbeat('c', 1, T0 + MEMBER_SILENCE_MS_MAX + 1), (e: unknown) => e instanceof ProtocolError && e.code === 'too_large');
    c.heartbeat('c', 1, T0 + MEMBER_SILENCE_MS_MAX + 60_000);
    assert.deepEqual(c.knownNodes().map((m) => m.nodeId), ['a', 'c']);
  });
});

describe('Controller volume ids', () => {
  const spec = { pageCount: 64, pageSize: 4096, shards: 1, stripePages: 16, replicas: 1 } as const;

  it('carry the tag of the catalog they came from, which a catalog created again does not share', () => {
    const disk = new SimDisk();
    const first = new Controller({ meta: new MetaStore(disk, ''), newCatalogTag: 'aa11' });
    first.heartbeat('n1', 1, T0);
    assert.equal(first.create({ name: 'x', ...spec }, T0).id, 'v1-aa11');
    assert.equal(first.create({ name: 'y', ...spec }, T0).id, 'v2-aa11');
    // The same catalog reopened keeps its tag, whatever tag a new one would get.
    const reopened = new Controller({ meta: new MetaStore(disk, ''), newCatalogTag: 'bb22' });
    reopened.heartbeat('n1', 1, T0);
    assert.equal(reopened.create({ name: 'z', ...spec }, T0).id, 'v3-aa11');
    // A catalog created again (its controller's data lost) starts its counter over, not its ids.
    const again = new Controller({ meta: new MetaStore(new SimDisk(), ''), newCatalogTag: 'bb22' });
    again.heartbeat('n1', 1, T0);
    assert.equal(again.create({ name: 'x', ...spec }, T0).id, 'v1-bb22');
    // Without a tag (a catalog written before tags existed, or none asked for): v<n>.
    const plain = controller();
    plain.heartbeat('n1', 1, T0);
    assert.equal(plain.create({ name: 'x', ...spec }, T0).id, 'v1');
    assert.throws(() => new Controller({ meta: new MetaStore(new SimDisk(), ''), newCatalogTag: 'Not.Ok' }), /newCatalogTag/);
  });
});

describe('Controller creates not yet answered (placing)', () => {
  const spec = (name: string) => ({ name, pageCount: 8, pageSize: 4096 as const, shards: 1, stripePages: 8, replicas: 1 as const });

  it('a volume is added not placed, and marked placed durably; the mark survives a power cut either way', () => {
    const disk = new SimDisk();
    const c = new Controller({ meta: new MetaStore(disk, '') });
    c.heartbeat('n1', 1, T0);
    const v = c.create(spec('a'), T0, 'req-a');
    assert.equal(v.placing, true);
    assert.equal(c.unplaced('a')?.id, v.id);
    assert.equal(c.unplaced('b'), undefined, 'no such volume');
    disk.powerCut();
    const reopened = new Controller({ meta: new MetaStore(disk, '') });
    assert.equal(reopened.unplaced('a')?.id, v.id, 'not placed after a restart: its controller may have died before the opens');
    const epoch = reopened.epoch;
    assert.equal(reopened.placed(v.id).placing, undefined);
    assert.equal(reopened.epoch, epoch + 1);
    assert.equal(reopened.unplaced('a'), undefined);
    assert.equal(reopened.placed(v.id).id, v.id, 'placed again: answered, nothing written');
    assert.equal(reopened.epoch, epoch + 1);
    assert.equal(reopened.madeBy('req-a', 'a')?.placing, undefined);
    disk.powerCut();
    assert.equal(new Controller({ meta: new MetaStore(disk, '') }).unplaced('a'), undefined, 'the mark is durable');
  });

  it('a volume of a catalog written before the mark existed counts as placed', () => {
    const meta = new MetaStore(new SimDisk(), '');
    const c = new Controller({ meta });
    c.heartbeat('n1', 1, T0);
    const v = c.create(spec('a'), T0);
    const { placing: _placing, ...old } = v;
    meta.write('catalog', { version: 1, epoch: 7, nextId: 2, volumes: [old], tombstones: [] });
    const reopened = new Controller({ meta });
    assert.equal(reopened.get('a').id, v.id);
    assert.equal(reopened.unplaced('a'), undefined);
  });

  it('an undone create is not marked placed (not_found), and is not remembered as made then deleted: sent again, it is made anew', () => {
    const c = controller();
    c.heartbeat('n1', 1, T0);
    const v = c.create(spec('a'), T0, 'req-a');
    c.delete('a', undefined, { undo: true });
    assert.throws(() => c.placed(v.id), (e: unknown) => e instanceof ProtocolError && e.code === 'not_found');
    assert.equal(c.deletedSince('req-a', 'a'), false);
    assert.equal(c.madeBy('req-a', 'a'), undefined);
    const anew = c.create(spec('a'), T0, 'req-a');
    assert.notEqual(anew.id, v.id);
    assert.equal(anew.placing, true);
  });
});

describe('Controller placement', () => {
  it('places each replica on the host of its node with the fewest replicas: volumes of one shard spread over the hosts', () => {
    const c = controller();
    c.heartbeat('a', 3, T0);
    const hosts = (name: string, shards: number): number[] =>
      c.create({ name, pageCount: 64, pageSize: 4096, shards, stripePages: 16, replicas: 1 }, T0).placements.map((p) => p.replicas[0]!.hostId);
    assert.deepEqual([hosts('v1', 1), hosts('v2', 1), hosts('v3', 1), hosts('v4', 1)], [[0], [1], [2], [0]]);
    // A volume of several shards fills the hosts that hold fewer first.
    assert.deepEqual(hosts('v5', 4), [1, 2, 0, 1]);
    // A deleted volume's host is the next one used.
    c.delete('v3');
    assert.deepEqual(hosts('v6', 1), [2]);
  });

  it('a node gone (it said it stops, or did not answer) is not live, and nothing is placed on it, until its next heartbeat', () => {
    const c = controller();
    for (const n of ['a', 'b', 'c']) c.heartbeat(n, 1, T0);
    const nodes = (name: string): string[] => c.create({ name, pageCount: 64, pageSize: 4096, shards: 3, stripePages: 16, replicas: 1 }, T0).placements.map((p) => p.replicas[0]!.nodeId).sort();
    assert.deepEqual(nodes('v1'), ['a', 'b', 'c']);
    assert.equal(c.markGone('c'), true);
    assert.equal(c.markGone('x'), false, 'no member');
    assert.deepEqual(c.liveNodes(T0 + 1).map((m) => m.nodeId), ['a', 'b']);
    assert.deepEqual(nodes('v2'), ['a', 'a', 'b']);
    // Its silence still dates from its last heartbeat (the wait before its replicas are replaced).
    assert.equal(c.knownNodes().find((m) => m.nodeId === 'c')?.lastSeenMs, T0);
    c.heartbeat('c', 1, T0 + 2);
    assert.deepEqual(c.liveNodes(T0 + 3).map((m) => m.nodeId), ['a', 'b', 'c']);
    assert.deepEqual(nodes('v3'), ['a', 'b', 'c']);
  });
});

describe('Controller catalog bounds', () => {
  it('refuses a volume whose shard replicas would take the catalog past replicasMax, with what it needs and holds', () => {
    const c = new Controller({ meta: new MetaStore(new SimDisk(), ''), replicasMax: 100 });
    for (const n of ['a', 'b', 'c']) c.heartbeat(n, 1, T0);
    c.create({ name: 'v1', pageCount: 64, pageSize: 4096, shards: 30, stripePages: 1, replicas: 3 }, T0);
    assert.throws(
      () => c.create({ name: 'v2', pageCount: 64, pageSize: 4096, shards: 4, stripePages: 1, replicas: 3 }, T0),
      (e: unknown) => e instanceof ProtocolError && e.code === 'too_large' && /needs 12 shard replicas and the cluster holds 90 of its limit of 100/.test(e.message),
    );
    c.create({ name: 'v3', pageCount: 64, pageSize: 4096, shards: 10, stripePages: 1, replicas: 1 }, T0);
  });

  it('refuses a volume with more replicas than live nodes as unavailable, naming how many are live, and does not create it', () => {
    const c = controller();
    c.heartbeat('a', 1, T0);
    c.heartbeat('b', 1, T0);
    assert.throws(
      () => c.create({ name: 'v', pageCount: 64, pageSize: 4096, shards: 1, stripePages: 16, replicas: 3 }, T0),
      (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable' && e.details?.['liveNodes'] === 2 && /replicas=3 needs 3 live nodes, 2 are live/.test(e.message),
    );
    assert.throws(() => c.get('v'), (e: unknown) => e instanceof ProtocolError && e.code === 'not_found');
    assert.equal(c.list().length, 0);
    // The name is free: the same volume with one replica is created.
    assert.equal(c.create({ name: 'v', pageCount: 64, pageSize: 4096, shards: 1, stripePages: 16, replicas: 1 }, T0).placements[0]!.replicas.length, 1);
  });
});

describe('Controller recovery from the nodes\' records', () => {
  type Rec = Parameters<Controller['planRecovery']>[0][number]['shards'][number];
  const rec = (over: Partial<Rec> & { shard: number }): Rec => ({
    volumeId: 'v1-old', volumeName: 'a', shards: 2, pageCount: 64, pageSize: 4096, stripePages: 4, hostId: 0, members: ['n1', 'n2', 'n3'], createdAt: T0, ...over,
  });
  const tagged = (tag: string): Controller => new Controller({ meta: new MetaStore(new SimDisk(), ''), newCatalogTag: tag });

  it('recovers a volume whose records differ in size (a node down while it grew) with the largest', () => {
    const c = controller();
    const three = { members: ['n1', 'n2', 'n3'] };
    const plan = c.planRecovery(
      [1, 2, 3].map((n) => ({ nodeId: `n${n}`, hosts: 1, shards: [0, 1].map((shard) => rec({ shard, ...three, pageCount: n === 3 ? 64 : 256 })) })),
      T0,
    );
    assert.deepEqual(plan.skipped, []);
    assert.equal(plan.add[0]!.pageCount, 256);
  });

  it('adds a complete volume of another catalog, placing replicas on nodes that did not answer by shard mod hosts', () => {
    const c = tagged('new');
    c.heartbeat('n1', 2, T0);
    const plan = c.planRecovery(
      [
        { nodeId: 'n2', hosts: 2, shards: [rec({ shard: 0, hostId: 1 }), rec({ shard: 1, hostId: 0 })] },
        { nodeId: 'n3', hosts: 1, shards: [rec({ shard: 1, hostId: 0 })] },
      ],
      T0 + 5,
    );
    assert.deepEqual(plan.skipped, []);
    assert.equal(plan.add.length, 1);
    const v = plan.add[0]!;
    assert.deepEqual({ ...v, placements: undefined }, { name: 'a', id: 'v1-old', pageCount: 64, pageSize: 4096, shards: 2, stripePages: 4, replicas: 3, createdAt: T0, placements: undefined });
    // n1 (2 hosts, heard from) did not answer: shard s on host s mod 2; n3 (not holding shard 0) as n3 has 1 host.
    assert.deepEqual(v.placements, [
      { shard: 0, replicas: [{ nodeId: 'n1', hostId: 0 }, { nodeId: 'n2', hostId: 1 }, { nodeId: 'n3', hostId: 0 }] },
      { shard: 1, replicas: [{ nodeId: 'n1', hostId: 1 }, { nodeId: 'n2', hostId: 0 }, { nodeId: 'n3', hostId: 0 }] },
    ]);
    const epoch = c.epoch;
    c.addRecovered(plan.add);
    assert.equal(c.epoch, epoch + 1);
    assert.deepEqual(c.get('a').placements, v.placements);
    assert.deepEqual(c.assignments('n1').shards.map((s) => [s.placement.shard, s.hostId]), [[0, 0], [1, 1]]);
    // Found again: already in the catalog, neither added nor reported.
    assert.deepEqual(c.planRecovery([{ nodeId: 'n2', hosts: 2, shards: [rec({ shard: 0 }), rec({ shard: 1 })] }], T0), { add: [], skipped: [] });
  });

  it('leaves out, with why: ids of this catalog, tombstones, disagreeing records, missing shards, taken or doubled names, bad replica counts, the catalog\'s bounds', () => {
    const c = tagged('new');
    c.heartbeat('n1', 1, T0);
    const mine = c.create({ name: 'mine', pageCount: 8, pageSize: 4096, shards: 1, stripePages: 8, replicas: 1 }, T0);
    const ownGone = c.create({ name: 'own-gone', pageCount: 8, pageSize: 4096, shards: 1, stripePages: 8, replicas: 1 }, T0);
    c.delete('own-gone');
    const undone = c.create({ name: 'undone', pageCount: 8, pageSize: 4096, shards: 1, stripePages: 8, replicas: 1 }, T0);
    c.delete('undone', undefined, { undo: true });
    const one = (volumeId: string, volumeName: string, over: Partial<Rec> = {}): Rec => rec({ volumeId, volumeName, shard: 0, shards: 1, members: ['n1'], ...over });
    const plan = c.planRecovery(
      [
        {
          nodeId: 'n1',
          hosts: 1,
          shards: [
            one(ownGone.id, 'own-gone'),
            one(undone.id, 'undone'),
            one('v2-old', 'mine'),
            one('v3-old', 'twice'),
            one('v4-old', 'twice'),
            rec({ volumeId: 'v5-old', volumeName: 'half', shard: 0 }),
            one('v6-old', 'split', { stripePages: 8 }),
            one('v7-old', 'pair', { members: ['n1', 'n2'] }),
            one('v8-old', 'ok'),
          ],
        },
        { nodeId: 'n2', hosts: 1, shards: [one('v6-old', 'split', { members: ['n2'] })] },
      ],
      T0,
    );
    assert.deepEqual(plan.add.map((v) => v.name), ['ok']);
    const why = Object.fromEntries(plan.skipped.map((s) => [s.id, s.reason]));
    assert.match(why[ownGone.id]!, /issued by this catalog/);
    assert.match(why[undone.id]!, /issued by this catalog/);
    assert.match(why['v2-old']!, /name is taken by volume v1-new/);
    assert.match(why['v3-old']!, /the nodes hold 2 volumes of this name/);
    assert.match(why['v4-old']!, /the nodes hold 2 volumes of this name/);
    assert.match(why['v5-old']!, /shard 1: no answering node holds a replica of it/);
    assert.match(why['v6-old']!, /records disagree on its stripePages/);
    assert.match(why['v7-old']!, /2 members, not 1, 3 or 5/);
    assert.equal(plan.skipped.length, 8);
    assert.equal(mine.id, 'v1-new');

    // A tombstone of an id of another catalog (a catalog recovered once, then that volume deleted).
    c.addRecovered(plan.add);
    c.delete('ok');
    assert.match(c.planRecovery([{ nodeId: 'n1', hosts: 1, shards: [one('v8-old', 'ok')] }], T0).skipped[0]!.reason, /tombstone/);

    // A record of a member that is not among the shard's members.
    const stray = c.planRecovery([{ nodeId: 'n9', hosts: 1, shards: [one('v10-old', 'stray')] }], T0);
    assert.match(stray.skipped[0]!.reason, /not a member/);

    // Bounds: a catalog of 2 volumes holds one more.
    const small = new Controller({ meta: new MetaStore(new SimDisk(), ''), newCatalogTag: 'x', volumesMax: 2 });
    small.heartbeat('n1', 1, T0);
    small.create({ name: 'first', pageCount: 8, pageSize: 4096, shards: 1, stripePages: 8, replicas: 1 }, T0);
    const bounded = small.planRecovery([{ nodeId: 'n1', hosts: 1, shards: [one('v1-old', 'b1'), one('v2-old', 'b2')] }], T0);
    assert.deepEqual(bounded.add.map((v) => v.name), ['b1']);
    assert.match(bounded.skipped[0]!.reason, /holds 2 volumes, its limit/);
  });

  it('a volume whose records show a move under way is added with the move under way; records that disagree otherwise are left out', () => {
    const c = tagged('new');
    // n4 joins shard 0 (n3 to n4): it records both sets; the others the set before.
    const joining = rec({ shard: 0, hostId: 1, members: ['n1', 'n2', 'n4'], priorMembers: ['n1', 'n2', 'n3'] });
    const plan = c.planRecovery(
      [
        { nodeId: 'n1', hosts: 1, shards: [rec({ shard: 0 }), rec({ shard: 1 })] },
        { nodeId: 'n2', hosts: 1, shards: [rec({ shard: 0 }), rec({ shard: 1 })] },
        { nodeId: 'n4', hosts: 2, shards: [joining] },
      ],
      T0,
    );
    assert.deepEqual(plan.skipped, []);
    const p0 = plan.add[0]!.placements[0]!;
    assert.deepEqual(p0.replicas.map((r) => r.nodeId), ['n1', 'n2', 'n3']);
    assert.deepEqual(p0.adding, { nodeId: 'n4', hostId: 1 });
    assert.equal(p0.removing, 'n3');
    c.addRecovered(plan.add);
    assert.deepEqual(c.moves('a'), [{ shard: 0, from: 'n3', to: 'n4' }]);
    // Run again, the move is resumed (nothing written).
    c.heartbeat('n4', 2, T0);
    assert.equal(c.beginMove('a', 0, 'n3', 'n4', T0).resumed, true);

    // A record of both sets that the others' records do not match is not a move: left out.
    const odd = tagged('other').planRecovery(
      [
        { nodeId: 'n1', hosts: 1, shards: [rec({ shard: 0, members: ['n1', 'n2', 'n5'] }), rec({ shard: 1 })] },
        { nodeId: 'n4', hosts: 1, shards: [joining] },
      ],
      T0,
    );
    assert.deepEqual(odd.add, []);
    assert.match(odd.skipped[0]!.reason, /shard 0: the nodes' records disagree on its members \(a move of one of its replicas was under way\)/);

    // Two records of the set, no move, that name different members: left out.
    const split = tagged('third').planRecovery(
      [
        { nodeId: 'n1', hosts: 1, shards: [rec({ shard: 0 }), rec({ shard: 1 })] },
        { nodeId: 'n2', hosts: 1, shards: [rec({ shard: 0, members: ['n1', 'n2', 'n5'] }), rec({ shard: 1 })] },
      ],
      T0,
    );
    assert.deepEqual(split.add, []);
    assert.match(split.skipped[0]!.reason, /shard 0: the nodes' records disagree on its members$/);
  });

  it('a catalog older than the nodes\' records (restored from a copy): an id of its own it had not issued is recovered, and no new volume is given it', () => {
    const c = tagged('new');
    c.heartbeat('n1', 1, T0);
    const kept = c.create({ name: 'kept', pageCount: 8, pageSize: 4096, shards: 1, stripePages: 8, replicas: 1 }, T0);
    assert.equal(kept.id, 'v1-new');
    // The nodes hold v3-new (and v2-new), made after the copy the catalog was restored from.
    const one = (volumeId: string, volumeName: string): Rec => rec({ volumeId, volumeName, shard: 0, shards: 1, members: ['n1'] });
    const plan = c.planRecovery([{ nodeId: 'n1', hosts: 1, shards: [one('v3-new', 'newer'), one('v2-new', 'new')] }], T0);
    assert.deepEqual(plan.skipped, []);
    assert.deepEqual(plan.add.map((v) => v.id).sort(), ['v2-new', 'v3-new']);
    c.addRecovered(plan.add);
    assert.equal(c.nextId, 4);
    assert.equal(c.create({ name: 'fresh', pageCount: 8, pageSize: 4096, shards: 1, stripePages: 8, replicas: 1 }, T0).id, 'v4-new', 'not the id of a volume the nodes hold');
  });

  it('a shard whose replica a move took off a node that was down (its record older): recovered with the set every node it names records', () => {
    const c = tagged('new');
    // n3 was down while its replica of shard 0 moved to n4: it still records n1, n2, n3.
    const moved = { members: ['n1', 'n2', 'n4'] };
    const plan = c.planRecovery(
      [
        { nodeId: 'n1', hosts: 1, shards: [rec({ shard: 0, ...moved }), rec({ shard: 1 })] },
        { nodeId: 'n2', hosts: 1, shards: [rec({ shard: 0, ...moved }), rec({ shard: 1 })] },
        { nodeId: 'n3', hosts: 1, shards: [rec({ shard: 0 }), rec({ shard: 1 })] },
        { nodeId: 'n4', hosts: 1, shards: [rec({ shard: 0, ...moved })] },
      ],
      T0,
    );
    assert.deepEqual(plan.skipped, []);
    assert.deepEqual(plan.add[0]!.placements.map((p) => p.replicas.map((r) => r.nodeId)), [['n1', 'n2', 'n4'], ['n1', 'n2', 'n3']]);
    // Without a majority of a set agreeing on it, it is still left out.
    const lone = tagged('x').planRecovery(
      [
        { nodeId: 'n1', hosts: 1, shards: [rec({ shard: 0, ...moved }), rec({ shard: 1 })] },
        { nodeId: 'n3', hosts: 1, shards: [rec({ shard: 0 }), rec({ shard: 1 })] },
      ],
      T0,
    );
    assert.deepEqual(lone.add, []);
    assert.match(lone.skipped[0]!.reason, /shard 0: the nodes' records disagree on its members$/);
  });

  it('addRecovered refuses, changing nothing, a volume whose name or id the catalog took meanwhile', () => {
    const c = tagged('new');
    c.heartbeat('n1', 1, T0);
    const plan = c.planRecovery([{ nodeId: 'n1', hosts: 1, shards: [rec({ shard: 0, shards: 1, members: ['n1'] })] }], T0);
    c.create({ name: 'a', pageCount: 8, pageSize: 4096, shards: 1, stripePages: 8, replicas: 1 }, T0);
    const epoch = c.epoch;
    assert.throws(() => c.addRecovered(plan.add), (e: unknown) => e instanceof ProtocolError && e.code === 'already_exists');
    assert.equal(c.epoch, epoch);
    assert.deepEqual(c.list().map((v) => v.id), ['v1-new']);
  });
});

describe('Controller catalog writes that fail', () => {
  /** A controller on a simulated disk whose next directory fsync (`failDir`) or file fdatasync fails. */
  function failing(): { c: Controller; disk: SimDisk; failDirOnce: () => void } {
    const disk = new SimDisk();
    disk.mkdirp('meta');
    let failDir = false;
    const fsyncDir = disk.fsyncDir.bind(disk);
    disk.fsyncDir = (dir: string): void => {
      if (failDir) {
        failDir = false;
        throw new StorageError('fsync_failed', `fsyncDir ${dir}: EIO (simulated)`, { errno: 'EIO' });
      }
      fsyncDir(dir);
    };
    const c = new Controller({ meta: new MetaStore(disk, 'meta'), newCatalogTag: 't' });
    c.heartbeat('n1', 1, T0);
    return { c, disk, failDirOnce: () => (failDir = true) };
  }
  const spec = (name: string) => ({ name, pageCount: 8, pageSize: 4096 as const, shards: 1, stripePages: 8, replicas: 1 as const });

  it('one that failed before its rename changes nothing and refuses only that change', () => {
    const { c, disk } = failing();
    c.create(spec('a'), T0);
    disk.failFsync({ path: 'meta/catalog.tmp' });
    assert.throws(() => c.create(spec('b'), T0), (e: unknown) => e instanceof StorageError && e.code === 'fsync_failed');
    assert.deepEqual(c.list().map((v) => v.name), ['a']);
    c.create(spec('c'), T0);
    assert.deepEqual(c.list().map((v) => v.name), ['a', 'c']);
    assert.equal(c.storageFailure, undefined);
  });

  it('one whose directory fsync failed after the rename is answered timeout, and the catalog takes no change until a restart reads what the disk kept', () => {
    const { c, disk, failDirOnce } = failing();
    c.create(spec('a'), T0);
    failDirOnce();
    assert.throws(() => c.create(spec('b'), T0), (e: unknown) => e instanceof ProtocolError && e.code === 'timeout' && /may or may not be durable/.test(e.message));
    assert.match(c.storageFailure!, /fsyncDir/);
    // The answer was not "created": the catalog in memory does not list it, and takes nothing more.
    assert.deepEqual(c.list().map((v) => v.name), ['a']);
    assert.throws(() => c.create(spec('c'), T0), (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable' && /takes no change until the controller's node restarts/.test(e.message));
    assert.throws(() => c.delete('a'), (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable');
    // Restarted: whichever catalog the disk kept (here the new one, still visible), nothing else.
    const again = new Controller({ meta: new MetaStore(disk, 'meta') });
    assert.deepEqual(again.list().map((v) => v.name), ['a', 'b']);
    again.heartbeat('n1', 1, T0);
    again.create(spec('c'), T0);
    assert.deepEqual(again.list().map((v) => v.name), ['a', 'b', 'c']);
  });
});

describe('Controller catalog changes', () => {
  const spec = { pageCount: 64, pageSize: 4096, shards: 1, stripePages: 16, replicas: 1 } as const;

  it('refuses a second volume of the same name as already_exists, and keeps the first', () => {
    const c = controller();
    c.heartbeat('a', 1, T0);
    const first = c.create({ name: 'v', ...spec }, T0);
    const epoch = c.epoch;
    assert.throws(
      () => c.create({ name: 'v', ...spec, shards: 2 }, T0),
      (e: unknown) => e instanceof ProtocolError && e.code === 'already_exists' && e.details?.['name'] === 'v',
    );
    assert.equal(c.list().length, 1);
    assert.equal(c.get('v').id, first.id);
    assert.equal(c.get('v').shards, 1);
    assert.equal(c.epoch, epoch);
  });

  it('remembers the request id of a create, a branch and a delete with the change, durably: the same request sent again is known (madeBy, deletedBy), another is not', () => {
    const disk = new SimDisk();
    const c = new Controller({ meta: new MetaStore(disk, '') });
    c.heartbeat('a', 1, T0);
    const made = c.create({ name: 'v', ...spec }, T0, 'req-1');
    const branch = c.branch({ name: 'b', parent: 'v', lsns: [0], requestId: 'req-2' }, T0);
    assert.equal(c.madeBy('req-1', 'v')?.id, made.id);
    assert.equal(c.madeBy('req-2', 'b')?.id, branch.id);
    assert.equal(c.madeBy('req-1', 'b'), undefined, 'another name');
    assert.equal(c.madeBy('req-9', 'v'), undefined, 'another request');
    assert.equal(c.madeBy(undefined, 'v'), undefined, 'no request id');
    assert.equal(c.create({ name: 'w', ...spec }, T0).requestId, undefined);
    // Kept in the catalog's record, not in what a volume is answered with.
    assert.equal(c.list().find((x) => x.name === 'v')!.requestId, 'req-1');
    assert.equal('requestId' in volumeInfo(made), false);
    c.delete('v', 'req-3');
    c.delete('w');
    assert.equal(c.deletedBy('req-3', 'v'), true);
    assert.equal(c.deletedBy('req-3', 'w'), false, 'another name');
    assert.equal(c.deletedBy(undefined, 'w'), false);
    // A volume of that name made since: the delete sent again is still known as done.
    c.create({ name: 'v', ...spec }, T0, 'req-4');
    assert.equal(c.deletedBy('req-3', 'v'), true);
    assert.equal(c.madeBy('req-1', 'v'), undefined, 'the volume req-1 made is gone');
    // Durable: a controller started again on the catalog knows them.
    const again = new Controller({ meta: new MetaStore(disk, '') });
    assert.equal(again.madeBy('req-2', 'b')?.id, branch.id);
    assert.equal(again.deletedBy('req-3', 'v'), true);
    // The create whose volume a delete removed: known as deleted since (a late try is not made
    // anew); not one the controller undid (answered not made).
    assert.equal(again.deletedSince('req-1', 'v'), true);
    assert.equal(again.deletedSince('req-1', 'x'), false, 'another name');
    assert.equal(again.deletedSince('req-4', 'v'), false, 'the volume req-4 made is there');
    again.delete('v', undefined, { undo: true });
    assert.equal(again.deletedSince('req-4', 'v'), false, 'undone: made anew when sent again');
  });

  it(`remembers the request ids of the last RESIZES_REMEMBERED_MAX (${RESIZES_REMEMBERED_MAX}) resizes that grew a volume: one sent again after the volume grew further is known (resizedBy), another is not; one sent again after its volume was deleted is refused not_found, also once a volume of that name is made again`, () => {
    const disk = new SimDisk();
    const c = new Controller({ meta: new MetaStore(disk, '') });
    c.heartbeat('a', 1, T0);
    c.create({ name: 'v', ...spec }, T0);
    c.resize('v', 128, 'grow-1');
    assert.equal(c.resizedBy('grow-1', 'v')?.pageCount, 128);
    // Grown further since: still known, answered with the volume as it is.
    c.resize('v', 256);
    assert.equal(c.resizedBy('grow-1', 'v')?.pageCount, 256);
    assert.equal(c.resizedBy('grow-1', 'w'), undefined, 'another name');
    assert.equal(c.resizedBy('grow-9', 'v'), undefined, 'another request');
    assert.equal(c.resizedBy(undefined, 'v'), undefined);
    // The same size asked again changes nothing, and is not remembered.
    c.resize('v', 256, 'same');
    assert.equal(c.resizedBy('same', 'v'), undefined);
    assert.equal(new Controller({ meta: new MetaStore(disk, '') }).resizedBy('grow-1', 'v')?.pageCount, 256, 'durable');
    // Deleted: that resize sent again is refused, also once a volume of that name is made again
    // (another volume, which it must not grow).
    c.delete('v');
    const refused = (): void =>
      assert.throws(() => c.resizedBy('grow-1', 'v'), (e: unknown) => e instanceof ProtocolError && e.code === 'not_found' && /resized by this request and deleted since/.test(e.message) && e.details?.['requestId'] === 'grow-1');
    refused();
    c.create({ name: 'v', ...spec }, T0);
    refused();
    assert.equal(c.resizedBy('grow-9', 'v'), undefined, 'another request');
    for (let i = 0; i < RESIZES_REMEMBERED_MAX; i++) c.resize('v', 65 + i, `r-${i}`);
    assert.equal(c.resizedBy('r-0', 'v')?.pageCount, 64 + RESIZES_REMEMBERED_MAX);
    c.resize('v', 1000, 'last');
    assert.equal(c.resizedBy('r-0', 'v'), undefined, 'the oldest is forgotten');
    assert.equal(c.resizedBy('grow-1', 'v'), undefined, 'forgotten: made as a new resize');
    assert.equal(c.resizedBy('r-1', 'v')?.pageCount, 1000);
  });

  it(`remembers the last DELETES_REMEMBERED_MAX (${DELETES_REMEMBERED_MAX}) deletes with a request id`, () => {
    const c = new Controller({ meta: new MetaStore(new SimDisk(), '') });
    c.heartbeat('a', 1, T0);
    for (let i = 0; i <= DELETES_REMEMBERED_MAX; i++) {
      c.create({ name: `v${i}`, ...spec }, T0);
      c.delete(`v${i}`, `del-${i}`);
    }
    assert.equal(c.deletedBy('del-0', 'v0'), false, 'the oldest is forgotten');
    assert.equal(c.deletedBy('del-1', 'v1'), true);
    assert.equal(c.deletedBy(`del-${DELETES_REMEMBERED_MAX}`, `v${DELETES_REMEMBERED_MAX}`), true);
  });

  it('refuses a volume past volumesMax as too_large; one deleted makes room', () => {
    const c = new Controller({ meta: new MetaStore(new SimDisk(), ''), volumesMax: 2 });
    c.heartbeat('a', 1, T0);
    c.create({ name: 'v1', ...spec }, T0);
    c.create({ name: 'v2', ...spec }, T0);
    assert.throws(
      () => c.create({ name: 'v3', ...spec }, T0),
      (e: unknown) => e instanceof ProtocolError && e.code === 'too_large' && /holds 2 volumes, its limit/.test(e.message),
    );
    assert.deepEqual(c.list().map((v) => v.name), ['v1', 'v2']);
    c.delete('v1');
    c.create({ name: 'v3', ...spec }, T0);
    assert.deepEqual(c.list().map((v) => v.name), ['v2', 'v3']);
  });

  it('a catalog write that fails changes nothing: the volume is neither listed nor in the catalog on disk, and the epoch stays', () => {
    const disk = new SimDisk();
    const c = new Controller({ meta: new MetaStore(disk, '') });
    c.heartbeat('a', 1, T0);
    c.create({ name: 'v1', ...spec }, T0);
    const epoch = c.epoch;
    disk.failFsync({ times: 1 });
    assert.throws(() => c.create({ name: 'v2', ...spec }, T0), (e: unknown) => e instanceof StorageError && e.code === 'fsync_failed');
    assert.deepEqual(c.list().map((v) => v.name), ['v1']);
    assert.throws(() => c.get('v2'), (e: unknown) => e instanceof ProtocolError && e.code === 'not_found');
    assert.equal(c.epoch, epoch);
    disk.failFsync({ times: 1 });
    assert.throws(() => c.delete('v1'), (e: unknown) => e instanceof StorageError && e.code === 'fsync_failed');
    assert.deepEqual(c.list().map((v) => v.name), ['v1']);
    assert.deepEqual(c.assignments('a').tombstones, []);
    assert.equal(c.epoch, epoch);
    // The catalog on disk agrees with what the controller says.
    disk.powerCut();
    const reopened = new Controller({ meta: new MetaStore(disk, '') });
    assert.deepEqual(reopened.list().map((v) => v.name), ['v1']);
    assert.equal(reopened.epoch, epoch);
  });

  it('refuses to start on a catalog of an unknown version', () => {
    const meta = new MetaStore(new SimDisk(), '');
    meta.write('catalog', { version: 2, epoch: 5, nextId: 1, volumes: [], tombstones: [] });
    assert.throws(() => new Controller({ meta }), (e: unknown) => e instanceof StorageError && e.code === 'corruption' && /unknown version 2/.test(e.message));
  });
});

describe('Controller moves of a replica', () => {
  const spec = { pageCount: 64, pageSize: 4096, shards: 2, stripePages: 16, replicas: 3 } as const;

  /** A catalog of nodes a..d (2 hosts each) with volume 'v' placed on a, b, c: shard 0 on a, b, c. */
  function fourNodes(disk = new SimDisk()): { c: Controller; disk: SimDisk } {
    const c = new Controller({ meta: new MetaStore(disk, '') });
    for (const id of ['a', 'b', 'c']) c.heartbeat(id, 2, T0);
    c.create({ name: 'v', ...spec }, T0);
    c.heartbeat('d', 2, T0);
    return { c, disk };
  }

  const members = (c: Controller, shard = 0): string[] => c.get('v').placements[shard]!.replicas.map((r) => r.nodeId);
  const refused = (code: string, pattern: RegExp) => (e: unknown): boolean => {
    assert.ok(e instanceof ProtocolError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  };

  it('records a move durably: the node it adds is assigned the shard with both sets, the members keep theirs', () => {
    const { c, disk } = fourNodes();
    assert.deepEqual(members(c), ['a', 'b', 'c']);
    const epoch = c.epoch;
    const m = c.beginMove('v', 0, 'a', 'd', T0 + 1);
    assert.equal(m.resumed, false);
    assert.equal(m.done, false);
    assert.deepEqual(m.priorMembers, ['a', 'b', 'c']);
    assert.deepEqual(m.members, ['d', 'b', 'c']);
    assert.equal(c.epoch, epoch + 1);
    // Durable: a controller started again on the disk holds it.
    const again = new Controller({ meta: new MetaStore(disk, '') });
    const p = again.get('v').placements[0]!;
    assert.deepEqual(p.adding, { nodeId: 'd', hostId: 0 });
    assert.equal(p.removing, 'a');
    assert.deepEqual(p.replicas.map((r) => r.nodeId), ['a', 'b', 'c']);
    assert.deepEqual(again.moves('v'), [{ shard: 0, from: 'a', to: 'd' }]);
    // 'd' is given the shard as the node the move adds; 'a' keeps it until the move is done.
    const d = again.assignments('d').shards;
    assert.deepEqual(d.map((s) => [s.placement.shard, s.role, s.hostId]), [[0, 'adding', 0]]);
    assert.deepEqual(again.assignments('a').shards.filter((s) => s.placement.shard === 0).map((s) => s.role), ['member']);
  });

  it('finishes a move durably: the new node replaces the old in place, which is told to destroy its replica', () => {
    const { c, disk } = fourNodes();
    c.beginMove('v', 0, 'a', 'd', T0 + 1);
    const v = c.finishMove('v', 0, 'a', 'd');
    assert.deepEqual(v.placements[0]!.replicas.map((r) => r.nodeId), ['d', 'b', 'c']);
    const again = new Controller({ meta: new MetaStore(disk, '') });
    const p = again.get('v').placements[0]!;
    assert.equal(p.adding, undefined);
    assert.equal(p.removing, undefined);
    assert.deepEqual(p.removed, ['a']);
    assert.deepEqual(again.moves('v'), []);
    assert.deepEqual(again.assignments('d').shards.map((s) => [s.placement.shard, s.role]), [[0, 'member']]);
    // 'a' still holds shard 1 as a member, and is told shard 0 was moved off it.
    assert.deepEqual(again.assignments('a').shards.map((s) => [s.placement.shard, s.role]).sort(), [[0, 'removed'], [1, 'member']]);
    // Finishing it again changes nothing.
    const epoch = again.epoch;
    again.finishMove('v', 0, 'a', 'd');
    assert.equal(again.epoch, epoch);
  });

  it('the same move asked again resumes it (nothing written); once done, it is answered done', () => {
    const { c } = fourNodes();
    c.beginMove('v', 0, 'a', 'd', T0 + 1);
    const epoch = c.epoch;
    const again = c.beginMove('v', 0, 'a', 'd', T0 + 2);
    assert.equal(again.resumed, true);
    assert.equal(again.done, false);
    assert.deepEqual(again.members, ['d', 'b', 'c']);
    assert.equal(c.epoch, epoch);
    c.finishMove('v', 0, 'a', 'd');
    // 'a' is dead by now: a finished move does not need it, nor 'd' to be live.
    const done = c.beginMove('v', 0, 'a', 'd', T0 + 60_000);
    assert.equal(done.done, true);
    assert.deepEqual(done.members, ['d', 'b', 'c']);
    assert.deepEqual(done.priorMembers, ['a', 'b', 'c']);
    // Only that move: another from the node moved off, to a member, is refused as it was before.
    assert.throws(() => c.beginMove('v', 0, 'a', 'b', T0 + 60_000), refused('bad_request', /node 'a' holds no replica of shard 0/));
  });

  it('one move per shard: another move of the shard under way is refused unavailable, naming the one to finish; another shard may move', () => {
    const { c } = fourNodes();
    c.beginMove('v', 0, 'a', 'd', T0 + 1);
    c.heartbeat('e', 1, T0 + 1);
    assert.throws(() => c.beginMove('v', 0, 'b', 'e', T0 + 2), refused('unavailable', /the move of shard 0 of volume 'v' from node 'a' to node 'd' is under way, one move of a shard at a time: run that one again to finish it \(strata shard move v 0 --from a --to d\)/));
    assert.throws(() => c.beginMove('v', 0, 'a', 'e', T0 + 2), refused('unavailable', /from node 'a' to node 'd' is under way/));
    assert.throws(() => c.finishMove('v', 0, 'a', 'e'), refused('unavailable', /holds no move of shard 0 of volume 'v' from node 'a' to node 'e'/));
    const other = c.beginMove('v', 1, members(c, 1)[0]!, members(c, 1).includes('d') ? 'e' : 'd', T0 + 2);
    assert.equal(other.resumed, false);
  });

  it('refuses, changing nothing: an unknown volume, a shard out of range, a from that is not a member, a to that is, the same node, a to not live', () => {
    const { c } = fourNodes();
    const epoch = c.epoch;
    assert.throws(() => c.beginMove('nope', 0, 'a', 'd', T0 + 1), refused('not_found', /volume 'nope' does not exist/));
    assert.throws(() => c.beginMove('v', 2, 'a', 'd', T0 + 1), refused('out_of_range', /shard 2: volume 'v' has shards 0\.\.1/));
    assert.throws(() => c.beginMove('v', 0, 'd', 'a', T0 + 1), refused('bad_request', /node 'd' holds no replica of shard 0 of volume 'v': its replicas are on a, b, c/));
    assert.throws(() => c.beginMove('v', 0, 'a', 'b', T0 + 1), refused('bad_request', /node 'b' holds a replica of shard 0 of volume 'v' already/));
    assert.throws(() => c.beginMove('v', 0, 'a', 'a', T0 + 1), refused('bad_request', /the same node 'a'/));
    assert.throws(() => c.beginMove('v', 0, 'a', 'zz', T0 + 1), refused('unavailable', /node 'zz' is not live .*start it, or move the replica to a live node that holds none of the shard \(d\)/));
    // 'd' silent past the live window.
    assert.throws(() => c.beginMove('v', 0, 'a', 'd', T0 + 60_000), refused('unavailable', /node 'd' is not live/));
    assert.equal(c.epoch, epoch);
    assert.deepEqual(c.moves('v'), []);
  });

  it('a finished move takes the node it adds off the nodes moved off the shard; one moved back is not destroyed', () => {
    const { c } = fourNodes();
    c.beginMove('v', 0, 'a', 'd', T0 + 1);
    c.finishMove('v', 0, 'a', 'd');
    c.heartbeat('a', 2, T0 + 2);
    c.beginMove('v', 0, 'd', 'a', T0 + 2);
    // While 'a' is added again it is assigned the shard as the node added, not as one moved off.
    assert.deepEqual(c.assignments('a').shards.filter((s) => s.placement.shard === 0).map((s) => s.role), ['adding']);
    assert.equal(c.get('v').placements[0]!.removed, undefined, 'the node added again is no longer recorded as moved off');
    c.finishMove('v', 0, 'd', 'a');
    assert.deepEqual(c.get('v').placements[0]!.removed, ['d']);
    assert.deepEqual(members(c), ['a', 'b', 'c']);
  });

  it('the node a move adds counts for placement and membership: its host takes load, and it is not forgotten', () => {
    const { c } = fourNodes();
    const m = c.beginMove('v', 0, 'a', 'd', T0 + 1);
    assert.equal(m.to.hostId, 0);
    c.beginMove('v', 1, members(c, 1).find((n) => n !== 'd')!, members(c, 1).includes('d') ? 'a' : 'd', T0 + 1);
    // A silent 'd' that is only being added to a shard is still placed on: not forgotten.
    c.heartbeat('a', 2, T0 + MEMBER_SILENCE_MS_MAX + 120_000);
    assert.ok(c.knownNodes().some((n) => n.nodeId === 'd'));
  });

  it('the node a move adds is given its least loaded host', () => {
    const { c } = fourNodes();
    assert.equal(c.beginMove('v', 0, 'a', 'd', T0 + 1).to.hostId, 0);
    // Host 0 of 'd' takes shard 0: shard 1 goes to host 1.
    assert.equal(c.beginMove('v', 1, 'a', 'd', T0 + 1).to.hostId, 1);
  });

  it('the nodes moved off a shard are bounded (REMOVED_PER_SHARD_MAX), the newest kept', () => {
    const { c } = fourNodes();
    const fresh = Array.from({ length: REMOVED_PER_SHARD_MAX + 2 }, (_, i) => `m${i}`);
    let from = 'a';
    for (const to of fresh) {
      c.heartbeat(to, 1, T0 + 1);
      c.beginMove('v', 0, from, to, T0 + 1);
      c.finishMove('v', 0, from, to);
      from = to;
    }
    const offs = ['a', ...fresh.slice(0, -1)];
    assert.deepEqual(c.get('v').placements[0]!.removed, offs.slice(-REMOVED_PER_SHARD_MAX));
  });

  it('a catalog write that fails refuses the move, and the catalog holds none (nor any finish of one)', () => {
    const disk = new SimDisk();
    const { c } = fourNodes(disk);
    disk.failFsync({ path: 'catalog.tmp' });
    assert.throws(() => c.beginMove('v', 0, 'a', 'd', T0 + 1), (e: unknown) => e instanceof StorageError && e.code === 'fsync_failed');
    assert.deepEqual(c.moves('v'), []);
    assert.deepEqual(c.assignments('d').shards, []);
    c.beginMove('v', 0, 'a', 'd', T0 + 1);
    disk.failFsync({ path: 'catalog.tmp' });
    assert.throws(() => c.finishMove('v', 0, 'a', 'd'), (e: unknown) => e instanceof StorageError && e.code === 'fsync_failed');
    assert.deepEqual(c.moves('v'), [{ shard: 0, from: 'a', to: 'd' }]);
    assert.deepEqual(members(c), ['a', 'b', 'c']);
  });
});

describe("Controller replacement of dead nodes' replicas (repairPlan)", () => {
  const AFTER = 60_000;
  const spec = (name: string, shards: number, replicas: 1 | 3 | 5) => ({ name, pageCount: 64, pageSize: 4096 as const, shards, stripePages: 16, replicas });
  /** A controller that heard from `ids` at T0 and placed volumes then. */
  function cluster(ids: string[]): Controller {
    const c = controller();
    for (const id of ids) c.heartbeat(id, 1, T0);
    return c;
  }
  const beat = (c: Controller, ids: string[], at: number): void => ids.forEach((id) => c.heartbeat(id, 1, at));

  it('replaces the replica of a node silent longer than the wait, by the least loaded live node outside the set', () => {
    const c = cluster(['a', 'b', 'c', 'd', 'e']);
    // Shard 0 on a, b, c; shard 1 on b, c, d (placement rotates over the live nodes).
    c.create(spec('v', 2, 3), T0);
    assert.deepEqual(c.get('v').placements.map((p) => p.replicas.map((r) => r.nodeId)), [['a', 'b', 'c'], ['b', 'c', 'd']]);
    // 'c' goes silent; the others heartbeat on.
    const opts = { afterMs: AFTER, sinceMs: T0, max: 8 };
    beat(c, ['a', 'b', 'd', 'e'], T0 + AFTER);
    assert.deepEqual(c.repairPlan(T0 + AFTER, opts), [], 'silent, but not longer than the wait');
    beat(c, ['a', 'b', 'd', 'e'], T0 + AFTER + 1);
    const plan = c.repairPlan(T0 + AFTER + 1, opts);
    // Shard 0: d holds 1 replica and e none, so e; shard 1 (b, c, d): e holds one now, a holds
    // one: the first by id among equals, a.
    assert.deepEqual(plan, [
      { volume: 'v', volumeId: c.get('v').id, shard: 0, from: 'c', to: 'e', resumed: false, reason: 'dead' },
      { volume: 'v', volumeId: c.get('v').id, shard: 1, from: 'c', to: 'a', resumed: false, reason: 'dead' },
    ]);
    // Bounded, and shards the caller names are left for later.
    assert.deepEqual(c.repairPlan(T0 + AFTER + 1, { ...opts, max: 1 }).map((m) => m.shard), [0]);
    assert.deepEqual(c.repairPlan(T0 + AFTER + 1, { ...opts, skip: (_, shard) => shard === 0 }).map((m) => [m.shard, m.to]), [[1, 'e']]);
    assert.deepEqual(c.repairPlan(T0 + AFTER + 1, { ...opts, max: 0 }), []);
    // Nothing is recorded until the move begins.
    assert.deepEqual(c.moves('v'), []);
  });

  it('a node that heartbeats again, or was heard from recently enough, is not replaced', () => {
    const c = cluster(['a', 'b', 'c', 'd']);
    c.create(spec('v', 1, 3), T0);
    beat(c, ['a', 'b', 'd'], T0 + AFTER + 1);
    assert.equal(c.repairPlan(T0 + AFTER + 1, { afterMs: AFTER, sinceMs: T0, max: 8 }).length, 1);
    c.heartbeat('c', 1, T0 + AFTER + 2);
    assert.deepEqual(c.repairPlan(T0 + AFTER + 2, { afterMs: AFTER, sinceMs: T0, max: 8 }), []);
    // A wait shorter than the live window (5 s): a node is live, so not dead, for the whole window.
    beat(c, ['a', 'b', 'd'], T0 + AFTER + 4000);
    assert.deepEqual(c.repairPlan(T0 + AFTER + 5002, { afterMs: 1000, sinceMs: T0, max: 8 }), []);
    assert.deepEqual(c.repairPlan(T0 + AFTER + 5003, { afterMs: 1000, sinceMs: T0, max: 8 }).map((m) => [m.from, m.to]), [['c', 'd']]);
  });

  it('a shard without a live majority, a sole replica, and a shard with no live node outside its set are left alone', () => {
    const c = cluster(['a', 'b', 'c']);
    c.create(spec('three', 1, 3), T0);
    c.create(spec('one', 1, 1), T0);
    const at = T0 + AFTER + 1;
    const opts = { afterMs: AFTER, sinceMs: T0, max: 8 };
    // 'c' dead, but every live node holds a replica of 'three' already; 'one' is on a live node.
    beat(c, ['a', 'b'], at);
    assert.deepEqual(c.repairPlan(at, opts), []);
    // A fourth node: 'three' gets it for 'c'.
    c.heartbeat('d', 1, at);
    assert.deepEqual(c.repairPlan(at, opts).map((m) => [m.volume, m.from, m.to]), [['three', 'c', 'd']]);
    // 'b' dead too: 'three' has one live member of three, no majority to change its set.
    const later = at + AFTER + 1;
    beat(c, ['a', 'd'], later);
    const one = c.get('one').placements[0]!.replicas[0]!.nodeId;
    const plan = c.repairPlan(later, opts);
    assert.deepEqual(plan.filter((m) => m.volume === 'three'), []);
    // The sole replica of 'one' is on a dead node or a live one: never moved either way.
    assert.deepEqual(plan.filter((m) => m.volume === 'one'), [], `sole replica on ${one}`);
  });

  it('counts a node it has not heard from since it started as silent since then', () => {
    const disk = new SimDisk();
    const first = new Controller({ meta: new MetaStore(disk, '') });
    beat(first, ['a', 'b', 'c', 'd'], T0);
    first.create(spec('v', 1, 3), T0);
    // Started again at T1: 'c' never heartbeats.
    const T1 = T0 + 10 * AFTER;
    const again = new Controller({ meta: new MetaStore(disk, '') });
    beat(again, ['a', 'b', 'd'], T1 + AFTER);
    assert.deepEqual(again.repairPlan(T1 + AFTER, { afterMs: AFTER, sinceMs: T1, max: 8 }), []);
    beat(again, ['a', 'b', 'd'], T1 + AFTER + 1);
    assert.deepEqual(again.repairPlan(T1 + AFTER + 1, { afterMs: AFTER, sinceMs: T1, max: 8 }).map((m) => [m.from, m.to]), [['c', 'd']]);
  });

  it('resumes a move under way once both sets have a live majority and the node it adds is live, or dead (then without it)', () => {
    const c = cluster(['a', 'b', 'c', 'd', 'e']);
    c.create(spec('v', 1, 3), T0);
    c.beginMove('v', 0, 'c', 'd', T0);
    const opts = { afterMs: AFTER, sinceMs: T0, max: 8 };
    // Every node live: the recorded move is proposed as it is (not another one).
    beat(c, ['a', 'b', 'c', 'd', 'e'], T0 + 1000);
    assert.deepEqual(c.repairPlan(T0 + 1000, opts), [{ volume: 'v', volumeId: c.get('v').id, shard: 0, from: 'c', to: 'd', resumed: true, reason: 'resumed' }]);
    // The node it adds is silent, not live, but not yet for longer than the wait: nothing.
    beat(c, ['a', 'b', 'c', 'e'], T0 + 7000);
    assert.deepEqual(c.repairPlan(T0 + 7000, opts), []);
    // Dead: the move is finished without it (its replica is then replaced in turn).
    const at = T0 + AFTER + 2000;
    beat(c, ['a', 'b', 'c', 'e'], at);
    assert.deepEqual(c.repairPlan(at, opts), [{ volume: 'v', volumeId: c.get('v').id, shard: 0, from: 'c', to: 'd', resumed: true, reason: 'resumed', withoutOpen: true }]);
    // d back, but a and b dead: the set before (a, b, c) has one live member.
    const later = at + AFTER + 1;
    beat(c, ['c', 'd', 'e'], later);
    assert.deepEqual(c.repairPlan(later, opts), []);
    // Finished, it is no longer proposed.
    beat(c, ['a', 'b', 'c', 'd', 'e'], later + 1);
    c.finishMove('v', 0, 'c', 'd');
    assert.deepEqual(c.repairPlan(later + 1, opts), []);
  });

  it('with the wait 0, a node silent however long keeps its replicas', () => {
    const c = cluster(['a', 'b', 'c', 'd']);
    c.create(spec('v', 1, 3), T0);
    const at = T0 + 10 * AFTER;
    beat(c, ['a', 'b', 'd'], at);
    assert.deepEqual(c.repairPlan(at, { afterMs: 0, sinceMs: T0, max: 8 }), []);
    // The same silence with a wait: replaced.
    assert.deepEqual(c.repairPlan(at, { afterMs: AFTER, sinceMs: T0, max: 8 }).map((m) => [m.from, m.to]), [['c', 'd']]);
  });

  it('does not resume a move under way while either set, the one before or the one after, lacks a live majority', () => {
    const c = cluster(['a', 'b', 'c', 'd', 'e']);
    c.create(spec('v', 1, 3), T0);
    c.beginMove('v', 0, 'c', 'd', T0);
    const opts = { afterMs: AFTER, sinceMs: T0, max: 8 };
    // b and d dead: the set before (a, b, c) has a and c live, the set after (a, b, d) a alone.
    const at = T0 + AFTER + 1000;
    beat(c, ['a', 'c', 'e'], at);
    assert.deepEqual(c.repairPlan(at, opts), []);
    // a and d live, b and c not: the set after has a majority, the set before a alone.
    const later = at + 10_000;
    beat(c, ['a', 'd', 'e'], later);
    assert.deepEqual(c.repairPlan(later, opts), []);
    // All live again: resumed.
    beat(c, ['a', 'b', 'c', 'd', 'e'], later + 1);
    assert.deepEqual(c.repairPlan(later + 1, opts).map((m) => [m.from, m.to, m.reason]), [['c', 'd', 'resumed']]);
  });

  it('counts the replica a move under way adds in the load of its node when choosing where a dead replica goes', () => {
    const c = cluster(['a', 'b', 'c', 'd', 'e']);
    c.create(spec('v', 1, 3), T0);
    // A volume of one replica, on b, being moved to d: d holds one replica (the one it adds), e none.
    const w = c.create(spec('w', 1, 1), T0);
    assert.deepEqual(w.placements[0]!.replicas.map((r) => r.nodeId), ['b']);
    c.beginMove('w', 0, 'b', 'd', T0);
    assert.deepEqual(c.get('v').placements[0]!.replicas.map((r) => r.nodeId), ['a', 'b', 'c']);
    const at = T0 + AFTER + 1;
    beat(c, ['a', 'b', 'd', 'e'], at);
    assert.deepEqual(c.repairPlan(at, { afterMs: AFTER, sinceMs: T0, max: 8 }).filter((m) => m.volume === 'v').map((m) => [m.from, m.to]), [['c', 'e']]);
  });

  it('after a finished repair, a node that comes back is not a member and is not replaced again', () => {
    const c = cluster(['a', 'b', 'c', 'd']);
    c.create(spec('v', 1, 3), T0);
    const at = T0 + AFTER + 1;
    beat(c, ['a', 'b', 'd'], at);
    const [m] = c.repairPlan(at, { afterMs: AFTER, sinceMs: T0, max: 8 });
    c.beginMove(m!.volume, m!.shard, m!.from, m!.to, at);
    c.finishMove(m!.volume, m!.shard, m!.from, m!.to);
    assert.deepEqual(c.get('v').placements[0]!.replicas.map((r) => r.nodeId), ['a', 'b', 'd']);
    assert.deepEqual(c.repairPlan(at + 1, { afterMs: AFTER, sinceMs: T0, max: 8 }), []);
    c.heartbeat('c', 1, at + 2);
    assert.deepEqual(c.repairPlan(at + 2, { afterMs: AFTER, sinceMs: T0, max: 8 }), []);
    assert.deepEqual(c.assignments('c').shards.map((s) => s.role), ['removed']);
  });

  it('replaces a replica a live node reports down for longer than the wait, not before, and not once the reports stop', () => {
    const c = cluster(['a', 'b', 'c', 'd', 'e']);
    c.create(spec('v', 2, 3), T0);
    const id = c.get('v').id;
    assert.deepEqual(c.get('v').placements.map((p) => p.replicas.map((r) => r.nodeId)), [['a', 'b', 'c'], ['b', 'c', 'd']]);
    const opts = { afterMs: AFTER, sinceMs: T0, max: 8 };
    const downFor = (forMs: number) => [{ volumeId: id, shard: 0, forMs }];
    // c reports its replica of shard 0 down from T0 + 1000 on; every node heartbeats.
    c.heartbeat('c', 1, T0 + 1000, undefined, { down: downFor(0) });
    assert.equal(c.underReplicated(T0 + 1000), 1, 'a replica reported down leaves its shard under-replicated');
    beat(c, ['a', 'b', 'd', 'e'], T0 + AFTER + 1000);
    c.heartbeat('c', 1, T0 + AFTER + 1000, undefined, { down: downFor(AFTER) });
    assert.deepEqual(c.repairPlan(T0 + AFTER + 1000, opts), [], 'down, but not longer than the wait');
    beat(c, ['a', 'b', 'd', 'e'], T0 + AFTER + 1001);
    c.heartbeat('c', 1, T0 + AFTER + 1001, undefined, { down: downFor(AFTER + 1) });
    // Shard 0 only (c's replica of shard 1 serves), to e: d holds one replica, e none.
    const failed = [{ volume: 'v', volumeId: id, shard: 0, from: 'c', to: 'e', resumed: false, reason: 'failed' }];
    assert.deepEqual(c.repairPlan(T0 + AFTER + 1001, opts), failed);
    // The node restarted and counts from 0 again: the controller keeps the earlier start.
    c.heartbeat('c', 1, T0 + AFTER + 1002, undefined, { down: downFor(0) });
    assert.deepEqual(c.repairPlan(T0 + AFTER + 1002, opts), failed);
    // Without repairs, never.
    assert.deepEqual(c.repairPlan(T0 + AFTER + 1002, { ...opts, afterMs: 0 }), []);
    // The replica serves again: no longer reported, nothing to do, and the count starts over.
    c.heartbeat('c', 1, T0 + AFTER + 1003);
    assert.deepEqual(c.repairPlan(T0 + AFTER + 1003, opts), []);
    assert.equal(c.underReplicated(T0 + AFTER + 1003), 0);
    c.heartbeat('c', 1, T0 + AFTER + 1004, undefined, { down: downFor(0) });
    assert.deepEqual(c.repairPlan(T0 + AFTER + 1004, opts), []);
  });

  it("a replica reported down does not count toward its shard's majority; a dead node's replica is replaced before it", () => {
    const c = cluster(['a', 'b', 'c', 'd']);
    c.create(spec('v', 1, 3), T0);
    const id = c.get('v').id;
    const at = T0 + AFTER + 1;
    const opts = { afterMs: AFTER, sinceMs: T0, max: 8 };
    // c dead; b live but reports its replica down (not yet past the wait): a alone serves.
    beat(c, ['a', 'd'], at);
    c.heartbeat('b', 1, at, undefined, { down: [{ volumeId: id, shard: 0, forMs: 10 }] });
    assert.deepEqual(c.repairPlan(at, opts), [], 'one replica of three serves: no majority to change the set');
    c.heartbeat('b', 1, at);
    assert.deepEqual(c.repairPlan(at, opts).map((m) => [m.from, m.to, m.reason]), [['c', 'd', 'dead']]);
    // Five replicas, one on a dead node and one reported down past the wait: the dead node's first.
    const f = cluster(['a', 'b', 'c', 'd', 'e', 'f']);
    f.create(spec('w', 1, 5), T0);
    assert.deepEqual(f.get('w').placements[0]!.replicas.map((r) => r.nodeId), ['a', 'b', 'c', 'd', 'e']);
    beat(f, ['a', 'd', 'e', 'f'], at);
    f.heartbeat('b', 1, at, undefined, { down: [{ volumeId: f.get('w').id, shard: 0, forMs: AFTER + 1 }] });
    assert.deepEqual(f.repairPlan(at, opts).map((m) => [m.from, m.to, m.reason]), [['c', 'f', 'dead']]);
    // A move under way from b is resumed only while each set has a majority that serves.
    f.beginMove('w', 0, 'b', 'f', at);
    assert.deepEqual(f.repairPlan(at, opts).map((m) => [m.from, m.to, m.reason]), [['b', 'f', 'resumed']]);
    f.heartbeat('d', 1, at, undefined, { down: [{ volumeId: f.get('w').id, shard: 0, forMs: 0 }] });
    assert.deepEqual(f.repairPlan(at, opts), [], 'a, e (and f) serve: two of five in the old set');
  });
});

/** Heartbeats at `at` from each node of `zones` ([id, zone]) but those of `but`. */
function beatZones(c: Controller, zones: ReadonlyArray<readonly [string, string]>, at: number, but: readonly string[] = []): void {
  for (const [id, zone] of zones) if (!but.includes(id)) c.heartbeat(id, 1, at, zone);
}

describe('Controller failure domains (zones)', () => {
  const spec = (name: string, shards: number) => ({ name, pageCount: 64, pageSize: 4096 as const, shards, stripePages: 16, replicas: 3 as const });

  it("places a shard's replicas in distinct zones first, then on the next nodes when there are fewer zones than replicas", () => {
    const c = controller();
    // n1, n2 in zone a; n3 in b; n4 in c.
    beatZones(c, [['n1', 'a'], ['n2', 'a'], ['n3', 'b'], ['n4', 'c']] as const, T0);
    const v = c.create(spec('v', 4), T0);
    for (const p of v.placements) {
      const ids = p.replicas.map((r) => r.nodeId);
      assert.equal(new Set(ids).size, 3);
      assert.equal(ids.filter((id) => id === 'n1' || id === 'n2').length, 1, `shard ${p.shard}: ${ids.join(',')} holds one replica in zone a`);
    }
    // Two zones for three replicas: both, then the next node.
    const d = controller();
    beatZones(d, [['n1', 'a'], ['n2', 'a'], ['n3', 'a'], ['n4', 'b']] as const, T0);
    for (const p of d.create(spec('w', 4), T0).placements) {
      const ids = p.replicas.map((r) => r.nodeId);
      assert.equal(new Set(ids).size, 3);
      assert.ok(ids.includes('n4'), `shard ${p.shard}: ${ids.join(',')} has its zone b replica`);
    }
    // Without zones, each node is a domain: consecutive nodes, as before.
    const e = controller();
    for (const id of ['n1', 'n2', 'n3', 'n4']) e.heartbeat(id, 1, T0);
    assert.deepEqual(e.create(spec('x', 2), T0).placements.map((p) => p.replicas.map((r) => r.nodeId)), [['n1', 'n2', 'n3'], ['n2', 'n3', 'n4']]);
  });

  it("replaces a dead node's replica in a zone the shard's other replicas are not in, before a less loaded node", () => {
    const c = controller();
    const zones = [['n1', 'a'], ['n2', 'b'], ['n3', 'c'], ['n4', 'a'], ['n5', 'd']] as const;
    beatZones(c, zones, T0);
    c.create(spec('v', 1), T0);
    assert.deepEqual(c.get('v').placements[0]!.replicas.map((r) => r.nodeId), ['n1', 'n2', 'n3']);
    // n5 holds more replicas than n4 (another volume's, placed while n4 was silent), but n4 is
    // in zone a, where n1 is.
    beatZones(c, zones, T0 + 10_000, ['n4']);
    c.create({ ...spec('other', 4), replicas: 1 }, T0 + 10_000);
    const load = (id: string): number => c.list().reduce((n, v) => n + v.placements.filter((p) => p.replicas.some((r) => r.nodeId === id)).length, 0);
    assert.ok(load('n5') > load('n4'), `n5 holds ${load('n5')}, n4 ${load('n4')}`);
    const at = T0 + 120_000;
    beatZones(c, zones, at, ['n3']);
    assert.deepEqual(c.repairPlan(at, { afterMs: 60_000, sinceMs: T0, max: 8 }).filter((m) => m.volume === 'v').map((m) => [m.from, m.to]), [['n3', 'n5']]);
    // Zone d gone too: n4 (zone a, like n1) is the only node left outside the set.
    beatZones(c, zones, at + 120_000, ['n3', 'n5']);
    assert.deepEqual(c.repairPlan(at + 120_000, { afterMs: 60_000, sinceMs: T0, max: 8 }).filter((m) => m.volume === 'v').map((m) => [m.from, m.to]), [['n3', 'n4']]);
  });

  it("a dead node's replica may go to a node of the dead node's own zone: only the zones of the replicas that stay count", () => {
    const c = controller();
    // n4 is in zone a, where n1 is; n5 in zone c, the dead n3's.
    const zones = [['n1', 'a'], ['n2', 'b'], ['n3', 'c'], ['n4', 'a'], ['n5', 'c']] as const;
    beatZones(c, zones, T0);
    c.create(spec('v', 1), T0);
    assert.deepEqual(c.get('v').placements[0]!.replicas.map((r) => r.nodeId), ['n1', 'n2', 'n3']);
    const at = T0 + 120_000;
    beatZones(c, zones, at, ['n3']);
    assert.deepEqual(c.repairPlan(at, { afterMs: 60_000, sinceMs: T0, max: 8 }).map((m) => [m.from, m.to]), [['n3', 'n5']]);
  });
});

describe('Controller rebalance of leaders (leaderBalancePlan)', () => {
  it('from the node that leads the most to the one that leads the fewest, two fewer at least, but the pairs it is told to skip; draining and silent nodes left out', () => {
    const c = controller();
    const beat = (at: number, leading: Record<string, number>): void => {
      for (const [id, n] of Object.entries(leading)) c.heartbeat(id, 1, at, undefined, { leading: n });
    };
    beat(T0, { a: 5, b: 1, c: 0 });
    assert.deepEqual(Object.fromEntries(c.leaders(T0)), { a: 5, b: 1, c: 0 });
    assert.deepEqual(c.leaderBalancePlan(T0), { from: 'a', to: 'c' });
    // a leads no shard with a replica on c: then b.
    assert.deepEqual(c.leaderBalancePlan(T0, new Set(['a>c'])), { from: 'a', to: 'b' });
    assert.equal(c.leaderBalancePlan(T0, new Set(['a>c', 'a>b'])), undefined, 'b leads 1, c 0: no pair two apart but those');
    // Even to one: nothing.
    beat(T0 + 1000, { a: 2, b: 2, c: 1 });
    assert.equal(c.leaderBalancePlan(T0 + 1000), undefined);
    // A heartbeat without a count: it leads none.
    beat(T0 + 2000, { a: 4, b: 2 });
    c.heartbeat('c', 1, T0 + 2000);
    assert.deepEqual(c.leaderBalancePlan(T0 + 2000), { from: 'a', to: 'c' });
    // A draining node neither gives nor takes; a silent one is not counted.
    c.drain('c', false);
    assert.deepEqual(Object.fromEntries(c.leaders(T0 + 2000)), { a: 4, b: 2 });
    assert.deepEqual(c.leaderBalancePlan(T0 + 2000), { from: 'a', to: 'b' });
    assert.deepEqual(Object.keys(Object.fromEntries(c.leaders(T0 + 60_000))), [], 'none live a minute later');
  });

  it("the basis a pair with no shard to hand over is found on changes with a node's count of leaders and with a shard's set, not with a heartbeat alone", () => {
    const c = controller();
    for (const id of ['a', 'b', 'c', 'd']) c.heartbeat(id, 1, T0, undefined, { leading: id === 'a' ? 2 : 0 });
    c.create({ name: 'v', pageCount: 64, pageSize: 4096, shards: 1, stripePages: 16, replicas: 3 }, T0);
    const basis = c.leaderBalanceBasis(T0);
    // The same counts a second later: the same basis (the pairs found stay found).
    for (const id of ['a', 'b', 'c', 'd']) c.heartbeat(id, 1, T0 + 1000, undefined, { leading: id === 'a' ? 2 : 0 });
    assert.equal(c.leaderBalanceBasis(T0 + 1000), basis);
    // A count changed: another basis.
    c.heartbeat('b', 1, T0 + 1000, undefined, { leading: 1 });
    const led = c.leaderBalanceBasis(T0 + 1000);
    assert.notEqual(led, basis);
    // A shard's set changed (a move begun, then done): another basis each time.
    const from = c.get('v').placements[0]!.replicas[0]!.nodeId;
    const to = ['a', 'b', 'c', 'd'].find((n) => !c.get('v').placements[0]!.replicas.some((r) => r.nodeId === n))!;
    c.beginMove('v', 0, from, to, T0 + 1000);
    const adding = c.leaderBalanceBasis(T0 + 1000);
    assert.notEqual(adding, led);
    c.finishMove('v', 0, from, to);
    assert.notEqual(c.leaderBalanceBasis(T0 + 1000), adding);
    assert.notEqual(c.leaderBalanceBasis(T0 + 1000), led);
  });
});

describe('volume id numbers (idNumber)', () => {
  it('reads the base-36 number of an id with or without a tag, and nothing of another form', () => {
    assert.equal(idNumber('v1'), 1);
    assert.equal(idNumber('vz-ab12'), 35);
    assert.equal(idNumber('v10-x'), 36);
    for (const id of ['x1', 'v', 'v-1', 'vA-1', 'v1_2', `v${'1'.repeat(11)}`]) assert.equal(idNumber(id), undefined, id);
  });
});

describe('Controller draining nodes', () => {
  const spec = (name: string, shards: number, replicas: 1 | 3 = 3) => ({ name, pageCount: 64, pageSize: 4096 as const, shards, stripePages: 16, replicas });
  const opts = { afterMs: 0, sinceMs: T0, max: 8 };

  it("a draining node's replicas are moved off (with repairs of dead nodes off), to nodes not draining; its mark survives a restart and is taken off with undo", () => {
    const disk = new SimDisk();
    const c = new Controller({ meta: new MetaStore(disk, '') });
    for (const id of ['a', 'b', 'c', 'd', 'e']) c.heartbeat(id, 1, T0);
    c.create(spec('v', 2), T0);
    assert.deepEqual(c.get('v').placements.map((p) => p.replicas.map((r) => r.nodeId)), [['a', 'b', 'c'], ['b', 'c', 'd']]);
    assert.deepEqual(c.repairPlan(T0, opts), []);
    const epoch = c.epoch;
    assert.deepEqual(c.drain('c', false), { draining: true, replicas: 2 });
    assert.equal(c.epoch, epoch + 1, 'recorded');
    assert.deepEqual(c.drain('c', false), { draining: true, replicas: 2 });
    assert.equal(c.epoch, epoch + 1, 'asked again, nothing written');
    // Both of c's replicas, to the live nodes outside each set that are not draining; e drains too.
    c.drain('e', false);
    assert.deepEqual(c.repairPlan(T0, opts).map((m) => [m.shard, m.from, m.to, m.reason]), [[0, 'c', 'd', 'draining'], [1, 'c', 'a', 'draining']]);
    // Also e's (it holds none); and a new volume is placed on neither.
    assert.deepEqual(new Controller({ meta: new MetaStore(disk, '') }).draining(), ['c', 'e'], 'durable');
    for (const p of c.create(spec('w', 4), T0).placements) for (const r of p.replicas) assert.ok(r.nodeId !== 'c' && r.nodeId !== 'e', JSON.stringify(p));
    // An operator's move to a draining node is refused, naming the undo.
    assert.throws(() => c.beginMove('v', 0, 'a', 'e', T0), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request' && /node 'e' is draining.*strata drain e --undo/.test(e.message));
    // A dead node's replica goes first where a shard has both.
    assert.deepEqual(c.drain('c', true), { draining: false, replicas: 2 });
    assert.deepEqual(c.draining(), ['e']);
    assert.deepEqual(c.repairPlan(T0, opts), []);
    c.drain('e', true);
    assert.equal(new Controller({ meta: new MetaStore(disk, '') }).draining().length, 0);
  });

  it('the undo of a node not draining writes nothing; the draining nodes are kept sorted', () => {
    const c = controller();
    const epoch = c.epoch;
    assert.deepEqual(c.drain('a', true), { draining: false, replicas: 0 });
    assert.equal(c.epoch, epoch);
    c.drain('e', false);
    c.drain('c', false);
    assert.deepEqual(c.draining(), ['c', 'e']);
    assert.equal(c.epoch, epoch + 2);
  });

  it("counts, in a draining node's replicas, the one a move under way adds to it and the one it takes off it", () => {
    const c = controller();
    for (const id of ['a', 'b', 'c', 'd']) c.heartbeat(id, 1, T0);
    c.create(spec('v', 1), T0);
    c.beginMove('v', 0, 'c', 'd', T0);
    assert.deepEqual(c.drain('d', false), { draining: true, replicas: 1 });
    assert.deepEqual(c.drain('c', false), { draining: true, replicas: 1 });
    c.finishMove('v', 0, 'c', 'd');
    assert.deepEqual(c.drain('c', false), { draining: true, replicas: 0 });
  });

  it('refuses to place a volume when the live nodes not draining are too few, saying so; bounded', () => {
    const c = controller();
    for (const id of ['a', 'b', 'c']) c.heartbeat(id, 1, T0);
    c.drain('a', false);
    assert.throws(() => c.create(spec('v', 1), T0), (e: unknown) => e instanceof ProtocolError && e.code === 'unavailable' && /replicas=3 needs 3 live nodes, 2 are live \(not counting 1 draining\)/.test(e.message));
    c.create(spec('one', 1, 1), T0);
    for (let i = 1; i < 64; i++) c.drain(`x${i}`, false);
    assert.throws(() => c.drain('y', false), (e: unknown) => e instanceof ProtocolError && e.code === 'too_large');
    assert.deepEqual(c.drain('x1', true), { draining: false, replicas: 0 });
    assert.equal(c.drain('y', false).draining, true);
  });

  it('a dead node is moved off before a draining one, and a shard whose draining member is its only way to a majority keeps it until then', () => {
    const c = controller();
    for (const id of ['a', 'b', 'c', 'd']) c.heartbeat(id, 1, T0);
    c.create(spec('v', 1), T0);
    c.drain('a', false);
    const at = T0 + 120_000;
    for (const id of ['a', 'b', 'd']) c.heartbeat(id, 1, at);
    assert.deepEqual(c.repairPlan(at, { afterMs: 60_000, sinceMs: T0, max: 8 }).map((m) => [m.from, m.to, m.reason]), [['c', 'd', 'dead']]);
    // b dead too: a (draining, live) and c, b dead: no live majority, nothing moves.
    for (const id of ['a', 'd']) c.heartbeat(id, 1, at + 120_000);
    assert.deepEqual(c.repairPlan(at + 120_000, { afterMs: 60_000, sinceMs: T0, max: 8 }), []);
  });
});

describe('Controller rebalance (balancePlan)', () => {
  const spec = (name: string, shards: number) => ({ name, pageCount: 64, pageSize: 4096 as const, shards, stripePages: 16, replicas: 3 as const });

  it('moves from the most loaded node to the least loaded while they differ by two or more; none then; durable flag', () => {
    const disk = new SimDisk();
    const c = new Controller({ meta: new MetaStore(disk, '') });
    for (const id of ['a', 'b', 'c']) c.heartbeat(id, 1, T0);
    c.create(spec('v', 4), T0);
    // d joins later: it holds nothing, the others 4 each.
    for (const id of ['a', 'b', 'c', 'd']) c.heartbeat(id, 1, T0 + 1000);
    assert.deepEqual(Object.fromEntries(c.spread(T0 + 1000)), { a: 4, b: 4, c: 4, d: 0 });
    const moves: string[] = [];
    for (let i = 0; i < 10; i++) {
      const m = c.balancePlan(T0 + 1000);
      if (m === undefined) break;
      assert.equal(m.reason, 'balance');
      moves.push(`${m.from}->${m.to}`);
      c.beginMove(m.volume, m.shard, m.from, m.to, T0 + 1000);
      // While it runs, the shard is not proposed again.
      assert.notEqual(c.balancePlan(T0 + 1000)?.shard, m.shard);
      c.finishMove(m.volume, m.shard, m.from, m.to);
    }
    // 12 replicas over 4 nodes: 3 each, by three moves to d (from a, then b, then c: the most loaded, first by id).
    assert.deepEqual(moves, ['a->d', 'b->d', 'c->d']);
    assert.deepEqual(Object.fromEntries(c.spread(T0 + 1000)), { a: 3, b: 3, c: 3, d: 3 });
    assert.equal(c.balancePlan(T0 + 1000), undefined);
    assert.equal(c.rebalancing, false);
    c.setRebalance(true);
    assert.equal(new Controller({ meta: new MetaStore(disk, '') }).rebalancing, true, 'durable');
    c.setRebalance(false);
    assert.equal(new Controller({ meta: new MetaStore(disk, '') }).rebalancing, false);
  });

  it('never puts two replicas of a shard in one zone that were apart, skips draining and dead nodes, and a shard without a live majority', () => {
    const c = controller();
    const zones = [['a', 'z1'], ['b', 'z2'], ['c', 'z3'], ['d', 'z1']] as const;
    beatZones(c, zones.slice(0, 3), T0);
    c.create(spec('v', 2), T0);
    // d is in a's zone: a's replicas may go there (a was that zone already), b's and c's may not.
    beatZones(c, zones, T0 + 1000);
    const m = c.balancePlan(T0 + 1000);
    assert.deepEqual([m?.from, m?.to], ['a', 'd']);
    c.beginMove(m!.volume, m!.shard, m!.from, m!.to, T0 + 1000);
    c.finishMove(m!.volume, m!.shard, m!.from, m!.to);
    // a 1, b 2, c 2, d 1: b and c may not move to d (z1 holds a's or d's replica of each shard), and differ by one from a.
    assert.equal(c.balancePlan(T0 + 1000), undefined);
    // A draining node is neither source nor target; a node not live is no target.
    const e = controller();
    for (const id of ['a', 'b', 'c']) e.heartbeat(id, 1, T0);
    e.create(spec('w', 4), T0);
    e.heartbeat('d', 1, T0 + 1000);
    e.drain('d', false);
    assert.equal(e.balancePlan(T0 + 1000), undefined, 'd draining');
    e.drain('d', true);
    assert.equal(e.balancePlan(T0 + 10_000), undefined, 'no node live by then');
    for (const id of ['a', 'd']) e.heartbeat(id, 1, T0 + 20_000);
    // b and c silent: no shard has a live majority (a and d only: each shard has a and two of b, c... a alone live of its set).
    assert.equal(e.balancePlan(T0 + 20_000), undefined);
  });

  it('nodes that differ by one replica are balanced', () => {
    const c = controller();
    for (const id of ['a', 'b', 'c']) c.heartbeat(id, 1, T0);
    c.create(spec('v', 1), T0);
    for (const id of ['a', 'b', 'c', 'd']) c.heartbeat(id, 1, T0 + 1000);
    assert.deepEqual(Object.fromEntries(c.spread(T0 + 1000)), { a: 1, b: 1, c: 1, d: 0 });
    assert.equal(c.balancePlan(T0 + 1000), undefined);
  });

  it('moves a shard the most loaded node holds, leaves the shards skip names, and counts the replica a move under way adds', () => {
    const c = controller();
    const one = { pageCount: 64, pageSize: 4096 as const, stripePages: 16, replicas: 1 as const };
    // 'first' on a, alone live then; 'many' (3 shards) on b, alone live then.
    c.heartbeat('a', 1, T0);
    c.create({ name: 'first', shards: 1, ...one }, T0);
    c.heartbeat('b', 1, T0 + 10_000);
    c.create({ name: 'many', shards: 3, ...one }, T0 + 10_000);
    const at = T0 + 20_000;
    for (const id of ['a', 'b', 'c']) c.heartbeat(id, 1, at);
    assert.deepEqual(Object.fromEntries(c.spread(at)), { a: 1, b: 3, c: 0 });
    // From b, the most loaded: a shard of 'many' (the first in catalog order, 'first', is not on b).
    const m = c.balancePlan(at);
    assert.deepEqual([m?.volume, m?.shard, m?.from, m?.to], ['many', 0, 'b', 'c']);
    assert.deepEqual([c.balancePlan(at, (_, shard) => shard === 0)?.volume, c.balancePlan(at, (_, shard) => shard === 0)?.shard], ['many', 1]);
    assert.equal(c.balancePlan(at, () => true), undefined);
    // Under way, the replica the move adds counts for c: b 3, a 1, c 1.
    c.beginMove('many', 0, 'b', 'c', at);
    assert.deepEqual(Object.fromEntries(c.spread(at)), { a: 1, b: 3, c: 1 });
  });

  it("never moves a replica to a node that holds one of the shard already, even in the same zone", () => {
    const c = controller();
    // Two zones for three replicas: a and b share z1.
    beatZones(c, [['a', 'z1'], ['b', 'z1'], ['c', 'z2']] as const, T0);
    c.create(spec('v', 1), T0);
    assert.deepEqual(c.get('v').placements[0]!.replicas.map((r) => r.nodeId), ['a', 'c', 'b']);
    // Two volumes of one replica on a, alone live then: a 3, b 1, c 1.
    c.heartbeat('a', 1, T0 + 10_000, 'z1');
    for (const name of ['x1', 'x2']) c.create({ ...spec(name, 1), replicas: 1 }, T0 + 10_000);
    const at = T0 + 20_000;
    beatZones(c, [['a', 'z1'], ['b', 'z1'], ['c', 'z2']] as const, at);
    assert.deepEqual(Object.fromEntries(c.spread(at)), { a: 3, b: 1, c: 1 });
    // Not v's (b holds one): x1's.
    const m = c.balancePlan(at);
    assert.deepEqual([m?.volume, m?.from, m?.to], ['x1', 'a', 'b']);
  });

  it("moves a replica into a zone another of the shard's replicas is in only when the one moved off was in it too", () => {
    // b and d in z2: a's replica may not go to d (b's zone), b's may.
    const c = controller();
    const zones = [['a', 'z1'], ['b', 'z2'], ['c', 'z3'], ['d', 'z2']] as const;
    beatZones(c, zones.slice(0, 3), T0);
    c.create(spec('v', 2), T0);
    beatZones(c, zones, T0 + 1000);
    assert.deepEqual(Object.fromEntries(c.spread(T0 + 1000)), { a: 2, b: 2, c: 2, d: 0 });
    const m = c.balancePlan(T0 + 1000);
    assert.deepEqual([m?.from, m?.to], ['b', 'd']);
    // Two zones for three replicas (a, b in z1): a's replica may go to d in z1, where b stays.
    const e = controller();
    const two = [['a', 'z1'], ['b', 'z1'], ['c', 'z2'], ['d', 'z1']] as const;
    beatZones(e, two.slice(0, 3), T0);
    e.create(spec('w', 2), T0);
    beatZones(e, two, T0 + 1000);
    const n = e.balancePlan(T0 + 1000);
    assert.deepEqual([n?.from, n?.to], ['a', 'd']);
  });

  it('a rebalance asked for or called off when it is so already writes nothing', () => {
    const c = controller();
    const epoch = c.epoch;
    c.setRebalance(false);
    assert.equal(c.epoch, epoch);
    c.setRebalance(true);
    c.setRebalance(true);
    assert.equal(c.epoch, epoch + 1);
    assert.equal(c.rebalancing, true);
  });
});
