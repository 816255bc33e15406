/**
 * The replicas' files of a stopped cluster checked against each other (cluster/inspect.ts,
 * `strata inspect --compare`): the soak's last check, and the end of the tests that kill and
 * partition nodes.
 */
import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import { COMPARE_PATHS_MAX, compareReplicas, compareText, replicaDirsByShard } from '../../cluster/inspect';
import type { InProcessCluster } from '../../cluster/in-process-cluster';

/** What `compareEveryShard` compared: shards with two replicas or more, replicas, pages read. */
export interface ReplicasCompared {
  shards: number;
  replicas: number;
  pages: number;
}

/**
 * Compares the replicas of every shard that the nodes' data directories under `dataDir` hold,
 * each with the first node's; a difference, a damaged replica or one that does not open is a
 * `problem` (with the comparison's table).
 */
export function compareEveryShard(dataDir: string, problem: (text: string) => void): ReplicasCompared {
  const counted = { shards: 0, replicas: 0, pages: 0 };
  try {
    for (const [name, dirs] of replicaDirsByShard(dataDir)) {
      if (dirs.length < 2) continue;
      const r = compareReplicas(dirs.slice(0, COMPARE_PATHS_MAX));
      counted.shards++;
      counted.replicas += dirs.length;
      for (const o of r.others) counted.pages += o.pages?.compared ?? 0;
      if (!r.ok) problem(`the replicas of ${name} differ or do not open:\n${compareText(r)}`);
    }
  } catch (e) {
    problem(`comparing the replicas failed: ${(e as Error).stack ?? String(e)}`);
  }
  return counted;
}

/**
 * Stops every node of `c` still running (the first, which keeps the catalog of a cluster without
 * a replicated controller, last), then asserts that every shard's replicas agree.
 */
export async function stopAndCompareReplicas(c: InProcessCluster): Promise<ReplicasCompared> {
  for (let i = c.nodes.length - 1; i >= 0; i--) if (c.nodes[i] !== undefined) await c.stopNode(i);
  const problems: string[] = [];
  const counted = compareEveryShard(path.dirname(c.dataDirs[0]!), (p) => problems.push(p));
  assert.equal(problems.length, 0, problems.join('\n'));
  assert.ok(counted.shards > 0, 'some shard has replicas on two nodes');
  return counted;
}
