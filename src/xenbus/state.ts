// XenbusState (xen/include/public/io/xenbus.h) and the backend's reaction to a frontend state change,
// as a pure function so the handshake can be tested without a store (Linux
// drivers/block/xen-blkback/xenbus.c frontend_changed() is the model).

export const XenbusState = {
  Unknown: 0,
  Initialising: 1,
  InitWait: 2,
  Initialised: 3,
  Connected: 4,
  Closing: 5,
  Closed: 6,
  Reconfiguring: 7,
  Reconfigured: 8,
} as const;
export type XenbusStateValue = (typeof XenbusState)[keyof typeof XenbusState];

const NAMES = ['Unknown', 'Initialising', 'InitWait', 'Initialised', 'Connected', 'Closing', 'Closed', 'Reconfiguring', 'Reconfigured'];

export function xenbusStateName(state: number): string {
  return NAMES[state] ?? `invalid(${state})`;
}

/** Parses a `state` node; absent or garbage reads as Unknown, as xenbus_read_driver_state does. */
export function parseXenbusState(text: string | undefined): number {
  if (text === undefined) return XenbusState.Unknown;
  const n = Number.parseInt(text, 10);
  return Number.isInteger(n) && n >= 0 && n <= 8 ? n : XenbusState.Unknown;
}

export type BackendAction =
  | 'none'
  | 'connect' // read ring refs, map, bind, advertise, switch to Connected
  | 'closing' // switch to Closing
  | 'close' // drain and disconnect, switch to Closed
  | 'reinit' // frontend restarts after Closed: back to InitWait
  | 'remove' // frontend vanished: tear the device down
  | 'fatal'; // frontend in a state a block frontend never uses

export function backendReaction(backendState: number, frontendState: number): BackendAction {
  switch (frontendState) {
    case XenbusState.Initialising:
      return backendState === XenbusState.Closed ? 'reinit' : 'none';
    case XenbusState.Initialised:
    case XenbusState.Connected:
      // Two watch events in quick succession can hide the intermediate state, so connect from either.
      if (backendState === XenbusState.Connected) return 'none';
      return backendState === XenbusState.InitWait || backendState === XenbusState.Initialised ? 'connect' : 'none';
    case XenbusState.Closing:
      return backendState === XenbusState.Closing || backendState === XenbusState.Closed ? 'none' : 'closing';
    case XenbusState.Closed:
      return backendState === XenbusState.Closed ? 'none' : 'close';
    case XenbusState.Unknown:
      return 'remove';
    default:
      // InitWait, Reconfiguring, Reconfigured or garbage: Linux calls xenbus_dev_fatal ("saw state %d at frontend").
      return 'fatal';
  }
}
