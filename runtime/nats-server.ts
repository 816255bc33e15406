/**
 * An embedded nats-server for Strata: `strata dev`, integration tests and benchmarks start a
 * private server on a free loopback port, with its own temporary directory (generated config,
 * JetStream store, log), and stop it when done.
 *
 * The child process must not outlive this process: every live child is SIGKILLed (and its
 * temporary directory removed) from a process 'exit' handler, and the child is unref'd so a forgotten handle does not keep Node running.
 * (A parent killed by an unhandled signal runs no 'exit' handler; callers that install signal
 * handlers should call `stop()` from them.)
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { freePort } from "./free-port";
import { makeDirectory } from "../storage-engine/make-directory";

/** Options of {@link startNatsServer}. */
export interface NatsServerOptions {
  /** Path (or bare name looked up on PATH) of the nats-server binary. Default: $STRATA_NATS_SERVER, then /usr/sbin/nats-server, then `nats-server` on PATH. */
  binary?: string;
  /** Enable JetStream with a file store in the temporary directory. Default true. */
  jetstream?: boolean;
  /** The server's max_payload in bytes (1 .. 64 MiB). Default 1 MiB, the server's own default. */
  maxPayloadBytes?: number;
  /** Directory for the server log (kept after stop). Default: the temporary directory (removed on stop). */
  logDir?: string;
  /** Bound on the wait for the server to listen and log "Server is ready". Default 10 000 ms. */
  startTimeoutMs?: number;
  /** Grace period after SIGTERM in `stop()` before SIGKILL. Default 5 000 ms. */
  stopTimeoutMs?: number;
  /** Listen on this loopback port (a server started again where its clients reconnect). Default: a free one. */
  port?: number;
  /**
   * A block of server configuration appended to the generated one: an `authorization { … }`
   * with users and permissions (cluster/nats-auth.ts), say. Default: none, anyone may connect.
   */
  extraConfig?: string;
}

/** A running nats-server started by {@link startNatsServer}. */
export interface NatsServerHandle {
  /** Client URL, always on 127.0.0.1: `nats://127.0.0.1:PORT`. */
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** The server's private temporary directory (config, JetStream store, log unless logDir was given). */
  readonly dir: string;
  /** Where the server's log (its stderr) is written. */
  readonly logFile: string;
  /** SIGTERM, SIGKILL after stopTimeoutMs, then remove `dir`. Idempotent: later calls return the same promise. */
  stop(): Promise<void>;
  /** SIGKILL now, for fault tests. Leaves `dir` in place until `stop()`. */
  kill(): void;
}

/** The nats-server binary could not be found. */
export class NatsServerNotFoundError extends Error {
  override readonly name = "NatsServerNotFoundError";
  readonly code = "nats_server_not_found";
}

/** The nats-server process did not come up (exited, or not ready in time). */
export class NatsServerStartError extends Error {
  override readonly name = "NatsServerStartError";
  readonly code = "nats_server_start_failed";
}

const defaultBinaryPath = "/usr/sbin/nats-server";
const startTimeoutMsDefault = 10_000;
const stopTimeoutMsDefault = 5_000;
/** After SIGKILL a process exits promptly unless stuck in the kernel; bound the wait anyway. */
const killWaitMs = 5_000;
const maxPayloadBytesDefault = 1024 * 1024;
/** nats-server refuses a max_payload above 64 MiB. */
const maxPayloadBytesLimit = 64 * 1024 * 1024;
const readyPollMs = 20;
const connectProbeTimeoutMs = 500;
/** How much of the server's stderr is kept in memory for error messages. */
const stderrTailBytesMax = 16 * 1024;
const errorTailLines = 20;
const portAttemptsMax = 3;
const readyMarker = "Server is ready";

/** Live children and their temporary directories, for the process 'exit' handler. */
const liveChildren = new Map<ChildProcess, string>();
let exitHandlerInstalled = false;

function installExitHandler(): void {
  if (exitHandlerInstalled) return;
  exitHandlerInstalled = true;
  process.on("exit", () => {
    for (const [child, dir] of liveChildren) {
      try {
        child.kill("SIGKILL");
        fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      } catch {
        // Best effort at process exit: nothing else can be done here.
      }
    }
  });
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir === "") continue;
    const candidate = path.join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

function notFound(where: string): NatsServerNotFoundError {
  return new NatsServerNotFoundError(
    `nats-server not found at ${where}; install it with \`apt-get install -y nats-server\` (as root) or set STRATA_NATS_SERVER`,
  );
}

