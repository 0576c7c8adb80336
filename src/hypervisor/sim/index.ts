export { SimHypervisor } from './hypervisor.ts';
export type { CreateDomainOptions, GuestDomainHandles, SimDomain, SimHypervisorOptions } from './hypervisor.ts';
export { attachGuest } from './guest.ts';
export type { SharedWasmMemory } from './wasm-memory.ts';
