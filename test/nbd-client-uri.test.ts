// The NBD URI parser (src/config/nbd-uri.ts) through parseStoreSpec, as users type specs: every
// form of the NBD URI specification's table, libnbd's TLS query parameters, and bad inputs with
// messages that say what is wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseStoreSpec } from '../src/config/store-spec.ts';
import type { NbdStoreSpec } from '../src/config/nbd-uri.ts';
import { describeNbdTarget } from '../src/config/nbd-uri.ts';
import { parseXlDiskSpec } from '../src/config/xl-disk.ts';
import { UsageError } from '../src/internal/errors.ts';

function nbd(spec: string): NbdStoreSpec {
  const s = parseStoreSpec(spec);
  assert.equal(s.kind, 'nbd', spec);
  return s as NbdStoreSpec;
}

test("export names as the URI specification's table gives them", () => {
  const table: [string, string][] = [
    ['nbd://example.com/disk', 'disk'],
    ['nbd+unix:///disk?socket=sock', 'disk'],
    ['nbd://example.com/', ''],
    ['nbd://example.com', ''],
    ['nbd://example.com//disk', '/disk'],
    ['nbd://example.com/hello%20world', 'hello world'],
  ];
  for (const [uri, name] of table) assert.equal(nbd(uri).exportName, name, uri);
});

test('TCP hosts and ports: default 10809, names, IPv4, bracketed IPv6', () => {
  assert.deepEqual((({ transport, host, port, socket }) => ({ transport, host, port, socket }))(nbd('nbd://example.com/x')), {
    transport: 'tcp',
    host: 'example.com',
    port: 10809,
    socket: '',
  });
  assert.equal(nbd('nbd://10.0.0.2:10810/x').port, 10810);
  assert.equal(nbd('nbd://10.0.0.2:10810/x').host, '10.0.0.2');
  const v6 = nbd('nbd://[::1]:1234/x');
  assert.equal(v6.host, '::1');
  assert.equal(v6.port, 1234);
  assert.equal(nbd('nbd://[fe80::1]/x').port, 10809);
  assert.equal(nbd('nbd://h/x').tls, undefined, 'nbd:// never uses TLS');
  assert.equal(nbd('nbd://h/x').reconnectTimeoutMs, 30_000, 'the default reconnect window, as iSCSI');
  assert.equal(nbd('nbd://h/x?reconnect-timeout=1.5').reconnectTimeoutMs, 1500);
});

test('Unix sockets: socket= %-decoded, abstract names, relative paths', () => {
  const u = nbd('nbd+unix:///exp?socket=/run/nbd%20x.sock');
  assert.equal(u.transport, 'unix');
  assert.equal(u.socket, '/run/nbd x.sock');
  assert.equal(u.host, '');
  assert.equal(nbd('nbd+unix:///?socket=%00/abstract').socket, '\0/abstract');
  assert.equal(nbd('nbd+unix://?socket=rel.sock').socket, 'rel.sock');
  assert.equal(nbd('nbd+unix://?socket=rel.sock').exportName, '');
});

test("nbds:// and nbds+unix:// require TLS with libnbd's query parameters", () => {
  const a = nbd('nbds://alice@h/x?tls-psk-file=/etc/keys.psk');
  assert.deepEqual(a.tls, { certificates: undefined, pskFile: '/etc/keys.psk', username: 'alice', hostname: undefined, verifyPeer: true });
  const b = nbd('nbds+unix:///x?socket=/s&tls-certificates=/etc/pki/nbd&tls-hostname=srv.example&tls-verify-peer=0');
  assert.deepEqual(b.tls, { certificates: '/etc/pki/nbd', pskFile: undefined, username: undefined, hostname: 'srv.example', verifyPeer: false });
  assert.equal(nbd('nbds://h/x?tls-psk-file=/k&tls-username=bob').tls?.username, 'bob');
  // nbds:// with neither: x509 against the system's CAs
  assert.deepEqual(nbd('nbds://h/').tls, { certificates: undefined, pskFile: undefined, username: undefined, hostname: undefined, verifyPeer: true });
});

