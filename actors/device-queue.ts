/**
 * DeviceQueue: the single gate through which a device's file IO passes.
 *
 * - A bounded submission queue (in operations and bytes). A submission that would exceed a bound
 *   is refused at once with StorageError('overloaded'): callers see backpressure instead of an
 *   unbounded queue.
 * - Group commit: appends queued while the previous batch was on the disk form the next batch.
 *   Per log (AppendTarget) a batch is one `write` (one buffer per segment touched) and one
 *   `sync` (one fdatasync), however many submissions it holds.
 * - Coalesced reads: reads of the same file that touch or overlap are merged into one disk read
 *   (bounded by readCoalesceBytesMax) and handed back as views of the merged buffer.
 * - Failure: if a write or fdatasync of a batch fails, EVERY append of that batch is failed with
 *   a typed error, the device is marked failed, and every later submission is refused with
 *   'device_failed'. Nothing that was not synced is ever acknowledged. A task that fails with
 *   'fsync_failed' marks the device failed too.
 *
 * The queue does no IO of its own: appends go through the AppendTarget (a SegmentLog on this
 * device), reads and tasks through the Disk interface. Time comes from an injected clock and the
 * next batch is started by an injected scheduler, so tests drive it deterministically.
 */
import type { Disk, FileHandle } from '../storage-engine/disk';
import { StorageError, assert } from '../storage-engine/errors';
import { RecordKind, type LogRecordInput } from '../storage-engine/record';
import { recordBytes } from '../storage-engine/log-segment';
import { LOG_WRITE_BATCH_BYTES_MAX, LOG_WRITE_BATCH_RECORDS_MAX } from '../storage-engine/log';
import type { StateSink } from '../storage-engine/hard-state-journal';

/** A log on this device; SegmentLog satisfies it. */
export interface AppendTarget {
  /** Writes the records after the current last LSN (not durable); returns the new last LSN. */
  write(records: readonly LogRecordInput[]): number;
  /** Makes everything written durable; throws StorageError('fsync_failed') when it cannot. */
  sync(): void;
  /**
   * Optional: the same, resolving when durable, with the flush off this thread. The queue then
   * answers the batch's appends when it resolves and meanwhile lets the thread work (requests
   * arriving, replies, reads) instead of blocking it in fdatasync. Nothing is written to the
   * target until it settles: the next batch waits.
   */
  syncAsync?(): Promise<void>;
}

/** A monotonic clock in milliseconds (fractions allowed). */
export interface Clock {
  nowMs(): number;
}

export type Scheduler = (run: () => void) => void;

/**
 * Tracing of the queue's batches, injected by the host (this module knows nothing of the
 * tracing library). `capture()` is called when an operation is submitted and its value kept
 * with the operation; a batch runs inside `batch(values of its operations, run)` and each
 * fdatasync inside `sync(run)`. Values are opaque here. Without a tracer nothing of this runs.
 */
export interface QueueTracer {
  capture(): unknown;
  batch<T>(tags: readonly unknown[], run: () => T): T;
  sync<T>(run: () => T): T;
}

export interface DeviceQueueOptions {
  disk: Disk;
  /** Name used in errors and stats, e.g. the device's directory. */
  name?: string;
  /** Queued (not yet started) operations at most; default 4096. */
  queueOpsMax?: number;
  /** Queued payload bytes at most (appends and reads); default 64 MiB. */
  queueBytesMax?: number;
  /** Operations taken into one batch at most; default 1024. */
  batchOpsMax?: number;
  /** Payload bytes taken into one batch at most; default 8 MiB. */
  batchBytesMax?: number;
  /** Largest single merged read; default 256 KiB. */
  readCoalesceBytesMax?: number;
  clock?: Clock;
  /** Starts the next batch; default setImmediate (after the IO that arrived meanwhile). */
  schedule?: Scheduler;
  /** Traces batches and fdatasyncs; default none. */
  tracer?: QueueTracer;
  /**
   * Flush a batch of at least `asyncSyncMinOps` appends with the targets' `syncAsync` when they
   * have one (default true): the thread is free during fdatasync. A smaller batch, or every batch
   * with false, flushes blocking the thread: one fewer thread-pool round trip (~90 µs), the
   * lowest latency when nothing else is waiting, as for a lone writer.
   */
  asyncSync?: boolean;
  /** Appends a batch holds at least to be flushed asynchronously; default 2. */
  asyncSyncMinOps?: number;
  /**
   * Free space the device keeps (see `checkWriteSpace`); default `defaultSpaceReserve` of its
   * size (5 %, at most 1 GiB). 0: page writes are refused only once the disk is full.
   */
  spaceReserveBytes?: number;
}

