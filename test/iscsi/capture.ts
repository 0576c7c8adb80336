// Captures real iSCSI conversations for the codec's golden tests: libiscsi's tools and QEMU (through
// libiscsi) talking to Debian's tgtd over loopback, recorded with tcpdump, each TCP stream's payload
// split by direction with tshark and written as hex. Run once by hand (root, tgt, libiscsi-bin,
// qemu-utils + qemu-block-extra, tcpdump, tshark), not in CI; the output is committed data:
//
//   npx tsc -p . && node dist/test/iscsi/capture.js --out test/fixtures/iscsi/captures
//
// Every scenario gets its own tgtd (its own port, a fresh 64 MiB zero-filled LUN) so that one's
// settings (digests, CHAP accounts) do not leak into another's conversation.
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createLunFile, onPath, sleep } from '../../src/bench/iscsi-target.ts';
import { startTgt } from '../../src/bench/iscsi-tgt.ts';
import type { TgtTarget } from '../../src/bench/iscsi-tgt.ts';
import { scriptedDigestSession } from './capture-digest-session.ts';
import { runIfScript } from './script.ts';

const TARGET_NAME = 'iqn.2026-12.org.blkback:capture';
const LUN_BYTES = 64 << 20;
export const CHAP_USER = 'blkback-initiator';
export const CHAP_SECRET = 'initiator-secret-16';
export const CHAP_TARGET_USER = 'blkback-target';
export const CHAP_TARGET_SECRET = 'target-secret-1234';

interface Scenario {
  readonly name: string;
  readonly what: string;
  /** tgtadm changes before the capture starts. */
  readonly setup?: (t: TgtTarget) => Promise<void>;
  /** The client commands, run in order while tcpdump records; returns the command lines as run. */
  readonly run: (t: TgtTarget) => Promise<string[]>;
}

function run(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(cmd, args, { env, timeout: 60_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolvePromise(stdout);
    });
  });
}

