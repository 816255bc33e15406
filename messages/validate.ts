/**
 * Hand-written runtime validators of every Strata request and reply.
 *
 * A validator takes a decoded message (`unknown`) and returns a typed value or throws a
 * ProtocolError whose message names the field path (`pages[3].data: expected 4096 bytes, got 100`)
 * and whose details carry `{ path }`:
 * - `bad_request`: wrong type, missing field, unknown request field, bad name, number outside a
 *   parameter's allowed range, wrong page data length, duplicate page in a write;
 * - `out_of_range`: a page number outside the volume (or beyond PAGE_COUNT_MAX);
 * - `too_large`: more than PAGES_PER_REQUEST_MAX pages, or more than REQUEST_DATA_BYTES_MAX of data.
 *
 * Requests are read strictly (an unknown field is rejected, so a client relying on a field this
 * server does not know learns it); replies tolerantly (unknown fields are ignored, so a server may
 * add reply fields). A CBOR `null` is accepted as "absent" for optional fields.
 *
 * The checks that need the volume's geometry are separate: `validatePageWrite`,
 * `validatePageRead`, `validateShardWrite`, `validateShardRead`.
 */
import {
  EARLIER_ATTEMPTS_MAX,
  WRITE_ID_BYTES,
  ID_LENGTH_MAX,
  LSN_MAX,
  NAME_LENGTH_MAX,
  PAGE_COUNT_MAX,
  PAGE_SIZES_BYTES,
  PAGE_SIZE_BYTES_DEFAULT,
  PAGES_PER_REQUEST_MAX,
  REPLICA_COUNTS,
  REPLICAS_DEFAULT,
  REQUEST_DATA_BYTES_MAX,
  SHARD_MAP_RANGES_MAX,
  PAGE_MAP_RANGES_MAX,
  SHARDS_DEFAULT,
  SHARDS_MAX,
  STRIPE_PAGES_DEFAULT,
  STRIPE_PAGES_MAX,
  VOLUMES_PER_LIST_MAX,
  shardOfPage,
} from './api';
import type {
  MessageType,
  PageReadReply,
  PageReadRequest,
  PageSize,
  PageWrite,
  PageWriteReply,
  PageWriteRequest,
  PageZeroRequest,
  ReplicaCount,
  ReplyMap,
  ShardFlushReply,
  ShardFlushRequest,
  ShardLsn,
  ShardReadReply,
  ShardReadRequest,
  ShardRole,
  ShardStatus,
  ShardWriteReply,
  ShardWriteRequest,
  ShardZeroRequest,
  ShardMapRequest,
  ShardMapReply,
  PageMapRequest,
  PageMapReply,
  WriteRecordRef,
  StatusReply,
  StatusRequest,
  ValidRequestMap,
  BranchPoint,
  VolumeBranchRequest,
  VolumeDeleteReply,
  VolumeDeleteRequest,
  RequestId,
  VolumeFlushReply,
  VolumeFlushRequest,
  VolumeInfo,
  ReplicaSetInfo,
  VolumeLayout,
  VolumeListReply,
  VolumeListRequest,
  VolumeNameRequest,
  VolumeResizeRequest,
  VolumeSpec,
  VolumeStatus,
} from './api';
import { ProtocolError } from './errors';
import type { ErrorCode } from './errors';

/** A validator: a decoded message in, a typed value out, or a ProtocolError thrown. */
export type Validator<T> = (value: unknown) => T;

// ---------------------------------------------------------------------------------------------
// Building blocks (exported for other message modules; not part of the index surface)
// ---------------------------------------------------------------------------------------------

/** Longest excerpt of a bad string value quoted in an error message, in characters. */
const QUOTE_LENGTH_MAX = 40;

const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]*$/;
const ID_PATTERN = /^[A-Za-z0-9_-]+$/;

function label(path: string): string {
  return path === '' ? 'message' : path;
}

/** Throws a ProtocolError for `path` with `{ path }` (plus `extra`) as details. */
export function fail(code: ErrorCode, path: string, message: string, extra?: Record<string, unknown>): never {
  throw new ProtocolError(code, `${label(path)}: ${message}`, { path, ...extra });
}

/** A short description of a value's type for error messages ("an array", "the number 1.5"). */
export function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (typeof value === 'number') return `the number ${value}`;
  if (typeof value === 'string') {
    const quoted = value.length > QUOTE_LENGTH_MAX ? `${value.slice(0, QUOTE_LENGTH_MAX)}…` : value;
    return `the string ${JSON.stringify(quoted)}`;
  }
  if (typeof value !== 'object') return `a ${typeof value}`;
  if (value instanceof Uint8Array) return `a byte string of ${value.byteLength} bytes`;
  if (Array.isArray(value)) return `an array of ${value.length}`;
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) return 'a map';
  const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === 'string' ? `a ${name}` : 'an object';
}

function expected(path: string, what: string, value: unknown): never {
  if (value === undefined) fail('bad_request', path, `required field is missing (expected ${what})`);
  fail('bad_request', path, `expected ${what}, got ${describe(value)}`);
}

/** Joins a parent path and a field name: `('', 'pages')` → `pages`, `('pages[3]', 'data')` → `pages[3].data`. */
export function fieldPath(parent: string, key: string): string {
  return parent === '' ? key : `${parent}.${key}`;
}

/** The own property `key` of a decoded map, or undefined. */
export function field(map: Readonly<Record<string, unknown>>, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(map, key) ? map[key] : undefined;
}

/** A plain map (decoded CBOR map), not an array, byte string, Date or other object. */
export function expectMap(value: unknown, path: string): Record<string, unknown> {
  if (typeof value === 'object' && value !== null) {
    const proto: unknown = Object.getPrototypeOf(value);
    if (proto === Object.prototype || proto === null) return value as Record<string, unknown>;
  }
  expected(path, 'a map', value);
}

/** Rejects any field of `map` not in `allowed` (requests are read strictly). */
export function expectKnownFields(map: Readonly<Record<string, unknown>>, allowed: ReadonlySet<string>, path: string): void {
  for (const key of Object.keys(map)) {
    if (!allowed.has(key)) {
      fail('bad_request', fieldPath(path, key), `unknown field (allowed: ${[...allowed].join(', ') || 'none'})`);
    }
  }
}

