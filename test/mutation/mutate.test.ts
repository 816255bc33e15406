import { strict as assert } from 'node:assert';
import { mutants } from './mutate';

describe('npm run mutate: the changes it makes', function () {
  it('changes each throwing line, one at a time, into one that does not throw', () => {
    const src = ['function f(x) {', "  if (x < 0) throw new RangeError('negative');", "  if (x > 9) throw new errors_1.ProtocolError('too_large', 'big');", '  return x; // throw it away', '}'].join('\n');
    const ms = mutants(src);
    assert.deepEqual(ms.map((m) => m.line), [2, 3]);
    assert.equal(ms[0]!.text.split('\n')[1], "  if (x < 0) void new RangeError('negative');");
    assert.equal(ms[0]!.text.split('\n')[2], src.split('\n')[2], 'one change at a time');
    assert.equal(ms[1]!.text.split('\n')[2], "  if (x > 9) void new errors_1.ProtocolError('too_large', 'big');");
    assert.equal(ms[1]!.source, "if (x > 9) throw new errors_1.ProtocolError('too_large', 'big');");
  });

  it('with a text to find: the one place it occurs, or a usage error', () => {
    const src = 'a();\nif (term < this.term) return false;\nb();';
    const [m] = mutants(src, 'if (term < this.term)', 'if (false)');
    assert.equal(m!.line, 2);
    assert.equal(m!.text, 'a();\nif (false) return false;\nb();');
    assert.throws(() => mutants(src, 'nowhere', 'x'), /does not occur/);
    assert.throws(() => mutants(src, '();', 'x'), /more than once/);
  });
});
