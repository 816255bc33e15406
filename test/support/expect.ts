/** Assertions on typed errors, shared by the tests. */
import { strict as assert } from 'node:assert';
import { StorageError } from '../../storage-engine/errors';
import { ProtocolError, type ErrorCode } from '../../messages/errors';

/** Runs `fn`, which must throw a StorageError with `code` (and `details.errno` when given); returns it. */
export function expectStorageError(fn: () => unknown, code: string, errno?: string): StorageError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof StorageError, `expected StorageError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (errno !== undefined) assert.equal(caught.details?.['errno'], errno);
  return caught;
}

/**
 * Runs `fn`, which must throw a ProtocolError with `code`, and when given, `details.path` and a
 * message matching `message`; returns it.
 */
export function assertProtocolError(fn: () => unknown, code: ErrorCode, path?: string, message?: RegExp): ProtocolError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown instanceof ProtocolError, `expected a ProtocolError, got ${String(thrown)}`);
  assert.equal(thrown.code, code, thrown.message);
  if (path !== undefined) assert.equal(thrown.details?.path, path, thrown.message);
  if (message !== undefined) assert.match(thrown.message, message);
  return thrown;
}

/**
 * Awaits `promise`, which must reject with a ProtocolError with `code` (and a message matching
 * `message` when given); returns it.
 */
export async function rejectsWith(promise: Promise<unknown>, code: ErrorCode | string, message?: RegExp): Promise<ProtocolError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ProtocolError, `expected a ProtocolError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message !== undefined) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected a ${code} error`);
}
