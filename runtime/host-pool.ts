/**
 * HostPool: the main thread's side of a node's actor hosts.
 *
 * It starts one worker thread per host (runtime/actor-host.ts), each owning one device, and
 * drives them over comlink: open/close shards, stats, health, stop. It supervises them: a host
 * thread that exits unexpectedly is started again with the same device and reopens the shards
 * it had (their state comes back from the device), and the restart is counted.
 *
 * When the process runs telemetry, every host thread (a restarted one too) gets the tracing
 * init of `currentTelemetry().forWorker()` in its workerData, so its spans reach the exporters.
 */
import { Worker } from 'node:worker_threads';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/umd/node-adapter';
import type { HostApi, HostConfig, HostStats, HostHealth, HostWorkerData, ReplicaConfigState, ShardOpened, TransportFaults } from './actor-host';
import { shardKey, type ForgottenRule, type ReplicaRoles, type ShardSpec } from './device-host';
import { withTimeout } from './timeout';
import { inLanes } from './lanes';
import { currentTelemetry } from '../observability/telemetry';
import type { ForceVoteResult, ReconfigureResult, ReplicaDigest, TransferResult } from '../actors/replica';

export interface HostPoolOptions {
  /** One config per host; host i owns device hosts[i].deviceDir. */
  hosts: HostConfig[];
  /**
   * Restarts of one host allowed within restartWindowMs; default 5 per minute. Beyond them the
   * host is down, and started again after a back-off (HOST_RESPAWN_MS_MIN doubling to _MAX).
   */
  restartsMax?: number;
  restartWindowMs?: number;
  /** First back-off before a host that is down is started again; default HOST_RESPAWN_MS_MIN. */
  respawnMsMin?: number;
  /**
   * A host thread that has not answered a ping for this long is hung (a loop that never ends, a
   * wait that never returns): it is terminated and started again. Default HOST_HANG_MS; 0: never.
   */
  hangMs?: number;
  /** Told when a host is found hung, before it is terminated (for logging by the node). */
  onHostHung?: (hostId: number, silentMs: number) => void;
  /** Deadline for a control call to a host; default 30 s. */
  callTimeoutMs?: number;
  /** Told when a host did not stop within `callTimeoutMs` (the error names it), before its thread is terminated. */
  onHostStopTimedOut?: (hostId: number, error: Error) => void;
  /** Deadline for a host thread's start (its modules loaded, its NATS connection and device opened); default `callTimeoutMs`. */
  startTimeoutMs?: number;
  /**
   * Told when a host exits unexpectedly (for logging by the node), with the uncaught error that
   * ended its thread when there was one, and `hung` when the pool terminated it for not answering
   * (onHostHung told of it already).
   */
  onHostExit?: (hostId: number, code: number, restarting: boolean, error: Error | undefined, hung: boolean) => void;
  /**
   * Told when a restarted host could not reopen one of its shards (for logging by the node). The
   * host serves its other shards meanwhile, and the pool tries that shard again with back-off;
   * a spec the host refuses (bad_request) is forgotten instead.
   */
  onShardReopenFailed?: (hostId: number, shard: ShardSpec, error: Error, retrying: boolean) => void;
  /**
   * Heap a host thread may fill before its first full garbage collection, in MiB (V8's initial
   * old-space size); default HOST_HEAP_INITIAL_MIB_DEFAULT, 0 = V8's own default. It is not
   * memory taken up front: it moves the point where V8 starts marking the old generation.
   */
  heapInitialMiB?: number;
}

/**
 * Default initial old space of a host thread (MiB). With V8's default, a host's heap of
 * 10–15 MiB was marked and compacted every ~150 ms under load, and the helper threads of that
 * garbage collection took a quarter of the CPU of an R=3 write (docs/performance.md).
 */
export const HOST_HEAP_INITIAL_MIB_DEFAULT = 128;
/** Largest `heapInitialMiB` accepted (64 GiB). */
export const HOST_HEAP_INITIAL_MIB_MAX = 64 * 1024;

