/**
 * Slab: fixed-size page buffers in one SharedArrayBuffer, shared by the threads of a node.
 * Page data moves between threads as slot ids, not copies (DESIGN.md, runtime on one node).
 *
 * Layout of the SharedArrayBuffer (Int32 words, little-endian on every platform Node runs on):
 *   word 0  magic 0x42414c53 ("SLAB")      word 4  slots in use (Atomics counter)
 *   word 1  layout version (1)            word 5  allocation hint: bitmap word to scan first
 *   word 2  slotBytes                     word 6, 7  reserved (0)
 *   word 3  slotCount
 *   word 8 … 8 + ceil(slotCount / 32) - 1  allocation bitmap: bit (i mod 32) of word 8 + floor(i / 32)
 *            is 1 while slot i is allocated; the unused tail bits of the last word are always 1
 *   then, from the next multiple of 64 bytes: slot i at dataOffset + i * slotBytes
 *
 * alloc sets a bit with Atomics.compareExchange, free clears it with Atomics.and, so alloc and
 * free are lock-free and safe from any number of threads attached to the same SharedArrayBuffer.
 *
 * The first write to a page of memory the process never used costs a page fault (10–20 µs on the
 * virtual machines Strata was measured on, against under 1 µs for copying 4 KiB); a slot of a
 * page cache that is still filling up is such memory. `touchForWrite` takes those faults ahead
 * of use, off the thread that copies pages in (runtime/slab-warmer.ts).
 */
import { StorageError } from './errors';

/** Most slots in one slab. */
export const SLAB_SLOT_COUNT_MAX = 1 << 20;
/** Largest slot, in bytes. */
export const SLAB_SLOT_BYTES_MAX = 16 * 1024 * 1024;
/** Smallest slot, in bytes; slot sizes are multiples of this so that every slot is 8-byte aligned. */
export const SLAB_SLOT_BYTES_ALIGN = 8;
/** Largest whole SharedArrayBuffer, in bytes. */
export const SLAB_TOTAL_BYTES_MAX = 4 * 1024 * 1024 * 1024;

/** Bytes of the per-thread buffer `copyBytes` stages misaligned copies through. */
const COPY_STAGE_BYTES = 64 * 1024;
let copyStage: Uint8Array | undefined;

/**
 * `dst.set(src, at)`, fast also for shared memory. V8 copies to or from a SharedArrayBuffer word by
 * word only when source and destination are equally aligned (mod 8), and byte by byte otherwise:
 * a 4 KiB page from a NATS message (any alignment) into a slab slot took 1.3–2.6 µs instead of
 * 0.2–0.4 µs. Such copies go through a per-thread ordinary buffer (two fast copies) instead.
 */
export function copyBytes(dst: Uint8Array, src: Uint8Array, at = 0): void {
  const dstShared = dst.buffer instanceof SharedArrayBuffer;
  if (!(dstShared || src.buffer instanceof SharedArrayBuffer) || ((dst.byteOffset + at - src.byteOffset) & 7) === 0) {
    dst.set(src, at);
    return;
  }
  if (at < 0 || at + src.length > dst.length) throw new RangeError(`copyBytes: ${src.length} bytes at ${at} do not fit ${dst.length}`);
  const stage = (copyStage ??= new Uint8Array(COPY_STAGE_BYTES + 8));
  for (let done = 0; done < src.length; done += COPY_STAGE_BYTES) {
    const n = Math.min(COPY_STAGE_BYTES, src.length - done);
    // The staged bytes sit at the alignment of the shared side, so that copy is word by word.
    const o = (dstShared ? dst.byteOffset + at + done : src.byteOffset + done) & 7;
    const staged = stage.subarray(o, o + n);
    staged.set(src.subarray(done, done + n));
    dst.set(staged, at + done);
  }
}

const MAGIC = 0x42414c53;
const LAYOUT_VERSION = 1;
const W_MAGIC = 0;
const W_VERSION = 1;
const W_SLOT_BYTES = 2;
const W_SLOT_COUNT = 3;
const W_USED = 4;
const W_HINT = 5;
const HEADER_WORDS = 8;
const DATA_ALIGN_BYTES = 64;
const FULL_WORD = -1; // all 32 bits set, as an Int32
/** Scans of the whole bitmap one tryAlloc makes at most, when it keeps losing races. */
const ALLOC_PASSES_MAX = 8;
/** compareExchange attempts on one bitmap word per pass. */
const ALLOC_WORD_ATTEMPTS_MAX = 32;

