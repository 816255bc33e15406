/**
 * SegmentLog: a shard's append-only log of records, the source of truth of Strata.
 *
 * Records live in segment files in one directory (format: log-segment.ts and
 * docs/storage-format.md). The log keeps an in-memory index per segment (offsets, payload
 * lengths, terms in typed arrays) so that `read` and `termAt` are seeks, not scans.
 *
 * Durability: `write` only hands bytes to the disk; `sync` makes them durable. A failed write or
 * fsync puts the log in a failed state for good (every later mutation throws 'device_failed' and
 * reads are limited to what was synced): reopening it is the only way on, and recovery decides
 * from what is on disk.
 *
 * Small writes are followed by zeros written ahead (LOG_PREALLOC_BYTES), so that most flushes
 * overwrite blocks the file already has and need no filesystem journal commit.
 *
 * Recovery (`open`) keeps exactly the longest valid prefix. Zeros after the last record of the last
 * segment are the space written ahead and stay. A torn tail (nothing valid after the first bad
 * record, and that record not one written whole that rotted since: `rottedRecord`) is truncated
 * durably. Damage with valid data after it is corruption: nothing is
 * truncated or deleted, `corruption` describes it, the log serves reads of the valid prefix and
 * refuses writes until `reset` (the tool of a repair from a peer) replaces it.
 *
 * All IO goes through the synchronous Disk interface; the log is not thread-safe and is meant to
 * be driven by one DeviceQueue.
 */
import { discardFile, joinPath, parentDir, removeDiscarded, removeInBackground, zeroSectorWithin, type Disk, type FileHandle } from './disk';
import { assert, CorruptionError, StorageError, type CorruptionReport } from './errors';
import {
  decodeSegmentHeader,
  encodeRecord,
  encodeSegmentHeader,
  getU64,
  LOG_VALUE_MAX,
  parseSegmentName,
  RECORD_ALIGN_BYTES,
  RECORD_BYTES_MAX,
  RECORD_HEADER_BYTES,
  RECORD_KIND_MAX,
  LOG_BLOCK_BYTES,
  encodePadding,
  isPadding,
  judgeZeroCensus,
  recordBytes,
  recordCrc,
  recordHeaderCheck,
  RECORD_HEADER_CHECK_OFFSET,
  SEGMENT_BYTES_LIMIT,
  SEGMENT_BYTES_MAX_DEFAULT,
  SEGMENT_BYTES_MIN,
  SEGMENT_HEADER_BYTES,
  SegmentIndex,
  segmentName,
  viewOf,
  type SegmentHeader,
} from './log-segment';
import { RECORD_PAYLOAD_BYTES_MAX, type LogRecord, type LogRecordInput } from './record';

export { LOG_FORMAT_VERSION, SEGMENT_BYTES_MAX_DEFAULT, SEGMENT_BYTES_MIN, SEGMENT_BYTES_LIMIT } from './log-segment';

/** Options of `SegmentLog.open`. */
export interface LogOptions {
  /** Directory of the log's segment files (a disk path). */
  dir: string;
  /** Largest segment file in bytes for new segments (default 64 MiB, at least 4 KiB, at most 1 GiB). */
  segmentBytesMax?: number;
  /** For a NEW log: LSN of its first record (default 1). Ignored when the log exists. */
  firstLsn?: number;
  /** For a NEW log: term of record firstLsn-1 (default 0). Ignored when the log exists. */
  prevTerm?: number;
  /**
   * Called by recovery for each record it finds valid, in LSN order, as it scans the segments
   * (it reads them all to check their checksums): for what a reader of the log needs to know of
   * every record at open without a second read. `payload` is a view of recovery's buffer, valid
   * only during the call. Every record passed is in the log when `open` returns (the valid
   * prefix); whoever cuts records after that (`truncateSuffix`, `reset`) leaves their ids out.
   */
  onRecovered?: (lsn: number, term: number, kind: number, payload: Uint8Array) => void;
}

/** Options of `SegmentLog.read`. */
export interface LogReadOptions {
  /** Stop before the payload total would exceed this (always at least one record); default 4 MiB. */
  bytesMax?: number;
  /**
   * The CRC-32C of a record's payload as read, made by the caller from the payload (of a record
   * of `kind`, before it is checked: it may be damaged or malformed), or undefined to leave it to
   * the log. The record is checked against it combined with its header's, instead of with a pass
   * of the log's own over the payload: a caller that keeps what it made the checksum from (a page
   * store, each page's checksum) then holds checksums that the record's check vouched for.
   */
  payloadCrc?: (kind: number, payload: Uint8Array) => number | undefined;
}

/** Counters and positions of a log. */
export interface LogStats {
  segments: number;
  /** Bytes in use in all segments (headers and records). */
  bytes: number;
  firstLsn: number;
  lastLsn: number;
  syncedLsn: number;
  /** Disk writes of record data. */
  writes: number;
  /** fdatasync calls on segment data (sync, roll-over, truncateSuffix). */
  syncs: number;
  /**
   * Trimmed segments whose removal in the background failed (`discardFile`); each is removed
   * again when the log is next opened.
   */
  discardFailures: number;
}

/** Largest encoded size of one `write` batch. */
export const LOG_WRITE_BATCH_BYTES_MAX = 64 * 1024 * 1024;
/** Most records in one `write` batch. */
export const LOG_WRITE_BATCH_RECORDS_MAX = 65536;
/** Largest encoding buffer kept between writes (one per thread); bigger batches get a buffer of their own. */
export const LOG_SCRATCH_BYTES_KEPT_MAX = 8 * 1024 * 1024;

/**
 * The encoding buffer the logs of this thread share (a fresh one per write costs an allocation
 * and its page faults). A write encodes its batch into it and writes it before it returns, so
 * one buffer serves every log: kept per log, it held up to LOG_SCRATCH_BYTES_KEPT_MAX for each
 * shard that had once written a large batch (2 GiB for 256 such shards on a host).
 */
let sharedEncodeBuf = new Uint8Array(0);

function encodeScratch(bytes: number): Uint8Array {
  if (bytes > LOG_SCRATCH_BYTES_KEPT_MAX) return new Uint8Array(bytes);
  if (sharedEncodeBuf.length < bytes) {
    let size = Math.max(64 * 1024, sharedEncodeBuf.length);
    while (size < bytes) size *= 2;
    sharedEncodeBuf = new Uint8Array(Math.min(size, LOG_SCRATCH_BYTES_KEPT_MAX));
  }
  return sharedEncodeBuf.subarray(0, bytes);
}

/** Bytes of the encoding buffer this thread's logs share (for tests and memory accounting). */
export function logEncodeScratchBytes(): number {
  return sharedEncodeBuf.length;
}

/**
 * The read buffer of recovery, which the opens of this thread's logs share: a fresh one per open
 * (as large as the last segment, up to LOG_RECOVERY_CHUNK_BYTES, so 1 MiB and more for a segment
 * with its zeros written ahead) took an allocation and a page fault per 4 KiB read into it, about
 * a third of a replica's open when a node reopens hundreds. An open runs from start to end on its
 * thread, so one buffer serves them in turn; an open started during another (nothing does so
 * today) takes a buffer of its own (`recoveryScratchHeld`). Kept for the thread's life: at most
 * LOG_RECOVERY_CHUNK_BYTES, of which only what was read into is resident.
 */
let sharedRecoveryBuf: Uint8Array | undefined;
let recoveryScratchHeld = false;
let recoveryScratchAllocations = 0;

