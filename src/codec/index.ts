/**
 * Reed-Solomon erasure coding for Cairn: the codec contract, the TypeScript reference (the
 * oracle), the wasm SIMD kernel and the worker pool that runs it off the event loop.
 */
export * from './codec.js';
export { referenceCodec, referenceKernel } from './reference.js';
export { kernelVariant, loadKernel, kernelVariants, type KernelVariant } from './kernel.js';
export { CodecCapacityError, ExtentBuffer, WasmKernel, defaultWasmKernel, wasmCodec } from './wasm_codec.js';
export { CodecPool, CodecPoolClosedError, CodecWorkerError, type CodecPoolOptions } from './pool.js';