export interface SlabOptions {
  /** Bytes per slot: a multiple of 8 in [8, 16 MiB]. */
  slotBytes: number;
  /** Number of slots: in [1, 2^20]. */
  slotCount: number;
}

/** What `stats()` reports. Under concurrent use, `slotsUsed` is a snapshot. */
export interface SlabStats {
  slotBytes: number;
  slotsTotal: number;
  slotsUsed: number;
}

interface Layout {
  bitmapWords: number;
  dataOffset: number;
  totalBytes: number;
}

function layoutOf(slotBytes: number, slotCount: number): Layout {
  if (
    !Number.isSafeInteger(slotBytes) ||
    slotBytes < SLAB_SLOT_BYTES_ALIGN ||
    slotBytes > SLAB_SLOT_BYTES_MAX ||
    slotBytes % SLAB_SLOT_BYTES_ALIGN !== 0
  ) {
    throw new StorageError('bad_request', `slotBytes must be a multiple of 8 in [8, ${SLAB_SLOT_BYTES_MAX}], got ${slotBytes}`, {
      slotBytes,
    });
  }
  if (!Number.isSafeInteger(slotCount) || slotCount < 1 || slotCount > SLAB_SLOT_COUNT_MAX) {
    throw new StorageError('bad_request', `slotCount must be in [1, ${SLAB_SLOT_COUNT_MAX}], got ${slotCount}`, { slotCount });
  }
  const bitmapWords = Math.ceil(slotCount / 32);
  const headerBytes = (HEADER_WORDS + bitmapWords) * 4;
  const dataOffset = Math.ceil(headerBytes / DATA_ALIGN_BYTES) * DATA_ALIGN_BYTES;
  const totalBytes = dataOffset + slotBytes * slotCount;
  if (totalBytes > SLAB_TOTAL_BYTES_MAX) {
    throw new StorageError('too_large', `slab of ${totalBytes} bytes exceeds ${SLAB_TOTAL_BYTES_MAX}`, { slotBytes, slotCount });
  }
  return { bitmapWords, dataOffset, totalBytes };
}

/** Fixed-size buffers in a SharedArrayBuffer with a lock-free allocation bitmap; see the file comment. */
export class Slab {
  /** Bytes per slot. */
  readonly slotBytes: number;
  /** Number of slots. */
  readonly slotCount: number;
  private readonly buffer: SharedArrayBuffer;
  private readonly words: Int32Array;
  private readonly bitmapWords: number;
  private readonly dataOffset: number;
  /** One past the highest slot this instance (thread) has allocated. */
  private reached = 0;
  /** Set only while `attach` constructs: the existing buffer to use instead of a new one. */
  private static attaching: SharedArrayBuffer | undefined = undefined;

  /** Creates a slab with a new SharedArrayBuffer, every slot free. */
  constructor(opts: SlabOptions) {
    const layout = layoutOf(opts.slotBytes, opts.slotCount);
    this.slotBytes = opts.slotBytes;
    this.slotCount = opts.slotCount;
    this.bitmapWords = layout.bitmapWords;
    this.dataOffset = layout.dataOffset;
    const existing = Slab.attaching;
    if (existing !== undefined) {
      this.buffer = existing;
      this.words = new Int32Array(existing, 0, HEADER_WORDS + layout.bitmapWords);
      return;
    }
    this.buffer = new SharedArrayBuffer(layout.totalBytes);
    this.words = new Int32Array(this.buffer, 0, HEADER_WORDS + layout.bitmapWords);
    this.words[W_SLOT_BYTES] = opts.slotBytes;
    this.words[W_SLOT_COUNT] = opts.slotCount;
    // Tail bits past slotCount in the last bitmap word are permanently "allocated".
    const tail = opts.slotCount % 32;
    if (tail !== 0) this.words[HEADER_WORDS + layout.bitmapWords - 1] = FULL_WORD << tail;
    this.words[W_VERSION] = LAYOUT_VERSION;
    // Magic last: a buffer with the magic is fully initialized (the buffer is shared only after return).
    Atomics.store(this.words, W_MAGIC, MAGIC);
  }