interface HostSlot {
  config: HostConfig;
  worker: Worker | undefined;
  api: Comlink.Remote<HostApi> | undefined;
  /**
   * The running thread's start (its init), while it runs: a call waits for it. Not the reopen of
   * the shards that follows, which may take longer than any call's deadline (thousands of
   * shards, a slow disk) and which a close or open of a shard meanwhile must not wait for.
   */
  starting: Promise<void> | undefined;
  /** The reopen of a (re)started host's shards under way (its token), for `openShard` not to arm a retry of its own meanwhile. */
  reopening: object | undefined;
  shards: Map<string, ShardSpec>;
  restarts: number[];
  restartsTotal: number;
  stopping: boolean;
  down: string | undefined;
  /**
   * Shards the host has not opened again since it (re)started: waiting for the reopen under way,
   * or, after an open that failed, for the timer's next attempt.
   */
  reopenPending: Set<string>;
  reopenTimer: NodeJS.Timeout | undefined;
  reopenAttempts: number;
  /** The failure last told (onShardReopenFailed) of each shard whose reopen fails: told again only when it changes. */
  reopenFailureTold: Map<string, string>;
  /** The uncaught error of the running thread, if it threw one (its 'exit' follows). */
  error: Error | undefined;
  lastExit: HostExit | undefined;
  /**
   * The calls in flight to the running thread, failed when it exits (then, not at their
   * deadline). A set that each call leaves once answered: a race against one promise of the
   * thread's lifetime would keep every call (and its answer) until the thread exits.
   */
  exitWatch: Set<(err: Error) => void> | undefined;
  /** A host left down after too many exits is started again after a back-off: its timer, and how many times so far. */
  respawnTimer: NodeJS.Timeout | undefined;
  respawns: number;
  /** When the ping in flight to the running thread was sent (performance.now()); undefined when none is. */
  pingSentAt: number | undefined;
  /** When the running thread finished its start (Date.now()); undefined when none runs. */
  startedAt: number | undefined;
  /** The running thread's blocking disk calls in progress (shared memory; RealDisk `ioMarker`). */
  ioMarker: Int32Array;
  /** The running thread was terminated for not answering (its exit is the hang's, told already). */
  hung: boolean;
}

/** How a host thread last ended unexpectedly. */
export interface HostExit {
  code: number;
  /** The uncaught error that ended it ("name: message"), when there was one. */
  error?: string;
  atMs: number;
}

const HOST_SCRIPT = path.join(__dirname, 'actor-host.js');

/** The host refused the request itself (a spec it cannot open): trying again cannot help. */
function refused(e: unknown): boolean {
  return (e as { code?: unknown } | undefined)?.code === 'bad_request';
}

/** The wait before try `attempt` (from 0) of a retry: `firstMs` doubling, at most `maxMs`. */
function backoffMs(firstMs: number, maxMs: number, attempt: number): number {
  return Math.min(maxMs, firstMs * 2 ** Math.min(attempt, 20));
}

/** `p` within `ms`, else an Error with code 'timeout' naming `what`. */
function timed<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return withTimeout(p, ms, () => Object.assign(new Error(`${what} timed out after ${ms} ms`), { code: 'timeout', timeoutMs: ms }));
}

/** How long past a reconfigure's deadline its host's answer is waited for (its own `timeout`). */
const RECONFIGURE_ANSWER_MS = 1000;

/** Bound on a host's destroyLeftovers: a reconciliation does not wait longer for a host that is stuck. */
const LEFTOVERS_TIMEOUT_MS = 5000;
/**
 * Opens of its shards asked of a host at a time, when a node starts or a restarted host reopens
 * them. A host opens them one after another on its thread; more than one asked keeps it from
 * idling while an answer travels back and the next open is asked for.
 */
export const HOST_OPENS_AT_ONCE = 4;

/**
 * A host that exited more than restartsMax times within the window is started again after this
 * long, doubling up to HOST_RESPAWN_MS_MAX, for as long as the node runs: the cause (a device
 * that could not be opened, say) may be gone by then, and nothing else would bring its shards back.
 */
export const HOST_RESPAWN_MS_MIN = 5_000;
export const HOST_RESPAWN_MS_MAX = 300_000;
/**
 * Default of HostPoolOptions.hangMs. A host thread answers a ping between any two of its tasks
 * (the longest device task is tens of ms): 20 s of silence is a thread that will not answer,
 * whose leader subscriptions would go on taking requests that nobody answers.
 */
export const HOST_HANG_MS = 20_000;
/** How often each host is pinged. */
const PING_EVERY_MS = 1000;

/** HostPool.replicaRoles: the replicas of every host that are down, and those that lead (with their host). */
export interface NodeReplicaRoles {
  down: ReplicaRoles['down'];
  leading: Array<ReplicaRoles['leading'][number] & { hostId: number }>;
}

export class HostPool {
  private readonly slots: HostSlot[];
  private readonly opts: HostPoolOptions;
  private readonly heapInitialMiB: number;
  private stopped = false;
  private watchdog: NodeJS.Timeout | undefined;

