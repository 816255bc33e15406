/**
 * Output helpers for Strata benchmarks: aligned tables on stdout, JSON result files, number
 * formatting, and a one-line progress indicator that only appears on a terminal.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { makeDirectory } from "../storage-engine/make-directory";

/** A table cell: strings are left-aligned, numbers right-aligned and formatted. */
export type Cell = string | number;

/** True when stdout is a terminal (progress lines are shown only then). */
export const isTTY: boolean = Boolean(process.stdout.isTTY);

let progressShown = false;

/**
 * Shows `text` as a progress line that rewrites itself in place on a terminal; prints nothing
 * when stdout is not a TTY (CI logs, pipes). An empty text clears the line.
 */
export function progress(text: string, tail = ""): void {
  if (!isTTY) return;
  // A terminal that reports no width (0, or none) gets 80 columns, not an empty line.
  const line = fitProgressLine(text, tail, process.stdout.columns || 80);
  process.stdout.write(`\r${line}\x1b[K`);
  progressShown = line !== "";
  if (!progressShown) process.stdout.write("\r");
}

/**
 * `text`, then `tail` (a bar and a timer) after a space, in fewer than `columns` characters (the
 * last column is left empty: a full line wraps on some terminals). What does not fit is cut
 * from `text`, marked `…`, so the tail stays whole; only a terminal narrower than the tail
 * cuts it too, from the right.
 */
export function fitProgressLine(text: string, tail: string, columns: number): string {
  const width = Math.max(0, columns - 1);
  const line = tail === "" ? text : `${text} ${tail}`;
  if (line.length <= width) return line;
  const room = width - (tail === "" ? 0 : tail.length + 1);
  if (room < 2) return line.slice(0, width);
  return `${text.slice(0, room - 1)}…${tail === "" ? "" : ` ${tail}`}`;
}

/** A bar of `width` cells filled to `fraction` (clamped to 0..1): `[#######.............]`. */
export function progressBar(fraction: number, width: number): string {
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const filled = Math.round(f * width);
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}]`;
}

/** Clears a progress line left by {@link progress}, if any. */
export function clearProgress(): void {
  if (progressShown) progress("");
}

/**
 * Formats a number for a table: integers with thousands separators (`135,000`), other values
 * with 3 significant digits below 100 (`0.271`, `20.5`) and no decimals from 100 up (`3,612`).
 * NaN and infinities are written as `-`.
 */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return "-";
  if (Number.isInteger(value) || Math.abs(value) >= 100) {
    return Math.round(value).toLocaleString("en-US");
  }
  if (value === 0) return "0";
  return Number(value.toPrecision(3)).toString();
}

/** Formats a duration in µs with a unit that keeps it short: `270 µs`, `1.25 ms`, `3.40 s`. */
export function formatUs(us: number): string {
  if (!Number.isFinite(us)) return "-";
  if (Math.abs(us) < 1_000) return `${formatNumber(us)} µs`;
  if (Math.abs(us) < 1_000_000) return `${(us / 1_000).toFixed(2)} ms`;
  return `${(us / 1_000_000).toFixed(2)} s`;
}

/** Formats a byte count in binary units: `4 KiB`, `1.5 MiB`. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${formatNumber(unit === 0 ? value : Number(value.toFixed(2)))} ${units[unit]}`;
}

/**
 * `a / b` as a factor for comparing a Strata path with its baseline: `0.85×`, `12.3×`.
 * Returns `-` when either side is not a positive finite number.
 */
export function ratio(a: number, b: number): string {
  if (!(Number.isFinite(a) && Number.isFinite(b)) || !(b > 0) || a < 0) return "-";
  return `${formatNumber(Number((a / b).toPrecision(3)))}×`;
}

/** `a / b` as a percentage: `85.2 %`. Returns `-` when b is not a positive finite number. */
export function percent(a: number, b: number): string {
  if (!(Number.isFinite(a) && Number.isFinite(b)) || !(b > 0)) return "-";
  return `${((a / b) * 100).toFixed(1)} %`;
}

/**
 * Renders rows as an aligned text table under `title`. Columns are the union of the rows' keys
 * in order of first appearance; a missing cell is empty.
 */