  /**
   * Attaches to a slab created (possibly on another thread) by `new Slab`, reading slotBytes and
   * slotCount from the buffer's header. Throws StorageError('bad_request') if `sab` is not one.
   */
  static attach(sab: SharedArrayBuffer): Slab {
    if (!(sab instanceof SharedArrayBuffer) || sab.byteLength < HEADER_WORDS * 4) {
      throw new StorageError('bad_request', 'Slab.attach needs the SharedArrayBuffer of a slab');
    }
    const header = new Int32Array(sab, 0, HEADER_WORDS);
    if (Atomics.load(header, W_MAGIC) !== MAGIC || header[W_VERSION] !== LAYOUT_VERSION) {
      throw new StorageError('bad_request', 'SharedArrayBuffer is not a slab (bad magic or layout version)');
    }
    const slotBytes = header[W_SLOT_BYTES]!;
    const slotCount = header[W_SLOT_COUNT]!;
    const layout = layoutOf(slotBytes, slotCount);
    if (sab.byteLength !== layout.totalBytes) {
      throw new StorageError('bad_request', `slab buffer is ${sab.byteLength} bytes, its header says ${layout.totalBytes}`);
    }
    Slab.attaching = sab;
    try {
      return new Slab({ slotBytes, slotCount });
    } finally {
      Slab.attaching = undefined;
    }
  }

  /** The SharedArrayBuffer to hand to another thread (which calls `Slab.attach`). */
  get sab(): SharedArrayBuffer {
    return this.buffer;
  }

  /** Allocates a free slot; throws StorageError('overloaded') when every slot is in use. */
  alloc(): number {
    const slot = this.tryAlloc();
    if (slot < 0) {
      throw new StorageError('overloaded', `slab full: all ${this.slotCount} slots of ${this.slotBytes} bytes in use`, {
        slotCount: this.slotCount,
      });
    }
    return slot;
  }

  /**
   * Allocates a free slot, or returns -1 when every slot is in use. Lock-free; a thread that keeps
   * losing races to other threads gives up after a bounded number of scans and also returns -1.
   */
  tryAlloc(): number {
    const words = this.words;
    const count = this.bitmapWords;
    // Full: answer at once rather than scan every word (a cache at its bound asks often).
    if (Atomics.load(words, W_USED) >= this.slotCount) return -1;
    // A pass scans every bitmap word once. A failed compareExchange means another thread changed
    // that word (it made progress); only then is another pass worth it, and passes are bounded.
    for (let pass = 0; pass < ALLOC_PASSES_MAX; pass++) {
      let contended = false;
      const start = Atomics.load(words, W_HINT) % count;
      for (let k = 0; k < count; k++) {
        const w = (start + k) % count;
        const index = HEADER_WORDS + w;
        let cur = Atomics.load(words, index);
        for (let attempt = 0; cur !== FULL_WORD && attempt < ALLOC_WORD_ATTEMPTS_MAX; attempt++) {
          const inv = ~cur;
          const bit = inv & -inv; // lowest zero bit of cur
          const seen = Atomics.compareExchange(words, index, cur, cur | bit);
          if (seen === cur) {
            Atomics.add(words, W_USED, 1);
            if (w !== start) Atomics.store(words, W_HINT, w);
            const slot = w * 32 + (31 - Math.clz32(bit));
            if (slot >= this.reached) this.reached = slot + 1;
            return slot;
          }
          contended = true;
          cur = seen;
        }
      }
      if (!contended) return -1;
    }
    return -1;
  }

  /** Returns a slot to the slab. A slot that is not allocated (double free) or out of range is a bug: StorageError('invariant'). */
  free(slot: number): void {
    const { index, bit } = this.locate(slot);
    const old = Atomics.and(this.words, index, ~bit);
    if ((old & bit) === 0) {
      throw new StorageError('invariant', `invariant violated: slab slot ${slot} freed but not allocated (double free)`, { slot });
    }
    Atomics.sub(this.words, W_USED, 1);
    // The next allocation starts at this word: a cache that evicts to make room finds the slot
    // it just freed at once instead of scanning the bitmap for it.
    Atomics.store(this.words, W_HINT, index - HEADER_WORDS);
  }

