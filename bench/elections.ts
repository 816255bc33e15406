/**
 * How long the shards of a new volume take to elect their leaders (npm run bench:elections).
 *
 * Starts a local cluster of node processes (as `strata dev` does: its own nats-server, a
 * temporary data directory), creates one volume of `--shards` × `--replicas`, and asks the status
 * every `--poll-ms` (500 by default: the times are that coarse) until every shard has a leader,
 * or `--timeout-s` passed. Prints the time of the create, the time to every leader after it,
 * the worst event-loop delay of the hosts and the deepest device queue seen meanwhile, and the
 * leaders deposed on the way (by reason, from the nodes' logs). Then, with the volume idle (no
 * request, no status), the CPU its node processes and nats-server spend over `--idle-s` (5 by
 * default; 0 skips it): what the shards' heartbeats cost. With `--then kill` (or `stop`), the
 * node that leads most of the volume's shards is then killed with SIGKILL (or stopped with
 * SIGTERM: it hands its leaderships over first), and a page written to every shard at once,
 * each tried again until taken: how long the shards of a node that dies (or stops) take no
 * writes. Writes all of it as JSON to results/strata-elections-<time>.json. Exits 1 when not every
 * shard had a leader in time, 2 for a bad flag.
 *
 *   node dist/bench/elections.js [--shards 256] [--replicas 3] [--nodes 3] [--poll-ms 500]
 *                                [--timeout-s 120] [--idle-s 5] [--then kill|stop]
 *                                [--results-dir results]
 */
import * as fs from 'node:fs';
import { startDevCluster, type DevCluster } from '../cluster/dev';
import { intFlag, printTable, procCpuUs, writeJson } from './report';
import { SHARDS_MAX } from '../messages/api';

interface Options {
  shards: number;
  replicas: number;
  nodes: number;
  pollMs: number;
  timeoutS: number;
  idleS: number;
  then: 'kill' | 'stop' | undefined;
  resultsDir: string;
}

/**
 * Settling time after the last leader before the idle CPU is measured: the last status's work,
 * the elections' saves, and the shards quiescing (2 s without a request, then a heartbeat
 * period: docs/replication.md, "Idle shards").
 */
const IDLE_SETTLE_MS = 4000;

/** Pages per stripe of the volume (one shard's, in turn). */
const STRIPE_PAGES = 16;

const USAGE = 'usage: node dist/bench/elections.js [--shards 1..256] [--replicas 1|3|5] [--nodes 1..16] [--poll-ms 100..10000] [--timeout-s 10..600] [--idle-s 0..60] [--then kill|stop] [--results-dir DIR]';

function parseOptions(argv: readonly string[]): Options {
  const o: Options = { shards: 256, replicas: 3, nodes: 3, pollMs: 500, timeoutS: 120, idleS: 5, then: undefined, resultsDir: 'results' };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i]!, argv[i + 1]];
    if (flag === '--shards') o.shards = intFlag(flag, value, 1, SHARDS_MAX);
    else if (flag === '--replicas') o.replicas = intFlag(flag, value, 1, 5);
    else if (flag === '--nodes') o.nodes = intFlag(flag, value, 1, 16);
    else if (flag === '--poll-ms') o.pollMs = intFlag(flag, value, 100, 10_000);
    else if (flag === '--timeout-s') o.timeoutS = intFlag(flag, value, 10, 600);
    else if (flag === '--idle-s') o.idleS = intFlag(flag, value, 0, 60);
    else if (flag === '--then' && (value === 'kill' || value === 'stop')) o.then = value;
    else if (flag === '--results-dir' && value !== undefined && value !== '') o.resultsDir = value;
    else throw new Error(`unknown flag or missing value: ${flag}`);
  }
  if (![1, 3, 5].includes(o.replicas)) throw new Error(`--replicas: expected 1, 3 or 5, got ${o.replicas}`);
  if (o.replicas > o.nodes) throw new Error(`--replicas ${o.replicas} needs at least as many --nodes (got ${o.nodes})`);
  if (o.then !== undefined && o.replicas < 3) throw new Error(`--then ${o.then} needs --replicas 3 or 5: a shard of one replica has no other to lead it`);
  return o;
}

