/**
 * DataDirLock: one node process per data directory; a crashed holder's lock is taken over.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DATA_DIR_LOCK_NAME, DataDirLock, type LockHolder } from '../../cluster/data-dir-lock';
import { ProtocolError } from '../../messages/errors';

/** This process's boot id and pid namespace, as a lock records them. */
const here = {
  bootId: fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
  pidNs: fs.readlinkSync('/proc/self/ns/pid'),
};

function startTicks(pid: number): number {
  const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[19]);
}

describe('DataDirLock', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-lock-test-'));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const lockFile = (): string => path.join(dir, DATA_DIR_LOCK_NAME);
  /** A lock file of another process; touched `ageMs` ago. */
  const plant = (holder: Partial<LockHolder>, ageMs = 60_000): void => {
    fs.writeFileSync(lockFile(), JSON.stringify({ pid: 1, hostname: os.hostname(), nodeId: 'n0', sinceMs: Date.now() - 60_000, ...here, ...holder }));
    const at = new Date(Date.now() - ageMs);
    fs.utimesSync(lockFile(), at, at);
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
    assert.equal(holder.bootId, here.bootId);
    assert.throws(() => DataDirLock.acquire(dir, 'n2'), refused(new RegExp(`in use by node 'n1' \\(process ${process.pid}, since .*remove ${lockFile()}`)));
    a.release();
    assert.equal(fs.existsSync(lockFile()), false, 'released: the file is gone');
    DataDirLock.acquire(dir, 'n2').release();
  });

  it('abandoned (a node stopped as a crash) the file stays, and the next holder takes it over; release after abandon still removes it', () => {
    const a = DataDirLock.acquire(dir, 'n1');
    a.abandon();
    assert.equal(fs.existsSync(lockFile()), true);
    const b = DataDirLock.acquire(dir, 'n1');
    assert.equal((JSON.parse(fs.readFileSync(lockFile(), 'utf8')) as LockHolder).pid, process.pid);
    a.release();
    assert.equal(fs.existsSync(lockFile()), true, 'a release does not remove the lock of the one that took over');
    b.abandon();
    b.release();
    assert.equal(fs.existsSync(lockFile()), false, 'a start that failed gives the directory up (kill abandons, then release)');
  });

  it('on this machine: a lock whose process no longer runs is taken over at once, as is one whose pid now names another process', () => {
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    plant({ pid: dead }, 0);
    DataDirLock.acquire(dir, 'n1').release();
    // The parent of this process runs, but started at another time than the lock says.
    plant({ pid: process.ppid, startTicks: 1 }, 0);
    DataDirLock.acquire(dir, 'n1').release();
    // The parent as it is: running.
    plant({ pid: process.ppid, startTicks: startTicks(process.ppid) }, 0);
    assert.throws(() => DataDirLock.acquire(dir, 'n1'), refused(/in use by node 'n0' \(process \d+, since/));
  });

  it('elsewhere (another boot or pid namespace: a container, a shared file system) a lock runs while it is touched, whatever its time says', () => {
    // Touched by its holder (another process) every 100 ms, with a time an hour old: running.
    plant({ pid: process.ppid, hostname: 'elsewhere', bootId: 'another-boot' }, 3_600_000);
    const toucher = spawn(process.execPath, ['-e', `setInterval(() => { const t = new Date(Date.now() - 3600000 + Math.random() * 1000); require('fs').utimesSync(${JSON.stringify(lockFile())}, t, t); }, 100)`], { stdio: 'ignore' });
    try {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
      assert.throws(() => DataDirLock.acquire(dir, 'n1', { observeMs: 1000 }), refused(/process \d+ on host 'elsewhere'/));
    } finally {
      toucher.kill('SIGKILL');
    }
    // Not touched while watched, even with a time in the future (a clock set back): its holder is gone.
    plant({ pid: process.ppid, hostname: 'elsewhere', pidNs: 'pid:[1]' }, -3_600_000);
    DataDirLock.acquire(dir, 'n1', { observeMs: 600 }).release();
    // Written before this machine booted again: its process id, running now, names another process.
    plant({ pid: process.ppid, bootId: 'before-a-reboot' }, 0);
    DataDirLock.acquire(dir, 'n1', { observeMs: 600 }).release();
  });

  it('elsewhere, a lock replaced while watched (a new file, however old its time) runs; one removed while watched is taken', () => {
    const later = (code: string) => spawn(process.execPath, ['-e', `setTimeout(() => { const fs = require('fs'); const f = ${JSON.stringify(lockFile())}; ${code} }, 300)`], { stdio: 'ignore' });
    // Replaced by a file of the same time: another node's, on a file system whose times are coarse.
    plant({ pid: process.ppid, hostname: 'elsewhere', bootId: 'another-boot' }, 3_600_000);
    const replacer = later(`const st = fs.statSync(f); fs.writeFileSync(f + '.new', fs.readFileSync(f)); fs.utimesSync(f + '.new', st.atime, st.mtime); fs.renameSync(f + '.new', f);`);
    try {
      assert.throws(() => DataDirLock.acquire(dir, 'n1', { observeMs: 10_000 }), refused(/in use by node 'n0' \(process \d+ on host 'elsewhere'/));
    } finally {
      replacer.kill('SIGKILL');
    }
    plant({ pid: process.ppid, hostname: 'elsewhere', bootId: 'another-boot' }, 3_600_000);
    const remover = later('fs.rmSync(f);');
    try {
      const a = DataDirLock.acquire(dir, 'n1', { observeMs: 10_000 });
      assert.equal((JSON.parse(fs.readFileSync(lockFile(), 'utf8')) as LockHolder).nodeId, 'n1');
      a.release();
    } finally {
      remover.kill('SIGKILL');
    }
  });

  it('a stale lock that another node is taking over right now is refused; a takeover left by a crash is cleared and the lock taken', () => {
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    plant({ pid: dead }, 0);
    const takeover = `${lockFile()}.takeover`;
    fs.mkdirSync(takeover);
    assert.throws(() => DataDirLock.acquire(dir, 'n1'), refused(/another node is taking over .* now/));
    assert.equal(fs.existsSync(takeover), true, 'the other node\'s takeover is left to it');
    assert.equal((JSON.parse(fs.readFileSync(lockFile(), 'utf8')) as LockHolder).pid, dead, 'the stale lock is left to it too');
    // The takeover of a node that died during it (older than 10 s): removed, and the lock taken.
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(takeover, old, old);
    const a = DataDirLock.acquire(dir, 'n1');
    assert.equal((JSON.parse(fs.readFileSync(lockFile(), 'utf8')) as LockHolder).nodeId, 'n1');
    assert.deepEqual(fs.readdirSync(dir), [DATA_DIR_LOCK_NAME], 'nothing else is left');
    a.release();
  });

  it('a stale lock that is back after each takeover (other nodes starting on it at once) is given up after a few, refused', () => {
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    plant({ pid: dead }, 0);
    const nodeFs = require('node:fs') as { renameSync: typeof fs.renameSync };
    const rename = nodeFs.renameSync;
    let takeovers = 0;
    nodeFs.renameSync = (from, to) => {
      rename(from, to);
      if (from === lockFile()) {
        takeovers++;
        plant({ pid: dead, nodeId: `n${takeovers}` }, 0);
      }
    };
    try {
      assert.throws(() => DataDirLock.acquire(dir, 'n1'), refused(/could not take .*lock \(another node is starting on it\)$/));
    } finally {
      nodeFs.renameSync = rename;
    }
    assert.ok(takeovers > 1, `${takeovers} takeover(s)`);
    assert.deepEqual(fs.readdirSync(dir), [DATA_DIR_LOCK_NAME], 'nothing else is left');
  });

  it('a lock of an older Strata (no boot id) on this host is judged by its process, not by its age', () => {
    fs.writeFileSync(lockFile(), JSON.stringify({ pid: process.ppid, startTicks: startTicks(process.ppid), hostname: os.hostname(), nodeId: 'old', sinceMs: Date.now() - 600_000 }));
    const old = new Date(Date.now() - 600_000);
    fs.utimesSync(lockFile(), old, old);
    assert.throws(() => DataDirLock.acquire(dir, 'n1', { observeMs: 300 }), refused(/in use by node 'old'/));
  });

  it('a holder whose lock was taken from it (it was frozen, say) is told at its next touch', async function () {
    this.timeout(15_000);
    const lost: string[] = [];
    const a = DataDirLock.acquire(dir, 'n1', { onLost: (why) => lost.push(why) });
    fs.writeFileSync(lockFile(), JSON.stringify({ pid: 1, hostname: 'elsewhere', nodeId: 'n9', sinceMs: Date.now() }));
    await new Promise((r) => setTimeout(r, 5_300));
    assert.equal(lost.length, 1);
    assert.match(lost[0]!, /now names node 'n9'/);
    a.release();
    assert.equal(fs.existsSync(lockFile()), true, 'a release does not remove the lock another holds');
  });

  it('a holder touches its lock (its lease); a half-written lock is refused while new, taken over once old', () => {
    const a = DataDirLock.acquire(dir, 'n1');
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(lockFile(), old, old);
    return new Promise<void>((resolve) => setTimeout(resolve, 5_200)).then(() => {
      assert.ok(Date.now() - fs.statSync(lockFile()).mtimeMs < 1000, 'touched within LOCK_REFRESH_MS');
      a.release();
      fs.writeFileSync(lockFile(), '');
      assert.throws(() => DataDirLock.acquire(dir, 'n1'), refused(/another node is starting on it/));
      // JSON, but not a holder's (a process id that is no number): as one not written yet.
      fs.writeFileSync(lockFile(), JSON.stringify({ pid: '7', hostname: os.hostname(), nodeId: 'n0', sinceMs: Date.now() }));
      assert.throws(() => DataDirLock.acquire(dir, 'n1', { observeMs: 300 }), refused(/another node is starting on it/));
      fs.utimesSync(lockFile(), old, old);
      DataDirLock.acquire(dir, 'n1').release();
    });
  }).timeout(15_000);

  for (const [variant, stale] of [
    ['B holds the takeover directory', 'its holder gone'],
    ['the takeover directory was removed as stale meanwhile', 'its holder gone'],
    ['the takeover directory was removed as stale meanwhile', 'never written'],
  ] as const) {
    it(`of two nodes taking one stale lock over at once, one gets it (${variant}${stale === 'never written' ? '; the lock never written' : ''})`, () => {
      if (stale === 'never written') {
        // Created by a node that died before it wrote it.
        fs.writeFileSync(lockFile(), '');
        const old = new Date(Date.now() - 60_000);
        fs.utimesSync(lockFile(), old, old);
      } else {
        plant({ pid: spawnSync(process.execPath, ['-e', '']).pid! }, 0);
      }
      // Node A takes it over while node B is about to move the stale lock away: B's rename
      // runs A's whole takeover first (as an interleaving of two processes would).
      const nodeFs = require('node:fs') as { renameSync: typeof fs.renameSync };
      const rename = nodeFs.renameSync;
      let a: DataDirLock | Error | undefined;
      let armed = true;
      nodeFs.renameSync = (from, to) => {
        if (armed && from === lockFile()) {
          armed = false;
          if (variant !== 'B holds the takeover directory') fs.rmSync(`${lockFile()}.takeover`, { recursive: true, force: true });
          try {
            a = DataDirLock.acquire(dir, 'nA');
          } catch (e) {
            a = e as Error;
          }
        }
        return rename(from, to);
      };
      let b: DataDirLock | Error;
      try {
        b = DataDirLock.acquire(dir, 'nB');
      } catch (e) {
        b = e as Error;
      } finally {
        nodeFs.renameSync = rename;
      }
      const got = [a, b].filter((x): x is DataDirLock => x instanceof DataDirLock);
      assert.equal(got.length, 1, `exactly one holds it: A ${String(a)}, B ${String(b)}`);
      const holder = JSON.parse(fs.readFileSync(lockFile(), 'utf8')) as LockHolder;
      assert.equal(holder.nodeId, got[0] === a ? 'nA' : 'nB', 'the lock file names the one that holds it');
      assert.deepEqual(fs.readdirSync(dir).filter((n) => n !== DATA_DIR_LOCK_NAME), [], 'nothing else is left');
      got[0]!.release();
    });
  }

});
