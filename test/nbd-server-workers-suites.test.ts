// The NBD server's own suite and the interop suite (nbdinfo, nbdcopy, qemu-img, qemu-io, nbdsh,
// fio) again, with the transmission phase of every plain connection on two worker threads.
process.env.BLKBACK_NBD_TEST_WORKERS = '2';
await import('./nbd-server.test.ts');
await import('./nbd-interop.test.ts');
