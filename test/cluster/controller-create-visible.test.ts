/**
 * A volume is in the catalog from the start of its volume.create (its nodes' reconciliations
 * open what they find missing), but it exists for clients only once the create is answered: a
 * create undone after a node failed to open its shards must not have let anyone write to it.
 */
import { strict as assert } from 'node:assert';
import type { Msg } from 'nats';
import { encode } from '../../messages/codec';
import { errorReply, ProtocolError } from '../../messages/errors';
import { waitFor } from '../support/wait';
import { GhostController } from '../support/ghost-controller';

describe('a volume whose create is still running', function () {
  this.timeout(60_000);
  let g: GhostController | undefined;

  after(async () => {
    await g?.stop();
  });

  it('is neither described nor listed, so that nobody writes to it before it is known to exist', async () => {
    // A second node that heartbeats and holds its shards.open until told to fail it.
    const opens: Msg[] = [];
    g = await GhostController.start('createvis', ['ghost'], {
      open: (_ghost, msg) => void opens.push(msg),
      destroy: (_ghost, msg) => msg.respond(encode({ ok: true })),
    });
    const node = g.node!;
    const creator = g.client(10_000);
    const other = g.client(3000);
    // Two shards of one replica: shard 0 on this node (opened at once), shard 1 on the ghost.
    const created = creator.createVolume({ name: 'early', pageCount: 64, shards: 2, stripePages: 1, replicas: 1 }).then(
      () => 'created',
      (e: ProtocolError) => e.code,
    );
    await waitFor('the ghost asked to open its shard', () => opens.length === 1);
    await waitFor('this node\'s shard open', async () => (await node.hostPool.stats()).some((h) => (h.device?.shards.length ?? 0) > 0));
    const seen = await other.volume('early').info().then(
      (v) => `described as ${v.id}`,
      (e: ProtocolError) => e.code,
    );
    const listed = (await other.listVolumes()).map((v) => v.name);
    const wrote = await other.volume('early').write(0, new Uint8Array(4096).fill(1)).then(
      () => 'acknowledged',
      (e: ProtocolError) => e.code,
    );
    // The ghost cannot open its shard: the create is undone.
    opens[0]!.respond(encode(errorReply(new ProtocolError('unavailable', 'ghost cannot open it'))));
    assert.equal(await created, 'unavailable');
    assert.equal(seen, 'not_found', 'a volume whose create was running (and was then undone) was described to a client');
    assert.deepEqual(listed, []);
    assert.equal(wrote, 'not_found', 'a write to a volume whose create was then undone was acknowledged');
  });
});
