// Axis arithmetic for the charts: a "nice" tick step (1, 2 or 5 times a power of ten) and
// tick labels without binary floating-point noise.

export interface Ticks {
  /** Axis end, a whole number of steps at or above the data's maximum. */
  readonly max: number;
  readonly step: number;
  readonly values: readonly number[];
}

/**
 * Ticks from 0 to at least `max`, about `target` of them. With `slack` > 0, data that passes the
 * last tick by at most that fraction of `max` ends the axis there instead of adding a whole step
 * (a run of 20.002 s gets an axis to 20.002 with ticks to 20, not an axis to 25).
 */
export function niceTicks(max: number, target = 8, slack = 0): Ticks {
  const top = Number.isFinite(max) && max > 0 ? max : 1;
  const raw = top / Math.max(1, target);
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  const step = (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
  let count = Math.max(1, Math.ceil(top / step - 1e-9));
  let end = roundTo(count * step, step);
  const below = Math.floor(top / step + 1e-9);
  if (below >= 1 && below < count && top - below * step <= slack * top) {
    count = below;
    end = top;
  }
  const values: number[] = [];
  for (let i = 0; i <= count; i++) values.push(roundTo(i * step, step));
  return { max: end, step, values };
}

function decimalsFor(step: number): number {
  return Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
}

function roundTo(value: number, step: number): number {
  return Number(value.toFixed(decimalsFor(step)));
}

/** A tick value printed with exactly as many decimals as the step needs. */
export function formatTick(value: number, step: number): string {
  return value.toFixed(decimalsFor(step));
}

export interface BandwidthUnit {
  readonly name: 'KiB/s' | 'MiB/s' | 'GiB/s';
  /** KiB/s per unit. */
  readonly kib: number;
}

const UNITS: readonly BandwidthUnit[] = [
  { name: 'GiB/s', kib: 1024 * 1024 },
  { name: 'MiB/s', kib: 1024 },
  { name: 'KiB/s', kib: 1 },
];

/** The largest unit in which the peak (KiB/s, fio's bw log unit) reads as at least 2. */
export function bandwidthUnitFor(maxKiBps: number): BandwidthUnit {
  for (const unit of UNITS) if (maxKiBps >= 2 * unit.kib) return unit;
  return UNITS[UNITS.length - 1] as BandwidthUnit;
}
