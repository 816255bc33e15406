/**
 * Structured logging: one JSON object per line on stderr, quiet by default.
 *
 * The level comes from STRATA_LOG_LEVEL (error | warn | info | debug; default warn), so a node
 * prints nothing while it is healthy. Errors are logged once, by the code that handles them.
 */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

const LEVELS: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

function levelFromEnv(): LogLevel {
  const v = (process.env.STRATA_LOG_LEVEL ?? 'warn').toLowerCase();
  return v in LEVELS ? (v as LogLevel) : 'warn';
}

export interface Logger {
  error(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

/** BigInts (a CBOR bignum decoded from a message) as decimal strings. */
const bigints = (_key: string, v: unknown): unknown => (typeof v === 'bigint' ? v.toString() : v);

/**
 * A log line as JSON; never throws. Fields may hold values decoded from the network: a BigInt is
 * written as a string, a value met again inside itself as "[Circular]", and a line that still
 * cannot be written (a getter that throws) as its level and message with why. Thrown, the error
 * would escape from the handler that logs it, often a timer's or a promise's, and end the process.
 */
function stringify(line: Record<string, unknown>): string {
  try {
    return JSON.stringify(line, bigints);
  } catch {
    const seen = new WeakSet<object>();
    try {
      return JSON.stringify(line, (key, value: unknown) => {
        const v = bigints(key, value);
        if (typeof v === 'object' && v !== null) {
          if (seen.has(v)) return '[Circular]';
          seen.add(v);
        }
        return v;
      });
    } catch (e) {
      return JSON.stringify({ ts: line.ts, level: line.level, msg: line.msg, logError: `the line's fields could not be written: ${e instanceof Error ? e.message : String(e)}` });
    }
  }
}

export function createLogger(base: Record<string, unknown> = {}, level: LogLevel = levelFromEnv()): Logger {
  const max = LEVELS[level];
  const emit = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (LEVELS[lvl] > max) return;
    const line: Record<string, unknown> = { ts: new Date().toISOString(), level: lvl, msg, ...base, ...fields };
    for (const [k, v] of Object.entries(line)) {
      if (v instanceof Error) line[k] = { name: v.name, message: v.message, code: (v as { code?: unknown }).code, stack: v.stack };
    }
    process.stderr.write(stringify(line) + '\n');
  };
  return {
    error: (m, f) => emit('error', m, f),
    warn: (m, f) => emit('warn', m, f),
    info: (m, f) => emit('info', m, f),
    debug: (m, f) => emit('debug', m, f),
    child: (f) => createLogger({ ...base, ...f }, level),
  };
}

/**
 * A reporter for an event that can repeat at the request rate (a refused permission, a write
 * that missed its deadline): the first is passed on at once, then at most one every
 * `intervalMs`, with how many came since the last one passed on (`unreported`).
 */
export function throttled<T>(report: (event: T, unreported: number) => void, intervalMs: number): (event: T) => void {
  let lastAt = Number.NEGATIVE_INFINITY;
  let unreported = 0;
  return (event) => {
    const now = performance.now();
    if (now - lastAt < intervalMs) {
      unreported++;
      return;
    }
    report(event, unreported);
    unreported = 0;
    lastAt = now;
  };
}
