/**
 * Baselines for Strata benchmarks: the ceilings a Strata path is compared against, measured on
 * the same machine in the same run.
 *
 * - {@link rawAppendBaseline}: the disk — one write + one fdatasync per batch, nothing else.
 * - {@link natsEchoBaseline}: the network — NATS request/reply to a responder that only echoes.
 * - {@link jetstreamPublishBaseline}: a replicated-log peer — acknowledged JetStream publishes.
 *
 * Every baseline is bounded by an op count and/or a duration (each network op also by a
 * timeout) and removes what it created (file, subscriptions, stream, connections).
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { makeDirectory } from "../storage-engine/make-directory";
import { connect, DiscardPolicy, StorageType, type NatsConnection } from "nats";
import { Histogram } from "./histogram";
import { ConnectionState, RequestMux } from "../runtime/request-mux";
import { clientInboxPrefix } from "../messages/subjects";
import { LOG_PREALLOC_BYTES, zerosAheadTo } from "../storage-engine/log";
import { withNatsTls } from "../runtime/nats-tls";
import { redactNatsUrl } from "../runtime/nats-url";
import { natsErrorReason } from "../runtime/nats-connect-hint";

/** Cap on a baseline's duration when only an op/batch count was given. */
const durationMsDefaultCap = 60_000;
const requestTimeoutMsDefault = 5_000;
const connectTimeoutMsDefault = 5_000;
const closeTimeoutMs = 5_000;
const inFlightMax = 4_096;
const batchBytesMax = 64 * 1024 * 1024;
const fileBytesMaxDefault = 256 * 1024 * 1024;
const streamBytesMaxDefault = 256 * 1024 * 1024;

/** How long a baseline runs: stops at whichever bound is reached first. At least one is required. */
export interface BaselineBounds {
  /** Number of measured ops (batches for the raw append baseline). */
  ops?: number;
  /** Wall-clock bound in ms. Defaults to 60 000 when only a count is given. */
  durationMs?: number;
}

/** Options of {@link rawAppendBaseline}. */
export interface RawAppendOptions {
  /** Directory for the scratch file (created if missing); put it on the device under test. */
  dir: string;
  recordBytes: number;
  recordsPerBatch: number;
  /** Number of batches (one write + one fdatasync each). */
  batches?: number;
  /**
   * Number of records, instead of `batches`: as many full batches as they fill, and the rest in a
   * last, shorter one (a bound in requests, as a subject's, appends no more records than it).
   */
  records?: number;
  durationMs?: number;
  /** When the scratch file reaches this size it is truncated to 0 (untimed) and appends resume. Default 256 MiB. */
  fileBytesMax?: number;
}

/** Result of {@link rawAppendBaseline}. */
export interface RawAppendResult {
  name: "raw-append";
  recordBytes: number;
  recordsPerBatch: number;
  batches: number;
  records: number;
  bytes: number;
  /** Time spent in write + fdatasync, summed over batches. */
  seconds: number;
  recordsPerSec: number;
  /** Decimal megabytes (10^6 bytes) per second. */
  mbPerSec: number;
  /** Latency of one batch (write + fdatasync), µs. */
  batchLatency: Histogram;
}

/** Options of {@link natsEchoBaseline} and {@link jetstreamPublishBaseline}. */
export interface RequestBaselineOptions extends BaselineBounds {
  /** NATS server URL, e.g. `nats://127.0.0.1:4222`. */
  url: string;
  /** NATS user and password, for a server that admits only its users; it must be allowed `strata.bench.>` (and `$JS.API.>` for JetStream). */
  auth?: { user: string; pass: string };
  /** TLS files (cluster/nats-auth.ts `NatsTlsFiles`), for a server that speaks TLS. */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  payloadBytes: number;
  /** Concurrent outstanding ops (closed loop): 1 .. 4096. */
  inFlight: number;
  /** Unmeasured ops run first with the same concurrency. Default 0. */
  warmupOps?: number;
  /** Timeout of one request/publish. Default 5 000 ms. */
  requestTimeoutMs?: number;
  /** Timeout of connecting. Default 5 000 ms. */
  connectTimeoutMs?: number;
}

/** Result of {@link natsEchoBaseline} and {@link jetstreamPublishBaseline}. */
export interface RequestBaselineResult {
  name: "nats-echo" | "jetstream-publish";
  payloadBytes: number;
  inFlight: number;
  /** Completed measured ops. */
  ops: number;
  seconds: number;
  opsPerSec: number;
  /** Latency of one op, µs. */
  latency: Histogram;
  /** What the baseline does and does not promise, for the report. */
  note: string;
}

