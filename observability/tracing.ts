/**
 * Trace propagation and span helpers of Strata.
 *
 * A request carries its W3C trace context (`traceparent`) in NATS headers between processes and
 * as a plain `traceparent` string field in messages between threads. The helpers here read and
 * write it without any global propagator, so they behave the same whether telemetry is started
 * or not: without a tracer provider the context passes through unchanged, with one every hop
 * adds its span.
 *
 * Span names and attributes (see docs/observability.md for the full trace of a write):
 * - `send <type>` (CLIENT): a request leaving a client or a node; messaging.* attributes.
 * - `process <type>` (SERVER): a request received on an API or shard subject.
 * - `shard.write` / `shard.read` / `shard.flush` (INTERNAL): the ShardActor's work.
 * - `device.batch` (INTERNAL): one DeviceQueue batch; parent = the first request it serves,
 *   links = every request it serves (bounded by LINKS_PER_SPAN_MAX).
 * - `device.fsync` (INTERNAL): one fdatasync of one log in a batch.
 *
 * Attribute names follow the OpenTelemetry messaging conventions (messaging.system = 'nats',
 * messaging.destination.name, messaging.operation.type/name) and database conventions
 * (db.system.name = 'strata', db.operation.name); Strata's own attributes start with `strata.`.
 */
