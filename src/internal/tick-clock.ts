// performance.now(), read at most about once per event-loop turn where callers can share a reading.
// Each reading is a clock_gettime, a plain function call through the vDSO on most machines but a
// system call where the kernel's clock source has no vDSO support, as in a Xen PV dom0 under
// emulation: there, timing every request twice took 2% of the backend's time (docs/xen-tcg.md).
// A request's latency is then measured to the turn in which its completion was seen, which is what
// the histograms' logarithmic buckets resolve anyway.

let cached = -1;
let expiryQueued = false;

const expire = (): void => {
  expiryQueued = false;
  cached = -1;
};

/** The time (ms, performance.now()'s scale) as read earlier in this event-loop turn, or read now. */
export function tickNow(): number {
  return cached >= 0 ? cached : freshNow();
}

/** Reads the clock now and shares the reading with tickNow() callers until the loop's next turn. */
export function freshNow(): number {
  cached = performance.now();
  if (!expiryQueued) {
    expiryQueued = true;
    setImmediate(expire);
  }
  return cached;
}
