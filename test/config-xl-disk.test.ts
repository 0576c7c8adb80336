import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deviceIdToVdev, isRemoteTarget, parseXlDiskSpec, vdevToDeviceId } from '../src/config/xl-disk.ts';

test('vdev numbering (vbd-interface.txt)', () => {
  const cases: [string, number][] = [
    ['xvda', 51712],
    ['xvdb', 51728],
    ['xvdp', 51952],
    ['xvdq', (1 << 28) | (16 << 8)],
    ['xvdz', (1 << 28) | (25 << 8)],
    ['xvdaa', (1 << 28) | (26 << 8)],
    ['xvda1', 51713],
    ['xvdb15', 51743],
    ['xvda16', (1 << 28) | 16],
    ['xvdtq37', (1 << 28) | (536 << 8) | 37],
    ['d0', 51712],
    ['d1p2', 51730],
    ['d536p37', (1 << 28) | (536 << 8) | 37],
    ['sda', 2048],
    ['sdb3', 2067],
    ['hda', 768],
    ['hdb', 832],
    ['hdc2', (22 << 8) | 2],
    ['hdd', (22 << 8) | 64],
    ['51712', 51712],
    ['0xca00', 51712],
    ['0145000', 51712],
  ];
  for (const [name, id] of cases) assert.equal(vdevToDeviceId(name), id, name);
});

test('deviceIdToVdev inverts the canonical names', () => {
  for (const name of [
    'xvda',
    'xvdb',
    'xvdp',
    'xvdq',
    'xvdz',
    'xvdaa',
    'xvdzz',
    'xvdaaa',
    'xvda1',
    'xvdp15',
    'xvda16',
    'xvdtq37',
    'sda',
    'sdp15',
    'hda',
    'hdb63',
    'hdc',
    'hdd1',
  ]) {
    assert.equal(deviceIdToVdev(vdevToDeviceId(name)), name, name);
  }
  assert.equal(deviceIdToVdev(51712), 'xvda');
  assert.equal(deviceIdToVdev((1 << 28) | (16 << 8)), 'xvdq');
  assert.throws(() => deviceIdToVdev(7 << 8), /not in an encoding/);
  assert.throws(() => deviceIdToVdev(2 << 28), /not a Xen virtual device number/);
});

test('bad vdevs', () => {
  assert.throws(() => vdevToDeviceId('xvd'), /vdev 'xvd': not a disk name/);
  assert.throws(() => vdevToDeviceId('sdq'), /sd names cover/);
  assert.throws(() => vdevToDeviceId('hde'), /hd names cover/);
  assert.throws(() => vdevToDeviceId('hda64'), /up to 63/);
  assert.throws(() => vdevToDeviceId('xvda256'), /not a disk name|beyond/);
  assert.throws(() => vdevToDeviceId('0x20000000'), /reserved/);
  assert.throws(() => vdevToDeviceId('vda'), /not a disk name/);
});

test('legacy prefix form: phy:, file:, tap:aio:, aio:', () => {
  const phy = parseXlDiskSpec('phy:/dev/sdb,xvda,w');
  assert.deepEqual(
    {
      target: phy.target,
      vdev: phy.vdev,
      deviceId: phy.deviceId,
      access: phy.access,
      format: phy.format,
      backendtype: phy.backendtype,
      from: phy.backendtypeFrom,
      devtype: phy.devtype,
      discard: phy.discard,
    },
    { target: '/dev/sdb', vdev: 'xvda', deviceId: 51712, access: 'w', format: 'raw', backendtype: 'phy', from: 'prefix', devtype: 'disk', discard: true },
  );
  const file = parseXlDiskSpec('file:/images/guest.img,xvdb,r');
  assert.equal(file.target, '/images/guest.img');
  assert.equal(file.backendtype, 'qdisk');
  assert.equal(file.access, 'r');
  assert.equal(file.deviceId, 51728);
  const tap = parseXlDiskSpec('tap:aio:/images/g.img,xvdc,w');
  assert.equal(tap.backendtype, 'tap');
  assert.equal(tap.target, '/images/g.img');
  assert.equal(parseXlDiskSpec('aio:/images/g.img,xvdc,w').backendtype, 'qdisk');
  assert.equal(parseXlDiskSpec('raw:/images/g.img,xvdc,w').backendtypeFrom, 'default');
  assert.equal(parseXlDiskSpec('phy:/dev/sdb,xvda,w,backendtype=qdisk').backendtype, 'qdisk');
  assert.equal(parseXlDiskSpec('phy:sdb,xvda,ro').target, '/dev/sdb');
  assert.equal(parseXlDiskSpec('nbd:host:1234,xvda,w').script, 'block-nbd');
});

