/**
 * A node that starts again serves the shards it had before it reaches anyone: its hosts open
 * theirs side by side, each in the node's order, HOST_OPENS_AT_ONCE asked at a time.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { StrataNode } from '../../cluster/node';
import { NODE_META, nodeMetaStore, type NodeMeta } from '../../cluster/data-dir-layout';
import { HOST_OPENS_AT_ONCE, HostPool } from '../../runtime/host-pool';
import { RealDisk } from '../../storage-engine/real-disk';
import type { ShardSpec } from '../../runtime/device-host';
import { stderrOf } from '../support/stderr';

describe('a node\'s restart opens its shards', function () {
  this.timeout(120_000);
  let c: InProcessCluster | undefined;
  let dataDir: string;

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-restart-opens-'));
    c = await startCluster({ nodes: 1, hosts: 2, dataDir });
  });
  after(async () => {
    await c?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('on its hosts side by side, each in the node\'s order, HOST_OPENS_AT_ONCE asked at a time; all served when the start returns but one whose open failed, which is counted', async () => {
    // More shards than the bound on each of the two hosts.
    const shards = 4 * (HOST_OPENS_AT_ONCE + 2);
    await c!.client.createVolume({ name: 'ro', pageCount: shards * 16, shards, stripePages: 16, replicas: 1 });
    const opened = async (): Promise<string[][]> => (await c!.nodes[0]!.hostPool.stats()).map((h) => (h.device?.shards ?? []).map((s) => `${s.volumeId}/${s.shard}`).sort());
    const before = await opened();
    assert.equal(before.flat().length, shards);
    for (const list of before) assert.ok(list.length > HOST_OPENS_AT_ONCE, `shards per host: ${before.map((l) => l.length).join(', ')}`);
    await c!.stopNode(0);

    // The opens the start asks for, as the pool is asked.
    const asked: Array<[host: number, shard: string]> = [];
    const inFlight = [0, 0];
    const inFlightMax = [0, 0];
    let bothAtOnce = false;
    const real = HostPool.prototype.openShard;
    // The open of one shard fails (before the pool is asked, so that nothing tries it again
    // here): the start goes on with the others, and counts it.
    const failing = before[1]![2]!;
    let failed = 0;
    HostPool.prototype.openShard = async function (this: HostPool, hostId: number, spec: ShardSpec) {
      asked.push([hostId, `${spec.volumeId}/${spec.shard}`]);
      if (`${spec.volumeId}/${spec.shard}` === failing && failed++ === 0) throw new Error('an open that fails');
      inFlight[hostId]!++;
      inFlightMax[hostId] = Math.max(inFlightMax[hostId]!, inFlight[hostId]!);
      if (inFlight[0]! > 0 && inFlight[1]! > 0) bothAtOnce = true;
      try {
        return await real.call(this, hostId, spec);
      } finally {
        inFlight[hostId]!--;
      }
    };
    try {
      await c!.restart(0);
    } finally {
      HostPool.prototype.openShard = real;
    }
    assert.deepEqual(await opened(), before.map((list) => list.filter((x) => x !== failing)), 'every other shard served again, on its host');
    const info = c!.nodes[0]!.startInfo!;
    assert.deepEqual([info.shards, info.shardsFailed], [shards, 1]);
    assert.ok(info.shardsOpenMs >= 0 && info.shardsOpenMs <= info.startMs, JSON.stringify(info));
    assert.ok(bothAtOnce, 'the two hosts had opens asked at the same time');
    assert.deepEqual(inFlightMax, [HOST_OPENS_AT_ONCE, HOST_OPENS_AT_ONCE]);
    // Each host in the node's order: that of its record of its shards (the start's opens come
    // first; a reconciliation after them may ask again).
    const rec = nodeMetaStore(new RealDisk(c!.dataDirs[0]!)).read<NodeMeta>(NODE_META)!;
    for (const h of [0, 1]) {
      const mine = rec.shards.filter((a) => a.hostId === h).map((a) => `${a.volumeId}/${a.shard}`);
      assert.deepEqual([...mine].sort(), before[h]);
      assert.deepEqual(asked.filter(([host]) => host === h).map(([, s]) => s).slice(0, mine.length), mine, `host ${h}`);
    }
  });

  it('a start given up while its opens run (the node killed) fails, and its opens still asked say nothing', async () => {
    // The shards of its record (the test before left one of them unopened).
    const before = nodeMetaStore(new RealDisk(c!.dataDirs[0]!)).read<NodeMeta>(NODE_META)!.shards.length;
    assert.ok(before > 2 * HOST_OPENS_AT_ONCE, `shards: ${before}`);
    await c!.stopNode(0);
    // The node being started, taken as its start begins; killed as the last of the first opens
    // its hosts are asked for (all of them asked at once) is asked.
    const proto = StrataNode.prototype as unknown as { boot(this: StrataNode): Promise<void> };
    const realBoot = proto.boot;
    let starting: StrataNode | undefined;
    proto.boot = function (this: StrataNode) {
      starting = this;
      return realBoot.call(this);
    };
    const realOpen = HostPool.prototype.openShard;
    let asked = 0;
    HostPool.prototype.openShard = function (this: HostPool, hostId: number, spec: ShardSpec) {
      const p = realOpen.call(this, hostId, spec);
      if (++asked === 2 * HOST_OPENS_AT_ONCE) starting!.kill();
      return p;
    };
    // At warn, where 'could not open a shard' is logged.
    const level = process.env.STRATA_LOG_LEVEL;
    process.env.STRATA_LOG_LEVEL = 'warn';
    let lines: string[];
    try {
      lines = await stderrOf(() => assert.rejects(c!.restart(0), (e: Error) => /stopped while it started/.test(e.message)));
    } finally {
      if (level === undefined) delete process.env.STRATA_LOG_LEVEL;
      else process.env.STRATA_LOG_LEVEL = level;
      proto.boot = realBoot;
      HostPool.prototype.openShard = realOpen;
    }
    assert.equal(asked, 2 * HOST_OPENS_AT_ONCE, 'none asked once killed');
    assert.deepEqual(lines.filter((l) => l.includes('could not open a shard')), []);
    // Started again, it serves every shard of its record.
    await c!.restart(0);
    assert.equal((await c!.nodes[0]!.hostPool.stats()).reduce((k, h) => k + (h.device?.shards.length ?? 0), 0), before);
  });
});
