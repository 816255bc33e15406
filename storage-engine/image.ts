/**
 * Checkpoint images: every page of a shard at one LSN, folded from the log and written to the
 * device so that the log prefix below it can be trimmed. Format (little-endian, see
 * docs/page-store.md):
 *
 * ```
 * offset       size         field
 * 0            8            magic "STRIMG01"
 * 8            4            u32 version = 1
 * 12           8            u64 lsn      (the image holds the pages as of this LSN)
 * 20           8            u64 term     (term of the record at lsn; 0 for lsn 0)
 * 28           4            u32 pageSize (4096 or 8192)
 * 32           4            u32 pageCount (pages in the shard's address space)
 * 36           4            u32 entries  (pages stored: the non-zero ones)
 * 40           20*entries   table, ascending page: u64 page, u64 offset, u32 crc32c(page data)
 * 40+20*e      4            u32 crc32c of bytes [0, 40 + 20 * entries)
 * ...          ...          zero padding up to the data start (a multiple of pageSize)
 * offset_i     pageSize     data of page i, stored in table order
 * ```
 *
 * Pages never written or all zero are not stored and read as zeros. Data is stored in page order,
 * so adjacent pages that are both stored are adjacent on disk and `readPages` reads them with
 * one disk read. The writer reserves table room for an upper bound of entries given up front,
 * streams page data after it in large chunks, and writes the header and table last; the file
 * is built as `image-<lsn>.img.tmp`, fdatasync'd, renamed and its directory fsync'd, so an
 * image file under its final name is always complete.
 */
import { crc32c } from './crc32c';
import { joinPath, type Disk, type FileHandle } from './disk';
import { assert, CorruptionError, StorageError } from './errors';
import { isPageSize, readU64, writeU64 } from './page-write';

export const IMAGE_MAGIC = 'STRIMG01';
export const IMAGE_VERSION = 1;
export const IMAGE_HEADER_BYTES = 40;
export const IMAGE_TABLE_ENTRY_BYTES = 20;
/** Largest single disk read `readPages` issues (a run of adjacent pages is split beyond it). */
export const IMAGE_READ_BYTES_MAX = 256 * 1024;

/**
 * The read buffer the image readers of this thread share: a read fills it and copies the pages
 * out before it returns. (One per reader held up to IMAGE_READ_BYTES_MAX for each image read
 * from, two or three per shard.)
 */
let sharedReadScratch: Uint8Array | undefined;

function readScratch(bytes: number): Uint8Array {
  if (sharedReadScratch === undefined || sharedReadScratch.length < bytes) sharedReadScratch = new Uint8Array(bytes);
  return sharedReadScratch;
}
/** Abandoned image files moved aside while their flush ran (a counter for their names). */
let abandonedImages = 0;

/** Bytes of the smallest image (no pages): its header and the checksum after its empty table. */
export const IMAGE_BYTES_MIN = IMAGE_HEADER_BYTES + 4;

/** Bytes the writer buffers before one disk write (and one fdatasync). */
export const IMAGE_WRITE_BUFFER_BYTES = 1024 * 1024;
/** Bytes of the table the reader reads per disk read while validating it. */
const TABLE_READ_BYTES = 240 * 1024; // a multiple of IMAGE_TABLE_ENTRY_BYTES
/** Largest pageCount the u32 header field holds. */
export const IMAGE_PAGE_COUNT_MAX = 0xffff_ffff;

const MAGIC_BYTES = new TextEncoder().encode(IMAGE_MAGIC);
const IMAGE_NAME_RE = /^image-([0-9a-f]{16})\.img$/;

/**
 * The page count an image's header gives, from its first bytes (a transfer's first chunk);
 * undefined when they hold no whole header start. Not checked: the image is, whole, before use.
 */
export function imagePageCountOf(head: Uint8Array): number | undefined {
  if (head.length < 36) return undefined;
  return new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(32, true);
}

