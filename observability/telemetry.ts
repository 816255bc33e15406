/**
 * OpenTelemetry setup of a Strata process.
 *
 * Threading model. A node is one process: the main thread (API service, controller, comlink
 * control of the hosts) and one worker thread per actor host. Each thread has its own JS realm,
 * so its own OpenTelemetry globals:
 * - The main thread calls `startTelemetry()` once per process. It starts the NodeSDK (service
 *   `strata`, resource attributes `strata.node.id` and `strata.cluster`), the span exporters
 *   chosen by options or OTEL_* variables, the Prometheus endpoint and the `StrataMetrics`.
 * - For each worker it starts, the main thread takes `telemetry.forWorker()`: a
 *   `WorkerTelemetryInit` (sampling config + one end of a MessageChannel) to put in the
 *   worker's `workerData`, with the port in `transferList`.
 * - The worker calls `startWorkerTracing(workerData.telemetry)`: a TracerProvider with the same
 *   sampler whose exporter forwards finished spans, batched and serialized as plain objects,
 *   over the port. The main thread hands them to its own span processors, so every exporter of
 *   the process (in-memory in tests, OTLP or console in production) sees the spans of all
 *   threads, with the process's resource.
 * - Metrics are not forwarded: worker state reaches the main thread in the stats the hosts
 *   already return over comlink, which `StrataMetrics` reads at every scrape (metrics.ts).
 *
 * Only one telemetry per process (the OpenTelemetry API has one global tracer provider per
 * realm); every node of an in-process cluster shares it and adds its own stats source.
 */
import { MessageChannel, type MessagePort, type TransferListItem } from 'node:worker_threads';
import { context, metrics, propagation, trace, type SpanContext } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import {
  defaultResource,
  detectResources,
  envDetector,
  hostDetector,
  osDetector,
  resourceFromAttributes,
  type Resource,
} from '@opentelemetry/resources';
import type { IMetricReader } from '@opentelemetry/sdk-metrics';
import { NodeSDK } from '@opentelemetry/sdk-node';
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace';
import { StrataMetrics } from './metrics';
import {
  FORWARDED_SPANS_PER_MESSAGE_MAX,
  ForwardingSpanExporter,
  SAMPLING_RATIO_DEFAULT,
  WORKER_SPAN_FORWARD_DELAY_MS,
  WORKER_SPAN_QUEUE_MAX,
  samplerOf,
  serializeSpan,
  startWorkerTracing,
  type ForwardedSpans,
  type SamplingMode,
  type SerializedSpan,
  type WorkerTelemetryInit,
  type WorkerTracing,
} from './worker-tracing';

// What a worker uses lives in worker-tracing.ts (light to load); re-exported for the main thread.
export {
  FORWARDED_SPANS_PER_MESSAGE_MAX,
  ForwardingSpanExporter,
  SAMPLING_RATIO_DEFAULT,
  WORKER_SPAN_FORWARD_DELAY_MS,
  WORKER_SPAN_QUEUE_MAX,
  samplerOf,
  serializeSpan,
  startWorkerTracing,
};
export type { ForwardedSpans, SamplingMode, SerializedSpan, WorkerTelemetryInit, WorkerTracing };
import { setSpansRecordable } from './tracing';

/** Default Prometheus port (the registered OpenTelemetry Prometheus exporter port). */
export const METRICS_PORT_DEFAULT = 9464;
/** Span exporters: `memory` is for tests (unbounded), `otlp` is OTLP/HTTP protobuf. */
export type TraceExporterName = 'otlp' | 'console' | 'memory';