import {
  context,
  createContextKey,
  trace,
  INVALID_SPAN_CONTEXT,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type SpanContext,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';
import { HEADER_TRACEPARENT, parseTraceparent } from '../messages/headers';

/** Name of the tracer every Strata span comes from. */
export const TRACER_NAME = 'strata';
/** Links one span carries at most (a batch serving more requests links the first ones). */
export const LINKS_PER_SPAN_MAX = 128;

/** Attribute names used on Strata spans (OpenTelemetry semantic conventions where they fit). */
export const ATTR = {
  messagingSystem: 'messaging.system',
  messagingDestination: 'messaging.destination.name',
  messagingOperationType: 'messaging.operation.type',
  messagingOperationName: 'messaging.operation.name',
  messagingBodySize: 'messaging.message.body.size',
  dbSystem: 'db.system.name',
  dbOperation: 'db.operation.name',
  errorType: 'error.type',
  threadId: 'thread.id',
  node: 'strata.node.id',
  volume: 'strata.volume.id',
  shard: 'strata.shard',
  pages: 'strata.page.count',
  lsn: 'strata.lsn',
  term: 'strata.term',
  device: 'strata.device',
  batchOps: 'strata.batch.ops',
  batchLinksDropped: 'strata.batch.links_dropped',
} as const;

/** Reads one header (NATS `MsgHdrs` fits; '' or undefined mean absent). */
export interface TraceCarrierReader {
  get(name: string): string | undefined | null;
}

/** Writes one header (NATS `MsgHdrs` fits). */
export interface TraceCarrierWriter {
  set(name: string, value: string): void;
}

/**
 * Whether this thread may record spans. Strata's telemetry sets it false when sampling is off (or
 * nothing exports): a request that arrives without a trace then costs no span and no context
 * switch at all, while one that carries a traceparent still passes it on. True by default, so a
 * process that sets up OpenTelemetry its own way keeps its spans.
 */
let spansRecordable = true;

/** Called by the telemetry setup of a thread: false when no span of this thread can be recorded. */
export function setSpansRecordable(on: boolean): void {
  spansRecordable = on;
}

/** The span passed to `fn` when no span is made: records nothing. */
const NO_SPAN: Span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
/** Injects nothing: no trace to continue. */
const NO_INJECT = (): void => undefined;

/** The API's no-op tracer provider: what an unset global provider delegates to. */
const NOOP_TRACER_PROVIDER = new ProxyTracerProvider().getDelegate();

/**
 * True when no OpenTelemetry SDK is registered in this process (the global provider is the
 * API's proxy without a delegate): every span would then be a no-op one, as in an application
 * that uses the Strata client without tracing.
 */
function noTracerInstalled(): boolean {
  const provider = trace.getTracerProvider();
  return provider instanceof ProxyTracerProvider && provider.getDelegate() === NOOP_TRACER_PROVIDER;
}

/**
 * True when a span made now would be neither recorded nor part of a trace: this thread records
 * none (see setSpansRecordable) or no SDK is registered, and the parent has no trace either.
 */
function nothingToTrace(parent: Context): boolean {
  if (spansRecordable && !noTracerInstalled()) return false;
  const sc = trace.getSpanContext(parent);
  return sc === undefined || !trace.isSpanContextValid(sc);
}

let tracerProvider: TracerProvider | undefined;
let tracerCached: Tracer | undefined;

/**
 * Strata's tracer. The global provider object changes when telemetry is shut down and started
 * again (tests), so the tracer is cached per provider: one identity check per span.
 */
function tracer(): Tracer {
  const provider = trace.getTracerProvider();
  if (provider !== tracerProvider || tracerCached === undefined) {
    tracerProvider = provider;
    tracerCached = provider.getTracer(TRACER_NAME);
  }
  return tracerCached;
}

/**
 * The `traceparent` value of the span in `ctx` (default: the active context), or undefined when
 * there is no valid span context. Use it as a field of a message to another thread.
 */
export function traceparentOf(ctx: Context = context.active()): string | undefined {
  const sc = trace.getSpanContext(ctx);
  if (sc === undefined || !trace.isSpanContextValid(sc)) return undefined;
  const flags = (sc.traceFlags & 0xff).toString(16).padStart(2, '0');
  return `00-${sc.traceId}-${sc.spanId}-${flags}`;
}

/**
 * Writes the `traceparent` header of the span in `ctx` (default: the active context) into
 * `carrier`. Returns false (and writes nothing) when there is no valid span context.
 */
export function injectTraceparent(carrier: TraceCarrierWriter, ctx: Context = context.active()): boolean {
  const value = traceparentOf(ctx);
  if (value === undefined) return false;
  carrier.set(HEADER_TRACEPARENT, value);
  return true;
}

/**
 * A context whose parent is the remote span named by a `traceparent` value, on top of `base`
 * (default: the root context, so nothing of the receiver's own context leaks into the request).
 * A missing or malformed value gives `base` unchanged: the request then starts a new trace.
 */
export function contextFromTraceparent(value: string | undefined | null, base: Context = ROOT_CONTEXT): Context {
  const tp = parseTraceparent(value ?? '');
  if (tp === undefined) return base;
  // parseTraceparent checked the format: 2-32-16-2 lowercase hex digits.
  const sc: SpanContext = {
    traceId: tp.slice(3, 35),
    spanId: tp.slice(36, 52),
    traceFlags: parseInt(tp.slice(53, 55), 16) & TraceFlags.SAMPLED,
    isRemote: true,
  };
  return trace.setSpanContext(base, sc);
}

/** The context of the `traceparent` header in `carrier` (see `contextFromTraceparent`). */
export function extractContext(carrier: TraceCarrierReader | undefined, base: Context = ROOT_CONTEXT): Context {
  return contextFromTraceparent(carrier?.get(HEADER_TRACEPARENT), base);
}

/** Options of `withSpan`. */
export interface WithSpanOptions {
  /** Parent context; default the active context. */
  parent?: Context;
  /** Links to other spans (a batch's requests); at most LINKS_PER_SPAN_MAX are kept. */
  links?: Link[];
  /** Default INTERNAL. */
  kind?: SpanKind;
}

function errorType(err: unknown): string {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  if (typeof code === 'string' && code.length > 0 && code.length <= 64) return code;
  return err instanceof Error ? err.name : 'unknown';
}

/** Marks a span failed with the error's protocol code (or class name) as `error.type`. */
export function recordSpanError(span: Span, err: unknown): void {
  span.setAttribute(ATTR.errorType, errorType(err));
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message.slice(0, 256) : String(err).slice(0, 256) });
}

