/**
 * Metrics of a Strata node.
 *
 * Two sources feed them, so that the hot path changes little:
 * - **Stats snapshots** pulled at every scrape from `statsSource()` callbacks that return the
 *   stats objects the node already keeps (HostPool.stats(): each host's mailboxes, DeviceQueue
 *   stats, shard stats). A MetricProducer turns each collection's snapshots into gauges and
 *   counters, and passes the DeviceQueue's own pre-bucketed histograms (batch size, fdatasync
 *   latency) on exactly, bucket for bucket. Only what the snapshots hold now is reported: the
 *   series of a shard deleted or moved away, of a host down, or of a node that stopped running
 *   the controller end with it (OpenTelemetry's observable instruments would report a series'
 *   last value for ever once seen).
 * - **Request recorders**: a `RequestRecorder` counts request durations (fixed buckets) and
 *   errors by code. It has no OpenTelemetry dependency and costs a few array writes per request,
 *   so it runs anywhere: actor hosts on worker threads keep one and return its `snapshot()` with
 *   their stats (field `requests`); the main thread's recorder is `StrataMetrics.requestDuration`.
 *
 * Everything is bounded: label values per label, series per metric and recorder series are
 * capped; what exceeds a cap is folded into `other` or left out (see the constants below).
 * Names follow Prometheus conventions; the exporter appends `_total` to counters.
 */
import { ValueType, type Attributes, type HrTime } from '@opentelemetry/api';
import { emptyResource } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  DataPointType,
  type CollectionResult,
  type DataPoint,
  type Histogram,
  type MetricData,
  type MetricProducer,
} from '@opentelemetry/sdk-metrics';
import { BATCH_OPS_BUCKETS, FSYNC_MS_BUCKETS } from '../actors/device-queue';
import { isErrorCode } from '../messages/errors';
import { LOOP_DELAY_MS_BUCKETS, type LoopDelayStats } from './loop-delay';
import { REQUEST_DURATION_BUCKETS_S, RequestRecorder, cleanLabel, type RequestStatsSnapshot } from './request-recorder';

export {
  ERROR_CODES_MAX,
  LABEL_LENGTH_MAX,
  REQUEST_DURATION_BUCKETS_S,
  REQUEST_SERIES_MAX,
  RequestRecorder,
  type RequestSeriesSnapshot,
  type RequestStatsSnapshot,
} from './request-recorder';

/** Series one metric reports per scrape at most (per-shard metrics on a big node). */
export const SERIES_PER_METRIC_MAX = 1500;
/** Stats sources registered at most (one per node of the process). */
export const STATS_SOURCES_MAX = 64;
/** A stats source that does not answer within this long is left out of the scrape. */
export const STATS_TIMEOUT_MS_DEFAULT = 2000;
/** A snapshot is reused for this long, so one scrape asks each source once. */
const SNAPSHOT_REUSE_MS = 250;

// ---------------------------------------------------------------------------------------------
// Snapshot shapes (structural: HostPool.stats() and its parts fit)
// ---------------------------------------------------------------------------------------------

/** One shard mailbox of an actor host (runtime/actor-host.ts MailboxStats fits). */
export interface MailboxSnapshot {
  volumeId: string;
  shard: number;
  /** Requests admitted and not yet answered. */
  depth: number;
  bytes?: number;
  rejectedOverloaded?: number;
}

/** A DeviceQueue's stats (actors/device-queue.ts DeviceQueueStats fits). */
export interface DeviceQueueSnapshot {
  state: string;
  queueOps: number;
  queueBytes: number;
  batches: number;
  appendOps: number;
  appendBytes: number;
  readOps: number;
  readBytes: number;
  tasks: number;
  syncs: number;
  syncMsSum: number;
  /** Counts per BATCH_OPS_BUCKETS bucket. */
  batchOpsHistogram: readonly number[];
  /** Counts per FSYNC_MS_BUCKETS bucket. */
  syncMsHistogram: readonly number[];
  /** Page writes and appends of page writes refused for want of space. */
  rejectedNoSpace?: number;
  /** Terms and votes saved in the device's hard-state journal, and the batches (one write and fdatasync each) they took. */
  stateSaves?: number;
  stateBatches?: number;
  /** The device's filesystem: free and total bytes, and the reserve the device keeps. */
  space?: { freeBytes: number; sizeBytes: number; reserveBytes: number };
}

