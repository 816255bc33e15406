/**
 * Latency plots for Strata benchmarks as standalone SVG files, without dependencies.
 *
 * {@link latencyCdfSvg} draws the cumulative distribution of one or more latency histograms:
 * latency on a logarithmic x axis (decade ticks), the fraction of requests at or below it on the
 * y axis (0..100 %). Each series is a polyline of `pointsPerSeries` points sampled at evenly
 * spaced percentiles from 0 (the minimum) to 100 (the maximum), so the shape of the tail is
 * visible next to the median. Text is XML-escaped; numbers are written with fixed precision.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { makeDirectory } from "../storage-engine/make-directory";

/** What the plot needs of a latency histogram (a bench/histogram Histogram satisfies it). */
export interface LatencySource {
  readonly count: number;
  readonly min: number;
  readonly max: number;
  /** Value at percentile p (0..100), in µs. */
  percentile(p: number): number;
}

/** One line of the plot. */
export interface LatencySeries {
  label: string;
  latency: LatencySource;
}

/** Options of {@link latencyCdfSvg}. */
export interface CdfSvgOptions {
  title: string;
  /** Points per series, 2..1001. Default 101 (every whole percentile). */
  pointsPerSeries?: number;
  /** Image width and height in px. Default 800 × 480. */
  widthPx?: number;
  heightPx?: number;
}

/** Most series in one plot (the palette repeats after 8). */
export const SERIES_MAX = 32;
const pointsPerSeriesDefault = 101;
const pointsPerSeriesMax = 1001;
const palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const margin = { left: 64, right: 16, top: 40, bottom: 48 };
const legendLineHeightPx = 16;

/** Escapes text for XML content and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]!);
}

/** A latency in µs as a short axis label: `500 µs`, `10 ms`, `2 s`. */
function axisLabel(us: number): string {
  if (us < 1_000) return `${us} µs`;
  if (us < 1_000_000) return `${us / 1_000} ms`;
  return `${us / 1_000_000} s`;
}

function fixed(value: number): string {
  return value.toFixed(1);
}

/** The percentiles sampled for a series of `points` points: 0, …, 100 evenly spaced. */
export function cdfPercentiles(points: number): number[] {
  if (!Number.isInteger(points) || points < 2 || points > pointsPerSeriesMax) {
    throw new RangeError(`points must be an integer in 2..${pointsPerSeriesMax}, got ${points}`);
  }
  return Array.from({ length: points }, (_, i) => (100 * i) / (points - 1));
}

/**
 * Renders the latency CDF of `series` as an SVG document. Empty histograms are listed in the
 * legend as "(no data)" and draw no line. Throws on more than {@link SERIES_MAX} series.
 */
