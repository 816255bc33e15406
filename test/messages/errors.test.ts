import * as assert from 'node:assert/strict';
import { decode, encode } from '../../messages/codec';
import {
  ERROR_CODES,
  ERROR_CODE_RETRYABLE,
  ERROR_MESSAGE_LENGTH_MAX,
  ProtocolError,
  errorReply,
  isErrorCode,
  isErrorReply,
  isRetryable,
  throwIfError,
  toProtocolError,
} from '../../messages/errors';

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  assert.fail('expected a throw');
}

describe('messages/errors', () => {
  it('lists the documented codes, each with a retry rule', () => {
    assert.deepEqual([...ERROR_CODES], [
      'bad_request', 'not_found', 'already_exists', 'out_of_range', 'too_large', 'overloaded', 'not_leader',
      'timeout', 'unavailable', 'device_failed', 'no_space', 'corruption', 'trimmed', 'future_lsn', 'stale_term', 'forbidden', 'internal',
    ]);
    assert.deepEqual(Object.keys(ERROR_CODE_RETRYABLE).sort(), [...ERROR_CODES].sort());
    assert.equal(isRetryable('overloaded'), true);
    assert.equal(isRetryable('bad_request'), false);
    assert.equal(isRetryable('no_space'), false, 'waiting does not free space');
    assert.equal(isErrorCode('not_found'), true);
    assert.equal(isErrorCode('ENOENT'), false);
    assert.equal(isErrorCode(3), false);
  });

  it('ProtocolError has a name, a code, a message and details', () => {
    const err = new ProtocolError('not_found', 'volume "x" does not exist', { name: 'x' });
    assert.ok(err instanceof Error);
    assert.equal(err.name, 'ProtocolError');
    assert.equal(err.code, 'not_found');
    assert.deepEqual(err.details, { name: 'x' });
  });

  it('an error reply round-trips to the same ProtocolError', () => {
    const wire = decode(encode(errorReply(new ProtocolError('out_of_range', 'page 9 is out of range', { path: 'pages[0]' }))));
    assert.deepEqual(wire, { error: { code: 'out_of_range', message: 'page 9 is out of range', details: { path: 'pages[0]' } } });
    assert.equal(isErrorReply(wire), true);
    const err = caught(() => throwIfError(wire));
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.code, 'out_of_range');
    assert.equal(err.message, 'page 9 is out of range');
    assert.deepEqual(err.details, { path: 'pages[0]' });
  });

  it('an error reply without details has no details member', () => {
    assert.deepEqual(errorReply(new ProtocolError('overloaded', 'full')), { error: { code: 'overloaded', message: 'full' } });
  });

  it('throwIfError returns a normal reply unchanged', () => {
    const reply = { lsn: 3 };
    assert.equal(throwIfError(reply), reply);
    assert.equal(throwIfError(null), null);
    assert.equal(isErrorReply({ lsn: 1 }), false);
  });

  it('any Error with a known string code keeps it; anything else is internal', () => {
    const storage = Object.assign(new Error('device 0 failed'), { code: 'device_failed', details: { device: 0 } });
    assert.deepEqual(errorReply(storage), { error: { code: 'device_failed', message: 'device 0 failed', details: { device: 0 } } });
    const odd = Object.assign(new Error('x'), { code: 'timeout', details: new Map() });
    assert.equal(toProtocolError(odd).details, undefined, 'non-plain details are dropped');
    const node = Object.assign(new Error("ENOENT: no such file '/data/secret'"), { code: 'ENOENT' });
    assert.deepEqual(errorReply(node), { error: { code: 'internal', message: 'internal error' } });
    assert.deepEqual(errorReply(new TypeError('boom')), { error: { code: 'internal', message: 'internal error' } });
    assert.deepEqual(errorReply('a string'), { error: { code: 'internal', message: 'internal error' } });
    assert.deepEqual(errorReply({ code: 'not_found', message: 'not an Error' }), { error: { code: 'internal', message: 'internal error' } });
    const pe = new ProtocolError('stale_term', 'term 3 < 4');
    assert.equal(toProtocolError(pe), pe);
  });

  it('a storage code that is no protocol code takes the one it stands for, and is named in details.storageCode; invariant stays internal', () => {
    const fsync = Object.assign(new Error('fdatasync of dev0: EIO'), { code: 'fsync_failed', details: { errno: 'EIO' } });
    assert.deepEqual(errorReply(fsync), { error: { code: 'device_failed', message: 'fdatasync of dev0: EIO', details: { errno: 'EIO', storageCode: 'fsync_failed' } } });
    const io = Object.assign(new Error('read of seg 3: EIO'), { code: 'io_error' });
    assert.deepEqual(errorReply(io), { error: { code: 'device_failed', message: 'read of seg 3: EIO', details: { storageCode: 'io_error' } } });
    const closed = Object.assign(new Error('the shard is closed'), { code: 'closed' });
    assert.deepEqual(errorReply(closed), { error: { code: 'unavailable', message: 'the shard is closed', details: { storageCode: 'closed' } } });
    for (const code of ['invariant', '__proto__', 'constructor', 'toString']) {
      assert.deepEqual(errorReply(Object.assign(new Error('x'), { code })), { error: { code: 'internal', message: 'internal error' } }, code);
    }
  });

  it('long messages are cut on the wire', () => {
    const reply = errorReply(new ProtocolError('bad_request', 'x'.repeat(10_000)));
    assert.equal(reply.error.message.length, ERROR_MESSAGE_LENGTH_MAX);
  });

  it('an unknown remote code becomes internal with remoteCode', () => {
    const err = caught(() => throwIfError({ error: { code: 'quota_exceeded', message: 'over quota', details: { quota: 1 } } }));
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.code, 'internal');
    assert.equal(err.message, 'over quota');
    assert.deepEqual(err.details, { quota: 1, remoteCode: 'quota_exceeded' });
  });

  it('a malformed error reply becomes internal', () => {
    for (const bad of [{ error: 'boom' }, { error: { code: 1, message: 'm' } }, { error: { code: 'not_found' } }, { error: null }]) {
      const err = caught(() => throwIfError(bad));
      assert.ok(err instanceof ProtocolError);
      assert.equal(err.code, 'internal');
      assert.match(err.message, /malformed error reply/);
    }
  });
});
