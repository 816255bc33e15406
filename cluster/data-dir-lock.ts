/**
 * The lock of a node's data directory: one node process at a time uses a data directory.
 *
 * Two nodes on one directory would each append to the same shard logs and overwrite each
 * other's records (two different records at one LSN), which destroys the volume. The lock is
 * the file `<dataDir>/lock`, created exclusively (`O_EXCL`), holding who took it: process id,
 * the process's start time (/proc/<pid>/stat), the machine's boot id and the process's pid
 * namespace (so that a process id is only looked up where it means the same process), host
 * name and node id. Its holder touches the file every LOCK_REFRESH_MS (a lease).
 *
 * A lock is taken over when its holder no longer runs:
 * - on this machine and in this pid namespace (same boot id and namespace; or a lock without
 *   them, written by an older Strata on this host): its process is gone, or its process id now
 *   names a process started at another time (a node that crashed is replaced at once);
 * - anywhere else (another container, another host on a shared file system), where a process
 *   id says nothing: the file was not touched while this node watched it for LOCK_OBSERVE_MS
 *   (by its own clock: no comparison of the holder's clock with this one).
 * Otherwise it is refused with an error naming the holder and the file to remove if the
 * operator knows better. A takeover runs under `<dataDir>/lock.takeover` (a directory, made
 * exclusively) and moves the lock away before it removes it, checking that it moved the one it
 * judged stale (another's fresh lock is put back): of two nodes taking one stale lock over at
 * once, one gets it. A holder re-reads its lock at each touch; one that finds it gone or
 * another's (taken over while it was frozen, say) is told (`onLost`), and a node stops.
 *
 * Within one process (an in-process cluster) the locks held are also kept in memory: a node
 * stopped as a crash would be (`abandon`) leaves its file, as a real crash does, and a node
 * started again on the directory in the same process takes it over.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ProtocolError } from '../messages/errors';

export const DATA_DIR_LOCK_NAME = 'lock';
/** How often a holder touches its lock file. */
export const LOCK_REFRESH_MS = 5_000;
/** A lock not touched while watched this long has no holder (where its process cannot be looked up). */
export const LOCK_OBSERVE_MS = 12_000;
/** A lock file this new and not readable yet is being written by the node that created it. */
const LOCK_WRITE_MS = 5_000;
/** A takeover directory this old was left by a process that died during its takeover. */
const TAKEOVER_STALE_MS = 10_000;

/** Who holds a lock (the lock file's content). */
export interface LockHolder {
  pid: number;
  /** The process's start time in clock ticks since boot, when known. */
  startTicks?: number;
  /** The machine's boot id and the process's pid namespace, when known (Linux). */
  bootId?: string;
  pidNs?: string;
  hostname: string;
  nodeId: string;
  sinceMs: number;
  /** Random, per acquire: two locks taken by one process in one millisecond still differ. */
  token?: string;
}

/** Lock files held by this process, by path. */
const heldHere = new Set<string>();

export class DataDirLock {
  readonly file: string;
  private readonly me: LockHolder;
  private refresh: NodeJS.Timeout | undefined;

  private constructor(file: string, me: LockHolder, onLost: ((why: string) => void) | undefined) {
    this.file = file;
    this.me = me;
    heldHere.add(file);
    this.refresh = setInterval(() => {
      const now = readHolder(file);
      if (!sameHolder(now, me)) {
        this.abandon();
        onLost?.(now === undefined ? `${file} is gone` : `${file} now names node '${now.nodeId}' (process ${now.pid} on host '${now.hostname}')`);
        return;
      }
      const at = new Date();
      try {
        fs.utimesSync(file, at, at);
      } catch {
        // Unwritable now: the next touch reads it again.
      }
    }, LOCK_REFRESH_MS);
    this.refresh.unref();
  }

  /**
   * Takes the lock of `dataDir` (which must exist) for node `nodeId`. Throws ProtocolError
   * 'bad_request' when a running node holds it, or another takes it over at this moment.
   */
  static acquire(dataDir: string, nodeId: string, opts: { onLost?: (why: string) => void; observeMs?: number } = {}): DataDirLock {
    const file = path.join(dataDir, DATA_DIR_LOCK_NAME);
    const me: LockHolder = {
      pid: process.pid, ...processIdentity(process.pid), hostname: os.hostname(), nodeId, sinceMs: Date.now(), token: crypto.randomBytes(8).toString('hex'),
    };
    // A few times at most: again after removing a takeover left by a crash, and after taking
    // over a lock whose holder is gone.
    for (let attempt = 0; attempt < 3; attempt++) {
      if (tryCreate(file, me)) return new DataDirLock(file, me, opts.onLost);
      const holder = readHolder(file);
      if (holder === undefined && ageMs(file) < LOCK_WRITE_MS) {
        // Created a moment ago and not written yet: another node is taking it now.
        throw new ProtocolError('bad_request', `data dir ${dataDir}: another node is starting on it (${file} was just created)`, { file });
      }
      if (holder !== undefined && holderRuns(holder, file, opts.observeMs ?? LOCK_OBSERVE_MS)) {
        const where = holder.hostname === os.hostname() ? `process ${holder.pid}` : `process ${holder.pid} on host '${holder.hostname}'`;
        throw new ProtocolError(
          'bad_request',
          `data dir ${dataDir} is in use by node '${holder.nodeId}' (${where}, since ${new Date(holder.sinceMs).toISOString()}): ` +
            `stop it first; if no such node runs, remove ${file}`,
          { file, holder },
        );
      }
      takeOver(file, holder, dataDir);
    }
    throw new ProtocolError('bad_request', `data dir ${dataDir}: could not take ${file} (another node is starting on it)`, { file });
  }

