/**
 * A bounded, seeded fuzzer of every NATS subject a Strata node serves.
 *
 *   npm run fuzz -- [--seed 1] [--duration-s 300] [--round-s 20] [--concurrency 64]
 *        [--only <substring of subject kind>] [--verbose]
 *   (node --expose-gc dist/test/fuzz/subjects.js … once built)
 *
 * It starts an in-process cluster (3 nodes, 1 host each), writes pages to a 3-replica volume
 * (`fz-real`, never written again by the fuzzer: its replica subjects only get votes and garbage,
 * its shard subjects only reads, flushes and garbage) and to a scratch volume (`fz-aux`, which
 * takes everything), then sends, round after round, random and mutated requests to every
 * subject a node serves: the API, shard, replica, controller, node, nodes.status and the NATS
 * service ($SRV) subjects, with random, missing and malformed headers (a raw socket sends the
 * header blocks nats.js will not build), some without a reply subject, some near max_payload.
 *
 * After every round: every request with a reply subject got a reply by the time its deadline
 * allows (else a hang), every reply is a CBOR error map with a known code (not `internal`) or a
 * reply of the right shape, a request the repository's own validators refuse was not answered
 * with success, no node logged at error level, no host restarted, no replica restarted, no node
 * stopped, `fz-real` reads back exactly what was written, and memory is sampled (growth is
 * judged at the end). Findings are printed with the seed, subject, headers and body (hex).
 * Exit status: 0 when nothing was found, 1 otherwise.
 */
import * as net from 'node:net';
import { connect as natsConnect, headers as natsHeaders, type NatsConnection } from 'nats';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';
import { encode, decode } from '../../messages/codec';
import { ERROR_CODES } from '../../messages/errors';
import { API_VERBS, SHARD_VERBS, type MessageType } from '../../messages/api';
import { readHeaders, checkSchemaHeader, parseDeadline, HEADER_DEADLINE, HEADER_SCHEMA, HEADER_TYPE, HEADER_TRACEPARENT } from '../../messages/headers';
import { validateRequest } from '../../messages/validate';
import { validateRaftRequest, replicaSubject, followersSubject } from '../../messages/raft';
import { heartbeatsSubject, validateHeartbeatBatch } from '../../runtime/heartbeat-batcher';
import {
  validateClaimQuestion, validateHeartbeat, validateAssignmentsRequest, validateNodeStatusRequest, validateShardsOpen, validateShardsDestroy, validateVolumeGrow,
  validateShardForceVote, validateShardHandover, validateCatalogRecoverRequest, validateNodeRecordsRequest, validateShardMove, validateNodeDrain, validateRebalance, validateShardReconfigure, controllerSubject, nodeSubject,
} from '../../messages/control';
import { validateVolumeBranchRequest, validateVolumeCreateRequest, validateVolumeNameRequest, validateVolumeDeleteRequest, validateVolumeListRequest, validateVolumeResizeRequest } from '../../messages/validate';
import { shardLeadersSubject, shardSubject, apiSubject } from '../../messages/subjects';
import type { VolumeInfo } from '../../messages/api';
import { prng } from '../support/prng';

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

const FLAGS = ['seed', 'duration-s', 'round-s', 'concurrency', 'only'] as const;
const SWITCHES = ['verbose', 'help'] as const;
const USAGE = `usage: npm run fuzz -- [--seed N] [--duration-s 1..3600] [--round-s 1..600] [--concurrency 1..256] [--only TEXT] [--verbose]`;

/** The command line, strictly: an unknown flag, a missing value or a number out of range is a usage error (exit 2). */
function parseFlags(argv: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const name = a.startsWith('--') ? a.slice(2) : '';
    if ((SWITCHES as readonly string[]).includes(name)) out.set(name, 'true');
    else if ((FLAGS as readonly string[]).includes(name) && i + 1 < argv.length && !out.has(name)) out.set(name, argv[++i]!);
    else usage(`${JSON.stringify(a)}: unknown, repeated or missing its value`);
  }
  return out;
}

function usage(why: string): never {
  process.stderr.write(`fuzz: usage: ${why}\n${USAGE}\n`);
  process.exit(2);
}

function intFlag(flags: Map<string, string>, name: string, def: number, min: number, max: number): number {
  const text = flags.get(name);
  if (text === undefined) return def;
  const n = /^(0|[1-9][0-9]{0,15})$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) usage(`--${name}: expected an integer in ${min}..${max}, got ${JSON.stringify(text)}`);
  return n;
}

const flags = parseFlags(process.argv.slice(2));
if (flags.has('help')) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const SEED = intFlag(flags, 'seed', 1, 0, 2 ** 31 - 1);
const DURATION_MS = intFlag(flags, 'duration-s', 300, 1, 3600) * 1000;
const ROUND_MS = intFlag(flags, 'round-s', 20, 1, 600) * 1000;
const CONCURRENCY = intFlag(flags, 'concurrency', 64, 1, 256);
const ONLY = flags.get('only') ?? '';
const VERBOSE = flags.has('verbose');
const CLUSTER = 'fz';

// ---------------------------------------------------------------------------------------------
// Random
// ---------------------------------------------------------------------------------------------

const rnd = prng(SEED);
const int = (n: number): number => Math.floor(rnd() * n);
const chance = (p: number): boolean => rnd() < p;
function pick<T>(xs: readonly T[]): T {
  return xs[int(xs.length)]!;
}
function randBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = int(256);
  return b;
}
function randToken(n = 1 + int(12)): string {
  const a = 'abcdefghijklmnopqrstuvwxyz0123456789-_';
  let s = '';
  for (let i = 0; i < n; i++) s += a[int(a.length)];
  return s;
}
const hex = (b: Uint8Array, max = 4096): string => Buffer.from(b.subarray(0, max)).toString('hex') + (b.length > max ? `…(+${b.length - max} bytes)` : '');

/** Numbers a validator must get right. */
function weirdNumber(): unknown {
  return pick<unknown>([
    0, 1, -1, -0, 0.5, 1.0, 1.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 40 - 1, 2 ** 40 + 1,
    2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 2 ** 64, -(2 ** 53), 1e300, -1e300, Number.MIN_VALUE, 255, 256, 4095, 4096, 8192,
    65535, 65536, 2 ** 20, 2 ** 20 + 1, BigInt(2) ** BigInt(64) - BigInt(1), -(BigInt(2) ** BigInt(63)), BigInt(5),
  ]);
}
function weirdValue(depth = 0): unknown {
  switch (int(depth > 2 ? 9 : 12)) {
    case 0: return weirdNumber();
    case 1: return randToken(int(80));
    case 2: return randBytes(int(64));
    case 3: return null;
    case 4: return undefined;
    case 5: return chance(0.5);
    case 6: return 'x'.repeat(pick([0, 64, 65, 512, 513, 5000]));
    case 7: return new Uint8Array(pick([0, 1, 4095, 4096, 4097, 8192]));
    case 8: return int(1000);
    case 9: return Array.from({ length: int(5) }, () => weirdValue(depth + 1));
    case 10: { const o: Record<string, unknown> = {}; for (let i = int(4); i > 0; i--) o[randToken(4)] = weirdValue(depth + 1); return o; }
    default: return { nested: weirdValue(depth + 1) };
  }
}

// ---------------------------------------------------------------------------------------------
// Cluster facts the generators use
// ---------------------------------------------------------------------------------------------

interface Facts {
  nodes: string[];
  real: VolumeInfo;
  aux: VolumeInfo;
  /** Names of volumes created by the fuzzer (fzc-…): safe to delete. */
  created: Set<string>;
  /** Fake shards opened on nodes by valid shards.open requests (bounded). */
  fakeOpened: number;
}
let facts: Facts;
const REAL = 'fz-real';
const AUX = 'fz-aux';
const FAKE_OPEN_MAX = 6;
let createdCount = 0;
const CREATE_MAX = 16;

function volumeNameFor(kind: 'read' | 'write' | 'delete'): string {
  const pool = ['no-such-volume', `zz-${randToken(6)}`, 'X'.repeat(int(3) === 0 ? 65 : 3), '', '..', 'a'.repeat(64), 'a'.repeat(65), AUX];
  if (kind === 'read') pool.push(REAL, REAL, AUX);
  if (kind === 'write') pool.push(AUX, AUX);
  if (kind === 'delete') { pool.pop(); pool.push(...[...facts.created].slice(0, 3)); }
  return pick(pool);
}

function pageOf(v: VolumeInfo): number {
  return pick([0, 1, int(v.pageCount), v.pageCount - 1, v.pageCount, v.pageCount + 1, 2 ** 40 - 1, 2 ** 40, 2 ** 53 - 1]);
}
function pagesOfShard(v: VolumeInfo, shard: number, n: number): number[] {
  const out: number[] = [];
  for (let p = 0; p < v.pageCount && out.length < n; p++) if (Math.floor(p / v.stripePages) % v.shards === shard) out.push(p);
  return out;
}
function pageData(size: number): Uint8Array {
  return chance(0.8) ? new Uint8Array(size).fill(int(256)) : new Uint8Array(pick([0, 1, size - 1, size + 1, 4096, 8192]));
}