/** Result of {@link jetstreamPublishBaseline}. */
export interface JetStreamPublishResult extends RequestBaselineResult {
  name: "jetstream-publish";
}

function assertInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${value}`);
  }
}

/** Resolves the bounds into a count and a duration; throws when neither is given. */
function resolveBounds(what: string, count: number | undefined, durationMs: number | undefined): { countMax: number; durationMs: number } {
  if (count === undefined && durationMs === undefined) throw new RangeError(`${what}: give a count or durationMs (or both) to bound it`);
  if (count !== undefined) assertInteger(`${what}: count`, count, 1, Number.MAX_SAFE_INTEGER);
  if (durationMs !== undefined && !(durationMs > 0 && Number.isFinite(durationMs))) {
    throw new RangeError(`${what}: durationMs must be finite and > 0, got ${durationMs}`);
  }
  return { countMax: count ?? Number.MAX_SAFE_INTEGER, durationMs: durationMs ?? durationMsDefaultCap };
}

function uniqueId(): string {
  return `${process.pid}_${crypto.randomBytes(6).toString("hex")}`;
}

function rate(count: number, seconds: number): number {
  return seconds > 0 ? count / seconds : 0;
}

/**
 * Measures the disk alone: per batch, one `fs.writeSync` of recordsPerBatch × recordBytes
 * appended to a scratch file in `dir`, then `fs.fdatasyncSync`. The file grows as a shard log's
 * does: a small batch that runs past its end also writes zeros ahead (`zerosAheadTo`, in the same
 * timed step), so later batches overwrite blocks the file already has and their fdatasync needs
 * no journal commit. This is the most a device queue doing group commit could reach.
 * Synchronous: it blocks the calling thread while it runs, as a device queue on its own thread
 * would. The scratch file is removed at the end.
 */
export async function rawAppendBaseline(options: RawAppendOptions): Promise<RawAppendResult> {
  const { dir, recordBytes, recordsPerBatch } = options;
  assertInteger("rawAppendBaseline: recordBytes", recordBytes, 1, batchBytesMax);
  assertInteger("rawAppendBaseline: recordsPerBatch", recordsPerBatch, 1, batchBytesMax);
  const batchBytes = recordBytes * recordsPerBatch;
  if (batchBytes > batchBytesMax) throw new RangeError(`rawAppendBaseline: a batch of ${batchBytes} bytes exceeds ${batchBytesMax}`);
  const fileBytesMax = options.fileBytesMax ?? fileBytesMaxDefault;
  assertInteger("rawAppendBaseline: fileBytesMax", fileBytesMax, batchBytes, Number.MAX_SAFE_INTEGER);
  if (options.batches !== undefined && options.records !== undefined) throw new RangeError("rawAppendBaseline: give batches or records, not both");
  if (options.records !== undefined) assertInteger("rawAppendBaseline: records", options.records, 1, Number.MAX_SAFE_INTEGER);
  const recordsMax = options.records ?? Number.MAX_SAFE_INTEGER;
  const batchesAsked = options.records === undefined ? options.batches : Math.ceil(options.records / recordsPerBatch);
  const { countMax: batchesMax, durationMs } = resolveBounds("rawAppendBaseline", batchesAsked, options.durationMs);

  makeDirectory(dir);
  const file = path.join(dir, `strata-raw-append-${uniqueId()}.dat`);
  const buffer = crypto.randomFillSync(Buffer.allocUnsafe(batchBytes));
  const zeros = Buffer.alloc(LOG_PREALLOC_BYTES);
  const batchLatency = new Histogram();
  const fd = fs.openSync(file, "wx");
  let batches = 0;
  let records = 0;
  let bytes = 0;
  let timedNs = 0n;
  try {
    let fileBytes = 0;
    /** Bytes of the file: records plus the zeros written ahead of them. */
    let fileEnd = 0;
    const deadlineNs = process.hrtime.bigint() + BigInt(Math.round(durationMs * 1e6));
    while (batches < batchesMax && process.hrtime.bigint() < deadlineNs) {
      const count = Math.min(recordsPerBatch, recordsMax - records);
      const size = count * recordBytes;
      if (fileBytes + size > fileBytesMax) {
        fs.ftruncateSync(fd, 0);
        fs.fdatasyncSync(fd);
        fileBytes = 0;
        fileEnd = 0;
      }
      const startNs = process.hrtime.bigint();
      const written = fs.writeSync(fd, buffer, 0, size, fileBytes);
      const end = fileBytes + size;
      if (end > fileEnd) {
        fileEnd = zerosAheadTo(end, batchBytes, fileBytesMax);
        if (fileEnd > end) fs.writeSync(fd, zeros, 0, fileEnd - end, end);
      }
      fs.fdatasyncSync(fd);
      const elapsedNs = process.hrtime.bigint() - startNs;
      if (written !== size) throw new Error(`rawAppendBaseline: short write of ${written} of ${size} bytes to ${file}`);
      timedNs += elapsedNs;
      batchLatency.record(Number(elapsedNs) / 1000);
      fileBytes += size;
      batches += 1;
      records += count;
      bytes += size;
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
  const seconds = Number(timedNs) / 1e9;
  return {
    name: "raw-append",
    recordBytes,
    recordsPerBatch,
    batches,
    records,
    bytes,
    seconds,
    recordsPerSec: rate(records, seconds),
    mbPerSec: rate(bytes / 1e6, seconds),
    batchLatency,
  };
}

/**
 * Runs `op` with `inFlight` concurrent workers (closed loop) until `countMax` ops were started
 * or the duration elapsed, recording each completed op's latency. The first failure stops every
 * worker; it is thrown once all outstanding ops have settled.
 */
async function closedLoop(params: {
  /** Prefix of the error thrown when an op fails. */
  label: string;
  inFlight: number;
  countMax: number;
  durationMs: number;
  op: () => Promise<void>;
  latency: Histogram;
}): Promise<{ ops: number; seconds: number }> {
  const { inFlight, countMax, op, latency } = params;
  let started = 0;
  let completed = 0;
  let failure: { error: unknown } | undefined;
  const startNs = process.hrtime.bigint();
  const deadlineNs = startNs + BigInt(Math.round(params.durationMs * 1e6));
  const worker = async (): Promise<void> => {
    while (failure === undefined && started < countMax && process.hrtime.bigint() < deadlineNs) {
      started += 1;
      const opStartNs = process.hrtime.bigint();
      try {
        await op();
      } catch (error) {
        failure ??= { error };
        return;
      }
      latency.recordSince(opStartNs);
      completed += 1;
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, countMax) }, worker));
  const seconds = Number(process.hrtime.bigint() - startNs) / 1e9;
  if (failure !== undefined) {
    const cause = failure.error;
    const message = cause instanceof Error ? cause.message : String(cause);
    throw new Error(`${params.label}: an op failed after ${completed} completed: ${message}`, { cause });
  }
  return { ops: completed, seconds };
}

/** Runs the warm-up or the measured phase of a request baseline. */
function runPhase(
  what: string,
  phase: "warm-up" | "measured",
  o: ResolvedRequestOptions,
  op: () => Promise<void>,
  latency: Histogram,
): Promise<{ ops: number; seconds: number }> {
  return closedLoop({
    label: `${what} against ${o.shownUrl} (${phase}, ${o.requestTimeoutMs} ms timeout per op)`,
    inFlight: o.inFlight,
    countMax: phase === "warm-up" ? o.warmupOps : o.countMax,
    durationMs: o.durationMs,
    op,
    latency,
  });
}

interface ResolvedRequestOptions {
  url: string;
  /** `url` as messages show it (`redactNatsUrl`). */
  shownUrl: string;
  auth: { user: string; pass: string } | undefined;
  tls: { caFile?: string; certFile?: string; keyFile?: string } | undefined;
  payloadBytes: number;
  inFlight: number;
  warmupOps: number;
  countMax: number;
  durationMs: number;
  requestTimeoutMs: number;
  connectTimeoutMs: number;
}

function resolveRequestOptions(what: string, options: RequestBaselineOptions): ResolvedRequestOptions {
  assertInteger(`${what}: payloadBytes`, options.payloadBytes, 0, batchBytesMax);
  assertInteger(`${what}: inFlight`, options.inFlight, 1, inFlightMax);
  const warmupOps = options.warmupOps ?? 0;
  assertInteger(`${what}: warmupOps`, warmupOps, 0, Number.MAX_SAFE_INTEGER);
  const requestTimeoutMs = options.requestTimeoutMs ?? requestTimeoutMsDefault;
  const connectTimeoutMs = options.connectTimeoutMs ?? connectTimeoutMsDefault;
  assertInteger(`${what}: requestTimeoutMs`, requestTimeoutMs, 1, 600_000);
  assertInteger(`${what}: connectTimeoutMs`, connectTimeoutMs, 1, 600_000);
  return {
    url: options.url,
    shownUrl: redactNatsUrl(options.url),
    auth: options.auth,
    tls: options.tls,
    payloadBytes: options.payloadBytes,
    inFlight: options.inFlight,
    warmupOps,
    requestTimeoutMs,
    connectTimeoutMs,
    ...resolveBounds(what, options.ops, options.durationMs),
  };
}

async function connectTo(what: string, role: string, o: ResolvedRequestOptions): Promise<NatsConnection> {
  let nc: NatsConnection;
  try {
    // As Strata's client connects: without per-request async stack traces, so the ratios compare like with like.
    nc = await connect({ servers: o.url, ...(o.auth === undefined ? {} : { ...o.auth, inboxPrefix: clientInboxPrefix(o.auth.user) }), ...withNatsTls(o.url, o.tls), name: `strata-baseline-${role}`, timeout: o.connectTimeoutMs, reconnect: false, noAsyncTraces: true });
  } catch (err) {
    throw new Error(`${what}: cannot connect to ${o.shownUrl} within ${o.connectTimeoutMs} ms: ${natsErrorReason(err)}`);
  }
  const maxPayload = nc.info?.max_payload ?? 0;
  if (o.payloadBytes > maxPayload) {
    await closeBounded(nc);
    throw new RangeError(`${what}: payloadBytes ${o.payloadBytes} exceeds the server's max_payload ${maxPayload}`);
  }
  return nc;
}

