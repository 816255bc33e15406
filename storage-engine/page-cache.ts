/**
 * PageCache: materialized page versions of one shard, bounded in bytes, LRU.
 *
 * An entry is keyed by (page, versionLsn) and holds the content of `page` as of `versionLsn`
 * (the LSN of the record that wrote it, or the LSN of an image when the page's writer is older
 * than the retained log: either way "the page as of that LSN", so a key never maps to two
 * different contents). The cache is pure derived state: dropping any entry only costs a re-read
 * from an image or the log.
 *
 * Page buffers live in Slab slots. The cache owns the slots it allocated and frees them on
 * eviction, `delete` and `clear`. Every entry is charged `pageSize` bytes against
 * `cacheBytesMax`; when the slab itself is full the cache evicts its own least recently used
 * entries to make room, and if it holds none it simply does not cache (counted in `rejects`).
 *
 * Each entry keeps the CRC-32C of its page as it was put, and each copy out of the cache is
 * checked against it: the slab is memory shared between threads, and a page changed in it (a
 * fault of the memory, or a slot written by a hand that no longer owned it) is dropped and read
 * again from its log record or image, not served. The reads that copy a page out combine these
 * checksums into the one of their reply (docs/protocol.md, "Checksums of page data on the way").
 */
import { crc32c } from './crc32c';
import { assert, StorageError } from './errors';
import { copyBytes, type Slab } from './slab';

export interface PageCacheOptions {
  slab: Slab;
  pageSize: number;
  /** Bound on cached page bytes (entries * pageSize). 0 disables caching. */
  cacheBytesMax: number;
}

/** Counters of a PageCache. */
export interface PageCacheStats {
  hits: number;
  misses: number;
  evictions: number;
  /** Puts that were not cached (no room in the slab, or the cache is disabled). */
  rejects: number;
  /** Entries dropped because a copy out of them did not match the checksum they were put with. */
  damaged: number;
  /** Page bytes held now. */
  bytes: number;
  bytesMax: number;
  entries: number;
}

interface Entry {
  page: number;
  versionLsn: number;
  slot: number;
  /** CRC-32C of the page as it was put, checked as each copy of it leaves the cache. */
  crc: number;
  /** Neighbours in the LRU list: `older` towards the least recently used end. */
  older: Entry | undefined;
  newer: Entry | undefined;
}

export class PageCache {
  private readonly slab: Slab;
  private readonly pageSize: number;
  private readonly bytesMax: number;
  private readonly entriesMax: number;
  /**
   * Lookup by page, then by version: a page's one cached version, or a map of its versions when
   * it has several (numbers as keys: a string key made of the two took ten times as long to
   * build and find). The LRU order is a doubly linked list through the entries (`oldest` …
   * `newest`). A Map is never iterated on the hot path: deleting its first keys one by one and
   * then asking for the first one walks over the deleted ones, which made eviction O(n).
   */
  private readonly byPage = new Map<number, Entry | Map<number, Entry>>();
  private count = 0;
  private oldest: Entry | undefined;
  private newest: Entry | undefined;
  private hits = 0;
  private misses = 0;
  private evictions = 0;
  private rejects = 0;
  private damaged = 0;
  private lastCrcOut = 0;

  constructor(opts: PageCacheOptions) {
    if (!Number.isSafeInteger(opts.pageSize) || opts.pageSize <= 0) {
      throw new StorageError('bad_request', `page size ${opts.pageSize} is not a positive integer`);
    }
    if (!Number.isSafeInteger(opts.cacheBytesMax) || opts.cacheBytesMax < 0) {
      throw new StorageError('bad_request', `cacheBytesMax ${opts.cacheBytesMax} is not a non-negative integer`);
    }
    if (opts.slab.slotBytes < opts.pageSize) {
      throw new StorageError('bad_request', `slab slots of ${opts.slab.slotBytes} bytes cannot hold pages of ${opts.pageSize}`);
    }
    this.slab = opts.slab;
    this.pageSize = opts.pageSize;
    this.bytesMax = opts.cacheBytesMax;
    this.entriesMax = Math.floor(opts.cacheBytesMax / opts.pageSize);
  }

