/**
 * What a failed connection to a NATS server most likely lacks, said in words an operator can act
 * on. nats.js reports a server that refuses a client's certificate as a plain `TIMEOUT` (the
 * server ends the TLS handshake, and the library waits out its connect timeout), and a server
 * certificate it does not trust with OpenSSL's code; neither names the flag to give.
 *
 * For a `TIMEOUT` on a connection that uses TLS, the server's greeting (`INFO`, sent in the clear
 * before the handshake) is read once, within `probeMs`: a server that verifies its clients says
 * so there (`tls_verify`).
 */
import * as net from 'node:net';
import { ProtocolError } from '../messages/errors';
import { natsErrorCode } from './request-mux';
import { redactNatsUrl } from './nats-url';

/** The TLS files a connection used (only whether each was given matters here). */
export interface NatsConnectTls {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

export interface NatsConnectHintOptions {
  servers: readonly string[];
  user?: string;
  tls?: NatsConnectTls;
  /** Bound on reading the server's greeting; default 1,000 ms. */
  probeMs?: number;
  /** How the flags are named to the reader: `--nats-user` by default. */
  flags?: { user: string; passwordFile: string; caFile: string; certFile: string; keyFile: string };
}

const FLAGS_DEFAULT = {
  user: '--nats-user',
  passwordFile: '--nats-password-file',
  caFile: '--nats-ca-file',
  certFile: '--nats-cert-file',
  keyFile: '--nats-key-file',
};

/** OpenSSL's codes for a server certificate not signed by a CA this side trusts. */
const UNTRUSTED_CERT_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
]);

/** Longest greeting read (a server's INFO line is well under 4 KiB). */
const GREETING_BYTES_MAX = 16 * 1024;

/**
 * A hint to append to the message of a failed connect (` (…)`), or '' when the failure says
 * nothing more than its own message. Never throws.
 */
export async function natsConnectHint(err: unknown, o: NatsConnectHintOptions): Promise<string> {
  const flags = o.flags ?? FLAGS_DEFAULT;
  const code = natsErrorCode(err) ?? (err as { code?: unknown } | null)?.code;
  if (code === 'AUTHORIZATION_VIOLATION') {
    return o.user === undefined
      ? ` (the server admits only its users: give one and its password, ${flags.user} and ${flags.passwordFile})`
      : ` (user ${o.user} refused: a wrong password, or a user the server does not have)`;
  }
  if (typeof code === 'string' && UNTRUSTED_CERT_CODES.has(code)) {
    return o.tls?.caFile === undefined
      ? ` (the server's certificate is not signed by a CA this machine trusts: give the CA that signed it, ${flags.caFile})`
      : ` (the server's certificate is not signed by the CA of ${o.tls.caFile})`;
  }
  // nats.js's refusal of a server that does not offer TLS to a connection that requires it.
  if (code === 'SERVER_OPT_NA' && (err as Error | undefined)?.message === 'tls') {
    return o.tls?.caFile === undefined && o.tls?.certFile === undefined
      ? ' (the URL asks for TLS, tls:// or wss://, and the server does not offer it: nothing was sent; use nats:// for a server without TLS)'
      : ' (TLS files were given, and the server does not offer TLS: nothing was sent)';
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return ' (the server\'s certificate does not name the host in the URL connected to)';
  if (code === 'CERT_HAS_EXPIRED') return ' (the server\'s certificate has expired)';
  if (code === 'TIMEOUT' && o.tls !== undefined && o.servers.length > 0) {
    const greeting = await readGreeting(o.servers[0]!, o.probeMs ?? 1000);
    if (greeting?.tls_verify === true) {
      return o.tls.certFile === undefined
        ? ` (the server verifies its clients' certificates: give one it trusts, ${flags.certFile} and ${flags.keyFile})`
        : ` (the server verifies its clients' certificates, and may not trust ${o.tls.certFile})`;
    }
  }
  return '';
}

/**
 * The message of a failed connect, with its cause's when it has one: nats.js says only `TLS`
 * for a TLS connection it could not set up (a key that is not its certificate's, a file that is
 * not PEM), and keeps OpenSSL's reason in `chainedError`.
 */
export function natsErrorReason(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const chained = (err as { chainedError?: unknown } | null)?.chainedError;
  if (!(chained instanceof Error) || chained.message === '' || chained.message === message) return message;
  const code = (chained as { code?: unknown }).code;
  return `${message}: ${chained.message}${typeof code === 'string' && !chained.message.includes(code) ? ` (${code})` : ''}`;
}

/**
 * A failed connect to NATS as Strata reports it: `unavailable`, `can not connect to NATS at
 * <servers>` (each without its user info: `redactNatsUrl`), followed by ` (<who>)` when given
 * (a host thread of a node), the library's reason (`natsErrorReason`) and the hint
 * (`natsConnectHint`); `details.natsCode` when the library gave a code, and `details` besides.
 */
export async function natsConnectError(err: unknown, o: NatsConnectHintOptions & { who?: string; details?: Record<string, unknown> }): Promise<ProtocolError> {
  const { who, details, ...hinted } = o;
  const reason = natsErrorReason(err);
  const hint = await natsConnectHint(err, hinted);
  const code = natsErrorCode(err);
  return new ProtocolError('unavailable', `can not connect to NATS at ${o.servers.map(redactNatsUrl).join(', ')}${who === undefined ? '' : ` (${who})`}: ${reason}${hint}`, {
    ...(details ?? {}),
    ...(code === undefined ? {} : { natsCode: code }),
  });
}

/** The server's INFO object, or undefined when it can not be read within `timeoutMs`. */
export function readGreeting(server: string, timeoutMs: number): Promise<Record<string, unknown> | undefined> {
  let host: string;
  let port: number;
  try {
    const url = new URL(server.includes('://') ? server : `nats://${server}`);
    host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    port = url.port === '' ? 4222 : Number(url.port);
  } catch {
    return Promise.resolve(undefined);
  }
  return new Promise((resolve) => {
    let text = '';
    const socket = net.connect({ host, port });
    const done = (info: Record<string, unknown> | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(info);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    socket.on('error', () => done(undefined));
    socket.on('close', () => done(undefined));
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const end = text.indexOf('\r\n');
      if (end < 0) {
        if (text.length > GREETING_BYTES_MAX) done(undefined);
        return;
      }
      const line = text.slice(0, end);
      if (!line.startsWith('INFO ')) return done(undefined);
      try {
        const info: unknown = JSON.parse(line.slice('INFO '.length));
        done(info !== null && typeof info === 'object' && !Array.isArray(info) ? (info as Record<string, unknown>) : undefined);
      } catch {
        done(undefined);
      }
    });
  });
}
