import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseXlConfig } from '../src/config/xl-cfg.ts';

// The seed's configs, shipped byte for byte in examples/ (dist/test -> ../../examples).
const SEED = fileURLToPath(new URL('../../examples', import.meta.url));

test('the seed configs parse: guest-phy.cfg', async (_t) => {
  const text = await readFile(`${SEED}/guest-phy.cfg`, 'utf8');
  const cfg = parseXlConfig(text, 'guest-phy.cfg');
  assert.equal(cfg.name, 'phy-xvda');
  assert.equal(cfg.memory, 2048);
  assert.equal(cfg.maxmem, 2048);
  assert.equal(cfg.vcpus, 2);
  assert.equal(cfg.disks.length, 1);
  const d = cfg.disks[0];
  assert.ok(d !== undefined);
  assert.equal(d.target, '/dev/sdb');
  assert.equal(d.vdev, 'xvda');
  assert.equal(d.deviceId, 51712);
  assert.equal(d.access, 'w');
  assert.equal(d.backendtype, 'phy');
  assert.deepEqual(cfg.ignored, ['kernel', 'ramdisk', 'extra', 'maxmem', 'on_crash', 'vif', 'vfb']);
  assert.deepEqual(cfg.raw['vfb'], ['vnc=1, vnclisten=0.0.0.0,vncunused=1']);
  assert.equal(cfg.raw['extra'], 'console=hvc0 debug earlyprintk=xenboot');
});

test('the seed configs parse: guest-qdisk.cfg', async (_t) => {
  const text = await readFile(`${SEED}/guest-qdisk.cfg`, 'utf8');
  const cfg = parseXlConfig(text, 'guest-qdisk.cfg');
  assert.equal(cfg.name, 'qdisk-xvda');
  assert.equal(cfg.disks[0]?.backendtype, 'qdisk');
  assert.equal(cfg.disks[0]?.target, '/dev/sdb');
});

test('syntax: comments, both quotes, escapes, hex, multi-line lists, ;, +=, later settings win', () => {
  const text = [
    '# a guest',
    "name = 'g1'   # trailing comment",
    'memory = 0x400; vcpus = 4',
    'disk = [',
    "  'phy:/dev/sdb,xvda,w',   # first",
    '',
    '  "file:/img/b.img,xvdb,r",',
    ']',
    'extra = "a\\tb \\"q\\" \\x41\\101"',
    'vif = [ ]',
    'cpus = [ [1, 2], "3" ]',
    'vcpus = 3',
    'disk += [ "phy:/dev/sdc,xvdc,w" ]',
    'extra += " more"',
    'rate = 1.5',
  ].join('\n');
  const cfg = parseXlConfig(text, 'g.cfg');
  assert.equal(cfg.name, 'g1');
  assert.equal(cfg.memory, 1024);
  assert.equal(cfg.vcpus, 3);
  assert.equal(cfg.maxmem, undefined);
  assert.deepEqual(
    cfg.disks.map((d) => [d.vdev, d.target, d.access]),
    [
      ['xvda', '/dev/sdb', 'w'],
      ['xvdb', '/img/b.img', 'r'],
      ['xvdc', '/dev/sdc', 'w'],
    ],
  );
  assert.equal(cfg.raw['extra'], 'a\tb "q" AA more');
  assert.deepEqual(cfg.raw['vif'], []);
  assert.deepEqual(cfg.raw['cpus'], [[1, 2], '3']);
  assert.equal(cfg.raw['rate'], 1.5);
  assert.deepEqual(cfg.ignored, ['extra', 'vif', 'cpus', 'rate']);
});

test('defaults: memory 128 MiB, 1 vcpu, no disks', () => {
  const cfg = parseXlConfig('name="x"\n', 'x.cfg');
  assert.equal(cfg.memory, 128);
  assert.equal(cfg.vcpus, 1);
  assert.deepEqual(cfg.disks, []);
  assert.equal(cfg.file, 'x.cfg');
});

test('errors name file:line', () => {
  const bad: [string, RegExp][] = [
    ['name = "x"\nmemory = 2048 4096\n', /^g\.cfg:2: after the value of 'memory': expected end of line or ';' but found '4096'/],
    ['name = "x\n', /^g\.cfg:1: unterminated string/],
    ['name = x\n', /^g\.cfg:1: value of 'name' must be quoted: "x"/],
    [
      'name = "x"\n\ndisk = [ "phy:/dev/a,xvda,w"\n  "phy:/dev/b,xvdb,w" ]\n',
      /^g\.cfg:4: in the list for 'disk' \(opened on line 3\): expected ',' or '\]' but found string/,
    ],
    ['name = "x"\ndisk = [\n "phy:/dev/a,xvda,w",\n "qcow2:/i,xvdb,w" ]\n', /^g\.cfg:4: disk spec 'qcow2:\/i,xvdb,w': format=qcow2 is not supported/],
    ['name = "x"\ndisk = [ "phy:/dev/a,xvda,w",\n "phy:/dev/b,xvda,w" ]\n', /^g\.cfg:3: .*vdev xvda is already used by 'phy:\/dev\/a,xvda,w'/],
    ['name = "x"\ndisk = "phy:/dev/a,xvda,w"\n', /^g\.cfg:2: 'disk' must be a list of strings/],
    ['name = "x"\nmemory = "lots"\n', /^g\.cfg:2: 'memory' must be a whole number >= 1/],
    ['name = "x"\nvcpus = 0\n', /^g\.cfg:2: 'vcpus' must be a whole number >= 1/],
    ['memory = 1\n', /^g\.cfg: no 'name' setting/],
    ['name = 5\n', /^g\.cfg:1: 'name' must be a string/],
    ['name = "x"\n= 5\n', /^g\.cfg:2: expected a setting name but found '='/],
    ['name = "x"\nfoo bar\n', /^g\.cfg:2: expected '=' after 'foo'/],
    ['name = "x"\nfoo = @\n', /^g\.cfg:2: unexpected character '@'/],
    ['name = "x"\nfoo = "\\q"\n', /^g\.cfg:2: unknown escape/],
    ['name = "x"\nfoo = [1,\n2\n', /^g\.cfg:4: in the list for 'foo' \(opened on line 2\): .*end of file/],
    ['name = "x"\nfoo = 12ab\n', /^g\.cfg:2: bad number '12ab'/],
    ['name = "x"\nfoo = 1\nfoo += "s"\n', /^g\.cfg:3: 'foo \+=' needs/],
  ];
  for (const [text, re] of bad) {
    assert.throws(
      () => parseXlConfig(text, 'g.cfg'),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'BLK_ERR_USAGE');
        assert.match(err.message, re);
        return true;
      },
      text,
    );
  }
});