/**
 * Now in milliseconds since the epoch, to a fraction of a microsecond, on one clock for every
 * thread of the process (each thread's `performance.timeOrigin` is its start on that clock). The
 * SDK's own span start is `Date.now()`, whole milliseconds: a write's spans on three threads,
 * which together last about a millisecond, would all seem to start at the same instant. Strata's
 * spans give both their start and their end from here.
 */
export function preciseNowMs(): number {
  return performance.timeOrigin + performance.now();
}

function isPromiseLike(v: unknown): v is PromiseLike<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/**
 * Runs `fn` inside a new span and ends the span when `fn` returns or, if it returns a promise,
 * when the promise settles. A throw or rejection marks the span failed (`error.type` = the
 * error's code) and is passed on unchanged. The span is active inside `fn`, so spans started
 * and traceparents injected there are its children.
 */
export function withSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => T, options: WithSpanOptions = {}): T {
  const parent = options.parent ?? context.active();
  if (nothingToTrace(parent)) return fn(NO_SPAN);
  const parentSc = trace.getSpanContext(parent);
  if (parentSc !== undefined && (parentSc.traceFlags & TraceFlags.SAMPLED) === 0 && trace.isSpanContextValid(parentSc)) {
    // Every Strata sampler follows the parent's decision: a child of an unsampled span is never
    // recorded, so skip the SDK and pass the parent's context through (the cost of a span under
    // sampling 'off' or of the 99% of a 1% ratio is then that of this check).
    return context.with(parent, fn, undefined, trace.wrapSpanContext(parentSc));
  }
  const links = options.links && options.links.length > LINKS_PER_SPAN_MAX ? options.links.slice(0, LINKS_PER_SPAN_MAX) : options.links;
  const span = tracer().startSpan(
    name,
    { kind: options.kind ?? SpanKind.INTERNAL, attributes, startTime: preciseNowMs(), ...(links ? { links } : {}) },
    parent,
  );
  const ctx = trace.setSpan(parent, span);
  const end = (): void => span.end(preciseNowMs());
  let result: T;
  try {
    result = context.with(ctx, fn, undefined, span);
  } catch (err) {
    recordSpanError(span, err);
    end();
    throw err;
  }
  if (isPromiseLike(result)) {
    (result as PromiseLike<unknown>).then(
      end,
      (err: unknown) => {
        recordSpanError(span, err);
        end();
      },
    );
  } else {
    end();
  }
  return result;
}

/** Attributes of a NATS request span (client or server side) of a Strata message type. */
export function messagingAttributes(subject: string, type: string, side: 'send' | 'process', bodyBytes?: number): Attributes {
  const attrs: Attributes = {
    [ATTR.messagingSystem]: 'nats',
    [ATTR.messagingDestination]: subject,
    [ATTR.messagingOperationType]: side,
    [ATTR.messagingOperationName]: side === 'send' ? 'request' : 'process',
    [ATTR.dbSystem]: 'strata',
    [ATTR.dbOperation]: type,
  };
  if (bodyBytes !== undefined) attrs[ATTR.messagingBodySize] = bodyBytes;
  return attrs;
}

/**
 * Sends a request inside a CLIENT span `send <type>` and writes its traceparent into the headers:
 * `clientSpan(subject, 'shard.write', (inject) => { inject(h); return nc.request(...) })`.
 */
export function clientSpan<T>(
  subject: string,
  type: string,
  fn: (inject: (carrier: TraceCarrierWriter) => void) => T,
  bodyBytes?: number,
  attributes?: Attributes,
): T {
  const active = context.active();
  if (nothingToTrace(active)) return fn(NO_INJECT);
  const batch = active.getValue(BATCH_KEY) as BatchLinks | undefined;
  const attrs = messagingAttributes(subject, type, 'send', bodyBytes);
  if (attributes) Object.assign(attrs, attributes);
  if (batch === undefined) return withSpan(`send ${type}`, attrs, () => fn((c) => void injectTraceparent(c)), { kind: SpanKind.CLIENT });
  // A message carrying many requests (batchContext): its span links to every one of them.
  attrs[ATTR.batchOps] = batch.ops;
  if (batch.dropped > 0) attrs[ATTR.batchLinksDropped] = batch.dropped;
  return withSpan(`send ${type}`, attrs, () => fn((c) => void injectTraceparent(c)), {
    kind: SpanKind.CLIENT,
    parent: active.deleteValue(BATCH_KEY),
    links: batch.links,
  });
}