/** One shard's stats (ShardActorStats + state fits; the optional fields come with later work). */
export interface ShardSnapshot {
  volumeId: string;
  shard: number;
  term: number;
  appliedLsn: number;
  /** Highest LSN known committed; default appliedLsn. */
  commitLsn?: number;
  state?: string;
  /** The replica's role (ReplicaStats.role): `leader` while it leads its shard. */
  role?: string;
  /** The shard's page cache (PageStore.stats().cache). */
  cache?: { hits: number; misses: number; evictions: number; damaged?: number; bytes: number };
  /** Elections this shard's actor started (cumulative). */
  elections?: number;
  /** Prevote rounds this shard's actor started (cumulative); an election follows only a won one. */
  preVotes?: number;
  /** Leaderships this replica handed over to a follower that took them (cumulative; Replica.transferLeadership). */
  handovers?: number;
  /** True while the replica's log, found damaged at open, is being given its lost records back. */
  repairing?: boolean;
  /** Retried writes a shard leader answered with an earlier attempt's record instead of writing them again (cumulative). */
  retriesMatched?: number;
  /** Tries of a write sent again that a shard leader answered as of unknown outcome: it could not tell them from new writes (cumulative). */
  retriesUnknown?: number;
  /** Write ids the replica remembers (actors/replica.ts ReplicaStats.writeIdsHeld). */
  writeIdsHeld?: number;
  /** How far back the replica knows every write id of its log, ms (ReplicaStats.writeIdsKnownMs). */
  writeIdsKnownMs?: number;
  /** True while the replica is quiesced (ReplicaStats.quiesced: an idle shard, docs/replication.md "Idle shards"). */
  quiesced?: boolean;
  /** Checkpoints the replica made, and those that failed (ReplicaStats.checkpoints, checkpointFailures; cumulative). */
  checkpoints?: number;
  checkpointFailures?: number;
  /** Checkpoints the replica's device being short of space started, and those it did not start for want of room (ReplicaStats.spaceCheckpoints, spaceCheckpointsSkipped; cumulative). */
  spaceCheckpoints?: number;
  spaceCheckpointsSkipped?: number;
  /** How far each replica's log is behind, in records (list form). */
  replicas?: ReadonlyArray<{ replica: string; lagRecords: number }>;
  /**
   * How far each follower's durable log is behind the leader's last LSN, in records, by replica
   * node id (actors/replica.ts ReplicaStats.lag: reported by the leader only).
   */
  lag?: Readonly<Record<string, number>>;
  /** The replica's files (actors/replica.ts ReplicaStats.storage). */
  storage?: { logBytes: number; imageBytes: number; imagePages: number };
}

/** One actor host (an element of HostPool.stats() fits). */
export interface HostSnapshot {
  hostId: number;
  /** Times the host thread was restarted. */
  restarts?: number;
  /** Why the host is down, when it is. */
  down?: string;
  mailbox: readonly MailboxSnapshot[];
  device?:
    | {
        queue: DeviceQueueSnapshot;
        restarts: number;
        /** Times the device failed (a write or fdatasync) and its replicas were reopened. */
        failures?: number;
        damageReopens?: number;
        scrub?: { bytes: number; passes: number; damage: number };
        discardFailures?: number;
        /** New replicas of branches that copied their parent's pages on this device, and that could not. */
        branchCopies?: { copied: number; notCopied: number };
        /** The page caches' slab memory made resident ahead of use (runtime/slab-warmer.ts). */
        slabWarm?: { warmedSlots: number; failures: number } | undefined;
        shards: readonly ShardSnapshot[];
      }
    | undefined;
  /** The host's RequestRecorder snapshot. */
  requests?: RequestStatsSnapshot;
  /** How late the host's tick ran (LoopDelay). */
  loopDelay?: LoopDelayStats;
  /** The heartbeats it sent per pair of nodes (runtime/heartbeat-batcher.ts HeartbeatStats fits). */
  heartbeats?: { messages: number; entries: number; declined: number; pings?: number };
}

/** What a move of a replica was started by: an operator's request, or the controller's repair of a dead node's replicas. */
export const MOVE_TRIGGERS = ['operator', 'repair'] as const;
export type MoveTrigger = (typeof MOVE_TRIGGERS)[number];

/** A count of runs (moves, changes of the controller nodes) that ended, by trigger and outcome. */
export interface OutcomeCount {
  trigger: MoveTrigger;
  outcome: string;
  count: number;
}

/**
 * Runs that ended, counted by trigger and outcome (`done`, or an error code; the metrics fold
 * any other outcome into `error`). `done` is there from the start, so that its series start at 0.
 */
export class OutcomeCounts {
  private readonly byTrigger: Record<MoveTrigger, Map<string, number>> = { operator: new Map([['done', 0]]), repair: new Map([['done', 0]]) };

  count(trigger: MoveTrigger, outcome: string): void {
    const m = this.byTrigger[trigger];
    m.set(outcome, (m.get(outcome) ?? 0) + 1);
  }

  snapshot(): OutcomeCount[] {
    return MOVE_TRIGGERS.flatMap((trigger) => [...this.byTrigger[trigger]].map(([outcome, count]) => ({ trigger, outcome, count })));
  }
}

/**
 * Counts by trigger and outcome with bounded labels: a trigger of MOVE_TRIGGERS (others left
 * out), an outcome `done`, an error code, or else `error` (those summed: one point per series).
 */
function foldOutcomes(counts: readonly OutcomeCount[]): OutcomeCount[] {
  const out = new Map<string, OutcomeCount>();
  for (const m of counts) {
    if (!MOVE_TRIGGERS.includes(m.trigger)) continue;
    const outcome = m.outcome === 'done' || isErrorCode(m.outcome) ? m.outcome : 'error';
    const key = `${m.trigger} ${outcome}`;
    out.set(key, { trigger: m.trigger, outcome, count: (out.get(key)?.count ?? 0) + m.count });
  }
  return [...out.values()];
}