  /** Gives the lock up (a clean stop, or a start that failed): the file is removed if it is still this one's. */
  release(): void {
    this.abandon();
    if (sameHolder(readHolder(this.file), this.me)) fs.rmSync(this.file, { force: true });
  }

  /** As a crash: the file stays (no longer touched), and this process no longer counts as its holder. */
  abandon(): void {
    clearInterval(this.refresh);
    this.refresh = undefined;
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

/**
 * Removes the lock judged stale (`seen`; undefined: not readable, and old), under the takeover
 * directory: only if it is still that one, so that a lock another node took meanwhile stays.
 */
function takeOver(file: string, seen: LockHolder | undefined, dataDir: string): void {
  const mutex = `${file}.takeover`;
  try {
    fs.mkdirSync(mutex);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    if (ageMs(mutex) < TAKEOVER_STALE_MS) {
      throw new ProtocolError('bad_request', `data dir ${dataDir}: another node is taking over ${file} now`, { file });
    }
    // Left by a process that died during its takeover: removed, and this takeover is tried
    // by the caller's next attempt.
    fs.rmSync(mutex, { recursive: true, force: true });
    return;
  }
  try {
    // Moved away first, then looked at: what is removed is exactly the lock judged stale.
    const moved = `${file}.stale-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    try {
      fs.renameSync(file, moved);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // another took it over
      throw e;
    }
    const got = readHolder(moved);
    if (seen === undefined ? got !== undefined : !sameHolder(got, seen)) {
      // Another node's fresh lock: put back (unless yet another is there now; then its holder
      // finds it gone at its next touch, and stops).
      try {
        fs.linkSync(moved, file);
      } catch {
        // See above.
      }
    }
    fs.rmSync(moved, { force: true });
  } finally {
    fs.rmSync(mutex, { recursive: true, force: true });
  }
}

/** The holder a lock file names, or undefined if it cannot be read as one. */
/**
 * The lock of `dataDir`, for a reader of the directory that takes no lock (`strata inspect`):
 * undefined when there is none; else its holder (undefined while the file is being written) and
 * whether that node still runs, as a node starting on the directory would judge it here
 * (undefined when it cannot be told without watching the lease: another machine or namespace).
 */
export function lockOf(dataDir: string): { holder?: LockHolder; runs?: boolean } | undefined {
  const file = path.join(dataDir, DATA_DIR_LOCK_NAME);
  const holder = readHolder(file);
  if (holder === undefined) return fs.existsSync(file) ? {} : undefined;
  const runs = localHolderRuns(holder, file);
  return { holder, ...(runs !== undefined ? { runs } : {}) };
}

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

function sameHolder(a: LockHolder | undefined, b: LockHolder): boolean {
  return a !== undefined && a.pid === b.pid && a.sinceMs === b.sinceMs && a.hostname === b.hostname && a.nodeId === b.nodeId && a.token === b.token;
}

/** Whether the node a lock names still runs (see the module comment). */
function holderRuns(holder: LockHolder, file: string, observeMs: number): boolean {
  return localHolderRuns(holder, file) ?? touchedWithin(file, observeMs);
}

/**
 * Whether the node a lock names still runs, where its process id can be looked up (this machine
 * and pid namespace); undefined elsewhere, where only the lock's lease tells (`touchedWithin`).
 */
function localHolderRuns(holder: LockHolder, file: string): boolean | undefined {
  // An older Strata wrote no boot id or namespace: on this host its process id is looked up.
  const local = sameMachineAndNamespace(holder) || (holder.bootId === undefined && holder.hostname === os.hostname());
  if (!local) return undefined;
  if (holder.pid === process.pid) return heldHere.has(file);
  const now = processIdentity(holder.pid);
  if (now.startTicks !== undefined && holder.startTicks !== undefined) return now.startTicks === holder.startTicks;
  try {
    process.kill(holder.pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True when the holder's process ids mean the same processes as this one's: same boot, same pid namespace. */
function sameMachineAndNamespace(holder: LockHolder): boolean {
  const mine = processIdentity(process.pid);
  return holder.bootId !== undefined && holder.pidNs !== undefined && holder.bootId === mine.bootId && holder.pidNs === mine.pidNs;
}

/**
 * Whether the file is touched (or replaced) within `ms`, watched by this process's own clock:
 * the holder's clock may differ from this one, or have jumped.
 */
function touchedWithin(file: string, ms: number): boolean {
  const before = statOf(file);
  const step = Math.min(500, ms);
  const waitOn = new Int32Array(new SharedArrayBuffer(4));
  for (let waited = 0; waited < ms; waited += step) {
    Atomics.wait(waitOn, 0, 0, step);
    const now = statOf(file);
    // Gone: nobody holds it (the takeover that follows finds that out).
    if (now === undefined || before === undefined) return false;
    if (now.mtimeMs !== before.mtimeMs || now.ino !== before.ino) return true;
  }
  return false;
}

function statOf(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch {
    return undefined;
  }
}

function ageMs(p: string): number {
  const st = statOf(p);
  return st === undefined ? Number.POSITIVE_INFINITY : Date.now() - st.mtimeMs;
}

/** The start time of process `pid`, the machine's boot id and this process's pid namespace, as far as known (Linux /proc). */
function processIdentity(pid: number): { startTicks?: number; bootId?: string; pidNs?: string } {
  const out: { startTicks?: number; bootId?: string; pidNs?: string } = {};
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces: the third
    // field (state) is the first of them, so the 22nd is at index 19.
    const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    if (Number.isSafeInteger(ticks)) out.startTicks = ticks;
  } catch {
    // No such process, or no /proc.
  }
  try {
    out.bootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    out.pidNs = fs.readlinkSync('/proc/self/ns/pid');
  } catch {
    // Not Linux: a lock is then judged by its lease alone.
  }
  return out;
}
