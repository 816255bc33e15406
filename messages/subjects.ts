/**
 * NATS subjects of Strata: builders and parsers.
 *
 * - `strata.<cluster>.api.<verb>`: the public API (verbs may contain dots: `api.page.write`);
 * - `strata.<cluster>.<kind>.<id>[.<id>…]`: actor mailboxes, e.g. `strata.dev.shard.<volumeId>.<shard>`.
 *
 * Cluster names, kinds and ids are single subject tokens: 1..ID_LENGTH_MAX characters of
 * `[A-Za-z0-9_-]` (kinds: lowercase, starting with a letter), so never a dot, a wildcard
 * (`*`, `>`) or white space. Anything else gives ProtocolError('bad_request') with `{ path }`.
 */
import { randomBytes } from 'node:crypto';
import { ID_LENGTH_MAX, SHARDS_MAX, isApiVerb } from './api';
import type { ApiVerb } from './api';
import { ProtocolError } from './errors';

/** First token of every Strata subject. */
export const SUBJECT_ROOT = 'strata';
/** Token after the cluster name for the public API. */
export const API_TOKEN = 'api';
/** Actor kind of shard mailboxes. */
export const SHARD_KIND = 'shard';
/** Most id tokens after the kind of an actor subject. */
export const ACTOR_ID_TOKENS_MAX = 4;

const TOKEN_PATTERN = /^[A-Za-z0-9_-]+$/;
const KIND_PATTERN = /^[a-z][a-z0-9_-]*$/;
const SHARD_PATTERN = /^(0|[1-9][0-9]*)$/;

function subjectError(path: string, message: string): never {
  throw new ProtocolError('bad_request', `${path}: ${message}`, { path });
}

function quote(value: string): string {
  return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
}

/** Checks one subject token (cluster name or id); returns it. `path` names it in the error. */
export function checkToken(value: string, path: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > ID_LENGTH_MAX || !TOKEN_PATTERN.test(value)) {
    subjectError(
      path,
      `expected 1..${ID_LENGTH_MAX} characters of [A-Za-z0-9_-] (no dots, wildcards or spaces), got ${
        typeof value === 'string' ? quote(value) : typeof value
      }`,
    );
  }
  return value;
}

function checkKind(kind: string): string {
  if (typeof kind !== 'string' || kind.length > ID_LENGTH_MAX || !KIND_PATTERN.test(kind)) {
    subjectError('kind', `expected a lowercase token starting with a letter, got ${typeof kind === 'string' ? quote(kind) : typeof kind}`);
  }
  if (kind === API_TOKEN) subjectError('kind', `"${API_TOKEN}" is reserved for the public API`);
  return kind;
}

function checkShard(shard: number): number {
  if (!Number.isInteger(shard) || shard < 0 || shard >= SHARDS_MAX) {
    subjectError('shard', `expected an integer in 0..${SHARDS_MAX - 1}, got ${String(shard)}`);
  }
  return shard;
}

/** `strata.<cluster>.api.<verb>`. */
export function apiSubject(cluster: string, verb: ApiVerb): string {
  if (!isApiVerb(verb)) subjectError('verb', `unknown API verb ${quote(String(verb))}`);
  return `${SUBJECT_ROOT}.${checkToken(cluster, 'cluster')}.${API_TOKEN}.${verb}`;
}

/**
 * `strata.<cluster>.api.<verb>.every`: the same requests as `apiSubject`, taken by every node's
 * API router, not by one of them (a queue group). A frozen node (a paused VM, a stopped process)
 * keeps its subscriptions, its share of the API's queue group among them, and answers nothing:
 * a request sent again after a try without an answer goes here, and the other nodes answer it.
 * For requests that may be answered twice: reads, and changes with a request id.
 */
export function apiEverySubject(cluster: string, verb: ApiVerb): string {
  return `${apiSubject(cluster, verb)}.${API_EVERY_TOKEN}`;
}

/** The last token of `apiEverySubject`. */
export const API_EVERY_TOKEN = 'every';

/** `strata.<cluster>.api.>`: what the `strata` service of a node subscribes to. */
export function apiWildcard(cluster: string): string {
  return `${SUBJECT_ROOT}.${checkToken(cluster, 'cluster')}.${API_TOKEN}.>`;
}

/**
 * `strata.<cluster>.inbox.<random>`: the inbox prefix of a node's connection (nats.js
 * `inboxPrefix`), where the answers to its requests come back: under the cluster's subjects,
 * which only the node user may subscribe to (cluster/nats-auth.ts), and not `_INBOX.>`, which
 * every client user may read. A client user that saw a node's inbox could answer the node's
 * requests by way of any request a node answers, with that inbox as its reply subject (a claim
 * taken for another node's stops a node). The random token (a new one per connection, not
 * derived from the NATS client's nuid, which a node's service id shows) keeps it unguessable.
 */
export function nodeInboxPrefix(cluster: string): string {
  return `${SUBJECT_ROOT}.${checkToken(cluster, 'cluster')}.inbox.${randomBytes(16).toString('hex')}`;
}

/**
 * `_INBOX.<user>`: the inbox prefix of a client that connects as NATS user `user` (characters
 * outside [A-Za-z0-9_-] as `_`). A client user may subscribe under its own prefix only
 * (cluster/nats-auth.ts), so that it cannot read the replies another user's requests get: the
 * pages they read. Nodes answer any `_INBOX.>` subject.
 */
