/**
 * The in-process cluster that tests, benchmarks and `strata dev` start: its options are checked
 * before anything starts, and a call on a node that is not in the state it needs is refused,
 * naming the node, instead of acting on nothing or on a second node over the same directory.
 */
import { strict as assert } from 'node:assert';
import { startCluster, type InProcessCluster } from '../../cluster/in-process-cluster';

describe('in-process cluster', function () {
  this.timeout(60_000);

  it('refuses a node count outside 1..16, and more controller nodes than nodes, before it starts anything', async () => {
    for (const nodes of [0, 1.5, -1]) {
      await assert.rejects(startCluster({ nodes }), (e: Error) => e.message === `nodes must be 1..16, got ${nodes}`, String(nodes));
    }
    await assert.rejects(startCluster({ nodes: 2, controllers: 3, startTimeoutMs: 2000 }), (e: Error) => e instanceof RangeError && e.message === 'controllers (3) exceed the nodes (2)');
  });

  describe('calls on its nodes', () => {
    let c: InProcessCluster | undefined;
    before(async () => {
      c = await startCluster({ nodes: 1 });
    });
    after(async () => {
      await c?.stop();
    });

    it('a node stopped cannot be stopped, killed or given faults; a running one cannot be started again', async () => {
      const notRunning = (e: Error): boolean => e.message === 'node 0 is not running';
      await c!.stopNode(0);
      assert.throws(() => c!.kill(0), notRunning);
      await assert.rejects(c!.stopNode(0), notRunning);
      await assert.rejects(c!.degrade(0, { delayMs: 10 }), notRunning);
      await assert.rejects(c!.failFsync(0, 1), notRunning);
      await assert.rejects(c!.setFreeBytes(0, 0), notRunning);
      const n = await c!.restart(0);
      await assert.rejects(c!.restart(0), (e: Error) => e.message === 'node 0 is running');
      assert.equal(c!.nodes[0], n, 'the node running is the one restarted');
    });

    it('waiting for more live nodes than the cluster has gives up at its deadline, naming what it waited for', async function () {
      this.timeout(15_000);
      await assert.rejects(c!.waitForMembers(2, 500), (e: Error) => e.message === 'cluster did not reach 2 live nodes within 500 ms');
    });
  });
});
