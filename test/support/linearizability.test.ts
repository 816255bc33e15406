import { strict as assert } from 'node:assert';
import { checkLinearizable, HistoryRecorder, type Operation } from './linearizability';
import { prng } from './prng';

/** A completed (or, without `complete`, unknown-outcome) write on page `page`. */
function w(client: number, value: string, invoke: number, complete?: number, page = 0): Operation {
  return { client, page, kind: 'write', value, invokeMs: invoke, ...(complete === undefined ? {} : { completeMs: complete }) };
}
/** A read that observed `value` (without `complete`: outcome unknown). */
function r(client: number, value: string, invoke: number, complete?: number, page = 0): Operation {
  return { client, page, kind: 'read', value, invokeMs: invoke, ...(complete === undefined ? {} : { completeMs: complete }) };
}

function assertOk(history: readonly Operation[], opts?: Parameters<typeof checkLinearizable>[1]): void {
  const res = checkLinearizable(history, opts);
  assert.equal(res.ok, true, res.failure?.explanation);
  assert.equal(res.failure, undefined);
  assert.equal(res.exhausted, undefined);
}

function assertFails(history: readonly Operation[], opts?: Parameters<typeof checkLinearizable>[1]) {
  const res = checkLinearizable(history, opts);
  assert.equal(res.ok, false);
  assert.equal(res.exhausted, undefined, res.failure?.explanation);
  assert.ok(res.failure !== undefined);
  return res.failure;
}

/** Deterministic PRNG (mulberry32) so a failing seed can be replayed. */
interface GenOptions {
  seed: number; pages: number; clients: number; opsPerPage: number;
  readRate: number; unknownRate: number;
}

/**
 * Simulates Strata clients against a linearizable store: every operation takes effect at one
 * instant inside its interval (an unknown-outcome write: later, possibly after the client gave
 * up, or never), and reads return the page's value at their instant.
 */
function generate(o: GenOptions): Operation[] {
  const rnd = prng(o.seed);
  const cursor = new Array<number>(o.clients).fill(0);
  const seq = new Array<number>(o.clients).fill(0);
  const recorded: { op: Operation; at: number | undefined }[] = [];
  for (let i = 0; i < o.pages * o.opsPerPage; i++) {
    const client = Math.floor(rnd() * o.clients);
    const page = Math.floor(rnd() * o.pages);
    const invoke = cursor[client]! + rnd() * 2;
    const at = invoke + rnd() * 3;
    const complete = at + rnd() * 3;
    cursor[client] = complete;
    const unknown = rnd() < o.unknownRate;
    if (rnd() < o.readRate) {
      recorded.push({ op: r(client, '?', invoke, unknown ? undefined : complete, page), at });
    } else {
      const value = `c${client}-${seq[client] = seq[client]! + 1}`;
      // An unknown write took effect inside its interval, well after it, or never.
      const roll = rnd();
      const effect = !unknown ? at : roll < 0.4 ? at : roll < 0.7 ? complete + rnd() * 20 : undefined;
      recorded.push({ op: w(client, value, invoke, unknown ? undefined : complete, page), at: effect });
    }
  }
  const pageValue = new Map<number, string>();
  const applied = recorded.filter((x) => x.at !== undefined).sort((a, b) => a.at! - b.at!);
  for (const { op } of applied) {
    if (op.kind === 'write') pageValue.set(op.page, op.value);
    else op.value = pageValue.get(op.page) ?? '';
  }
  return recorded.map((x) => x.op);
}

/** Index of a completed read (in the first half of the history) satisfying `pick`, or -1. */
function findRead(h: readonly Operation[], pick: (read: Operation) => boolean): number {
  for (let i = 0; i < h.length / 2; i++) {
    const op = h[i]!;
    if (op.kind === 'read' && op.completeMs !== undefined && pick(op)) return i;
  }
  return -1;
}

