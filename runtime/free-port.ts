/**
 * Free TCP port discovery for Strata's local processes (embedded nats-server, dev clusters, tests).
 */
import * as net from "node:net";

/** Upper bound on how long a probe listen may take before we give up. */
const probeTimeoutMs = 5_000;

/**
 * Returns a TCP port that was free on `host` a moment ago: listens on port 0, reads the port
 * the kernel chose, closes the listener. Another process may take the port before the caller
 * binds it, so callers that spawn a server on it should retry on "address in use".
 *
 * @param host interface to probe; loopback by default.
 */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    const timer = setTimeout(() => {
      server.close();
      reject(new Error(`freePort: listening on ${host}:0 did not complete within ${probeTimeoutMs} ms`));
    }, probeTimeoutMs);
    server.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`freePort: cannot listen on ${host}:0: ${err.message}`));
    });
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === "string") {
        clearTimeout(timer);
        server.close();
        reject(new Error(`freePort: unexpected listener address ${String(address)}`));
        return;
      }
      const port = address.port;
      server.close((err) => {
        clearTimeout(timer);
        if (err) reject(new Error(`freePort: closing probe listener failed: ${err.message}`));
        else resolve(port);
      });
    });
  });
}