/** Bounds of an integer field; `maxCode` is the code when the value is above `max`. */
export interface IntegerBounds {
  min: number;
  max: number;
  maxCode?: ErrorCode;
}

/** A safe integer within `bounds` (inclusive). Below min: bad_request; above max: `maxCode`. */
export function expectInteger(value: unknown, path: string, bounds: IntegerBounds): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) expected(path, 'an integer', value);
  if (value < bounds.min) {
    fail('bad_request', path, `expected an integer in ${bounds.min}..${bounds.max}, got ${value}`);
  }
  if (value > bounds.max) {
    fail(bounds.maxCode ?? 'bad_request', path, `expected an integer in ${bounds.min}..${bounds.max}, got ${value}`);
  }
  return value;
}

/** An LSN, term or other counter: an integer in 0..LSN_MAX. */
export function expectCounter(value: unknown, path: string): number {
  return expectInteger(value, path, { min: 0, max: LSN_MAX });
}

/** One of a fixed set of values. */
export function expectOneOf<T extends string | number>(value: unknown, allowed: readonly T[], path: string): T {
  if ((allowed as readonly unknown[]).includes(value)) return value as T;
  expected(path, `one of ${allowed.map((v) => JSON.stringify(v)).join(', ')}`, value);
}

/** A string of 0..lengthMax characters. */
export function expectString(value: unknown, path: string, lengthMax: number): string {
  if (typeof value !== 'string') expected(path, 'a string', value);
  if (value.length > lengthMax) fail('bad_request', path, `expected at most ${lengthMax} characters, got ${value.length}`);
  return value;
}

/** A volume name: 1..NAME_LENGTH_MAX characters matching `[a-z0-9][a-z0-9._-]*`. */
export function expectName(value: unknown, path: string): string {
  if (typeof value === 'string' && value.length <= NAME_LENGTH_MAX && NAME_PATTERN.test(value)) return value;
  expected(path, `a name of 1..${NAME_LENGTH_MAX} characters matching [a-z0-9][a-z0-9._-]*`, value);
}

/** An id usable as a subject token: 1..ID_LENGTH_MAX characters of `[A-Za-z0-9_-]`. */
export function expectId(value: unknown, path: string): string {
  if (typeof value === 'string' && value.length <= ID_LENGTH_MAX && ID_PATTERN.test(value)) return value;
  expected(path, `an id of 1..${ID_LENGTH_MAX} characters of [A-Za-z0-9_-]`, value);
}

/**
 * A byte string. The decoder hands out Buffers on Node; they are returned as plain Uint8Array
 * views of the same memory (no copy), so every consumer sees the one documented type.
 */
export function expectBytes(value: unknown, path: string): Uint8Array {
  if (value instanceof Uint8Array) {
    return Object.getPrototypeOf(value) === Uint8Array.prototype ? value : new Uint8Array(value.buffer, value.byteOffset, value.length);
  }
  expected(path, 'a byte string', value);
}

/** A boolean. */
export function expectBoolean(value: unknown, path: string): boolean {
  if (typeof value === 'boolean') return value;
  expected(path, 'a boolean', value);
}

/** An array of lengthMin..lengthMax entries; over lengthMax gives `maxCode` (default bad_request). */
export function expectArray(
  value: unknown,
  path: string,
  bounds: { lengthMin: number; lengthMax: number; maxCode?: ErrorCode },
): unknown[] {
  if (!Array.isArray(value)) expected(path, 'an array', value);
  if (value.length < bounds.lengthMin) {
    fail('bad_request', path, `expected at least ${bounds.lengthMin} entries, got ${value.length}`);
  }
  if (value.length > bounds.lengthMax) {
    fail(bounds.maxCode ?? 'bad_request', path, `expected at most ${bounds.lengthMax} entries, got ${value.length}`, {
      entries: value.length,
      entriesMax: bounds.lengthMax,
    });
  }
  return value;
}

/** An optional field: undefined (absent) or null gives undefined, anything else goes to `check`. */
export function optional<T>(value: unknown, check: (value: unknown) => T): T | undefined {
  return value === undefined || value === null ? undefined : check(value);
}

function fields(...names: string[]): ReadonlySet<string> {
  return new Set(names);
}

// ---------------------------------------------------------------------------------------------
// Shared pieces of messages
// ---------------------------------------------------------------------------------------------

const PAGE_BOUNDS: IntegerBounds = { min: 0, max: PAGE_COUNT_MAX - 1, maxCode: 'out_of_range' };
const PAGE_LIST_BOUNDS = { lengthMin: 1, lengthMax: PAGES_PER_REQUEST_MAX, maxCode: 'too_large' as const };
const PAGE_WRITE_FIELDS = fields('page', 'data');

/**
 * The `pages` of a write: 1..PAGES_PER_REQUEST_MAX entries `{page, data}`, distinct pages, data of
 * an allowed page size and the same size in every entry, ≤ REQUEST_DATA_BYTES_MAX bytes in all.
 * Returns the input array (no copy).
 */
export function validatePageWrites(value: unknown, path: string): PageWrite[] {
  const list = expectArray(value, path, PAGE_LIST_BOUNDS);
  const seen = new Map<number, number>();
  let dataBytes = 0;
  let pageBytes = 0;
  for (let i = 0; i < list.length; i++) {
    const entryPath = `${path}[${i}]`;
    const entry = expectMap(list[i], entryPath);
    expectKnownFields(entry, PAGE_WRITE_FIELDS, entryPath);
    const page = expectInteger(field(entry, 'page'), `${entryPath}.page`, PAGE_BOUNDS);
    const data = expectBytes(field(entry, 'data'), `${entryPath}.data`);
    if (i === 0) {
      if (!(PAGE_SIZES_BYTES as readonly number[]).includes(data.byteLength)) {
        fail('bad_request', `${entryPath}.data`, `expected ${PAGE_SIZES_BYTES.join(' or ')} bytes, got ${data.byteLength}`);
      }
      pageBytes = data.byteLength;
    } else if (data.byteLength !== pageBytes) {
      fail('bad_request', `${entryPath}.data`, `expected ${pageBytes} bytes like ${path}[0].data, got ${data.byteLength}`);
    }
    const first = seen.get(page);
    if (first !== undefined) {
      fail('bad_request', `${entryPath}.page`, `duplicate page ${page} (also at ${path}[${first}])`);
    }
    seen.set(page, i);
    dataBytes += data.byteLength;
  }
  if (dataBytes > REQUEST_DATA_BYTES_MAX) {
    fail('too_large', path, `${dataBytes} bytes of page data exceed the limit of ${REQUEST_DATA_BYTES_MAX} bytes`, {
      bytes: dataBytes,
      bytesMax: REQUEST_DATA_BYTES_MAX,
    });
  }
  return list as PageWrite[];
}