export function latencyCdfSvg(series: readonly LatencySeries[], options: CdfSvgOptions): string {
  if (series.length > SERIES_MAX) throw new RangeError(`latencyCdfSvg: at most ${SERIES_MAX} series, got ${series.length}`);
  const widthPx = options.widthPx ?? 800;
  const heightPx = options.heightPx ?? 480 + legendLineHeightPx * Math.max(0, series.length - 1);
  if (!(widthPx >= 200 && widthPx <= 10_000 && heightPx >= 150 && heightPx <= 10_000)) {
    throw new RangeError(`latencyCdfSvg: size must be within 200..10000 × 150..10000 px, got ${widthPx} × ${heightPx}`);
  }
  const percentiles = cdfPercentiles(options.pointsPerSeries ?? pointsPerSeriesDefault);
  const withData = series.filter((s) => s.latency.count > 0);
  // The x range covers every series, widened to whole decades (at least one decade, from 1 µs).
  // Without data the axis spans 1 µs .. 1 ms. Values are bounded to 1 µs .. 1e12 µs.
  const lowUs = withData.length === 0 ? 1 : Math.min(1e12, Math.max(1, Math.min(...withData.map((s) => s.latency.min))));
  const highUs = withData.length === 0 ? 1_000 : Math.min(1e12, Math.max(lowUs * 10, ...withData.map((s) => s.latency.max)));
  const decadeLow = Math.floor(Math.log10(lowUs));
  const decadeHigh = Math.max(decadeLow + 1, Math.ceil(Math.log10(highUs)));
  const legendPx = legendLineHeightPx * series.length;
  const plot = {
    x0: margin.left,
    x1: widthPx - margin.right,
    y0: margin.top,
    y1: heightPx - margin.bottom - legendPx,
  };
  const xOf = (us: number): number => {
    const clamped = Math.max(10 ** decadeLow, us);
    return plot.x0 + ((Math.log10(clamped) - decadeLow) / (decadeHigh - decadeLow)) * (plot.x1 - plot.x0);
  };
  const yOf = (p: number): number => plot.y1 - (p / 100) * (plot.y1 - plot.y0);

  const out: string[] = [];
  out.push('<?xml version="1.0" encoding="UTF-8"?>');
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${widthPx}" height="${heightPx}" viewBox="0 0 ${widthPx} ${heightPx}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<title>${escapeXml(options.title)}</title>`);
  out.push(`<rect x="0" y="0" width="${widthPx}" height="${heightPx}" fill="#ffffff"/>`);
  out.push(`<text x="${widthPx / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(options.title)}</text>`);
  // Grid and ticks.
  out.push('<g class="grid" stroke="#dddddd" stroke-width="1">');
  for (let d = decadeLow; d <= decadeHigh; d++) {
    const x = fixed(xOf(10 ** d));
    out.push(`<line x1="${x}" y1="${fixed(plot.y0)}" x2="${x}" y2="${fixed(plot.y1)}"/>`);
  }
  for (const p of [0, 25, 50, 75, 90, 99, 100]) {
    const y = fixed(yOf(p));
    out.push(`<line x1="${fixed(plot.x0)}" y1="${y}" x2="${fixed(plot.x1)}" y2="${y}"/>`);
  }
  out.push("</g>");
  out.push('<g class="axes" fill="#333333">');
  for (let d = decadeLow; d <= decadeHigh; d++) {
    out.push(`<text x="${fixed(xOf(10 ** d))}" y="${fixed(plot.y1 + 16)}" text-anchor="middle">${escapeXml(axisLabel(10 ** d))}</text>`);
  }
  for (const p of [0, 25, 50, 75, 90, 99, 100]) {
    out.push(`<text x="${fixed(plot.x0 - 6)}" y="${fixed(yOf(p) + 4)}" text-anchor="end">${p} %</text>`);
  }
  out.push(`<text x="${fixed((plot.x0 + plot.x1) / 2)}" y="${fixed(plot.y1 + 34)}" text-anchor="middle">latency (log scale)</text>`);
  out.push("</g>");
  out.push(
    `<rect class="frame" x="${fixed(plot.x0)}" y="${fixed(plot.y0)}" width="${fixed(plot.x1 - plot.x0)}" height="${fixed(plot.y1 - plot.y0)}" fill="none" stroke="#333333"/>`,
  );
  // Series and legend.
  series.forEach((s, i) => {
    const color = palette[i % palette.length]!;
    const legendY = plot.y1 + 48 + legendLineHeightPx * i;
    if (s.latency.count > 0) {
      const points = percentiles.map((p) => `${fixed(xOf(s.latency.percentile(p)))},${fixed(yOf(p))}`).join(" ");
      out.push(`<polyline class="series" fill="none" stroke="${color}" stroke-width="2" points="${points}"/>`);
    }
    const p50 = s.latency.count > 0 ? ` p50 ${Math.round(s.latency.percentile(50))} µs, p99 ${Math.round(s.latency.percentile(99))} µs` : " (no data)";
    out.push(`<line x1="${fixed(plot.x0)}" y1="${legendY - 4}" x2="${fixed(plot.x0 + 24)}" y2="${legendY - 4}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<text x="${fixed(plot.x0 + 30)}" y="${legendY}">${escapeXml(s.label + ":" + p50)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/** A file-name-safe UTC timestamp: `20251122T031500123Z` (as writeJson of report.ts uses). */
function timestamp(date: Date): string {
  return date.toISOString().replace(/[-:.]/g, "");
}

/**
 * Writes `svg` to `<dir>/<name>-<timestamp>.svg` and `<dir>/<name>-latest.svg` (creating `dir`),
 * each replaced atomically. Returns the timestamped path.
 */
export function writeSvg(dir: string, name: string, svg: string): string {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new RangeError(`writeSvg: name must match [A-Za-z0-9._-]+, got ${JSON.stringify(name)}`);
  makeDirectory(dir);
  const file = path.join(dir, `${name}-${timestamp(new Date())}.svg`);
  for (const target of [file, path.join(dir, `${name}-latest.svg`)]) {
    const temp = `${target}.${process.pid}.tmp`;
    fs.writeFileSync(temp, svg);
    fs.renameSync(temp, target);
  }
  return file;
}