/** Closes a connection, giving up after closeTimeoutMs (the socket is then left to the client). */
async function closeBounded(nc: NatsConnection | undefined): Promise<void> {
  if (nc === undefined || nc.isClosed()) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    nc.close().catch(() => undefined),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, closeTimeoutMs))),
  ]);
  clearTimeout(timer);
}

/**
 * Measures NATS request/reply alone: a responder that echoes the payload on one connection and a
 * requester with `inFlight` concurrent requests (through the RequestMux the Strata client uses) on another. This
 * is the most any Strata request over NATS could reach. Both connections are closed at the end.
 */
export async function natsEchoBaseline(options: RequestBaselineOptions): Promise<RequestBaselineResult> {
  const what = "natsEchoBaseline";
  const o = resolveRequestOptions(what, options);
  const subject = `strata.bench.echo.${uniqueId()}`;
  const payload = crypto.randomBytes(o.payloadBytes);
  const latency = new Histogram();
  let responder: NatsConnection | undefined;
  let requester: NatsConnection | undefined;
  try {
    responder = await connectTo(what, "echo-responder", o);
    requester = await connectTo(what, "echo-requester", o);
    let refused: Error | null = null;
    responder.subscribe(subject, {
      callback: (err, msg) => {
        if (err === null) msg.respond(msg.data);
        else refused = err;
      },
    });
    await responder.flush();
    // A server that admits only its users, as this one's user (its permissions): said at once.
    if (refused !== null) throw new Error(`${what}: the server refuses the responder's subscription to ${subject}: ${(refused as Error).message}`);
    // The request path of Strata's client (one reply subscription, one deadline timer, a subject
    // the server refuses failing at once), so the ceiling is the transport's, not that of a
    // slower request path.
    const mux = new RequestMux(requester, { connection: new ConnectionState(requester) });
    const op = async (): Promise<void> => {
      const reply = await mux.request(subject, payload, { timeoutMs: o.requestTimeoutMs });
      if (reply.data.length !== o.payloadBytes) {
        throw new Error(`echo of ${reply.data.length} bytes, expected ${o.payloadBytes}`);
      }
    };
    if (o.warmupOps > 0) {
      await runPhase(what, "warm-up", o, op, new Histogram());
    }
    const { ops, seconds } = await runPhase(what, "measured", o, op, latency);
    return {
      name: "nats-echo",
      payloadBytes: o.payloadBytes,
      inFlight: o.inFlight,
      ops,
      seconds,
      opsPerSec: rate(ops, seconds),
      latency,
      note: "NATS request/reply to a responder that only echoes: the network ceiling of a Strata request.",
    };
  } finally {
    await closeBounded(requester);
    await closeBounded(responder);
  }
}

