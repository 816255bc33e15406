/**
 * The guards of a move of a replica that a cluster seldom meets on its own: a leader whose
 * answer names another set, a replica closed or down when asked to change its set, two nodes
 * that name each other as the shard's leader, and reconciliations that race with a destroy or an
 * open. Each is made to happen by standing in for a node's host pool (its replica's answer) or
 * by running a node's reconciliation by hand around a destroy or an open.
 */
import { strict as assert } from 'node:assert';
import { connect as natsConnect, headers as natsHeaders, type NatsConnection } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { StrataNode } from '../../cluster/node';
import { ProtocolError } from '../../messages/errors';
import { decode, encode } from '../../messages/codec';
import { controllerSubject } from '../../messages/control';
import { HEADER_DEADLINE } from '../../messages/headers';
import type { ReconfigureResult } from '../../actors/replica';
import { waitFor } from '../support/wait';

/** A shard's assignment to a node (ShardAssignment), as the tests handle it. */
type Assignment = { volumeId: string; shard: number; members: string[]; removed?: boolean; priorMembers?: string[] };
type Assignments = { epoch: number; tombstones: string[]; shards: Assignment[] };

/** The parts of a node these tests reach (private to StrataNode). */
interface NodeInside {
  pool: { reconfigure: (hostId: number, volumeId: string, shard: number, members: string[], deadlineMs: number) => Promise<ReconfigureResult> };
  nodeMeta: { shards: Assignment[] };
  openSeq: number;
  destroySeq: number;
  openedAt: Map<string, number>;
  destroyedAt: Map<string, number>;
  fetchAssignments(): Promise<Assignments>;
  reconcile(a: Assignments, seq: { opens: number; destroys: number }): Promise<void>;
  reconcileWithCatalog: (...args: unknown[]) => Promise<void>;
  reconciling: Promise<void> | undefined;
  openShards(list: Assignment[], existing?: boolean): Promise<void>;
  destroyShards(volumeId: string, shards: number[]): Promise<number>;
  controller: unknown;
  reconfigureShard(c: unknown, volumeId: string, shard: number, prior: readonly string[], members: readonly string[], endMs: number): Promise<unknown>;
}