/** Bytes of the recovery buffer this thread's logs share, and buffers recovery allocated on this thread (for tests and memory accounting). */
export function logRecoveryScratch(): { bytes: number; allocations: number } {
  return { bytes: sharedRecoveryBuf?.length ?? 0, allocations: recoveryScratchAllocations };
}
/** Default `bytesMax` of `read`. */
export const LOG_READ_BYTES_MAX_DEFAULT = 4 * 1024 * 1024;
/** Largest `bytesMax` a `read` may ask for. */
export const LOG_READ_BYTES_LIMIT = 64 * 1024 * 1024;
/** Most records one `read` returns. */
export const LOG_READ_RECORDS_MAX = 65536;
/** Bytes per disk read during recovery. */
export const LOG_RECOVERY_CHUNK_BYTES = 8 * 1024 * 1024;
/** Sealed segments kept open for reads at most (least recently used are closed). */
export const LOG_SEALED_HANDLES_MAX = 16;
/**
 * The active segment's file is kept this many bytes of zeros ahead of small writes (capped at the
 * segment size limit). An fdatasync that only overwrites blocks already written needs no
 * filesystem journal commit (the file's size and extents do not change), which halves its cost on
 * ext4; the journal commit is paid once per this many bytes instead of once per flush.
 */
export const LOG_PREALLOC_BYTES = 1024 * 1024;
/**
 * A write of at least this many bytes that runs past the preallocated zeros just extends the
 * file: zero-filling ahead of it would double its disk writes for a saving that is small next to
 * its own transfer.
 */
export const LOG_PREALLOC_WRITE_BYTES_MAX = 256 * 1024;
/** Source of the zeros written ahead; never written to. */
const ZEROS = new Uint8Array(LOG_PREALLOC_BYTES);

/**
 * Where a log file should end after a write of `writeBytes` that ran it to `end`, in a file of at
 * most `limit` bytes: LOG_PREALLOC_BYTES further (block aligned, capped at `limit`) for a small
 * write, `end` itself for a large one. The raw-append benchmark baseline grows its file the same way.
 */
export function zerosAheadTo(end: number, writeBytes: number, limit: number): number {
  if (writeBytes >= LOG_PREALLOC_WRITE_BYTES_MAX) return end;
  return Math.max(end, Math.min(limit, Math.floor((end + LOG_PREALLOC_BYTES) / LOG_BLOCK_BYTES) * LOG_BLOCK_BYTES));
}

const TMP_SUFFIX = '.tmp';
const RESET_SUFFIX = '.reset';

/** A window of one file read in big chunks, for recovery scans. */
class ChunkReader {
  winStart = 0;
  winLen = 0;
  readonly view: DataView;
  constructor(
    private readonly disk: Disk,
    private readonly fh: FileHandle,
    readonly size: number,
    readonly buf: Uint8Array,
  ) {
    assert(buf.length >= Math.min(size, RECORD_BYTES_MAX), 'recovery buffer holds any record of the file', {
      buf: buf.length,
      size,
    });
    this.view = viewOf(buf);
  }

  /** Makes file bytes [pos, pos+len) available at buf[pos - winStart]; false if they are past the end. */
  ensure(pos: number, len: number): boolean {
    if (pos >= this.winStart && pos + len <= this.winStart + this.winLen) return true;
    if (pos + len > this.size) return false;
    assert(len <= this.buf.length, 'recovery read fits the buffer', { len });
    const want = Math.min(this.buf.length, this.size - pos);
    const n = this.disk.read(this.fh, this.buf.subarray(0, want), pos);
    this.winStart = pos;
    this.winLen = n;
    return n >= len;
  }
}

/** Where a segment's records stop being valid, and why. */
interface ScanStop {
  offset: number;
  reason: string;
}

function badRequest(message: string, details?: Record<string, unknown>): StorageError {
  return new StorageError('bad_request', message, details);
}

function checkLsnArg(value: unknown, what: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw badRequest(`${what} must be a non-negative safe integer, got ${String(value)}`, { [what]: value });
  }
}

/**
 * The per-shard append-only log. See the file comment for the durability and recovery rules.
 */
export class SegmentLog {
  private readonly disk: Disk;
  private readonly dir: string;
  private readonly segmentBytesMax: number;
  /** Segments of the valid prefix, by ascending base LSN; the last one is the active one. */
  private segments: SegmentIndex[] = [];
  /** Sealed segments with an open handle, least recently used first. */
  private sealedOpen: SegmentIndex[] = [];
  /** Segments written since their last fdatasync. */
  private readonly dirty = new Set<SegmentIndex>();
  private syncedLsnValue = 0;
  private corruptionValue: CorruptionReport[] = [];
  private failure: StorageError | undefined = undefined;
  /** A `syncAsync` is in flight: no mutation until it settles. */
  private syncing = false;
  private closed = false;
  private writesCount = 0;
  private syncsCount = 0;
  private discardFailuresCount = 0;
  /** A background removal of a trimmed segment failed: the file is removed at the next open. */
  private readonly onDiscardError = (): void => {
    this.discardFailuresCount++;
  };
  /** Recovery's read buffer (the thread's shared one when `holdsSharedScratch`); dropped after open. */
  private scratch: Uint8Array | undefined = undefined;
  private holdsSharedScratch = false;

  /** LogOptions.onRecovered, during open only. */
  private onRecovered: LogOptions['onRecovered'];

  private constructor(disk: Disk, dir: string, segmentBytesMax: number) {
    this.disk = disk;
    this.dir = dir;
    this.segmentBytesMax = segmentBytesMax;
  }

  /**
   * Opens the log in `opts.dir`, creating it if it has no segments, else recovering it (see the
   * file comment). Throws StorageError on IO errors and on a segment of an unsupported format
   * version; damage is reported in `corruption`, not thrown.
   */
  static open(disk: Disk, opts: LogOptions): SegmentLog {
    if (typeof opts.dir !== 'string') throw badRequest('dir must be a string');
    const segmentBytesMax = opts.segmentBytesMax ?? SEGMENT_BYTES_MAX_DEFAULT;
    if (!Number.isSafeInteger(segmentBytesMax) || segmentBytesMax < SEGMENT_BYTES_MIN || segmentBytesMax > SEGMENT_BYTES_LIMIT) {
      throw badRequest(`segmentBytesMax must be an integer in [${SEGMENT_BYTES_MIN}, ${SEGMENT_BYTES_LIMIT}]`, { segmentBytesMax });
    }
    const firstLsn = opts.firstLsn ?? 1;
    const prevTerm = opts.prevTerm ?? 0;
    checkLsnArg(firstLsn, 'firstLsn');
    checkLsnArg(prevTerm, 'prevTerm');
    if (firstLsn < 1) throw badRequest('firstLsn must be at least 1', { firstLsn });
    const log = new SegmentLog(disk, opts.dir, segmentBytesMax);
    log.onRecovered = opts.onRecovered;
    try {
      log.recover(firstLsn, prevTerm);
    } catch (e) {
      log.closeAllHandles(true);
      throw e;
    } finally {
      if (log.holdsSharedScratch) recoveryScratchHeld = false;
      log.holdsSharedScratch = false;
      log.scratch = undefined;
      log.onRecovered = undefined;
    }
    log.checkInvariants();
    return log;
  }

  // ------------------------------------------------------------------ positions

  /** Damage found by recovery; non-empty means the log is read-only up to its valid prefix. */
  get corruption(): readonly CorruptionReport[] {
    return this.corruptionValue;
  }

  /** First retained LSN; records below it were trimmed (or never were in this log). */
  get firstLsn(): number {
    return this.segments[0]!.baseLsn;
  }

  /** LSN of the last record (firstLsn-1 when empty). */
  get lastLsn(): number {
    return this.active.lastLsn;
  }

  /** Term of lastLsn (the prevTerm of the log when empty). */
  get lastTerm(): number {
    return this.active.lastTerm;
  }

  /** Highest LSN known durable. */
  get syncedLsn(): number {
    return this.syncedLsnValue;
  }

  /**
   * Term of record `lsn`, for `lsn` in [firstLsn-1, lastLsn]. Throws 'trimmed' below,
   * 'out_of_range' above, and 'device_failed' above syncedLsn once the log has failed.
   */
  termAt(lsn: number): number {
    this.checkOpen();
    checkLsnArg(lsn, 'lsn');
    if (lsn < this.firstLsn - 1) throw new StorageError('trimmed', `LSN ${lsn} is below the log's first LSN ${this.firstLsn}`, { lsn });
    if (lsn > this.lastLsn) throw new StorageError('out_of_range', `LSN ${lsn} is above the log's last LSN ${this.lastLsn}`, { lsn });
    this.checkReadable(lsn);
    if (lsn === this.firstLsn - 1) return this.segments[0]!.prevTerm;
    const seg = this.segments[this.segmentIndexOf(lsn)]!;
    return seg.termAt(lsn - seg.baseLsn);
  }

