/**
 * `npm run soak`: a Strata cluster of node processes under random faults for a bounded time,
 * with clients whose every operation is recorded and checked.
 *
 * It starts a cluster as `strata dev` does (its own nats-server, N `strata node` processes, node
 * n1 keeping the catalog), creates a volume replicated 3 ways, and runs clients of reads and
 * writes (single and vectored) on its pages, and a block workload over NBD on a volume of its
 * own (test/soak/blocks.ts: the volume exported, and whole blocks written through one
 * connection, as a VM's disk), while a nemesis, one fault at a time:
 * - `kill`: SIGKILL of a node (the controller's too), started again 0.5–4 s later;
 * - `kill-majority`: SIGKILL of two nodes at once (the shards stop serving), both started again;
 * - `stop`: SIGTERM of a node (the controller's too), which must exit 0 within STOP_MS, having
 *   handed the shards it led over to their followers; started again 0.5–4 s later;
 * - `freeze`: SIGSTOP of a node for 0.5–8 s (a stalled process or a paused VM), then SIGCONT;
 * - `nats-freeze`: SIGSTOP of the nats-server for 0.5–3 s (the transport stalls);
 * - `nats-restart`: SIGKILL of the nats-server, a new one on its port 0.5–2 s later (every
 *   connection drops and reconnects; every node asks its claim again);
 * - `wipe`: SIGKILL of a node other than n1 (whose data directory holds the catalog), its data
 *   directory removed, and the node started again 0.5–4 s later on an empty one (a replaced
 *   disk): its replicas learn their peers' terms and are given their shards back. Only when every
 *   replica is reported up and none repairing: two replicas of a shard without their storage are
 *   more than a set of three can lose. (Skipped, that round injects nothing.)
 * - `wipe-controller`: the same for n1. With 3 nodes or more n1 is one of the three controller
 *   nodes of a replicated controller (unless a `controllers` fault took it out), and the catalog must still list the volume; with fewer its
 *   catalog starts again empty. Once it is up, the operator's `strata catalog recover --apply`
 *   (as the operator user with `--auth`) is sent until the catalog lists the volume again, within
 *   RECOVER_MS (replicated, it finds nothing to add). Under the same condition, which also
 *   covers the catalog shard's replicas: two controller nodes that lost their data at once are
 *   more than its set of three can lose.
 * - `move`: the operator's `strata shard move` of a random shard's replica from one of its nodes
 *   to a node outside its set (with 4 or 5 nodes; with 3 there is none, and the round injects
 *   nothing). It must finish within MOVE_MS, or fail with an error that says to retry
 *   (`unavailable`, `timeout`, `overloaded`: a node down meanwhile), which is counted; any other
 *   refusal is a problem. The faults that follow hit the shard's new set.
 * - `down`: SIGKILL of a node other than n1 (the controller's), kept down until the controller
 *   has replaced its every replica by itself (the nodes run with `--repair-after-seconds`, 2 by
 *   default), then started again: it destroys the replicas it was moved off. With 4 or 5 nodes
 *   (with 3 there is no node to move to, and the round injects nothing); the replicas not
 *   replaced within DOWN_MS are a problem. (A `freeze` longer than the controller's live window,
 *   5 s, and that wait gets its node's replicas moved too.)
 * - `drain`: the operator's `strata drain` of a random node (with 4 or 5 nodes), until it holds
 *   no replica, within DOWN_MS (otherwise a problem), then `--undo`: the controller moves a live
 *   node's replicas while clients write.
 * - `rebalance`: the operator's `strata rebalance`, asked again until it says it is done, within
 *   DOWN_MS (otherwise a problem): the controller moves replicas to the nodes repairs and drains
 *   left with fewer (with 4 or 5 nodes).
 * - `controllers`: the operator's `strata controllers`, a random controller node (the
 *   controller's own too) replaced by a random node that is not one (with 4 or 5 nodes), asked
 *   again while it answers an error that says to retry, within DOWN_MS (otherwise a problem).
 *   The nodes are started again with their first `--controllers` all the same, and n1 may no
 *   longer be a controller node when `wipe-controller` wipes it.
 *
 * When the time is up the faults end, and the run checks:
 * 1. the cluster converges: within CONVERGE_MS every shard has a leader and every replica is up,
 *    not repairing, in the leader's term and applied to its commit LSN;
 * 2. every page is read back (recorded as one more client's reads), and every shard's replicas
 *    hold the same committed records, asked of the running nodes (`strata shard check`); every
 *    block of the NBD export reads as its last write answered without an error, or as one of
 *    those answered with an error since (their outcome unknown); a volume written before the
 *    faults and left idle (its shards quiesced through them, but for a read of one of its pages
 *    every IDLE_READ_EVERY_MS, which must read as written) reads back as written;
 * 3. the history of every page is linearizable (test/support/linearizability.ts): an
 *    acknowledged write is never lost, a read never returns a value overwritten before it began
 *    or never written, and a page's bytes are exactly what one write wrote;
 * 4. no node process exited that the nemesis did not kill, and every restarted node came up;
 * 5. no operation was refused with an error that says the request was wrong;
 * 6. once the cluster has stopped, the replicas of every shard agree (cluster/inspect.ts,
 *    `strata inspect --compare`): their logs record for record where they hold an LSN in the
 *    same term, and their pages as of the last such LSN.
 *
 * It prints a summary, writes it as JSON to results/strata-soak-<time>.json, and exits 0 only if
 * every check passed (1 otherwise, 2 for bad flags). A failed run keeps its data directory and
 * the node logs for inspection. Runs are reproducible in their choices (`--seed`), not in their
 * timing.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { startDevCluster, type DevCluster } from '../../cluster/dev';
import { compareEveryShard, type ReplicasCompared } from '../support/replicas';
import { connect, type StrataClient, type Volume } from '../../cluster/client';
import { ProtocolError } from '../../messages/errors';
import { nodeSubject } from '../../messages/control';
import { nodeInboxPrefix } from '../../messages/subjects';
import { readNatsPassword } from '../../cluster/nats-auth';
import { encode, decode } from '../../messages/codec';
import { checkLinearizable, HistoryRecorder, type Operation } from '../support/linearizability';
import { prng } from '../support/prng';
import { formatTable, writeJson } from '../../bench/report';
import { BLOCK_VOLUME, BLOCKS, startBlockWorkload, type BlockResult, type BlockWorkload } from './blocks';

/** The faults the nemesis knows. */
export const FAULT_KINDS = ['kill', 'kill-majority', 'stop', 'freeze', 'nats-freeze', 'nats-restart', 'wipe', 'wipe-controller', 'move', 'down', 'drain', 'rebalance', 'branch', 'resize', 'controllers', 'space'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** How often each fault is picked, relative to the others. */
const FAULT_WEIGHTS: Record<FaultKind, number> = { kill: 35, 'kill-majority': 10, stop: 20, freeze: 35, 'nats-freeze': 15, 'nats-restart': 10, wipe: 10, 'wipe-controller': 5, move: 15, down: 10, drain: 10, rebalance: 10, branch: 10, resize: 10, controllers: 10, space: 10 };
/**
 * The reserve a `space` fault starts a node with, half the time: more than twice any test
 * machine's free space, so that its devices are under half their reserve and take no page data
 * from other leaders (docs/replication.md, "A device short of space"). The other half: 1.5 times
 * the free space, under which its devices take page data as followers and refuse writes as
 * leaders, and the shards it holds are handed over to it.
 */
const SPACE_FAULT_RESERVE_CRITICAL = 1024 * 1024 ** 3;
/** Pages a `resize` adds to the volume; the clients write and read them from then on. */
const RESIZE_STEP_PAGES = 64;
/** How long a `resize` is asked again while a node holding a replica does not answer (a node coming back from the fault before). */
const RESIZE_MS = 30_000;
/** How long the operator's move of a replica may take. */
const MOVE_MS = 20_000;
/** Errors of a move that say to try again later (a node down or restarting meanwhile). */
const MOVE_RETRYABLE = new Set(['unavailable', 'timeout', 'overloaded', 'not_leader']);
/** How long after a `down` node's kill the controller must have replaced its every replica. */
const DOWN_MS = 60_000;
/** How long a node stopped by SIGTERM (`stop`) may take to exit: its hand-overs (1 s at most) and a clean stop. */
const STOP_MS = 20_000;
/**
 * Outcomes of a `branch` that say nothing of the branch's pages: the branch point no longer held
 * by the time it was asked (the soak's checkpoints are frequent), or a node still coming back
 * from the fault before.
 */
const BRANCH_INCONCLUSIVE = new Set(['trimmed', 'unavailable', 'timeout', 'overloaded', 'not_leader']);
/** How long after a wiped controller is up its catalog must list the volume again (recovered). */
const RECOVER_MS = 30_000;

export interface SoakOptions {
  /** How long faults are injected, ms: 1,000..3,600,000. */
  durationMs: number;
  /** Seed of every random choice (faults, victims, pages, values). */
  seed: number;
  /** Node processes: 3..5. */
  nodes: number;
  /** Actor hosts (devices) per node: 1..4. With several, a node's shards are spread over its hosts. */
  hosts: number;
  /** Pages of the volume: 16..65,536. Fewer pages, more contention per page. */
  pages: number;
  /** Shards of the volume: 1..64. */
  shards: number;
  /** Concurrent clients, each with one operation in flight: 1..64. */
  clients: number;
  /**
   * Log records between a shard's checkpoints (`strata node --checkpoint-every-records`): small,
   * so that checkpoints, trims of the log and catch-up by image happen under the faults.
   */
  checkpointEveryRecords: number;
  /** Largest log segment, bytes (`--segment-bytes-max`): small, so that segments roll over and are trimmed. */
  segmentBytesMax: number;
  /** The controller replaces the replicas of a node silent this long, seconds (`strata node --repair-after-seconds`; 0 = never). */
  repairAfterSeconds: number;
  /** The faults to inject (an empty list: none, a baseline run). */
  faults: readonly FaultKind[];
  /** Where to write the JSON summary; null: nowhere. */
  resultsDir: string | null;
  /** Keep the data directory and logs even when the run passes. */
  keep: boolean;
  /** The nats-server admits only the cluster's users (`strata dev --auth`): nodes, clients and this checker connect as theirs. */
  auth?: boolean;
  /** Where progress and the summary go; default stdout. */
  out?: (line: string) => void;
}

export const SOAK_DEFAULTS: Omit<SoakOptions, 'out'> = {
  durationMs: 120_000,
  seed: 1,
  nodes: 3,
  hosts: 1,
  pages: 512,
  shards: 4,
  clients: 8,
  checkpointEveryRecords: 100,
  segmentBytesMax: 256 * 1024,
  repairAfterSeconds: 2,
  faults: FAULT_KINDS,
  resultsDir: 'results',
  keep: false,
};

/** Each client's deadline per call. A call that runs out of it has an unknown outcome. */
const CLIENT_TIMEOUT_MS = 2000;
/** How long the cluster has to converge once the faults end. */
const CONVERGE_MS = 90_000;
/** How long a restarted node has to answer its status subject. */
const NODE_UP_MS = 60_000;
/** How long the final read of every page may retry calls that fail. */
const FINAL_READ_MS = 60_000;
/**
 * A volume written once before the faults and read once after them: its shards quiesce
 * (docs/replication.md, "Idle shards") and go through every fault quiesced or woken by it.
 */
const IDLE_VOLUME = 'soak-idle';
const IDLE_PAGES = 32;
const idleValue = (page: number): string => `idle-${page}`;
/** A page of the idle volume is read this often while the faults run: mostly of a quiesced shard, which the read wakes. */
const IDLE_READ_EVERY_MS = 5000;
/** Pages per vectored call (reads and writes). */
const VECTOR_MAX = 4;
/** Bound on the problems kept (each names what went wrong); the count goes on. */
const PROBLEMS_KEPT = 50;

/**
 * Errors after which a write may or may not have taken effect (a read's value is then unknown).
 * `no_space` (a `space` fault) refuses a shard's part of a write before anything is written, but
 * a write over two shards may have had its other part applied, or time out: taken as unknown.
 */
const OUTCOME_UNKNOWN_CODES = new Set(['timeout', 'unavailable', 'not_leader', 'internal', 'device_failed', 'overloaded', 'stale_term', 'future_lsn', 'no_space']);

/**
 * Whether a failed call is a problem of the run: refused as wrong (a code other than those of a
 * cluster under faults), or not a typed error at all (the client wraps every failure of the
 * transport in one: anything else is a bug).
 */
export function failureIsProblem(e: unknown): boolean {
  return !(e instanceof ProtocolError && OUTCOME_UNKNOWN_CODES.has(e.code));
}

/** One fault as it happened, times in ms since the clients started. */
export interface FaultEvent {
  kind: FaultKind;
  nodes: string[];
  startMs: number;
  endMs: number;
  /** For kills: ms from the restart until each node answered its status subject. */
  upMs?: Record<string, number>;
  /** For wipe-controller: ms from its restart until the recovered catalog listed the volume, and the volumes recovered. */
  recoveredMs?: number;
  recovered?: string[];
  /** For move: the shard, and how it ended (`done`, or the code of an error that says to retry). */
  shard?: number;
  outcome?: string;
  /** For down: ms from the kill until the catalog placed none of the node's replicas; for drain, from the mark. */
  replacedMs?: number;
}

export interface SoakResult {
  ok: boolean;
  problems: string[];
  problemCount: number;
  options: Omit<SoakOptions, 'out'>;
  faults: FaultEvent[];
  operations: {
    writesOk: number;
    /** Of `writesOk`, the pages of ranges made zeros (page.zero), each a write of zeros. */
    zerosOk: number;
    writesUnknown: number;
    readsOk: number;
    readsUnknown: number;
    /** Errors by code (a `ProtocolError`'s, or `other`). */
    errors: Record<string, number>;
  };
  /** The longest time without an acknowledged write while the faults ran, and when it began. */
  longestWriteGapMs: number;
  longestWriteGapAtMs: number;
  /** ms from the end of the faults until the cluster converged (undefined: it did not). */
  convergedMs?: number;
  finalReadPages: number;
  /** The pages `volume.pagesWithData` listed as holding data once the writers stopped (undefined: not asked). */
  mappedPages?: number;
  /** The volume's pages at the end (more than `options.pages` after a `resize`). */
  volumePages: number;
  linearizability: { ok: boolean; pages: number; operations: number; failure?: string; exhausted?: boolean };
  /** What the nodes did (checkpoints, images sent, elections) and what should not have happened. */
  activity: NodeActivity;
  /** Lines at level error in each node's log, and the first few of them. */
  nodeLogErrors: Record<string, { count: number; first: string[] }>;
  /** Shards checked online before the cluster stopped (`strata shard check`): asked, with LSNs in common, the LSNs compared. */
  shardsChecked: { shards: number; compared: number; records: number; pages: number; restarts: number };
  /** The replicas compared once the cluster stopped (check 6). */
  replicasCompared: ReplicasCompared;
  /** The block workload over NBD (test/soak/blocks.ts; check 2c); undefined if it did not start. */
  blocks?: BlockResult;
  /** The idle volume's pages read back as written after the faults (check 2d), of IDLE_PAGES. */
  idlePagesReadBack: number;
  /** Reads of one of its pages while the faults ran: answered (each as written, or a problem), and failed with an error that says to retry. */
  idleReads: { ok: number; failed: number };
  dataDir: string;
  elapsedMs: number;
}

/** FNV-1a of a string: the seed of a page's filler bytes. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** A page holding `value`: its UTF-8 bytes, a zero byte, then filler bytes that follow from the value. */
export function soakPage(pageSize: number, value: string): Uint8Array {
  const b = new Uint8Array(pageSize);
  const head = new TextEncoder().encode(value);
  b.set(head);
  let x = fnv1a(value) || 1;
  for (let i = head.length + 1; i < pageSize; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/**
 * The value a page holds: '' for zeros (never written), the value when every byte is what
 * `soakPage` writes for it, else `corrupt:` and its first bytes (which no write wrote, so the
 * checker refuses it).
 */
export function soakValue(page: Uint8Array): string {
  if (page.every((x) => x === 0)) return '';
  const end = page.indexOf(0);
  const value = new TextDecoder().decode(page.subarray(0, end < 0 ? Math.min(32, page.length) : end));
  const want = soakPage(page.length, value);
  return end >= 0 && Buffer.from(page).equals(Buffer.from(want)) ? value : `corrupt:${Buffer.from(page.subarray(0, 16)).toString('hex')}`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A node process as the nemesis sees it. */
function alive(c: DevCluster, i: number): boolean {
  const p = c.nodes[i]!.process;
  return p.exitCode === null && p.signalCode === null;
}

/** Waits until node `id` answers its status subject; the ms it took, or undefined after `timeoutMs`. */
async function waitNodeUp(nc: NatsConnection, id: string, timeoutMs: number): Promise<number | undefined> {
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    try {
      await nc.request(nodeSubject('dev', id, 'status'), encode({}), { timeout: 1000 });
      return performance.now() - t0;
    } catch {
      await sleep(100);
    }
  }
  return undefined;
}

/** What the nodes did, summed over their processes (each process's counters as last sampled). */
export interface NodeActivity {
  checkpoints: number;
  snapshotsSent: number;
  snapshotsInstalled: number;
  elections: number;
  /** Times a shard's leader quiesced (docs/replication.md, "Idle shards"). */
  quiesces: number;
  /** These should stay 0 when no disk or thread fault is injected. */
  hostRestarts: number;
  deviceRestarts: number;
  damageReopens: number;
  discardFailures: number;
}

const ACTIVITY_ZERO: NodeActivity = {
  checkpoints: 0, snapshotsSent: 0, snapshotsInstalled: 0, elections: 0, quiesces: 0, hostRestarts: 0, deviceRestarts: 0, damageReopens: 0, discardFailures: 0,
};

/** A node's counters from its status reply (`strata.dev.node.<id>.status`). */
function activityOf(status: { hosts?: Array<Record<string, unknown>>; shards?: Array<Record<string, unknown>> }): NodeActivity {
  const sum = (list: Array<Record<string, unknown>> | undefined, key: string): number => (list ?? []).reduce((s, x) => s + (Number(x[key]) || 0), 0);
  return {
    checkpoints: sum(status.shards, 'checkpoints'),
    snapshotsSent: sum(status.shards, 'snapshotsSent'),
    snapshotsInstalled: sum(status.shards, 'snapshotsInstalled'),
    elections: sum(status.shards, 'elections'),
    quiesces: sum(status.shards, 'quiesces'),
    hostRestarts: sum(status.hosts, 'restarts'),
    deviceRestarts: sum(status.hosts, 'deviceRestarts'),
    damageReopens: sum(status.hosts, 'damageReopens'),
    discardFailures: sum(status.hosts, 'discardFailures'),
  };
}

/** Lines at level error in a node's log. */
function logErrors(file: string): { count: number; first: string[] } {
  if (!fs.existsSync(file)) return { count: 0, first: [] };
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.includes('"level":"error"'));
  return { count: lines.length, first: lines.slice(0, 3).map((l) => (l.length > 400 ? `${l.slice(0, 400)}…` : l)) };
}

/** Checks options; a message for the first bad one. */
export function checkSoakOptions(o: Omit<SoakOptions, 'out'>): string | undefined {
  const int = (v: number, lo: number, hi: number, name: string): string | undefined =>
    Number.isSafeInteger(v) && v >= lo && v <= hi ? undefined : `${name} must be an integer in ${lo}..${hi}, got ${String(v)}`;
  return (
    int(o.durationMs, 1000, 3_600_000, '--duration-ms') ??
    int(o.seed, 0, 0xffffffff, '--seed') ??
    int(o.nodes, 3, 5, '--nodes') ??
    int(o.hosts, 1, 4, '--hosts') ??
    int(o.pages, 16, 65_536, '--pages') ??
    int(o.shards, 1, 64, '--shards') ??
    int(o.clients, 1, 64, '--clients') ??
    int(o.checkpointEveryRecords, 1, 1_000_000_000, '--checkpoint-every-records') ??
    int(o.segmentBytesMax, 4096, 1 << 30, '--segment-bytes-max') ??
    int(o.repairAfterSeconds, 0, 3600, '--repair-after-seconds') ??
    (o.shards > o.pages ? `--shards (${o.shards}) must not exceed --pages (${o.pages})` : undefined) ??
    o.faults.map((f) => ((FAULT_KINDS as readonly string[]).includes(f) ? undefined : `unknown fault '${f}': one of ${FAULT_KINDS.join(', ')}`)).find((m) => m)
  );
}

/** What a caller of `runSoak` may add to the options (tests of the soak itself). */
export interface SoakRunOptions extends SoakOptions {
  /** How long the cluster has to converge once the faults end; default CONVERGE_MS. */
  convergeMs?: number;
  /** Called once the clients start, with the cluster (a test of the soak's checks breaks something here). */
  afterStart?: (cluster: DevCluster) => void | Promise<void>;
}

/** Runs a soak; never throws for what it checks (those are `problems`), only for a cluster that does not start. */
export async function runSoak(options: SoakRunOptions): Promise<SoakResult> {
  const bad = checkSoakOptions(options);
  if (bad) throw new RangeError(bad);
  const out = options.out ?? ((l: string) => process.stdout.write(`${l}\n`));
  const { out: _out, convergeMs = CONVERGE_MS, afterStart, ...opts } = options;
  const t0 = performance.now();
  const rand = prng(opts.seed);
  const pick = (n: number): number => Math.floor(rand() * n);
  const problems: string[] = [];
  let problemCount = 0;
  const problem = (text: string): void => {
    problemCount++;
    if (problems.length < PROBLEMS_KEPT) problems.push(text);
  };

  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-soak-'));
  out(`Strata soak: ${opts.nodes} nodes${opts.hosts > 1 ? ` of ${opts.hosts} hosts` : ''}, ${opts.pages} pages in ${opts.shards} shards × 3 replicas, ${opts.clients} clients, ${(opts.durationMs / 1000).toFixed(0)} s of faults (${opts.faults.join(', ') || 'none'}), seed ${opts.seed}; data in ${dataDir}`);
  const cluster = await startDevCluster({
    nodes: opts.nodes,
    hosts: opts.hosts,
    dataDir,
    nodeArgs: ['--checkpoint-every-records', String(opts.checkpointEveryRecords), '--segment-bytes-max', String(opts.segmentBytesMax), '--repair-after-seconds', String(opts.repairAfterSeconds)],
    ...(opts.auth === true ? { auth: true } : {}),
  });
  // As a node (node status) and as an application (the clients), on a locked server.
  const userOf = (role: 'node' | 'client' | 'operator'): { user?: string; pass?: string } => {
    const u = cluster.natsUsers?.[role];
    return u === undefined ? {} : { user: u.user, pass: readNatsPassword(u.passwordFile) };
  };
  /** Runs `fn` with a client of the operator's user (with `--auth`), closed after. */
  const asOperator = async <T>(fn: (operator: StrataClient) => Promise<T>, timeoutMs = 10_000): Promise<T> => {
    const operator = await connect({ servers: cluster.natsUrl, cluster: 'dev', timeoutMs, ...userOf('operator') });
    try {
      return await fn(operator);
    } finally {
      await operator.close();
    }
  };
  const expectedExit = new Set<number>(); // pids the nemesis killed
  const watchExits = (i: number): void => {
    const n = cluster.nodes[i]!;
    n.process.once('exit', (code, signal) => {
      if (!expectedExit.has(n.pid)) problem(`node ${n.id} (pid ${n.pid}) exited by itself (${signal ?? `code ${String(code)}`}); its log: ${n.log}`);
    });
  };
  cluster.nodes.forEach((_, i) => watchExits(i));
  const nc = await natsConnect({ servers: cluster.natsUrl, timeout: 5000, ...userOf('node'), inboxPrefix: nodeInboxPrefix('dev') });
  const clients: StrataClient[] = [];
  let blocks: BlockWorkload | undefined;
  const faults: FaultEvent[] = [];
  const recorder = new HistoryRecorder();
  const errors: Record<string, number> = {};
  const writeAcks: number[] = [];
  let convergedMs: number | undefined;
  let finalReadPages = 0;
  let idlePagesReadBack = 0;
  const idleReads = { ok: 0, failed: 0 };
  let mappedPages: number | undefined;
  /** What the final read got, by page. */
  const finalData: Uint8Array[] = [];
  const shardsChecked = { shards: 0, compared: 0, records: 0, pages: 0, restarts: 0 };
  /** The volume's pages now: a `resize` adds RESIZE_STEP_PAGES. */
  let pagesNow = opts.pages;
  let linearizability: SoakResult['linearizability'] = { ok: false, pages: 0, operations: 0, failure: 'not checked' };
  const frozen = new Set<number>(); // pids stopped with SIGSTOP, continued at the end whatever happens
  let natsFrozen = false;
  let clientsStart = performance.now();
  // Each node process's counters as last sampled, by pid: summed at the end (a process is also
  // sampled right before the nemesis kills it, so that little of what it did goes uncounted).
  const sampled = new Map<number, NodeActivity>();
  const sampleNode = async (i: number): Promise<void> => {
    const n = cluster.nodes[i]!;
    if (!alive(cluster, i) || frozen.has(n.pid) || natsFrozen) return;
    try {
      const r = await nc.request(nodeSubject('dev', n.id, 'status'), encode({}), { timeout: 1000 });
      const body = decode(r.data) as Parameters<typeof activityOf>[0] & { error?: unknown };
      if (body.error === undefined) sampled.set(n.pid, activityOf(body));
    } catch {
      // Busy or restarting: its next sample counts.
    }
  };
  const sample = async (): Promise<void> => {
    await Promise.all(cluster.nodes.map((_, i) => sampleNode(i)));
  };
  let sampling = true;
  const sampler = (async (): Promise<void> => {
    while (sampling) {
      await sample();
      await sleep(1000);
    }
  })();
  try {
    await cluster.client.createVolume({ name: 'soak', pageCount: opts.pages, shards: opts.shards, stripePages: 8, replicas: 3 });
    // Two connections share the clients, as separate application processes would.
    for (let i = 0; i < 2; i++) clients.push(await connect({ servers: cluster.natsUrl, cluster: 'dev', timeoutMs: CLIENT_TIMEOUT_MS, name: `soak-${i}`, ...userOf('client') }));
    const volumes: Volume[] = clients.map((c) => c.volume('soak'));
    await volumes[0]!.readPages([0]); // the volume serves before the clock starts
    // The block workload: a volume of its own over NBD, served by a client of the default 10 s
    // timeout (a block write is made again within it: docs/nbd.md).
    await cluster.client.createVolume({ name: BLOCK_VOLUME, pageCount: BLOCKS, shards: 2, stripePages: 8, replicas: 3 });
    clients.push(await connect({ servers: cluster.natsUrl, cluster: 'dev', name: 'soak-nbd', ...userOf('client') }));
    blocks = await startBlockWorkload({ client: clients.at(-1)!, seed: opts.seed, page: (v) => soakPage(4096, v), valueOf: soakValue, problem });
    await cluster.client.createVolume({ name: IDLE_VOLUME, pageCount: IDLE_PAGES, shards: 2, stripePages: 8, replicas: 3 });
    await clients[0]!.volume(IDLE_VOLUME).writePages(Array.from({ length: IDLE_PAGES }, (_, p) => ({ page: p, data: soakPage(4096, idleValue(p)) })));
    clientsStart = performance.now();
    await afterStart?.(cluster);
    const stopAt = clientsStart + opts.durationMs;
    const now = (): number => performance.now() - clientsStart;

    /** Records the outcome of a failed call whose operations are `ids`: unknown, or (refused as wrong) a problem. */
    const settle = (ids: number[], e: unknown): void => {
      const code = e instanceof ProtocolError ? e.code : 'other';
      errors[code] = (errors[code] ?? 0) + 1;
      if (failureIsProblem(e)) {
        problem(e instanceof ProtocolError ? `a call was refused ${e.code}: ${e.message}` : `a call failed with an error that is not a protocol error: ${String(e)}`);
        for (const id of ids) recorder.fail(id);
      } else {
        for (const id of ids) recorder.unknown(id);
      }
    };
    let seq = 0;
    const worker = async (w: number): Promise<void> => {
      const vol = volumes[w % volumes.length]!;
      const r = prng(opts.seed * 7919 + w + 1);
      // Each page of a vectored call is its own register operation, so its own "client" id.
      const clientId = (k: number): number => w * VECTOR_MAX + k;
      while (performance.now() < stopAt) {
        const count = r() < 0.25 ? 2 + Math.floor(r() * (VECTOR_MAX - 1)) : 1;
        const first = Math.floor(r() * (pagesNow - count + 1));
        const pages = Array.from({ length: count }, (_, k) => first + k);
        const kind = r();
        if (kind < 0.5) {
          // One write in ten makes the pages zeros (page.zero): each page's write of '' (zeros).
          const zero = kind < 0.05;
          const values = pages.map((p) => (zero ? '' : `w${w}.${seq++}.p${p}`));
          const ids = pages.map((p, k) => recorder.invoke(clientId(k), p, 'write', values[k]));
          try {
            if (zero) await vol.zeroPages(first, count);
            else await vol.writePages(pages.map((p, k) => ({ page: p, data: soakPage(4096, values[k]!) })));
            for (const id of ids) recorder.ok(id);
            writeAcks.push(now());
          } catch (e) {
            settle(ids, e);
          }
        } else {
          const ids = pages.map((p, k) => recorder.invoke(clientId(k), p, 'read'));
          try {
            const got = (await vol.readPages(pages)).pages;
            ids.forEach((id, k) => recorder.ok(id, soakValue(got[k]!)));
          } catch (e) {
            settle(ids, e);
          }
        }
        await sleep(r() * 4);
      }
    };

    const nemesis = async (): Promise<void> => {
      const kinds = opts.faults;
      const total = kinds.reduce((s, k) => s + FAULT_WEIGHTS[k], 0);
      const choose = (): FaultKind => {
        let x = rand() * total;
        for (const k of kinds) if ((x -= FAULT_WEIGHTS[k]) < 0) return k;
        return kinds[kinds.length - 1]!;
      };
      const distinct = (n: number): number[] => {
        const all = cluster.nodes.map((_, i) => i);
        const chosen: number[] = [];
        while (chosen.length < n) chosen.push(all.splice(pick(all.length), 1)[0]!);
        return chosen;
      };
      /** SIGKILL of node `i`, its counters sampled first; resolves once it exited, with when it was signalled. */
      const killNode = async (i: number): Promise<number> => {
        await sampleNode(i);
        const n = cluster.nodes[i]!;
        expectedExit.add(n.pid);
        const exited = new Promise<void>((r) => n.process.once('exit', () => r()));
        const killedAt = performance.now();
        n.process.kill('SIGKILL');
        await exited;
        return killedAt;
      };
      const restart = async (victims: number[], ev: FaultEvent, extraArgs: readonly string[] = []): Promise<void> => {
        ev.upMs = {};
        for (const i of victims) {
          await cluster.restart(i, extraArgs);
          watchExits(i);
        }
        await Promise.all(
          victims.map(async (i) => {
            const id = cluster.nodes[i]!.id;
            const up = await waitNodeUp(nc, id, NODE_UP_MS);
            if (up === undefined) problem(`node ${id} did not come up within ${NODE_UP_MS / 1000} s of its restart; its log: ${cluster.nodes[i]!.log}`);
            else ev.upMs![id] = Math.round(up);
          }),
        );
      };
      /**
       * True unless every shard of the volume reports its 3 replicas up and none repairing: a
       * node wiped a moment ago may not report its replicas yet (its reconciliation pending).
       */
      const anyRepairing = async (): Promise<boolean> => {
        try {
          type Vol = { name: string; shards: Array<{ replicas?: Array<{ state?: string; repairing?: boolean; awaitingTerms?: unknown[] }> }> };
          const st = (await cluster.client.status()) as unknown as { volumes: Vol[]; catalogShard?: Vol };
          const vol = st.volumes.find((v) => v.name === 'soak');
          const repairing = (v: Vol): boolean =>
            v.shards.some((sh) => (sh.replicas ?? []).length !== 3 || (sh.replicas ?? []).some((r) => r.state !== 'up' || r.repairing === true || (r.awaitingTerms ?? []).length > 0));
          return vol === undefined || repairing(vol) || (st.catalogShard !== undefined && repairing(st.catalogShard));
        } catch {
          return true;
        }
      };
      /** The operator's recovery of the wiped controller's catalog, until it lists the volume again. */
      const recoverCatalog = async (ev: FaultEvent): Promise<void> => {
        const started = performance.now();
        await asOperator(async (operator) => {
          for (;;) {
            const r = await operator.recoverCatalog({ apply: true }).catch((e: unknown) => e as Error);
            const listed = await operator.listVolumes().then((l) => l.some((v) => v.name === 'soak'), () => false);
            if (listed) {
              ev.recoveredMs = Math.round(performance.now() - started);
              if (!(r instanceof Error)) ev.recovered = r.recovered.map((v) => v.name);
              return;
            }
            if (performance.now() - started > RECOVER_MS) {
              problem(`the wiped controller's catalog did not list the volume again within ${RECOVER_MS / 1000} s of recovering (last: ${r instanceof Error ? r.message : JSON.stringify(r)})`);
              return;
            }
            await sleep(500);
          }
        });
      };
      /**
       * The operator moves a replica of a random shard to a node outside its set; false when
       * there is none (3 nodes) or the volume's sets are not known now (nothing is injected).
       */
      const moveReplica = async (ev: FaultEvent): Promise<boolean> => {
        const shard = pick(opts.shards);
        const draw = rand();
        return asOperator(async (operator) => {
          const info = await operator.volumeInfo('soak').catch(() => undefined);
          const set = info?.replicaSets?.find((r) => r.shard === shard);
          if (set === undefined || set.moving !== undefined) return false;
          const outside = cluster.nodes.map((n) => n.id).filter((id) => !set.members.includes(id));
          if (outside.length === 0) return false;
          const from = set.members[Math.floor(draw * set.members.length)]!;
          const to = outside[Math.floor(draw * outside.length)]!;
          ev.nodes = [from, to];
          ev.shard = shard;
          try {
            await operator.moveReplica('soak', shard, { from, to }, { deadlineMs: Date.now() + MOVE_MS });
            ev.outcome = 'done';
          } catch (e) {
            const code = e instanceof ProtocolError ? e.code : 'error';
            ev.outcome = code;
            if (!MOVE_RETRYABLE.has(code)) problem(`the move of shard ${shard}'s replica from ${from} to ${to} was refused: ${(e as Error).message}`);
          }
          return true;
        }, MOVE_MS);
      };
      /**
       * Waits until the catalog places no replica on `id` and no move is under way (the
       * controller replaced them); a problem after DOWN_MS. The time taken, or undefined.
       */
      const waitReplaced = async (id: string, sinceMs: number): Promise<number | undefined> => {
        let last = '';
        for (;;) {
          const sets = await cluster.client.volumeInfo('soak').then((v) => v.replicaSets ?? [], () => undefined);
          if (sets !== undefined) {
            if (sets.every((r) => !r.members.includes(id) && r.moving === undefined)) return Math.round(performance.now() - sinceMs);
            last = JSON.stringify(sets);
          }
          if (performance.now() - sinceMs > DOWN_MS) {
            problem(`the replicas of node ${id}, down, were not replaced within ${DOWN_MS / 1000} s (replica sets: ${last || 'not read'})`);
            return undefined;
          }
          await sleep(250);
        }
      };
      /**
       * A branch of the volume at the LSNs of a flush, whose pages must be the parent's as read at
       * those LSNs just before (docs/branches.md); then deleted. Made while the clients write on.
       */
      const branchVolume = async (ev: FaultEvent): Promise<void> => {
        ev.nodes = ['controller'];
        const name = `soak-branch-${faults.length}`;
        const parent = cluster.client.volume('soak');
        const size = pagesNow;
        const chunks = Array.from({ length: Math.ceil(size / 128) }, (_, c) => Array.from({ length: Math.min(128, size - c * 128) }, (__, k) => c * 128 + k));
        try {
          const at = (await parent.flush()).lsns;
          const before: Uint8Array[] = [];
          for (const chunk of chunks) before.push(...(await parent.readPages(chunk, { lsns: at })).pages);
          const lsns = Array.from({ length: opts.shards }, (_, shard) => at.find((x) => x.shard === shard)!.lsn);
          await cluster.client.branchVolume(name, 'soak', { lsns });
          const kid = cluster.client.volume(name);
          for (const chunk of chunks) {
            const got = (await kid.readPages(chunk)).pages;
            const differs = chunk.find((p, k) => !Buffer.from(got[k]!).equals(Buffer.from(before[p]!)));
            if (differs !== undefined) {
              problem(`branch ${name} of the volume at lsns ${lsns.join(', ')}: page ${differs} holds ${soakValue(got[chunk.indexOf(differs)]!)}, the parent held ${soakValue(before[differs]!)} there`);
              break;
            }
          }
          ev.outcome = `${size} pages as the parent's at lsns ${lsns.join(', ')}`;
        } catch (e) {
          const code = e instanceof ProtocolError ? e.code : 'error';
          ev.outcome = code;
          if (!BRANCH_INCONCLUSIVE.has(code)) problem(`branch ${name} of the volume failed: ${(e as Error).message}`);
        } finally {
          // Deleted (an undone or failed branch may exist all the same), retried while the controller is busy.
          for (let i = 0; i < 40; i++) {
            const r = await cluster.client.deleteVolume(name).then(() => 'done', (e: unknown) => (e instanceof ProtocolError ? e.code : 'error'));
            if (r === 'done' || r === 'not_found') break;
            await sleep(500);
          }
        }
      };
      /**
       * A controller node replaced by a node that is not one (`strata controllers`), asked again
       * while the answer says to retry (a node the fault before restarted, not live yet; the
       * controller moving), within DOWN_MS.
       */
      const changeControllers = async (ev: FaultEvent): Promise<void> => {
        ev.nodes = ['controller'];
        await asOperator(async (operator) => {
          const startedAt = performance.now();
          let set: string[] | undefined;
          let code = '';
          while (set === undefined && performance.now() - startedAt < DOWN_MS) {
            set = await operator.controllers().then((r) => [...r.members].sort(), (e: unknown) => ((code = e instanceof ProtocolError ? e.code : (e as Error).message), undefined));
            if (set === undefined) await sleep(500);
          }
          if (set === undefined) {
            problem(`no controller answered strata controllers within ${DOWN_MS / 1000} s: ${code}`);
            return;
          }
          const outside = cluster.nodes.map((n) => n.id).filter((id) => !set!.includes(id));
          const out = set[pick(set.length)]!;
          const into = outside[pick(outside.length)]!;
          const target = set.map((id) => (id === out ? into : id)).sort();
          for (;;) {
            code = await operator.controllers(target).then(() => 'done', (e: unknown) => (e instanceof ProtocolError ? e.code : (e as Error).message));
            if (code === 'done') {
              ev.outcome = `${set.join(',')} -> ${target.join(',')}`;
              break;
            }
            if (!MOVE_RETRYABLE.has(code) || performance.now() - startedAt > DOWN_MS) {
              problem(`the controller nodes were not changed from ${set.join(',')} to ${target.join(',')} within ${DOWN_MS / 1000} s: ${code}`);
              break;
            }
            await sleep(500);
          }
        });
      };
      while (kinds.length > 0 && performance.now() < stopAt) {
        await sleep(1000 + rand() * 2000);
        if (performance.now() >= stopAt) break;
        const kind = choose();
        const ev: FaultEvent = { kind, nodes: [], startMs: Math.round(now()), endMs: 0 };
        // Draws as any other fault does (the choices stay those of the seed), then skipped.
        const wipeVictim = kind === 'wipe' || kind === 'down' ? 1 + pick(cluster.nodes.length - 1) : kind === 'wipe-controller' ? 0 : -1;
        if (kind === 'down' && (cluster.nodes.length < 4 || opts.repairAfterSeconds === 0)) continue;
        if ((kind === 'drain' || kind === 'rebalance' || kind === 'controllers') && cluster.nodes.length < 4) continue;
        if ((kind === 'wipe' || kind === 'wipe-controller') && (await anyRepairing())) continue;
        if (kind === 'move') {
          if (!(await moveReplica(ev))) continue;
        } else if (kind === 'wipe' || kind === 'wipe-controller') {
          const n = cluster.nodes[wipeVictim]!;
          ev.nodes = [n.id];
          await killNode(wipeVictim);
          fs.rmSync(path.join(cluster.root, n.id), { recursive: true, force: true });
          await sleep(500 + rand() * 3500);
          await restart([wipeVictim], ev);
          if (kind === 'wipe-controller') await recoverCatalog(ev);
        } else if (kind === 'rebalance') {
          ev.nodes = ['controller'];
          await asOperator(async (operator) => {
            const startedAt = performance.now();
            for (;;) {
              const r = await operator.rebalance().catch(() => undefined);
              if (r !== undefined && !r.rebalancing) {
                ev.replacedMs = Math.round(performance.now() - startedAt);
                ev.outcome = r.nodes.map((n) => `${n.node} ${n.replicas}`).join(', ');
                break;
              }
              if (performance.now() - startedAt > DOWN_MS) {
                problem(`the rebalance was not done ${DOWN_MS / 1000} s after it was asked for (${r === undefined ? 'no answer' : r.nodes.map((n) => `${n.node} ${n.replicas}`).join(', ')})`);
                await operator.rebalance({ stop: true }).catch(() => undefined);
                break;
              }
              await sleep(500);
            }
          });
        } else if (kind === 'controllers') {
          await changeControllers(ev);
        } else if (kind === 'branch') {
          await branchVolume(ev);
        } else if (kind === 'resize') {
          // The volume grows while the clients write; once it has, they use the new pages too.
          ev.nodes = ['controller'];
          const to = pagesNow + RESIZE_STEP_PAGES;
          const startedAt = performance.now();
          for (;;) {
            const code = await cluster.client.resizeVolume('soak', to).then((info) => (info.pageCount === to ? 'done' : `${info.pageCount} pages`), (e: unknown) => (e instanceof ProtocolError ? e.code : (e as Error).message));
            if (code === 'done') {
              ev.outcome = `${pagesNow} -> ${to} pages`;
              pagesNow = to;
              break;
            }
            if (!MOVE_RETRYABLE.has(code) || performance.now() - startedAt > RESIZE_MS) {
              problem(`the volume was not resized to ${to} pages within ${RESIZE_MS / 1000} s: ${code}`);
              break;
            }
            await sleep(500);
          }
        } else if (kind === 'drain') {
          // Any node, n1 too: the controller's node drains as any other.
          const n = cluster.nodes[pick(cluster.nodes.length)]!;
          ev.nodes = [n.id];
          await asOperator(async (operator) => {
            const startedAt = performance.now();
            let left = -1;
            while (left !== 0) {
              left = await operator.drainNode(n.id).then((r) => r.replicas, () => -1);
              if (left === 0) break;
              if (performance.now() - startedAt > DOWN_MS) {
                problem(`node ${n.id}, draining, still held replicas ${DOWN_MS / 1000} s later (${left} when last asked)`);
                break;
              }
              await sleep(250);
            }
            if (left === 0) ev.replacedMs = Math.round(performance.now() - startedAt);
            // The mark off, until it is (the controller may be restarting after another fault: not here, one fault at a time).
            for (let i = 0; i < 20; i++) {
              const r = await operator.drainNode(n.id, { undo: true }).then(() => true, () => false);
              if (r) break;
              await sleep(500);
            }
          });
        } else if (kind === 'down') {
          const n = cluster.nodes[wipeVictim]!;
          ev.nodes = [n.id];
          const killedAt = await killNode(wipeVictim);
          const took = await waitReplaced(n.id, killedAt);
          if (took !== undefined) ev.replacedMs = took;
          await restart([wipeVictim], ev);
        } else if (kind === 'kill' || kind === 'kill-majority') {
          const victims = distinct(kind === 'kill' ? 1 : 2);
          ev.nodes = victims.map((i) => cluster.nodes[i]!.id);
          await Promise.all(victims.map((i) => killNode(i)));
          await sleep(500 + rand() * 3500);
          await restart(victims, ev);
        } else if (kind === 'space') {
          // A node whose devices are short of space for a while: killed, started again with a
          // reserve over its free space, then killed and started as before.
          const [i] = distinct(1);
          const n = cluster.nodes[i!]!;
          ev.nodes = [n.id];
          const st = fs.statfsSync(dataDir);
          const leads = rand() < 0.5;
          const reserve = leads ? Math.min(SPACE_FAULT_RESERVE_CRITICAL, Math.floor(st.bavail * st.bsize * 1.5)) : SPACE_FAULT_RESERVE_CRITICAL;
          await killNode(i!);
          await restart([i!], ev, ['--space-reserve-bytes', String(reserve)]);
          let refused = 0;
          if (leads) {
            // Its shards' leadership asked of it: refused (a replica short of space takes none).
            await asOperator(async (operator) => {
              const info = await operator.volumeInfo('soak');
              for (const set of info.replicaSets ?? []) {
                if (!set.members.includes(n.id)) continue;
                const r = await operator.handOver('soak', set.shard, { to: n.id }).then(() => 'taken', (e: unknown) => (e instanceof ProtocolError ? e.code : 'error'));
                if (r === 'unavailable') refused++;
              }
            }).catch(() => undefined);
          }
          await sleep(1000 + rand() * 5000);
          // What it leads at the end: a leader short of space hands its leadership over.
          const leading = await cluster.client.status().then((st) => st.volumes.find((v) => v.name === 'soak')?.shards.filter((sh) => sh.leader === n.id).length ?? 0, () => -1);
          ev.outcome = `${leads ? `reserve 1.5 times its free space, ${refused} handover(s) to it refused` : 'reserve over twice its free space'}; leading ${leading < 0 ? '?' : leading} shard(s) at the end`;
          await killNode(i!);
          await restart([i!], ev);
        } else if (kind === 'stop') {
          const [i] = distinct(1);
          const n = cluster.nodes[i!]!;
          ev.nodes = [n.id];
          await sampleNode(i!);
          expectedExit.add(n.pid);
          const exited = new Promise<number | null>((r) => n.process.once('exit', (code) => r(code)));
          n.process.kill('SIGTERM');
          const code = await Promise.race([exited, sleep(STOP_MS).then(() => 'late' as const)]);
          if (code === 'late') {
            problem(`node ${n.id} did not exit within ${STOP_MS / 1000} s of SIGTERM`);
            n.process.kill('SIGKILL');
            await exited;
          } else if (code !== 0) problem(`node ${n.id} exited ${String(code)} after SIGTERM, not 0`);
          await sleep(500 + rand() * 3500);
          await restart([i!], ev);
        } else if (kind === 'freeze') {
          const [i] = distinct(1);
          const n = cluster.nodes[i!]!;
          ev.nodes = [n.id];
          frozen.add(n.pid);
          process.kill(n.pid, 'SIGSTOP');
          await sleep(500 + rand() * 7500);
          process.kill(n.pid, 'SIGCONT');
          frozen.delete(n.pid);
        } else if (kind === 'nats-restart') {
          ev.nodes = ['nats-server'];
          await cluster.restartNats(500 + rand() * 1500);
        } else {
          ev.nodes = ['nats-server'];
          natsFrozen = true;
          process.kill(cluster.natsPid, 'SIGSTOP');
          await sleep(500 + rand() * 2500);
          process.kill(cluster.natsPid, 'SIGCONT');
          natsFrozen = false;
        }
        ev.endMs = Math.round(now());
        faults.push(ev);
        out(`  ${(ev.startMs / 1000).toFixed(1)} s: ${ev.kind} ${ev.nodes.join(', ')} (${((ev.endMs - ev.startMs) / 1000).toFixed(1)} s)${ev.upMs ? `, up again after ${Object.entries(ev.upMs).map(([id, ms]) => `${id} ${(ms / 1000).toFixed(1)} s`).join(', ')}` : ''}${ev.recoveredMs !== undefined ? `, catalog recovered ${(ev.recoveredMs / 1000).toFixed(1)} s later (${(ev.recovered ?? []).join(', ') || 'listed'})` : ''}${ev.outcome !== undefined ? (ev.kind === 'rebalance' ? `, done in ${((ev.replacedMs ?? 0) / 1000).toFixed(1)} s: replicas per node ${ev.outcome}` : ev.kind === 'branch' || ev.kind === 'resize' || ev.kind === 'controllers' || ev.kind === 'space' ? `: ${ev.outcome}` : `, shard ${ev.shard}: ${ev.outcome}`) : ''}${ev.replacedMs !== undefined && ev.kind !== 'rebalance' && ev.kind !== 'branch' ? `, its replicas ${ev.kind === 'drain' ? 'moved off' : 'replaced'} ${(ev.replacedMs / 1000).toFixed(1)} s after the ${ev.kind === 'drain' ? 'mark' : 'kill'}` : ''}`);
      }
    };

    /** Reads a page of the idle volume every IDLE_READ_EVERY_MS while the faults run. */
    const idleReader = async (): Promise<void> => {
      const r = prng(opts.seed * 31 + 7);
      const idle = clients[0]!.volume(IDLE_VOLUME);
      while (performance.now() + IDLE_READ_EVERY_MS < stopAt) {
        await sleep(IDLE_READ_EVERY_MS);
        const p = Math.floor(r() * IDLE_PAGES);
        try {
          const got = soakValue(await idle.read(p));
          if (got !== idleValue(p)) problem(`page ${p} of the idle volume read ${got} while the faults ran, not as written`);
          idleReads.ok++;
        } catch (e) {
          if (e instanceof ProtocolError && OUTCOME_UNKNOWN_CODES.has(e.code)) idleReads.failed++;
          else problem(`a read of the idle volume was refused: ${(e as Error).message}`);
        }
      }
    };

    await Promise.all([...Array.from({ length: opts.clients }, (_, w) => worker(w)), nemesis(), idleReader()]);
    await blocks.stop();
    const faultsEnd = performance.now();

    // Every node should be running now; one that is not was lost by the run itself.
    cluster.nodes.forEach((_, i) => {
      if (!alive(cluster, i)) problem(`node ${cluster.nodes[i]!.id} is not running at the end of the faults`);
    });

    // 1. Convergence.
    let lastView = '';
    while (performance.now() - faultsEnd < convergeMs) {
      try {
        const st = (await cluster.client.status()) as unknown as { volumes: Array<{ name: string; shards: Array<Record<string, unknown>> }> };
        const vol = st.volumes.find((v) => v.name === 'soak');
        const unsettled = (vol?.shards ?? []).flatMap((sh) => {
          const reps = (sh.replicas as Array<Record<string, unknown>> | undefined) ?? [];
          const settled =
            sh.state === 'up' &&
            reps.length === 3 &&
            reps.every((r) => r.state === 'up' && r.repairing !== true && r.term === sh.term && r.appliedLsn === sh.commitLsn);
          return settled ? [] : [`shard ${String(sh.shard)}: ${String(sh.state)} term ${String(sh.term)} commit ${String(sh.commitLsn)}, replicas ${reps.map((r) => `${String(r.node)} ${String(r.state)}${r.repairing ? ' repairing' : ''} t${String(r.term)} a${String(r.appliedLsn)}`).join('; ')}`];
        });
        if (vol && vol.shards.length === opts.shards && unsettled.length === 0) {
          convergedMs = performance.now() - faultsEnd;
          break;
        }
        lastView = vol ? unsettled.join(' | ') : 'the volume is not in the status';
      } catch (e) {
        lastView = `status failed: ${(e as Error).message}`;
      }
      await sleep(250);
    }
    if (convergedMs === undefined) problem(`the cluster did not converge within ${convergeMs / 1000} s of the faults' end: ${lastView}`);

    // 2. Every page read back, as one more client's reads (retried until each call succeeds).
    const finalClient = opts.clients * VECTOR_MAX;
    const finalDeadline = performance.now() + FINAL_READ_MS;
    for (let p = 0; p < pagesNow && performance.now() < finalDeadline; p += 64) {
      const pages = Array.from({ length: Math.min(64, pagesNow - p) }, (_, k) => p + k);
      for (;;) {
        const ids = pages.map((pg, k) => recorder.invoke(finalClient + k, pg, 'read'));
        try {
          const got = (await volumes[0]!.readPages(pages)).pages;
          ids.forEach((id, k) => recorder.ok(id, soakValue(got[k]!)));
          got.forEach((data, k) => (finalData[p + k] = data));
          finalReadPages += pages.length;
          break;
        } catch (e) {
          for (const id of ids) recorder.fail(id);
          if (failureIsProblem(e)) problem(`the final read of pages ${p}..${p + pages.length - 1} was refused: ${String(e)}`);
          if (performance.now() > finalDeadline) {
            problem(`the final read of pages ${p}..${p + pages.length - 1} failed for ${FINAL_READ_MS / 1000} s: ${(e as Error).message}`);
            break;
          }
          await sleep(200);
        }
      }
    }
    if (finalReadPages < pagesNow) problem(`the final read covered ${finalReadPages} of ${pagesNow} pages`);

    // 2d. The volume left idle since before the faults reads back as written.
    for (const deadline = performance.now() + FINAL_READ_MS; ; ) {
      try {
        const got = (await clients[0]!.volume(IDLE_VOLUME).readPages(Array.from({ length: IDLE_PAGES }, (_, p) => p))).pages;
        const wrong = got.flatMap((data, p) => (soakValue(data) === idleValue(p) ? [] : [p]));
        if (wrong.length > 0) problem(`the idle volume's page ${wrong[0]} reads ${soakValue(got[wrong[0]!]!)}, not as written (${wrong.length} such pages)`);
        idlePagesReadBack = IDLE_PAGES - wrong.length;
        break;
      } catch (e) {
        if (failureIsProblem(e)) problem(`the read of the idle volume was refused: ${String(e)}`);
        if (performance.now() > deadline) {
          problem(`the read of the idle volume failed for ${FINAL_READ_MS / 1000} s: ${(e as Error).message}`);
          break;
        }
        await sleep(200);
      }
    }

    // 2a. Which pages hold data (`strata map`), asked of the shards' leaders after the faults
    // (images sent, replicas repaired, leaders changed): every page the final read found holding
    // a byte other than zero is listed, and every page not listed read as zeros.
    for (const deadline = performance.now() + FINAL_READ_MS; finalReadPages === pagesNow; ) {
      try {
        const map = await volumes[0]!.pagesWithData(0, pagesNow);
        const listed = new Set<number>();
        for (const r of map.ranges) for (let p = r.first; p < r.first + r.count; p++) listed.add(p);
        if (map.end !== pagesNow) problem(`pagesWithData(0, ${pagesNow}) answered only up to page ${map.end}`);
        const unlisted = finalData.flatMap((data, p) => (p < map.end && !listed.has(p) && data.some((b) => b !== 0) ? [p] : []));
        if (unlisted.length > 0) problem(`pagesWithData left out ${unlisted.length} page(s) that hold data: ${unlisted.slice(0, 8).join(', ')}`);
        mappedPages = listed.size;
        break;
      } catch (e) {
        if (failureIsProblem(e)) problem(`pagesWithData was refused: ${String(e)}`);
        if (performance.now() > deadline) {
          problem(`pagesWithData failed for ${FINAL_READ_MS / 1000} s: ${(e as Error).message}`);
          break;
        }
        await sleep(200);
      }
    }

    // 2b. Every shard's replicas hold the same committed records and read the same pages, asked
    // of the running nodes (`strata shard check --pages`, as the operator); the catalog shard's
    // records too.
    await asOperator(async (operator) => {
      for (const [name, shard] of [...Array.from({ length: opts.shards }, (_, k) => ['soak', k] as const), ['strata-catalog', 0] as const]) {
        const r = await operator.checkShard(name, shard, { pages: true }).catch((e: unknown) => e as Error);
        if (r instanceof Error) {
          problem(`strata shard check ${name} ${shard} failed: ${r.message}`);
          continue;
        }
        shardsChecked.shards++;
        if (r.range !== undefined) {
          shardsChecked.compared++;
          shardsChecked.records += r.range.toLsn - r.range.fromLsn + 1;
        }
        if (r.differs !== undefined) problem(`the replicas of shard ${shard} of ${name} hold different committed records at LSN ${r.differs.lsn} (strata shard check)`);
        if (r.pages?.differs !== undefined) problem(`the replicas of shard ${shard} of ${name} read different data at page ${r.pages.differs.page} as of LSN ${r.pages.lsn!} (strata shard check --pages)`);
        shardsChecked.pages += r.pages?.compared ?? 0;
        shardsChecked.restarts += r.restarts ?? 0;
        for (const x of r.replicas) if (x.error !== undefined) problem(`strata shard check ${name} ${shard}: ${x.node} did not answer: ${x.error}`);
      }
    });

    // 2c. Every block of the NBD export reads as its last write answered without an error, or
    // one answered with an error since (test/soak/blocks.ts).
    await blocks.verify();

    // 3. Linearizability, page by page.
    const history: Operation[] = recorder.history();
    const check = checkLinearizable(history);
    linearizability = {
      ok: check.ok,
      pages: check.pages,
      operations: check.operations,
      ...(check.failure ? { failure: `page ${check.failure.page}: ${check.failure.explanation}` } : {}),
      ...(check.exhausted ? { exhausted: true } : {}),
    };
    if (!check.ok) problem(`the history is not linearizable: ${linearizability.failure ?? 'search exhausted'}`);
    sampling = false;
    await sampler;
    await sample();
  } catch (e) {
    problem(`the run failed: ${(e as Error).stack ?? String(e)}`);
  } finally {
    sampling = false;
    // Nothing stays stopped, whatever failed.
    for (const pid of frozen) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // Gone already.
      }
    }
    if (natsFrozen) process.kill(cluster.natsPid, 'SIGCONT');
  }

  const history = recorder.history();
  const writes = history.filter((o) => o.kind === 'write');
  const reads = history.filter((o) => o.kind === 'read');
  // The longest time without an acknowledged write while the clients ran.
  let gap = 0;
  let gapAt = 0;
  let prev = 0;
  for (const t of [...writeAcks, opts.durationMs]) {
    if (t - prev > gap) {
      gap = t - prev;
      gapAt = prev;
    }
    prev = t;
  }

  const activity = { ...ACTIVITY_ZERO };
  for (const a of sampled.values()) for (const k of Object.keys(activity) as Array<keyof NodeActivity>) activity[k] += a[k];
  for (const k of ['hostRestarts', 'deviceRestarts', 'damageReopens', 'discardFailures'] as const) {
    if (activity[k] > 0) problem(`${k}: ${activity[k]}, though no disk or thread fault was injected (see the node logs)`);
  }

  await blocks?.close().catch((e: unknown) => problem(`the NBD export did not stop: ${(e as Error).message}`));
  for (const c of clients) await c.close().catch(() => undefined);
  await nc.close().catch(() => undefined);
  await cluster.client.close().catch(() => undefined);
  for (const n of cluster.nodes) n.process.removeAllListeners('exit');
  const nodeLogErrors = Object.fromEntries(cluster.nodes.map((n) => [n.id, logErrors(n.log)]));
  await cluster.stop();
  const replicasCompared = compareEveryShard(dataDir, problem);

  const result: SoakResult = {
    ok: problemCount === 0,
    problems,
    problemCount,
    options: opts,
    faults,
    operations: {
      writesOk: writes.filter((o) => o.completeMs !== undefined).length,
      zerosOk: writes.filter((o) => o.completeMs !== undefined && o.value === '').length,
      writesUnknown: writes.filter((o) => o.completeMs === undefined).length,
      readsOk: reads.filter((o) => o.completeMs !== undefined).length,
      readsUnknown: reads.filter((o) => o.completeMs === undefined).length,
      errors,
    },
    longestWriteGapMs: Math.round(gap),
    longestWriteGapAtMs: Math.round(gapAt),
    ...(convergedMs !== undefined ? { convergedMs: Math.round(convergedMs) } : {}),
    finalReadPages,
    ...(mappedPages !== undefined ? { mappedPages } : {}),
    volumePages: pagesNow,
    linearizability,
    activity,
    nodeLogErrors,
    shardsChecked,
    replicasCompared,
    ...(blocks !== undefined ? { blocks: blocks.result() } : {}),
    idlePagesReadBack,
    idleReads,
    dataDir,
    elapsedMs: Math.round(performance.now() - t0),
  };
  if (result.ok && !opts.keep) fs.rmSync(dataDir, { recursive: true, force: true });
  return result;
}

