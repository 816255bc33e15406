/**
 * SlabWarmer: makes the memory of the slots a device's page caches will fill next resident before
 * they need it.
 *
 * A page cache copies each page it caches into a slab slot (a written page is cached when it is
 * applied). Until the cache reaches its bound, that slot is one the process never used: the copy
 * takes page faults (10–20 µs each on the virtual machines Strata was measured on, and a slot's
 * 4 KiB usually straddle two memory pages), several times the rest of applying a 4 KiB write
 * (docs/performance-history.md, "Memory the process never used"). The warmer keeps the slots
 * just above the highest one allocated so far (`Slab.slotsReached`) resident, by asking the CPU
 * pool to touch them (`touchForWrite`): the faults are taken on a pool thread, not on the actor
 * thread that answers requests.
 *
 * Bounded: one step in flight, of at most `stepSlots` slots (64 by default: about 1.5 ms of
 * faults on the pool's thread, so that a checksum queued behind a step waits little). The warmed
 * slots stay at most `aheadSlotsMax` above the slots reached, and at least `aheadSlotsMin` or as
 * many as are reached, whichever is more (a device with little cached warms little). Only the
 * first `bytesPerSlot` bytes of a slot are touched: 4096 by default, a 4 KiB page (an 8 KiB
 * page's second half faults where it is first written, as before). Nothing is warmed before the
 * first slot is allocated. A step that leaves the window short is followed at once by the next; a
 * failed step (the pool refused it, or is closed) is counted, and a later `poke` tries again.
 * Once the caches are at their bound the warmed window above them stays resident, unused.
 */
import type { Slab } from '../storage-engine/slab';

export interface SlabWarmerOptions {
  slab: Slab;
  /** Touches `count` regions of `bytes` bytes, `stride` apart from `offset` (CpuPool.touch); resolves with the words touched. */
  touch(sab: SharedArrayBuffer, offset: number, stride: number, count: number, bytes: number): Promise<number>;
  /** Bytes touched at the start of each slot; default 4096. */
  bytesPerSlot?: number;
  /** Slots warmed above the slots reached at most; default 4096. */
  aheadSlotsMax?: number;
  /** Slots warmed above the slots reached at least (once one is); default 256. */
  aheadSlotsMin?: number;
  /** Slots one step touches at most; default 64. */
  stepSlots?: number;
}

export interface SlabWarmerStats {
  /** Slots from 0 whose first `bytesPerSlot` bytes are resident. */
  warmedSlots: number;
  /** Steps completed, and the words they touched (`touchForWrite`: about one per memory page of a slot, and one more). */
  steps: number;
  touches: number;
  /** Steps that failed (the pool refused them or was closed). */
  failures: number;
}

export class SlabWarmer {
  private readonly slab: Slab;
  private readonly touch: SlabWarmerOptions['touch'];
  private readonly bytesPerSlot: number;
  private readonly aheadMax: number;
  private readonly aheadMin: number;
  private readonly step: number;
  private warmed = 0;
  private running = false;
  /** A step left the warmed slots short of the window: the next one follows it at once. */
  private catchingUp = false;
  private closed = false;
  private readonly counters = { steps: 0, touches: 0, failures: 0 };

  constructor(opts: SlabWarmerOptions) {
    this.slab = opts.slab;
    this.touch = opts.touch;
    this.bytesPerSlot = Math.min(opts.bytesPerSlot ?? 4096, opts.slab.slotBytes);
    this.aheadMax = opts.aheadSlotsMax ?? 4096;
    this.aheadMin = Math.min(opts.aheadSlotsMin ?? 256, this.aheadMax);
    this.step = opts.stepSlots ?? 64;
    const check = (name: string, v: number, min: number): void => {
      if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`SlabWarmer: ${name} must be an integer >= ${min}, got ${String(v)}`);
    };
    check('bytesPerSlot', this.bytesPerSlot, 1);
    check('aheadSlotsMax', this.aheadMax, 0);
    check('aheadSlotsMin', this.aheadMin, 0);
    check('stepSlots', this.step, 1);
    if (this.bytesPerSlot % 4 !== 0) throw new RangeError(`SlabWarmer: bytesPerSlot must be a multiple of 4, got ${this.bytesPerSlot}`);
  }

  /**
   * Starts the next step if one is due and none is running (called on the host's tick). Due once
   * the warmed slots lead the slots reached by less than half the window (so that a slowly
   * growing cache wakes the pool now and then, not on every tick), and then until they lead by
   * the whole window again.
   */
  poke(): void {
    if (this.running || this.closed) return;
    const reached = this.slab.slotsReached;
    if (reached === 0) return;
    const ahead = Math.min(this.aheadMax, Math.max(this.aheadMin, reached));
    const target = Math.min(this.slab.slotCount, reached + ahead);
    // Slots the caches reached already were faulted in by their use: warming goes on above them.
    const from = Math.max(this.warmed, reached);
    if (from >= target || (!this.catchingUp && from - reached >= ahead / 2)) return;
    const count = Math.min(this.step, target - from);
    this.catchingUp = from + count < target;
    this.running = true;
    let started: Promise<number>;
    try {
      started = this.touch(this.slab.sab, this.slab.byteOffsetOf(from), this.slab.slotBytes, count, this.bytesPerSlot);
    } catch (e) {
      started = Promise.reject(e);
    }
    void started.then(
      (touches) => {
        this.warmed = Math.max(this.warmed, from + count);
        this.counters.steps++;
        this.counters.touches += touches;
      },
      () => {
        this.counters.failures++;
        // Not at once: a pool that refuses (or is gone) is asked again on a later tick.
        this.catchingUp = false;
      },
    ).finally(() => {
      this.running = false;
      if (this.catchingUp) this.poke();
    });
  }

  /** Starts no more steps (a step running ends on its own). */
  close(): void {
    this.closed = true;
  }

  stats(): SlabWarmerStats {
    return { warmedSlots: this.warmed, ...this.counters };
  }
}