  /**
   * A view onto slot `slot` (no copy): slotBytes bytes, 8-byte aligned. The slot must be allocated
   * (StorageError('invariant') otherwise). The view stays valid until the slot is freed; using it
   * after free is a bug this class cannot detect.
   */
  view(slot: number): Uint8Array {
    const { index, bit } = this.locate(slot);
    if ((Atomics.load(this.words, index) & bit) === 0) {
      throw new StorageError('invariant', `invariant violated: view of slab slot ${slot}, which is not allocated`, { slot });
    }
    return new Uint8Array(this.buffer, this.dataOffset + slot * this.slotBytes, this.slotBytes);
  }

  /**
   * One past the highest slot allocated through this instance: the slots a thread that allocates
   * upwards from the hint (a page cache filling up) will use next start here.
   */
  get slotsReached(): number {
    return this.reached;
  }

  /** Where slot `slot` starts in the SharedArrayBuffer, in bytes (the slot need not be allocated). */
  byteOffsetOf(slot: number): number {
    this.locate(slot);
    return this.dataOffset + slot * this.slotBytes;
  }

  /** Slot size, slot count and slots in use (a snapshot under concurrent use). */
  stats(): SlabStats {
    return { slotBytes: this.slotBytes, slotsTotal: this.slotCount, slotsUsed: Atomics.load(this.words, W_USED) };
  }

  private locate(slot: number): { index: number; bit: number } {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount) {
      throw new StorageError('invariant', `invariant violated: slab slot ${slot} out of range [0, ${this.slotCount})`, { slot });
    }
    return { index: HEADER_WORDS + (slot >>> 5), bit: 1 << (slot & 31) };
  }
}

/** The memory page size `touchForWrite` steps by (the smallest of the platforms Node runs on). */
export const MEMORY_PAGE_BYTES = 4096;

/**
 * Makes the memory of `count` regions of `bytes` bytes, `stride` bytes apart from `offset`,
 * resident and writable, without changing a byte: an `Atomics.add(…, 0)` every MEMORY_PAGE_BYTES
 * from a region's start, and on its last word. Where the buffer's memory starts within a memory
 * page is not known here (an allocator puts a header in front of it), so memory pages are not
 * located: words at most a page apart from the first to the last reach every page the region
 * overlaps. The first write to a page takes its page fault here rather than in the thread that
 * later copies data in.
 *
 * Safe while other threads use the same memory, allocated slots included: an atomic
 * read-modify-write that adds 0 writes back, indivisibly, the value it read, so a concurrent
 * write is ordered before it (and kept) or after it (and wins). That is the hardware's guarantee
 * (a locked add on x86-64; an atomic add, or a load/store-exclusive loop that retries when
 * another core stores there, on ARM64), not the JavaScript memory model's, which leaves plain
 * writes racing an atomic one unspecified.
 *
 * Returns the words touched: ceil((bytes - 4) / 4096) + 1 for each region. RangeError for a
 * region outside the buffer, or an offset, stride or size that is not a multiple of 4.
 */
export function touchForWrite(sab: SharedArrayBuffer, offset: number, stride: number, count: number, bytes: number): number {
  const ints = (n: number): boolean => Number.isSafeInteger(n) && n >= 0;
  if (!(sab instanceof SharedArrayBuffer)) throw new TypeError('touchForWrite: sab must be a SharedArrayBuffer');
  if (!ints(offset) || !ints(stride) || !ints(count) || !ints(bytes) || offset % 4 !== 0 || stride % 4 !== 0 || bytes % 4 !== 0) {
    throw new RangeError(`touchForWrite: offset ${offset}, stride ${stride}, count ${count} and bytes ${bytes} must be non-negative integers, all but count multiples of 4`);
  }
  if (count === 0 || bytes === 0) return 0;
  const end = offset + (count - 1) * stride + bytes;
  if (end > sab.byteLength) throw new RangeError(`touchForWrite: ${count} regions of ${bytes} bytes from ${offset}, ${stride} apart, end at ${end}, past the ${sab.byteLength}-byte buffer`);
  // Divisions, not shifts: a slab may be up to 4 GiB, past the 32-bit range of `>>`.
  const words = new Int32Array(sab, 0, Math.floor(sab.byteLength / 4));
  let touched = 0;
  for (let i = 0; i < count; i++) {
    const start = offset + i * stride;
    const last = start + bytes - 4;
    for (let at = start; at < last; at += MEMORY_PAGE_BYTES) {
      Atomics.add(words, at / 4, 0);
      touched++;
    }
    Atomics.add(words, last / 4, 0);
    touched++;
  }
  return touched;
}
