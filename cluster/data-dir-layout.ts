/**
 * What a node keeps where in its data directory, for the node and for whoever reads the
 * directory offline (`strata inspect`):
 *
 *   <dataDir>/node              the node's record of itself and its replicas (NodeMeta, a MetaStore file)
 *   <dataDir>/dev<i>/shards/…   device i's replicas (runtime/device-host.ts)
 *   <dataDir>/controller/       the catalog of a controller node that keeps it alone
 *   <dataDir>/lock              the lock of the node using the directory (data-dir-lock.ts)
 */
import type { Disk } from '../storage-engine/disk';
import { MetaStore } from '../storage-engine/metadata';
import type { ShardAssignment } from '../messages/control';

/** The node's record of itself (MetaStore name in the data directory). */
export const NODE_META = 'node';

export interface NodeMeta {
  version: 1;
  nodeId: string;
  cluster: string;
  hosts: number;
  shards: ShardAssignment[];
  /**
   * With a replicated controller, once a change of the controller nodes added this node or took
   * it out (`strata controllers`): whether it is a controller node (it holds a replica of the
   * catalog shard), and the controller nodes it was told of. Absent: `--controllers` says.
   */
  catalog?: { member: boolean; members: string[] };
}

/** The MetaStore of the node's record (NODE_META), on a disk rooted at the data directory: as large as a node of ASSIGNMENTS_PER_NODE_MAX shards needs. */
export function nodeMetaStore(disk: Disk): MetaStore {
  return new MetaStore(disk, '', { payloadBytesMax: 16 * 1024 * 1024 });
}

/** Where a controller node without `controllers` keeps its catalog: a MetaStore directory of the data directory. */
export const LOCAL_CATALOG_DIR = 'controller';

/** The MetaStore of the catalog a controller node keeps alone (`dataDir/controller`), on a disk rooted at the data directory. */
export function localCatalogStore(disk: Disk): MetaStore {
  return new MetaStore(disk, LOCAL_CATALOG_DIR, { payloadBytesMax: 16 * 1024 * 1024 });
}

/** The directory of device `i` in the data directory. */
export function deviceDirName(i: number): string {
  return `dev${i}`;
}

/** Whether `name` is a device's directory (`deviceDirName`), and which. */
export function deviceOfDirName(name: string): number | undefined {
  const m = /^dev(0|[1-9][0-9]*)$/.exec(name);
  return m === null ? undefined : Number(m[1]);
}
