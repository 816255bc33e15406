import * as assert from 'node:assert/strict';
import {
  DEADLINE_AHEAD_MS_MAX,
  HEADER_DEADLINE,
  HEADER_SCHEMA,
  HEADER_TRACEPARENT,
  HEADER_TYPE,
  SCHEMA_VERSION,
  checkSchemaHeader,
  deadlineRemainingMs,
  parseDeadline,
  parseTraceparent,
  readHeaders,
  writeHeaders,
} from '../../messages/headers';
import type { HeaderCarrier } from '../../messages/headers';
import { assertProtocolError } from '../support/expect';

/** Headers like NATS MsgHdrs: get gives '' when absent. */
function carrier(init: Record<string, string> = {}): HeaderCarrier & { map: Map<string, string> } {
  const map = new Map(Object.entries(init));
  return { map, get: (name) => map.get(name) ?? '', set: (name, value) => void map.set(name, value) };
}

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('messages/headers', () => {
  it('writes and reads back every header', () => {
    const h = carrier();
    writeHeaders(h, { type: 'page.write', deadlineMs: 1_700_000_000_123, traceparent: TRACEPARENT });
    assert.deepEqual(Object.fromEntries(h.map), {
      [HEADER_TYPE]: 'page.write',
      [HEADER_SCHEMA]: '1',
      [HEADER_DEADLINE]: '1700000000123',
      [HEADER_TRACEPARENT]: TRACEPARENT,
    });
    assert.deepEqual(readHeaders(h), { type: 'page.write', schema: SCHEMA_VERSION, deadlineMs: 1_700_000_000_123, traceparent: TRACEPARENT });
    const minimal = carrier();
    writeHeaders(minimal, { type: 'status' });
    assert.deepEqual(readHeaders(minimal), { type: 'status', schema: 1 });
  });

  it('an unsupported schema version gives bad_request with details.supported', () => {
    for (const v of ['2', '0', '999999999']) {
      const err = assertProtocolError(() => readHeaders(carrier({ [HEADER_TYPE]: 'status', [HEADER_SCHEMA]: v })), 'bad_request', HEADER_SCHEMA, /unsupported schema version/);
      assert.deepEqual(err.details?.supported, [1]);
    }
    for (const v of ['1.0', '01', ' 1', 'one', '1e0', '-1', '9'.repeat(40)]) {
      const err = assertProtocolError(() => checkSchemaHeader(carrier({ [HEADER_SCHEMA]: v })), 'bad_request', HEADER_SCHEMA);
      assert.deepEqual(err.details?.supported, [1]);
    }
    assert.equal(checkSchemaHeader(carrier({ [HEADER_SCHEMA]: '1' })), 1);
  });

  it('the schema is checked before the type (a newer client learns what is supported)', () => {
    const err = assertProtocolError(() => readHeaders(carrier({ [HEADER_TYPE]: 'page.trim', [HEADER_SCHEMA]: '2' })), 'bad_request', HEADER_SCHEMA);
    assert.deepEqual(err.details?.supported, [1]);
  });

  it('missing headers give bad_request naming the header', () => {
    assertProtocolError(() => readHeaders(carrier({ [HEADER_TYPE]: 'status' })), 'bad_request', HEADER_SCHEMA, /missing/);
    assertProtocolError(() => readHeaders(carrier({ [HEADER_SCHEMA]: '1' })), 'bad_request', HEADER_TYPE, /missing/);
    assertProtocolError(() => readHeaders(undefined), 'bad_request', HEADER_SCHEMA);
  });

  it('an unknown or unexpected type gives bad_request', () => {
    assertProtocolError(() => readHeaders(carrier({ [HEADER_TYPE]: 'page.trim', [HEADER_SCHEMA]: '1' })), 'bad_request', HEADER_TYPE, /unknown message type/);
    assertProtocolError(
      () => readHeaders(carrier({ [HEADER_TYPE]: 'page.read', [HEADER_SCHEMA]: '1' }), { expectType: 'page.write' }),
      'bad_request',
      HEADER_TYPE,
      /expected "page.write"/,
    );
    assert.equal(readHeaders(carrier({ [HEADER_TYPE]: 'page.write', [HEADER_SCHEMA]: '1' }), { expectType: 'page.write' }).type, 'page.write');
  });

  it('a malformed deadline gives bad_request', () => {
    for (const v of ['soon', '-5', '1.5', '1e12', '99999999999999999', ' 12']) {
      assertProtocolError(() => parseDeadline(v), 'bad_request', HEADER_DEADLINE);
      assertProtocolError(() => readHeaders(carrier({ [HEADER_TYPE]: 'status', [HEADER_SCHEMA]: '1', [HEADER_DEADLINE]: v })), 'bad_request', HEADER_DEADLINE);
    }
    assert.equal(parseDeadline(''), undefined);
    assert.equal(parseDeadline('0'), 0);
  });

  it('an overlong header value gives bad_request', () => {
    assertProtocolError(() => readHeaders(carrier({ [HEADER_TYPE]: 'x'.repeat(1000), [HEADER_SCHEMA]: '1' })), 'bad_request', HEADER_TYPE, /longer than/);
  });

  it('deadlines: remaining time, cap, and timeout once passed', () => {
    assert.equal(deadlineRemainingMs(1_000, 400), 600);
    assert.equal(deadlineRemainingMs(undefined, 400), DEADLINE_AHEAD_MS_MAX);
    assert.equal(deadlineRemainingMs(400 + 10 * DEADLINE_AHEAD_MS_MAX, 400), DEADLINE_AHEAD_MS_MAX);
    const err = assertProtocolError(() => deadlineRemainingMs(1_000, 1_000), 'timeout');
    assert.deepEqual(err.details, { deadlineMs: 1_000, nowMs: 1_000 });
    assertProtocolError(() => deadlineRemainingMs(1_000, 1_500), 'timeout', undefined, /500 ms ago/);
  });

  it('traceparent passes through when well formed and is dropped otherwise', () => {
    assert.equal(parseTraceparent(TRACEPARENT), TRACEPARENT);
    assert.equal(parseTraceparent(`01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra`), `01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra`);
    for (const bad of [
      '',
      'garbage',
      `${TRACEPARENT}-extra`, // version 00 has no suffix
      'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
      '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01',
      `01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-${'x'.repeat(600)}`,
    ]) {
      assert.equal(parseTraceparent(bad), undefined, bad);
    }
    const h = readHeaders(carrier({ [HEADER_TYPE]: 'status', [HEADER_SCHEMA]: '1', [HEADER_TRACEPARENT]: 'garbage' }));
    assert.equal('traceparent' in h, false, 'a bad traceparent is no error, it is dropped');
  });
});