test('bad NBD URIs are refused with a message naming the spec and the problem', () => {
  const cases: [string, RegExp][] = [
    ['nbd+unix:///x', /needs \?socket=PATH/],
    ['nbd+unix://host/x?socket=/s', /Unix socket URI has no host/],
    ['nbd://h/x?socket=/s', /socket= is for nbd\+unix/],
    ['nbd:///x', /no host/],
    ['nbd://h:0/x', /port '0' is not 1\.\.65535/],
    ['nbd://h:99999/x', /port '99999'/],
    ['nbd://h:abc/x', /port 'abc'/],
    ['nbd://::1/x', /IPv6 address goes in brackets/],
    ['nbd://[::1/x', /unclosed '\['/],
    ['nbd://[::1]x/x', /junk after '\]'/],
    ['nbd://h/x?tls-psk-file=/k', /TLS option: it needs nbds:\/\//],
    ['nbd+unix:///x?socket=/s&tls-certificates=/d', /it needs nbds\+unix:\/\//],
    ['nbd://alice@h/x', /TLS identity: it needs nbds/],
    ['nbds://alice:secret@h/x', /key goes in a file/],
    ['nbds://h/x?tls-psk-file=/k&tls-certificates=/d', /give one/],
    ['nbds://alice@h/x?tls-psk-file=/k&tls-username=bob', /disagree/],
    ['nbds://h/x?tls-verify-peer=maybe', /expected 0 or 1/],
    ['nbd://h/x?reconnect-timeout=-1', /expected seconds >= 0/],
    ['nbd://h/x?frobnicate=1', /unknown NBD URI option 'frobnicate'/],
    ['nbd://h/x?socket=a&socket=b', /socket= is for nbd\+unix/],
    ['nbd+unix:///x?socket=a&socket=b', /given twice/],
    ['nbd://h/%zz', /bad %-escape/],
    ['nbd://h/a%00b', /contains NUL/],
    ['nbd://h/x#frag', /fragment/],
    [`nbd://h/${'x'.repeat(4097)}`, /longer than 4096 bytes/],
  ];
  for (const [uri, why] of cases) {
    assert.throws(
      () => parseStoreSpec(uri),
      (err: unknown) => {
        assert.ok(err instanceof UsageError, uri);
        assert.ok(err.message.startsWith(`store spec '${uri}'`), err.message);
        assert.match(err.message, why, uri);
        assert.ok(!err.message.includes('\n'), 'one line');
        return true;
      },
    );
  }
});

test('where a spec points, for messages: no query (it may name key files)', () => {
  assert.equal(describeNbdTarget(nbd('nbd://h/a%20b')), 'nbd://h:10809/a%20b');
  assert.equal(describeNbdTarget(nbd('nbds://[::1]:7/x?tls-psk-file=/k')), 'nbds://[::1]:7/x');
  assert.equal(describeNbdTarget(nbd('nbd+unix:///e?socket=/run/s')), 'nbd+unix:///e?socket=/run/s');
});

test('xl disk target=nbd+unix://... stays a URL (like iscsi://), and a malformed one is refused at parse time', () => {
  const d = parseXlDiskSpec('vdev=xvda, access=rw, backendtype=phy, script=/bin/true, target=nbd+unix:///disk?socket=/run/nbd.sock');
  assert.equal(d.target, 'nbd+unix:///disk?socket=/run/nbd.sock');
  assert.equal(parseXlDiskSpec('vdev=xvdb, target=nbds://h:10810/x?tls-psk-file=/k').target, 'nbds://h:10810/x?tls-psk-file=/k');
  assert.throws(() => parseXlDiskSpec('vdev=xvdc, target=nbd+unix:///disk'), /needs \?socket=PATH/);
  // the deprecated "nbd:" prefix (real xl: script=block-nbd) is still a prefix when no URL follows
  assert.equal(parseXlDiskSpec('nbd:/dev/nbd0,xvdd,w').script, 'block-nbd');
});
