/**
 * Linearizability checker for Strata page histories.
 *
 * Every Strata page is a read/write register. A fault-injection test records each client
 * operation (call time, completion time or "outcome unknown", value written or observed) and
 * asks {@link checkLinearizable} whether some total order of the operations exists that
 * (a) respects real time — an operation that completed before another was invoked comes first —
 * and (b) is a legal sequential register history: every read returns the value of the latest
 * write before it, or the initial value when there is none.
 *
 * Pages are independent registers, so the history is split by page and each page is checked on
 * its own (linearizability is compositional). Per page the search is the Wing–Gong depth-first
 * search over call/return events ordered by time, with Lowe's memoisation of visited
 * configurations (set of linearized operations as a bitset + register value), as in Porcupine.
 * The work per page is bounded; hitting the bound yields `ok: false, exhausted: true`, never a
 * pass. See docs/linearizability.md.
 */

/** A register operation on a Strata page. */
export type OpKind = 'write' | 'read';

/** One recorded client operation. */
export interface Operation {
  /** Which client issued it (a client has at most one operation in flight). */
  client: number;
  /** The page (register) it targets. */
  page: number;
  kind: OpKind;
  /**
   * write: the value written (a short string id such as 'c3-17'; '' = never written / zeros).
   * read: the value observed.
   */
  value: string;
  /** When the call started (monotonic clock, e.g. performance.now()). */
  invokeMs: number;
  /**
   * When it completed; undefined if the outcome is unknown (timeout, connection lost,
   * not_leader after sending…): a write with unknown outcome may take effect at any time after
   * invokeMs, or never. Reads with unknown outcome are dropped. Definite failures (the server
   * said the write was NOT applied) are simply not recorded.
   */
  completeMs?: number;
}

/** Outcome of {@link checkLinearizable}. */
export interface CheckResult {
  /** True only if every page's history was proven linearizable. */
  ok: boolean;
  /** Number of pages checked. */
  pages: number;
  /** Number of operations checked (unknown-outcome reads are dropped and not counted). */
  operations: number;
  /**
   * For a failure: the page, an explanation (the longest linearizable prefix found and the
   * operations that could not be placed after it) and those operations.
   */
  failure?: { page: number; explanation: string; ops: Operation[] };
  /**
   * True if the search hit its bound on the reported page: then `ok` is false and
   * `failure.explanation` says so. The check never silently passes.
   */
  exhausted?: boolean;
}

/** Options of {@link checkLinearizable}. */
export interface CheckOptions {
  /** Value of a page that was never written. Default ''. */
  initialValue?: string;
  /** Bound on search steps (attempts to linearize an operation) per page. Default 5_000_000. */
  stepsMaxPerPage?: number;
}

/** Default bound on search steps per page. */
export const DEFAULT_STEPS_MAX_PER_PAGE = 5_000_000;

/** How many operations of the linearizable prefix an explanation lists. */
const EXPLAIN_PREFIX_TAIL = 8;

/** An operation prepared for the per-page search. */
interface PageOp {
  /** The recorded operation. */
  op: Operation;
  /** Its index in the history given to {@link checkLinearizable}. */
  index: number;
  /** Interned value (written or observed). */
  value: number;
  isWrite: boolean;
  /** Time by which it must have taken effect: completeMs, or +Infinity if the outcome is unknown. */
  deadline: number;
}

type PageOutcome =
  | { kind: 'ok' }
  | { kind: 'exhausted'; steps: number }
  | { kind: 'fail'; explanation: string; ops: Operation[] };

/**
 * Checks that `history` is linearizable, page by page, as a set of read/write registers that
 * all start at `opts.initialValue`.
 *
 * Pages are checked in ascending order; the first page proven non-linearizable is reported.
 * If no page fails but the search bound was hit on some page, the first such page is reported
 * with `exhausted: true`. Throws a RangeError on malformed input (non-finite times, completion
 * before invocation, unknown kind, bad options).
 */