/** The summary a run prints. */
export function formatSoak(r: SoakResult): string {
  const count = (k: FaultKind): number => r.faults.filter((f) => f.kind === k).length;
  const ups = r.faults.flatMap((f) => Object.values(f.upMs ?? {}));
  const lines = [
    '',
    formatTable('Strata soak: faults', FAULT_KINDS.map((k) => ({ fault: k, count: count(k) }))),
    '',
    formatTable('Strata soak: operations', [
      { what: 'writes acknowledged', count: r.operations.writesOk },
      { what: '  of them pages made zeros', count: r.operations.zerosOk },
      { what: 'writes with unknown outcome', count: r.operations.writesUnknown },
      { what: 'reads answered', count: r.operations.readsOk },
      { what: 'reads not answered', count: r.operations.readsUnknown },
      ...Object.entries(r.operations.errors).sort().map(([code, n]) => ({ what: `  errors: ${code}`, count: n })),
    ]),
    '',
    `longest time without an acknowledged write: ${(r.longestWriteGapMs / 1000).toFixed(1)} s (from ${(r.longestWriteGapAtMs / 1000).toFixed(1)} s)`,
    `restarted nodes up again after: ${ups.length ? `${(Math.min(...ups) / 1000).toFixed(1)}–${(Math.max(...ups) / 1000).toFixed(1)} s` : '-'}`,
    `converged after the faults: ${r.convergedMs !== undefined ? `${(r.convergedMs / 1000).toFixed(1)} s` : 'NO'}`,
    `final read: ${r.finalReadPages} of ${r.volumePages} pages${r.volumePages > r.options.pages ? ` (${r.options.pages} at the start, then resized)` : ''}`,
    `pages holding data: ${r.mappedPages ?? '-'} listed by volume.pagesWithData, every page the final read found holding data among them (strata map)`,
    `block writes over NBD: ${r.blocks === undefined ? '-' : `${r.blocks.writesOk.toLocaleString('en-US')} answered, ${r.blocks.writesFailed.toLocaleString('en-US')} answered with an error${r.blocks.writesFailed > 0 ? ` (errno ${Object.entries(r.blocks.failedErrnos).map(([e, n]) => `${e}: ${n}`).join(', ')})` : ''}, ${r.blocks.triesMadeAgain} tries made again by the export; ${r.blocks.blocksChecked} of ${BLOCKS} blocks read back as written`}`,
    `linearizable: ${r.linearizability.ok ? 'yes' : 'NO'} (${r.linearizability.pages} pages, ${r.linearizability.operations} operations)${r.linearizability.failure && !r.linearizability.ok ? `: ${r.linearizability.failure}` : ''}`,
    `idle volume: ${r.idlePagesReadBack} of ${IDLE_PAGES} pages read back as written after the faults (written before them); ${r.idleReads.ok} reads of a page while they ran answered as written, ${r.idleReads.failed} failed with an error that says to retry`,
    `the nodes did: ${r.activity.checkpoints} checkpoints, ${r.activity.snapshotsSent} images sent and ${r.activity.snapshotsInstalled} installed, ${r.activity.elections} elections, ${r.activity.quiesces} shards quiesced (counted as last sampled, per process)`,
    `shards checked online: ${r.shardsChecked.shards} (${r.shardsChecked.compared} with committed LSNs in common, ${r.shardsChecked.records} LSNs compared, ${r.shardsChecked.pages} pages compared${r.shardsChecked.restarts > 0 ? `, ${r.shardsChecked.restarts} comparisons begun again after a replica's checkpoint` : ''}; strata shard check --pages)`,
    `replicas compared once stopped: ${r.replicasCompared.shards} shards, ${r.replicasCompared.replicas} replicas, ${r.replicasCompared.pages} pages read (strata inspect --compare)`,
    `error lines in node logs: ${Object.entries(r.nodeLogErrors).map(([id, e]) => `${id} ${e.count}`).join(', ')}`,
  ];
  if (r.problemCount > 0) {
    lines.push(`PROBLEMS (${r.problemCount}):`, ...r.problems.map((p) => `  - ${p}`), `data and node logs kept in ${r.dataDir}`);
  }
  lines.push(`soak: ${r.ok ? 'PASS' : 'FAIL'} in ${(r.elapsedMs / 1000).toFixed(0)} s`);
  return lines.join('\n');
}