/**
 * Resolves the nats-server binary: `binary` if given, else $STRATA_NATS_SERVER, else
 * /usr/sbin/nats-server, else `nats-server` on PATH. A bare name (no slash) is looked up on PATH.
 * @throws NatsServerNotFoundError with installation instructions.
 */
export function resolveNatsServerBinary(binary?: string): string {
  const explicit = binary ?? (process.env.STRATA_NATS_SERVER || undefined);
  if (explicit !== undefined) {
    if (!explicit.includes("/")) {
      const found = findOnPath(explicit);
      if (found !== undefined) return found;
      throw notFound(`${explicit} (searched PATH)`);
    }
    if (isExecutable(explicit)) return explicit;
    throw notFound(explicit);
  }
  if (isExecutable(defaultBinaryPath)) return defaultBinaryPath;
  const found = findOnPath("nats-server");
  if (found !== undefined) return found;
  throw notFound(`${defaultBinaryPath} or on PATH`);
}

function renderConfig(port: number, dir: string, jetstream: boolean, maxPayloadBytes: number): string {
  const lines = [
    "# Generated by Strata for an embedded nats-server. Do not edit.",
    `listen: ${JSON.stringify(`127.0.0.1:${port}`)}`,
    `server_name: ${JSON.stringify(`strata-embedded-${port}`)}`,
    `max_payload: ${maxPayloadBytes}`,
  ];
  if (jetstream) {
    lines.push(
      "jetstream {",
      `  store_dir: ${JSON.stringify(path.join(dir, "jetstream"))}`,
      "  max_memory_store: 268435456",
      "  max_file_store: 4294967296",
      "}",
    );
  }
  return lines.join("\n") + "\n";
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** True if a TCP connection to 127.0.0.1:port is accepted within timeoutMs. */
function canConnect(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

function lastLines(text: string, count: number): string {
  const lines = text.split("\n").filter((line) => line.trim() !== "");
  return lines.slice(-count).join("\n");
}

/** Outcome of one launch attempt that did not succeed. */
class LaunchFailure extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
  }
}

async function launch(
  binary: string,
  dir: string,
  port: number,
  opts: Required<Omit<NatsServerOptions, "binary" | "logDir" | "port" | "extraConfig">> & { logDir: string | undefined; extraConfig: string | undefined },
): Promise<NatsServerHandle> {
  const configFile = path.join(dir, "nats-server.conf");
  await fs.promises.writeFile(configFile, renderConfig(port, dir, opts.jetstream, opts.maxPayloadBytes) + (opts.extraConfig ?? ""), { mode: 0o600 });
  const logDir = opts.logDir ?? dir;
  makeDirectory(logDir);
  const logFile = path.join(logDir, `nats-server-${port}.log`);
  const log = fs.createWriteStream(logFile, { flags: "a" });
  log.on("error", () => {
    // Losing the log file must not take the server down; the stderr tail stays in memory.
  });

  const child = spawn(binary, ["-c", configFile], { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  installExitHandler();
  liveChildren.set(child, dir);

  let stderrTail = "";
  let logReady = false;
  let exited = false;
  let exitDescription = "";
  let spawnError: Error | undefined;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => (resolveClosed = resolve));

  child.stderr?.on("data", (chunk: Buffer) => {
    log.write(chunk);
    stderrTail += chunk.toString("utf8");
    if (!logReady && stderrTail.includes(readyMarker)) logReady = true;
    if (stderrTail.length > stderrTailBytesMax) stderrTail = stderrTail.slice(-stderrTailBytesMax);
  });
  child.on("error", (err) => {
    spawnError = err;
    if (child.pid === undefined) {
      exited = true;
      exitDescription = `spawn failed: ${err.message}`;
      liveChildren.delete(child);
      resolveClosed();
    }
  });
  child.once("exit", (code, signal) => {
    exited = true;
    exitDescription = signal !== null ? `killed by ${signal}` : `exited with code ${String(code)}`;
    liveChildren.delete(child);
  });
  child.once("close", () => {
    exited = true;
    liveChildren.delete(child);
    resolveClosed();
  });

  const waitClosed = async (timeoutMs: number): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    const result = await Promise.race([closed.then(() => true as const), timedOut]);
    clearTimeout(timer);
    return result;
  };
  const closeLog = (): Promise<void> =>
    new Promise((resolve) => {
      if (log.closed || log.destroyed) return resolve();
      log.end(() => resolve());
    });
  const failure = async (reason: string): Promise<LaunchFailure> => {
    if (!exited) child.kill("SIGKILL");
    await waitClosed(killWaitMs);
    await closeLog();
    const tail = lastLines(stderrTail, errorTailLines);
    return new LaunchFailure(
      `nats-server (${binary}) on 127.0.0.1:${port} ${reason}` +
        (tail !== "" ? `; last lines of its stderr:\n${tail}` : "; it wrote nothing to stderr"),
      /address already in use/i.test(stderrTail),
    );
  };

  const deadline = Date.now() + opts.startTimeoutMs;
  for (;;) {
    if (exited) {
      const reason =
        spawnError !== undefined && child.pid === undefined
          ? `could not be started: ${spawnError.message}`
          : `${exitDescription || "exited"} before it was ready`;
      throw await failure(reason);
    }
    const remainingMs = deadline - Date.now();
    if (remainingMs <= 0) {
      throw await failure(`was not ready within ${opts.startTimeoutMs} ms (listening and "${readyMarker}" expected)`);
    }
    if (logReady && (await canConnect(port, Math.min(connectProbeTimeoutMs, remainingMs)))) break;
    await sleep(Math.min(readyPollMs, Math.max(1, deadline - Date.now())));
  }

  const pid = child.pid;
  if (pid === undefined) throw await failure("has no pid");
  child.unref();
  (child.stderr as unknown as { unref?: () => void } | null)?.unref?.();

  let stopping: Promise<void> | undefined;
  const handle: NatsServerHandle = {
    url: `nats://127.0.0.1:${port}`,
    port,
    pid,
    dir,
    logFile,
    stop(): Promise<void> {
      stopping ??= (async () => {
        if (!exited) {
          child.kill("SIGTERM");
          if (!(await waitClosed(opts.stopTimeoutMs))) {
            child.kill("SIGKILL");
            if (!(await waitClosed(killWaitMs))) {
              throw new Error(`nats-server pid ${pid} did not exit within ${killWaitMs} ms of SIGKILL; ${dir} left in place`);
            }
          }
        } else {
          await waitClosed(killWaitMs);
        }
        await closeLog();
        await fs.promises.rm(dir, { recursive: true, force: true, maxRetries: 3 });
      })();
      return stopping;
    },
    kill(): void {
      if (!exited) child.kill("SIGKILL");
    },
  };
  return handle;
}

