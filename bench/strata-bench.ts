/**
 * The Strata cluster benchmark (`strata bench`, `npm run bench`): page writes and reads through
 * the TypeScript client against a cluster, compared in the same run with the ceilings of the
 * machine it runs on.
 *
 * A run is made of *groups*. A group has one payload size (pages per request × page size) and
 * one queue depth (requests in flight); its *subjects* are Strata workloads (a volume each) and
 * its *baselines* are measured with the same payload and queue depth:
 * - `raw-append`: one write + one fdatasync per batch of queueDepth records on the same disk
 *   (the durability ceiling: what group commit could reach at that batching);
 * - `nats-echo`: NATS request/reply to a responder that only echoes (the transport ceiling);
 * - `jetstream-publish`: acknowledged publishes to a JetStream R1 file stream (a replicated-log
 *   peer; JetStream does not fsync each message).
 * Subjects and baselines alternate in short rounds and each ratio is the median of the per-round
 * ratios, so load from other processes on a shared machine hits both sides of a ratio alike.
 *
 * `runBench({ workload, ... })` runs one subject with its baselines. Without a workload it runs
 * the default suite, which covers the targets of the project (see {@link TARGETS_DESCRIPTION})
 * and prints them as met / NOT met. `--short` keeps the whole suite under a minute on two cores.
 *
 * Everything is bounded: each phase by a duration and/or an op count, the whole run by
 * {@link RUN_MS_MAX}, each request by the client's timeout, errors by {@link ERRORS_MAX}.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { connect, type StrataClient, type Volume } from "../cluster/client";
import { startCluster, type InProcessCluster } from "../cluster/in-process-cluster";
import { clusterNameProblem, defaultHostsPerNode, natsUrlError, natsUserProblem } from "../cluster/config";
import { NATS_TLS_FLAGS, natsTlsFromFlags, readNatsPassword, type NatsTlsFiles } from "../cluster/nats-auth";
import { ProtocolError } from "../messages/errors";
import { redactNatsUrl } from "../runtime/nats-url";
import type { PageWrite, VolumeInfo } from "../messages/api";
import { jetstreamNote, jetstreamPublishBaseline, natsEchoBaseline, rawAppendBaseline } from "./baselines";
import { Histogram, type HistogramSummary } from "./histogram";
import { clearProgress, directoryProblem, formatNumber, formatUs, isTTY, jsonPath, printTable, procCpuUs, progress, progressBar, removeDirectory, writeJson, type Cell } from "./report";
import { latencyCdfSvg, writeSvg, type LatencySeries } from "./svg";
import { PAGES_PER_REQUEST_BENCH_MAX, WORKLOADS, WorkloadGenerator, payloadPages, readsPages, type Workload } from "./workloads";

// ---------------------------------------------------------------------------------------------
// Limits and defaults
// ---------------------------------------------------------------------------------------------

/** Hard cap on a whole run, whatever the options say: 10 minutes. */
export const RUN_MS_MAX = 600_000;
/** Hard cap on a `--short` run, cluster start and stop included: under a minute. */
export const SHORT_RUN_MS_MAX = 57_000;
/** Most bytes of page data in flight at once (queue depth × pages per request × page size). */
export const BYTES_IN_FLIGHT_MAX = 64 * 1024 * 1024;
/** Longest request timeout: the latency histogram is precise up to 100 s. */
export const REQUEST_TIMEOUT_MS_MAX = 100_000;
/** Most requests in flight. */
export const QUEUE_DEPTH_MAX = 1024;
/** Most rounds a run alternates subjects and baselines in. */
export const ROUNDS_MAX = 20;
/** Failed requests tolerated per subject (retryable ones only) before the subject is abandoned. */
export const ERRORS_MAX = 100;
/** Most pages of a benchmark volume (2^30: 4 TiB of 4 KiB pages, never written in full). */
export const VOLUME_PAGES_MAX = 2 ** 30;
/** Most pages a read workload fills before it is measured (256 MiB of 4 KiB pages). */
export const PREFILL_PAGES_MAX = 65_536;
const volumePagesDefault = 8_192;
const roundsDefault = 5;
const durationMsDefault = 10_000;
const warmupMsDefault = 1_000;
/**
 * Requests a subject's warm-up runs at least, if it can within WARMUP_EXTEND_FACTOR × warmupMs:
 * a slow workload (one replicated write in flight does ~300/s here) is otherwise measured with
 * code the JIT has not optimized yet. Measured on 2 cores: R=3 writes at 1 in flight, p50 3.11 ms
 * after 1 s of warm-up (~300 requests), 2.07 ms after 8 s.
 */
export const WARMUP_OPS_MIN = 2_000;
const WARMUP_EXTEND_FACTOR = 8;
/** The same in `--short` mode, to stay under SHORT_RUN_MS_MAX. */
const WARMUP_EXTEND_FACTOR_SHORT = 4;
const requestTimeoutMsDefault = 10_000;
const prefillPagesPerCall = 32;
const prefillInFlight = 8;
const payloadPoolPages = 256;
/** A failed request is sent again after this back-off, doubled at each failure of the same request up to RETRY_BACKOFF_MS_MAX. */
const retryBackoffMs = 5;
const RETRY_BACKOFF_MS_MAX = 500;
const baselineWarmupOpsMax = 500;

/** The baselines a subject can be compared with. */
export type BaselineName = "raw-append" | "nats-echo" | "jetstream-publish";
/** Every {@link BaselineName}. */
export const BASELINES: readonly BaselineName[] = ["raw-append", "nats-echo", "jetstream-publish"];

/** Textual form of the targets the default suite checks (for help texts and docs). */
export const TARGETS_DESCRIPTION = [
  "R=3 4 KiB writes at 64 in flight >= 0.6x the NATS echo and >= 1.0x JetStream R1",
  "R=1 4 KiB writes at 64 in flight >= 0.8x the NATS echo",
  "cached 4 KiB reads at 64 in flight >= 0.8x the NATS echo",
  "R=3 4 KiB write p50 at 1 in flight <= 1.6x (2 echo round trips + one fdatasync)",
  "R=3 128 KiB writes (32 pages x 4 KiB per request) >= 150 MB/s",
];

// ---------------------------------------------------------------------------------------------
// Options and results
// ---------------------------------------------------------------------------------------------

/** A running cluster to benchmark instead of a fresh in-process one. */
export interface BenchTarget {
  /** NATS server URL of the cluster. */
  natsUrl: string;
  /** Strata cluster name. */
  cluster: string;
  /** NATS user and password, for a server that admits only its users (cluster/nats-auth.ts). */
  auth?: { user: string; pass: string };
  /** TLS files, for a server that speaks TLS (cluster/nats-auth.ts `NatsTlsFiles`). */
  tls?: NatsTlsFiles;
}

/** Options of {@link runBench}. Every field is optional. */
export interface BenchOptions {
  /** The workload of a single run; absent: the default suite. */
  workload?: Workload;
  /** Fraction of reads of `mixed`, 0..1. Default 0.5. */
  readRatio?: number;
  /** 4096 or 8192. Default 4096. */
  pageSize?: 4096 | 8192;
  /** Adjacent pages per request (vectored), 1..64. Default 1. */
  pagesPerRequest?: number;
  /** Requests in flight (closed loop), 1..1024. Default 1. */
  queueDepth?: number;
  /** Replicas of the benchmark volume, 1 or 3. Default 1. */
  replicas?: 1 | 3;
  /** Measured time of each subject and each baseline over all rounds, ms. Default 10 000 (the suite: see `short`). */
  durationMs?: number;
  /** Measured requests of each subject (and each baseline) over all rounds; the run stops at whichever bound comes first. */
  ops?: number;
  /** Unmeasured time each subject runs before its first round, ms. Default 1 000. */
  warmupMs?: number;
  /** Rounds the subjects and baselines alternate in, 1..20. Default 5. */
  rounds?: number;
  /** Pages of each benchmark volume. Default 8 192; read workloads fill at most 65 536 of them first. */
  volumePages?: number;
  /** Shards of each benchmark volume. Default: the actor hosts of the in-process cluster, else the cores. */
  shards?: number;
  /** Baselines to measure; default every one that applies ([] for none). */
  baselines?: readonly BaselineName[];
  /** A running cluster; default a fresh in-process cluster. */
  target?: BenchTarget;
  /** In-process cluster: actor hosts per node. Default: the cores divided among the nodes (at least 1). */
  hosts?: number;
  /** In-process cluster: nodes. Default 3 when a subject wants 3 replicas, else 1. */
  nodes?: number;
  /** The default suite's short mode: under a minute in all on two cores. */
  short?: boolean;
  /** Seed of the workload generators. Default 1. */
  seed?: number;
  /** Bound on each request, ms. Default 10 000. */
  requestTimeoutMs?: number;
  /** Directory for the raw-append scratch file: the disk under test. Default the in-process cluster's data directory, else the OS temp dir. */
  scratchDir?: string;
  /** Where JSON and SVG results go; `null` writes nothing. Default `results`. */
  resultsDir?: string | null;
  /** Stem of the result file names. Default `strata-bench`. */
  name?: string;
  /** Print no tables (progress lines appear on a terminal only, and never when quiet). */
  quiet?: boolean;
  /**
   * A tighter time bound of the run's measuring than RUN_MS_MAX (or the short mode's), ms: what
   * the run does when its time runs out is tested with it. @internal
   */
  runMsMax?: number;
}

/** The figures of one round of a subject or a baseline. */
export interface RoundFigure {
  ops: number;
  seconds: number;
  opsPerSec: number;
  /** Median latency of the round, µs (for a raw append: of one batch). */
  p50Us: number;
  /** CPU time of this process (every thread) per request of the round, µs. */
  cpuUsPerOp?: number;
  /** CPU time of the in-process cluster's nats-server per request of the round, µs (Linux). */
  natsCpuUsPerOp?: number;
}

/**
 * CPU time spent between `start()` and `perOp()`: this process (client, and with an in-process
 * cluster its nodes' threads too) and, when its pid is known and /proc can be read, nats-server.
 * On a machine whose cores are all busy, requests per second follow CPU per request: the
 * figure says what each request costs, where the throughput alone cannot.
 */
class CpuMeter {
  private constructor(
    private readonly natsPid: number | undefined,
    private readonly process0: NodeJS.CpuUsage,
    private readonly nats0: number | undefined,
  ) {}

  static start(natsPid: number | undefined): CpuMeter {
    return new CpuMeter(natsPid, process.cpuUsage(), procCpuUs(natsPid));
  }

  /** µs of CPU per op since start; undefined where not measured. */
  perOp(ops: number): { cpuUsPerOp?: number; natsCpuUsPerOp?: number } {
    if (ops <= 0) return {};
    const p = process.cpuUsage(this.process0);
    const nats1 = procCpuUs(this.natsPid);
    return {
      cpuUsPerOp: (p.user + p.system) / ops,
      ...(this.nats0 !== undefined && nats1 !== undefined ? { natsCpuUsPerOp: (nats1 - this.nats0) / ops } : {}),
    };
  }
}

