/**
 * Moving a replica of a shard from one node to another (strata shard move): to replace a dead
 * node's replica, and to drain a live node. Four nodes, a volume of 2 shards × 3 replicas: the
 * fourth node is given a replica by a move, takes the shard's data from its leader, and counts
 * as a voter; the node moved off destroys its replica once the move is done.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { runCli } from '../support/cli';
import { readNodeRecords } from '../../cluster/catalog-recovery';
import { ProtocolError, errorReply } from '../../messages/errors';
import { decode, encode } from '../../messages/codec';
import type { VolumeInfo } from '../../messages/api';
import { waitFor } from '../support/wait';
import { writeOnceServed } from '../support/served';
import { controllerMembers, fakeNode } from '../support/controller';

const page = (b: number): Uint8Array => new Uint8Array(4096).fill(b);


/** A shard's replica as its node reports it (StrataNode.status). */
type ReplicaView = { volumeId: string; shard: number; role: string; state: string; term: number; appliedLsn: number; commitLsn: number; members: string[]; config?: { members: string[]; prior?: string[] } };

describe('moving a replica of a shard (strata shard move)', function () {
  this.timeout(240_000);
  let c: InProcessCluster;
  let nc: NatsConnection;
  let info: VolumeInfo;
  const idx = (nodeId: string): number => Number(nodeId.slice(1)) - 1;
  const replicaDir = (nodeId: string, volumeId: string, shard: number): string => path.join(c.dataDirs[idx(nodeId)]!, 'dev0', 'shards', `${volumeId}.${shard}`);
  const membersOf = async (shard: number): Promise<string[]> => (await c.client.volumeInfo('mv')).replicaSets!.find((r) => r.shard === shard)!.members;
  const replicaOn = async (nodeId: string, shard: number): Promise<ReplicaView | undefined> =>
    ((await c.nodes[idx(nodeId)]!.status()) as unknown as { shards: ReplicaView[] }).shards.find((s) => s.volumeId === info.id && s.shard === shard);

  /** Waits until the nodes the controller counts live are exactly `ids`. */
  const waitLive = async (ids: string[]): Promise<void> => {
    const want = [...ids].sort().join(',');
    await waitFor(`the controller counts ${want} live`, async () => {
      try {
        return (await controllerMembers(nc, c.cluster)).filter((m) => m.live).map((m) => m.nodeId).sort().join(',') === want;
      } catch {
        return false; // The controller may be restarting.
      }
    }, 30_000);
  };

  before(async () => {
    // One move at a time (they run one after the other here): the bound is tested too.
    c = await startCluster({ nodes: 4, hosts: 1, clientTimeoutMs: 5000, node: { movesInFlightMax: 1 } });
    nc = await natsConnect({ servers: c.natsUrl });
    info = await c.client.createVolume({ name: 'mv', pageCount: 64, shards: 2, stripePages: 4, replicas: 3 });
  });
  after(async () => {
    await nc?.close();
    await c?.stop();
  });

  it('replaces a dead node\'s replica: the new node takes the shard\'s data and votes (a second member down, writes and reads go on)', async () => {
    const vol = c.client.volume('mv');
    // Pages 0..3 are shard 0's, 4..7 shard 1's.
    await vol.writePages([{ page: 0, data: page(1) }, { page: 1, data: page(2) }, { page: 4, data: page(3) }]);
    const before = await membersOf(0);
    assert.equal(before.length, 3);
    // The node that holds none of shard 0 takes the replica of a member that dies (not n1: the controller's node).
    const to = ['n1', 'n2', 'n3', 'n4'].find((n) => !before.includes(n))!;
    const from = before.find((n) => n !== 'n1')!;
    c.kill(idx(from));

    const moved = await c.client.moveReplica('mv', 0, { from, to });
    assert.deepEqual([...moved.members].sort(), before.map((n) => (n === from ? to : n)).sort());
    assert.equal(moved.volume, 'mv');
    assert.equal(moved.shard, 0);
    assert.ok(moved.term > 0 && moved.lsn > 0, JSON.stringify(moved));
    // The catalog says so, with no move under way.
    const after = (await c.client.volumeInfo('mv')).replicaSets!.find((r) => r.shard === 0)!;
    assert.deepEqual(after, { shard: 0, members: moved.members });
    // The same move asked again is answered done, changing nothing.
    const again = await c.client.moveReplica('mv', 0, { from, to });
    assert.deepEqual(again.members, moved.members);

    // The pages written before read back.
    const r = await vol.readPages([0, 1, 4]);
    assert.deepEqual(r.pages.map((p) => p[0]), [1, 2, 3]);
    // The new replica holds the shard (its leader gave it the log), and its configuration is the new set.
    await waitFor(`${to}'s replica of shard 0 holds the shard`, async () => {
      const rep = await replicaOn(to, 0);
      return rep !== undefined && rep.state === 'up' && rep.appliedLsn >= moved.lsn && rep.config?.prior === undefined;
    }, 30_000);
    assert.deepEqual([...(await replicaOn(to, 0))!.members].sort(), [...moved.members].sort());
    // Every live member's record of the shard names the new set (what a restart opens and a lost catalog is recovered from).
    for (const n of moved.members) {
      await waitFor(`${n}'s record of shard 0 names the new set`, async () => {
        const recs = await readNodeRecords(nc, c.cluster, n, 5000, Date.now() + 5000);
        const rec = recs.shards.find((s) => s.volumeId === info.id && s.shard === 0);
        return rec !== undefined && rec.members.join(',') === moved.members.join(',') && rec.priorMembers === undefined;
      }, 15_000);
    }

    // A second original member down: the new one and the last make a majority.
    const second = moved.members.find((n) => n !== to && n !== 'n1')!;
    c.kill(idx(second));
    await writeOnceServed(vol, 2, 9, 'a write to shard 0 with two of its three replicas');
    const read = await vol.readPages([0, 1, 2]);
    assert.deepEqual(read.pages.map((p) => p[0]), [1, 2, 9]);

    // The dead node comes back: it destroys the replica the move took off it, once it reconciles.
    await c.restart(idx(second));
    await c.restart(idx(from));
    await waitFor(`${from} destroyed its replica of shard 0`, () => !fs.existsSync(replicaDir(from, info.id, 0)), 30_000);
    assert.equal(await replicaOn(from, 0), undefined);
  });

  it('drains a live node, the shard\'s leader (the CLI, text and JSON): its replica is destroyed once the move is done, a leader of the new set serves, and volume info names the new node', async () => {
    const flags = ['--nats', c.natsUrl, '--cluster', c.cluster];
    const vol = c.client.volume('mv');
    await writeOnceServed(vol, 5, 5, 'a write to shard 1');
    const before = await membersOf(1);
    const to = ['n1', 'n2', 'n3', 'n4'].find((n) => !before.includes(n))!;
    // The node drained is the shard's leader: it steps down once the new set is committed.
    let from = '';
    await waitFor('shard 1 has a leader', async () => {
      for (const n of before) if ((await replicaOn(n, 1))?.role === 'leader') from = n;
      return from !== '';
    }, 30_000);
    assert.ok(fs.existsSync(replicaDir(from, info.id, 1)));

    const out = await runCli(['shard', 'move', 'mv', '1', '--from', from, '--to', to, '--json', ...flags]);
    assert.equal(out.code, 0, out.stderr);
    const r = JSON.parse(out.stdout) as { volume: string; shard: number; members: string[]; term: number; lsn: number; from: string; to: string };
    assert.equal(r.volume, 'mv');
    assert.equal(r.shard, 1);
    assert.equal(r.from, from);
    assert.equal(r.to, to);
    assert.deepEqual(r.members, before.map((n) => (n === from ? to : n)));

    // The node moved off destroys its replica (its files go), once the move is done.
    await waitFor(`${from} destroyed its replica of shard 1`, () => !fs.existsSync(replicaDir(from, info.id, 1)), 30_000);
    const text = await runCli(['volume', 'info', 'mv', ...flags]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`shard 1: ${r.members.join(', ')}\\n`));
    assert.doesNotMatch(text.stdout, /moving/);
    const rd = await vol.readPages([4, 5]);
    assert.deepEqual(rd.pages.map((p) => p[0]), [3, 5]);
    // A leader of the new set serves the shard.
    await vol.writePages([{ page: 6, data: page(6) }]);
    const leaders: string[] = [];
    for (const n of r.members) if ((await replicaOn(n, 1))?.role === 'leader') leaders.push(n);
    assert.equal(leaders.length, 1, JSON.stringify(leaders));

    // Asked again (text): done already, the same set.
    const again = await runCli(['shard', 'move', 'mv', '1', '--from', from, '--to', to, ...flags]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, new RegExp(`^moved shard 1 of mv from ${from} to ${to}: its replicas are on ${r.members.join(', ')} \\(term \\d+, lsn \\d+\\)\n$`));
  });

  it('refuses with what to do: an unknown volume, a shard out of range, a from that holds none, a to that holds one, a to that is not live', async () => {
    const members = await membersOf(0);
    const outside = ['n1', 'n2', 'n3', 'n4'].find((n) => !members.includes(n))!;
    const expectCode = (code: string, pattern: RegExp) => (e: unknown): boolean => {
      assert.ok(e instanceof ProtocolError, String(e));
      assert.equal(e.code, code, e.message);
      assert.match(e.message, pattern);
      return true;
    };
    await assert.rejects(c.client.moveReplica('nope', 0, { from: 'n1', to: 'n2' }), expectCode('not_found', /volume 'nope' does not exist/));
    await assert.rejects(c.client.moveReplica('mv', 2, { from: 'n1', to: 'n2' }), expectCode('out_of_range', /shard 2: volume 'mv' has shards 0\.\.1/));
    await assert.rejects(c.client.moveReplica('mv', 0, { from: outside, to: members[0]! }), expectCode('bad_request', new RegExp(`node '${outside}' holds no replica of shard 0`)));
    await assert.rejects(c.client.moveReplica('mv', 0, { from: members[0]!, to: members[1]! }), expectCode('bad_request', new RegExp(`node '${members[1]}' holds a replica of shard 0 of volume 'mv' already`)));
    await assert.rejects(c.client.moveReplica('mv', 0, { from: members[0]!, to: 'n9' }), expectCode('unavailable', new RegExp(`node 'n9' is not live .*start it, or move the replica to a live node that holds none of the shard \\(${outside}\\)`)));
    assert.deepEqual(await membersOf(0), members, 'nothing changed');
    assert.equal((await c.client.volumeInfo('mv')).replicaSets!.some((r) => r.moving !== undefined), false);
  });

  it('a move whose new replica is not opened stays recorded (also through a restart of the controller): volume info shows it, another move of the shard waits for it, and run again it finishes', async () => {
    const flags = ['--nats', c.natsUrl, '--cluster', c.cluster];
    // Placed on the four nodes only (not on a fake node of another test that the controller still counts live).
    await waitLive(['n1', 'n2', 'n3', 'n4']);
    await c.client.createVolume({ name: 'mv2', pageCount: 16, shards: 1, stripePages: 16, replicas: 3 });
    await c.client.volume('mv2').writePages([{ page: 3, data: page(7) }]);
    const before = (await c.client.volumeInfo('mv2')).replicaSets![0]!.members;
    // A node 'nx' the controller hears from, whose open fails until told otherwise.
    let opens = 0;
    let openFails = true;
    const nx = await fakeNode(nc, c.cluster, 'nx', (m) => {
      opens++;
      m.respond(encode(openFails ? errorReply(new ProtocolError('device_failed', 'the disk of nx failed')) : { ok: true }));
    });
    try {
      await new Promise((r) => setTimeout(r, 300));
      const from = before.find((n) => n !== 'n1')!;
      await assert.rejects(c.client.moveReplica('mv2', 0, { from, to: 'nx' }), (e: unknown) => {
        assert.ok(e instanceof ProtocolError, String(e));
        assert.equal(e.code, 'unavailable');
        assert.match(e.message, new RegExp(`node 'nx' did not open the new replica: the disk of nx failed; the move is recorded: run it again to finish it \\(strata shard move mv2 0 --from ${from} --to nx\\)`));
        return true;
      });
      assert.equal(opens, 1);
      const info = (await c.client.volumeInfo('mv2')).replicaSets![0]!;
      assert.deepEqual(info, { shard: 0, members: before, moving: { from, to: 'nx' } });
      const text = await runCli(['volume', 'info', 'mv2', ...flags]);
      assert.match(text.stdout, new RegExp(`replicas on:  shard 0: ${before.join(', ')} \\(moving: ${from} -> nx\\)\n`));
      // Another move of the shard is refused, naming the one under way.
      const other = ['n1', 'n2', 'n3', 'n4'].find((n) => !before.includes(n))!;
      await assert.rejects(c.client.moveReplica('mv2', 0, { from, to: other }), (e: unknown) =>
        e instanceof ProtocolError && e.code === 'unavailable' && new RegExp(`the move of shard 0 of volume 'mv2' from node '${from}' to node 'nx' is under way`).test(e.message));

      // The controller's node restarts meanwhile: the move is in its catalog still.
      c.kill(0);
      await c.restart(0);
      // A node's heartbeat sent as the controller went down waits for its deadline: every node is heard again first.
      await waitLive(['n1', 'n2', 'n3', 'n4', 'nx']);
      assert.deepEqual((await c.client.volumeInfo('mv2')).replicaSets![0]!.moving, { from, to: 'nx' });

      // nx's disk is back: the same move, run again, finishes.
      openFails = false;
      const done = await c.client.moveReplica('mv2', 0, { from, to: 'nx' });
      assert.deepEqual(done.members, before.map((n) => (n === from ? 'nx' : n)));
      assert.equal((await c.client.volumeInfo('mv2')).replicaSets![0]!.moving, undefined);
      // nx never holds anything: moved again, to a real node, the shard's pages are all there.
      nx.stop();
      const back = await c.client.moveReplica('mv2', 0, { from: 'nx', to: from });
      assert.deepEqual(back.members, before);
      const r = await c.client.volume('mv2').readPages([3]);
      assert.equal(r.pages[0]![0], 7);
    } finally {
      nx.stop();
    }
  });

  it('the same move asked while it runs joins it (one open of the new replica); beyond the moves the controller runs at once, another is refused overloaded', async () => {
    // Placed on the four nodes only (not on a fake node of another test that the controller still counts live).
    await waitLive(['n1', 'n2', 'n3', 'n4']);
    await c.client.createVolume({ name: 'mv3', pageCount: 16, shards: 2, stripePages: 8, replicas: 3 });
    const sets = (await c.client.volumeInfo('mv3')).replicaSets!;
    // A node 'ny' the controller hears from, whose open never answers.
    let opens = 0;
    const ny = await fakeNode(nc, c.cluster, 'ny', () => void opens++);
    try {
      await new Promise((r) => setTimeout(r, 300));
      const from0 = sets[0]!.members[0]!;
      const from1 = sets[1]!.members[0]!;
      const deadlineMs = Date.now() + 3000;
      const first = c.client.moveReplica('mv3', 0, { from: from0, to: 'ny' }, { deadlineMs }).catch((e: unknown) => e);
      await waitFor('the first move asks ny to open', () => opens === 1, 5000);
      const second = c.client.moveReplica('mv3', 0, { from: from0, to: 'ny' }, { deadlineMs }).catch((e: unknown) => e);
      await assert.rejects(c.client.moveReplica('mv3', 1, { from: from1, to: 'ny' }), (e: unknown) =>
        e instanceof ProtocolError && e.code === 'overloaded' && /the controller runs 1 moves of replicas, its limit/.test(e.message));
      for (const outcome of [await first, await second]) {
        assert.ok(outcome instanceof ProtocolError && outcome.code === 'timeout', String(outcome));
        assert.match(outcome.message, /run it again to finish it/);
      }
      assert.equal(opens, 1, 'the second request joined the first');
      // The refused move recorded nothing; the other is recorded, to be run again.
      assert.deepEqual((await c.client.volumeInfo('mv3')).replicaSets!.map((r) => r.moving), [{ from: from0, to: 'ny' }, undefined]);
    } finally {
      ny.stop();
    }
  });

  it('a node\'s shard.reconfigure: a follower names its leader (details.leader), a node without the replica answers not_found, a bad set bad_request', async () => {
    const ask = async (node: string, body: unknown): Promise<unknown> =>
      decode((await nc.request(`strata.${c.cluster}.node.${node}.shard.reconfigure`, encode(body), { timeout: 5000 })).data);
    const members = await membersOf(1);
    let leader = '';
    await waitFor('shard 1 has a leader', async () => {
      for (const n of members) if ((await replicaOn(n, 1))?.role === 'leader') leader = n;
      return leader !== '';
    }, 30_000);
    const follower = members.find((n) => n !== leader)!;
    const outside = ['n1', 'n2', 'n3', 'n4'].find((n) => !members.includes(n))!;
    const same = { volumeId: info.id, shard: 1, members };
    assert.deepEqual((await ask(follower, same)) as Record<string, unknown>, { error: { code: 'not_leader', message: `not the leader; the leader is ${leader}`, details: { leader, term: (await replicaOn(follower, 1))!.term } } });
    const none = (await ask(outside, same)) as { error: { code: string; message: string } };
    assert.equal(none.error.code, 'not_found');
    assert.match(none.error.message, new RegExp(`node '${outside}' holds no replica of shard 1`));
    const bad = (await ask(leader, { ...same, members: [leader, leader] })) as { error: { code: string } };
    assert.equal(bad.error.code, 'bad_request');
    // The leader asked for the set it holds: done, nothing written.
    const done = (await ask(leader, same)) as { changed: boolean; members: string[]; node: string };
    assert.equal(done.changed, false);
    assert.equal(done.node, leader);
    assert.deepEqual([...done.members].sort(), [...members].sort());
  });

  it('strata shard move: usage errors exit 2, the cluster\'s refusals 1', async () => {
    const flags = ['--nats', c.natsUrl, '--cluster', c.cluster];
    for (const [argv, pattern] of [
      [['shard', 'move', 'mv', '0', '--from', 'n1', ...flags], /--to/],
      [['shard', 'move', 'mv', 'x', '--from', 'n1', '--to', 'n2', ...flags], /SHARD: expected a non-negative integer/],
      [['shard', 'move', 'mv', '0', '--from', 'n1', '--to', 'n1', ...flags], /--from and --to name the same node "n1"/],
      [['shard', 'move', 'mv', '0', '--from', 'a.b', '--to', 'n1', ...flags], /--from: expected 1\.\./],
      [['shard', 'move', 'mv', '--from', 'n1', '--to', 'n2', ...flags], /SHARD/],
      [['shard', 'moves', 'mv', '0'], /shard: unknown subcommand "moves"/],
      [['shard'], /shard: expected force-vote, move, handover or check/],
    ] as const) {
      const r = await runCli([...argv]);
      assert.equal(r.code, 2, `${argv.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, pattern);
    }
    const refused = await runCli(['shard', 'move', 'nope', '0', '--from', 'n1', '--to', 'n2', ...flags]);
    assert.equal(refused.code, 1);
    assert.equal(refused.stderr, "strata: not_found: volume 'nope' does not exist\n");
  });
});