/**
 * How often a device's free space is read again (statfs), at most: its answer is kept this long,
 * less what the device wrote and queued since (DeviceQueue.space).
 */
export const SPACE_CHECK_MS = 1000;
/**
 * The free space is read again sooner once the device has written a quarter of its margin (free
 * space over the reserve) since the last reading, and at least this many bytes.
 */
export const SPACE_RECHECK_BYTES_MIN = 1024 * 1024;
/** Others' writes to a device's filesystem are measured over at least this long (DeviceQueue.space). */
export const SPACE_RATE_WINDOW_MS = 250;
/** Most free space a device keeps by default. */
export const SPACE_RESERVE_BYTES_MAX_DEFAULT = 1024 * 1024 * 1024;

/** The free space a device of `sizeBytes` keeps by default: 5 % of it, at most 1 GiB. */
export function defaultSpaceReserve(sizeBytes: number): number {
  return Math.min(SPACE_RESERVE_BYTES_MAX_DEFAULT, Math.floor(sizeBytes * 0.05));
}

/**
 * A device's space as its queue last read it. `low`: free space under the reserve (page writes
 * refused); `critical`: under half of it (appends of page writes from leaders refused too).
 */
export interface DeviceSpaceStats {
  freeBytes: number;
  sizeBytes: number;
  reserveBytes: number;
  state: 'ok' | 'low' | 'critical';
}

export interface AppendResult {
  /** LSN of the first record of this submission. */
  firstLsn: number;
  /** LSN of the last record of this submission. */
  lastLsn: number;
}

/** Upper bounds (inclusive) of the batch-size histogram buckets, in operations. */
export const BATCH_OPS_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, Infinity] as const;
/** Upper bounds (inclusive) of the fsync-latency histogram buckets, in milliseconds. */
export const FSYNC_MS_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, Infinity] as const;

export interface DeviceQueueStats {
  name: string;
  state: 'ok' | 'failed' | 'closed';
  failure: string | undefined;
  queueOps: number;
  queueBytes: number;
  queueOpsMax: number;
  queueBytesMax: number;
  batches: number;
  appendOps: number;
  appendRecords: number;
  appendBytes: number;
  /** fdatasync calls made by this queue (one per log per batch). */
  syncs: number;
  syncMsSum: number;
  syncMsMax: number;
  /** Counts per BATCH_OPS_BUCKETS bucket. */
  batchOpsHistogram: number[];
  /** Counts per FSYNC_MS_BUCKETS bucket. */
  syncMsHistogram: number[];
  readOps: number;
  /** Disk reads actually made for readOps (fewer when adjacent reads were merged). */
  diskReads: number;
  readBytes: number;
  tasks: number;
  /** Terms and votes saved through `saveState`, and the batches they were written in (one fdatasync each). */
  stateSaves: number;
  stateBatches: number;
  rejectedOverloaded: number;
  /** How long the batch in progress has run (its writes and fdatasync), in ms; 0 when idle. */
  batchRunningMs: number;
  /** Page writes and appends of page writes refused `no_space` (see `checkWriteSpace`). */
  rejectedNoSpace: number;
  /** The device's space; undefined when its disk does not say. */
  space: DeviceSpaceStats | undefined;
}

interface AppendOp {
  /** The tracer's capture() at submission (only with a tracer). */
  tag?: unknown;
  type: 'append';
  target: AppendTarget;
  records: readonly LogRecordInput[];
  bytes: number;
  resolve(r: AppendResult): void;
  reject(e: Error): void;
}

interface ReadOp {
  /** The tracer's capture() at submission (only with a tracer). */
  tag?: unknown;
  type: 'read';
  fh: FileHandle;
  offset: number;
  length: number;
  bytes: number;
  resolve(b: Uint8Array): void;
  reject(e: Error): void;
}

interface TaskOp {
  /** The tracer's capture() at submission (only with a tracer). */
  tag?: unknown;
  type: 'task';
  run(): unknown;
  bytes: number;
  resolve(v: unknown): void;
  reject(e: Error): void;
}

interface StateOp {
  /** The tracer's capture() at submission (only with a tracer). */
  tag?: unknown;
  type: 'state';
  sink: StateSink;
  key: string;
  value: unknown;
  check: (() => void) | undefined;
  bytes: number;
  resolve(v: unknown): void;
  reject(e: Error): void;
}

type Op = AppendOp | ReadOp | TaskOp | StateOp;

const performanceClock: Clock = { nowMs: () => performance.now() };

function positiveInt(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v <= 0) {
    throw new StorageError('bad_request', `${name} must be a positive integer, got ${String(value)}`);
  }
  return v;
}

function bucketIndex(buckets: readonly number[], value: number): number {
  let i = 0;
  while (value > buckets[i]!) i++;
  return i;
}

