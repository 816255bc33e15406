import { strict as assert } from 'node:assert';
import { WRITE_ID_BYTES } from '../../storage-engine/page-write';
import { decodePageZero, encodePageZero, isPageZero, PAGE_ZERO_BYTES, writeIdOfPageZero } from '../../storage-engine/page-zero';
import { edited } from '../support/bytes';
import { expectStorageError as expectCode } from '../support/expect';

describe('page-zero codec', () => {
  it('round-trips a range, and names what is wrong with a malformed payload, each by its own check', () => {
    const good = encodePageZero({ first: 7, count: 1000 });
    assert.equal(good.length, PAGE_ZERO_BYTES);
    assert.ok(isPageZero(good));
    assert.deepEqual(decodePageZero(good), { first: 7, count: 1000 });
    const changed = (edit: (dv: DataView) => void): Uint8Array => edited(good, edit);
    const says = (payload: Uint8Array, re: RegExp): void => {
      assert.match(expectCode(() => decodePageZero(payload), 'corruption').message, re);
    };
    says(good.subarray(0, PAGE_ZERO_BYTES - 1), /^page zero payload is 23 bytes, expected 24 \(40 with a write id\)$/);
    says(new Uint8Array(PAGE_ZERO_BYTES + 1), /^page zero payload is 25 bytes, expected 24 \(40 with a write id\)$/);
    says(changed((dv) => dv.setUint32(0, 0x12345678, true)), /^page zero magic 0x12345678 is wrong$/);
    says(changed((dv) => dv.setUint32(4, 1, true)), /^page zero payload is 24 bytes, expected 40$/);
    says(changed((dv) => dv.setUint32(4, 2, true)), /^page zero flags 0x2 has unknown bits$/);
    says(changed((dv) => dv.setUint32(16, 0, true)), /^page zero range 7 \+ 0 is not a range$/);
    // first + count past 2^53 - 1.
    says(changed((dv) => { dv.setUint32(8, 0xffffffff, true); dv.setUint32(12, 0x1fffff, true); }), /is not a range$/);
  });

  it('encodes only a range: a first page that is not a non-negative integer, a count under 1 or past 2^53 - 1 are refused', () => {
    for (const first of [-1, 0.5, Number.NaN]) assert.match(expectCode(() => encodePageZero({ first, count: 1 }), 'bad_request').message, /^first page .* is not a non-negative integer$/);
    for (const count of [0, 1.5, Number.MAX_SAFE_INTEGER]) assert.match(expectCode(() => encodePageZero({ first: 1, count }), 'bad_request').message, /^page count .* is not a positive integer/);
  });

  it('carries a write id after the range: flagged, read back; the same range without one', () => {
    const id = Uint8Array.from({ length: WRITE_ID_BYTES }, (_, i) => i + 1);
    const withId = encodePageZero({ first: 5, count: 12 }, id);
    assert.equal(withId.length, PAGE_ZERO_BYTES + WRITE_ID_BYTES);
    assert.ok(isPageZero(withId));
    assert.deepEqual(decodePageZero(withId), { first: 5, count: 12 });
    assert.deepEqual(writeIdOfPageZero(withId), id);
    assert.equal(writeIdOfPageZero(encodePageZero({ first: 5, count: 12 })), undefined);
    assert.match(expectCode(() => decodePageZero(edited(withId, (dv) => dv.setUint32(4, 0, true))), 'corruption').message, /^page zero payload is 40 bytes, expected 24$/);
    assert.match(expectCode(() => encodePageZero({ first: 5, count: 12 }, new Uint8Array(8)), 'bad_request').message, /^a write id is 16 bytes, got 8$/);
  });
});
