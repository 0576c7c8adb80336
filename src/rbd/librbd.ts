// Debian's librados2/librbd1 (Ceph 16) through koffi, bound on first use: a machine without them
// runs everything else and says why it cannot open an rbd: store.
//
// Handles (rados_t, rados_ioctx_t, rbd_image_t, rbd_completion_t) are opaque pointers; they are
// bound as integers (user-space addresses fit in a double), which costs koffi no wrapper object
// per call on the hot path. Buffer addresses go the same way (rbd-image.ts takes them with
// koffi.address). Prototypes from librados.h and librbd.h of Ceph 16.2.
//
// Calls that can wait on the network (connect, open, close, stat, resize) are made with koffi's
// .async, on libuv's pool, so the event loop never stalls on a monitor; the aio_* submissions
// return at once and are made on this thread.
import { createRequire } from 'node:module';

type Koffi = typeof import('koffi');
type Sync = (...args: unknown[]) => number;
/** A bound function with koffi's pool variant: the last argument is a Node-style callback. */
interface AsyncFn {
  (...args: unknown[]): number;
  async(...args: unknown[]): void;
}

export interface Librbd {
  readonly koffi: Koffi;
  // librados
  readonly radosCreate: Sync; // (uint64_t *cluster, const char *id)
  readonly radosConfReadFile: Sync; // (cluster, const char *path)
  readonly radosConfSet: Sync; // (cluster, const char *option, const char *value)
  readonly radosConnect: AsyncFn; // (cluster)
  readonly radosShutdown: AsyncFn; // (cluster)
  readonly radosIoctxCreate: AsyncFn; // (cluster, const char *pool, uint64_t *ioctx)
  readonly radosIoctxSetNamespace: Sync; // (ioctx, const char *ns)
  readonly radosIoctxDestroy: Sync; // (ioctx)
  // librbd: open and describe
  readonly rbdOpen: AsyncFn; // (ioctx, const char *name, uint64_t *image, const char *snap)
  readonly rbdOpenReadOnly: AsyncFn; // same
  readonly rbdClose: AsyncFn; // (image)
  readonly rbdGetSize: AsyncFn; // (image, uint64_t *size)
  readonly rbdStat: AsyncFn; // (image, uint8_t *info, size_t infosize)
  readonly rbdResize: AsyncFn; // (image, uint64_t size)
  readonly rbdSetImageNotification: Sync; // (image, int fd, int type)
  // librbd: asynchronous I/O
  readonly rbdAioCreateCompletion: Sync; // (void *arg, callback (NULL), uint64_t *c)
  readonly rbdAioRead: Sync; // (image, uint64_t off, size_t len, char *buf, c)
  readonly rbdAioReadv: Sync; // (image, const struct iovec *iov, int iovcnt, uint64_t off, c)
  readonly rbdAioWrite: Sync; // (image, off, len, const char *buf, c)
  readonly rbdAioWritev: Sync; // (image, iov, iovcnt, off, c)
  readonly rbdAioFlush: Sync; // (image, c)
  readonly rbdAioDiscard: Sync; // (image, off, len, c)
  readonly rbdAioWriteZeroes: Sync; // (image, off, len, c, int zero_flags, int op_flags)
  readonly rbdPollIoEvents: Sync; // (image, rbd_completion_t *comps, int numcomp)
  readonly rbdAioGetReturnValue: Sync; // (c) -> ssize_t
  readonly rbdAioRelease: Sync; // (c)
  // libc
  readonly pipe2: Sync; // (int fds[2], int flags)
  readonly close: Sync; // (int fd)
}

/** rbd_set_image_notification's type for a pipe (librbd.h: EVENT_TYPE_PIPE). */
export const EVENT_TYPE_PIPE = 1;
/** sizeof(rbd_image_info_t) on LP64: size, obj_size, num_objs (u64), order (int, padded), prefix[24], parent_pool (i64), parent_name[96]. */
export const RBD_IMAGE_INFO_SIZE = 8 * 3 + 8 + 24 + 8 + 96;
export const RBD_IMAGE_INFO_OBJ_SIZE = 8;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

let bound: Librbd | undefined;
let problem: string | undefined;

