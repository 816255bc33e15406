/**
 * Mocha hooks for tests of single nodes against a fake controller: a nats-server and a data
 * directory root for the describe block, a NATS connection of the test's own (`fake`: it plays
 * the controller) for each test, and the nodes a test started (pushed on `nodes`) stopped after it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import type { StrataNode } from '../../cluster/node';

export interface NodeRig {
  nats: NatsServerHandle;
  fake: NatsConnection;
  root: string;
  readonly nodes: StrataNode[];
}

/** Registers the hooks in the calling describe block; `prefix` names its temporary directory. */
export function nodeRig(prefix: string): NodeRig {
  const rig = { nodes: [] as StrataNode[] } as unknown as NodeRig;
  before(async () => {
    rig.nats = await startNatsServer({ jetstream: false });
    rig.root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  });
  beforeEach(async () => {
    rig.fake = await natsConnect({ servers: rig.nats.url });
  });
  afterEach(async () => {
    for (const n of rig.nodes.splice(0)) await n.stop();
    await rig.fake.close();
  });
  after(async () => {
    await rig.nats?.stop();
    if (rig.root !== undefined) fs.rmSync(rig.root, { recursive: true, force: true });
  });
  return rig;
}