export function checkLinearizable(history: readonly Operation[], opts: CheckOptions = {}): CheckResult {
  const initialValue = opts.initialValue ?? '';
  const stepsMax = opts.stepsMaxPerPage ?? DEFAULT_STEPS_MAX_PER_PAGE;
  if (!Number.isSafeInteger(stepsMax) || stepsMax < 1) {
    throw new RangeError(`stepsMaxPerPage must be a positive integer, got ${stepsMax}`);
  }

  const byPage = new Map<number, { op: Operation; index: number }[]>();
  let operations = 0;
  history.forEach((op, index) => {
    validate(op, index);
    if (op.kind === 'read' && op.completeMs === undefined) return; // unknown read: tells nothing
    operations++;
    let list = byPage.get(op.page);
    if (list === undefined) byPage.set(op.page, (list = []));
    list.push({ op, index });
  });

  const pages = [...byPage.keys()].sort((a, b) => a - b);
  let firstExhausted: { page: number; steps: number; ops: number } | undefined;
  const exhaustedPages: number[] = [];
  for (const page of pages) {
    const ops = byPage.get(page)!;
    const outcome = checkPage(page, ops, initialValue, stepsMax);
    if (outcome.kind === 'fail') {
      const note = exhaustedPages.length > 0
        ? `\n(the search bound was also hit on page(s) ${exhaustedPages.join(', ')}, which are unchecked)`
        : '';
      return {
        ok: false, pages: pages.length, operations,
        failure: { page, explanation: outcome.explanation + note, ops: outcome.ops },
      };
    }
    if (outcome.kind === 'exhausted') {
      exhaustedPages.push(page);
      firstExhausted ??= { page, steps: outcome.steps, ops: ops.length };
    }
  }
  if (firstExhausted !== undefined) {
    const others = exhaustedPages.length > 1 ? ` (also on page(s) ${exhaustedPages.slice(1).join(', ')})` : '';
    return {
      ok: false, pages: pages.length, operations, exhausted: true,
      failure: {
        page: firstExhausted.page,
        explanation:
          `page ${firstExhausted.page}: search bound exhausted after ${firstExhausted.steps} steps ` +
          `(stepsMaxPerPage=${stepsMax}, ${firstExhausted.ops} operations)${others}; ` +
          'linearizability is UNKNOWN — this is not a pass. Shorten the history or raise the bound.',
        ops: [],
      },
    };
  }
  return { ok: true, pages: pages.length, operations };
}

/** Rejects operations the checker cannot interpret. */
function validate(op: Operation, index: number): void {
  if (op.kind !== 'write' && op.kind !== 'read') {
    throw new RangeError(`history[${index}]: unknown kind ${JSON.stringify(op.kind)}`);
  }
  if (!Number.isFinite(op.invokeMs)) {
    throw new RangeError(`history[${index}]: invokeMs must be a finite number, got ${op.invokeMs}`);
  }
  if (op.completeMs !== undefined && !(Number.isFinite(op.completeMs) && op.completeMs >= op.invokeMs)) {
    throw new RangeError(
      `history[${index}]: completeMs must be finite and >= invokeMs (${op.invokeMs}), got ${op.completeMs}`);
  }
}

/**
 * Prepares one page's operations: interns values and gives every operation its deadline
 * (completeMs, or +Infinity for an unknown-outcome write).
 *
 * An unknown-outcome write whose value no completed read on the page observed is dropped:
 * removing it from any linearization leaves a valid one (nothing reads between it and the next
 * write) and it constrains no other operation, so it is equivalent to "never applied". Timed-out
 * writes during a fault are mostly of this kind; kept, each would be a candidate at every later
 * point of the search and could double the configurations to explore.
 */
function preparePage(
  entries: readonly { op: Operation; index: number }[], initialValue: string,
): { ops: PageOp[]; values: string[]; initial: number } {
  const values: string[] = [];
  const ids = new Map<string, number>();
  const intern = (v: string): number => {
    let id = ids.get(v);
    if (id === undefined) { id = values.length; values.push(v); ids.set(v, id); }
    return id;
  };
  const initial = intern(initialValue);
  const observed = new Set<string>();
  for (const { op } of entries) if (op.kind === 'read') observed.add(op.value);

  const ops: PageOp[] = [];
  for (const { op, index } of entries) {
    if (op.kind === 'write' && op.completeMs === undefined && !observed.has(op.value)) continue;
    const deadline = op.completeMs ?? Number.POSITIVE_INFINITY;
    ops.push({ op, index, value: intern(op.value), isWrite: op.kind === 'write', deadline });
  }
  return { ops, values, initial };
}

/**
 * Wing–Gong search with Lowe's memoisation over one page.
 *
 * Events (a call and a return per operation) sit in a doubly linked list sorted by time, calls
 * before returns at equal times (such operations count as concurrent). Walking the list, a call
 * is a candidate to linearize next; if the register accepts it (a write always; a read only if
 * it observes the current value) and the resulting configuration (linearized set, value) was
 * not visited before, the operation's call and return are lifted out of the list and the walk
 * restarts at the head. Reaching a return means that operation should have been linearized
 * already: the last choice is undone and the walk continues after it. An empty list is a
 * linearization; backtracking past the first choice proves there is none.
 */
