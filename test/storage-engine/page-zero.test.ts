import { strict as assert } from 'node:assert';
import { decodePageZero, encodePageZero, isPageZero, PAGE_ZERO_BYTES } from '../../storage-engine/page-zero';
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
    says(good.subarray(0, PAGE_ZERO_BYTES - 1), /^page zero payload is 23 bytes, expected 24$/);
    says(new Uint8Array(PAGE_ZERO_BYTES + 1), /^page zero payload is 25 bytes, expected 24$/);
    says(changed((dv) => dv.setUint32(0, 0x12345678, true)), /^page zero magic 0x12345678 is wrong$/);
    says(changed((dv) => dv.setUint32(4, 1, true)), /^page zero reserved field is not 0$/);
    says(changed((dv) => dv.setUint32(16, 0, true)), /^page zero range 7 \+ 0 is not a range$/);
    // first + count past 2^53 - 1.
    says(changed((dv) => { dv.setUint32(8, 0xffffffff, true); dv.setUint32(12, 0x1fffff, true); }), /is not a range$/);
  });

  it('encodes only a range: a first page that is not a non-negative integer, a count under 1 or past 2^53 - 1 are refused', () => {
    for (const first of [-1, 0.5, Number.NaN]) assert.match(expectCode(() => encodePageZero({ first, count: 1 }), 'bad_request').message, /^first page .* is not a non-negative integer$/);
    for (const count of [0, 1.5, Number.MAX_SAFE_INTEGER]) assert.match(expectCode(() => encodePageZero({ first: 1, count }), 'bad_request').message, /^page count .* is not a positive integer/);
  });
});
