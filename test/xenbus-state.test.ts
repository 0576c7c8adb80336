// backendReaction as a table: for each frontend state a block frontend goes through, what the
// backend does from each state it can be in. The model is Linux xen-blkback's frontend_changed()
// (drivers/block/xen-blkback/xenbus.c), see protocol-notes §2 step 5.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backendReaction, parseXenbusState, XenbusState, xenbusStateName } from '../src/xenbus/state.ts';
import type { BackendAction } from '../src/xenbus/state.ts';

const S = XenbusState;
const BACKEND_STATES = [S.Initialising, S.InitWait, S.Initialised, S.Connected, S.Closing, S.Closed] as const;

type Row = readonly [backend: number, frontend: number, action: BackendAction, why: string];

const TABLE: readonly Row[] = [
  // Frontend Initialising: only a backend that is Closed reacts, by preparing for a reconnect.
  [S.Initialising, S.Initialising, 'none', 'backend not probed yet'],
  [S.InitWait, S.Initialising, 'none', 'already waiting for the frontend'],
  [S.Connected, S.Initialising, 'none', 'Linux ignores it while connected'],
  [S.Closing, S.Initialising, 'none', 'not closed yet'],
  [S.Closed, S.Initialising, 'reinit', 'frontend restarting after Closed: back to InitWait'],

  // Frontend Initialised: connect the ring, unless already connected.
  [S.InitWait, S.Initialised, 'connect', 'the normal handshake'],
  [S.Initialised, S.Initialised, 'connect', 'Linux connects from any state but Connected'],
  [S.Connected, S.Initialised, 'none', 'already connected'],
  [S.Initialising, S.Initialised, 'none', 'the device is not open yet: the probe connects later'],

  // Frontend Connected: same as Initialised (two quick watch events can hide Initialised).
  [S.InitWait, S.Connected, 'connect', 'missed the intermediate Initialised'],
  [S.Connected, S.Connected, 'none', 'steady state'],

  // Frontend Closing: follow it to Closing, once.
  [S.Connected, S.Closing, 'closing', 'orderly shutdown'],
  [S.InitWait, S.Closing, 'closing', 'frontend gave up before connecting'],
  [S.Closing, S.Closing, 'none', 'already closing'],
  [S.Closed, S.Closing, 'none', 'already closed'],

  // Frontend Closed: disconnect and go Closed, once.
  [S.Closing, S.Closed, 'close', 'second half of the shutdown'],
  [S.Connected, S.Closed, 'close', 'missed the frontend Closing'],
  [S.InitWait, S.Closed, 'close', 'closed before connecting'],
  [S.Closed, S.Closed, 'none', 'already closed'],
];

test('backendReaction table (Linux frontend_changed)', () => {
  for (const [backend, frontend, action, why] of TABLE) {
    assert.equal(
      backendReaction(backend, frontend),
      action,
      `backend ${xenbusStateName(backend)}, frontend ${xenbusStateName(frontend)}: expected ${action} (${why})`,
    );
  }
});

test('frontend Unknown (its directory is gone) removes the device from every backend state', () => {
  for (const backend of BACKEND_STATES) assert.equal(backendReaction(backend, S.Unknown), 'remove', xenbusStateName(backend));
});

test('states a block frontend never uses are fatal, from every backend state', () => {
  // Linux: the default case, xenbus_dev_fatal(dev, -EINVAL, "saw state %d at frontend").
  for (const frontend of [S.Reconfiguring, S.Reconfigured, 9, 42]) {
    for (const backend of BACKEND_STATES) {
      assert.equal(backendReaction(backend, frontend), 'fatal', `backend ${xenbusStateName(backend)}, frontend ${frontend}`);
    }
  }
});

test('frontend InitWait is fatal, as in Linux (InitWait is a backend state)', () => {
  for (const backend of BACKEND_STATES) assert.equal(backendReaction(backend, S.InitWait), 'fatal', xenbusStateName(backend));
});

test('no reaction ever re-connects a Connected backend or re-closes a Closed one', () => {
  for (let frontend = 0; frontend <= 8; frontend++) {
    assert.notEqual(backendReaction(S.Connected, frontend), 'connect');
    assert.notEqual(backendReaction(S.Closed, frontend), 'close');
    assert.notEqual(backendReaction(S.Closing, frontend), 'closing');
  }
});

test('parseXenbusState reads what xenbus_read_driver_state reads', () => {
  assert.equal(parseXenbusState('4'), 4);
  assert.equal(parseXenbusState('6'), 6);
  assert.equal(parseXenbusState(undefined), S.Unknown);
  assert.equal(parseXenbusState('garbage'), S.Unknown);
  assert.equal(parseXenbusState('9'), S.Unknown);
  assert.equal(parseXenbusState('-1'), S.Unknown);
  assert.equal(xenbusStateName(S.InitWait), 'InitWait');
  assert.match(xenbusStateName(12), /invalid/);
});
