/**
 * DeviceHost: everything that lives on one device, on the thread that owns it.
 *
 * It opens the device's disk and its DeviceQueue, and for every shard placed on the device a
 * SegmentLog, a PageStore and a ShardActor. It is the supervisor of those actors: when the device
 * fails (a write or fdatasync error) or an actor breaks an invariant, it closes them and reopens
 * them from their durable state (recovery of the log + newest image + replay), counting the
 * restart. Data on the device is laid out as:
 *
 *   <device>/shards/<volumeId>.<shard>/log/seg-….log   the shard's log
 *   <device>/shards/<volumeId>.<shard>/image-….img     checkpoint images
 *   <device>/shards/<volumeId>.<shard>/checkpoint      pointer to the newest image (atomic metadata)
 */
import type { Disk } from '../storage-engine/disk';
import { joinPath } from '../storage-engine/disk';
import { RealDisk } from '../storage-engine/real-disk';
import { SegmentLog } from '../storage-engine/log';
import { PageStore } from '../storage-engine/page-store';
import { Slab } from '../storage-engine/slab';
import { StorageError } from '../storage-engine/errors';
import { DeviceQueue, type DeviceQueueOptions, type DeviceQueueStats } from '../actors/device-queue';
import { ShardActor, type ShardGeometry, type ShardActorStats, type PayloadOffload } from '../actors/shard-actor';
import { pageWriteBytes, PAGE_WRITE_PAGES_MAX } from '../storage-engine/page-write';
import { CpuPool, type CpuPoolStats } from './cpu-pool';

export interface ShardSpec extends ShardGeometry {
  volumeName: string;
}

export interface DeviceHostOptions {
  /** Directory of the device (created if missing). */
  dir: string;
  /** A disk to use instead of the real one under `dir` (tests). */
  disk?: Disk;
  /** Page cache bytes per shard; default 32 MiB. */
  cacheBytesMaxPerShard?: number;
  /** Log segment size; default 64 MiB. */
  segmentBytesMax?: number;
  /** Checkpoint a shard after this many records; default 65536 (0 = never). */
  checkpointEveryRecords?: number;
  queue?: Omit<DeviceQueueOptions, 'disk' | 'name'>;
  /**
   * Write batches whose payload is at least this many bytes are checksummed on the CPU pool from
   * a slab handle; default 256 KiB; 0 turns the CPU pool off (everything on this thread).
   */
  crcOffloadBytesMin?: number;
  /** Restarts allowed per shard within restartWindowMs before it stays down; default 5. */
  restartsMax?: number;
  restartWindowMs?: number;
  nowMs?: () => number;
}

interface ShardEntry {
  spec: ShardSpec;
  actor: ShardActor | undefined;
  log: SegmentLog | undefined;
  store: PageStore | undefined;
  /** Why the shard is down, when it is. */
  downReason: StorageError | undefined;
  restarts: number[];
}

export interface DeviceHostStats {
  dir: string;
  queue: DeviceQueueStats;
  cpu: CpuPoolStats | undefined;
  restarts: number;
  shards: Array<ShardActorStats & { state: 'up' | 'down'; downReason?: string }>;
}

/** Errors after which a shard's in-memory state cannot be trusted and is rebuilt from disk. */
const FATAL_CODES = new Set(['device_failed', 'fsync_failed', 'invariant']);

export function shardKey(volumeId: string, shard: number): string {
  return `${volumeId}.${shard}`;
}

export class DeviceHost {
  readonly dir: string;
  private readonly disk: Disk;
  private readonly opts: DeviceHostOptions;
  private queue: DeviceQueue;
  private readonly shards = new Map<string, ShardEntry>();
  private readonly slab: Slab;
  private restartsTotal = 0;
  private readonly nowMs: () => number;
  private readonly cpu: CpuPool | undefined;
  private readonly offload: PayloadOffload | undefined;

