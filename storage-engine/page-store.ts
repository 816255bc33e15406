/**
 * PageStore: the pages of one shard, materialized from its log (the source of truth).
 *
 * State: checkpoint images on the device (image.ts), a per-page version index (the LSNs of the
 * retained log records that wrote each page) and a byte-bounded page cache. `apply` only indexes
 * a record; page contents are materialized lazily by `getPage` (GetPage@LSN) and folded into a
 * new image by `checkpoint` (or, as of any readable LSN, into an image in another shard's
 * directory by `exportImage`, for a branch). See docs/page-store.md for the resolution and
 * retention rules.
 *
 * Resolution of (page, lsn): let `img` be the newest retained image with img.lsn <= lsn (or the
 * empty volume at LSN 0 while the log still starts at LSN 1) and `v` the newest version of the
 * page <= lsn. If v > img.lsn the page is in record v (cache, else `log.read(v, v)`); otherwise
 * it is the image's page (cache, else an image read), or zeros if the image does not store it.
 */
import { requestArena } from './arena';
import { discardFile, joinPath, parentDir, removeDiscarded, removeInBackground, type Discarded, type Disk } from './disk';
import { crc32c, crc32cCombine } from './crc32c';
import { assert, CorruptionError, StorageError, type CorruptionReport } from './errors';
import { ImageReader, ImageWriter, imageFileName, isImageTempFileName, parseImageFileName, IMAGE_BYTES_MIN, IMAGE_PAGE_COUNT_MAX, IMAGE_TABLE_ENTRY_BYTES } from './image';
import type { LogReadOptions, SegmentLog } from './log';
import { MetaStore } from './metadata';
import { PageCache } from './page-cache';
import { combinePageCrcs } from './page-data-crc';
import { pageDataOfPageWrite, pagesOfPageWrite, pageWriteCrcs, pageWriteDataCrcs, pageWriteDataStart, pageWritePayloadCrc, type PageWriteCrcs } from './page-write';
import { decodePageZero, isPageZero } from './page-zero';
import { RecordKind, type LogRecord } from './record';
import type { Slab } from './slab';

export interface PageStoreOptions {
  /** Directory of the images and the 'checkpoint' pointer (not shared with the log). */
  dir: string;
  pageSize: 4096 | 8192;
  /** Pages in this shard's address space; page numbers are 0..pageCount-1. */
  pageCount: number;
  /** Bound on cached page bytes. */
  cacheBytesMax: number;
  /** Slab the cache takes its page buffers from (slots of at least pageSize bytes). */
  slab: Slab;
  /** Images kept, counting the newest; the empty volume at LSN 0 counts while the log starts at 1. Default 2. */
  imagesKeep?: number;
  /** Reads stay possible at every LSN >= (newest image LSN - retainLsns). Default 0. */
  retainLsns?: number;
  /**
   * Images known to be damaged (a checksum failed while the replica ran), by their reports: open
   * skips them as it skips an image whose header is bad, without reading them again. The ones
   * it skipped are in `damagedImages`; the files stay (ShardStorage decides what to do with them).
   */
  damagedImages?: readonly CorruptionReport[];
  /** The wall clock (ms since the epoch) a checkpoint pointer notes its time with (`madeAtMs`); default Date.now. */
  wallClock?: () => number;
}

/** The durable 'checkpoint' pointer (MetaStore). */
interface CheckpointPointer {
  version: 1;
  /** LSN and file of the newest image. */
  lsn: number;
  term: number;
  file: string;
  /** Oldest readable LSN: the log is trimmed up to it and no image below it is used. */
  floorLsn: number;
  /**
   * When the pointer was written (wall clock, ms since the epoch); absent in pointers of earlier
   * builds. Every record the log no longer holds is in the image, so it was written before this.
   */
  madeAtMs?: number;
}

export interface PageStoreStats {
  appliedLsn: number;
  /** LSN of the newest image (0 if none). */
  imageLsn: number;
  oldestReadableLsn: number;
  images: number;
  cache: { hits: number; misses: number; evictions: number; damaged: number; bytes: number; bytesMax: number };
  /** Entries of the version index (one per (page, record) pair of the retained log). */
  versions: number;
  /** Images let go whose removal in the background failed (`discardFile`); removed at the next open. */
  discardFailures: number;
  /** Bytes of the retained images' files. */
  imageBytes: number;
  /** Pages the newest image stores (its non-zero pages; 0 without an image). */
  imagePages: number;
}

/** Most pages one `getPages` call may ask for. */
export const GET_PAGES_MAX = 256;
/**
 * Pages one `pagesWithData` looks at one by one (a range no longer than the pages the store
 * holds) before it cuts its answer short: 65,536 took 14 ms here (a map lookup and an image
 * table search each), so one answer holds a host thread about 3–4 ms, whatever the range.
 */
export const MAP_SCAN_PAGES_MAX = 16_384;
/** Largest `imagesKeep`. */
export const IMAGES_KEEP_MAX = 16;
/** Bytes of log records read per batch while replaying on open. */
const REPLAY_READ_BYTES_MAX = 4 * 1024 * 1024;
/** Pages folded per batch while building an image (bounds the fold's page buffers). */
const FOLD_BATCH_PAGES = 64;
/**
 * Pages of the version index a checkpoint looks at per step before it folds (and the size of
 * each sorted run of changed pages): 2–4 ms per step here. Taking every page's version and
 * sorting them in one step held the device's thread 10–16 ms for 8,192 pages, and would hold it
 * for hundreds of ms with a million changed pages.
 */
export const CHECKPOINT_COLLECT_PAGES = 4096;
/** Bound on the record payloads the fold keeps decoded (pages of one record are usually adjacent). */
const FOLD_RECORD_CACHE_BYTES_MAX = 4 * 1024 * 1024;
const POINTER_NAME = 'checkpoint';

/**
 * What a checkpoint step yields: nothing, or a flush running off the thread that its driver
 * awaits before it runs the next step (`checkpointSteps` with `flushOffThread`).
 */
export type CheckpointStep = Promise<void> | undefined;

/** A data record read from the log (`readRecordChecked`). */
interface CheckedRecord {
  payload: Uint8Array;
  /** A well-formed page write's pages and their checksums, which its record checksum was checked from. */
  held: PageWriteCrcs | undefined;
}

/**
 * Pages read (`getPagesCached`, `getPagesChecked`), with the CRC-32C of their data in order, made
 * from the checksums each page was checked against.
 */
export interface CachedPages {
  pages: Uint8Array[];
  crc: number;
}

/** A base for reads: a retained image, or `null` for the empty volume at LSN 0. */
interface Base {
  lsn: number;
  reader: ImageReader | null;
}

export class PageStore {
  private readonly disk: Disk;
  private readonly log: SegmentLog;
  private readonly meta: MetaStore;
  private readonly dir: string;
  private readonly pageSize: 4096 | 8192;
  /** Grows (`grow`), never shrinks. */
  private pageCount: number;
  private readonly imagesKeep: number;
  private readonly retainLsns: number;
  private readonly wallClock: () => number;
  private readonly cache: PageCache;
  /** A checkpoint or an image export is between its steps (one at a time). */
  private checkpointing = false;
  /** Retained images, ascending LSN, all >= floorLsn. */
  private images: ImageReader[];
  /** Oldest readable LSN; 0 means the empty volume at LSN 0 is a base (the log starts at 1). */
  private floorLsn: number;
  /** page -> ascending LSNs of retained records (> floorLsn) that wrote it. */
  private readonly versions = new Map<number, number[]>();
  private versionCount = 0;
  /** Pages of `versions` whose newest version holds data (not a zero): for `imageBytesBound`. */
  private dataPages = 0;
  /** LSNs of the retained PageZero records (> floorLsn): a version among them reads as zeros. */
  private readonly zeroLsns = new Set<number>();
  /** What a page a PageZero record zeroed reads as (never written to). */
  private readonly zeroPage: Uint8Array;
  /** CRC-32C of a page of zeros (a page never written, in a read's checksum). */
  private readonly zeroPageCrc: number;
  private discardFailures = 0;
  private readonly onDiscardError = (): void => {
    this.discardFailures++;
  };
  private applied: number;
  private appliedTerm: number;
  private closed = false;
  /**
   * The images open skipped: those of the option `damagedImages`, and those it found damaged
   * (a header, table or term that does not check out); empty otherwise. Their files stay.
   */
  damagedImages: readonly CorruptionReport[] = [];
  /**
   * All the damage open found and went past: `damagedImages`, and a 'checkpoint' pointer that was
   * unreadable or named an image that is gone (`repointAfterOpen` writes it again).
   */
  openDamage: readonly CorruptionReport[] = [];

