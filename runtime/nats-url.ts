/**
 * NATS server URLs as Strata shows them. The user info of a URL (`nats://user:password@host`,
 * `nats://token@host`) is a secret, and the NATS client does not use it (Strata refuses such a
 * URL: cluster/config.ts `checkNatsUrl`); a URL printed, logged or written anywhere passes
 * through `redactNatsUrl` first, so that one given all the same, or one that reached a path
 * that skips the check, shows no password.
 */

/** What stands for a URL's user info once redacted. */
const REDACTED = '***';

/**
 * `servers` (one URL or a comma list) with the user info of each URL replaced by `***`. The
 * user info runs from its URL's `://` (or the start of the text, for a URL without a scheme) to
 * its last `@`: a password may hold `,`, `/` or `@`, and more is hidden rather than any of it
 * shown.
 */
export function redactNatsUrl(servers: string): string {
  const at = servers.lastIndexOf('@');
  if (at < 0) return servers;
  const scheme = servers.lastIndexOf('://', at);
  const start = scheme < 0 ? 0 : scheme + 3;
  return `${redactNatsUrl(servers.slice(0, start))}${REDACTED}${servers.slice(at)}`;
}
