/**
 * A host thread that can not connect to NATS (the server went away while the node started its
 * hosts) fails its start as the node's own connect does: `unavailable`, naming the URL and the
 * host, not the library's bare code.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ActorHost } from '../../runtime/actor-host';
import { ProtocolError } from '../../messages/errors';

describe('a host that can not connect to NATS', function () {
  this.timeout(30_000);

  it('fails its start with unavailable, naming the URL, the host and its node, and the library\'s code', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-host-connect-'));
    const host = new ActorHost();
    try {
      await assert.rejects(
        host.init({ hostId: 2, hostCount: 3, nodeId: 'n9', cluster: 'hc', natsUrl: 'nats://127.0.0.1:1', deviceDir: path.join(dir, 'n9'), device: { crcOffloadBytesMin: 0, scrubBytesPerSecond: 0 } }),
        (e: unknown) => {
          assert.ok(e instanceof ProtocolError, String(e));
          assert.equal(e.code, 'unavailable');
          assert.equal(e.message, 'can not connect to NATS at nats://127.0.0.1:1 (host 2 of node \'n9\'): CONNECTION_REFUSED: connect ECONNREFUSED 127.0.0.1:1');
          assert.equal(e.details?.['natsCode'], 'CONNECTION_REFUSED');
          return true;
        },
      );
    } finally {
      await host.stop().catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