// ---------------------------------------------------------------------------------------------
// Targets: every subject a node serves, with a valid body template
// ---------------------------------------------------------------------------------------------

type Kind = 'api' | 'shard' | 'replica' | 'controller' | 'node' | 'gather' | 'srv';
interface Target {
  kind: Kind;
  subject: string;
  /** The Strata-Type a valid request carries (API and shard subjects). */
  type?: string;
  /** A valid-looking body (before mutation). */
  body(): unknown;
  /** Whether a body (the decoded value) must not be sent here (destructive by design). */
  forbidden?(body: unknown): boolean;
  /** The local oracle: throws when the request is invalid (so a success reply is wrong). */
  check?(body: unknown, headers: Record<string, string> | undefined): void;
  /** Several replies are normal (scatter). */
  multi?: boolean;
  /** With `multi`: the replies that complete a request, when known (more are a finding). */
  replies?: number;
  /** Bodies (the decoded value) that may rightly get no reply here. */
  silentFor?(value: unknown): boolean;
}

/**
 * On a shard's leaders subject, a leader leaves a request that names a later term than its own
 * unanswered (a newer leader's answer is the one the requester should get: docs/protocol.md):
 * any request naming a term may get no reply there.
 */
function namesTerm(value: unknown): boolean {
  return value !== null && typeof value === 'object' && typeof (value as { term?: unknown }).term === 'number';
}

function hdrReader(h: Record<string, string> | undefined): { get(name: string): string } {
  return { get: (name: string) => (h && name in h ? h[name]!.trim() : '') };
}

function apiTargets(): Target[] {
  const t = (verb: (typeof API_VERBS)[number], body: () => unknown, forbidden?: (b: unknown) => boolean): Target => ({
    kind: 'api', subject: apiSubject(CLUSTER, verb), type: verb, body, ...(forbidden ? { forbidden } : {}),
    check: (b, h) => {
      readHeaders(hdrReader(h), { expectType: verb });
      validateRequest(verb as MessageType, b);
    },
  });
  const writesReal = (b: unknown): boolean => typeof b === 'object' && b !== null && (b as { volume?: unknown }).volume === REAL;
  const deletesKept = (b: unknown): boolean => typeof b === 'object' && b !== null && ((b as { name?: unknown }).name === REAL || (b as { name?: unknown }).name === AUX);
  return [
    t('volume.create', () => ({ name: createName(), pageCount: pick([1, 16, 64, 2 ** 40, 0]), ...(chance(0.5) ? { shards: pick([1, 2, 256, 257]) } : {}), ...(chance(0.3) ? { replicas: pick([1, 3, 5, 2]) } : {}), ...(chance(0.3) ? { pageSize: pick([4096, 8192, 1024]) } : {}), ...(chance(0.3) ? { stripePages: pick([1, 4, 2 ** 20, 2 ** 20 + 1]) } : {}) })),
    t('volume.branch', branchBody),
    t('volume.list', () => ({})),
    t('volume.info', () => ({ name: volumeNameFor('read') })),
    t('volume.delete', () => ({ name: volumeNameFor('delete') }), deletesKept),
    // A volume only grows, so a resize of the real volumes loses nothing.
    t('volume.resize', resizeBody),
    t('volume.flush', () => ({ volume: volumeNameFor('read') })),
    t('page.write', () => {
      const v = facts.aux;
      return { volume: volumeNameFor('write'), pages: Array.from({ length: 1 + int(3) }, () => ({ page: pageOf(v), data: pageData(v.pageSize) })) };
    }, writesReal),
    t('page.zero', () => ({ volume: volumeNameFor('write'), ...rangeBody(facts.aux) }), writesReal),
    t('page.map', () => ({ volume: volumeNameFor('read'), ...rangeBody(chance(0.5) ? facts.real : facts.aux) })),
    t('page.read', () => {
      const v = chance(0.5) ? facts.real : facts.aux;
      return { volume: volumeNameFor('read'), pages: Array.from({ length: 1 + int(4) }, () => pageOf(v)), ...(chance(0.3) ? { lsn: pick([0, 1, 5, 1e6, 2 ** 53 - 1]) } : {}) };
    }),
    t('status', () => ({})),
  ];
}

/** The range of a page.zero or shard.zero: in the volume, at and past its end and the bounds. */
function rangeBody(v: { pageCount: number }): { first: unknown; count: unknown } {
  return { first: pick<unknown>([0, 1, v.pageCount - 1, v.pageCount, 2 ** 32 - 1, -1, 1.5, '0']), count: pick<unknown>([1, 2, v.pageCount, 2 ** 32 - 1, 2 ** 32, 0, -1, 2 ** 53 - 1]) };
}

/** A volume.resize body: the real volumes or another name, sizes at and past the bounds (a volume only grows: nothing is lost). */
function resizeBody(): unknown {
  return { name: volumeNameFor('read'), pageCount: pick([0, 1, 16, 64, 4096, 2 ** 32 - 1, 2 ** 32, 2 ** 40, -1, 1.5]) };
}

/**
 * A volume.branch body: a new name (as a create's), a parent (the real volumes, one that does not
 * exist, names that are not names), and sometimes LSNs: one per shard of the real volumes (2) or
 * not, at the bounds or past them.
 */
function branchBody(): unknown {
  const lsns = (): unknown => pick<unknown>([[0, 0], [1, 0], [0], [], [0, 0, 0], [1e6, 0], [-1, 0], [0.5, 0], [2 ** 53 - 1, 0], [2 ** 53, 0], ['1', 0], new Array(257).fill(0), 7]);
  return { name: createName(), parent: pick([REAL, AUX, 'nope', '', 'X'.repeat(3), 'a'.repeat(65)]), ...(chance(0.6) ? { lsns: lsns() } : {}) };
}

function createName(): string {
  if (createdCount >= CREATE_MAX) return REAL; // already exists: already_exists
  return `fzc-${randToken(8)}`;
}

function shardTargets(): Target[] {
  const out: Target[] = [];
  for (const v of [facts.real, facts.aux]) {
    for (let s = 0; s < v.shards; s++) {
      const isReal = v === facts.real;
      // The shard's subject (its leaders' queue group) and its leaders subject (every leader).
      for (const subject of [shardSubject(CLUSTER, v.id, s), shardLeadersSubject(CLUSTER, v.id, s)]) {
        const leaders = subject !== shardSubject(CLUSTER, v.id, s);
        const mine = pagesOfShard(v, s, 8);
        const other = pagesOfShard(v, (s + 1) % v.shards, 2);
        const page = (): number => pick([...mine, ...other, v.pageCount, 2 ** 40, -1, 2 ** 53 - 1]);
        for (const type of SHARD_VERBS) {
          if (isReal && (type === 'shard.write' || type === 'shard.zero')) continue; // never written by the fuzzer
          out.push({
            kind: 'shard', subject, type,
            body: () => {
              if (type === 'shard.write') {
                return {
                  pages: Array.from({ length: 1 + int(3) }, () => ({ page: page(), data: pageData(v.pageSize) })),
                  ...(chance(0.3) ? { deadlineMs: pick([Date.now() + 3000, 0, 2 ** 53 - 1]) } : {}),
                  ...(chance(0.3) ? { term: pick([0, 1, 2, 3, 1000, 2 ** 53 - 1]) } : {}),
                  ...(chance(0.2) ? { earlier: Array.from({ length: int(10) }, () => ({ lsn: pick([0, 1, 2, 1e6]), term: pick([0, 1, 2, 1e6]) })) } : {}),
                  ...writeIdFields(),
                };
              }
              if (type === 'shard.zero') return { ...rangeBody(v), ...(chance(0.3) ? { term: pick([0, 1, 2, 3, 1000, 2 ** 53 - 1]) } : {}), ...writeIdFields() };
              if (type === 'shard.map') return { ...rangeBody(v), ...(chance(0.3) ? { term: pick([0, 1, 2, 3, 1000, 2 ** 53 - 1]) } : {}) };
              if (type === 'shard.read') return { pages: Array.from({ length: 1 + int(4) }, page), ...(chance(0.3) ? { lsn: pick([0, 1, 3, 1e6, 2 ** 53 - 1]) } : {}), ...(chance(0.3) ? { term: pick([0, 1, 5, 2 ** 53 - 1]) } : {}) };
              return chance(0.5) ? {} : { term: pick([0, 1, 2, 2 ** 53 - 1]) };
            },
            // A write that could be valid must not reach the real volume (checked by subject above);
            // a garbled write to it is refused before it is parsed as pages.
            check: (b, h) => {
              const r = hdrReader(h);
              checkSchemaHeader(r);
              if (r.get(HEADER_TYPE).length > 0 && !(SHARD_VERBS as readonly string[]).includes(r.get(HEADER_TYPE))) throw new Error('unknown type');
              if (r.get(HEADER_TYPE) === '') throw new Error('no type');
              parseDeadline(r.get(HEADER_DEADLINE));
              validateRequest(r.get(HEADER_TYPE) as MessageType, b);
            },
            ...(isReal ? { forbidden: (b: unknown) => isWriteLike(b) } : {}),
            // Every replica that leads, as far as it knows, takes a request on the leaders subject:
            // more than one may answer it (docs/protocol.md).
            ...(leaders ? { silentFor: namesTerm, multi: true } : {}),
          });
        }
      }
    }
  }
  return out;
}

