// A store another thread of this process can open for itself (a data-plane worker serving a ring):
// BlockDevice.share() describes it, openSharedStore() opens it on the other thread.
//
//   ram      the chunks are SharedArrayBuffers already (ram.ts): the other thread reads and writes
//            the very same memory. Sharing allocates every chunk (one allocated by the other thread
//            would be its alone) and gives up the hole maps (a write there would not clear them),
//            so a shared RAM disk reports all its blocks as data.
//   file     a descriptor is the process's, not the thread's: the other thread opens the same file
//   direct   again through /proc/self/fd/N (path-policy.ts's CheckedTarget: the very inode the
//            opener checked, dev and ino compared), with its own descriptor, page-cache or O_DIRECT
//            (and its own Linux AIO context) as the original
//
// A store that cannot be shared (a network client such as iscsi://, a store wrapped in JavaScript
// of this thread) has no share(); blkback's workers then reach it through the main thread
// (blkback/workers/device-proxy.ts).
import type { IoEngine } from './direct.ts';
import type { BlockDevice, BlockDeviceInfo } from './types.ts';

export interface SharedRamSpec {
  readonly kind: 'ram';
  readonly name: string;
  readonly info: BlockDeviceInfo;
  readonly chunkSize: number;
  /** Every chunk, in order (the last may be shorter). */
  readonly chunks: readonly SharedArrayBuffer[];
}

export interface SharedFileSpec {
  readonly kind: 'file' | 'direct';
  readonly name: string;
  /** The path it was opened by, for messages only. */
  readonly path: string;
  /** The opener's descriptor: reopened through /proc/self/fd/N. */
  readonly fd: number;
  readonly dev: number;
  readonly ino: number;
  readonly readOnly: boolean;
  readonly ioEngine?: IoEngine;
}

export type SharedStoreSpec = SharedRamSpec | SharedFileSpec;

/** Opens, on this thread, a store another thread described with share(). */
export async function openSharedStore(spec: SharedStoreSpec): Promise<BlockDevice> {
  switch (spec.kind) {
    case 'ram':
      return sharedRamView(spec);
    case 'file': {
      const { openFileDisk } = await import('./file.ts');
      return openFileDisk(spec.path, { readOnly: spec.readOnly, name: spec.name, checked: { pathFd: spec.fd, dev: spec.dev, ino: spec.ino } });
    }
    case 'direct': {
      const { openDirectDisk } = await import('./direct.ts');
      return openDirectDisk(spec.path, {
        readOnly: spec.readOnly,
        name: spec.name,
        checked: { pathFd: spec.fd, dev: spec.dev, ino: spec.ino },
        ...(spec.ioEngine === undefined ? {} : { ioEngine: spec.ioEngine }),
      });
    }
  }
}

const DONE: Promise<void> = Promise.resolve();

/** A view of a shared RAM disk's chunks (the owner keeps its holes and its allocation; this only moves bytes). */
export interface SharedRamView extends BlockDevice {
  /** The owner resized it: its new chunks and description. */
  update(spec: SharedRamSpec): void;
}

export function sharedRamView(first: SharedRamSpec): SharedRamView {
  let info = first.info;
  const chunkSize = first.chunkSize;
  let chunks = first.chunks.map((c) => new Uint8Array(c));
  // Bytes [offset, offset + length) as runs within chunks.
  const each = (offset: number, length: number, run: (chunk: Uint8Array, within: number, n: number, done: number) => void): void => {
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const index = Math.floor(pos / chunkSize);
      const within = pos - index * chunkSize;
      const n = Math.min(chunkSize - within, length - done);
      run(chunks[index]!, within, n, done);
      done += n;
    }
  };
  return {
    name: first.name,
    get info() {
      return info;
    },
    readv(offset, iov) {
      let pos = offset;
      for (let b = 0; b < iov.length; b++) {
        const buf = iov[b]!;
        each(pos, buf.byteLength, (c, within, n, done) => buf.set(c.subarray(within, within + n), done));
        pos += buf.byteLength;
      }
      return DONE;
    },
    writev(offset, iov) {
      let pos = offset;
      for (let b = 0; b < iov.length; b++) {
        const buf = iov[b]!;
        each(pos, buf.byteLength, (c, within, n, done) => c.set(n === buf.byteLength ? buf : buf.subarray(done, done + n), within));
        pos += buf.byteLength;
      }
      return DONE;
    },
    flush: () => DONE,
    discard(offset, length) {
      each(offset, length, (c, within, n) => c.fill(0, within, within + n));
      return DONE;
    },
    writeZeroes(offset, length) {
      each(offset, length, (c, within, n) => c.fill(0, within, within + n));
      return DONE;
    },
    update(spec) {
      chunks = spec.chunks.map((c) => new Uint8Array(c));
      info = spec.info;
    },
    close() {
      chunks = [];
      return DONE;
    },
  };
}
