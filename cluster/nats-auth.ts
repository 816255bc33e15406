/**
 * Who may send what on a Strata cluster's NATS subjects.
 *
 * Replication and control messages (votes, appends and their answers, the controller's verbs,
 * a node's `shards.open`) are not signed: a node believes the sender is a node. On a NATS server
 * anyone may publish to, a forged vote answer can elect a leader without a majority and a forged
 * append answer can commit records without one. The guard is the NATS server's authorization:
 * nodes connect as a user that may use every subject of the cluster, applications as one that
 * may only ask the public API and the shards, operators as one that may also force a vote,
 * recover a lost catalog, move a shard's replica and change the controller nodes.
 * `strata nats-auth` prints the nats-server `authorization` block for a cluster
 * (docs/replication.md, "Locking the subjects").
 */
import { X509Certificate, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as tls from 'node:tls';
import { SHARD_LEADERS_TOKEN, checkToken, clientInboxPrefix } from '../messages/subjects';
import { CATALOG_VOLUME_ID } from './catalog-shard';

/** The kinds of NATS users of a Strata cluster. */
export type NatsRole = 'node' | 'client' | 'operator';

export const NATS_ROLES: readonly NatsRole[] = ['node', 'client', 'operator'];

/** The subjects a user may publish to and subscribe to (nats-server's `permissions`). */
export interface NatsPermissions {
  publish: string[];
  /** Subjects of `publish` the user may not publish to all the same (nats-server's `deny`, which wins). */
  publishDeny?: string[];
  subscribe: string[];
}

/** Where replies come back: the inboxes of the NATS clients (nats.js and the others). */
const INBOXES = '_INBOX.>';
/** The NATS service API's discovery (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`). */
const SERVICE_DISCOVERY = '$SRV.>';

/**
 * The permissions of `role` on cluster `cluster`; a client's or an operator's for user `user`,
 * whose replies come to its own inboxes (`clientInboxPrefix`).
 */
export function natsPermissions(cluster: string, role: NatsRole, user = `strata-${role}`): NatsPermissions {
  const root = `strata.${checkToken(cluster, 'cluster')}`;
  switch (role) {
    case 'node':
      // Everything of its cluster: the API and shard subjects it serves, replication, the
      // controller, the other nodes, its own inboxes (`nodeInboxPrefix`, out of the clients'
      // sight); and answers to any inbox.
      return { publish: [`${root}.>`, INBOXES, SERVICE_DISCOVERY], subscribe: [`${root}.>`, INBOXES, SERVICE_DISCOVERY] };
    case 'client':
      // The public API (every verb: volume.create and volume.branch as the others; their
      // controller subjects are the nodes' alone) and the shards' request subjects, nothing a
      // node listens to for its peers.
      // Replies only on its own inboxes: not the pages another client user reads. Never the
      // catalog shard's: only the controller writes the catalog (docs/replication.md, "A
      // replicated controller").
      return {
        publish: [`${root}.api.>`, `${root}.shard.*.*`, `${root}.shard.*.*.${SHARD_LEADERS_TOKEN}`, SERVICE_DISCOVERY],
        publishDeny: [`${root}.shard.${CATALOG_VOLUME_ID}.*`, `${root}.shard.${CATALOG_VOLUME_ID}.*.${SHARD_LEADERS_TOKEN}`],
        subscribe: [`${clientInboxPrefix(user)}.>`],
      };
    case 'operator': {
      const client = natsPermissions(cluster, 'client', user);
      return {
        publish: [...client.publish, `${root}.node.*.shard.forceVote`, `${root}.node.*.shard.handover`, `${root}.node.*.shard.digest`, `${root}.controller.catalog.recover`, `${root}.controller.shard.move`, `${root}.controller.node.drain`, `${root}.controller.rebalance`, `${root}.controller.controllers`],
        publishDeny: client.publishDeny!,
        subscribe: client.subscribe,
      };
    }
  }
}

/** One user of the `authorization` block: its password as text, or as an environment variable the server reads. */
export interface NatsUser {
  user: string;
  role: NatsRole;
  password: { text: string } | { env: string };
}

// No dot: a user's inbox prefix (`_INBOX.<user>`) is one subject token.
const USER_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const ENV_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/**
 * The nats-server configuration block that gives each user its role's permissions on cluster
 * `cluster`, for a server's config file (`include` it, or paste it). Throws RangeError for a
 * user name or variable that is not a plain token, or a user named twice.
 */
export function renderNatsAuthorization(cluster: string, users: readonly NatsUser[]): string {
  const seen = new Set<string>();
  const lines = ['authorization {', '  users = ['];
  for (const u of users) {
    if (!USER_PATTERN.test(u.user)) throw new RangeError(`user: expected 1..64 characters of [A-Za-z0-9_-], got ${JSON.stringify(u.user)}`);
    if (seen.has(u.user)) throw new RangeError(`user ${u.user} given twice`);
    seen.add(u.user);
    let password: string;
    if ('env' in u.password) {
      if (!ENV_PATTERN.test(u.password.env)) throw new RangeError(`password variable: expected a name of [A-Za-z0-9_], got ${JSON.stringify(u.password.env)}`);
      password = `$${u.password.env}`;
    } else {
      password = JSON.stringify(u.password.text);
    }
    const p = natsPermissions(cluster, u.role, u.user);
    const list = (subjects: readonly string[]): string => `[${subjects.map((s) => JSON.stringify(s)).join(', ')}]`;
    lines.push(
      `    # ${u.role}`,
      `    { user: ${JSON.stringify(u.user)}, password: ${password},`,
      `      permissions: { publish: ${p.publishDeny === undefined ? list(p.publish) : `{ allow: ${list(p.publish)}, deny: ${list(p.publishDeny)} }`}, subscribe: ${list(p.subscribe)} } }`,
    );
  }
  lines.push('  ]', '}');
  return `${lines.join('\n')}\n`;
}

/** Bound on a NATS password file, bytes. */
export const NATS_PASSWORD_FILE_BYTES_MAX = 4096;

/**
 * The password in `file`: its text without one trailing newline. Throws an Error saying what is
 * wrong (unreadable, empty, larger than NATS_PASSWORD_FILE_BYTES_MAX, or a line break inside).
 * At most NATS_PASSWORD_FILE_BYTES_MAX + 1 bytes are read, also from a file that reports no size
 * (a pipe such as `<(…)`, a device).
 */
export function readNatsPassword(file: string): string {
  let bytes: Buffer;
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const stat = fs.fstatSync(fd);
    if (stat.isFile() && stat.size > NATS_PASSWORD_FILE_BYTES_MAX) {
      throw new Error(`${file} holds ${stat.size} bytes, more than a password's ${NATS_PASSWORD_FILE_BYTES_MAX}`);
    }
    const buffer = Buffer.alloc(NATS_PASSWORD_FILE_BYTES_MAX + 1);
    let length = 0;
    while (length < buffer.length) {
      const got = fs.readSync(fd, buffer, length, buffer.length - length, null);
      if (got === 0) break;
      length += got;
    }
    if (length > NATS_PASSWORD_FILE_BYTES_MAX) throw new Error(`${file} holds more than a password's ${NATS_PASSWORD_FILE_BYTES_MAX} bytes`);
    bytes = buffer.subarray(0, length);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(err.code === undefined ? err.message : `can not read ${file}: ${err.code}`);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
  const text = bytes.toString('utf8').replace(/\r?\n$/, '');
  if (text === '') throw new Error(`${file} is empty`);
  if (/[\r\n]/.test(text)) throw new Error(`${file} holds more than one line`);
  return text;
}

/**
 * The TLS files a connection to a NATS server uses (nats.js reads them at connect): the CA that
 * signed the server's certificate, when it is not one the system trusts, and this side's own
 * certificate and key, for a server that verifies its clients (`tls { verify: true }`).
 */
export interface NatsTlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/**
 * `files` as given, after checking that each can be read and that a certificate and its key
 * come together, and loading them as the connection would: the CA file must hold PEM
 * certificates, the certificate and the key must parse (`tls.createSecureContext`), and the key
 * must be the certificate's. Throws an Error naming `names[field]` (a flag, say), the file and
 * OpenSSL's reason otherwise: nats.js would report each of these only as `TLS` when connecting.
 */
export function checkNatsTlsFiles(files: NatsTlsFiles, names: Readonly<Record<keyof NatsTlsFiles, string>>): NatsTlsFiles {
  if ((files.certFile === undefined) !== (files.keyFile === undefined)) {
    throw new Error(files.certFile === undefined ? `${names.keyFile} needs ${names.certFile}` : `${names.certFile} needs ${names.keyFile}`);
  }
  for (const key of ['caFile', 'certFile', 'keyFile'] as const) {
    const file = files[key];
    if (file === undefined) continue;
    try {
      fs.accessSync(file, fs.constants.R_OK);
      if (!fs.statSync(file).isFile()) throw Object.assign(new Error('not a file'), { code: 'not a regular file' });
    } catch (e) {
      throw new Error(`${names[key]}: can not read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  if (files.caFile !== undefined) checkCaFile(files.caFile, names.caFile);
  if (files.certFile !== undefined && files.keyFile !== undefined) checkCertAndKey(files.certFile, files.keyFile, names);
  return files;
}

/** OpenSSL's reason for a certificate or key it can not take, and its code. */
function opensslReason(e: unknown): string {
  const { reason, code, message } = e as { reason?: unknown; code?: unknown; message?: unknown };
  const text = typeof reason === 'string' ? reason : String(message);
  return typeof code === 'string' ? `${text} (${code})` : text;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g;

/**
 * A CA file holds PEM certificates, each of which parses (`tls.createSecureContext` skips what it
 * can not read there, and the server's certificate would then be said not to be signed by it).
 */
function checkCaFile(file: string, name: string): void {
  const blocks = fs.readFileSync(file, 'latin1').match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new Error(`${name}: ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch (e) {
      throw new Error(`${name}: ${file} holds a certificate that can not be read: ${opensslReason(e)}`);
    }
  }
}

/** A certificate and a key that parse, the key the certificate's. */
function checkCertAndKey(certFile: string, keyFile: string, names: Readonly<Record<keyof NatsTlsFiles, string>>): void {
  const cert = fs.readFileSync(certFile);
  const key = fs.readFileSync(keyFile);
  const load = (options: tls.SecureContextOptions, what: string): void => {
    try {
      tls.createSecureContext(options);
    } catch (e) {
      throw new Error(`${what}: ${opensslReason(e)}`);
    }
  };
  load({ cert }, `${names.certFile}: ${certFile} is not a PEM certificate`);
  load({ key }, `${names.keyFile}: ${keyFile} is not a PEM private key without a passphrase`);
  load({ cert, key }, `${names.keyFile}: ${keyFile} is not the key of ${names.certFile} ${certFile}`);
}

/** A user of each role (`strata-<role>`) with a new random password. */
export function newNatsUsers(): Record<NatsRole, { user: string; pass: string }> {
  const of = (role: NatsRole): { user: string; pass: string } => ({ user: `strata-${role}`, pass: randomBytes(18).toString('base64url') });
  return { node: of('node'), client: of('client'), operator: of('operator') };
}

/** The `authorization` block that admits `users` (one a role) with their passwords as text. */
export function renderRoleUsers(cluster: string, users: Readonly<Record<NatsRole, { user: string; pass: string }>>): string {
  return renderNatsAuthorization(cluster, NATS_ROLES.map((role) => ({ user: users[role].user, role, password: { text: users[role].pass } })));
}

/** The command-line flags of the TLS files, by field. */
export const NATS_TLS_FLAGS: Readonly<Record<keyof NatsTlsFiles, string>> = { caFile: 'nats-ca-file', certFile: 'nats-cert-file', keyFile: 'nats-key-file' };

/**
 * The TLS files given by flag (`value` of a flag name without `--`, undefined when not given),
 * checked as `checkNatsTlsFiles` does (an Error naming the flag); undefined when none is.
 */
export function natsTlsFromFlags(value: (flag: string) => string | undefined): NatsTlsFiles | undefined {
  const files: NatsTlsFiles = {};
  for (const key of ['caFile', 'certFile', 'keyFile'] as const) {
    const file = value(NATS_TLS_FLAGS[key]);
    if (file !== undefined) files[key] = file;
  }
  if (Object.keys(files).length === 0) return undefined;
  return checkNatsTlsFiles(files, { caFile: `--${NATS_TLS_FLAGS.caFile}`, certFile: `--${NATS_TLS_FLAGS.certFile}`, keyFile: `--${NATS_TLS_FLAGS.keyFile}` });
}
