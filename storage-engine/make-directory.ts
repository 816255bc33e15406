/**
 * makeDirectory: `mkdir -p` that always ends.
 *
 * Node's `fs.mkdirSync(dir, { recursive: true })` (and its promise form) loops for ever when
 * `mkdir` answers ENOENT although the parent exists, which is what procfs answers
 * (`strata dev --data-dir /proc/x` used to spin at 100 % CPU and ignore SIGTERM). This walks up
 * to the nearest existing ancestor, at most once per path component, then creates each missing
 * component with one plain `mkdir`, so every failure is the OS's own error for the directory
 * that could not be made.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { errnoOf } from './errors';

/** The ENOTDIR error for `p`, which exists and is not a directory. */
function notADirectory(p: string): Error {
  return Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${p}'`), { code: 'ENOTDIR', path: p, syscall: 'mkdir' });
}

/** Creates `dir` and its missing parents (like `mkdir -p`); a directory already there is fine. */
export function makeDirectory(dir: string): void {
  const missing: string[] = [];
  let current = path.resolve(dir);
  for (;;) {
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(current);
    } catch (e) {
      const code = errnoOf(e);
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw e;
    }
    if (stat !== undefined) {
      if (!stat.isDirectory()) throw notADirectory(current);
      break;
    }
    missing.push(current);
    const parent = path.dirname(current);
    if (parent === current) break; // the root itself is missing: the mkdir below says why
    current = parent;
  }
  for (let i = missing.length - 1; i >= 0; i--) {
    const p = missing[i]!;
    try {
      fs.mkdirSync(p);
    } catch (e) {
      // Made meanwhile by someone else: fine when it is a directory.
      if (errnoOf(e) !== 'EEXIST') throw e;
      if (!fs.statSync(p).isDirectory()) throw notADirectory(p);
    }
  }
}

/**
 * Makes `dir`'s entries durable (fsync of the directory): a file or directory created or renamed
 * in it survives a power cut once this returns.
 */
export function fsyncDirectory(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
