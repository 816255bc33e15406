import { strict as assert } from 'node:assert';
import { SegmentLog } from '../../storage-engine/log';
import { SimDisk } from '../../storage-engine/sim-disk';
import { DIGEST_BYTES_MAX, digestRecords } from '../../storage-engine/log-digest';
import { RECORD_PAYLOAD_BYTES_MAX } from '../../storage-engine/record';
import { expectStorageError } from '../support/expect';

const payload = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill);

/** A log of `records` (term, kind, payload) on a disk of its own. */
function logOf(records: Array<{ term: number; kind: number; payload: Uint8Array }>): SegmentLog {
  const log = SegmentLog.open(new SimDisk(), { dir: 'log' });
  log.write(records);
  log.sync();
  return log;
}

describe('digestRecords (the digest of a run of log records)', () => {
  const base = [
    { term: 1, kind: 2, payload: payload(0, 0) },
    { term: 1, kind: 1, payload: payload(4096, 1) },
    { term: 2, kind: 1, payload: payload(4096, 2) },
    { term: 2, kind: 3, payload: payload(40, 3) },
  ];

  it('is the same for the same records, and differs for a different payload, term or kind', () => {
    const a = digestRecords(logOf(base), 1, 4);
    assert.deepEqual(digestRecords(logOf(base), 1, 4), a);
    assert.deepEqual([a.fromLsn, a.toLsn, a.records], [1, 4, 4]);
    const changed = (i: number, r: Partial<(typeof base)[number]>): number => digestRecords(logOf(base.map((x, k) => (k === i ? { ...x, ...r } : x))), 1, 4).digest;
    assert.notEqual(changed(1, { payload: payload(4096, 9) }), a.digest, 'payload');
    assert.notEqual(changed(1, { payload: payload(4095, 1) }), a.digest, 'payload length');
    assert.notEqual(changed(3, { term: 3 }), a.digest, 'term');
    assert.notEqual(changed(3, { kind: 2 }), a.digest, 'kind');
    // A sub-range digests those records only: the same on two logs that differ elsewhere.
    assert.equal(digestRecords(logOf(base), 1, 2).digest, digestRecords(logOf(base.map((x, k) => (k === 3 ? { ...x, payload: payload(40, 7) } : x))), 1, 2).digest);
  });

  it('stops after DIGEST_BYTES_MAX of payloads, at a record boundary, and says where', () => {
    const big = Array.from({ length: 20 }, (_, i) => ({ term: 1, kind: 1, payload: payload(RECORD_PAYLOAD_BYTES_MAX, i) }));
    const log = logOf(big);
    const d = digestRecords(log, 1, 20);
    const fit = Math.ceil(DIGEST_BYTES_MAX / RECORD_PAYLOAD_BYTES_MAX);
    assert.ok(d.toLsn < 20 && d.toLsn >= fit - 1 && d.toLsn <= fit + 1, `cut at ${d.toLsn}`);
    assert.equal(d.records, d.toLsn);
    // The rest, from there.
    const rest = digestRecords(log, d.toLsn + 1, 20);
    assert.equal(rest.toLsn, 20);
    // A single record larger than what is left is still digested (at least one).
    assert.equal(digestRecords(log, 5, 5).records, 1);
  });

  it('refuses a range outside the log, or reversed', () => {
    const log = logOf(base);
    expectStorageError(() => digestRecords(log, 3, 2), 'bad_request');
    expectStorageError(() => digestRecords(log, 0, 2), 'bad_request');
    expectStorageError(() => digestRecords(log, 2, 5), 'out_of_range');
  });
});