/** File name of the image at `lsn`: `image-<lsn as 16 hex digits>.img`. */
export function imageFileName(lsn: number): string {
  assert(Number.isSafeInteger(lsn) && lsn >= 0, 'image lsn is a non-negative integer', { lsn });
  return `image-${lsn.toString(16).padStart(16, '0')}.img`;
}

/** LSN of an image file name, or undefined if `name` is not one (temp files included). */
/** Whether `path` names an image file (`…/image-<lsn>.img`). */
export function isImagePath(path: string): boolean {
  return parseImageFileName(path.slice(path.lastIndexOf('/') + 1)) !== undefined;
}

export function parseImageFileName(name: string): number | undefined {
  const m = IMAGE_NAME_RE.exec(name);
  if (m === null) return undefined;
  const lsn = parseInt(m[1]!, 16);
  return Number.isSafeInteger(lsn) ? lsn : undefined;
}

/** True for a temp file an interrupted image build left behind. */
export function isImageTempFileName(name: string): boolean {
  return name.startsWith('image-') && name.endsWith('.img.tmp');
}

function tableEnd(entries: number): number {
  return IMAGE_HEADER_BYTES + entries * IMAGE_TABLE_ENTRY_BYTES;
}

function dataStartOf(entriesMax: number, pageSize: number): number {
  const end = tableEnd(entriesMax) + 4;
  return Math.ceil(end / pageSize) * pageSize;
}

function isZero(data: Uint8Array): boolean {
  // Word-wise when aligned (page buffers are), byte-wise otherwise.
  if ((data.byteOffset & 3) === 0 && (data.length & 3) === 0) {
    const words = new Uint32Array(data.buffer, data.byteOffset, data.length >>> 2);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
    return true;
  }
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}

export interface ImageWriterOptions {
  /** Directory of the image (created if missing). */
  dir: string;
  lsn: number;
  /** Term of the record at `lsn` (0 for lsn 0). */
  term: number;
  pageSize: 4096 | 8192;
  pageCount: number;
  /** Upper bound on the pages that will be added (table room is reserved for it). */
  entriesMax: number;
  /**
   * Flush each written buffer off the calling thread (the disk's `fdatasyncAsync`, when it has
   * one): the caller takes the flush with `takeFlush` and awaits it before it adds more pages
   * or finishes. An fdatasync that grows the file needs a filesystem journal commit, 3–13 ms
   * on the thread otherwise. Default false.
   */
  flushOffThread?: boolean;
}

/** What a finished image build produced. */
export interface ImageWriteResult {
  file: string;
  path: string;
  entries: number;
  bytes: number;
}

/**
 * Streams an image to disk: `addPage` in strictly ascending page order, then `finish` (or
 * `abort`). Memory: the table (20 bytes per stored page) plus one write buffer.
 */
export class ImageWriter {
  private readonly disk: Disk;
  private readonly opts: ImageWriterOptions;
  private readonly tmpPath: string;
  private readonly finalPath: string;
  private fh: FileHandle | undefined;
  private readonly buf: Uint8Array;
  private bufUsed = 0;
  /** File offset where `buf[0]` goes. */
  private bufOffset: number;
  private readonly pages: number[] = [];
  private readonly crcs: number[] = [];
  private lastPage = -1;
  private done = false;
  /** The fdatasync of the last buffer written, off the thread, not yet taken (`takeFlush`). */
  private flushing: Promise<void> | undefined;
  /** That fdatasync until it settles, taken or not (nothing may be written or closed meanwhile). */
  private inFlight: Promise<void> | undefined;

  private constructor(disk: Disk, opts: ImageWriterOptions) {
    this.disk = disk;
    this.opts = opts;
    const name = imageFileName(opts.lsn);
    this.finalPath = joinPath(opts.dir, name);
    this.tmpPath = `${this.finalPath}.tmp`;
    this.bufOffset = dataStartOf(opts.entriesMax, opts.pageSize);
    this.buf = new Uint8Array(Math.max(opts.pageSize, IMAGE_WRITE_BUFFER_BYTES - (IMAGE_WRITE_BUFFER_BYTES % opts.pageSize)));
  }