  /**
   * Whether `termAt(firstLsn - 1)` is the term the log held there: false when the first segment's
   * header was damaged (the log opened with nothing valid, and that term is lost with it).
   */
  get prevTermKnown(): boolean {
    return this.segments[0]?.prevTermLost !== true;
  }

  // ------------------------------------------------------------------ writing

  /**
   * Appends records with LSNs lastLsn+1...; one disk write per segment touched (a segment that
   * fills up is sealed: fdatasync'd, and a new one created crash-safely). NOT durable until
   * `sync`. Terms must not decrease. Returns the new lastLsn.
   * Throws 'bad_request' on bad input (payload over RECORD_PAYLOAD_BYTES_MAX, batch over
   * LOG_WRITE_BATCH_BYTES_MAX / LOG_WRITE_BATCH_RECORDS_MAX), CorruptionError if recovery found
   * corruption, 'device_failed' after an earlier failure; an IO error fails the log.
   */
  write(records: readonly LogRecordInput[]): number {
    this.checkMutable('write');
    if (!Array.isArray(records)) throw badRequest('records must be an array');
    const n = records.length;
    if (n === 0) return this.lastLsn;
    if (n > LOG_WRITE_BATCH_RECORDS_MAX) {
      throw badRequest(`a write batch holds at most ${LOG_WRITE_BATCH_RECORDS_MAX} records, got ${n}`, { records: n });
    }
    let termFloor = this.lastTerm;
    let batchBytes = 0;
    for (let k = 0; k < n; k++) {
      const r = records[k]!;
      if (!(r.payload instanceof Uint8Array)) throw badRequest(`record ${k}: payload must be a Uint8Array`);
      if (r.payload.length > RECORD_PAYLOAD_BYTES_MAX) {
        throw badRequest(`record ${k}: payload of ${r.payload.length} bytes exceeds ${RECORD_PAYLOAD_BYTES_MAX}`, {
          payloadBytes: r.payload.length,
        });
      }
      if (!Number.isSafeInteger(r.kind) || r.kind < 0 || r.kind > RECORD_KIND_MAX) {
        throw badRequest(`record ${k}: kind must be an integer in [0, ${RECORD_KIND_MAX}]`, { kind: r.kind });
      }
      if (!Number.isSafeInteger(r.term) || r.term < termFloor) {
        throw badRequest(`record ${k}: term ${r.term} must be a safe integer >= ${termFloor} (terms never decrease)`, {
          term: r.term,
        });
      }
      if (r.payloadCrc !== undefined && !(Number.isInteger(r.payloadCrc) && r.payloadCrc >= 0 && r.payloadCrc <= 0xffffffff)) {
        throw badRequest(`record ${k}: payloadCrc must be an unsigned 32-bit integer`, { payloadCrc: r.payloadCrc });
      }
      termFloor = r.term;
      batchBytes += recordBytes(r.payload.length);
    }
    if (batchBytes > LOG_WRITE_BATCH_BYTES_MAX) {
      throw badRequest(`a write batch encodes to ${batchBytes} bytes, more than ${LOG_WRITE_BATCH_BYTES_MAX}`, { batchBytes });
    }
    if (this.lastLsn + n > LOG_VALUE_MAX) throw new StorageError('out_of_range', 'LSN space exhausted');
    try {
      let i = 0;
      while (i < n) {
        const seg = this.active;
        let j = i;
        let chunkBytes = 0;
        while (j < n) {
          const rb = recordBytes(records[j]!.payload.length);
          const alone = seg.count === 0 && j === i; // a record always fits in an empty segment
          if (!alone && seg.endOffset + chunkBytes + rb > seg.segmentBytesMax) break;
          chunkBytes += rb;
          j++;
        }
        if (j === i) {
          this.rollOver();
          continue;
        }
        // Pad a large batch to the next block boundary, so the next batch starts on a fresh block.
        const end = seg.endOffset + chunkBytes;
        let pad = (LOG_BLOCK_BYTES - (end % LOG_BLOCK_BYTES)) % LOG_BLOCK_BYTES;
        if (pad > 0 && pad < RECORD_HEADER_BYTES) pad += LOG_BLOCK_BYTES;
        if (pad * 8 > chunkBytes || end + pad > seg.segmentBytesMax) pad = 0;
        const buf = this.encodeBufOf(chunkBytes + pad);
        const view = viewOf(buf);
        let pos = 0;
        const firstLsn = seg.lastLsn + 1;
        const at = seg.endOffset;
        for (let k = i; k < j; k++) {
          const r = records[k]!;
          pos = encodeRecord(buf, view, pos, firstLsn + (k - i), r.term, r.kind, r.payload, r.payloadCrc, at + pos);
        }
        assert(pos === chunkBytes, 'encoded chunk size', { pos, chunkBytes });
        if (pad > 0) encodePadding(buf, view, pos, pad);
        const fh = this.handleOf(seg);
        this.disk.write(fh, buf, at);
        this.writesCount++;
        this.dirty.add(seg);
        if (at + buf.length > seg.fileBytes) this.growFile(seg, fh, at + buf.length, buf.length);
        pos = at;
        for (let k = i; k < j; k++) {
          const r = records[k]!;
          seg.push(pos, r.payload.length, r.term);
          pos += recordBytes(r.payload.length);
        }
        if (pad > 0) seg.skip(pos, pad);
        i = j;
      }
    } catch (e) {
      throw this.fail(e);
    }
    return this.lastLsn;
  }

  /**
   * A write ran the file of `seg` to `end`: zeros follow it as `zerosAheadTo` says, made durable
   * by the same fdatasync as the records. Recovery reads zeros after the last record as the end.
   */
  private growFile(seg: SegmentIndex, fh: FileHandle, end: number, writeBytes: number): void {
    const to = zerosAheadTo(end, writeBytes, seg.segmentBytesMax);
    if (to > end) this.disk.write(fh, ZEROS.subarray(0, to - end), end);
    seg.fileBytes = to;
  }

  /** A view of `bytes` bytes of the thread's encoding buffer (encodeScratch). */
  private encodeBufOf(bytes: number): Uint8Array {
    return encodeScratch(bytes);
  }

  /**
   * Makes every record written so far durable: fdatasync of each segment written since the last
   * sync. On failure throws 'fsync_failed' and the log fails for good (syncedLsn stays).
   */
  sync(): void {
    this.checkOpen();
    this.checkNotFailed('sync');
    assert(!this.syncing, 'one sync at a time');
    if (this.dirty.size === 0) {
      assert(this.syncedLsnValue === this.lastLsn, 'nothing unsynced when no segment is dirty', {
        syncedLsn: this.syncedLsnValue,
        lastLsn: this.lastLsn,
      });
      return;
    }
    try {
      for (const seg of this.dirty) {
        this.disk.fdatasync(this.handleOf(seg));
        this.syncsCount++;
      }
    } catch (e) {
      throw this.fail(e);
    }
    this.dirty.clear();
    this.syncedLsnValue = this.lastLsn;
  }

