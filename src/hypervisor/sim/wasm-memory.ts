// The shared WebAssembly.Memory that backs a guest's RAM. tsconfig's libs carry no WebAssembly
// types, so the one constructor we need is typed here.

/** A shared `WebAssembly.Memory`: structured-clonable, so it can be posted to a worker. */
export interface SharedWasmMemory {
  readonly buffer: SharedArrayBuffer;
}

interface WasmMemoryConstructor {
  new (descriptor: { initial: number; maximum: number; shared: true }): SharedWasmMemory;
}

const WasmMemory = (globalThis as unknown as { WebAssembly: { Memory: WasmMemoryConstructor } }).WebAssembly.Memory;

/** A fixed-size shared memory of `wasmPages` 64 KiB pages (never grown, so its buffer never changes). */
export function createSharedMemory(wasmPages: number): SharedWasmMemory {
  return new WasmMemory({ initial: wasmPages, maximum: wasmPages, shared: true });
}