/** The `pages` of a read: 1..PAGES_PER_REQUEST_MAX page numbers. Returns the input array. */
export function validatePageNumbers(value: unknown, path: string): number[] {
  const list = expectArray(value, path, PAGE_LIST_BOUNDS);
  for (let i = 0; i < list.length; i++) expectInteger(list[i], `${path}[${i}]`, PAGE_BOUNDS);
  return list as number[];
}

function validatePageData(value: unknown, path: string): Uint8Array[] {
  const list = expectArray(value, path, { lengthMin: 0, lengthMax: PAGES_PER_REQUEST_MAX });
  for (let i = 0; i < list.length; i++) expectBytes(list[i], `${path}[${i}]`);
  return list as Uint8Array[];
}

function validateShardLsn(value: unknown, path: string): ShardLsn {
  const map = expectMap(value, path);
  const shard = expectInteger(field(map, 'shard'), fieldPath(path, 'shard'), { min: 0, max: SHARDS_MAX - 1 });
  const lsn = expectCounter(field(map, 'lsn'), fieldPath(path, 'lsn'));
  const term = optional(field(map, 'term'), (v) => expectCounter(v, fieldPath(path, 'term')));
  return term === undefined ? { shard, lsn } : { shard, lsn, term };
}

function validateShardLsns(value: unknown, path: string): ShardLsn[] | undefined {
  return optional(value, (v) => {
    const list = expectArray(v, path, { lengthMin: 0, lengthMax: SHARDS_MAX });
    return list.map((entry, i) => validateShardLsn(entry, `${path}[${i}]`));
  });
}

// `base` is always a literal just built by the caller: the optional field is set on it in place
// (a spread copy per reply cost 2 % of a client's CPU).
function withLsns<T extends object>(base: T, lsns: ShardLsn[] | undefined): T & { lsns?: ShardLsn[] } {
  if (lsns !== undefined) (base as T & { lsns?: ShardLsn[] }).lsns = lsns;
  return base;
}

function withTerm<T extends object>(base: T, term: number | undefined): T & { term?: number } {
  if (term !== undefined) (base as T & { term?: number }).term = term;
  return base;
}

function withCrc<T extends object>(base: T, crc: number | undefined): T & { crc?: number } {
  if (crc !== undefined) (base as T & { crc?: number }).crc = crc;
  return base;
}

// ---------------------------------------------------------------------------------------------
// Volumes
// ---------------------------------------------------------------------------------------------

const VOLUME_CREATE_FIELDS = fields('name', 'pageCount', 'pageSize', 'shards', 'stripePages', 'replicas', 'requestId');

/**
 * True when a catalog change's body carries a request id (RequestId): the catalog answers it sent
 * again as it was made, so it may be sent again when its answer does not come.
 */
export function hasRequestId(body: unknown): boolean {
  return requestIdIn(body) !== undefined;
}

/** The `requestId` a change's body carries (a string), if any. */
export function requestIdIn(body: unknown): string | undefined {
  const id = typeof body === 'object' && body !== null ? (body as { requestId?: unknown }).requestId : undefined;
  return typeof id === 'string' ? id : undefined;
}

/** A change's `requestId` (RequestId), if any: `{ requestId }` or `{}`. */
function requestIdOf(map: Record<string, unknown>): { requestId?: RequestId } {
  const requestId = optional(field(map, 'requestId'), (v) => expectId(v, 'requestId'));
  return requestId === undefined ? {} : { requestId };
}

/** volume.create request → its VolumeSpec with defaults filled in (and its requestId, if any). */
export function validateVolumeCreateRequest(value: unknown): VolumeSpec & { requestId?: RequestId } {
  const map = expectMap(value, '');
  expectKnownFields(map, VOLUME_CREATE_FIELDS, '');
  const spec = { ...volumeCreateSpec(map), ...requestIdOf(map) };
  // Every shard holds pages: a shard beyond the volume's stripes would hold none.
  const stripes = Math.ceil(spec.pageCount / spec.stripePages);
  if (spec.shards > stripes) {
    fail('bad_request', 'shards', `${spec.shards} shards, but ${spec.pageCount} pages in stripes of ${spec.stripePages} make ${stripes} stripe${stripes === 1 ? '' : 's'}: at most ${stripes} shard${stripes === 1 ? '' : 's'} would hold pages`);
  }
  return spec;
}

const VOLUME_BRANCH_FIELDS = fields('name', 'parent', 'lsns', 'requestId');

/**
 * The LSN of each shard of a branch point (`lsns` of volume.branch, VolumeInfo.branch): 1..SHARDS_MAX
 * counters (0..LSN_MAX), by shard. Whether there is one per shard of the parent is the catalog's to
 * say. Returns a copy.
 */
export function validateBranchLsns(value: unknown, path: string): number[] {
  const list = expectArray(value, path, { lengthMin: 1, lengthMax: SHARDS_MAX });
  return list.map((v, i) => expectCounter(v, `${path}[${i}]`));
}

/**
 * volume.branch request: `name` as volume.create's, `parent` a volume name, `lsns` (optional)
 * 1..SHARDS_MAX LSNs; `bad_request` naming the field otherwise. Whether `parent` exists, `name`
 * is free (a name taken, the parent's too, is `already_exists`) and `lsns` holds one LSN per shard
 * of the parent is the catalog's to say.
 */
export function validateVolumeBranchRequest(value: unknown): VolumeBranchRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, VOLUME_BRANCH_FIELDS, '');
  const name = expectName(field(map, 'name'), 'name');
  const parent = expectName(field(map, 'parent'), 'parent');
  const lsns = optional(field(map, 'lsns'), (v) => validateBranchLsns(v, 'lsns'));
  return { name, parent, ...(lsns === undefined ? {} : { lsns }), ...requestIdOf(map) };
}

