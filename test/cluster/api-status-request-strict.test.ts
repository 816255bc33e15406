import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { encode, decode } from '../../messages/codec';
import type { ErrorReply } from '../../messages/errors';
import { HEADER_DEADLINE, HEADER_SCHEMA, HEADER_TYPE } from '../../messages/headers';
import { apiSubject } from '../../messages/subjects';

/**
 * The public API's `status` reads its body strictly, as every request is read (docs/protocol.md,
 * "Strictness"): `{}` is served; an unknown field, or a body that is not a map, is bad_request
 * (found by test/support/fuzz-subjects.ts: it was answered with the whole cluster status).
 */
describe('api.status reads its body strictly', function () {
  this.timeout(60_000);
  let c: InProcessCluster;
  before(async () => {
    c = await startCluster({ nodes: 1, hosts: 1 });
  });
  after(async () => {
    await c?.stop();
  });

  const ask = async (body: Uint8Array): Promise<Partial<ErrorReply> & { node?: unknown }> =>
    decode(await c.client.rawRequest(apiSubject(c.cluster, 'status'), body, {
      [HEADER_TYPE]: 'status',
      [HEADER_SCHEMA]: '1',
      [HEADER_DEADLINE]: String(Date.now() + 5000),
    })) as Partial<ErrorReply> & { node?: unknown };

  it('an empty map is served', async () => {
    const reply = await ask(encode({}));
    assert.equal(reply.error, undefined, JSON.stringify(reply.error));
    assert.equal(typeof reply.node, 'object');
  });

  for (const [what, body] of [
    ['an unknown field', { extra: null }],
    ['a field named constructor', { constructor: {} }],
    ['an array', [{}]],
    ['a boolean', false],
  ] as Array<[string, unknown]>) {
    it(`${what} → bad_request`, async () => {
      const reply = await ask(encode(body));
      assert.equal(reply.error?.code, 'bad_request', JSON.stringify(reply).slice(0, 200));
    });
  }
});