  private constructor(opts: HostPoolOptions) {
    this.opts = opts;
    const heap = opts.heapInitialMiB ?? HOST_HEAP_INITIAL_MIB_DEFAULT;
    if (!Number.isSafeInteger(heap) || heap < 0 || heap > HOST_HEAP_INITIAL_MIB_MAX) {
      throw new RangeError(`heapInitialMiB must be an integer in 0..${HOST_HEAP_INITIAL_MIB_MAX}, got ${String(heap)}`);
    }
    this.heapInitialMiB = heap;
    this.slots = opts.hosts.map((config) => ({
      config,
      worker: undefined,
      api: undefined,
      starting: undefined,
      reopening: undefined,
      shards: new Map(),
      restarts: [],
      restartsTotal: 0,
      stopping: false,
      down: undefined,
      reopenPending: new Set(),
      reopenTimer: undefined,
      reopenAttempts: 0,
      reopenFailureTold: new Map(),
      error: undefined,
      lastExit: undefined,
      exitWatch: undefined,
      respawnTimer: undefined,
      respawns: 0,
      pingSentAt: undefined,
      startedAt: undefined,
      ioMarker: new Int32Array(new SharedArrayBuffer(4)),
      hung: false,
    }));
  }

  static async start(opts: HostPoolOptions): Promise<HostPool> {
    if (opts.hosts.length === 0) throw new Error('a node needs at least one host');
    const pool = new HostPool(opts);
    const spawned: Array<Promise<void>> = [];
    try {
      for (const s of pool.slots) {
        const started = pool.spawn(s);
        // Its failure is the start's, below: not unhandled while a later spawn throws.
        started.catch(() => undefined);
        spawned.push(started);
      }
      await Promise.all(spawned);
    } catch (e) {
      // The threads begun are gone before the start fails (their devices are free again), within
      // a bound: one inside a disk call that does not return is not waited for.
      await timed(pool.kill(), pool.callTimeoutMs, 'the end of the host threads begun').catch(() => undefined);
      throw e;
    }
    const hangMs = opts.hangMs ?? HOST_HANG_MS;
    if (hangMs > 0) {
      pool.watchdog = setInterval(() => pool.watch(hangMs), Math.min(PING_EVERY_MS, hangMs / 2));
      pool.watchdog.unref();
    }
    return pool;
  }

  /**
   * Pings every running host (one ping in flight per thread); one whose ping has waited
   * `hangMs` is terminated, and its exit restarts it as any other.
   */
  private watch(hangMs: number): void {
    if (this.stopped) return;
    const now = performance.now();
    for (const slot of this.slots) {
      const api = slot.api;
      const worker = slot.worker;
      // Also while it starts and reopens its shards: it answers between any two of those calls.
      if (api === undefined || worker === undefined || slot.stopping) continue;
      if (slot.pingSentAt === undefined) {
        slot.pingSentAt = now;
        this.untilExit(slot, api.ping()).then(
          () => {
            if (slot.api === api) slot.pingSentAt = undefined;
          },
          () => undefined,
        );
      } else if (Atomics.load(slot.ioMarker, 0) > 0) {
        // Inside a disk call: it waits on its disk, which a termination would not end (the
        // device's own stall report says so once the call returns). Its silence counts from
        // when it leaves the call.
        slot.pingSentAt = now;
      } else if (now - slot.pingSentAt >= hangMs) {
        const silentMs = Math.round(now - slot.pingSentAt);
        slot.pingSentAt = undefined;
        slot.down = `hung: no answer for ${Math.round(silentMs / 1000)} s; restarting it`;
        slot.hung = true;
        this.opts.onHostHung?.(slot.config.hostId, silentMs);
        void worker.terminate();
      }
    }
  }

  get size(): number {
    return this.slots.length;
  }

  /**
   * Opens a shard on host `hostId` (and remembers it, so a restarted host reopens it). One the
   * host could not open (its storage, say) is tried again with the reopen back-off, besides
   * the error thrown here. Resolves with what the open did besides (ShardOpened: a branch's
   * replica not copied from its parent).
   */
  async openShard(hostId: number, spec: ShardSpec): Promise<ShardOpened> {
    const slot = this.slot(hostId);
    const key = shardKey(spec.volumeId, spec.shard);
    slot.shards.set(key, spec);
    try {
      const r = await this.call(slot, (api) => api.openShard(spec));
      this.reopenDone(slot, key);
      this.opened(slot, key, spec);
      return r;
    } catch (e) {
      // A spec the host refuses must not come back with every restart of the host; one closed
      // (or opened again) meanwhile is not this open's to try again.
      if (slot.shards.get(key) !== spec) throw e;
      if (refused(e)) slot.shards.delete(key);
      else if (slot.api !== undefined && slot.starting === undefined) {
        // Tried again with the others pending: by the timer, or by the reopen under way, which
        // arms it when it ends with shards pending.
        slot.reopenPending.add(key);
        if (slot.reopenTimer === undefined && slot.reopening === undefined) this.armReopen(slot, slot.api);
      }
      throw e;
    }
  }