/** A write's id and when its first try was sent, some of the time, some of them wrong. */
function writeIdFields(): Record<string, unknown> {
  return {
    ...(chance(0.4) ? { writeId: pick([randBytes(16), randBytes(16), randBytes(15), randBytes(0)]) } : {}),
    ...(chance(0.2) ? { sentMs: pick([Date.now(), Date.now() - 1000, 0, Date.now() - 3_600_000, 2 ** 53 - 1]) } : {}),
  };
}

function isWriteLike(b: unknown): boolean {
  if (typeof b !== 'object' || b === null) return false;
  const pages = (b as { pages?: unknown }).pages;
  // A range made zeros is a write too.
  if ((b as { count?: unknown }).count !== undefined) return true;
  return Array.isArray(pages) && pages.some((p) => typeof p === 'object' && p !== null);
}

function replicaTargets(): Target[] {
  const out: Target[] = [];
  for (const v of [facts.real, facts.aux]) {
    const isReal = v === facts.real;
    for (let s = 0; s < v.shards; s++) {
      for (const node of facts.nodes) {
        const subject = replicaSubject(CLUSTER, v.id, s, node);
        const term = (): number => pick([0, 1, 2, 3, 10, 1000, 2 ** 32, 2 ** 53 - 2, 2 ** 53 - 1]);
        const lsn = (): number => pick([0, 1, 2, 5, 100, 1e6, 2 ** 53 - 1]);
        const peer = (): string => pick([...facts.nodes, 'zz', 'n9']);
        const body = (): unknown => {
            const which = isReal ? pick(['vote', 'prevote', 'vote', 'prevote']) : pick(['vote', 'prevote', 'append', 'snapshot', 'timeoutNow']);
            if (which === 'vote' || which === 'prevote') return { type: which, term: term(), candidate: peer(), lastLsn: lsn(), lastTerm: term(), ...(!isReal && chance(0.3) ? { transfer: true } : {}) };
            if (which === 'timeoutNow') return { type: 'timeoutNow', term: term(), leader: peer() };
            if (which === 'append') {
              const t = term();
              return { type: 'append', term: t, leader: peer(), prevLsn: lsn(), prevTerm: pick([0, 1, t]), records: Array.from({ length: int(3) }, () => ({ term: t, kind: int(6), payload: randBytes(int(64)) })), commitLsn: lsn(), ...(chance(0.3) ? { leaderLastLsn: lsn() } : {}) };
            }
            const total = pick([0, 16, 4096, 1 << 20]);
            return { type: 'snapshot', term: term(), leader: peer(), lsn: lsn(), lastTerm: term(), bytes: total, offset: pick([0, 8, total]), data: randBytes(Math.min(total, pick([0, 8, 16]))), done: chance(0.5) };
        };
        // Forged appends and snapshots could change the real volume's data (replication is not
        // authenticated, by design), and forged handovers its leader: the real volume's replicas
        // get votes (not marked as handed over) and garbage only.
        const forbidden = isReal
          ? { forbidden: (b: unknown) => typeof b === 'object' && b !== null && (['append', 'snapshot', 'timeoutNow'].includes(String((b as { type?: unknown }).type)) || (b as { transfer?: unknown }).transfer !== undefined) }
          : {};
        out.push({ kind: 'replica', subject, type: 'raft', body, check: (b) => { validateRaftRequest(b); }, ...forbidden });
        // The appends `node` sends, as leader, to all its followers: each other member answers
        // (several replies), and takes only an append that names `node` as its leader.
        out.push({
          kind: 'replica', subject: followersSubject(CLUSTER, v.id, s, node), type: 'raft', body, multi: true, replies: facts.nodes.length - 1,
          check: (b) => {
            const r = validateRaftRequest(b);
            if (r.type !== 'append' || r.leader !== node) throw new Error(`only appends from ${node} are taken here`);
          },
          ...forbidden,
        });
      }
    }
  }
  // The heartbeats sent to `node` (runtime/heartbeat-batcher.ts): entries of the scratch volume
  // (forged ones could depose its leaders, as above) and of no volume; host 0 answers each
  // message, `{ r }` or bad_request.
  for (const node of facts.nodes) {
    const entry = (): unknown[] => {
      const append = { type: 'append', term: pick([0, 1, 2, 1000]), leader: pick([...facts.nodes, 'zz']), prevLsn: pick([0, 1, 100]), prevTerm: pick([0, 1]), records: chance(0.9) ? [] : [{ term: 1, kind: 0, payload: randBytes(8) }], commitLsn: pick([0, 1, 100]) };
      return [pick([facts.aux.id, facts.aux.id, 'v9-zz']), int(3), chance(0.8) ? encode(append) : randBytes(int(32))];
    };
    out.push({
      kind: 'replica', subject: heartbeatsSubject(CLUSTER, node), type: 'raft', multi: true, replies: 1,
      body: () => ({ from: pick([...facts.nodes, 'zz']), e: Array.from({ length: int(4) }, entry) }),
      check: (b) => void validateHeartbeatBatch(b),
      forbidden: (b) => mentions(b, facts.real.id),
    });
  }
  return out;
}

/** Whether `value` holds the string `s` anywhere (decoded CBOR may share, even cycle, its parts). */
function mentions(value: unknown, s: string, seen = new Set<unknown>()): boolean {
  if (typeof value === 'string') return value.includes(s);
  if (typeof value !== 'object' || value === null || seen.has(value) || seen.size > 10_000) return false;
  seen.add(value);
  return Object.values(value as Record<string, unknown>).some((v) => mentions(v, s, seen));
}

function controllerTargets(): Target[] {
  const c = (verb: string): string => controllerSubject(CLUSTER, verb);
  const deletesKept = (b: unknown): boolean => typeof b === 'object' && b !== null && ((b as { name?: unknown }).name === REAL || (b as { name?: unknown }).name === AUX);
  return [
    // Heartbeats of unknown node ids would add members (placement then fails unavailable), and ones
    // reporting replicas down would have them replaced: by design (only nodes may send them).
    { kind: 'controller', subject: c('heartbeat'), body: () => ({ nodeId: pick(facts.nodes), hosts: 1 }), check: (b) => void validateHeartbeat(b),
      forbidden: (b) => { try { const h = validateHeartbeat(b); return !facts.nodes.includes(h.nodeId) || h.hosts !== 1 || h.down !== undefined; } catch { return false; } } },
    { kind: 'controller', subject: c('assignments'), body: () => ({ nodeId: pick([...facts.nodes, 'zz']), ...(chance(0.5) ? { from: pick([0, 1, 511, 512, 65536, 65537]) } : {}) }), check: (b) => void validateAssignmentsRequest(b) },
    { kind: 'controller', subject: c('members'), body: () => ({}) },
    { kind: 'controller', subject: c('volume.create'), body: () => apiTargets()[0]!.body(), check: (b) => void validateVolumeCreateRequest(b) },
    { kind: 'controller', subject: c('volume.branch'), body: branchBody, check: (b) => void validateVolumeBranchRequest(b) },
    { kind: 'controller', subject: c('volume.delete'), body: () => ({ name: volumeNameFor('delete') }), check: (b) => void validateVolumeDeleteRequest(b), forbidden: deletesKept },
    { kind: 'controller', subject: c('volume.info'), body: () => ({ name: volumeNameFor('read') }), check: (b) => void validateVolumeNameRequest(b) },
    { kind: 'controller', subject: c('volume.resize'), body: resizeBody, check: (b) => void validateVolumeResizeRequest(b) },
    { kind: 'controller', subject: c('volume.list'), body: () => ({}), check: (b) => void validateVolumeListRequest(b) },
    { kind: 'controller', subject: c('claim'), body: () => claimBody(), forbidden: stopsByClaim },
    // Applied, a recovery would add the fake volumes the fuzzer opens on the nodes: by design.
    { kind: 'controller', subject: c('catalog.recover'), body: () => (chance(0.5) ? {} : { apply: false }), check: (b) => void validateCatalogRecoverRequest(b),
      forbidden: (b) => { try { return validateCatalogRecoverRequest(b).apply === true; } catch { return false; } } },
    // A move to a node that does not run ('zz') is refused before anything is recorded; one to a real node would move a replica.
    { kind: 'controller', subject: c('shard.move'), body: () => ({ volume: pick([REAL, AUX, 'nope']), shard: pick([0, 1, 255]), from: pick([...facts.nodes, 'zz']), to: pick([...facts.nodes, 'zz']) }), check: (b) => void validateShardMove(b),
      forbidden: (b) => { try { return facts.nodes.includes(validateShardMove(b).to); } catch { return false; } } },
    // Draining a real node would move its replicas: only a node that does not run, marked and unmarked.
    { kind: 'controller', subject: c('node.drain'), body: () => ({ node: pick([...facts.nodes, 'zz']), ...(chance(0.5) ? { undo: chance(0.5) } : {}) }), check: (b) => void validateNodeDrain(b),
      forbidden: (b) => { try { return facts.nodes.includes(validateNodeDrain(b).node); } catch { return false; } } },
    // Asked for, a rebalance would move replicas: only its call-off.
    { kind: 'controller', subject: c('rebalance'), body: () => ({ stop: true }), check: (b) => void validateRebalance(b),
      forbidden: (b) => { try { return validateRebalance(b).stop !== true; } catch { return false; } } },
  ];
}

