/**
 * ShardActor: the single writer of one shard of a volume.
 *
 * It sequences page writes into log records, has them made durable by its device's DeviceQueue
 * (group commit), applies them in LSN order to the PageStore and only then answers (output
 * gating: no reply before fdatasync). Reads are answered from the PageStore at the latest applied
 * LSN or at a given retained LSN; a read at an LSN not applied yet waits, bounded by a deadline.
 *
 * The actor does no IO itself and reads no clock: the log, the page store and the queue are
 * handed in, and deadlines arrive as timers from the host (`expireWaiters`).
 */
import type { DeviceQueue } from './device-queue';
import type { SegmentLog } from '../storage-engine/log';
import type { PageStore } from '../storage-engine/page-store';
import { encodePageWrite, pageWriteBytes } from '../storage-engine/page-write';
import type { Slab } from '../storage-engine/slab';
import { RecordKind, type LogRecord } from '../storage-engine/record';
import { StorageError, assert } from '../storage-engine/errors';

export interface ShardGeometry {
  volumeId: string;
  shard: number;
  shards: number;
  pageCount: number;
  pageSize: 4096 | 8192;
  stripePages: number;
}

/** The shard a page of a volume belongs to: pages are striped over shards in runs of stripePages. */
export function shardOfPage(page: number, g: Pick<ShardGeometry, 'shards' | 'stripePages'>): number {
  return Math.floor(page / g.stripePages) % g.shards;
}

export interface PageData {
  page: number;
  data: Uint8Array;
}

/**
 * Checksumming of large write batches on another thread. The batch's PageWrite payload is
 * encoded into a slab slot and its CRC-32C computed from the slot's handle (no copy); the log
 * combines it with the record header's checksum.
 */
export interface PayloadOffload {
  /** Payloads at least this many bytes are checksummed off-thread. */
  bytesMin: number;
  /** Slots big enough for a whole payload; held from encoding until the record is written. */
  slab: Slab;
  crc32c(sab: SharedArrayBuffer, offset: number, length: number): Promise<number>;
}

export interface ShardActorOptions {
  geometry: ShardGeometry;
  log: SegmentLog;
  store: PageStore;
  queue: DeviceQueue;
  /** Term written into records; with a single replica it stays constant (replication raises it). */
  term?: number;
  /** Reads waiting for a future LSN at most; more are refused with overloaded. */
  lsnWaitersMax?: number;
  /** Checkpoint after this many records applied since the last image (0 = never automatically). */
  checkpointEveryRecords?: number;
  offload?: PayloadOffload;
}

export interface ShardActorStats {
  volumeId: string;
  shard: number;
  term: number;
  appliedLsn: number;
  firstLsn: number;
  lastLsn: number;
  writes: number;
  pagesWritten: number;
  reads: number;
  pagesRead: number;
  lsnWaiters: number;
  checkpoints: number;
  checkpointLsn: number;
  /** Write batches whose checksum was computed off-thread. */
  offloaded: number;
}

interface LsnWaiter {
  lsn: number;
  deadlineMs: number;
  resolve(): void;
  reject(e: Error): void;
}

export class ShardActor {
  readonly geometry: ShardGeometry;
  private readonly log: SegmentLog;
  private readonly store: PageStore;
  private readonly queue: DeviceQueue;
  private readonly term: number;
  private readonly lsnWaitersMax: number;
  private readonly checkpointEveryRecords: number;
  private waiters: LsnWaiter[] = [];
  private closed = false;
  private checkpointing = false;
  private recordsSinceCheckpoint = 0;
  private readonly offload: PayloadOffload | undefined;
  private readonly counters = { writes: 0, pagesWritten: 0, reads: 0, pagesRead: 0, checkpoints: 0, checkpointLsn: 0, offloaded: 0 };

  constructor(opts: ShardActorOptions) {
    this.geometry = opts.geometry;
    this.log = opts.log;
    this.store = opts.store;
    this.queue = opts.queue;
    this.term = opts.term ?? Math.max(1, opts.log.lastTerm);
    this.lsnWaitersMax = opts.lsnWaitersMax ?? 1024;
    this.checkpointEveryRecords = opts.checkpointEveryRecords ?? 0;
    this.offload = opts.offload;
    assert(this.store.appliedLsn === this.log.lastLsn, 'page store must have replayed the whole log', {
      appliedLsn: this.store.appliedLsn,
      lastLsn: this.log.lastLsn,
    });
  }