/** VolumeInfo.branch (read tolerantly, as a reply). */
function validateBranchPoint(value: unknown, path: string): BranchPoint {
  const map = expectMap(value, path);
  return {
    parent: expectName(field(map, 'parent'), fieldPath(path, 'parent')),
    parentId: expectId(field(map, 'parentId'), fieldPath(path, 'parentId')),
    lsns: validateBranchLsns(field(map, 'lsns'), fieldPath(path, 'lsns')),
  };
}

function volumeCreateSpec(map: Record<string, unknown>): VolumeSpec {
  return {
    name: expectName(field(map, 'name'), 'name'),
    pageCount: expectInteger(field(map, 'pageCount'), 'pageCount', { min: 1, max: PAGE_COUNT_MAX }),
    pageSize:
      optional(field(map, 'pageSize'), (v) => expectOneOf<PageSize>(v, PAGE_SIZES_BYTES, 'pageSize')) ??
      PAGE_SIZE_BYTES_DEFAULT,
    shards: optional(field(map, 'shards'), (v) => expectInteger(v, 'shards', { min: 1, max: SHARDS_MAX })) ?? SHARDS_DEFAULT,
    stripePages:
      optional(field(map, 'stripePages'), (v) => expectInteger(v, 'stripePages', { min: 1, max: STRIPE_PAGES_MAX })) ??
      STRIPE_PAGES_DEFAULT,
    replicas:
      optional(field(map, 'replicas'), (v) => expectOneOf<ReplicaCount>(v, REPLICA_COUNTS, 'replicas')) ?? REPLICAS_DEFAULT,
  };
}

/** A VolumeInfo (reply of volume.create, volume.branch and volume.info, entry of volume.list). */
export function validateVolumeInfo(value: unknown, path = ''): VolumeInfo {
  const map = expectMap(value, path);
  const at = (key: string): string => fieldPath(path, key);
  return {
    name: expectName(field(map, 'name'), at('name')),
    id: expectId(field(map, 'id'), at('id')),
    pageCount: expectInteger(field(map, 'pageCount'), at('pageCount'), { min: 1, max: PAGE_COUNT_MAX }),
    pageSize: expectOneOf<PageSize>(field(map, 'pageSize'), PAGE_SIZES_BYTES, at('pageSize')),
    shards: expectInteger(field(map, 'shards'), at('shards'), { min: 1, max: SHARDS_MAX }),
    stripePages: expectInteger(field(map, 'stripePages'), at('stripePages'), { min: 1, max: STRIPE_PAGES_MAX }),
    replicas: expectOneOf<ReplicaCount>(field(map, 'replicas'), REPLICA_COUNTS, at('replicas')),
    createdAt: expectCounter(field(map, 'createdAt'), at('createdAt')),
    ...optionalEntry('replicaSets', optional(field(map, 'replicaSets'), (v) => validateReplicaSets(v, at('replicaSets')))),
    ...optionalEntry('branch', optional(field(map, 'branch'), (v) => validateBranchPoint(v, at('branch')))),
  };
}

function optionalEntry<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}

/** VolumeInfo.replicaSets: one entry a shard, at most SHARDS_MAX. */
function validateReplicaSets(value: unknown, path: string): ReplicaSetInfo[] {
  const list = expectArray(value, path, { lengthMin: 0, lengthMax: SHARDS_MAX });
  return list.map((entry, i) => {
    const at = (key: string): string => fieldPath(`${path}[${i}]`, key);
    const map = expectMap(entry, `${path}[${i}]`);
    const members = expectArray(field(map, 'members'), at('members'), { lengthMin: 1, lengthMax: 7 }).map((m, j) => expectId(m, `${at('members')}[${j}]`));
    const moving = optional(field(map, 'moving'), (v) => {
      const m = expectMap(v, at('moving'));
      return { from: expectId(field(m, 'from'), fieldPath(at('moving'), 'from')), to: expectId(field(m, 'to'), fieldPath(at('moving'), 'to')) };
    });
    return { shard: expectInteger(field(map, 'shard'), at('shard'), { min: 0, max: SHARDS_MAX - 1 }), members, ...(moving === undefined ? {} : { moving }) };
  });
}

const NO_FIELDS = fields();

function validateEmpty(value: unknown): Record<string, never> {
  expectKnownFields(expectMap(value, ''), NO_FIELDS, '');
  return {};
}

const LIST_FIELDS = fields('after', 'limit');

/** volume.list request: `{}`, or a page (`after`, `limit`). */
export function validateVolumeListRequest(value: unknown): VolumeListRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, LIST_FIELDS, '');
  const after = optional(field(map, 'after'), (v) => expectName(v, 'after'));
  const limit = optional(field(map, 'limit'), (v) => expectInteger(v, 'limit', { min: 1, max: VOLUMES_PER_LIST_MAX }));
  return { ...optionalEntry('after', after), ...optionalEntry('limit', limit) };
}

/** volume.list reply. A page with `next` holds at least one volume, the last before `next`'s page. */
export function validateVolumeListReply(value: unknown): VolumeListReply {
  const map = expectMap(value, '');
  const list = expectArray(field(map, 'volumes'), 'volumes', { lengthMin: 0, lengthMax: VOLUMES_PER_LIST_MAX });
  const volumes = list.map((entry, i) => validateVolumeInfo(entry, `volumes[${i}]`));
  const next = optional(field(map, 'next'), (v) => expectName(v, 'next'));
  const epoch = optional(field(map, 'epoch'), (v) => expectInteger(v, 'epoch', { min: 0, max: Number.MAX_SAFE_INTEGER }));
  if (next !== undefined && volumes[volumes.length - 1]?.name !== next) {
    fail('bad_request', 'next', 'expected the name of the page\'s last volume');
  }
  return { volumes, ...optionalEntry('next', next), ...optionalEntry('epoch', epoch) };
}

const NAME_FIELDS = fields('name');

/** volume.info request. */
export function validateVolumeNameRequest(value: unknown): VolumeNameRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, NAME_FIELDS, '');
  return { name: expectName(field(map, 'name'), 'name') };
}

/** volume.info request. */
export const validateVolumeInfoRequest: Validator<VolumeNameRequest> = validateVolumeNameRequest;

const DELETE_FIELDS = fields('name', 'requestId');

/** volume.delete request. */
export function validateVolumeDeleteRequest(value: unknown): VolumeDeleteRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, DELETE_FIELDS, '');
  return { name: expectName(field(map, 'name'), 'name'), ...requestIdOf(map) };
}