export class DeviceQueue {
  readonly name: string;
  private readonly disk: Disk;
  private readonly clock: Clock;
  private readonly schedule: Scheduler;
  private readonly queueOpsMax: number;
  private readonly queueBytesMax: number;
  private readonly batchOpsMax: number;
  private readonly batchBytesMax: number;
  private readonly readCoalesceBytesMax: number;
  private readonly tracer: QueueTracer | undefined;
  private readonly asyncSync: boolean;
  private readonly asyncSyncMinOps: number;
  /** flushNow runs: every flush blocks. */
  private forceSync = false;

  private queue: Op[] = [];
  private queueHead = 0;
  private queueBytes = 0;
  /** Of `queueBytes`, those of appends: records that will take space (DeviceQueue.space). */
  private queuedAppendBytes = 0;
  private scheduled = false;
  private running = false;
  /** When the batch in progress started (clock), while `running`. */
  private batchStartMs = 0;
  private failure: StorageError | undefined;
  private closed = false;
  private idleWaiters: Array<() => void> = [];

  private readonly counters = {
    batches: 0,
    appendOps: 0,
    appendRecords: 0,
    appendBytes: 0,
    syncs: 0,
    syncMsSum: 0,
    syncMsMax: 0,
    readOps: 0,
    diskReads: 0,
    readBytes: 0,
    tasks: 0,
    stateSaves: 0,
    stateBatches: 0,
    rejectedOverloaded: 0,
    rejectedNoSpace: 0,
  };
  private readonly spaceReserveBytes: number | undefined;
  /**
   * The disk's space as last read, when (clock), the disk's bytes written then, and after how
   * many more bytes written it is read again.
   */
  private spaceRead:
    | {
        freeBytes: number;
        sizeBytes: number;
        reserveBytes: number;
        atMs: number;
        written: number;
        recheckBytes: number;
        /** What others write to the filesystem, as the readings found, and the reading it is measured from. */
        othersBytesPerMs: number;
        rateFrom: { atMs: number; freeBytes: number; written: number };
      }
    | undefined;
  private readonly batchOpsHistogram = new Array<number>(BATCH_OPS_BUCKETS.length).fill(0);
  private readonly syncMsHistogram = new Array<number>(FSYNC_MS_BUCKETS.length).fill(0);

  constructor(opts: DeviceQueueOptions) {
    this.disk = opts.disk;
    this.name = opts.name ?? 'device';
    this.clock = opts.clock ?? performanceClock;
    this.schedule = opts.schedule ?? ((run) => setImmediate(run));
    this.queueOpsMax = positiveInt(opts.queueOpsMax, 4096, 'queueOpsMax');
    this.queueBytesMax = positiveInt(opts.queueBytesMax, 64 * 1024 * 1024, 'queueBytesMax');
    this.batchOpsMax = positiveInt(opts.batchOpsMax, 1024, 'batchOpsMax');
    this.batchBytesMax = positiveInt(opts.batchBytesMax, 8 * 1024 * 1024, 'batchBytesMax');
    this.readCoalesceBytesMax = positiveInt(opts.readCoalesceBytesMax, 256 * 1024, 'readCoalesceBytesMax');
    this.tracer = opts.tracer;
    this.asyncSync = opts.asyncSync ?? true;
    this.asyncSyncMinOps = positiveInt(opts.asyncSyncMinOps, 2, 'asyncSyncMinOps');
    if (opts.spaceReserveBytes !== undefined && !(Number.isSafeInteger(opts.spaceReserveBytes) && opts.spaceReserveBytes >= 0)) {
      throw new StorageError('bad_request', `spaceReserveBytes must be a non-negative integer, got ${String(opts.spaceReserveBytes)}`);
    }
    this.spaceReserveBytes = opts.spaceReserveBytes;
  }