/** Help texts of the metrics reported under several label sets. */
const RESTARTS_HELP = 'Restarts of actor hosts (kind=host) and of shard actors from durable state (kind=shard).';
const BRANCH_COPIES_HELP = 'New replicas of branches that copied their parent\'s pages on this device (outcome copied), and that could not and were sent the shard by a peer instead (outcome not_copied).';
const REPLICA_LAG_HELP = 'Records a follower\'s durable log is behind the leader\'s last LSN (reported by the leader).';
/** The controller's view of the cluster (cluster/node.ts): reported by the node that runs it only. */
const CONTROLLER_NODES_HELP = 'Nodes the controller knows, by state: live (heard from within the live window) or dead (members not live, and nodes the catalog places replicas on that it has not heard from since it started).';

export interface ControllerSnapshot {
  /** Members heard from within the live window. */
  nodesLive: number;
  /** Members not live, and nodes the catalog places replicas on that the controller has not heard from. */
  nodesDead: number;
  /** Shards of the catalog with at least one replica on a node that is not live. */
  shardsUnderReplicated: number;
  /** Moves of replicas the controller runs now. */
  movesRunning: number;
  /** Shards whose last repair failed and that wait for their back-off. */
  repairsBackingOff: number;
  /** Nodes an operator marked draining (strata drain). */
  nodesDraining: number;
  /** A rebalance an operator asked for is under way (strata rebalance). */
  rebalancing: boolean;
  /** A replicated controller: the term of the catalog shard it runs in (a takeover raises it). */
  term?: number;
  /**
   * Runs of moves the controller ended (cumulative), by trigger and outcome: `done` or the
   * protocol error code of the failure (another outcome is reported as `error`).
   */
  moves: readonly OutcomeCount[];
  /** A replicated controller: its controller nodes (the catalog shard's set in force), live and not. */
  controllerNodes?: { live: number; dead: number };
  /**
   * Changes of the controller nodes this controller ended (cumulative), by trigger (an operator's
   * `strata controllers`, or the controller's own replacement of a dead or draining one) and
   * outcome, as `moves`.
   */
  controllerNodeChanges?: readonly OutcomeCount[];
}

/** What a stats source returns: one node's hosts. */
export interface StatsSnapshot {
  node: string;
  hosts: readonly HostSnapshot[];
  /** The node's main-thread requests (its API service), labelled host="main". */
  requests?: RequestStatsSnapshot;
  /**
   * Catalog changes the node's API router sent again to a controller that took its seat while
   * it waited for their answer (cumulative since the node started).
   */
  catalogChangesSentAgain?: number;
  /** The controller's view, from the node that runs the controller only. */
  controller?: ControllerSnapshot;
  /** What the node's start did (StrataNode.startInfo). */
  start?: NodeStartInfo;
}

/**
 * What a node's start did: the replicas it had before (its record of them) that it opened again
 * before it served anyone, those of them whose open failed (each left to the host pool's retries),
 * how long those opens took, and the whole start (to the first reconciliation done).
 */
export interface NodeStartInfo {
  shards: number;
  shardsFailed: number;
  shardsOpenMs: number;
  startMs: number;
}

export type StatsSource = () => StatsSnapshot | Promise<StatsSnapshot>;

// ---------------------------------------------------------------------------------------------
// StrataMetrics
// ---------------------------------------------------------------------------------------------

/** Options of `StrataMetrics`. */
export interface StrataMetricsOptions {
  /** Node id used as the `node` label of this thread's own requests. */
  nodeId: string;
  /** Bound on one stats source call; default STATS_TIMEOUT_MS_DEFAULT. */
  statsTimeoutMs?: number;
}

type Ms = number;

