import { strict as assert } from 'node:assert';
import { createLogger } from '../../observability/log';
import { stderrOfSync } from '../support/stderr';

/** The lines `fn` writes to stderr, parsed. */
function linesOf(fn: () => void): Array<Record<string, unknown>> {
  return stderrOfSync(fn).join('').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('the structured logger', () => {
  it('writes one JSON line per call with the level, message, base and fields; an Error as name, message, code and stack', () => {
    const log = createLogger({ component: 'test' }, 'info');
    const lines = linesOf(() => {
      log.info('hello', { n: 1, err: Object.assign(new Error('boom'), { code: 'io_error' }) });
      log.debug('not at info');
    });
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.msg, 'hello');
    assert.equal(lines[0]!.level, 'info');
    assert.equal(lines[0]!.component, 'test');
    assert.equal(lines[0]!.n, 1);
    assert.deepEqual({ ...(lines[0]!.err as object), stack: undefined }, { name: 'Error', message: 'boom', code: 'io_error', stack: undefined });
  });

  // Fields may hold values decoded from a message (a CBOR bignum is a BigInt; some CBOR tags
  // decode into objects that hold themselves). JSON.stringify throws on both, and a log call
  // that throws escapes from the handler that logs, often a timer's or a promise's: it ended a
  // node's process when a heartbeat's answer carried a bignum epoch.
  it('never throws: a BigInt is written as a string, a value inside itself as "[Circular]", a field that cannot be read as why', () => {
    const log = createLogger({}, 'warn');
    const circular: Record<string, unknown> = { a: 1 };
    circular.self = circular;
    const unreadable = Object.defineProperty({}, 'x', { enumerable: true, get: () => { throw new TypeError('no'); } });
    let lines: Array<Record<string, unknown>> = [];
    assert.doesNotThrow(() => {
      lines = linesOf(() => {
        log.warn('bigint', { epoch: 1n, nested: { big: 2n ** 70n } });
        log.warn('circular', { value: circular });
        log.warn('unreadable', { value: unreadable });
      });
    });
    assert.deepEqual(lines.map((l) => l.msg), ['bigint', 'circular', 'unreadable']);
    assert.equal(lines[0]!.epoch, '1');
    assert.deepEqual(lines[0]!.nested, { big: (2n ** 70n).toString() });
    assert.deepEqual(lines[1]!.value, { a: 1, self: '[Circular]' });
    assert.equal(lines[2]!.level, 'warn');
    assert.match(String(lines[2]!.logError), /could not be written: no/);
  });
});