  /**
   * The device's space, so that every write may ask: the filesystem's free space as last read
   * (a statfs), less the bytes the device wrote since and those of the appends queued, so that
   * no burst of writes between two readings runs through the reserve. Read
   * again after SPACE_CHECK_MS, or once the device wrote a quarter of its margin over the
   * reserve since (at least SPACE_RECHECK_BYTES_MIN). Bytes that overwrite (a log's records over
   * the zeros written ahead of them) are counted as if they took space: an estimate under the
   * truth, until the next reading. Others writing to the same filesystem (the other hosts of a
   * node, each with its own device there; the other nodes of a dev cluster; anything else) are
   * not in the device's own count: when the free space fell by more than the device wrote over
   * at least SPACE_RATE_WINDOW_MS, the rest is taken as their rate, and until the next reading
   * that rate, times the time since, is taken off too (a rate found lower halves the old one
   * only, so that a burst of theirs is not forgotten at once). Undefined when the disk does not
   * say (no `space`, a size of 0; a failed statfs is asked again at the next call).
   */
  space(): DeviceSpaceStats | undefined {
    if (this.disk.space === undefined) return undefined;
    const now = this.clock.nowMs();
    let r = this.spaceRead;
    let written: number;
    try {
      written = this.disk.bytesWritten?.() ?? 0;
      if (r === undefined || now - r.atMs >= SPACE_CHECK_MS || written - r.written + othersSince(r, now) >= r.recheckBytes) {
        const { freeBytes, sizeBytes } = this.disk.space();
        // A filesystem that reports no size (some pseudo and network ones) says nothing of its space.
        if (!(sizeBytes > 0)) {
          this.spaceRead = undefined;
          return undefined;
        }
        // Others' rate, over at least SPACE_RATE_WINDOW_MS: a short one would make a burst a rate.
        let othersBytesPerMs = r?.othersBytesPerMs ?? 0;
        let rateFrom = r?.rateFrom ?? { atMs: now, freeBytes, written };
        if (now - rateFrom.atMs >= SPACE_RATE_WINDOW_MS) {
          const others = rateFrom.freeBytes - freeBytes - (written - rateFrom.written);
          othersBytesPerMs = Math.max(others > 0 ? others / (now - rateFrom.atMs) : 0, othersBytesPerMs / 2);
          rateFrom = { atMs: now, freeBytes, written };
        }
        const reserveBytes = this.spaceReserveBytes ?? defaultSpaceReserve(sizeBytes);
        const recheckBytes = Math.max(SPACE_RECHECK_BYTES_MIN, Math.floor((freeBytes - reserveBytes) / 4));
        r = this.spaceRead = { freeBytes, sizeBytes, reserveBytes, atMs: now, written, recheckBytes, othersBytesPerMs, rateFrom };
      }
    } catch {
      this.spaceRead = undefined;
      return undefined;
    }
    const freeBytes = Math.max(0, r.freeBytes - (written - r.written) - othersSince(r, now) - this.queuedAppendBytes);
    const { sizeBytes, reserveBytes } = r;
    const state = freeBytes >= reserveBytes && freeBytes > 0 ? 'ok' : freeBytes >= reserveBytes / 2 && freeBytes > 0 ? 'low' : 'critical';
    return { freeBytes, sizeBytes, reserveBytes, state };
  }

  /** The next `space()` reads the disk again (a test that changes what the disk says). */
  forgetSpace(): void {
    this.spaceRead = undefined;
  }

  /**
   * Refuses (`no_space`) a client's page write while the device's free space is under its
   * reserve: the device keeps room for what frees space (checkpoints, which write an image
   * before they let the log and older images go) and for the writes already taken. Ranges made
   * zeros, deletes and reads go on: they are what frees it.
   */
  checkWriteSpace(): void {
    const s = this.space();
    if (s === undefined || s.state === 'ok') return;
    this.counters.rejectedNoSpace++;
    throw noSpace(this.name, s, 'page writes are refused');
  }

  /** Queues records to append to `target`; resolves once they are durable (after fdatasync). */
  append(target: AppendTarget, records: readonly LogRecordInput[]): Promise<AppendResult> {
    if (records.length === 0) {
      return Promise.reject(new StorageError('bad_request', 'append of zero records'));
    }
    const bytes = appendBytes(records);
    return new Promise<AppendResult>((resolve, reject) => {
      this.submit({ type: 'append', target, records, bytes, resolve, reject });
    });
  }

  /**
   * Throws what `append(target, records)` would be refused with now (failed, closed, too large
   * or full), else returns: an append called right after, in the same turn, is queued. A replica
   * asks before it gives the records LSNs, so that a refused append never leaves its LSNs ahead
   * of its log.
   */
  checkAppend(records: readonly LogRecordInput[], spaceExempt = false): void {
    const refusal = this.refusal(appendBytes(records));
    if (refusal !== undefined) throw refusal;
    // Under half the reserve, a follower takes no more page data from its leaders (they send it
    // again later, as after a full queue); records without page data still go in, and so do
    // those of a shard exempt from it (the catalog's: `spaceExempt`).
    if (!spaceExempt && records.some((r) => r.kind === RecordKind.PageWrite)) {
      const s = this.space();
      if (s !== undefined && s.state === 'critical') {
        this.counters.rejectedNoSpace++;
        throw noSpace(this.name, s, 'appends of page writes are refused');
      }
    }
  }

  /**
   * Refuses (`no_space`) `bytes` more to be written at once when they would take the device's
   * free space under half its reserve, where appends of page writes stop too: an image a leader
   * sends to a replica behind, written whole before the log and images it replaces are let go.
   */
  checkRoomFor(bytes: number, what: string): void {
    const s = this.space();
    if (s === undefined || s.freeBytes - bytes >= s.reserveBytes / 2) return;
    this.counters.rejectedNoSpace++;
    throw noSpace(this.name, s, what, bytes);
  }

