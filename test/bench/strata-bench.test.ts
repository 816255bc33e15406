import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { BENCH_HELP, WARMUP_OPS_MIN, evaluateTargets, main, parseBenchArgs, resolveOptions, runBench, summarizeCpuProfile, type BenchResult } from "../../bench/strata-bench";
import { WorkloadGenerator, payloadPages, SeededRandom, type Workload } from "../../bench/workloads";
import { startCluster } from "../../cluster/in-process-cluster";

function assertOrdered(summary: { min: number; p50: number; p90: number; p99: number; p999: number; max: number }): void {
  const points = [summary.min, summary.p50, summary.p90, summary.p99, summary.p999, summary.max];
  for (let i = 1; i < points.length; i++) assert.ok(points[i - 1]! <= points[i]!, `percentiles ordered: ${points.join(" <= ")}`);
  assert.ok(summary.min > 0);
}

describe("bench/workloads", () => {
  const workloads: Workload[] = ["randwrite", "randread", "seqwrite", "seqread", "mixed"];

  it("is deterministic for a seed and differs between seeds", () => {
    for (const workload of workloads) {
      const take = (seed: number): string => {
        const g = new WorkloadGenerator({ workload, pageCount: 10_000, pagesPerRequest: 4, readRatio: 0.3, seed });
        return JSON.stringify(Array.from({ length: 200 }, () => g.next()));
      };
      assert.equal(take(7), take(7), workload);
      if (workload !== "seqwrite" && workload !== "seqread") assert.notEqual(take(7), take(8), workload);
    }
    assert.deepEqual(payloadPages(4096, 3, 5), payloadPages(4096, 3, 5));
    assert.notDeepEqual(payloadPages(4096, 1, 5)[0], payloadPages(4096, 1, 6)[0]);
  });

  it("stays within the volume with adjacent, aligned pages", () => {
    for (const workload of workloads) {
      for (const [pageCount, pagesPerRequest] of [[1, 1], [64, 64], [100, 32], [1003, 7]] as const) {
        const g = new WorkloadGenerator({ workload, pageCount, pagesPerRequest, seed: 3 });
        for (let i = 0; i < 2_000; i++) {
          const r = g.next();
          assert.equal(r.pages.length, pagesPerRequest);
          assert.equal(r.firstPage % pagesPerRequest, 0);
          r.pages.forEach((p, j) => assert.equal(p, r.firstPage + j));
          assert.ok(r.pages[r.pages.length - 1]! < pageCount, `${workload} ${pageCount}/${pagesPerRequest}: page ${r.pages.at(-1)}`);
          assert.ok(r.firstPage >= 0);
          if (workload.endsWith("write")) assert.equal(r.kind, "write");
          if (workload.endsWith("read")) assert.equal(r.kind, "read");
        }
      }
    }
  });

  it("walks sequentially and wraps; mixed follows readRatio", () => {
    const seq = new WorkloadGenerator({ workload: "seqwrite", pageCount: 100, pagesPerRequest: 32 });
    assert.deepEqual(Array.from({ length: 5 }, () => seq.next().firstPage), [0, 32, 64, 0, 32]);
    const mixed = new WorkloadGenerator({ workload: "mixed", pageCount: 1000, pagesPerRequest: 1, readRatio: 0.25, seed: 9 });
    const reads = Array.from({ length: 10_000 }, () => mixed.next()).filter((r) => r.kind === "read").length;
    assert.ok(reads > 2_200 && reads < 2_800, `reads ${reads}`);
    const none = new WorkloadGenerator({ workload: "mixed", pageCount: 10, pagesPerRequest: 1, readRatio: 0 });
    assert.ok(Array.from({ length: 100 }, () => none.next()).every((r) => r.kind === "write"));
  });

  it("refuses bad options", () => {
    assert.throws(() => new WorkloadGenerator({ workload: "randwrite", pageCount: 3, pagesPerRequest: 4 }), RangeError);
    assert.throws(() => new WorkloadGenerator({ workload: "randwrite", pageCount: 100, pagesPerRequest: 65 }), RangeError);
    assert.throws(() => new WorkloadGenerator({ workload: "mixed", pageCount: 100, pagesPerRequest: 1, readRatio: 1.5 }), RangeError);
    assert.throws(() => new WorkloadGenerator({ workload: "nope" as Workload, pageCount: 100, pagesPerRequest: 1 }), RangeError);
    const r = new SeededRandom(1);
    for (let i = 0; i < 1000; i++) {
      const v = r.nextInt(10);
      assert.ok(Number.isInteger(v) && v >= 0 && v < 10);
    }
  });
});

