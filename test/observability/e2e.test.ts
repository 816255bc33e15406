/**
 * Observability of a running in-process cluster: one connected trace for a replicated write,
 * metrics scraped over HTTP after a known workload (and checked by promtool), and `strata
 * status` after a node is killed.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { threadId } from 'node:worker_threads';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { startTelemetry, currentTelemetry, type Telemetry } from '../../observability/telemetry';
import { formatStatus, formatStatusJson } from '../../observability/status';
import { freePort } from '../../runtime/free-port';
import { httpGet, samples } from '../support/prometheus';

const PROMTOOL = '/usr/bin/promtool';
const PAGE = 4096;

function page(fill: number): Uint8Array {
  return new Uint8Array(PAGE).fill(fill & 0xff);
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** GET `urlPath`; anything but HTTP 200 fails. */
async function get(port: number, urlPath: string): Promise<string> {
  const r = await httpGet(port, urlPath);
  if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
  return r.body;
}

/** Sum of the samples of `name` whose labels include `labels`. */
function sum(text: string, name: string, labels: Record<string, string> = {}): number {
  return samples(text, name, labels).reduce((a, b) => a + b, 0);
}

/** Largest sample of `name` whose labels include `labels` (undefined when none). */
function max(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const v = samples(text, name, labels);
  return v.length === 0 ? undefined : Math.max(...v);
}

/** Writes until the shard has a leader that commits (a fresh replica set elects one first). */
/**
 * The metrics docs/observability.md's tables document (rows "| `strata_…` | type … | labels |
 * …"), by name (the exported name: a counter's with `_total`), with their type and labels.
 */
function documentedMetrics(doc: string): Map<string, { type: string; labels: Set<string> }> {
  const out = new Map<string, { type: string; labels: Set<string> }>();
  for (const line of doc.split('\n')) {
    if (!line.startsWith('| `strata_')) continue;
    const cols = line.replace(/\\\|/g, '/').split('|').slice(1, -1).map((c) => c.trim());
    const type = cols[1]!.split(/\s/)[0]!;
    const labels = new Set(cols[2]!.replace(/\(.*?\)/g, '').split(',').map((l) => l.trim()).filter((l) => l !== '' && l !== 'none' && l !== '-'));
    for (const m of cols[0]!.matchAll(/`(strata_[a-z_]+)`/g)) out.set(m[1]!, { type, labels });
  }
  return out;
}