  /**
   * Queues a read of `length` bytes at `offset` of an open file; resolves with exactly the bytes
   * read (shorter at end of file). The result may be a view into a larger merged read buffer.
   */
  read(fh: FileHandle, offset: number, length: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length <= 0) {
      return Promise.reject(new StorageError('bad_request', `bad read range offset=${offset} length=${length}`));
    }
    if (length > this.readCoalesceBytesMax) {
      return Promise.reject(
        new StorageError('too_large', `read of ${length} bytes exceeds ${this.readCoalesceBytesMax}`),
      );
    }
    return new Promise<Uint8Array>((resolve, reject) => {
      this.submit({ type: 'read', fh, offset, length, bytes: length, resolve, reject });
    });
  }

  /**
   * Runs other device IO (an image, a metadata file, a trim) in queue order, between batches, so
   * that all IO of the device stays on one ordered path. `bytes` counts against the queue bound.
   */
  task<T>(run: () => T, bytes = 0): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.submit({ type: 'task', run, bytes, resolve: resolve as (v: unknown) => void, reject });
    });
  }

  /**
   * Saves a replica's term and vote (`value`, under its `key`) in `sink`, in queue order as a
   * task is, but in one batch with the saves queued right behind it to the same sink: one write
   * and one fdatasync for all of them (a device's hard-state journal). `check` runs just before
   * the batch is written; when it throws, that save is refused with its error and not written.
   * Resolves once the save is durable; a failed fdatasync fails the device, as a task's does.
   */
  saveState(sink: StateSink, key: string, value: unknown, check?: () => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.submit({ type: 'state', sink, key, value, check, bytes: 0, resolve: resolve as (v: unknown) => void, reject });
    });
  }

  /** Processes queued batches synchronously until the queue is empty (for tests and shutdown). */
  flushNow(): void {
    assert(!this.running, 'flushNow while a batch waits for its flush');
    this.forceSync = true;
    try {
      while (this.pending() > 0) this.runBatch();
    } finally {
      this.forceSync = false;
    }
  }

  /** Stops accepting work and resolves once everything queued has been processed. */
  async drain(): Promise<void> {
    this.closed = true;
    if (this.pending() === 0 && !this.running) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  get failed(): boolean {
    return this.failure !== undefined;
  }

  stats(): DeviceQueueStats {
    return {
      name: this.name,
      state: this.failure ? 'failed' : this.closed ? 'closed' : 'ok',
      failure: this.failure?.message,
      queueOps: this.pending(),
      queueBytes: this.queueBytes,
      queueOpsMax: this.queueOpsMax,
      queueBytesMax: this.queueBytesMax,
      ...this.counters,
      batchRunningMs: this.running ? this.clock.nowMs() - this.batchStartMs : 0,
      batchOpsHistogram: [...this.batchOpsHistogram],
      syncMsHistogram: [...this.syncMsHistogram],
      space: this.space(),
    };
  }

  private pending(): number {
    return this.queue.length - this.queueHead;
  }

  /** Why an op of `bytes` would be refused now; undefined when it would be queued. */
  private refusal(bytes: number): StorageError | undefined {
    if (this.failure) {
      return new StorageError('device_failed', `device ${this.name} failed earlier: ${this.failure.message}`, { device: this.name });
    }
    if (this.closed) return new StorageError('closed', `device ${this.name} is shutting down`);
    if (bytes > this.queueBytesMax) {
      // More than the whole queue holds: waiting cannot help.
      return new StorageError('too_large', `${bytes} bytes for device ${this.name}, whose queue holds at most ${this.queueBytesMax}`, {
        bytes,
        queueBytesMax: this.queueBytesMax,
      });
    }
    if (this.pending() + 1 > this.queueOpsMax || this.queueBytes + bytes > this.queueBytesMax) {
      this.counters.rejectedOverloaded++;
      return new StorageError('overloaded', `device ${this.name} queue is full`, {
        device: this.name,
        queueOps: this.pending(),
        queueBytes: this.queueBytes,
        queueOpsMax: this.queueOpsMax,
        queueBytesMax: this.queueBytesMax,
      });
    }
    return undefined;
  }

  private submit(op: Op): void {
    const refusal = this.refusal(op.bytes);
    if (refusal !== undefined) {
      op.reject(refusal);
      return;
    }
    if (this.tracer) op.tag = this.tracer.capture();
    this.queue.push(op);
    this.queueBytes += op.bytes;
    if (op.type === 'append') this.queuedAppendBytes += op.bytes;
    this.kick();
  }

  private kick(): void {
    // While a batch waits for its flush the next one gathers; the flush's end kicks.
    if (this.scheduled || this.running || this.pending() === 0) return;
    this.scheduled = true;
    this.schedule(() => {
      this.scheduled = false;
      this.runBatch();
      this.kick();
    });
  }

  /** Takes ops from the head of the queue within the batch bounds (always at least one). */
  private takeBatch(): Op[] {
    const batch: Op[] = [];
    let bytes = 0;
    while (this.queueHead < this.queue.length && batch.length < this.batchOpsMax) {
      const op = this.queue[this.queueHead]!;
      if (batch.length > 0 && bytes + op.bytes > this.batchBytesMax) break;
      // A task runs alone, in order: it ends the batch before it, and a batch after it. Saves of
      // state do too, but in one batch with the saves to the same sink right behind them.
      if (op.type === 'task' && batch.length > 0) break;
      if (batch.length > 0 && (op.type === 'state' || batch[0]!.type === 'state')) {
        const first = batch[0]!;
        if (!(op.type === 'state' && first.type === 'state' && op.sink === first.sink)) break;
      }
      this.queue[this.queueHead] = undefined as never;
      this.queueHead++;
      batch.push(op);
      bytes += op.bytes;
      if (op.type === 'append') this.queuedAppendBytes -= op.bytes;
      if (op.type === 'task') break;
    }
    this.queueBytes -= bytes;
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
    return batch;
  }

  private runBatch(): void {
    if (this.pending() === 0) return;
    assert(!this.running, 'device queue batch re-entered');
    this.running = true;
    this.batchStartMs = this.clock.nowMs();
    let flushing: Promise<void> | undefined;
    try {
      const batch = this.takeBatch();
      if (this.failure) {
        for (const op of batch) op.reject(new StorageError('device_failed', `device ${this.name} failed: ${this.failure.message}`));
        return;
      }
      this.counters.batches++;
      this.batchOpsHistogram[bucketIndex(BATCH_OPS_BUCKETS, batch.length)]!++;
      flushing = this.tracer ? this.tracer.batch(batch.map((op) => op.tag), () => this.runOps(batch)) : this.runOps(batch);
    } finally {
      if (flushing === undefined) this.endBatch();
    }
    // Settles (never rejects) once the batch's appends are answered; the next batch starts then.
    if (flushing !== undefined) {
      void flushing.then(() => {
        this.endBatch();
        this.kick();
      });
    }
  }

  private endBatch(): void {
    this.running = false;
    if (this.pending() === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Runs a batch; a promise when its appends wait for an asynchronous flush. */
  private runOps(batch: readonly Op[]): Promise<void> | undefined {
    if (batch[0]?.type === 'state') {
      this.runStates(batch as StateOp[]);
      return undefined;
    }
    const appends: AppendOp[] = [];
    const reads: ReadOp[] = [];
    for (const op of batch) {
      if (op.type === 'append') appends.push(op);
      else if (op.type === 'read') reads.push(op);
      else if (op.type === 'task') this.runTask(op);
    }
    const flushing = appends.length > 0 ? this.runAppends(appends) : undefined;
    // Reads do not wait for the flush: what they read is written already.
    if (reads.length > 0) this.runReads(reads);
    return flushing;
  }

  private runTask(op: TaskOp): void {
    this.counters.tasks++;
    try {
      op.resolve(op.run());
    } catch (e) {
      op.reject(this.taskFailed(e));
    }
  }

  /**
   * The error of a task, or of a batch of saves, that threw. A failed fsync (a term and vote
   * saved, an image, a trim, a truncation) leaves the device's state unknown, as a failed flush
   * of a batch does: the device is fenced, whether or not the caller handles the error (a
   * step-down's save of its new term is not awaited), so that nothing is acknowledged on it
   * until its host reopens it. Other errors (a full disk, a closed shard) fail that work alone.
   */
  private taskFailed(e: unknown): Error {
    if (e instanceof StorageError && e.code === 'fsync_failed') this.fail(e);
    return e instanceof Error ? e : new Error(String(e));
  }

  /** Writes a batch of saves to their sink in one step (takeBatch gathers only saves to one sink). */
  private runStates(ops: readonly StateOp[]): void {
    const taken: StateOp[] = [];
    for (const op of ops) {
      try {
        op.check?.();
        taken.push(op);
      } catch (e) {
        op.reject(e instanceof Error ? e : new Error(String(e)));
      }
    }
    if (taken.length === 0) return;
    try {
      taken[0]!.sink.saveMany(taken.map((op) => ({ key: op.key, value: op.value })));
    } catch (e) {
      const err = this.taskFailed(e);
      for (const op of taken) op.reject(err);
      return;
    }
    this.counters.stateSaves += taken.length;
    this.counters.stateBatches++;
    for (const op of taken) op.resolve(undefined);
  }

  private runAppends(appends: AppendOp[]): Promise<void> | undefined {
    // Group by target, keeping submission order within each target.
    const groups = new Map<AppendTarget, AppendOp[]>();
    for (const op of appends) {
      const g = groups.get(op.target);
      if (g) g.push(op);
      else groups.set(op.target, [op]);
    }
    const results: Array<[AppendOp, AppendResult]> = [];
    // Targets written (to be flushed), and the appends of closed targets, already answered.
    const written: AppendTarget[] = [];
    const closed = new Set<AppendOp>();
    try {
      for (const [target, ops] of groups) {
        const done: Array<[AppendOp, AppendResult]> = [];
        try {
          // One write per target, or as few as the log's bounds on one write allow (records and
          // bytes; appends are not cut), all made durable by the one flush below.
          let k = 0;
          while (k < ops.length) {
            const from = k;
            const records: LogRecordInput[] = [];
            let bytes = 0;
            for (; k < ops.length; k++) {
              const op = ops[k]!;
              const opBytes = loggedBytes(op.records);
              if (k > from && (records.length + op.records.length > LOG_WRITE_BATCH_RECORDS_MAX || bytes + opBytes > LOG_WRITE_BATCH_BYTES_MAX)) break;
              for (const r of op.records) records.push(r);
              bytes += opBytes;
            }
            let next = target.write(records) - records.length + 1;
            for (let j = from; j < k; j++) {
              const op = ops[j]!;
              done.push([op, { firstLsn: next, lastLsn: next + op.records.length - 1 }]);
              next += op.records.length;
            }
          }
        } catch (e) {
          // Its shard was closed (or deleted) while these waited: they fail alone, the device
          // and the other targets of the batch are fine.
          if (e instanceof StorageError && e.code === 'closed') {
            for (const op of ops) {
              closed.add(op);
              op.reject(e);
            }
            continue;
          }
          throw e;
        }
        written.push(target);
        for (const [op, r] of done) {
          results.push([op, r]);
          this.counters.appendOps++;
          this.counters.appendRecords += op.records.length;
          this.counters.appendBytes += op.bytes;
        }
      }
      if (written.length === 0) return undefined;
      const targets = written;
      // A batch of several appends means requests arrive faster than flushes end: free the
      // thread during this one. A lone append (one writer waiting) flushes without the hop.
      const flushAsync = this.asyncSync && !this.forceSync && appends.length >= this.asyncSyncMinOps && targets.every((t) => t.syncAsync !== undefined);
      if (flushAsync) {
        return this.flushAsync(targets).then(
          (closedMeanwhile) => {
            for (const [op, r] of results) {
              const err = closedMeanwhile.get(op.target);
              if (err !== undefined) op.reject(err);
              else op.resolve(r);
            }
          },
          (e: unknown) => this.failAppends(appends.filter((op) => !closed.has(op)), e),
        );
      }
      for (const target of targets) {
        const t0 = this.clock.nowMs();
        this.counters.syncs++;
        if (this.tracer) this.tracer.sync(() => target.sync());
        else target.sync();
        this.countSync(this.clock.nowMs() - t0);
      }
    } catch (e) {
      this.failAppends(appends.filter((op) => !closed.has(op)), e);
      return undefined;
    }
    for (const [op, r] of results) op.resolve(r);
    return undefined;
  }

  /**
   * The targets' syncAsync, all at once (counted and traced like blocking flushes): their
   * fdatasyncs run side by side on the OS thread pool, and the filesystem makes concurrent ones
   * durable together (measured here: the logs of 8 shards 1.5 ms at once against 3.7–5.3 ms one
   * after the other; of 3, 0.7 against 1.3 ms). Every flush is waited for. A target whose shard
   * was closed while they ran (its replica destroyed or stopped: this thread runs meanwhile)
   * fails its appends alone, with the error returned for it, and the device and the other
   * targets are fine; any other failure fails the batch.
   */
  private async flushAsync(targets: readonly AppendTarget[]): Promise<Map<AppendTarget, StorageError>> {
    const closed = new Map<AppendTarget, StorageError>();
    const settled = await Promise.allSettled(
      targets.map(async (target) => {
        const t0 = this.clock.nowMs();
        this.counters.syncs++;
        await (this.tracer ? this.tracer.sync(() => target.syncAsync!()) : target.syncAsync!());
        this.countSync(this.clock.nowMs() - t0);
      }),
    );
    let failure: { reason: unknown } | undefined;
    settled.forEach((s, i) => {
      if (s.status === 'fulfilled') return;
      if (s.reason instanceof StorageError && s.reason.code === 'closed') closed.set(targets[i]!, s.reason);
      else failure ??= { reason: s.reason };
    });
    if (failure !== undefined) throw failure.reason;
    return closed;
  }

  private countSync(ms: number): void {
    this.counters.syncMsSum += ms;
    if (ms > this.counters.syncMsMax) this.counters.syncMsMax = ms;
    this.syncMsHistogram[bucketIndex(FSYNC_MS_BUCKETS, ms)]!++;
  }

  /** A failed write or flush: the device is fenced and none of the batch's appends is acknowledged. */
  private failAppends(appends: readonly AppendOp[], e: unknown): void {
    this.fail(e);
    const err = new StorageError(
      e instanceof StorageError && e.code === 'fsync_failed' ? 'fsync_failed' : 'device_failed',
      `append batch on device ${this.name} failed, nothing of it is acknowledged: ${(e as Error).message}`,
      { device: this.name },
      e,
    );
    for (const op of appends) op.reject(err);
  }

  private runReads(reads: ReadOp[]): void {
    reads.sort((a, b) => (a.fh - b.fh) || (a.offset - b.offset));
    let i = 0;
    while (i < reads.length) {
      const first = reads[i]!;
      let end = first.offset + first.length;
      let j = i + 1;
      while (j < reads.length) {
        const r = reads[j]!;
        if (r.fh !== first.fh || r.offset > end) break;
        const newEnd = Math.max(end, r.offset + r.length);
        if (newEnd - first.offset > this.readCoalesceBytesMax) break;
        end = newEnd;
        j++;
      }
      const buf = new Uint8Array(end - first.offset);
      let n: number;
      try {
        this.counters.diskReads++;
        n = this.disk.read(first.fh, buf, first.offset);
      } catch (e) {
        // A read error fails the reads that needed it; it does not fail the device (a peer or a
        // rebuild can still serve that data, and writes may still succeed).
        const err = e instanceof Error ? e : new Error(String(e));
        for (let k = i; k < j; k++) reads[k]!.reject(err);
        i = j;
        continue;
      }
      this.counters.readBytes += n;
      for (let k = i; k < j; k++) {
        const r = reads[k]!;
        this.counters.readOps++;
        const start = r.offset - first.offset;
        r.resolve(buf.subarray(Math.min(start, n), Math.min(start + r.length, n)));
      }
      i = j;
    }
  }

  private fail(e: unknown): void {
    if (this.failure) return;
    const msg = e instanceof Error ? e.message : String(e);
    this.failure = new StorageError('device_failed', msg, { device: this.name }, e);
  }
}

/** What an append counts against the queue's bytes bound: its payloads. */
/** Bytes `records` take in a log (headers and alignment included), as the log bounds one write. */
function loggedBytes(records: readonly LogRecordInput[]): number {
  let bytes = 0;
  for (const r of records) bytes += recordBytes(r.payload.length);
  return bytes;
}

function appendBytes(records: readonly LogRecordInput[]): number {
  let bytes = 0;
  for (const r of records) bytes += r.payload.length;
  return bytes;
}

/**
 * What others wrote to the device's filesystem since its last reading, at the rate the readings
 * found (DeviceQueue.space); a reading is at most SPACE_CHECK_MS old, so this is bounded.
 */
function othersSince(r: { atMs: number; othersBytesPerMs: number }, nowMs: number): number {
  return Math.floor(r.othersBytesPerMs * Math.min(Math.max(0, nowMs - r.atMs), SPACE_CHECK_MS));
}

/** The refusal of a device short of space. */
function noSpace(name: string, s: DeviceSpaceStats, what: string, bytes?: number): StorageError {
  const size = (n: number): string => (n < 1024 * 1024 ? `${n} bytes` : n < 1024 ** 3 ? `${(n / 1024 ** 2).toFixed(1)} MiB` : `${(n / 1024 ** 3).toFixed(1)} GiB`);
  const freed = 'until space is freed (pages made zeros, then checkpointed; volumes deleted; replicas moved)';
  if (bytes !== undefined) {
    return new StorageError(
      'no_space',
      `device ${name} has ${size(s.freeBytes)} free, with a reserve of ${size(s.reserveBytes)}: ${what} of ${size(bytes)} would take it under half of that, and is refused ${freed}`,
      { device: name, freeBytes: s.freeBytes, reserveBytes: s.reserveBytes, bytes },
    );
  }
  return new StorageError(
    'no_space',
    `device ${name} has ${size(s.freeBytes)} free, under ${s.state === 'critical' ? 'half of ' : ''}its reserve of ${size(s.reserveBytes)}: ${what} ${freed}`,
    { device: name, freeBytes: s.freeBytes, reserveBytes: s.reserveBytes },
  );
}