/** Runs a client command and returns it as a shell-ish line for the README. */
async function client(cmd: string, ...args: string[]): Promise<string> {
  await run(cmd, args);
  return [cmd, ...args.map((a) => (/[\s'"?&%]/.test(a) ? `'${a}'` : a))].join(' ');
}

const url = (t: TgtTarget, query = ''): string => `iscsi://127.0.0.1:${t.port}/${t.targetName}/1${query}`;

export const SCENARIOS: readonly Scenario[] = [
  {
    name: '01-discovery',
    what: 'iscsi-ls -s: s0 is the discovery session (SessionType=Discovery, Text Request SendTargets=All, logout); s1 a normal session to list the LUNs: REPORT LUNS twice (short allocation length, then all), and on LUN 0 (the controller) and LUN 1 TEST UNIT READY (UNIT ATTENTION, then GOOD) and INQUIRY, on LUN 1 READ CAPACITY(10); s1 ends without a logout (the tool just closes)',
    run: async (t) => [await client('iscsi-ls', '-s', t.portalUrl)],
  },
  {
    name: '02-inquiry',
    what: "iscsi-inq: login (no security stage), TEST UNIT READY twice (the first gets the new nexus's UNIT ATTENTION with sense data, libiscsi retries), standard INQUIRY twice (first with a short allocation length to learn the size, then all of it), logout",
    run: async (t) => [await client('iscsi-inq', url(t))],
  },
  {
    name: '03-readcapacity16',
    what: 'iscsi-readcapacity16: login, TEST UNIT READY twice (UNIT ATTENTION, then GOOD), READ CAPACITY(16) (SERVICE ACTION IN(16), data and status in one Data-In), logout',
    run: async (t) => [await client('iscsi-readcapacity16', url(t))],
  },
  {
    name: '04-qemu-io-write-read-64k',
    what: "qemu-io (libiscsi inside QEMU): QEMU's probing at open (TEST UNIT READY, INQUIRY and VPD pages 00/83/B0/B2, MODE SENSE(6), READ CAPACITY(16)), then a 64 KiB WRITE(10) (8 KiB immediate data, one R2T, seven Data-Out PDUs of 8 KiB: tgt's MaxRecvDataSegmentLength is 8192, FirstBurstLength 65536), a 64 KiB READ(10) (Data-In PDUs, status in the last) and SYNCHRONIZE CACHE(10) at close",
    run: async (t) => [await client('qemu-io', '-f', 'raw', '-c', 'write -P 0xab 0 64k', '-c', 'read -P 0xab 0 64k', url(t))],
  },
  {
    name: '05-header-digest-crc32c',
    what: 'HeaderDigest=CRC32C: tgt set to HeaderDigest=CRC32C,None; libiscsi offers HeaderDigest=None,CRC32C (the ?header_digest=crc32c URL argument did not change its offer) and tgt picks CRC32C. Then INQUIRY in one session and READ CAPACITY(16) in a second: every PDU after the login response carries a 4-byte header digest. libiscsi 1.19.0 always offers DataDigest=None (lib/login.c), so data digests are in 07',
    setup: async (t) => {
      await t.admin(['--mode', 'target', '--op', 'update', '--tid', '1', '--name', 'HeaderDigest', '--value', 'CRC32C,None']);
    },
    run: async (t) => [await client('iscsi-inq', url(t, '?header_digest=crc32c')), await client('iscsi-readcapacity16', url(t, '?header_digest=crc32c'))],
  },
  {
    name: '06-chap',
    what: `CHAP (MD5) login: the target requires it (tgtadm account ${CHAP_USER} bound to the target), libiscsi answers the challenge; then TEST UNIT READY and INQUIRY as in 02 (s0). s1 does mutual CHAP (outgoing account ${CHAP_TARGET_USER} bound too: the initiator sends its own CHAP_I/CHAP_C and the target answers with CHAP_N/CHAP_R). Login goes security stage (AuthMethod, CHAP_A, CHAP_N/CHAP_R) then operational stage, four Login Request/Response pairs`,
    setup: async (t) => {
      await t.admin(['--mode', 'account', '--op', 'new', '--user', CHAP_USER, '--password', CHAP_SECRET]);
      await t.admin(['--mode', 'account', '--op', 'bind', '--tid', '1', '--user', CHAP_USER]);
    },
    run: async (t) => {
      const oneWay = await client('iscsi-inq', `iscsi://${CHAP_USER}%${CHAP_SECRET}@127.0.0.1:${t.port}/${t.targetName}/1`);
      await t.admin(['--mode', 'account', '--op', 'new', '--user', CHAP_TARGET_USER, '--password', CHAP_TARGET_SECRET]);
      await t.admin(['--mode', 'account', '--op', 'bind', '--tid', '1', '--user', CHAP_TARGET_USER, '--outgoing']);
      const mutual = await client(
        'iscsi-inq',
        `iscsi://${CHAP_USER}%${CHAP_SECRET}@127.0.0.1:${t.port}/${t.targetName}/1?target_user=${CHAP_TARGET_USER}&target_password=${CHAP_TARGET_SECRET}`,
      );
      return [oneWay, `(tgtadm: account ${CHAP_TARGET_USER} bound --outgoing)`, mutual];
    },
  },
  {
    name: '07-header-and-data-digest-crc32c',
    what: "HeaderDigest=CRC32C and DataDigest=CRC32C. No initiator here can ask for data digests (libiscsi 1.19.0 cannot, and open-iscsi needs kernel modules), so the initiator side is a scripted session (test/iscsi/capture-digest-session.ts: hand-built PDUs, CRC32C by a bitwise loop): login (both digests), TEST UNIT READY until GOOD (the first gets the UNIT ATTENTION of a new nexus, with sense data), a 16 KiB WRITE(10) (8 KiB immediate data, R2T, one 8 KiB Data-Out), a 16 KiB READ(10) (two 8 KiB Data-In), logout. tgt's side is real: it checked both digests of every PDU we sent (a bad one drops the connection) and computed its own",
    setup: async (t) => {
      await t.admin(['--mode', 'target', '--op', 'update', '--tid', '1', '--name', 'HeaderDigest', '--value', 'CRC32C,None']);
      await t.admin(['--mode', 'target', '--op', 'update', '--tid', '1', '--name', 'DataDigest', '--value', 'CRC32C,None']);
    },
    run: async (t) => [await scriptedDigestSession('127.0.0.1', t.port, t.targetName)],
  },
];

interface Segment {
  stream: number;
  toTarget: boolean;
  seq: number;
  payload: Buffer;
}

async function capture(pcap: string, port: number, during: () => Promise<string[]>): Promise<string[]> {
  const dump = spawn('tcpdump', ['-i', 'lo', '--immediate-mode', '-U', '-s', '0', '-n', '-w', pcap, `tcp port ${port}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  await new Promise<void>((resolvePromise, reject) => {
    dump.stderr.on('data', (c: Buffer) => {
      err += c.toString();
      if (err.includes('listening on')) resolvePromise();
    });
    dump.once('exit', (code) => reject(new Error(`tcpdump exited (${code}): ${err}`)));
  });
  try {
    return await during();
  } finally {
    // Immediate mode delivers each packet at once; the pause only lets the last FIN/ACKs in.
    await sleep(1000);
    const exited = new Promise((r) => dump.once('exit', r));
    dump.kill('SIGINT');
    await exited;
  }
}

async function segments(pcap: string, port: number): Promise<Segment[]> {
  const out = await run('tshark', [
    '-r',
    pcap,
    '-Y',
    'tcp.len > 0',
    '-T',
    'fields',
    '-E',
    'separator=\t',
    '-e',
    'tcp.stream',
    '-e',
    'tcp.dstport',
    '-e',
    'tcp.seq',
    '-e',
    'tcp.payload',
  ]);
  return out
    .split('\n')
    .filter((l) => /^\d+\t/.test(l))
    .map((l) => {
      const [stream, dst, seq, hex] = l.split('\t');
      return { stream: Number(stream), toTarget: Number(dst) === port, seq: Number(seq), payload: Buffer.from((hex ?? '').replace(/:/g, ''), 'hex') };
    });
}

/** One direction's byte stream, in sequence order; a retransmitted or overlapping segment adds only its new bytes. */
function assemble(segs: readonly Segment[]): Buffer {
  const sorted = [...segs].sort((a, b) => a.seq - b.seq);
  const parts: Buffer[] = [];
  let next = sorted[0]?.seq ?? 0;
  for (const s of sorted) {
    const end = s.seq + s.payload.length;
    if (end <= next) continue;
    if (s.seq > next) throw new Error(`gap in the capture: bytes ${next}..${s.seq} missing`);
    parts.push(s.payload.subarray(next - s.seq));
    next = end;
  }
  return Buffer.concat(parts);
}

export function toHexLines(b: Buffer): string {
  const lines: string[] = [];
  for (let i = 0; i < b.length; i += 32) lines.push(b.subarray(i, i + 32).toString('hex'));
  return lines.join('\n') + (lines.length > 0 ? '\n' : '');
}

async function version(pkg: string): Promise<string> {
  try {
    return (await run('dpkg-query', ['-W', '-f', '${Version}', pkg])).trim();
  } catch {
    return 'unknown';
  }
}

async function readme(sections: readonly string[]): Promise<string> {
  const v = async (p: string): Promise<string> => `${p} ${await version(p)}`;
  const versions = await Promise.all(['tgt', 'libiscsi-bin', 'libiscsi7', 'qemu-utils', 'qemu-block-extra', 'tcpdump', 'tshark'].map(v));
  const { release } = await import('node:os');
  return `# iSCSI captures: libiscsi and QEMU talking to tgt (golden data for the codec)

Real conversations over loopback, recorded once by hand (not in CI) with
\`npx tsc -p . && node dist/test/iscsi/capture.js --out test/fixtures/iscsi/captures\`
(test/iscsi/capture.ts; this README is written by it). Machine: Debian 12, Linux ${release()}, Node ${process.version};
packages: ${versions.join(', ')}.

Each scenario starts its own \`tgtd -f -C N --iscsi portal=127.0.0.1:PORT\` (src/bench/iscsi-tgt.ts):
target \`${TARGET_NAME}\` (tid 1), LUN 1 = a 64 MiB zero-filled /dev/shm file (\`--bstype rdwr\`), ACL ALL,
tgt's defaults otherwise (MaxRecvDataSegmentLength 8192, FirstBurstLength 65536, MaxBurstLength 262144,
InitialR2T=Yes, ImmediateData=Yes, digests None). Recorded with
\`tcpdump -i lo --immediate-mode -U -s 0 -n -w NAME.pcap 'tcp port PORT'\`, split with
\`tshark -r NAME.pcap -Y 'tcp.len > 0' -T fields -e tcp.stream -e tcp.dstport -e tcp.seq -e tcp.payload\`
and reassembled per direction in sequence order.

## Files

- \`NAME.sK.initiator-to-target.hex\`, \`NAME.sK.target-to-initiator.hex\`: the TCP payload of stream K
  (K counts the scenario's TCP connections from 0, in order of appearance), one direction each: the exact
  byte stream a codec reads, PDUs back to back (BHS, AHS, header digest, data + padding, data digest).
  Lowercase hex, 32 bytes (64 digits) a line; read it with \`Buffer.from(text.replace(/\\s+/g, ''), 'hex')\`.
  PDU boundaries are not marked: finding them is the decoder's job. (Checked once by hand: walking each
  stream by BHS lengths, padding and the negotiated digests ends exactly at its last byte.)
- \`NAME.pdus.txt\`: tshark's own reading (its Info column, one line per TCP segment, which may hold
  several PDUs): \`frame N sK I->T|T->I INFO\`. An independent listing to check a decoder's PDU sequence
  against; tshark's SCSI layer marks some INQUIRY data "Malformed" or "transfer limited": those are
  replies cut to the initiator's allocation length, as SPC wants, not damage.
- \`NAME.pcap\`: the raw capture, to re-dissect (\`tshark -r NAME.pcap -o iscsi.target_ports:PORT -V\`).

Initiator names, ISIDs, ITTs, CHAP challenges and responses are whatever the tools chose on the day.
CHAP secrets (test-only): initiator \`${CHAP_USER}\` / \`${CHAP_SECRET}\`, target \`${CHAP_TARGET_USER}\` / \`${CHAP_TARGET_SECRET}\`.

## Scenarios

${sections.join('\n')}`;
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { out: { type: 'string', default: 'test/fixtures/iscsi/captures' }, only: { type: 'string' } },
    strict: true,
  });
  const outDir = resolve(values.out);
  const missing = ['tcpdump', 'tshark', 'tgtd', 'tgtadm', 'iscsi-ls', 'iscsi-inq', 'iscsi-readcapacity16', 'qemu-io'].filter((t) => !onPath(t));
  if (missing.length > 0) throw new Error(`missing: ${missing.join(', ')}`);
  mkdirSync(outDir, { recursive: true });
  const index: string[] = [];
  for (const sc of SCENARIOS) {
    if (values.only !== undefined && !values.only.split(',').includes(sc.name)) continue;
    const lun = `/dev/shm/blkback-capture-${process.pid}.img`;
    createLunFile(lun, LUN_BYTES, { fill: true });
    const t = await startTgt({ backingFile: lun, mode: 'thick', targetName: TARGET_NAME });
    try {
      await sc.setup?.(t);
      const pcap = join(outDir, `${sc.name}.pcap`);
      const commands = await capture(pcap, t.port, () => sc.run(t));
      const segs = await segments(pcap, t.port);
      const streams = [...new Set(segs.map((s) => s.stream))].sort((a, b) => a - b);
      const files: string[] = [];
      for (const [k, stream] of streams.entries()) {
        for (const toTarget of [true, false]) {
          const bytes = assemble(segs.filter((s) => s.stream === stream && s.toTarget === toTarget));
          const file = `${sc.name}.s${k}.${toTarget ? 'initiator-to-target' : 'target-to-initiator'}.hex`;
          writeFileSync(join(outDir, file), toHexLines(bytes));
          files.push(`${file} (${bytes.length} bytes)`);
        }
      }
      // tshark's own reading of the PDUs: an independent listing to check a decoder against.
      const pdus = await run('tshark', [
        '-r',
        pcap,
        '-o',
        `iscsi.target_ports:${t.port}`,
        '-Y',
        'iscsi',
        '-T',
        'fields',
        '-E',
        'separator=\t',
        '-e',
        'frame.number',
        '-e',
        'tcp.stream',
        '-e',
        'tcp.dstport',
        '-e',
        '_ws.col.Info',
      ]);
      const pduLines = pdus
        .split('\n')
        .filter((l) => /^\d+\t/.test(l))
        .map((l) => {
          const [frame, stream, dst, info] = l.split('\t');
          return `frame ${frame} s${streams.indexOf(Number(stream))} ${Number(dst) === t.port ? 'I->T' : 'T->I'} ${info}`;
        });
      writeFileSync(join(outDir, `${sc.name}.pdus.txt`), `${pduLines.join('\n')}\n`);
      index.push(
        `### ${sc.name}\n\n${sc.what}.\n\nClient command(s), tgtd on 127.0.0.1:${t.port}:\n\n${commands.map((c) => `    ${c}`).join('\n')}\n\nFiles: \`${sc.name}.pcap\`, \`${sc.name}.pdus.txt\`, ${files.map((f) => `\`${f.replace(' (', '` (')}`).join(', ')}.\n`,
      );
      process.stderr.write(`${sc.name}: ${streams.length} stream(s), ${segs.length} segments\n`);
    } finally {
      await t.stop();
      rmSync(lun, { force: true });
    }
  }
  writeFileSync(join(outDir, 'README.md'), await readme(index));
  return 0;
}

runIfScript(import.meta.url, 'capture', main);
