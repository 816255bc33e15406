import { strict as assert } from 'node:assert';
import { ByteArena } from '../../storage-engine/arena';
import { expectStorageError } from '../support/expect';

describe('ByteArena', () => {
  it('carves zeroed, 8-byte aligned, disjoint buffers from shared chunks', () => {
    const arena = new ByteArena(4096);
    const a = arena.alloc(100);
    const b = arena.alloc(300);
    assert.equal(a.buffer, b.buffer, 'one chunk');
    assert.equal(arena.chunks, 1);
    assert.equal(a.length, 100);
    assert.equal(b.byteOffset % 8, 0);
    assert.ok(b.byteOffset >= a.byteOffset + a.length, 'disjoint');
    assert.ok(b.every((v) => v === 0), 'zeroed');
    a.fill(0xff);
    assert.ok(b.every((v) => v === 0), 'writing one does not touch the other');
    // Past the end of the chunk: a new one.
    const rest = Array.from({ length: 4 }, () => arena.alloc(1000));
    assert.equal(arena.chunks, 2);
    assert.notEqual(rest[3]!.buffer, a.buffer);
    assert.ok(rest[3]!.every((v) => v === 0));
  });

  it('gives a buffer over a quarter of a chunk its own ArrayBuffer; refuses bad sizes', () => {
    const arena = new ByteArena(4096);
    const big = arena.alloc(1025);
    assert.equal(big.byteOffset, 0);
    assert.equal(big.buffer.byteLength, 1025);
    assert.equal(arena.chunks, 0);
    assert.equal(arena.alloc(0).length, 0);
    expectStorageError(() => arena.alloc(-1), 'bad_request');
    expectStorageError(() => arena.alloc(1.5), 'bad_request');
    expectStorageError(() => new ByteArena(100), 'bad_request');
  });
});