  /**
   * As `sync`, but with the fdatasyncs off this thread when the disk offers `fdatasyncAsync`
   * (else it is `sync`). The records written so far are durable when it resolves. Nothing may be
   * written, truncated or trimmed until it settles (an invariant error otherwise). On failure it
   * rejects with 'fsync_failed' and the log fails for good, as `sync` does.
   */
  async syncAsync(): Promise<void> {
    // Everything up to the first await runs at the call, as in `sync`: the checks, and marking
    // the flush in flight before any other call can see the log.
    this.checkOpen();
    this.checkNotFailed('sync');
    assert(!this.syncing, 'one sync at a time');
    const fdatasyncAsync = this.disk.fdatasyncAsync?.bind(this.disk);
    if (fdatasyncAsync === undefined || this.dirty.size === 0) return this.sync();
    const segments = [...this.dirty];
    const upto = this.lastLsn;
    let handles: FileHandle[];
    try {
      handles = segments.map((seg) => this.handleOf(seg));
    } catch (e) {
      throw this.fail(e);
    }
    this.syncing = true;
    try {
      for (const fh of handles) {
        await fdatasyncAsync(fh);
        this.syncsCount++;
      }
    } catch (e) {
      throw this.fail(e);
    } finally {
      this.syncing = false;
      // close() came while the flush was in flight: the files close now.
      if (this.closed) this.closeAllHandles(true);
    }
    for (const seg of segments) this.dirty.delete(seg);
    this.syncedLsnValue = upto;
  }

  // ------------------------------------------------------------------ reading

  /**
   * Records fromLsn..toLsn (inclusive), stopping early before the payload total would exceed
   * `bytesMax` or LOG_READ_RECORDS_MAX records (always at least one record). Payloads are views
   * into one buffer per segment read. Throws 'trimmed' below firstLsn, 'out_of_range' above
   * lastLsn, CorruptionError if a record on disk no longer matches its checksum.
   */
  read(fromLsn: number, toLsn: number, opts: LogReadOptions = {}): LogRecord[] {
    this.checkOpen();
    checkLsnArg(fromLsn, 'fromLsn');
    checkLsnArg(toLsn, 'toLsn');
    const bytesMax = opts.bytesMax ?? LOG_READ_BYTES_MAX_DEFAULT;
    if (!Number.isSafeInteger(bytesMax) || bytesMax < 1 || bytesMax > LOG_READ_BYTES_LIMIT) {
      throw badRequest(`bytesMax must be an integer in [1, ${LOG_READ_BYTES_LIMIT}]`, { bytesMax });
    }
    if (fromLsn > toLsn) throw badRequest(`fromLsn ${fromLsn} is above toLsn ${toLsn}`, { fromLsn, toLsn });
    if (fromLsn < this.firstLsn) {
      throw new StorageError('trimmed', `LSN ${fromLsn} is below the log's first LSN ${this.firstLsn}`, { fromLsn });
    }
    if (toLsn > this.lastLsn) {
      throw new StorageError('out_of_range', `LSN ${toLsn} is above the log's last LSN ${this.lastLsn}`, { toLsn });
    }
    this.checkReadable(toLsn);
    const out: LogRecord[] = [];
    let payloadTotal = 0;
    let lsn = fromLsn;
    let s = this.segmentIndexOf(fromLsn);
    let full = false;
    while (lsn <= toLsn && !full) {
      const seg = this.segments[s]!;
      const i0 = lsn - seg.baseLsn;
      const iLast = Math.min(toLsn, seg.lastLsn) - seg.baseLsn;
      let i = i0;
      while (i <= iLast) {
        const pl = seg.payloadBytesAt(i);
        const taken = out.length + (i - i0);
        if (taken > 0 && (payloadTotal + pl > bytesMax || taken >= LOG_READ_RECORDS_MAX)) {
          full = true;
          break;
        }
        payloadTotal += pl;
        i++;
      }
      if (i === i0) break;
      this.readRange(seg, i0, i, out, opts.payloadCrc);
      lsn = seg.baseLsn + i;
      s++;
    }
    assert(out.length >= 1 && out[0]!.lsn === fromLsn, 'read returns at least the first record asked for');
    return out;
  }

  // ------------------------------------------------------------------ shortening

  /**
   * Records <= uptoLsn are no longer needed: deletes (durably, oldest first) every whole segment
   * whose records are all <= uptoLsn, never the active one, or the oldest `segmentsMax` of them
   * (each costs a rename and a directory fsync; a caller that wants short steps trims one at a
   * time, while `canTrimPrefix`). firstLsn becomes the base of the first remaining segment.
   * Allowed while `corruption` is non-empty (it only touches the valid prefix).
   */
  trimPrefix(uptoLsn: number, segmentsMax: number = Number.MAX_SAFE_INTEGER): void {
    this.checkOpen();
    this.checkNotFailed('trimPrefix');
    assert(!this.syncing, 'trimPrefix while a sync is in flight');
    checkLsnArg(uptoLsn, 'uptoLsn');
    if (!Number.isSafeInteger(segmentsMax) || segmentsMax < 1) throw badRequest('segmentsMax must be a positive integer', { segmentsMax });
    try {
      for (let n = 0; n < segmentsMax && this.canTrimPrefix(uptoLsn); n++) {
        const seg = this.segments[0]!;
        assert(!this.dirty.has(seg), 'a sealed segment has no unsynced data', { segment: seg.name });
        this.closeHandle(seg);
        this.segments.shift();
        // Renamed away here, its blocks freed in the background once the rename is durable:
        // removing a whole segment takes tens of ms, which would stall every shard of this thread.
        const gone = discardFile(this.disk, this.pathOf(seg.name));
        // One directory fsync per removal: removals must reach the disk oldest first, or a power
        // cut could leave a gap in the middle of the log, which recovery would call corruption.
        this.disk.fsyncDir(this.dir);
        removeInBackground(this.disk, [gone], this.onDiscardError);
      }
    } catch (e) {
      throw this.fail(e);
    }
  }

  /** Bytes of the active segment's records. */
  get activeBytes(): number {
    this.checkOpen();
    return this.active.endOffset;
  }

  /** The active segment's size limit. */
  get activeBytesMax(): number {
    this.checkOpen();
    return this.active.segmentBytesMax;
  }

  /**
   * Seals the active segment, synced, and starts the next one, as when it fills: `trimPrefix`
   * may then let its records go. For a checkpoint of a device short of space whose image holds
   * every record of the log (PageStore `sealLog`). Nothing when the active segment holds none.
   */
  sealActive(): void {
    this.checkMutable('sealActive');
    if (this.active.count === 0) return;
    try {
      this.rollOver();
    } catch (e) {
      throw this.fail(e);
    }
  }

  /** Whether `trimPrefix(uptoLsn)` would delete a segment: a whole one, not the active one, is <= uptoLsn. */
  canTrimPrefix(uptoLsn: number): boolean {
    return this.segments.length > 1 && this.segments[0]!.lastLsn <= uptoLsn;
  }

  /**
   * Durably removes records >= fromLsn (firstLsn <= fromLsn <= lastLsn+1): later segments are
   * deleted newest first, then the segment holding fromLsn is truncated and fdatasync'd. Afterwards
   * syncedLsn == lastLsn == fromLsn-1. Throws 'trimmed' / 'out_of_range' for fromLsn outside that
   * range, CorruptionError while `corruption` is non-empty.
   */
  truncateSuffix(fromLsn: number): void {
    this.checkMutable('truncateSuffix');
    checkLsnArg(fromLsn, 'fromLsn');
    if (fromLsn < this.firstLsn) {
      throw new StorageError('trimmed', `LSN ${fromLsn} is below the log's first LSN ${this.firstLsn}`, { fromLsn });
    }
    if (fromLsn > this.lastLsn + 1) {
      throw new StorageError('out_of_range', `LSN ${fromLsn} is above the log's last LSN + 1 (${this.lastLsn + 1})`, { fromLsn });
    }
    if (fromLsn === this.lastLsn + 1) {
      // Nothing to cut, but the promise holds: everything left is durable.
      this.sync();
      return;
    }
    try {
      while (this.active.baseLsn > fromLsn) {
        const seg = this.segments.pop()!;
        this.closeHandle(seg);
        this.dirty.delete(seg);
        this.disk.remove(this.pathOf(seg.name));
        this.disk.fsyncDir(this.dir); // newest first, each durable before the next: never a gap
      }
      const seg = this.active;
      const fh = this.activate(seg);
      const keep = fromLsn - seg.baseLsn;
      assert(keep >= 0 && keep < seg.count, 'truncation point inside the last segment', { keep, count: seg.count });
      this.disk.truncate(fh, seg.offsetAt(keep));
      this.disk.fdatasync(fh);
      this.syncsCount++;
      seg.truncateTo(keep);
      seg.fileBytes = seg.endOffset;
      this.dirty.delete(seg);
      assert(this.dirty.size === 0, 'only the active segment can be unsynced');
      this.syncedLsnValue = this.lastLsn;
    } catch (e) {
      throw this.fail(e);
    }
    assert(this.lastLsn === fromLsn - 1, 'truncateSuffix leaves lastLsn = fromLsn - 1');
  }