  constructor(opts: DeviceHostOptions) {
    this.opts = opts;
    this.dir = opts.dir;
    this.disk = opts.disk ?? new RealDisk(opts.dir);
    this.nowMs = opts.nowMs ?? (() => performance.now());
    this.queue = this.newQueue();
    // One slab per device for the page caches of its shards. Slots hold the largest page size.
    const cacheBytes = opts.cacheBytesMaxPerShard ?? 32 * 1024 * 1024;
    const slotCount = Math.max(64, Math.ceil(cacheBytes / 8192) * 8);
    this.slab = new Slab({ slotBytes: 8192, slotCount: Math.min(slotCount, 1 << 20) });
    const offloadMin = opts.crcOffloadBytesMin ?? 256 * 1024;
    if (offloadMin > 0) {
      this.cpu = new CpuPool();
      // Slots for whole PageWrite payloads of the largest request, a few per device.
      const payloadBytes = Math.ceil(pageWriteBytes(4096, PAGE_WRITE_PAGES_MAX) / 8) * 8;
      const payloads = new Slab({ slotBytes: payloadBytes, slotCount: 16 });
      const cpu = this.cpu;
      this.offload = { bytesMin: offloadMin, slab: payloads, crc32c: (sab, offset, length) => cpu.crc32c(sab, offset, length) };
    }
    this.disk.mkdirp('shards');
  }

  /** Opens (creating or recovering) a shard on this device. Idempotent. */
  openShard(spec: ShardSpec): ShardActorStats {
    const key = shardKey(spec.volumeId, spec.shard);
    let entry = this.shards.get(key);
    if (!entry) {
      entry = { spec, actor: undefined, log: undefined, store: undefined, downReason: undefined, restarts: [] };
      this.shards.set(key, entry);
    }
    if (!entry.actor) this.start(entry);
    return entry.actor!.stats();
  }

  /** The actor of a shard, or a typed error saying why there is none. */
  actor(volumeId: string, shard: number): ShardActor {
    const entry = this.shards.get(shardKey(volumeId, shard));
    if (!entry) throw new StorageError('closed', `shard ${volumeId}/${shard} is not open on this device`);
    if (!entry.actor) {
      throw entry.downReason ?? new StorageError('device_failed', `shard ${volumeId}/${shard} is down`);
    }
    return entry.actor;
  }

  hasShard(volumeId: string, shard: number): boolean {
    return this.shards.has(shardKey(volumeId, shard));
  }

  /**
   * Called when a request on a shard failed: on a device or invariant failure the device's
   * actors are restarted from durable state. Returns true if a restart happened.
   */
  onActorError(volumeId: string, shard: number, err: unknown): boolean {
    // An error without a code is a bug (TypeError…), treated like a broken invariant.
    const code = (err as { code?: unknown } | undefined)?.code;
    const codeText = typeof code === 'string' ? code : 'invariant';
    if (!FATAL_CODES.has(codeText)) return false;
    if (this.queue.failed || codeText !== 'invariant') {
      // The device's state after a failed write or fdatasync is unknown: reopen every shard on
      // it from what is durable, with a fresh queue.
      this.restartAll();
    } else {
      const entry = this.shards.get(shardKey(volumeId, shard));
      if (entry) this.restart(entry);
    }
    return true;
  }

  /** Closes a shard; with destroy, removes its files durably. */
  closeShard(volumeId: string, shard: number, opts: { destroy?: boolean } = {}): void {
    const key = shardKey(volumeId, shard);
    const entry = this.shards.get(key);
    if (entry) {
      this.stop(entry);
      this.shards.delete(key);
    }
    if (opts.destroy) {
      const dir = joinPath('shards', key);
      this.disk.removeTree(dir);
      this.disk.fsyncDir('shards');
    }
  }

  /** Runs checkpoints of every open shard (through the queue). */
  async checkpointAll(): Promise<void> {
    for (const e of this.shards.values()) if (e.actor) await e.actor.checkpoint();
  }

