import * as assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { connect, type NatsConnection } from "nats";
import { freePort } from "../../runtime/free-port";
import { NatsServerNotFoundError, NatsServerStartError, startNatsServer, type NatsServerHandle } from "../../runtime/nats-server";
import { timersHeld } from '../support/manual-clock';

/** Resolves true once a TCP connect to the port is refused, false if still accepted at the deadline. */
async function portClosedWithin(port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const accepted = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: "127.0.0.1", port });
      const timer = setTimeout(() => {
        socket.destroy();
        resolve(true);
      }, 500);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (!accepted) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return false;
}

/** True if the process exists and is not a zombie waiting to be reaped by its new parent. */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

describe("runtime/free-port", () => {
  it("returns a bindable loopback port", async () => {
    const port = await freePort();
    assert.ok(port > 0 && port < 65536);
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
});

describe("runtime/nats-server", function () {
  this.timeout(15_000);
  const handles: NatsServerHandle[] = [];
  const connections: NatsConnection[] = [];

  afterEach(async () => {
    for (const nc of connections.splice(0)) await nc.close().catch(() => undefined);
    for (const handle of handles.splice(0)) await handle.stop();
  });

  it("starts a server that serves request/reply, then stops it cleanly", async () => {
    const server = await startNatsServer({ startTimeoutMs: 10_000 });
    handles.push(server);
    assert.equal(server.url, `nats://127.0.0.1:${server.port}`);
    assert.ok(fs.existsSync(server.dir), "temp dir exists while running");
    assert.ok(pidAlive(server.pid));

    const nc = await connect({ servers: server.url, timeout: 2_000, reconnect: false });
    connections.push(nc);
    nc.subscribe("strata.test.echo", { callback: (_err, msg) => msg.respond(msg.data) });
    await nc.flush();
    const reply = await nc.request("strata.test.echo", new TextEncoder().encode("page"), { timeout: 2_000 });
    assert.equal(new TextDecoder().decode(reply.data), "page");
    assert.equal(nc.info?.max_payload, 1024 * 1024);
    await nc.close();

    await server.stop();
    await server.stop(); // idempotent
    assert.ok(await portClosedWithin(server.port, 2_000), "port closed after stop");
    assert.ok(!fs.existsSync(server.dir), "temp dir removed after stop");
    assert.ok(!pidAlive(server.pid), "process gone after stop");
  });

  it("applies maxPayloadBytes and writes its log to logDir", async () => {
    const logDir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-nats-log-"));
    try {
      const server = await startNatsServer({ jetstream: false, maxPayloadBytes: 2 * 1024 * 1024, logDir });
      handles.push(server);
      const nc = await connect({ servers: server.url, timeout: 2_000, reconnect: false });
      connections.push(nc);
      assert.equal(nc.info?.max_payload, 2 * 1024 * 1024);
      await server.stop();
      assert.equal(path.dirname(server.logFile), logDir);
      assert.match(fs.readFileSync(server.logFile, "utf8"), /Server is ready/);
    } finally {
      fs.rmSync(logDir, { recursive: true, force: true });
    }
  });

  it("kill() ends the server at once; stop() afterwards still cleans up", async () => {
    const server = await startNatsServer({ jetstream: false });
    handles.push(server);
    server.kill();
    assert.ok(await portClosedWithin(server.port, 2_000), "port closed after kill");
    assert.ok(fs.existsSync(server.dir), "kill leaves the dir for stop()");
    await server.stop();
    assert.ok(!fs.existsSync(server.dir));
  });

  it("a missing binary gives a clear error", async () => {
    const missing = path.join(os.tmpdir(), "strata-no-such-dir", "nats-server");
    await assert.rejects(startNatsServer({ binary: missing }), (err: unknown) => {
      assert.ok(err instanceof NatsServerNotFoundError);
      assert.equal(
        err.message,
        `nats-server not found at ${missing}; install it with \`apt-get install -y nats-server\` (as root) or set STRATA_NATS_SERVER`,
      );
      return true;
    });
  });

  it("honours STRATA_NATS_SERVER", async () => {
    const saved = process.env.STRATA_NATS_SERVER;
    process.env.STRATA_NATS_SERVER = "/nonexistent/strata/nats-server";
    try {
      await assert.rejects(startNatsServer(), /nats-server not found at \/nonexistent\/strata\/nats-server; install it/);
    } finally {
      if (saved === undefined) delete process.env.STRATA_NATS_SERVER;
      else process.env.STRATA_NATS_SERVER = saved;
    }
  });

  it("a server that exits during start gives its stderr", async () => {
    // /bin/false exits at once without writing anything.
    await assert.rejects(startNatsServer({ binary: "/bin/false", startTimeoutMs: 2_000 }), (err: unknown) => {
      assert.ok(err instanceof NatsServerStartError, String(err));
      assert.equal(err.code, "nats_server_start_failed");
      assert.match(err.message, /exited with code 1 before it was ready/);
      return true;
    });
  });

  it("a server not ready in time is killed and its stderr reported", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-fake-nats-"));
    const fake = path.join(dir, "nats-server");
    fs.writeFileSync(fake, '#!/bin/sh\necho "fake server starting" >&2\necho $$ > "$(dirname "$0")/pid"\nexec sleep 30\n', { mode: 0o755 });
    try {
      // 1 s: time for the shell to write its pid and its line to stderr, on a loaded machine too.
      await assert.rejects(startNatsServer({ binary: fake, startTimeoutMs: 1000 }), (err: unknown) => {
        assert.ok(err instanceof NatsServerStartError, String(err));
        assert.match(err.message, /was not ready within 1000 ms[\s\S]*fake server starting/);
        return true;
      });
      const pid = Number(fs.readFileSync(path.join(dir, "pid"), "utf8"));
      assert.ok(!pidAlive(pid), "the child was killed");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses bad options before it starts anything or creates a directory", async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "strata-nats-opts-"));
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = tmp;
    try {
      const bad = [
        [{ maxPayloadBytes: 0 }, /maxPayloadBytes must be an integer in 1\.\.67108864, got 0/],
        [{ maxPayloadBytes: 64 * 1024 * 1024 + 1 }, /maxPayloadBytes must be an integer/],
        [{ maxPayloadBytes: 1.5 }, /maxPayloadBytes must be an integer/],
        [{ startTimeoutMs: 0 }, /startTimeoutMs and stopTimeoutMs must be > 0, got 0 and 5000/],
        [{ stopTimeoutMs: Number.NaN }, /startTimeoutMs and stopTimeoutMs must be > 0/],
        [{ port: 65536 }, /port must be an integer in 1\.\.65535, got 65536/],
        [{ port: 0 }, /port must be an integer in 1\.\.65535, got 0/],
      ] as const;
      for (const [opts, message] of bad) {
        await assert.rejects(startNatsServer({ jetstream: false, ...opts }), (err: unknown) => {
          assert.ok(err instanceof RangeError, `${JSON.stringify(opts)}: ${String(err)}`);
          assert.match(err.message, message);
          return true;
        });
      }
      assert.deepEqual(fs.readdirSync(tmp), [], "no directory was created");
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("a start that fails removes its temporary directory", async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "strata-nats-tmp-"));
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = tmp;
    try {
      await assert.rejects(startNatsServer({ binary: "/bin/false", startTimeoutMs: 2_000 }), (err: unknown) => {
      assert.ok(err instanceof NatsServerStartError, String(err));
      assert.equal(err.code, "nats_server_start_failed");
      assert.match(err.message, /exited with code 1 before it was ready/);
      return true;
    });
      assert.deepEqual(fs.readdirSync(tmp), [], "the server's directory is gone");
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("a server that ignores SIGTERM is killed once stopTimeoutMs has passed, and its directory removed", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-stubborn-nats-"));
    const fake = path.join(dir, "nats-server");
    const termed = path.join(dir, "got-sigterm");
    // Listens where its config says, says it is ready, and ignores SIGTERM (noting that it came).
    fs.writeFileSync(
      fake,
      `#!${process.execPath}
const fs = require("node:fs");
const conf = fs.readFileSync(process.argv[process.argv.indexOf("-c") + 1], "utf8");
const port = Number(/listen: "127\\.0\\.0\\.1:(\\d+)"/.exec(conf)[1]);
process.on("SIGTERM", () => fs.writeFileSync(${JSON.stringify(termed)}, ""));
require("node:net").createServer((s) => s.destroy()).listen(port, "127.0.0.1", () => process.stderr.write("Server is ready\\n"));
`,
      { mode: 0o755 },
    );
    try {
      const server = await startNatsServer({ binary: fake, jetstream: false, stopTimeoutMs: 500 });
      assert.ok(pidAlive(server.pid));
      // The grace period's timer is held here and fired when the test says (a manual clock).
      const { value: stopped, timers } = timersHeld((): Promise<void> => server.stop());
      assert.deepEqual(timers.map((t) => t.ms), [500], "one wait, of stopTimeoutMs");
      let settled = false;
      void stopped.then(() => (settled = true), () => (settled = true));
      for (let i = 0; i < 500 && !fs.existsSync(termed); i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(fs.existsSync(termed), "SIGTERM first");
      assert.ok(pidAlive(server.pid) && !settled, "within its grace period it is neither killed nor given up on");
      timers[0]!.fire();
      await stopped;
      assert.ok(!pidAlive(server.pid), "the server was killed");
      assert.ok(!fs.existsSync(server.dir), "its temp dir removed");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the server does not outlive its parent process", async function () {
    // A node process that starts a server (up to its 10 s start timeout) then exits, and the wait
    // for the orphan to go: generous bounds, returned from as soon as each step is done.
    this.timeout(60_000);
    const modulePath = path.resolve(__dirname, "../../runtime/nats-server.js");
    const script = `require(${JSON.stringify(modulePath)}).startNatsServer({ jetstream: false })
      .then((s) => { console.log(JSON.stringify({ pid: s.pid, dir: s.dir })); });`;
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, ["-e", script], { timeout: 30_000 }, (err, out) => (err ? reject(err) : resolve(out)));
    });
    const { pid, dir } = JSON.parse(stdout) as { pid: number; dir: string };
    const deadline = Date.now() + 10_000;
    while (pidAlive(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(!pidAlive(pid), "server killed when its parent exited");
    assert.ok(!fs.existsSync(dir), "its temp dir removed when its parent exited");
  });
});