describe('moving a replica: the guards of the move and of the reconciliations around it', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  let nc: NatsConnection;
  const ids = ['n1', 'n2', 'n3', 'n4'];
  const inside = (nodeId: string): NodeInside => c.nodes[Number(nodeId.slice(1)) - 1] as unknown as NodeInside;
  const membersOf = async (volume: string): Promise<string[]> => (await c.client.volumeInfo(volume)).replicaSets!.find((r) => r.shard === 0)!.members;
  /**
   * Stands in for the host pool's reconfigure of `nodeIds` (`real` runs the pool's own); restored
   * by the returned function.
   */
  const standIn = (nodeIds: string[], fake: (nodeId: string, members: string[], real: () => Promise<ReconfigureResult>) => Promise<ReconfigureResult>): (() => void) => {
    const saved = nodeIds.map((n) => [n, inside(n).pool.reconfigure] as const);
    for (const [n, f] of saved) {
      const pool = inside(n).pool;
      pool.reconfigure = (h, v, s, members, deadlineMs) => fake(n, members, () => f.call(pool, h, v, s, members, deadlineMs));
    }
    return () => {
      for (const [n, f] of saved) inside(n).pool.reconfigure = f;
    };
  };

  before(async () => {
    c = await startCluster({ nodes: 4, hosts: 1, clientTimeoutMs: 5000 });
    nc = await natsConnect({ servers: c.natsUrl });
  });
  after(async () => {
    await nc?.close();
    await c?.stop();
  });

  it('a leader whose answer names another set than the move\'s: the move is not finished in the catalog (unavailable), and run again with a true answer it is', async () => {
    await c.client.createVolume({ name: 'g1', pageCount: 8, shards: 1, stripePages: 8, replicas: 3 });
    const before = await membersOf('g1');
    const to = ids.find((n) => !before.includes(n))!;
    const from = before.find((n) => n !== 'n1')!;
    // Every member answers done, but with the set before the move.
    const restore = standIn(before, async () => ({ members: [...before], term: 1, lsn: 1, changed: false }));
    try {
      await assert.rejects(c.client.moveReplica('g1', 0, { from, to }), (e: unknown) =>
        e instanceof ProtocolError && e.code === 'unavailable' && /holds the set/.test(e.message) && /run it again to finish it/.test(e.message));
    } finally {
      restore();
    }
    assert.deepEqual((await c.client.volumeInfo('g1')).replicaSets![0]!.moving, { from, to }, 'still under way in the catalog');
    const moved = await c.client.moveReplica('g1', 0, { from, to });
    assert.deepEqual([...moved.members].sort(), before.map((n) => (n === from ? to : n)).sort());
    assert.equal((await c.client.volumeInfo('g1')).replicaSets![0]!.moving, undefined);
  });

  it('a move whose set change the shard refuses answers that refusal (its code and message), saying the move is recorded; run again, it is finished', async () => {
    await c.client.createVolume({ name: 'g5', pageCount: 8, shards: 1, stripePages: 8, replicas: 3 });
    const before = await membersOf('g5');
    const to = ids.find((n) => !before.includes(n))!;
    const from = before[0]!;
    const restore = standIn(before, async () => {
      throw new ProtocolError('bad_request', 'the stand-in refuses the set');
    });
    try {
      await assert.rejects(c.client.moveReplica('g5', 0, { from, to }), (e: unknown) => {
        assert.ok(e instanceof ProtocolError, String(e));
        assert.equal(e.code, 'bad_request', e.message);
        assert.equal(e.message, `the stand-in refuses the set; the move is recorded: run it again to finish it (strata shard move g5 0 --from ${from} --to ${to})`);
        return true;
      });
    } finally {
      restore();
    }
    assert.deepEqual((await c.client.volumeInfo('g5')).replicaSets![0]!.moving, { from, to }, 'still under way in the catalog');
    const moved = await c.client.moveReplica('g5', 0, { from, to });
    assert.deepEqual([...moved.members].sort(), before.map((n) => (n === from ? to : n)).sort());
  });

  it('a move sent to the controller with a Strata-Deadline a year ahead waits for the shard\'s set change (within DEADLINE_AHEAD_MS_MAX) and is done', async () => {
    await c.client.createVolume({ name: 'g6', pageCount: 8, shards: 1, stripePages: 8, replicas: 3 });
    const before = await membersOf('g6');
    const to = ids.find((n) => !before.includes(n))!;
    const from = before[0]!;
    // The shard's leader takes a moment to change its set (a busy device).
    const restore = standIn(before, async (_n, _m, real) => {
      await new Promise((r) => setTimeout(r, 300));
      return real();
    });
    try {
      const headers = natsHeaders();
      headers.set(HEADER_DEADLINE, String(Date.now() + 365 * 24 * 3600_000));
      const reply = decode((await nc.request(controllerSubject(c.cluster, 'shard.move'), encode({ volume: 'g6', shard: 0, from, to }), { headers, timeout: 30_000 })).data) as { error?: unknown; members?: string[] };
      assert.equal(reply.error, undefined, JSON.stringify(reply));
      assert.deepEqual([...reply.members!].sort(), before.map((n) => (n === from ? to : n)).sort());
    } finally {
      restore();
    }
    assert.equal((await c.client.volumeInfo('g6')).replicaSets![0]!.moving, undefined);
  });

  it('a node\'s shard.reconfigure answers unavailable (with the code refused) when its replica is closed or its storage fails', async () => {
    await c.client.createVolume({ name: 'g2', pageCount: 8, shards: 1, stripePages: 8, replicas: 3 });
    const members = await membersOf('g2');
    const volumeId = (await c.client.volumeInfo('g2')).id;
    const node = members[0]!;
    for (const code of ['closed', 'device_failed', 'fsync_failed', 'io_error']) {
      const restore = standIn([node], async () => {
        throw Object.assign(new Error(`the replica failed: ${code}`), { code });
      });
      try {
        const r = decode((await nc.request(`strata.${c.cluster}.node.${node}.shard.reconfigure`, encode({ volumeId, shard: 0, members }), { timeout: 5000 })).data) as { error?: { code: string; details?: Record<string, unknown> } };
        assert.equal(r.error?.code, 'unavailable', `${code}: ${JSON.stringify(r)}`);
        assert.equal(r.error?.details?.['refused'], code);
      } finally {
        restore();
      }
    }
  });

  it('two nodes that name each other as the leader: asked in rounds with pauses (each node once a round), not in a loop; a leader named outside the shard is not asked', async () => {
    await c.client.createVolume({ name: 'g3', pageCount: 8, shards: 1, stripePages: 8, replicas: 3 });
    const prior = await membersOf('g3');
    const volumeId = (await c.client.volumeInfo('g3')).id;
    const to = ids.find((n) => !prior.includes(n))!;
    const members = [prior[0]!, prior[1]!, to];
    const [x, y, z] = prior as [string, string, string];
    const asked = new Map<string, number>();
    const named: Record<string, string> = { [x]: y, [y]: x, [z]: 'nz' };
    const restore = standIn(prior, async (n) => {
      asked.set(n, (asked.get(n) ?? 0) + 1);
      throw new ProtocolError('not_leader', `not the leader; the leader is ${named[n]}`, { leader: named[n]! });
    });
    let outside = 0;
    const sub = nc.subscribe(`strata.${c.cluster}.node.nz.shard.reconfigure`, { callback: () => void outside++ });
    await nc.flush();
    try {
      const started = Date.now();
      const e = await inside('n1').reconfigureShard(inside('n1').controller, volumeId, 0, prior, members, Date.now() + 1500).catch((err: unknown) => err);
      assert.ok(e instanceof ProtocolError && e.code === 'timeout', String(e));
      assert.ok(Date.now() - started >= 1400, 'asked until the deadline');
      // Within 1.5 s the pauses (100, 200, 400, 800 ms) leave room for 5 rounds at most.
      const total = [...asked.values()].reduce((s, k) => s + k, 0);
      assert.ok(total <= 5 * prior.length, `asked ${total} times: ${JSON.stringify([...asked])}`);
      assert.ok(Math.abs((asked.get(x) ?? 0) - (asked.get(y) ?? 0)) <= 1, JSON.stringify([...asked]));
      assert.equal(outside, 0, 'the node named outside the shard was not asked');
    } finally {
      sub.unsubscribe();
      restore();
    }
  });

  it('a reconciliation opens no replica destroyed after it read the catalog, and destroys no replica opened after it read it, nor one the catalog still places on the node', async () => {
    await c.client.createVolume({ name: 'g4', pageCount: 8, shards: 1, stripePages: 8, replicas: 3 });
    const info = await c.client.volumeInfo('g4');
    const node = inside((await membersOf('g4'))[0]!);
    const holds = (): boolean => node.nodeMeta.shards.some((s) => s.volumeId === info.id && s.shard === 0);
    await waitFor('the node holds its replica', holds, 10_000);
    // The node's own reconciliations are held back meanwhile: these run by hand.
    const saved = node.reconcileWithCatalog;
    node.reconcileWithCatalog = async () => undefined;
    try {
      await waitFor('no reconciliation of the node runs', () => node.reconciling === undefined, 10_000);
      // An open made after the reconciliation read the catalog, which names the replica moved off.
      let seq = { opens: node.openSeq, destroys: node.destroySeq };
      let a = await node.fetchAssignments();
      const rec = node.nodeMeta.shards.find((s) => s.volumeId === info.id && s.shard === 0)!;
      await node.openShards([rec], true);
      const movedOff = (s: Assignment): Assignment => (s.volumeId === info.id && s.shard === 0 ? { ...s, removed: true } : s);
      await node.reconcile({ ...a, shards: a.shards.map(movedOff) }, seq);
      assert.ok(holds(), 'a replica opened after the catalog was read is kept');
      // The catalog names it both placed here and moved off (the node a move adds again): kept.
      seq = { opens: node.openSeq, destroys: node.destroySeq };
      a = await node.fetchAssignments();
      const mine = a.shards.find((s) => s.volumeId === info.id && s.shard === 0)!;
      await node.reconcile({ ...a, shards: [...a.shards, { ...mine, removed: true }] }, seq);
      assert.ok(holds(), 'a replica the catalog places on the node is kept');
      // A destroy after the catalog was read (a delete that came meanwhile): not opened again.
      seq = { opens: node.openSeq, destroys: node.destroySeq };
      a = await node.fetchAssignments();
      assert.ok(a.shards.some((s) => s.volumeId === info.id && s.shard === 0 && s.removed !== true));
      await node.destroyShards(info.id, [0]);
      assert.ok(!holds());
      assert.ok(!node.openedAt.has(`${info.id}.0`), 'a destroyed replica\'s open is forgotten');
      await node.reconcile(a, seq);
      assert.ok(!holds(), 'a replica destroyed after the catalog was read is not opened again');
      // Nor as the replica a move adds (opened new, under the move's sets).
      const adding = (s: Assignment): Assignment => (s.volumeId === info.id && s.shard === 0 ? { ...s, priorMembers: [...s.members] } : s);
      seq = { opens: node.openSeq, destroys: node.destroySeq };
      await node.destroyShards(info.id, [0]);
      await node.reconcile({ ...a, shards: a.shards.map(adding) }, seq);
      assert.ok(!holds(), 'a replica a move adds, destroyed after the catalog was read, is not opened');
    } finally {
      node.reconcileWithCatalog = saved;
    }
    await c.client.deleteVolume('g4');
  });

  it('the destroys a node remembers for its reconciliations are bounded, the newest kept (one destroyed again counts as new)', async () => {
    const node = inside('n2');
    const max = 65_536;
    // Shards of a volume no node holds: remembered all the same (an open decided before is not made).
    await node.destroyShards('vol-none', [0]);
    await node.destroyShards('vol-none', Array.from({ length: max - 1 }, (_, i) => i + 1));
    await node.destroyShards('vol-none', [0]);
    await node.destroyShards('vol-none', [max]);
    assert.equal(node.destroyedAt.size, max);
    assert.ok(node.destroyedAt.has('vol-none.0'), 'the shard destroyed again is among the newest');
    assert.ok(!node.destroyedAt.has('vol-none.1'), 'the oldest is forgotten');
  });
});

