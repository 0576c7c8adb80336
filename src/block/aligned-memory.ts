// Page-aligned shared memory from a shared WebAssembly.Memory. O_DIRECT needs buffer addresses
// aligned to the logical block; a plain Buffer or SharedArrayBuffer is only malloc-aligned (16 bytes
// on x86-64 glibc), while a wasm memory's base is page-aligned.
//
// The project's lib settings carry no WebAssembly types, so the constructor is reached through
// globalThis with just the shape we use (no global declaration that could clash with others').

interface SharedWasmMemory {
  readonly buffer: SharedArrayBuffer;
}
interface WasmMemoryConstructor {
  new (descriptor: { initial: number; maximum: number; shared: true }): SharedWasmMemory;
}

export const WASM_PAGE_SIZE = 65536;

const WasmMemory = (globalThis as unknown as { WebAssembly: { Memory: WasmMemoryConstructor } }).WebAssembly.Memory;

/** A page-aligned, zeroed, shared byte array of at least `bytes` bytes (rounded up to 64 KiB pages). */
export function allocAlignedShared(bytes: number): Uint8Array {
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE_SIZE));
  const memory = new WasmMemory({ initial: pages, maximum: pages, shared: true });
  return new Uint8Array(memory.buffer, 0, bytes);
}
