/**
 * LoopDelay: how late a thread's periodic timer runs, the time its event loop was busy beyond
 * the period (or the thread got no CPU). A shard host measures it on its 10 ms tick, which drives
 * elections and heartbeats: a host whose loop is held for an election timeout (300 ms by default)
 * loses its followers or its leaders, whatever the network does. Exported as the histogram
 * `strata_host_event_loop_delay_seconds` and, as the worst of the last window, in the status.
 */

/** Upper bounds (ms) of the delay buckets; the last is +Inf. */
export const LOOP_DELAY_MS_BUCKETS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, Infinity] as const;
/** The worst delay reported as recent covers this window (two halves, so at least half of it). */
export const LOOP_DELAY_RECENT_MS = 10_000;

export interface LoopDelayStats {
  /** Count of ticks per bucket of LOOP_DELAY_MS_BUCKETS. */
  histogram: number[];
  /** Sum of the delays, ms. */
  sumMs: number;
  /** Worst delay within the last LOOP_DELAY_RECENT_MS (at least its second half), ms. */
  recentMaxMs: number;
}

export class LoopDelay {
  private readonly counts = new Array<number>(LOOP_DELAY_MS_BUCKETS.length).fill(0);
  private sumMs = 0;
  private lastMs: number | undefined;
  /** Worst delay of the current half-window and of the one before it, and when the current began. */
  private currentMax = 0;
  private previousMax = 0;
  private halfStartMs = 0;

  constructor(private readonly periodMs: number) {}

  /** Called at each run of the timer, with the monotonic clock (ms). */
  record(nowMs: number): void {
    const last = this.lastMs;
    this.lastMs = nowMs;
    if (last === undefined) {
      this.halfStartMs = nowMs;
      return;
    }
    const late = Math.max(0, nowMs - last - this.periodMs);
    let i = 0;
    while (late > LOOP_DELAY_MS_BUCKETS[i]!) i++;
    this.counts[i]!++;
    this.sumMs += late;
    this.roll(nowMs);
    if (late > this.currentMax) this.currentMax = late;
  }

  stats(nowMs: number): LoopDelayStats {
    this.roll(nowMs);
    return { histogram: [...this.counts], sumMs: this.sumMs, recentMaxMs: Math.max(this.currentMax, this.previousMax) };
  }

  private roll(nowMs: number): void {
    const half = LOOP_DELAY_RECENT_MS / 2;
    if (nowMs - this.halfStartMs < half) return;
    // One half-window on: the current becomes the previous. Two or more: both are over.
    this.previousMax = nowMs - this.halfStartMs < 2 * half ? this.currentMax : 0;
    this.currentMax = 0;
    this.halfStartMs = nowMs;
  }
}
