/**
 * The `tls` option of a NATS connection. The NATS client takes a server URL's scheme for its
 * address only: given `tls://host:4222` (or `wss://`) and no TLS option, it connects in plain
 * text to a server that does not ask for TLS, and sends the user's password in the clear. A URL
 * that says TLS therefore makes the connection require it (an empty option: the server's own
 * certificate checked against the system's CAs), and a server that does not offer it is refused.
 */

/** A server URL whose scheme asks for TLS. */
export function urlAsksTls(server: string): boolean {
  return /^(tls|wss):\/\//i.test(server.trim());
}

/** `tls` when given, else `{}` (TLS required) when any of `servers` asks for it, else undefined. */
export function natsTlsOption<T extends object>(servers: string | readonly string[], tls: T | undefined): T | Record<string, never> | undefined {
  if (tls !== undefined) return tls;
  const list = typeof servers === 'string' ? servers.split(',') : servers;
  return list.some(urlAsksTls) ? {} : undefined;
}

/** `natsTlsOption` as connect options to spread: `{ tls }`, or none. */
export function withNatsTls<T extends object>(servers: string | readonly string[], tls: T | undefined): { tls?: T | Record<string, never> } {
  const option = natsTlsOption(servers, tls);
  return option === undefined ? {} : { tls: option };
}