describe('linearizability checker (per-page registers)', function () {
  this.timeout(10_000);

  describe('linearizable histories pass', () => {
    it('an empty history', () => {
      assert.deepEqual(checkLinearizable([]), { ok: true, pages: 0, operations: 0 });
    });

    it('a sequential history, counting pages and operations', () => {
      const h = [r(0, '', 0, 1), w(0, 'a', 2, 3), r(1, 'a', 4, 5), w(1, 'b', 6, 7), r(0, 'b', 8, 9)];
      assert.deepEqual(checkLinearizable(h), { ok: true, pages: 1, operations: 5 });
    });

    it('a page never written reads as the initial value, which is configurable', () => {
      assertOk([r(0, 'zeros', 0, 1), w(0, 'a', 2, 3), r(0, 'a', 4, 5)], { initialValue: 'zeros' });
      const f = assertFails([r(0, '', 0, 1)], { initialValue: 'zeros' });
      assert.match(f.explanation, /never written/);
    });

    it('concurrent writes: a later read may see either, but then the value is settled', () => {
      const writes = [w(0, 'a', 0, 10), w(1, 'b', 1, 9)];
      assertOk([...writes, r(2, 'a', 11, 12), r(2, 'a', 13, 14)]);
      assertOk([...writes, r(2, 'b', 11, 12), r(3, 'b', 13, 14)]);
      assertFails([...writes, r(2, 'a', 11, 12), r(3, 'b', 13, 14)]);
    });

    it('a read overlapping a write may see the old or the new value', () => {
      assertOk([w(0, 'a', 0, 1), w(0, 'b', 2, 10), r(1, 'a', 3, 4)]);
      assertOk([w(0, 'a', 0, 1), w(0, 'b', 2, 10), r(1, 'b', 3, 4)]);
      // Overlap on one side only: the read started before the write completed.
      assertOk([w(0, 'a', 0, 5), r(1, 'a', 4, 6)]);
    });

    it('an operation invoked at the instant another completed counts as concurrent', () => {
      // Clocks have finite resolution; equal times must not manufacture an order.
      assertOk([w(0, 'a', 0, 1), r(1, '', 1, 2)]);
      assertFails([w(0, 'a', 0, 1), r(1, '', 1.001, 2)]);
    });
  });

  describe('non-linearizable histories fail', () => {
    it('a stale read after a write completed, explained with the prefix and the op that could not be placed', () => {
      const h = [w(0, 'a', 0, 1), w(0, 'b', 2, 3), r(1, 'a', 4, 5)];
      const res = checkLinearizable(h);
      assert.equal(res.ok, false);
      assert.equal(res.pages, 1);
      assert.equal(res.operations, 3);
      assert.equal(res.failure?.page, 0);
      assert.deepEqual(res.failure?.ops, [h[2]]);
      const e = res.failure!.explanation;
      assert.match(e, /Longest linearizable prefix found: 2 of 3 operations; the page then holds "b"/);
      assert.match(e, /#0 client 0 write "a" \[0, 1\]\n {2}#1 client 0 write "b" \[2, 3\]/);
      assert.match(e, /#2 client 1 read "a" \[4, 5\] must take effect by t=5/);
      assert.match(e, /observed "a" \(written by #0 \[0, 1\]\) while the page holds "b"/);
    });

    it('the explanation lists every op that could have gone next, and only the tail of a long prefix', () => {
      const h: Operation[] = [];
      for (let i = 0; i < 12; i++) h.push(w(0, `v${i}`, i * 2, i * 2 + 1));
      h.push(r(1, 'v3', 30, 40), r(2, 'v5', 31, 41), r(3, 'v11', 42, 43));
      const f = assertFails(h);
      assert.deepEqual(f.ops, [h[12], h[13]]);
      assert.match(f.explanation, /prefix found: 12 of 15 operations/);
      assert.match(f.explanation, /Last 8 operations, in linearization order:/);
      assert.doesNotMatch(f.explanation, /write "v3"/);
      assert.match(f.explanation, /write "v11"/);
      assert.match(f.explanation, /observed "v3" \(written by #3 \[6, 7\]\) while the page holds "v11"/);
    });

    it('an impossible first operation gives an empty prefix', () => {
      const f = assertFails([r(0, 'a', 0, 1), w(1, 'a', 2, 3)]);
      assert.match(f.explanation, /prefix found: 0 of 2 operations; the page then holds ""/);
      assert.doesNotMatch(f.explanation, /in linearization order/);
    });

    it('a read of a value never written to the page', () => {
      const h = [w(0, 'a', 0, 1, 7), r(1, 'zzz', 2, 3, 7), w(0, 'zzz', 0, 1, 8)];
      const f = assertFails(h);
      assert.equal(f.page, 7);
      assert.deepEqual(f.ops, [h[1]]);
      assert.match(f.explanation, /#1 client 1 read "zzz" \[2, 3\] observed "zzz", which was never written to this page/);
    });

    it('flip-flop: two sequential reads see the new value, then the old one', () => {
      assertFails([w(0, 'a', 0, 1), w(0, 'b', 2, 20), r(1, 'b', 3, 4), r(1, 'a', 5, 6)]);
    });

    it('a lost acknowledged write: a read after it completed sees the older value', () => {
      assertFails([w(0, 'a', 0, 1), w(1, 'b', 2, 3), r(2, 'a', 4, 5)]);
      const f = assertFails([w(0, 'a', 0, 1), r(2, '', 4, 5)]);
      assert.match(f.explanation, /observed "" \(the initial value\) while the page holds "a"/);
    });

    it('a read may not see a write invoked after the read completed', () => {
      assertFails([r(0, 'a', 0, 1), w(1, 'a', 2, 3)]);
    });
  });

  describe('unknown outcomes', () => {
    it('an unknown write may never take effect', () => {
      assertOk([w(0, 'a', 0), r(1, '', 1, 2), r(1, '', 3, 4)]);
    });

    it('an unknown write may take effect, even long after the client gave up', () => {
      assertOk([w(0, 'a', 0), r(1, '', 1, 2), r(1, 'a', 3, 4)]);
      assertOk([w(0, 'a', 0), w(1, 'b', 1, 2), r(1, 'b', 3, 4), r(1, 'a', 100, 101)]);
    });

    it('once seen, an unknown write stays (no flip-flop)', () => {
      assertFails([w(0, 'a', 0), r(1, 'a', 1, 2), r(1, '', 3, 4)]);
    });

    it('a read cannot see an unknown write before the write was invoked', () => {
      const f = assertFails([r(1, 'a', 0, 1), w(0, 'a', 2)]);
      assert.match(f.explanation, /read "a" \[0, 1\] observed "a" \(written by #1 \[2, unknown\]\)/);
    });

    it('an unknown write of a value also written by another op may still take effect late', () => {
      // 'v' is first seen through the completed write; the second 'v' needs the unknown one, late.
      assertOk([w(0, 'v', 0, 1), r(1, 'v', 2, 3), w(0, 'x', 4, 5), w(2, 'v', 0.5), r(1, 'v', 6, 7)]);
    });

    it('an unknown write of the initial value may take effect late', () => {
      assertOk([r(1, '', 0, 1), w(0, 'x', 2, 3), w(2, '', 0.5), r(1, '', 6, 7)]);
      assertFails([r(1, '', 0, 1), w(0, 'x', 2, 3), r(1, '', 6, 7)]);
    });

    it('reads with unknown outcome are dropped and not counted', () => {
      const res = checkLinearizable([w(0, 'a', 0, 1), r(1, 'garbage', 2), r(1, 'a', 3, 4), r(2, 'x', 5, undefined, 9)]);
      assert.deepEqual(res, { ok: true, pages: 1, operations: 2 });
    });

    it('unknown writes nobody read cost the search nothing', () => {
      // 24 timed-out writes that never took effect, all pending across a failing history: kept as
      // candidates they would multiply the configurations to explore by up to 2^24.
      const h = generate({ seed: 11, pages: 1, clients: 4, opsPerPage: 120, readRate: 0.5, unknownRate: 0 });
      for (let i = 0; i < 24; i++) h.push(w(100 + i, `lost-${i}`, i * 0.1));
      const end = Math.max(...h.map((op) => op.completeMs ?? 0));
      h.push(w(50, 'late-1', end + 1, end + 2), w(50, 'late-2', end + 3, end + 4), r(51, 'late-1', end + 5, end + 6));
      assertFails(h, { stepsMaxPerPage: 200_000 });
    });
  });

  describe('many pages', () => {
    it('pages are independent registers', () => {
      const h = [w(0, 'a', 0, 1, 1), r(1, '', 2, 3, 2), r(1, 'a', 4, 5, 1), w(2, 'b', 0, 10, 2), r(0, 'b', 11, 12, 2)];
      assert.deepEqual(checkLinearizable(h), { ok: true, pages: 2, operations: 5 });
    });

    it('reports the lowest failing page, with its own operations', () => {
      const bad = (page: number): Operation[] => [w(0, 'a', 0, 1, page), w(0, 'b', 2, 3, page), r(1, 'a', 4, 5, page)];
      const h = [...bad(5), w(3, 'x', 0, 1, 3), ...bad(2)];
      const res = checkLinearizable(h);
      assert.equal(res.ok, false);
      assert.equal(res.pages, 3);
      assert.equal(res.operations, 7);
      assert.equal(res.failure?.page, 2);
      assert.deepEqual(res.failure?.ops, [h[6]]);
      assert.match(res.failure!.explanation, /^page 2: not linearizable/);
    });
  });

  describe('randomized histories from a simulated linearizable store', () => {
    const base = { pages: 3, clients: 8, opsPerPage: 300, readRate: 0.5, unknownRate: 0.08 };

    for (const seed of [1, 2, 3]) {
      it(`seed ${seed}: passes, and fails once a read is made impossible`, () => {
        const h = generate({ ...base, seed });
        assert.ok(h.length >= 900);
        assert.ok(h.some((op) => op.completeMs === undefined && op.kind === 'write'));
        assertOk(h);

        // A read sees a value written only after the read completed.
        const future = findRead(h, (rd) =>
          h.some((op) => op.kind === 'write' && op.page === rd.page && op.invokeMs > rd.completeMs! + 5));
        assert.ok(future >= 0);
        const h1 = h.map((op) => ({ ...op }));
        const rd1 = h1[future]!;
        rd1.value = h1.find((op) => op.kind === 'write' && op.page === rd1.page && op.invokeMs > rd1.completeMs! + 5)!.value;
        assert.ok(assertFails(h1).ops.length > 0);

        // A read sees a value overwritten by a write that completed before the read started.
        const stale = (rd: Operation): string | undefined => {
          for (const newer of h) {
            if (newer.kind !== 'write' || newer.page !== rd.page || newer.completeMs === undefined) continue;
            if (newer.completeMs >= rd.invokeMs) continue;
            const older = h.find((op) => op.kind === 'write' && op.page === rd.page &&
              op.completeMs !== undefined && op.completeMs < newer.invokeMs);
            if (older !== undefined) return older.value;
          }
          return undefined;
        };
        const staleAt = findRead(h, (rd) => rd.invokeMs > 20 && stale(rd) !== undefined);
        assert.ok(staleAt >= 0);
        const h2 = h.map((op) => ({ ...op }));
        h2[staleAt]!.value = stale(h[staleAt]!)!;
        assert.equal(assertFails(h2).page, h[staleAt]!.page);
      });
    }
  });

  describe('bounds and input', () => {
    const busy = generate({ seed: 5, pages: 1, clients: 8, opsPerPage: 200, readRate: 0.5, unknownRate: 0 });

    it('memoised configurations keep a concurrent failing history tractable', () => {
      // Proving a failure at the end visits every reachable configuration of the page; without
      // Lowe's cache the search revisits them along every interleaving and runs out of steps.
      const h = generate({ seed: 9, pages: 1, clients: 8, opsPerPage: 300, readRate: 0.5, unknownRate: 0 });
      const end = Math.max(...h.map((op) => op.completeMs!));
      const first = h.find((op) => op.kind === 'write')!;
      h.push(w(50, 'last', end + 1, end + 2), r(51, first.value, end + 3, end + 4));
      const f = assertFails(h, { stepsMaxPerPage: 1_000_000 });
      assert.deepEqual(f.ops, [h[h.length - 1]]);
    });

    it('hitting the step bound fails with exhausted=true instead of passing', () => {
      assertOk(busy);
      const res = checkLinearizable(busy, { stepsMaxPerPage: 50 });
      assert.equal(res.ok, false);
      assert.equal(res.exhausted, true);
      assert.equal(res.failure?.page, 0);
      assert.deepEqual(res.failure?.ops, []);
      assert.match(res.failure!.explanation, /page 0: search bound exhausted after 50 steps .*not a pass/);
    });

    it('every exhausted page is named', () => {
      const two = [...busy, ...busy.map((op) => ({ ...op, page: 4 }))];
      const res = checkLinearizable(two, { stepsMaxPerPage: 50 });
      assert.equal(res.exhausted, true);
      assert.equal(res.failure?.page, 0);
      assert.match(res.failure!.explanation, /also on page\(s\) 4/);
    });

    it('a proven failure on another page wins over exhaustion, noting the unchecked pages', () => {
      const h = [...busy, w(0, 'a', 0, 1, 9), r(1, '', 2, 3, 9)];
      const res = checkLinearizable(h, { stepsMaxPerPage: 50 });
      assert.equal(res.ok, false);
      assert.equal(res.exhausted, undefined);
      assert.equal(res.failure?.page, 9);
      assert.match(res.failure!.explanation, /search bound was also hit on page\(s\) 0, which are unchecked/);
    });

    it('rejects malformed operations and options', () => {
      assert.throws(() => checkLinearizable([r(0, '', Number.NaN, 1)]), /history\[0\]: invokeMs must be a finite/);
      assert.throws(() => checkLinearizable([w(0, 'a', 0, 1), r(0, '', 5, 4)]), /history\[1\]: completeMs must be finite and >= invokeMs/);
      assert.throws(() => checkLinearizable([r(0, '', 0, Number.POSITIVE_INFINITY)]), /completeMs must be finite/);
      const cas = { ...w(0, 'a', 0, 1), kind: 'cas' } as unknown as Operation;
      assert.throws(() => checkLinearizable([cas]), /unknown kind "cas"/);
      assert.throws(() => checkLinearizable([], { stepsMaxPerPage: 0 }), RangeError);
      assert.throws(() => checkLinearizable([], { stepsMaxPerPage: 1.5 }), RangeError);
    });
  });

  describe('HistoryRecorder', () => {
    function clock(): () => number {
      let t = 0;
      return () => (t += 1);
    }

    it('records completed, unknown and failed operations', () => {
      const rec = new HistoryRecorder(clock());
      const a = rec.invoke(0, 3, 'write', 'c0-1');   // t=1
      const b = rec.invoke(1, 3, 'read');            // t=2
      rec.ok(a);                                     // t=3
      rec.ok(b, 'c0-1');                             // t=4
      const c = rec.invoke(0, 3, 'write', 'c0-2');   // t=5
      rec.unknown(c);
      const d = rec.invoke(0, 3, 'write', 'c0-3');   // t=6: the client moved on
      rec.fail(d);
      rec.invoke(1, 3, 'read');                      // t=7, never resolved
      assert.deepEqual(rec.history(), [
        { client: 0, page: 3, kind: 'write', value: 'c0-1', invokeMs: 1, completeMs: 3 },
        { client: 1, page: 3, kind: 'read', value: 'c0-1', invokeMs: 2, completeMs: 4 },
        { client: 0, page: 3, kind: 'write', value: 'c0-2', invokeMs: 5 },
        { client: 1, page: 3, kind: 'read', value: '', invokeMs: 7 },
      ]);
      assert.equal(checkLinearizable(rec.history()).ok, true);
    });

    it('uses performance.now by default', () => {
      const rec = new HistoryRecorder();
      const before = performance.now();
      rec.ok(rec.invoke(0, 0, 'write', 'x'));
      const [op] = rec.history();
      assert.ok(op!.invokeMs >= before && op!.completeMs! >= op!.invokeMs && op!.completeMs! <= performance.now());
    });

    it('refuses misuse', () => {
      const rec = new HistoryRecorder(clock());
      const a = rec.invoke(0, 0, 'read');
      assert.throws(() => rec.invoke(0, 1, 'read'), /client 0 already has operation 0 in flight/);
      assert.throws(() => rec.ok(a), /ok\(\) needs the value observed/);
      assert.throws(() => rec.invoke(1, 0, 'write'), /must give the value written/);
      rec.ok(a, '');
      assert.throws(() => rec.ok(a, ''), /already resolved \(ok\)/);
      assert.throws(() => rec.unknown(a), /already resolved/);
      assert.throws(() => rec.fail(42), /unknown operation id 42/);
    });
  });
});