/** What one Strata workload measured. */
export interface SubjectResult {
  label: string;
  workload: Workload;
  readRatio: number;
  replicas: 1 | 3;
  pageSize: number;
  pagesPerRequest: number;
  queueDepth: number;
  /** False when the cluster refused the volume (e.g. 3 replicas in a build without replication). */
  available: boolean;
  /** Why the subject was not measured or stopped early. */
  unavailableReason?: string;
  /** Measured in fewer rounds than asked, the run's time bound reached: how many, and why. */
  roundsShort?: string;
  volume?: { name: string; id: string; shards: number; pageCount: number };
  /** Unmeasured warm-up before the rounds: requests completed and time (see WARMUP_OPS_MIN). */
  warmupOps: number;
  warmupSeconds: number;
  /** Completed measured requests, pages and bytes over every round. */
  ops: number;
  pages: number;
  bytes: number;
  /** Measured time over every round. */
  seconds: number;
  opsPerSec: number;
  /** Decimal megabytes of page data per second. */
  mbPerSec: number;
  /** Latency of one request, µs. */
  latency: Histogram;
  rounds: RoundFigure[];
  /** Failed requests by error code (retryable ones are retried up to ERRORS_MAX). */
  errors: Record<string, number>;
  /** Median over rounds of (subject ops/s ÷ baseline ops/s), by baseline. */
  ratios: Partial<Record<BaselineName, number>>;
  /** Median over rounds of the CPU per request, µs (see RoundFigure); NaN when not measured. */
  cpuUsPerOp: number;
  natsCpuUsPerOp: number;
  /** Median over rounds of this process's and nats-server's CPU per request together, µs (the table's column). */
  totalCpuUsPerOp: number;
}

/** What one baseline measured. */
export interface BaselineResult {
  name: BaselineName;
  label: string;
  payloadBytes: number;
  queueDepth: number;
  /** raw-append only: records per write + fdatasync. */
  recordsPerBatch?: number;
  available: boolean;
  unavailableReason?: string;
  /** As SubjectResult.roundsShort. */
  roundsShort?: string;
  /** Requests (records for raw-append) over every round. */
  ops: number;
  seconds: number;
  opsPerSec: number;
  mbPerSec: number;
  /** Latency of one request (raw-append: of one batch), µs. */
  latency: Histogram;
  rounds: RoundFigure[];
  /** Unmeasured warm-up before the rounds, as a subject's: requests (records for raw-append) and time. */
  warmupOps: number;
  warmupSeconds: number;
  note: string;
  /** Median over rounds of the CPU per request (raw-append: per record), µs; NaN when not measured. */
  cpuUsPerOp: number;
  natsCpuUsPerOp: number;
  /** Median over rounds of this process's and nats-server's CPU per request together, µs. */
  totalCpuUsPerOp: number;
}

/** A group: subjects and baselines with one payload and one queue depth. */
export interface GroupResult {
  label: string;
  payloadBytes: number;
  queueDepth: number;
  subjects: SubjectResult[];
  baselines: BaselineResult[];
}

/** One row of the target table. */
export interface TargetRow {
  target: string;
  /** The measured figure as text (`0.72x`, `118 MB/s`). */
  measured: string;
  /** The measured value, NaN when not available. */
  value: number;
  goal: string;
  /**
   * `met`, `NOT met`, `info` for context rows; without a figure: `not available in this build`,
   * `not measured` (the subject failed or was not available on the cluster), `baseline not run`
   * (left out with --baselines), `baseline failed`.
   */
  status: "met" | "NOT met" | "info" | "not available in this build" | "not measured" | "baseline not run" | "baseline failed";
}

/** The result of {@link runBench}. */
export interface BenchResult {
  kind: "single" | "suite";
  /** The options after defaults (the target without credentials: URL and cluster name only). */
  options: ResolvedOptions;
  machine: { cpus: number; cpuModel: string; node: string; platform: string; scratchDir: string };
  target: { kind: "in-process" | "running"; natsUrl: string; cluster: string; nodes?: number; hosts?: number };
  startedAt: string;
  /** Wall time of the whole run, ms. */
  wallMs: number;
  groups: GroupResult[];
  /** The suite's target table (empty for a single run). */
  targets: TargetRow[];
  /** R=1 4 KiB throughput at 1 and 64 in flight beside the echo (suite only). */
  closingNote: Array<Record<string, Cell>>;
  notes: string[];
  /**
   * What was asked for and not measured in full: subjects not available, stopped in a round, or
   * failed during warm-up, and baselines that failed. Not empty: `strata bench` exits 1.
   */
  failures: string[];
  /** Files written (JSON and SVG), when resultsDir is not null. */
  files: string[];
  /**
   * Why the files could not all be written (`<code>: <message>`), when they could not: the
   * tables are printed all the same, and `strata bench` says it in one line and exits 1.
   */
  filesError?: string;
}