/** The bound calls, or a sentence saying why librbd cannot be reached here. */
export function loadLibrbd(): Librbd | string {
  if (bound !== undefined) return bound;
  if (problem !== undefined) return problem;
  if (process.platform !== 'linux') return (problem = `librbd is reached through koffi on Linux only, not ${process.platform}`);
  let koffi: Koffi;
  try {
    koffi = createRequire(import.meta.url)('koffi') as Koffi;
  } catch (error) {
    return (problem = `koffi is not installed (${(error as Error).message.split('\n')[0]})`);
  }
  let rados: ReturnType<Koffi['load']>;
  let rbd: ReturnType<Koffi['load']>;
  try {
    rados = koffi.load('librados.so.2');
    rbd = koffi.load('librbd.so.1');
  } catch (error) {
    return (problem = `librbd1/librados2 are not installed (${(error as Error).message.split('\n')[0]}; apt-get install librbd1)`);
  }
  const libc = koffi.load('libc.so.6');
  const f = (lib: typeof rbd, proto: string): AsyncFn => lib.func(proto) as unknown as AsyncFn;
  bound = {
    koffi,
    radosCreate: f(rados, 'int rados_create(_Out_ uint64_t *cluster, const char *id)'),
    radosConfReadFile: f(rados, 'int rados_conf_read_file(uint64_t cluster, const char *path)'),
    radosConfSet: f(rados, 'int rados_conf_set(uint64_t cluster, const char *option, const char *value)'),
    radosConnect: f(rados, 'int rados_connect(uint64_t cluster)'),
    radosShutdown: f(rados, 'void rados_shutdown(uint64_t cluster)'),
    radosIoctxCreate: f(rados, 'int rados_ioctx_create(uint64_t cluster, const char *pool, _Out_ uint64_t *ioctx)'),
    radosIoctxSetNamespace: f(rados, 'void rados_ioctx_set_namespace(uint64_t ioctx, const char *ns)'),
    radosIoctxDestroy: f(rados, 'void rados_ioctx_destroy(uint64_t ioctx)'),
    rbdOpen: f(rbd, 'int rbd_open(uint64_t ioctx, const char *name, _Out_ uint64_t *image, const char *snap)'),
    rbdOpenReadOnly: f(rbd, 'int rbd_open_read_only(uint64_t ioctx, const char *name, _Out_ uint64_t *image, const char *snap)'),
    rbdClose: f(rbd, 'int rbd_close(uint64_t image)'),
    rbdGetSize: f(rbd, 'int rbd_get_size(uint64_t image, _Out_ uint64_t *size)'),
    rbdStat: f(rbd, 'int rbd_stat(uint64_t image, _Out_ uint8_t *info, size_t infosize)'),
    rbdResize: f(rbd, 'int rbd_resize(uint64_t image, uint64_t size)'),
    rbdSetImageNotification: f(rbd, 'int rbd_set_image_notification(uint64_t image, int fd, int type)'),
    rbdAioCreateCompletion: f(rbd, 'int rbd_aio_create_completion(uintptr_t arg, uintptr_t cb, _Out_ uint64_t *c)'),
    rbdAioRead: f(rbd, 'int rbd_aio_read(uint64_t image, uint64_t off, size_t len, uintptr_t buf, uint64_t c)'),
    rbdAioReadv: f(rbd, 'int rbd_aio_readv(uint64_t image, const uint8_t *iov, int iovcnt, uint64_t off, uint64_t c)'),
    rbdAioWrite: f(rbd, 'int rbd_aio_write(uint64_t image, uint64_t off, size_t len, uintptr_t buf, uint64_t c)'),
    rbdAioWritev: f(rbd, 'int rbd_aio_writev(uint64_t image, const uint8_t *iov, int iovcnt, uint64_t off, uint64_t c)'),
    rbdAioFlush: f(rbd, 'int rbd_aio_flush(uint64_t image, uint64_t c)'),
    rbdAioDiscard: f(rbd, 'int rbd_aio_discard(uint64_t image, uint64_t off, uint64_t len, uint64_t c)'),
    rbdAioWriteZeroes: f(rbd, 'int rbd_aio_write_zeroes(uint64_t image, uint64_t off, size_t len, uint64_t c, int zero_flags, int op_flags)'),
    rbdPollIoEvents: f(rbd, 'int rbd_poll_io_events(uint64_t image, _Out_ uint8_t *comps, int numcomp)'),
    rbdAioGetReturnValue: f(rbd, 'intptr_t rbd_aio_get_return_value(uint64_t c)'),
    rbdAioRelease: f(rbd, 'void rbd_aio_release(uint64_t c)'),
    pipe2: f(libc, 'int pipe2(_Out_ int *fds, int flags)'),
    close: f(libc, 'int close(int fd)'),
  };
  return bound;
}

/** Runs a bound call on libuv's pool; resolves with its return value. */
export function onPool(fn: AsyncFn, ...args: unknown[]): Promise<number> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err: unknown, result: number) => (err ? reject(err as Error) : resolve(result)));
  });
}