  get appliedLsn(): number {
    return this.store.appliedLsn;
  }

  /**
   * Writes pages atomically (one log record); resolves with the record's LSN once it is durable
   * and applied. Page numbers must belong to this shard and data must be one page long each.
   */
  async write(pages: readonly PageData[]): Promise<{ lsn: number }> {
    this.checkOpen();
    if (pages.length === 0) throw new StorageError('bad_request', 'write of zero pages');
    for (let i = 0; i < pages.length; i++) this.checkPage(pages[i]!.page, `pages[${i}].page`);
    for (let i = 0; i < pages.length; i++) {
      const n = pages[i]!.data.length;
      if (n !== this.geometry.pageSize) {
        throw new StorageError('bad_request', `pages[${i}].data: expected ${this.geometry.pageSize} bytes, got ${n}`, {
          path: `pages[${i}].data`,
        });
      }
    }
    const off = this.offload;
    const bytes = pageWriteBytes(this.geometry.pageSize, pages.length);
    const slot = off !== undefined && bytes >= off.bytesMin && bytes <= off.slab.slotBytes ? off.slab.tryAlloc() : -1;
    let lastLsn: number;
    try {
      let payload: Uint8Array;
      let payloadCrc: number | undefined;
      if (slot >= 0) {
        payload = encodePageWrite(this.geometry.pageSize, pages as PageData[], off!.slab.view(slot));
        try {
          payloadCrc = await off!.crc32c(off!.slab.sab, payload.byteOffset, payload.length);
          this.counters.offloaded++;
        } catch {
          // Pool full or gone: the log checksums the payload itself.
        }
      } else {
        payload = encodePageWrite(this.geometry.pageSize, pages as PageData[]);
      }
      const rec = { term: this.term, kind: RecordKind.PageWrite, payload, ...(payloadCrc !== undefined ? { payloadCrc } : {}) };
      lastLsn = (await this.queue.append(this.log, [rec])).lastLsn;
      // Appends resolve in submission order, and LSNs are assigned in submission order, so
      // records reach this point in LSN order; PageStore.apply asserts it. The store keeps no
      // reference to the payload (it reads records back from the log), so the slot can go.
      const record: LogRecord = { term: rec.term, kind: rec.kind, payload, lsn: lastLsn };
      this.store.apply(record);
    } finally {
      if (slot >= 0) off!.slab.free(slot);
    }
    this.counters.writes++;
    this.counters.pagesWritten += pages.length;
    this.recordsSinceCheckpoint++;
    this.wakeWaiters();
    this.maybeCheckpoint();
    return { lsn: lastLsn };
  }

  /**
   * Reads pages as of `lsn` (default: the latest applied). A read at an LSN not applied yet
   * waits until it is or until `deadlineMs` (host clock) passes, then fails with future_lsn.
   */
  async read(pages: readonly number[], opts: { lsn?: number; deadlineMs?: number; nowMs?: number } = {}): Promise<{ pages: Uint8Array[]; lsn: number }> {
    this.checkOpen();
    if (pages.length === 0) throw new StorageError('bad_request', 'read of zero pages');
    for (let i = 0; i < pages.length; i++) this.checkPage(pages[i]!, `pages[${i}]`);
    const lsn = opts.lsn ?? this.store.appliedLsn;
    if (!Number.isSafeInteger(lsn) || lsn < 0) throw new StorageError('bad_request', `lsn: expected a non-negative integer, got ${lsn}`);
    if (lsn > this.store.appliedLsn) await this.waitForLsn(lsn, opts.deadlineMs ?? 0, opts.nowMs ?? 0);
    // Reads go through the device queue so that they take their turn with the device's batches.
    const data = await this.queue.task(() => this.store.getPages(pages as number[], lsn));
    this.counters.reads++;
    this.counters.pagesRead += pages.length;
    return { pages: data, lsn };
  }

