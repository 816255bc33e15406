/**
 * Latency histogram for Strata benchmarks, in microseconds, with bounded memory.
 *
 * Log-linear buckets in the style of HdrHistogram: each power-of-two range ("octave") of
 * [lowestUs, highestUs] is cut into `2^subBucketBits` equal sub-buckets. With the default 7 bits
 * a bucket is at most 1/128 of its lower bound wide, and a value is reported as its bucket's
 * midpoint, so any percentile is within 0.4 % of a recorded value (within 1 % by contract).
 * The defaults (1 µs to 100 s, 7 bits) use 27 × 128 = 3 456 counters (27 KiB).
 *
 * Values below lowestUs fall in the first bucket and above highestUs in the last; min and max
 * are kept exactly, and percentiles are clamped to [min, max].
 */

/** Layout of a {@link Histogram}. Two histograms merge only when their layouts are equal. */
export interface HistogramOptions {
  /** Lower end of the precise range, in µs (> 0). Default 1. */
  lowestUs?: number;
  /** Upper end of the precise range, in µs. Default 100 000 000 (100 s). */
  highestUs?: number;
  /** log2 of the sub-buckets per octave (1..12). Default 7: ~0.8 % bucket width, 0.4 % error. */
  subBucketBits?: number;
}

/** A summary of a histogram, as written to benchmark result files. All times in µs. */
export interface HistogramSummary {
  unit: "us";
  count: number;
  min: number;
  max: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
}

const lowestUsDefault = 1;
const highestUsDefault = 100_000_000;
const subBucketBitsDefault = 7;
const subBucketBitsMax = 12;

export class Histogram {
  readonly lowestUs: number;
  readonly highestUs: number;
  readonly subBucketBits: number;
  private readonly subBuckets: number;
  private readonly octaves: number;
  /** Counts per bucket; float64 counts are exact up to 2^53. */
  private readonly counts: Float64Array;
  private total = 0;
  private sumUs = 0;
  private minUs = Infinity;
  private maxUs = -Infinity;

  constructor(options: HistogramOptions = {}) {
    const lowestUs = options.lowestUs ?? lowestUsDefault;
    const highestUs = options.highestUs ?? highestUsDefault;
    const subBucketBits = options.subBucketBits ?? subBucketBitsDefault;
    if (!(lowestUs > 0) || !Number.isFinite(lowestUs)) throw new RangeError(`lowestUs must be > 0, got ${lowestUs}`);
    if (!(highestUs > lowestUs) || !Number.isFinite(highestUs)) {
      throw new RangeError(`highestUs must be finite and > lowestUs (${lowestUs}), got ${highestUs}`);
    }
    if (!Number.isInteger(subBucketBits) || subBucketBits < 1 || subBucketBits > subBucketBitsMax) {
      throw new RangeError(`subBucketBits must be an integer in 1..${subBucketBitsMax}, got ${subBucketBits}`);
    }
    this.lowestUs = lowestUs;
    this.highestUs = highestUs;
    this.subBucketBits = subBucketBits;
    this.subBuckets = 2 ** subBucketBits;
    this.octaves = Math.max(1, Math.ceil(Math.log2(highestUs / lowestUs)));
    this.counts = new Float64Array(this.octaves * this.subBuckets);
  }

  /** Number of recorded values. */
  get count(): number {
    return this.total;
  }

  /** Smallest recorded value (exact), 0 when empty. */
  get min(): number {
    return this.total === 0 ? 0 : this.minUs;
  }

  /** Largest recorded value (exact), 0 when empty. */
  get max(): number {
    return this.total === 0 ? 0 : this.maxUs;
  }

  /** Mean of the recorded values (exact up to float rounding), 0 when empty. */
  get mean(): number {
    return this.total === 0 ? 0 : this.sumUs / this.total;
  }

