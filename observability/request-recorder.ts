/**
 * RequestRecorder: request durations (fixed buckets) by operation and outcome, and errors by
 * code. It has no OpenTelemetry dependency and costs a few array writes per request, so it runs
 * anywhere: an actor host keeps one on its worker thread and returns its `snapshot()` with its
 * stats; a node keeps one for its API service. StrataMetrics (metrics.ts) exports the snapshots.
 */

/** Upper bounds (inclusive) of the request-duration buckets, in seconds. */
export const REQUEST_DURATION_BUCKETS_S: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];
/** (operation, outcome) series one RequestRecorder keeps at most; more go to operation `other`. */
export const REQUEST_SERIES_MAX = 256;
/** Error codes one RequestRecorder counts separately at most; more are counted as `other`. */
export const ERROR_CODES_MAX = 64;
/** Label values are cut to this many characters. */
export const LABEL_LENGTH_MAX = 64;

/** One (operation, outcome) series of a RequestRecorder; counts per REQUEST_DURATION_BUCKETS_S + one for +Inf. */
export interface RequestSeriesSnapshot {
  operation: string;
  outcome: string;
  counts: number[];
  count: number;
  sumSeconds: number;
}

/** A RequestRecorder's state: structured-clone safe, so it crosses threads with the host stats. */
export interface RequestStatsSnapshot {
  series: RequestSeriesSnapshot[];
  errors: Array<{ code: string; count: number }>;
}

/** A label value within LABEL_LENGTH_MAX. */
export function cleanLabel(value: string): string {
  return value.length > LABEL_LENGTH_MAX ? value.slice(0, LABEL_LENGTH_MAX) : value;
}

/**
 * Counts request durations in fixed buckets by operation and outcome, and errors by code.
 * Bounded: at most REQUEST_SERIES_MAX series and ERROR_CODES_MAX codes.
 */
export class RequestRecorder {
  private readonly series = new Map<string, RequestSeriesSnapshot>();
  private readonly errorCounts = new Map<string, number>();

  /**
   * Records one request: `outcome` is 'ok' or the protocol error code it was answered with
   * (which is also counted as an error).
   */
  requestDuration(operation: string, outcome: string, seconds: number): void {
    const s = this.seriesOf(operation, outcome);
    const v = Number.isFinite(seconds) && seconds > 0 ? seconds : 0;
    let i = 0;
    while (i < REQUEST_DURATION_BUCKETS_S.length && v > REQUEST_DURATION_BUCKETS_S[i]!) i++;
    s.counts[i]!++;
    s.count++;
    s.sumSeconds += v;
    if (outcome !== 'ok') this.errors(outcome);
  }

  /** Counts one error reply (or another failure worth counting) with its protocol code. */
  errors(code: string): void {
    let key = cleanLabel(code);
    if (!this.errorCounts.has(key) && this.errorCounts.size >= ERROR_CODES_MAX) key = 'other';
    this.errorCounts.set(key, (this.errorCounts.get(key) ?? 0) + 1);
  }

  /**
   * Runs (awaits) a request and records its duration and outcome: the error's string `code`,
   * or 'internal' for an error without one. The clock is performance.now().
   */
  async observe<T>(operation: string, request: Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      const r = await request;
      this.requestDuration(operation, 'ok', (performance.now() - t0) / 1000);
      return r;
    } catch (err) {
      const code = (err as { code?: unknown } | null | undefined)?.code;
      this.requestDuration(operation, typeof code === 'string' ? code : 'internal', (performance.now() - t0) / 1000);
      throw err;
    }
  }

  /** A copy of the counters (cumulative since the recorder was created). */
  snapshot(): RequestStatsSnapshot {
    return {
      series: [...this.series.values()].map((s) => ({ ...s, counts: [...s.counts] })),
      errors: [...this.errorCounts].map(([code, count]) => ({ code, count })),
    };
  }

  private seriesOf(operation: string, outcome: string): RequestSeriesSnapshot {
    let op = cleanLabel(operation);
    const out = cleanLabel(outcome);
    let key = `${op}\u0000${out}`;
    let s = this.series.get(key);
    if (s) return s;
    if (this.series.size >= REQUEST_SERIES_MAX) {
      op = 'other';
      key = `${op}\u0000${out}`;
      s = this.series.get(key);
      if (s) return s;
    }
    s = { operation: op, outcome: out, counts: new Array<number>(REQUEST_DURATION_BUCKETS_S.length + 1).fill(0), count: 0, sumSeconds: 0 };
    // The 'other' series may exceed the bound by the number of distinct outcomes (≤ ERROR_CODES_MAX + 1).
    this.series.set(key, s);
    return s;
  }
}