  /** Creates (truncating) `image-<lsn>.img.tmp` in `opts.dir`. */
  static create(disk: Disk, opts: ImageWriterOptions): ImageWriter {
    if (!isPageSize(opts.pageSize)) throw new StorageError('bad_request', `page size ${opts.pageSize} is not 4096 or 8192`);
    if (!Number.isSafeInteger(opts.pageCount) || opts.pageCount < 1 || opts.pageCount > IMAGE_PAGE_COUNT_MAX) {
      throw new StorageError('bad_request', `page count ${opts.pageCount} out of 1..${IMAGE_PAGE_COUNT_MAX}`);
    }
    if (!Number.isSafeInteger(opts.entriesMax) || opts.entriesMax < 0 || opts.entriesMax > opts.pageCount) {
      throw new StorageError('bad_request', `entriesMax ${opts.entriesMax} out of 0..pageCount`);
    }
    if (!Number.isSafeInteger(opts.lsn) || opts.lsn < 0 || !Number.isSafeInteger(opts.term) || opts.term < 0) {
      throw new StorageError('bad_request', 'image lsn and term are non-negative integers');
    }
    const w = new ImageWriter(disk, opts);
    disk.mkdirp(opts.dir);
    w.fh = disk.open(w.tmpPath, { create: true, truncate: true });
    return w;
  }

  /** Pages stored so far. */
  get entries(): number {
    return this.pages.length;
  }

  /**
   * Adds the content of `page`; pages must come in strictly ascending order. An all-zero page
   * is not stored (it reads as zeros); returns whether the page was stored. `crc`: the CRC-32C
   * of the page as its caller checked it where it read it (an image's, a log record's page),
   * stored as given instead of made from `data`: a page changed in memory since then is stored
   * with a checksum it fails when read.
   */
  addPage(page: number, data: Uint8Array, crc?: number): boolean {
    assert(!this.done && this.fh !== undefined, 'image writer is open');
    assert(Number.isSafeInteger(page) && page > this.lastPage && page < this.opts.pageCount, 'image pages ascend within pageCount', { page, lastPage: this.lastPage });
    assert(data.length === this.opts.pageSize, 'image page has the page size', { length: data.length });
    this.lastPage = page;
    if (isZero(data)) return false;
    assert(this.pages.length < this.opts.entriesMax, 'image entries within the reserved table', { entriesMax: this.opts.entriesMax });
    if (this.bufUsed + data.length > this.buf.length) this.flush(this.opts.flushOffThread === true);
    this.buf.set(data, this.bufUsed);
    this.bufUsed += data.length;
    this.pages.push(page);
    this.crcs.push(crc ?? crc32c(data));
    return true;
  }

  /**
   * Writes and fdatasyncs the pages still buffered (`finish` does too): a caller that wants its
   * steps short calls it as a step before `finish`.
   */
  flushBuffered(): void {
    assert(!this.done && this.fh !== undefined, 'image writer is open');
    this.flush(this.opts.flushOffThread === true);
  }

  /**
   * With `flushOffThread`: the fdatasync of the buffer written last, running off the thread,
   * or undefined when none was started since the last call. The caller awaits it (a rejection
   * is the flush's failure: abort the image) before it adds pages, flushes or finishes again.
   */
  takeFlush(): Promise<void> | undefined {
    const p = this.flushing;
    this.flushing = undefined;
    return p;
  }

