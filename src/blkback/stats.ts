// Per-VBD counters with Linux xen-blkback's names (sysfs statistics/{rd_req,wr_req,f_req,ds_req,oo_req,
// rd_sect,wr_sect}), the fair share's accounting (seg, seg_contended), errors by kind, and fio-style
// latency histograms per operation.
import { LatencyHistogram } from '../stats/latency-histogram.ts';

export const ERROR_KINDS = [
  'bad_op', // unknown or unsupported operation (answered EOPNOTSUPP)
  'bad_segments', // segment count, first_sect > last_sect, last_sect > 7
  'bad_range', // past the end of the disk or wrapping
  'misaligned', // not a multiple of the logical block size
  'read_only', // write or discard to a read-only disk
  'bad_grant', // a grant the guest did not give us (or read-only for a read)
  'io_error', // the block device failed
  'ring_overflow', // the frontend produced more requests than the ring holds: ring halted
] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

export class VbdStats {
  rd_req = 0;
  wr_req = 0;
  f_req = 0;
  ds_req = 0;
  oo_req = 0;
  rd_sect = 0;
  wr_sect = 0;
  /** Segments served: those of each read or write (or flush with data) that succeeded; 1 for any other answer. */
  seg = 0;
  /** ...of which answered while another domain had requests waiting or in flight (FairShare.answered). */
  seg_contended = 0;
  readonly errors: Record<ErrorKind, number> = Object.fromEntries(ERROR_KINDS.map((k) => [k, 0])) as Record<ErrorKind, number>;
  readonly latency = {
    read: new LatencyHistogram(),
    write: new LatencyHistogram(),
    flush: new LatencyHistogram(),
    discard: new LatencyHistogram(),
  };

  toJSON(): Record<string, unknown> {
    return {
      rd_req: this.rd_req,
      wr_req: this.wr_req,
      f_req: this.f_req,
      ds_req: this.ds_req,
      oo_req: this.oo_req,
      rd_sect: this.rd_sect,
      wr_sect: this.wr_sect,
      seg: this.seg,
      seg_contended: this.seg_contended,
      errors: { ...this.errors },
      latency_ns: {
        read: this.latency.read.toJSON(),
        write: this.latency.write.toJSON(),
        flush: this.latency.flush.toJSON(),
        discard: this.latency.discard.toJSON(),
      },
    };
  }
}
