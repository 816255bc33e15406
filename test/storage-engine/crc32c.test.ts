/** CRC-32C: known vectors, chaining, and ranges that start and end off 8-byte boundaries. */
import { strict as assert } from 'node:assert';
import { crc32c, crc32cCombine, crc32cPortable, CRC32C_NATIVE, NATIVE_BYTES_MIN } from '../../storage-engine/crc32c';

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Bit-at-a-time reference implementation of CRC-32C (reflected polynomial 0x82F63B78). */
function crc32cReference(data: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
function pseudoRandomBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

describe('crc32c', () => {
  it('matches the known vectors', () => {
    assert.equal(crc32c(ascii('123456789')), 0xe3069283);
    assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
    assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43); // RFC 3720 B.4
    assert.equal(crc32c(new Uint8Array(0)), 0);
    assert.equal(crc32c(ascii('a')), 0xc1d04330);
  });

  it('returns an unsigned 32-bit value', () => {
    for (let n = 0; n < 64; n++) {
      const c = crc32c(pseudoRandomBytes(n, n + 1));
      assert.ok(Number.isInteger(c) && c >= 0 && c <= 0xffffffff);
    }
  });

  it('chains: crc(a + b) == crc(b, crc(a)) at every split point', () => {
    const data = pseudoRandomBytes(100, 42);
    const whole = crc32c(data);
    for (let split = 0; split <= data.length; split++) {
      const a = data.subarray(0, split);
      const b = data.subarray(split);
      assert.equal(crc32c(b, crc32c(a)), whole, `split at ${split}`);
    }
  });

  it('agrees with a bit-at-a-time reference for every length 0..100', () => {
    for (let n = 0; n <= 100; n++) {
      const data = pseudoRandomBytes(n, 1000 + n);
      assert.equal(crc32c(data), crc32cReference(data), `length ${n}`);
    }
  });

  it('handles unaligned starts and ends: start/end ranges and subarray views', () => {
    const data = pseudoRandomBytes(80, 7);
    for (let start = 0; start < 17; start++) {
      for (const end of [start, start + 1, start + 7, start + 8, start + 9, start + 33, 80]) {
        if (end > data.length) continue;
        const expected = crc32cReference(data.slice(start, end));
        assert.equal(crc32c(data, 0, start, end), expected, `range [${start}, ${end})`);
        // A view whose byteOffset is not a multiple of 8 into a larger buffer.
        assert.equal(crc32c(data.subarray(start, end)), expected, `subarray [${start}, ${end})`);
      }
    }
    // Chaining over ranges of one buffer.
    assert.equal(crc32c(data, crc32c(data, 0, 0, 13), 13, 80), crc32c(data));
  });
});

describe('crc32c native and portable paths', () => {
  it('agree on random data, lengths on both sides of NATIVE_BYTES_MIN, any alignment and any chaining', () => {
    let seed = 99;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const buf = new Uint8Array(70_000);
    for (let i = 0; i < buf.length; i++) buf[i] = rnd(256);
    for (let k = 0; k < 300; k++) {
      const start = rnd(1000);
      const len = k < 100 ? NATIVE_BYTES_MIN - 50 + rnd(100) : rnd(60_000);
      const init = rnd(2) === 0 ? 0 : rnd(0x7fffffff);
      assert.equal(crc32c(buf, init, start, start + len), crc32cPortable(buf, init, start, start + len), `start=${start} len=${len}`);
    }
  });

  it('uses the native implementation on this machine (the benchmarks depend on it)', () => {
    assert.equal(CRC32C_NATIVE, true, '@node-rs/crc32 did not load: npm ci should install its linux-x64 binary');
  });
});

describe('crc32cCombine', () => {
  it('gives crc32c(A ‖ B) from crc32c(A), crc32c(B) and |B| for every split of random data', () => {
    const buf = new Uint8Array(3000);
    for (let i = 0; i < buf.length; i++) buf[i] = (i * 197 + 13) & 0xff;
    for (let split = 0; split <= buf.length; split += 37) {
      const a = buf.subarray(0, split);
      const b = buf.subarray(split);
      assert.equal(crc32cCombine(crc32c(a), crc32c(b), b.length), crc32c(buf), `split ${split}`);
    }
  });

  it('handles large lengths (a 1 MiB payload) and refuses negative ones', () => {
    const big = new Uint8Array(1024 * 1024 + 16).fill(0x5c);
    const head = ascii('header bytes');
    const whole = new Uint8Array(head.length + big.length);
    whole.set(head);
    whole.set(big, head.length);
    assert.equal(crc32cCombine(crc32c(head), crc32c(big), big.length), crc32c(whole));
    assert.throws(() => crc32cCombine(1, 2, -1), RangeError);
  });
});