test('positional and key=value forms (the xl-disk-configuration.txt equivalences)', () => {
  const forms = [
    '/dev/vg/guest-volume,,hda',
    '/dev/vg/guest-volume,raw,hda,rw',
    'format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume',
    'raw:/dev/vg/guest-volume,hda,w',
  ];
  for (const spec of forms) {
    const d = parseXlDiskSpec(spec);
    assert.equal(d.target, '/dev/vg/guest-volume', spec);
    assert.equal(d.vdev, 'hda', spec);
    assert.equal(d.deviceId, 768, spec);
    assert.equal(d.access, 'w', spec);
    assert.equal(d.format, 'raw', spec);
    assert.equal(d.spec, spec);
  }
  const kv = parseXlDiskSpec('vdev=xvdb, access=ro, backendtype=tap, no-discard, direct-io-safe, script=block-iscsi, backend=driverdom, target=/img/a,b c ');
  assert.equal(kv.target, '/img/a,b c ', 'target= takes the rest, commas and trailing spaces included');
  assert.equal(kv.access, 'r');
  assert.equal(kv.backendtype, 'tap');
  assert.equal(kv.backendtypeFrom, 'key');
  assert.equal(kv.discard, false);
  assert.equal(kv.directIoSafe, true);
  assert.equal(kv.script, 'block-iscsi');
  assert.equal(kv.backendDomain, 'driverdom');
  const mixed = parseXlDiskSpec('/img/x.raw,raw,vdev=xvdd,w,discard,devtype=disk');
  assert.equal(mixed.vdev, 'xvdd');
  assert.equal(mixed.access, 'w');
  assert.equal(parseXlDiskSpec(' /img/x ,raw, xvde ,  rw').target, '/img/x');
  // An empty positional target may be filled by target= later (xl allows this).
  assert.equal(parseXlDiskSpec(',raw,xvda,w,target=/img/y').target, '/img/y');
});

