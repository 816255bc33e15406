/**
 * Tracing of an actor-host worker thread, and what crosses the thread boundary with its spans.
 *
 * This module is what a worker loads (telemetry.ts, the main thread's setup, re-exports it): it
 * needs only the OpenTelemetry API, the trace SDK and the context manager, not the NodeSDK,
 * metrics or exporters, so a host thread starts quickly. See telemetry.ts for the threading model.
 */
import { threadId, type MessagePort } from 'node:worker_threads';
import { context, trace, type Attributes, type HrTime, type Link, type SpanKind, type SpanStatus } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
  type ReadableSpan,
  type Sampler,
  type SpanExporter,
} from '@opentelemetry/sdk-trace';
import { setSpansRecordable } from './tracing';

/** Default sampling ratio when sampling is 'ratio' and no ratio is given. */
export const SAMPLING_RATIO_DEFAULT = 0.01;
/** Spans one forwarded message carries at most (a larger message is truncated). */
export const FORWARDED_SPANS_PER_MESSAGE_MAX = 512;
/** Spans a worker queues for forwarding at most; more are dropped (counted by the SDK). */
export const WORKER_SPAN_QUEUE_MAX = 4096;
/** How long a worker collects finished spans before forwarding them, in ms. */
export const WORKER_SPAN_FORWARD_DELAY_MS = 200;

/**
 * off: record nothing (no tracer provider at all: traceparents pass through unchanged);
 * ratio: that fraction of traces, decided at the root from the trace id and followed by every
 * hop; always: every trace that starts here or arrives sampled.
 */
export type SamplingMode = 'off' | 'ratio' | 'always';

/** What a worker needs to trace: goes into workerData (structured clone; the port is transferred). */
export interface WorkerTelemetryInit {
  /** Where finished spans go; absent when sampling is off. */
  port?: MessagePort;
  sampling: SamplingMode;
  samplingRatio: number;
}

/** The sampler of a sampling mode; the same on every thread of the process. */
export function samplerOf(sampling: SamplingMode, ratio: number): Sampler {
  switch (sampling) {
    case 'off':
      return new AlwaysOffSampler();
    case 'always':
      // Every trace that starts here, and every trace that arrives sampled (the OpenTelemetry
      // default, parentbased_always_on): a hop never records part of a trace its caller dropped.
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case 'ratio':
      // Decided once at the root of a trace (from its trace id); every later hop follows the
      // parent's decision, so a trace is kept whole or not at all.
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
  }
}

// ---------------------------------------------------------------------------------------------
// Spans across threads
// ---------------------------------------------------------------------------------------------

/** A finished span as plain data (what crosses the thread boundary). */
export interface SerializedSpan {
  name: string;
  kind: SpanKind;
  traceId: string;
  spanId: string;
  traceFlags: number;
  traceState: string | undefined;
  parent: { spanId: string; traceFlags: number; isRemote: boolean } | undefined;
  startTime: HrTime;
  endTime: HrTime;
  duration: HrTime;
  status: SpanStatus;
  attributes: Attributes;
  links: Array<{ traceId: string; spanId: string; traceFlags: number; attributes: Attributes | undefined }>;
  events: Array<{ name: string; time: HrTime; attributes: Attributes | undefined }>;
  dropped: { attributes: number; events: number; links: number };
  scope: { name: string; version: string | undefined };
  threadId: number;
}

/** The message a worker posts on its telemetry port. */
export interface ForwardedSpans {
  kind: 'strata.spans';
  spans: SerializedSpan[];
}

/** A finished span as plain data, with the thread it ran on. */
export function serializeSpan(span: ReadableSpan, thread: number = threadId): SerializedSpan {
  const sc = span.spanContext();
  const parent = span.parentSpanContext;
  return {
    name: span.name,
    kind: span.kind,
    traceId: sc.traceId,
    spanId: sc.spanId,
    traceFlags: sc.traceFlags,
    traceState: sc.traceState?.serialize(),
    parent: parent ? { spanId: parent.spanId, traceFlags: parent.traceFlags, isRemote: parent.isRemote === true } : undefined,
    startTime: span.startTime,
    endTime: span.endTime,
    duration: span.duration,
    status: span.status,
    attributes: span.attributes,
    links: span.links.map((l: Link) => ({ traceId: l.context.traceId, spanId: l.context.spanId, traceFlags: l.context.traceFlags, attributes: l.attributes })),
    events: span.events.map((e) => ({ name: e.name, time: e.time, attributes: e.attributes })),
    dropped: { attributes: span.droppedAttributesCount, events: span.droppedEventsCount, links: span.droppedLinksCount },
    scope: { name: span.instrumentationScope.name, version: span.instrumentationScope.version },
    threadId: thread,
  };
}