  private constructor(disk: Disk, log: SegmentLog, opts: PageStoreOptions, images: ImageReader[], floorLsn: number) {
    this.disk = disk;
    this.log = log;
    this.dir = opts.dir;
    this.meta = new MetaStore(disk, opts.dir);
    this.pageSize = opts.pageSize;
    this.pageCount = opts.pageCount;
    this.zeroPage = new Uint8Array(opts.pageSize);
    this.zeroPageCrc = crc32c(this.zeroPage);
    this.imagesKeep = opts.imagesKeep ?? 2;
    this.retainLsns = opts.retainLsns ?? 0;
    this.wallClock = opts.wallClock ?? Date.now;
    this.cache = new PageCache({ slab: opts.slab, pageSize: opts.pageSize, cacheBytesMax: opts.cacheBytesMax });
    this.images = images;
    this.floorLsn = floorLsn;
    this.applied = floorLsn;
    this.appliedTerm = floorLsn === 0 ? 0 : images[0]!.term;
    assert(floorLsn === 0 || images[0]!.lsn === floorLsn, 'a nonzero floor is an image', { floorLsn });
  }

  /**
   * Opens the store: the images named by the 'checkpoint' pointer's range (the newest valid one
   * at or below the pointer; a corrupt one is skipped if an older valid image, or the empty
   * volume, is still covered by the log; otherwise CorruptionError), then indexes the log
   * records after the oldest readable LSN up to `replayUptoLsn` (default `log.lastLsn`).
   * Leftover temp files of interrupted image builds are removed.
   */
  static open(disk: Disk, log: SegmentLog, opts: PageStoreOptions, replayUptoLsn: number = log.lastLsn): PageStore {
    validateOptions(opts);
    if (!Number.isSafeInteger(replayUptoLsn) || replayUptoLsn < log.firstLsn - 1 || replayUptoLsn > log.lastLsn) {
      throw new StorageError('bad_request', `replayUptoLsn ${replayUptoLsn} outside the log [${log.firstLsn - 1}, ${log.lastLsn}]`);
    }
    makeDurableDir(disk, opts.dir);
    const names = disk.list(opts.dir);
    for (const name of names) if (isImageTempFileName(name)) disk.remove(joinPath(opts.dir, name));
    // Images a checkpoint let go whose background removal a crash cut short.
    removeDiscarded(disk, opts.dir, names);

    const meta = new MetaStore(disk, opts.dir);
    const reports: CorruptionReport[] = [];
    const { pointer, unreadable } = pointerOf(meta);
    // Every image file under its final name is complete; without the pointer, any that the log
    // still covers will do.
    const pointerLost = unreadable !== undefined;
    if (pointerLost) reports.push({ file: joinPath(opts.dir, POINTER_NAME), offset: 0, fromLsn: 0, toLsn: 0, reason: `checkpoint pointer unreadable: ${unreadable}` });
    const logFloor = log.firstLsn - 1;
    const floor = Math.max(pointer?.floorLsn ?? 0, logFloor);
    if (replayUptoLsn < floor) {
      throw new StorageError('trimmed', `replayUptoLsn ${replayUptoLsn} is below the retained history (from ${floor})`);
    }
    const ceiling = Math.min(pointer !== undefined ? pointer.lsn : pointerLost ? Number.MAX_SAFE_INTEGER : -1, replayUptoLsn);
    const lsns = names
      .map((n) => parseImageFileName(n))
      .filter((l): l is number => l !== undefined && l >= floor && l <= ceiling)
      .sort((a, b) => a - b);
    if (pointer !== undefined && pointer.lsn <= replayUptoLsn && !lsns.includes(pointer.lsn)) {
      const file = joinPath(opts.dir, imageFileName(pointer.lsn));
      reports.push({ file, offset: 0, fromLsn: pointer.lsn, toLsn: pointer.lsn, reason: 'image named by the checkpoint pointer is missing' });
    }
    const images: ImageReader[] = [];
    const damaged: CorruptionReport[] = [];
    for (const lsn of lsns) {
      const path = joinPath(opts.dir, imageFileName(lsn));
      const known = (opts.damagedImages ?? []).filter((d) => d.file === path);
      if (known.length > 0) {
        reports.push(...known);
        damaged.push(...known);
        continue;
      }
      try {
        images.push(openImage(disk, log, path, lsn, opts));
      } catch (e) {
        if (!(e instanceof CorruptionError)) {
          for (const r of images) r.close();
          throw e;
        }
        reports.push(...e.reports);
        damaged.push(...e.reports);
      }
    }
    if (floor > 0 && images.length === 0) {
      if (pointer === undefined && !pointerLost && names.some((n) => parseImageFileName(n) !== undefined)) {
        // Images without a pointer are not used (a store that started over removes the pointer
        // first): say that it is the pointer that is missing.
        reports.push({ file: joinPath(opts.dir, POINTER_NAME), offset: 0, fromLsn: floor, toLsn: floor, reason: 'checkpoint pointer missing: the images on disk are not used without it' });
      }
      throw new CorruptionError(
        `page store ${opts.dir}: no valid image at or after LSN ${floor} (the log starts at ${log.firstLsn})`,
        reports.length > 0 ? reports : [{ file: opts.dir, offset: 0, fromLsn: floor, toLsn: floor, reason: 'no image covers the trimmed log' }],
      );
    }
    const store = new PageStore(disk, log, opts, images, floor === 0 ? 0 : images[0]!.lsn);
    try {
      store.replay(replayUptoLsn);
    } catch (e) {
      store.close();
      throw e;
    }
    store.damagedImages = damaged;
    store.openDamage = reports;
    return store;
  }

  /**
   * LSN of the newest image the 'checkpoint' pointer of `dir` names (0 if none). A replicated
   * shard replays its log on open only up to here: records after it may not be committed yet.
   */
  static imageLsn(disk: Disk, dir: string): number {
    return readPointer(disk, dir)?.lsn ?? 0;
  }

  /**
   * When the 'checkpoint' pointer of `dir` was written (wall clock, ms since the epoch):
   * every record trimmed from the log, or that an installed image holds, was written before it.
   * Undefined without a readable pointer, or for one written by a build that did not note it.
   */
  static checkpointMadeAtMs(disk: Disk, dir: string): number | undefined {
    return readPointer(disk, dir)?.madeAtMs;
  }

  /** Whether `dir` holds a 'checkpoint' pointer, readable or not (a store's state). */
  static hasPointer(disk: Disk, dir: string): boolean {
    return disk.exists(joinPath(dir, POINTER_NAME));
  }

  /** LSN of the newest image file in `dir` by its name (0 if none); its content is not checked here. */
  static newestImageOnDisk(disk: Disk, dir: string): number {
    let newest = 0;
    for (const name of disk.list(dir)) newest = Math.max(newest, parseImageFileName(name) ?? 0);
    return newest;
  }

  /**
   * Durably removes the 'checkpoint' pointer, then every image file of `dir`: the store of a
   * replica that starts over from nothing (its peers send it everything again). The store must
   * be closed (or not open), and the log reset to start at LSN 1.
   */
  static discardAll(disk: Disk, dir: string): void {
    const names = disk.list(dir);
    if (names.includes(POINTER_NAME)) {
      disk.remove(joinPath(dir, POINTER_NAME));
      disk.fsyncDir(dir);
    }
    for (const name of names) if (parseImageFileName(name) !== undefined) disk.remove(joinPath(dir, name));
    disk.fsyncDir(dir);
  }

  /**
   * Makes the image file `image-<lsn>.img` already in `dir` (complete and synced) the store's
   * newest image and its oldest readable point, for a replica that received it from its leader.
   * The store must be closed, and the log reset to continue at lsn + 1.
   */
  static adoptImage(disk: Disk, dir: string, lsn: number, term: number, madeAtMs: number = Date.now()): void {
    const file = imageFileName(lsn);
    const r = ImageReader.open(disk, joinPath(dir, file));
    try {
      if (r.lsn !== lsn || r.term !== term) {
        throw new CorruptionError(`image ${file}: holds lsn ${r.lsn} term ${r.term}, expected ${lsn}/${term}`, [
          { file, offset: 0, fromLsn: lsn, toLsn: lsn, reason: 'image header does not match' },
        ]);
      }
    } finally {
      r.close();
    }
    const pointer: CheckpointPointer = { version: 1, lsn, term, file, floorLsn: lsn, madeAtMs };
    new MetaStore(disk, dir).write(POINTER_NAME, pointer);
  }

