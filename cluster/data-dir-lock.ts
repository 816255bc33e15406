/**
 * The lock of a node's data directory: one node process at a time uses a data directory.
 *
 * Two nodes on one directory would each append to the same shard logs and overwrite each
 * other's records (two different records at one LSN), which destroys the volume. The lock is
 * the file `<dataDir>/lock`, created exclusively (`O_EXCL`), holding who took it: process id,
 * the process's start time (Linux: /proc/<pid>/stat, so a process id the system reused is not
 * taken for the holder), host name and node id. A lock whose holder no longer runs (a node
 * that crashed) is taken over; one held by a running process, or taken on another host (a
 * shared file system, where this host cannot tell), is refused with an error that names the
 * holder and the file to remove if the operator knows better.
 *
 * Within one process (an in-process cluster) the locks held are also kept in memory: a node
 * stopped as a crash would be (`abandon`) leaves its file, as a real crash does, and a node
 * started again on the directory in the same process takes it over.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ProtocolError } from '../messages/errors';

export const DATA_DIR_LOCK_NAME = 'lock';

/** Who holds a lock (the lock file's content). */
export interface LockHolder {
  pid: number;
  /** The process's start time in clock ticks since boot (Linux), when known. */
  startTicks?: number;
  hostname: string;
  nodeId: string;
  sinceMs: number;
}

/** Lock files held by this process, by path. */
const heldHere = new Set<string>();

export class DataDirLock {
  readonly file: string;
  private held = true;

  private constructor(file: string) {
    this.file = file;
  }

  /**
   * Takes the lock of `dataDir` (which must exist) for node `nodeId`. Throws ProtocolError
   * 'bad_request' when a running process holds it.
   */
  static acquire(dataDir: string, nodeId: string): DataDirLock {
    const file = path.join(dataDir, DATA_DIR_LOCK_NAME);
    const me: LockHolder = { pid: process.pid, ...startTicksOf(process.pid), hostname: os.hostname(), nodeId, sinceMs: Date.now() };
    // Twice at most: once more after removing a lock whose holder is gone.
    for (let attempt = 0; attempt < 2; attempt++) {
      if (tryCreate(file, me)) {
        heldHere.add(file);
        return new DataDirLock(file);
      }
      const holder = readHolder(file);
      if (holder === undefined && recentlyChanged(file)) {
        // Created a moment ago and not written yet: another node is taking it now.
        throw new ProtocolError('bad_request', `data dir ${dataDir}: another node is starting on it (${file} was just created)`, { file });
      }
      if (holder !== undefined && holderRuns(holder, file)) {
        const where = holder.hostname === os.hostname() ? `process ${holder.pid}` : `process ${holder.pid} on host '${holder.hostname}'`;
        throw new ProtocolError(
          'bad_request',
          `data dir ${dataDir} is in use by node '${holder.nodeId}' (${where}, since ${new Date(holder.sinceMs).toISOString()}): ` +
            `stop it first; if no such node runs, remove ${file}`,
          { file, holder },
        );
      }
      // Its holder is gone (or the file is not a lock this code wrote whole: a crash while
      // writing it): removed, and created again exclusively, so that of two nodes starting at
      // once on the directory only one gets it.
      removeIfUnchanged(file, holder);
    }
    throw new ProtocolError('bad_request', `data dir ${dataDir}: could not take ${file} (another node is starting on it)`, { file });
  }

  /** Gives the lock up (clean stop): the file is removed. */
  release(): void {
    if (!this.held) return;
    this.held = false;
    heldHere.delete(this.file);
    const holder = readHolder(this.file);
    if (holder?.pid === process.pid) fs.rmSync(this.file, { force: true });
  }

  /** As a crash: the file stays, and this process no longer counts as its holder. */
  abandon(): void {
    this.held = false;
    heldHere.delete(this.file);
  }
}

function tryCreate(file: string, me: LockHolder): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, 'wx', 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
  try {
    fs.writeSync(fd, `${JSON.stringify(me)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return true;
}

/** The holder a lock file names, or undefined if it cannot be read as one. */
function readHolder(file: string): LockHolder | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const h = JSON.parse(text) as Partial<LockHolder>;
    if (!Number.isSafeInteger(h.pid) || typeof h.hostname !== 'string' || typeof h.nodeId !== 'string' || !Number.isSafeInteger(h.sinceMs)) return undefined;
    return h as LockHolder;
  } catch {
    return undefined;
  }
}

/** Whether the process a lock names still runs (refused when this host cannot tell). */
function holderRuns(holder: LockHolder, file: string): boolean {
  if (holder.hostname !== os.hostname()) return true;
  if (holder.pid === process.pid) return heldHere.has(file);
  const now = startTicksOf(holder.pid);
  if (now.startTicks !== undefined && holder.startTicks !== undefined) return now.startTicks === holder.startTicks;
  try {
    process.kill(holder.pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A lock file this new is being written by the node that created it. */
const LOCK_WRITE_MS = 5000;

function recentlyChanged(file: string): boolean {
  try {
    return Date.now() - fs.statSync(file).mtimeMs < LOCK_WRITE_MS;
  } catch {
    return false;
  }
}

function removeIfUnchanged(file: string, seen: LockHolder | undefined): void {
  const now = readHolder(file);
  if (seen !== undefined && (now === undefined || now.pid !== seen.pid || now.sinceMs !== seen.sinceMs)) return;
  fs.rmSync(file, { force: true });
}

/** `{ startTicks }` of a process from /proc/<pid>/stat (field 22), or `{}` when not known. */
function startTicksOf(pid: number): { startTicks?: number } {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces: the third
    // field (state) is the first of them, so the 22nd is at index 19.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[19]);
    return Number.isSafeInteger(ticks) ? { startTicks: ticks } : {};
  } catch {
    return {};
  }
}
