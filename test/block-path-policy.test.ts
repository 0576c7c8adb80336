// The path policy for stores opened on someone else's behalf (path-policy.ts): block devices under
// /dev, regular files under --allow-path directories, ram:/null: always; the rest refused by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { ALLOW_PATH_OPTION_HELP, PATH_POLICY_HELP, checkStoreSpec, openStoreUnderPolicy, resolvePathPolicy } from '../src/stores/path-policy.ts';
import { openFileDisk } from '../src/block/file.ts';
import { withLoopDevice } from './helpers-loop.ts';
import { stopIfMissing } from './helpers-tools.ts';

const run = promisify(execFile);
const MiB = 1 << 20;
const O_PATH = 0o10000000;

/** root/allowed/{disk.img, sub/}, root/outside.img, all resolved (/tmp may be a symlink elsewhere). */
async function withTree(body: (p: { root: string; allowed: string; disk: string; outside: string }) => Promise<void>): Promise<void> {
  const root = fs.realpathSync(await mkdtemp('/tmp/blk-policy-'));
  const allowed = path.join(root, 'allowed');
  await mkdir(path.join(allowed, 'sub'), { recursive: true });
  const disk = path.join(allowed, 'disk.img');
  const outside = path.join(root, 'outside.img');
  for (const f of [disk, outside]) {
    await writeFile(f, '');
    await truncate(f, MiB);
  }
  try {
    await body({ root, allowed, disk, outside });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

function refusedWith(message: string | RegExp): (err: Error & { code?: string; errno?: number }) => boolean {
  return (err) => {
    assert.equal(err.code, 'BLK_ERR_USAGE', err.message);
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  };
}

test('path policy: a file under an --allow-path directory opens (file:, phy:, bare path, volatile:)', async () => {
  await withTree(async ({ allowed, disk }) => {
    const policy = { allowPaths: [allowed] };
    for (const spec of [`file:${disk}`, `phy:${disk}`, disk, `volatile:file:${disk}`, `file:${allowed}/sub/../disk.img`]) {
      const dev = await openStoreUnderPolicy(spec, policy);
      try {
        assert.equal(dev.name, spec);
        assert.equal(dev.info.size, MiB);
        await dev.writev(0, [new Uint8Array(4096).fill(1)]);
        await dev.flush();
      } finally {
        await dev.close();
      }
    }
    assert.deepEqual(await checkStoreSpec(`file:${disk}`, policy), { kind: 'file', path: disk, dev: fs.statSync(disk).dev, ino: fs.statSync(disk).ino });
    const ro = await openStoreUnderPolicy(disk, policy, { readOnly: true });
    assert.equal(ro.info.readOnly, true);
    await ro.close();
  });
});

test('path policy: ram: and null: are always allowed', async () => {
  for (const spec of ['ram:1M', 'null:1M', 'volatile:ram:1M']) {
    const dev = await openStoreUnderPolicy(spec, { allowPaths: [] });
    assert.equal(dev.info.size, MiB);
    await dev.close();
    assert.deepEqual(await checkStoreSpec(spec, { allowPaths: [] }), { kind: 'memory' });
  }
});

test('path policy: a file outside every allowed directory is refused, naming the path and the rule', async () => {
  await withTree(async ({ allowed, outside }) => {
    const policy = { allowPaths: [allowed] };
    await assert.rejects(
      openStoreUnderPolicy('file:/etc/hostname', policy),
      refusedWith(`store spec 'file:/etc/hostname': /etc/hostname is not under an --allow-path directory (allowed: ${allowed})`),
    );
    await assert.rejects(
      openStoreUnderPolicy(`phy:${outside}`, policy),
      refusedWith(`store spec 'phy:${outside}': ${outside} is not under an --allow-path directory (allowed: ${allowed})`),
    );
    await assert.rejects(
      openStoreUnderPolicy(`file:${outside}`, { allowPaths: [] }),
      refusedWith(`store spec 'file:${outside}': ${outside} is a regular file, and no --allow-path directory was given (regular files must be under one)`),
    );
    // A directory whose name starts like the allowed one is not under it.
    const sibling = `${allowed}-evil`;
    await mkdir(sibling);
    await writeFile(path.join(sibling, 'x.img'), Buffer.alloc(4096));
    await assert.rejects(openStoreUnderPolicy(`file:${sibling}/x.img`, policy), refusedWith(/is not under an --allow-path directory/));
    await assert.rejects(
      openStoreUnderPolicy('volatile:file:/etc/hostname', policy),
      refusedWith(/^store spec 'volatile:file:\/etc\/hostname': \/etc\/hostname is not under/),
    );
  });
});

test('path policy: symlinks and .. are resolved before the check', async () => {
  await withTree(async ({ root, allowed, outside }) => {
    const policy = { allowPaths: [allowed] };
    const link = path.join(allowed, 'escape.img');
    await symlink(outside, link);
    await assert.rejects(
      openStoreUnderPolicy(`file:${link}`, policy),
      refusedWith(`store spec 'file:${link}': ${link} (${outside}) is not under an --allow-path directory (allowed: ${allowed})`),
    );
    const shadowLink = path.join(allowed, 'shadow');
    await symlink('/etc/shadow', shadowLink);
    await assert.rejects(openStoreUnderPolicy(shadowLink, policy), refusedWith(/\(\/etc\/shadow\) is not under an --allow-path directory/));
    const dotdot = `${allowed}/../outside.img`;
    await assert.rejects(
      openStoreUnderPolicy(`file:${dotdot}`, policy),
      refusedWith(`store spec 'file:${dotdot}': ${dotdot} (${outside}) is not under an --allow-path directory (allowed: ${allowed})`),
    );
    // A link inside the allowed directory to a file inside it is fine; so is an allowed directory
    // named through a symlink.
    const inner = path.join(allowed, 'inner.img');
    await symlink(path.join(allowed, 'disk.img'), inner);
    await (await openStoreUnderPolicy(`file:${inner}`, policy)).close();
    const dirLink = path.join(root, 'via-link');
    await symlink(allowed, dirLink);
    await (await openStoreUnderPolicy(`file:${dirLink}/disk.img`, { allowPaths: [dirLink] })).close();
  });
});

test('path policy: block devices under /dev are allowed; character devices, directories, FIFOs and missing paths are not', async (t) => {
  await withTree(async ({ allowed }) => {
    const policy = { allowPaths: [allowed, '/dev'] };
    for (const dev of ['/dev/null', '/dev/zero', '/dev/urandom']) {
      await assert.rejects(
        openStoreUnderPolicy(dev, policy),
        refusedWith(
          `store spec '${dev}': ${dev} is a character device; only block devices under /dev and regular files under an --allow-path directory can be stores`,
        ),
      );
    }
    await assert.rejects(openStoreUnderPolicy(`file:${allowed}/sub`, policy), refusedWith(/sub is a directory; only block devices/));
    await assert.rejects(
      openStoreUnderPolicy(`file:${allowed}/nope.img`, policy),
      refusedWith(`store spec 'file:${allowed}/nope.img': ${allowed}/nope.img does not exist`),
    );
    const fifo = path.join(allowed, 'fifo');
    try {
      await run('mkfifo', [fifo]);
    } catch (err) {
      stopIfMissing(t, { what: `mkfifo (${(err as Error).message.split('\n')[0]})`, install: 'apt-get install coreutils' });
      return;
    }
    // Refused without blocking in open(2) (O_PATH never waits for a writer).
    await assert.rejects(openStoreUnderPolicy(`file:${fifo}`, policy), refusedWith(/fifo is a FIFO; only block devices/));
    await assert.rejects(openStoreUnderPolicy(`file:${fifo}`, policy, { readOnly: true }), refusedWith(/is a FIFO/));
  });
  await withLoopDevice(4 * MiB, t, async (loop) => {
    for (const spec of [loop, `phy:${loop}`, `file:${loop}`]) {
      const dev = await openStoreUnderPolicy(spec, { allowPaths: [] });
      assert.equal(dev.info.size, 4 * MiB);
      await dev.close();
    }
    assert.equal((await checkStoreSpec(loop, { allowPaths: [] })).kind, 'block-device');
    await assert.rejects(
      openStoreUnderPolicy(loop, { allowPaths: [], allowBlockDevices: false }),
      refusedWith(`store spec '${loop}': ${loop} is a block device, and block devices are not allowed here`),
    );
    // A device node made outside /dev (in an allowed directory) is refused.
    await withTree(async ({ allowed }) => {
      const { rdev } = fs.statSync(loop);
      const node = path.join(allowed, 'sneaky');
      const major = Number((BigInt(rdev) >> 8n) & 0xfffn);
      const minor = Number((BigInt(rdev) & 0xffn) | ((BigInt(rdev) >> 12n) & 0xffffff00n));
      await run('mknod', [node, 'b', String(major), String(minor)]);
      await assert.rejects(
        openStoreUnderPolicy(node, { allowPaths: [allowed] }),
        refusedWith(`store spec '${node}': ${node} is a block device outside /dev (only device nodes under /dev are allowed)`),
      );
    });
  });
});

test('path policy: the file opened is the one checked, even if the name is replaced in between', async () => {
  await withTree(async ({ allowed, disk, outside }) => {
    await writeFile(disk, Buffer.alloc(4096, 0x11));
    await writeFile(outside, Buffer.alloc(4096, 0x22));
    // What openStoreUnderPolicy does, with a replacement between its check and the driver's open.
    const pathFd = fs.openSync(disk, O_PATH | fs.constants.O_NOFOLLOW);
    try {
      const st = fs.fstatSync(pathFd);
      const moved = path.join(allowed, 'moved.img');
      await rename(disk, moved);
      await symlink(outside, disk); // the checked name now points outside
      const dev = await openFileDisk(disk, { checked: { pathFd, dev: st.dev, ino: st.ino } });
      try {
        const buf = new Uint8Array(4096);
        await dev.readv(0, [buf]);
        assert.ok(
          buf.every((x) => x === 0x11),
          'read the checked file, not the symlink target',
        );
        await dev.writev(0, [new Uint8Array(4096).fill(0x33)]);
        await dev.flush();
      } finally {
        await dev.close();
      }
      assert.equal((await readFile(outside))[0], 0x22, 'the file outside was not touched');
      assert.equal((await readFile(moved))[0], 0x33);
      // And an identity that does not match what is opened is refused.
      await assert.rejects(openFileDisk(moved, { checked: { pathFd, dev: st.dev, ino: st.ino + 1 } }), refusedWith(/changed while it was being opened/));
    } finally {
      fs.closeSync(pathFd);
    }
  });
});

test('path policy: resolvePathPolicy checks the --allow-path directories; the help text fits', async () => {
  await withTree(async ({ root, allowed, disk }) => {
    const link = path.join(root, 'link');
    await symlink(allowed, link);
    assert.deepEqual(await resolvePathPolicy([allowed, link, `${allowed}/sub/..`]), { allowPaths: [allowed, allowed, allowed] });
    assert.deepEqual(await resolvePathPolicy([], { allowBlockDevices: false }), { allowPaths: [], allowBlockDevices: false });
    await assert.rejects(resolvePathPolicy([`${root}/missing`]), refusedWith(`--allow-path ${root}/missing: no such directory`));
    await assert.rejects(resolvePathPolicy([disk]), refusedWith(`--allow-path ${disk}: not a directory`));
  });
  for (const line of [...PATH_POLICY_HELP.split('\n'), ALLOW_PATH_OPTION_HELP]) assert.ok(line.length <= 100, `help line too long: ${line}`);
  assert.match(PATH_POLICY_HELP, /--allow-path DIR/);
  assert.match(ALLOW_PATH_OPTION_HELP, /^ {2}--allow-path DIR {9}/);
});