  /** Writes the header and table, fdatasyncs, renames into place and fsyncs the directory. */
  finish(): ImageWriteResult {
    assert(!this.done && this.fh !== undefined, 'image writer is open');
    // The header goes at the start of the file, and the flush below covers every buffer.
    this.flush(false);
    const entries = this.pages.length;
    const head = new Uint8Array(tableEnd(entries) + 4);
    const dv = new DataView(head.buffer);
    head.set(MAGIC_BYTES, 0);
    dv.setUint32(8, IMAGE_VERSION, true);
    writeU64(dv, 12, this.opts.lsn);
    writeU64(dv, 20, this.opts.term);
    dv.setUint32(28, this.opts.pageSize, true);
    dv.setUint32(32, this.opts.pageCount, true);
    dv.setUint32(36, entries, true);
    const dataStart = dataStartOf(this.opts.entriesMax, this.opts.pageSize);
    for (let i = 0; i < entries; i++) {
      const at = IMAGE_HEADER_BYTES + i * IMAGE_TABLE_ENTRY_BYTES;
      writeU64(dv, at, this.pages[i]!);
      writeU64(dv, at + 8, dataStart + i * this.opts.pageSize);
      dv.setUint32(at + 16, this.crcs[i]!, true);
    }
    dv.setUint32(tableEnd(entries), crc32c(head, 0, 0, tableEnd(entries)), true);
    const fh = this.fh;
    this.disk.write(fh, head, 0);
    this.disk.fdatasync(fh);
    const bytes = this.disk.size(fh);
    this.disk.close(fh);
    this.fh = undefined;
    this.done = true;
    this.disk.rename(this.tmpPath, this.finalPath);
    this.disk.fsyncDir(this.opts.dir);
    return { file: imageFileName(this.opts.lsn), path: this.finalPath, entries, bytes };
  }

  /** Closes and removes the temp file (best effort: a failing disk leaves it for the next open). */
  abort(): void {
    if (this.done) return;
    this.done = true;
    const fh = this.fh;
    this.fh = undefined;
    this.flushing = undefined;
    if (this.inFlight === undefined) {
      this.closeAndRemove(fh, this.tmpPath);
      return;
    }
    // A flush still running off the thread keeps the file open until it ends. Its name is
    // moved aside first: a checkpoint at the same LSN may create `image-<lsn>.img.tmp` again
    // meanwhile, and this one's removal must not take that file.
    let path = this.tmpPath;
    try {
      const aside = joinPath(this.opts.dir, `${imageFileName(this.opts.lsn).slice(0, -'.img'.length)}.abandoned-${++abandonedImages}.img.tmp`);
      this.disk.rename(this.tmpPath, aside);
      path = aside;
    } catch {
      // Left under its name: removed once the flush ends, or by the next PageStore.open.
    }
    void this.inFlight.then(() => this.closeAndRemove(fh, path));
  }

  private closeAndRemove(fh: FileHandle | undefined, path: string): void {
    try {
      if (fh !== undefined) this.disk.close(fh);
      this.disk.remove(path);
    } catch {
      // The temp file is removed by the next PageStore.open; nothing else refers to it.
    }
  }

  private flush(offThread: boolean): void {
    // The file stays unwritten while an fdatasync runs on it off the thread (Disk's contract).
    assert(this.inFlight === undefined, 'an image is written only once its last buffer is flushed');
    if (this.bufUsed === 0) return;
    assert(this.fh !== undefined, 'image writer is open');
    this.disk.write(this.fh, this.buf.subarray(0, this.bufUsed), this.bufOffset);
    // Flushed as it is written, not all at the end: the fdatasync of a whole 16 MiB image in
    // `finish` took 25–28 ms, on the device's thread, in one checkpoint step (every shard of the
    // thread waited); one per buffer written spreads that over the steps that fill the buffers.
    // Each of those grows the file, a journal commit of 3–13 ms: off the thread when it can be.
    if (offThread && this.disk.fdatasyncAsync !== undefined) {
      const flushing = this.disk.fdatasyncAsync(this.fh);
      const settled = (): void => {
        if (this.inFlight === inFlight) this.inFlight = undefined;
      };
      const inFlight = flushing.then(settled, settled);
      this.inFlight = inFlight;
      // Awaited by the caller (takeFlush); when it is not (an abort), not an unhandled rejection.
      flushing.catch(() => undefined);
      this.flushing = flushing;
    } else {
      this.disk.fdatasync(this.fh);
    }
    this.bufOffset += this.bufUsed;
    this.bufUsed = 0;
  }
}

/**
 * Reads one image. `open` validates the header and the table checksum and structure; every
 * page read checks that page's CRC-32C. Failures are CorruptionError.
 */