  /** LSN of the last record applied. */
  get appliedLsn(): number {
    return this.applied;
  }

  /**
   * At most the bytes a checkpoint's image would take now: the pages the newest image stores and
   * those whose newest version since holds data (not made zeros), each with its table entry, and
   * the image's header and checksum.
   */
  imageBytesBound(): number {
    const pages = Math.min(this.pageCount, (this.images[this.images.length - 1]?.entries ?? 0) + this.dataPages);
    return IMAGE_BYTES_MIN + pages * (this.pageSize + IMAGE_TABLE_ENTRY_BYTES);
  }

  /** Oldest LSN `getPage` answers; older ones are 'trimmed'. */
  get oldestReadableLsn(): number {
    return this.floorLsn;
  }

  /** Pages in the shard's address space now (page numbers 0..pageCount-1). */
  get pages(): number {
    return this.pageCount;
  }

  /**
   * The volume grew: pages up to `pageCount - 1` are in the address space from now on, and read
   * as zeros at every LSN until written. Fewer pages than it has change nothing (a volume never
   * shrinks). Images written from now on record the new count; older ones keep theirs.
   */
  grow(pageCount: number): void {
    this.checkOpen();
    if (!Number.isSafeInteger(pageCount) || pageCount < 1 || pageCount > IMAGE_PAGE_COUNT_MAX) {
      throw new StorageError('bad_request', `page count ${String(pageCount)} out of 1..${IMAGE_PAGE_COUNT_MAX}`);
    }
    if (pageCount > this.pageCount) this.pageCount = pageCount;
  }

  /**
   * Throws StorageError `invariant` unless the checksum of the page-write `record`'s payload, made
   * from its pages' `crcs` (`pageWritePayloadCrc`), is `expected`: its own checksum, which its log
   * record was written with and its followers check.
   */
  private checkHeldRecord(record: LogRecord, expected: number, crcs: readonly number[]): void {
    const crc = pageWritePayloadCrc(record.payload, this.pageSize, crcs.length, combinePageCrcs(crcs, this.pageSize));
    if (crc !== expected) {
      throw new StorageError('invariant', `record ${record.lsn} held in memory no longer matches its checksum (CRC-32C ${expected}, now ${crc}): not applied`, { lsn: record.lsn });
    }
  }

  /**
   * Applies the next record (its LSN must be appliedLsn + 1). A PageWrite is indexed (its pages
   * are validated first, so a bad record changes nothing); so is a PageZero, for the pages of its
   * range that hold data (`pagesHeldIn`); other kinds only advance appliedLsn.
   * Throws 'out_of_range' for a page outside the shard, 'corruption' for a malformed payload,
   * 'invariant' for a page write whose `payloadCrc` its payload no longer matches (`checkHeldRecord`).
   */
  apply(record: LogRecord): void {
    this.checkOpen();
    assert(record.lsn === this.applied + 1, 'records are applied in LSN order', { lsn: record.lsn, appliedLsn: this.applied });
    if (record.kind === RecordKind.PageWrite) {
      const pages = pagesOfPageWrite(record.payload, this.pageSize);
      for (const page of pages) {
        if (page >= this.pageCount) {
          throw new StorageError('out_of_range', `record ${record.lsn} writes page ${page}, outside 0..${this.pageCount - 1}`, { lsn: record.lsn, page });
        }
      }
      // Each page's checksum, which the cache keeps; with the record's checksum known (a record
      // held in memory since the write made it or an append brought it), they are checked against
      // it first: a page of the record changed in memory since is neither cached nor applied.
      const dataStart = pageWriteDataStart(pages.length);
      const crcs = pageWriteDataCrcs(record.payload, this.pageSize, pages.length);
      if (record.payloadCrc !== undefined) this.checkHeldRecord(record, record.payloadCrc, crcs);
      for (const page of pages) {
        let list = this.versions.get(page);
        if (list === undefined) {
          list = [];
          this.versions.set(page, list);
        }
        const last = list[list.length - 1];
        if (last !== record.lsn) {
          if (last === undefined || this.zeroLsns.has(last)) this.dataPages++;
          list.push(record.lsn);
          this.versionCount++;
        }
      }
      // The written pages are the likeliest to be read next: keep them in the cache as of this
      // record (a later duplicate of a page in the same record wins, as when reading it). The
      // payload's structure was checked when its page numbers were read.
      for (let i = 0; i < pages.length; i++) {
        const at = dataStart + i * this.pageSize;
        this.cache.put(pages[i]!, record.lsn, record.payload.subarray(at, at + this.pageSize), crcs[i]);
      }
    } else if (record.kind === RecordKind.PageZero) {
      const { first, count } = decodePageZero(record.payload);
      if (first + count > this.pageCount) {
        throw new StorageError('out_of_range', `record ${record.lsn} zeros pages ${first}..${first + count - 1}, outside 0..${this.pageCount - 1}`, { lsn: record.lsn, first, count });
      }
      const held = this.pagesHeldIn(first, first + count);
      for (const page of held) {
        let list = this.versions.get(page);
        if (list === undefined) {
          list = [];
          this.versions.set(page, list);
        }
        const last = list[list.length - 1];
        if (last !== undefined && !this.zeroLsns.has(last)) this.dataPages--;
        list.push(record.lsn);
        this.versionCount++;
      }
      this.zeroLsns.add(record.lsn);
    }
    this.applied = record.lsn;
    this.appliedTerm = record.term;
  }

  /**
   * The pages in `first`..`end - 1` that a PageZero record applied now must index: those that
   * may read as anything but zeros at some readable LSN. A page with no retained version that no
   * retained image stores reads as zeros at every readable LSN, and still does after the record
   * without a version of it, as does a page whose newest version is already a zero. So a range
   * over pages never written costs nothing, whatever its length, and zeroing a range again adds
   * no versions: the index grows by at most the pages that hold data. The work is bounded by the
   * smaller of the range and the pages the index and the images hold.
   */
  private pagesHeldIn(first: number, end: number): number[] {
    const out: number[] = [];
    const holds = (page: number): boolean => {
      const list = this.versions.get(page);
      if (list !== undefined) return !this.zeroLsns.has(list[list.length - 1]!);
      for (const img of this.images) if (img.has(page)) return true;
      return false;
    };
    let stored = this.versions.size;
    for (const img of this.images) stored += img.entries;
    if (end - first <= stored) {
      for (let page = first; page < end; page++) if (holds(page)) out.push(page);
      return out;
    }
    const candidates = new Set<number>();
    for (const page of this.versions.keys()) if (page >= first && page < end) candidates.add(page);
    for (const img of this.images) {
      for (let i = img.lowerBound(first); i < img.entries && img.pageAt(i) < end; i++) candidates.add(img.pageAt(i));
    }
    for (const page of candidates) if (holds(page)) out.push(page);
    return out;
  }