/**
 * Starts a private nats-server on a free 127.0.0.1 port, with a generated config and JetStream
 * store in a fresh temporary directory, and waits (bounded by startTimeoutMs) until it accepts
 * TCP connections and has logged "Server is ready". Its log goes to a file, not to our stdout.
 *
 * @throws NatsServerNotFoundError if the binary is missing (the message says how to install it).
 * @throws NatsServerStartError if it exits or is not ready in time (with the last lines of its stderr).
 */
export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServerHandle> {
  const binary = resolveNatsServerBinary(opts.binary);
  const maxPayloadBytes = opts.maxPayloadBytes ?? maxPayloadBytesDefault;
  if (!Number.isInteger(maxPayloadBytes) || maxPayloadBytes < 1 || maxPayloadBytes > maxPayloadBytesLimit) {
    throw new RangeError(`maxPayloadBytes must be an integer in 1..${maxPayloadBytesLimit}, got ${maxPayloadBytes}`);
  }
  const startTimeoutMs = opts.startTimeoutMs ?? startTimeoutMsDefault;
  const stopTimeoutMs = opts.stopTimeoutMs ?? stopTimeoutMsDefault;
  if (!(startTimeoutMs > 0) || !(stopTimeoutMs > 0)) {
    throw new RangeError(`startTimeoutMs and stopTimeoutMs must be > 0, got ${startTimeoutMs} and ${stopTimeoutMs}`);
  }
  if (opts.port !== undefined && !(Number.isInteger(opts.port) && opts.port >= 1 && opts.port <= 65535)) {
    throw new RangeError(`port must be an integer in 1..65535, got ${opts.port}`);
  }
  const launchOpts = {
    jetstream: opts.jetstream ?? true,
    maxPayloadBytes,
    logDir: opts.logDir,
    extraConfig: opts.extraConfig,
    startTimeoutMs,
    stopTimeoutMs,
  };

  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), "strata-nats-"));
  try {
    for (let attempt = 1; ; attempt++) {
      const port = opts.port ?? (await freePort());
      try {
        return await launch(binary, dir, port, launchOpts);
      } catch (err) {
        if (err instanceof LaunchFailure) {
          // The port was free when probed but taken before the server bound it: try another.
          if (err.addressInUse && attempt < portAttemptsMax && opts.port === undefined) continue;
          throw new NatsServerStartError(err.message);
        }
        throw err;
      }
    }
  } catch (err) {
    await fs.promises.rm(dir, { recursive: true, force: true, maxRetries: 3 });
    throw err;
  }
}
