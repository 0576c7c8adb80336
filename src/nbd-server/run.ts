// Starting a whole NBD server from options: open each export's store under the path policy (one
// block device per export, shared by its connections), then listen. What the CLI and tests call.
import type { BlockDevice } from '../block/types.ts';
import { openStoreUnderPolicy, resolvePathPolicy } from '../stores/path-policy.ts';
import type { NbdExport } from './export.ts';
import { NbdServer, type NbdListenAddress } from './server.ts';
import type { NbdTlsConfig } from './tls.ts';

export interface ExportSpec {
  readonly name: string;
  /** A store spec: ram:SIZE, file:PATH, phy:PATH, a path, iscsi://..., rbd:... */
  readonly spec: string;
  readonly readOnly?: boolean;
  readonly description?: string;
}

export interface StartNbdServerOptions {
  readonly listen: NbdListenAddress;
  readonly exports: readonly ExportSpec[];
  readonly allowPaths?: readonly string[];
  readonly tls?: NbdTlsConfig;
  readonly log?: (line: string) => void;
  /** Opens a store (tests inject devices); default: openStoreUnderPolicy with allowPaths. */
  readonly openStore?: (spec: ExportSpec) => Promise<BlockDevice>;
  /** Transmission worker threads (worker-pool.ts); 0 or absent: everything on the main thread. */
  readonly workers?: number;
}

export interface RunningNbdServer {
  readonly server: NbdServer;
  readonly address: NbdListenAddress;
  describeExports(): string;
  close(): Promise<void>;
}

export async function startNbdServer(o: StartNbdServerOptions): Promise<RunningNbdServer> {
  const policy = o.openStore === undefined ? await resolvePathPolicy(o.allowPaths ?? []) : undefined;
  const open = o.openStore ?? ((e: ExportSpec) => openStoreUnderPolicy(e.spec, policy!, { readOnly: e.readOnly ?? false }));
  const exports: NbdExport[] = [];
  const closeDevices = async (): Promise<void> => {
    for (const e of exports) await e.device.close().catch(() => undefined);
  };
  try {
    for (const e of o.exports) {
      const device = await open(e);
      exports.push({ name: e.name, description: e.description ?? device.name, device, readOnly: e.readOnly === true || device.info.readOnly });
    }
  } catch (err) {
    await closeDevices();
    throw err;
  }
  const server = new NbdServer({ exports, ...(o.tls === undefined ? {} : { tls: o.tls }), ...(o.log === undefined ? {} : { log: o.log }) });
  let address: NbdListenAddress;
  try {
    await server.startWorkers(o.workers ?? 0);
    address = await server.listen(o.listen);
  } catch (err) {
    await server.close();
    await closeDevices();
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    server,
    address,
    describeExports() {
      return exports.map((e) => `'${e.name}' = ${e.device.name} (${e.device.info.size} bytes${e.readOnly ? ', read-only' : ''})`).join(', ');
    },
    close() {
      closing ??= (async () => {
        await server.close();
        await closeDevices();
      })();
      return closing;
    },
  };
}