  /** HostApi.forceVote on the host that holds the shard's replica. */
  async forceVote(hostId: number, volumeId: string, shard: number): Promise<ForceVoteResult> {
    return this.call(this.slot(hostId), (api) => api.forceVote(volumeId, shard));
  }

  /** HostApi.shardDigest on the host that holds the shard's replica. */
  async shardDigest(hostId: number, volumeId: string, shard: number, range?: { fromLsn: number; toLsn: number }, pages?: { lsn: number; first: number; count: number }): Promise<ReplicaDigest> {
    return this.call(this.slot(hostId), (api) => api.shardDigest(volumeId, shard, range, pages));
  }

  /**
   * HostApi.reconfigure on the host that holds the shard's replica: waited for until `deadlineMs`
   * (a wall-clock time) and a moment more, for the replica's own `timeout` to come back first,
   * at most the call deadline.
   */
  async reconfigure(hostId: number, volumeId: string, shard: number, members: string[], deadlineMs: number): Promise<ReconfigureResult> {
    const waitMs = Math.max(1, deadlineMs - Date.now()) + RECONFIGURE_ANSWER_MS;
    return this.answerWithin(this.slot(hostId), waitMs, (api) => api.reconfigure(volumeId, shard, [...members], deadlineMs));
  }

  /**
   * HostApi.destroyLeftovers on every host: the directories destroyed, and how many hosts did
   * not answer within LEFTOVERS_TIMEOUT_MS (down, restarting, busy). Best effort: their leftovers
   * go at a later call.
   */
  async destroyLeftovers(volumeIds: string[], forgotten?: ForgottenRule): Promise<{ destroyed: string[]; hostsFailed: number }> {
    // A restarted host must not reopen a deleted volume's shard.
    const dead = new Set(volumeIds);
    for (const slot of this.slots) {
      for (const [key, spec] of slot.shards) {
        if (!dead.has(spec.volumeId)) continue;
        slot.shards.delete(key);
        this.reopenDone(slot, key);
      }
    }
    const settled = await Promise.allSettled(this.slots.map((slot) => this.answerWithin(slot, LEFTOVERS_TIMEOUT_MS, (api) => api.destroyLeftovers(volumeIds, forgotten))));
    return {
      destroyed: settled.flatMap((r) => (r.status === 'fulfilled' ? r.value : [])),
      hostsFailed: settled.filter((r) => r.status === 'rejected').length,
    };
  }

  async closeShard(hostId: number, volumeId: string, shard: number, destroy: boolean): Promise<void> {
    const slot = this.slot(hostId);
    const key = shardKey(volumeId, shard);
    slot.shards.delete(key);
    this.reopenDone(slot, key);
    await this.call(slot, (api) => api.closeShard(volumeId, shard, destroy));
  }

  /**
   * Every host's stats. A host that does not answer within `timeoutMs` (default: the call
   * deadline) is reported without them, `down` saying so, instead of holding up the others.
   */
  async stats(opts: { timeoutMs?: number } = {}): Promise<Array<HostStats & { restarts: number; reopensPending?: number; down?: string; lastExit?: HostExit }>> {
    return Promise.all(
      this.slots.map(async (s) => {
        const exit = s.lastExit ? { lastExit: s.lastExit } : {};
        const without = (down: string): HostStats & { restarts: number; down?: string } =>
          ({ hostId: s.config.hostId, device: undefined, natsConnected: false, mailbox: [], restarts: s.restartsTotal, down, ...exit }) as HostStats & { restarts: number; down?: string };
        if (s.down || !s.api) return without(s.down ?? 'starting');
        try {
          const st = await this.answerWithin(s, opts.timeoutMs, (api) => api.stats());
          // Shards not open again yet since the host (re)started: being reopened, or whose open
          // failed and is tried again with a back-off (0: none).
          return { ...st, restarts: s.restartsTotal, reopensPending: s.reopenPending.size, ...exit };
        } catch (e) {
          return without(`not answering: ${(e as Error).message}`);
        }
      }),
    );
  }

  /** Every host's health; one that does not answer within `timeoutMs` is reported not ok, with why. */
  async health(opts: { timeoutMs?: number } = {}): Promise<HostHealth[]> {
    return Promise.all(
      this.slots.map(async (s) => {
        const bad = (reason: string): HostHealth => ({ hostId: s.config.hostId, ok: false, natsConnected: false, deviceFailed: false, shardsDown: 0, reason });
        if (!s.api || s.down) return bad(s.down ?? 'starting');
        try {
          const h = await this.answerWithin(s, opts.timeoutMs, (api) => api.health());
          // It answers while it opens again the shards it had; it is not well until they are.
          if (h.ok && s.reopening !== undefined) return { ...h, ok: false, reason: `reopening its shards (${s.reopenPending.size} not open yet)` };
          return h;
        } catch (e) {
          return bad(`not answering: ${(e as Error).message}`);
        }
      }),
    );
  }

