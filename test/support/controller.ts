/** Talking to a cluster's controller in tests as a node would: its members, and a node that exists only on NATS. */
import type { Msg, NatsConnection } from 'nats';
import { decode, encode } from '../../messages/codec';

/** A member as `controller.members` answers it (the fields the tests read). */
export interface MemberView {
  nodeId: string;
  live: boolean;
  zone?: string;
  repairInMs?: number;
  draining?: boolean;
  replicasDown?: number;
  replicasDownRepairInMs?: number;
}

/** The controller's members (`strata.<cluster>.controller.members`). */
export async function controllerMembers(nc: NatsConnection, cluster: string, timeoutMs = 1000): Promise<MemberView[]> {
  return (decode((await nc.request(`strata.${cluster}.controller.members`, encode({}), { timeout: timeoutMs })).data) as { members: MemberView[] }).members;
}

/**
 * A node `nodeId` that the controller hears from (a heartbeat every 200 ms, one sent now, saying
 * it leads `leading` shards), whose `shards.open` requests `onOpen` answers and whose claim is
 * answered; it hosts nothing. `stop` ends all three.
 */
export async function fakeNode(nc: NatsConnection, cluster: string, nodeId: string, onOpen: (m: Msg) => void, leading = 0): Promise<{ stop(): void }> {
  const beat = (): void => void nc.request(`strata.${cluster}.controller.heartbeat`, encode({ nodeId, hosts: 1, leading }), { timeout: 1000 }).catch(() => undefined);
  const beats = setInterval(beat, 200);
  const sub = nc.subscribe(`strata.${cluster}.node.${nodeId}.shards.open`, { callback: (_e, m) => onOpen(m) });
  // Its claim answered, as every node's is: the controller's check that it is still there.
  const claim = nc.subscribe(`strata.${cluster}.node.${nodeId}.claim`, { callback: (_e, m) => void m.respond(encode({})) });
  beat();
  await nc.flush();
  let stopped = false;
  return {
    stop(): void {
      if (stopped) return;
      stopped = true;
      clearInterval(beats);
      sub.unsubscribe();
      claim.unsubscribe();
    },
  };
}
