/**
 * Does every failure path have a test that fails without it? A bounded mutation run over the
 * built code (docs/mutation.md).
 *
 *   npm run mutate -- --file storage-engine/page-store.js --spec 'dist/test/storage-engine/*.test.js'
 *        [--find TEXT --replace TEXT] [--max N] [--timeout-s S] [--results-dir D | --no-results]
 *   (node dist/test/mutation/mutate.js … once built)
 *
 * `--file` names a file under `dist/`. Without `--find`, each line of it that throws (`throw new
 * X(`) is changed, one at a time, into one that does not (`void new X(`): the check before it
 * then lets its case through. With `--find`, the one place that text occurs is changed into
 * `--replace`. For each change the file is written, mocha runs `--spec` (a glob or files under
 * `dist/test`, quoted), and the file is put back before the next: a change the tests catch makes
 * mocha fail (or hang past `--timeout-s`); one they miss is a failure path without a test, or a
 * check that another repeats. The original file is put back also on SIGINT or SIGTERM.
 *
 * Prints a line per change and a summary, and writes JSON to the results folder. Exit status:
 * 0 when the tests caught every change, 1 when they missed one, 2 for bad flags. It changes the
 * built file in place: run nothing else from the same `dist/` meanwhile.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const FLAGS = ['file', 'spec', 'find', 'replace', 'max', 'timeout-s', 'results-dir'] as const;
const SWITCHES = ['no-results', 'help'] as const;
const USAGE =
  "usage: npm run mutate -- --file PATH_UNDER_DIST --spec 'dist/test/…' [--find TEXT --replace TEXT] [--max 1..1000] [--timeout-s 1..3600] [--results-dir D | --no-results]";
/** Most changes one run makes. */
const MUTANTS_MAX = 1000;
const THROW_PATTERN = /\bthrow new (?=[\w.]+\()/;

class UsageError extends Error {}

/** The test run under way (its own process group), stopped with the tool. */
let running: ChildProcess | undefined;

function stopRunning(): void {
  if (running?.pid === undefined) return;
  try {
    process.kill(-running.pid, 'SIGKILL');
  } catch {
    // Gone already.
  }
}

function parseFlags(argv: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const name = a.startsWith('--') ? a.slice(2) : '';
    if ((SWITCHES as readonly string[]).includes(name) && !out.has(name)) out.set(name, 'true');
    else if ((FLAGS as readonly string[]).includes(name) && i + 1 < argv.length && !out.has(name)) out.set(name, argv[++i]!);
    else throw new UsageError(`${JSON.stringify(a)}: unknown, repeated or missing its value`);
  }
  return out;
}

