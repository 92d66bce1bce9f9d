/**
 * Reed-Solomon erasure coding for Cairn: the codec contract, the TypeScript reference (the
 * oracle), the wasm SIMD kernel and the worker pool that runs it off the event loop.
 */
export * from './codec.js';
export { referenceCodec, referenceKernel } from './reference.js';
