/**
 * `strata dev`: a local Strata cluster on this machine.
 *
 * It starts its own nats-server (the system's binary, on a free loopback port, in a temporary
 * directory) and N nodes, each a separate `strata node` process with its own data directory and
 * log file; with 3 nodes or more the catalog is replicated on n1, n2 and n3 (one of them runs the
 * controller), with fewer node 1 keeps it. Because the nodes are processes, any of them can be killed
 * (`kill -9 PID`) while clients write: the cluster carries on as long as a majority of each
 * shard's replicas is alive. The pids are printed as `node nK pid P`.
 *
 * Without --demo it runs until interrupted (Ctrl-C stops every node cleanly, then the server).
 * With --demo it creates a volume replicated on min(3, N) nodes, writes a workload of vectored
 * writes, reads everything back and verifies it, reads at an older LSN (GetPage@LSN) and checks
 * that too, branches the volume as of the LSNs of its first write generation and checks the
 * branch holds that generation, prints what it did, and exits 0 only if every check passed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect as natsConnect } from 'nats';
import { startNatsServer, type NatsServerHandle } from '../runtime/nats-server';
import { defaultHostsPerNode } from './config';
import { makeDirectory } from '../storage-engine/make-directory';
import { connect, type StrataClient } from './client';
import { NATS_ROLES, newNatsUsers, readNatsPassword, renderRoleUsers, type NatsRole } from './nats-auth';
import { encode, decode } from '../messages/codec';
import { throwIfError } from '../messages/errors';
import { controllerSubject } from '../messages/control';

export interface DevOptions {
  demo: boolean;
  /** Nodes (processes); default 3. */
  nodes?: number;
  dataDir?: string;
  /** Metrics port of node 1; node K gets port + K - 1 (0 = off). */
  metricsPort?: number;
  /** Actor hosts per node; default `defaultHostsPerNode(cores, nodes)`: cores − 1 shared among the nodes, at least 1. */
  hosts?: number;
  /** The nats-server admits only the cluster's users (`startDevCluster`'s `auth`). */
  auth?: boolean;
  /** Where to print; default stdout. */
  out?: (line: string) => void;
}

