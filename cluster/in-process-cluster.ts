/**
 * An in-process Strata cluster: its own nats-server (on a free loopback port, in a temporary
 * directory), N nodes in this process (each with its own actor-host threads and data directory),
 * and a connected client. Tests and `strata dev` start one; `kill` crashes a node (threads
 * terminated, connections dropped, nothing flushed), `restart` brings it back on the same data.
 *
 * Telemetry: the nodes share the process's telemetry (one per process). If none runs, the
 * cluster starts one (no metrics endpoint and no span exporter unless asked) and shuts it down
 * in stop(); one that runs already (started by a test or a command) is used and left running.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect } from 'nats';
import { startNatsServer, type NatsServerHandle } from '../runtime/nats-server';
import { StrataNode, STRATA_VERSION, type StrataNodeOptions } from './node';
import { connect, type StrataClient } from './client';
import { newNatsUsers, renderRoleUsers, type NatsRole } from './nats-auth';
import { encode, decode } from '../messages/codec';
import { throwIfError } from '../messages/errors';
import { controllerSubject } from '../messages/control';
import { currentTelemetry, startTelemetry, type Telemetry, type TelemetryOptions } from '../observability/telemetry';

export interface ClusterOptions {
  /** Nodes; default 1. Node 0 keeps the catalog (the controller), unless `controllers`. */
  nodes?: number;
  /**
   * A replicated controller: the first `controllers` nodes (3..7, at most `nodes`) are its
   * controller nodes (StrataNodeOptions.controllers). Default: node 0 alone keeps the catalog.
   */
  controllers?: number;
  /** Actor hosts (devices) per node; default 1. */
  hosts?: number;
  cluster?: string;
  /** Parent of the nodes' data directories; default a new temporary directory, removed by stop(). */
  dataDir?: string;
  /** The failure domain of each node by index (StrataNodeOptions.zone); default none. */
  zones?: readonly string[];
  /** Extra options for every node. */
  node?: Partial<Omit<StrataNodeOptions, 'nodeId' | 'cluster' | 'natsUrl' | 'dataDir' | 'controller' | 'controllers'>>;
  /** Start the nats-server with JetStream (for benchmarks comparing against it). */
  jetstream?: boolean;
  /** The nats-server's max_payload in bytes; default that of `startNatsServer` (1 MiB). */
  maxPayloadBytes?: number;
  /**
   * The nats-server admits only the cluster's users (cluster/nats-auth.ts), with new random
   * passwords: the nodes connect as its node user, `client` as its client user.
   */
  natsAuth?: boolean;
  /**
   * Server configuration appended to the generated one (after the users of `natsAuth`), e.g.
   * `write_deadline: "60s"` for a test that holds a host's thread longer than the server waits
   * for a client to read before it drops it as a slow consumer (10 s).
   */
  natsConfig?: string;
  /** Timeout of the cluster's client calls; default 10 s (crash tests use less). */
  clientTimeoutMs?: number;
  /** Deadline for the cluster to come up; default 30 s. */
  startTimeoutMs?: number;
  /**
   * Options of the telemetry started when none runs in this process (default: metricsPort 0,
   * span exporters and sampling from OTEL_* variables, else none); false: start none.
   */
  telemetry?: false | Omit<TelemetryOptions, 'nodeId' | 'cluster'>;
}