/** Whether the headers carry a valid trace context (a traceparent of a span). */
export function carriesTrace(headers: TraceCarrierReader | undefined): boolean {
  const sc = trace.getSpanContext(extractContext(headers));
  return sc !== undefined && trace.isSpanContextValid(sc);
}

/**
 * Handles a received request inside a SERVER span `process <type>` whose parent is the
 * traceparent of the request's headers.
 */
export function serverSpan<T>(
  subject: string,
  type: string,
  headers: TraceCarrierReader | undefined,
  fn: (span: Span) => T,
  bodyBytes?: number,
  attributes?: Attributes,
): T {
  const parent = extractContext(headers);
  if (nothingToTrace(parent)) return fn(NO_SPAN);
  const attrs = messagingAttributes(subject, type, 'process', bodyBytes);
  if (attributes) Object.assign(attrs, attributes);
  return withSpan(`process ${type}`, attrs, fn, {
    kind: SpanKind.SERVER,
    parent,
  });
}

// -------------------------------------------------------------------------------------------
// Batches: one unit of work serving many requests
// -------------------------------------------------------------------------------------------

/** The span context active now, to remember with a queued operation (undefined when none). */
export function captureSpanContext(ctx: Context = context.active()): SpanContext | undefined {
  const sc = trace.getSpanContext(ctx);
  return sc !== undefined && trace.isSpanContextValid(sc) ? sc : undefined;
}

/**
 * Links to the given span contexts, without duplicates, at most `max` (LINKS_PER_SPAN_MAX).
 * Returns the links and how many were dropped by the bound.
 */
export function batchLinks(contexts: Iterable<SpanContext | undefined>, max: number = LINKS_PER_SPAN_MAX): { links: Link[]; dropped: number } {
  const links: Link[] = [];
  const seen = new Set<string>();
  let dropped = 0;
  for (const sc of contexts) {
    if (sc === undefined || seen.has(sc.spanId)) continue;
    seen.add(sc.spanId);
    if (links.length >= max) {
      dropped++;
      continue;
    }
    links.push({ context: sc });
  }
  return { links, dropped };
}

interface BatchLinks {
  links: Link[];
  dropped: number;
  ops: number;
}

const BATCH_KEY = createContextKey('strata.batch.links');

/**
 * The context for sending one message that carries many requests (a replication append holding
 * many client writes): its span context is the first sampled request's, and the next
 * `clientSpan` started in it becomes that request's child with a link to every request. With
 * no sampled request it is the root context, so nothing of an unrelated active trace leaks in.
 */
export function batchContext(requests: readonly (SpanContext | undefined)[]): Context {
  let first: SpanContext | undefined;
  for (const sc of requests) {
    if (sc !== undefined && (sc.traceFlags & TraceFlags.SAMPLED) !== 0) {
      first = sc;
      break;
    }
  }
  if (first === undefined) return ROOT_CONTEXT;
  const { links, dropped } = batchLinks(requests);
  const batch: BatchLinks = { links, dropped, ops: requests.length };
  return trace.setSpanContext(ROOT_CONTEXT, first).setValue(BATCH_KEY, batch);
}

/**
 * What a sender of batched messages needs to trace them, as an injected interface (actors/
 * imports nothing of observability; actors/replica.ts ReplicaTracer fits): `capture()` when a
 * request is accepted, `send(captured values of the requests a message carries, run)` around
 * the send.
 */
export interface BatchSendTracer {
  capture(): unknown;
  send<T>(tags: readonly unknown[], run: () => T): T;
}