  /**
   * The shards opened on a host whose replica does not serve (`down`): down on its host
   * (HostApi.replicaRoles), not opened again yet since the host restarted (a failed open's retry
   * too), or on a host that is down, starting, or does not answer within `timeoutMs` (every
   * shard of it); and those whose replica leads (`leading`, with the host's id).
   */
  async replicaRoles(opts: { timeoutMs?: number } = {}): Promise<NodeReplicaRoles> {
    const perHost = await Promise.all(
      this.slots.map(async (s): Promise<NodeReplicaRoles> => {
        const all = { down: [...s.shards.values()].map((spec) => ({ volumeId: spec.volumeId, shard: spec.shard })), leading: [] };
        if (s.down || !s.api) return all;
        let roles: ReplicaRoles;
        try {
          roles = await this.answerWithin(s, opts.timeoutMs, (api) => api.replicaRoles());
        } catch {
          return all;
        }
        const keys = new Set(roles.down.map((d) => shardKey(d.volumeId, d.shard)));
        for (const key of s.reopenPending) {
          const spec = s.shards.get(key);
          if (spec !== undefined && !keys.has(key)) roles.down.push({ volumeId: spec.volumeId, shard: spec.shard });
        }
        return { down: roles.down, leading: roles.leading.map((l) => ({ ...l, hostId: s.config.hostId })) };
      }),
    );
    return { down: perHost.flatMap((h) => h.down), leading: perHost.flatMap((h) => h.leading) };
  }

  /** HostApi.replicaConfig on host `hostId`, within `timeoutMs`: undefined also when the host is down or starting. */
  async replicaConfig(hostId: number, volumeId: string, shard: number, opts: { timeoutMs?: number } = {}): Promise<ReplicaConfigState | undefined> {
    const s = this.slot(hostId);
    if (s.down || !s.api) return undefined;
    return this.answerWithin(s, opts.timeoutMs, (api) => api.replicaConfig(volumeId, shard));
  }

  /** HostApi.confirmLeads on host `hostId`, bounded by `deadlineMs` (a wall-clock time). */
  async confirmLeads(hostId: number, volumeId: string, shard: number, term: number, deadlineMs: number): Promise<void> {
    await this.answerWithin(this.slot(hostId), Math.max(1, deadlineMs - Date.now()), (api) => api.confirmLeads(volumeId, shard, term, deadlineMs));
  }

  /** HostApi.handOver on the host that holds the shard's replica. */
  async handOver(hostId: number, volumeId: string, shard: number, to?: string): Promise<TransferResult> {
    return this.call(this.slot(hostId), (api) => api.handOver(volumeId, shard, to));
  }

  /** A call to a host with a deadline of its own (at most the call deadline). */
  private answerWithin<T>(slot: HostSlot, timeoutMs: number | undefined, fn: (api: Comlink.Remote<HostApi>) => Promise<T>): Promise<T> {
    const ms = Math.min(timeoutMs ?? this.callTimeoutMs, this.callTimeoutMs);
    return timed(this.call(slot, fn), ms, `host ${slot.config.hostId}`);
  }

  /** Fault injection: host `hostId`'s thread stops answering anything for `ms` (a synchronous stall); resolves after it. */
  async stallHost(hostId: number, ms: number, opts: { inDisk?: boolean; fifo?: string } = {}): Promise<void> {
    await this.call(this.slot(hostId), (api) => api.stall(ms, opts));
  }

  /** Fault injection: every host of this node applies these replication-transport faults. */
  async setFaults(faults: TransportFaults): Promise<void> {
    await Promise.all(this.slots.map((s) => this.call(s, (api) => api.setFaults(faults))));
  }

  /** Fault injection: the next `times` fdatasyncs of host `hostId`'s device fail (Infinity: for good). */
  async failFsync(hostId: number, times: number): Promise<void> {
    await this.call(this.slot(hostId), (api) => api.failFsync(times));
  }

  /** Fault injection: host `hostId`'s device says it has `bytes` free (undefined: what it has). */
  async setFreeBytes(hostId: number, bytes: number | undefined): Promise<void> {
    await this.call(this.slot(hostId), (api) => api.setFreeBytes(bytes));
  }

  /** Forwards every host's finished spans to this thread now (tests; a no-op without telemetry). */
  async flushTelemetry(): Promise<void> {
    await Promise.all(this.slots.map((s) => (s.api && !s.down ? this.call(s, (api) => api.flushTelemetry()) : undefined)));
  }

  async checkpointAll(): Promise<void> {
    await Promise.all(this.slots.map((s) => this.call(s, (api) => api.checkpoint())));
  }