/** volume.delete reply. */
export function validateVolumeDeleteReply(value: unknown): VolumeDeleteReply {
  const map = expectMap(value, '');
  if (field(map, 'deleted') !== true) expected('deleted', 'true', field(map, 'deleted'));
  return { deleted: true };
}

const RESIZE_FIELDS = fields('name', 'pageCount', 'requestId');

/** volume.resize request (that it grows the volume is the controller's check, which knows its size). */
export function validateVolumeResizeRequest(value: unknown): VolumeResizeRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, RESIZE_FIELDS, '');
  return {
    name: expectName(field(map, 'name'), 'name'),
    pageCount: expectInteger(field(map, 'pageCount'), 'pageCount', { min: 1, max: PAGE_COUNT_MAX }),
    ...requestIdOf(map),
  };
}

const VOLUME_FIELDS = fields('volume');

/** volume.flush request. */
export function validateVolumeFlushRequest(value: unknown): VolumeFlushRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, VOLUME_FIELDS, '');
  return { volume: expectName(field(map, 'volume'), 'volume') };
}

/** volume.flush reply. */
export function validateVolumeFlushReply(value: unknown): VolumeFlushReply {
  const map = expectMap(value, '');
  return withLsns({ lsn: expectCounter(field(map, 'lsn'), 'lsn') }, validateShardLsns(field(map, 'lsns'), 'lsns'));
}

// ---------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------

const PAGE_WRITE_REQUEST_FIELDS = fields('volume', 'pages', 'crc');

/** A CRC-32C: an unsigned 32-bit integer. */
export function expectCrc(value: unknown, path: string): number {
  return expectInteger(value, path, { min: 0, max: 0xffffffff });
}

/** A message's optional `crc` of its page data (`PAGE_DATA_CRC`). */
function optionalCrc(map: Readonly<Record<string, unknown>>): number | undefined {
  return optional(field(map, 'crc'), (v) => expectCrc(v, 'crc'));
}

/** page.write request (without the volume's geometry; see `validatePageWrite`). */
export function validatePageWriteRequest(value: unknown): PageWriteRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, PAGE_WRITE_REQUEST_FIELDS, '');
  return withCrc({
    volume: expectName(field(map, 'volume'), 'volume'),
    pages: validatePageWrites(field(map, 'pages'), 'pages'),
  }, optionalCrc(map));
}

/**
 * The checks of a write that need the volume: every page < pageCount (out_of_range) and every
 * data exactly pageSize bytes (bad_request). Takes an already validated request; returns it.
 */
export function validatePageWrite<T extends { readonly pages: readonly PageWrite[] }>(
  req: T,
  pageSize: number,
  pageCount: number,
): T {
  const pages = req.pages;
  for (let i = 0; i < pages.length; i++) {
    const entry = pages[i]!;
    if (entry.page >= pageCount) {
      fail('out_of_range', `pages[${i}].page`, `page ${entry.page} is out of range (the volume has ${pageCount} pages)`, {
        page: entry.page,
        pageCount,
      });
    }
    if (entry.data.byteLength !== pageSize) {
      fail('bad_request', `pages[${i}].data`, `expected ${pageSize} bytes, got ${entry.data.byteLength}`);
    }
  }
  return req;
}

const PAGE_ZERO_REQUEST_FIELDS = fields('volume', 'first', 'count');

/**
 * The range of a page.zero or shard.zero: `first` a page number, `count` 1..PAGE_COUNT_MAX, and
 * `first + count` at most PAGE_COUNT_MAX (out_of_range: no volume has such pages).
 */
function validatePageRange(map: Readonly<Record<string, unknown>>, path: string): { first: number; count: number } {
  const first = expectInteger(field(map, 'first'), fieldPath(path, 'first'), PAGE_BOUNDS);
  const count = expectInteger(field(map, 'count'), fieldPath(path, 'count'), { min: 1, max: PAGE_COUNT_MAX, maxCode: 'out_of_range' });
  if (first + count > PAGE_COUNT_MAX) {
    fail('out_of_range', fieldPath(path, 'count'), `pages ${first}..${first + count - 1} go past the largest volume's ${PAGE_COUNT_MAX} pages`, { first, count });
  }
  return { first, count };
}

/** page.zero request (without the volume's geometry; see `validatePageZero`). */
export function validatePageZeroRequest(value: unknown): PageZeroRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, PAGE_ZERO_REQUEST_FIELDS, '');
  const volume = expectName(field(map, 'volume'), 'volume');
  return { volume, ...validatePageRange(map, '') };
}

/** The check of a page.zero or shard.zero that needs the volume: the range within its pages (out_of_range). */
export function validatePageZero<T extends { readonly first: number; readonly count: number }>(req: T, pageCount: number): T {
  if (req.first + req.count > pageCount) {
    fail('out_of_range', 'count', `pages ${req.first}..${req.first + req.count - 1} are not all in the volume (it has ${pageCount} pages)`, {
      first: req.first,
      count: req.count,
      pageCount,
    });
  }
  return req;
}

/** page.write reply. */
export function validatePageWriteReply(value: unknown): PageWriteReply {
  const map = expectMap(value, '');
  return withLsns({ lsn: expectCounter(field(map, 'lsn'), 'lsn') }, validateShardLsns(field(map, 'lsns'), 'lsns'));
}

const PAGE_READ_REQUEST_FIELDS = fields('volume', 'pages', 'lsn', 'lsns');
const READ_LSN_FIELDS = fields('shard', 'lsn', 'term');

/**
 * The LSN to read each named shard at (a read's `lsns`): 1..SHARDS_MAX entries
 * `{ shard, lsn, term? }`, one per shard (a second entry for a shard is `bad_request`). Whether
 * each shard exists is the volume's to say (`checkReadLsnShards`).
 */
export function validateReadLsns(value: unknown, path: string): ShardLsn[] {
  const list = expectArray(value, path, { lengthMin: 1, lengthMax: SHARDS_MAX });
  const seen = new Map<number, number>();
  return list.map((entry, i) => {
    const at = `${path}[${i}]`;
    expectKnownFields(expectMap(entry, at), READ_LSN_FIELDS, at);
    const shardLsn = validateShardLsn(entry, at);
    const first = seen.get(shardLsn.shard);
    if (first !== undefined) fail('bad_request', fieldPath(at, 'shard'), `duplicate shard ${shardLsn.shard} (also at ${path}[${first}])`);
    seen.set(shardLsn.shard, i);
    return shardLsn;
  });
}

