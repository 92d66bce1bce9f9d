/** The CSI driver: the Identity and Controller services over gRPC, and what they check. */
export * from './controller.js';
export * from './requests.js';
export * from './server.js';
export * from './status.js';