/** The options of a run after defaults and checks. */
export interface ResolvedOptions {
  workload: Workload | "suite";
  readRatio: number;
  pageSize: 4096 | 8192;
  pagesPerRequest: number;
  queueDepth: number;
  replicas: 1 | 3;
  durationMs: number;
  ops: number | null;
  warmupMs: number;
  rounds: number;
  volumePages: number;
  shards: number | null;
  baselines: BaselineName[];
  short: boolean;
  seed: number;
  requestTimeoutMs: number;
  /** Actor hosts per node; null: the cores divided among the nodes (at least 1). */
  hosts: number | null;
  nodes: number | null;
  resultsDir: string | null;
  name: string;
  quiet: boolean;
  /** Whether `baselines` was given (a baseline asked for that cannot apply is then an error). */
  baselinesGiven: boolean;
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

function checkInteger(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${value}`);
  return value;
}

/**
 * The options after defaults, checked alone and together. Throws a RangeError naming the first
 * bad or conflicting option (`strata bench` answers it as a usage error, exit 2).
 */
export function resolveOptions(opts: BenchOptions): ResolvedOptions {
  const suite = opts.workload === undefined;
  if (!suite && !WORKLOADS.includes(opts.workload!)) throw new RangeError(`workload must be one of ${WORKLOADS.join(", ")}, got ${String(opts.workload)}`);
  if (suite) {
    // The suite's groups have fixed shapes: a shape given for it would be silently ignored.
    const shaped = (["readRatio", "pageSize", "pagesPerRequest", "queueDepth", "replicas"] as const).filter((k) => opts[k] !== undefined);
    if (shaped.length > 0) throw new RangeError(`${shaped.join(", ")}: only with workload (the suite's groups have fixed shapes)`);
  }
  const readRatio = opts.readRatio ?? 0.5;
  if (!(readRatio >= 0 && readRatio <= 1)) throw new RangeError(`readRatio must be in 0..1, got ${readRatio}`);
  if (opts.readRatio !== undefined && opts.workload !== "mixed") throw new RangeError(`readRatio applies to the mixed workload only, not ${opts.workload ?? "the suite"}`);
  const pageSize = opts.pageSize ?? 4096;
  if (pageSize !== 4096 && pageSize !== 8192) throw new RangeError(`pageSize must be 4096 or 8192, got ${String(pageSize)}`);
  const replicas = opts.replicas ?? 1;
  if (replicas !== 1 && replicas !== 3) throw new RangeError(`replicas must be 1 or 3, got ${String(replicas)}`);
  const short = opts.short ?? false;
  const durationMs = opts.durationMs ?? (suite ? (short ? 2_100 : 15_000) : durationMsDefault);
  if (!(Number.isSafeInteger(durationMs) && durationMs > 0 && durationMs <= RUN_MS_MAX)) throw new RangeError(`durationMs must be an integer in 1..${RUN_MS_MAX}, got ${durationMs}`);
  const ops = opts.ops === undefined ? null : checkInteger("ops", opts.ops, 1, Number.MAX_SAFE_INTEGER);
  const warmupMs = opts.warmupMs ?? (short ? 300 : warmupMsDefault);
  if (!(Number.isSafeInteger(warmupMs) && warmupMs >= 0 && warmupMs <= 60_000)) throw new RangeError(`warmupMs must be an integer in 0..60000, got ${warmupMs}`);
  const baselinesGiven = opts.baselines !== undefined;
  const baselines = [...(opts.baselines ?? BASELINES)];
  for (const b of baselines) if (!BASELINES.includes(b)) throw new RangeError(`unknown baseline ${String(b)}; known: ${BASELINES.join(", ")}`);
  const twice = baselines.find((b, i) => baselines.indexOf(b) !== i);
  if (twice !== undefined) throw new RangeError(`baseline ${twice} given twice`);
  const name = opts.name ?? "strata-bench";
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new RangeError(`name must match [A-Za-z0-9._-]+, got ${JSON.stringify(name)}`);
  const pagesPerRequest = checkInteger("pagesPerRequest", opts.pagesPerRequest ?? 1, 1, PAGES_PER_REQUEST_BENCH_MAX);
  const queueDepth = checkInteger("queueDepth", opts.queueDepth ?? 1, 1, QUEUE_DEPTH_MAX);
  const rounds = checkInteger("rounds", opts.rounds ?? (short ? 3 : roundsDefault), 1, ROUNDS_MAX);
  const volumePages = checkInteger("volumePages", opts.volumePages ?? (short ? 4_096 : volumePagesDefault), 1, VOLUME_PAGES_MAX);
  const shards = opts.shards === undefined ? null : checkInteger("shards", opts.shards, 1, 256);
  const hosts = opts.hosts === undefined ? null : checkInteger("hosts", opts.hosts, 1, 64);
  const nodes = opts.nodes === undefined ? null : checkInteger("nodes", opts.nodes, 1, 16);
  const requestTimeoutMs = checkInteger("requestTimeoutMs", opts.requestTimeoutMs ?? requestTimeoutMsDefault, 1, REQUEST_TIMEOUT_MS_MAX);
  // The shapes the run will measure: the suite's largest, or the workload's.
  const shapes = suite ? [{ queueDepth: 64, pagesPerRequest: 1 }, { queueDepth: 16, pagesPerRequest: 32 }] : [{ queueDepth, pagesPerRequest }];
  for (const sh of shapes) {
    if (volumePages < sh.pagesPerRequest) throw new RangeError(`volumePages (${volumePages}) must be at least the pages of one request (${sh.pagesPerRequest})`);
    const inFlight = sh.queueDepth * sh.pagesPerRequest * pageSize;
    if (inFlight > BYTES_IN_FLIGHT_MAX) throw new RangeError(`${sh.queueDepth} requests of ${sh.pagesPerRequest} x ${pageSize} B put ${inFlight} bytes in flight, more than ${BYTES_IN_FLIGHT_MAX}: lower queueDepth or pagesPerRequest`);
    // Fewer requests than queueDepth in a round would measure a lower depth than its baselines run at.
    if (ops !== null && ops < sh.queueDepth * rounds) throw new RangeError(`ops (${ops}) must be at least queueDepth x rounds (${sh.queueDepth} x ${rounds}), so that every round runs at its queue depth`);
  }
  if (shards !== null && shards > volumePages) throw new RangeError(`shards (${shards}) must not exceed volumePages (${volumePages})`);
  if (opts.target !== undefined && (hosts !== null || nodes !== null)) throw new RangeError("hosts and nodes shape an in-process cluster; a running cluster (target) has its own");
  const wantsReplicas3 = suite || replicas === 3;
  if (opts.target === undefined && wantsReplicas3 && nodes !== null && nodes < 3) throw new RangeError(`nodes must be at least 3 when three-way replication is measured (${suite ? "the suite does" : "replicas 3"}), got ${nodes}`);
  if (!suite && baselinesGiven) {
    const writes = opts.workload === "randwrite" || opts.workload === "seqwrite" || (opts.workload === "mixed" && readRatio < 1);
    const writeOnly = baselines.filter((b) => b !== "nats-echo");
    if (!writes && writeOnly.length > 0) throw new RangeError(`--baselines ${writeOnly.join(",")}: ${writeOnly.length > 1 ? "these measure" : "it measures"} writes, and ${opts.workload}${opts.workload === "mixed" ? " with readRatio 1" : ""} writes nothing`);
  }
  return {
    workload: suite ? "suite" : opts.workload!,
    readRatio,
    pageSize,
    pagesPerRequest,
    queueDepth,
    replicas,
    durationMs,
    ops,
    warmupMs,
    rounds,
    volumePages,
    shards,
    baselines,
    short,
    seed: checkInteger("seed", opts.seed ?? 1, 0, 2 ** 32 - 1),
    requestTimeoutMs,
    hosts,
    nodes,
    resultsDir: opts.resultsDir === undefined ? "results" : opts.resultsDir,
    name,
    quiet: opts.quiet ?? false,
    baselinesGiven,
  };
}

/**
 * Checks, before anything runs, that the results can be written (their directory made and a
 * file written in it) and that the scratch directory is an existing directory files can be
 * written in: otherwise a run found out only at its end, its measurements lost. Throws a
 * RangeError naming the option (as its flag when `asFlags`) and the cause.
 */
export function checkDirectories(resultsDir: string | null, scratchDir: string | undefined, asFlags = false): void {
  const results = resultsDir === null ? undefined : directoryProblem(resultsDir, true);
  if (results !== undefined) throw new RangeError(`${asFlags ? "--results-dir" : "resultsDir"} ${resultsDir}: the results cannot be written there: ${results}`);
  const scratch = scratchDir === undefined ? undefined : directoryProblem(scratchDir, false);
  if (scratch !== undefined) throw new RangeError(`${asFlags ? "--scratch-dir" : "scratchDir"} ${scratchDir}: expected an existing directory files can be written in: ${scratch}`);
}

// ---------------------------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------------------------

/** A Strata workload to measure. */
interface SubjectSpec {
  label: string;
  workload: Workload;
  readRatio: number;
  replicas: 1 | 3;
  pageSize: 4096 | 8192;
  pagesPerRequest: number;
}

/** A group to run: subjects and baselines with the same payload and queue depth. */
interface GroupSpec {
  label: string;
  pageSize: 4096 | 8192;
  pagesPerRequest: number;
  queueDepth: number;
  subjects: SubjectSpec[];
  baselines: BaselineName[];
}

function payloadLabel(pageSize: number, pagesPerRequest: number): string {
  const kib = (pageSize * pagesPerRequest) / 1024;
  return pagesPerRequest === 1 ? `${kib} KiB` : `${kib} KiB (${pagesPerRequest} x ${pageSize / 1024} KiB)`;
}

function subjectLabel(s: Omit<SubjectSpec, "label">): string {
  const what = s.workload === "randread" || s.workload === "seqread" ? `${s.workload} (cached)` : s.workload === "mixed" ? `mixed ${Math.round(s.readRatio * 100)}% reads` : s.workload;
  return `R=${s.replicas} ${what}`;
}

function subject(s: Omit<SubjectSpec, "label">): SubjectSpec {
  return { ...s, label: subjectLabel(s) };
}

/** Baselines that make sense for a group: the disk and JetStream only for groups that write. */
function applicableBaselines(wanted: readonly BaselineName[], writes: boolean): BaselineName[] {
  return wanted.filter((b) => b === "nats-echo" || writes);
}

/** The groups of a run: one for a single workload, three for the suite. */
function planGroups(o: ResolvedOptions): GroupSpec[] {
  if (o.workload !== "suite") {
    const s = subject({ workload: o.workload, readRatio: o.readRatio, replicas: o.replicas, pageSize: o.pageSize, pagesPerRequest: o.pagesPerRequest });
    const writes = o.workload === "randwrite" || o.workload === "seqwrite" || (o.workload === "mixed" && o.readRatio < 1);
    return [
      {
        label: `${payloadLabel(o.pageSize, o.pagesPerRequest)} at ${o.queueDepth} in flight`,
        pageSize: o.pageSize,
        pagesPerRequest: o.pagesPerRequest,
        queueDepth: o.queueDepth,
        subjects: [s],
        baselines: applicableBaselines(o.baselines, writes),
      },
    ];
  }
  const small = { readRatio: 0.5, pageSize: 4096 as const, pagesPerRequest: 1 };
  const big = { readRatio: 0.5, pageSize: 4096 as const, pagesPerRequest: 32 };
  const all = o.baselines;
  return [
    {
      label: "4 KiB at 64 in flight",
      pageSize: 4096,
      pagesPerRequest: 1,
      queueDepth: 64,
      subjects: [
        subject({ ...small, workload: "randwrite", replicas: 1 }),
        subject({ ...small, workload: "randread", replicas: 1 }),
        subject({ ...small, workload: "randwrite", replicas: 3 }),
      ],
      baselines: applicableBaselines(all, true),
    },
    {
      label: "4 KiB at 1 in flight",
      pageSize: 4096,
      pagesPerRequest: 1,
      queueDepth: 1,
      subjects: [
        subject({ ...small, workload: "randwrite", replicas: 1 }),
        subject({ ...small, workload: "randread", replicas: 1 }),
        subject({ ...small, workload: "randwrite", replicas: 3 }),
      ],
      // JetStream at 1 in flight is not a target; leaving it out keeps the short suite short.
      baselines: all.filter((b) => b !== "jetstream-publish"),
    },
    {
      label: "128 KiB (32 x 4 KiB) at 16 in flight",
      pageSize: 4096,
      pagesPerRequest: 32,
      queueDepth: 16,
      subjects: [subject({ ...big, workload: "seqwrite", replicas: 1 }), subject({ ...big, workload: "seqwrite", replicas: 3 })],
      baselines: applicableBaselines(all, true),
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Target (cluster) handling
// ---------------------------------------------------------------------------------------------

interface Env {
  client: StrataClient;
  natsUrl: string;
  /** The user the client and the baselines connect as, and their TLS files, if any. */
  auth: { user: string; pass: string } | undefined;
  tls: NatsTlsFiles | undefined;
  cluster: string;
  scratchDir: string;
  /** Default shards of a volume. */
  shards: number;
  inProcess: InProcessCluster | undefined;
  nodes: number | undefined;
  hosts: number | undefined;
  close(): Promise<void>;
}

async function openEnv(o: ResolvedOptions, target: BenchTarget | undefined, scratchDirOption: string | undefined, wantsReplicas3: boolean): Promise<Env> {
  if (target !== undefined) {
    const client = await connect({ servers: target.natsUrl, cluster: target.cluster, timeoutMs: o.requestTimeoutMs, name: "strata-bench", ...(target.auth ?? {}), ...(target.tls === undefined ? {} : { tls: target.tls }) });
    const scratchDir = scratchDirOption ?? os.tmpdir();
    return {
      client,
      natsUrl: target.natsUrl,
      auth: target.auth,
      tls: target.tls,
      cluster: target.cluster,
      scratchDir,
      shards: o.shards ?? Math.max(1, os.cpus().length),
      inProcess: undefined,
      nodes: undefined,
      hosts: undefined,
      close: () => client.close(),
    };
  }
  // Replicas of a shard go to different nodes, so three replicas need three nodes.
  const nodes = o.nodes ?? (wantsReplicas3 ? 3 : 1);
  // As a node's default: the cores less one shared among the nodes; more host threads than that
  // only add wake-ups and split the group commit (measured on 2 cores: R=3 writes ~30 % faster with
  // 3 nodes × 1 host than 3 × 2; R=1 writes and reads faster with 1 host than 2).
  const hosts = o.hosts ?? defaultHostsPerNode(Math.max(1, os.cpus().length), nodes);
  const dataDir = fs.mkdtempSync(path.join(process.env.STRATA_BENCH_DIR ?? os.tmpdir(), "strata-bench-"));
  let cluster: InProcessCluster;
  try {
    cluster = await startCluster({ nodes, hosts, jetstream: true, dataDir, clientTimeoutMs: o.requestTimeoutMs, cluster: "bench" });
  } catch (err) {
    removeDirectory(dataDir);
    throw err;
  }
  const client = cluster.client;
  return {
    client,
    natsUrl: cluster.natsUrl,
    auth: undefined,
    tls: undefined,
    cluster: cluster.cluster,
    scratchDir: scratchDirOption ?? dataDir,
    shards: o.shards ?? hosts,
    inProcess: cluster,
    nodes,
    hosts,
    close: async () => {
      try {
        await cluster.stop();
      } finally {
        removeDirectory(dataDir);
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

/** The wall-clock budget of a run: every phase asks it how long it may still take. */
class Budget {
  private readonly deadlineMs: number;
  constructor(readonly totalMs: number) {
    this.deadlineMs = performance.now() + totalMs;
  }
  /** ms left, never below 0. */
  remainingMs(): number {
    return Math.max(0, this.deadlineMs - performance.now());
  }
  /** `wantedMs` cut to what is left. */
  cap(wantedMs: number): number {
    return Math.min(wantedMs, this.remainingMs());
  }
}

function errorCode(err: unknown): string {
  const code: unknown = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "internal";
}

/** Error codes a closed loop retries (after a short back-off) instead of abandoning the subject. */
const RETRYABLE = new Set(["overloaded", "timeout", "unavailable", "not_leader", "stale_term", "device_failed", "future_lsn"]);

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A subject ready to be measured: its volume exists (and was filled for reads). */
interface PreparedSubject {
  spec: SubjectSpec;
  result: SubjectResult;
  volume?: Volume;
  generator?: WorkloadGenerator;
  payload: Uint8Array[];
  /** Set when a round failed: the subject is not measured again. */
  stopped: boolean;
}

function emptySubject(spec: SubjectSpec, queueDepth: number): SubjectResult {
  return {
    label: spec.label,
    workload: spec.workload,
    readRatio: spec.readRatio,
    replicas: spec.replicas,
    pageSize: spec.pageSize,
    pagesPerRequest: spec.pagesPerRequest,
    queueDepth,
    available: true,
    warmupOps: 0,
    warmupSeconds: 0,
    ops: 0,
    pages: 0,
    bytes: 0,
    seconds: 0,
    opsPerSec: 0,
    mbPerSec: 0,
    latency: new Histogram(),
    rounds: [],
    errors: {},
    ratios: {},
    cpuUsPerOp: NaN,
    natsCpuUsPerOp: NaN,
    totalCpuUsPerOp: NaN,
  };
}

let volumeCounter = 0;

function volumeName(): string {
  volumeCounter += 1;
  return `bench-${process.pid}-${volumeCounter}-${crypto.randomBytes(3).toString("hex")}`;
}

/**
 * Builds the request of `pages` for `volume`: page data comes from a pool of seeded random pages,
 * chosen by page number, so no request copies or generates data in the measured loop.
 */
function writeRequest(pages: readonly number[], payload: readonly Uint8Array[]): PageWrite[] {
  const out = new Array<PageWrite>(pages.length);
  for (let i = 0; i < pages.length; i++) out[i] = { page: pages[i]!, data: payload[pages[i]! % payload.length]! };
  return out;
}

/** Writes the first `pages` pages of a volume (untimed), so reads find data in the page cache. */
async function prefill(volume: Volume, pages: number, payload: readonly Uint8Array[], budget: Budget): Promise<void> {
  let next = 0;
  const deadline = performance.now() + budget.remainingMs();
  const worker = async (): Promise<void> => {
    while (next < pages) {
      if (performance.now() > deadline) throw new Error(`filling the volume did not finish within the run's time bound`);
      const first = next;
      const count = Math.min(prefillPagesPerCall, pages - first);
      next += count;
      const list = Array.from({ length: count }, (_, i) => first + i);
      await volume.writePages(writeRequest(list, payload));
    }
  };
  await Promise.all(Array.from({ length: prefillInFlight }, worker));
  // Read every page once (untimed), in the same slices it was written in: a shard caches the pages
  // of the writes it applies, but one its cache let go for lack of room, or one written before the
  // shard's replica restarted, is read from its log record or image (fetched and checksummed) the
  // first time; after this pass every page of the region has been read, and the figure is of
  // cached reads as far as the shard's cache holds the region.
  next = 0;
  const reader = async (): Promise<void> => {
    while (next < pages) {
      if (performance.now() > deadline) throw new Error(`warming the page cache did not finish within the run's time bound`);
      const first = next;
      const count = Math.min(prefillPagesPerCall, pages - first);
      next += count;
      await volume.readPages(Array.from({ length: count }, (_, i) => first + i));
    }
  };
  await Promise.all(Array.from({ length: prefillInFlight }, reader));
}

/**
 * Creates (and for reads fills) a subject's volume. Its name goes to `created` before the create
 * is sent, so that the run deletes it whatever happens next (a create that timed out may still
 * have been done; a fill may fail).
 */
async function prepareSubject(env: Env, o: ResolvedOptions, spec: SubjectSpec, queueDepth: number, index: number, budget: Budget, created: string[]): Promise<PreparedSubject> {
  const result = emptySubject(spec, queueDepth);
  const payload = payloadPages(spec.pageSize, payloadPoolPages, o.seed + index);
  const prepared: PreparedSubject = { spec, result, payload, stopped: false };
  const pageCount = Math.max(o.volumePages, spec.pagesPerRequest);
  const name = volumeName();
  created.push(name);
  let info: VolumeInfo;
  try {
    // One shard a host by default, no more than the volume has pages (`--shards` is checked
    // against them); stripes of 256 pages, smaller for a small volume so that every shard holds pages.
    const shards = Math.min(env.shards, pageCount);
    const stripePages = Math.max(1, Math.min(256, Math.floor(pageCount / shards)));
    info = await env.client.createVolume({ name, pageCount, pageSize: spec.pageSize, shards, stripePages, replicas: spec.replicas });
  } catch (err) {
    // A build without replication refuses replicas > 1 (bad_request); a cluster with too few
    // nodes for them answers unavailable. Either way the subject is reported, not failed.
    if (err instanceof ProtocolError && (err.code === "bad_request" || err.code === "unavailable") && spec.replicas !== 1) {
      result.available = false;
      result.unavailableReason = `${err.code === "bad_request" ? "not available in this build" : "not available on this cluster"} (${err.code}): ${err.message}`;
      prepared.stopped = true;
      return prepared;
    }
    // Any other failure: not measured, and said so; the run goes on with what it can measure.
    result.unavailableReason = `not measured: its volume was not created: ${err instanceof ProtocolError ? `${err.code}: ` : ""}${(err as Error).message}`;
    prepared.stopped = true;
    return prepared;
  }
  result.volume = { name, id: info.id, shards: info.shards, pageCount: info.pageCount };
  const volume = env.client.volume(name);
  prepared.volume = volume;
  prepared.generator = new WorkloadGenerator({
    workload: spec.workload,
    pageCount,
    pagesPerRequest: spec.pagesPerRequest,
    readRatio: spec.readRatio,
    seed: o.seed + index,
  });
  if (readsPages(spec.workload, spec.readRatio)) {
    // Reads stay within the filled region: the workload's volume is the filled part.
    const filled = Math.min(pageCount, PREFILL_PAGES_MAX);
    if (filled < pageCount) {
      prepared.generator = new WorkloadGenerator({ workload: spec.workload, pageCount: filled, pagesPerRequest: spec.pagesPerRequest, readRatio: spec.readRatio, seed: o.seed + index });
    }
    try {
      await prefill(volume, filled, payload, budget);
    } catch (err) {
      // Not measured (the run's time bound reached, a write refused): the run goes on with what
      // it can measure, and says so.
      result.unavailableReason = `not measured: filling its volume failed: ${(err as Error).message}`;
      prepared.stopped = true;
    }
  }
  return prepared;
}

/**
 * Runs one subject with queueDepth concurrent requests until `opsMax` requests were started or
 * `durationMs` passed. A request that fails with a retryable error is counted and sent again
 * after a back-off, up to ERRORS_MAX errors per subject; its latency runs from its first attempt
 * to its success, so a stall shows in the percentiles. Any other error stops the loop and is
 * thrown, and the round's figures with it.
 */
async function closedLoop(s: PreparedSubject, queueDepth: number, durationMs: number, opsMax: number, natsPid?: number): Promise<RoundFigure & { pages: number; latency: Histogram }> {
  const volume = s.volume!;
  const generator = s.generator!;
  const pageSize = s.spec.pageSize;
  let started = 0;
  let completed = 0;
  let pages = 0;
  let failure: { error: unknown } | undefined;
  const cpu = CpuMeter.start(natsPid);
  const startNs = process.hrtime.bigint();
  const deadlineNs = startNs + BigInt(Math.round(durationMs * 1e6));
  const latency = new Histogram();
  const worker = async (): Promise<void> => {
    while (failure === undefined && started < opsMax && process.hrtime.bigint() < deadlineNs) {
      started += 1;
      const request = generator.next();
      const opStartNs = process.hrtime.bigint();
      // A shard electing a leader or a node restarting answers at once (no responders): without a
      // growing back-off, a second of that would use up ERRORS_MAX.
      let backoffMs = retryBackoffMs;
      for (;;) {
        try {
          if (request.kind === "write") {
            await volume.writePages(writeRequest(request.pages, s.payload));
          } else {
            const read = await volume.readPages(request.pages);
            if (read.pages.length !== request.pages.length || read.pages[0]!.length !== pageSize) {
              throw new Error(`read of ${request.pages.length} pages returned ${read.pages.length} pages of ${read.pages[0]?.length ?? 0} bytes`);
            }
          }
          break;
        } catch (error) {
          const code = errorCode(error);
          s.result.errors[code] = (s.result.errors[code] ?? 0) + 1;
          const errorsTotal = Object.values(s.result.errors).reduce((a, b) => a + b, 0);
          if (!RETRYABLE.has(code) || errorsTotal > ERRORS_MAX) failure ??= { error };
          if (failure !== undefined) return;
          await sleep(backoffMs);
          backoffMs = Math.min(RETRY_BACKOFF_MS_MAX, backoffMs * 2);
        }
      }
      latency.record(Number(process.hrtime.bigint() - opStartNs) / 1000);
      completed += 1;
      pages += request.pages.length;
    }
  };
  await Promise.all(Array.from({ length: Math.min(queueDepth, opsMax) }, worker));
  const seconds = Number(process.hrtime.bigint() - startNs) / 1e9;
  if (failure !== undefined) {
    const cause = failure.error;
    throw new Error(`${s.spec.label}: a request failed after ${completed} completed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
  return { ops: completed, seconds, opsPerSec: seconds > 0 ? completed / seconds : 0, p50Us: latency.percentile(50), pages, latency, ...cpu.perOp(completed) };
}

function emptyBaseline(name: BaselineName, group: GroupSpec): BaselineResult {
  const payloadBytes = group.pageSize * group.pagesPerRequest;
  const labels: Record<BaselineName, string> = {
    "raw-append": `raw append + fdatasync, ${group.queueDepth}/batch`,
    "nats-echo": "NATS request/reply echo",
    "jetstream-publish": "JetStream R1 file publish",
  };
  const notes: Record<BaselineName, string> = {
    "raw-append": `One write of ${group.queueDepth} records of ${payloadBytes} bytes + one fdatasync per batch on the same disk, the file grown with zeros ahead as a shard log grows its segments: the durability ceiling at this batching.`,
    "nats-echo": "NATS request/reply to a responder that only echoes the payload both ways: the transport ceiling.",
    "jetstream-publish": jetstreamNote,
  };
  return {
    name,
    label: labels[name],
    payloadBytes,
    queueDepth: group.queueDepth,
    ...(name === "raw-append" ? { recordsPerBatch: group.queueDepth } : {}),
    available: true,
    ops: 0,
    seconds: 0,
    opsPerSec: 0,
    mbPerSec: 0,
    latency: new Histogram(),
    rounds: [],
    warmupOps: 0,
    warmupSeconds: 0,
    note: notes[name],
    cpuUsPerOp: NaN,
    natsCpuUsPerOp: NaN,
    totalCpuUsPerOp: NaN,
  };
}

/** Runs one round of a baseline; its latency goes into `b.latency`. */
async function baselineRound(env: Env, b: BaselineResult, durationMs: number, opsMax: number | null, requestTimeoutMs: number): Promise<RoundFigure> {
  const cpu = CpuMeter.start(env.inProcess?.nats.pid);
  if (b.name === "raw-append") {
    const perBatch = b.recordsPerBatch!;
    const r = await rawAppendBaseline({
      dir: path.join(env.scratchDir, "raw-append"),
      recordBytes: b.payloadBytes,
      recordsPerBatch: perBatch,
      durationMs,
      ...(opsMax === null ? {} : { records: opsMax }),
    });
    b.latency.merge(r.batchLatency);
    return { ops: r.records, seconds: r.seconds, opsPerSec: r.recordsPerSec, p50Us: r.batchLatency.percentile(50), ...cpu.perOp(r.records) };
  }
  const options = {
    url: env.natsUrl,
    ...(env.auth === undefined ? {} : { auth: env.auth }),
    ...(env.tls === undefined ? {} : { tls: env.tls }),
    payloadBytes: b.payloadBytes,
    inFlight: b.queueDepth,
    durationMs,
    warmupOps: Math.min(baselineWarmupOpsMax, b.queueDepth * 4),
    requestTimeoutMs,
    ...(opsMax === null ? {} : { ops: opsMax }),
  };
  const r = b.name === "nats-echo" ? await natsEchoBaseline(options) : await jetstreamPublishBaseline(options);
  b.latency.merge(r.latency);
  // The CPU of the round covers its warm-up requests too (and its connections' setup).
  return { ops: r.ops, seconds: r.seconds, opsPerSec: r.opsPerSec, p50Us: r.latency.percentile(50), ...cpu.perOp(r.ops + options.warmupOps) };
}

function median(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (finite.length === 0) return NaN;
  const mid = Math.floor(finite.length / 2);
  return finite.length % 2 === 1 ? finite[mid]! : (finite[mid - 1]! + finite[mid]!) / 2;
}

/** Requests of round `round` when `ops` are spread over `rounds` rounds (the first rounds take the remainder). */
function opsOfRound(ops: number | null, rounds: number, round: number): number | null {
  if (ops === null) return null;
  return Math.floor(ops / rounds) + (round < ops % rounds ? 1 : 0);
}

async function runGroup(env: Env, o: ResolvedOptions, group: GroupSpec, groupIndex: number, budget: Budget): Promise<GroupResult> {
  const ticker = new PhaseProgress(o.quiet, group.label);
  const prepared: PreparedSubject[] = [];
  const created: string[] = [];
  try {
    for (let i = 0; i < group.subjects.length; i++) {
      const spec = group.subjects[i]!;
      ticker.phase(`${spec.label}: creating the volume${readsPages(spec.workload, spec.readRatio) ? " and filling it" : ""}`);
      prepared.push(await prepareSubject(env, o, spec, group.queueDepth, groupIndex * 16 + i, budget, created));
    }
    const baselines = group.baselines.map((name) => emptyBaseline(name, group));
    // Warm-up: each subject runs unmeasured once, so JIT, connections and caches are warm.
    const extend = o.short ? WARMUP_EXTEND_FACTOR_SHORT : WARMUP_EXTEND_FACTOR;
    for (const s of prepared) {
      if (s.stopped || o.warmupMs === 0) continue;
      ticker.phase(`${s.spec.label}: warming up`, o.warmupMs);
      try {
        const first = await closedLoop(s, group.queueDepth, budget.cap(o.warmupMs), Number.MAX_SAFE_INTEGER);
        s.result.warmupOps = first.ops;
        s.result.warmupSeconds = first.seconds;
        if (first.ops < WARMUP_OPS_MIN) {
          ticker.phase(`${s.spec.label}: warming up (a slow subject: until ${WARMUP_OPS_MIN} requests)`, o.warmupMs * (extend - 1));
          const more = await closedLoop(s, group.queueDepth, budget.cap(o.warmupMs * (extend - 1)), WARMUP_OPS_MIN - first.ops);
          s.result.warmupOps += more.ops;
          s.result.warmupSeconds += more.seconds;
        }
      } catch (err) {
        s.stopped = true;
        s.result.unavailableReason = `failed during warm-up: ${(err as Error).message}`;
      }
    }
    // The baselines too: the code of their first round is otherwise cold (the echo's responder
    // and replies run nowhere else), which made a first round's echo several times as costly
    // per request as the next ones' in `--short` runs. Unmeasured: latency and figures thrown away.
    for (const b of baselines) {
      if (o.warmupMs === 0) break;
      const durationMs = budget.cap(o.warmupMs);
      if (durationMs <= 0) break;
      ticker.phase(`${b.label}: warming up`, durationMs);
      try {
        const figure = await baselineRound(env, { ...b, latency: new Histogram() }, durationMs, null, o.requestTimeoutMs);
        b.warmupOps = figure.ops;
        b.warmupSeconds = figure.seconds;
      } catch (err) {
        b.available = false;
        b.unavailableReason = `failed during warm-up: ${(err as Error).message}`;
      }
    }
    const roundMs = o.durationMs / o.rounds;
    for (let round = 0; round < o.rounds; round++) {
      const opsMax = opsOfRound(o.ops, o.rounds, round);
      if (opsMax === 0) continue;
      for (const s of prepared) {
        if (s.stopped) continue;
        const durationMs = budget.cap(roundMs);
        // The run's time bound reached: no round of no time (it would count as measured).
        if (durationMs <= 0) break;
        ticker.phase(`round ${round + 1}/${o.rounds}: ${s.spec.label}`, durationMs);
        try {
          const figure = await closedLoop(s, group.queueDepth, durationMs, opsMax ?? Number.MAX_SAFE_INTEGER, env.inProcess?.nats.pid);
          // Only a round that completed counts: its latency, requests and time together.
          const { pages: _pages, latency, ...roundFigure } = figure;
          s.result.latency.merge(latency);
          s.result.rounds.push(roundFigure);
          s.result.ops += figure.ops;
          s.result.pages += figure.pages;
          s.result.seconds += figure.seconds;
        } catch (err) {
          s.stopped = true;
          s.result.unavailableReason = `stopped in round ${round + 1} of ${o.rounds}: ${(err as Error).message}`;
        }
      }
      for (const b of baselines) {
        if (!b.available) continue;
        const durationMs = budget.cap(roundMs);
        if (durationMs <= 0) break;
        ticker.phase(`round ${round + 1}/${o.rounds}: ${b.label}`, durationMs);
        try {
          const figure = await baselineRound(env, b, durationMs, opsMax, o.requestTimeoutMs);
          b.rounds.push(figure);
          b.ops += figure.ops;
          b.seconds += figure.seconds;
        } catch (err) {
          b.available = false;
          b.unavailableReason = (err as Error).message;
        }
      }
      if (budget.remainingMs() <= 0) break;
    }
    // What the run's time bound left out: a subject or baseline with no round is not measured;
    // one with fewer rounds than asked is measured from those it has, and says so.
    const roundsAsked = Array.from({ length: o.rounds }, (_, round) => opsOfRound(o.ops, o.rounds, round)).filter((n) => n !== 0).length;
    const outOfTime = `the run's time bound (${Math.round(budget.totalMs / 1000)} s) ran out`;
    for (const s of prepared) {
      if (s.stopped) continue;
      if (s.result.rounds.length === 0) s.result.unavailableReason = `not measured: ${outOfTime} before its first round`;
      else if (s.result.rounds.length < roundsAsked) s.result.roundsShort = `${s.result.rounds.length} of ${roundsAsked} rounds: ${outOfTime}`;
    }
    for (const b of baselines) {
      if (!b.available) continue;
      if (b.rounds.length === 0) {
        b.available = false;
        b.unavailableReason = `not measured: ${outOfTime} before its first round`;
      } else if (b.rounds.length < roundsAsked) b.roundsShort = `${b.rounds.length} of ${roundsAsked} rounds: ${outOfTime}`;
    }
    for (const s of prepared) {
      const r = s.result;
      r.bytes = r.pages * r.pageSize;
      r.opsPerSec = r.seconds > 0 ? r.ops / r.seconds : 0;
      r.mbPerSec = r.seconds > 0 ? r.bytes / 1e6 / r.seconds : 0;
      cpuMedians(r);
      for (const b of baselines) {
        if (!b.available || r.rounds.length === 0) continue;
        const n = Math.min(r.rounds.length, b.rounds.length);
        const perRound = Array.from({ length: n }, (_, i) => r.rounds[i]!.opsPerSec / b.rounds[i]!.opsPerSec);
        r.ratios[b.name] = median(perRound);
      }
    }
    for (const b of baselines) {
      b.opsPerSec = b.seconds > 0 ? b.ops / b.seconds : 0;
      b.mbPerSec = b.seconds > 0 ? (b.ops * b.payloadBytes) / 1e6 / b.seconds : 0;
      cpuMedians(b);
    }
    return { label: group.label, payloadBytes: group.pageSize * group.pagesPerRequest, queueDepth: group.queueDepth, subjects: prepared.map((s) => s.result), baselines };
  } finally {
    ticker.phase("deleting its volumes");
    await deleteVolumes(env.client, created, new Set(prepared.filter((s) => s.result.volume !== undefined).map((s) => s.result.volume!.name)));
    ticker.done();
  }
}

/**
 * Deletes the run's volumes. One whose create did not answer (`confirmed` lacks it) may still be
 * created by the cluster after the delete looked: a `not_found` is asked again once, a second later.
 */
async function deleteVolumes(client: StrataClient, names: readonly string[], confirmed: ReadonlySet<string>): Promise<void> {
  for (const name of names) {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await client.deleteVolume(name);
        break;
      } catch (err) {
        if (!(err instanceof ProtocolError && err.code === "not_found") || confirmed.has(name) || attempt === 1) break;
        await sleep(1000);
      }
    }
  }
}

/** The CPU medians of a subject or baseline over its rounds (each round's total first, then the median). */
function cpuMedians(r: { rounds: RoundFigure[]; cpuUsPerOp: number; natsCpuUsPerOp: number; totalCpuUsPerOp: number }): void {
  r.cpuUsPerOp = median(r.rounds.map((f) => f.cpuUsPerOp ?? NaN));
  r.natsCpuUsPerOp = median(r.rounds.map((f) => f.natsCpuUsPerOp ?? NaN));
  r.totalCpuUsPerOp = median(r.rounds.map((f) => (f.cpuUsPerOp ?? NaN) + (f.natsCpuUsPerOp ?? NaN)));
}

/**
 * The progress line of a group on a terminal: the phase, and for a timed phase a bar of its
 * elapsed time against its planned time, redrawn 4 times a second. Nothing when quiet or not a TTY.
 */
class PhaseProgress {
  private timer: NodeJS.Timeout | undefined;
  constructor(
    private readonly quiet: boolean,
    private readonly group: string,
  ) {}

  phase(text: string, plannedMs?: number): void {
    this.stopTimer();
    if (this.quiet || !isTTY) return;
    const t0 = performance.now();
    const draw = (): void => {
      if (plannedMs === undefined || plannedMs <= 0) return progress(`[${this.group}] ${text}…`);
      const elapsed = Math.min(plannedMs, performance.now() - t0);
      // The bar and the timer stay whole on a narrow terminal: the label is cut instead.
      progress(`[${this.group}] ${text}`, `${progressBar(elapsed / plannedMs, 20)} ${(elapsed / 1000).toFixed(1)}/${(plannedMs / 1000).toFixed(1)} s`);
    };
    draw();
    if (plannedMs !== undefined && plannedMs > 0) {
      this.timer = setInterval(draw, 250);
      this.timer.unref();
    }
  }

  done(): void {
    this.stopTimer();
  }

  private stopTimer(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Targets and reports
// ---------------------------------------------------------------------------------------------

function findSubject(groups: readonly GroupResult[], queueDepth: number, pagesPerRequest: number, workload: Workload, replicas: 1 | 3): SubjectResult | undefined {
  for (const g of groups) {
    if (g.queueDepth !== queueDepth) continue;
    const s = g.subjects.find((x) => x.workload === workload && x.replicas === replicas && x.pagesPerRequest === pagesPerRequest);
    if (s !== undefined) return s;
  }
  return undefined;
}

function findBaseline(groups: readonly GroupResult[], queueDepth: number, payloadBytes: number, name: BaselineName): BaselineResult | undefined {
  return groups.find((g) => g.queueDepth === queueDepth && g.payloadBytes === payloadBytes)?.baselines.find((b) => b.name === name && b.available);
}

/**
 * Measured: available, no round stopped (one that stopped says why in `unavailableReason`), and
 * requests completed. (Rounds the run's time bound left out are said in `roundsShort`.)
 */
function measuredOk(s: SubjectResult | undefined): s is SubjectResult {
  return s !== undefined && s.available && s.unavailableReason === undefined && s.rounds.length > 0 && s.ops > 0;
}

function x(value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(2)}x` : "-";
}

/**
 * Median over rounds of subject p50 ÷ (k echo round trips + one fdatasync), each from the same
 * round: the latency budget of a write at one in flight.
 */
function p50BudgetRatio(s: SubjectResult, echo: BaselineResult, raw: BaselineResult, echoTrips: number): number {
  const n = Math.min(s.rounds.length, echo.rounds.length, raw.rounds.length);
  // A round that completed nothing has no p50 (its histogram reads 0): it is left out, not counted as fast.
  const used = Array.from({ length: n }, (_, i) => i).filter((i) => s.rounds[i]!.ops > 0 && echo.rounds[i]!.ops > 0 && raw.rounds[i]!.ops > 0);
  return median(used.map((i) => s.rounds[i]!.p50Us / (echoTrips * echo.rounds[i]!.p50Us + raw.rounds[i]!.p50Us)));
}

/**
 * Why a target has no figure: the subject was not measured (its own reason, shortened), or the
 * baseline it is a ratio of did not run or failed.
 */
function missingStatus(s: SubjectResult | undefined, baselines: ReadonlyArray<{ name: BaselineName; found: BaselineResult | undefined; ran: boolean }>): TargetRow["status"] {
  if (s === undefined) return "not measured";
  if (!s.available && s.unavailableReason?.startsWith("not available in this build")) return "not available in this build";
  if (!measuredOk(s)) return "not measured";
  for (const b of baselines) if (b.found === undefined) return b.ran ? "baseline failed" : "baseline not run";
  return "not measured";
}

/** The target table of the suite, from its groups. */
export function evaluateTargets(groups: readonly GroupResult[]): TargetRow[] {
  const rows: TargetRow[] = [];
  /** A baseline of a group, whether it was part of the run (failed or not), and its result if it ran. */
  const baseline = (queueDepth: number, payloadBytes: number, name: BaselineName): { name: BaselineName; found: BaselineResult | undefined; ran: boolean } => ({
    name,
    found: findBaseline(groups, queueDepth, payloadBytes, name),
    ran: groups.some((g) => g.queueDepth === queueDepth && g.payloadBytes === payloadBytes && g.baselines.some((b) => b.name === name)),
  });
  const ratioRow = (target: string, s: SubjectResult | undefined, name: BaselineName, goal: number, info = false): void => {
    const b = baseline(64, 4096, name);
    const value = measuredOk(s) ? (s.ratios[name] ?? NaN) : NaN;
    if (!Number.isFinite(value)) {
      rows.push({ target, measured: "-", value: NaN, goal: `>= ${goal.toFixed(1)}x`, status: missingStatus(s, [b]) });
      return;
    }
    rows.push({ target, measured: x(value), value, goal: `>= ${goal.toFixed(1)}x`, status: info ? "info" : value >= goal ? "met" : "NOT met" });
  };
  const p50Row = (target: string, s: SubjectResult | undefined, echoTrips: number, goal: number, info = false): void => {
    const echo = baseline(1, 4096, "nats-echo");
    const raw = baseline(1, 4096, "raw-append");
    const value = measuredOk(s) && echo.found && raw.found ? p50BudgetRatio(s, echo.found, raw.found, echoTrips) : NaN;
    if (!Number.isFinite(value)) {
      rows.push({ target, measured: "-", value: NaN, goal: `<= ${goal.toFixed(1)}x`, status: missingStatus(s, [echo, raw]) });
      return;
    }
    // The value is the median of the rounds' ratios; the p50s beside it are the whole run's.
    const budgetUs = echoTrips * echo.found!.latency.percentile(50) + raw.found!.latency.percentile(50);
    rows.push({
      target,
      measured: `${x(value)} (median of rounds; run p50 ${formatUs(s!.latency.percentile(50))} vs ${formatUs(budgetUs)})`,
      value,
      goal: `<= ${goal.toFixed(1)}x`,
      status: info ? "info" : value <= goal ? "met" : "NOT met",
    });
  };
  const mbRow = (target: string, s: SubjectResult | undefined, goal: number, info = false): void => {
    if (!measuredOk(s)) {
      rows.push({ target, measured: "-", value: NaN, goal: `>= ${goal} MB/s`, status: missingStatus(s, []) });
      return;
    }
    rows.push({ target, measured: `${formatNumber(s.mbPerSec)} MB/s`, value: s.mbPerSec, goal: `>= ${goal} MB/s`, status: info ? "info" : s.mbPerSec >= goal ? "met" : "NOT met" });
  };
  const w64r3 = findSubject(groups, 64, 1, "randwrite", 3);
  const w64r1 = findSubject(groups, 64, 1, "randwrite", 1);
  const r64 = findSubject(groups, 64, 1, "randread", 1);
  const w1r3 = findSubject(groups, 1, 1, "randwrite", 3);
  const w1r1 = findSubject(groups, 1, 1, "randwrite", 1);
  const big3 = findSubject(groups, 16, 32, "seqwrite", 3);
  const big1 = findSubject(groups, 16, 32, "seqwrite", 1);
  ratioRow("R=3 4 KiB writes, 64 in flight, vs NATS echo", w64r3, "nats-echo", 0.6);
  ratioRow("R=3 4 KiB writes, 64 in flight, vs JetStream R1", w64r3, "jetstream-publish", 1.0);
  ratioRow("R=1 4 KiB writes, 64 in flight, vs NATS echo", w64r1, "nats-echo", 0.8);
  ratioRow("cached 4 KiB reads, 64 in flight, vs NATS echo", r64, "nats-echo", 0.8);
  p50Row("R=3 4 KiB write p50, 1 in flight, vs 2 echo RTT + 1 fdatasync", w1r3, 2, 1.6);
  mbRow("R=3 128 KiB writes (32 x 4 KiB), 16 in flight", big3, 150);
  // Context rows: the same figures for one replica, which this build does measure.
  ratioRow("(R=1) 4 KiB writes, 64 in flight, vs JetStream R1", w64r1, "jetstream-publish", 1.0, true);
  p50Row("(R=1) 4 KiB write p50, 1 in flight, vs 1 echo RTT + 1 fdatasync", w1r1, 1, 1.6, true);
  mbRow("(R=1) 128 KiB writes (32 x 4 KiB), 16 in flight", big1, 150, true);
  return rows;
}

/** R=1 4 KiB write and read throughput at 1 and 64 in flight beside the echo (the closing note). */
function closingNote(groups: readonly GroupResult[]): Array<Record<string, Cell>> {
  const rows: Array<Record<string, Cell>> = [];
  for (const qd of [1, 64]) {
    const echo = findBaseline(groups, qd, 4096, "nats-echo");
    const w = findSubject(groups, qd, 1, "randwrite", 1);
    const r = findSubject(groups, qd, 1, "randread", 1);
    const fmt = (s: SubjectResult | undefined): string => (measuredOk(s) ? `${formatNumber(s.opsPerSec)}/s (p50 ${formatUs(s.latency.percentile(50))})` : "-");
    rows.push({
      "in flight": qd,
      "R=1 4 KiB writes": fmt(w),
      "R=1 4 KiB reads (cached)": fmt(r),
      "NATS echo 4 KiB": echo ? `${formatNumber(echo.opsPerSec)}/s (p50 ${formatUs(echo.latency.percentile(50))})` : "-",
    });
  }
  return rows;
}

function groupRows(g: GroupResult): Array<Record<string, Cell>> {
  const rows: Array<Record<string, Cell>> = [];
  const latencyCells = (h: Histogram): Record<string, Cell> => ({
    p50: formatUs(h.percentile(50)),
    p90: formatUs(h.percentile(90)),
    p99: formatUs(h.percentile(99)),
    "p99.9": formatUs(h.percentile(99.9)),
    max: formatUs(h.max),
  });
  // Retried errors, when any subject of the group had some: a stall shows in the latency and here.
  const anyErrors = g.subjects.some((s) => Object.keys(s.errors).length > 0);
  for (const s of g.subjects) {
    if (!s.available || s.rounds.length === 0) {
      rows.push({ what: `Strata ${s.label}`, "ops/s": "-", note: noteText(s.unavailableReason ?? "no round completed") });
      continue;
    }
    const ratioCells: Record<string, Cell> = {};
    for (const b of g.baselines) ratioCells[`vs ${b.name}`] = x(s.ratios[b.name] ?? NaN);
    const errorCells: Record<string, Cell> = anyErrors ? { "errors (retried)": errorsText(s.errors) } : {};
    // A subject stopped after some rounds: its figures are of those rounds only.
    const noteCells: Record<string, Cell> = s.unavailableReason !== undefined ? { note: noteText(`${s.rounds.length} round(s) measured, then ${s.unavailableReason}`) } : {};
    rows.push({ what: `Strata ${s.label}`, "ops/s": s.opsPerSec, "MB/s": s.mbPerSec, ...latencyCells(s.latency), ...cpuCells(s), ...ratioCells, ...errorCells, ...noteCells });
  }
  for (const b of g.baselines) {
    if (!b.available) {
      rows.push({ what: b.label, "ops/s": "-", note: noteText(`not available: ${b.unavailableReason ?? "?"}`) });
      continue;
    }
    rows.push({ what: b.label, "ops/s": b.opsPerSec, "MB/s": b.mbPerSec, ...latencyCells(b.latency), ...cpuCells(b) });
  }
  return rows;
}

/**
 * The CPU column: per request, this process plus nats-server (in parentheses), µs. Shown only
 * when both were measured (an in-process cluster on Linux): against a running cluster the
 * process is the client alone, and the figure would not be the cost of a request.
 */
function cpuCells(r: { totalCpuUsPerOp: number; natsCpuUsPerOp: number }): Record<string, Cell> {
  if (!Number.isFinite(r.totalCpuUsPerOp) || !Number.isFinite(r.natsCpuUsPerOp)) return {};
  return { "CPU µs/op (nats)": `${formatNumber(r.totalCpuUsPerOp)} (${formatNumber(r.natsCpuUsPerOp)})` };
}

/** Errors by code, most first: `timeout 60, unavailable 2`; `-` for none. */
function errorsText(errors: Readonly<Record<string, number>>): string {
  const list = Object.entries(errors).sort((a, b) => b[1] - a[1]);
  return list.length === 0 ? "-" : list.map(([code, n]) => `${code} ${n}`).join(", ");
}

/** Bound on a table note's length: the JSON has the whole reason. */
const NOTE_CHARS_MAX = 240;

function noteText(text: string): string {
  const line = text.replace(/\s+/g, " ");
  return line.length > NOTE_CHARS_MAX ? `${line.slice(0, NOTE_CHARS_MAX - 1)}…` : line;
}

/** Serializable form of a result: histograms become summaries (p50/p90/p99/p99.9/max…). */
type Jsonable<T> = T extends Histogram ? HistogramSummary : T extends object ? { [K in keyof T]: Jsonable<T[K]> } : T;

/** The result as written to the JSON file. */
export function resultToJson(result: BenchResult): Jsonable<BenchResult> {
  return JSON.parse(JSON.stringify(result)) as Jsonable<BenchResult>;
}

// ---------------------------------------------------------------------------------------------
// runBench
// ---------------------------------------------------------------------------------------------

/**
 * Runs the benchmark: one workload with its baselines when `opts.workload` is given, else the
 * default suite with its target table. Bounded by {@link RUN_MS_MAX} overall. Prints tables
 * unless `quiet`, writes `<resultsDir>/<name>-*.json` and one latency CDF SVG per group unless
 * `resultsDir` is null, and removes every volume it created.
 */
export async function runBench(opts: BenchOptions = {}): Promise<BenchResult> {
  const o = resolveOptions(opts);
  checkDirectories(o.resultsDir, opts.scratchDir);
  const startedAt = new Date();
  const t0 = performance.now();
  // The short mode's bound covers the cluster's start and stop too (about 3 s of it).
  const bound = o.short ? SHORT_RUN_MS_MAX - 3_000 : RUN_MS_MAX;
  const budget = new Budget(opts.runMsMax === undefined ? bound : Math.min(bound, checkInteger("runMsMax", opts.runMsMax, 1, RUN_MS_MAX)));
  const groups = planGroups(o);
  const wantsReplicas3 = groups.some((g) => g.subjects.some((s) => s.replicas === 3));
  if (!o.quiet) progress(opts.target ? `connecting to ${redactNatsUrl(opts.target.natsUrl)}…` : "starting an in-process cluster…");
  const env = await openEnv(o, opts.target, opts.scratchDir, wantsReplicas3);
  // The raw-append baseline's directory, removed at the end if this run made it.
  const rawDir = path.join(env.scratchDir, "raw-append");
  const rawDirExisted = fs.existsSync(rawDir);
  const results: GroupResult[] = [];
  try {
    for (let i = 0; i < groups.length; i++) results.push(await runGroup(env, o, groups[i]!, i, budget));
  } finally {
    if (!o.quiet) progress("stopping…");
    // The cluster first: a scratch directory that cannot be cleaned must not keep it running.
    try {
      await env.close();
    } finally {
      clearProgress();
      if (!rawDirExisted) removeDirectory(rawDir);
    }
  }
  const suite = o.workload === "suite";
  const ran = (name: BaselineName): boolean => results.some((g) => g.baselines.some((b) => b.name === name && b.rounds.length > 0));
  const notes = [
    ...(ran("jetstream-publish") ? [`JetStream: ${jetstreamNote}`] : []),
    "Ratios are medians over rounds of per-round ratios; subjects and baselines alternate in each round.",
    ...(ran("raw-append") ? ["raw-append batches as many records per fdatasync as requests are in flight (the batching a device queue sees at that depth)."] : []),
    ...(ran("raw-append") && env.inProcess === undefined && opts.scratchDir === undefined
      ? [`raw-append ran in ${env.scratchDir} on this machine, not on the cluster's disks: pass --scratch-dir on the disk under test.`]
      : []),
    ...(ran("nats-echo") ? ["nats-echo sends the payload both ways; a Strata write sends it one way and a read returns it one way."] : []),
    "Latency runs from a request's first attempt to its success: a retried request (see errors) counts its failed attempts' time.",
  ];
  if (results.some((g) => [...g.subjects, ...g.baselines].some((r) => Number.isFinite(r.natsCpuUsPerOp)))) {
    notes.push("CPU µs/op: CPU time per request (raw-append: per record) of the benchmark process, which holds the client and the in-process cluster's nodes, plus nats-server's (in parentheses); the median over rounds. When the cores are all busy, ops/s follow it.");
  }
  // Measured in fewer rounds than asked (the run's time bound): their figures stand, said so.
  for (const g of results) {
    for (const s of g.subjects) if (s.roundsShort !== undefined) notes.push(`[${g.label}] Strata ${s.label}: ${s.roundsShort}.`);
    for (const b of g.baselines) if (b.roundsShort !== undefined) notes.push(`[${g.label}] ${b.label}: ${b.roundsShort}.`);
  }
  // What the run did not measure that it was asked to: the exit status says so (1).
  const failures = results.flatMap((g) => [
    ...g.subjects.filter((s) => s.unavailableReason !== undefined).map((s) => `[${g.label}] Strata ${s.label}: ${s.unavailableReason!}`),
    ...g.baselines.filter((b) => !b.available).map((b) => `[${g.label}] ${b.label}: ${b.unavailableReason ?? "not available"}`),
  ]);
  const result: BenchResult = {
    kind: suite ? "suite" : "single",
    options: o,
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? "unknown", node: process.version, platform: `${os.platform()} ${os.release()}`, scratchDir: env.scratchDir },
    target: {
      kind: env.inProcess ? "in-process" : "running",
      natsUrl: redactNatsUrl(env.natsUrl),
      cluster: env.cluster,
      ...(env.nodes === undefined ? {} : { nodes: env.nodes }),
      ...(env.hosts === undefined ? {} : { hosts: env.hosts }),
    },
    startedAt: startedAt.toISOString(),
    wallMs: performance.now() - t0,
    groups: results,
    targets: suite ? evaluateTargets(results) : [],
    closingNote: suite ? closingNote(results) : [],
    notes,
    failures,
    files: [],
  };
  // The tables before the files: a disk that fails now loses none of what the run measured.
  if (!o.quiet) printTables(result);
  if (o.resultsDir !== null) {
    try {
      results.forEach((g, i) => {
        const series: LatencySeries[] = [
          ...g.subjects.filter((s) => s.latency.count > 0).map((s) => ({ label: `Strata ${s.label}`, latency: s.latency })),
          ...g.baselines.filter((b) => b.latency.count > 0).map((b) => ({ label: b.label, latency: b.latency })),
        ];
        result.files.push(writeSvg(o.resultsDir!, `${o.name}-g${i + 1}-latency`, latencyCdfSvg(series, { title: `Strata latency CDF: ${g.label}` })));
      });
      // The JSON lists itself too: its name is known before it is written.
      const json = jsonPath(o.resultsDir, o.name, startedAt);
      result.files.unshift(json);
      writeJson(o.resultsDir, o.name, result, json);
    } catch (err) {
      // What was written stays listed; the JSON only once it is.
      result.files = result.files.filter((f) => fs.existsSync(f));
      result.filesError = `${errorCode(err)}: the results could not be written to ${o.resultsDir}: ${(err as Error).message}`;
    }
  }
  if (!o.quiet) printTrailer(result);
  return result;
}

/** Prints the tables of a result to stdout, then the files written and what was not measured. */
export function printResult(result: BenchResult): void {
  printTables(result);
  printTrailer(result);
}

/** The tables of a result and its notes. */
function printTables(result: BenchResult): void {
  for (const g of result.groups) printTable(`Strata bench: ${g.label}`, groupRows(g));
  if (result.kind === "suite") {
    printTable(
      "Targets (ratios from this run)",
      result.targets.map((t) => ({ target: t.target, measured: t.measured, goal: t.goal, status: t.status })),
    );
    printTable("R=1 4 KiB throughput beside the NATS echo", result.closingNote);
  }
  for (const note of result.notes) process.stdout.write(`note: ${note}\n`);
}

/** The files a result was written to and what it did not measure. */
function printTrailer(result: BenchResult): void {
  for (const file of result.files) process.stdout.write(`written: ${file}\n`);
  for (const failure of result.failures) process.stdout.write(`NOT MEASURED: ${failure}\n`);
}

// ---------------------------------------------------------------------------------------------
// CPU profile summary
// ---------------------------------------------------------------------------------------------

/** Most lines of a profile's summary (`--top`). */
export const PROFILE_TOP_MAX = 1000;

/** One line of {@link summarizeCpuProfile}. */
export interface ProfileLine {
  functionName: string;
  /** `url:line` of the function. */
  location: string;
  selfMs: number;
  selfPercent: number;
}

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/**
 * Self time by function of a V8 `.cpuprofile` (what `node --cpu-prof` writes), largest first:
 * samples are attributed to the node they hit, then summed per (function, location).
 */
export function summarizeCpuProfile(profile: unknown, top = 30): ProfileLine[] {
  const p = profile as { nodes?: CpuProfileNode[]; samples?: number[]; timeDeltas?: number[]; startTime?: number; endTime?: number };
  if (!Array.isArray(p.nodes) || !Array.isArray(p.samples) || !Array.isArray(p.timeDeltas)) throw new Error("not a V8 cpuprofile: expected nodes, samples and timeDeltas");
  const byId = new Map<number, CpuProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    // The delta before sample i+1 is the time spent in sample i.
    const dt = p.timeDeltas[i + 1] ?? 0;
    selfUs.set(p.samples[i]!, (selfUs.get(p.samples[i]!) ?? 0) + Math.max(0, dt));
  }
  let totalUs = 0;
  const byFunction = new Map<string, ProfileLine>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (n === undefined) continue;
    totalUs += us;
    const name = n.callFrame.functionName || "(anonymous)";
    const location = `${n.callFrame.url.replace(/^file:\/\//, "").split("/").slice(-2).join("/")}:${n.callFrame.lineNumber + 1}`;
    const key = `${name}@${location}`;
    const line = byFunction.get(key) ?? { functionName: name, location, selfMs: 0, selfPercent: 0 };
    line.selfMs += us / 1000;
    byFunction.set(key, line);
  }
  const lines = [...byFunction.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, Math.max(1, Math.min(top, PROFILE_TOP_MAX)));
  for (const line of lines) line.selfPercent = totalUs > 0 ? (line.selfMs * 1000 * 100) / totalUs : 0;
  return lines;
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/** Help of `strata bench` / `node dist/bench/strata-bench.js`. */
export const BENCH_HELP = `strata bench — throughput and latency of a Strata cluster against its ceilings

Usage: strata bench [flags]

Without --workload: the default suite (4 KiB at 64 and 1 in flight, 128 KiB at 16 in flight,
R=1 and R=3) with the target table. With --workload: that workload alone.

  --workload W            randwrite | randread | seqwrite | seqread | mixed
  --read-ratio F          reads of mixed, 0..1 (default 0.5)
  --page-size N           4096 | 8192 (default 4096)
  --pages-per-request N   adjacent pages per request, 1..64 (default 1)
  --queue-depth N         requests in flight, 1..1024 (default 1)
  --replicas R            1 | 3 (default 1)
  --duration-ms N         measured time per subject and per baseline (default 10000 with
                          --workload, with or without --short; the suite 15000, 2100 with --short)
  --ops N                 measured requests per subject and per baseline (stops at the first bound)
  --warmup-ms N           unmeasured time per subject first (default 1000, short 300); a subject
                          with fewer than 2000 requests by then goes on, up to 8x as long, until it has them
  --rounds N              rounds subjects and baselines alternate in, 1..20 (default 5, short 3)
  --volume-pages N        pages per benchmark volume (default 8192, short 4096)
  --shards N              shards per volume (default: actor hosts per node in-process, this
                          machine's cores with --nats; at most the volume's pages)
  --baselines LIST        comma-separated: raw-append,nats-echo,jetstream-publish, or none
  --nats URL --cluster C  benchmark a running cluster (default: a fresh in-process cluster)
  --nats-user U --nats-password-file F
                          connect to it as a NATS user (strata nats-auth); the NATS baselines
                          need one allowed strata.bench.> and, for JetStream, $JS.API.>
  --nats-ca-file F [--nats-cert-file F --nats-key-file F]
                          TLS to it: the CA of its certificate, this side's certificate and key
  --hosts N               in-process: actor hosts per node (default: (cores - 1) / nodes, at least 1)
  --nodes N               in-process: nodes (default 3 when R=3 is measured, else 1)
  --timeout MS            bound on each request attempt, 1..100000 (default 10000); a request
                          that fails with a retryable error is retried, its latency kept whole
  --scratch-dir D         directory for the raw-append file (the disk under test; default the
                          in-process cluster's data directory, or the OS temp dir on this machine)
  --results-dir D         where JSON and SVG go (default results)
  --no-results            write no files
  --short                 the smoke suite: under a minute on two cores
  --seed N                workload seed (default 1)
  --json                  print the JSON result instead of tables
  --profile-summary FILE  print self time by function of a .cpuprofile and exit; with --top N
                          (1..1000, default 30) lines, and no other flag

Every run is bounded by 10 minutes (--short: 57 s). Exit status: 0 measured (whether targets
are met is in the table), 1 something asked for was not measured (NOT MEASURED lines), 2 a bad
or conflicting flag.
`;

/**
 * `--profile-summary FILE --top N`: the summary's lines on stdout, 0; a file that cannot be read
 * or is not a V8 cpuprofile is one line on stderr, 1.
 */
function printProfileSummary(file: string, top: number, io: BenchIo): number {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    // The OS's message starts with its code, already said.
    io.stderr.write(`strata bench: ${errorCode(err)}: --profile-summary: ${(err as Error).message.replace(/^E[A-Z]+: /, "")}\n`);
    return 1;
  }
  let lines: ProfileLine[];
  try {
    lines = summarizeCpuProfile(JSON.parse(text) as unknown, top);
  } catch (err) {
    io.stderr.write(`strata bench: bad_profile: ${file}: ${err instanceof SyntaxError ? `not JSON: ${err.message}` : (err as Error).message}\n`);
    return 1;
  }
  for (const l of lines) io.stdout.write(`${l.selfMs.toFixed(1).padStart(10)} ms ${l.selfPercent.toFixed(1).padStart(5)} %  ${l.functionName}  ${l.location}\n`);
  return 0;
}

/** Output streams of {@link main}. */
export interface BenchIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

const FLAG_KINDS: Readonly<Record<string, "string" | "integer" | "number" | "boolean">> = {
  workload: "string",
  "read-ratio": "number",
  "page-size": "integer",
  "pages-per-request": "integer",
  "queue-depth": "integer",
  replicas: "integer",
  "duration-ms": "integer",
  ops: "integer",
  "warmup-ms": "integer",
  rounds: "integer",
  "volume-pages": "integer",
  shards: "integer",
  baselines: "string",
  nats: "string",
  "nats-user": "string",
  "nats-password-file": "string",
  "nats-ca-file": "string",
  "nats-cert-file": "string",
  "nats-key-file": "string",
  cluster: "string",
  hosts: "integer",
  nodes: "integer",
  timeout: "integer",
  "scratch-dir": "string",
  "results-dir": "string",
  "no-results": "boolean",
  short: "boolean",
  seed: "integer",
  json: "boolean",
  "profile-summary": "string",
  top: "integer",
  help: "boolean",
};

/** The flag of each option named in resolveOptions' messages. */
const OPTION_FLAGS: Readonly<Record<string, string>> = {
  workload: "--workload", readRatio: "--read-ratio", pageSize: "--page-size", pagesPerRequest: "--pages-per-request", queueDepth: "--queue-depth",
  replicas: "--replicas", durationMs: "--duration-ms", ops: "--ops", warmupMs: "--warmup-ms", rounds: "--rounds", volumePages: "--volume-pages",
  shards: "--shards", hosts: "--hosts", nodes: "--nodes", requestTimeoutMs: "--timeout", seed: "--seed", target: "--nats/--cluster",
};
const OPTION_NAMES = new RegExp(`\\b(${Object.keys(OPTION_FLAGS).join("|")})\\b`, "g");

/** A bad command line. */
export class BenchUsageError extends Error {
  override readonly name = "BenchUsageError";
  readonly code = "usage";
}

/** Parses `strata bench` flags (`--name value` or `--name=value`) into options. */
export function parseBenchArgs(argv: readonly string[]): { options: BenchOptions; json: boolean; help: boolean; profileSummary?: string; top: number } {
  const flags: Record<string, string | number | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h") {
      flags.help = true;
      continue;
    }
    if (!arg.startsWith("--")) throw new BenchUsageError(`unexpected argument ${JSON.stringify(arg)}`);
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const kind = FLAG_KINDS[name];
    if (kind === undefined) throw new BenchUsageError(`unknown flag --${name}`);
    if (name in flags) throw new BenchUsageError(`--${name} given twice`);
    if (kind === "boolean") {
      if (eq >= 0) throw new BenchUsageError(`--${name} takes no value`);
      flags[name] = true;
      continue;
    }
    const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined || (eq < 0 && value.startsWith("--"))) throw new BenchUsageError(`--${name}: expected a value`);
    if (kind === "string") flags[name] = value;
    else {
      // Decimal only: Number() would also take "0x10", "1e3" or " 7 ".
      const n = kind === "integer" ? (/^-?\d{1,16}$/.test(value) ? Number(value) : NaN) : /^-?(\d+\.?\d*|\.\d+)$/.test(value) ? Number(value) : NaN;
      if (!Number.isFinite(n) || (kind === "integer" && !Number.isSafeInteger(n))) {
        throw new BenchUsageError(`--${name}: expected ${kind === "integer" ? "an integer" : "a number"}, got ${JSON.stringify(value)}`);
      }
      flags[name] = n;
    }
  }
  const options: BenchOptions = {};
  const num = (name: string): number | undefined => flags[name] as number | undefined;
  const str = (name: string): string | undefined => flags[name] as string | undefined;
  if (str("workload") !== undefined) {
    const w = str("workload") as Workload;
    if (!WORKLOADS.includes(w)) throw new BenchUsageError(`--workload: expected one of ${WORKLOADS.join(", ")}, got ${JSON.stringify(w)}`);
    options.workload = w;
  }
  if (num("read-ratio") !== undefined) options.readRatio = num("read-ratio")!;
  if (num("page-size") !== undefined) options.pageSize = num("page-size") as 4096 | 8192;
  if (num("pages-per-request") !== undefined) options.pagesPerRequest = num("pages-per-request")!;
  if (num("queue-depth") !== undefined) options.queueDepth = num("queue-depth")!;
  if (num("replicas") !== undefined) options.replicas = num("replicas") as 1 | 3;
  if (num("duration-ms") !== undefined) options.durationMs = num("duration-ms")!;
  if (num("ops") !== undefined) options.ops = num("ops")!;
  if (num("warmup-ms") !== undefined) options.warmupMs = num("warmup-ms")!;
  if (num("rounds") !== undefined) options.rounds = num("rounds")!;
  if (num("volume-pages") !== undefined) options.volumePages = num("volume-pages")!;
  if (num("shards") !== undefined) options.shards = num("shards")!;
  if (num("hosts") !== undefined) options.hosts = num("hosts")!;
  if (num("nodes") !== undefined) options.nodes = num("nodes")!;
  if (num("timeout") !== undefined) options.requestTimeoutMs = num("timeout")!;
  if (num("seed") !== undefined) options.seed = num("seed")!;
  if (str("scratch-dir") !== undefined) options.scratchDir = str("scratch-dir")!;
  if (str("results-dir") !== undefined && flags["no-results"] === true) throw new BenchUsageError("--no-results and --results-dir: give one (no files, or where they go)");
  if (str("results-dir") !== undefined) options.resultsDir = str("results-dir")!;
  if (flags["no-results"] === true) options.resultsDir = null;
  if (flags.short === true) options.short = true;
  const baselines = str("baselines");
  if (baselines !== undefined) {
    const list = baselines === "none" || baselines === "" ? [] : baselines.split(",").map((b) => b.trim());
    for (const b of list) if (!BASELINES.includes(b as BaselineName)) throw new BenchUsageError(`--baselines: unknown ${JSON.stringify(b)}; known: ${BASELINES.join(", ")}`);
    options.baselines = list as BaselineName[];
  }
  const nats = str("nats");
  const cluster = str("cluster");
  if ((nats === undefined) !== (cluster === undefined)) throw new BenchUsageError("--nats and --cluster go together (a running cluster), or neither (in-process)");
  if (nats !== undefined) {
    const message = natsUrlError("--nats", nats);
    if (message !== undefined) throw new BenchUsageError(message);
  }
  const user = str("nats-user");
  const passwordFile = str("nats-password-file");
  if ((user === undefined) !== (passwordFile === undefined)) throw new BenchUsageError("--nats-user and --nats-password-file go together");
  if (user !== undefined && nats === undefined) throw new BenchUsageError("--nats-user is for a running cluster (--nats and --cluster)");
  // Checked as the rest of the command line checks them (the URL above too): a value no server
  // or node could take is a usage error here, not a failure to connect after the run has started.
  const clusterProblem = cluster === undefined ? undefined : clusterNameProblem(cluster);
  if (clusterProblem !== undefined) throw new BenchUsageError(`--cluster: ${clusterProblem}`);
  const userProblem = user === undefined ? undefined : natsUserProblem(user);
  if (userProblem !== undefined) throw new BenchUsageError(`--nats-user: ${userProblem}`);
  let auth: { user: string; pass: string } | undefined;
  if (user !== undefined) {
    try {
      auth = { user, pass: readNatsPassword(passwordFile!) };
    } catch (err) {
      throw new BenchUsageError(`--nats-password-file: ${(err as Error).message}`);
    }
  }
  if (nats === undefined && Object.values(NATS_TLS_FLAGS).some((f) => str(f) !== undefined)) {
    throw new BenchUsageError("--nats-ca-file, --nats-cert-file and --nats-key-file are for a running cluster (--nats and --cluster)");
  }
  let tls: NatsTlsFiles | undefined;
  try {
    tls = natsTlsFromFlags(str);
  } catch (err) {
    throw new BenchUsageError((err as Error).message);
  }
  if (nats !== undefined && cluster !== undefined) options.target = { natsUrl: nats, cluster, ...(auth === undefined ? {} : { auth }), ...(tls === undefined ? {} : { tls }) };
  const json = flags.json === true;
  if (json) options.quiet = true;
  const profileSummary = str("profile-summary");
  const top = num("top");
  if (top !== undefined && profileSummary === undefined) throw new BenchUsageError("--top goes with --profile-summary (the lines of a profile's summary)");
  if (top !== undefined && (top < 1 || top > PROFILE_TOP_MAX)) throw new BenchUsageError(`--top: expected an integer in 1..${PROFILE_TOP_MAX}, got ${top}`);
  // A summary runs nothing: a flag of a run given with it would be silently ignored.
  const runFlags = Object.keys(flags).filter((name) => name !== "profile-summary" && name !== "top" && name !== "help");
  if (profileSummary !== undefined && runFlags.length > 0) throw new BenchUsageError(`--profile-summary takes --top only; ${runFlags.map((f) => `--${f}`).join(", ")} ${runFlags.length > 1 ? "are" : "is"} for a run`);
  return { options, json, help: flags.help === true, ...(profileSummary === undefined ? {} : { profileSummary }), top: top ?? 30 };
}