/**
 * The note attached to {@link jetstreamPublishBaseline} results: JetStream acknowledges a publish
 * once the message is written to its file store but does not fsync each message (its default
 * sync interval is 2 minutes), so it is a throughput peer for Strata's log, not a durability
 * peer: Strata acknowledges a write only after fdatasync on a majority of replicas.
 */
export const jetstreamNote =
  "JetStream does not fsync each message (its default sync interval is 2 minutes): a throughput peer, " +
  "not a durability peer (Strata acknowledges a write only after fdatasync on a majority).";

const LEAVE_OUT_JETSTREAM = "--baselines raw-append,nats-echo leaves this one out";

/**
 * The error of a JetStream API request the server refused this connection's user (its
 * permissions: the request's subject, `$JS.API.…`), or undefined for another failure. The
 * server then runs JetStream all the same: the user may not use it.
 */
function jetstreamRefused(what: string, o: ResolvedRequestOptions, err: Error): Error | undefined {
  const denied = (err as { permissionContext?: { operation?: string; subject?: string } }).permissionContext;
  const quoted = /Permissions Violation for (Publish|Subscription) to "([^"]+)"/i.exec(err.message);
  const subject = denied?.subject ?? quoted?.[2];
  if (subject === undefined) return undefined;
  const operation = denied?.operation ?? quoted![1]!.toLowerCase();
  const user = o.auth === undefined ? "this connection's user" : `user ${o.auth.user}`;
  return new Error(
    `${what}: the NATS server at ${o.shownUrl} does not let ${user} ${operation === "publish" ? "publish to" : "subscribe to"} ${subject}: ` +
      `it may not use JetStream's API (the baseline needs a user that may publish to $JS.API.> and strata.bench.>; ${LEAVE_OUT_JETSTREAM}): ${err.message}`,
  );
}