/** Every shard a read's `lsns` names is one of the volume's `shards` (out_of_range otherwise). */
export function checkReadLsnShards(lsns: readonly ShardLsn[], shards: number, path: string): void {
  lsns.forEach((entry, i) => {
    if (entry.shard >= shards) {
      fail('out_of_range', fieldPath(`${path}[${i}]`, 'shard'), `shard ${entry.shard} is out of range (the volume has ${shards} shards)`, {
        shard: entry.shard,
        shards,
      });
    }
  });
}

/** A read's `lsn` and `lsns`, each optional, not both (bad_request, path `lsns`). */
export function validateReadAt(lsnValue: unknown, lsnsValue: unknown): { lsn?: number; lsns?: ShardLsn[] } {
  const lsn = optional(lsnValue, (v) => expectCounter(v, 'lsn'));
  const lsns = optional(lsnsValue, (v) => validateReadLsns(v, 'lsns'));
  if (lsn !== undefined && lsns !== undefined) fail('bad_request', 'lsns', 'give lsn (one LSN for every shard) or lsns (one per shard), not both');
  return lsn !== undefined ? { lsn } : lsns !== undefined ? { lsns } : {};
}

/** page.read request (without the volume's geometry; see `validatePageRead`). */
export function validatePageReadRequest(value: unknown): PageReadRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, PAGE_READ_REQUEST_FIELDS, '');
  const volume = expectName(field(map, 'volume'), 'volume');
  const pages = validatePageNumbers(field(map, 'pages'), 'pages');
  return { volume, pages, ...validateReadAt(field(map, 'lsn'), field(map, 'lsns')) };
}

/**
 * A read of `count` pages of `pageSize` bytes answers them in one message: its page data must be
 * within REQUEST_DATA_BYTES_MAX (too_large, path `pages`).
 */
export function checkReadReplyBytes(count: number, pageSize: number): void {
  const replyBytes = count * pageSize;
  if (replyBytes > REQUEST_DATA_BYTES_MAX) {
    fail(
      'too_large',
      'pages',
      `${count} pages of ${pageSize} bytes (${replyBytes} bytes) exceed the limit of ${REQUEST_DATA_BYTES_MAX} bytes of page data`,
      { bytes: replyBytes, bytesMax: REQUEST_DATA_BYTES_MAX },
    );
  }
}

/**
 * The checks of a read that need the volume: every page < pageCount (out_of_range) and the reply's
 * data (pages × pageSize) within REQUEST_DATA_BYTES_MAX (too_large). Returns `req`.
 */
export function validatePageRead<T extends { readonly pages: readonly number[] }>(
  req: T,
  pageSize: number,
  pageCount: number,
): T {
  const pages = req.pages;
  checkReadReplyBytes(pages.length, pageSize);
  for (let i = 0; i < pages.length; i++) {
    const page = pages[i]!;
    if (page >= pageCount) {
      fail('out_of_range', `pages[${i}]`, `page ${page} is out of range (the volume has ${pageCount} pages)`, {
        page,
        pageCount,
      });
    }
  }
  return req;
}

/** What a reader expects back: the number of pages asked for and the volume's page size. */
export interface PageReadExpectation {
  count: number;
  pageSize: number;
}

function checkPageData(pages: readonly Uint8Array[], expect: PageReadExpectation | undefined): void {
  if (expect === undefined) return;
  if (pages.length !== expect.count) fail('bad_request', 'pages', `expected ${expect.count} pages, got ${pages.length}`);
  for (let i = 0; i < pages.length; i++) {
    const got = pages[i]!.byteLength;
    if (got !== expect.pageSize) fail('bad_request', `pages[${i}]`, `expected ${expect.pageSize} bytes, got ${got}`);
  }
}

/** page.read reply; with `expect`, also checks the count and size of the pages. */
export function validatePageReadReply(value: unknown, expect?: PageReadExpectation): PageReadReply {
  const map = expectMap(value, '');
  const pages = validatePageData(field(map, 'pages'), 'pages');
  checkPageData(pages, expect);
  const lsn = expectCounter(field(map, 'lsn'), 'lsn');
  return withLsns(withCrc({ pages, lsn }, optionalCrc(map)), validateShardLsns(field(map, 'lsns'), 'lsns'));
}

// ---------------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------------

/** status request (an empty map). */
export function validateStatusRequest(value: unknown): StatusRequest {
  return validateEmpty(value);
}

const SHARD_ROLES: readonly ShardRole[] = ['leader', 'follower', 'none'];
/** Bound on free-text status strings (version), in characters. */
const STATUS_TEXT_LENGTH_MAX = 256;

function validateShardStatus(value: unknown, path: string): ShardStatus {
  const map = expectMap(value, path);
  const at = (key: string): string => fieldPath(path, key);
  expectInteger(field(map, 'shard'), at('shard'), { min: 0, max: SHARDS_MAX - 1 });
  expectOneOf(field(map, 'role'), SHARD_ROLES, at('role'));
  expectCounter(field(map, 'term'), at('term'));
  expectCounter(field(map, 'commitLsn'), at('commitLsn'));
  expectCounter(field(map, 'appliedLsn'), at('appliedLsn'));
  optional(field(map, 'leader'), (v) => expectId(v, at('leader')));
  return map as ShardStatus;
}

function validateVolumeStatus(value: unknown, path: string): VolumeStatus {
  const map = expectMap(value, path);
  const at = (key: string): string => fieldPath(path, key);
  expectName(field(map, 'name'), at('name'));
  expectId(field(map, 'id'), at('id'));
  const shards = expectArray(field(map, 'shards'), at('shards'), { lengthMin: 0, lengthMax: SHARDS_MAX });
  shards.forEach((entry, i) => validateShardStatus(entry, `${at('shards')}[${i}]`));
  return map as VolumeStatus;
}