/** Deterministic page content: a function of (page, generation), so a reader can check it. */
export function demoPage(pageSize: number, page: number, generation: number): Uint8Array {
  const b = new Uint8Array(pageSize);
  let x = (page * 2654435761 + generation * 40503 + 1) >>> 0;
  for (let i = 0; i < pageSize; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
    b[i + 1] = (x >>> 8) & 0xff;
    b[i + 2] = (x >>> 16) & 0xff;
    b[i + 3] = (x >>> 24) & 0xff;
  }
  return b;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

interface DemoResult {
  ok: boolean;
  lines: string[];
}

/** The demo workload against a running cluster. */
export async function runDemo(
  client: StrataClient,
  opts: { pages?: number; shards?: number; batchPages?: number; replicas?: 1 | 3; operator?: StrataClient } = {},
): Promise<DemoResult> {
  const lines: string[] = [];
  const pageCount = opts.pages ?? 4096;
  const shards = opts.shards ?? 4;
  const batch = opts.batchPages ?? 16;
  const replicas = opts.replicas ?? 1;
  const name = `demo-${Date.now().toString(36)}`;
  const info = await client.createVolume({ name, pageCount, pageSize: 4096, shards, stripePages: 64, replicas });
  lines.push(`created volume ${info.name} (id ${info.id}): ${pageCount} pages of ${info.pageSize} B in ${shards} shards, ${replicas} replica(s) each`);
  const vol = client.volume(name);

  const writeGen = async (gen: number, upto: number): Promise<void> => {
    const inFlight: Array<Promise<unknown>> = [];
    for (let p = 0; p < upto; p += batch) {
      const pages = [];
      for (let q = p; q < Math.min(p + batch, upto); q++) pages.push({ page: q, data: demoPage(info.pageSize, q, gen) });
      inFlight.push(vol.writePages(pages));
      if (inFlight.length >= 16) await Promise.all(inFlight.splice(0));
    }
    await Promise.all(inFlight);
  };
  let t0 = performance.now();
  await writeGen(1, pageCount);
  // Every shard's LSN once generation 1 is written: the branch point of the branch below.
  const gen1 = (await vol.flush()).lsns;
  lines.push(`wrote ${pageCount} pages (${((pageCount * info.pageSize) / 1048576).toFixed(1)} MiB) in ${(performance.now() - t0).toFixed(0)} ms with vectored writes of ${batch} pages`);
  t0 = performance.now();
  await writeGen(2, pageCount / 2);
  lines.push(`overwrote ${pageCount / 2} pages in ${(performance.now() - t0).toFixed(0)} ms`);

  let bad = 0;
  t0 = performance.now();
  for (let p = 0; p < pageCount; p += batch) {
    const want = Array.from({ length: Math.min(batch, pageCount - p) }, (_, i) => p + i);
    const got = (await vol.readPages(want)).pages;
    got.forEach((data, i) => {
      const page = want[i]!;
      if (!equalBytes(data, demoPage(info.pageSize, page, page < pageCount / 2 ? 2 : 1))) bad++;
    });
  }
  lines.push(`read back ${pageCount} pages in ${(performance.now() - t0).toFixed(0)} ms: ${bad === 0 ? 'all match' : `${bad} MISMATCHED`}`);

  // GetPage@LSN: LSNs are per shard; page 0's shard is asked as of the LSN just before its last write.
  const w = await vol.writePages([{ page: 0, data: demoPage(info.pageSize, 0, 3) }]);
  const before = (await vol.readPages([0], { lsn: w.lsn - 1 })).pages;
  const now = (await vol.readPages([0])).pages;
  const atLsnOk = equalBytes(before[0]!, demoPage(info.pageSize, 0, 2)) && equalBytes(now[0]!, demoPage(info.pageSize, 0, 3));
  lines.push(`read page 0 at lsn ${w.lsn - 1} (before its last write) and at lsn ${w.lsn}: ${atLsnOk ? 'both as written' : 'WRONG'}`);

  // A branch as of generation 1 (docs/branches.md): its own volume, holding every page as it was then.
  t0 = performance.now();
  const branchName = `${name}-gen1`;
  await client.branchVolume(branchName, name, { lsns: Array.from({ length: shards }, (_, s) => gen1.find((x) => x.shard === s)!.lsn) });
  const branch = client.volume(branchName);
  let branchBad = 0;
  for (let p = 0; p < pageCount; p += 256) {
    const want = Array.from({ length: Math.min(256, pageCount - p) }, (_, i) => p + i);
    const got = (await branch.readPages(want)).pages;
    got.forEach((data, i) => {
      if (!equalBytes(data, demoPage(info.pageSize, want[i]!, 1))) branchBad++;
    });
  }
  lines.push(`branched ${branchName} as of the first write of every page, and read it back in ${(performance.now() - t0).toFixed(0)} ms: ${branchBad === 0 ? 'all as first written' : `${branchBad} MISMATCHED`}`);

  // Grown online (volume.resize): the pages added read as zeros until written, the old ones stay.
  t0 = performance.now();
  const grown = await client.resizeVolume(name, pageCount * 2);
  const edge = [pageCount - 1, pageCount, pageCount * 2 - 1];
  const fresh = (await vol.readPages(edge)).pages;
  await vol.writePages([{ page: pageCount * 2 - 1, data: demoPage(info.pageSize, pageCount * 2 - 1, 4) }]);
  const last = (await vol.readPages([pageCount * 2 - 1])).pages[0]!;
  const growOk = grown.pageCount === pageCount * 2 && equalBytes(fresh[0]!, demoPage(info.pageSize, pageCount - 1, 1)) &&
    fresh[1]!.every((b) => b === 0) && fresh[2]!.every((b) => b === 0) && equalBytes(last, demoPage(info.pageSize, pageCount * 2 - 1, 4));
  lines.push(`grew ${name} to ${grown.pageCount} pages in ${(performance.now() - t0).toFixed(0)} ms, wrote and read its last page: ${growOk ? 'new pages zero until written, old ones kept' : 'WRONG'}`);

  // A range made zeros (`strata zero`: one small record per shard), then which pages hold data
  // (`strata map`): the first half, and the last page written after the resize.
  t0 = performance.now();
  await vol.zeroPages(pageCount / 2, pageCount / 2);
  const zeroed = (await vol.readPages([pageCount / 2, pageCount - 1])).pages;
  const map = await vol.pagesWithData(0, pageCount * 2);
  const zeroOk = zeroed.every((d) => d.every((b) => b === 0)) && map.end === pageCount * 2 &&
    JSON.stringify(map.ranges) === JSON.stringify([{ first: 0, count: pageCount / 2 }, { first: pageCount * 2 - 1, count: 1 }]);
  lines.push(
    `made pages ${pageCount / 2}..${pageCount - 1} zeros and mapped the volume in ${(performance.now() - t0).toFixed(0)} ms: ` +
      (zeroOk ? `they read as zeros; pages 0..${pageCount / 2 - 1} and ${pageCount * 2 - 1} hold data` : `WRONG (${JSON.stringify(map.ranges)})`),
  );

  // The replicas of every shard hold the same committed records (`strata shard check`, which
  // the operator's user may ask of the nodes where NATS admits only the cluster's users).
  let checkOk = true;
  if (replicas > 1) {
    await vol.flush();
    t0 = performance.now();
    const checks = [];
    for (let s = 0; s < shards; s++) checks.push(await (opts.operator ?? client).checkShard(name, s));
    const differ = checks.filter((c) => c.differs !== undefined).map((c) => `shard ${c.shard} at LSN ${c.differs!.lsn}`);
    const missing = checks.flatMap((c) => c.replicas.filter((x) => x.error !== undefined).map((x) => `shard ${c.shard} on ${x.node}: ${x.error}`));
    const lsns = checks.reduce((n, c) => n + (c.range === undefined ? 0 : c.range.toLsn - c.range.fromLsn + 1), 0);
    checkOk = differ.length === 0 && missing.length === 0 && checks.every((c) => c.range !== undefined);
    lines.push(
      `compared the ${replicas} replicas of every shard in ${(performance.now() - t0).toFixed(0)} ms (strata shard check): ` +
        (checkOk ? `the same committed records, ${lsns} LSNs` : differ.length > 0 ? `DIFFER: ${differ.join(', ')}` : `NOT COMPARED: ${missing.join('; ') || 'no LSNs in common'}`),
    );
  }

  await vol.flush();
  await client.deleteVolume(branchName);
  await client.deleteVolume(name);
  lines.push(`deleted volumes ${branchName} and ${name}`);
  return { ok: bad === 0 && atLsnOk && branchBad === 0 && growOk && zeroOk && checkOk, lines };
}

/** The `strata` launcher next to this build (bin/strata). */
const STRATA_BIN = path.join(__dirname, '..', '..', 'bin', 'strata');

export interface DevCluster {
  natsUrl: string;
  /** The nats-server's process id (fault tests freeze it with SIGSTOP); a new one after `restartNats`. */
  readonly natsPid: number;
  root: string;
  nodes: Array<{ id: string; pid: number; log: string; process: ChildProcess }>;
  client: StrataClient;
  /**
   * Starts node `index` (0-based) again, with the arguments and data directory it had, once its
   * process has exited (after a SIGKILL, say); its log is appended to. Resolves when the new
   * process is spawned, not when it is up: rejects if it cannot be spawned. `extraArgs` are
   * added to its arguments for this start only (a fault test's `--space-reserve-bytes`, say).
   */
  restart(index: number, extraArgs?: readonly string[]): Promise<void>;
  /**
   * Kills the nats-server (SIGKILL), waits `downMs`, and starts a new one on the same port, where
   * the nodes and clients reconnect. Resolves once the new server is ready.
   */
  restartNats(downMs: number): Promise<void>;
  stop(): Promise<void>;
  /** With `auth`: each role's user and its password file. */
  natsUsers?: Readonly<Record<NatsRole, DevNatsUser>>;
}

function devUser(u: DevNatsUser): DevNatsUser {
  return { user: u.user, passwordFile: u.passwordFile };
}

/** Waits until the controller sees `want` live nodes, or fails with the nodes' last log lines. */
async function waitForNodes(natsUrl: string, want: number, timeoutMs: number, auth: { user?: string; pass?: string }): Promise<void> {
  const nc = await natsConnect({ servers: natsUrl, timeout: 5000, ...auth });
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const r = await nc.request(controllerSubject('dev', 'members'), encode({}), { timeout: 1000 });
        const m = throwIfError(decode(r.data)) as { members: Array<{ live: boolean }> };
        if (m.members.filter((x) => x.live).length >= want) return;
      } catch {
        // The controller's node may still be starting.
      }
      if (Date.now() > deadline) throw new Error(`the cluster did not reach ${want} live nodes within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await nc.close();
  }
}

/** Options of `startDevCluster`. */
/** The controller nodes of a dev cluster of `nodes`: n1, n2 and n3 with 3 or more (replicated), else n1 alone. */
export function devControllers(nodes: number): string[] {
  return nodes >= 3 ? ['n1', 'n2', 'n3'] : ['n1'];
}

/**
 * A data directory a dev cluster of 3 nodes or more left has its catalog replicated on n1, n2
 * and n3 (devControllers): started again with fewer nodes, n1 would keep a catalog of its own,
 * empty, and list none of the volumes (the others' replicas shown as leftovers), and volumes
 * made then would be in a second catalog. Refused, saying how to start it.
 */
function checkControllersKept(root: string, nodes: number): void {
  if (devControllers(nodes).length > 1) return;
  // n3 is the node a cluster of fewer than 3 never has (one of 2 leaves n2: started again, fine).
  let held: boolean;
  try {
    held = fs.readdirSync(path.join(root, 'n3')).length > 0;
  } catch {
    held = false;
  }
  if (held) {
    throw new Error(`${root} holds the data of a dev cluster of 3 nodes or more (n3 too), whose catalog is replicated on n1, n2 and n3: start it with --nodes 3 or more, or give another --data-dir`);
  }
}

export interface DevClusterOptions {
  nodes: number;
  dataDir?: string;
  metricsPort?: number;
  hosts?: number;
  /** The Node.js binary the node processes run on; default this process's (`process.execPath`). */
  execPath?: string;
  /** Aborted (Ctrl-C during the start): the start stops what it started and rejects. */
  signal?: AbortSignal;
  /** More `strata node` flags for every node (e.g. `--checkpoint-every-records 500`). */
  nodeArgs?: readonly string[];
  /**
   * The nats-server admits only the cluster's users (cluster/nats-auth.ts), with new random
   * passwords written to `<root>/nats-users/<user>.password` (mode 0600): the nodes connect as
   * `strata-node`, the cluster's client as `strata-client`.
   */
  auth?: boolean;
  /** Bound on the wait for every node to be live, ms; default DEV_START_TIMEOUT_MS. */
  startTimeoutMs?: number;
}

/** How long a dev cluster's start waits for all its nodes to be live. */
export const DEV_START_TIMEOUT_MS = 30_000;

/** A user of a dev cluster whose nats-server admits only its users, and the file holding its password. */
export interface DevNatsUser {
  user: string;
  passwordFile: string;
}

/** New users of each role, their passwords written under `root`; and the server's authorization block. */
function devNatsUsers(root: string): { users: Record<NatsRole, DevNatsUser & { pass: string }>; authorization: string } {
  const dir = path.join(root, 'nats-users');
  makeDirectory(dir);
  const fresh = newNatsUsers();
  const users = {} as Record<NatsRole, DevNatsUser & { pass: string }>;
  for (const role of NATS_ROLES) {
    const { user, pass } = fresh[role];
    const passwordFile = path.join(dir, `${user}.password`);
    fs.rmSync(passwordFile, { force: true });
    fs.writeFileSync(passwordFile, `${pass}\n`, { mode: 0o600 });
    users[role] = { user, pass, passwordFile };
  }
  return { users, authorization: renderRoleUsers('dev', fresh) };
}

/**
 * Starts the nats-server and the node processes; the caller stops them. A node process that
 * cannot be spawned (binary missing, no processes left), or that exits before the cluster is
 * up (a bad flag, a port in use), fails the start at once with an error naming the node,
 * instead of ending this process with an unhandled 'error' event or waiting out the start's
 * deadline.
 */
export async function startDevCluster(opts: DevClusterOptions): Promise<DevCluster> {
  if (!Number.isSafeInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > 16) throw new Error(`--nodes must be 1..16, got ${opts.nodes}`);
  const ownDir = opts.dataDir === undefined;
  const root = opts.dataDir !== undefined ? path.resolve(opts.dataDir) : fs.mkdtempSync(path.join(os.tmpdir(), 'strata-dev-'));
  makeDirectory(root);
  if (!ownDir) checkControllersKept(root, opts.nodes);
  const hosts = opts.hosts ?? defaultHostsPerNode(os.availableParallelism(), opts.nodes);
  let nats: NatsServerHandle | undefined;
  const nodes: DevCluster['nodes'] = [];
  const stop = async (): Promise<void> => {
    for (const n of nodes) if (n.process.exitCode === null && n.process.signalCode === null) n.process.kill('SIGTERM');
    await Promise.all(
      nodes.map(
        (n) =>
          new Promise<void>((resolve) => {
            if (n.process.exitCode !== null || n.process.signalCode !== null) return resolve();
            const t = setTimeout(() => n.process.kill('SIGKILL'), 10_000);
            n.process.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
          }),
      ),
    );
    await nats?.stop();
    if (ownDir) fs.rmSync(root, { recursive: true, force: true });
  };
  // Rejected by the first node process that cannot be spawned; raced against the start below.
  let spawnFailed: (e: Error) => void = () => undefined;
  const spawnFailure = new Promise<never>((_, reject) => (spawnFailed = reject));
  spawnFailure.catch(() => undefined);
  const execPath = opts.execPath ?? process.execPath;
  const onAbort = (): void => spawnFailed(new Error('interrupted'));
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const auth = opts.auth === true ? devNatsUsers(root) : undefined;
  const natsOptions = { jetstream: false, ...(auth === undefined ? {} : { extraConfig: auth.authorization }) };
  const nodeAuth = auth === undefined ? {} : { user: auth.users.node.user, pass: auth.users.node.pass };
  const natsStart = startNatsServer(natsOptions);
  natsStart.catch(() => undefined);
  try {
    nats = await Promise.race([natsStart, spawnFailure]);
    const natsUrl = nats.url;
    // With 3 nodes or more, the catalog is replicated on the first 3 (a replicated controller);
    // fewer, node 1 keeps it alone.
    const controllers = devControllers(opts.nodes);
    const controllerArgs = (i: number): string[] =>
      controllers.length > 1 ? ['--controllers', controllers.join(',')] : [i === 0 ? '--controller' : '--no-controller'];
    const spawnNode = (i: number, onError: (e: Error) => void, extraArgs: readonly string[] = []): DevCluster['nodes'][number] => {
      const id = `n${i + 1}`;
      const log = path.join(root, `${id}.log`);
      const logFd = fs.openSync(log, 'a');
      const args = [
        STRATA_BIN, 'node', '--node-id', id, '--cluster', 'dev', '--nats', natsUrl, '--data-dir', path.join(root, id),
        '--hosts', String(hosts), ...controllerArgs(i),
        '--metrics-port', String(opts.metricsPort ? opts.metricsPort + i : 0),
        ...(auth === undefined ? [] : ['--nats-user', auth.users.node.user, '--nats-password-file', auth.users.node.passwordFile]),
        ...(opts.nodeArgs ?? []),
        ...extraArgs,
      ];
      // The server is this one, with its own users or none and without TLS: a NATS user or TLS
      // files the environment names (for the commands that talk to another cluster) are not
      // the nodes'. Nor are the controller nodes of another cluster: dev names its own, or with
      // fewer than 3 nodes none (node 1 alone), which STRATA_CONTROLLERS would contradict.
      const { STRATA_NATS_USER: _u, STRATA_NATS_PASSWORD_FILE: _p, STRATA_NATS_CA_FILE: _ca, STRATA_NATS_CERT_FILE: _c, STRATA_NATS_KEY_FILE: _k, STRATA_CONTROLLERS: _ctl, ...env } = process.env;
      const child = spawn(execPath, args, { stdio: ['ignore', logFd, logFd], env: { ...env, STRATA_LOG_LEVEL: process.env.STRATA_LOG_LEVEL ?? 'info' } });
      fs.closeSync(logFd);
      // Also emitted when signalling a running node fails; after the start that is left to the
      // node's own exit (reported by runDev), as nothing waits on spawnFailure any more.
      child.on('error', (err) => onError(new Error(`node ${id}: could not run ${execPath}: ${err.message}`)));
      return { id, pid: child.pid ?? -1, log, process: child };
    };
    for (let i = 0; i < opts.nodes; i++) {
      const node = spawnNode(i, spawnFailed);
      node.process.once('exit', (code, signal) => spawnFailed(new Error(`node ${node.id} exited during the start (${signal ?? `code ${String(code)}`})`)));
      nodes.push(node);
      // A controller that keeps the catalog alone first: the others register with it.
      if (i === 0 && controllers.length === 1) await Promise.race([new Promise((r) => setTimeout(r, 200)), spawnFailure]);
    }
    const restart = async (index: number, extraArgs: readonly string[] = []): Promise<void> => {
      const old = nodes[index];
      if (old === undefined) throw new Error(`no node ${index}: the cluster has ${nodes.length}`);
      if (old.process.exitCode === null && old.process.signalCode === null) throw new Error(`node ${old.id} (pid ${old.pid}) is still running`);
      await new Promise<void>((resolve, reject) => {
        const node = spawnNode(index, reject, extraArgs);
        if (node.pid < 0) return; // 'error' follows and rejects
        nodes[index] = node;
        node.process.once('spawn', () => resolve());
      });
    };
    await Promise.race([waitForNodes(nats.url, opts.nodes, opts.startTimeoutMs ?? DEV_START_TIMEOUT_MS, nodeAuth), spawnFailure]);
    const client = await connect({ servers: nats.url, cluster: 'dev', ...(auth === undefined ? {} : { user: auth.users.client.user, pass: auth.users.client.pass }) });
    opts.signal?.removeEventListener('abort', onAbort);
    const restartNats = async (downMs: number): Promise<void> => {
      const old = nats!;
      old.kill();
      await old.stop();
      await new Promise((r) => setTimeout(r, downMs));
      nats = await startNatsServer({ ...natsOptions, port: old.port });
    };
    return {
      natsUrl: nats.url,
      get natsPid(): number {
        return nats!.pid;
      },
      root, nodes, client, restart, restartNats, stop,
      ...(auth === undefined ? {} : { natsUsers: { node: devUser(auth.users.node), client: devUser(auth.users.client), operator: devUser(auth.users.operator) } }),
    };
  } catch (e) {
    opts.signal?.removeEventListener('abort', onAbort);
    // A nats-server whose start an interruption overtook is stopped too.
    if (nats === undefined) nats = await natsStart.catch(() => undefined);
    const tails = nodes.map((n) => {
      const text = fs.existsSync(n.log) ? fs.readFileSync(n.log, 'utf8').trim().split('\n').slice(-5).join('\n    ') : '';
      return `  ${n.id} (pid ${n.pid}) log:\n    ${text}`;
    });
    await stop();
    throw new Error(`${(e as Error).message}\n${tails.join('\n')}`);
  }
}

export async function runDev(opts: DevOptions): Promise<number> {
  const out = opts.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const count = opts.nodes ?? 3;
  // Ctrl-C or SIGTERM at any moment (the start, the demo, the wait) stops what was started and
  // removes the temporary directory; without a handler the signal would end this process and
  // leave the nats-server and the node processes running.
  const interrupt = new AbortController();
  const onSignal = (): void => interrupt.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const interrupted = new Promise<'interrupted'>((resolve) => interrupt.signal.addEventListener('abort', () => resolve('interrupted'), { once: true }));
  try {
    let cluster: DevCluster;
    try {
      cluster = await startDevCluster({
        nodes: count,
        signal: interrupt.signal,
        ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir } : {}),
        ...(opts.metricsPort !== undefined ? { metricsPort: opts.metricsPort } : {}),
        ...(opts.hosts !== undefined ? { hosts: opts.hosts } : {}),
        ...(opts.auth === true ? { auth: true } : {}),
      });
    } catch (e) {
      process.stderr.write(`strata dev: ${(e as Error).message}\n`);
      return interrupt.signal.aborted ? 130 : 1;
    }
    out(`Strata dev cluster 'dev' is up: ${count} node(s), NATS at ${cluster.natsUrl}`);
    const controllers = devControllers(count);
    const role = (id: string): string =>
      !controllers.includes(id) ? '' : controllers.length > 1 ? ' (controller node: holds a replica of the volume catalog)' : ' (controller: keeps the volume catalog)';
    cluster.nodes.forEach((n, i) => out(`node ${n.id} pid ${n.pid} log ${n.log}${opts.metricsPort ? ` metrics http://127.0.0.1:${opts.metricsPort + i}/metrics` : ''}${role(n.id)}`));
    out(`data: ${cluster.root}${opts.dataDir ? '' : ' (temporary, removed on exit)'}`);
    for (const n of cluster.nodes) {
      n.process.once('exit', (code, signal) => {
        out(
          `node ${n.id} (pid ${n.pid}) exited (${signal ?? `code ${code}`}); the others carry on while each shard keeps a majority` +
            (!controllers.includes(n.id)
              ? ''
              : controllers.length > 1
                ? ': it was a controller node; while two of n1, n2 and n3 run, one of them runs the controller'
                : ': it was the controller, without which no volume can be created, deleted or listed (put and get go on)'),
        );
      });
    }
    const shutDown = async (): Promise<void> => {
      for (const n of cluster.nodes) n.process.removeAllListeners('exit');
      await cluster.client.close();
      await cluster.stop();
    };
    if (opts.demo) {
      let code = 0;
      try {
        // With --auth the demo's client is the application user; the operator user checks the replicas.
        const users = cluster.natsUsers;
        const operator = users === undefined ? undefined : await connect({ servers: cluster.natsUrl, cluster: 'dev', user: users.operator.user, pass: readNatsPassword(users.operator.passwordFile) });
        const r = await Promise.race([runDemo(cluster.client, { replicas: count >= 3 ? 3 : 1, ...(operator !== undefined ? { operator } : {}) }), interrupted]).finally(() => operator?.close());
        if (r === 'interrupted') {
          out('interrupted; stopping…');
          code = 130;
        } else {
          for (const l of r.lines) out(`  ${l}`);
          out(r.ok ? 'demo: every check passed' : 'demo: CHECKS FAILED');
          code = r.ok ? 0 : 1;
        }
      } catch (e) {
        process.stderr.write(`strata dev --demo: ${(e as Error).message}\n`);
        code = 1;
      }
      await shutDown();
      return code;
    }
    const users = cluster.natsUsers;
    const as = (u: DevNatsUser | undefined): string => (u === undefined ? '' : ` --nats-user ${u.user} --nats-password-file ${u.passwordFile}`);
    if (users !== undefined) out(`NATS admits only the cluster's users: nodes as ${users.node.user}, applications as ${users.client.user}, operators as ${users.operator.user} (passwords in ${path.dirname(users.client.passwordFile)})`);
    out(`try: strata --nats ${cluster.natsUrl}${as(users?.client)} volume create v1 --pages 1024 --replicas ${count >= 3 ? 3 : 1}`);
    out('Ctrl-C stops the cluster');
    await interrupted;
    out('stopping…');
    await shutDown();
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
