import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { startTelemetry, type Telemetry } from '../../observability/telemetry';
import { RequestRecorder, REQUEST_DURATION_BUCKETS_S, REQUEST_SERIES_MAX, type StatsSnapshot, type HostSnapshot, type ControllerSnapshot, type MoveTrigger } from '../../observability/metrics';
import { BATCH_OPS_BUCKETS, FSYNC_MS_BUCKETS } from '../../actors/device-queue';
import { LOOP_DELAY_MS_BUCKETS } from '../../observability/loop-delay';
import { freePort } from '../../runtime/free-port';
import { httpGet, samples } from '../support/prometheus';

const PROMTOOL = '/usr/bin/promtool';

const get = httpGet;

/** The value of the first sample `name{labels}`, labels given in any order. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  return samples(text, name, labels)[0];
}

function host(hostId: number, over: Partial<HostSnapshot> = {}): HostSnapshot {
  return {
    hostId,
    restarts: 0,
    mailbox: [{ volumeId: 'v1', shard: hostId, depth: 3, bytes: 12288, rejectedOverloaded: 0 }],
    device: {
      restarts: 0,
      queue: {
        state: 'ok', queueOps: 2, queueBytes: 8192, batches: 3, appendOps: 5, appendBytes: 20480, readOps: 1, readBytes: 4096, tasks: 0, stateSaves: 2, syncs: 3, syncMsSum: 1.5,
        batchOpsHistogram: BATCH_OPS_BUCKETS.map((_, i) => (i === 0 ? 2 : i === 2 ? 1 : 0)),
        syncMsHistogram: FSYNC_MS_BUCKETS.map((_, i) => (i === 3 ? 3 : 0)),
        rejectedNoSpace: 6,
        space: { freeBytes: 3 * 2 ** 30, sizeBytes: 64 * 2 ** 30, reserveBytes: 2 ** 30 },
      },
      slabWarm: { warmedSlots: 512, failures: 1 },
      shards: [{ volumeId: 'v1', shard: hostId, term: 1, appliedLsn: 10, state: 'up', role: 'leader', storage: { logBytes: 65_600, imageBytes: 1_060_864, imagePages: 256 }, cache: { hits: 7, misses: 2, evictions: 0, bytes: 8192 }, elections: 1, preVotes: 3, retriesMatched: 2, retriesUnknown: 5, writeIdsHeld: 9, writeIdsKnownMs: 4500, quiesced: true, checkpoints: 12, checkpointFailures: 3, spaceCheckpoints: 2, spaceCheckpointsSkipped: 1, repairing: true, replicas: [{ replica: 'n2', lagRecords: 4 }] }],
    },
    // 9 ticks on time (under 1 ms late) and one 300 ms late.
    loopDelay: { histogram: LOOP_DELAY_MS_BUCKETS.map((b) => (b === 1 ? 9 : b === 500 ? 1 : 0)), sumMs: 302, recentMaxMs: 300 },
    heartbeats: { messages: 20, entries: 170, declined: 3, pings: 41 },
    ...over,
  };
}

describe('observability/metrics', () => {
  let telemetry: Telemetry | undefined;
  afterEach(async () => {
    await telemetry?.shutdown();
    telemetry = undefined;
  });

  it('RequestRecorder buckets durations, counts errors and stays bounded', () => {
    const r = new RequestRecorder();
    r.requestDuration('shard.write', 'ok', 0.0003);
    r.requestDuration('shard.write', 'ok', 20);
    r.requestDuration('shard.write', 'overloaded', 0.001);
    const s = r.snapshot();
    const ok = s.series.find((x) => x.outcome === 'ok')!;
    assert.equal(ok.count, 2);
    assert.equal(ok.counts[REQUEST_DURATION_BUCKETS_S.indexOf(0.0005)], 1);
    assert.equal(ok.counts[REQUEST_DURATION_BUCKETS_S.length], 1, '+Inf bucket');
    assert.deepEqual(s.errors, [{ code: 'overloaded', count: 1 }]);
    for (let i = 0; i < REQUEST_SERIES_MAX * 2; i++) r.requestDuration(`op${i}`, 'ok', 0.001);
    const big = r.snapshot();
    assert.ok(big.series.length <= REQUEST_SERIES_MAX + 1, String(big.series.length));
    assert.ok(big.series.some((x) => x.operation === 'other'));
  });

  it('the Prometheus endpoint serves values that change as recorded, and promtool accepts the text', async function () {
    this.timeout(20_000);
    const port = await freePort();
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: [], metricsPort: port, metricsHost: '127.0.0.1' });
    await telemetry.ready;
    const m = telemetry.metrics;
    const snapshot: { hosts: HostSnapshot[] } = { hosts: [host(0), host(1, { down: 'host exited', device: undefined, mailbox: [], restarts: 2 })] };
    let calls = 0;
    m.addStatsSource(async (): Promise<StatsSnapshot> => {
      calls++;
      return { node: 'n1', hosts: snapshot.hosts };
    });
    m.requestDuration('page.write', 'ok', 0.002);
    m.requestDuration('page.write', 'ok', 0.004);
    m.requestDuration('page.read', 'not_found', 0.0001);
    await assert.rejects(m.observeRequest('volume.flush', Promise.reject(Object.assign(new Error('x'), { code: 'timeout' }))));

    const first = await get(port, '/metrics');
    assert.equal(first.status, 200);
    const t1 = first.body;
    assert.equal(calls, 1, 'one stats call per scrape');
    const reqLabels = { node: 'n1', host: 'main', operation: 'page.write', outcome: 'ok' };
    assert.equal(sample(t1, 'strata_request_duration_seconds_count', reqLabels), 2);
    assert.equal(sample(t1, 'strata_request_duration_seconds_bucket', { ...reqLabels, le: '0.0025' }), 1);
    assert.equal(sample(t1, 'strata_request_duration_seconds_bucket', { ...reqLabels, le: '+Inf' }), 2);
    assert.equal(sample(t1, 'strata_errors_total', { node: 'n1', host: 'main', code: 'not_found' }), 1);
    assert.equal(sample(t1, 'strata_errors_total', { node: 'n1', host: 'main', code: 'timeout' }), 1);
    assert.equal(sample(t1, 'strata_mailbox_depth', { node: 'n1', volume: 'v1', shard: '0' }), 3);
    assert.equal(sample(t1, 'strata_device_queue_depth', { node: 'n1', host: '0' }), 2);
    assert.equal(sample(t1, 'strata_device_up', { node: 'n1', host: '0' }), 1);
    assert.equal(sample(t1, 'strata_device_up', { node: 'n1', host: '1' }), 0);
    assert.equal(sample(t1, 'strata_cache_warm_slots', { node: 'n1', host: '0' }), 512);
    assert.equal(sample(t1, 'strata_cache_warm_failures_total', { node: 'n1', host: '0' }), 1);
    assert.equal(sample(t1, 'strata_device_written_bytes_total', { node: 'n1', host: '0' }), 20480);
    assert.equal(sample(t1, 'strata_device_read_bytes_total', { node: 'n1', host: '0' }), 4096);
    assert.equal(sample(t1, 'strata_device_free_bytes', { node: 'n1', host: '0' }), 3 * 2 ** 30);
    assert.equal(sample(t1, 'strata_shard_log_bytes', { node: 'n1', volume: 'v1', shard: '0' }), 65_600);
    assert.equal(sample(t1, 'strata_shard_image_bytes', { node: 'n1', volume: 'v1', shard: '0' }), 1_060_864);
    assert.equal(sample(t1, 'strata_shard_image_pages', { node: 'n1', volume: 'v1', shard: '0' }), 256);
    assert.equal(sample(t1, 'strata_device_size_bytes', { node: 'n1', host: '0' }), 64 * 2 ** 30);
    assert.equal(sample(t1, 'strata_device_space_reserve_bytes', { node: 'n1', host: '0' }), 2 ** 30);
    assert.equal(sample(t1, 'strata_device_no_space_refusals_total', { node: 'n1', host: '0' }), 6);
    assert.equal(sample(t1, 'strata_device_batch_ops_count', { node: 'n1', host: '0' }), 3);
    // Every op of the batches: appends, reads, tasks and the terms and votes saved.
    assert.equal(sample(t1, 'strata_device_batch_ops_sum', { node: 'n1', host: '0' }), 5 + 1 + 0 + 2);
    assert.equal(sample(t1, 'strata_device_batch_ops_bucket', { node: 'n1', host: '0', le: '1' }), 2);
    assert.equal(sample(t1, 'strata_device_fsync_duration_seconds_count', { node: 'n1', host: '0' }), 3);
    assert.equal(sample(t1, 'strata_device_fsync_duration_seconds_sum', { node: 'n1', host: '0' }), 0.0015);
    assert.equal(sample(t1, 'strata_device_fsync_duration_seconds_bucket', { node: 'n1', host: '0', le: '0.001' }), 3);
    assert.equal(sample(t1, 'strata_host_event_loop_delay_seconds_count', { node: 'n1', host: '0' }), 10);
    assert.equal(sample(t1, 'strata_host_event_loop_delay_seconds_sum', { node: 'n1', host: '0' }), 0.302);
    assert.equal(sample(t1, 'strata_host_event_loop_delay_seconds_bucket', { node: 'n1', host: '0', le: '0.25' }), 9);
    assert.equal(sample(t1, 'strata_host_event_loop_delay_seconds_bucket', { node: 'n1', host: '0', le: '0.5' }), 10);
    assert.equal(sample(t1, 'strata_cache_hits_total', { node: 'n1', volume: 'v1', shard: '0' }), 7);
    assert.equal(sample(t1, 'strata_shard_commit_lsn', { node: 'n1', volume: 'v1', shard: '0' }), 10);
    assert.equal(sample(t1, 'strata_shard_current_term', { node: 'n1', volume: 'v1', shard: '0' }), 1);
    assert.equal(sample(t1, 'strata_shard_leader', { node: 'n1', volume: 'v1', shard: '0' }), 1);
    assert.equal(sample(t1, 'strata_replica_lag_records', { node: 'n1', volume: 'v1', shard: '0', replica: 'n2' }), 4);
    assert.match(t1, /^# HELP strata_replica_lag_records Records a follower's durable log is behind the leader's last LSN/m, 'what the leader measures its followers\' lag from');
    assert.equal(sample(t1, 'strata_elections_total', { node: 'n1', volume: 'v1', shard: '0' }), 1);
    assert.equal(sample(t1, 'strata_prevotes_total', { node: 'n1', volume: 'v1', shard: '0' }), 3);
    assert.equal(sample(t1, 'strata_write_retries_matched_total', { node: 'n1', volume: 'v1', shard: '0' }), 2);
    assert.equal(sample(t1, 'strata_write_retries_unknown_total', { node: 'n1', volume: 'v1', shard: '0' }), 5);
    assert.equal(sample(t1, 'strata_write_ids', { node: 'n1', volume: 'v1', shard: '0' }), 9);
    assert.equal(sample(t1, 'strata_write_ids_known_seconds', { node: 'n1', volume: 'v1', shard: '0' }), 4.5);
    assert.equal(sample(t1, 'strata_replica_repairing', { node: 'n1', volume: 'v1', shard: '0' }), 1);
    assert.equal(sample(t1, 'strata_actor_restarts_total', { node: 'n1', host: '1', kind: 'host' }), 2);
    assert.equal(sample(t1, 'strata_heartbeat_messages_total', { node: 'n1', host: '0' }), 20);
    assert.equal(sample(t1, 'strata_heartbeat_entries_total', { node: 'n1', host: '0' }), 170);
    assert.equal(sample(t1, 'strata_heartbeats_declined_total', { node: 'n1', host: '0' }), 3);
    assert.equal(sample(t1, 'strata_heartbeat_pings_total', { node: 'n1', host: '0' }), 41);
    assert.equal(sample(t1, 'strata_shard_quiesced', { node: 'n1', volume: 'v1', shard: '0' }), 1);
    assert.equal(sample(t1, 'strata_checkpoints_total', { node: 'n1', volume: 'v1', shard: '0' }), 12);
    assert.equal(sample(t1, 'strata_checkpoint_failures_total', { node: 'n1', volume: 'v1', shard: '0' }), 3);
    assert.equal(sample(t1, 'strata_space_checkpoints_total', { node: 'n1', volume: 'v1', shard: '0' }), 2);
    assert.equal(sample(t1, 'strata_space_checkpoints_skipped_total', { node: 'n1', volume: 'v1', shard: '0' }), 1);
    assert.ok(/^target_info\{.*strata_node_id="n1"/m.test(t1), 'target_info carries the resource');

    // Things change; the next scrape shows it.
    m.requestDuration('page.write', 'ok', 0.002);
    const h0 = snapshot.hosts[0]!;
    // A device failure: counted; its shard is down, with placeholder zeros.
    // Whatever role its stats name, a replica that is down does not lead.
    const downShard = { volumeId: 'v1', shard: 0, term: 0, appliedLsn: 0, commitLsn: 0, state: 'down', role: 'leader', cache: { hits: 0, misses: 0, evictions: 0, bytes: 0 } };
    snapshot.hosts[0] = { ...h0, mailbox: [{ ...h0.mailbox[0]!, depth: 0 }], device: { ...h0.device!, failures: 1, branchCopies: { copied: 3, notCopied: 1 }, shards: [downShard], queue: { ...h0.device!.queue, appendBytes: 40960 } } };
    await new Promise((r) => setTimeout(r, 300)); // past the snapshot reuse window
    const t2 = (await get(port, '/metrics')).body;
    assert.equal(sample(t2, 'strata_request_duration_seconds_count', reqLabels), 3);
    assert.equal(sample(t2, 'strata_mailbox_depth', { node: 'n1', volume: 'v1', shard: '0' }), 0);
    assert.equal(sample(t2, 'strata_device_written_bytes_total', { node: 'n1', host: '0' }), 40960);
    assert.equal(sample(t2, 'strata_device_failures_total', { node: 'n1', host: '0' }), 1);
    assert.equal(sample(t2, 'strata_branch_copies_total', { node: 'n1', host: '0', outcome: 'copied' }), 3);
    assert.equal(sample(t2, 'strata_branch_copies_total', { node: 'n1', host: '0', outcome: 'not_copied' }), 1);
    const shard0 = { node: 'n1', volume: 'v1', shard: '0' };
    assert.equal(sample(t2, 'strata_shard_up', shard0), 0);
    assert.equal(sample(t2, 'strata_shard_leader', shard0), 0, 'a replica that is down counts as not leading');
    // Not the placeholder zeros of a shard that is down, nor its last values: none.
    for (const name of ['strata_shard_commit_lsn', 'strata_shard_applied_lsn', 'strata_shard_current_term', 'strata_cache_bytes', 'strata_cache_hits_total', 'strata_elections_total']) {
      assert.equal(sample(t2, name, shard0), undefined, name);
    }
    assert.equal((await get(port, '/other')).status, 404);

    if (!fs.existsSync(PROMTOOL)) {
      console.log(`      (skipped promtool check: ${PROMTOOL} not found; install Debian's prometheus package)`);
      return;
    }
    const check = spawnSync(PROMTOOL, ['check', 'metrics'], { input: t2, encoding: 'utf8', timeout: 10_000 });
    assert.equal(check.status, 0, `promtool check metrics:\n${check.stdout}\n${check.stderr}\n---\n${t2}`);
  });

  it('a shard deleted or moved away, and a host down, report no series any more (not their last values)', async function () {
    this.timeout(20_000);
    const port = await freePort();
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: [], metricsPort: port, metricsHost: '127.0.0.1' });
    await telemetry.ready;
    const hosts: HostSnapshot[] = [host(0), host(1)];
    telemetry.metrics.addStatsSource(() => ({ node: 'n1', hosts }));
    const shard = (n: number): Record<string, string> => ({ node: 'n1', volume: 'v1', shard: String(n) });
    const perShard = ['strata_shard_up', 'strata_shard_commit_lsn', 'strata_shard_applied_lsn', 'strata_shard_current_term', 'strata_cache_hits_total', 'strata_cache_bytes', 'strata_elections_total', 'strata_prevotes_total', 'strata_replica_repairing', 'strata_write_retries_matched_total', 'strata_mailbox_depth'];
    const t1 = (await get(port, '/metrics')).body;
    for (const name of perShard) {
      assert.notEqual(sample(t1, name, shard(0)), undefined, name);
      assert.notEqual(sample(t1, name, shard(1)), undefined, name);
    }
    assert.equal(sample(t1, 'strata_replica_lag_records', { ...shard(1), replica: 'n2' }), 4);
    assert.equal(sample(t1, 'strata_device_queue_depth', { node: 'n1', host: '1' }), 2);

    // Host 0's shard is deleted (or moved to another node); host 1 goes down.
    hosts[0] = host(0, { mailbox: [], device: { ...host(0).device!, shards: [] } });
    hosts[1] = host(1, { down: 'host exited', device: undefined, mailbox: [], restarts: 1 });
    await new Promise((r) => setTimeout(r, 300)); // past the snapshot reuse window
    const t2 = (await get(port, '/metrics')).body;
    for (const name of perShard) {
      assert.equal(sample(t2, name, shard(0)), undefined, `${name} of a shard no longer on the node`);
      assert.equal(sample(t2, name, shard(1)), undefined, `${name} of a shard on a host that is down`);
    }
    assert.equal(sample(t2, 'strata_replica_lag_records', { ...shard(1), replica: 'n2' }), undefined);
    for (const name of ['strata_device_queue_depth', 'strata_device_written_bytes_total', 'strata_cache_warm_slots']) {
      assert.equal(sample(t2, name, { node: 'n1', host: '1' }), undefined, `${name} of a host that is down`);
      assert.notEqual(sample(t2, name, { node: 'n1', host: '0' }), undefined, `${name} of a host that is up`);
    }
    assert.equal(sample(t2, 'strata_device_up', { node: 'n1', host: '1' }), 0);
    assert.equal(sample(t2, 'strata_actor_restarts_total', { node: 'n1', host: '1', kind: 'host' }), 1);
    if (fs.existsSync(PROMTOOL)) {
      const check = spawnSync(PROMTOOL, ['check', 'metrics'], { input: t2, encoding: 'utf8', timeout: 10_000 });
      assert.equal(check.status, 0, `promtool check metrics:\n${check.stdout}\n${check.stderr}\n---\n${t2}`);
    }
  });

  it("the controller's view: nodes by state, shards under-replicated, moves by trigger and outcome (bounded), moves running, repairs backing off", async function () {
    this.timeout(20_000);
    const port = await freePort();
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: [], metricsPort: port, metricsHost: '127.0.0.1' });
    await telemetry.ready;
    const m = telemetry.metrics;
    const controller: ControllerSnapshot = {
      nodesLive: 3,
      nodesDead: 1,
      shardsUnderReplicated: 2,
      movesRunning: 1,
      repairsBackingOff: 1,
      nodesDraining: 2,
      rebalancing: true,
      term: 7,
      moves: [
        { trigger: 'operator', outcome: 'done', count: 4 },
        { trigger: 'repair', outcome: 'done', count: 2 },
        { trigger: 'repair', outcome: 'timeout', count: 3 },
        // Not error codes: folded into one `error` series, summed.
        { trigger: 'repair', outcome: 'something else', count: 1 },
        { trigger: 'repair', outcome: 'x'.repeat(200), count: 2 },
        // Not a trigger: left out.
        { trigger: 'cron' as MoveTrigger, outcome: 'done', count: 9 },
      ],
      controllerNodes: { live: 2, dead: 1 },
      controllerNodeChanges: [
        { trigger: 'operator', outcome: 'done', count: 2 },
        { trigger: 'repair', outcome: 'done', count: 1 },
        { trigger: 'repair', outcome: 'unavailable', count: 4 },
        { trigger: 'repair', outcome: 'not a code', count: 1 },
      ],
    };
    let runsController = true;
    m.addStatsSource(() => ({ node: 'n1', hosts: [], ...(runsController ? { controller } : {}) }));
    // Another node: no controller, no controller series; its API router sent 5 catalog changes
    // again to a new controller.
    m.addStatsSource(() => ({ node: 'n2', hosts: [host(0)], catalogChangesSentAgain: 5, start: { shards: 600, shardsFailed: 2, shardsOpenMs: 1250, startMs: 2600 } }));
    const text = (await get(port, '/metrics')).body;
    assert.equal(sample(text, 'strata_catalog_changes_sent_again_total', { node: 'n2' }), 5);
    // What its start did; n1 says nothing of its start, and has no such series.
    assert.equal(sample(text, 'strata_node_start_seconds', { node: 'n2' }), 2.6);
    assert.equal(sample(text, 'strata_node_start_opens_seconds', { node: 'n2' }), 1.25);
    assert.equal(sample(text, 'strata_node_start_replicas', { node: 'n2' }), 600);
    assert.equal(sample(text, 'strata_node_start_replicas_failed', { node: 'n2' }), 2);
    assert.equal(sample(text, 'strata_node_start_seconds', { node: 'n1' }), undefined);
    assert.equal(sample(text, 'strata_catalog_changes_sent_again_total', { node: 'n1' }), undefined, 'a source that does not report it has no series');
    assert.equal(sample(text, 'strata_controller_nodes', { node: 'n1', state: 'live' }), 3);
    assert.equal(sample(text, 'strata_controller_nodes', { node: 'n1', state: 'dead' }), 1);
    assert.equal(sample(text, 'strata_shards_under_replicated', { node: 'n1' }), 2);
    assert.equal(sample(text, 'strata_replica_moves_running', { node: 'n1' }), 1);
    assert.equal(sample(text, 'strata_replica_repairs_backing_off', { node: 'n1' }), 1);
    assert.equal(sample(text, 'strata_controller_nodes_draining', { node: 'n1' }), 2);
    assert.equal(sample(text, 'strata_controller_rebalancing', { node: 'n1' }), 1);
    assert.equal(sample(text, 'strata_controller_term', { node: 'n1' }), 7);
    assert.equal(sample(text, 'strata_replica_moves_total', { node: 'n1', trigger: 'operator', outcome: 'done' }), 4);
    assert.equal(sample(text, 'strata_replica_moves_total', { node: 'n1', trigger: 'repair', outcome: 'done' }), 2);
    assert.equal(sample(text, 'strata_replica_moves_total', { node: 'n1', trigger: 'repair', outcome: 'timeout' }), 3);
    assert.equal(sample(text, 'strata_replica_moves_total', { node: 'n1', trigger: 'repair', outcome: 'error' }), 3);
    assert.equal(sample(text, 'strata_catalog_nodes', { node: 'n1', state: 'live' }), 2);
    assert.equal(sample(text, 'strata_catalog_nodes', { node: 'n1', state: 'dead' }), 1);
    assert.equal(sample(text, 'strata_controller_node_changes_total', { node: 'n1', trigger: 'operator', outcome: 'done' }), 2);
    assert.equal(sample(text, 'strata_controller_node_changes_total', { node: 'n1', trigger: 'repair', outcome: 'done' }), 1);
    assert.equal(sample(text, 'strata_controller_node_changes_total', { node: 'n1', trigger: 'repair', outcome: 'unavailable' }), 4);
    assert.equal(sample(text, 'strata_controller_node_changes_total', { node: 'n1', trigger: 'repair', outcome: 'error' }), 1);
    const moveLines = text.split('\n').filter((l) => l.startsWith('strata_replica_moves_total{'));
    assert.equal(moveLines.length, 4, moveLines.join('\n'));
    for (const name of ['strata_controller_nodes', 'strata_shards_under_replicated', 'strata_replica_moves_total', 'strata_replica_moves_running', 'strata_replica_repairs_backing_off', 'strata_controller_nodes_draining', 'strata_controller_rebalancing', 'strata_controller_term', 'strata_catalog_nodes', 'strata_controller_node_changes_total']) {
      assert.equal(sample(text, name, { node: 'n2' }), undefined, `${name} of a node without the controller`);
    }

    // The repair is done: the next scrape shows it.
    controller.nodesDead = 0;
    controller.nodesLive = 4;
    controller.shardsUnderReplicated = 0;
    controller.movesRunning = 0;
    controller.repairsBackingOff = 0;
    controller.nodesDraining = 0;
    controller.rebalancing = false;
    // A controller that keeps the catalog alone has no term, and no controller nodes: no series.
    delete controller.term;
    delete controller.controllerNodes;
    controller.moves = [{ trigger: 'operator', outcome: 'done', count: 4 }, { trigger: 'repair', outcome: 'done', count: 3 }, { trigger: 'repair', outcome: 'timeout', count: 3 }];
    await new Promise((r) => setTimeout(r, 300)); // past the snapshot reuse window
    const t2 = (await get(port, '/metrics')).body;
    assert.equal(sample(t2, 'strata_controller_nodes', { node: 'n1', state: 'dead' }), 0);
    assert.equal(sample(t2, 'strata_shards_under_replicated', { node: 'n1' }), 0);
    assert.equal(sample(t2, 'strata_replica_moves_total', { node: 'n1', trigger: 'repair', outcome: 'done' }), 3);
    assert.equal(sample(t2, 'strata_replica_moves_running', { node: 'n1' }), 0);
    assert.equal(sample(t2, 'strata_replica_repairs_backing_off', { node: 'n1' }), 0);
    assert.equal(sample(t2, 'strata_controller_nodes_draining', { node: 'n1' }), 0);
    assert.equal(sample(t2, 'strata_controller_rebalancing', { node: 'n1' }), 0);
    assert.equal(sample(t2, 'strata_controller_term', { node: 'n1' }), undefined);
    assert.equal(sample(t2, 'strata_catalog_nodes', { node: 'n1', state: 'live' }), undefined);

    // n1 no longer runs the controller (a replicated controller's seat moved to another node):
    // none of its series are reported any more, not their last values.
    runsController = false;
    await new Promise((r) => setTimeout(r, 300));
    const t3 = (await get(port, '/metrics')).body;
    for (const name of ['strata_controller_nodes', 'strata_shards_under_replicated', 'strata_replica_moves_total', 'strata_replica_moves_running', 'strata_replica_repairs_backing_off', 'strata_controller_nodes_draining', 'strata_controller_rebalancing']) {
      assert.equal(sample(t3, name, { node: 'n1' }), undefined, `${name} of a node that no longer runs the controller`);
    }
    if (!fs.existsSync(PROMTOOL)) {
      console.log(`      (skipped promtool check: ${PROMTOOL} not found; install Debian's prometheus package)`);
      return;
    }
    const check = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 10_000 });
    assert.equal(check.status, 0, `promtool check metrics:\n${check.stdout}\n${check.stderr}\n---\n${text}`);
  });

  it('OTEL_SDK_DISABLED=true: no span is recorded and no metrics endpoint listens, whatever the options say', async () => {
    const port = await freePort();
    process.env.OTEL_SDK_DISABLED = 'true';
    try {
      telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: ['memory'], sampling: 'always', metricsPort: port, metricsHost: '127.0.0.1' });
    } finally {
      delete process.env.OTEL_SDK_DISABLED;
    }
    await telemetry.ready;
    assert.equal(telemetry.sampling, 'off');
    assert.equal(telemetry.memoryExporter, undefined);
    await assert.rejects(get(port, '/metrics'), (e: NodeJS.ErrnoException) => e.code === 'ECONNREFUSED');
  });

  it('a stats source that fails leaves only its own metrics out', async function () {
    this.timeout(10_000);
    const port = await freePort();
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: [], metricsPort: port, metricsHost: '127.0.0.1' });
    await telemetry.ready;
    const m = telemetry.metrics;
    m.addStatsSource(() => Promise.reject(new Error('host gone')));
    m.addStatsSource(() => ({ node: 'n2', hosts: [host(0)] }));
    const text = (await get(port, '/metrics')).body;
    assert.equal(sample(text, 'strata_mailbox_depth', { node: 'n2', volume: 'v1', shard: '0' }), 3);
    assert.equal(sample(text, 'strata_mailbox_depth', { node: 'n1' }), undefined);
  });

  it('metrics port 0 serves nothing and recording is still safe', async () => {
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: [], metricsPort: 0 });
    await telemetry.ready;
    assert.equal(telemetry.metricsPort, 0);
    telemetry.metrics.requestDuration('page.write', 'ok', 0.001);
    telemetry.metrics.errors('internal');
  });

  it('one telemetry per process', async () => {
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: [], metricsPort: 0 });
    assert.throws(() => startTelemetry({ nodeId: 'n2', cluster: 'test', metricsPort: 0 }), /already started/);
  });
});