  /**
   * The pages in `first`..`end - 1` that may read as anything but zeros as of appliedLsn (those
   * whose newest version writes them, or that the newest image stores and no newer version made
   * zeros), as pairs `[first, count, …]`, ascending, apart. At most `rangesMax` ranges: past
   * them the answer is cut short, and its `end` is the first page of the range left out. Memory
   * only (the index and the images' tables), no disk read; the work is bounded by the smaller of
   * the range and the pages the index and the newest image hold, and by `scanPagesMax`: a range
   * looked at page by page (no longer than the pages held) is cut short after that many pages,
   * and of a longer one at most that many of the newest image's pages are taken (its table is
   * sorted), the answer ending at the next.
   */
  pagesWithData(first: number, end: number, rangesMax: number, scanPagesMax = MAP_SCAN_PAGES_MAX): { end: number; ranges: number[] } {
    this.checkOpen();
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(end) || first < 0 || end <= first || end > this.pageCount) {
      throw new StorageError('out_of_range', `pages ${first}..${end - 1} are not a range of 0..${this.pageCount - 1}`, { first, end });
    }
    if (!Number.isSafeInteger(rangesMax) || rangesMax < 1) throw new StorageError('bad_request', `rangesMax ${rangesMax}: at least 1`);
    if (!Number.isSafeInteger(scanPagesMax) || scanPagesMax < 1) throw new StorageError('bad_request', `scanPagesMax ${scanPagesMax}: at least 1`);
    const newest = this.images[this.images.length - 1];
    const holds = (page: number): boolean => {
      const list = this.versions.get(page);
      const v = list?.[list.length - 1];
      if (v !== undefined && (newest === undefined || v > newest.lsn)) return !this.zeroLsns.has(v);
      return newest?.has(page) ?? false;
    };
    const ranges: number[] = [];
    // Adds `page` (ascending); false once it would start a range past rangesMax.
    const add = (page: number): boolean => {
      const n = ranges.length;
      if (n > 0 && ranges[n - 2]! + ranges[n - 1]! === page) {
        ranges[n - 1]!++;
        return true;
      }
      if (n / 2 === rangesMax) return false;
      ranges.push(page, 1);
      return true;
    };
    const stored = this.versions.size + (newest?.entries ?? 0);
    if (end - first <= stored) {
      const stop = Math.min(end, first + scanPagesMax);
      for (let page = first; page < stop; page++) if (holds(page) && !add(page)) return { end: page, ranges };
      return { end: stop, ranges };
    }
    // The pages the newest image stores in the range, at most scanPagesMax of them (its table is
    // sorted: past them the answer stops at the next one), and the pages of the index before that.
    let stop = end;
    const candidates = new Set<number>();
    if (newest !== undefined) {
      const from = newest.lowerBound(first);
      for (let i = from; i < newest.entries && newest.pageAt(i) < end; i++) {
        if (i - from === scanPagesMax) {
          stop = newest.pageAt(i);
          break;
        }
        candidates.add(newest.pageAt(i));
      }
    }
    for (const page of this.versions.keys()) if (page >= first && page < stop) candidates.add(page);
    for (const page of [...candidates].sort((a, b) => a - b)) if (holds(page) && !add(page)) return { end: page, ranges };
    return { end: stop, ranges };
  }

  /**
   * The content of `page` as of `lsn` (default appliedLsn), copied into `out` (or a new buffer)
   * and returned. Zeros if never written. Errors: 'out_of_range' (page), 'future_lsn'
   * (lsn > appliedLsn), 'trimmed' (lsn < oldestReadableLsn), 'bad_request' (lsn or out malformed),
   * 'corruption' (an image page or log record failed its checksum).
   */
  getPage(page: number, lsn?: number, out?: Uint8Array): Uint8Array {
    this.checkOpen();
    this.checkPage(page);
    const at = this.checkLsn(lsn);
    if (out !== undefined && out.length !== this.pageSize) {
      throw new StorageError('bad_request', `output buffer is ${out.length} bytes, not ${this.pageSize}`);
    }
    const buf = out ?? new Uint8Array(this.pageSize);
    this.readPagesAt([page], at, [buf], []);
    return buf;
  }

  /**
   * Vectored GetPage@LSN: `result[i]` is `pages[i]` as of `lsn`. Image pages missing from the
   * cache are read with coalesced disk reads; each needed log record is read once.
   * At most GET_PAGES_MAX pages ('too_large' beyond). Errors as `getPage`.
   */
  getPages(pages: readonly number[], lsn?: number): Uint8Array[] {
    return this.getPagesChecked(pages, lsn).pages;
  }

  /**
   * `getPages`, with the CRC-32C of the pages in order (PAGE_DATA_CRC) made from the checksums
   * each page was checked against: the cache's of a cached page, its image's, or that of its
   * page in its log record, whose checksum was made from its pages' (LogReadOptions.payloadCrc),
   * not from the pages returned. A page that changes in memory after its check (in the image's
   * read buffer, the record's, or its copy out) fails it.
   */
  getPagesChecked(pages: readonly number[], lsn?: number): CachedPages {
    const at = this.checkGetPages(pages, lsn);
    const outs = pages.map(() => new Uint8Array(this.pageSize));
    const crcs = new Array<number>(pages.length);
    this.readPagesAt(pages, at, outs, crcs);
    return { pages: outs, crc: combinePageCrcs(crcs, this.pageSize) };
  }

  /** `outs[i]` gets `pages[i]` as of `at` (checked), and `crcs[i]` its checksum (getPagesChecked). */
  private readPagesAt(pages: readonly number[], at: number, outs: readonly Uint8Array[], crcs: number[]): void {
    const byImage = new Map<ImageReader, { idx: number[]; keys: number[] }>();
    const byRecord = new Map<number, number[]>();
    for (let i = 0; i < pages.length; i++) {
      const page = pages[i]!;
      const src = this.locate(page, at);
      if (src.kind === 'log') {
        if (this.cache.get(page, src.lsn, outs[i]!)) {
          crcs[i] = this.cache.lastCrc;
          continue;
        }
        const idx = byRecord.get(src.lsn) ?? [];
        idx.push(i);
        byRecord.set(src.lsn, idx);
      } else if (src.kind === 'image') {
        if (this.cache.get(page, src.key, outs[i]!)) {
          crcs[i] = this.cache.lastCrc;
          continue;
        }
        const group = byImage.get(src.reader) ?? { idx: [], keys: [] };
        group.idx.push(i);
        group.keys.push(src.key);
        byImage.set(src.reader, group);
      } else {
        outs[i]!.fill(0);
        crcs[i] = this.zeroPageCrc;
      }
    }
    for (const [reader, group] of byImage) {
      const groupCrcs = new Array<number>(group.idx.length);
      const found = reader.readPages(group.idx.map((i) => pages[i]!), group.idx.map((i) => outs[i]!), groupCrcs);
      for (let k = 0; k < group.idx.length; k++) {
        const i = group.idx[k]!;
        if (found[k]) {
          crcs[i] = groupCrcs[k]!;
          this.cache.put(pages[i]!, group.keys[k]!, outs[i]!, crcs[i]);
        } else crcs[i] = this.zeroPageCrc;
      }
    }
    for (const [v, idx] of byRecord) this.readRecordPages(v, pages, idx, outs, crcs);
  }

  /**
   * For each i of `idx`: copies the data record `lsn` leaves in `pages[i]` into `outs[i]`, gives
   * `crcs[i]` its checksum (`pageOfRecord`) and caches it with it.
   */
  private readRecordPages(lsn: number, pages: readonly number[], idx: readonly number[], outs: readonly Uint8Array[], crcs: number[]): void {
    const record = this.readRecordChecked(lsn);
    for (const i of idx) {
      const { data, crc } = this.pageOfRecord(record, lsn, pages[i]!);
      outs[i]!.set(data);
      crcs[i] = crc;
      this.cache.put(pages[i]!, lsn, outs[i]!, crc);
    }
  }

  /**
   * The data record `lsn` read from the log; a page write's with its pages' checksums, made as it
   * was read, and from which its record checksum was checked (LogReadOptions.payloadCrc).
   */
  private readRecordChecked(lsn: number): CheckedRecord {
    let held: PageWriteCrcs | undefined;
    const payload = this.readRecordPayload(lsn, (kind, data) => {
      if (kind !== RecordKind.PageWrite) return undefined;
      held = pageWriteCrcs(data, this.pageSize);
      return held?.payloadCrc;
    });
    return { payload, held };
  }

  /**
   * The data (a view, not to be written to) `record` leaves in `page`, and its checksum: for a
   * page write, the one its record was checked from; for a page zero, the zero page's.
   */
  private pageOfRecord(record: CheckedRecord, lsn: number, page: number): { data: Uint8Array; crc: number } {
    const held = record.held;
    const k = held?.pages.lastIndexOf(page) ?? -1;
    if (held !== undefined && k >= 0) {
      const start = pageWriteDataStart(held.pages.length) + k * this.pageSize;
      return { data: record.payload.subarray(start, start + this.pageSize), crc: held.crcs[k]! };
    }
    // A page zero, or a record that does not write the page as indexed (recordPage throws).
    const data = this.recordPage(record.payload, lsn, page);
    return { data, crc: data === this.zeroPage ? this.zeroPageCrc : crc32c(data) };
  }

  /**
   * `getPages` from memory alone: the pages as of `lsn` if each one is cached or was never
   * written; undefined if any would need a disk read (the caller then queues `getPages` on the
   * device, so disk reads stay in the device's queue). A miss leaves the cache counters alone.
   * Errors as `getPage`.
   */
  getPagesCached(pages: readonly number[], lsn?: number): CachedPages | undefined {
    const at = this.checkGetPages(pages, lsn);
    // The version each page is cached as, or -1 for a page never written (zeros).
    const versions = new Array<number>(pages.length);
    for (let i = 0; i < pages.length; i++) {
      const src = this.locate(pages[i]!, at);
      const v = src.kind === 'log' ? src.lsn : src.kind === 'image' ? src.key : -1;
      if (v >= 0 && !this.cache.has(pages[i]!, v)) return undefined;
      versions[i] = v;
    }
    const outs = new Array<Uint8Array>(pages.length);
    let crc = 0;
    for (let i = 0; i < pages.length; i++) {
      // A page read out of memory lives until its reply is encoded: from the arena.
      const out = requestArena.alloc(this.pageSize);
      const v = versions[i]!;
      // A page whose copy did not match its checksum was dropped from the cache: read from disk.
      if (v >= 0 && !this.cache.get(pages[i]!, v, out)) return undefined;
      crc = crc32cCombine(crc, v >= 0 ? this.cache.lastCrc : this.zeroPageCrc, this.pageSize);
      outs[i] = out;
    }
    return { pages: outs, crc };
  }

  private checkGetPages(pages: readonly number[], lsn: number | undefined): number {
    this.checkOpen();
    if (pages.length > GET_PAGES_MAX) {
      throw new StorageError('too_large', `getPages of ${pages.length} pages exceeds ${GET_PAGES_MAX}`, { count: pages.length });
    }
    for (const page of pages) this.checkPage(page);
    return this.checkLsn(lsn);
  }

  /**
   * Writes an image at appliedLsn (the newest image folded with the PageWrite records after it),
   * atomically moves the 'checkpoint' pointer to it, deletes the images retention no longer
   * needs, drops the version index below the new oldest readable LSN and trims the log up to it.
   * Retention keeps the newest `imagesKeep` bases, the newest base <= appliedLsn - retainLsns
   * and the base after it; the oldest kept base is the new oldest readable LSN. No-op if the newest image is at
   * appliedLsn already. The log is synced up to appliedLsn first: an image never gets ahead of
   * the durable log. Runs `checkpointSteps` to the end.
   */
  checkpoint(opts: { imagesKeep?: number; sealLog?: boolean } = {}): { lsn: number; file: string } {
    const steps = this.checkpointSteps(opts);
    for (;;) {
      const r = steps.next();
      if (r.done === true) return r.value;
    }
  }

  /**
   * After an open that went past a damaged 'checkpoint' pointer (unreadable, or naming an image
   * that is gone) and a checkpoint that wrote none (the newest image was the applied LSN):
   * writes the pointer again for the newest image and this store's floor, without a time (as
   * the damaged one's is not known; the next checkpoint notes one). Without images it removes the
   * pointer: the store is the empty volume's. Does nothing when the pointer reads and names a
   * file on disk.
   */
  repointAfterOpen(): void {
    this.checkOpen();
    assert(!this.checkpointing, 'no checkpoint while the pointer is written again');
    const { pointer, unreadable } = pointerOf(this.meta);
    if (unreadable === undefined && (pointer === undefined || this.disk.exists(joinPath(this.dir, pointer.file)))) return;
    const newest = this.images[this.images.length - 1];
    if (newest === undefined) {
      this.disk.remove(joinPath(this.dir, POINTER_NAME));
      this.disk.fsyncDir(this.dir);
      return;
    }
    // Without `madeAtMs`: when the records the log no longer holds were written is not known.
    this.meta.write(POINTER_NAME, { version: 1, lsn: newest.lsn, term: newest.term, file: imageFileName(newest.lsn), floorLsn: this.floorLsn } satisfies CheckpointPointer);
  }

  /**
   * `checkpoint` in steps, each bounded so that the device's thread is not held long: the first
   * syncs the log if it must and takes the version of at most CHECKPOINT_COLLECT_PAGES pages;
   * then one step per further CHECKPOINT_COLLECT_PAGES pages; one that creates the image file;
   * one per FOLD_BATCH_PAGES pages folded into it; one that flushes the last buffer; one that
   * finishes the image; one that switches to it (the durable pointer); then, when there is
   * anything to clean up, one that lets go of the images retention no longer keeps, and one per
   * log segment trimmed. Between steps the store may apply records and serve reads: the image
   * is of the applied LSN when the first step ran, and nothing but the checkpoint changes the
   * images, the floor or the log's prefix. One checkpoint at a time, and none while an image
   * export runs (`exportImageSteps`): 'invariant' otherwise.
   * The store closed between steps before the switch: the next step throws 'closed'; after it,
   * the checkpoint ends with its result and the next checkpoint cleans up. Ended early
   * (`return()`, a failed step), the half-written image is removed (or, when that fails too,
   * left for the next open to remove).
   *
   * With `flushOffThread`, the image's buffers are flushed by the disk's `fdatasyncAsync`: a
   * step may yield that flush, and the driver awaits it (a rejection: end the checkpoint with
   * `return()`) before the next step. Without, no step yields anything.
   *
   * `imagesKeep`: this checkpoint keeps fewer of the newest images than the store does (at least
   * 1; `retainLsns` still holds): a device short of space lets the history behind its newest
   * image go, and the log that holds it. `sealLog`: when the new floor is the log's last record
   * and the log's active segment holds at least a sixteenth of a segment, that segment is sealed
   * (a step) so that it goes too (a segment goes whole, and the active one never).
   */
  *checkpointSteps(opts: { flushOffThread?: boolean; imagesKeep?: number; sealLog?: boolean } = {}): Generator<CheckpointStep, { lsn: number; file: string }, void> {
    this.checkOpen();
    const keep = opts.imagesKeep ?? this.imagesKeep;
    if (!(Number.isSafeInteger(keep) && keep >= 1 && keep <= this.imagesKeep)) {
      throw new StorageError('bad_request', `imagesKeep of a checkpoint must be an integer in [1, ${this.imagesKeep}], got ${String(opts.imagesKeep)}`);
    }
    assert(!this.checkpointing, 'one checkpoint or image export at a time');
    const lsn = this.applied;
    const term = this.appliedTerm;
    const newest = this.images[this.images.length - 1];
    if ((newest?.lsn ?? 0) === lsn) return { lsn, file: newest === undefined ? '' : imageFileName(lsn) };
    if (this.log.syncedLsn < lsn) this.log.sync();
    assert(this.log.syncedLsn >= lsn, 'the log is durable up to the image', { syncedLsn: this.log.syncedLsn, lsn });
    this.checkpointing = true;
    try {
      const written = yield* this.buildImageSteps(this.dir, lsn, term, newest ?? null, opts.flushOffThread === true);
      // Closed while the image was finished: it stays unused (the next checkpoint removes it).
      yield;
      this.checkOpen();
      return yield* this.switchToImageSteps(lsn, term, written, keep, opts.sealLog === true);
    } finally {
      this.checkpointing = false;
    }
  }

  /**
   * Writes this store's pages as of `lsn` into a new image file `image-<lsn>.img` in `destDir`:
   * the start of a branch, a volume created from this one at `lsn`, whose replica on this device
   * starts from that image in its own shard directory (`destDir`, on the same disk, created by
   * the caller; then ShardStorage.seedFromImage). Runs `exportImageSteps` to the end.
   */
  exportImage(lsn: number, destDir: string, opts: { term?: number; pageCount?: number } = {}): { lsn: number; path: string } {
    const steps = this.exportImageSteps(lsn, destDir, opts);
    for (;;) {
      const r = steps.next();
      if (r.done === true) return r.value;
    }
  }

  /**
   * `exportImage` in steps. The image holds every page as of `lsn` (all-zero pages left out:
   * at LSN 0, or with every page zero, it holds none), in its header `lsn`, `opts.term` (default
   * 0; the term of the record at `lsn` is what a branch gives, and LSN 0 has term 0) and this
   * store's page size and count. It is built as a checkpoint's is, in the same bounded steps
   * (see `checkpointSteps`, `flushOffThread` included): the fold of the newest image at or below
   * `lsn` (the empty volume when there is none, which only happens while the floor is 0) with
   * the versions of the pages up to `lsn`, written under a temporary name, flushed, renamed into
   * place and its directory fsync'd by the last step, which returns the LSN and the path.
   *
   * `lsn` must be readable, `oldestReadableLsn <= lsn <= appliedLsn`: 'trimmed' below,
   * 'future_lsn' above, 'bad_request' for an LSN, term or destination that is malformed (or is
   * this store's own directory, or does not exist); the first step throws them, before anything
   * is created.
   *
   * It changes nothing of this store: no image, pointer, floor, version, cache entry or log
   * segment. Between steps the store may apply records and serve reads; the image is still of
   * `lsn` (the fold takes each page's newest version at or below it, and records applied
   * meanwhile only add newer ones). The images and the versions it folds stay because it
   * counts as a checkpoint for the one-at-a-time rule: a checkpoint started while an export
   * runs, or an export started while a checkpoint or another export runs, fails with
   * 'invariant', as a second checkpoint does. The store closed between steps: the next step
   * throws 'closed'. Ended early (`return()`, a failed step), the partial image is removed (or,
   * when that fails too, its temporary file is left; the next open of the store in `destDir`
   * removes it): a file under the image's name is always complete.
   *
   * The records up to `lsn` are applied, hence committed: unlike a checkpoint, the export does
   * not sync this store's log first (the image does not become this store's state).
   */
  *exportImageSteps(lsn: number, destDir: string, opts: { term?: number; flushOffThread?: boolean; pageCount?: number } = {}): Generator<CheckpointStep, { lsn: number; path: string }, void> {
    this.checkOpen();
    assert(!this.checkpointing, 'one checkpoint or image export at a time');
    if (typeof lsn !== 'number') throw new StorageError('bad_request', `export lsn ${String(lsn)} is not a non-negative integer`);
    const at = this.checkLsn(lsn);
    const term = opts.term ?? 0;
    if (!Number.isSafeInteger(term) || term < 0) throw new StorageError('bad_request', `export term ${String(term)} is not a non-negative integer`);
    if (at === 0 && term !== 0) throw new StorageError('bad_request', `export term ${term} at LSN 0, whose term is 0`);
    if (typeof destDir !== 'string' || destDir.length === 0) throw new StorageError('bad_request', 'export destination dir is empty');
    if (destDir.replace(/\/+$/, '') === this.dir.replace(/\/+$/, '')) {
      throw new StorageError('bad_request', `export destination ${destDir} is the page store's own dir`);
    }
    if (!this.disk.exists(destDir)) throw new StorageError('bad_request', `export destination dir ${destDir} does not exist`);
    // The branch's size in its header, when it has fewer pages than this store (it grew since the
    // branch's size was taken): every page the image holds is within it, or the export fails.
    const pageCount = opts.pageCount ?? this.pageCount;
    if (!Number.isSafeInteger(pageCount) || pageCount < 1 || pageCount > this.pageCount) {
      throw new StorageError('bad_request', `export page count ${String(pageCount)} out of 1..${this.pageCount}`);
    }
    let base: ImageReader | null = null;
    for (const r of this.images) if (r.lsn <= at) base = r;
    assert(base !== null || this.floorLsn === 0, 'a readable LSN has a base', { lsn: at });
    this.checkpointing = true;
    try {
      const path = yield* this.buildImageSteps(destDir, at, term, base, opts.flushOffThread === true, pageCount);
      return { lsn: at, path };
    } finally {
      this.checkpointing = false;
    }
  }

  /**
   * Last steps of a checkpoint: the image written at `lsn` becomes the newest (one step), then
   * the images retention lets go are discarded (a step, if any) and the log is trimmed (a step
   * per segment).
   */
  private *switchToImageSteps(lsn: number, term: number, written: string, imagesKeep: number, sealLog: boolean): Generator<CheckpointStep, { lsn: number; file: string }, void> {
    const reader = ImageReader.open(this.disk, written);
    const bases: Base[] = [];
    if (this.floorLsn === 0) bases.push({ lsn: 0, reader: null });
    for (const r of this.images) bases.push({ lsn: r.lsn, reader: r });
    bases.push({ lsn, reader });
    const recent = bases.slice(Math.max(0, bases.length - imagesKeep));
    // The retention base: the newest base at or below lsn - retainLsns (else the oldest one, the
    // current floor). Its successor is kept too, so that the base can move forward to it once
    // the window passes it: without it every image in the window would be deleted and the base
    // could never advance.
    let baseIdx = 0;
    for (let i = 0; i < bases.length; i++) if (bases[i]!.lsn <= lsn - this.retainLsns) baseIdx = i;
    const kept = new Set<Base>([...recent, bases[baseIdx]!]);
    if (baseIdx + 1 < bases.length) kept.add(bases[baseIdx + 1]!);
    const floor = Math.min(...[...kept].map((b) => b.lsn));
    assert(floor >= this.floorLsn, 'the oldest readable LSN never goes back', { floor, floorLsn: this.floorLsn });

    try {
      const madeAtMs = this.wallClock();
      this.meta.write(POINTER_NAME, { version: 1, lsn, term, file: imageFileName(lsn), floorLsn: floor, madeAtMs } satisfies CheckpointPointer);
    } catch (e) {
      reader.close();
      throw e;
    }
    // The pointer is durable: switch the in-memory state, then clean up (a failure from here on
    // leaves files that the next checkpoint or open disregards).
    const keptReaders = bases.filter((b) => kept.has(b) && b.reader !== null).map((b) => b.reader!);
    const dropped = this.images.filter((r) => !keptReaders.includes(r));
    this.images = keptReaders;
    this.floorLsn = floor;
    // After the switch, so that a close that fails leaves the store on its new image (the
    // handle is lost either way; it is counted as a failed clean-up).
    for (const r of dropped) {
      try {
        r.close();
      } catch {
        this.onDiscardError();
      }
    }
    assert(floor === 0 || this.images[0]!.lsn === floor, 'the floor is a kept image');

    const result = { lsn, file: imageFileName(lsn) };

    // The versions at or below the floor, CHECKPOINT_COLLECT_PAGES pages of the index per step
    // (one pass over a million pages held the thread for hundreds of ms). Until dropped they
    // are never used: every readable LSN has an image at or above them, and a read takes a
    // page's version only when it is newer than its image.
    let seen = 0;
    for (const [page, list] of this.versions) {
      if (seen % CHECKPOINT_COLLECT_PAGES === 0) {
        yield;
        if (this.closed) return result;
      }
      seen++;
      let n = 0;
      while (n < list.length && list[n]! <= floor) n++;
      if (n === 0) continue;
      this.versionCount -= n;
      if (n === list.length) {
        this.versions.delete(page);
        if (!this.zeroLsns.has(list[n - 1]!)) this.dataPages--;
      } else list.splice(0, n);
    }
    assert(this.versionCount >= 0 && this.dataPages >= 0, 'version and page counts stay non-negative', { versionCount: this.versionCount, dataPages: this.dataPages });
    for (const z of this.zeroLsns) if (z <= floor) this.zeroLsns.delete(z);

    // The cache's entries below the floor, CHECKPOINT_COLLECT_PAGES entries per step (one pass
    // over a 256 MiB cache took 24 ms). No read reaches them any more; until dropped they only
    // take room.
    const cacheDrop = this.cache.dropBelowSteps(floor, CHECKPOINT_COLLECT_PAGES);
    while (cacheDrop.next().done !== true) {
      yield;
      if (this.closed) return result;
    }

    // Clean-up, each part a step of its own (a rename and a directory fsync each, 2–5 ms). The
    // checkpoint is done: closed in between, it ends with its result, and the next checkpoint
    // lets go of what is left (it lists every image file, and trims up to its own floor).
    const keptLsns = new Set(this.images.map((r) => r.lsn));
    const names = this.disk.list(this.dir).filter((name) => {
      const l = parseImageFileName(name);
      return l !== undefined && !keptLsns.has(l);
    });
    if (names.length > 0) {
      yield;
      if (this.closed) return result;
      // Their blocks are freed in the background, off this thread (as the log's trimmed segments).
      const gone: Discarded[] = names.map((name) => discardFile(this.disk, joinPath(this.dir, name)));
      this.disk.fsyncDir(this.dir);
      removeInBackground(this.disk, gone, this.onDiscardError);
    }
    if (sealLog && floor > 0 && floor === this.log.lastLsn && this.log.activeBytes * 16 >= this.log.activeBytesMax) {
      yield;
      if (this.closed) return result;
      if (floor === this.log.lastLsn) this.log.sealActive();
    }
    if (floor > 0) {
      while (this.log.canTrimPrefix(floor)) {
        yield;
        if (this.closed) return result;
        this.log.trimPrefix(floor, 1);
      }
    }
    return result;
  }

  stats(): PageStoreStats {
    const c = this.cache.stats();
    return {
      appliedLsn: this.applied,
      imageLsn: this.images[this.images.length - 1]?.lsn ?? 0,
      oldestReadableLsn: this.floorLsn,
      images: this.images.length,
      cache: { hits: c.hits, misses: c.misses, evictions: c.evictions, damaged: c.damaged, bytes: c.bytes, bytesMax: c.bytesMax },
      versions: this.versionCount,
      discardFailures: this.discardFailures,
      imageBytes: this.images.reduce((sum, r) => sum + r.fileBytes, 0),
      imagePages: this.images[this.images.length - 1]?.entries ?? 0,
    };
  }

  /** Closes the images and frees the cache's slab slots. The log stays open (its owner closes it). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const r of this.images) r.close();
    this.images = [];
    this.cache.clear();
  }

  // ---- internals ----

  private replay(uptoLsn: number): void {
    let next = this.applied + 1;
    while (next <= uptoLsn) {
      const records = this.log.read(next, uptoLsn, { bytesMax: REPLAY_READ_BYTES_MAX });
      assert(records.length > 0, 'log read makes progress', { next, uptoLsn });
      for (const r of records) this.apply(r);
      next = this.applied + 1;
    }
    assert(this.applied === uptoLsn, 'replay reached its target', { applied: this.applied, uptoLsn });
  }

  private locate(page: number, lsn: number):
    | { kind: 'log'; lsn: number }
    | { kind: 'image'; reader: ImageReader; key: number }
    | { kind: 'zero' } {
    let reader: ImageReader | undefined;
    for (let i = this.images.length - 1; i >= 0; i--) {
      if (this.images[i]!.lsn <= lsn) {
        reader = this.images[i]!;
        break;
      }
    }
    assert(reader !== undefined || this.floorLsn === 0, 'a readable LSN has a base', { lsn });
    const baseLsn = reader?.lsn ?? 0;
    const v = this.newestVersion(page, lsn);
    if (v !== undefined && v > baseLsn) return this.zeroLsns.has(v) ? { kind: 'zero' } : { kind: 'log', lsn: v };
    if (reader !== undefined) return { kind: 'image', reader, key: v ?? reader.lsn };
    return { kind: 'zero' };
  }

  /** Newest retained version of `page` that is <= lsn. */
  private newestVersion(page: number, lsn: number): number | undefined {
    const list = this.versions.get(page);
    if (list === undefined) return undefined;
    let lo = 0;
    let hi = list.length - 1;
    let found: number | undefined;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]! <= lsn) {
        found = list[mid];
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  private readRecordPayload(lsn: number, payloadCrc: LogReadOptions['payloadCrc']): Uint8Array {
    const records = this.log.read(lsn, lsn, { payloadCrc });
    const r = records[0];
    if (records.length !== 1 || r === undefined || r.lsn !== lsn) {
      throw new StorageError('corruption', `log read of record ${lsn} returned ${records.length} records`, { lsn });
    }
    if (r.kind !== RecordKind.PageWrite && r.kind !== RecordKind.PageZero) {
      throw new StorageError('corruption', `record ${lsn} indexed as a page write has kind ${r.kind}`, { lsn });
    }
    return r.payload;
  }

  /** The data record `lsn` (a PageWrite or a PageZero) leaves in `page`: a view, not to be written to. */
  private recordPage(payload: Uint8Array, lsn: number, page: number): Uint8Array {
    if (isPageZero(payload)) {
      const { first, count } = decodePageZero(payload);
      if (page < first || page >= first + count) throw new StorageError('corruption', `record ${lsn} does not zero page ${page} as indexed`, { lsn, page });
      return this.zeroPage;
    }
    const data = pageDataOfPageWrite(payload, this.pageSize, page);
    if (data === undefined) throw new StorageError('corruption', `record ${lsn} does not write page ${page} as indexed`, { lsn, page });
    return data;
  }

  /**
   * Folds `base` (null: the empty volume) with the versions after it into an image at `lsn` in
   * `dir` (the store's own for a checkpoint, another shard's for an export), yielding between
   * bounded steps (see `checkpointSteps`); returns the image's path. The caller holds the
   * one-at-a-time flag (`checkpointing`), so that the images and the versions up to `lsn` stay.
   */
  private *buildImageSteps(dir: string, lsn: number, term: number, base: ImageReader | null, flushOffThread: boolean, pageCount = this.pageCount): Generator<CheckpointStep, string, void> {
    const baseLsn = base?.lsn ?? 0;
    // The pages written after the base as of `lsn`, in sorted runs. Records applied between
    // steps only add versions newer than `lsn` (and pages with no other), which the image leaves
    // out: a page's versions up to `lsn` do not change until this checkpoint drops some.
    const runs: Float64Array[] = [];
    let run = new Float64Array(CHECKPOINT_COLLECT_PAGES);
    let used = 0;
    let changedCount = 0;
    let inBase = 0;
    let seen = 0;
    for (const page of this.versions.keys()) {
      if (seen > 0 && seen % CHECKPOINT_COLLECT_PAGES === 0) {
        yield;
        this.checkOpen();
      }
      seen++;
      const v = this.newestVersion(page, lsn);
      if (v === undefined || v <= baseLsn) continue;
      run[used++] = page;
      changedCount++;
      if (base !== null && base.has(page)) inBase++;
      if (used === run.length) {
        runs.push(run.sort());
        run = new Float64Array(CHECKPOINT_COLLECT_PAGES);
        used = 0;
      }
    }
    if (used > 0) runs.push(run.subarray(0, used).sort());
    const changed = new SortedRuns(runs);
    // Pages stored at most: |base pages ∪ changed pages|.
    const baseCount = base?.entries ?? 0;
    const entriesMax = baseCount + changedCount - inBase;
    yield;
    this.checkOpen();
    const writer = ImageWriter.create(this.disk, { dir, lsn, term, pageSize: this.pageSize, pageCount, entriesMax: Math.min(entriesMax, pageCount), flushOffThread });
    let finished = false;
    try {
      const bufs = Array.from({ length: FOLD_BATCH_PAGES }, () => new Uint8Array(this.pageSize));
      const records = new Map<number, CheckedRecord>(); // LRU of records read
      let recordBytes = 0;
      const recordOf = (v: number): CheckedRecord => {
        let r = records.get(v);
        if (r !== undefined) {
          records.delete(v);
          records.set(v, r);
          return r;
        }
        r = this.readRecordChecked(v);
        while (records.size > 0 && recordBytes + r.payload.length > FOLD_RECORD_CACHE_BYTES_MAX) {
          const [oldest, dropped] = records.entries().next().value as [number, CheckedRecord];
          records.delete(oldest);
          recordBytes -= dropped.payload.length;
        }
        records.set(v, r);
        recordBytes += r.payload.length;
        return r;
      };
      // Each page goes into the image with the checksum it was checked against where it was read.
      const crcs = new Array<number>(FOLD_BATCH_PAGES);
      let i = 0;
      while (i < baseCount || !changed.empty) {
        // Creating the file was a step of its own; so is every batch. A buffer the last batch
        // wrote is flushed off the thread: the next batch waits for it.
        yield writer.takeFlush();
        // Closed between steps: its images (the base among them) are closed too.
        this.checkOpen();
        // One batch: up to FOLD_BATCH_PAGES pages in ascending order.
        const batch: { page: number; v: number | undefined }[] = [];
        while (batch.length < FOLD_BATCH_PAGES && (i < baseCount || !changed.empty)) {
          const a = i < baseCount ? base!.pageAt(i) : Infinity;
          const b = changed.empty ? Infinity : changed.peek();
          if (b <= a) {
            changed.pop();
            batch.push({ page: b, v: this.newestVersion(b, lsn)! });
            if (a === b) i++;
          } else {
            batch.push({ page: a, v: undefined });
            i++;
          }
        }
        const fromImage = batch.map((_, k) => k).filter((k) => batch[k]!.v === undefined);
        if (fromImage.length > 0) {
          const imageCrcs = new Array<number>(fromImage.length);
          const found = base!.readPages(fromImage.map((k) => batch[k]!.page), fromImage.map((k) => bufs[k]!), imageCrcs);
          assert(found.every((f) => f), 'base image pages listed in its table are found');
          fromImage.forEach((k, j) => (crcs[k] = imageCrcs[j]!));
        }
        for (let k = 0; k < batch.length; k++) {
          const { page, v } = batch[k]!;
          // A page a PageZero record zeroed is not stored (as any page of zeros).
          if (v !== undefined && this.zeroLsns.has(v)) continue;
          if (v !== undefined) {
            const { data, crc } = this.pageOfRecord(recordOf(v), v, page);
            bufs[k]!.set(data);
            crcs[k] = crc;
          }
          if (page >= pageCount) throw new StorageError('out_of_range', `page ${page} is past the ${pageCount} pages of the image`, { page, pageCount });
          writer.addPage(page, bufs[k]!, crcs[k]!);
        }
      }
      // Flushing the last buffer, finishing (the header and table, their flush, the rename) and
      // the switch to the new image are steps of their own: together with the last batch they
      // held the device's thread for 45–56 ms on a 16 MiB shard.
      yield writer.takeFlush();
      this.checkOpen();
      writer.flushBuffered();
      yield writer.takeFlush();
      this.checkOpen();
      const path = writer.finish().path;
      finished = true;
      return path;
    } finally {
      // A failed or abandoned build (abort is best effort: the next open removes temp files).
      if (!finished) writer.abort();
    }
  }


  private checkOpen(): void {
    if (this.closed) throw new StorageError('closed', `page store ${this.dir} is closed`);
  }

  private checkPage(page: number): void {
    if (!Number.isSafeInteger(page) || page < 0 || page >= this.pageCount) {
      throw new StorageError('out_of_range', `page ${String(page)} outside 0..${this.pageCount - 1}`, { page });
    }
  }

  private checkLsn(lsn: number | undefined): number {
    if (lsn === undefined) return this.applied;
    if (!Number.isSafeInteger(lsn) || lsn < 0) throw new StorageError('bad_request', `lsn ${String(lsn)} is not a non-negative integer`);
    if (lsn > this.applied) throw new StorageError('future_lsn', `lsn ${lsn} is after the applied LSN ${this.applied}`, { lsn, appliedLsn: this.applied });
    if (lsn < this.floorLsn) throw new StorageError('trimmed', `lsn ${lsn} is before the oldest readable LSN ${this.floorLsn}`, { lsn, oldestReadableLsn: this.floorLsn });
    return lsn;
  }
}