/** The metrics of a scrape by name (a histogram's series under its own name), with their type and labels (without `le`). */
function exportedMetrics(text: string): Map<string, { type: string; labels: Set<string> }> {
  const out = new Map<string, { type: string; labels: Set<string> }>();
  for (const line of text.split('\n')) {
    const t = /^# TYPE (strata_[a-z_]+) (\w+)$/.exec(line);
    if (t !== null) out.set(t[1]!, { type: t[2]!, labels: new Set() });
  }
  for (const line of text.split('\n')) {
    const m = /^(strata_[a-z_]+?)(_bucket|_sum|_count)?(?:\{(.*)\})? /.exec(line);
    if (m === null) continue;
    const entry = out.get(m[1]!) ?? out.get(m[1]! + (m[2] ?? ''));
    if (entry === undefined) continue;
    for (const l of (m[3] ?? '').matchAll(/([a-z_]+)="/g)) if (l[1] !== 'le') entry.labels.add(l[1]!);
  }
  return out;
}

async function warmUp(c: InProcessCluster, volume: string): Promise<void> {
  await until('a leader that commits', 15_000, async () => (await c.client.volume(volume).write(0, page(1))).lsn);
}

const attr = (s: ReadableSpan, k: string): unknown => s.attributes[k];

describe('observability end to end (in-process cluster)', function () {
  this.timeout(120_000);
  let c: InProcessCluster | undefined;
  let telemetry: Telemetry | undefined;

  afterEach(async () => {
    await c?.stop();
    c = undefined;
    await telemetry?.shutdown();
    telemetry = undefined;
  });

  it('a replicated write is one connected trace: client → leader host → replica write → appends to each follower → device batches and fsyncs', async () => {
    telemetry = startTelemetry({ nodeId: 'test', cluster: 'obs', traceExporters: ['memory'], sampling: 'always', metricsPort: 0 });
    c = await startCluster({ nodes: 3, hosts: 1, cluster: 'obs' });
    assert.equal(c.telemetry, telemetry, 'the cluster shares the running telemetry');
    await c.client.createVolume({ name: 'traced', pageCount: 64, shards: 1, replicas: 3 });
    await warmUp(c, 'traced');
    // Let the warm-up's appends reach every follower, then start from an empty exporter.
    await new Promise((r) => setTimeout(r, 300));
    await c.flushTelemetry();
    await new Promise((r) => setTimeout(r, 100));
    const exporter = telemetry.memoryExporter!;
    exporter.reset();

    const { lsn } = await c.client.volume('traced').write(5, page(5));

    // Both followers get the record (commit needs only one of them); wait for their spans. The
    // trace is the one whose replica write has this LSN: spans of the warm-up that a loaded
    // machine exported after the reset are of other traces.
    const spans = await until('the spans of every hop', 20_000, async () => {
      await c!.flushTelemetry();
      await new Promise((r) => setTimeout(r, 50));
      const all = exporter.getFinishedSpans();
      const ours = all.find((s) => s.name === 'shard.write' && attr(s, 'strata.lsn') === lsn);
      if (!ours) return undefined;
      const trace = all.filter((s) => s.spanContext().traceId === ours.spanContext().traceId);
      const root = trace.find((s) => s.name === 'send shard.write' && s.kind === SpanKind.CLIENT && s.parentSpanContext === undefined);
      if (!root) return undefined;
      const followersDone = trace.filter((s) => s.name === 'process replica.append').length >= 2;
      const followerBatches = trace.filter((s) => s.name === 'device.batch' && trace.some((p) => p.name === 'process replica.append' && p.spanContext().spanId === s.parentSpanContext?.spanId)).length >= 2;
      // A span ends (and is exported) after its children: wait until every parent is in.
      const ids = new Set(trace.map((s) => s.spanContext().spanId));
      const complete = trace.every((s) => s === root || (s.parentSpanContext !== undefined && ids.has(s.parentSpanContext.spanId)));
      return followersDone && followerBatches && complete ? { root, trace } : undefined;
    });
    const { root, trace } = spans;
    const byId = new Map(trace.map((s) => [s.spanContext().spanId, s]));
    const parentOf = (s: ReadableSpan): ReadableSpan | undefined => (s.parentSpanContext ? byId.get(s.parentSpanContext.spanId) : undefined);
    const childrenOf = (p: ReadableSpan, name: string): ReadableSpan[] => trace.filter((s) => s.name === name && s.parentSpanContext?.spanId === p.spanContext().spanId);
    const one = (list: ReadableSpan[], what: string): ReadableSpan => {
      assert.equal(list.length, 1, `${what}: ${list.length} spans`);
      return list[0]!;
    };

    // Every span of the trace reaches the root through its parents: one connected trace.
    for (const s of trace) {
      let p: ReadableSpan | undefined = s;
      let hops = 0;
      while (p && p !== root && hops++ < 32) p = parentOf(p);
      assert.equal(p, root, `span ${s.name} is connected to the root`);
    }

    // client → shard subject receive on the leader's host thread.
    assert.equal(attr(root, 'thread.id'), undefined, 'the client span is recorded on the main thread');
    const server = one(childrenOf(root, 'process shard.write'), 'process shard.write');
    assert.equal(server.kind, SpanKind.SERVER);
    const leaderThread = attr(server, 'thread.id');
    assert.ok(typeof leaderThread === 'number' && leaderThread !== threadId, 'served on a host thread');
    const leaderNode = attr(server, 'strata.node.id') as string;
    assert.match(leaderNode, /^n[123]$/);
    assert.equal(attr(server, 'messaging.destination.name'), root.attributes['messaging.destination.name']);

    // → the replica's write.
    const write = one(childrenOf(server, 'shard.write'), 'shard.write');
    assert.equal(attr(write, 'strata.lsn'), lsn);
    assert.equal(attr(write, 'thread.id'), leaderThread);

    // → the append, to both followers in one message (followers in step), or to each in its own:
    // CLIENT span on the leader, a SERVER span on each follower's thread.
    const sends = childrenOf(write, 'send replica.append');
    const toAll = `strata.obs.followers.${attr(write, 'strata.volume.id') as string}.0.${leaderNode}`;
    const receives = sends.flatMap((send) => childrenOf(send, 'process replica.append').map((recv) => ({ send, recv })));
    assert.equal(receives.length, 2, `each follower received the append once: ${sends.length} sends, ${receives.length} receives`);
    const followerNodes = new Set<string>();
    const followerThreads = new Set<unknown>();
    for (const { send, recv } of receives) {
      assert.equal(send.kind, SpanKind.CLIENT);
      assert.equal(attr(send, 'thread.id'), leaderThread);
      assert.ok(send.links.some((l) => l.context.spanId === write.spanContext().spanId), 'the append links to the write it carries');
      assert.equal(recv.kind, SpanKind.SERVER);
      const node = attr(recv, 'strata.node.id') as string;
      assert.notEqual(node, leaderNode);
      const destination = String(attr(send, 'messaging.destination.name'));
      if (sends.length === 1) assert.equal(destination, toAll, 'one message on the leader\'s subject to all its followers');
      else assert.ok(destination.endsWith(`.${node}`), 'sent to that follower\'s replica subject');
      followerNodes.add(node);
      followerThreads.add(attr(recv, 'thread.id'));
      // The follower's own group commit: a batch (child of its receive) with an fsync.
      const batch = one(childrenOf(recv, 'device.batch'), `device.batch on ${node}`);
      assert.equal(attr(batch, 'strata.node.id'), node);
      one(childrenOf(batch, 'device.fsync'), `device.fsync on ${node}`);
    }
    assert.equal(followerNodes.size, 2);

    // The leader's own append + fsync.
    const leaderBatch = one(childrenOf(write, 'device.batch'), 'device.batch on the leader');
    one(childrenOf(leaderBatch, 'device.fsync'), 'device.fsync on the leader');

    const batches = trace.filter((s) => s.name === 'device.batch');
    const threads = new Set(batches.map((s) => attr(s, 'thread.id')));
    const nodes = new Set(batches.map((s) => attr(s, 'strata.node.id')));
    assert.ok(threads.size >= 2 && nodes.size >= 2, `device batches on ≥2 threads (${threads.size}) and ≥2 nodes (${nodes.size})`);
    assert.equal(new Set([leaderThread, ...followerThreads]).size, 3, 'three host threads took part');
  });

  it('an append a follower refuses (its fsync failed) ends the leader\'s send span as an error too', async () => {
    telemetry = startTelemetry({ nodeId: 'test', cluster: 'obs2', traceExporters: ['memory'], sampling: 'always', metricsPort: 0 });
    c = await startCluster({ nodes: 3, hosts: 1, cluster: 'obs2' });
    await c.client.createVolume({ name: 'refused', pageCount: 64, shards: 1, replicas: 3 });
    await warmUp(c, 'refused');
    const status = (await c.client.status()) as unknown as { volumes: Array<{ shards: Array<{ leader?: string }> }> };
    const leader = status.volumes[0]!.shards[0]!.leader!;
    const follower = ['n1', 'n2', 'n3'].find((n) => n !== leader)!;
    await new Promise((r) => setTimeout(r, 300));
    await c.flushTelemetry();
    const exporter = telemetry.memoryExporter!;
    exporter.reset();
    await c.failFsync(Number(follower.slice(1)) - 1, 1);
    const { lsn } = await c.client.volume('refused').write(2, page(2));
    const { received, send } = await until('the refused append and its send', 20_000, async () => {
      await c!.flushTelemetry();
      const all = exporter.getFinishedSpans();
      // The write's own append, or (a leader elected meanwhile on a loaded machine) the next one
      // sent to the follower whose fsync fails: either is refused, and its send is the leader's.
      if (!all.some((s) => s.name === 'shard.write' && attr(s, 'strata.lsn') === lsn)) return undefined;
      const refused = all.find((s) => s.name === 'process replica.append' && s.status.code === SpanStatusCode.ERROR && attr(s, 'strata.node.id') === follower);
      const parent = refused && all.find((s) => s.spanContext().spanId === refused.parentSpanContext?.spanId);
      return refused && parent ? { received: refused, send: parent } : undefined;
    });
    assert.equal(attr(received, 'strata.node.id'), follower);
    assert.equal(send.name, 'send replica.append');
    assert.equal(send.status.code, SpanStatusCode.ERROR, "the leader's send whose answer was an error is marked failed");
  });

  it('an idle cluster makes no span: heartbeats and votes, sent outside any trace, do not each start one', async () => {
    telemetry = startTelemetry({ nodeId: 'test', cluster: 'obs3', traceExporters: ['memory'], sampling: 'always', metricsPort: 0 });
    c = await startCluster({ nodes: 3, hosts: 1, cluster: 'obs3' });
    await c.client.createVolume({ name: 'idle', pageCount: 64, shards: 4, stripePages: 16, replicas: 3 });
    await warmUp(c, 'idle');
    await new Promise((r) => setTimeout(r, 500));
    await c.flushTelemetry();
    const exporter = telemetry.memoryExporter!;
    exporter.reset();
    // Two seconds of nothing but the cluster's own messages (heartbeats of 4 shards × 3 replicas).
    await new Promise((r) => setTimeout(r, 2000));
    await c.flushTelemetry();
    await new Promise((r) => setTimeout(r, 100));
    const replicaSpans = exporter.getFinishedSpans().filter((s) => s.name.startsWith('process replica.'));
    assert.deepEqual(replicaSpans.map((s) => s.name), [], 'no span of a replication message outside a trace');
  });

  it('metrics of a running cluster change as a known workload says, and promtool accepts them', async () => {
    const port = await freePort();
    c = await startCluster({ nodes: 3, controllers: 3, hosts: 1, cluster: 'metrics', telemetry: { metricsPort: port, metricsHost: '127.0.0.1' } });
    assert.ok(c.telemetry && c.telemetry === currentTelemetry(), 'the cluster started the process telemetry');
    const info = await c.client.createVolume({ name: 'm', pageCount: 256, shards: 1, replicas: 3 });
    await warmUp(c, 'm');
    const vol = c.client.volume('m');
    await new Promise((r) => setTimeout(r, 300)); // snapshots are reused for 250 ms
    const before = await get(port, '/metrics');

    const WRITES = 20;
    const READS = 10;
    let lastLsn = 0;
    for (let i = 0; i < WRITES; i++) lastLsn = (await vol.write(10 + i, page(i))).lsn;
    for (let i = 0; i < READS; i++) await vol.read(10 + i);
    await assert.rejects(vol.read(10, { lsn: 1_000_000 }), (e: { code?: string }) => e.code === 'future_lsn');
    await assert.rejects(c.client.volume('nope').info(), (e: { code?: string }) => e.code === 'not_found');
    await c.client.status();
    // Followers learn the last commit LSN with the next heartbeat: scrape until every node shows it.
    const after = await until('the last commit LSN on every node in a scrape', 20_000, async () => {
      const text = await get(port, '/metrics');
      const known = ['n1', 'n2', 'n3'].every((node) => max(text, 'strata_shard_commit_lsn', { node, volume: info.id, shard: '0' }) === lastLsn);
      return known ? text : undefined;
    });

    const delta = (name: string, labels: Record<string, string>): number => sum(after, name, labels) - sum(before, name, labels);
    assert.equal(delta('strata_request_duration_seconds_count', { operation: 'shard.write', outcome: 'ok' }), WRITES);
    assert.equal(delta('strata_request_duration_seconds_count', { operation: 'shard.read', outcome: 'ok' }), READS);
    assert.equal(delta('strata_request_duration_seconds_count', { operation: 'shard.read', outcome: 'future_lsn' }), 1);
    assert.equal(delta('strata_errors_total', { code: 'future_lsn' }), 1);
    // A catalog verb's error, answered by the controller and passed on as it came, counts as that error.
    assert.equal(delta('strata_request_duration_seconds_count', { host: 'main', operation: 'volume.info', outcome: 'not_found' }), 1);
    assert.equal(delta('strata_errors_total', { host: 'main', code: 'not_found' }), 1);
    assert.ok(delta('strata_request_duration_seconds_count', { operation: 'replica.append', outcome: 'ok' }) >= WRITES, 'followers answered the appends');
    assert.equal(delta('strata_request_duration_seconds_count', { host: 'main', operation: 'status', outcome: 'ok' }), 1, 'the API verb status, on a main thread');
    // Every replica made each page durable: three copies of (at least) the page bytes.
    assert.ok(delta('strata_device_written_bytes_total', {}) >= WRITES * PAGE * 3, 'bytes written');
    // The commit LSN every replica knows is the last write's (the leader's at once, followers after a heartbeat).
    for (const node of ['n1', 'n2', 'n3']) {
      assert.equal(max(after, 'strata_shard_commit_lsn', { node, volume: info.id, shard: '0' }), lastLsn, `commit LSN on ${node}`);
    }
    assert.equal(max(after, 'strata_shard_up', { volume: info.id }), 1);
    assert.equal(sum(after, 'strata_shard_leader', { volume: info.id, shard: '0' }), 1, 'one replica reports that it leads');
    // Each node says what its start did: new nodes, no replica to open again.
    for (const node of ['n1', 'n2', 'n3']) {
      assert.equal(max(after, 'strata_node_start_replicas', { node }), 0, `start of ${node}`);
      assert.ok((max(after, 'strata_node_start_seconds', { node }) ?? 0) > 0, `start of ${node}`);
    }
    assert.ok((max(after, 'strata_shard_current_term', { volume: info.id }) ?? 0) >= 1);
    assert.ok(sum(after, 'strata_elections_total', { volume: info.id }) >= 1, 'an election happened');
    assert.ok(after.includes('strata_replica_lag_records{'), 'the leader reports its followers\' lag');
    assert.ok(sum(after, 'strata_cache_hits_total', { volume: info.id }) + sum(after, 'strata_cache_misses_total', { volume: info.id }) >= READS, 'the reads went through the page cache');
    assert.ok(delta('strata_device_batch_ops_count', {}) > 0 && delta('strata_device_fsync_duration_seconds_count', {}) > 0);
    // Every host's tick is timed: about 100 a second each.
    assert.ok(delta('strata_host_event_loop_delay_seconds_count', {}) > 0, 'the hosts\' ticks are timed');

    // Every metric a cluster exports is in docs/observability.md's tables, with its type and labels.
    const documented = documentedMetrics(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'docs', 'observability.md'), 'utf8'));
    for (const [name, { type, labels }] of exportedMetrics(after)) {
      const doc = documented.get(name);
      assert.ok(doc !== undefined, `${name} (${type}) is exported and not documented`);
      assert.equal(doc.type, type, `${name}: documented as ${doc.type}, exported as ${type}`);
      assert.deepEqual([...labels].sort(), [...doc.labels].sort(), `${name}: its labels`);
    }

    if (!fs.existsSync(PROMTOOL)) {
      console.log(`      (skipped promtool check: ${PROMTOOL} not found; install Debian's prometheus package)`);
      return;
    }
    const check = spawnSync(PROMTOOL, ['check', 'metrics'], { input: after, encoding: 'utf8' });
    assert.equal(check.status, 0, `promtool check metrics:\n${check.stdout}\n${check.stderr}`);
    // The alerting rules Strata ships are valid, and every metric they use is one a cluster exports.
    const rules = path.join(__dirname, '..', '..', '..', 'observability', 'alerts.yml');
    const ruleCheck = spawnSync(PROMTOOL, ['check', 'rules', rules], { encoding: 'utf8' });
    assert.equal(ruleCheck.status, 0, `promtool check rules:\n${ruleCheck.stdout}\n${ruleCheck.stderr}`);
    const used = [...new Set([...fs.readFileSync(rules, 'utf8').matchAll(/\b(strata_[a-z_]+)/g)].map((m) => m[1]!))];
    assert.ok(used.length >= 5, used.join(', '));
    for (const name of used) assert.match(after, new RegExp(`^${name}[{ ]`, 'm'), `${name}, used by an alert, is exported`);
  });

  it('a shard with a majority of its nodes killed: its replica left reports it up and not led, the series StrataShardDown watches', async () => {
    const port = await freePort();
    c = await startCluster({ nodes: 3, hosts: 1, cluster: 'noleader', telemetry: { metricsPort: port, metricsHost: '127.0.0.1' } });
    const info = await c.client.createVolume({ name: 'l', pageCount: 256, shards: 2, stripePages: 8, replicas: 3 });
    await warmUp(c, 'l');
    await until('a leader that commits on shard 1', 15_000, async () => (await c!.client.volume('l').write(8, page(2))).lsn);
    await until('each shard led once in a scrape', 20_000, async () => {
      const text = await get(port, '/metrics');
      return ['0', '1'].every((shard) => sum(text, 'strata_shard_leader', { volume: info.id, shard }) === 1) ? text : undefined;
    });
    c.kill(1);
    c.kill(2);
    // The replicas on n1 lose their leader, or step down for want of a majority: up, and not leading.
    const left = await until('no shard led on n1', 30_000, async () => {
      const text = await get(port, '/metrics');
      return ['0', '1'].every((shard) => max(text, 'strata_shard_leader', { node: 'n1', volume: info.id, shard }) === 0) ? text : undefined;
    });
    for (const shard of ['0', '1']) {
      assert.equal(samples(left, 'strata_shard_leader', { volume: info.id, shard }).length, 1, 'only n1 reports the shard');
      assert.equal(max(left, 'strata_shard_up', { volume: info.id, shard }), 1, 'strata_shard_up alone does not tell');
    }
  });

  it('strata status shows a killed node not live and its replicas missing', async () => {
    c = await startCluster({ nodes: 3, hosts: 1, cluster: 'status' });
    await c.client.createVolume({ name: 's', pageCount: 256, shards: 2, stripePages: 8, replicas: 3 });
    await warmUp(c, 's');
    await until('shard 1 commits', 15_000, async () => (await c!.client.volume('s').write(8, page(2))).lsn);
    c.kill(2); // n3
    // The controller notices the missing heartbeats; every shard keeps (or elects) a leader.
    const reply = await until('n3 not live and every shard led', 30_000, async () => {
      const r = (await c!.client.status()) as unknown as {
        members: Array<{ nodeId: string; live: boolean }>;
        volumes: Array<{ shards: Array<{ state: string; leader?: string }> }>;
      };
      const n3 = r.members.find((m) => m.nodeId === 'n3');
      const led = r.volumes[0]!.shards.every((s) => s.state === 'up' && s.leader !== undefined && s.leader !== 'n3');
      return n3 && !n3.live && led ? r : undefined;
    });

    const text = formatStatus(reply);
    assert.match(text, /^NODES \(3, 1 dead\)$/m);
    // It holds replicas: the controller replaces them once it has been silent 10 minutes (the default).
    assert.match(text, /^ {2}n3 +DEAD .* no heartbeat; replicas replaced in 9m[45]\ds$/m);
    assert.match(text, /^ {2}n1 +up /m);
    for (const shard of [0, 1]) {
      assert.match(text, new RegExp(`^ {4}${shard} +n[12] +\\d+ +\\d+ +\\d+ +2/3 +\\d+ +degraded: n3 missing$`, 'm'), `shard ${shard} row`);
      assert.match(text, new RegExp(`^ {4}${shard} +n3 +- +missing .* node DEAD$`, 'm'), `shard ${shard}: n3 missing`);
    }

    const json = JSON.parse(formatStatusJson(reply)) as {
      members: Array<{ nodeId: string; live: boolean }>;
      nodes: Array<{ node: { id: string } }>;
      volumes: Array<{ shards: Array<{ lag: Record<string, number>; replicas: Array<{ node: string; state: string }> }> }>;
    };
    assert.equal(json.members.find((m) => m.nodeId === 'n3')?.live, false);
    assert.deepEqual(json.nodes.map((n) => n.node.id).sort(), ['n1', 'n2'], 'the killed node does not answer');
    for (const s of json.volumes[0]!.shards) {
      assert.deepEqual(s.replicas.map((r) => r.node).sort(), ['n1', 'n2'], 'n3 reports no replica');
      assert.ok(s.replicas.every((r) => r.state === 'up'));
      assert.ok('n3' in s.lag, 'the leader still counts n3 as a follower');
    }
  });
});
