import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { Worker, threadId } from 'node:worker_threads';
import { SpanKind, context, trace } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { startTelemetry, type Telemetry } from '../../observability/telemetry';
import {
  batchLinks,
  captureSpanContext,
  clientSpan,
  contextFromTraceparent,
  deviceQueueTracer,
  extractContext,
  injectTraceparent,
  serverSpan,
  setSpansRecordable,
  traceparentOf,
  withSpan,
  LINKS_PER_SPAN_MAX,
  preciseNowMs,
} from '../../observability/tracing';

const DIST_OBS = path.join(__dirname, '..', '..', 'observability');

/**
 * A worker that continues a trace: it receives `{ traceparent }`, runs a span `hop <name>` with
 * that parent and a child span across an await, forwards its spans and answers with the
 * traceparent of the child.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { startWorkerTracing } = require(${JSON.stringify(path.join(DIST_OBS, 'telemetry.js'))});
const { withSpan, contextFromTraceparent, traceparentOf } = require(${JSON.stringify(path.join(DIST_OBS, 'tracing.js'))});
const tracing = startWorkerTracing(workerData.telemetry);
parentPort.on('message', async (msg) => {
  if (msg.stop) { await tracing.shutdown(); parentPort.close(); return; }
  const tp = await withSpan('hop ' + workerData.name, { 'test.worker': workerData.name }, async () => {
    await new Promise((r) => setTimeout(r, 2));
    return withSpan('inner ' + workerData.name, {}, () => traceparentOf());
  }, { parent: contextFromTraceparent(msg.traceparent) });
  await tracing.forceFlush();
  parentPort.postMessage({ traceparent: tp });
});
`;

function startTraceWorker(t: Telemetry, name: string): Worker {
  const { init, transferList } = t.forWorker();
  return new Worker(WORKER_SOURCE, { eval: true, workerData: { name, telemetry: init }, transferList });
}

function ask(w: Worker, msg: unknown): Promise<{ traceparent: string | undefined }> {
  return new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
    w.postMessage(msg);
  });
}

async function stopWorker(w: Worker): Promise<void> {
  const exited = new Promise<void>((r) => w.once('exit', () => r()));
  w.postMessage({ stop: true });
  await Promise.race([exited, new Promise<void>((r) => setTimeout(r, 2000))]);
  await w.terminate();
}

async function waitForSpans(t: Telemetry, n: number): Promise<ReadableSpan[]> {
  const until = Date.now() + 5000;
  for (;;) {
    const spans = t.memoryExporter!.getFinishedSpans();
    if (spans.length >= n || Date.now() > until) return spans;
    await new Promise((r) => setTimeout(r, 10));
  }
}

function byName(spans: ReadableSpan[], name: string): ReadableSpan {
  const s = spans.find((x) => x.name === name);
  assert.ok(s, `span '${name}' among ${spans.map((x) => x.name).join(', ')}`);
  return s;
}

/** A header carrier like NATS MsgHdrs: get gives '' for an absent header. */
function headers(): { get(k: string): string; set(k: string, v: string): void; map: Map<string, string> } {
  const map = new Map<string, string>();
  return { map, get: (k) => map.get(k) ?? '', set: (k, v) => void map.set(k, v) };
}