  expireWaiters(nowMs: number): void {
    for (const e of this.shards.values()) e.actor?.expireWaiters(nowMs);
  }

  stats(): DeviceHostStats {
    const shards: DeviceHostStats['shards'] = [];
    for (const e of this.shards.values()) {
      if (e.actor) shards.push({ ...e.actor.stats(), state: 'up' });
      else {
        shards.push({
          volumeId: e.spec.volumeId, shard: e.spec.shard, term: 0, appliedLsn: 0, firstLsn: 0, lastLsn: 0,
          writes: 0, pagesWritten: 0, reads: 0, pagesRead: 0, lsnWaiters: 0, checkpoints: 0, checkpointLsn: 0, offloaded: 0,
          state: 'down', downReason: e.downReason?.message,
        });
      }
    }
    return { dir: this.dir, queue: this.queue.stats(), cpu: this.cpu?.stats(), restarts: this.restartsTotal, shards };
  }

  /** Drains the queue and closes every shard. */
  async close(): Promise<void> {
    for (const e of this.shards.values()) e.actor?.close();
    await this.queue.drain();
    for (const e of this.shards.values()) this.stop(e);
    this.shards.clear();
    await this.cpu?.close();
  }

  private newQueue(): DeviceQueue {
    return new DeviceQueue({ ...(this.opts.queue ?? {}), disk: this.disk, name: this.dir });
  }

  private start(entry: ShardEntry): void {
    const spec = entry.spec;
    const base = joinPath('shards', shardKey(spec.volumeId, spec.shard));
    try {
      this.disk.mkdirp(joinPath(base, 'log'));
      const log = SegmentLog.open(this.disk, {
        dir: joinPath(base, 'log'),
        ...(this.opts.segmentBytesMax ? { segmentBytesMax: this.opts.segmentBytesMax } : {}),
      });
      let store: PageStore;
      try {
        store = PageStore.open(this.disk, log, {
          dir: base,
          pageSize: spec.pageSize,
          pageCount: spec.pageCount,
          cacheBytesMax: this.opts.cacheBytesMaxPerShard ?? 32 * 1024 * 1024,
          slab: this.slab,
        });
      } catch (e) {
        log.close();
        throw e;
      }
      entry.log = log;
      entry.store = store;
      entry.actor = new ShardActor({
        geometry: spec,
        log,
        store,
        queue: this.queue,
        checkpointEveryRecords: this.opts.checkpointEveryRecords ?? 65536,
        ...(this.offload ? { offload: this.offload } : {}),
      });
      entry.downReason = undefined;
    } catch (e) {
      entry.actor = undefined;
      entry.downReason =
        e instanceof StorageError ? e : new StorageError('device_failed', `cannot open shard: ${(e as Error).message}`, undefined, e);
    }
  }

  private stop(entry: ShardEntry): void {
    entry.actor?.close();
    entry.actor = undefined;
    try {
      entry.store?.close();
    } catch {
      // Closing after a device failure may fail again; the state is rebuilt from disk anyway.
    }
    try {
      entry.log?.close();
    } catch {
      // As above.
    }
    entry.store = undefined;
    entry.log = undefined;
  }

  private restart(entry: ShardEntry): void {
    const now = this.nowMs();
    const windowMs = this.opts.restartWindowMs ?? 60_000;
    entry.restarts = entry.restarts.filter((t) => now - t < windowMs);
    this.stop(entry);
    if (entry.restarts.length >= (this.opts.restartsMax ?? 5)) {
      entry.downReason = new StorageError(
        'device_failed',
        `shard ${entry.spec.volumeId}/${entry.spec.shard} failed ${entry.restarts.length} times in ${windowMs} ms; left down`,
      );
      return;
    }
    entry.restarts.push(now);
    this.restartsTotal++;
    this.start(entry);
  }

  private restartAll(): void {
    for (const e of this.shards.values()) this.stop(e);
    this.queue = this.newQueue();
    for (const e of this.shards.values()) this.restart(e);
  }
}