function validateOptions(opts: PageStoreOptions): void {
  if (opts.pageSize !== 4096 && opts.pageSize !== 8192) throw new StorageError('bad_request', `page size ${String(opts.pageSize)} is not 4096 or 8192`);
  if (!Number.isSafeInteger(opts.pageCount) || opts.pageCount < 1 || opts.pageCount > IMAGE_PAGE_COUNT_MAX) {
    throw new StorageError('bad_request', `page count ${opts.pageCount} out of 1..${IMAGE_PAGE_COUNT_MAX}`);
  }
  if (!Number.isSafeInteger(opts.cacheBytesMax) || opts.cacheBytesMax < 0) throw new StorageError('bad_request', `cacheBytesMax ${opts.cacheBytesMax} is not a non-negative integer`);
  const keep = opts.imagesKeep ?? 2;
  if (!Number.isSafeInteger(keep) || keep < 1 || keep > IMAGES_KEEP_MAX) throw new StorageError('bad_request', `imagesKeep ${keep} out of 1..${IMAGES_KEEP_MAX}`);
  const retain = opts.retainLsns ?? 0;
  if (!Number.isSafeInteger(retain) || retain < 0) throw new StorageError('bad_request', `retainLsns ${retain} is not a non-negative integer`);
  if (opts.dir.length === 0) throw new StorageError('bad_request', 'page store dir is empty');
}

