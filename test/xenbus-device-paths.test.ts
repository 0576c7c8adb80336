// Where a block device lives in xenstore (src/xenbus/device-paths.ts), against the layout libxl,
// Linux xen-blkfront and xen-blkback use, spelled out here by hand.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  backendDir,
  backendGuestDir,
  backendRoot,
  domainDir,
  domainErrorDir,
  errorDir,
  errorRoot,
  frontendDir,
  queueDir,
  ringRefKey,
  VbdKey,
} from '../src/xenbus/device-paths.ts';

test('directories of a device, for each backend kind and backend domain', () => {
  assert.equal(domainDir(5), '/local/domain/5');
  assert.equal(frontendDir(5, 51712), '/local/domain/5/device/vbd/51712');
  assert.equal(backendRoot('vbd'), '/local/domain/0/backend/vbd');
  assert.equal(backendRoot('qdisk', 2), '/local/domain/2/backend/qdisk');
  assert.equal(backendGuestDir('blkback', 5), '/local/domain/0/backend/blkback/5');
  assert.equal(backendDir('vbd', 5, 51712), '/local/domain/0/backend/vbd/5/51712');
  assert.equal(backendDir('qdisk', 9, 768, 3), '/local/domain/3/backend/qdisk/9/768');
  assert.equal(domainErrorDir(), '/local/domain/0/error');
  assert.equal(errorRoot('blkback'), '/local/domain/0/error/backend/blkback');
  assert.equal(errorDir('vbd', 5, 51728), '/local/domain/0/error/backend/vbd/5/51728');
  assert.equal(errorDir('vbd', 5, 51728, 4), '/local/domain/4/error/backend/vbd/5/51728');
});

test("the frontend's directory is device/vbd whatever the backend kind", () => {
  assert.equal(frontendDir(1, 202), '/local/domain/1/device/vbd/202');
  for (const kind of ['vbd', 'qdisk', 'blkback']) assert.ok(backendDir(kind, 1, 202).endsWith(`/backend/${kind}/1/202`));
});

test('queue directories and ring-ref keys, as Linux write_per_ring_nodes names them', () => {
  const fe = '/local/domain/5/device/vbd/51712';
  assert.equal(queueDir(fe, 0, 1), fe, 'one queue: the device directory itself');
  assert.equal(queueDir(fe, 0, 2), `${fe}/queue-0`);
  assert.equal(queueDir(fe, 3, 4), `${fe}/queue-3`);
  assert.equal(ringRefKey(0, false), 'ring-ref');
  assert.equal(ringRefKey(0, true), 'ring-ref0');
  assert.equal(ringRefKey(15, true), 'ring-ref15');
});

test('key names are the ones blkif.h and the drivers use', () => {
  const expected: Record<string, string> = {
    maxRingPageOrder: 'max-ring-page-order',
    ringPageOrder: 'ring-page-order',
    multiQueueMaxQueues: 'multi-queue-max-queues',
    multiQueueNumQueues: 'multi-queue-num-queues',
    eventChannel: 'event-channel',
    protocol: 'protocol',
    featurePersistent: 'feature-persistent',
    featureFlushCache: 'feature-flush-cache',
    featureBarrier: 'feature-barrier',
    featureDiscard: 'feature-discard',
    featureMaxIndirectSegments: 'feature-max-indirect-segments',
    discardGranularity: 'discard-granularity',
    sectors: 'sectors',
    sectorSize: 'sector-size',
    physicalSectorSize: 'physical-sector-size',
    frontendId: 'frontend-id',
    backendId: 'backend-id',
    virtualDevice: 'virtual-device',
    discardEnable: 'discard-enable',
  };
  for (const [name, key] of Object.entries(expected)) assert.equal(VbdKey[name as keyof typeof VbdKey], key, name);
  for (const key of Object.values(VbdKey)) assert.match(key, /^[a-z][a-z-]*$/, `${key} is one path element`);
});
