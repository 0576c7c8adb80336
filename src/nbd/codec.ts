// The NBD protocol codec in one import: constants, handshake and option haggling, transmission
// requests and replies, and the incremental readers. Pure: no sockets, no clocks.
export * from './constants.ts';
export * from './errors.ts';
export * from './handshake.ts';
export * from './reply-reader.ts';
export * from './request-reader.ts';
export * from './transmission.ts';
export * from './wire.ts';