  /** Page bytes held now. */
  get bytes(): number {
    return this.count * this.pageSize;
  }

  get size(): number {
    return this.count;
  }

  /**
   * Copies the cached content of (page, versionLsn) into `out` and returns true; false on a miss.
   * The copy is checked against the page's checksum as it was put (`lastCrc` gives it): one that
   * does not match (the slab's memory changed under the entry) drops the entry, is counted as
   * damaged, and reads as a miss, so that the caller reads the page from its log or image.
   */
  get(page: number, versionLsn: number, out: Uint8Array): boolean {
    assert(out.length === this.pageSize, 'cache get buffer has the page size', { length: out.length });
    const entry = this.find(page, versionLsn);
    if (entry === undefined) {
      this.misses++;
      return false;
    }
    out.set(this.slab.view(entry.slot).subarray(0, this.pageSize));
    if (crc32c(out) !== entry.crc) {
      this.remove(entry);
      this.slab.free(entry.slot);
      this.damaged++;
      this.misses++;
      return false;
    }
    this.touch(entry);
    this.lastCrcOut = entry.crc;
    this.hits++;
    return true;
  }

  /** The CRC-32C of the page the last `get` that returned true copied out. */
  get lastCrc(): number {
    return this.lastCrcOut;
  }

  /** True if (page, versionLsn) is cached; does not touch the LRU order or the counters. */
  has(page: number, versionLsn: number): boolean {
    return this.find(page, versionLsn) !== undefined;
  }

  /**
   * Caches a copy of `data` as (page, versionLsn), the most recently used entry. Replaces an
   * existing entry's content (it must be the same content: the key names one page state).
   * Returns false if it could not be cached. `dataCrc`: the CRC-32C of `data`, when the caller
   * made it already (PageStore.apply, which checks a record's pages against it).
   */
  put(page: number, versionLsn: number, data: Uint8Array, dataCrc?: number): boolean {
    assert(data.length === this.pageSize, 'cached page has the page size', { length: data.length });
    // Of the bytes given, before they are copied: the copy into the slab is checked too.
    const crc = dataCrc ?? crc32c(data);
    const existing = this.find(page, versionLsn);
    if (existing !== undefined) {
      this.touch(existing);
      copyBytes(this.slab.view(existing.slot), data);
      existing.crc = crc;
      return true;
    }
    if (this.entriesMax === 0) {
      this.rejects++;
      return false;
    }
    // At the bound, or when the shared slab is full, the least recently used entry's slot is
    // reused as it is (no free and re-allocation).
    let slot = this.count >= this.entriesMax ? this.takeOldest() : this.slab.tryAlloc();
    if (slot < 0 && this.oldest !== undefined) slot = this.takeOldest();
    if (slot < 0) {
      this.rejects++;
      return false;
    }
    const view = this.slab.view(slot);
    assert(view.length >= this.pageSize, 'slab slot holds a page', { slotBytes: view.length, pageSize: this.pageSize });
    copyBytes(view, data);
    const entry: Entry = { page, versionLsn, slot, crc, older: undefined, newer: undefined };
    this.index(entry);
    this.link(entry);
    assert(this.count * this.pageSize <= this.bytesMax, 'cache within its byte bound');
    return true;
  }

  /** Drops (page, versionLsn) if cached; returns whether it was. */
  delete(page: number, versionLsn: number): boolean {
    const entry = this.find(page, versionLsn);
    if (entry === undefined) return false;
    this.remove(entry);
    this.slab.free(entry.slot);
    return true;
  }

  /** Drops every entry whose versionLsn is < `lsn` (history no read can reach any more); returns the count. */
  dropBelow(lsn: number): number {
    const steps = this.dropBelowSteps(lsn, Number.POSITIVE_INFINITY);
    for (;;) {
      const r = steps.next();
      if (r.done === true) return r.value;
    }
  }