export interface InProcessCluster {
  natsUrl: string;
  cluster: string;
  client: StrataClient;
  /** Node handles by index; a killed node's slot is undefined until restarted. */
  nodes: Array<StrataNode | undefined>;
  dataDirs: string[];
  nats: NatsServerHandle;
  /** With `natsAuth`: each role's user and password. */
  natsUsers?: Readonly<Record<NatsRole, { user: string; pass: string }>>;
  /** The process's telemetry the nodes report to (undefined when none runs). */
  telemetry: Telemetry | undefined;
  /** Forwards the spans every running node's host threads finished to the exporters now. */
  flushTelemetry(): Promise<void>;
  /** Crashes node i without any clean shutdown. */
  kill(i: number): void;
  /** Stops node i cleanly (StrataNode.stop: its hosts hand their shards' leadership over first). */
  stopNode(i: number): Promise<void>;
  /** Starts node i again on its data directory; resolves once it has joined. */
  restart(i: number): Promise<StrataNode>;
  /**
   * Splits the nodes into groups (by index) that cannot exchange replication messages with each
   * other; nodes not named form one more group. Clients still reach every node through NATS.
   */
  partition(groups: number[][]): Promise<void>;
  /** Removes every transport fault. */
  heal(): Promise<void>;
  /** Delays and drops replication messages sent by node i. */
  degrade(i: number, faults: { delayMs?: number; dropRate?: number }): Promise<void>;
  /** The next `times` fdatasyncs of node i's device `hostId` fail (Infinity: for good). */
  failFsync(i: number, times: number, hostId?: number): Promise<void>;
  /** Node i's device `hostId` says it has `bytes` free (undefined: what it has). */
  setFreeBytes(i: number, bytes: number | undefined, hostId?: number): Promise<void>;
  /** Waits until the controller sees exactly the live nodes. */
  waitForMembers(count: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startCluster(opts: ClusterOptions = {}): Promise<InProcessCluster> {
  const count = opts.nodes ?? 1;
  if (opts.controllers !== undefined && opts.controllers > count) throw new RangeError(`controllers (${opts.controllers}) exceed the nodes (${count})`);
  if (!Number.isSafeInteger(count) || count < 1 || count > 16) throw new Error(`nodes must be 1..16, got ${count}`);
  const cluster = opts.cluster ?? 'test';
  const ownDir = opts.dataDir === undefined;
  const root = opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'strata-cluster-'));
  // One telemetry per process: reuse a running one, else start ours (stopped with the cluster).
  let ownTelemetry: Telemetry | undefined;
  if (opts.telemetry !== false && currentTelemetry() === undefined) {
    ownTelemetry = startTelemetry({ metricsPort: 0, ...(opts.telemetry ?? {}), nodeId: 'in-process', cluster, version: STRATA_VERSION });
    try {
      await ownTelemetry.ready;
    } catch (e) {
      await ownTelemetry.shutdown().catch(() => undefined);
      throw e;
    }
  }
  const telemetry = currentTelemetry();
  const natsUsers = opts.natsAuth === true ? newNatsUsers() : undefined;
  let nats: NatsServerHandle;
  try {
    nats = await startNatsServer({
      jetstream: opts.jetstream ?? false,
      ...(opts.maxPayloadBytes !== undefined ? { maxPayloadBytes: opts.maxPayloadBytes } : {}),
      ...(natsUsers === undefined && opts.natsConfig === undefined
        ? {}
        : { extraConfig: (natsUsers === undefined ? '' : renderRoleUsers(cluster, natsUsers)) + (opts.natsConfig === undefined ? '' : `${opts.natsConfig}\n`) }),
    });
  } catch (e) {
    await ownTelemetry?.shutdown().catch(() => undefined);
    throw e;
  }
  const dataDirs = Array.from({ length: count }, (_, i) => path.join(root, `node${i + 1}`));
  const nodes: Array<StrataNode | undefined> = new Array(count).fill(undefined);
  const controllers = opts.controllers === undefined ? undefined : Array.from({ length: opts.controllers }, (_, i) => `n${i + 1}`);
  const nodeOpts = (i: number): StrataNodeOptions => ({
    heartbeatMs: 250,
    ...(opts.node ?? {}),
    hosts: opts.hosts ?? opts.node?.hosts ?? 1,
    nodeId: `n${i + 1}`,
    ...(opts.zones?.[i] === undefined ? {} : { zone: opts.zones[i] }),
    cluster,
    natsUrl: nats.url,
    ...(natsUsers === undefined ? {} : { natsAuth: natsUsers.node }),
    dataDir: dataDirs[i]!,
    ...(controllers === undefined ? { controller: i === 0 } : { controller: i < controllers.length, controllers }),
  });

