// Helpers for the NBD server tests: a server on a Unix socket in a private directory, and a raw
// client that speaks bytes (so tests can send what no real client would).
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockDevice } from '../src/block/types.ts';
import { createRamDisk } from '../src/block/ram.ts';
import { ClientFlag, Info, Option, OptionReply } from '../src/nbd/constants.ts';
import { decodeInfoReply, encodeClientFlags, encodeInfoRequest, encodeMetaContextRequest, encodeOptionRequest } from '../src/nbd/handshake.ts';
import { ByteQueue, readU16, readU32, readU64 } from '../src/nbd/wire.ts';
import type { NbdExport } from '../src/nbd-server/export.ts';
import { NbdServer } from '../src/nbd-server/server.ts';
import type { NbdTlsConfig } from '../src/nbd-server/tls.ts';

export interface TestServer {
  readonly server: NbdServer;
  readonly socketPath: string;
  readonly dir: string;
  readonly logLines: string[];
  close(): Promise<void>;
}

export async function startTestServer(
  exports: { name: string; device?: BlockDevice; readOnly?: boolean; description?: string }[],
  tls?: NbdTlsConfig,
): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-nbd-test-'));
  const socketPath = join(dir, 'nbd.sock');
  const logLines: string[] = [];
  const list: NbdExport[] = exports.map((e) => ({
    name: e.name,
    description: e.description ?? '',
    device: e.device ?? createRamDisk(4 * 1024 * 1024, { name: `ram:${e.name}` }),
    readOnly: e.readOnly ?? false,
  }));
  const server = new NbdServer({ exports: list, ...(tls === undefined ? {} : { tls }), log: (line) => logLines.push(line) });
  // test/nbd-server-workers-suites.test.ts runs the suites again with transmission workers.
  await server.startWorkers(Number(process.env.BLKBACK_NBD_TEST_WORKERS ?? 0));
  await server.listen({ kind: 'unix', path: socketPath });
  return {
    server,
    socketPath,
    dir,
    logLines,
    async close() {
      await server.close();
      for (const e of list) await e.device.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A client that sends raw bytes and reads exact byte counts. */
export class RawClient {
  readonly socket: net.Socket;
  readonly #queue = new ByteQueue();
  #waiter: (() => void) | undefined;
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#queue.push(chunk);
      this.#waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.#waiter?.();
    });
    socket.on('error', () => undefined);
  }

  static connect(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(path, () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  send(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Exactly `n` bytes; rejects if the server closes first or nothing comes within `timeoutMs`. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const bytes = this.#queue.take(n);
      if (bytes !== undefined) return Buffer.from(bytes);
      if (this.closed) throw new Error(`connection closed with ${this.#queue.length} of ${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (have ${this.#queue.length})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(timer);
          this.#waiter = undefined;
          resolve();
        };
      });
    }
  }

  /** Resolves true once the server has closed the connection (false after `timeoutMs`). */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return this.closed;
  }

  get buffered(): number {
    return this.#queue.length;
  }

  destroy(): void {
    this.socket.destroy();
  }

  // ---- handshake steps --------------------------------------------------------------------

  async greeting(clientFlags = ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | ClientFlag.NBD_FLAG_C_NO_ZEROES): Promise<number> {
    const g = await this.read(18);
    if (g.toString('latin1', 0, 16) !== 'NBDMAGICIHAVEOPT') throw new Error(`bad greeting ${g.toString('hex')}`);
    this.send(encodeClientFlags(clientFlags));
    return readU16(g, 16);
  }

  /** One option reply: its type and data. */
  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const h = await this.read(20);
    if (h.toString('hex', 0, 8) !== '0003e889045565a9') throw new Error(`bad option reply magic ${h.toString('hex')}`);
    const length = readU32(h, 16);
    return { option: readU32(h, 8), type: readU32(h, 12), data: length === 0 ? Buffer.alloc(0) : await this.read(length) };
  }

  /** Option replies up to and including the ACK or an error. */
  async optionReplies(): Promise<{ option: number; type: number; data: Buffer }[]> {
    const out = [];
    for (;;) {
      const r = await this.optionReply();
      out.push(r);
      if (r.type === OptionReply.NBD_REP_ACK || r.type >= 0x80000000) return out;
    }
  }

  /** Negotiates to the transmission phase with NBD_OPT_GO; returns the size and transmission flags. */
  async go(exportName: string, o: { structured?: boolean; meta?: boolean } = {}): Promise<{ size: number; flags: number; minimum: number }> {
    await this.greeting();
    if (o.structured === true) {
      this.send(encodeOptionRequest(Option.NBD_OPT_STRUCTURED_REPLY));
      const [ack] = await this.optionReplies();
      if (ack?.type !== OptionReply.NBD_REP_ACK) throw new Error('structured replies refused');
    }
    if (o.meta === true) {
      this.send(encodeOptionRequest(Option.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest(exportName, ['base:allocation'])));
      const replies = await this.optionReplies();
      if (replies.length !== 2) throw new Error(`meta context not set: ${JSON.stringify(replies)}`);
    }
    this.send(encodeOptionRequest(Option.NBD_OPT_GO, encodeInfoRequest(exportName, [Info.NBD_INFO_BLOCK_SIZE])));
    let size = -1;
    let flags = -1;
    let minimum = 1;
    for (const r of await this.optionReplies()) {
      if (r.type >= 0x80000000) throw new Error(`NBD_OPT_GO refused: 0x${r.type.toString(16)} ${r.data.toString()}`);
      if (r.type !== OptionReply.NBD_REP_INFO) continue;
      const info = decodeInfoReply(r.data);
      if ('size' in info) {
        size = info.size;
        flags = info.transmissionFlags;
      }
      if ('minimum' in info) minimum = info.minimum;
    }
    return { size, flags, minimum };
  }

  // ---- transmission -----------------------------------------------------------------------

  /** A simple reply: error and cookie (low half), plus `dataLength` bytes of data when no error. */
  async simpleReply(dataLength = 0): Promise<{ error: number; cookie: number; data: Buffer }> {
    const h = await this.read(16);
    if (readU32(h, 0) !== 0x67446698) throw new Error(`expected a simple reply, got ${h.toString('hex')}`);
    const error = readU32(h, 4);
    return { error, cookie: readU32(h, 12), data: error === 0 && dataLength > 0 ? await this.read(dataLength) : Buffer.alloc(0) };
  }

  /** One structured chunk. */
  async chunk(): Promise<{ flags: number; type: number; cookie: number; payload: Buffer }> {
    const h = await this.read(20);
    if (readU32(h, 0) !== 0x668e33ef) throw new Error(`expected a structured chunk, got ${h.toString('hex')}`);
    const length = readU32(h, 16);
    return { flags: readU16(h, 4), type: readU16(h, 6), cookie: readU32(h, 12), payload: length === 0 ? Buffer.alloc(0) : await this.read(length) };
  }
}

export { readU32, readU64 };