/** A worker's span exporter: posts finished spans, serialized, on a MessagePort. */
export class ForwardingSpanExporter implements SpanExporter {
  private stopped = false;
  constructor(private readonly port: MessagePort) {}

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    if (this.stopped) {
      resultCallback({ code: ExportResultCode.FAILED, error: new Error('exporter is shut down') });
      return;
    }
    try {
      for (let i = 0; i < spans.length; i += FORWARDED_SPANS_PER_MESSAGE_MAX) {
        const msg: ForwardedSpans = { kind: 'strata.spans', spans: spans.slice(i, i + FORWARDED_SPANS_PER_MESSAGE_MAX).map((s) => serializeSpan(s)) };
        this.port.postMessage(msg);
      }
      resultCallback({ code: ExportResultCode.SUCCESS });
    } catch (e) {
      resultCallback({ code: ExportResultCode.FAILED, error: e instanceof Error ? e : new Error(String(e)) });
    }
  }

  async shutdown(): Promise<void> {
    this.stopped = true;
  }

  async forceFlush(): Promise<void> {
    // Every export posts at once; nothing is held here.
  }
}

// ---------------------------------------------------------------------------------------------
// startWorkerTracing (actor hosts)
// ---------------------------------------------------------------------------------------------

/** Tracing of one worker thread. */
export interface WorkerTracing {
  /** Forwards every finished span of this thread now. */
  forceFlush(): Promise<void>;
  /** Forwards what is left and stops tracing on this thread. */
  shutdown(): Promise<void>;
}

const NOOP_WORKER_TRACING: WorkerTracing = { forceFlush: async () => undefined, shutdown: async () => undefined };

/**
 * Starts tracing on a worker thread from the `WorkerTelemetryInit` the main thread put in its
 * workerData (undefined: nothing is set up, not even context propagation). Spans finished here are batched
 * (WORKER_SPAN_FORWARD_DELAY_MS, at most WORKER_SPAN_QUEUE_MAX queued) and posted to the main
 * thread, which exports them.
 */
export function startWorkerTracing(init: WorkerTelemetryInit | undefined): WorkerTracing {
  if (init === undefined) return NOOP_WORKER_TRACING;
  // The context manager carries the active span across awaits; without it a traceparent could
  // not pass through this thread even with sampling off.
  const contextManager = new AsyncLocalStorageContextManager();
  contextManager.enable();
  context.setGlobalContextManager(contextManager);
  const port = init.port;
  setSpansRecordable(init.sampling !== 'off' && port !== undefined);
  if (init.sampling === 'off' || port === undefined) {
    let stopped = false;
    return {
      forceFlush: async () => undefined,
      async shutdown() {
        if (stopped) return;
        stopped = true;
        context.disable();
        port?.close();
      },
    };
  }
  const exporter = new ForwardingSpanExporter(port);
  const provider = new TracerProvider({
    sampler: samplerOf(init.sampling, init.samplingRatio),
    spanProcessors: [
      new BatchSpanProcessor({
        exporter,
        maxQueueSize: WORKER_SPAN_QUEUE_MAX,
        maxExportBatchSize: FORWARDED_SPANS_PER_MESSAGE_MAX,
        scheduledDelayMillis: WORKER_SPAN_FORWARD_DELAY_MS,
      }),
    ],
  });
  trace.setGlobalTracerProvider(provider);
  let stopped = false;
  return {
    forceFlush: () => provider.forceFlush(),
    async shutdown() {
      if (stopped) return;
      stopped = true;
      try {
        await provider.shutdown();
      } finally {
        trace.disable();
        context.disable();
        port.close();
      }
    },
  };
}