function validatePointer(p: CheckpointPointer): void {
  const ok =
    typeof p === 'object' && p !== null && p.version === 1 &&
    Number.isSafeInteger(p.lsn) && p.lsn >= 0 && Number.isSafeInteger(p.term) && p.term >= 0 &&
    Number.isSafeInteger(p.floorLsn) && p.floorLsn >= 0 && p.floorLsn <= p.lsn && typeof p.file === 'string' &&
    (p.madeAtMs === undefined || (Number.isSafeInteger(p.madeAtMs) && p.madeAtMs >= 0));
  if (!ok) throw new StorageError('corruption', 'checkpoint pointer has a bad shape');
}

/**
 * The 'checkpoint' pointer of `meta`'s directory (undefined when there is none), or why it is
 * unreadable (`unreadable`: its checksum or its shape); other failures are thrown.
 */
function pointerOf(meta: MetaStore): { pointer: CheckpointPointer | undefined; unreadable?: string } {
  try {
    const p = meta.read<CheckpointPointer>(POINTER_NAME);
    if (p !== undefined) validatePointer(p);
    return { pointer: p };
  } catch (e) {
    if (e instanceof StorageError && e.code === 'corruption') return { pointer: undefined, unreadable: e.message };
    throw e;
  }
}

/** The 'checkpoint' pointer of `dir`, undefined if there is none or it is unreadable. */
function readPointer(disk: Disk, dir: string): CheckpointPointer | undefined {
  return pointerOf(new MetaStore(disk, dir)).pointer;
}