function checkPage(
  page: number, entries: readonly { op: Operation; index: number }[], initialValue: string, stepsMax: number,
): PageOutcome {
  const { ops, values, initial } = preparePage(entries, initialValue);
  const n = ops.length;

  // A read of a value that no operation on this page writes can never be placed.
  const written = new Set<number>([initial]);
  for (const o of ops) if (o.isWrite) written.add(o.value);
  const orphan = ops.find((o) => !o.isWrite && !written.has(o.value));
  if (orphan !== undefined) {
    return {
      kind: 'fail',
      explanation:
        `page ${page}: not linearizable — ${describe(orphan)} observed ${JSON.stringify(values[orphan.value])}, ` +
        `which was never written to this page (and is not the initial value ${JSON.stringify(initialValue)})`,
      ops: [orphan.op],
    };
  }

  // Events: e < n is the call of op e, e >= n the return of op e - n; HEAD and TAIL are
  // sentinels. Every op still in the list has its return there too, so a walk from HEAD meets
  // a return before TAIL.
  const HEAD = 2 * n;
  const TAIL = 2 * n + 1;
  const order = Array.from({ length: 2 * n }, (_, e) => e);
  const timeOf = (e: number): number => (e < n ? ops[e]!.op.invokeMs : ops[e - n]!.deadline);
  // By time (unknown writes' +Infinity returns last); at equal times by event number, which
  // puts calls (< n) before returns: operations meeting at one instant count as concurrent.
  order.sort((a, b) => {
    const ta = timeOf(a);
    const tb = timeOf(b);
    return ta !== tb ? (ta < tb ? -1 : 1) : a - b;
  });
  const next = new Int32Array(2 * n + 2);
  const prev = new Int32Array(2 * n + 2);
  const position = new Int32Array(2 * n);
  let last = HEAD;
  order.forEach((e, i) => { next[last] = e; prev[e] = last; last = e; position[e] = i; });
  next[last] = TAIL;
  prev[TAIL] = last;

  /** Takes op `call`'s call and return events out of the list (they keep their own links). */
  const lift = (call: number): void => {
    const ret = call + n;
    next[prev[call]!] = next[call]!;
    prev[next[call]!] = prev[call]!;
    next[prev[ret]!] = next[ret]!;
    prev[next[ret]!] = prev[ret]!;
  };
  /** Puts back what {@link lift} took out; undoes must come in reverse order of lifts. */
  const unlift = (call: number): void => {
    const ret = call + n;
    next[prev[ret]!] = ret;
    prev[next[ret]!] = ret;
    next[prev[call]!] = call;
    prev[next[call]!] = call;
  };

  // Lowe's cache: configurations (linearized set, register value) already explored. The key is
  // exact — the set's bitset as 16-bit chars after the value id — so there are no collisions.
  const halves = new Uint16Array(Math.max(1, Math.ceil(n / 16)));
  const cache = new Set<string>();
  /** Records the configuration (halves, state); false if it was visited before. */
  const visit = (state: number): boolean => {
    let key = String.fromCharCode(state & 0xffff, state >>> 16);
    for (let i = 0; i < halves.length; i += 4096) key += String.fromCharCode(...halves.subarray(i, i + 4096));
    if (cache.has(key)) return false;
    cache.add(key);
    return true;
  };
  const flip = (i: number): void => { halves[i >>> 4]! ^= 1 << (i & 15); };

  const stack: { call: number; stateBefore: number }[] = [];
  let state = initial;
  let steps = 0;
  let best: number[] = [];
  let bestState = initial;
  let entry = next[HEAD]!;
  while (next[HEAD]! !== TAIL) {
    if (entry < n) {
      if (++steps > stepsMax) return { kind: 'exhausted', steps: stepsMax };
      const o = ops[entry]!;
      if (o.isWrite || o.value === state) {
        const newState = o.isWrite ? o.value : state;
        flip(entry);
        if (visit(newState)) {
          stack.push({ call: entry, stateBefore: state });
          state = newState;
          lift(entry);
          if (stack.length > best.length) { best = stack.map((s) => s.call); bestState = state; }
          entry = next[HEAD]!;
          continue;
        }
        flip(entry);
      }
      entry = next[entry]!;
    } else {
      const top = stack.pop();
      if (top === undefined) return explainFailure(page, ops, values, best, bestState, position, n);
      state = top.stateBefore;
      flip(top.call);
      unlift(top.call);
      entry = next[top.call]!;
    }
  }
  return { kind: 'ok' };
}

/**
 * Builds the explanation of a non-linearizable page from the deepest configuration reached:
 * the linearized prefix, the value the register then held, the first operation whose deadline
 * passed (its return was reached), and every operation that could have gone next. Those are
 * all reads the register rejects: a write is always accepted, and accepting anything there
 * would have reached a deeper configuration.
 */
