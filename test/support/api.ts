/** One request to a cluster's API, as any NATS client sends it: for tests of what a node answers. */
import type { StrataClient } from '../../cluster/client';
import type { ApiVerb } from '../../messages/api';
import { decode, encode } from '../../messages/codec';
import { HEADER_DEADLINE, HEADER_SCHEMA, HEADER_TYPE } from '../../messages/headers';
import { apiSubject } from '../../messages/subjects';

/**
 * Sends `body` to `verb` of cluster `cluster`'s API once (no tries of the client's), with the
 * Strata headers and `deadlineMs` as its Strata-Deadline; resolves with the decoded reply, an
 * error reply included. Waits `timeoutMs` for it (default: until 2 s past the deadline, at least
 * 15 s).
 */
export async function apiRequestOnce(client: StrataClient, cluster: string, verb: ApiVerb, body: unknown, deadlineMs: number, timeoutMs?: number): Promise<unknown> {
  const headers = { [HEADER_TYPE]: verb, [HEADER_SCHEMA]: '1', [HEADER_DEADLINE]: String(deadlineMs) };
  const waitMs = timeoutMs ?? Math.max(15_000, deadlineMs - Date.now() + 2000);
  return decode(await client.rawRequest(apiSubject(cluster, verb), encode(body), headers, { timeoutMs: waitMs }));
}