  /**
   * Durably discards every segment and continues with an empty log at nextLsn whose record
   * nextLsn-1 has term prevTerm (a replica installing an image newer than its log). Allowed while
   * `corruption` is non-empty: it is the tool of a repair from a peer, and clears `corruption`.
   * Crash-safe: the new segment is committed as `seg-X.log.reset` first; recovery finishes a
   * committed reset.
   */
  reset(nextLsn: number, prevTerm: number): void {
    this.checkOpen();
    this.checkNotFailed('reset');
    assert(!this.syncing, 'reset while a sync is in flight');
    checkLsnArg(nextLsn, 'nextLsn');
    checkLsnArg(prevTerm, 'prevTerm');
    if (nextLsn < 1) throw badRequest('nextLsn must be at least 1', { nextLsn });
    try {
      this.closeAllHandles(false);
      this.dirty.clear();
      const seg = this.createSegment({ baseLsn: nextLsn, prevTerm, segmentBytesMax: this.segmentBytesMax }, RESET_SUFFIX);
      this.segments = [seg];
      this.finishReset(segmentName(nextLsn) + RESET_SUFFIX);
    } catch (e) {
      throw this.fail(e);
    }
    this.corruptionValue = [];
    this.syncedLsnValue = nextLsn - 1;
    this.checkInvariants();
  }

  /**
   * Repair of a damaged log whose lost records its replica fetches again from a peer: durably
   * discards everything after the valid prefix (later segment files newest first, then the
   * damaged rest of the last valid segment) and clears `corruption`; lastLsn stays the end of the
   * valid prefix, which stays readable. Crash-safe: an interrupted discard leaves damage that the
   * next open reports again. A no-op without corruption. Throws CorruptionError when the first
   * segment itself is unreadable (there is no valid prefix to keep: `reset` is the tool then).
   */
  discardDamage(): void {
    this.checkOpen();
    this.checkNotFailed('discardDamage');
    assert(!this.syncing, 'discardDamage while a sync is in flight');
    if (this.corruptionValue.length === 0) return;
    const first = this.corruptionValue[0]!;
    if (this.segments.length === 1 && first.offset === 0 && first.file === this.pathOf(this.segments[0]!.name)) {
      throw new CorruptionError(`discardDamage: log ${this.dir} has no valid segment to keep`, this.corruptionValue);
    }
    const last = this.active;
    try {
      const later = this.disk
        .list(this.dir)
        .map((name) => ({ name, base: parseSegmentName(name) }))
        .filter((f): f is { name: string; base: number } => f.base !== undefined && f.base > last.baseLsn)
        .sort((a, b) => b.base - a.base);
      for (const f of later) {
        this.disk.remove(this.pathOf(f.name));
        this.disk.fsyncDir(this.dir); // newest first, each durable before the next: never a gap
      }
      const fh = this.activate(last);
      this.disk.truncate(fh, last.endOffset);
      this.disk.fdatasync(fh);
      this.syncsCount++;
      last.fileBytes = last.endOffset;
    } catch (e) {
      throw this.fail(e);
    }
    this.corruptionValue = [];
    this.syncedLsnValue = this.lastLsn;
    this.checkInvariants();
  }

  // ------------------------------------------------------------------ misc

  /** Positions and counters. */
  stats(): LogStats {
    let bytes = 0;
    for (const seg of this.segments) bytes += seg.endOffset;
    return {
      segments: this.segments.length,
      bytes,
      firstLsn: this.firstLsn,
      lastLsn: this.lastLsn,
      syncedLsn: this.syncedLsnValue,
      writes: this.writesCount,
      syncs: this.syncsCount,
      discardFailures: this.discardFailuresCount,
    };
  }

  /** Closes the files. Does NOT sync: call `sync` first to keep what was written. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    // A flush in flight keeps its files open until it settles (closing them under it would
    // fail it, and with it the device); nothing else can use them once the log is closed.
    if (!this.syncing) this.closeAllHandles(false);
  }

  // ------------------------------------------------------------------ internals: state

  private get active(): SegmentIndex {
    return this.segments[this.segments.length - 1]!;
  }

  private pathOf(name: string): string {
    return joinPath(this.dir, name);
  }

  private checkOpen(): void {
    if (this.closed) throw new StorageError('closed', `log ${this.dir} is closed`);
  }

  private checkNotFailed(op: string): void {
    if (this.failure !== undefined) {
      throw new StorageError('device_failed', `${op}: log ${this.dir} failed earlier: ${this.failure.message}`, undefined, this.failure);
    }
  }

  private checkMutable(op: string): void {
    this.checkOpen();
    this.checkNotFailed(op);
    assert(!this.syncing, `${op} while a sync is in flight`, { op });
    if (this.corruptionValue.length > 0) {
      throw new CorruptionError(`${op}: log ${this.dir} is corrupt and read-only until repaired`, this.corruptionValue);
    }
  }

  /** After a failure only synced records may be read (unsynced ones may be gone from the device). */
  private checkReadable(lsn: number): void {
    if (this.failure !== undefined && lsn > this.syncedLsnValue) {
      throw new StorageError('device_failed', `LSN ${lsn} was not synced before the log failed`, { lsn }, this.failure);
    }
  }

  /** Enters the failed state (first failure wins); returns `e` for rethrowing. */
  private fail(e: unknown): unknown {
    if (this.failure === undefined) {
      this.failure = e instanceof StorageError ? e : new StorageError('io_error', String(e), undefined, e);
    }
    return e;
  }

  private checkInvariants(): void {
    assert(this.segments.length >= 1, 'a log has at least one segment');
    for (let s = 1; s < this.segments.length; s++) {
      const prev = this.segments[s - 1]!;
      const seg = this.segments[s]!;
      assert(seg.baseLsn === prev.lastLsn + 1, 'segments are contiguous', { prev: prev.name, seg: seg.name });
      assert(prev.count > 0, 'only the last segment may be empty', { seg: prev.name });
    }
    assert(this.syncedLsnValue <= this.lastLsn && this.syncedLsnValue >= this.firstLsn - 1, 'syncedLsn within the log', {
      syncedLsn: this.syncedLsnValue,
    });
  }