/**
 * Measures acknowledged JetStream publishes: creates a file-storage stream with 1 replica on a
 * unique subject (bounded to 256 MiB, oldest discarded), publishes `payloadBytes` messages with
 * `js.publish` and `inFlight` outstanding, then deletes the stream and closes the connection.
 *
 * JetStream does not fsync each message (its default sync interval is 2 minutes), so this is a
 * throughput peer, not a durability peer; the result's `note` says so.
 */
export async function jetstreamPublishBaseline(options: RequestBaselineOptions): Promise<JetStreamPublishResult> {
  const what = "jetstreamPublishBaseline";
  const o = resolveRequestOptions(what, options);
  const id = uniqueId();
  const stream = `STRATA_BENCH_${id}`;
  const subject = `strata.bench.jetstream.${id}`;
  const payload = crypto.randomBytes(o.payloadBytes);
  const latency = new Histogram();
  let nc: NatsConnection | undefined;
  try {
    nc = await connectTo(what, "jetstream-publisher", o);
    const jsm = await nc.jetstreamManager({ timeout: o.requestTimeoutMs }).catch((err: Error) => {
      throw jetstreamRefused(what, o, err) ?? new Error(`${what}: JetStream is not available at ${o.shownUrl} (is the server started with JetStream? strata dev's is not: ${LEAVE_OUT_JETSTREAM}): ${err.message}`);
    });
    await jsm.streams
      .add({
        name: stream,
        subjects: [subject],
        storage: StorageType.File,
        num_replicas: 1,
        max_bytes: streamBytesMaxDefault,
        discard: DiscardPolicy.Old,
      })
      .catch((err: Error) => {
        throw jetstreamRefused(what, o, err) ?? err;
      });
    let result: JetStreamPublishResult | undefined;
    let failure: { error: unknown } | undefined;
    try {
      const js = nc.jetstream({ timeout: o.requestTimeoutMs });
      const op = async (): Promise<void> => {
        const ack = await js.publish(subject, payload, { timeout: o.requestTimeoutMs });
        if (ack.stream !== stream) throw new Error(`publish acknowledged by stream ${ack.stream}, expected ${stream}`);
      };
      if (o.warmupOps > 0) {
        await runPhase(what, "warm-up", o, op, new Histogram());
      }
      const { ops, seconds } = await runPhase(what, "measured", o, op, latency);
      result = {
        name: "jetstream-publish",
        payloadBytes: o.payloadBytes,
        inFlight: o.inFlight,
        ops,
        seconds,
        opsPerSec: rate(ops, seconds),
        latency,
        note: jetstreamNote,
      };
    } catch (error) {
      failure = { error };
    }
    try {
      await jsm.streams.delete(stream);
    } catch (err) {
      // Report the first failure; a failed delete alone is an error of its own.
      if (failure === undefined) throw new Error(`${what}: could not delete stream ${stream}: ${(err as Error).message}`);
    }
    if (failure !== undefined) throw failure.error;
    if (result === undefined) throw new Error(`${what}: no result and no failure (a bug in the baseline)`);
    return result;
  } finally {
    await closeBounded(nc);
  }
}