function hrTime(ms: Ms): [number, number] {
  const s = Math.floor(ms / 1000);
  return [s, Math.round((ms - s * 1000) * 1e6)];
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`stats source did not answer within ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Counts of a bucketed histogram whose last bucket is +Inf, as OpenTelemetry boundaries + counts. */
function bucketsOf(bounds: readonly number[], counts: readonly number[], scale: number): { boundaries: number[]; counts: number[]; count: number } {
  const boundaries = bounds.filter((b) => Number.isFinite(b)).map((b) => b * scale);
  const out = new Array<number>(boundaries.length + 1).fill(0);
  let count = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i] ?? 0;
    out[Math.min(i, boundaries.length)]! += c;
    count += c;
  }
  return { boundaries, counts: out, count };
}

interface SourceEntry {
  source: StatsSource;
  addedMs: Ms;
}

/** A gauge (a value now) or a counter (cumulative since its source started; `_total` appended). */
type SeriesKind = 'gauge' | 'counter';

/**
 * The gauges and counters of one collection, built from that collection's snapshots only: a
 * series whose source is gone (a shard deleted or moved away, a host down, a node that no longer
 * runs the controller, a stats source that did not answer) is not reported, rather than its last
 * value for ever. Each metric reports at most SERIES_PER_METRIC_MAX series; non-finite values are
 * left out.
 */
class SeriesSet {
  private readonly metrics = new Map<string, { kind: SeriesKind; description: string; unit: string; points: DataPoint<number>[] }>();

  constructor(
    private readonly startTime: HrTime,
    private readonly endTime: HrTime,
  ) {}

  gauge(name: string, description: string, value: number, attributes: Attributes, unit = ''): void {
    this.add('gauge', name, description, unit, value, attributes);
  }

  counter(name: string, description: string, value: number, attributes: Attributes, unit = ''): void {
    this.add('counter', name, description, unit, value, attributes);
  }

  metricData(): MetricData[] {
    return [...this.metrics].map(([name, m]): MetricData =>
      m.kind === 'gauge'
        ? { descriptor: { name, description: m.description, unit: m.unit, valueType: ValueType.DOUBLE }, aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPointType: DataPointType.GAUGE, dataPoints: m.points }
        : { descriptor: { name, description: m.description, unit: m.unit, valueType: ValueType.INT }, aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPointType: DataPointType.SUM, isMonotonic: true, dataPoints: m.points },
    );
  }

  private add(kind: SeriesKind, name: string, description: string, unit: string, value: number, attributes: Attributes): void {
    if (!Number.isFinite(value)) return;
    let m = this.metrics.get(name);
    if (m === undefined) {
      m = { kind, description, unit, points: [] };
      this.metrics.set(name, m);
    }
    if (m.points.length < SERIES_PER_METRIC_MAX) m.points.push({ startTime: this.startTime, endTime: this.endTime, attributes, value });
  }
}

/**
 * The metrics of one process (one Strata node, or every node of an in-process cluster).
 *
 * ```ts
 * const m = telemetry.metrics;
 * const remove = m.addStatsSource(async () => ({ node: nodeId, hosts: await pool.stats() }));
 * m.requestDuration('page.write', 'ok', 0.0012);
 * ```
 */
export class StrataMetrics {
  /** Pass to every MetricReader (`metricProducers`): it yields every Strata metric at each collection. */
  readonly producer: MetricProducer;
  private readonly nodeId: string;
  private readonly statsTimeoutMs: number;
  private readonly recorder = new RequestRecorder();
  private readonly startedMs: Ms = Date.now();
  private readonly sources: SourceEntry[] = [];
  private cached: { atMs: Ms; snapshots: Promise<StatsSnapshot[]> } | undefined;
  private closed = false;

  constructor(opts: StrataMetricsOptions) {
    this.nodeId = opts.nodeId;
    this.statsTimeoutMs = opts.statsTimeoutMs ?? STATS_TIMEOUT_MS_DEFAULT;
    this.producer = { collect: () => this.collectProduced() };
  }

  /**
   * Registers a stats source (one per node); returns a function that removes it. The source is
   * called at most once per scrape, bounded by statsTimeoutMs.
   */
  addStatsSource(source: StatsSource): () => void {
    if (this.sources.length >= STATS_SOURCES_MAX) throw new Error(`at most ${STATS_SOURCES_MAX} stats sources`);
    const entry: SourceEntry = { source, addedMs: Date.now() };
    this.sources.push(entry);
    this.cached = undefined;
    return () => {
      const i = this.sources.indexOf(entry);
      if (i >= 0) this.sources.splice(i, 1);
      this.cached = undefined;
    };
  }

  /** Records one request handled on this thread: `outcome` is 'ok' or its error code. */
  requestDuration(operation: string, outcome: string, seconds: number): void {
    this.recorder.requestDuration(operation, outcome, seconds);
  }

  /** Counts one error with its protocol code (request errors are counted by requestDuration). */
  errors(code: string): void {
    this.recorder.errors(code);
  }

  /** Awaits a request and records its duration and outcome (see RequestRecorder.observe). */
  observeRequest<T>(operation: string, request: Promise<T>): Promise<T> {
    return this.recorder.observe(operation, request);
  }

  /** Stops observing: later collections report nothing. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sources.length = 0;
    this.cached = undefined;
  }

  // -------------------------------------------------------------------------------------------

  private snapshots(): Promise<StatsSnapshot[]> {
    const now = Date.now();
    if (this.cached && now - this.cached.atMs < SNAPSHOT_REUSE_MS) return this.cached.snapshots;
    const snapshots = Promise.all(
      this.sources.map((e) =>
        withTimeout(Promise.resolve().then(e.source), this.statsTimeoutMs).then(
          (s) => [s],
          () => [] as StatsSnapshot[],
        ),
      ),
    ).then((all) => all.flat());
    this.cached = { atMs: now, snapshots };
    return snapshots;
  }

  /** One node's hosts, devices and shards. */
  private nodeSeries(out: SeriesSet, snap: StatsSnapshot): void {
    const node = cleanLabel(snap.node);
    if (snap.catalogChangesSentAgain !== undefined) {
      out.counter('strata_catalog_changes_sent_again', 'Catalog changes (with a request id) this node\'s API router sent again to a controller that took its seat while it waited for their answer: the controller before may have died with them.', snap.catalogChangesSentAgain, { node });
    }
    if (snap.start !== undefined) {
      const st = snap.start;
      out.gauge('strata_node_start_seconds', 'How long the node\'s start took, to its first reconciliation with the catalog.', st.startMs / 1000, { node }, 's');
      out.gauge('strata_node_start_opens_seconds', 'How long the node\'s start took to open again the replicas of its record, before it served anyone.', st.shardsOpenMs / 1000, { node }, 's');
      out.gauge('strata_node_start_replicas', 'Replicas of its record the node opened again as it started.', st.shards, { node });
      out.gauge('strata_node_start_replicas_failed', 'Replicas of its record whose open failed as the node started (each tried again by its host).', st.shardsFailed, { node });
    }
    for (const h of snap.hosts) {
      const host = String(h.hostId);
      const hostAttrs = { node, host };
      out.counter('strata_actor_restarts', RESTARTS_HELP, h.restarts ?? 0, { ...hostAttrs, kind: 'host' });
      if (h.heartbeats !== undefined) {
        out.counter('strata_heartbeat_messages', 'Heartbeats messages a host sent: the appends without records of its shards to one node, made in one turn, in one message.', h.heartbeats.messages, hostAttrs);
        out.counter('strata_heartbeat_entries', 'Appends without records (heartbeats, probes, quorum rounds) a host sent in heartbeats messages; entries per message is how well they are coalesced.', h.heartbeats.entries, hostAttrs);
        out.counter('strata_heartbeats_declined', 'Appends without records a host sent on the replica\'s own subject instead of in a heartbeats message (a node that takes none, for 10 s after no responders; too many messages waiting).', h.heartbeats.declined, hostAttrs);
        if (h.heartbeats.pings !== undefined) out.counter('strata_heartbeat_pings', 'Pings a host sent to the nodes its replicas\' peers are on, one each per heartbeat period: how followers of a quiesced leader know its node is up.', h.heartbeats.pings, hostAttrs);
      }
      const dev = h.device;
      out.gauge('strata_device_up', '1 when the host and its device serve requests, 0 when down or failed.', h.down === undefined && dev !== undefined && dev.queue.state === 'ok' ? 1 : 0, hostAttrs);
      for (const mb of h.mailbox) {
        const a = { node, volume: cleanLabel(mb.volumeId), shard: String(mb.shard) };
        out.gauge('strata_mailbox_depth', 'Requests admitted to a shard mailbox and not yet answered.', mb.depth, a);
        if (mb.bytes !== undefined) out.gauge('strata_mailbox_bytes', 'Request bytes admitted to a shard mailbox and not yet answered.', mb.bytes, a, 'By');
        if (mb.rejectedOverloaded !== undefined) out.counter('strata_mailbox_rejected', 'Requests refused with overloaded because the shard mailbox was full.', mb.rejectedOverloaded, a);
      }
      if (dev === undefined) continue;
      out.counter('strata_actor_restarts', RESTARTS_HELP, dev.restarts, { ...hostAttrs, kind: 'shard' });
      out.counter('strata_replica_damage_reopens', 'Replicas reopened because they found their own storage damaged while running (counted in strata_actor_restarts too).', dev.damageReopens ?? 0, hostAttrs);
      out.counter('strata_device_failures', 'Times a device failed (a write or fdatasync): its replicas were reopened from what is durable, with a fresh queue.', dev.failures ?? 0, hostAttrs);
      out.counter('strata_discard_failures', 'Background removals of files let go (trimmed log segments, images a checkpoint dropped, destroyed shards) that failed; each leftover is removed when its directory is next opened.', dev.discardFailures ?? 0, hostAttrs);
      if (dev.branchCopies !== undefined) {
        out.counter('strata_branch_copies', BRANCH_COPIES_HELP, dev.branchCopies.copied, { ...hostAttrs, outcome: 'copied' });
        out.counter('strata_branch_copies', BRANCH_COPIES_HELP, dev.branchCopies.notCopied, { ...hostAttrs, outcome: 'not_copied' });
      }
      if (dev.slabWarm !== undefined) {
        out.gauge('strata_cache_warm_slots', 'Slots of a device\'s page-cache slab whose memory the CPU pool made resident ahead of use (the first write to memory never used takes a page fault).', dev.slabWarm.warmedSlots, hostAttrs);
        out.counter('strata_cache_warm_failures', 'Steps of warming a device\'s page-cache slab that failed (the CPU pool refused them or was closed); the next tick tries again.', dev.slabWarm.failures, hostAttrs);
      }
      if (dev.scrub !== undefined) {
        out.counter('strata_scrub_read_bytes', 'Bytes of image pages and log records the background scrub read and checked.', dev.scrub.bytes, hostAttrs, 'By');
        out.counter('strata_scrub_passes', 'Passes of the background scrub over a replica (its newest image, then its durable log) completed.', dev.scrub.passes, hostAttrs);
        out.counter('strata_scrub_damage', 'Damage the background scrub found (a replica of several then reopens without the damaged images; a sole copy is reported once per change).', dev.scrub.damage, hostAttrs);
      }
      out.gauge('strata_device_queue_depth', 'Operations queued on a device and not yet started.', dev.queue.queueOps, hostAttrs);
      out.gauge('strata_device_queue_bytes', 'Payload bytes queued on a device and not yet started.', dev.queue.queueBytes, hostAttrs, 'By');
      out.counter('strata_device_written_bytes', 'Log payload bytes appended and made durable on a device.', dev.queue.appendBytes, hostAttrs, 'By');
      out.counter('strata_device_read_bytes', 'Bytes read from a device.', dev.queue.readBytes, hostAttrs, 'By');
      out.counter('strata_device_no_space_refusals', 'Page writes a device refused no_space (its free space under its reserve), and appends of page writes from leaders it refused under half of it.', dev.queue.rejectedNoSpace ?? 0, hostAttrs);
      if (dev.queue.stateSaves !== undefined) {
        out.counter('strata_device_hard_state_saves', 'Terms and votes of a device\'s replicas saved in its hard-state journal.', dev.queue.stateSaves, hostAttrs);
        out.counter('strata_device_hard_state_batches', 'Writes of a device\'s hard-state journal, each made durable by one fdatasync: saves of many replicas (an election of many shards at once) share one.', dev.queue.stateBatches ?? 0, hostAttrs);
      }
      const space = dev.queue.space;
      if (space !== undefined) {
        out.gauge('strata_device_free_bytes', 'Free space of the filesystem holding a device: what its node may still write.', space.freeBytes, hostAttrs, 'By');
        out.gauge('strata_device_size_bytes', 'Size of the filesystem holding a device.', space.sizeBytes, hostAttrs, 'By');
        out.gauge('strata_device_space_reserve_bytes', 'Free space a device keeps (--space-reserve-bytes): under it, page writes are refused no_space.', space.reserveBytes, hostAttrs, 'By');
      }
      for (const s of dev.shards) {
        const a = { node, volume: cleanLabel(s.volumeId), shard: String(s.shard) };
        const up = s.state === undefined || s.state === 'up';
        out.gauge('strata_shard_up', '1 when a shard serves requests, 0 when down.', up ? 1 : 0, a);
        // Also while down (0): the shard's replicas that are down count as not leading.
        if (s.role !== undefined) out.gauge('strata_shard_leader', '1 on the replica that leads its shard, 0 on the others (a replica that is down included): a shard whose replicas all report 0 has no leader.', up && s.role === 'leader' ? 1 : 0, a);
        // A shard that is down has no replica to read the rest from (its zeros are placeholders).
        if (!up) continue;
        if (s.repairing !== undefined) out.gauge('strata_replica_repairing', '1 while a replica whose log was damaged, or whose storage was lost, is given its lost records back by its peers (it does not vote meanwhile).', s.repairing ? 1 : 0, a);
        out.gauge('strata_shard_applied_lsn', 'Highest LSN of a shard applied to its page store.', s.appliedLsn, a);
        out.gauge('strata_shard_commit_lsn', 'Highest LSN of a shard known committed.', s.commitLsn ?? s.appliedLsn, a);
        out.gauge('strata_shard_current_term', 'Leader term of a shard.', s.term, a);
        if (s.elections !== undefined) out.counter('strata_elections', 'Leader elections started by a shard.', s.elections, a);
        if (s.preVotes !== undefined) out.counter('strata_prevotes', 'Prevote rounds started by a shard (an election follows only when a majority would vote).', s.preVotes, a);
        if (s.handovers !== undefined) out.counter('strata_leadership_handovers', 'Leaderships a shard replica handed over to a follower that took them (a host stopping cleanly hands over the shards it leads).', s.handovers, a);
        if (s.retriesMatched !== undefined) out.counter('strata_write_retries_matched', 'Writes sent again answered with the record an earlier try left (found by its write id, or named by the client), not written twice.', s.retriesMatched, a);
        if (s.retriesUnknown !== undefined) out.counter('strata_write_retries_unknown', 'Writes sent again that a leader could not tell from new writes (it restarted or installed an image since the first try and could not read every write id back, or forgot them): answered timeout, outcome unknown.', s.retriesUnknown, a);
        if (s.quiesced !== undefined) out.gauge('strata_shard_quiesced', '1 while a shard replica is quiesced: its shard idle, its leader heartbeats once a second, and its followers wait for it while they hear from its host.', s.quiesced ? 1 : 0, a);
        if (s.checkpoints !== undefined) {
          out.counter('strata_checkpoints', 'Checkpoints a shard replica made: images of its pages, after which the log behind them may go.', s.checkpoints, a);
          out.counter('strata_checkpoint_failures', 'Checkpoints of a shard replica that failed (the device full or failing, damage found on the way): its log is not let go behind the newest image until one succeeds.', s.checkpointFailures ?? 0, a);
        }
        if (s.spaceCheckpoints !== undefined) {
          out.counter('strata_space_checkpoints', 'Checkpoints a shard replica made because its device was short of space, keeping one image and letting the log up to it go.', s.spaceCheckpoints, a);
          out.counter('strata_space_checkpoints_skipped', 'Checkpoints a shard replica on a device short of space did not make: the image could take more than half the free space.', s.spaceCheckpointsSkipped ?? 0, a);
        }
        if (s.writeIdsHeld !== undefined) out.gauge('strata_write_ids', 'Write ids a shard replica remembers, to answer a write sent again with the record it left.', s.writeIdsHeld, a);
        if (s.writeIdsKnownMs !== undefined) {
          out.gauge('strata_write_ids_known_seconds', 'How far back a shard replica knows every write id of its log (at most 62 s): a write sent again whose first try is older, and whose record it does not find, is answered outcome unknown.', s.writeIdsKnownMs / 1000, a, 's');
        }
        if (s.cache) {
          out.counter('strata_cache_hits', 'Page cache hits of a shard.', s.cache.hits, a);
          out.counter('strata_cache_misses', 'Page cache misses of a shard.', s.cache.misses, a);
          out.counter('strata_cache_evictions', 'Pages evicted from a shard page cache.', s.cache.evictions, a);
          out.counter('strata_cache_pages_damaged', 'Pages a shard page cache dropped because a copy out of it did not match the checksum it was put with (read again from the log or an image).', s.cache.damaged ?? 0, a);
          out.gauge('strata_cache_bytes', 'Page bytes held by a shard page cache.', s.cache.bytes, a, 'By');
        }
        if (s.storage) {
          out.gauge('strata_shard_log_bytes', 'Bytes of a replica\'s log in use (its segments\' records), on its node\'s device.', s.storage.logBytes, a, 'By');
          out.gauge('strata_shard_image_bytes', 'Bytes of a replica\'s retained checkpoint images (pages made zeros are not stored: they leave at the next checkpoint).', s.storage.imageBytes, a, 'By');
          out.gauge('strata_shard_image_pages', 'Pages a replica\'s newest checkpoint image stores (its non-zero pages).', s.storage.imagePages, a);
        }
        for (const rep of s.replicas ?? []) out.gauge('strata_replica_lag_records', REPLICA_LAG_HELP, rep.lagRecords, { ...a, replica: cleanLabel(rep.replica) });
        if (s.lag) for (const [replica, lag] of Object.entries(s.lag)) out.gauge('strata_replica_lag_records', REPLICA_LAG_HELP, lag, { ...a, replica: cleanLabel(replica) });
      }
    }
  }

  /**
   * The controller's metrics, from the snapshot of a node that runs it now: a node that no longer
   * runs the controller (a replicated controller's seat moved) reports none. Labels are bounded:
   * a trigger of MOVE_TRIGGERS, an outcome `done`, an error code or `error`.
   */
  private controllerSeries(out: SeriesSet, snap: StatsSnapshot): void {
    const c = snap.controller;
    if (c === undefined) return;
    const node = cleanLabel(snap.node);
    out.gauge('strata_controller_nodes', CONTROLLER_NODES_HELP, c.nodesLive, { node, state: 'live' });
    out.gauge('strata_controller_nodes', CONTROLLER_NODES_HELP, c.nodesDead, { node, state: 'dead' });
    out.gauge('strata_shards_under_replicated', 'Shards of the catalog with at least one replica on a node that is not live, or that its node reports down.', c.shardsUnderReplicated, { node });
    out.gauge('strata_replica_moves_running', 'Moves of replicas the controller runs now.', c.movesRunning, { node });
    out.gauge('strata_replica_repairs_backing_off', 'Shards whose last repair (the move of a dead node\'s replica) failed and that wait for their back-off before the next try.', c.repairsBackingOff, { node });
    out.gauge('strata_controller_nodes_draining', 'Nodes an operator marked draining (strata drain): the controller moves their replicas off and places nothing new on them.', c.nodesDraining, { node });
    out.gauge('strata_controller_rebalancing', '1 while a rebalance an operator asked for (strata rebalance) is under way, else 0.', c.rebalancing ? 1 : 0, { node });
    if (c.controllerNodes !== undefined) {
      const help = 'A replicated controller: its controller nodes (the catalog shard\'s replica set in force), by state: live (heard from within the live window) or dead.';
      out.gauge('strata_catalog_nodes', help, c.controllerNodes.live, { node, state: 'live' });
      out.gauge('strata_catalog_nodes', help, c.controllerNodes.dead, { node, state: 'dead' });
    }
    for (const m of foldOutcomes(c.controllerNodeChanges ?? [])) {
      out.counter('strata_controller_node_changes', 'Changes of the controller nodes the controller ran (strata controllers, trigger operator; a dead or draining controller node replaced, trigger repair), counted once when each ends, by outcome (done, or the error code of the failure).', m.count, { node, trigger: m.trigger, outcome: m.outcome });
    }
    if (c.term !== undefined) out.gauge('strata_controller_term', 'A replicated controller: the term of the catalog shard in which this node runs the controller; a takeover by another node, or a new term, raises it.', c.term, { node });
    for (const m of foldOutcomes(c.moves)) {
      out.counter('strata_replica_moves', 'Moves of replicas the controller ran, counted once when each run ends, by trigger (operator or repair) and outcome (done, or the error code of the failure); a request that joins a move under way, or that is refused before a run starts, is not counted.', m.count, { node, trigger: m.trigger, outcome: m.outcome });
    }
  }

  /** The MetricProducer's collection: every metric, from this collection's snapshots (histograms exactly as counted). */
  private async collectProduced(): Promise<CollectionResult> {
    const snaps = this.closed ? [] : await this.snapshots();
    const nowMs = Date.now();
    const endTime = hrTime(nowMs);
    const requests: Array<{ attrs: Attributes; snap: RequestStatsSnapshot; startMs: Ms }> = [
      { attrs: { node: cleanLabel(this.nodeId), host: 'main' }, snap: this.recorder.snapshot(), startMs: this.startedMs },
    ];
    const batchPoints: DataPoint<Histogram>[] = [];
    const fsyncPoints: DataPoint<Histogram>[] = [];
    const loopPoints: DataPoint<Histogram>[] = [];
    const startTime = hrTime(this.startedMs);
    for (const snap of snaps) {
      const node = cleanLabel(snap.node);
      if (snap.requests) requests.push({ attrs: { node, host: 'main' }, snap: snap.requests, startMs: this.startedMs });
      for (const h of snap.hosts) {
        const attrs = { node, host: String(h.hostId) };
        if (h.requests) requests.push({ attrs, snap: h.requests, startMs: this.startedMs });
        if (h.loopDelay && loopPoints.length < SERIES_PER_METRIC_MAX) {
          const l = bucketsOf(LOOP_DELAY_MS_BUCKETS, h.loopDelay.histogram, 1 / 1000);
          loopPoints.push({ startTime, endTime, attributes: attrs, value: { buckets: { boundaries: l.boundaries, counts: l.counts }, count: l.count, sum: h.loopDelay.sumMs / 1000 } });
        }
        const q = h.device?.queue;
        if (!q || batchPoints.length >= SERIES_PER_METRIC_MAX) continue;
        const b = bucketsOf(BATCH_OPS_BUCKETS, q.batchOpsHistogram, 1);
        batchPoints.push({ startTime, endTime, attributes: attrs, value: { buckets: { boundaries: b.boundaries, counts: b.counts }, count: b.count, sum: q.appendOps + q.readOps + q.tasks + (q.stateSaves ?? 0) } });
        const f = bucketsOf(FSYNC_MS_BUCKETS, q.syncMsHistogram, 1 / 1000);
        fsyncPoints.push({ startTime, endTime, attributes: attrs, value: { buckets: { boundaries: f.boundaries, counts: f.counts }, count: f.count, sum: q.syncMsSum / 1000 } });
      }
    }
    const durationPoints: DataPoint<Histogram>[] = [];
    const errorPoints: DataPoint<number>[] = [];
    for (const { attrs, snap, startMs } of requests) {
      const st = hrTime(startMs);
      for (const s of snap.series) {
        if (durationPoints.length >= SERIES_PER_METRIC_MAX) break;
        durationPoints.push({
          startTime: st, endTime, attributes: { ...attrs, operation: s.operation, outcome: s.outcome },
          value: { buckets: { boundaries: [...REQUEST_DURATION_BUCKETS_S], counts: s.counts }, count: s.count, sum: s.sumSeconds },
        });
      }
      for (const e of snap.errors) {
        if (errorPoints.length >= SERIES_PER_METRIC_MAX) break;
        errorPoints.push({ startTime: st, endTime, attributes: { ...attrs, code: e.code }, value: e.count });
      }
    }
    const histogram = (name: string, description: string, unit: string, dataPoints: DataPoint<Histogram>[]): MetricData => ({
      descriptor: { name, description, unit, valueType: ValueType.DOUBLE },
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.HISTOGRAM,
      dataPoints,
    });
    const metricsOut: MetricData[] = [
      histogram('strata_request_duration_seconds', 'Time to handle a request, by operation and outcome (ok or the error code).', 's', durationPoints),
      histogram('strata_device_batch_ops', 'Operations per DeviceQueue batch.', '', batchPoints),
      histogram('strata_device_fsync_duration_seconds', 'Time of one fdatasync of a log in a DeviceQueue batch.', 's', fsyncPoints),
      histogram('strata_host_event_loop_delay_seconds', 'How late a host thread\'s 10 ms tick ran: its event loop held, or the thread without CPU (a hold of an election timeout costs the host its leaders or followers).', 's', loopPoints),
      {
        descriptor: { name: 'strata_errors', description: 'Errors by protocol code (error replies and other counted failures).', unit: '', valueType: ValueType.INT },
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.SUM,
        isMonotonic: true,
        dataPoints: errorPoints,
      },
    ];
    const series = new SeriesSet(startTime, endTime);
    for (const snap of snaps) {
      this.nodeSeries(series, snap);
      this.controllerSeries(series, snap);
    }
    metricsOut.push(...series.metricData());
    return {
      resourceMetrics: { resource: emptyResource(), scopeMetrics: [{ scope: { name: 'strata' }, metrics: metricsOut.filter((x) => x.dataPoints.length > 0) }] },
      errors: [],
    };
  }
}
