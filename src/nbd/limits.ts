/**
 * Bounds the NBD layer keeps on its own, each with its unit last and why. The limits shared with
 * other layers (nbdRequestBytesMax, nbdRequestsInFlightMax, nbdOptionBytesMax) live in core.
 * Relationships are checked when the module loads.
 */
import {
  assert,
  completeLimits,
  InvalidArgumentError,
  KiB,
  MiB,
  nbdOptionBytesMax,
  nbdRequestBytesMax,
  nbdRequestsInFlightMax,
} from '../core/index.js';

/** Smallest addressable unit we advertise: byte-granular, as the in-memory and volume devices are. */
export const blockMinimumBytes = 1;
/** Requests at this size and alignment avoid read-modify-write in the volume's 4 KiB checksum blocks. */
export const blockPreferredBytes = 4 * KiB;

/**
 * An option whose data is longer than nbdOptionBytesMax is discarded unread and answered with
 * NBD_REP_ERR_TOO_BIG, so the session stays in step. Beyond this many bytes we stop being polite
 * and disconnect: skipping gigabytes costs bandwidth for nothing (the protocol allows it).
 */
export const optionDiscardBytesMax = 1 * MiB;

/** The protocol asks servers not to send more descriptors than this in one block status chunk. */
export const blockStatusDescriptorsMax = 2 ** 20;

/**
 * Structured READs at least this long first ask the device for holes and answer them with
 * OFFSET_HOLE chunks instead of zeros. Shorter reads skip the extra call: for a 4 KiB random read
 * it would double the device calls and save at most 4 KiB on the wire.
 */
export const readSparseBytesMin = 64 * KiB;

/** Error lines one connection may log; after that they are counted and summed up at close. */
export const sessionErrorLogLinesMax = 100;

/** Error messages sent to clients (option errors, error chunks) are clipped to this many bytes. */
export const errorMessageBytesMax = 1 * KiB;

/**
 * A connection whose handshake answers no option for this long is dropped (slow-loris guard).
 * Progress, not the whole handshake, is timed: listing N exports with nbdinfo takes 2N options.
 */
export const handshakeDeadlineMsDefault = 30_000;
/**
 * A TLS handshake (from our STARTTLS ACK to the handshake's end) must finish within this long, or
 * the connection is dropped: a real client needs a few round trips (milliseconds); a stalled one
 * holds only its own connection slot until then.
 */
export const tlsHandshakeDeadlineMsDefault = 10_000;
/** close() waits this long for in-flight requests before dropping connections. */
export const closeDeadlineMsDefault = 5_000;
/** After we end a connection, a client that does not close its side is dropped after this long. */
export const closeLingerMs = 2_000;
/**
 * Bytes the requests in flight on one connection may hold (READ data not yet handed to the
 * kernel, WRITE payloads being written) before the session stops parsing and pauses the socket.
 * Without it the bound is nbdRequestsInFlightMax x nbdRequestBytesMax = 64 x 32 MiB = 2 GiB per
 * connection, and a client that sends 64 READ headers (1.8 KB) and never reads its replies makes
 * the server hold all of it. One request always runs, so a single 32 MiB READ still works.
 */
export const sessionInFlightBytesMax = 64 * MiB;
/**
 * Connections one server holds open at once, in any phase. Past it a new connection is closed at
 * once, with a log line and a metric (before, Node dropped it silently, and 1024 idle sockets
 * locked every new client out). Each costs a file descriptor and a few tens of KiB.
 */
export const connectionsMaxDefault = 1024;
/**
 * Connections one client address may hold open at once over TCP: well below the total, so one
 * host's flood of idle or half-negotiated sockets leaves room for everyone else. 64 serves a host
 * with 16 volumes attached by multi-connection clients (qemu, nbdcopy open up to 4 each).
 * Unix-socket peers have no address; they count against the total only (the socket file's
 * permissions decide who may connect).
 */
export const connectionsPerClientMaxDefault = 64;
/**
 * WRITE payload bytes the server holds at once across all connections, being read or written to
 * the device. Without it N connections may each hold sessionInFlightBytesMax (64 MiB). Past it
 * sessions stop reading their sockets until payloads drain (back-pressure): a request is never
 * refused for it. Writes drain without the client's help (unlike READ replies, which wait for the
 * client to read them and stay bounded per connection), so a full budget always frees.
 */
export const writeInFlightBytesMaxDefault = 256 * MiB;
/** Lines a biting limit logs per this many ms; the rest are counted in the next line. */
export const limitLogIntervalMs = 10_000;

/** The server's limits against clients, each settable (`cairnctl nbd serve` flags). */
export interface NbdLimits {
  readonly connectionsMax: number;
  readonly connectionsPerClientMax: number;
  readonly writeInFlightBytesMax: number;
}

export const nbdLimitsDefault: NbdLimits = {
  connectionsMax: connectionsMaxDefault,
  connectionsPerClientMax: connectionsPerClientMaxDefault,
  writeInFlightBytesMax: writeInFlightBytesMaxDefault,
};

/** Which limit bit: a metric label (cairn_frontend_limit_hits_total) and the word in its log line. */
export type NbdLimitName = 'connections' | 'connections_per_client' | 'write_bytes';

/**
 * `limits` with the defaults filled in, checked: whole numbers above 0, the per-client cap at
 * most the total, and room for one maximum-size WRITE. Throws InvalidArgumentError naming the field.
 */
export function checkNbdLimits(limits: Partial<NbdLimits> = {}): NbdLimits {
  const full = completeLimits('NBD', nbdLimitsDefault, limits, [['connectionsPerClientMax', 'connectionsMax']]);
  if (full.writeInFlightBytesMax < nbdRequestBytesMax)
    throw new InvalidArgumentError(
      `Invalid NBD limits: the write budget (${full.writeInFlightBytesMax} bytes) must hold one ${nbdRequestBytesMax}-byte WRITE`,
    );
  return full;
}

assert(blockPreferredBytes >= 512 && (blockPreferredBytes & (blockPreferredBytes - 1)) === 0);
assert(nbdRequestBytesMax >= blockPreferredBytes, 'the maximum payload must be at least the preferred block');
assert(nbdRequestBytesMax <= 0xffffffff - 8, 'one READ must fit one OFFSET_DATA chunk');
// Export names SHOULD be at most 256 bytes; an INFO/GO naming one needs 6 more bytes. (Names near
// the protocol's 4096-byte cap are answered with NBD_REP_ERR_TOO_BIG.)
assert(nbdOptionBytesMax >= 256 + 6, 'an INFO/GO naming a 256-byte export must fit');
assert(optionDiscardBytesMax >= nbdOptionBytesMax);
assert(nbdRequestsInFlightMax >= 1);
assert(sessionInFlightBytesMax >= nbdRequestBytesMax, 'one request of the maximum size must fit the budget');
assert(errorMessageBytesMax <= 4096, 'the protocol caps strings at 4096 bytes');
assert(connectionsPerClientMaxDefault < connectionsMaxDefault, 'one address must not be able to fill the server');
assert(writeInFlightBytesMaxDefault >= sessionInFlightBytesMax, 'one busy connection must fit the write budget');