  /** Clean shutdown: every host drains its mailboxes and device queue, then exits. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.watchdog);
    await Promise.all(
      this.slots.map(async (s) => {
        s.stopping = true;
        clearTimeout(s.reopenTimer);
        clearTimeout(s.respawnTimer);
        // Its own: a thread that exits during its stop clears the slot's (onExit).
        const { worker, api } = s;
        if (!worker || !api) return;
        try {
          // Raced against the thread's exit: one that ends during its drain is not waited for
          // until the call's deadline.
          await timed(this.untilExit(s, api.stop()), this.callTimeoutMs, `stop of host ${s.config.hostId}`);
        } catch (e) {
          // A host that does not stop in time is terminated below; its device recovers on open.
          if ((e as { code?: unknown }).code === 'timeout') this.opts.onHostStopTimedOut?.(s.config.hostId, e as Error);
        }
        try {
          api[Comlink.releaseProxy]();
        } catch {
          // The thread is gone already: nothing is left to release.
        }
        // Bounded: a thread inside a disk call that does not return (a hung disk) ends only when
        // the call does; the process's exit ends it then.
        await timed(worker.terminate(), this.callTimeoutMs, `termination of host ${s.config.hostId}`).catch(() => undefined);
        if (s.worker === worker) {
          s.worker = undefined;
          s.api = undefined;
        }
      }),
    );
  }

  /** Abrupt end, as a crash: threads terminated without draining (tests of recovery). */
  /** Resolves once every thread has exited (a caller that must know no thread still writes waits for it). */
  kill(): Promise<void> {
    this.stopped = true;
    clearInterval(this.watchdog);
    const exits: Array<Promise<unknown>> = [];
    for (const s of this.slots) {
      s.stopping = true;
      clearTimeout(s.reopenTimer);
      clearTimeout(s.respawnTimer);
      if (s.worker) exits.push(s.worker.terminate().catch(() => undefined));
      s.worker = undefined;
      s.api = undefined;
    }
    return Promise.all(exits).then(() => undefined);
  }

  /**
   * Ends one host thread as a crash would; the pool restarts it (tests of supervision). With
   * `uncaught`, the thread throws an error with that message outside any handler, as a bug
   * would; otherwise it is terminated.
   */
  async crashHost(hostId: number, opts: { uncaught?: string } = {}): Promise<void> {
    const slot = this.slot(hostId);
    const w = slot.worker;
    if (!w) return;
    if (opts.uncaught === undefined) {
      await w.terminate();
      return;
    }
    const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
    await this.call(slot, (api) => api.throwUncaught(opts.uncaught!));
    await timed(exited, this.callTimeoutMs, `exit of host ${hostId}`);
  }

  private slot(hostId: number): HostSlot {
    const s = this.slots.find((x) => x.config.hostId === hostId);
    if (!s) throw new Error(`no host ${hostId}`);
    return s;
  }

  private async call<T>(slot: HostSlot, fn: (api: Comlink.Remote<HostApi>) => Promise<T>): Promise<T> {
    // A host (re)starting is waited for within its start deadline (not its shards' reopen).
    if (slot.starting) await timed(slot.starting, this.startTimeoutMs, `start of host ${slot.config.hostId}`);
    if (!slot.api) {
      throw Object.assign(new Error(`host ${slot.config.hostId} is down${slot.down ? `: ${slot.down}` : ''}`), { code: 'unavailable' });
    }
    return timed(this.untilExit(slot, fn(slot.api)), this.callTimeoutMs, `call to host ${slot.config.hostId}`);
  }

  /** `p`, or an 'unavailable' error as soon as the slot's running thread exits (a call to it is never answered then). */
  private untilExit<T>(slot: HostSlot, p: Promise<T>): Promise<T> {
    const watch = slot.exitWatch;
    if (watch === undefined) return p;
    return new Promise<T>((resolve, reject) => {
      watch.add(reject);
      p.then(
        (v) => {
          watch.delete(reject);
          resolve(v);
        },
        (e: unknown) => {
          watch.delete(reject);
          reject(e);
        },
      );
    });
  }

  private get startTimeoutMs(): number {
    return this.opts.startTimeoutMs ?? this.callTimeoutMs;
  }

  private get callTimeoutMs(): number {
    return this.opts.callTimeoutMs ?? 30_000;
  }

  /** A shard's storage exists once a host opened it: a restarted host that finds none reports it lost (ShardSpec.existing). */
  private opened(slot: HostSlot, key: string, spec: ShardSpec): void {
    if (spec.existing !== true && slot.shards.get(key) === spec) slot.shards.set(key, { ...spec, existing: true });
  }

