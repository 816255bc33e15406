import * as assert from 'node:assert/strict';
import { API_VERBS } from '../../messages/api';
import type { ApiVerb } from '../../messages/api';
import {
  actorSubject,
  apiSubject,
  apiWildcard,
  parseShardSubject,
  parseSubject,
  shardSubject,
} from '../../messages/subjects';
import { assertProtocolError } from '../support/expect';

const assertBadRequest = (fn: () => unknown, path: string): void => void assertProtocolError(fn, 'bad_request', path);

const BAD_TOKENS = ['', 'a.b', '*', 'a*', '>', 'a b', 'a\tb', 'é', 'x'.repeat(65)];

describe('messages/subjects', () => {
  it('builds and parses API subjects for every verb', () => {
    for (const verb of API_VERBS) {
      const subject = apiSubject('dev', verb);
      assert.equal(subject, `strata.dev.api.${verb}`);
      assert.deepEqual(parseSubject(subject), { scope: 'api', cluster: 'dev', verb });
    }
    assert.equal(apiWildcard('dev'), 'strata.dev.api.>');
  });

  it('builds and parses shard subjects, in both call forms', () => {
    const subject = shardSubject('dev', { volumeId: 'v_01', shard: 3 });
    assert.equal(subject, 'strata.dev.shard.v_01.3');
    assert.equal(shardSubject('dev', 'v_01', 3), subject);
    assert.deepEqual(parseShardSubject(subject), { cluster: 'dev', volumeId: 'v_01', shard: 3 });
    assert.deepEqual(parseSubject(subject), { scope: 'actor', cluster: 'dev', kind: 'shard', ids: ['v_01', '3'] });
  });

  it('builds actor subjects', () => {
    assert.equal(actorSubject('dev', { kind: 'node', ids: ['n1', 'status'] }), 'strata.dev.node.n1.status');
    assertBadRequest(() => actorSubject('dev', { kind: 'node', ids: [] }), 'ids');
    assertBadRequest(() => actorSubject('dev', { kind: 'node', ids: ['a', 'b', 'c', 'd', 'e'] }), 'ids');
    assertBadRequest(() => actorSubject('dev', { kind: 'api', ids: ['x'] }), 'kind');
    assertBadRequest(() => actorSubject('dev', { kind: 'Node', ids: ['x'] }), 'kind');
    assertBadRequest(() => actorSubject('dev', { kind: 'no.de', ids: ['x'] }), 'kind');
  });

  it('refuses bad cluster names and ids', () => {
    for (const bad of BAD_TOKENS) {
      assertBadRequest(() => apiSubject(bad, 'status'), 'cluster');
      assertBadRequest(() => apiWildcard(bad), 'cluster');
      assertBadRequest(() => shardSubject(bad, { volumeId: 'v', shard: 0 }), 'cluster');
      assertBadRequest(() => shardSubject('dev', { volumeId: bad, shard: 0 }), 'volumeId');
      assertBadRequest(() => actorSubject('dev', { kind: 'node', ids: ['ok', bad] }), 'ids[1]');
    }
    for (const shard of [-1, 1.5, 256, NaN]) assertBadRequest(() => shardSubject('dev', { volumeId: 'v', shard }), 'shard');
    assertBadRequest(() => apiSubject('dev', 'page.trim' as ApiVerb), 'verb');
  });

  it('refuses bad subjects', () => {
    assertBadRequest(() => parseSubject('nats.dev.api.status'), 'subject');
    assertBadRequest(() => parseSubject('strata.dev.api'), 'subject');
    assertBadRequest(() => parseSubject('strata.dev.api.page.trim'), 'verb');
    assertBadRequest(() => parseSubject('strata.*.api.status'), 'cluster');
    assertBadRequest(() => parseSubject('strata..api.status'), 'cluster');
    assertBadRequest(() => parseSubject('strata.dev.shard.v.>'), 'ids[1]');
    assertBadRequest(() => parseSubject('strata.dev.shard.a.b.c.d.e'), 'ids');
    assertBadRequest(() => parseShardSubject('strata.dev.node.n1.status'), 'subject');
    assertBadRequest(() => parseShardSubject('strata.dev.shard.v'), 'subject');
    assertBadRequest(() => parseShardSubject('strata.dev.api.status'), 'subject');
    for (const shard of ['01', '-1', '256', '1e2', 'x', '9999']) assertBadRequest(() => parseShardSubject(`strata.dev.shard.v.${shard}`), 'shard');
  });
});
