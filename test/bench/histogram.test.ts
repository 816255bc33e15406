import * as assert from "node:assert/strict";
import { Histogram } from "../../bench/histogram";
import { prng } from '../support/prng';

/** Deterministic PRNG (mulberry32) so a failure can be replayed. */
/** Nearest-rank percentile of a sorted array: the definition Histogram.percentile approximates. */
function exactPercentile(sorted: number[], p: number): number {
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

const percentiles = [0, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100];

function assertClose(histogram: Histogram, values: number[], tolerance: number): void {
  const sorted = [...values].sort((a, b) => a - b);
  for (const p of percentiles) {
    const exact = exactPercentile(sorted, p);
    const approx = histogram.percentile(p);
    const error = Math.abs(approx - exact) / exact;
    assert.ok(error <= tolerance, `p${p}: histogram ${approx} vs exact ${exact} (error ${(error * 100).toFixed(3)} %)`);
  }
  assert.equal(histogram.count, values.length);
  assert.equal(histogram.min, sorted[0]);
  assert.equal(histogram.max, sorted[sorted.length - 1]);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  assert.ok(Math.abs(histogram.mean - mean) / mean < 1e-9);
}

describe("bench/histogram", () => {
  it("matches exact percentiles within 1 % on log-uniform data from 1 µs to 100 s", () => {
    const random = prng(1);
    const histogram = new Histogram();
    const values: number[] = [];
    for (let i = 0; i < 50_000; i++) {
      const us = 10 ** (random() * 8);
      values.push(us);
      histogram.record(us);
    }
    assertClose(histogram, values, 0.01);
  });

  it("matches exact percentiles within 1 % on latency-like data (exponential around 270 µs, rare stalls)", () => {
    const random = prng(2);
    const histogram = new Histogram();
    const values: number[] = [];
    for (let i = 0; i < 50_000; i++) {
      let us = 150 - 120 * Math.log(1 - random());
      if (random() < 0.001) us *= 100;
      values.push(us);
      histogram.record(us);
    }
    assertClose(histogram, values, 0.01);
  });

  it("handles integer microseconds and powers of two exactly enough", () => {
    const histogram = new Histogram();
    const values = [1, 2, 3, 4, 7, 8, 16, 31, 32, 64, 127, 128, 1024, 4096, 65536, 1 << 20];
    for (const us of values) histogram.record(us);
    assertClose(histogram, values, 0.005);
  });

  it("merge gives the same percentiles as recording everything in one histogram", () => {
    const random = prng(3);
    const whole = new Histogram();
    const left = new Histogram();
    const right = new Histogram();
    const values: number[] = [];
    for (let i = 0; i < 20_000; i++) {
      const us = 10 ** (1 + random() * 5);
      values.push(us);
      whole.record(us);
      (i % 2 === 0 ? left : right).record(us);
    }
    left.merge(right);
    for (const p of percentiles) assert.equal(left.percentile(p), whole.percentile(p));
    assert.equal(left.count, whole.count);
    assert.equal(left.min, whole.min);
    assert.equal(left.max, whole.max);
    assertClose(left, values, 0.01);
    assert.throws(() => left.merge(new Histogram({ subBucketBits: 6 })), /layouts differ/);
  });

  it("is empty-safe, clamps out-of-range values, and rejects bad input", () => {
    const histogram = new Histogram();
    assert.deepEqual(histogram.toJSON(), { unit: "us", count: 0, min: 0, max: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0 });
    histogram.record(0.25);
    histogram.record(5e9);
    assert.equal(histogram.percentile(0), 0.25);
    assert.equal(histogram.percentile(100), 5e9);
    assert.throws(() => histogram.record(-1), RangeError);
    assert.throws(() => histogram.record(Number.NaN), RangeError);
    assert.throws(() => histogram.record(Infinity), RangeError);
    assert.throws(() => histogram.percentile(101), RangeError);
    assert.throws(() => new Histogram({ lowestUs: 0 }), RangeError);
  });

  it("keeps a summary in JSON and a single value exactly", () => {
    const histogram = new Histogram();
    histogram.record(270);
    const summary = JSON.parse(JSON.stringify({ latency: histogram })) as { latency: Record<string, number> };
    assert.equal(summary.latency.count, 1);
    assert.equal(summary.latency.p50, 270);
    assert.equal(summary.latency.p999, 270);
    histogram.reset();
    assert.equal(histogram.count, 0);
  });

  it("records elapsed time from an hrtime reading", () => {
    const histogram = new Histogram();
    histogram.recordSince(process.hrtime.bigint() - 5_000n);
    assert.ok(histogram.min >= 5);
  });
});
