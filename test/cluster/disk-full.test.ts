/**
 * A device on a filesystem that really fills up: a tmpfs of 128 MiB (mounting one needs root;
 * without it the tests are skipped and say so). Writes come faster than the device reads its
 * free space (a statfs at most once a second), and must still stop at the reserve, refused
 * `no_space`, with no write failing on a full disk and every acknowledged write read back. Then
 * pages made zeros must give the space back although no page write is taken, so that the
 * checkpoint due every so many records never comes: the device short of space checkpoints to
 * let the log go (docs/replication.md, "A device short of space"). And a branch whose copy could
 * take the device under its reserve is not copied (docs/branches.md).
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { ProtocolError } from '../../messages/errors';
import { waitFor } from '../support/wait';

const MIB = 1024 * 1024;
const PAGES = 65536;
const page = (n: number): Uint8Array => new Uint8Array(4096).fill(n);

describe('a device on a filesystem that fills up (a tmpfs of 128 MiB)', function () {
  this.timeout(240_000);
  let mnt: string | undefined;
  let mounted = false;
  let c: InProcessCluster | undefined;
  /** Pages acknowledged, and what each holds. */
  const written = new Map<number, number>();

  const statfsFree = (): number => {
    const st = fs.statfsSync(mnt!);
    return st.bavail * st.bsize;
  };
  let volumeId = '';
  /** The volume's replica (its only one). */
  const replica = async () => (await c!.nodes[0]!.hostPool.stats()).flatMap((h) => h.device?.shards ?? []).find((r) => r.volumeId === volumeId && r.state === 'up')!;

  before(async function () {
    mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-full-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=128m', 'tmpfs', mnt], { stdio: 'pipe' });
      mounted = true;
    } catch (e) {
      console.log(`      skipped: mounting a tmpfs needs root (${String((e as Error).message).split('\n')[0]})`);
      fs.rmSync(mnt, { recursive: true, force: true });
      mnt = undefined;
      this.skip();
    }
    c = await startCluster({ nodes: 1, hosts: 1, dataDir: path.join(mnt, 'd'), clientTimeoutMs: 20_000 });
    volumeId = (await c.client.createVolume({ name: 'full', pageCount: PAGES, shards: 1, replicas: 1 })).id;
  });
  after(async () => {
    await c?.stop();
    if (mounted) {
      for (let i = 0; ; i++) {
        try {
          execFileSync('umount', [mnt!], { stdio: 'pipe' });
          break;
        } catch (e) {
          if (i >= 20) throw e;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    }
    if (mnt !== undefined) fs.rmSync(mnt, { recursive: true, force: true });
  });

  it('writes as fast as they come stop at the reserve, refused no_space: nothing fails on a full disk, and every acknowledged write reads back', async () => {
    const vol = c!.client.volume('full');
    const others = new Map<string, number>();
    let refused = false;
    const worker = async (w: number): Promise<void> => {
      for (let i = w; !refused && i < PAGES; i += 8) {
        const p = (i * 7919) % PAGES;
        const fill = (p % 251) + 1;
        try {
          await vol.write(p, page(fill));
          written.set(p, fill);
        } catch (e) {
          const code = e instanceof ProtocolError ? e.code : String(e);
          if (code === 'no_space') refused = true;
          else others.set(code, (others.get(code) ?? 0) + 1);
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
    assert.ok(refused, `the device refused page writes (${written.size} written)`);
    assert.deepEqual([...others], [], 'no write failed otherwise');
    // More than a log segment (64 MiB): the first one is sealed, and can be let go later.
    assert.ok(written.size > 17_000, `${written.size} pages written`);
    assert.ok(statfsFree() > 0, 'the filesystem never filled');
    const hosts = await c!.nodes[0]!.hostPool.stats();
    assert.equal(hosts[0]!.device?.failures, 0, 'the device never failed');
    assert.equal((await replica()).role, 'leader');
    // Every acknowledged write reads back, 64 pages a request.
    const pages = [...written.keys()];
    for (let i = 0; i < pages.length; i += 64) {
      const batch = pages.slice(i, i + 64);
      const got = await vol.read(batch);
      batch.forEach((p, k) => assert.equal(got[k]![0], written.get(p), `page ${p}`));
    }
  });

  it('pages made zeros give the space back: the device short of space checkpoints, lets the log go, and takes writes again', async function () {
    if (written.size === 0) this.skip();
    const vol = c!.client.volume('full');
    // Something else takes more of the disk, so that its free space is under the reserve for
    // real, not only as the device estimates it.
    const { reserveBytes } = (await c!.nodes[0]!.hostPool.stats())[0]!.device!.queue.space!;
    const filler = path.join(mnt!, 'filler');
    const fillerBytes = Math.max(0, statfsFree() - Math.floor(reserveBytes * 0.6));
    fs.writeFileSync(filler, Buffer.alloc(fillerBytes, 1));
    try {
      const before = await replica();
      assert.ok(statfsFree() < reserveBytes, `${statfsFree()} bytes free, reserve ${reserveBytes}`);
      // Refused once the device reads its free space again (at most a second later).
      await new Promise((r) => setTimeout(r, 1100));
      await assert.rejects(vol.write(1, page(7)), (e: ProtocolError) => e.code === 'no_space');
      await vol.zeroPages(0, PAGES);
      await waitFor('a page write taken again', async () => {
        try {
          await vol.write(1, page(7));
          return true;
        } catch (e) {
          if (e instanceof ProtocolError && e.code === 'no_space') return false;
          throw e;
        }
      }, 60_000);
      const after = await replica();
      assert.ok(after.spaceCheckpoints > before.spaceCheckpoints, 'a checkpoint for space');
      // Its active segment too, sealed by the checkpoint: a page or so is left.
      assert.ok(after.storage!.logBytes < MIB, `the log let go: ${after.storage!.logBytes} bytes left`);
      assert.ok(statfsFree() > reserveBytes, `${statfsFree()} bytes free`);
      assert.deepEqual(await vol.read(1), page(7));
      const some = [...written.keys()].filter((p) => p !== 1).slice(0, 64);
      for (const d of await vol.read(some)) assert.deepEqual(d, new Uint8Array(4096), 'a page made zeros');
      assert.equal((await c!.nodes[0]!.hostPool.stats())[0]!.device?.failures, 0, 'the device never failed');
    } finally {
      fs.rmSync(filler, { force: true });
    }
  });

  it('a branch whose copy could take the device under its reserve is not copied: the device keeps its space and takes writes, the branch is refused no_space and deleted', async function () {
    if (written.size === 0) this.skip();
    await c!.client.createVolume({ name: 'parent', pageCount: 16384, shards: 1, replicas: 1 });
    const parent = c!.client.volume('parent');
    // 40 MiB of pages: a copy of them fits once on this disk beside them, not twice.
    for (let i = 0; i < 10240; i += 64) await parent.writePages(Array.from({ length: 64 }, (_, k) => ({ page: i + k, data: page(((i + k) % 250) + 1) })));
    await c!.client.branchVolume('first', 'parent');
    assert.deepEqual(await c!.client.volume('first').read(77), page(78), 'the first branch was copied');
    const before = statfsFree();
    const refused = await c!.client.branchVolume('second', 'parent').then(() => undefined, (e: unknown) => e);
    // Refused for want of space, by the controller once its node answered the open, saying why.
    assert.ok(refused instanceof ProtocolError && refused.code === 'no_space', `the second branch is refused no_space: ${String(refused)}`);
    assert.match(refused.message, /branch 'second' of 'parent' was not made: no device of its replicas of shard 0 has room for a copy of the parent's pages over its reserve of free space \(node n1: the copy could take \d+ bytes, and the device has \d+ free, with a reserve of \d+\)/);
    const device = (await c!.nodes[0]!.hostPool.stats())[0]!.device!;
    assert.equal(device.queue.space?.state, 'ok', `the device kept its reserve: ${JSON.stringify(device.queue.space)}`);
    assert.equal(device.failures, 0);
    assert.ok(statfsFree() > before - 8 * MIB, `${before} bytes free before the second branch, ${statfsFree()} after`);
    assert.ok(!(await c!.client.listVolumes()).some((v) => v.name === 'second'), 'the refused branch is deleted');
    await parent.write(12_000, page(5));
    assert.deepEqual(await parent.read(12_000), page(5));
  });
});