export class ImageReader {
  readonly path: string;
  readonly lsn: number;
  readonly term: number;
  readonly pageSize: 4096 | 8192;
  readonly pageCount: number;
  /** The file's size in bytes (header, table and the stored pages). */
  readonly fileBytes: number;
  private readonly disk: Disk;
  private fh: FileHandle | undefined;
  private readonly pages: Float64Array;
  private readonly offsets: Float64Array;
  private readonly crcs: Uint32Array;

  private constructor(disk: Disk, path: string, fh: FileHandle, h: ImageHeader & { fileBytes: number }, pages: Float64Array, offsets: Float64Array, crcs: Uint32Array) {
    this.disk = disk;
    this.fileBytes = h.fileBytes;
    this.path = path;
    this.fh = fh;
    this.lsn = h.lsn;
    this.term = h.term;
    this.pageSize = h.pageSize;
    this.pageCount = h.pageCount;
    this.pages = pages;
    this.offsets = offsets;
    this.crcs = crcs;
  }

  /** Opens and validates an image file. Throws CorruptionError on any damage. */
  static open(disk: Disk, path: string): ImageReader {
    const fh = disk.open(path);
    try {
      return ImageReader.validate(disk, path, fh);
    } catch (e) {
      disk.close(fh);
      throw e;
    }
  }

  private static validate(disk: Disk, path: string, fh: FileHandle): ImageReader {
    const fileBytes = disk.size(fh);
    const corrupt = (reason: string, offset: number, lsn = 0): CorruptionError =>
      new CorruptionError(`image ${path}: ${reason}`, [{ file: path, offset, fromLsn: lsn, toLsn: lsn, reason }]);
    const head = new Uint8Array(IMAGE_HEADER_BYTES);
    if (disk.read(fh, head, 0) !== IMAGE_HEADER_BYTES) throw corrupt('file shorter than the header', 0);
    const dv = new DataView(head.buffer);
    for (let i = 0; i < MAGIC_BYTES.length; i++) if (head[i] !== MAGIC_BYTES[i]) throw corrupt('bad magic', 0);
    const version = dv.getUint32(8, true);
    if (version !== IMAGE_VERSION) throw corrupt(`unknown version ${version}`, 8);
    const pageSize = dv.getUint32(28, true);
    const pageCount = dv.getUint32(32, true);
    const entries = dv.getUint32(36, true);
    if (!isPageSize(pageSize)) throw corrupt(`bad page size ${pageSize}`, 28);
    if (pageCount < 1) throw corrupt('page count 0', 32);
    if (entries > pageCount) throw corrupt(`entries ${entries} > pageCount ${pageCount}`, 36);
    const end = tableEnd(entries);
    if (end + 4 > fileBytes) throw corrupt(`file of ${fileBytes} bytes shorter than its table`, IMAGE_HEADER_BYTES);
    // CRC over header + table, reading the table in bounded chunks.
    let crc = crc32c(head);
    const pages = new Float64Array(entries);
    const offsets = new Float64Array(entries);
    const crcs = new Uint32Array(entries);
    const chunk = new Uint8Array(Math.min(TABLE_READ_BYTES, Math.max(4, entries * IMAGE_TABLE_ENTRY_BYTES)));
    const cdv = new DataView(chunk.buffer);
    let entry = 0;
    while (entry < entries) {
      const n = Math.min(entries - entry, Math.floor(chunk.length / IMAGE_TABLE_ENTRY_BYTES));
      const at = IMAGE_HEADER_BYTES + entry * IMAGE_TABLE_ENTRY_BYTES;
      const want = n * IMAGE_TABLE_ENTRY_BYTES;
      if (disk.read(fh, chunk.subarray(0, want), at) !== want) throw corrupt('short table read', at);
      crc = crc32c(chunk, crc, 0, want);
      for (let i = 0; i < n; i++) {
        const o = i * IMAGE_TABLE_ENTRY_BYTES;
        // Past the CRC check a bad u64 is caught below; here a too-large value is just corrupt.
        const hiPage = cdv.getUint32(o + 4, true);
        const hiOff = cdv.getUint32(o + 12, true);
        pages[entry + i] = hiPage * 0x1_0000_0000 + cdv.getUint32(o, true);
        offsets[entry + i] = hiOff * 0x1_0000_0000 + cdv.getUint32(o + 8, true);
        crcs[entry + i] = cdv.getUint32(o + 16, true);
      }
      entry += n;
    }
    const stored = new Uint8Array(4);
    if (disk.read(fh, stored, end) !== 4) throw corrupt('short table checksum read', end);
    const storedCrc = new DataView(stored.buffer).getUint32(0, true);
    if (storedCrc !== crc) throw corrupt(`header/table checksum mismatch (stored ${storedCrc}, computed ${crc})`, end);
    let lsn: number;
    let term: number;
    try {
      lsn = readU64(dv, 12);
      term = readU64(dv, 20);
    } catch {
      throw corrupt('lsn or term exceeds 2^53 - 1', 12);
    }
    // Structure: ascending pages within pageCount; data after the table, in order, within the file.
    let prevEnd = end + 4;
    for (let i = 0; i < entries; i++) {
      const page = pages[i]!;
      const off = offsets[i]!;
      if (!(page < pageCount) || (i > 0 && !(page > pages[i - 1]!))) throw corrupt(`table entry ${i}: page ${page} not ascending within pageCount`, IMAGE_HEADER_BYTES + i * IMAGE_TABLE_ENTRY_BYTES, lsn);
      if (!(off >= prevEnd) || off + pageSize > fileBytes) throw corrupt(`table entry ${i}: page ${page} data offset ${off} out of place`, IMAGE_HEADER_BYTES + i * IMAGE_TABLE_ENTRY_BYTES, lsn);
      prevEnd = off + pageSize;
    }
    return new ImageReader(disk, path, fh, { lsn, term, pageSize, pageCount, fileBytes }, pages, offsets, crcs);
  }

