// Does the seed's randw job fill the mail's 1 Gbit/s storage link? The iSCSI rig (`reproduce --rig
// iscsi`: our target in a network namespace behind a tc-shaped veth, our initiator on this side)
// runs jobs/randw.fio once per backend, and the payload it moved is compared with what the link
// carries. The goal (issue 15): at least 0.9x of the link's rate, headers and all in the 0.1.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runExperiment, summarize } from '../reproduce/experiment.ts';
import type { Backend } from '../reproduce/experiment.ts';
import { describeLink, linkBytesPerSecond, parseLinkSpec, SEED_LINK } from '../rig/link-spec.ts';

export const LINK_FILL_GOAL = 0.9;

export interface LinkFillRow {
  readonly backend: Backend;
  /** Payload bytes per second the job moved (all its threads). */
  readonly bytesPerSecond: number;
  /** Of the link's bits per second over 8: the share of the wire the payload used. */
  readonly ofLink: number;
}

export interface LinkFillReport {
  readonly link: string;
  /** False when the rig fell back to loopback (not root): then there is no link to fill. */
  readonly shaped: boolean;
  readonly seconds: number;
  readonly sizeBytes: number;
  readonly rows: readonly LinkFillRow[];
  readonly goal: number;
}

const asset = (rel: string): string => readFileSync(new URL(rel, import.meta.url), 'utf8');

export async function runLinkFill(o: { seconds: number; sizeBytes: number; progress: (line: string) => void }): Promise<LinkFillReport> {
  const link = parseLinkSpec(SEED_LINK);
  const outDir = mkdtempSync(join(tmpdir(), 'blkback-link-fill-'));
  try {
    const outcome = await runExperiment({
      jobFiles: [{ path: 'jobs/randw.fio', text: asset('../../../jobs/randw.fio') }],
      guestConfigs: {
        phy: { path: 'examples/guest-phy.cfg', text: asset('../../../examples/guest-phy.cfg') },
        file: { path: 'examples/guest-qdisk.cfg', text: asset('../../../examples/guest-qdisk.cfg') },
      },
      runs: 1,
      runtimeSeconds: o.seconds,
      storeBytes: o.sizeBytes,
      rig: 'iscsi',
      link,
      outDir,
      progress: o.progress,
    });
    const wire = linkBytesPerSecond(link) as number;
    const shaped = outcome.rig?.asked === true;
    const rows = summarize(outcome.records).map((s) => {
      const bytesPerSecond = s.mibps * 1048576;
      return { backend: s.backend, bytesPerSecond, ofLink: bytesPerSecond / wire };
    });
    return {
      link: shaped ? describeLink(link) : (outcome.rig?.link ?? 'loopback'),
      shaped,
      seconds: o.seconds,
      sizeBytes: o.sizeBytes,
      rows,
      goal: LINK_FILL_GOAL,
    };
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
}

export function formatLinkFill(r: LinkFillReport): string {
  if (!r.shaped) return `randw over the storage link: not measured (${r.link}: the rig needs root for a shaped link)`;
  const lines = [`randw.fio over ${r.link}, ${r.seconds} s per backend (goal: at least ${r.goal}x of the link)`, 'backend   MB/s   of the link'];
  for (const row of r.rows) {
    lines.push(
      `${row.backend.padEnd(8)} ${(row.bytesPerSecond / 1e6).toFixed(1).padStart(6)}   ${row.ofLink.toFixed(2)}x${row.ofLink >= r.goal ? '' : ' (below the goal)'}`,
    );
  }
  return lines.join('\n');
}