/** status reply. Fields beyond the documented ones are kept as they are. */
export function validateStatusReply(value: unknown): StatusReply {
  const map = expectMap(value, '');
  const node = expectMap(field(map, 'node'), 'node');
  expectId(field(node, 'id'), 'node.id');
  expectId(field(node, 'cluster'), 'node.cluster');
  expectString(field(node, 'version'), 'node.version', STATUS_TEXT_LENGTH_MAX);
  expectCounter(field(node, 'uptimeMs'), 'node.uptimeMs');
  const volumes = expectArray(field(map, 'volumes'), 'volumes', { lengthMin: 0, lengthMax: VOLUMES_PER_LIST_MAX });
  volumes.forEach((entry, i) => validateVolumeStatus(entry, `volumes[${i}]`));
  return map as StatusReply;
}

// ---------------------------------------------------------------------------------------------
// Shard mailbox messages
// ---------------------------------------------------------------------------------------------

const SHARD_WRITE_FIELDS = fields('pages', 'crc', 'deadlineMs', 'term', 'earlier', 'writeId', 'sentMs');
const WRITE_RECORD_FIELDS = fields('lsn', 'term');

function validateEarlier(value: unknown, path: string): WriteRecordRef[] {
  return expectArray(value, path, { lengthMin: 1, lengthMax: EARLIER_ATTEMPTS_MAX }).map((v, i) => {
    const at = `${path}[${i}]`;
    const map = expectMap(v, at);
    expectKnownFields(map, WRITE_RECORD_FIELDS, at);
    return {
      lsn: expectInteger(field(map, 'lsn'), `${at}.lsn`, { min: 1, max: LSN_MAX }),
      term: expectInteger(field(map, 'term'), `${at}.term`, { min: 1, max: LSN_MAX }),
    };
  });
}

/** The fields a shard.write and a shard.zero share (`deadlineMs`, `term`, `earlier`, `writeId`, `sentMs`), set on `req`. */
function withWriteFields<T extends ShardWriteRequest | ShardZeroRequest>(req: T, map: Readonly<Record<string, unknown>>): T {
  const deadlineMs = optional(field(map, 'deadlineMs'), (v) => expectCounter(v, 'deadlineMs'));
  if (deadlineMs !== undefined) req.deadlineMs = deadlineMs;
  const term = optional(field(map, 'term'), (v) => expectCounter(v, 'term'));
  if (term !== undefined) req.term = term;
  const earlier = optional(field(map, 'earlier'), (v) => validateEarlier(v, 'earlier'));
  if (earlier !== undefined) req.earlier = earlier;
  const writeId = optional(field(map, 'writeId'), (v) => {
    const bytes = expectBytes(v, 'writeId');
    if (bytes.length !== WRITE_ID_BYTES) fail('bad_request', 'writeId', `expected ${WRITE_ID_BYTES} bytes, got ${bytes.length}`);
    return bytes;
  });
  if (writeId !== undefined) req.writeId = writeId;
  const sentMs = optional(field(map, 'sentMs'), (v) => expectCounter(v, 'sentMs'));
  if (sentMs !== undefined) {
    if (writeId === undefined) fail('bad_request', 'sentMs', 'given without a writeId');
    req.sentMs = sentMs;
  }
  return req;
}

/** shard.write request (without the volume's geometry; see `validateShardWrite`). */
export function validateShardWriteRequest(value: unknown): ShardWriteRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, SHARD_WRITE_FIELDS, '');
  const req: ShardWriteRequest = withCrc({ pages: validatePageWrites(field(map, 'pages'), 'pages') }, optionalCrc(map));
  return withWriteFields(req, map);
}

const SHARD_ZERO_FIELDS = fields('first', 'count', 'deadlineMs', 'term', 'earlier', 'writeId', 'sentMs');

/** shard.zero request (without the volume's geometry; see `validatePageZero`). */
export function validateShardZeroRequest(value: unknown): ShardZeroRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, SHARD_ZERO_FIELDS, '');
  const req: ShardZeroRequest = validatePageRange(map, '');
  return withWriteFields(req, map);
}

/** shard.write reply. */
export function validateShardWriteReply(value: unknown): ShardWriteReply {
  const map = expectMap(value, '');
  const lsn = expectCounter(field(map, 'lsn'), 'lsn');
  return withTerm({ lsn }, optional(field(map, 'term'), (v) => expectCounter(v, 'term')));
}

const SHARD_READ_FIELDS = fields('pages', 'lsn', 'term');

/** shard.read request (without the volume's geometry; see `validateShardRead`). */
export function validateShardReadRequest(value: unknown): ShardReadRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, SHARD_READ_FIELDS, '');
  const req: ShardReadRequest = { pages: validatePageNumbers(field(map, 'pages'), 'pages') };
  const lsn = optional(field(map, 'lsn'), (v) => expectCounter(v, 'lsn'));
  if (lsn !== undefined) req.lsn = lsn;
  const term = optional(field(map, 'term'), (v) => expectCounter(v, 'term'));
  if (term !== undefined) req.term = term;
  return req;
}

/** shard.read reply; with `expect`, also checks the count and size of the pages. */
export function validateShardReadReply(value: unknown, expect?: PageReadExpectation): ShardReadReply {
  const map = expectMap(value, '');
  const pages = validatePageData(field(map, 'pages'), 'pages');
  checkPageData(pages, expect);
  const lsn = expectCounter(field(map, 'lsn'), 'lsn');
  return withTerm(withCrc({ pages, lsn }, optionalCrc(map)), optional(field(map, 'term'), (v) => expectCounter(v, 'term')));
}

const SHARD_FLUSH_FIELDS = fields('term');

/** shard.flush request. */
export function validateShardFlushRequest(value: unknown): ShardFlushRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, SHARD_FLUSH_FIELDS, '');
  return withTerm({}, optional(field(map, 'term'), (v) => expectCounter(v, 'term')));
}

/** shard.flush reply. */
export function validateShardFlushReply(value: unknown): ShardFlushReply {
  const map = expectMap(value, '');
  const lsn = expectCounter(field(map, 'lsn'), 'lsn');
  return withTerm({ lsn }, optional(field(map, 'term'), (v) => expectCounter(v, 'term')));
}

const SHARD_MAP_FIELDS = fields('first', 'count', 'term');

/** shard.map request (without the volume's geometry: the shard checks the range against its pages). */
export function validateShardMapRequest(value: unknown): ShardMapRequest {
  const map = expectMap(value, '');
  expectKnownFields(map, SHARD_MAP_FIELDS, '');
  return withTerm(validatePageRange(map, ''), optional(field(map, 'term'), (v) => expectCounter(v, 'term')));
}