  /** Pages stored (the non-zero ones). */
  get entries(): number {
    return this.pages.length;
  }

  /**
   * Reads every stored page and checks its checksum (CorruptionError naming the first bad one).
   * For an image received whole from elsewhere, before anything depends on it: opening checks
   * only the header and the table.
   */
  verifyPages(): void {
    for (const step of this.verifySteps()) void step;
  }

  /**
   * `verifyPages` in steps of at most IMAGE_READ_BYTES_MAX read each (one per iteration), for a
   * caller that must not hold its thread for a whole image: a leader checking its own image after
   * a follower found the copy it was sent damaged.
   */
  *verifySteps(): Generator<void, void, void> {
    const batch = Math.max(1, Math.floor(IMAGE_READ_BYTES_MAX / this.pageSize));
    const outs = Array.from({ length: Math.min(batch, this.pages.length) }, () => new Uint8Array(this.pageSize));
    for (let i = 0; i < this.pages.length; i += batch) {
      const pages = Array.from(this.pages.subarray(i, Math.min(this.pages.length, i + batch)));
      this.readPages(pages, outs.slice(0, pages.length));
      yield;
    }
  }

  /** Page number of table entry `i` (ascending in i). */
  pageAt(i: number): number {
    assert(i >= 0 && i < this.pages.length, 'image entry index in range', { i });
    return this.pages[i]!;
  }