/** A recheck from an instance that started first: it stops the node, by design (a mutation of `claimBody` can make one). */
function stopsByClaim(body: unknown): boolean {
  try {
    const q = validateClaimQuestion(body);
    return q.recheck && q.sinceMs <= Date.now();
  } catch {
    return false;
  }
}

function claimBody(): unknown {
  // A question at a start (recheck false), or one that started later: only answered. (A recheck
  // from an instance that started first stops the node, by design: never sent.)
  return { instance: randToken(16), nodeId: pick([...facts.nodes, 'zz']), hostname: 'fuzz', pid: int(99999), sinceMs: chance(0.5) ? Date.now() + 1e9 : int(1e6), recheck: false };
}

function nodeTargets(): Target[] {
  const out: Target[] = [];
  for (const node of facts.nodes) {
    const s = (verb: string): string => nodeSubject(CLUSTER, node, verb);
    const assignment = (): Record<string, unknown> => ({
      volumeId: `fzv${int(4)}`, volumeName: `fzv-${int(4)}`, shard: 0, shards: 1, pageCount: pick([1, 16, 2 ** 40]), pageSize: pick([4096, 8192]),
      stripePages: pick([1, 256]), hostId: pick([0, 0, 0, 1, 63]), members: pick([[node], [node, 'zz'], ['zz'], []]), createdAt: Date.now(),
    });
    out.push(
      { kind: 'node', subject: s('shards.open'), body: () => ({ shards: Array.from({ length: int(3) }, assignment) }), check: (b) => void validateShardsOpen(b),
        // The real and scratch volumes' shards are never reopened with another geometry; fake ones are bounded.
        forbidden: (b) => {
          try {
            const r = validateShardsOpen(b);
            if (r.shards.some((a) => a.volumeId === facts.real.id || a.volumeId === facts.aux.id)) return true;
            if (r.shards.length > 0 && facts.fakeOpened >= FAKE_OPEN_MAX) return true;
            facts.fakeOpened += r.shards.length;
            return false;
          } catch { return false; }
        } },
      { kind: 'node', subject: s('shards.destroy'), body: () => ({ volumeId: pick([`fzv${int(4)}`, 'nope', facts.aux.id]), shards: [0] }), check: (b) => void validateShardsDestroy(b),
        forbidden: (b) => { try { const r = validateShardsDestroy(b); return (r.volumeId === facts.real.id || r.volumeId === facts.aux.id) && r.shards.length > 0; } catch { return false; } } },
      { kind: 'node', subject: s('volume.grow'), body: () => ({ volumeId: pick([facts.real.id, facts.aux.id, 'nope', `fzv${int(4)}`, 'a.b']), pageCount: pick([0, 1, 64, 2 ** 32 - 1, 2 ** 32, -1]) }), check: (b) => void validateVolumeGrow(b) },
      { kind: 'node', subject: s('shard.forceVote'), body: () => ({ volumeId: pick([facts.real.id, facts.aux.id, 'nope']), shard: pick([0, 1, 255]) }), check: (b) => void validateShardForceVote(b) },
      // A handover moves a shard's leader (the real volume's too): nothing lost, writes retried meanwhile.
      { kind: 'node', subject: s('shard.handover'), body: () => ({ ...(chance(0.7) ? { volumeId: pick([facts.real.id, facts.aux.id, 'nope']), shard: pick([0, 1, 255]) } : {}), ...(chance(0.6) ? { to: pick([...facts.nodes, 'n9', 'a.b']) } : {}) }), check: (b) => void validateShardHandover(b) },
      // A valid one would change the replica set of a shard the node leads: only the malformed are sent.
      { kind: 'node', subject: s('shard.reconfigure'), body: () => ({ volumeId: pick([facts.real.id, facts.aux.id, 'nope']), shard: pick([0, 1, 255]), members: pick([[node], [], [node, node], ['a.b']]) }), check: (b) => void validateShardReconfigure(b),
        forbidden: (b) => { try { validateShardReconfigure(b); return true; } catch { return false; } } },
      { kind: 'node', subject: s('status'), body: () => (chance(0.5) ? {} : { part: pick([0, 1, 65535, 65536, -1]) }), check: (b) => void validateNodeStatusRequest(b) },
      { kind: 'node', subject: s('records'), body: () => (chance(0.5) ? {} : { from: pick([0, 1, 512, 65536, 65537, -1]) }), check: (b) => void validateNodeRecordsRequest(b) },
      { kind: 'node', subject: s('claim'), body: () => claimBody(), forbidden: stopsByClaim },
    );
  }
  out.push({ kind: 'gather', subject: `strata.${CLUSTER}.nodes.status`, body: () => ({}), multi: true });
  for (const srv of ['$SRV.PING', '$SRV.INFO', '$SRV.STATS', '$SRV.PING.strata', '$SRV.INFO.strata', '$SRV.STATS.strata']) {
    out.push({ kind: 'srv', subject: srv, body: () => ({}), multi: true });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Mutations of bodies and headers
// ---------------------------------------------------------------------------------------------

/** One field of a valid body changed (recursively into a random member). */
function mutateValue(v: unknown, depth = 0): unknown {
  if (Array.isArray(v)) {
    const a = [...v];
    switch (int(6)) {
      case 0: return [];
      case 1: return Array.from({ length: pick([257, 300, 5000]) }, () => a[0] ?? 0);
      case 2: a.push(weirdValue()); return a;
      case 3: if (a.length > 0) a[int(a.length)] = depth < 3 && chance(0.6) ? mutateValue(a[int(a.length)], depth + 1) : weirdValue(); return a;
      case 4: return a.concat(a); // duplicates
      default: return weirdValue();
    }
  }
  if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) {
    const o = { ...(v as Record<string, unknown>) };
    const keys = Object.keys(o);
    switch (int(6)) {
      case 0: if (keys.length > 0) delete o[pick(keys)]; return o;
      case 1: o[pick(['extra', '__proto__', 'constructor', 'toString', 'error', 'hasOwnProperty', randToken(5)])] = weirdValue(); return o;
      case 2:
      case 3: if (keys.length > 0) { const k = pick(keys); o[k] = depth < 3 && chance(0.6) ? mutateValue(o[k], depth + 1) : weirdValue(); } return o;
      case 4: return [o];
      default: return weirdValue();
    }
  }
  return weirdValue();
}

/** CBOR items hand-made to hit the decoder's corners. */
function cborOddity(): Uint8Array {
  const nest = (open: number, n: number): Uint8Array => new Uint8Array(n).fill(open);
  return pick<() => Uint8Array>([
    () => nest(0x81, pick([100, 10_000, 200_000])), // deeply nested arrays
    () => Uint8Array.from([...Array.from({ length: 5000 }, () => [0xa1, 0x61, 0x61]).flat(), 0x00]), // nested maps
    () => Uint8Array.from([0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), // array of 2^64 entries
    () => Uint8Array.from([0x9a, 0x7f, 0xff, 0xff, 0xff]), // array of 2^31 entries, none given
    () => Uint8Array.from([0x5b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]), // byte string of 4 GiB
    () => Uint8Array.from([0xba, 0x7f, 0xff, 0xff, 0xff]), // map of 2^31 pairs
    () => Uint8Array.from([0x5f, 0x41, 0x00, 0x41, 0x01, 0xff]), // indefinite byte string
    () => Uint8Array.from([0xbf, 0x61, 0x61, 0x01, 0xff]), // indefinite map
    () => Uint8Array.from([0x9f, 0x01, 0x02]), // unterminated indefinite array
    () => Uint8Array.from([0xd8, 0x1c, 0xa1, 0x65, 0x70, 0x61, 0x67, 0x65, 0x73, 0x81, 0xd8, 0x1d, 0x00]), // {pages: [<itself>]} (tag 28/29)
    () => Uint8Array.from([0xd8, 0x1c, 0x81, 0xd8, 0x1d, 0x00]), // [<itself>]
    () => Uint8Array.from([0xd8, 0x1b, 0x83, 0x66, 0x52, 0x65, 0x67, 0x45, 0x78, 0x70, 0x64, 0x28, 0x61, 0x2b, 0x29, 0x61, 0x67]), // tag 27 RegExp
    () => Uint8Array.from([0xc2, 0x49, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]), // bignum 2^64
    () => Uint8Array.from([0xa1, 0x65, 0x70, 0x61, 0x67, 0x65, 0x73, 0xd9, 0x01, 0x02, 0x80]), // pages: Set
    () => Uint8Array.from([0xd9, 0x01, 0x03, 0xa1, 0x01, 0x02]), // tag 259 Map
    () => Uint8Array.from([0xd9, 0x01, 0x03, 0x01]), // tag 259 on a non-map
    () => Uint8Array.from([0xd8, 0x40, 0x43, 1, 2, 3]), // tag 64 Uint8Array
    () => Uint8Array.from([0xd8, 0x48, 0x48, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]), // tag 72 Float64Array
    () => Uint8Array.from([0xd9, 0xdf, 0xff, 0x83, 0x19, 0xe0, 0x00, 0x81, 0x61, 0x61, 0x01]), // record definition
    () => Uint8Array.from([0xd9, 0xe0, 0x00, 0x01]), // record reference without definition
    () => Uint8Array.from([0xd8, 0x33, 0x84, 0x80, 0x80, 0x80, 0x01]), // packed table
    () => Uint8Array.from([0xd8, 0x06, 0x00]), // packed reference
    () => Uint8Array.from([0xd9, 0xdf, 0xf9, 0x82, 0x61, 0x61, 0x61, 0x62, 0x01]), // bundled strings
    () => Uint8Array.from([0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]), // NaN
    () => Uint8Array.from([0xf9, 0x7c, 0x00]), // half-float Infinity
    () => Uint8Array.from([0xf7]), // undefined
    () => Uint8Array.from([0xf8, 0x20]), // simple value 32
    () => Uint8Array.from([0x1f]), // reserved additional info
    () => Uint8Array.from([0x7f, 0x61, 0x61, 0x41, 0x62, 0xff]), // text chunks with a byte chunk
    () => Uint8Array.from([0x62, 0xc3, 0x28]), // invalid UTF-8
    () => Uint8Array.from([0xa2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02]), // duplicate keys
    () => Uint8Array.from([0xa1, 0xa0, 0x01]), // a map as a key
    () => Uint8Array.from([0xa1, 0x69, 0x5f, 0x5f, 0x70, 0x72, 0x6f, 0x74, 0x6f, 0x5f, 0x5f, 0xa1, 0x61, 0x61, 0x01]), // __proto__
    () => Uint8Array.from([0xa0, 0xa0]), // trailing item
    () => Uint8Array.from([0xd8, 0x01, 0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), // a date of 2^64 s
    () => Uint8Array.from([0xc0, 0x63, 0x61, 0x62, 0x63]), // a date string that is not one
    () => Uint8Array.from([0xd8, 0x0e, 0x05]), // tag 14 without bundled strings
  ])();
}

function bodyBytes(target: Target): { bytes: Uint8Array; value?: unknown; how: string } {
  try {
    return bodyBytesOnce(target);
  } catch {
    // A value this side can not encode (a mutation set `__proto__` to bytes…): random bytes instead.
    return { bytes: randBytes(int(48)), how: 'random bytes' };
  }
}

function bodyBytesOnce(target: Target): { bytes: Uint8Array; value?: unknown; how: string } {
  const valid = target.body();
  switch (int(12)) {
    case 0: return { bytes: randBytes(int(48)), how: 'random bytes' };
    case 1: { const b = encode(valid); return { bytes: b.subarray(0, int(b.length)), how: 'truncated' }; }
    case 2: { const b = Uint8Array.from(encode(valid)); for (let i = 1 + int(3); i > 0; i--) b[int(b.length)] = int(256); return { bytes: b, how: 'garbled' }; }
    case 3: { const b = encode(valid); return { bytes: Uint8Array.from([...b, ...randBytes(1 + int(4))]), how: 'trailing bytes' }; }
    case 4: return { bytes: cborOddity(), how: 'cbor oddity' };
    case 5: { const v = weirdValue(); return { bytes: encode(v), value: v, how: 'weird value' }; }
    case 6: return { bytes: new Uint8Array(0), how: 'empty' };
    default: {
      const v = chance(0.25) ? valid : mutateValue(valid);
      return { bytes: encode(v), value: v, how: v === valid ? 'valid' : 'mutated' };
    }
  }
}

interface Headers {
  /** Headers nats.js can send. */
  record?: Record<string, string>;
  /** A raw header block (for what nats.js will not build). */
  raw?: string;
  how: string;
}

function deadlineValue(): string {
  const now = Date.now();
  return pick([
    String(now + 5000), String(now + 5000), String(now + 2000), String(now - 1000), '0', String(now + 1e9), String(2 ** 53 - 1), String(2 ** 53), '9'.repeat(17),
    'soon', '', '-5', `${now + 5000}.5`, '1e13', ` ${now + 3000} `, '0x10', String(now + 600_000),
  ]);
}

function headersFor(target: Target): Headers {
  const type = target.type ?? pick([...API_VERBS, ...SHARD_VERBS]);
  const base: Record<string, string> = { [HEADER_TYPE]: type, [HEADER_SCHEMA]: '1', [HEADER_DEADLINE]: String(Date.now() + 5000) };
  if (target.kind === 'replica') base[HEADER_TYPE] = 'raft.vote';
  const r = int(16);
  if (r < 6) return { record: base, how: 'valid' };
  if (r === 6) return { record: undefined, how: 'none' };
  if (r === 7) { const h = { ...base }; delete h[pick(Object.keys(h))]; return { record: h, how: 'one missing' }; }
  if (r === 8) return { record: { ...base, [HEADER_TYPE]: pick([...API_VERBS, ...SHARD_VERBS, 'raft.append', 'bogus', 'x'.repeat(600), 'page.write ', 'PAGE.WRITE']) }, how: 'type' };
  if (r === 9) return { record: { ...base, [HEADER_SCHEMA]: pick(['0', '2', '01', '1.0', '-1', 'x', '999999999', '9999999999', '1'.repeat(600), '+1']) }, how: 'schema' };
  if (r === 10) return { record: { ...base, [HEADER_DEADLINE]: deadlineValue() }, how: 'deadline' };
  if (r === 11) return { record: { ...base, [HEADER_TRACEPARENT]: pick(['00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'garbage', 'x'.repeat(5000), '00-00000000000000000000000000000000-b7ad6b7169203331-01']) }, how: 'traceparent' };
  if (r === 12) {
    // Oversize: one long value or many headers (over 4 KiB: the nats.js decoder's path).
    const h: Record<string, string> = { ...base };
    if (chance(0.5)) h['X-Pad'] = 'p'.repeat(pick([4000, 20_000, 100_000]));
    else for (let i = 0; i < pick([100, 1000]); i++) h[`X-H${i}`] = randToken(20);
    if (chance(0.3)) h[HEADER_DEADLINE] = 'd'.repeat(pick([513, 10_000]));
    return { record: h, how: 'oversize' };
  }
  if (r === 13) return { record: { ...base, 'strata-type': 'bogus', 'STRATA-SCHEMA': '7' }, how: 'case variants' };
  // Raw blocks nats.js will not send.
  const lines = Object.entries(base).map(([k, v]) => `${k}: ${v}`);
  const bad = pick([
    'x: a\nb', 'x: a\rb', 'bad name: 1', ': empty', 'novalue', 'Strata-Schema:1', `${HEADER_TYPE}: ${type}\n${HEADER_SCHEMA}: 2`, 'x: \u00ff\u00fe', 'x: ' + '\u2603'.repeat(10),
  ]);
  const prefix = pick(['NATS/1.0', 'NATS/1.0', 'NATS/1.0 503', 'NATS/1.0 408 Request Timeout', 'NATS/2.0', 'HTTP/1.1']);
  return { raw: `${prefix}\r\n${[...lines, bad].join('\r\n')}\r\n\r\n`, how: `raw ${JSON.stringify(prefix)} ${JSON.stringify(bad)}` };
}

// ---------------------------------------------------------------------------------------------
// Sending: nats.js for ordinary requests, a raw socket for raw header blocks
// ---------------------------------------------------------------------------------------------

/**
 * A raw NATS connection: publishes any header block, and takes the replies to its own requests
 * (subscribed to RAW_REPLY_PREFIX, with no_responders on, so a request nobody serves is told so
 * instead of looking like a hang).
 */
class RawPublisher {
  private socket: net.Socket | undefined;
  private ready: Promise<void> | undefined;
  private buf = Buffer.alloc(0);
  errors = 0;
  constructor(private readonly url: string, private readonly onReply: (subject: string, status: number, data: Uint8Array) => void) {}
  private open(): Promise<void> {
    const u = new URL(this.url);
    this.buf = Buffer.alloc(0);
    return new Promise((resolve, reject) => {
      const s = net.connect(Number(u.port), u.hostname);
      let connected = false;
      s.on('data', (d) => {
        this.buf = Buffer.concat([this.buf, d]);
        for (;;) {
          const i = this.buf.indexOf('\r\n');
          if (i < 0) return;
          const line = this.buf.subarray(0, i).toString('latin1');
          const parts = line.split(' ');
          if (parts[0] === 'MSG' || parts[0] === 'HMSG') {
            const total = Number(parts[parts.length - 1]);
            const hdrLen = parts[0] === 'HMSG' ? Number(parts[parts.length - 2]) : 0;
            if (this.buf.length < i + 2 + total + 2) return; // wait for the rest
            const payload = this.buf.subarray(i + 2, i + 2 + total);
            const hdr = payload.subarray(0, hdrLen).toString('latin1');
            const m = /^NATS\/1\.0 (\d{3})/.exec(hdr);
            this.onReply(parts[1]!, m ? Number(m[1]) : 0, Uint8Array.from(payload.subarray(hdrLen)));
            this.buf = this.buf.subarray(i + 2 + total + 2);
            continue;
          }
          this.buf = this.buf.subarray(i + 2);
          if (line.startsWith('INFO') && !connected) {
            connected = true;
            s.write(`CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1}\r\nSUB ${RAW_REPLY_PREFIX}.> 1\r\nPING\r\n`);
            resolve();
          } else if (line === 'PING') s.write('PONG\r\n');
          else if (line.startsWith('-ERR')) { this.errors++; if (VERBOSE) console.log('raw socket:', line); }
        }
      });
      s.on('error', (e) => { this.socket = undefined; this.ready = undefined; if (!connected) reject(e); });
      s.on('close', () => { this.socket = undefined; this.ready = undefined; });
      this.socket = s;
    });
  }
  async publish(subject: string, reply: string | undefined, header: string, body: Uint8Array): Promise<void> {
    if (!this.ready || !this.socket) this.ready = this.open();
    await this.ready;
    const h = Buffer.from(header, 'utf8');
    const head = `HPUB ${subject}${reply ? ` ${reply}` : ''} ${h.length} ${h.length + body.length}\r\n`;
    this.socket!.write(Buffer.concat([Buffer.from(head), h, Buffer.from(body), Buffer.from('\r\n')]));
  }
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping
// ---------------------------------------------------------------------------------------------

interface Sent {
  id: number;
  round: number;
  target: Target;
  headers: Headers;
  body: Uint8Array;
  bodyHow: string;
  value: unknown;
  sentAt: number;
  /** Latest time a reply may come. */
  dueBy: number;
  replies: number;
  invalid: string | undefined;
}

interface Finding {
  what: string;
  subject: string;
  headers: string;
  bodyHex: string;
  detail: string;
}
const findings: Finding[] = [];
const findingKeys = new Map<string, number>();
function report(what: string, s: Sent | undefined, detail: string): void {
  const key = `${what}|${s?.target.kind ?? ''}|${s?.target.type ?? s?.target.subject.split('.').slice(-1)[0] ?? ''}|${detail.slice(0, 80)}`;
  findingKeys.set(key, (findingKeys.get(key) ?? 0) + 1);
  if (findingKeys.get(key)! > 1) return;
  const f: Finding = {
    what,
    subject: s?.target.subject ?? '',
    headers: s ? (s.headers.raw !== undefined ? JSON.stringify(s.headers.raw) : JSON.stringify(s.headers.record ?? null)).slice(0, 600) : '',
    bodyHex: s ? hex(s.body, 600) : '',
    detail,
  };
  findings.push(f);
  console.log(`FINDING ${what}: ${f.subject} headers=${f.headers} body=${f.bodyHex} (${s?.bodyHow ?? ''}) → ${detail}`);
}

const stats = {
  sent: 0, noReply: 0, raw: 0, replies: 0, errorsByCode: new Map<string, number>(), ok: 0, byKind: new Map<string, number>(),
  byHow: new Map<string, number>(), byHeaders: new Map<string, number>(), noResponders: 0, nearMax: 0,
};
const bump = (m: Map<string, number>, k: string): void => void m.set(k, (m.get(k) ?? 0) + 1);

const pending = new Map<number, Sent>();
let nextId = 0;
let round = 0;

function replyAllowanceMs(s: Sent): number {
  // How long the server may take: the request's deadline (capped as the server caps it), or
  // the default it applies without one; a little slack for a loaded machine.
  const h = s.headers.record ?? {};
  const d = Number(h[HEADER_DEADLINE]);
  const k = s.target.kind;
  const defaultMs = k === 'shard' ? 30_000 : k === 'api' ? 10_000 : k === 'replica' ? 30_000 : 15_000;
  const capMs = k === 'shard' || k === 'replica' ? 300_000 : k === 'api' ? 10_000 : 25_000;
  let allowance = Number.isSafeInteger(d) && /^(0|[1-9][0-9]*)$/.test(h[HEADER_DEADLINE] ?? '') ? Math.min(Math.max(0, d - Date.now()), capMs) : defaultMs;
  if (k === 'controller' || k === 'node') allowance = Math.max(allowance, 25_000); // opens/destroys take the node's own timeouts
  return allowance + 5000;
}

interface ReplyMsg { data: Uint8Array; status: number }
function checkReply(s: Sent, msg: ReplyMsg): void {
  s.replies++;
  stats.replies++;
  if (s.replies > 1 && !s.target.multi) report('more than one reply', s, `reply #${s.replies}`);
  if (s.target.replies !== undefined && s.replies > s.target.replies) report('more replies than responders', s, `reply #${s.replies} of ${s.target.replies}`);
  if (msg.data.length === 0) {
    const code = msg.status;
    if (code === 503) { stats.noResponders++; return; }
    report('empty reply', s, `status ${code}`);
    return;
  }
  if (s.target.kind === 'srv') return; // the NATS service framework's JSON answers
  let reply: unknown;
  try {
    reply = decode(msg.data, { bytesMax: 64 * 1024 * 1024 });
  } catch (e) {
    report('reply is not CBOR', s, `${(e as Error).message}: ${hex(msg.data, 100)}`);
    return;
  }
  if (typeof reply !== 'object' || reply === null || Array.isArray(reply)) {
    report('reply is not a map', s, JSON.stringify(reply)?.slice(0, 200) ?? String(reply));
    return;
  }
  const r = reply as Record<string, unknown>;
  if ('error' in r) {
    const e = r.error as { code?: unknown; message?: unknown };
    const code = String(e?.code);
    bump(stats.errorsByCode, code);
    if (!(ERROR_CODES as readonly string[]).includes(code)) report('unknown error code', s, JSON.stringify(e).slice(0, 300));
    else if (code === 'internal' || code === 'corruption') report(`${code} error`, s, JSON.stringify(e).slice(0, 300));
    if (typeof e?.message !== 'string' || e.message.length > 1024) report('bad error message', s, JSON.stringify(e).slice(0, 300));
    return;
  }
  stats.ok++;
  if (s.invalid !== undefined) report('success reply to an invalid request', s, `local validator: ${s.invalid}; reply ${JSON.stringify(r, (_k, v) => (v instanceof Uint8Array ? `<${v.length} bytes>` : typeof v === 'bigint' ? String(v) : v)).slice(0, 300)}`);
  shapeCheck(s, r);
}

function shapeCheck(s: Sent, r: Record<string, unknown>): void {
  const t = s.target;
  const num = (v: unknown): boolean => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  let ok = true;
  if (t.kind === 'api' || t.kind === 'shard') {
    const type = (s.headers.record ?? {})[HEADER_TYPE] ?? t.type;
    switch (type) {
      case 'page.write': case 'page.zero': case 'volume.flush': case 'shard.write': case 'shard.zero': case 'shard.flush': ok = num(r.lsn); break;
      case 'shard.map': case 'page.map': ok = num(r.lsn) && num(r.end) && Array.isArray(r.ranges); break;
      case 'page.read': case 'shard.read': ok = num(r.lsn) && Array.isArray(r.pages) && r.pages.every((p) => p instanceof Uint8Array); break;
      case 'volume.list': ok = Array.isArray(r.volumes); break;
      case 'volume.info': case 'volume.create': ok = typeof r.id === 'string' && typeof r.name === 'string'; break;
      case 'volume.branch': ok = typeof r.id === 'string' && typeof r.name === 'string' && typeof r.branch === 'object' && r.branch !== null; break;
      case 'volume.delete': ok = r.deleted === true; break;
      case 'status': ok = typeof r.node === 'object'; break;
    }
  } else if (t.kind === 'replica') {
    // A heartbeats message is answered with its entries' replies, each encoded on its own.
    ok = t.subject.startsWith(heartbeatsSubject(CLUSTER, '')) ? Array.isArray(r.r) : num(r.term);
  }
  if (!ok) report('reply of the wrong shape', s, JSON.stringify(r, (_k, v) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v)).slice(0, 300));
}

// ---------------------------------------------------------------------------------------------
// One request
// ---------------------------------------------------------------------------------------------

let nc: NatsConnection;
let raw: RawPublisher;
let maxPayload = 1024 * 1024;
const REPLY_PREFIX = `fzr.${SEED}`;
const RAW_REPLY_PREFIX = `fzq.${SEED}`;

async function sendOne(targets: Target[]): Promise<void> {
  const target = pick(targets);
  const headers = headersFor(target);
  let { bytes, value, how } = bodyBytes(target);
  if (chance(0.02)) {
    // Near the server's max_payload (less the headers).
    const hdrBytes = headers.raw !== undefined ? Buffer.byteLength(headers.raw) : Object.entries(headers.record ?? {}).reduce((n, [k, v]) => n + k.length + v.length + 4, 14);
    const size = maxPayload - hdrBytes - pick([0, 1, 64, 1024, 20_000]) - 64;
    if (chance(0.5) && target.kind !== 'replica') {
      // A valid-looking write of many pages, padded to the size.
      const v = facts.aux;
      const n = Math.floor(size / (v.pageSize + 16));
      value = { volume: AUX, pages: Array.from({ length: n }, (_, i) => ({ page: i, data: new Uint8Array(v.pageSize) })) };
      if (target.kind === 'shard') value = { pages: (value as { pages: unknown[] }).pages };
      bytes = encode(value, { bytesMax: 64 * 1024 * 1024 });
      if (bytes.length > size) { bytes = bytes.subarray(0, size); value = undefined; how = 'near max_payload (truncated)'; } else how = 'near max_payload';
    } else {
      bytes = randBytes(Math.max(0, size));
      value = undefined;
      how = 'near max_payload (random)';
    }
    stats.nearMax++;
  }
  // What the server sees: the bytes decoded (a value built here may differ, e.g. a `__proto__` key).
  try { value = decode(bytes, { bytesMax: 64 * 1024 * 1024 }); } catch { value = undefined; }
  if (value !== undefined && target.forbidden?.(value)) return;
  // The destination must not be a destructive-by-design request even when the body was garbled into one.
  if (target.kind === 'shard' && target.subject.includes(facts.real.id) && value !== undefined && isWriteLike(value)) return;
  let invalid: string | undefined;
  if (target.check) {
    if (headers.raw !== undefined) {
      // Only a block nats.js's decoder refuses is surely invalid (the API and shard subjects read
      // headers). A line with an empty name (`: empty`) is not: the decoder takes it, and the
      // protocol (docs/protocol.md) names the headers it reads, not the others.
      if ((target.kind === 'api' || target.kind === 'shard') && /a\nb|a\rb|bad name/.test(headers.raw)) invalid = 'malformed raw header block';
    } else {
      try {
        if (value === undefined) throw new Error('not CBOR');
        target.check(value, headers.record);
      } catch (e) {
        invalid = (e as Error).message.slice(0, 200);
      }
    }
  }
  if (value !== undefined && typeof value === 'object' && value !== null && 'name' in value && typeof (value as { name: unknown }).name === 'string' && String((value as { name: string }).name).startsWith('fzc-') && (target.subject.endsWith('volume.create') || target.subject.endsWith('volume.branch'))) {
    createdCount++;
    facts.created.add((value as { name: string }).name);
  }
  const withReply = !chance(0.08);
  const id = nextId++;
  const reply = withReply ? `${headers.raw !== undefined ? RAW_REPLY_PREFIX : REPLY_PREFIX}.${id}` : undefined;
  const s: Sent = { id, round, target, headers, body: bytes, bodyHow: how, value, sentAt: Date.now(), dueBy: 0, replies: 0, invalid };
  s.dueBy = s.sentAt + replyAllowanceMs(s);
  stats.sent++;
  bump(stats.byKind, target.kind);
  bump(stats.byHow, how);
  bump(stats.byHeaders, headers.how.startsWith('raw') ? 'raw' : headers.how);
  if (withReply) pending.set(id, s);
  else stats.noReply++;
  try {
    if (headers.raw !== undefined) {
      stats.raw++;
      await raw.publish(target.subject, reply, headers.raw, bytes);
    } else {
      let h: ReturnType<typeof natsHeaders> | undefined;
      if (headers.record) {
        h = natsHeaders();
        for (const [k, v] of Object.entries(headers.record)) h.append(k, v);
      }
      nc.publish(target.subject, bytes, { ...(reply ? { reply } : {}), ...(h ? { headers: h } : {}) });
    }
  } catch (e) {
    pending.delete(id);
    const m = (e as Error).message;
    if (!/MAX_PAYLOAD|maximum payload|exceeded/i.test(m)) report('send failed', s, m);
  }
}

// ---------------------------------------------------------------------------------------------
// Health checks between rounds
// ---------------------------------------------------------------------------------------------

const logLines: string[] = [];
function captureStderr(): void {
  const orig = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: unknown, ...rest: unknown[]): boolean => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8');
    for (const line of text.split('\n')) if (line.trim()) logLines.push(line);
    if (VERBOSE) return (orig as (c: unknown, ...r: unknown[]) => boolean)(chunk, ...rest);
    return true;
  }) as typeof process.stderr.write;
}

const expected = new Map<number, Uint8Array>();
const REAL_PAGES = 48;

async function checkData(c: InProcessCluster, label: string): Promise<void> {
  const vol = c.client.volume(REAL);
  const pages = [...expected.keys()];
  for (let i = 0; i < pages.length; i += 16) {
    const chunk = pages.slice(i, i + 16);
    let got;
    try {
      got = await vol.readPages(chunk);
    } catch (e) {
      let view = '';
      try {
        const st = (await c.client.status()) as unknown as { volumes: Array<{ name: string; shards: unknown[] }> };
        view = JSON.stringify(st.volumes.find((v) => v.name === REAL)?.shards);
      } catch (e2) { view = String(e2); }
      report('real volume not readable', undefined, `${label}: ${(e as Error).message}; shards: ${view}`);
      return;
    }
    chunk.forEach((p, j) => {
      if (!Buffer.from(got.pages[j]!).equals(Buffer.from(expected.get(p)!))) report('DATA CHANGED', undefined, `${label}: page ${p} of ${REAL} differs`);
    });
  }
}

interface Baseline { hostRestarts: number[]; deviceRestarts: number[] }
let baseline: Baseline | undefined;

async function checkNodes(c: InProcessCluster, label: string): Promise<void> {
  const hostRestarts: number[] = [];
  const deviceRestarts: number[] = [];
  for (let i = 0; i < c.nodes.length; i++) {
    const n = c.nodes[i];
    if (!n) { report('node gone', undefined, `${label}: node ${i}`); continue; }
    if ((n as unknown as { stopped?: boolean }).stopped) report('node stopped itself', undefined, `${label}: n${i + 1}`);
    try {
      const st = (await n.status()) as { hosts: Array<{ restarts: number; deviceRestarts: number; lastExit?: unknown; ok: boolean; reason?: string }>; shards: Array<{ state?: string; volumeId?: string; shard?: number; downReason?: string }> };
      hostRestarts.push(st.hosts.reduce((t, h) => t + h.restarts, 0));
      deviceRestarts.push(st.hosts.reduce((t, h) => t + h.deviceRestarts, 0));
      for (const h of st.hosts) if (h.lastExit) report('host exited', undefined, `${label}: n${i + 1} ${JSON.stringify(h.lastExit)}`);
      for (const sh of st.shards) if (sh.state === 'down') report('shard down', undefined, `${label}: n${i + 1} ${sh.volumeId}/${sh.shard}: ${sh.downReason}`);
    } catch (e) {
      report('node status failed', undefined, `${label}: n${i + 1}: ${(e as Error).message}`);
    }
    // Served over NATS too.
    try {
      const r = await nc.request(nodeSubject(CLUSTER, `n${i + 1}`, 'status'), encode({}), { timeout: 5000 });
      const body = decode(r.data) as { error?: unknown };
      if (body.error) report('node status over NATS refused', undefined, `${label}: n${i + 1} ${JSON.stringify(body.error)}`);
    } catch (e) {
      report('node status over NATS failed', undefined, `${label}: n${i + 1}: ${(e as Error).message}`);
    }
  }
  if (baseline) {
    hostRestarts.forEach((r, i) => { if (r !== baseline!.hostRestarts[i]) report('host restarted', undefined, `${label}: n${i + 1} host restarts ${baseline!.hostRestarts[i]} → ${r}`); });
    deviceRestarts.forEach((r, i) => { if (r !== baseline!.deviceRestarts[i]) report('replica restarted', undefined, `${label}: n${i + 1} replica restarts ${baseline!.deviceRestarts[i]} → ${r}`); });
  }
  baseline = { hostRestarts, deviceRestarts };
  // Error-level logs (and warnings worth a look).
  const lines = logLines.splice(0);
  for (const line of lines) {
    let o: { level?: string; msg?: string } = {};
    try { o = JSON.parse(line) as typeof o; } catch { o = { level: 'text', msg: line }; }
    if (o.level === 'error' || o.level === 'text') report(`logged at ${o.level}`, undefined, `${label}: ${line.slice(0, 600)}`);
    else if (o.level === 'warn') bump(warns, o.msg ?? '');
  }
}
const warns = new Map<string, number>();

const memory: Array<{ round: number; rss: number; heap: number; external: number; arrayBuffers: number }> = [];
function sampleMemory(): void {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  memory.push({ round, rss: m.rss, heap: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers });
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  captureStderr();
  console.log(`fuzz-subjects seed=${SEED} duration=${DURATION_MS / 1000}s round=${ROUND_MS / 1000}s concurrency=${CONCURRENCY}`);
  const c = await startCluster({ nodes: 3, hosts: 1, cluster: CLUSTER });
  let exitCode = 0;
  try {
    nc = await natsConnect({ servers: c.natsUrl, maxReconnectAttempts: -1 });
    maxPayload = nc.info?.max_payload ?? maxPayload;
    const onReply = (id: number, m: ReplyMsg): void => {
      // One answered in full stays known for a while: a reply more is a finding (checkReply).
      const s = pending.get(id) ?? late.get(id) ?? answered.get(id)?.sent;
      if (!s) return;
      try { checkReply(s, m); } catch (e) { report('fuzzer could not check a reply', s, String(e)); }
      if ((!s.target.multi || s.replies === s.target.replies) && (pending.delete(id) || late.delete(id))) {
        answered.set(id, { sent: s, until: Date.now() + ANSWERED_KEPT_MS });
      }
    };
    // A reply subject is `<prefix>.<id>`, or `<prefix>.<id>.<node>` from a follower answering an
    // append sent to all of a leader's followers.
    const idOf = (subject: string, prefix: string): number => Number(subject.slice(prefix.length + 1).split('.')[0]);
    raw = new RawPublisher(c.natsUrl, (subject, status, data) => onReply(idOf(subject, RAW_REPLY_PREFIX), { data, status }));
    nc.subscribe(`${REPLY_PREFIX}.>`, {
      callback: (err, msg) => {
        if (err) return;
        let status = 0;
        try { status = msg.headers?.code ?? 0; } catch { /* */ }
        onReply(idOf(msg.subject, REPLY_PREFIX), { data: msg.data, status });
      },
    });
    await nc.flush();
    const real = await c.client.createVolume({ name: REAL, pageCount: 64, shards: 2, stripePages: 4, replicas: 3 });
    const aux = await c.client.createVolume({ name: AUX, pageCount: 512, shards: 2, stripePages: 8, replicas: 3 });
    facts = { nodes: ['n1', 'n2', 'n3'], real, aux, created: new Set(), fakeOpened: 0 };
    const vol = c.client.volume(REAL);
    for (let p = 0; p < REAL_PAGES; p++) {
      const data = new Uint8Array(4096);
      for (let i = 0; i < data.length; i++) data[i] = (p * 31 + i * 7 + SEED) & 0xff;
      expected.set(p, data);
    }
    for (let p = 0; p < REAL_PAGES; p += 8) await vol.writePages([...Array(8).keys()].map((i) => ({ page: p + i, data: expected.get(p + i)! })));
    await c.client.volume(AUX).write(0, new Uint8Array(4096).fill(1));
    await checkData(c, 'before fuzzing');
    await checkNodes(c, 'before fuzzing');
    sampleMemory();

    let targets = [...apiTargets(), ...shardTargets(), ...replicaTargets(), ...controllerTargets(), ...nodeTargets()];
    if (ONLY) targets = targets.filter((t) => t.kind.includes(ONLY) || t.subject.includes(ONLY));
    const kinds = new Map<string, number>();
    for (const t of targets) bump(kinds, t.kind);
    console.log(`${targets.length} targets: ${[...kinds].map(([k, n]) => `${k}=${n}`).join(' ')}`);

    const start = Date.now();
    while (Date.now() - start < DURATION_MS) {
      round++;
      const roundEnd = Math.min(Date.now() + ROUND_MS, start + DURATION_MS);
      const sentBefore = stats.sent;
      while (Date.now() < roundEnd) {
        // Keep at most CONCURRENCY requests of this round waiting.
        let waiting = 0;
        for (const s of pending.values()) if (s.round === round) waiting++;
        if (waiting >= CONCURRENCY) { await new Promise((r) => setTimeout(r, 2)); continue; }
        await sendOne(targets);
        if (stats.sent % 50 === 0) await new Promise((r) => setImmediate(r));
      }
      // Wait for this round's replies (up to the longest a short request may take), then move
      // the ones with long deadlines to `late`, checked at their own time.
      const waitUntil = Date.now() + 15_000;
      while (Date.now() < waitUntil && [...pending.values()].some((s) => s.round === round && s.dueBy <= waitUntil)) await new Promise((r) => setTimeout(r, 50));
      expireHangs();
      const label = `round ${round}`;
      await checkData(c, label);
      await checkNodes(c, label);
      // Delete what the fuzzer created, so the cluster stays small.
      for (const name of [...facts.created]) {
        await c.client.deleteVolume(name).catch(() => undefined);
        facts.created.delete(name);
      }
      sampleMemory();
      const m = memory[memory.length - 1]!;
      console.log(`${label}: ${stats.sent - sentBefore} sent (total ${stats.sent}), pending ${pending.size}, late ${late.size}, findings ${findings.length}, rss ${(m.rss / 2 ** 20).toFixed(0)} MiB heap ${(m.heap / 2 ** 20).toFixed(0)} MiB`);
    }
    // The late ones.
    const lastDue = Math.max(0, ...[...pending.values(), ...late.values()].map((s) => s.dueBy));
    const lateUntil = Math.min(lastDue, Date.now() + 60_000);
    while (Date.now() < lateUntil && (pending.size > 0 || late.size > 0)) {
      await new Promise((r) => setTimeout(r, 200));
      expireHangs();
    }
    expireHangs(true);
    await checkData(c, 'end');
    await checkNodes(c, 'end');
    summary();
    exitCode = findings.length > 0 ? 1 : 0;
  } finally {
    await nc?.close().catch(() => undefined);
    await c.stop();
  }
  process.exit(exitCode);
}

const late = new Map<number, Sent>();
/** How long a request answered in full is kept, for a reply more to be seen (and reported). */
const ANSWERED_KEPT_MS = 10_000;
/** Requests answered in full, until ANSWERED_KEPT_MS after: checked for replies more than they should have. */
const answered = new Map<number, { sent: Sent; until: number }>();
function expireHangs(final = false): void {
  const now = Date.now();
  for (const [id, a] of answered) if (now > a.until || final) answered.delete(id);
  for (const [id, s] of pending) {
    if (s.round !== round && !final) continue;
    if (s.target.multi) {
      if (now > s.dueBy) { pending.delete(id); if (s.replies === 0 && s.target.silentFor?.(s.value) !== true) report('no reply (hang)', s, `${s.target.kind}: no reply within ${s.dueBy - s.sentAt} ms`); }
      continue;
    }
    if (now > s.dueBy) { pending.delete(id); if (s.target.silentFor?.(s.value) !== true) report('no reply (hang)', s, `${s.target.kind}: no reply within ${s.dueBy - s.sentAt} ms`); }
    else if (!final) { pending.delete(id); late.set(id, s); }
  }
  for (const [id, s] of late) {
    if (now > s.dueBy || final) { late.delete(id); if (s.replies === 0 && s.target.silentFor?.(s.value) !== true) report('no reply (hang)', s, `${s.target.kind}: no reply within ${s.dueBy - s.sentAt} ms (long deadline)`); }
  }
}

function summary(): void {
  const fmt = (m: Map<string, number>): string => [...m].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}=${n}`).join(' ');
  console.log('\n==== summary ====');
  console.log(`seed ${SEED}, ${round} rounds, ${stats.sent} requests (${stats.noReply} without a reply subject, ${stats.raw} with raw header blocks, ${stats.nearMax} near max_payload)`);
  console.log(`by subject kind: ${fmt(stats.byKind)}`);
  console.log(`by body: ${fmt(stats.byHow)}`);
  console.log(`by headers: ${fmt(stats.byHeaders)}`);
  console.log(`replies ${stats.replies}: ok ${stats.ok}, errors ${fmt(stats.errorsByCode)}, no responders ${stats.noResponders}`);
  console.log(`warnings logged: ${fmt(warns)}`);
  const first = memory[1] ?? memory[0]!;
  const last = memory[memory.length - 1]!;
  console.log(`memory: rss ${(first.rss / 2 ** 20).toFixed(0)} → ${(last.rss / 2 ** 20).toFixed(0)} MiB, heap ${(first.heap / 2 ** 20).toFixed(0)} → ${(last.heap / 2 ** 20).toFixed(0)} MiB, external ${(first.external / 2 ** 20).toFixed(0)} → ${(last.external / 2 ** 20).toFixed(0)} MiB`);
  console.log(`memory by round (MiB rss/heap): ${memory.map((m) => `${(m.rss / 2 ** 20).toFixed(0)}/${(m.heap / 2 ** 20).toFixed(0)}`).join(' ')}`);
  console.log(`${findings.length} distinct findings (${[...findingKeys.values()].reduce((a, b) => a + b, 0)} occurrences)`);
  for (const [k, n] of findingKeys) console.log(`  ${n}× ${k}`);
}

main().catch((e) => {
  console.log('fuzzer failed:', e);
  process.exit(2);
});