  /** Records one value in µs (finite, ≥ 0). */
  record(us: number): void {
    if (!(us >= 0) || !Number.isFinite(us)) throw new RangeError(`Histogram.record: value must be finite and >= 0 µs, got ${us}`);
    this.counts[this.indexOf(us)]! += 1;
    this.total += 1;
    this.sumUs += us;
    if (us < this.minUs) this.minUs = us;
    if (us > this.maxUs) this.maxUs = us;
  }

  /** Records the time elapsed since `startNs` (a `process.hrtime.bigint()` reading). */
  recordSince(startNs: bigint): void {
    this.record(Number(process.hrtime.bigint() - startNs) / 1000);
  }

  /**
   * The value at percentile `p` (0..100) by the nearest-rank method: the smallest recorded value
   * such that at least p % of the values are ≤ it, approximated by its bucket's midpoint and
   * clamped to [min, max] (the first and last ranks are exact). 0 when empty.
   */
  percentile(p: number): number {
    if (!(p >= 0 && p <= 100)) throw new RangeError(`Histogram.percentile: p must be in 0..100, got ${p}`);
    if (this.total === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.total));
    // The first and last ranks are known exactly.
    if (rank === 1) return this.minUs;
    if (rank >= this.total) return this.maxUs;
    let seen = 0;
    for (let index = 0; index < this.counts.length; index++) {
      seen += this.counts[index]!;
      if (seen >= rank) return Math.min(this.maxUs, Math.max(this.minUs, this.midpointOf(index)));
    }
    return this.maxUs;
  }

  /** Adds every value of `other` (same layout) into this histogram. Returns this. */
  merge(other: Histogram): this {
    if (other.lowestUs !== this.lowestUs || other.highestUs !== this.highestUs || other.subBucketBits !== this.subBucketBits) {
      throw new RangeError(
        `Histogram.merge: layouts differ (${this.lowestUs}..${this.highestUs} µs/${this.subBucketBits} bits vs ` +
          `${other.lowestUs}..${other.highestUs} µs/${other.subBucketBits} bits)`,
      );
    }
    if (other.total === 0) return this;
    for (let index = 0; index < this.counts.length; index++) this.counts[index]! += other.counts[index]!;
    this.total += other.total;
    this.sumUs += other.sumUs;
    this.minUs = Math.min(this.minUs, other.minUs);
    this.maxUs = Math.max(this.maxUs, other.maxUs);
    return this;
  }

  /** Forgets every recorded value. */
  reset(): void {
    this.counts.fill(0);
    this.total = 0;
    this.sumUs = 0;
    this.minUs = Infinity;
    this.maxUs = -Infinity;
  }

  /** Summary for result files (what `JSON.stringify` writes). */
  toJSON(): HistogramSummary {
    return {
      unit: "us",
      count: this.count,
      min: this.min,
      max: this.max,
      mean: this.mean,
      p50: this.percentile(50),
      p90: this.percentile(90),
      p99: this.percentile(99),
      p999: this.percentile(99.9),
    };
  }

  private indexOf(us: number): number {
    const scaled = us / this.lowestUs;
    if (scaled < 1) return 0;
    let octave = Math.floor(Math.log2(scaled));
    // Math.log2 may be off by one ulp next to powers of two: settle on 2^octave <= scaled < 2^(octave+1).
    if (2 ** octave > scaled) octave -= 1;
    else if (2 ** (octave + 1) <= scaled) octave += 1;
    if (octave >= this.octaves) return this.counts.length - 1;
    const sub = Math.min(this.subBuckets - 1, Math.floor((scaled / 2 ** octave - 1) * this.subBuckets));
    return octave * this.subBuckets + sub;
  }

  private midpointOf(index: number): number {
    const octave = Math.floor(index / this.subBuckets);
    const sub = index % this.subBuckets;
    const base = this.lowestUs * 2 ** octave;
    return base * (1 + (sub + 0.5) / this.subBuckets);
  }
}
