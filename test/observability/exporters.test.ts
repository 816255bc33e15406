/**
 * The span exporters an operator chooses with the standard OTEL_* variables: OTLP over
 * HTTP/protobuf to a collector, the console, none; and the choices Strata refuses.
 */
import * as assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { trace } from '@opentelemetry/api';
import { startTelemetry, type Telemetry } from '../../observability/telemetry';

interface Posted {
  method: string | undefined;
  url: string | undefined;
  contentType: string | undefined;
  body: Buffer;
}

/** A collector's OTLP/HTTP endpoint that keeps what it is sent. */
async function collector(): Promise<{ url: string; posted: Posted[]; close(): Promise<void> }> {
  const posted: Posted[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      posted.push({ method: req.method, url: req.url, contentType: req.headers['content-type'], body: Buffer.concat(chunks) });
      res.writeHead(200, { 'content-type': 'application/x-protobuf' });
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, posted, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe('trace exporters chosen by OTEL_* variables', function () {
  this.timeout(20_000);
  const saved = new Map<string, string | undefined>();
  let telemetry: Telemetry | undefined;

  const setEnv = (name: string, value: string | undefined): void => {
    if (!saved.has(name)) saved.set(name, process.env[name]);
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  };
  const spanNamed = (name: string): void => trace.getTracer('strata-exporters-test').startSpan(name).end();

  afterEach(async () => {
    await telemetry?.shutdown();
    telemetry = undefined;
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    saved.clear();
  });

  it('otlp: spans are posted as protobuf to OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, with the node in the resource', async () => {
    const c = await collector();
    try {
      setEnv('OTEL_TRACES_EXPORTER', 'otlp');
      setEnv('OTEL_EXPORTER_OTLP_ENDPOINT', c.url);
      telemetry = startTelemetry({ nodeId: 'n7', cluster: 'otlp-test', sampling: 'always', metricsPort: 0 });
      spanNamed('strata.test.otlp-span');
      await telemetry.forceFlush();
      assert.equal(c.posted.length, 1);
      const [p] = c.posted;
      assert.deepEqual([p!.method, p!.url, p!.contentType], ['POST', '/v1/traces', 'application/x-protobuf']);
      // Protobuf carries strings as they are: the span's name and the resource's attributes.
      for (const text of ['strata.test.otlp-span', 'strata.node.id', 'n7', 'otlp-test']) assert.ok(p!.body.includes(text), `the request holds ${text}`);
    } finally {
      await c.close();
    }
  });

  it('console: each span is printed when it ends', async () => {
    setEnv('OTEL_TRACES_EXPORTER', 'console');
    const printed: unknown[] = [];
    const dir = console.dir;
    console.dir = (item: unknown) => void printed.push(item);
    try {
      telemetry = startTelemetry({ nodeId: 'n1', cluster: 'console-test', sampling: 'always', metricsPort: 0 });
      spanNamed('strata.test.console-span');
      await telemetry.forceFlush();
    } finally {
      console.dir = dir;
    }
    assert.deepEqual(printed.map((x) => (x as { name?: unknown }).name), ['strata.test.console-span']);
  });

  it('none, or unset: no exporter, and nothing recorded', async () => {
    const c = await collector();
    try {
      setEnv('OTEL_EXPORTER_OTLP_ENDPOINT', c.url);
      for (const value of ['none', undefined]) {
        setEnv('OTEL_TRACES_EXPORTER', value);
        telemetry = startTelemetry({ nodeId: 'n1', cluster: 'none-test', sampling: 'always', metricsPort: 0 });
        const span = trace.getTracer('strata-exporters-test').startSpan('strata.test.dropped');
        assert.equal(span.isRecording(), false, String(value));
        span.end();
        await telemetry.shutdown();
        telemetry = undefined;
      }
      assert.deepEqual(c.posted, []);
    } finally {
      await c.close();
    }
  });

  it('refuses an exporter it does not support, and OTLP over another protocol than http/protobuf, naming them', () => {
    setEnv('OTEL_TRACES_EXPORTER', 'console,jaeger');
    assert.throws(() => startTelemetry({ nodeId: 'n1', cluster: 'x', metricsPort: 0 }), /OTEL_TRACES_EXPORTER: unsupported exporter 'jaeger' \(Strata supports otlp, console, none\)/);
    setEnv('OTEL_TRACES_EXPORTER', 'otlp');
    setEnv('OTEL_EXPORTER_OTLP_PROTOCOL', 'grpc');
    assert.throws(() => startTelemetry({ nodeId: 'n1', cluster: 'x', metricsPort: 0 }), /OTLP protocol 'grpc' is not supported by Strata; use http\/protobuf/);
    // Neither left a telemetry started: one can start now.
    setEnv('OTEL_TRACES_EXPORTER', 'none');
    telemetry = startTelemetry({ nodeId: 'n1', cluster: 'x', metricsPort: 0 });
  });
});