  let client: StrataClient | undefined;
  const stopAll = async (): Promise<void> => {
    await client?.close().catch(() => undefined);
    await Promise.all(nodes.map((n) => n?.stop().catch(() => undefined)));
    await nats.stop();
    await ownTelemetry?.shutdown().catch(() => undefined);
    if (ownDir) fs.rmSync(root, { recursive: true, force: true });
  };

  const waitForMembers = async (want: number, timeoutMs = opts.startTimeoutMs ?? 30_000): Promise<void> => {
    const nc = await natsConnect({ servers: nats.url, timeout: 5000, ...(natsUsers?.node ?? {}) });
    try {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          const r = await nc.request(controllerSubject(cluster, 'members'), encode({}), { timeout: 1000 });
          const m = throwIfError(decode(r.data)) as { members: Array<{ live: boolean }> };
          if (m.members.filter((x) => x.live).length === want) return;
        } catch {
          // The controller may be restarting; try again until the deadline.
        }
        if (Date.now() > deadline) throw new Error(`cluster did not reach ${want} live nodes within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await nc.close();
    }
  };

  try {
    // The controller node first, then the others (they register with it by heartbeat).
    nodes[0] = await StrataNode.start(nodeOpts(0));
    for (let i = 1; i < count; i++) nodes[i] = await StrataNode.start(nodeOpts(i));
    await waitForMembers(count);
    client = await connect({
      servers: nats.url,
      cluster,
      ...(opts.clientTimeoutMs ? { timeoutMs: opts.clientTimeoutMs } : {}),
      ...(natsUsers?.client ?? {}),
    });
  } catch (e) {
    await stopAll();
    throw e;
  }

  return {
    natsUrl: nats.url,
    cluster,
    client,
    nodes,
    dataDirs,
    nats,
    ...(natsUsers === undefined ? {} : { natsUsers }),
    telemetry,
    async flushTelemetry(): Promise<void> {
      await Promise.all(nodes.map((n) => n?.flushTelemetry()));
    },
    kill(i: number): void {
      const n = nodes[i];
      if (!n) throw new Error(`node ${i} is not running`);
      n.kill();
      nodes[i] = undefined;
    },
    async stopNode(i: number): Promise<void> {
      const n = nodes[i];
      if (!n) throw new Error(`node ${i} is not running`);
      nodes[i] = undefined;
      await n.stop();
    },
    async restart(i: number): Promise<StrataNode> {
      if (nodes[i]) throw new Error(`node ${i} is running`);
      const n = await StrataNode.start(nodeOpts(i));
      nodes[i] = n;
      return n;
    },
    async partition(groups: number[][]): Promise<void> {
      const named = new Set(groups.flat());
      const all = [...groups, dataDirs.map((_, i) => i).filter((i) => !named.has(i))].filter((g) => g.length > 0);
      await Promise.all(
        nodes.map((n, i) => {
          if (!n) return undefined;
          const mine = all.find((g) => g.includes(i))!;
          const unreachable = dataDirs.map((_, j) => j).filter((j) => !mine.includes(j)).map((j) => `n${j + 1}`);
          return n.setFaults({ unreachable });
        }),
      );
    },
    async heal(): Promise<void> {
      await Promise.all(nodes.map((n) => n?.setFaults({})));
    },
    async degrade(i: number, faults: { delayMs?: number; dropRate?: number }): Promise<void> {
      const n = nodes[i];
      if (!n) throw new Error(`node ${i} is not running`);
      await n.setFaults(faults);
    },
    async failFsync(i: number, times: number, hostId = 0): Promise<void> {
      const n = nodes[i];
      if (!n) throw new Error(`node ${i} is not running`);
      await n.failFsync(hostId, times);
    },
    async setFreeBytes(i: number, bytes: number | undefined, hostId = 0): Promise<void> {
      const n = nodes[i];
      if (!n) throw new Error(`node ${i} is not running`);
      await n.setFreeBytes(hostId, bytes);
    },
    waitForMembers,
    stop: stopAll,
  };
}
