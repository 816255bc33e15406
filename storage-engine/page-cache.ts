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
 */
import { assert, StorageError } from './errors';
import type { Slab } from './slab';

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
  /** Page bytes held now. */
  bytes: number;
  bytesMax: number;
  entries: number;
}

interface Entry {
  page: number;
  versionLsn: number;
  slot: number;
}

export class PageCache {
  private readonly slab: Slab;
  private readonly pageSize: number;
  private readonly bytesMax: number;
  private readonly entriesMax: number;
  /** Insertion order of a Map is the LRU order: the first key is the least recently used. */
  private readonly entries = new Map<string, Entry>();
  private hits = 0;
  private misses = 0;
  private evictions = 0;
  private rejects = 0;

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
    return this.entries.size * this.pageSize;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Copies the cached content of (page, versionLsn) into `out` and returns true; false on a miss. */
  get(page: number, versionLsn: number, out: Uint8Array): boolean {
    assert(out.length === this.pageSize, 'cache get buffer has the page size', { length: out.length });
    const key = keyOf(page, versionLsn);
    const entry = this.entries.get(key);
    if (entry === undefined) {
      this.misses++;
      return false;
    }
    this.entries.delete(key);
    this.entries.set(key, entry);
    out.set(this.slab.view(entry.slot).subarray(0, this.pageSize));
    this.hits++;
    return true;
  }

  /** True if (page, versionLsn) is cached; does not touch the LRU order or the counters. */
  has(page: number, versionLsn: number): boolean {
    return this.entries.has(keyOf(page, versionLsn));
  }

  /**
   * Caches a copy of `data` as (page, versionLsn), the most recently used entry. Replaces an
   * existing entry's content (it must be the same content: the key names one page state).
   * Returns false if it could not be cached.
   */
  put(page: number, versionLsn: number, data: Uint8Array): boolean {
    assert(data.length === this.pageSize, 'cached page has the page size', { length: data.length });
    const key = keyOf(page, versionLsn);
    const existing = this.entries.get(key);
    if (existing !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, existing);
      this.slab.view(existing.slot).set(data);
      return true;
    }
    if (this.entriesMax === 0) {
      this.rejects++;
      return false;
    }
    while (this.entries.size >= this.entriesMax) this.evictOldest();
    let slot = this.slab.tryAlloc();
    while (slot < 0 && this.entries.size > 0) {
      this.evictOldest();
      slot = this.slab.tryAlloc();
    }
    if (slot < 0) {
      this.rejects++;
      return false;
    }
    const view = this.slab.view(slot);
    assert(view.length >= this.pageSize, 'slab slot holds a page', { slotBytes: view.length, pageSize: this.pageSize });
    view.set(data);
    this.entries.set(key, { page, versionLsn, slot });
    assert(this.entries.size * this.pageSize <= this.bytesMax, 'cache within its byte bound');
    return true;
  }

  /** Drops (page, versionLsn) if cached; returns whether it was. */
  delete(page: number, versionLsn: number): boolean {
    const key = keyOf(page, versionLsn);
    const entry = this.entries.get(key);
    if (entry === undefined) return false;
    this.entries.delete(key);
    this.slab.free(entry.slot);
    return true;
  }

  /** Drops every entry whose versionLsn is < `lsn` (history no read can reach any more); returns the count. */
  dropBelow(lsn: number): number {
    let dropped = 0;
    for (const [key, entry] of this.entries) {
      if (entry.versionLsn < lsn) {
        this.entries.delete(key);
        this.slab.free(entry.slot);
        dropped++;
      }
    }
    return dropped;
  }

  /** Drops every entry and frees its slot. */
  clear(): void {
    for (const entry of this.entries.values()) this.slab.free(entry.slot);
    this.entries.clear();
  }

  stats(): PageCacheStats {
    return {
      hits: this.hits,
      misses: this.misses,
      evictions: this.evictions,
      rejects: this.rejects,
      bytes: this.bytes,
      bytesMax: this.bytesMax,
      entries: this.entries.size,
    };
  }

  private evictOldest(): void {
    const first = this.entries.entries().next();
    assert(first.done !== true, 'evicting from a non-empty cache');
    const [key, entry] = first.value;
    this.entries.delete(key);
    this.slab.free(entry.slot);
    this.evictions++;
  }
}

function keyOf(page: number, versionLsn: number): string {
  return `${page}:${versionLsn}`;
}