function intFlag(flags: Map<string, string>, name: string, min: number, max: number, dflt: number): number {
  const v = flags.get(name);
  if (v === undefined) return dflt;
  if (!/^[0-9]+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`--${name}: expected ${min}..${max}, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** One change: the line (1-based) and the file's text with it made. */
interface Mutant {
  line: number;
  source: string;
  text: string;
}

/** The changes to make in `original`: each throwing line, or the one place of `find`. */
export function mutants(original: string, find?: string, replace?: string): Mutant[] {
  if (find !== undefined) {
    const at = original.indexOf(find);
    if (at < 0) throw new UsageError('--find: the text does not occur in the file');
    if (original.indexOf(find, at + 1) >= 0) throw new UsageError('--find: the text occurs more than once in the file; give more of it');
    const line = original.slice(0, at).split('\n').length;
    return [{ line, source: original.split('\n')[line - 1]!.trim(), text: original.slice(0, at) + replace! + original.slice(at + find.length) }];
  }
  const lines = original.split('\n');
  const out: Mutant[] = [];
  lines.forEach((l, i) => {
    if (!THROW_PATTERN.test(l)) return;
    const changed = [...lines];
    changed[i] = l.replace(THROW_PATTERN, 'void new ');
    out.push({ line: i + 1, source: l.trim(), text: changed.join('\n') });
  });
  return out;
}

/** Runs mocha on `spec`; resolves whether it failed (or was stopped at the time bound) and its "N failing" line. */
function runTests(root: string, spec: string, timeoutMs: number): Promise<{ failed: boolean; hung: boolean; failing: string }> {
  return new Promise((resolve, reject) => {
    const mocha = path.join(root, 'node_modules', '.bin', 'mocha');
    const child = spawn(`${JSON.stringify(mocha)} --no-config --timeout 60000 --exit ${spec}`, { cwd: root, shell: true, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    running = child;
    let out = '';
    const keep = (b: Buffer): void => {
      out = (out + b.toString()).slice(-64 * 1024);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let hung = false;
    const timer = setTimeout(() => {
      hung = true;
      stopRunning();
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      running = undefined;
      const failing = /^\s*(\d+ failing)/m.exec(out)?.[1] ?? (hung ? 'stopped at the time bound' : code !== 0 ? `exit ${String(code)}` : '');
      resolve({ failed: hung || code !== 0, hung, failing });
    });
  });
}

async function main(argv: readonly string[]): Promise<number> {
  const flags = parseFlags(argv);
  if (flags.has('help')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const root = path.resolve(__dirname, '..', '..', '..');
  const rel = flags.get('file');
  const spec = flags.get('spec');
  if (rel === undefined || spec === undefined) throw new UsageError('--file and --spec are required');
  if ((flags.get('find') === undefined) !== (flags.get('replace') === undefined)) throw new UsageError('--find and --replace go together');
  const file = path.resolve(root, 'dist', rel);
  if (!file.startsWith(path.join(root, 'dist') + path.sep) || !file.endsWith('.js') || !fs.existsSync(file)) {
    throw new UsageError(`--file: ${JSON.stringify(rel)} is not a built .js file under dist/ (build first: npx tsc -p .)`);
  }
  const max = intFlag(flags, 'max', 1, MUTANTS_MAX, 200);
  const timeoutMs = intFlag(flags, 'timeout-s', 1, 3600, 600) * 1000;
  const original = fs.readFileSync(file, 'utf8');
  const all = mutants(original, flags.get('find'), flags.get('replace'));
  if (all.length === 0) throw new UsageError(`--file: ${rel} has no line that throws`);
  const list = all.slice(0, max);

  // The original is put back whatever happens, a signal included.
  const restore = (): void => fs.writeFileSync(file, original);
  const onSignal = (sig: NodeJS.Signals): void => {
    stopRunning();
    restore();
    process.stderr.write(`mutate: ${sig}: ${rel} put back\n`);
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const unchanged = await runTests(root, spec, timeoutMs);
  if (unchanged.failed) {
    process.stderr.write(`mutate: the tests fail without any change (${unchanged.failing}): fix them first\n`);
    return 1;
  }
  process.stdout.write(`mutate: ${list.length} change(s) of ${rel}${all.length > list.length ? ` (of ${all.length}; --max)` : ''}, tests ${spec}\n`);
  const results: Array<{ line: number; caught: boolean; failing: string; source: string }> = [];
  try {
    for (const m of list) {
      fs.writeFileSync(file, m.text);
      let r: Awaited<ReturnType<typeof runTests>>;
      try {
        r = await runTests(root, spec, timeoutMs);
      } finally {
        restore();
      }
      results.push({ line: m.line, caught: r.failed, failing: r.failing, source: m.source });
      process.stdout.write(`${String(m.line).padStart(5)}  ${r.failed ? 'caught' : 'MISSED'}  ${r.failing.padEnd(24)}  ${m.source.slice(0, 110)}\n`);
    }
  } finally {
    restore();
  }
  const missed = results.filter((r) => !r.caught);
  process.stdout.write(`mutate: ${results.length - missed.length} of ${results.length} caught${missed.length > 0 ? `; missed at line(s) ${missed.map((r) => r.line).join(', ')}` : ''}\n`);
  if (!flags.has('no-results')) {
    const dir = path.resolve(flags.get('results-dir') ?? 'results');
    fs.mkdirSync(dir, { recursive: true });
    const out = path.join(dir, `mutate-${path.basename(rel, '.js')}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(out, JSON.stringify({ file: rel, spec, changes: results.length, caught: results.length - missed.length, results }, null, 2) + '\n');
    process.stdout.write(`mutate: wrote ${out}\n`);
  }
  return missed.length === 0 ? 0 : 1;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      if (e instanceof UsageError) {
        process.stderr.write(`mutate: ${e.message}\n${USAGE}\n`);
        process.exit(2);
      }
      process.stderr.write(`mutate: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
