/**
 * A node's clean stop answers the requests it has in hand before its connection closes: a
 * catalog request its API router forwarded to a slow controller is answered, not dropped. A fake
 * controller (this test's NATS connection) drives one real node.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { StrataNode } from '../../cluster/node';
import { connect as connectClient } from '../../cluster/client';
import { encode } from '../../messages/codec';
import { apiRequestOnce } from '../support/api';
import { controllerSubject } from '../../messages/control';
import { waitFor } from '../support/wait';

const CLUSTER = 'stopans';

describe("a node's clean stop", function () {
  this.timeout(60_000);
  let nats: NatsServerHandle;
  let fake: NatsConnection;
  let root: string;

  before(async () => {
    nats = await startNatsServer({ jetstream: false });
    fake = await natsConnect({ servers: nats.url });
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-stop-answers-'));
    fake.subscribe(controllerSubject(CLUSTER, 'heartbeat'), { callback: (_e, msg) => msg.respond(encode({ epoch: 1 })) });
    fake.subscribe(controllerSubject(CLUSTER, 'assignments'), { callback: (_e, msg) => msg.respond(encode({ epoch: 1, shards: [], tombstones: [] })) });
  });
  after(async () => {
    await fake?.close();
    await nats?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('answers a catalog request its API router forwarded before the stop, once the controller answers it, before its connection closes', async () => {
    // The controller answers a listing 1.5 s after it came (its queue of catalog operations, say).
    let asked = 0;
    fake.subscribe(controllerSubject(CLUSTER, 'volume.list'), {
      callback: (_e, msg) => {
        asked++;
        setTimeout(() => msg.respond(encode({ volumes: [{ name: 'slow', id: 'v1', pageCount: 64, pageSize: 4096, shards: 1, stripePages: 1, replicas: 1, createdAt: 0 }] })), 1500);
      },
    });
    const node = await StrataNode.start({ nodeId: 's1', cluster: CLUSTER, natsUrl: nats.url, dataDir: path.join(root, 's1'), hosts: 1, controller: false, heartbeatMs: 50 });
    const client = await connectClient({ servers: nats.url, cluster: CLUSTER, timeoutMs: 8000 });
    try {
      // One request, sent once (the client's own tries would go around a node that stops).
      const listed = apiRequestOnce(client, CLUSTER, 'volume.list', {}, Date.now() + 8000, 8000);
      await waitFor('the listing forwarded to the controller', () => asked === 1);
      await node.stop();
      assert.deepEqual(((await listed) as { volumes: Array<{ name: string }> }).volumes.map((v) => v.name), ['slow']);
    } finally {
      await client.close();
      await node.stop();
    }
  });
});