const HELP = `Usage: npm run soak -- [flags]   (or node dist/test/soak/soak.js [flags])

A Strata cluster of node processes under random faults, with checked clients (test/soak/soak.ts).

  --duration-ms N   how long faults are injected (1000..3600000; default ${SOAK_DEFAULTS.durationMs})
  --seed N          seed of every random choice (default ${SOAK_DEFAULTS.seed})
  --nodes N         node processes, 3..5 (default ${SOAK_DEFAULTS.nodes})
  --hosts N         actor hosts (devices) per node, 1..4 (default ${SOAK_DEFAULTS.hosts}): a node's shards spread over them
  --pages N         pages of the volume, 16..65536 (default ${SOAK_DEFAULTS.pages})
  --shards N        shards of the volume, 1..64 (default ${SOAK_DEFAULTS.shards})
  --clients N       concurrent clients, 1..64 (default ${SOAK_DEFAULTS.clients})
  --checkpoint-every-records N
                    log records between a shard's checkpoints (default ${SOAK_DEFAULTS.checkpointEveryRecords}: checkpoints,
                    log trims and catch-up by image happen under the faults)
  --segment-bytes-max N
                    largest log segment in bytes, 4096..2^30 (default ${SOAK_DEFAULTS.segmentBytesMax})
  --repair-after-seconds N
                    the controller replaces the replicas of a node silent this long, 0..3600
                    (default ${SOAK_DEFAULTS.repairAfterSeconds}; 0: never, and no down fault)
  --faults LIST     comma-separated of ${FAULT_KINDS.join(', ')}, or none (default: all)
  --results-dir D   where the JSON summary goes (default ${SOAK_DEFAULTS.resultsDir})
  --no-results      write no JSON
  --keep            keep the data directory and node logs when the run passes
  --auth            the nats-server admits only the cluster's users (strata dev --auth)
  --help            this text

Exit status: 0 every check passed, 1 a check failed, 2 bad flags.`;