  /** Resolves with the latest durable LSN once every write accepted before it is durable. */
  async flush(): Promise<{ lsn: number }> {
    this.checkOpen();
    // Every write is durable before it is applied, so the applied LSN is durable; waiting for
    // one device turn lets writes already queued ahead of this flush complete first.
    await this.queue.task(() => undefined);
    return { lsn: this.store.appliedLsn };
  }

  /** Writes a checkpoint image at the applied LSN and trims the log behind it (retention permitting). */
  async checkpoint(): Promise<{ lsn: number }> {
    this.checkOpen();
    const r = await this.queue.task(() => this.store.checkpoint());
    this.counters.checkpoints++;
    this.counters.checkpointLsn = r.lsn;
    this.recordsSinceCheckpoint = 0;
    return { lsn: r.lsn };
  }

  /** Fails waiting reads whose deadline has passed; the host calls it from its timer. */
  expireWaiters(nowMs: number): void {
    if (this.waiters.length === 0) return;
    const keep: LsnWaiter[] = [];
    for (const w of this.waiters) {
      if (w.deadlineMs <= nowMs) {
        w.reject(new StorageError('future_lsn', `lsn ${w.lsn} was not reached before the deadline (applied ${this.store.appliedLsn})`, {
          lsn: w.lsn,
          appliedLsn: this.store.appliedLsn,
        }));
      } else keep.push(w);
    }
    this.waiters = keep;
  }

  /** Stops taking requests; pending LSN waiters fail with `closed`. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiters) w.reject(new StorageError('closed', `shard ${this.geometry.volumeId}/${this.geometry.shard} closed`));
    this.waiters = [];
  }

  stats(): ShardActorStats {
    return {
      volumeId: this.geometry.volumeId,
      shard: this.geometry.shard,
      term: this.term,
      appliedLsn: this.store.appliedLsn,
      firstLsn: this.log.firstLsn,
      lastLsn: this.log.lastLsn,
      lsnWaiters: this.waiters.length,
      ...this.counters,
    };
  }

  private maybeCheckpoint(): void {
    if (this.checkpointEveryRecords <= 0 || this.checkpointing) return;
    if (this.recordsSinceCheckpoint < this.checkpointEveryRecords) return;
    this.checkpointing = true;
    this.checkpoint()
      .catch(() => {
        // A failed checkpoint loses nothing: the log still holds every record. The next one retries.
      })
      .finally(() => {
        this.checkpointing = false;
      });
  }

  private waitForLsn(lsn: number, deadlineMs: number, nowMs: number): Promise<void> {
    if (deadlineMs <= nowMs) {
      return Promise.reject(new StorageError('future_lsn', `lsn ${lsn} is newer than the applied lsn ${this.store.appliedLsn}`, {
        lsn,
        appliedLsn: this.store.appliedLsn,
      }));
    }
    if (this.waiters.length >= this.lsnWaitersMax) {
      return Promise.reject(new StorageError('overloaded', `too many reads waiting for future LSNs on shard ${this.geometry.shard}`));
    }
    return new Promise<void>((resolve, reject) => this.waiters.push({ lsn, deadlineMs, resolve, reject }));
  }

  private wakeWaiters(): void {
    if (this.waiters.length === 0) return;
    const applied = this.store.appliedLsn;
    const keep: LsnWaiter[] = [];
    for (const w of this.waiters) {
      if (w.lsn <= applied) w.resolve();
      else keep.push(w);
    }
    this.waiters = keep;
  }

  private checkPage(page: number, path: string): void {
    const g = this.geometry;
    if (!Number.isSafeInteger(page) || page < 0 || page >= g.pageCount) {
      throw new StorageError('out_of_range', `${path}: page ${page} is outside the volume (0..${g.pageCount - 1})`, { path, page });
    }
    if (shardOfPage(page, g) !== g.shard) {
      throw new StorageError('bad_request', `${path}: page ${page} belongs to shard ${shardOfPage(page, g)}, not ${g.shard}`, {
        path,
        page,
      });
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new StorageError('closed', `shard ${this.geometry.volumeId}/${this.geometry.shard} is closed`);
  }
}
