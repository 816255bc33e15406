import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { connect, type StrataClient } from '../../cluster/client';
import { ProtocolError } from '../../messages/errors';
import { HistoryRecorder, checkLinearizable } from '../support/linearizability';
import { stopAndCompareReplicas } from '../support/replicas';

const node = { timing: { electionTimeoutMinMs: 150, electionTimeoutMaxMs: 300, heartbeatMs: 25, rpcTimeoutMs: 500 } };
/**
 * Slower elections where the test is that no election happens: a host thread that a loaded
 * machine does not run for 150 ms would look, to its peers, like a leader that went silent.
 */
const stickyNode = { timing: { electionTimeoutMinMs: 500, electionTimeoutMaxMs: 1000, heartbeatMs: 50, rpcTimeoutMs: 500 } };
const PAGES = 8;
const CLIENTS = 4;
const RUN_MS = 6000;

/** A page holding a value: its UTF-8 bytes, then zeros. The zero page holds ''. */
function pageOf(value: string): Uint8Array {
  const b = new Uint8Array(4096);
  b.set(new TextEncoder().encode(value));
  return b;
}

function valueOf(page: Uint8Array): string {
  const end = page.indexOf(0);
  return new TextDecoder().decode(page.subarray(0, end < 0 ? page.length : end));
}

/** Errors after which a write may or may not have taken effect. */
function outcomeUnknown(e: unknown): boolean {
  return e instanceof ProtocolError && ['timeout', 'unavailable', 'not_leader', 'internal', 'device_failed', 'overloaded'].includes(e.code);
}

async function leaderIndex(client: StrataClient, volume: string): Promise<number | undefined> {
  const st = await client.status();
  const leader = st.volumes.find((v) => v.name === volume)?.shards[0]?.leader;
  return typeof leader === 'string' ? Number(leader.slice(1)) - 1 : undefined;
}