describe('a move of a shard asked while another move of it finishes (StrataNode.moveShard)', function () {
  it('is run once that one has ended, and answered with its own outcome, not the other\'s', async () => {
    let finishFirst!: (r: unknown) => void;
    const first = new Promise((r) => (finishFirst = r));
    const begun: boolean[] = [];
    const ran: string[] = [];
    const moving = new Map<string, Promise<unknown>>([['v1.0', first]]);
    void first.finally(() => moving.delete('v1.0'));
    // The first move is recorded done; the second, asked meanwhile, is recorded new, then resumed.
    const controller = {
      get: () => ({ id: 'v1', name: 'vol' }),
      beginMove: (_v: string, _s: number, from: string, to: string) => {
        const resumed = begun.length > 0;
        begun.push(resumed);
        return { resumed, to: { nodeId: to, hostId: 0 }, from, done: false };
      },
    };
    const node = {
      seated: () => controller,
      creating: new Set<string>(),
      moving,
      opts: {},
      settle: async () => undefined,
      runMove: async (_c: unknown, move: { from: string; to: { nodeId: string } }) => {
        ran.push(`${move.from}->${move.to.nodeId}`);
        return { members: ['n1', 'n3'] };
      },
      log: { info: () => undefined, warn: () => undefined },
      movesEnded: { count: () => undefined },
      moveShard: undefined as unknown,
    };
    const moveShard = (StrataNode.prototype as unknown as { moveShard: (...a: unknown[]) => Promise<unknown> }).moveShard;
    node.moveShard = moveShard;
    const second = moveShard.call(node, { volume: 'vol', shard: 0, from: 'n2', to: 'n3' }, Date.now() + 10_000);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(ran, [], 'not run while the first one finishes');
    finishFirst({ members: ['n1', 'n2'] });
    assert.deepEqual(await second, { members: ['n1', 'n3'] }, 'its own outcome');
    assert.deepEqual(ran, ['n2->n3']);
    assert.deepEqual(begun, [false, true], 'recorded, then resumed once the first ended');
  });
});
