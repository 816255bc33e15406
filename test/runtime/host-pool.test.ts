import { strict as assert } from 'node:assert';
import type { HostConfig } from '../../runtime/actor-host';
import { HOST_HEAP_INITIAL_MIB_MAX, HostPool } from '../../runtime/host-pool';

describe('HostPool options', () => {
  it('rejects a host heap size outside 0..HOST_HEAP_INITIAL_MIB_MAX MiB before starting any host', async () => {
    // Never started: the options are checked first, so the config's content does not matter.
    const hosts = [{ hostId: 0 } as HostConfig];
    for (const heapInitialMiB of [-1, 1.5, HOST_HEAP_INITIAL_MIB_MAX + 1, Number.NaN]) {
      await assert.rejects(HostPool.start({ hosts, heapInitialMiB }), (e: Error) => {
        assert.ok(e instanceof RangeError, String(e));
        assert.match(e.message, /^heapInitialMiB must be an integer in 0\.\.65536/);
        return true;
      });
    }
  });
});
