/** The CSI driver: the Identity, Controller and Node services over gRPC, what they check, how a node attaches. */
export * from './controller.js';
export * from './host.js';
export * from './node.js';
export * from './requests.js';
export * from './server.js';
export * from './status.js';