/** The BatchSendTracer of replication: sends run in `batchContext` of the writes they carry. */
export function batchSendTracer(): BatchSendTracer {
  return {
    // Only sampled requests are remembered (a link to an unsampled one would lead nowhere).
    capture: () => {
      const sc = captureSpanContext();
      return sc !== undefined && (sc.traceFlags & TraceFlags.SAMPLED) !== 0 ? sc : undefined;
    },
    send: (tags, run) => context.with(batchContext(tags as readonly (SpanContext | undefined)[]), run),
  };
}

/**
 * Runs one batch inside a span linked to every request it serves. Its parent is the first
 * sampled request's span (so a batch of one request sits inside that request's trace); every
 * request is a link. With no traced request in the batch, the span is not created at all.
 */
export function withBatchSpan<T>(name: string, attributes: Attributes, requests: readonly (SpanContext | undefined)[], fn: () => T): T {
  // The parent is the first sampled request (an unsampled parent would make the batch unsampled).
  let first: SpanContext | undefined;
  for (const sc of requests) {
    if (sc !== undefined && (first === undefined || ((first.traceFlags & TraceFlags.SAMPLED) === 0 && (sc.traceFlags & TraceFlags.SAMPLED) !== 0))) first = sc;
  }
  if (first === undefined) return fn();
  const { links, dropped } = batchLinks(requests);
  const attrs: Attributes = { ...attributes, [ATTR.batchOps]: requests.length };
  if (dropped > 0) attrs[ATTR.batchLinksDropped] = dropped;
  return withSpan(name, attrs, fn, { parent: trace.setSpanContext(ROOT_CONTEXT, first), links });
}

/** Set in the context of a traced device batch (deviceQueueTracer). */
const IN_TRACED_BATCH = createContextKey('strata.device.batch.traced');

/**
 * What a DeviceQueue needs to trace its batches, as an injected interface (the queue lives in
 * actors/, which imports nothing of observability). The queue calls `capture()` when an
 * operation is submitted and keeps the value with the operation; around a batch it calls
 * `batch(tags, run)` and around each fdatasync `sync(run)`. The values are opaque to the queue.
 */
export interface DeviceQueueTracer {
  capture(): unknown;
  batch<T>(tags: readonly unknown[], run: () => T): T;
  sync<T>(run: () => T): T;
}

/**
 * The DeviceQueueTracer of a device (`device` is a short name, e.g. `dev0`); `attributes` go on
 * every span (e.g. the node id, when nodes share a process).
 */
export function deviceQueueTracer(device: string, attributes: Attributes = {}): DeviceQueueTracer {
  const batchAttrs: Attributes = { ...attributes, [ATTR.device]: device, [ATTR.dbSystem]: 'strata', [ATTR.dbOperation]: 'device.batch' };
  const syncAttrs: Attributes = { ...attributes, [ATTR.device]: device, [ATTR.dbSystem]: 'strata', [ATTR.dbOperation]: 'device.fsync' };
  // A key of the batch's context tells `sync` it runs inside a traced batch, also after the
  // batch's awaits (flushes off the thread, one log after another); an fsync outside one (no
  // traced request in the batch) gets no span.
  return {
    // Only sampled requests are remembered: an unsampled one is never recorded, a link to it
    // would lead nowhere.
    capture: () => {
      const sc = captureSpanContext();
      return sc !== undefined && (sc.traceFlags & TraceFlags.SAMPLED) !== 0 ? sc : undefined;
    },
    batch: (tags, run) => {
      const requests = tags as readonly (SpanContext | undefined)[];
      if (!requests.some((t) => t !== undefined)) return run();
      return withBatchSpan('device.batch', batchAttrs, requests, () => context.with(context.active().setValue(IN_TRACED_BATCH, true), run));
    },
    sync: (run) => (context.active().getValue(IN_TRACED_BATCH) === true ? withSpan('device.fsync', syncAttrs, run) : run()),
  };
}