/** The shard's leader as the status shows it, once it shows one (a shard may be electing one). */
async function awaitLeader(client: StrataClient, volume: string): Promise<number> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const l = await leaderIndex(client, volume);
    if (l !== undefined) return l;
    assert.ok(Date.now() < deadline, `the status showed no leader of ${volume} for 20 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Runs CLIENTS clients of random reads and writes of PAGES pages of volume 'lin' for RUN_MS while
 * `faults` runs; returns the recorded history.
 */
async function runClients(client: StrataClient, faults: () => Promise<void>): Promise<ReturnType<HistoryRecorder['history']>> {
  const recorder = new HistoryRecorder();
  const vol = client.volume('lin');
  const stopAt = performance.now() + RUN_MS;
  let seq = 0;
  const worker = async (id: number): Promise<void> => {
    let rnd = id * 7919 + 1;
    const next = (n: number): number => {
      rnd = (rnd * 1103515245 + 12345) >>> 0;
      return (rnd >>> 16) % n;
    };
    while (performance.now() < stopAt) {
      const page = next(PAGES);
      if (next(2) === 0) {
        const value = `c${id}-${seq++}`;
        const op = recorder.invoke(id, page, 'write', value);
        try {
          await vol.write(page, pageOf(value));
          recorder.ok(op);
        } catch (e) {
          if (outcomeUnknown(e)) recorder.unknown(op);
          else throw e;
        }
      } else {
        const op = recorder.invoke(id, page, 'read');
        try {
          const got = (await vol.readPages([page])).pages[0]!;
          recorder.ok(op, valueOf(got));
        } catch (e) {
          if (outcomeUnknown(e)) recorder.unknown(op);
          else throw e;
        }
      }
      await new Promise((r) => setTimeout(r, 2 + next(8)));
    }
  };
  await Promise.all([...Array.from({ length: CLIENTS }, (_, i) => worker(i)), faults()]);
  return recorder.history();
}

/** Checks the history: progress through the faults, and linearizable per page. */
function checkHistory(history: ReturnType<HistoryRecorder['history']>): void {
  const writes = history.filter((o) => o.kind === 'write' && o.completeMs !== undefined).length;
  const reads = history.filter((o) => o.kind === 'read' && o.completeMs !== undefined).length;
  const unknown = history.filter((o) => o.completeMs === undefined).length;
  process.stdout.write(`      (${history.length} operations: ${writes} writes and ${reads} reads acknowledged, ${unknown} with unknown outcome)\n`);
  assert.ok(writes > 50 && reads > 50, 'the workload made progress through the faults');
  const result = checkLinearizable(history);
  assert.ok(result.ok, result.failure ? `page ${result.failure.page}: ${result.failure.explanation}` : 'exhausted');
}

async function termOf(client: StrataClient): Promise<number> {
  return Number((await client.status()).volumes.find((v) => v.name === 'lin')?.shards[0]?.term ?? 0);
}

describe('linearizability of page reads and writes under faults', function () {
  this.timeout(180_000);
  let c: InProcessCluster | undefined;
  afterEach(async () => {
    await c?.stop();
    c = undefined;
  });

  it('concurrent clients, a partitioned then killed leader: the history is linearizable per page', async () => {
    // The cluster's own client asks for the status, whose gather alone takes 2 s: 10 s leave a
    // loaded machine time for the rest.
    c = await startCluster({ nodes: 3, hosts: 1, node, clientTimeoutMs: 10_000 });
    await c.client.createVolume({ name: 'lin', pageCount: 64, shards: 1, replicas: 3 });
    const client = await connect({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 2000 });
    // The term of the shard's first leader (0 until one is elected).
    let termBefore = 0;
    for (const deadline = Date.now() + 10_000; termBefore === 0 && Date.now() < deadline; await new Promise((r) => setTimeout(r, 20))) termBefore = await termOf(c.client);
    assert.ok(termBefore > 0, 'the shard elected a leader');
    const events: string[] = [];
    const faults = async (): Promise<void> => {
      await new Promise((r) => setTimeout(r, 1000));
      const first = await awaitLeader(c!.client, 'lin');
      await c!.partition([[first]]);
      events.push(`partitioned leader n${first + 1}`);
      await new Promise((r) => setTimeout(r, 1500));
      await c!.heal();
      await new Promise((r) => setTimeout(r, 800));
      const second = await leaderIndex(c!.client, 'lin');
      if (second !== undefined && second !== 0) {
        // Node 0 keeps the catalog; killing another leader keeps the test about the shard.
        c!.kill(second);
        events.push(`killed leader n${second + 1}`);
        await new Promise((r) => setTimeout(r, 1500));
        await c!.restart(second);
      } else {
        const follower = 1 + (second === 0 ? 1 : 0);
        c!.kill(follower);
        events.push(`killed follower n${follower + 1}`);
        await new Promise((r) => setTimeout(r, 1500));
        await c!.restart(follower);
      }
    };
    const history = await runClients(client, faults);
    await client.close();
    const termAfter = await termOf(c.client);
    process.stdout.write(`      (faults: ${events.join(', ')}; term ${termBefore} → ${termAfter})\n`);
    assert.ok(termAfter >= termBefore + 1, 'the faults made the shard elect a new leader');
    checkHistory(history);
    await stopAndCompareReplicas(c);
  });

  it('concurrent clients, the link between the leader and one follower cut: the leader keeps leading, the history is linearizable', async () => {
    c = await startCluster({ nodes: 3, hosts: 1, node: stickyNode, clientTimeoutMs: 10_000 });
    await c.client.createVolume({ name: 'lin', pageCount: 64, shards: 1, replicas: 3 });
    await awaitLeader(c.client, 'lin');
    const client = await connect({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 2000 });
    // Every (leader, term) the status showed while the link was cut.
    const seen = new Set<string>();
    let before: string | undefined;
    const faults = async (): Promise<void> => {
      await new Promise((r) => setTimeout(r, 1000));
      const first = await awaitLeader(c!.client, 'lin');
      before = `n${first + 1} in term ${await termOf(c!.client)}`;
      // The follower other than node 0 (which keeps the catalog, so status keeps answering).
      const cut = [0, 1, 2].find((i) => i !== first && i !== 0) ?? [0, 1, 2].find((i) => i !== first)!;
      await c!.nodes[first]!.setFaults({ unreachable: [`n${cut + 1}`] });
      await c!.nodes[cut]!.setFaults({ unreachable: [`n${first + 1}`] });
      // The cut-off follower campaigns every election timeout (0.5–1 s) and reaches the other
      // follower.
      const until = performance.now() + 2000;
      while (performance.now() < until) {
        const l = await leaderIndex(c!.client, 'lin');
        if (l !== undefined) seen.add(`n${l + 1} in term ${await termOf(c!.client)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      await c!.heal();
    };
    const history = await runClients(client, faults);
    await client.close();
    // The cut-off follower asked for votes all along; the other follower, hearing the leader,
    // said no each time, so no election took place and the leader was never deposed.
    assert.deepEqual([...seen], [before], 'the leader a majority still follows kept leading, in its term, while the link was cut');
    checkHistory(history);
  });
});