test('errors name the spec, the place and the key', () => {
  const bad: [string, RegExp][] = [
    ['/img/x,qcow2,xvda,w', /disk spec '\/img\/x,qcow2,xvda,w': format=qcow2 is not supported here \(only raw\)/],
    ['format=vhd,vdev=xvda,target=/x', /format=vhd is not supported/],
    ['format=foo,vdev=xvda,target=/x', /unknown value for format: 'format=foo'/],
    ['/img/x,,hdc,cdrom', /devtype cdrom is not supported/],
    ['/img/x,raw,hdc:cdrom,r', /devtype cdrom is not supported/],
    ['vdev=xvda,devtype=floppy,target=/x', /unknown value for devtype: 'devtype=floppy'/],
    ['/dev/sdb,xvda,w', /unknown format 'xvda' \(the old 'target,vdev,access' order needs a prefix/],
    ['phy:/dev/sdb,xvda,x', /unknown value for access: 'access=x'/],
    ['phy:/dev/sdb,xvda,w,extra', /too many positional parameters at 'extra'/],
    ['phy:/dev/sdb,xvda,w,vdev=xvdb', /vdev given twice \('xvda' and 'xvdb'\)/],
    ['phy:/dev/sdb,xvda,w,speed=fast', /unknown parameter 'speed='/],
    ['phy:/dev/sdb,xvda,w,backendtype=fast', /unknown value for backendtype: 'backendtype=fast'/],
    ['phy:/dev/sdb,xvda,w,backendtype=standalone', /backendtype=standalone is not supported/],
    ['phy:/dev/sdb,xvda,w,colo', /'colo' \(COLO replication\) is not supported/],
    ['phy:/dev/sdb,xvda,w,colo-host=h', /colo-host= \(COLO\) is not supported/],
    ['phy:/dev/sdb,xvda,w,specification=virtio', /specification=virtio is not supported/],
    ['foo:/dev/sdb,xvda,w', /unknown deprecated disk prefix 'foo:'/],
    ['phy:/dev/sdb,vda,w', /vdev 'vda': not a disk name/],
    ['vdev=xvda', /no target/],
    ['phy:/dev/sdb', /no vdev given/],
    ['/a=b,,xvda', /bad disk syntax at '\/a=b'/],
  ];
  for (const [spec, re] of bad) {
    assert.throws(
      () => parseXlDiskSpec(spec, 'guest.cfg:11'),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'BLK_ERR_USAGE', spec);
        assert.ok(err.message.startsWith(`guest.cfg:11: disk spec '${spec}': `), err.message);
        assert.match(err.message, re);
        return true;
      },
      spec,
    );
  }
});

test('an iscsi:// target stays a URL: target= (with a query), the real-xl form with script=, positional', () => {
  const url = 'iscsi://alice@10.0.0.2:3261/iqn.2026-12.org.x:disk/3?secret-file=/etc/blk/chap&digest=crc32c';
  const kv = parseXlDiskSpec(`vdev=xvda,access=rw,target=${url}`);
  assert.equal(kv.target, url, 'not resolved as a path, query and all');
  assert.equal(isRemoteTarget(kv.target), true);
  assert.equal(kv.script, undefined);
  assert.equal(kv.backendtype, 'phy');
  // What a config for real xl carries: script= stops libxl's stat() of the target.
  const real = parseXlDiskSpec(`vdev=xvdb, access=ro, backendtype=phy, script=/bin/true, target=${url}`);
  assert.deepEqual([real.target, real.vdev, real.access, real.backendtype, real.script], [url, 'xvdb', 'r', 'phy', '/bin/true']);
  // Positional: the "iscsi:" of a URL is not the deprecated script prefix.
  const pos = parseXlDiskSpec('iscsi://10.0.0.2/iqn.2026-12.org.x:disk/0,raw,xvdc,w');
  assert.deepEqual([pos.target, pos.vdev, pos.script], ['iscsi://10.0.0.2/iqn.2026-12.org.x:disk/0', 'xvdc', undefined]);
  // The deprecated prefix itself still means script=block-iscsi.
  assert.equal(parseXlDiskSpec('iscsi:iqn.x,xvda,w').script, 'block-iscsi');
  // Paths are unchanged.
  assert.equal(isRemoteTarget(parseXlDiskSpec('vdev=xvda,target=sdb').target), false);
  // A URL with a query given positionally, and malformed URLs, are errors naming the spec.
  const bad: [string, RegExp][] = [
    [`${url},raw,xvda,w`, /must be given last as target=/],
    ['vdev=xvda,target=iscsi://h/iqn.x', /expected iscsi:/],
    ['vdev=xvda,target=iscsi://h/iqn.x/0?digest=md5', /digest=md5/],
    ['vdev=xvda,target=iscsi://alice:pw@h/iqn.x/0', /secret goes in a file/],
  ];
  for (const [spec, re] of bad)
    assert.throws(
      () => parseXlDiskSpec(spec, '--disk'),
      (err: Error) => err.message.startsWith(`--disk: disk spec '${spec}': `) && re.test(err.message),
      spec,
    );
});
