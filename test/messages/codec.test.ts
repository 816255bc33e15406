import * as assert from 'node:assert/strict';
import { Decoder } from 'cbor-x';
import { MESSAGE_BYTES_MAX, decode, encode } from '../../messages/codec';
import { ProtocolError } from '../../messages/errors';
import { validatePageWriteRequest, validateVolumeCreateRequest } from '../../messages/validate';
import { assertProtocolError } from '../support/expect';

function pageMessage(): { volume: string; pages: { page: number; data: Uint8Array }[] } {
  return { volume: 'vol', pages: [{ page: 7, data: new Uint8Array(4096).fill(0xab) }] };
}

/** True if `needle` occurs in `hay` as a byte sequence. */
function contains(hay: Uint8Array, needle: readonly number[]): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

describe('messages/codec', () => {
  it('round-trips a page message', () => {
    const msg = pageMessage();
    const back = decode(encode(msg));
    assert.deepEqual(validatePageWriteRequest(back), msg);
  });

  it('malformed CBOR bytes give bad_request "malformed CBOR"', () => {
    assertProtocolError(() => decode(Uint8Array.from([0xff])), 'bad_request', undefined, /^malformed CBOR/);
    assertProtocolError(() => decode(Uint8Array.from([0x1c])), 'bad_request', undefined, /^malformed CBOR/); // reserved info 28
  });

  it('truncated CBOR gives bad_request', () => {
    const bytes = encode(pageMessage());
    for (const cut of [1, 10, 100, bytes.length - 1]) {
      assertProtocolError(() => decode(bytes.subarray(0, cut)), 'bad_request', undefined, /^malformed CBOR/);
    }
  });

  it('trailing bytes after the item give bad_request', () => {
    assertProtocolError(() => decode(Uint8Array.from([0x01, 0x02])), 'bad_request', undefined, /^malformed CBOR/);
  });

  it('an empty message gives bad_request', () => {
    assertProtocolError(() => decode(new Uint8Array(0)), 'bad_request', undefined, /empty/);
  });

  it('input that is not a byte array gives bad_request', () => {
    assertProtocolError(() => decode('a0' as unknown as Uint8Array), 'bad_request', undefined, /not a byte array/);
  });

  it('absurd nesting gives bad_request, and the codec keeps working after it', () => {
    const deep = new Uint8Array(300_001).fill(0x81); // 300000 nested one-entry arrays
    deep[300_000] = 0x00;
    assertProtocolError(() => decode(deep), 'bad_request', undefined, /^malformed CBOR/);
    assert.deepEqual(decode(encode({ a: 1 })), { a: 1 });
  });

  it('a header declaring a huge array gives bad_request without allocating', () => {
    assertProtocolError(() => decode(Uint8Array.from([0x9a, 0x05, 0x00, 0x00, 0x00, 0x00])), 'bad_request');
  });

  it('input over the bound gives too_large before parsing', () => {
    const big = new Uint8Array(MESSAGE_BYTES_MAX + 1); // zeros: would be "trailing bytes" if parsed
    const err = assertProtocolError(() => decode(big), 'too_large');
    assert.deepEqual(err.details, { bytes: MESSAGE_BYTES_MAX + 1, bytesMax: MESSAGE_BYTES_MAX });
    assertProtocolError(() => decode(encode({ a: 'x'.repeat(100) }), { bytesMax: 50 }), 'too_large');
    assert.deepEqual(decode(encode({ a: 1 }), { bytesMax: 50 }), { a: 1 });
  });

  it('encode refuses a message over the bound with too_large', () => {
    const data = new Uint8Array(MESSAGE_BYTES_MAX);
    const err = assertProtocolError(() => encode({ data }), 'too_large');
    assert.ok((err.details?.bytes as number) > MESSAGE_BYTES_MAX);
    assertProtocolError(() => encode({ data: new Uint8Array(100) }, { bytesMax: 64 }), 'too_large');
  });

  it('encode turns an unencodable value into internal', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    assertProtocolError(() => encode(cyclic), 'internal', undefined, /can not encode/);
  });

  it('writes no record extension: same-key objects decode in a fresh decoder', () => {
    const msg = [{ page: 1, lsn: 2 }, { page: 3, lsn: 4 }];
    const bytes = encode(msg);
    // record definition tag 57343 (0xd9 0xdf 0xff) and record tags 0xe000.. (0xd9 0xe0..)
    assert.ok(!contains(bytes, [0xd9, 0xdf, 0xff]), 'record definition tag found');
    assert.ok(!contains(bytes, [0xd9, 0xe0]), 'record tag found');
    // the keys are spelt out in each map
    const keyPage = [0x64, ...Buffer.from('page')];
    let count = 0;
    for (let i = 0; i + keyPage.length <= bytes.length; i++) {
      if (keyPage.every((b, j) => bytes[i + j] === b)) count++;
    }
    assert.equal(count, 2);
    assert.deepEqual(new Decoder({ mapsAsObjects: true }).decode(bytes), msg);
    // a second encoding of the same shape is identical and stands alone
    const again = encode(msg);
    assert.deepEqual(Buffer.from(again), Buffer.from(bytes));
    assert.deepEqual(new Decoder({ mapsAsObjects: true }).decode(again), msg);
  });

  it('writes a Uint8Array as a plain byte string (no tag 64)', () => {
    const bytes = encode(new Uint8Array([1, 2, 3]));
    assert.deepEqual([...bytes], [0x43, 1, 2, 3]);
  });

  it('decodes 64-bit integers to numbers, never bigint', () => {
    const big = decode(Uint8Array.from([0x1b, 0, 0, 1, 0, 0, 0, 0, 0]));
    assert.equal(big, 2 ** 40);
    const huge = decode(Uint8Array.from([0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
    assert.equal(typeof huge, 'number');
    // a value a number can not hold exactly is then refused by the validators
    const msg = Uint8Array.from([
      0xa2, 0x64, ...Buffer.from('name'), 0x61, 0x76,
      0x69, ...Buffer.from('pageCount'), 0x1b, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // 2^53 + 1
    ]);
    assert.throws(() => validateVolumeCreateRequest(decode(msg)), (e: unknown) => e instanceof ProtocolError && e.code === 'bad_request');
  });

  it('a __proto__ key does not change the prototype', () => {
    const bytes = Uint8Array.from([0xa1, 0x69, ...Buffer.from('__proto__'), 0xa1, 0x61, 0x78, 0x01]);
    const value = decode(bytes) as Record<string, unknown>;
    assert.equal(Object.getPrototypeOf(value), Object.prototype);
    assert.equal(({} as Record<string, unknown>).x, undefined);
  });

  it('decoding a 4 KiB page message does not copy the page (a view of the input)', () => {
    const input = encode(pageMessage());
    const decoded = validatePageWriteRequest(decode(input));
    const data = decoded.pages[0]!.data;
    assert.equal(data.buffer, input.buffer, 'decoded page is not a view of the input');
    assert.ok(data.byteOffset >= input.byteOffset && data.byteOffset + 4096 <= input.byteOffset + input.byteLength);
    // the view aliases the input: a change to the input shows through (why callers must not reuse it)
    input[data.byteOffset - input.byteOffset] = 0x00;
    assert.equal(data[0], 0x00);
  });

  it('a later encode does not overwrite an earlier result', () => {
    const first = encode({ a: 'first' });
    const copy = Uint8Array.from(first);
    for (let i = 0; i < 500; i++) encode({ filler: 'x'.repeat(200) });
    assert.equal(Buffer.compare(first, copy), 0);
  });
});
