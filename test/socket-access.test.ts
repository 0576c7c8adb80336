// Who may speak on our Unix sockets (issue 14, finding 4): the control socket and the xenstore
// socket are created 0600 whatever the umask, with no moment at which they are open wider (a user
// racing connects against many starts never gets in); every accepted connection's SO_PEERCRED is
// checked, so only root, the uid running blkback and --allow-uid uids are served, and a refused
// peer is closed at once and logged with its uid and pid; the default per-user directory is
// refused when someone else owns it or can write to it.
//
// Other users are real processes: children spawned with another uid (this needs root; as another
// user these tests skip, saying why, and under CI=true they fail).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serveControl } from '../src/control/server.ts';
import type { ControlTarget } from '../src/control/target.ts';
import { ControlError } from '../src/control/protocol.ts';
import { listenUnix } from '../src/xenstore/unix.ts';
import { ffiMissing, stopIfMissing } from './helpers-tools.ts';
import type { Missing } from './helpers-tools.ts';
import { peerCredentialsProblem, simulatePeerCredentialsUnavailable } from '../src/internal/peer-cred.ts';

const NOBODY = 65534;
const OTHER = 65533; // a uid with no account: only its number matters to the kernel
const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const SERVER_JS = new URL('../src/control/server.js', import.meta.url).href;
const PATHS_JS = new URL('../src/control/paths.js', import.meta.url).href;

const INFO = '{"v":1,"id":1,"op":"info"}\n';
/** XS_READ (2) of "/", request id 7, no transaction: a 16-byte little-endian header and the path. */
const XS_READ_ROOT = Buffer.from([2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0x2f, 0]);

const dummyTarget: ControlTarget = {
  list: async () => [],
  stats: async () => [],
  attach: async () => {
    throw new ControlError('CTL_ERR_UNSUPPORTED', 'not here');
  },
  detach: async () => {
    throw new ControlError('CTL_ERR_UNSUPPORTED', 'not here');
  },
  resize: async () => {
    throw new ControlError('CTL_ERR_UNSUPPORTED', 'not here');
  },
  info: async () => ({ service: 'blkback' }),
};

/** Why children cannot run as other users here, or undefined when they can. */
const cannotSwitchUser: string | undefined = (() => {
  if (process.getuid?.() !== 0) return 'needs root, to run clients as other users';
  const probe = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.getuid()))'], { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
  if (probe.stdout !== String(NOBODY)) return `node cannot run as uid ${NOBODY} here: ${probe.stderr || probe.error?.message || 'no output'}`;
  return undefined;
})();

/** cannotSwitchUser, as the tests' gate sees it (a failure under CI=true, which runs as root). */
function switchUserMissing(): Missing | undefined {
  return cannotSwitchUser === undefined ? undefined : { what: cannotSwitchUser, install: 'run the tests as root, as CI does' };
}

/** A directory others can reach (as /tmp is), for sockets other users try to connect to. */
function sharedDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

interface ProbeResult {
  readonly connected: boolean;
  readonly error?: string;
  readonly data: string;
  readonly bytes: number;
  readonly pid: number;
}

// A client as another uid: connects, sends the payload, and reports what came back (an answer, a
// refusal line, or a close without anything).
const PROBE = `
import net from 'node:net';
const [path, hex, want] = process.argv.slice(1);
let connected = false, data = Buffer.alloc(0), ended = false;
const done = (extra) => { if (ended) return; ended = true; process.stdout.write(JSON.stringify({ connected, data: data.toString('latin1'), bytes: data.length, pid: process.pid, ...extra })); process.exit(0); };
const s = net.connect(path);
s.on('connect', () => { connected = true; if (hex !== '') s.write(Buffer.from(hex, 'hex')); });
s.on('data', (d) => { data = Buffer.concat([data, d]); if (data.length >= Number(want)) done({}); });
s.on('error', (e) => done({ error: e.code }));
s.on('close', () => done({}));
setTimeout(() => done({ error: 'TIMEOUT' }), 5000);
`;

