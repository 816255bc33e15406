/**
 * DataDirLock: one node process per data directory; a crashed holder's lock is taken over.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DATA_DIR_LOCK_NAME, DataDirLock, type LockHolder } from '../../cluster/data-dir-lock';
import { ProtocolError } from '../../messages/errors';

describe('DataDirLock', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-lock-test-'));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const lockFile = (): string => path.join(dir, DATA_DIR_LOCK_NAME);
  const plant = (holder: Partial<LockHolder>): void => {
    fs.writeFileSync(lockFile(), JSON.stringify({ pid: 1, hostname: os.hostname(), nodeId: 'n0', sinceMs: Date.now() - 60_000, ...holder }));
    // Not a lock being written right now.
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(lockFile(), old, old);
  };
  const refused = (re: RegExp) => (e: unknown): boolean => {
    assert.ok(e instanceof ProtocolError, String(e));
    assert.equal(e.code, 'bad_request');
    assert.match(e.message, re);
    return true;
  };

  it('one holder at a time: a second is refused naming the first, and takes it once it is released', () => {
    const a = DataDirLock.acquire(dir, 'n1');
    const holder = JSON.parse(fs.readFileSync(lockFile(), 'utf8')) as LockHolder;
    assert.equal(holder.pid, process.pid);
    assert.equal(holder.nodeId, 'n1');
    assert.throws(() => DataDirLock.acquire(dir, 'n2'), refused(new RegExp(`in use by node 'n1' \\(process ${process.pid}, since .*remove ${lockFile()}`)));
    a.release();
    assert.equal(fs.existsSync(lockFile()), false, 'released: the file is gone');
    DataDirLock.acquire(dir, 'n2').release();
  });

  it('abandoned (a node stopped as a crash) the file stays, and the next holder takes it over', () => {
    DataDirLock.acquire(dir, 'n1').abandon();
    assert.equal(fs.existsSync(lockFile()), true);
    const b = DataDirLock.acquire(dir, 'n1');
    assert.equal((JSON.parse(fs.readFileSync(lockFile(), 'utf8')) as LockHolder).pid, process.pid);
    b.release();
  });

  it('a lock whose process no longer runs is taken over; one whose process id was reused by another process too', () => {
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    plant({ pid: dead });
    DataDirLock.acquire(dir, 'n1').release();
    // The parent of this process runs, but started at another time than the lock says.
    plant({ pid: process.ppid, startTicks: 1 });
    DataDirLock.acquire(dir, 'n1').release();
  });

  it('a lock of a running process, or taken on another host, is refused; a half-written one is taken over once old', () => {
    const st = fs.readFileSync(`/proc/${process.ppid}/stat`, 'utf8');
    const ticks = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[19]);
    plant({ pid: process.ppid, startTicks: ticks });
    assert.throws(() => DataDirLock.acquire(dir, 'n1'), refused(/in use by node 'n0' \(process \d+, since/));
    plant({ pid: process.ppid, hostname: 'elsewhere' });
    assert.throws(() => DataDirLock.acquire(dir, 'n1'), refused(/process \d+ on host 'elsewhere'/));
    // Created and not written yet: another node is taking it now.
    fs.writeFileSync(lockFile(), '');
    assert.throws(() => DataDirLock.acquire(dir, 'n1'), refused(/another node is starting on it/));
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(lockFile(), old, old);
    DataDirLock.acquire(dir, 'n1').release();
  });
});
