/**
 * How long a replicated controller takes to come back when its node dies (npm run bench:failover).
 *
 * Starts an in-process cluster of `--nodes` nodes of which 3 are controller nodes, creates a
 * volume, then `--rounds` times: kills the node that runs the controller (as a crash: threads
 * ended, nothing handed over), and times until `volume.list` is answered again and until a
 * `volume.create` of 3 replicas is (which also waits for the new controller to hear from the
 * nodes); then starts the killed node again and lets the cluster settle. Prints a row per round
 * and writes them as JSON to results/strata-failover-<time>.json. Exits 2 for a bad flag.
 *
 *   node dist/bench/failover.js [--rounds 6] [--nodes 4] [--results-dir results]
 */
import { startCluster, type InProcessCluster } from '../cluster/in-process-cluster';
import { intFlag, printTable, writeJson } from './report';

const USAGE = 'usage: node dist/bench/failover.js [--rounds 1..20] [--nodes 3..7] [--results-dir DIR]';
/** A round that does not see the controller back within this long fails the run. */
const ROUND_TIMEOUT_MS = 60_000;

function parseOptions(argv: readonly string[]): { rounds: number; nodes: number; resultsDir: string } {
  const o = { rounds: 6, nodes: 4, resultsDir: 'results' };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i]!, argv[i + 1]];
    if (flag === '--rounds') o.rounds = intFlag(flag, value, 1, 20);
    else if (flag === '--nodes') o.nodes = intFlag(flag, value, 3, 7);
    else if (flag === '--results-dir' && value !== undefined && value !== '') o.resultsDir = value;
    else throw new Error(`unknown flag or missing value: ${flag}`);
  }
  return o;
}

/** The index of the node that runs the controller, or undefined. */
async function controllerIndex(c: InProcessCluster): Promise<number | undefined> {
  for (let i = 0; i < c.nodes.length; i++) {
    const st = (await c.nodes[i]?.status()) as { node: { controller: boolean } } | undefined;
    if (st?.node.controller === true) return i;
  }
  return undefined;
}

/** Ms from `t0` until `fn` succeeds, tried every 20 ms. */
async function untilOk(t0: number, fn: () => Promise<unknown>): Promise<number> {
  for (;;) {
    try {
      await fn();
      return Date.now() - t0;
    } catch (e) {
      if (Date.now() - t0 > ROUND_TIMEOUT_MS) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

async function main(): Promise<number> {
  let opts: ReturnType<typeof parseOptions>;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const c = await startCluster({ nodes: opts.nodes, controllers: 3, hosts: 1, telemetry: false, clientTimeoutMs: 3000 });
  const rows: Array<{ round: number; killed: string; listMs: number; createMs: number }> = [];
  try {
    await c.client.createVolume({ name: 'failover', pageCount: 256, shards: 2, stripePages: 16, replicas: 3 });
    for (let round = 1; round <= opts.rounds; round++) {
      const at = await controllerIndex(c);
      if (at === undefined) throw new Error('no node runs the controller');
      const t0 = Date.now();
      c.kill(at);
      const listMs = await untilOk(t0, () => c.client.listVolumes());
      const createMs = await untilOk(t0, () => c.client.createVolume({ name: `failover-${round}`, pageCount: 256, shards: 1, replicas: 3 }).catch((e: unknown) => {
        if ((e as { code?: unknown }).code !== 'already_exists') throw e;
      }));
      rows.push({ round, killed: `n${at + 1}`, listMs, createMs });
      await c.restart(at);
      await c.waitForMembers(opts.nodes);
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    await c.stop();
  }
  printTable(`Strata failover: the controller's node killed, ${opts.nodes} nodes of which 3 are controller nodes (ms after the kill)`, rows.map((r) => ({ round: r.round, killed: r.killed, 'volume.list ms': r.listMs, 'volume.create ms': r.createMs })));
  const file = writeJson(opts.resultsDir, 'strata-failover', { nodes: opts.nodes, controllers: 3, rounds: rows });
  process.stdout.write(`written: ${file}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`strata failover bench: ${(e as Error).message}\n`);
    process.exit(1);
  },
);
