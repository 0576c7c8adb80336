// Our iSCSI initiator as a load generator shaped like libiscsi's iscsi-perf, for `bench --suite
// iscsi`: DEPTH reads of BS bytes kept in flight for SECONDS, each new one at the next block after
// the last one issued, wrapping to 0 at the LUN's end (iscsi-perf without -r). It runs as its own
// process, like iscsi-perf, so the suite counts its CPU the same way (reaped-children counters):
//   node iscsi-initiator-load.js URL BS DEPTH SECONDS
// and prints one JSON line { ios, seconds, bytes, cpuUserUs, cpuSystemUs }.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { openBlockDevice } from '../stores/open.ts';

export interface InitiatorLoadResult {
  readonly ios: number;
  /** From the first read issued to the last completed (the login is not counted, as in iscsi-perf). */
  readonly seconds: number;
  readonly bytes: number;
  /** This process's CPU (user and system, all threads, µs) over the same span: no start-up, no login. */
  readonly cpuUserUs: number;
  readonly cpuSystemUs: number;
}

export async function runInitiatorLoad(url: string, bs: number, depth: number, seconds: number): Promise<InitiatorLoadResult> {
  const device = await openBlockDevice(url, { readOnly: true });
  try {
    const size = device.info.size;
    if (bs <= 0 || bs % device.info.logicalBlockSize !== 0 || bs > size)
      throw new Error(`block size ${bs} does not fit ${url} (${size} bytes, ${device.info.logicalBlockSize}-byte blocks)`);
    let next = 0;
    let ios = 0;
    const cpu0 = process.cpuUsage();
    const start = process.hrtime.bigint();
    const end = start + BigInt(Math.round(seconds * 1e9));
    const worker = async (): Promise<void> => {
      const iov = [new Uint8Array(bs)];
      while (process.hrtime.bigint() < end) {
        if (next + bs > size) next = 0;
        const at = next;
        next += bs;
        await device.readv(at, iov);
        ios++;
      }
    };
    await Promise.all(Array.from({ length: depth }, worker));
    const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    return { ios, seconds: elapsed, bytes: ios * bs, cpuUserUs: cpu.user, cpuSystemUs: cpu.system };
  } finally {
    await device.close();
  }
}

/** The command line that runs this file as the load process (the caller adds URL BS DEPTH SECONDS). */
export const INITIATOR_LOAD_JS = fileURLToPath(import.meta.url);

function positive(text: string | undefined, what: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${what} '${text}' is not a positive number`);
  return n;
}

const invokedDirectly = process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(INITIATOR_LOAD_JS);
if (invokedDirectly) {
  const [url, bs, depth, seconds] = process.argv.slice(2);
  if (url === undefined) {
    process.stderr.write('usage: node iscsi-initiator-load.js iscsi://HOST:PORT/IQN/LUN BS DEPTH SECONDS\n');
    process.exit(2);
  }
  const fail = (err: unknown): never => {
    process.stderr.write(`iscsi-initiator-load: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  };
  Promise.resolve()
    .then(() => runInitiatorLoad(url, positive(bs, 'BS'), Math.max(1, Math.floor(positive(depth, 'DEPTH'))), positive(seconds, 'SECONDS')))
    .then((r) => process.stdout.write(`${JSON.stringify(r)}\n`), fail);
}