/** The leader of each shard of volume `name` as a status says (undefined: none known). */
function leadersIn(status: Awaited<ReturnType<DevCluster['client']['status']>>, name: string): Array<string | undefined> {
  const volume = status.volumes.find((v) => v.name === name);
  return (volume?.shards ?? []).map((s) => (typeof s.leader === 'string' ? s.leader : undefined));
}

/**
 * Kills (SIGKILL) or stops (SIGTERM) the node leading most of the volume's shards, then writes a
 * page to every shard at once, each tried again until it is taken or `timeoutS` passed: when the
 * last is taken, every shard has a leader again that commits (on the nodes left).
 */
async function afterLosing(cluster: DevCluster, name: string, pageSize: number, opts: Options): Promise<{ node: string; led: number; writtenAgainS: number | undefined; without: number }> {
  const before = leadersIn(await cluster.client.status(), name);
  const counts = new Map<string, number>();
  for (const l of before) if (l !== undefined) counts.set(l, (counts.get(l) ?? 0) + 1);
  const [node, led] = [...counts].sort((a, b) => b[1] - a[1])[0] ?? ['', 0];
  const target = cluster.nodes.find((n) => n.id === node);
  if (target === undefined) throw new Error(`no node ${JSON.stringify(node)} leads a shard of ${name}`);
  const volume = cluster.client.volume(name);
  const data = new Uint8Array(pageSize).fill(7);
  const t0 = performance.now();
  target.process.kill(opts.then === 'kill' ? 'SIGKILL' : 'SIGTERM');
  const deadline = t0 + opts.timeoutS * 1000;
  let lastMs = 0;
  let without = 0;
  await Promise.all(
    Array.from({ length: opts.shards }, async (_, shard) => {
      for (;;) {
        try {
          // The volume's stripes are STRIPE_PAGES long, one shard each, in turn.
          await volume.write(shard * STRIPE_PAGES, data);
          lastMs = Math.max(lastMs, performance.now() - t0);
          return;
        } catch {
          if (performance.now() >= deadline) {
            without++;
            return;
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    }),
  );
  return { node, led, writtenAgainS: without === 0 ? lastMs / 1000 : undefined, without };
}

/** The leaders deposed, by reason, from the nodes' logs ('no longer leading shard' lines). */
function stepDowns(cluster: DevCluster): Record<string, number> {
  const byReason: Record<string, number> = {};
  for (const n of cluster.nodes) {
    let text = '';
    try {
      text = fs.readFileSync(n.log, 'utf8');
    } catch {
      continue; // no log yet: nothing deposed there
    }
    for (const line of text.split('\n')) {
      if (!line.includes('"no longer leading shard"')) continue;
      let reason = 'unknown';
      try {
        reason = String((JSON.parse(line) as { reason?: unknown }).reason ?? 'unknown');
      } catch {
        // a line cut by a crash: counted without its reason
      }
      byReason[reason] = (byReason[reason] ?? 0) + 1;
    }
  }
  return byReason;
}

/**
 * Cores the node processes (all their threads) and nats-server use over `seconds` while nothing
 * is asked of the cluster, from /proc/<pid>/stat. Undefined parts could not be read.
 */
async function idleCpu(cluster: DevCluster, seconds: number): Promise<{ nodeCores: number; natsCores: number | undefined }> {
  await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
  const pids = cluster.nodes.map((n) => n.pid);
  const read = (): { nodes: number; nats: number | undefined } => ({
    nodes: pids.reduce((sum, pid) => sum + (procCpuUs(pid) ?? 0), 0),
    nats: procCpuUs(cluster.natsPid),
  });
  const before = read();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const after = read();
  const us = (performance.now() - t0) * 1000;
  return {
    nodeCores: (after.nodes - before.nodes) / us,
    natsCores: after.nats === undefined || before.nats === undefined ? undefined : (after.nats - before.nats) / us,
  };
}

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`elections: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const cluster = await startDevCluster({ nodes: opts.nodes, metricsPort: 0 });
  try {
    const name = `elections-${Date.now()}`;
    const t0 = performance.now();
    const info = await cluster.client.createVolume({ name, pageCount: opts.shards * STRIPE_PAGES, shards: opts.shards, stripePages: STRIPE_PAGES, replicas: opts.replicas as 1 | 3 | 5 });
    const createdS = (performance.now() - t0) / 1000;
    const t1 = performance.now();
    let leadersS: number | undefined;
    let leaders = 0;
    let loopDelayMaxMs = 0;
    let queueOpsMax = 0;
    const deadline = t1 + opts.timeoutS * 1000;
    while (performance.now() < deadline) {
      const status = await cluster.client.status();
      leaders = leadersIn(status, name).filter((l) => l !== undefined).length;
      for (const n of status.nodes as Array<{ hosts?: Array<{ loopDelayMaxMs?: number; queue?: { queueOps?: number } }> }>) {
        for (const h of n.hosts ?? []) {
          loopDelayMaxMs = Math.max(loopDelayMaxMs, h.loopDelayMaxMs ?? 0);
          queueOpsMax = Math.max(queueOpsMax, h.queue?.queueOps ?? 0);
        }
      }
      if (leaders === opts.shards) {
        leadersS = (performance.now() - t1) / 1000;
        break;
      }
      await new Promise((r) => setTimeout(r, opts.pollMs));
    }
    const idle = leadersS === undefined || opts.idleS === 0 ? undefined : await idleCpu(cluster, opts.idleS);
    // Counted before `--then`: the leaderships a stopped node hands over are not of the elections.
    const deposed = stepDowns(cluster);
    const lost = leadersS === undefined || opts.then === undefined ? undefined : await afterLosing(cluster, name, info.pageSize, opts);
    const deposedTotal = Object.values(deposed).reduce((a, b) => a + b, 0);
    printTable(`Strata elections: a new volume of ${opts.shards} shards × ${opts.replicas} replicas on ${opts.nodes} nodes (status every ${opts.pollMs} ms)`, [
      { what: 'create answered after', value: `${createdS.toFixed(2)} s` },
      { what: 'every shard led, after the create', value: leadersS === undefined ? `not within ${opts.timeoutS} s (${leaders} of ${opts.shards})` : `${leadersS.toFixed(2)} s` },
      { what: 'leaders deposed on the way', value: `${deposedTotal}${deposedTotal > 0 ? ` (${Object.entries(deposed).map(([r, n]) => `${n} ${r}`).join(', ')})` : ''}` },
      { what: 'worst host event-loop delay seen', value: `${loopDelayMaxMs.toFixed(1)} ms` },
      { what: 'deepest device queue seen', value: `${queueOpsMax} operations` },
      ...(idle === undefined ? [] : [{
        what: `idle CPU over ${opts.idleS} s (nodes + nats-server)`,
        value: idle.natsCores === undefined ? `${idle.nodeCores.toFixed(2)} cores (nodes; nats-server not readable)` : `${(idle.nodeCores + idle.natsCores).toFixed(2)} cores (nodes ${idle.nodeCores.toFixed(2)}, nats-server ${idle.natsCores.toFixed(2)})`,
      }]),
      ...(lost === undefined ? [] : [{
        what: `every shard took a write again, after ${opts.then === 'kill' ? 'killing' : 'stopping'} ${lost.node} (leading ${lost.led})`,
        value: lost.writtenAgainS === undefined ? `not within ${opts.timeoutS} s (${lost.without} shards did not)` : `${lost.writtenAgainS.toFixed(2)} s`,
      }]),
    ]);
    const file = writeJson(opts.resultsDir, 'strata-elections', {
      options: opts, createdS, leadersS: leadersS ?? null, leaders, deposed, deposedTotal, loopDelayMaxMs, queueOpsMax,
      idleNodeCores: idle?.nodeCores ?? null, idleNatsCores: idle?.natsCores ?? null,
      ...(lost === undefined ? {} : { then: { how: opts.then, node: lost.node, led: lost.led, writtenAgainS: lost.writtenAgainS ?? null, shardsNotWritten: lost.without } }),
      at: new Date().toISOString(),
    });
    process.stdout.write(`written: ${file}\n`);
    return leadersS === undefined || (lost !== undefined && lost.writtenAgainS === undefined) ? 1 : 0;
  } finally {
    await cluster.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`elections: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