export function formatTable(title: string, rows: ReadonlyArray<Readonly<Record<string, Cell>>>): string {
  const columns: string[] = [];
  for (const row of rows) for (const key of Object.keys(row)) if (!columns.includes(key)) columns.push(key);
  const rendered = rows.map((row) =>
    columns.map((column) => {
      const cell = row[column];
      return cell === undefined ? "" : typeof cell === "number" ? formatNumber(cell) : cell;
    }),
  );
  const numeric = columns.map((column) => rows.some((row) => typeof row[column] === "number"));
  const widths = columns.map((column, i) => Math.max(column.length, ...rendered.map((cells) => cells[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((cell, i) => (numeric[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  const out = [title];
  if (columns.length === 0) {
    out.push("(no rows)");
  } else {
    out.push(line(columns), widths.map((width) => "-".repeat(width)).join("  "));
    for (const cells of rendered) out.push(line(cells));
  }
  return out.join("\n");
}

/** A flag's integer value in `min..max` (a bench's command line); an Error naming the flag otherwise. */
export function intFlag(flag: string, value: string | undefined, min: number, max: number): number {
  const n = Number(value);
  if (value === undefined || !Number.isSafeInteger(n) || n < min || n > max) throw new Error(`${flag}: expected an integer in ${min}..${max}, got ${String(value)}`);
  return n;
}

/** Prints {@link formatTable} to stdout (clearing a progress line first), followed by a blank line. */
export function printTable(title: string, rows: ReadonlyArray<Readonly<Record<string, Cell>>>): void {
  clearProgress();
  process.stdout.write(`${formatTable(title, rows)}\n\n`);
}

/** A file-name-safe UTC timestamp: `20251122T031500123Z`. */
function timestamp(date: Date): string {
  return date.toISOString().replace(/[-:.]/g, "");
}

function writeFileAtomic(file: string, text: string): void {
  const temp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temp, text);
  fs.renameSync(temp, file);
}

/** Where `writeJson` puts a result of `name` made at `at`: `<dir>/<name>-<timestamp>.json`. */
export function jsonPath(dir: string, name: string, at: Date): string {
  return path.join(dir, `${checkResultName(name)}-${timestamp(at)}.json`);
}

function checkResultName(name: string): string {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new RangeError(`writeJson: name must match [A-Za-z0-9._-]+, got ${JSON.stringify(name)}`);
  return name;
}

/**
 * Writes `data` as pretty JSON to `<dir>/<name>-<timestamp>.json` and `<dir>/<name>-latest.json`
 * (creating `dir`), each replaced atomically. BigInts are written as strings; objects with a
 * `toJSON` (such as a Histogram) write their summary. Returns the timestamped path (`file`:
 * another, as `jsonPath` names it beforehand).
 */
export function writeJson(dir: string, name: string, data: unknown, file: string = jsonPath(dir, name, new Date())): string {
  checkResultName(name);
  makeDirectory(dir);
  const text = JSON.stringify(data, (_key, value: unknown) => (typeof value === "bigint" ? value.toString() : value), 2) + "\n";
  writeFileAtomic(file, text);
  writeFileAtomic(path.join(dir, `${checkResultName(name)}-latest.json`), text);
  return file;
}

/**
 * Why files cannot be written in `dir`, or undefined when they can: the directory is made first
 * when `create` (else it must exist), then a probe file is written in it and removed. The answer
 * is the cause as the OS gives it (`ENOTDIR: not a directory, mkdir '/x/afile'`).
 */
export function directoryProblem(dir: string, create: boolean): string | undefined {
  try {
    if (create) makeDirectory(dir);
    else if (!fs.statSync(dir).isDirectory()) return "not a directory";
    const probe = path.join(dir, `.strata-bench-probe-${process.pid}.tmp`);
    fs.writeFileSync(probe, "");
    fs.rmSync(probe, { force: true });
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * Removes `dir` and what it holds, if there; one that cannot be removed is told as one line to
 * `warn` (default stderr) instead of thrown, so that the rest of a cleanup still runs.
 */
export function removeDirectory(dir: string, warn: (line: string) => void = (line) => process.stderr.write(line)): void {
  try {
    fs.rmSync(dir, { recursive: true, force: true });
  } catch (err) {
    warn(`strata bench: warning: could not remove ${dir}: ${(err as Error).message}\n`);
  }
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on Linux). */
const PROC_TICKS_PER_SECOND = 100;

/** User + system CPU of a process from /proc, µs; undefined when it cannot be read. */
export function procCpuUs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may hold spaces), which ends with the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    return Number.isFinite(ticks) ? (ticks * 1e6) / PROC_TICKS_PER_SECOND : undefined;
  } catch {
    return undefined;
  }
}