/**
 * Runs `strata bench` with `argv` (the arguments after `bench`) and resolves with the exit code:
 * 0 done (targets missed or not is in the table, not in the code), 1 the run failed or left
 * something it was asked to measure unmeasured (`failures`), 2 usage (a bad or conflicting flag).
 */
export async function main(argv: readonly string[], io: BenchIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let parsed: ReturnType<typeof parseBenchArgs>;
  try {
    parsed = parseBenchArgs(argv);
    // Options checked together before anything starts; a RangeError names the option (as its flag here).
    if (!parsed.help && parsed.profileSummary === undefined) {
      let resolved: ResolvedOptions;
      try {
        resolved = resolveOptions(parsed.options);
      } catch (err) {
        throw new BenchUsageError((err as Error).message.replace(OPTION_NAMES, (name) => OPTION_FLAGS[name]!));
      }
      checkDirectories(resolved.resultsDir, parsed.options.scratchDir, true);
    }
  } catch (err) {
    io.stderr.write(`strata bench: usage: ${(err as Error).message}\nRun "strata bench --help" for the flags.\n`);
    return 2;
  }
  if (parsed.help) {
    io.stdout.write(BENCH_HELP);
    return 0;
  }
  try {
    if (parsed.profileSummary !== undefined) return printProfileSummary(parsed.profileSummary, parsed.top, io);
    const result = await runBench(parsed.options);
    if (parsed.json) io.stdout.write(`${JSON.stringify(resultToJson(result), null, 2)}\n`);
    if (result.filesError !== undefined) io.stderr.write(`strata bench: ${result.filesError}\n`);
    if (result.failures.length > 0) {
      io.stderr.write(`strata bench: ${result.failures.length} of what was asked was not measured in full (NOT MEASURED above, failures in the JSON)\n`);
      return 1;
    }
    return result.filesError === undefined ? 0 : 1;
  } catch (err) {
    clearProgress();
    const e = err as Error;
    // A refusal by the cluster says what was wrong; a stack helps only with an error of the bench itself.
    io.stderr.write(`strata bench: ${err instanceof ProtocolError ? `${err.code}: ${e.message}` : `${errorCode(err)}: ${e.stack ?? e.message}`}\n`);
    return 1;
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    // Exit explicitly: a leftover handle of a failed run must not keep the benchmark alive.
    process.exit(code);
  });
}
