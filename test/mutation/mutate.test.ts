import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
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

describe('npm run mutate: a run over a file and its tests', function () {
  this.timeout(120_000);
  const root = path.resolve(__dirname, '..', '..', '..');
  const dir = path.join(root, 'dist', 'test', 'mutation');
  const tag = `fixture-${process.pid}`;
  const lib = path.join(dir, `${tag}.js`);
  const libText = "module.exports = (x) => {\n  if (x < 0) throw new RangeError('negative');\n  return x;\n};\n";
  const spec = (name: string, body: string): string => {
    const p = path.join(dir, `${tag}-${name}.spec.js`);
    fs.writeFileSync(p, `const assert = require('node:assert');\nconst f = require('./${tag}.js');\nit('${name}', async () => { ${body} });\n`);
    return path.relative(root, p);
  };
  const start = (args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; out: string }> } => {
    const child = spawn(process.execPath, [path.join(dir, 'mutate.js'), '--file', path.relative(path.join(root, 'dist'), lib), '--no-results', ...args], { cwd: root });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    return { child, done: new Promise((resolve) => child.on('close', (code) => resolve({ code, out }))) };
  };
  const run = (args: string[]): Promise<{ code: number | null; out: string }> => start(args).done;

  beforeEach(() => fs.writeFileSync(lib, libText));
  after(() => {
    for (const f of fs.readdirSync(dir)) if (f.startsWith(tag)) fs.rmSync(path.join(dir, f));
  });

  it('a change the tests catch: exit 0; one they miss: named, exit 1; the file put back either way', async () => {
    const caught = await run(['--spec', spec('refuses-negatives', "assert.throws(() => f(-1), RangeError); assert.equal(f(2), 2);")]);
    assert.equal(caught.code, 0, caught.out);
    assert.match(caught.out, /\n {4}2 {2}caught {2}1 failing .*throw new RangeError\('negative'\);\nmutate: 1 of 1 caught\n/);
    assert.equal(fs.readFileSync(lib, 'utf8'), libText);
    const missed = await run(['--spec', spec('positives-only', 'assert.equal(f(2), 2);')]);
    assert.equal(missed.code, 1, missed.out);
    assert.match(missed.out, /MISSED.*\nmutate: 0 of 1 caught; missed at line\(s\) 2\n/);
    assert.equal(fs.readFileSync(lib, 'utf8'), libText);
  });

  it('tests that fail unchanged: nothing is changed, exit 1; bad flags: exit 2', async () => {
    const failing = await run(['--spec', spec('fails-anyway', 'assert.equal(f(2), 3);')]);
    assert.equal(failing.code, 1);
    assert.match(failing.out, /the tests fail without any change \(1 failing\): fix them first/);
    const bad = await run(['--spec', 'x', '--max', '0']);
    assert.equal(bad.code, 2);
    assert.match(bad.out, /^mutate: --max: expected 1\.\.1000, got "0"\nusage: /);
    const lone = await run(['--spec', 'x', '--find', 'x < 0']);
    assert.equal(lone.code, 2);
    assert.match(lone.out, /--find and --replace go together/);
  });

  it('a run stopped by SIGINT puts the file back', async () => {
    // The unchanged run passes at once; the run of the change waits, and is stopped meanwhile.
    const slow = spec('slow-when-changed', "let threw = false; try { f(-1); } catch { threw = true; } if (!threw) await new Promise((r) => setTimeout(r, 30000));");
    const running = start(['--spec', slow]);
    for (let i = 0; i < 400 && fs.readFileSync(lib, 'utf8') === libText; i++) await new Promise((r) => setTimeout(r, 50));
    assert.notEqual(fs.readFileSync(lib, 'utf8'), libText, 'the change was written');
    await new Promise((r) => setTimeout(r, 300));
    running.child.kill('SIGINT');
    const r = await running.done;
    assert.equal(r.code, 130, r.out);
    assert.match(r.out, /SIGINT: .* put back/);
    assert.equal(fs.readFileSync(lib, 'utf8'), libText);
  });
});