export function clientInboxPrefix(user: string): string {
  const token = user.replace(/[^A-Za-z0-9_-]/g, '_');
  if (token.length === 0 || token.length > ID_LENGTH_MAX) subjectError('user', `expected 1..${ID_LENGTH_MAX} characters, got ${token.length}`);
  return `_INBOX.${token}`;
}

/** An actor's address: its kind and its id tokens. */
export interface ActorAddress {
  kind: string;
  ids: readonly string[];
}

/** `strata.<cluster>.<kind>.<id>[.<id>…]` (1..ACTOR_ID_TOKENS_MAX ids). */
export function actorSubject(cluster: string, actor: ActorAddress): string {
  const tokens = [SUBJECT_ROOT, checkToken(cluster, 'cluster'), checkKind(actor.kind)];
  if (actor.ids.length === 0 || actor.ids.length > ACTOR_ID_TOKENS_MAX) {
    subjectError('ids', `expected 1..${ACTOR_ID_TOKENS_MAX} ids, got ${actor.ids.length}`);
  }
  actor.ids.forEach((id, i) => tokens.push(checkToken(id, `ids[${i}]`)));
  return tokens.join('.');
}

/** A shard's address. */
export interface ShardAddress {
  volumeId: string;
  shard: number;
}

/** `strata.<cluster>.shard.<volumeId>.<shard>`. Also callable as `(cluster, volumeId, shard)`. */
export function shardSubject(cluster: string, address: ShardAddress): string;
export function shardSubject(cluster: string, volumeId: string, shard: number): string;
export function shardSubject(cluster: string, address: ShardAddress | string, shard?: number): string {
  const { volumeId, shard: shardNo } =
    typeof address === 'string' ? { volumeId: address, shard: shard ?? NaN } : address;
  return `${SUBJECT_ROOT}.${checkToken(cluster, 'cluster')}.${SHARD_KIND}.${checkToken(volumeId, 'volumeId')}.${checkShard(shardNo)}`;
}

/**
 * `strata.<cluster>.shard.<volumeId>.<shard>.leaders`: the same requests as `shardSubject`, given
 * to every replica that leads the shard as far as it knows, not to one of them. A frozen leader
 * (a paused VM, a stopped process) keeps its subscriptions while the shard elects the next one:
 * the shard subject's queue group gives it a share of the requests, which it never answers. A
 * request sent again after a try without an answer goes here, and the next leader answers it.
 * For requests that may be served twice: reads, and the tries of a block write after the first.
 */
export function shardLeadersSubject(cluster: string, volumeId: string, shard: number): string {
  return `${shardSubject(cluster, volumeId, shard)}.${SHARD_LEADERS_TOKEN}`;
}

/** The last token of `shardLeadersSubject`. */
export const SHARD_LEADERS_TOKEN = 'leaders';

/** A parsed Strata subject. */
export type ParsedSubject =
  | { scope: 'api'; cluster: string; verb: ApiVerb }
  | { scope: 'actor'; cluster: string; kind: string; ids: string[] };

/** Parses a Strata subject; anything malformed gives bad_request. */
export function parseSubject(subject: string): ParsedSubject {
  if (typeof subject !== 'string') subjectError('subject', 'expected a string');
  const tokens = subject.split('.');
  if (tokens[0] !== SUBJECT_ROOT || tokens.length < 4) {
    subjectError('subject', `expected ${SUBJECT_ROOT}.<cluster>.<kind>.<id…>, got ${quote(subject)}`);
  }
  const cluster = checkToken(tokens[1]!, 'cluster');
  if (tokens[2] === API_TOKEN) {
    const verb = tokens.slice(3).join('.');
    if (!isApiVerb(verb)) subjectError('verb', `unknown API verb ${quote(verb)}`);
    return { scope: 'api', cluster, verb };
  }
  const kind = checkKind(tokens[2]!);
  const ids = tokens.slice(3);
  if (ids.length > ACTOR_ID_TOKENS_MAX) subjectError('ids', `expected 1..${ACTOR_ID_TOKENS_MAX} ids, got ${ids.length}`);
  ids.forEach((id, i) => checkToken(id, `ids[${i}]`));
  return { scope: 'actor', cluster, kind, ids };
}

/** Parses `strata.<cluster>.shard.<volumeId>.<shard>`. */
export function parseShardSubject(subject: string): ShardAddress & { cluster: string } {
  const parsed = parseSubject(subject);
  if (parsed.scope !== 'actor' || parsed.kind !== SHARD_KIND || parsed.ids.length !== 2) {
    subjectError('subject', `expected ${SUBJECT_ROOT}.<cluster>.${SHARD_KIND}.<volumeId>.<shard>, got ${quote(subject)}`);
  }
  const [volumeId, shardToken] = parsed.ids as [string, string];
  if (!SHARD_PATTERN.test(shardToken) || shardToken.length > 3) {
    subjectError('shard', `expected an integer in 0..${SHARDS_MAX - 1}, got ${quote(shardToken)}`);
  }
  return { cluster: parsed.cluster, volumeId, shard: checkShard(Number(shardToken)) };
}