/** Options of `startTelemetry`. Everything not given comes from OTEL_* variables or defaults. */
export interface TelemetryOptions {
  nodeId: string;
  cluster: string;
  /** Strata version, as resource attribute service.version. */
  version?: string;
  /**
   * Span exporters; default from OTEL_TRACES_EXPORTER (comma list of otlp, console, none),
   * and none when unset: OTLP only when configured.
   */
  traceExporters?: TraceExporterName[];
  /** Default from OTEL_TRACES_SAMPLER (always_off → off, *always_on → always, *traceidratio → ratio), else ratio. */
  sampling?: SamplingMode;
  /** Fraction of traces kept with sampling 'ratio', 0..1; default OTEL_TRACES_SAMPLER_ARG, else 0.01. */
  samplingRatio?: number;
  /** Prometheus port; 0 = no endpoint; default OTEL_EXPORTER_PROMETHEUS_PORT, else 9464. */
  metricsPort?: number;
  /** Interface of the Prometheus endpoint; default OTEL_EXPORTER_PROMETHEUS_HOST, else 0.0.0.0. */
  metricsHost?: string;
  /** More metric readers (tests). They should include `telemetry.metrics.producer` to see everything. */
  metricReaders?: IMetricReader[];
}


/** The telemetry of a process. */
export interface Telemetry {
  readonly resource: Resource;
  readonly metrics: StrataMetrics;
  /** The in-memory exporter when 'memory' is among the trace exporters (tests). */
  readonly memoryExporter: InMemorySpanExporter | undefined;
  /** Port of the Prometheus endpoint, 0 when off. */
  readonly metricsPort: number;
  /** Resolves once the Prometheus endpoint listens (at once when off); rejects if it cannot. */
  readonly ready: Promise<void>;
  readonly sampling: SamplingMode;
  readonly samplingRatio: number;
  /**
   * Tracing for one worker thread: put `init` in its workerData and `transferList` in the Worker
   * options. With sampling off (or no exporter) the worker only propagates trace context.
   */
  forWorker(): { init: WorkerTelemetryInit; transferList: TransferListItem[] };
  /** Exports every finished span of this thread now (spans of workers: after their own flush). */
  forceFlush(): Promise<void>;
  /** Flushes and stops everything, closes the endpoint; another `startTelemetry` may follow. */
  shutdown(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Configuration from options and OTEL_* variables
// ---------------------------------------------------------------------------------------------

function envList(name: string): string[] | undefined {
  const v = process.env[name];
  if (v === undefined || v.trim() === '') return undefined;
  return v.split(',').map((x) => x.trim().toLowerCase()).filter((x) => x.length > 0);
}

function traceExportersOf(opts: TelemetryOptions): TraceExporterName[] {
  if (opts.traceExporters) return [...new Set(opts.traceExporters)];
  const list = envList('OTEL_TRACES_EXPORTER') ?? [];
  const out = new Set<TraceExporterName>();
  for (const name of list) {
    if (name === 'otlp' || name === 'console') out.add(name);
    else if (name !== 'none') throw new Error(`OTEL_TRACES_EXPORTER: unsupported exporter '${name}' (Strata supports otlp, console, none)`);
  }
  return [...out];
}

function samplingOf(opts: TelemetryOptions): { sampling: SamplingMode; samplingRatio: number } {
  let sampling = opts.sampling;
  if (sampling === undefined) {
    const env = (process.env.OTEL_TRACES_SAMPLER ?? '').trim().toLowerCase();
    if (env.endsWith('always_off')) sampling = 'off';
    else if (env.endsWith('always_on')) sampling = 'always';
    else sampling = 'ratio';
  }
  let ratio = opts.samplingRatio;
  if (ratio === undefined) {
    const arg = process.env.OTEL_TRACES_SAMPLER_ARG;
    ratio = arg !== undefined && arg.trim() !== '' ? Number(arg) : SAMPLING_RATIO_DEFAULT;
  }
  if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) throw new Error(`sampling ratio must be within 0..1, got ${String(ratio)}`);
  return { sampling, samplingRatio: ratio };
}


function metricsPortOf(opts: TelemetryOptions): number {
  const env = process.env.OTEL_EXPORTER_PROMETHEUS_PORT;
  const port = opts.metricsPort ?? (env !== undefined && env.trim() !== '' ? Number(env) : METRICS_PORT_DEFAULT);
  if (!Number.isSafeInteger(port) || port < 0 || port > 65535) throw new Error(`metrics port must be 0..65535, got ${String(port)}`);
  return port;
}

interface OtlpTraceExporterModule {
  OTLPTraceExporter: new () => SpanExporter;
}

/** OTLP over HTTP/protobuf; endpoint, headers and timeout come from OTEL_EXPORTER_OTLP_* variables. */
function otlpExporter(): SpanExporter {
  const protocol = (process.env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? process.env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf').trim();
  if (protocol !== 'http/protobuf') throw new Error(`OTLP protocol '${protocol}' is not supported by Strata; use http/protobuf`);
  // Loaded only when OTLP is configured.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require('@opentelemetry/exporter-trace-otlp-proto') as OtlpTraceExporterModule;
  return new mod.OTLPTraceExporter();
}

// ---------------------------------------------------------------------------------------------
// Spans across threads
// ---------------------------------------------------------------------------------------------


/** A ReadableSpan again, with `resource` (the process's) and the attribute thread.id. */
export function deserializeSpan(s: SerializedSpan, resource: Resource): ReadableSpan {
  const sc: SpanContext = { traceId: s.traceId, spanId: s.spanId, traceFlags: s.traceFlags };
  const parent: SpanContext | undefined = s.parent
    ? { traceId: s.traceId, spanId: s.parent.spanId, traceFlags: s.parent.traceFlags, isRemote: s.parent.isRemote }
    : undefined;
  return {
    name: s.name,
    kind: s.kind,
    spanContext: () => sc,
    ...(parent ? { parentSpanContext: parent } : {}),
    startTime: s.startTime,
    endTime: s.endTime,
    duration: s.duration,
    status: s.status,
    attributes: { ...s.attributes, 'thread.id': s.threadId },
    links: s.links.map((l) => ({ context: { traceId: l.traceId, spanId: l.spanId, traceFlags: l.traceFlags }, ...(l.attributes ? { attributes: l.attributes } : {}) })),
    events: s.events.map((e) => ({ name: e.name, time: e.time, ...(e.attributes ? { attributes: e.attributes } : {}) })),
    ended: true,
    resource,
    instrumentationScope: { name: s.scope.name, ...(s.scope.version !== undefined ? { version: s.scope.version } : {}) },
    droppedAttributesCount: s.dropped.attributes,
    droppedEventsCount: s.dropped.events,
    droppedLinksCount: s.dropped.links,
  };
}


function isForwardedSpans(v: unknown): v is ForwardedSpans {
  return typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind === 'strata.spans' && Array.isArray((v as { spans?: unknown }).spans);
}

/** Main-thread side: receives forwarded spans on ports and hands them to the span processors. */
class SpanRelay {
  private readonly ports = new Set<MessagePort>();
  constructor(
    private readonly processors: readonly SpanProcessor[],
    private readonly resource: Resource,
  ) {}

  /** A new channel: the returned port goes to a worker; this side listens on the other. */
  open(): MessagePort {
    const { port1, port2 } = new MessageChannel();
    port1.on('message', (msg: unknown) => this.receive(msg));
    port1.on('close', () => this.ports.delete(port1));
    port1.unref();
    this.ports.add(port1);
    return port2;
  }

  close(): void {
    for (const p of this.ports) p.close();
    this.ports.clear();
  }

  private receive(msg: unknown): void {
    if (!isForwardedSpans(msg)) return;
    const spans = msg.spans.length > FORWARDED_SPANS_PER_MESSAGE_MAX ? msg.spans.slice(0, FORWARDED_SPANS_PER_MESSAGE_MAX) : msg.spans;
    for (const s of spans) {
      const span = deserializeSpan(s, this.resource);
      for (const p of this.processors) p.onEnd(span);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// startTelemetry (main thread) and startWorkerTracing (actor hosts)
// ---------------------------------------------------------------------------------------------

let active: Telemetry | undefined;

/** The telemetry started in this process, if any. */
export function currentTelemetry(): Telemetry | undefined {
  return active;
}

/** Starts the telemetry of this process (main thread; once per process, until shutdown). */
export function startTelemetry(opts: TelemetryOptions): Telemetry {
  if (active) throw new Error('telemetry is already started in this process (one per process; share it between nodes)');
  // OTEL_SDK_DISABLED=true turns every signal off, as the OpenTelemetry SDKs read it: no span is
  // recorded on any thread (trace context is still propagated) and no metrics endpoint listens.
  const sdkDisabled = (process.env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true';
  const exporterNames = sdkDisabled ? [] : traceExportersOf(opts);
  const configured = samplingOf(opts);
  // Without an exporter nothing recorded would go anywhere: the same as off.
  const sampling: SamplingMode = exporterNames.length === 0 ? 'off' : configured.sampling;
  const samplingRatio = configured.samplingRatio;
  setSpansRecordable(sampling !== 'off');
  const metricsPort = sdkDisabled ? 0 : metricsPortOf(opts);
  const resource = defaultResource()
    .merge(detectResources({ detectors: [envDetector, hostDetector, osDetector] }))
    .merge(
      resourceFromAttributes({
        'service.name': 'strata',
        'service.namespace': opts.cluster,
        'service.instance.id': opts.nodeId,
        ...(opts.version !== undefined ? { 'service.version': opts.version } : {}),
        'strata.node.id': opts.nodeId,
        'strata.cluster': opts.cluster,
      }),
    );

  let memoryExporter: InMemorySpanExporter | undefined;
  const processors: SpanProcessor[] = [];
  for (const name of exporterNames) {
    if (name === 'memory') {
      memoryExporter = new InMemorySpanExporter();
      processors.push(new SimpleSpanProcessor({ exporter: memoryExporter }));
    } else if (name === 'console') {
      processors.push(new SimpleSpanProcessor({ exporter: new ConsoleSpanExporter() }));
    } else {
      processors.push(new BatchSpanProcessor({ exporter: otlpExporter(), maxQueueSize: 2048, maxExportBatchSize: 512 }));
    }
  }

  // Every Strata metric comes from StrataMetrics' producer, built from the nodes' stats at each
  // collection (metrics.ts); the SDK's own instruments are not used.
  const strataMetrics = new StrataMetrics({ nodeId: opts.nodeId });
  const producer = strataMetrics.producer;
  const readers: IMetricReader[] = [...(opts.metricReaders ?? [])];
  let prometheus: PrometheusExporter | undefined;
  if (metricsPort > 0) {
    prometheus = new PrometheusExporter({
      port: metricsPort,
      host: opts.metricsHost ?? process.env.OTEL_EXPORTER_PROMETHEUS_HOST ?? '0.0.0.0',
      endpoint: '/metrics',
      withoutScopeInfo: true,
      preventServerStart: true,
      metricProducers: [producer],
    });
    readers.push(prometheus);
  }

  const sdk = new NodeSDK({
    serviceName: 'strata',
    resource,
    autoDetectResources: false,
    sampler: samplerOf(sampling, samplingRatio),
    // Sampling off: no tracer provider, so a span costs what the OpenTelemetry API's no-op does.
    spanProcessors: sampling === 'off' ? [] : processors,
    metricReaders: readers,
    logRecordProcessors: [],
    instrumentations: [],
  });
  sdk.start();
  const relay = new SpanRelay(processors, resource);

  const ready = prometheus ? prometheus.startServer() : Promise.resolve();
  // The caller that awaits `ready` reports a failure (once): here it is only kept from being unhandled.
  ready.catch(() => undefined);

  let stopped = false;
  const telemetry: Telemetry = {
    resource,
    metrics: strataMetrics,
    memoryExporter,
    metricsPort,
    ready,
    sampling,
    samplingRatio,
    forWorker() {
      if (sampling === 'off' || stopped) return { init: { sampling: 'off', samplingRatio }, transferList: [] };
      const port = relay.open();
      return { init: { port, sampling, samplingRatio }, transferList: [port] };
    },
    async forceFlush() {
      await Promise.all(processors.map((p) => p.forceFlush()));
    },
    async shutdown() {
      if (stopped) return;
      stopped = true;
      strataMetrics.close();
      relay.close();
      try {
        await sdk.shutdown();
      } finally {
        // Let a later startTelemetry (tests) register its own globals.
        trace.disable();
        metrics.disable();
        context.disable();
        propagation.disable();
        if (active === telemetry) {
          active = undefined;
          setSpansRecordable(true);
        }
      }
    },
  };
  active = telemetry;
  return telemetry;
}