function probeAs(uid: number, path: string, payload: Uint8Array, want: number): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', PROBE, path, Buffer.from(payload).toString('hex'), String(want)],
      { uid, gid: NOBODY, timeout: 20_000 },
      (err, stdout, stderr) => {
        if (err !== null) return reject(new Error(`probe as uid ${uid} failed: ${err.message} ${stderr}`));
        resolve(JSON.parse(stdout) as ProbeResult);
      },
    );
  });
}

/** Connects as ourselves (root) and reads `want` bytes of answer. */
function probeHere(path: string, payload: Uint8Array, want: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let connected = false;
    let data = Buffer.alloc(0);
    let ended = false;
    const s = net.connect(path);
    const done = (extra: { error?: string }): void => {
      if (ended) return;
      ended = true;
      s.destroy();
      resolve({ connected, data: data.toString('latin1'), bytes: data.length, pid: process.pid, ...extra });
    };
    s.on('connect', () => {
      connected = true;
      s.write(payload);
    });
    s.on('data', (d: Buffer) => {
      data = Buffer.concat([data, d]);
      if (data.length >= want) done({});
    });
    s.on('error', (e: NodeJS.ErrnoException) => done({ error: e.code ?? 'error' }));
    s.on('close', () => done({}));
  });
}

function answered(r: ProbeResult): boolean {
  return r.connected && /"ok":true/.test(r.data);
}

function withUmask<T>(mask: number, fn: () => Promise<T>): Promise<T> {
  const old = process.umask(mask);
  return fn().finally(() => process.umask(old));
}