  /**
   * `dropBelow` in steps of `entriesPerStep` entries looked at (a cache of a million entries
   * held its caller's thread for tens of ms in one pass). The cache may be used between steps:
   * the entries of pages that come in meanwhile are looked at too (a version added meanwhile to
   * a page already looked at is not: it stays until it is the least recently used), and one
   * dropped meanwhile is left alone.
   */
  *dropBelowSteps(lsn: number, entriesPerStep: number): Generator<void, number, void> {
    let dropped = 0;
    let seen = 0;
    for (const versions of this.byPage.values()) {
      for (const entry of versions instanceof Map ? [...versions.values()] : [versions]) {
        if (seen > 0 && seen % entriesPerStep === 0) yield;
        seen++;
        if (entry.versionLsn < lsn && this.find(entry.page, entry.versionLsn) === entry) {
          this.remove(entry);
          this.slab.free(entry.slot);
          dropped++;
        }
      }
    }
    return dropped;
  }

  /** Drops every entry and frees its slot. */
  clear(): void {
    for (const versions of this.byPage.values()) {
      if (versions instanceof Map) for (const entry of versions.values()) this.slab.free(entry.slot);
      else this.slab.free(versions.slot);
    }
    this.byPage.clear();
    this.count = 0;
    this.oldest = undefined;
    this.newest = undefined;
  }

  stats(): PageCacheStats {
    return {
      hits: this.hits,
      misses: this.misses,
      evictions: this.evictions,
      rejects: this.rejects,
      damaged: this.damaged,
      bytes: this.bytes,
      bytesMax: this.bytesMax,
      entries: this.count,
    };
  }

  /** Evicts the least recently used entry and hands its (still allocated) slot to the caller. */
  private takeOldest(): number {
    const entry = this.oldest;
    assert(entry !== undefined, 'evicting from a non-empty cache');
    this.remove(entry);
    this.evictions++;
    return entry.slot;
  }

  /** Makes `entry` the most recently used. */
  private touch(entry: Entry): void {
    if (this.newest === entry) return;
    this.unlink(entry);
    this.link(entry);
  }

  private remove(entry: Entry): void {
    this.unindex(entry);
    this.unlink(entry);
  }

  /** The entry of (page, versionLsn), if cached. */
  private find(page: number, versionLsn: number): Entry | undefined {
    const versions = this.byPage.get(page);
    if (versions === undefined) return undefined;
    if (versions instanceof Map) return versions.get(versionLsn);
    return versions.versionLsn === versionLsn ? versions : undefined;
  }

  /** Adds `entry`, not cached yet, to the lookup. */
  private index(entry: Entry): void {
    const versions = this.byPage.get(entry.page);
    if (versions === undefined) this.byPage.set(entry.page, entry);
    else if (versions instanceof Map) versions.set(entry.versionLsn, entry);
    else this.byPage.set(entry.page, new Map([[versions.versionLsn, versions], [entry.versionLsn, entry]]));
    this.count++;
  }

  /** Takes `entry`, cached, out of the lookup; a page left with one version holds it alone again. */
  private unindex(entry: Entry): void {
    const versions = this.byPage.get(entry.page);
    if (versions === entry) {
      this.byPage.delete(entry.page);
    } else {
      assert(versions instanceof Map && versions.get(entry.versionLsn) === entry, 'an entry taken out is cached', { page: entry.page, versionLsn: entry.versionLsn });
      versions.delete(entry.versionLsn);
      if (versions.size === 1) this.byPage.set(entry.page, versions.values().next().value!);
    }
    this.count--;
  }

  /** Appends `entry` at the most recently used end. */
  private link(entry: Entry): void {
    entry.older = this.newest;
    entry.newer = undefined;
    if (this.newest !== undefined) this.newest.newer = entry;
    else this.oldest = entry;
    this.newest = entry;
  }

  private unlink(entry: Entry): void {
    if (entry.older !== undefined) entry.older.newer = entry.newer;
    else this.oldest = entry.newer;
    if (entry.newer !== undefined) entry.newer.older = entry.older;
    else this.newest = entry.older;
    entry.older = undefined;
    entry.newer = undefined;
  }
}