describe('observability/tracing', () => {
  let telemetry: Telemetry | undefined;
  afterEach(async () => {
    await telemetry?.shutdown();
    telemetry = undefined;
  });

  it('one connected trace across the main thread and two worker threads', async function () {
    this.timeout(20_000);
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: ['memory'], sampling: 'always', metricsPort: 0 });
    const t = telemetry;
    const a = startTraceWorker(t, 'a');
    const b = startTraceWorker(t, 'b');
    try {
      await withSpan('client write', {}, async () => {
        // Main → a over "NATS headers", a → b as a message field.
        const h = headers();
        assert.equal(injectTraceparent(h), true);
        const fromA = await ask(a, { traceparent: h.get('traceparent') });
        assert.ok(fromA.traceparent);
        const fromB = await ask(b, { traceparent: fromA.traceparent });
        assert.ok(fromB.traceparent);
      }, { kind: SpanKind.CLIENT });
    } finally {
      await stopWorker(a);
      await stopWorker(b);
    }
    const spans = await waitForSpans(t, 5);
    assert.equal(spans.length, 5, spans.map((s) => s.name).join(', '));
    const root = byName(spans, 'client write');
    const hopA = byName(spans, 'hop a');
    const innerA = byName(spans, 'inner a');
    const hopB = byName(spans, 'hop b');
    const innerB = byName(spans, 'inner b');
    const traceId = root.spanContext().traceId;
    for (const s of spans) assert.equal(s.spanContext().traceId, traceId, `${s.name} in the same trace`);
    assert.equal(root.parentSpanContext, undefined);
    assert.equal(hopA.parentSpanContext?.spanId, root.spanContext().spanId);
    assert.equal(innerA.parentSpanContext?.spanId, hopA.spanContext().spanId);
    assert.equal(hopB.parentSpanContext?.spanId, innerA.spanContext().spanId);
    assert.equal(innerB.parentSpanContext?.spanId, hopB.spanContext().spanId);
    // Worker spans carry their thread and the process's resource.
    const threadA = hopA.attributes['thread.id'];
    const threadB = hopB.attributes['thread.id'];
    assert.equal(typeof threadA, 'number');
    assert.notEqual(threadA, threadB);
    assert.notEqual(threadA, threadId);
    assert.equal(innerA.attributes['thread.id'], threadA);
    assert.equal(hopB.resource.attributes['strata.node.id'], 'n1');
    assert.equal(hopB.resource.attributes['service.name'], 'strata');
    assert.equal(root.resource.attributes['strata.cluster'], 'test');
  });

  it('spans start and end to a fraction of a millisecond, on the clock of every thread', async () => {
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: ['memory'], sampling: 'always', metricsPort: 0 });
    const before = preciseNowMs();
    withSpan('timed', {}, () => {
      const until = preciseNowMs() + 0.3;
      while (preciseNowMs() < until) {
        // busy for 0.3 ms
      }
    });
    const after = preciseNowMs();
    await telemetry.forceFlush();
    const span = byName(telemetry.memoryExporter!.getFinishedSpans(), 'timed');
    const ms = (t: [number, number]): number => t[0] * 1000 + t[1] / 1e6;
    const eps = 0.01; // float rounding of an epoch time in ms
    // The SDK's own start is Date.now(): whole milliseconds, up to 1 ms before `before`.
    assert.ok(ms(span.startTime) >= before - eps, `start ${ms(span.startTime)} not before ${before}`);
    assert.ok(ms(span.endTime) <= after + eps, `end ${ms(span.endTime)} not after ${after}`);
    assert.ok(ms(span.endTime) - ms(span.startTime) >= 0.3 - eps, 'the duration is the time spent');
    // Another thread's clock: its timeOrigin + now() agrees with this thread's. Its reading is
    // taken after this thread started it and before this thread got its message, and so lies
    // between this thread's readings then (one counted from another origin, the process's start
    // say, would not). Each thread reads its origin from the wall clock as it starts: they may
    // differ by what the wall clock was adjusted since, a fraction of a millisecond.
    const agree = 1;
    const spawned = preciseNowMs();
    const w = new Worker(`require('node:worker_threads').parentPort.postMessage(performance.timeOrigin + performance.now())`, { eval: true });
    const sent = await new Promise<number>((resolve, reject) => w.once('message', resolve).once('error', reject));
    const received = preciseNowMs();
    await w.terminate();
    assert.ok(spawned - agree <= sent && sent <= received + agree, `worker clock ${sent}, not within ${spawned}..${received}`);
  });

  it('with sampling off nothing is recorded, but the trace id still propagates', async () => {
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: ['memory'], sampling: 'off', metricsPort: 0 });
    const parent = contextFromTraceparent('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00');
    const tp = withSpan('x', {}, () => traceparentOf(), { parent });
    assert.match(tp!, /^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-00$/);
    await telemetry.forceFlush();
    assert.equal(telemetry.memoryExporter!.getFinishedSpans().length, 0);
  });

  it('with sampling off a request without a trace gets no span and no context; one with a trace still propagates it', async () => {
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: ['memory'], sampling: 'off', metricsPort: 0 });
    // Without the fast path the span calls would still switch the active context (to a
    // non-recording span's) and ask the SDK; with it they call straight through.
    const rootCtx = context.active();
    let inner: unknown;
    const h = headers();
    clientSpan('s', 'shard.write', (inject) => {
      inject(h);
      inner = context.active();
    });
    assert.equal(inner, rootCtx, 'no context switch for a request outside any trace');
    assert.equal(h.get('traceparent'), '', 'nothing to inject');
    serverSpan('s', 'shard.write', h, (span) => assert.equal(span.spanContext().traceId, '00000000000000000000000000000000'));
    const traced = headers();
    traced.set('traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00');
    const tp = serverSpan('s', 'shard.write', traced, () => traceparentOf());
    assert.match(tp!, /^00-0af7651916cd43dd8448eb211c80319c-/);
    setSpansRecordable(true);
    try {
      // Sampling off registers no tracer provider: even with the flag raised there is nothing
      // to make spans with, and the call still goes straight through.
      clientSpan('s', 'shard.write', () => {
        inner = context.active();
      });
      assert.equal(inner, rootCtx);
    } finally {
      setSpansRecordable(false);
    }
    await telemetry.forceFlush();
    assert.equal(telemetry.memoryExporter!.getFinishedSpans().length, 0);
  });

  it('without an OpenTelemetry SDK in the process a request outside any trace costs no span; a traceparent still propagates', async () => {
    // No telemetry started: the global provider is the API's proxy without a delegate.
    setSpansRecordable(true);
    const a = withSpan('x', {}, (span) => span);
    const b = clientSpan('s', 'shard.read', () => withSpan('y', {}, (span) => span));
    assert.equal(a, b, 'both calls went straight through with the one no-op span, no span was made');
    // A request with a trace still gets its (no-op) span as the child of the remote parent.
    const remote = serverSpan('s', 'shard.read', { get: () => '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' }, (span) => span);
    assert.notEqual(remote, a);
    assert.equal(remote.spanContext().traceId, '0af7651916cd43dd8448eb211c80319c');
    // With an SDK registered, the same calls make spans.
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: ['memory'], sampling: 'always', metricsPort: 0 });
    const c = withSpan('x', {}, (span) => span);
    assert.notEqual(c, a);
    assert.ok(trace.isSpanContextValid(c.spanContext()), 'a real span');
    await telemetry.forceFlush();
    assert.equal(telemetry.memoryExporter!.getFinishedSpans().length, 1);
  });

  it('client and server spans carry messaging and database attributes, errors their code', async () => {
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: ['memory'], sampling: 'always', metricsPort: 0 });
    const subject = 'strata.test.shard.v1.0';
    const h = headers();
    await clientSpan(subject, 'shard.write', async (inject) => {
      inject(h);
      await assert.rejects(
        serverSpan(subject, 'shard.write', h, async () => {
          throw Object.assign(new Error('mailbox full'), { code: 'overloaded' });
        }),
      );
    }, 4200);
    await telemetry.forceFlush();
    const spans = telemetry.memoryExporter!.getFinishedSpans();
    const client = byName(spans, 'send shard.write');
    const server = byName(spans, 'process shard.write');
    assert.equal(client.kind, SpanKind.CLIENT);
    assert.equal(server.kind, SpanKind.SERVER);
    assert.equal(server.parentSpanContext?.spanId, client.spanContext().spanId);
    assert.equal(server.parentSpanContext?.isRemote, true);
    assert.equal(client.attributes['messaging.system'], 'nats');
    assert.equal(client.attributes['messaging.destination.name'], subject);
    assert.equal(client.attributes['messaging.operation.type'], 'send');
    assert.equal(client.attributes['messaging.message.body.size'], 4200);
    assert.equal(server.attributes['messaging.operation.type'], 'process');
    assert.equal(server.attributes['db.system.name'], 'strata');
    assert.equal(server.attributes['db.operation.name'], 'shard.write');
    assert.equal(server.attributes['error.type'], 'overloaded');
    assert.equal(server.status.code, 2);
  });

  it('a device batch is a child of its first request and links to every request; fsync is its child', async () => {
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: ['memory'], sampling: 'always', metricsPort: 0 });
    const dq = deviceQueueTracer('dev0');
    const tags: unknown[] = [];
    for (const name of ['w1', 'w2', 'w3']) withSpan(name, {}, () => void tags.push(dq.capture()));
    tags.push(dq.capture()); // an untraced submission
    const r = dq.batch(tags, () => dq.sync(() => 42));
    assert.equal(r, 42);
    await telemetry.forceFlush();
    const spans = telemetry.memoryExporter!.getFinishedSpans();
    const batch = byName(spans, 'device.batch');
    const fsync = byName(spans, 'device.fsync');
    const w1 = byName(spans, 'w1');
    assert.equal(batch.parentSpanContext?.spanId, w1.spanContext().spanId);
    assert.equal(batch.spanContext().traceId, w1.spanContext().traceId);
    assert.deepEqual(batch.links.map((l) => l.context.spanId), ['w1', 'w2', 'w3'].map((n) => byName(spans, n).spanContext().spanId));
    assert.equal(batch.attributes['strata.batch.ops'], 4);
    assert.equal(batch.attributes['strata.device'], 'dev0');
    assert.equal(fsync.parentSpanContext?.spanId, batch.spanContext().spanId);
    // A batch with no traced request makes no span, nor does its fsync.
    telemetry.memoryExporter!.reset();
    assert.equal(dq.batch([undefined, undefined], () => dq.sync(() => 1)), 1);
    await telemetry.forceFlush();
    assert.equal(telemetry.memoryExporter!.getFinishedSpans().length, 0);
  });

  it('every fsync of a traced batch has its span, also after the batch awaited (flushes off the thread, one log after another)', async () => {
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'test', traceExporters: ['memory'], sampling: 'always', metricsPort: 0 });
    const dq = deviceQueueTracer('dev0');
    const tags: unknown[] = [];
    withSpan('w', {}, () => void tags.push(dq.capture()));
    const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 2));
    await dq.batch(tags, async () => {
      for (let log = 0; log < 2; log++) await dq.sync(tick);
    });
    // An fsync after the batch ended is outside it.
    await dq.sync(tick);
    await telemetry.forceFlush();
    const spans = telemetry.memoryExporter!.getFinishedSpans();
    const batch = byName(spans, 'device.batch');
    const fsyncs = spans.filter((x) => x.name === 'device.fsync');
    assert.equal(fsyncs.length, 2);
    for (const f of fsyncs) assert.equal(f.parentSpanContext?.spanId, batch.spanContext().spanId);
  });

  it('links are bounded and deduplicated', () => {
    const sc = (i: number) => ({ traceId: 'a'.repeat(32), spanId: i.toString(16).padStart(16, '0'), traceFlags: 1 });
    const many = Array.from({ length: LINKS_PER_SPAN_MAX + 10 }, (_, i) => sc(i + 1));
    const r = batchLinks([...many, sc(1), undefined]);
    assert.equal(r.links.length, LINKS_PER_SPAN_MAX);
    assert.equal(r.dropped, 10);
  });

  it('extract ignores malformed traceparents and round-trips valid ones', () => {
    for (const bad of ['', 'garbage', '00-00000000000000000000000000000000-b7ad6b7169203331-01', 'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', '00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01']) {
      const h = headers();
      h.set('traceparent', bad);
      assert.equal(trace.getSpanContext(extractContext(h)), undefined, bad);
    }
    const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const h = headers();
    h.set('traceparent', tp);
    const ctx = extractContext(h);
    assert.equal(traceparentOf(ctx), tp);
    assert.deepEqual(captureSpanContext(ctx), { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1, isRemote: true });
    // No active span: nothing injected.
    const out = headers();
    assert.equal(injectTraceparent(out, context.active()), false);
    assert.equal(out.map.size, 0);
  });
});