describe("bench/strata-bench", function () {
  this.timeout(20_000);
  let resultsDir: string;

  before(() => {
    resultsDir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-bench-test-"));
  });

  after(() => {
    if (resultsDir !== undefined) fs.rmSync(resultsDir, { recursive: true, force: true });
  });

  it("runs a tiny write workload against an in-process cluster with counts, percentiles and ratios", async () => {
    const result: BenchResult = await runBench({
      workload: "randwrite",
      pagesPerRequest: 2,
      queueDepth: 4,
      ops: 120,
      durationMs: 10_000,
      rounds: 2,
      warmupMs: 0,
      volumePages: 64,
      hosts: 1,
      baselines: ["nats-echo", "raw-append"],
      resultsDir,
      name: "unit",
      quiet: true,
    });
    assert.equal(result.kind, "single");
    assert.equal(result.groups.length, 1);
    const [group] = result.groups;
    const s = group!.subjects[0]!;
    assert.ok(s.available);
    assert.equal(s.ops, 120);
    assert.equal(s.latency.count, 120);
    assert.equal(s.pages, 240);
    assert.equal(s.bytes, 240 * 4096);
    assert.deepEqual(s.rounds.map((r) => r.ops), [60, 60]);
    assert.deepEqual(s.errors, {});
    assert.ok(s.opsPerSec > 0 && Math.abs(s.opsPerSec - s.ops / s.seconds) < 1e-6 * s.opsPerSec);
    assert.ok(Math.abs(s.mbPerSec - s.bytes / 1e6 / s.seconds) < 1e-6 * s.mbPerSec);
    assertOrdered(s.latency.toJSON());
    assert.deepEqual(group!.baselines.map((b) => b.name), ["nats-echo", "raw-append"]);
    for (const b of group!.baselines) {
      assert.ok(b.available, b.unavailableReason);
      assert.equal(b.payloadBytes, 8192);
      assert.equal(b.rounds.length, 2);
      assert.ok(b.opsPerSec > 0);
      const ratio = s.ratios[b.name]!;
      assert.ok(Number.isFinite(ratio) && ratio > 0, `${b.name} ratio ${ratio}`);
    }
    // CPU per request: of this process (client and cluster), and of the in-process nats-server.
    for (const r of [s, ...group!.baselines]) {
      assert.ok(Number.isFinite(r.cpuUsPerOp) && r.cpuUsPerOp > 0, `${r.label}: cpuUsPerOp ${r.cpuUsPerOp}`);
      assert.equal(r.cpuUsPerOp, [...r.rounds.map((f) => f.cpuUsPerOp!)].sort((a, b) => a - b).reduce((a, b) => a + b) / 2, 'the median of two rounds');
    }
    if (process.platform === "linux") {
      assert.ok(Number.isFinite(s.natsCpuUsPerOp) && s.natsCpuUsPerOp >= 0, `natsCpuUsPerOp ${s.natsCpuUsPerOp}`);
      const echo = group!.baselines.find((b) => b.name === "nats-echo")!;
      assert.ok(echo.natsCpuUsPerOp >= 0);
    }
    assert.equal(group!.baselines.find((b) => b.name === "nats-echo")!.ops, 120);
    // raw-append: 60 requests per round at 4 in flight = 15 batches of 4 records per round.
    assert.equal(group!.baselines.find((b) => b.name === "raw-append")!.ops, 120);
    // Files: the JSON (histograms as summaries) and one SVG.
    assert.equal(result.files.length, 2);
    const json = JSON.parse(fs.readFileSync(result.files[0]!, "utf8")) as BenchResult & { groups: Array<{ subjects: Array<{ latency: { count: number; p999: number } }> }> };
    assert.equal(json.groups[0]!.subjects[0]!.latency.count, 120);
    assert.deepEqual(json.files, result.files, "the JSON lists every file written, itself first");
    assert.match(fs.readFileSync(result.files[1]!, "utf8"), /<polyline/);
    assert.equal(result.targets.length, 0);
  });

  it("when its time bound runs out: a subject measured in fewer rounds says so, a baseline left with none is not measured (exit 1), and a volume too small for a shard a host gets fewer shards", async () => {
    // Rounds of 30 s in a run bounded to 4 s: the subject's first round is cut to what is left,
    // its second and the echo's rounds never run.
    const r = await runBench({ workload: "randwrite", queueDepth: 2, durationMs: 60_000, rounds: 2, warmupMs: 0, volumePages: 1, hosts: 2, baselines: ["nats-echo"], resultsDir: null, quiet: true, runMsMax: 4000 });
    const s = r.groups[0]!.subjects[0]!;
    assert.equal(s.unavailableReason, undefined);
    assert.equal(s.volume?.shards, 1, "one shard: the volume has one page");
    assert.equal(s.rounds.length, 1);
    assert.ok(s.ops > 0);
    assert.equal(s.roundsShort, "1 of 2 rounds: the run's time bound (4 s) ran out");
    assert.ok(r.notes.includes(`[${r.groups[0]!.label}] Strata ${s.label}: 1 of 2 rounds: the run's time bound (4 s) ran out.`), r.notes.join("\n"));
    const echo = r.groups[0]!.baselines[0]!;
    assert.equal(echo.available, false);
    assert.equal(echo.unavailableReason, "not measured: the run's time bound (4 s) ran out before its first round");
    assert.equal(s.ratios["nats-echo"], undefined);
    assert.deepEqual(r.failures, [`[${r.groups[0]!.label}] ${echo.label}: not measured: the run's time bound (4 s) ran out before its first round`]);
  });

  it("a read subject whose volume cannot be filled within the run's time bound is not measured, and the run ends with its report", async () => {
    const r = await runBench({ workload: "randread", queueDepth: 8, ops: 100, rounds: 1, warmupMs: 0, volumePages: 65_536, hosts: 1, baselines: ["nats-echo"], resultsDir: null, quiet: true, runMsMax: 300 });
    const s = r.groups[0]!.subjects[0]!;
    assert.match(s.unavailableReason ?? "", /^not measured: filling its volume failed: filling the volume did not finish within the run's time bound$/);
    assert.equal(s.ops, 0);
    assert.equal(r.failures.length, 2, r.failures.join("\n"));
    assert.match(r.failures[0]!, /Strata R=1 randread \(cached\): not measured: filling its volume failed/);
  });

  it("keeps warming up a slow subject until it has done WARMUP_OPS_MIN requests, up to 8x --warmup-ms", async () => {
    const warmupMs = 50;
    const r = await runBench({ workload: "randwrite", queueDepth: 1, ops: 10, rounds: 1, warmupMs, volumePages: 64, hosts: 1, baselines: [], resultsDir: null, quiet: true });
    const s = r.groups[0]!.subjects[0]!;
    assert.ok(s.available, s.unavailableReason);
    assert.equal(s.ops, 10);
    // One write in flight does far fewer than 2,000 requests in 50 ms: the warm-up goes on until
    // it has them or 400 ms have passed (without the extension it would stop after ~50 ms).
    assert.ok(s.warmupOps >= WARMUP_OPS_MIN || s.warmupSeconds >= (warmupMs * 8 * 0.9) / 1000, `warm-up ${s.warmupOps} requests in ${s.warmupSeconds} s`);
    assert.ok(s.warmupSeconds <= (warmupMs * 8) / 1000 + 1, `warm-up bounded: ${s.warmupSeconds} s`);
  });

  it("warms the baselines up before the rounds too, unmeasured (none with --warmup-ms 0)", async () => {
    const warmupMs = 150;
    const r = await runBench({ workload: "randwrite", queueDepth: 4, ops: 40, rounds: 2, warmupMs, volumePages: 64, hosts: 1, baselines: ["nats-echo", "raw-append"], resultsDir: null, quiet: true });
    for (const b of r.groups[0]!.baselines) {
      assert.ok(b.available, b.unavailableReason);
      assert.ok(b.warmupOps > 0, `${b.name}: warm-up of ${b.warmupOps} requests`);
      // The echo's seconds are its run's; the raw append's only its writes' and fdatasyncs' (the
      // time between two batches is not counted: on a loaded machine well under the warm-up's).
      const least = b.name === "raw-append" ? 0 : (warmupMs * 0.9) / 1000;
      assert.ok(b.warmupSeconds > least && b.warmupSeconds <= warmupMs / 1000 + 1, `${b.name}: warm-up of ${b.warmupSeconds} s`);
      // The rounds alone are counted: 20 requests each (raw-append: 5 batches of 4 records).
      assert.equal(b.ops, 40, b.name);
      assert.deepEqual(b.rounds.map((f) => f.ops), [20, 20], b.name);
      assert.equal(b.latency.count, b.name === "raw-append" ? 10 : 40, b.name);
    }
    const cold = await runBench({ workload: "randwrite", queueDepth: 4, ops: 8, rounds: 1, warmupMs: 0, volumePages: 64, hosts: 1, baselines: ["nats-echo"], resultsDir: null, quiet: true });
    assert.equal(cold.groups[0]!.baselines[0]!.warmupOps, 0);
  });

  it("reads a filled volume; targets of a run without the suite's subjects say not measured", async () => {
    const read = await runBench({ workload: "randread", queueDepth: 8, ops: 100, rounds: 1, warmupMs: 0, volumePages: 128, hosts: 1, baselines: [], resultsDir: null, quiet: true });
    const s = read.groups[0]!.subjects[0]!;
    assert.equal(s.ops, 100);
    assert.equal(read.groups[0]!.baselines.length, 0);
    assert.deepEqual(read.files, []);
    assert.deepEqual(read.failures, []);
    // Targets computed from such a result mark every row, never throw.
    const rows = evaluateTargets(read.groups);
    assert.ok(rows.every((r) => r.status === "not measured"), JSON.stringify(rows.map((r) => r.status)));
  });

  it("a target of a subject that stopped in a round (a request failed) says not measured, never met from the rounds before", () => {
    const subject = (replicas: 1 | 3, stopped: boolean) => ({
      workload: "randwrite", replicas, pagesPerRequest: 1, available: true, rounds: [{ ops: 1000 }], ops: 1000, ratios: { "nats-echo": 0.9, "jetstream-publish": 1.5 }, mbPerSec: 500,
      ...(stopped ? { unavailableReason: "stopped in round 2 of 5: a request failed" } : {}),
    });
    const groups = [{ queueDepth: 64, payloadBytes: 4096, subjects: [subject(3, true), subject(1, false)], baselines: [{ name: "nats-echo", available: true }, { name: "jetstream-publish", available: true }] }];
    const rows = evaluateTargets(groups as unknown as BenchResult["groups"]);
    const byTarget = new Map(rows.map((r) => [r.target, r.status]));
    const r3 = rows.filter((r) => r.target.startsWith("R=3 4 KiB writes, 64 in flight"));
    assert.ok(r3.length >= 2, JSON.stringify([...byTarget]));
    for (const r of r3) assert.equal(r.status, "not measured", r.target);
    assert.equal(rows.find((r) => r.target.startsWith("R=1 4 KiB writes, 64 in flight"))?.status, "met", JSON.stringify([...byTarget]));
  });

  it("refuses R=3 on an in-process cluster of fewer than 3 nodes before starting anything", async () => {
    await assert.rejects(
      runBench({ workload: "randwrite", replicas: 3, ops: 10, rounds: 1, warmupMs: 0, volumePages: 64, hosts: 1, nodes: 1, baselines: ["nats-echo"], resultsDir: null, quiet: true }),
      /nodes must be at least 3 when three-way replication is measured \(replicas 3\), got 1/,
    );
  });

  it("counts a stall in the latency of the requests it held, retried errors in the table, and a round that failed in nothing", async function () {
    this.timeout(90_000);
    const cluster = await startCluster({ nodes: 1, hosts: 1, cluster: "stall" });
    try {
      const target = { natsUrl: cluster.natsUrl, cluster: "stall" };
      // The node is killed in the second of three rounds and started again 1.5 s later: the
      // requests then in flight are retried until it answers, and their latency holds the stall.
      const stall = (async () => {
        await new Promise((r) => setTimeout(r, 2_500));
        cluster.kill(0);
        await new Promise((r) => setTimeout(r, 1_500));
        await cluster.restart(0);
      })();
      const r = await runBench({ workload: "randwrite", queueDepth: 2, durationMs: 6_000, rounds: 3, warmupMs: 0, volumePages: 64, requestTimeoutMs: 500, baselines: [], target, resultsDir: null, quiet: true });
      await stall;
      const s = r.groups[0]!.subjects[0]!;
      assert.ok(s.available && s.unavailableReason === undefined, s.unavailableReason);
      assert.equal(s.rounds.length, 3);
      assert.ok(Object.keys(s.errors).length > 0, "the stalled requests failed and were retried");
      assert.ok(s.latency.max >= 1_400_000, `the longest request took ${s.latency.max} µs, not the stall's 1.5 s or more`);
      assert.equal(s.latency.count, s.ops, "every measured request once in the latency");
      assert.deepEqual(r.failures, []);

      // A volume deleted in the middle of a run: the next request is refused (not_found, not
      // retried), the subject stops, the round in progress counts nothing, and the run reports it.
      const del = (async () => {
        await new Promise((res) => setTimeout(res, 1_500));
        const mine = (await cluster.client.listVolumes()).filter((v) => v.name.startsWith("bench-"));
        for (const v of mine) await cluster.client.deleteVolume(v.name);
      })();
      const d = await runBench({ workload: "randwrite", queueDepth: 2, durationMs: 3_000, rounds: 3, warmupMs: 0, volumePages: 64, baselines: [], target, resultsDir: null, quiet: true });
      await del;
      const ds = d.groups[0]!.subjects[0]!;
      assert.match(ds.unavailableReason ?? "", /^stopped in round [123] of 3: .*not_found|^stopped in round [123] of 3: .*(not found|does not exist)/i);
      assert.ok(ds.rounds.length < 3);
      assert.equal(ds.latency.count, ds.ops, "the stopped round's requests are not in the latency");
      assert.equal(d.failures.length, 1);
      assert.match(d.failures[0]!, /Strata R=1 randwrite: stopped in round/);
      assert.deepEqual(await cluster.client.listVolumes(), [], "no volume left");
    } finally {
      await cluster.stop();
    }
  });

  it("benchmarks a running cluster (--nats): its volume is made and removed there, a missing JetStream is not available; a password in the URL is written nowhere", async () => {
    const cluster = await startCluster({ nodes: 1, hosts: 1, cluster: "running" });
    // runBench does not check its target's URL (parseBenchArgs does): one with a password reaches it.
    const withPassword = cluster.natsUrl.replace("nats://", "nats://bench:the-secret@");
    try {
      const r = await runBench({
        workload: "randwrite",
        queueDepth: 4,
        ops: 40,
        rounds: 2,
        warmupMs: 0,
        volumePages: 64,
        shards: 2,
        baselines: ["nats-echo", "jetstream-publish"],
        target: { natsUrl: withPassword, cluster: "running" },
        resultsDir: null,
        quiet: true,
      });
      assert.equal(r.target.kind, "running");
      assert.equal(r.target.natsUrl, cluster.natsUrl.replace("nats://", "nats://***@"));
      assert.equal(JSON.stringify(r).includes("the-secret"), false, "no password in the result");
      const s = r.groups[0]!.subjects[0]!;
      assert.ok(s.available, s.unavailableReason);
      assert.equal(s.ops, 40);
      assert.equal(s.volume?.shards, 2);
      const [echo, js] = r.groups[0]!.baselines;
      assert.ok(echo!.available && echo!.ops === 40, echo!.unavailableReason);
      assert.equal(js!.available, false);
      assert.match(js!.unavailableReason!, /JetStream is not available/);
      assert.deepEqual(await cluster.client.listVolumes(), [], "the benchmark's volume is removed");
    } finally {
      await cluster.stop();
    }
  });

  it("benchmarks a running cluster whose NATS server admits only its users, as the client user; the echo baseline needs more rights and says so", async function () {
    this.timeout(60_000);
    const cluster = await startCluster({ nodes: 1, hosts: 1, cluster: "locked", natsAuth: true });
    try {
      const r = await runBench({
        workload: "randwrite",
        queueDepth: 4,
        ops: 40,
        rounds: 1,
        warmupMs: 0,
        volumePages: 64,
        shards: 1,
        baselines: ["nats-echo"],
        target: { natsUrl: cluster.natsUrl, cluster: "locked", auth: cluster.natsUsers!.client },
        resultsDir: null,
        quiet: true,
      });
      const s = r.groups[0]!.subjects[0]!;
      assert.ok(s.available, s.unavailableReason);
      assert.equal(s.ops, 40);
      const echo = r.groups[0]!.baselines[0]!;
      assert.equal(echo.available, false);
      assert.match(echo.unavailableReason!, /Permissions Violation/);
      assert.equal(JSON.stringify(r).includes(cluster.natsUsers!.client.pass), false, "no password in the result");
    } finally {
      await cluster.stop();
    }
  });

  it("parses the command line and refuses bad flags", () => {
    const p = parseBenchArgs(["--workload", "mixed", "--read-ratio=0.7", "--queue-depth", "64", "--baselines", "nats-echo", "--nats", "nats://x:4222", "--cluster", "c", "--no-results"]);
    assert.deepEqual(p.options, {
      workload: "mixed",
      readRatio: 0.7,
      queueDepth: 64,
      baselines: ["nats-echo"],
      target: { natsUrl: "nats://x:4222", cluster: "c" },
      resultsDir: null,
    });
    assert.throws(() => parseBenchArgs(["--workload", "fast"]), /--workload/);
    assert.throws(() => parseBenchArgs(["--nats", "nats://x"]), /go together/);
    assert.throws(() => parseBenchArgs(["--queue-depth", "x"]), /integer/);
    assert.throws(() => parseBenchArgs(["--bogus"]), /unknown flag/);
    assert.throws(() => parseBenchArgs(["--ops", "0x10"]), /--ops: expected an integer, got "0x10"/);
    assert.throws(() => parseBenchArgs(["--read-ratio", "1e-1"]), /--read-ratio: expected a number/);
    assert.throws(() => parseBenchArgs(["--no-results", "--results-dir", "r"]), /--no-results and --results-dir: give one/);
    const pw = path.join(os.tmpdir(), `strata-bench-pw-${process.pid}`);
    fs.writeFileSync(pw, "bench-secret\n");
    try {
      const auth = parseBenchArgs(["--nats", "nats://x:4222", "--cluster", "c", "--nats-user", "strata-client", "--nats-password-file", pw]);
      assert.deepEqual(auth.options.target, { natsUrl: "nats://x:4222", cluster: "c", auth: { user: "strata-client", pass: "bench-secret" } });
      assert.throws(() => parseBenchArgs(["--nats", "nats://x:4222", "--cluster", "c", "--nats-user", "u"]), /--nats-user and --nats-password-file go together/);
      assert.throws(() => parseBenchArgs(["--nats-user", "u", "--nats-password-file", pw]), /--nats-user is for a running cluster/);
      assert.throws(() => parseBenchArgs(["--nats", "nats://x:4222", "--cluster", "c", "--nats-user", "u", "--nats-password-file", `${pw}-none`]), /--nats-password-file: can not read .*ENOENT/);
      // TLS files are loaded: a certificate (its own CA here) and its key.
      const cert = `${pw}-cert.pem`;
      const key = `${pw}-cert.key`;
      execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=strata-test"], { stdio: "pipe" });
      const tls = parseBenchArgs(["--nats", "nats://x:4222", "--cluster", "c", "--nats-ca-file", cert, "--nats-cert-file", cert, "--nats-key-file", key]);
      assert.deepEqual(tls.options.target, { natsUrl: "nats://x:4222", cluster: "c", tls: { caFile: cert, certFile: cert, keyFile: key } });
      assert.throws(() => parseBenchArgs(["--nats", "nats://x:4222", "--cluster", "c", "--nats-ca-file", pw]), /--nats-ca-file: .* holds no PEM certificate/);
      assert.throws(() => parseBenchArgs(["--nats-ca-file", pw]), /are for a running cluster/);
      assert.throws(() => parseBenchArgs(["--nats", "nats://x:4222", "--cluster", "c", "--nats-key-file", pw]), /--nats-key-file needs --nats-cert-file/);
    } finally {
      for (const file of [pw, `${pw}-cert.pem`, `${pw}-cert.key`]) fs.rmSync(file, { force: true });
    }
  });

  it("refuses options that conflict or that the run would ignore, before starting anything", () => {
    const cases: Array<[Parameters<typeof resolveOptions>[0], RegExp]> = [
      [{ queueDepth: 4 }, /queueDepth: only with workload/],
      [{ pageSize: 8192, readRatio: 0.2 }, /readRatio, pageSize: only with workload/],
      [{ workload: "randwrite", readRatio: 0.3 }, /readRatio applies to the mixed workload only/],
      [{ workload: "randread", baselines: ["raw-append"] }, /--baselines raw-append: it measures writes, and randread writes nothing/],
      [{ workload: "mixed", readRatio: 1, baselines: ["nats-echo", "jetstream-publish"] }, /jetstream-publish: it measures writes, and mixed with readRatio 1/],
      [{ workload: "randwrite", baselines: ["nats-echo", "nats-echo"] }, /baseline nats-echo given twice/],
      [{ workload: "randwrite", queueDepth: 64, ops: 100, rounds: 2 }, /ops \(100\) must be at least queueDepth x rounds \(64 x 2\)/],
      [{ ops: 100 }, /ops \(100\) must be at least queueDepth x rounds \(64 x 5\)/],
      [{ workload: "randwrite", pageSize: 8192, pagesPerRequest: 64, queueDepth: 1024 }, /put 536870912 bytes in flight, more than 67108864/],
      [{ workload: "seqwrite", pagesPerRequest: 8, volumePages: 4 }, /volumePages \(4\) must be at least the pages of one request \(8\)/],
      [{ workload: "randwrite", shards: 64, volumePages: 16 }, /shards \(64\) must not exceed volumePages \(16\)/],
      [{ workload: "randwrite", hosts: 2, target: { natsUrl: "nats://127.0.0.1:1", cluster: "c" } }, /hosts and nodes shape an in-process cluster/],
      [{ nodes: 2 }, /nodes must be at least 3 when three-way replication is measured \(the suite does\), got 2/],
      [{ workload: "randwrite", requestTimeoutMs: 200_000 }, /requestTimeoutMs must be an integer in 1\.\.100000/],
      [{ workload: "randwrite", durationMs: 1.5 }, /durationMs must be an integer/],
    ];
    for (const [opts, re] of cases) assert.throws(() => resolveOptions(opts), re, JSON.stringify(opts));
    // The same pass: a workload with its shape, a suite without one.
    assert.equal(resolveOptions({ workload: "mixed", readRatio: 0.9, queueDepth: 4, ops: 20, rounds: 5 }).queueDepth, 4);
    assert.equal(resolveOptions({ short: true }).workload, "suite");
  });

  it("answers a bad or conflicting flag as usage (exit 2, the flag named, no stack) before starting anything", async () => {
    const run = async (argv: string[]): Promise<{ code: number; err: string }> => {
      let err = "";
      const sink = { write: (t: string) => ((err += t), true) } as unknown as NodeJS.WritableStream;
      const code = await main(argv, { stdout: sink, stderr: sink });
      return { code, err };
    };
    const ratio = await run(["--workload", "mixed", "--read-ratio", "2"]);
    assert.equal(ratio.code, 2);
    assert.match(ratio.err, /^strata bench: usage: --read-ratio must be in 0\.\.1, got 2\n/);
    assert.doesNotMatch(ratio.err, /at .*\.js:\d+/, "no stack");
    const suite = await run(["--page-size", "8192", "--queue-depth", "4"]);
    assert.equal(suite.code, 2);
    assert.match(suite.err, /--page-size, --queue-depth: only with --workload/);
  });

  /** `strata bench argv`: its exit code, what it wrote to stderr, and to stdout (where the tables go). */
  async function runMain(argv: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = "";
    let err = "";
    const stdout = { write: (t: string) => ((out += t), true) } as unknown as NodeJS.WritableStream;
    const stderr = { write: (t: string) => ((err += t), true) } as unknown as NodeJS.WritableStream;
    const write = process.stdout.write;
    process.stdout.write = ((t: string) => ((out += t), true)) as typeof process.stdout.write;
    try {
      return { code: await main(argv, { stdout, stderr }), out, err };
    } finally {
      process.stdout.write = write;
    }
  }
  const tinyShape = ["--workload", "randwrite", "--ops", "4", "--rounds", "1", "--warmup-ms", "0", "--baselines", "none", "--volume-pages", "64"];
  const tiny = [...tinyShape, "--hosts", "1"];

  it("refuses a results directory that cannot be made or written as usage (exit 2, one line), before the run", async () => {
    const file = path.join(resultsDir, "afile");
    fs.writeFileSync(file, "");
    const bad = await runMain([...tiny, "--results-dir", path.join(file, "sub")]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /^strata bench: usage: --results-dir \S+afile\/sub: the results cannot be written there: ENOTDIR: not a directory, mkdir '\S+afile'\n/);
    assert.equal(bad.err.split("\n")[0]!.length, bad.err.indexOf("\n"), "one line");
    assert.equal(bad.out, "", "nothing run");
  });

  it("prints the tables before writing the files, and a results file that cannot be written is one line after them (exit 1)", async () => {
    const dir = fs.mkdtempSync(path.join(resultsDir, "blocked-"));
    // The results directory takes files, but the latest JSON's name is taken by a directory.
    fs.mkdirSync(path.join(dir, "strata-bench-latest.json"));
    const r = await runMain([...tiny, "--results-dir", dir]);
    assert.equal(r.code, 1, r.err);
    assert.match(r.out, /^Strata bench: 4 KiB at 1 in flight\n/m, "the table is printed");
    assert.match(r.out, /^Strata R=1 randwrite +\d/m, "with the subject's figures");
    assert.match(r.err, /^strata bench: E[A-Z]+: the results could not be written to \S+blocked-\w+: [^\n]+\n$/);
    assert.doesNotMatch(r.err, /at .*\.js:\d+/, "no stack");
  });

  it("refuses a scratch directory that is not an existing directory as usage (exit 2, one line), before starting a cluster", async () => {
    const file = path.join(resultsDir, "scratch-file");
    fs.writeFileSync(file, "");
    const dataDirs = fs.mkdtempSync(path.join(resultsDir, "data-"));
    const before = process.env.STRATA_BENCH_DIR;
    process.env.STRATA_BENCH_DIR = dataDirs;
    try {
      for (const [scratch, cause] of [[file, /not a directory/], [path.join(resultsDir, "none"), /ENOENT/]] as const) {
        const r = await runMain([...tiny, "--no-results", "--scratch-dir", scratch]);
        assert.equal(r.code, 2, r.err);
        assert.match(r.err, /^strata bench: usage: --scratch-dir \S+: expected an existing directory files can be written in: [^\n]+\n/);
        assert.match(r.err, cause);
        await assert.rejects(runBench({ workload: "randwrite", ops: 4, rounds: 1, warmupMs: 0, baselines: [], resultsDir: null, quiet: true, scratchDir: scratch }), /^RangeError: scratchDir /);
      }
      assert.deepEqual(fs.readdirSync(dataDirs), [], "no in-process cluster was started");
    } finally {
      if (before === undefined) delete process.env.STRATA_BENCH_DIR;
      else process.env.STRATA_BENCH_DIR = before;
    }
  });

  it("refuses a NATS URL, cluster name or NATS user no server or node could take as usage (exit 2), before connecting", async () => {
    const pw = path.join(resultsDir, "pw");
    fs.writeFileSync(pw, "secret\n");
    const target = (nats: string, cluster: string, user?: string): string[] => [...tinyShape, "--no-results", "--nats", nats, "--cluster", cluster, ...(user === undefined ? [] : ["--nats-user", user, "--nats-password-file", pw])];
    const cases: Array<[string[], RegExp]> = [
      [target("foo://x:1", "c"), /^strata bench: usage: --nats: expected nats\|tls\|ws\|wss URLs, got "foo:\/\/x:1"\n/],
      [target("nats://127.0.0.1:1", "BAD.NAME"), /^strata bench: usage: --cluster: expected 1\.\.64 characters of \[a-z0-9_-\], got "BAD\.NAME"\n/],
      [target("nats://127.0.0.1:1", "c", ""), /^strata bench: usage: --nats-user: expected 1\.\.64 characters of \[A-Za-z0-9_.-\], got ""\n/],
    ];
    for (const [argv, re] of cases) {
      const r = await runMain(argv);
      assert.equal(r.code, 2, `${argv.join(" ")}: ${r.err}`);
      assert.match(r.err, re);
    }
    // What the rest of the command line takes, this takes too.
    assert.deepEqual(parseBenchArgs(["--nats", "127.0.0.1:4222", "--cluster", "my_cluster-1"]).options.target, { natsUrl: "127.0.0.1:4222", cluster: "my_cluster-1" });
  });

  it("summarizes a profile with --top N lines; a file that cannot be read or is no cpuprofile is one line (exit 1), --top out of place or out of range and run flags are usage (exit 2)", async () => {
    const profile = path.join(resultsDir, "p.cpuprofile");
    fs.writeFileSync(profile, JSON.stringify({
      nodes: [
        { id: 1, callFrame: { functionName: "a", url: "file:///x/a.js", lineNumber: 0 } },
        { id: 2, callFrame: { functionName: "b", url: "file:///x/b.js", lineNumber: 0 } },
      ],
      samples: [1, 2, 1],
      timeDeltas: [0, 1000, 1000, 1000],
    }));
    const one = await runMain(["--profile-summary", profile, "--top", "1"]);
    assert.equal(one.code, 0, one.err);
    assert.equal(one.out.split("\n").filter((l) => l !== "").length, 1, one.out);
    assert.match(one.out, / a {2}x\/a\.js:1\n$/);
    const empty = path.join(resultsDir, "empty.cpuprofile");
    fs.writeFileSync(empty, "{}");
    const notJson = path.join(resultsDir, "bad.cpuprofile");
    fs.writeFileSync(notJson, "nope");
    const failures: Array<[string[], RegExp]> = [
      [["--profile-summary", path.join(resultsDir, "missing.cpuprofile")], /^strata bench: ENOENT: --profile-summary: no such file or directory, open '\S+missing\.cpuprofile'\n$/],
      [["--profile-summary", empty], /^strata bench: bad_profile: \S+empty\.cpuprofile: not a V8 cpuprofile: expected nodes, samples and timeDeltas\n$/],
      [["--profile-summary", notJson], /^strata bench: bad_profile: \S+bad\.cpuprofile: not JSON: [^\n]+\n$/],
    ];
    for (const [argv, re] of failures) {
      const r = await runMain(argv);
      assert.equal(r.code, 1, r.err);
      assert.match(r.err, re);
    }
    const usage: Array<[string[], RegExp]> = [
      [["--profile-summary", profile, "--top", "0"], /--top: expected an integer in 1\.\.1000, got 0/],
      [["--profile-summary", profile, "--top", "-1"], /--top: expected an integer in 1\.\.1000, got -1/],
      [["--top", "5"], /--top goes with --profile-summary/],
      [["--workload", "randwrite", "--top", "5"], /--top goes with --profile-summary/],
      [["--profile-summary", profile, "--queue-depth", "4"], /--profile-summary takes --top only; --queue-depth is for a run/],
      [["--profile-summary", profile, "--workload", "randwrite", "--page-size", "8192"], /--profile-summary takes --top only; --workload, --page-size are for a run/],
    ];
    for (const [argv, re] of usage) {
      const r = await runMain(argv);
      assert.equal(r.code, 2, `${argv.join(" ")}: ${r.err}`);
      assert.match(r.err, /^strata bench: usage: /);
      assert.match(r.err, re);
      assert.equal(r.out, "");
    }
  });

  it("says in its help the --duration-ms that applies: --short shortens the suite's, not a workload's", () => {
    assert.equal(resolveOptions({ workload: "randwrite" }).durationMs, 10_000);
    assert.equal(resolveOptions({ workload: "randwrite", short: true }).durationMs, 10_000);
    assert.equal(resolveOptions({}).durationMs, 15_000);
    assert.equal(resolveOptions({ short: true }).durationMs, 2_100);
    const help = BENCH_HELP.slice(BENCH_HELP.indexOf("--duration-ms N"), BENCH_HELP.indexOf("--ops N")).replace(/\s+/g, " ");
    assert.match(help, /\(default 10000 with --workload, with or without --short; the suite 15000, 2100 with --short\)/);
  });

  it("summarizes a cpuprofile by self time", () => {
    const profile = {
      nodes: [
        { id: 1, callFrame: { functionName: "(root)", url: "", lineNumber: -1 } },
        { id: 2, callFrame: { functionName: "encode", url: "file:///a/messages/codec.js", lineNumber: 9 } },
        { id: 3, callFrame: { functionName: "", url: "file:///a/b.js", lineNumber: 0 } },
      ],
      samples: [2, 2, 3, 2],
      timeDeltas: [0, 1000, 1000, 1000],
    };
    const lines = summarizeCpuProfile(profile);
    assert.equal(lines[0]!.functionName, "encode");
    assert.equal(lines[0]!.location, "messages/codec.js:10");
    assert.equal(lines[0]!.selfMs, 2);
    assert.equal(lines[1]!.functionName, "(anonymous)");
    assert.ok(Math.abs(lines[0]!.selfPercent - 66.67) < 0.1);
  });
});
