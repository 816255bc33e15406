import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { connect } from "nats";
import { jetstreamPublishBaseline, natsEchoBaseline, rawAppendBaseline, type RequestBaselineResult } from "../../bench/baselines";
import type { Histogram } from "../../bench/histogram";
import { startNatsServer, type NatsServerHandle } from "../../runtime/nats-server";

function assertOrdered(latency: Histogram, count: number): void {
  assert.equal(latency.count, count);
  const points = [latency.min, latency.percentile(50), latency.percentile(90), latency.percentile(99), latency.max];
  for (let i = 1; i < points.length; i++) assert.ok(points[i - 1]! <= points[i]!, `percentiles ordered: ${points.join(" <= ")}`);
  assert.ok(latency.min > 0);
}

function assertSane(result: RequestBaselineResult, ops: number, payloadBytes: number, inFlight: number): void {
  assert.equal(result.ops, ops);
  assert.equal(result.payloadBytes, payloadBytes);
  assert.equal(result.inFlight, inFlight);
  assert.ok(result.seconds > 0);
  assert.ok(result.opsPerSec > 0);
  assert.ok(Math.abs(result.opsPerSec - ops / result.seconds) < 1e-6 * result.opsPerSec);
  assertOrdered(result.latency, ops);
}

describe("bench/baselines", function () {
  this.timeout(20_000);
  let server: NatsServerHandle;
  let dir: string;

  before(async () => {
    server = await startNatsServer({ jetstream: true });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-baseline-test-"));
  });

  after(async () => {
    await server?.stop();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("rawAppendBaseline: counts match, rates > 0, scratch file removed", async () => {
    const result = await rawAppendBaseline({ dir, recordBytes: 4096, recordsPerBatch: 8, batches: 50 });
    assert.equal(result.batches, 50);
    assert.equal(result.records, 400);
    assert.equal(result.bytes, 400 * 4096);
    assert.ok(result.seconds > 0 && result.recordsPerSec > 0 && result.mbPerSec > 0);
    assert.ok(Math.abs(result.mbPerSec - result.bytes / 1e6 / result.seconds) < 1e-6 * result.mbPerSec);
    assertOrdered(result.batchLatency, 50);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it("rawAppendBaseline bounded in records appends no more than them: full batches, then a shorter last one", async () => {
    const result = await rawAppendBaseline({ dir, recordBytes: 4096, recordsPerBatch: 8, records: 100 });
    assert.equal(result.records, 100);
    assert.equal(result.batches, 13);
    assert.equal(result.bytes, 100 * 4096);
    assertOrdered(result.batchLatency, 13);
    await assert.rejects(rawAppendBaseline({ dir, recordBytes: 4096, recordsPerBatch: 8, records: 100, batches: 2 }), /give batches or records, not both/);
    await assert.rejects(rawAppendBaseline({ dir, recordBytes: 4096, recordsPerBatch: 8, records: 0 }), /records/);
  });

  it("rawAppendBaseline: wraps the scratch file at fileBytesMax and stops at durationMs", async () => {
    const wrapped = await rawAppendBaseline({ dir, recordBytes: 1024, recordsPerBatch: 4, batches: 20, fileBytesMax: 16 * 1024 });
    assert.equal(wrapped.records, 80);
    const timed = await rawAppendBaseline({ dir, recordBytes: 512, recordsPerBatch: 1, durationMs: 100 });
    assert.ok(timed.batches > 0);
    assert.ok(timed.seconds < 1);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it("natsEchoBaseline: counts match, percentiles ordered, rates > 0", async () => {
    const one = await natsEchoBaseline({ url: server.url, payloadBytes: 4096, inFlight: 1, ops: 200, warmupOps: 20 });
    assertSane(one, 200, 4096, 1);
    assert.equal(one.name, "nats-echo");
    const many = await natsEchoBaseline({ url: server.url, payloadBytes: 4096, inFlight: 16, ops: 300 });
    assertSane(many, 300, 4096, 16);
    const timed = await natsEchoBaseline({ url: server.url, payloadBytes: 0, inFlight: 4, durationMs: 100 });
    assert.ok(timed.ops > 0 && timed.seconds < 2);
    assertOrdered(timed.latency, timed.ops);
  });

  it("jetstreamPublishBaseline: counts match, notes durability, deletes its stream", async () => {
    const result = await jetstreamPublishBaseline({ url: server.url, payloadBytes: 4096, inFlight: 8, ops: 300 });
    assertSane(result, 300, 4096, 8);
    assert.match(result.note, /does not fsync each message/);
    const nc = await connect({ servers: server.url, timeout: 2_000, reconnect: false });
    try {
      const jsm = await nc.jetstreamManager();
      const names: string[] = [];
      for await (const page of jsm.streams.names()) names.push(page);
      assert.deepEqual(names, []);
    } finally {
      await nc.close();
    }
  });

  it("refuses unbounded runs, oversize payloads and a missing JetStream with clear errors", async () => {
    await assert.rejects(natsEchoBaseline({ url: server.url, payloadBytes: 16, inFlight: 1 }), /give a count or durationMs/);
    await assert.rejects(rawAppendBaseline({ dir, recordBytes: 16, recordsPerBatch: 1 }), /give a count or durationMs/);
    await assert.rejects(
      natsEchoBaseline({ url: server.url, payloadBytes: 2 * 1024 * 1024, inFlight: 1, ops: 1 }),
      /payloadBytes 2097152 exceeds the server's max_payload 1048576/,
    );
    const plain = await startNatsServer({ jetstream: false });
    try {
      await assert.rejects(
        jetstreamPublishBaseline({ url: plain.url, payloadBytes: 16, inFlight: 1, ops: 1, requestTimeoutMs: 1_000 }),
        /JetStream is not available at .*--baselines raw-append,nats-echo leaves this one out/,
      );
    } finally {
      await plain.stop();
    }
  });

  it("jetstreamPublishBaseline: a user the server does not let use JetStream's API is told so, naming the subject, not that JetStream is off", async () => {
    // JetStream on; the user may use the bench's subjects and its inboxes, not $JS.API.>.
    const locked = await startNatsServer({
      jetstream: true,
      extraConfig: 'authorization { users = [ { user: "bench", password: "pw", permissions: { publish: ["strata.bench.>"], subscribe: ["_INBOX.bench.>"] } } ] }\n',
    });
    try {
      await assert.rejects(
        jetstreamPublishBaseline({ url: locked.url, auth: { user: "bench", pass: "pw" }, payloadBytes: 16, inFlight: 1, ops: 1, requestTimeoutMs: 2_000 }),
        (e: unknown) => {
          const message = (e as Error).message;
          assert.match(message, /^jetstreamPublishBaseline: the NATS server at nats:\/\/127\.0\.0\.1:\d+ does not let user bench publish to \$JS\.API\.INFO: it may not use JetStream's API \(the baseline needs a user that may publish to \$JS\.API\.> and strata\.bench\.>;/);
          assert.doesNotMatch(message, /JetStream is not available/);
          return true;
        },
      );
    } finally {
      await locked.stop();
    }
  });

  it("stops with the error when the server goes away mid-run", async () => {
    const doomed = await startNatsServer({ jetstream: false });
    try {
      const run = natsEchoBaseline({ url: doomed.url, payloadBytes: 64, inFlight: 4, durationMs: 5_000, requestTimeoutMs: 500 });
      setTimeout(() => doomed.kill(), 100);
      await assert.rejects(run);
    } finally {
      await doomed.stop();
    }
  });
});
