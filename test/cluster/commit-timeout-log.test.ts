/**
 * A shard that cannot commit (its followers stalled) fails every write it is sent with
 * `timeout`; its leader's host logs that once, and then at most one line a minute with how many
 * more there were, not one line per write.
 */
import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';

const MESSAGE = 'write not committed before its deadline';

describe('writes not committed before their deadline', function () {
  this.timeout(60_000);
  let c: InProcessCluster | undefined;
  const write = process.stderr.write.bind(process.stderr);
  const level = process.env.STRATA_LOG_LEVEL;

  after(async () => {
    process.stderr.write = write;
    await c?.stop();
    if (level === undefined) delete process.env.STRATA_LOG_LEVEL;
    else process.env.STRATA_LOG_LEVEL = level;
  });

  it('are logged once per shard by its leader, not once each', async () => {
    // The hosts' loggers read the level when their threads start.
    process.env.STRATA_LOG_LEVEL = 'warn';
    c = await startCluster({ nodes: 3, hosts: 1, cluster: 'committmo', telemetry: false });
    await c.client.createVolume({ name: 'v', pageCount: 256, shards: 1, replicas: 3 });
    const vol = c.client.volume('v');
    const page = new Uint8Array(4096).fill(1);
    await vol.writePages([{ page: 0, data: page }]);
    let leader = -1;
    for (let i = 0; i < 3; i++) {
      if ((await c.nodes[i]!.hostPool.stats())[0]!.mailbox.some((m) => m.leader)) leader = i;
    }
    assert.ok(leader >= 0, 'the shard has a leader');
    // The host threads' lines reach this thread's stderr.
    const lines: Array<Record<string, unknown>> = [];
    process.stderr.write = ((chunk: string | Uint8Array): boolean => {
      for (const line of String(chunk).split('\n')) {
        if (!line.includes(MESSAGE)) {
          if (line !== '') write(`${line}\n`);
          continue;
        }
        lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      return true;
    }) as typeof process.stderr.write;
    // Both followers stall: the leader commits nothing until its writes' deadlines pass.
    const followers = [0, 1, 2].filter((i) => i !== leader);
    const stalls = followers.map((i) => c!.nodes[i]!.hostPool.stallHost(0, 1500));
    await new Promise((r) => setTimeout(r, 50));
    const writes = 30;
    const outcomes = await Promise.allSettled(
      Array.from({ length: writes }, (_, k) => vol.writePages([{ page: k, data: page }], { deadlineMs: Date.now() + 400 })),
    );
    await Promise.all(stalls);
    // The hosts' stderr comes through this thread a moment later.
    await new Promise((r) => setTimeout(r, 300));
    process.stderr.write = write;
    const timedOut = outcomes.filter((o) => o.status === 'rejected' && (o.reason as { code?: unknown }).code === 'timeout').length;
    // (Most, if not all: one sent after the leader stepped down fails otherwise.)
    assert.ok(timedOut >= 10, JSON.stringify(outcomes.map((o) => (o.status === 'rejected' ? (o.reason as Error).message : 'ok'))));
    assert.equal(lines.length, 1, `${lines.length} lines for ${timedOut} writes not committed`);
    assert.equal(lines[0]!.level, 'warn');
    assert.equal(lines[0]!.node, `n${leader + 1}`);
    assert.equal(lines[0]!.unreported, 0);
  });
});