/** Parses flags; throws a RangeError naming the bad one. */
export function parseSoakArgs(argv: readonly string[]): Omit<SoakOptions, 'out'> | 'help' {
  const o: Omit<SoakOptions, 'out'> = { ...SOAK_DEFAULTS };
  const numeric: Record<string, 'durationMs' | 'seed' | 'nodes' | 'hosts' | 'pages' | 'shards' | 'clients' | 'checkpointEveryRecords' | 'segmentBytesMax' | 'repairAfterSeconds'> = {
    '--duration-ms': 'durationMs', '--seed': 'seed', '--nodes': 'nodes', '--hosts': 'hosts', '--pages': 'pages', '--shards': 'shards', '--clients': 'clients',
    '--checkpoint-every-records': 'checkpointEveryRecords', '--segment-bytes-max': 'segmentBytesMax', '--repair-after-seconds': 'repairAfterSeconds',
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === '--help' || flag === '-h') return 'help';
    if (flag === '--no-results') o.resultsDir = null;
    else if (flag === '--keep') o.keep = true;
    else if (flag === '--auth') o.auth = true;
    else if (flag in numeric || flag === '--faults' || flag === '--results-dir') {
      const value = argv[++i];
      if (value === undefined || value.startsWith('--')) throw new RangeError(`${flag} needs a value`);
      if (flag === '--faults') o.faults = value === 'none' ? [] : (value.split(',') as FaultKind[]);
      else if (flag === '--results-dir') o.resultsDir = value;
      else {
        if (!/^\d+$/.test(value)) throw new RangeError(`${flag} must be a non-negative integer, got '${value}'`);
        o[numeric[flag]!] = Number(value);
      }
    } else throw new RangeError(`unknown flag '${flag}' (--help lists them)`);
  }
  const bad = checkSoakOptions(o);
  if (bad) throw new RangeError(bad);
  return o;
}

async function main(): Promise<number> {
  let opts: ReturnType<typeof parseSoakArgs>;
  try {
    opts = parseSoakArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`strata soak: ${(e as Error).message}\n`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const result = await runSoak(opts);
  process.stdout.write(`${formatSoak(result)}\n`);
  if (opts.resultsDir !== null) process.stdout.write(`results: ${writeJson(opts.resultsDir, 'strata-soak', result)}\n`);
  return result.ok ? 0 : 1;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`strata soak: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