/**
 * The `end` and `ranges` of a shard.map or page.map reply: at most `rangesMax` pairs, ascending
 * and apart, before `end`; with `request`, an answer of that range.
 */
function validateMapRanges(map: Readonly<Record<string, unknown>>, rangesMax: number, request?: { first: number; count: number }): { end: number; ranges: number[] } {
  const end = expectInteger(field(map, 'end'), 'end', { min: 1, max: PAGE_COUNT_MAX });
  const raw = expectArray(field(map, 'ranges'), 'ranges', { lengthMin: 0, lengthMax: 2 * rangesMax });
  if (raw.length % 2 !== 0) fail('bad_request', 'ranges', `${raw.length} numbers: pairs of first and count`);
  const ranges: number[] = [];
  let next = request?.first ?? 0;
  for (let i = 0; i < raw.length; i += 2) {
    const first = expectInteger(raw[i], `ranges[${i}]`, { min: next, max: PAGE_COUNT_MAX - 1 });
    const count = expectInteger(raw[i + 1], `ranges[${i + 1}]`, { min: 1, max: end - first });
    ranges.push(first, count);
    next = first + count + 1;
  }
  if (request !== undefined && (end <= request.first || end > request.first + request.count)) {
    fail('bad_request', 'end', `${end} is not in ${request.first + 1}..${request.first + request.count}`);
  }
  return { end, ranges };
}

/** shard.map reply; with `request`, also that it answers that range (its end and ranges within it). */
export function validateShardMapReply(value: unknown, request?: { first: number; count: number }): ShardMapReply {
  const map = expectMap(value, '');
  const lsn = expectCounter(field(map, 'lsn'), 'lsn');
  return withTerm({ ...validateMapRanges(map, SHARD_MAP_RANGES_MAX, request), lsn }, optional(field(map, 'term'), (v) => expectCounter(v, 'term')));
}

/** page.map request (without the volume's geometry; see `validatePageZero`). */
export function validatePageMapRequest(value: unknown): PageMapRequest {
  return validatePageZeroRequest(value);
}

/** page.map reply. */
export function validatePageMapReply(value: unknown): PageMapReply {
  const map = expectMap(value, '');
  const lsn = expectCounter(field(map, 'lsn'), 'lsn');
  return withLsns({ ...validateMapRanges(map, PAGE_MAP_RANGES_MAX), lsn }, validateShardLsns(field(map, 'lsns'), 'lsns'));
}

/** A volume's layout plus the shard a mailbox serves. */
export interface ShardLayout extends VolumeLayout {
  shard: number;
}

function checkShardOf(page: number, path: string, layout: ShardLayout): void {
  const owner = shardOfPage(page, layout);
  if (owner !== layout.shard) {
    fail('bad_request', path, `page ${page} belongs to shard ${owner}, not shard ${layout.shard}`, {
      page,
      shard: owner,
    });
  }
}

/**
 * The checks of a shard.write that need the volume: those of `validatePageWrite` plus every page
 * mapping to `layout.shard` (bad_request otherwise: a misrouted request). Returns `req`.
 */
export function validateShardWrite(req: ShardWriteRequest, layout: ShardLayout): ShardWriteRequest {
  validatePageWrite(req, layout.pageSize, layout.pageCount);
  for (let i = 0; i < req.pages.length; i++) checkShardOf(req.pages[i]!.page, `pages[${i}].page`, layout);
  return req;
}

/** The checks of a shard.read that need the volume: those of `validatePageRead` plus shard membership. */
export function validateShardRead(req: ShardReadRequest, layout: ShardLayout): ShardReadRequest {
  validatePageRead(req, layout.pageSize, layout.pageCount);
  for (let i = 0; i < req.pages.length; i++) checkShardOf(req.pages[i]!, `pages[${i}]`, layout);
  return req;
}

// ---------------------------------------------------------------------------------------------
// Dispatch tables
// ---------------------------------------------------------------------------------------------

/** The request validator of every message type. */
export const REQUEST_VALIDATORS: { readonly [T in MessageType]: Validator<ValidRequestMap[T]> } = {
  'volume.create': validateVolumeCreateRequest,
  'volume.branch': validateVolumeBranchRequest,
  'volume.list': validateVolumeListRequest,
  'volume.info': validateVolumeInfoRequest,
  'volume.delete': validateVolumeDeleteRequest,
  'volume.resize': validateVolumeResizeRequest,
  'volume.flush': validateVolumeFlushRequest,
  'page.write': validatePageWriteRequest,
  'page.zero': validatePageZeroRequest,
  'page.read': validatePageReadRequest,
  'page.map': validatePageMapRequest,
  status: validateStatusRequest,
  'shard.write': validateShardWriteRequest,
  'shard.zero': validateShardZeroRequest,
  'shard.read': validateShardReadRequest,
  'shard.flush': validateShardFlushRequest,
  'shard.map': validateShardMapRequest,
};

/** The reply validator of every message type (call `throwIfError` first). */
export const REPLY_VALIDATORS: { readonly [T in MessageType]: Validator<ReplyMap[T]> } = {
  'volume.create': validateVolumeInfo,
  'volume.branch': validateVolumeInfo,
  'volume.list': validateVolumeListReply,
  'volume.info': validateVolumeInfo,
  'volume.delete': validateVolumeDeleteReply,
  'volume.resize': validateVolumeInfo,
  'volume.flush': validateVolumeFlushReply,
  'page.write': validatePageWriteReply,
  'page.zero': validatePageWriteReply,
  'page.read': validatePageReadReply,
  'page.map': validatePageMapReply,
  status: validateStatusReply,
  'shard.write': validateShardWriteReply,
  'shard.zero': validateShardWriteReply,
  'shard.read': validateShardReadReply,
  'shard.flush': validateShardFlushReply,
  'shard.map': validateShardMapReply,
};

/** Validates a request of type `type`. */
export function validateRequest<T extends MessageType>(type: T, value: unknown): ValidRequestMap[T] {
  const validator: Validator<ValidRequestMap[T]> = REQUEST_VALIDATORS[type];
  return validator(value);
}

/** Validates a (non-error) reply to a request of type `type`. */
export function validateReply<T extends MessageType>(type: T, value: unknown): ReplyMap[T] {
  const validator: Validator<ReplyMap[T]> = REPLY_VALIDATORS[type];
  return validator(value);
}
