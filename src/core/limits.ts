/**
 * Every bound Cairn keeps, with its unit last and the reason for its value. The relationships
 * between them are checked when this module loads, so a bad edit fails at start-up, not in use.
 */
import { assert } from './assert.js';
import { GiB, MiB } from './units.js';

/** Reed-Solomon over GF(2^8) can address at most 255 distinct evaluation points. */
export const shardCountMax = 255;
/** A profile needs at least one data shard; parity may be zero (plain striping). */
export const dataShardsMin = 1;
/** The largest extent a volume may use. Extents live whole in codec memory while they are coded. */
export const extentBytesMax = 64 * MiB;
/**
 * Bytes covered by one checksum inside a shard. A range read verifies only the blocks it
 * touches, so a 4 KiB read costs at most two 4 KiB checksum checks.
 */
export const checksumBlockBytes = 4096;
/** Shared wasm memory reserved for codec buffers, across all workers. */
export const codecMemoryBytesMax = 1 * GiB;
/** Worker threads in one codec pool; more than the cores only adds context switches. */
export const codecThreadsMax = 16;
/** Input files that `cairnctl codec encode` reads whole into memory. */
export const codecFileBytesMax = 2 * GiB;

/**
 * Largest NBD read or write payload we accept and advertise as the maximum block size. 32 MiB is
 * what the NBD protocol recommends servers accept at least; larger requests get EOVERFLOW/EINVAL.
 */
export const nbdRequestBytesMax = 32 * MiB;
/** Requests one NBD connection may have in flight; more wait in the socket (back-pressure). */
export const nbdRequestsInFlightMax = 64;
/** Longest export name or option payload we read during the handshake (the spec allows 4096). */
export const nbdOptionBytesMax = 4096;
assert(extentBytesMax <= codecMemoryBytesMax / 4, 'codec memory must hold several extents at once');
assert(checksumBlockBytes > 0 && (checksumBlockBytes & (checksumBlockBytes - 1)) === 0);
