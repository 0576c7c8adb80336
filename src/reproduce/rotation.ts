// Paths measured side by side take turns at going first. Round r (1-based) starts with path r-1
// (mod n) and keeps the cyclic order, so over n rounds each path runs once in each position: drift
// in a shared machine's load, and the state one path leaves behind for the next (a warm cache, a
// busy loop device), do not always land on the same path.

/** `paths` in the order round `round` (1-based) runs them. */
export function rotation<T>(paths: readonly T[], round: number): T[] {
  const n = paths.length;
  const first = (((round - 1) % n) + n) % n;
  return paths.map((_, i) => paths[(i + first) % n]!);
}

/** The progress line that says which order a round uses: "round 2: bare, kernel, guest". */
export function orderLine(round: number, order: readonly string[]): string {
  return `round ${round}: ${order.join(', ')}`;
}