  /**
   * Reopens shards on a (re)started host, HOST_OPENS_AT_ONCE asked at a time in the pool's
   * order, each within the call deadline. One that fails does not keep the host from serving
   * the others: it is reported, and tried again with back-off (a spec the host refuses is
   * forgotten).
   */
  private async reopen(slot: HostSlot, api: Comlink.Remote<HostApi>, keys: Iterable<string>): Promise<void> {
    const current = (): boolean => !this.stopped && !slot.stopping && slot.api === api;
    const token = {};
    slot.reopening = token;
    // Down until opened (replicaRoles), as those whose open failed.
    const list = [...keys];
    for (const key of list) slot.reopenPending.add(key);
    try {
      await inLanes(list, HOST_OPENS_AT_ONCE, (key) => this.reopenOne(slot, api, key, current));
    } finally {
      if (slot.reopening === token) slot.reopening = undefined;
    }
    if (!current()) return;
    if (slot.reopenPending.size === 0) {
      slot.reopenAttempts = 0;
      return;
    }
    this.armReopen(slot, api);
  }

  /** One shard of `reopen`: opened, or reported and left to the retries (a spec refused is forgotten). */
  private async reopenOne(slot: HostSlot, api: Comlink.Remote<HostApi>, key: string, current: () => boolean): Promise<void> {
    // The thread this open is for has exited (its successor reopens for itself), or the pool is
    // stopping: nothing more to do, and nothing to report.
    if (!current()) return;
    const spec = slot.shards.get(key);
    if (spec === undefined) {
      // Closed since it was to be tried again.
      this.reopenDone(slot, key);
      return;
    }
    try {
      await timed(this.untilExit(slot, api.openShard(spec)), this.callTimeoutMs, `reopening shard ${key} on host ${slot.config.hostId}`);
      this.reopenDone(slot, key);
      this.opened(slot, key, spec);
    } catch (e) {
      if (!current()) return;
      const err = e instanceof Error ? e : new Error(String(e));
      // Closed, or opened again with another spec, while this open ran: not tried again here.
      if (slot.shards.get(key) !== spec) {
        if (!slot.shards.has(key)) this.reopenDone(slot, key);
        return;
      }
      const retrying = !refused(e);
      if (retrying) slot.reopenPending.add(key);
      else {
        slot.shards.delete(key);
        this.reopenDone(slot, key);
      }
      // A failure that repeats at each retry is told once, and again when it changes.
      if (retrying && slot.reopenFailureTold.get(key) === err.message) return;
      if (retrying) slot.reopenFailureTold.set(key, err.message);
      this.opts.onShardReopenFailed?.(slot.config.hostId, spec, err, retrying);
    }
  }

  /** `key` is no longer to be reopened (opened, closed, or forgotten): neither pending nor its failure remembered. */
  private reopenDone(slot: HostSlot, key: string): void {
    slot.reopenPending.delete(key);
    slot.reopenFailureTold.delete(key);
  }

  /** The next attempt at the shards a host could not open: 1 s, doubling up to a minute, for as long as the host runs. */
  private armReopen(slot: HostSlot, api: Comlink.Remote<HostApi>): void {
    const delay = backoffMs(1000, 60_000, slot.reopenAttempts);
    slot.reopenAttempts++;
    clearTimeout(slot.reopenTimer);
    slot.reopenTimer = setTimeout(() => {
      slot.reopenTimer = undefined;
      if (this.stopped || slot.stopping || slot.api !== api) return;
      void this.reopen(slot, api, slot.reopenPending);
    }, delay);
    slot.reopenTimer.unref();
  }