  /** Index in `segments` of the segment holding `lsn` (firstLsn <= lsn <= lastLsn). */
  private segmentIndexOf(lsn: number): number {
    const segs = this.segments;
    let lo = 0;
    let hi = segs.length - 1;
    if (segs[hi]!.baseLsn <= lsn) lo = hi;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (segs[mid]!.baseLsn <= lsn) lo = mid;
      else hi = mid - 1;
    }
    const seg = segs[lo]!;
    assert(lsn >= seg.baseLsn && lsn <= seg.lastLsn, 'LSN inside the segment found', { lsn, segment: seg.name });
    return lo;
  }

  // ------------------------------------------------------------------ internals: files

  /** An open handle of `seg` (sealed segments are opened on demand, a few kept in an LRU). */
  private handleOf(seg: SegmentIndex): FileHandle {
    if (seg === this.active) {
      assert(seg.fh !== undefined, 'the active segment is open', { segment: seg.name });
      return seg.fh;
    }
    const at = this.sealedOpen.indexOf(seg);
    if (at >= 0) {
      this.sealedOpen.splice(at, 1);
      this.sealedOpen.push(seg);
      return seg.fh!;
    }
    assert(seg.fh === undefined, 'a sealed segment is open only while in the LRU', { segment: seg.name });
    seg.fh = this.disk.open(this.pathOf(seg.name));
    this.sealedOpen.push(seg);
    if (this.sealedOpen.length > LOG_SEALED_HANDLES_MAX) this.closeHandle(this.sealedOpen[0]!);
    return seg.fh;
  }

  /** Makes `seg` (now the last segment) the active one: open and out of the sealed LRU. */
  private activate(seg: SegmentIndex): FileHandle {
    const at = this.sealedOpen.indexOf(seg);
    if (at >= 0) this.sealedOpen.splice(at, 1);
    if (seg.fh === undefined) seg.fh = this.disk.open(this.pathOf(seg.name));
    return seg.fh;
  }

  private closeHandle(seg: SegmentIndex): void {
    const at = this.sealedOpen.indexOf(seg);
    if (at >= 0) this.sealedOpen.splice(at, 1);
    const fh = seg.fh;
    seg.fh = undefined;
    if (fh !== undefined) this.disk.close(fh);
  }

  private closeAllHandles(quiet: boolean): void {
    for (const seg of this.segments) {
      try {
        this.closeHandle(seg);
      } catch (e) {
        if (!quiet) throw e;
      }
    }
    this.sealedOpen = [];
  }

  /**
   * Creates a segment file crash-safely: header to `<name>.tmp`, fdatasync, rename to
   * `<name><suffix>`, fsyncDir. Returns its (empty, open) index.
   */
  private createSegment(header: SegmentHeader, suffix: '' | typeof RESET_SUFFIX): SegmentIndex {
    const name = segmentName(header.baseLsn);
    const path = this.pathOf(name);
    assert(suffix !== '' || !this.disk.exists(path), 'a new segment does not replace an existing one', { path });
    const fh = this.disk.open(path + TMP_SUFFIX, { create: true, truncate: true });
    const seg = new SegmentIndex(name, header);
    seg.fh = fh;
    try {
      this.disk.write(fh, encodeSegmentHeader(header), 0);
      this.disk.fdatasync(fh);
      this.disk.rename(path + TMP_SUFFIX, path + suffix);
      this.disk.fsyncDir(this.dir);
    } catch (e) {
      seg.fh = undefined;
      try {
        this.disk.close(fh);
      } catch {
        // the first error is the one that matters
      }
      throw e;
    }
    return seg;
  }

  /** Seals the active segment (cut after its last record, fdatasync'd) and starts a new one at lastLsn+1. */
  private rollOver(): void {
    const old = this.active;
    assert(old.count > 0, 'an empty segment is never rolled over', { segment: old.name });
    if (old.fileBytes > old.endOffset) {
      // A sealed segment ends at its last record: recovery reads zeros after it as damage when a
      // later segment exists.
      this.disk.truncate(this.handleOf(old), old.endOffset);
      old.fileBytes = old.endOffset;
      this.dirty.add(old);
    }
    if (this.dirty.has(old)) {
      this.disk.fdatasync(this.handleOf(old));
      this.syncsCount++;
      this.dirty.delete(old);
    }
    assert(this.dirty.size === 0, 'only the active segment can be unsynced');
    // The old segment's data is durable before the new segment exists: a valid later segment
    // header therefore proves that everything before it was complete (recovery relies on this).
    this.syncedLsnValue = this.lastLsn;
    const seg = this.createSegment({ baseLsn: this.lastLsn + 1, prevTerm: this.lastTerm, segmentBytesMax: this.segmentBytesMax }, '');
    this.segments.push(seg);
    this.sealedOpen.push(old);
    if (this.sealedOpen.length > LOG_SEALED_HANDLES_MAX) this.closeHandle(this.sealedOpen[0]!);
  }

  /** Second half of a reset: removes every segment, then renames the committed `.reset` file into place. */
  private finishReset(resetName: string): void {
    const finalName = resetName.slice(0, resetName.length - RESET_SUFFIX.length);
    assert(parseSegmentName(finalName) !== undefined, 'reset file names a segment', { resetName });
    for (const name of this.disk.list(this.dir)) {
      if (parseSegmentName(name) !== undefined) this.disk.remove(this.pathOf(name));
    }
    this.disk.fsyncDir(this.dir);
    this.disk.rename(this.pathOf(resetName), this.pathOf(finalName));
    this.disk.fsyncDir(this.dir);
  }

  /** Reads records [i0, i1) of `seg` with one disk read, checks them, appends them to `out`. */
  private readRange(seg: SegmentIndex, i0: number, i1: number, out: LogRecord[], payloadCrcOf?: LogReadOptions['payloadCrc']): void {
    const start = seg.offsetAt(i0);
    const end = seg.offsetAt(i1 - 1) + recordBytes(seg.payloadBytesAt(i1 - 1));
    const buf = new Uint8Array(end - start);
    const n = this.disk.read(this.handleOf(seg), buf, start);
    const view = viewOf(buf);
    for (let i = i0; i < i1; i++) {
      const lsn = seg.baseLsn + i;
      const off = seg.offsetAt(i);
      const rel = off - start;
      const len = seg.payloadBytesAt(i);
      const corrupt = (reason: string): CorruptionError => {
        const report: CorruptionReport = { file: this.pathOf(seg.name), offset: off, fromLsn: lsn, toLsn: lsn, reason };
        return new CorruptionError(`read of LSN ${lsn}: ${reason}`, [report]);
      };
      if (rel + recordBytes(len) > n) throw corrupt('segment file shorter than its index');
      if (view.getUint32(rel, true) !== len) throw corrupt('record length differs from the index');
      const payloadStart = rel + RECORD_HEADER_BYTES;
      const payload = buf.subarray(payloadStart, payloadStart + len);
      const kind = buf[rel + 24]!;
      if (view.getUint32(rel + 4, true) !== recordCrc(buf, rel, len, payloadCrcOf?.(kind, payload))) throw corrupt('record checksum mismatch');
      if (getU64(view, rel + 8) !== lsn) throw corrupt('record LSN differs from the index');
      const term = getU64(view, rel + 16);
      if (term !== seg.termAt(i)) throw corrupt('record term differs from the index');
      out.push({ lsn, term, kind, payload });
    }
  }

  // ------------------------------------------------------------------ internals: recovery

  private recover(firstLsn: number, prevTerm: number): void {
    const disk = this.disk;
    disk.mkdirp(this.dir);
    let names = disk.list(this.dir);
    // Leftover temporaries of an interrupted segment creation.
    let removed = false;
    for (const name of names) {
      if (name.endsWith(TMP_SUFFIX) && parseSegmentName(name.slice(0, -TMP_SUFFIX.length)) !== undefined) {
        disk.remove(this.pathOf(name));
        removed = true;
      }
    }
    if (removed) disk.fsyncDir(this.dir);
    // Trimmed segments whose background removal a crash (or an IO error) cut short.
    removeDiscarded(disk, this.dir, names, this.onDiscardError);
    // A committed reset that did not finish.
    const resets = names.filter((n) => n.endsWith(RESET_SUFFIX) && parseSegmentName(n.slice(0, -RESET_SUFFIX.length)) !== undefined);
    if (resets.length > 1) {
      throw new StorageError('corruption', `log ${this.dir} holds ${resets.length} reset files; at most one can exist`, { resets });
    }
    if (resets.length === 1) {
      const name = resets[0]!;
      const fh = disk.open(this.pathOf(name));
      const head = new Uint8Array(SEGMENT_HEADER_BYTES);
      let got: number;
      try {
        got = disk.read(fh, head, 0);
      } finally {
        disk.close(fh);
      }
      const dec = decodeSegmentHeader(head.subarray(0, got));
      if (dec.ok && segmentName(dec.header.baseLsn) + RESET_SUFFIX === name) {
        this.finishReset(name);
      } else {
        // Cannot be torn (it was fdatasync'd before its rename): damaged, so the reset is not applied.
        disk.remove(this.pathOf(name));
        disk.fsyncDir(this.dir);
      }
    }
    if (removed || resets.length > 0) names = disk.list(this.dir);
    const segNames = names.filter((n) => parseSegmentName(n) !== undefined);
    if (segNames.length === 0) {
      // A new log: make the directory itself durable, then its first segment.
      for (let d = this.dir; d !== ''; ) {
        d = parentDir(d);
        disk.fsyncDir(d);
      }
      this.segments = [this.createSegment({ baseLsn: firstLsn, prevTerm, segmentBytesMax: this.segmentBytesMax }, '')];
      this.syncedLsnValue = firstLsn - 1;
      return;
    }
    // The entries listed may not be durable yet: a segment renamed into place, or one removed,
    // just before a crash or a failed directory fsync (a host reopens the log of a failed device
    // on the same page cache). Records appended and synced into such a segment would vanish with
    // its name at a power cut, and a removed one could come back: the directory is made durable
    // as it is read, before anything is acknowledged on it.
    disk.fsyncDir(this.dir);
    this.recoverSegments(segNames);
  }

  private scratchFor(size: number): Uint8Array {
    const want = Math.min(LOG_RECOVERY_CHUNK_BYTES, Math.max(size, SEGMENT_HEADER_BYTES));
    if (this.scratch !== undefined && this.scratch.length >= want) return this.scratch;
    if (!this.holdsSharedScratch && !recoveryScratchHeld) {
      recoveryScratchHeld = true;
      this.holdsSharedScratch = true;
    }
    if (!this.holdsSharedScratch) {
      recoveryScratchAllocations++;
      this.scratch = new Uint8Array(want);
      return this.scratch;
    }
    if (sharedRecoveryBuf === undefined || sharedRecoveryBuf.length < want) {
      recoveryScratchAllocations++;
      // Grown in steps that double, so that a thread reopening logs of growing segments allocates a few times only.
      sharedRecoveryBuf = new Uint8Array(Math.min(LOG_RECOVERY_CHUNK_BYTES, Math.max(want, 2 * (sharedRecoveryBuf?.length ?? 0))));
    }
    this.scratch = sharedRecoveryBuf;
    return this.scratch;
  }

  /**
   * A reader over the whole file. Readers share the scratch buffer: only the newest one may be
   * used (recovery finishes with one file before it looks at the next).
   */
  private readerOf(fh: FileHandle): ChunkReader {
    const size = this.disk.size(fh);
    return new ChunkReader(this.disk, fh, size, this.scratchFor(size));
  }

  /** Decodes the header of the file of a fresh reader (one that has not read anything yet). */
  private readHeader(r: ChunkReader): ReturnType<typeof decodeSegmentHeader> {
    assert(r.winLen === 0, 'header read first');
    const want = Math.min(SEGMENT_HEADER_BYTES, r.size);
    const got = r.ensure(0, want) ? want : 0;
    return decodeSegmentHeader(r.buf.subarray(0, got));
  }

  private recoverSegments(segNames: string[]): void {
    const disk = this.disk;
    const n = segNames.length;
    for (let i = 0; i < n; i++) {
      const name = segNames[i]!;
      const nameBase = parseSegmentName(name)!;
      const fh = disk.open(this.pathOf(name));
      let keepOpen = false;
      try {
        const r = this.readerOf(fh);
        const dec = this.readHeader(r);
        if (!dec.ok && dec.unsupportedVersion) {
          throw new StorageError('bad_request', `${this.pathOf(name)}: ${dec.reason}`, { file: this.pathOf(name) });
        }
        const expected = this.segments.length > 0 ? this.lastLsn + 1 : nameBase;
        if (!dec.ok || dec.header.baseLsn !== nameBase) {
          const reason = dec.ok ? `segment header baseLsn ${dec.header.baseLsn} differs from its file name` : dec.reason;
          const inBody = this.findRecordFrom(r, SEGMENT_HEADER_BYTES, expected);
          if (i === n - 1 && this.segments.length > 0 && inBody === undefined) {
            // The last segment's creation was torn (its header never became valid): drop it.
            keepOpen = true; // closed here, not in finally
            disk.close(fh);
            disk.remove(this.pathOf(name));
            disk.fsyncDir(this.dir);
            break;
          }
          // The records of a segment with a damaged header are not used: they count as lost up to
          // the next valid segment (or the last valid record in this one when it is the last).
          const next =
            this.findValidInSegments(segNames, i + 1, expected) ??
            (inBody === undefined ? expected : this.findLastRecordLsn(this.readerOf(fh), expected) + 1);
          this.reportCorruption(name, 0, expected, next, reason);
          if (this.segments.length === 0) {
            // Nothing valid at all: an empty stand-in so that firstLsn/lastLsn are defined.
            const standIn = new SegmentIndex(name, { baseLsn: nameBase, prevTerm: 0, segmentBytesMax: this.segmentBytesMax });
            standIn.prevTermLost = true;
            this.segments.push(standIn);
          }
          break;
        }
        const header = dec.header;
        if (this.segments.length > 0 && (header.baseLsn !== expected || header.prevTerm !== this.lastTerm)) {
          const reason =
            header.baseLsn !== expected
              ? `segment starts at LSN ${header.baseLsn}, expected ${expected}`
              : `segment prevTerm ${header.prevTerm} differs from term ${this.lastTerm} of LSN ${expected - 1}`;
          this.reportCorruption(name, 0, expected, Math.max(header.baseLsn, expected), reason);
          break;
        }
        const seg = new SegmentIndex(name, header, Math.ceil(r.size / 4096));
        seg.fh = fh;
        keepOpen = true;
        if (this.segments.length > 0) this.closeHandle(this.active);
        this.segments.push(seg);
        const stop = this.scanRecords(r, seg);
        seg.fileBytes = r.size;
        if (stop === undefined) continue;
        // Zeros after the last record of the last segment: the space written ahead of the next
        // records, not damage (zeros are never a valid record).
        if (i === n - 1 && this.zerosFrom(r, stop.offset)) break;
        const from = seg.lastLsn + 1;
        const next = this.findRecordFrom(r, stop.offset + RECORD_ALIGN_BYTES, from)?.lsn ?? this.findValidInSegments(segNames, i + 1, from);
        if (next !== undefined) {
          this.reportCorruption(name, stop.offset, from, next, stop.reason);
          break;
        }
        // A record written whole and damaged since (its header, or its payload with every
        // sector of it written) is not a torn write, though nothing valid follows it: the record
        // was durable, maybe acknowledged, and is lost. Read again through a reader of its own:
        // the look into later segments above may have loaded their bytes into the recovery
        // buffer `r` reads from.
        const rotted = this.rottedRecord(this.readerOf(fh), stop.offset);
        if (rotted !== undefined) {
          this.reportCorruption(name, stop.offset, from, from + 1, `${stop.reason}; ${rotted}`);
          break;
        }
        // A torn tail: nothing valid after it anywhere. Cut it off durably, and drop later
        // segments (all without a valid header or record).
        disk.truncate(fh, stop.offset);
        disk.fdatasync(fh);
        seg.fileBytes = stop.offset;
        for (let j = n - 1; j > i; j--) disk.remove(this.pathOf(segNames[j]!));
        if (i < n - 1) disk.fsyncDir(this.dir);
        break;
      } finally {
        if (!keepOpen) disk.close(fh);
      }
    }
    assert(this.segments.length > 0, 'recovery keeps at least one segment');
    const last = this.active;
    if (last.fh !== undefined && last.count > 0) disk.fdatasync(last.fh); // what was read is now durable
    this.syncedLsnValue = this.lastLsn;
  }

  private reportCorruption(name: string, offset: number, fromLsn: number, nextValidLsn: number, reason: string): void {
    this.corruptionValue.push({ file: this.pathOf(name), offset, fromLsn, toLsn: nextValidLsn - 1, reason });
  }

  /** Indexes the valid records of `seg` from its header on; returns where and why they stop, if before the end. */
  private scanRecords(r: ChunkReader, seg: SegmentIndex): ScanStop | undefined {
    let p = SEGMENT_HEADER_BYTES;
    let expected = seg.baseLsn;
    let termFloor = seg.prevTerm;
    const limit = seg.segmentBytesMax;
    while (p < r.size) {
      if (!r.ensure(p, RECORD_HEADER_BYTES)) return { offset: p, reason: 'record header cut short by the end of the file' };
      let rel = p - r.winStart;
      const len = r.view.getUint32(rel, true);
      if (len > RECORD_PAYLOAD_BYTES_MAX) return { offset: p, reason: `record length ${len} out of bounds` };
      const total = recordBytes(len);
      if (p + total > limit && p !== SEGMENT_HEADER_BYTES) return { offset: p, reason: 'record crosses the segment size limit' };
      if (!r.ensure(p, total)) return { offset: p, reason: 'record cut short by the end of the file' };
      rel = p - r.winStart;
      if (r.view.getUint32(rel + 4, true) !== recordCrc(r.buf, rel, len)) return { offset: p, reason: 'record checksum mismatch' };
      if (isPadding(r.view, rel)) {
        seg.skip(p, total);
        p += total;
        continue;
      }
      const lsn = getU64(r.view, rel + 8);
      if (lsn !== expected) return { offset: p, reason: `record has LSN ${lsn}, expected ${expected}` };
      const term = getU64(r.view, rel + 16);
      if (term < termFloor) return { offset: p, reason: `record term ${term} below the previous term ${termFloor}` };
      seg.push(p, len, term);
      if (this.onRecovered !== undefined) {
        this.onRecovered(lsn, term, r.buf[rel + 24]!, r.buf.subarray(rel + RECORD_HEADER_BYTES, rel + RECORD_HEADER_BYTES + len));
      }
      termFloor = term;
      expected++;
      p += total;
    }
    return undefined;
  }

  /**
   * Why the record at `p`, where the valid records stop with nothing valid after them, was
   * written whole and has rotted since; undefined when it may be a write a crash cut short. Its
   * header first. Cut short are: a header the file ends within; one without a check (written
   * before records had one, or a write that stopped before the check); one whose check was being
   * written (its last byte zero, and zeros to the end of the file); one whose bytes before the
   * check hold only zeros in a sector (the zeros written ahead, which are no record, or a header
   * across a sector boundary whose first sector a crash did not write while it wrote the next);
   * and a padding record's, which holds no record. A header that checks out leaves it to its
   * payload (`rottedPayload`).
   */
  private rottedRecord(r: ChunkReader, p: number): string | undefined {
    if (!r.ensure(p, RECORD_HEADER_BYTES)) return undefined;
    const rel = p - r.winStart;
    const check = r.view.getUint32(rel + RECORD_HEADER_CHECK_OFFSET, true);
    if (check === 0) return undefined;
    if (check === recordHeaderCheck(r.buf, rel)) return this.rottedPayload(r, p);
    // A padding record (LSN 0) holds no record: nothing was lost with it.
    if (zeroSectorWithin(r.buf, r.winStart, p, p + RECORD_HEADER_CHECK_OFFSET) || isPadding(r.view, rel)) return undefined;
    if (r.buf[rel + RECORD_HEADER_BYTES - 1] === 0 && this.zerosFrom(r, p + RECORD_HEADER_BYTES)) return undefined;
    return 'its header does not match its check: written whole and damaged since, not a torn write';
  }

  /**
   * Why the record at `p`, its header whole (it matches its check), was written whole and its
   * payload rotted since; undefined when a crash may have cut it short. A write a crash cut short
   * left part of it unwritten: those bytes of the record read as zeros, as the file held before
   * (the zeros written ahead, or a file extended by the write) - its end, cut at any byte, or a
   * sector (512 bytes, aligned in the file) that did not reach the device while a later one did.
   * A record that runs past the end of the file may be torn. Otherwise the header's zero census
   * tells (`judgeZeroCensus`): a crash can only add zero sectors or move the last non-zero byte
   * back within its sector. A record written before headers had a census: one that ends in a zero
   * byte, or any of whose sectors holds only zeros within the record, may be torn (or hold such
   * zeros as its data: read as torn all the same); any other was written whole.
   */
  private rottedPayload(r: ChunkReader, p: number): string | undefined {
    const rel = p - r.winStart;
    const len = r.view.getUint32(rel, true);
    if (len > RECORD_PAYLOAD_BYTES_MAX || isPadding(r.view, rel)) return undefined;
    const end = p + RECORD_HEADER_BYTES + len;
    // Its padding too (the scan's own bound): a file cut anywhere in the record may be torn.
    if (!r.ensure(p, recordBytes(len))) return undefined;
    const base = p - r.winStart;
    const judged = judgeZeroCensus(r.buf, base, p + RECORD_HEADER_BYTES);
    if (judged === 'torn') return undefined;
    if (judged === 'rotted') return 'its zeros are where they were written (its header\'s zero census): written whole and damaged since, not a torn write';
    // Cut at any byte, the write left zeros from there to the record's end.
    if (r.buf[end - 1 - p + base] === 0) return undefined;
    // The payload's sectors (the header's first one holds the header's bytes).
    if (zeroSectorWithin(r.buf, p - base, p + RECORD_HEADER_BYTES, end)) return undefined;
    return 'every sector of it was written: written whole and damaged since, not a torn write';
  }

  /**
   * True if every byte of the file from `start` to its end is zero. Compared natively against
   * the zeros written ahead (a byte loop here took 0.7 s of a node's restart with 600 replicas,
   * each with its 1 MiB of zeros ahead of the next records).
   */
  private zerosFrom(r: ChunkReader, start: number): boolean {
    for (let p = start; p < r.size; ) {
      const len = Math.min(r.buf.length, r.size - p);
      if (!r.ensure(p, len)) return false;
      const rel = p - r.winStart;
      for (let k = rel; k < rel + len; k += ZEROS.length) {
        const n = Math.min(ZEROS.length, rel + len - k);
        if (Buffer.compare(r.buf.subarray(k, k + n), ZEROS.subarray(0, n)) !== 0) return false;
      }
      p += len;
    }
    return true;
  }

  /** The first record at an 8-byte aligned offset >= start with a valid checksum and LSN >= minLsn. */
  private findRecordFrom(r: ChunkReader, start: number, minLsn: number): { lsn: number; offset: number } | undefined {
    for (let p = start; p + RECORD_HEADER_BYTES <= r.size; p += RECORD_ALIGN_BYTES) {
      if (!r.ensure(p, RECORD_HEADER_BYTES)) return undefined;
      let rel = p - r.winStart;
      const len = r.view.getUint32(rel, true);
      if (len > RECORD_PAYLOAD_BYTES_MAX) continue;
      const lsn = getU64(r.view, rel + 8);
      if (lsn < minLsn) continue;
      if (!r.ensure(p, recordBytes(len))) continue;
      rel = p - r.winStart;
      if (r.view.getUint32(rel + 4, true) === recordCrc(r.buf, rel, len)) return { lsn, offset: p };
    }
    return undefined;
  }

  /** Highest LSN (>= minLsn) of a record with a valid checksum at an 8-byte aligned offset past the header; minLsn-1 if none. */
  private findLastRecordLsn(r: ChunkReader, minLsn: number): number {
    let best = minLsn - 1;
    for (let p = SEGMENT_HEADER_BYTES; ; ) {
      const found = this.findRecordFrom(r, p, best + 1);
      if (found === undefined) return best;
      best = found.lsn;
      p = found.offset + RECORD_ALIGN_BYTES;
    }
  }

  /**
   * Evidence of data after a damaged spot, in segments segNames[from..]: the base LSN of a later
   * segment with a valid header (it was created only after everything before it was durable), or
   * the LSN (>= minLsn) of a valid record in a later segment whose header is damaged.
   */
  private findValidInSegments(segNames: string[], from: number, minLsn: number): number | undefined {
    for (let j = from; j < segNames.length; j++) {
      const fh = this.disk.open(this.pathOf(segNames[j]!));
      try {
        const r = this.readerOf(fh);
        const dec = this.readHeader(r);
        if (dec.ok) return Math.max(dec.header.baseLsn, minLsn);
        const found = this.findRecordFrom(r, SEGMENT_HEADER_BYTES, minLsn);
        if (found !== undefined) return found.lsn;
      } finally {
        this.disk.close(fh);
      }
    }
    return undefined;
  }
}