test('under umask 000 the control and xenstore sockets are created 0600', async () => {
  const dir = sharedDir('blkback-sock-mode-');
  try {
    await withUmask(0, async () => {
      const control = await serveControl(dummyTarget, { path: join(dir, 'control.sock'), log: () => undefined });
      const xs = await listenUnix(join(dir, 'xs.sock'), (t) => t.close());
      try {
        assert.equal((statSync(join(dir, 'control.sock')).mode & 0o7777).toString(8), '600', 'control socket mode');
        assert.equal((statSync(join(dir, 'xs.sock')).mode & 0o7777).toString(8), '600', 'xenstore socket mode');
        if (cannotSwitchUser === undefined) {
          const c = await probeAs(NOBODY, join(dir, 'control.sock'), Buffer.from(INFO), 1);
          assert.deepEqual([c.connected, c.error], [false, 'EACCES'], `nobody must not reach the control socket: ${JSON.stringify(c)}`);
          const x = await probeAs(NOBODY, join(dir, 'xs.sock'), XS_READ_ROOT, 16);
          assert.deepEqual([x.connected, x.error], [false, 'EACCES'], `nobody must not reach the xenstore socket: ${JSON.stringify(x)}`);
        }
      } finally {
        await control.close();
        await xs.close();
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a peer that is neither root nor us is refused at accept and logged with its uid and pid, even through a widened mode', async (t) => {
  if (stopIfMissing(t, switchUserMissing())) return;
  const dir = sharedDir('blkback-sock-peer-');
  const logs: string[] = [];
  const control = await serveControl(dummyTarget, { path: join(dir, 'control.sock'), log: (l) => logs.push(l) });
  const xsLogs: string[] = [];
  let xsServed = 0;
  const xs = await listenUnix(
    join(dir, 'xs.sock'),
    (t) => {
      xsServed++;
      t.close();
    },
    { log: (l: string) => xsLogs.push(l) },
  );
  try {
    // Someone (an admin's chmod, a umask we did not foresee) opens the files to everyone: the
    // credential check still stands.
    chmodSync(join(dir, 'control.sock'), 0o666);
    chmodSync(join(dir, 'xs.sock'), 0o666);
    // A request gets no answer (the connection is closed; a client writing as we close gets EPIPE).
    const asked = await probeAs(NOBODY, join(dir, 'control.sock'), Buffer.from(INFO), 10_000);
    assert.ok(asked.connected && !answered(asked), `nobody must not be served: ${JSON.stringify(asked)}`);
    // A client that only reads is told why.
    const c = await probeAs(NOBODY, join(dir, 'control.sock'), Buffer.alloc(0), 10_000);
    assert.match(c.data, /"ok":false.*uid 65534/, `the refused client is told why: ${JSON.stringify(c)}`);
    assert.ok(
      logs.some((l) => l.includes('uid 65534') && l.includes(`pid ${c.pid}`) && /refused/.test(l)),
      `a log line names the refused uid and pid: ${logs.join(' | ')}`,
    );
    const x = await probeAs(NOBODY, join(dir, 'xs.sock'), XS_READ_ROOT, 16);
    assert.ok(x.bytes === 0, `nobody gets no xenstore reply: ${JSON.stringify(x)}`);
    assert.equal(xsServed, 0, 'the xenstore connection never reached the daemon');
    assert.ok(
      xsLogs.some((l) => l.includes('uid 65534') && l.includes(`pid ${x.pid}`)),
      `xenstore refusal logged: ${xsLogs.join(' | ')}`,
    );
    // Root is served.
    assert.ok(answered(await probeHere(join(dir, 'control.sock'), Buffer.from(INFO), 10)), 'root is answered');
  } finally {
    await control.close();
    await xs.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--allow-uid admits the uids named and nobody else', async (t) => {
  if (stopIfMissing(t, switchUserMissing())) return;
  const dir = sharedDir('blkback-sock-allow-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const logs: string[] = [];
  const path = join(dir, 'control.sock');
  const control = await serveControl(dummyTarget, { path, log: (l) => logs.push(l), allowUids: [OTHER] });
  try {
    const allowed = await probeAs(OTHER, path, Buffer.from(INFO), 10);
    assert.ok(answered(allowed), `uid ${OTHER} is allowed: ${JSON.stringify(allowed)}`);
    const other = await probeAs(NOBODY, path, Buffer.from(INFO), 10_000);
    assert.ok(!answered(other), `uid ${NOBODY} is not: ${JSON.stringify(other)}`);
    assert.ok(
      logs.some((l) => l.includes(`uid ${NOBODY}`) && l.includes(`pid ${other.pid}`)),
      logs.join(' | '),
    );
    assert.ok(answered(await probeHere(path, Buffer.from(INFO), 10)), 'root still is');
  } finally {
    await control.close();
  }
  // The same through the command line: blkback xenstored --allow-uid.
  const xsPath = join(dir, 'xs.sock');
  const daemon = spawn(process.execPath, [MAIN, 'xenstored', '--socket', xsPath, '--allow-uid', String(OTHER)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  daemon.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    await waitFor(
      () => stderr.includes('listening'),
      10_000,
      () => `xenstored did not start: ${stderr}`,
    );
    const ok = await probeAs(OTHER, xsPath, XS_READ_ROOT, 16);
    assert.ok(ok.bytes >= 16, `uid ${OTHER} gets a reply: ${JSON.stringify(ok)}`);
    const no = await probeAs(NOBODY, xsPath, XS_READ_ROOT, 16);
    assert.equal(no.bytes, 0, `uid ${NOBODY} gets none: ${JSON.stringify(no)}`);
    await waitFor(
      () => stderr.includes(`uid ${NOBODY}`),
      5000,
      () => `xenstored logs the refusal: ${stderr}`,
    );
  } finally {
    await stop(daemon);
  }
  const bad = spawnSync(process.execPath, [MAIN, 'xenstored', '--socket', xsPath, '--allow-uid', 'bob'], { encoding: 'utf8' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--allow-uid.*bob/);
});

// A control server run by uid 65534 in a child: the owner (another 65534 process) and root are
// served; uid 65533 cannot even connect (mode 0600).
const OWN_SERVER = `
const { serveControl } = await import(${JSON.stringify(SERVER_JS)});
const target = { list: async () => [], stats: async () => [], attach: async () => { throw new Error('no'); }, detach: async () => { throw new Error('no'); }, resize: async () => { throw new Error('no'); }, info: async () => ({ service: 'blkback' }) };
const server = await serveControl(target, { path: process.argv[1], log: (l) => process.stderr.write(l + '\\n') });
process.stdout.write('ready\\n');
process.stdin.on('end', async () => { await server.close(); process.exit(0); });
process.stdin.resume();
`;

test('a server run by a non-root user serves that user and root, and refuses others', async (t) => {
  if (stopIfMissing(t, switchUserMissing())) return;
  const dir = sharedDir('blkback-sock-own-');
  chownSync(dir, NOBODY, NOBODY);
  const path = join(dir, 'control.sock');
  const server = spawn(process.execPath, ['--input-type=module', '-e', OWN_SERVER, path], { uid: NOBODY, gid: NOBODY, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  server.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  server.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  try {
    await waitFor(
      () => out.includes('ready'),
      10_000,
      () => `server as nobody did not start: ${err}`,
    );
    assert.equal((statSync(path).mode & 0o777).toString(8), '600');
    assert.ok(answered(await probeAs(NOBODY, path, Buffer.from(INFO), 10)), 'the owner is answered');
    assert.ok(answered(await probeHere(path, Buffer.from(INFO), 10)), 'root is answered');
    const other = await probeAs(OTHER, path, Buffer.from(INFO), 10);
    assert.deepEqual([other.connected, other.error], [false, 'EACCES'], JSON.stringify(other));
    chmodSync(path, 0o666); // widened: the credential check refuses instead
    const widened = await probeAs(OTHER, path, Buffer.from(INFO), 10_000);
    assert.ok(!answered(widened), JSON.stringify(widened));
    await waitFor(
      () => err.includes(`uid ${OTHER}`),
      5000,
      () => `refusal logged: ${err}`,
    );
  } finally {
    server.stdin!.end();
    await stop(server);
    rmSync(dir, { recursive: true, force: true });
  }
});

// Races connects as nobody against many starts of the control server under umask 000. Before the
// fix the server listened, then chmodded: a connect landing in between was served. The racer calls
// socket/connect/close through koffi in a tight loop (about 10^5 tries a second), yielding every
// millisecond to answer the parent's questions.
const KOFFI_FROM = fileURLToPath(new URL('../../package.json', import.meta.url));
const racerProblem = (): string | undefined => {
  const why = peerCredentialsProblem();
  return why === undefined ? undefined : `the racer calls connect(2) through koffi: ${why}`;
};
const RACER = `
import { createRequire } from 'node:module';
const koffi = createRequire(process.argv[2])('koffi');
const libc = koffi.load('libc.so.6');
const socket = libc.func('int socket(int domain, int type, int protocol)');
const connect = libc.func('int connect(int fd, const uint8_t *addr, uint32_t len)');
const close = libc.func('int close(int fd)');
const path = Buffer.from(process.argv[1]);
const addr = Buffer.alloc(2 + path.length + 1);
addr.writeUInt16LE(1, 0); // AF_UNIX
path.copy(addr, 2);
let won = 0, tries = 0;
const spin = () => {
  const end = Date.now() + 1;
  do {
    const fd = socket(1, 1, 0); // AF_UNIX, SOCK_STREAM
    tries++;
    if (connect(fd, addr, addr.length) === 0) won++;
    close(fd);
  } while (Date.now() < end);
  setImmediate(spin);
};
process.on('message', () => process.send({ won, tries }));
process.on('disconnect', () => process.exit(0));
process.send('ready');
spin();
`;

test('no window: connects racing 300 starts under umask 000 never get in', async (t) => {
  if (stopIfMissing(t, switchUserMissing()) || stopIfMissing(t, ffiMissing('connect(2)', racerProblem()))) return;
  const dir = sharedDir('blkback-sock-race-');
  const path = join(dir, 'control.sock');
  const racer = spawn(process.execPath, ['--input-type=module', '-e', RACER, path, KOFFI_FROM], {
    uid: NOBODY,
    gid: NOBODY,
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const ask = (): Promise<{ won: number; tries: number }> =>
    new Promise((resolve) => {
      racer.once('message', (m) => resolve(m as { won: number; tries: number }));
      racer.send('count');
    });
  const starts = 300;
  let startsWon = 0;
  let last = { won: 0, tries: 0 };
  const refusals: string[] = [];
  try {
    await new Promise((resolve) => racer.once('message', resolve));
    await withUmask(0, async () => {
      for (let i = 0; i < starts; i++) {
        const server = await serveControl(dummyTarget, { path, log: (l) => (/refused/.test(l) ? refusals.push(l) : undefined) });
        await server.close();
        const now = await ask();
        if (now.won > last.won) startsWon++;
        last = now;
      }
    });
    // The control: a socket opened to everyone is reached by the racer (and refused at accept),
    // so the zero above is the mode's doing, not a racer that cannot reach the path.
    const open = await serveControl(dummyTarget, { path, log: (l) => (/refused/.test(l) ? refusals.push(l) : undefined) });
    chmodSync(path, 0o666);
    await waitFor(
      () => refusals.length > 0,
      5000,
      () => 'the racer never reached a socket opened to everyone',
    );
    await open.close();
  } finally {
    racer.disconnect();
    await stop(racer);
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`socket race: nobody got in at ${startsWon} of ${starts} starts (${last.won} connects of ${last.tries} tries)\n`);
  assert.ok(last.tries > starts, `the racer kept trying (${last.tries} tries)`);
  assert.equal(startsWon, 0, `nobody connected during ${startsWon} of ${starts} starts`);
});

// The default directory for a user without XDG_RUNTIME_DIR is $TMPDIR/blkback-<uid>: anyone can
// create it first. A server run as uid 65533 must refuse it unless it is its own and closed to others.
const DEFAULT_SERVER = `
const { serveControl } = await import(${JSON.stringify(SERVER_JS)});
const { defaultControlSocket } = await import(${JSON.stringify(PATHS_JS)});
const target = { list: async () => [], stats: async () => [], attach: async () => { throw new Error('no'); }, detach: async () => { throw new Error('no'); }, resize: async () => { throw new Error('no'); }, info: async () => ({ service: 'blkback' }) };
try {
  const server = await serveControl(target, { path: defaultControlSocket(), log: () => undefined });
  process.stdout.write('served ' + server.path);
  await server.close();
} catch (e) {
  process.stdout.write('refused ' + e.message);
}
`;

test('the default per-user directory is refused when someone else owns it or can write to it', (t) => {
  if (stopIfMissing(t, switchUserMissing())) return;
  const base = sharedDir('blkback-sock-dir-');
  chmodSync(base, 0o1777); // a /tmp of our own
  const own = join(base, `blkback-${OTHER}`);
  const run = (): string => {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, TMPDIR: base };
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', DEFAULT_SERVER], { uid: OTHER, gid: NOBODY, env, encoding: 'utf8', timeout: 20_000 });
    return `${r.stdout}${r.stderr}`;
  };
  try {
    // Someone else (nobody) made it first and left it open so that our socket can be created in it.
    mkdirSync(own, { mode: 0o777 });
    chmodSync(own, 0o777);
    chownSync(own, NOBODY, NOBODY);
    const foreign = run();
    assert.match(foreign, /^refused .*blkback-65533.*(owned by|belongs to) uid 65534/, foreign);
    assert.match(foreign, /XDG_RUNTIME_DIR|--control-socket|remove/i, 'the message says what to do');
    rmSync(own, { recursive: true });

    // Ours, but writable by others.
    mkdirSync(own);
    chmodSync(own, 0o777);
    chownSync(own, OTHER, NOBODY);
    assert.match(run(), /^refused .*writable/);
    rmSync(own, { recursive: true });

    // A symbolic link to somewhere else.
    const elsewhere = mkdtempSync(join(base, 'elsewhere-'));
    chownSync(elsewhere, OTHER, NOBODY);
    symlinkSync(elsewhere, own);
    assert.match(run(), /^refused .*symbolic link/);
    rmSync(own);

    // Ours and private, or not there yet: served.
    assert.match(run(), /^served .*blkback-65533\/control\.sock$/);
    assert.equal((statSync(own).mode & 0o777).toString(8), '700');
    assert.equal(statSync(own).uid, OTHER);
    assert.match(run(), /^served /);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('without SO_PEERCRED the 0600 mode is the gate, and --allow-uid is refused at start', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-sock-nocred-'));
  simulatePeerCredentialsUnavailable('koffi is not installed (test)');
  try {
    const logs: string[] = [];
    const control = await serveControl(dummyTarget, { path: join(dir, 'control.sock'), log: (l) => logs.push(l) });
    try {
      assert.equal((statSync(join(dir, 'control.sock')).mode & 0o777).toString(8), '600');
      assert.ok(answered(await probeHere(join(dir, 'control.sock'), Buffer.from(INFO), 10)), 'we are answered');
      assert.ok(
        logs.some((l) => /koffi is not installed/.test(l) && /0600/.test(l)),
        logs.join(' | '),
      );
    } finally {
      await control.close();
    }
    await assert.rejects(serveControl(dummyTarget, { path: join(dir, 'c2.sock'), allowUids: [OTHER] }), /--allow-uid.*SO_PEERCRED|SO_PEERCRED.*--allow-uid/);
  } finally {
    simulatePeerCredentialsUnavailable(undefined);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('near the sun_path limit: a 107-byte path works, a longer one is refused with a message; nothing is left behind', async () => {
  const base = mkdtempSync(join(tmpdir(), 'blkback-sock-len-'));
  try {
    // A directory long enough that the private ".blkback-XXXXXX/s" name would not fit beside the socket.
    const dir = join(base, 'd'.repeat(Math.max(1, 107 - base.length - 1 - 1 - 12)));
    mkdirSync(dir);
    const path = join(dir, 'x'.repeat(107 - dir.length - 1));
    assert.equal(Buffer.byteLength(path), 107);
    const xs = await listenUnix(path, (t) => t.close());
    try {
      assert.equal((statSync(path).mode & 0o777).toString(8), '600');
      const c = await probeHere(path, XS_READ_ROOT, 0);
      assert.ok(c.connected, JSON.stringify(c));
    } finally {
      await xs.close();
    }
    await assert.rejects(
      listenUnix(`${path}y`, (t) => t.close()),
      /too long for a Unix socket/,
    );
    assert.deepEqual(readdirSync(dir), [], 'no socket and no private directory left');
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

async function waitFor(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(what());
    await new Promise((r) => setTimeout(r, 20));
  }
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

test('ctl trusts its default socket only in a directory of its own', (t) => {
  if (stopIfMissing(t, switchUserMissing())) return;
  const base = sharedDir('blkback-ctl-dir-');
  chmodSync(base, 0o1777); // a /tmp of our own
  const own = join(base, `blkback-${OTHER}`);
  const ctl = (): { status: number | null; out: string } => {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, TMPDIR: base };
    const r = spawnSync(process.execPath, [MAIN, 'ctl', 'list'], { uid: OTHER, gid: NOBODY, env, encoding: 'utf8', timeout: 20_000 });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };
  try {
    // Someone else (nobody) made the directory first, and could have put a socket of theirs in it.
    mkdirSync(own, { mode: 0o755 });
    chownSync(own, NOBODY, NOBODY);
    const foreign = ctl();
    assert.notEqual(foreign.status, 0);
    assert.match(foreign.out, /blkback-65533 belongs to uid 65534.*--socket PATH/s, foreign.out);
    rmSync(own, { recursive: true });
    // Its own directory, with nothing listening: the usual "cannot connect", not a refusal.
    mkdirSync(own, { mode: 0o700 });
    chownSync(own, OTHER, NOBODY);
    const mine = ctl();
    assert.notEqual(mine.status, 0);
    assert.doesNotMatch(mine.out, /belongs to/);
    assert.match(mine.out, /control\.sock/);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});