/** Opens one image and checks it against the store's geometry and the log's terms. */
function openImage(disk: Disk, log: SegmentLog, path: string, lsn: number, opts: PageStoreOptions): ImageReader {
  const r = ImageReader.open(disk, path);
  const corrupt = (reason: string): CorruptionError => {
    r.close();
    return new CorruptionError(`image ${path}: ${reason}`, [{ file: path, offset: 0, fromLsn: lsn, toLsn: lsn, reason }]);
  };
  if (r.lsn !== lsn) throw corrupt(`header LSN ${r.lsn} differs from the file name's ${lsn}`);
  // An image made before its volume grew has fewer pages than the store: the others read as zeros.
  if (r.pageSize !== opts.pageSize || r.pageCount > opts.pageCount) {
    r.close();
    throw new StorageError('bad_request', `image ${path} is ${r.pageCount} pages of ${r.pageSize} bytes, the store ${opts.pageCount} of ${opts.pageSize}`);
  }
  // (A log whose first segment's header is damaged does not know the term before its first LSN.)
  if (lsn >= log.firstLsn - 1 && lsn <= log.lastLsn && (lsn >= log.firstLsn || log.prevTermKnown)) {
    const term = log.termAt(lsn);
    if (term !== r.term) throw corrupt(`term ${r.term} differs from the log's term ${term} at LSN ${lsn}`);
  }
  return r;
}

