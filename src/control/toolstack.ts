// The toolstack's part of hot-plugging a disk, which blkback cannot do itself: writing the
// backend and frontend directories (attach) and closing and removing them (detach). Two kinds:
// the simulation (SimHost, sim-toolstack.ts) and real Xen (`xl`, xl-toolstack.ts).
import type { XlDisk } from '../config/xl-disk.ts';

export interface Toolstack {
  /** For messages: "simulation", "xl". */
  readonly name: string;
  /** xl block-attach: `disk` is already parsed and checked; `disk.spec` is the text the user gave. */
  attach(domid: number, disk: XlDisk): Promise<void>;
  /** xl block-detach: closes the device with the guest, then removes its xenstore entries. */
  detach(domid: number, devid: number, vdev: string): Promise<void>;
}
