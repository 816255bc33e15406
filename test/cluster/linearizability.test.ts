import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { connect, type StrataClient } from '../../cluster/client';
import { ProtocolError } from '../../messages/errors';
import { HistoryRecorder, checkLinearizable } from '../support/linearizability';

const node = { timing: { electionTimeoutMinMs: 150, electionTimeoutMaxMs: 300, heartbeatMs: 25, rpcTimeoutMs: 500 } };
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

describe('linearizability of page reads and writes under faults', function () {
  this.timeout(180_000);
  let c: InProcessCluster | undefined;
  after(async () => {
    await c?.stop();
  });

  it('concurrent clients, a partitioned then killed leader: the history is linearizable per page', async () => {
    c = await startCluster({ nodes: 3, hosts: 1, node, clientTimeoutMs: 3000 });
    await c.client.createVolume({ name: 'lin', pageCount: 64, shards: 1, replicas: 3 });
    const client = await connect({ servers: c.natsUrl, cluster: c.cluster, timeoutMs: 2000 });
    const recorder = new HistoryRecorder();
    const termOf = async (): Promise<number> => Number((await c!.client.status()).volumes.find((v) => v.name === 'lin')?.shards[0]?.term ?? 0);
    const termBefore = await termOf();
    const events: string[] = [];
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
    const faults = (async () => {
      await new Promise((r) => setTimeout(r, 1000));
      const first = await leaderIndex(c!.client, 'lin');
      if (first !== undefined) await c!.partition([[first]]);
      events.push(`partitioned leader n${(first ?? -1) + 1}`);
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
    })();
    await Promise.all([...Array.from({ length: CLIENTS }, (_, i) => worker(i)), faults]);
    await client.close();

    const history = recorder.history();
    const writes = history.filter((o) => o.kind === 'write' && o.completeMs !== undefined).length;
    const reads = history.filter((o) => o.kind === 'read' && o.completeMs !== undefined).length;
    const unknown = history.filter((o) => o.completeMs === undefined).length;
    const termAfter = await termOf();
    process.stdout.write(`      (faults: ${events.join(', ')}; term ${termBefore} → ${termAfter})\n`);
    assert.ok(termAfter >= termBefore + 1, 'the faults made the shard elect a new leader');
    process.stdout.write(`      (${history.length} operations: ${writes} writes and ${reads} reads acknowledged, ${unknown} with unknown outcome)\n`);
    assert.ok(writes > 50 && reads > 50, 'the workload made progress through the faults');
    const result = checkLinearizable(history);
    assert.ok(result.ok, result.failure ? `page ${result.failure.page}: ${result.failure.explanation}` : 'exhausted');
  });
});