/** Creates `dir` (and missing parents) durably: each new directory's parent is fsync'd. */
function makeDurableDir(disk: Disk, dir: string): void {
  const parts = dir.split('/');
  for (let i = 1; i <= parts.length; i++) {
    const path = parts.slice(0, i).join('/');
    if (disk.exists(path)) continue;
    disk.mkdirp(path);
    disk.fsyncDir(parentDir(path));
  }
}

/**
 * A k-way merge of ascending runs of distinct numbers (a binary heap of the runs' heads): the
 * changed pages of a checkpoint, sorted a run per step instead of all at once.
 */
class SortedRuns {
  private readonly runs: Float64Array[];
  private readonly pos: number[];
  /** Indexes of the runs not used up, as a min-heap by their current head. */
  private readonly heap: number[] = [];

  constructor(runs: Float64Array[]) {
    this.runs = runs;
    this.pos = runs.map(() => 0);
    for (let r = 0; r < runs.length; r++) if (runs[r]!.length > 0) this.push(r);
  }

  get empty(): boolean {
    return this.heap.length === 0;
  }

  /** The smallest number left (the merge must not be empty). */
  peek(): number {
    return this.head(this.heap[0]!);
  }

  /** Takes the smallest number left. */
  pop(): number {
    const r = this.heap[0]!;
    const value = this.head(r);
    this.pos[r]!++;
    if (this.pos[r]! < this.runs[r]!.length) this.siftDown(0);
    else {
      const last = this.heap.pop()!;
      if (this.heap.length > 0) {
        this.heap[0] = last;
        this.siftDown(0);
      }
    }
    return value;
  }

  private head(r: number): number {
    return this.runs[r]![this.pos[r]!]!;
  }

  private push(r: number): void {
    const h = this.heap;
    h.push(r);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.head(h[parent]!) <= this.head(h[i]!)) break;
      [h[parent], h[i]] = [h[i]!, h[parent]!];
      i = parent;
    }
  }

  private siftDown(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.head(h[l]!) < this.head(h[m]!)) m = l;
      if (r < h.length && this.head(h[r]!) < this.head(h[m]!)) m = r;
      if (m === i) return;
      [h[m], h[i]] = [h[i]!, h[m]!];
      i = m;
    }
  }
}
