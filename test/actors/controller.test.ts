import { strict as assert } from 'node:assert';
import { Controller, MEMBER_SILENCE_MS_MAX, NODES_MAX } from '../../actors/controller';
import { MetaStore } from '../../storage-engine/metadata';
import { SimDisk } from '../../storage-engine/sim-disk';
import { ProtocolError } from '../../messages/errors';

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
