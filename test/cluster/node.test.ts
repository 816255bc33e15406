import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, type Msg, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { StrataNode, RECONCILE_BACKOFF_MS_MIN, type StrataNodeOptions } from '../../cluster/node';
import { encode } from '../../messages/codec';
import { errorReply, ProtocolError } from '../../messages/errors';
import { controllerSubject } from '../../messages/control';

const CLUSTER = 'nodetest';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The nodes' log lines (JSON on stderr) written while `fn` runs; other lines pass through. */
async function nodeLogLines(fn: () => Promise<void>): Promise<Array<Record<string, unknown>>> {
  const lines: Array<Record<string, unknown>> = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array): boolean => {
    for (const line of String(chunk).split('\n')) {
      try {
        const o = JSON.parse(line) as Record<string, unknown>;
        if (o.component === 'node') {
          lines.push(o);
          continue;
        }
      } catch {
        // Not a log line.
      }
      if (line !== '') write(`${line}\n`);
    }
    return true;
  }) as typeof process.stderr.write;
  try {
    await fn();
  } finally {
    process.stderr.write = write;
  }
  return lines;
}

describe('StrataNode', function () {
  this.timeout(60_000);
  let nats: NatsServerHandle;
  let fake: NatsConnection;
  let root: string;
  const nodes: StrataNode[] = [];

  before(async () => {
    nats = await startNatsServer({ jetstream: false });
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-node-test-'));
  });
  beforeEach(async () => {
    fake = await natsConnect({ servers: nats.url });
  });
  afterEach(async () => {
    for (const n of nodes.splice(0)) await n.stop();
    await fake.close();
  });
  after(async () => {
    await nats?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  /** A node without a controller of its own, at info log level (the fake controller is the test's). */
  async function startNode(id: string, opts: Partial<StrataNodeOptions> = {}): Promise<StrataNode> {
    const level = process.env.STRATA_LOG_LEVEL;
    process.env.STRATA_LOG_LEVEL = 'info';
    try {
      const n = await StrataNode.start({
        nodeId: id, cluster: CLUSTER, natsUrl: nats.url, dataDir: path.join(root, id), hosts: 1, controller: false, heartbeatMs: 50, ...opts,
      });
      nodes.push(n);
      return n;
    } finally {
      if (level === undefined) delete process.env.STRATA_LOG_LEVEL;
      else process.env.STRATA_LOG_LEVEL = level;
    }
  }

  /** Serves a controller subject on the fake controller's connection. */
  function serveFake(verb: string, handler: (msg: Msg) => void): void {
    fake.subscribe(controllerSubject(CLUSTER, verb), { callback: (_err, msg) => handler(msg) });
  }

  describe('heartbeats and reconciliation', () => {
    it('runs one heartbeat at a time: a tick while one is in flight is skipped', async () => {
      let inFlight = 0;
      let inFlightMax = 0;
      let heartbeats = 0;
      serveFake('heartbeat', (msg) => {
        heartbeats++;
        inFlightMax = Math.max(inFlightMax, ++inFlight);
        // The controller answers slowly: 300 ms, six heartbeat periods.
        setTimeout(() => {
          inFlight--;
          msg.respond(encode({ epoch: 0 }));
        }, 300);
      });
      serveFake('assignments', (msg) => msg.respond(encode({ epoch: 0, shards: [], tombstones: [] })));
      await startNode('hb1');
      await sleep(1000);
      assert.equal(inFlightMax, 1);
      assert.ok(heartbeats >= 3 && heartbeats <= 5, `heartbeats: ${heartbeats}`);
    });

    it('backs off after a failed reconciliation while heartbeats keep their period; warns once per distinct failure, tells when it recovers', async () => {
      let heartbeats = 0;
      let epoch = 1;
      const fetchedAtMs: number[] = [];
      serveFake('heartbeat', (msg) => {
        heartbeats++;
        msg.respond(encode({ epoch }));
      });
      serveFake('assignments', (msg) => {
        fetchedAtMs.push(Date.now());
        // The fetch at boot works, the next two fail (with the same message), then they work.
        const fails = fetchedAtMs.length === 2 || fetchedAtMs.length === 3;
        msg.respond(encode(fails ? errorReply(new ProtocolError('unavailable', 'catalog busy')) : { epoch, shards: [], tombstones: [] }));
      });
      const lines = await nodeLogLines(async () => {
        await startNode('hb2');
        assert.equal(fetchedAtMs.length, 1);
        // The catalog changes: the node reconciles again, and fails.
        epoch = 2;
        await sleep(3 * RECONCILE_BACKOFF_MS_MIN + 600);
      });
      // After the first failure, one back-off (1 s) later, two more (2 s) later; then the epoch is reconciled.
      assert.equal(fetchedAtMs.length, 4, `fetches at ${fetchedAtMs.map((t) => t - fetchedAtMs[0]!).join(', ')} ms`);
      assert.ok(fetchedAtMs[2]! - fetchedAtMs[1]! >= RECONCILE_BACKOFF_MS_MIN - 10);
      assert.ok(fetchedAtMs[3]! - fetchedAtMs[2]! >= 2 * RECONCILE_BACKOFF_MS_MIN - 10);
      assert.ok(heartbeats >= 40, `heartbeats: ${heartbeats}`);
      const failed = lines.filter((l) => l.msg === 'reconciliation with the catalog failed');
      assert.equal(failed.length, 1, JSON.stringify(lines));
      assert.equal(failed[0]!.level, 'warn');
      assert.match(JSON.stringify(failed[0]!.err), /catalog busy/);
      const recovered = lines.filter((l) => l.msg === 'reconciliation with the catalog works again');
      assert.equal(recovered.length, 1, JSON.stringify(lines));
      assert.equal(recovered[0]!.level, 'info');
    });
  });
});