function explainFailure(
  page: number, ops: readonly PageOp[], values: readonly string[], best: readonly number[],
  bestState: number, position: Int32Array, n: number,
): PageOutcome {
  const done = new Set(best);
  // The remaining event list at that configuration is the sorted order minus the prefix: its
  // first return belongs to the pending operation whose return comes first.
  let blocking = -1;
  for (let i = 0; i < n; i++) {
    if (done.has(i)) continue;
    if (blocking < 0 || position[i + n]! < position[blocking + n]!) blocking = i;
  }
  // Operations that could go next there: calls before that return (the blocking one first).
  const unplaced = [blocking];
  for (let i = 0; i < n; i++) {
    if (i !== blocking && !done.has(i) && position[i]! < position[blocking + n]!) unplaced.push(i);
  }
  const q = (v: number): string => JSON.stringify(values[v]);
  const lines: string[] = [];
  lines.push(`page ${page}: not linearizable.`);
  lines.push(
    `Longest linearizable prefix found: ${best.length} of ${n} operations; the page then holds ${q(bestState)}.`);
  if (best.length > 0) {
    const tail = best.slice(-EXPLAIN_PREFIX_TAIL);
    lines.push(`${best.length > tail.length ? `Last ${tail.length}` : 'Its'} operations, in linearization order:`);
    for (const i of tail) lines.push(`  ${describe(ops[i]!)}`);
  }
  const b = ops[blocking]!;
  lines.push(`No operation can go next. ${describe(b)} must take effect by t=${b.deadline}, but:`);
  for (const i of unplaced) {
    const o = ops[i]!;
    const writers = ops.filter((w) => w.isWrite && w.value === o.value).map((w) => `#${w.index} [${span(w.op)}]`);
    const source = writers.length > 0 ? `written by ${writers.join(', ')}` : 'the initial value';
    lines.push(`  ${describe(o)} observed ${q(o.value)} (${source}) while the page holds ${q(bestState)}`);
  }
  return { kind: 'fail', explanation: lines.join('\n'), ops: unplaced.map((i) => ops[i]!.op) };
}

function span(op: Operation): string {
  return `${op.invokeMs}, ${op.completeMs === undefined ? 'unknown' : op.completeMs}`;
}

function describe(o: PageOp): string {
  return `#${o.index} client ${o.op.client} ${o.op.kind} ${JSON.stringify(o.op.value)} [${span(o.op)}]`;
}

/**
 * Records a history for {@link checkLinearizable} while a Strata test runs.
 *
 * Call {@link invoke} just before sending a request, then exactly one of {@link ok},
 * {@link unknown} or {@link fail} when its outcome is known. Operations still unresolved when
 * {@link history} is called count as outcome unknown.
 */
export class HistoryRecorder {
  private readonly ops: (Operation & { state: 'pending' | 'ok' | 'unknown' | 'failed' })[] = [];
  private readonly inFlight = new Map<number, number>();

  /** @param now monotonic clock in milliseconds; default performance.now. */
  constructor(private readonly now: () => number = () => performance.now()) {}

  /**
   * Records the start of an operation and returns its id. Writes must give the value written.
   * Throws if the client already has an operation in flight.
   */
  invoke(client: number, page: number, kind: OpKind, value?: string): number {
    const busy = this.inFlight.get(client);
    if (busy !== undefined) {
      throw new Error(`client ${client} already has operation ${busy} in flight`);
    }
    if (kind === 'write' && value === undefined) throw new Error('a write must give the value written');
    const id = this.ops.length;
    this.ops.push({ client, page, kind, value: kind === 'write' ? value! : '', invokeMs: this.now(), state: 'pending' });
    this.inFlight.set(client, id);
    return id;
  }

  /** The operation completed; reads give the value observed. */
  ok(id: number, readValue?: string): void {
    if (this.ops[id]?.kind === 'read' && readValue === undefined) {
      throw new Error(`operation ${id} is a read: ok() needs the value observed`);
    }
    const op = this.resolve(id, 'ok');
    if (op.kind === 'read') op.value = readValue!;
    op.completeMs = this.now();
  }

  /** The outcome is unknown (timeout, connection lost, …): a write may or may not have been applied. */
  unknown(id: number): void {
    this.resolve(id, 'unknown');
  }

  /** The operation definitely was not applied: it is dropped from the history. */
  fail(id: number): void {
    this.resolve(id, 'failed');
  }

  /** The recorded operations (failed ones left out), in invocation order. */
  history(): Operation[] {
    const out: Operation[] = [];
    for (const { state, ...op } of this.ops) {
      if (state !== 'failed') out.push(op);
    }
    return out;
  }

  private resolve(id: number, state: 'ok' | 'unknown' | 'failed'): Operation {
    const op = this.ops[id];
    if (op === undefined) throw new Error(`unknown operation id ${id}`);
    if (op.state !== 'pending') throw new Error(`operation ${id} was already resolved (${op.state})`);
    op.state = state;
    this.inFlight.delete(op.client);
    return op;
  }
}