  private spawn(slot: HostSlot): Promise<void> {
    const telemetry = currentTelemetry()?.forWorker();
    // A new marker per thread: one terminated inside a disk call leaves its count behind.
    slot.ioMarker = new Int32Array(new SharedArrayBuffer(4));
    const workerData: HostWorkerData = { hostId: slot.config.hostId, ioMarker: slot.ioMarker, ...(telemetry ? { telemetry: telemetry.init } : {}) };
    // V8 reads its heap flags when it creates an isolate, so the flag set here sizes this host's
    // heap (and that of any isolate the process creates after it: the last value set wins).
    if (this.heapInitialMiB > 0) v8.setFlagsFromString(`--initial-old-space-size=${this.heapInitialMiB}`);
    const worker = new Worker(HOST_SCRIPT, { workerData, ...(telemetry ? { transferList: telemetry.transferList } : {}) });
    const api = Comlink.wrap<HostApi>(nodeEndpoint(worker as never));
    slot.worker = worker;
    slot.api = api;
    slot.error = undefined;
    slot.pingSentAt = undefined;
    // A new thread: a reopen failure is told again (its start is news).
    slot.reopenFailureTold.clear();
    const exitWatch = new Set<(err: Error) => void>();
    worker.once('exit', (code) => {
      const err = Object.assign(new Error(`host ${slot.config.hostId} exited (code ${code})`), { code: 'unavailable' });
      for (const fail of [...exitWatch]) fail(err);
      exitWatch.clear();
    });
    slot.exitWatch = exitWatch;
    worker.once('exit', (code) => this.onExit(slot, worker, code));
    // An uncaught error in the host ends the thread; 'exit' follows, reports it and restarts.
    worker.on('error', (err) => {
      if (slot.worker === worker) slot.error = err instanceof Error ? err : new Error(String(err));
    });
    const starting = (async () => {
      try {
        await timed(this.untilExit(slot, api.init(slot.config)), this.startTimeoutMs, `start of host ${slot.config.hostId}`);
      } catch (e) {
        // Why it did not start is the reason its exit reports (the node logs it).
        if (slot.worker === worker && slot.error === undefined) slot.error = e instanceof Error ? e : new Error(String(e));
        // A thread that did not start in time is not left running beside its replacement.
        void worker.terminate();
        throw e;
      }
      // Started: whatever said it was down (a failed start before this one) is over. The
      // respawn back-off is reset only once it has run a whole restart window (onExit): a host
      // that starts and then dies reopening its shards backs off as one that cannot start.
      slot.down = undefined;
      slot.startedAt = Date.now();
    })();
    slot.starting = starting;
    const started = starting.finally(() => {
      if (slot.starting === starting) slot.starting = undefined;
    });
    // Calls go on while the shards it had are opened again (a close or an open of one of them
    // too: the host takes them in the order they are asked, each checked against the pool's list).
    return started.then(() => this.reopen(slot, api, slot.shards.keys()));
  }

  private onExit(slot: HostSlot, worker: Worker, code: number): void {
    if (slot.worker !== worker && slot.worker !== undefined) return;
    slot.worker = undefined;
    slot.api = undefined;
    clearTimeout(slot.reopenTimer);
    slot.reopenTimer = undefined;
    const error = slot.error;
    slot.error = undefined;
    const hung = slot.hung;
    slot.hung = false;
    if (this.stopped || slot.stopping) return;
    slot.lastExit = { code, ...(error ? { error: `${error.name}: ${error.message}` } : {}), atMs: Date.now() };
    const now = Date.now();
    const windowMs = this.opts.restartWindowMs ?? 60_000;
    if (slot.startedAt !== undefined && now - slot.startedAt >= windowMs) slot.respawns = 0;
    slot.startedAt = undefined;
    slot.restarts = slot.restarts.filter((t) => now - t < windowMs);
    const restarting = slot.restarts.length < (this.opts.restartsMax ?? 5);
    this.opts.onHostExit?.(slot.config.hostId, code, restarting, error, hung);
    if (!restarting) {
      const delay = this.respawnLater(slot);
      slot.down = `host exited ${slot.restarts.length + 1} times within ${windowMs} ms (last code ${code}${error ? `: ${error.message}` : ''}); starting it again in ${delay / 1000} s`;
      return;
    }
    slot.restarts.push(now);
    this.restart(slot);
  }

  /**
   * Starts the slot's thread again after the respawn back-off (5 s doubling, by the respawns so
   * far), unless the pool stops or a thread runs by then; returns the delay.
   */
  private respawnLater(slot: HostSlot): number {
    const delayMs = backoffMs(this.opts.respawnMsMin ?? HOST_RESPAWN_MS_MIN, HOST_RESPAWN_MS_MAX, slot.respawns);
    slot.respawns++;
    clearTimeout(slot.respawnTimer);
    slot.respawnTimer = setTimeout(() => {
      slot.respawnTimer = undefined;
      if (this.stopped || slot.stopping || slot.worker !== undefined) return;
      slot.restarts = [];
      this.restart(slot);
    }, delayMs);
    slot.respawnTimer.unref();
    return delayMs;
  }

  /**
   * Starts a host thread again (after an exit); a start that fails ends in another exit. A thread
   * that cannot even be created (Node throws ERR_WORKER_INIT_FAILED when the system has no thread
   * or memory for it) makes no exit: it is tried again after the respawn back-off. (Thrown from
   * here, that error escaped the previous thread's exit listener and ended the process.)
   */
  private restart(slot: HostSlot): void {
    slot.restartsTotal++;
    let started: Promise<void>;
    try {
      started = this.spawn(slot);
    } catch (e) {
      const delay = this.respawnLater(slot);
      slot.down = `restart failed: ${e instanceof Error ? e.message : String(e)}; starting it again in ${delay / 1000} s`;
      return;
    }
    started.catch((e: Error) => {
      slot.down = `restart failed: ${e.message}`;
    });
  }
}
