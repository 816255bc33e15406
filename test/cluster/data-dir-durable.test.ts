import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StrataNode } from '../../cluster/node';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
// The module object itself (not a namespace copy), whose functions the node's code calls.
import fsModule = require('node:fs');

describe('a new data directory is durable in its parent', function () {
  this.timeout(60_000);
  let nats: NatsServerHandle;
  let base: string;
  before(async () => {
    nats = await startNatsServer({ jetstream: false });
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-durable-'));
  });
  after(async () => {
    await nats?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('a node\'s start makes the data directory and its device directories durable (fsync of each parent) before its hosts write in them', async () => {
    const dataDir = path.join(base, 'new', 'data');
    // The directories the main thread makes and fsyncs, in order (the hosts' own, on their
    // threads, are not seen here).
    const opened = new Map<number, string>();
    const events: string[] = [];
    const real = { openSync: fsModule.openSync, fsyncSync: fsModule.fsyncSync, mkdirSync: fsModule.mkdirSync };
    const spies = {
      openSync: ((p: fs.PathLike, ...rest: unknown[]) => {
        const fd = (real.openSync as (...a: unknown[]) => number)(p, ...rest);
        opened.set(fd, String(p));
        return fd;
      }) as typeof fs.openSync,
      fsyncSync: ((fd: number) => {
        const p = opened.get(fd);
        if (p !== undefined && fs.statSync(p).isDirectory()) events.push(`fsync ${p}`);
        return real.fsyncSync(fd);
      }) as typeof fs.fsyncSync,
      mkdirSync: ((p: fs.PathLike, ...rest: unknown[]) => {
        events.push(`mkdir ${String(p)}`);
        return (real.mkdirSync as (...a: unknown[]) => unknown)(p, ...rest);
      }) as typeof fs.mkdirSync,
    };
    let node: StrataNode | undefined;
    Object.assign(fsModule, spies);
    try {
      node = await StrataNode.start({ nodeId: 'd1', cluster: 'durable', natsUrl: nats.url, dataDir, hosts: 2, controller: true });
    } finally {
      Object.assign(fsModule, real);
      await node?.stop();
    }
    const at = (e: string): number => events.indexOf(e);
    const lastAt = (e: string): number => events.lastIndexOf(e);
    const seen = JSON.stringify(events);
    for (const dev of ['dev0', 'dev1']) assert.ok(at(`mkdir ${path.join(dataDir, dev)}`) >= 0, `${dev} made by the node before its hosts start: ${seen}`);
    assert.ok(lastAt(`fsync ${dataDir}`) > at(`mkdir ${path.join(dataDir, 'dev1')}`), `the data directory fsynced after its device directories were made: ${seen}`);
    assert.ok(lastAt(`fsync ${path.dirname(dataDir)}`) > at(`mkdir ${dataDir}`), `the data directory's parent fsynced: ${seen}`);
  });
});
