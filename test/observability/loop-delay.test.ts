/** LoopDelay: how late a periodic timer ran, bucketed, and the worst of the recent window. */
import { strict as assert } from 'node:assert';
import { LOOP_DELAY_MS_BUCKETS, LOOP_DELAY_RECENT_MS, LoopDelay } from '../../observability/loop-delay';

const bucket = (ms: number): number => LOOP_DELAY_MS_BUCKETS.findIndex((b) => ms <= b);

describe('observability/loop-delay', () => {
  it('counts each run by how late it came after the period, and sums the delays', () => {
    const d = new LoopDelay(10);
    for (const t of [0, 10, 20.5, 30.5, 100.5, 110.5]) d.record(t);
    // Runs 2..6: 0, 0.5, 0, 60, 0 ms late (the first run only starts the count).
    const s = d.stats(110.5);
    const expected = new Array<number>(LOOP_DELAY_MS_BUCKETS.length).fill(0);
    expected[bucket(0)]! += 4;
    expected[bucket(60)]! += 1;
    assert.deepEqual(s.histogram, expected);
    assert.equal(s.sumMs, 60.5);
    assert.equal(s.recentMaxMs, 60);
  });

  it('a run earlier than the period (a timer that caught up) counts as on time', () => {
    const d = new LoopDelay(10);
    d.record(0);
    d.record(4);
    assert.equal(d.stats(4).sumMs, 0);
    assert.equal(d.stats(4).histogram[0], 1);
  });

  it('reports the worst delay of the last window only, and forgets it after a window without one', () => {
    const d = new LoopDelay(10);
    d.record(0);
    d.record(510); // 500 ms late
    assert.equal(d.stats(1000).recentMaxMs, 500);
    // Half a window on, still reported (the previous half).
    assert.equal(d.stats(510 + LOOP_DELAY_RECENT_MS / 2).recentMaxMs, 500);
    // A whole window later, with only timely runs meanwhile, it is gone; the count stays.
    let t = 510;
    while (t < 510 + LOOP_DELAY_RECENT_MS + 10) d.record((t += 10));
    const s = d.stats(t);
    assert.equal(s.recentMaxMs, 0);
    assert.equal(s.histogram[bucket(500)], 1);
    // And after a long silence (no runs, a stopped timer), too.
    const e = new LoopDelay(10);
    e.record(0);
    e.record(300);
    assert.equal(e.stats(300 + 3 * LOOP_DELAY_RECENT_MS).recentMaxMs, 0);
  });
});
