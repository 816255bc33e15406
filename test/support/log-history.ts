/**
 * The standard record history of the log tests (test/storage-engine/log*.test.ts): what each LSN
 * holds, and a check that a log holds it. In a module of its own: a test file that imported
 * another would run that file's tests again.
 */
import { strict as assert } from 'node:assert';
import type { SegmentLog } from '../../storage-engine/log';
import type { LogRecordInput } from '../../storage-engine/record';

/** Deterministic payload of a record: its LSN and a size that varies with it. */
export function payloadOf(lsn: number, bytes = 100 + ((lsn * 37) % 400)): Uint8Array {
  const p = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) p[i] = (lsn * 31 + i * 7) & 0xff;
  return p;
}

/** Term of record `lsn` in the standard test history: term 1 for LSN 1..9, 2 for 10..19, ... */
export function termOf(lsn: number): number {
  return Math.floor(lsn / 10) + 1;
}

/** Records fromLsn..toLsn of the standard test history. */
export function history(fromLsn: number, toLsn: number): LogRecordInput[] {
  const out: LogRecordInput[] = [];
  for (let lsn = fromLsn; lsn <= toLsn; lsn++) out.push({ term: termOf(lsn), kind: 1, payload: payloadOf(lsn) });
  return out;
}

/** Asserts that the log holds records fromLsn..toLsn of the standard history. */
export function assertHistory(log: SegmentLog, fromLsn: number, toLsn: number): void {
  let lsn = fromLsn;
  while (lsn <= toLsn) {
    const got = log.read(lsn, toLsn);
    for (const r of got) {
      assert.equal(r.lsn, lsn);
      assert.equal(r.term, termOf(lsn), `term of ${lsn}`);
      assert.equal(r.kind, 1);
      assert.deepEqual(r.payload, payloadOf(lsn), `payload of ${lsn}`);
      lsn++;
    }
  }
}