  /** Index of the first table entry whose page is `page` or above (`entries` if none). */
  lowerBound(page: number): number {
    let lo = 0;
    let hi = this.pages.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.pages[mid]! < page) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** True if the image stores `page` (otherwise the page is zeros as of the image's LSN). */
  has(page: number): boolean {
    return this.indexOf(page) >= 0;
  }

  /**
   * Reads `page` into `out` (pageSize bytes) and returns true, or zero-fills `out` and returns
   * false if the page is not stored. Throws CorruptionError naming the page if its CRC fails.
   */
  readPage(page: number, out: Uint8Array): boolean {
    return this.readPages([page], [out])[0]!;
  }

  /**
   * Reads several pages; `outs[i]` receives `pages[i]` (zeros when not stored). Stored pages that
   * are adjacent on disk are read with one disk read of up to IMAGE_READ_BYTES_MAX bytes.
   * Returns, per page, whether it was stored. With `crcs`, `crcs[i]` receives the checksum a
   * stored `pages[i]` was checked against (the image's, not one made from `outs[i]`: a page that
   * changes in memory after its check fails it); left as it is for a page not stored.
   */
  readPages(pages: readonly number[], outs: readonly Uint8Array[], crcs?: number[]): boolean[] {
    const fh = this.fh;
    if (fh === undefined) throw new StorageError('closed', `image ${this.path} is closed`);
    assert(pages.length === outs.length, 'one output buffer per page');
    const found = new Array<boolean>(pages.length).fill(false);
    // (entry index, request index) of the stored pages, in disk order.
    const wanted: { entry: number; req: number }[] = [];
    for (let r = 0; r < pages.length; r++) {
      const out = outs[r]!;
      assert(out.length === this.pageSize, 'read buffer has the page size', { length: out.length });
      const entry = this.indexOf(pages[r]!);
      if (entry < 0) out.fill(0);
      else wanted.push({ entry, req: r });
    }
    wanted.sort((a, b) => a.entry - b.entry);
    const runPagesMax = Math.max(1, Math.floor(IMAGE_READ_BYTES_MAX / this.pageSize));
    let i = 0;
    while (i < wanted.length) {
      // A run: distinct entries whose data are contiguous on disk, up to runPagesMax pages.
      const first = wanted[i]!.entry;
      let last = first;
      let j = i + 1;
      while (j < wanted.length) {
        const e = wanted[j]!.entry;
        if (e === last) { j++; continue; }
        if (e === last + 1 && this.offsets[e] === this.offsets[last]! + this.pageSize && e - first < runPagesMax) {
          last = e;
          j++;
          continue;
        }
        break;
      }
      const runBytes = (last - first + 1) * this.pageSize;
      const scratch = this.scratchOf(runBytes);
      const base = this.offsets[first]!;
      const n = this.disk.read(fh, scratch.subarray(0, runBytes), base);
      if (n !== runBytes) {
        throw new CorruptionError(`image ${this.path}: short read of page ${this.pages[first]} at ${base}`, [
          { file: this.path, offset: base, fromLsn: this.lsn, toLsn: this.lsn, reason: `short read of page ${this.pages[first]}` },
        ]);
      }
      for (let e = first; e <= last; e++) {
        const off = (e - first) * this.pageSize;
        if (crc32c(scratch, 0, off, off + this.pageSize) !== this.crcs[e]) {
          const page = this.pages[e]!;
          throw new CorruptionError(`image ${this.path}: page ${page} checksum mismatch`, [
            { file: this.path, offset: this.offsets[e]!, fromLsn: this.lsn, toLsn: this.lsn, reason: `page ${page} checksum mismatch` },
          ]);
        }
      }
      for (let k = i; k < j; k++) {
        const w = wanted[k]!;
        const off = (w.entry - first) * this.pageSize;
        outs[w.req]!.set(scratch.subarray(off, off + this.pageSize));
        found[w.req] = true;
        if (crcs !== undefined) crcs[w.req] = this.crcs[w.entry]!;
      }
      i = j;
    }
    return found;
  }

  close(): void {
    const fh = this.fh;
    this.fh = undefined;
    if (fh !== undefined) this.disk.close(fh);
  }

  /** The thread's read buffer (readScratch), at least `bytes` long. */
  private scratchOf(bytes: number): Uint8Array {
    return readScratch(Math.max(bytes, Math.min(IMAGE_READ_BYTES_MAX, 16 * this.pageSize)));
  }

  private indexOf(page: number): number {
    let lo = 0;
    let hi = this.pages.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const p = this.pages[mid]!;
      if (p === page) return mid;
      if (p < page) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }
}

interface ImageHeader {
  lsn: number;
  term: number;
  pageSize: 4096 | 8192;
  pageCount: number;
}
