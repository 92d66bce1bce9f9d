/**
 * One NBD connection as a state machine: fed received bytes in any split, it answers the fixed
 * newstyle handshake, then runs transmission requests against a BlockDevice and sends replies.
 * It owns no socket: bytes go out through a SessionIo, so tests drive it byte by byte and fuzz it
 * without the network. The server (server.ts) binds it to a real socket.
 *
 * What it keeps true:
 * - Client input never throws out of receive(): a protocol violation ends this connection (hard
 *   disconnect, one log line); a bad request gets its errno and the session goes on; a bug in
 *   our own code is caught, logged as BUG, and ends only this connection.
 * - The byte stream stays in step: option data and WRITE payloads are always consumed, also when
 *   the option or request is refused; oversized ones are skipped without buffering them.
 * - Each reply goes out as one send(), so replies of concurrent requests never interleave.
 *   Replies may leave in any order; a request counts as in flight until its reply was handed to
 *   the OS. At nbdRequestsInFlightMax in flight the session stops parsing and pauses input, so
 *   the client's socket buffer fills up and it waits (back-pressure).
 * - The device handle is closed exactly once, after the connection is gone and nothing is in
 *   flight (a device call is never abandoned while it may still touch the handle).
 *
 * - NBD_OPT_STARTTLS (when the server offers TLS): the ACK goes out only when no byte waits behind
 *   the request (plaintext injected there would otherwise be read as if it came over TLS), and
 *   every option negotiated before it is forgotten (structured replies, metadata contexts, the
 *   listing), so nothing a man in the middle sent in plaintext survives into the TLS session.
 *   In forced-TLS mode every option but STARTTLS and ABORT is refused with ERR_TLS_REQD until TLS
 *   is up, and NBD_OPT_EXPORT_NAME ends the connection.
 * - With an allow list, an identity reaches only its volumes: others are refused (ERR_POLICY,
 *   or ERR_TLS_REQD before TLS) and left out of NBD_OPT_LIST.
 *
 * What it leaves out: sockets, timers (the handshake deadlines are the server's), the TLS
 * handshake itself (the server runs it and calls tlsEstablished), oldstyle negotiation, extended
 * headers, NBD_CMD_FLAG_FAST_ZERO.
 */
import {
  assert,
  AssertionError,
  errorMessage,
  nbdOptionBytesMax,
  nbdRequestBytesMax,
  nbdRequestsInFlightMax,
  type BlockDevice,
  type BlockDeviceCapabilities,
  type BlockStatusRun,
  type ContextRun,
  type ExportInfo,
  type MetaContextSource,
  type ExportProvider,
  type WaitingBudget,
} from '../core/index.js';
import { ByteQueue } from './byte_queue.js';
import { tlsAllows, type NbdTlsMode, type TlsAllowList } from './tls_config.js';
import { errnoName, nbdErrorOf } from './errors.js';
import {
  blockMinimumBytes,
  blockPreferredBytes,
  blockStatusDescriptorsMax,
  errorMessageBytesMax,
  optionDiscardBytesMax,
  readSparseBytesMin,
  sessionErrorLogLinesMax,
  sessionInFlightBytesMax,
} from './limits.js';
import {
  commandName,
  transmissionFlagsFor,
  validateRequest,
  type Command,
  type TransmissionContext,
} from './validate.js';
import {
  allocationFlag,
  chunkFlag,
  clientFlag,
  clientFlagsBytes,
  clipMessage,
  decodeClientFlags,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeRequestHeader,
  decodeString,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoDescription,
  encodeInfoExport,
  encodeInfoName,
  encodeMetaContextReplyData,
  encodeNoneChunk,
  encodeOffsetDataHead,
  encodeOffsetHoleChunk,
  encodeOptionError,
  encodeOptionReply,
  encodeServerGreeting,
  encodeServerReplyData,
  encodeSimpleReply,
  handshakeFlag,
  infoType,
  nbdErrno,
  optionCode,
  optionHeaderBytes,
  optionName,
  optionReplyCode,
  requestHeaderBytes,
  type BlockStatusDescriptor,
  type RequestHeader,
} from './wire.js';

/** The name of the one metadata context we serve, and the id we give it. */
export const allocationContextName = 'base:allocation';
export const allocationContextId = 1;

/** How a session reaches its connection. */
export interface SessionIo {
  /**
   * Sends `parts` back to back, never interleaved with another send. `sent` runs once the bytes
   * were handed to the OS, or were dropped because the connection is gone; it may run at once.
   */
  send(parts: readonly Uint8Array[], sent?: () => void): void;
  /** Stops delivering input (back-pressure); resumeInput() starts again. Idempotent. */
  pauseInput(): void;
  resumeInput(): void;
  /**
   * Ends the connection. 'graceful': after everything sent so far. 'hard': at once, for protocol
   * violations. The server later calls connectionClosed().
   */
  close(mode: 'graceful' | 'hard'): void;
  /**
   * Starts the TLS handshake as server on this connection (called once, after the STARTTLS ACK
   * reached the OS). The caller then calls tlsEstablished() or closes the connection. Absent: the
   * connection cannot do TLS and STARTTLS is answered ERR_UNSUP.
   */
  startTls?(): void;
}

/** TLS as one connection sees it: the mode (a Unix socket never requires it) and the allow list. */
export interface SessionTls {
  readonly mode: Exclude<NbdTlsMode, 'off'>;
  readonly allow: TlsAllowList | null;
}

export interface SessionOptions {
  readonly provider: ExportProvider;
  /** Serve every export read-only, whatever the device can do. */
  readonly readOnly: boolean;
  readonly log: (line: string) => void;
  /** Who this connection is, for log lines: `conn 7 (127.0.0.1:51234)`. */
  readonly label: string;
  /**
   * Told when a transmission request starts to run (its header and payload read), with its
   * protocol name (`WRITE`) and length in bytes; the function returned is called once, with the
   * errno of the reply (0 for success), when the reply is ready. Requests refused at the edge are
   * reported at once with length 0. For metrics: the session reads no clock; the caller does.
   */
  /**
   * Told of each request as it starts; the returned function is called once with its outcome:
   * 'OK' or the NBD errno's name ('EIO', 'ENOSPC'), as errnoName() spells it.
   */
  readonly onRequest?: (command: string, bytes: number) => (outcome: string) => void;
  /**
   * WRITE payload bytes shared by every connection of the server (writeInFlightBytesMax). A
   * WRITE takes its length before its payload is read; when the budget is spent the session
   * stops reading its socket until the bytes are granted, and gives them back when its reply is
   * sent. Absent: only this session's own bound applies.
   */
  readonly writeBudget?: WaitingBudget;
  /** Told when a WRITE of `bytes` has to wait for the shared write budget (a log line, a metric). */
  readonly onWriteBudgetWait?: (bytes: number) => void;
  /** TLS offered on this connection; absent: STARTTLS is answered ERR_UNSUP. */
  readonly tls?: SessionTls;
}

export type SessionPhase = 'handshake' | 'transmission' | 'closed';

type ParseState =
  | { readonly kind: 'clientFlags' }
  | { readonly kind: 'optionHeader' }
  | { readonly kind: 'optionData'; readonly option: number; readonly length: number }
  | { readonly kind: 'optionDiscard'; readonly option: number; remaining: number }
  | { readonly kind: 'optionBusy' }
  /** STARTTLS was acknowledged; nothing is parsed until tlsEstablished(). */
  | { readonly kind: 'tlsHandshake' }
  | { readonly kind: 'requestHeader' }
  | {
      readonly kind: 'requestPayload';
      readonly header: RequestHeader;
      readonly command: Command;
      /** Bytes of the shared write budget this request holds (0 until granted, or without one). */
      reserved: number;
    }
  | {
      readonly kind: 'requestDiscard';
      readonly header: RequestHeader;
      readonly errno: number;
      readonly message: string;
      remaining: number;
    }
  | { readonly kind: 'stopped' };

interface OpenExport {
  readonly name: string;
  readonly device: BlockDevice;
  readonly handle: { close(): Promise<void>; contexts?: MetaContextSource };
  readonly context: TransmissionContext;
  /** The metadata contexts SET for this export, with their ids (base:allocation is id 1). */
  readonly metaContexts: readonly SelectedContext[];
}

/** A metadata context a client selected: its id in BLOCK_STATUS replies and its name. */
interface SelectedContext {
  readonly id: number;
  readonly name: string;
}

type OptionOutcome = 'continue' | 'transmission' | 'close' | 'startTls';

/** Why an option naming an export was refused: the option reply and its message. */
interface Refusal {
  readonly ok: false;
  readonly replyType: number;
  readonly message: string;
}

export class Session {
  private readonly queue = new ByteQueue();
  private parse: ParseState = { kind: 'clientFlags' };
  private noZeroes = false;
  private structuredReplies = false;
  /** The export named by the last NBD_OPT_SET_META_CONTEXT, if it selected base:allocation. */
  private metaContextExport: string | null = null;
  /** The contexts the last successful SET selected for metaContextExport, in id order. */
  private metaContextsSelected: readonly SelectedContext[] = [];
  /**
   * The exports this connection's last NBD_OPT_LIST sent, by name: the NBD_OPT_INFOs a listing
   * client sends next (one per export, as `nbdinfo --list` does) answer from it, with no
   * metadata read each. Held only during the handshake.
   */
  private listed: ReadonlyMap<string, ExportInfo> | null = null;
  private open: OpenExport | null = null;
  /** TLS is up on this connection (after STARTTLS and a completed handshake). */
  private tlsActive = false;
  /** Who the client proved to be over TLS: certificate CN/SAN or PSK identity; null before or without. */
  private identity_: string | null = null;
  private inFlight = 0;
  /** Bytes the requests in flight hold: READ lengths and WRITE payloads (sessionInFlightBytesMax). */
  private inFlightBytes = 0;
  private inputPaused = false;
  private shuttingDown = false;
  private connectionGone = false;
  private closeRequested = false;
  private released = false;
  private pumping = false;
  private pumpAgain = false;
  /** An option handler is awaiting the provider; it may still open a device handle. */
  private optionRunning = false;
  private optionsAnswered_ = 0;
  private errorLines = 0;
  private errorsSuppressed = 0;
  /** A WRITE is queued for the shared write budget; budgetGranted runs when it is its turn. */
  private waitingForBudget = false;
  private resolveFinished!: () => void;
  /** Resolves when the connection is gone, nothing is in flight and the device handle is closed. */
  readonly finished: Promise<void>;

  constructor(
    private readonly io: SessionIo,
    private readonly options: SessionOptions,
  ) {
    this.finished = new Promise((resolve) => (this.resolveFinished = resolve));
  }

  get phase(): SessionPhase {
    if (this.connectionGone || this.closeRequested) return 'closed';
    return this.open === null ? 'handshake' : 'transmission';
  }

  /**
   * Options answered so far. The server drops a handshake that answers none for a whole
   * handshake deadline, not one that is still busy negotiating (a listing client sends two
   * options per export).
   */
  get optionsAnswered(): number {
    return this.optionsAnswered_;
  }

  /** Requests whose replies have not been handed to the OS yet. */
  get inFlightCount(): number {
    return this.inFlight;
  }

  /** Whether TLS is up, and the client's TLS identity (null without TLS or without a client identity). */
  get tls(): { readonly active: boolean; readonly identity: string | null } {
    return { active: this.tlsActive, identity: this.identity_ };
  }

  /**
   * The server finished the TLS handshake that startTls() began: options are read again, now over
   * TLS, as `identity` (null when the client proved none, e.g. X.509 without client certificates).
   */
  tlsEstablished(identity: string | null): void {
    if (this.parse.kind !== 'tlsHandshake' || this.connectionGone) return;
    this.tlsActive = true;
    this.identity_ = identity;
    this.parse = { kind: 'optionHeader' };
    this.pump();
  }

  /** The export being served, once the handshake is over. */
  get exportName(): string | null {
    return this.open?.name ?? null;
  }

  /** Sends the greeting: newstyle, fixed, and willing to skip the 124 zero bytes. */
  start(): void {
    this.io.send([encodeServerGreeting(handshakeFlag.fixedNewstyle | handshakeFlag.noZeroes)]);
  }

  /** Bytes from the client, in any split. Never throws. The chunk is not copied (see ByteQueue). */
  receive(chunk: Uint8Array): void {
    if (this.parse.kind === 'stopped' || this.connectionGone) return;
    this.queue.push(chunk);
    this.pump();
  }

  /** The client closed its sending side: finish what is in flight, then close. */
  inputEnded(): void {
    this.stopParsing();
    this.closeWhenIdle();
  }

  /**
   * The server is shutting down. A session still in the handshake closes now (no data is at
   * stake). In transmission, requests in flight finish; requests read from now on get ESHUTDOWN,
   * as the protocol asks; the connection closes when nothing is left in flight.
   */
  shutdown(): void {
    this.shuttingDown = true;
    if (this.open === null) {
      this.stopParsing();
      this.requestClose('graceful');
      return;
    }
    this.closeWhenIdle();
  }

  /** The connection is gone (closed by either side). Releases the export once nothing is in flight. */
  connectionClosed(): void {
    this.connectionGone = true;
    this.stopParsing();
    this.releaseWhenIdle();
  }

  // -------------------------------------------------------------------------------------------
  // Parsing.

  private pump(): void {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        this.parseAvailable();
      } while (this.pumpAgain);
      this.updateInputFlow();
    } catch (err) {
      // Our own bug while parsing: the stream position is unknown now, so this connection ends.
      this.bug('parsing client input', err);
      this.stopParsing();
      this.requestClose('hard');
    } finally {
      this.pumping = false;
    }
  }

  /** Consumes every complete structure the queue holds, as far as the state allows. */
  private parseAvailable(): void {
    for (;;) {
      const state = this.parse;
      switch (state.kind) {
        case 'clientFlags': {
          if (this.queue.length < clientFlagsBytes) return;
          const flags = decodeClientFlags(this.queue.take(clientFlagsBytes));
          assert(flags.ok);
          const known = clientFlag.fixedNewstyle | clientFlag.noZeroes;
          if ((flags.value & ~known) !== 0) {
            // The protocol requires us to drop a client that sets flags we do not know.
            this.violation(`client flags 0x${flags.value.toString(16)} include unknown bits`);
            return;
          }
          // A client without FIXED_NEWSTYLE is served all the same (the protocol allows it): it
          // will only send NBD_OPT_EXPORT_NAME, which behaves identically in both styles.
          this.noZeroes = (flags.value & clientFlag.noZeroes) !== 0;
          this.parse = { kind: 'optionHeader' };
          break;
        }
        case 'optionHeader': {
          if (this.queue.length < optionHeaderBytes) return;
          const header = decodeOptionHeader(this.queue.take(optionHeaderBytes));
          if (!header.ok) {
            this.violation(header.error);
            return;
          }
          const { option, length } = header.value;
          if (length <= nbdOptionBytesMax) {
            this.parse = { kind: 'optionData', option, length };
          } else if (option === optionCode.exportName || length > optionDiscardBytesMax) {
            // EXPORT_NAME has no error reply; a payload this large is not worth reading.
            this.violation(`${optionName(option)} carries ${length} bytes, more than ${nbdOptionBytesMax}`);
            return;
          } else {
            this.parse = { kind: 'optionDiscard', option, remaining: length };
          }
          break;
        }
        case 'optionDiscard': {
          state.remaining -= this.queue.skip(state.remaining);
          if (state.remaining > 0) return;
          this.logError(`${optionName(state.option)}: data longer than ${nbdOptionBytesMax} bytes, refused`);
          this.io.send([
            encodeOptionError(
              state.option,
              optionReplyCode.errTooBig,
              `option data exceeds ${nbdOptionBytesMax} bytes`,
            ),
          ]);
          this.parse = { kind: 'optionHeader' };
          break;
        }
        case 'optionData': {
          if (this.queue.length < state.length) return;
          const data = this.queue.take(state.length);
          this.parse = { kind: 'optionBusy' };
          this.runOption(state.option, data);
          break;
        }
        case 'optionBusy':
        case 'tlsHandshake':
          return;
        case 'requestHeader': {
          if (this.inFlightFull()) return;
          if (this.queue.length < requestHeaderBytes) return;
          const header = decodeRequestHeader(this.queue.take(requestHeaderBytes));
          if (!header.ok) {
            // Without a valid header we cannot know where the next request starts.
            this.violation(header.error);
            return;
          }
          this.acceptRequest(header.value);
          break;
        }
        case 'requestPayload': {
          if (!this.payloadBudgetHeld(state)) return;
          const length = state.header.length;
          if (this.queue.length < length) return;
          const payload = this.queue.take(length);
          this.parse = { kind: 'requestHeader' };
          this.dispatch(state.header, state.command, payload, state.reserved);
          break;
        }
        case 'requestDiscard': {
          state.remaining -= this.queue.skip(state.remaining);
          if (state.remaining > 0) return;
          this.parse = { kind: 'requestHeader' };
          this.replyError(state.header, state.errno, state.message);
          break;
        }
        case 'stopped':
          this.queue.clear();
          return;
      }
    }
  }

  /** Pauses the socket while we cannot parse (busy or full), resumes when we can. */
  private updateInputFlow(): void {
    const blocked =
      this.parse.kind === 'optionBusy' ||
      this.parse.kind === 'tlsHandshake' ||
      this.parse.kind === 'stopped' ||
      (this.parse.kind === 'requestPayload' && this.waitingForBudget) ||
      (this.parse.kind === 'requestHeader' && this.inFlightFull());
    if (blocked && !this.inputPaused) {
      this.inputPaused = true;
      this.io.pauseInput();
    } else if (!blocked && this.inputPaused) {
      this.inputPaused = false;
      this.io.resumeInput();
    }
  }

  /** No new request is parsed at the count limit, or while the byte budget is spent (one always runs). */
  private inFlightFull(): boolean {
    return (
      this.inFlight >= nbdRequestsInFlightMax || (this.inFlight > 0 && this.inFlightBytes >= sessionInFlightBytesMax)
    );
  }

  /**
   * True once the WRITE whose payload comes next holds its share of the shared write budget.
   * Otherwise queues for it (the socket pauses) and returns false; budgetGranted resumes parsing.
   */
  private payloadBudgetHeld(state: Extract<ParseState, { kind: 'requestPayload' }>): boolean {
    const budget = this.options.writeBudget;
    if (budget === undefined || state.command.type !== 'write' || state.reserved > 0) return true;
    if (this.waitingForBudget) return false;
    const bytes = state.header.length;
    if (budget.tryTake(bytes, this.budgetGranted)) {
      state.reserved = bytes;
      return true;
    }
    this.waitingForBudget = true;
    this.options.onWriteBudgetWait?.(bytes);
    return false;
  }

  /** The shared write budget granted the waiting WRITE its bytes (it may have stopped meanwhile). */
  private readonly budgetGranted = (): void => {
    this.waitingForBudget = false;
    const state = this.parse;
    assert(state.kind === 'requestPayload', 'a write budget grant without a WRITE waiting');
    state.reserved = state.header.length;
    this.pump();
  };

  private stopParsing(): void {
    const state = this.parse;
    // Budget taken or asked for by a WRITE whose payload will never be read goes back.
    if (this.waitingForBudget) {
      this.waitingForBudget = false;
      this.options.writeBudget?.cancel(this.budgetGranted);
    } else if (state.kind === 'requestPayload' && state.reserved > 0) {
      this.options.writeBudget?.give(state.reserved);
    }
    this.parse = { kind: 'stopped' };
    this.queue.clear();
  }

  private violation(reason: string): void {
    this.logError(`protocol violation, disconnecting: ${reason}`);
    this.stopParsing();
    this.requestClose('hard');
  }

  private requestClose(mode: 'graceful' | 'hard'): void {
    if (this.closeRequested || this.connectionGone) return;
    this.closeRequested = true;
    this.io.close(mode);
  }

  // -------------------------------------------------------------------------------------------
  // Handshake options.

  private runOption(option: number, data: Uint8Array): void {
    this.optionRunning = true;
    this.handleOption(option, data)
      .catch((err: unknown): OptionOutcome => {
        // handleOption maps every provider failure itself; reaching here is our bug.
        this.bug(`handling ${optionName(option)}`, err);
        return 'close';
      })
      .then((outcome) => {
        this.optionRunning = false;
        this.optionsAnswered_ += 1;
        if (this.connectionGone) {
          this.releaseWhenIdle();
          return;
        }
        if (this.parse.kind !== 'optionBusy') return; // closing already
        if (outcome === 'close') {
          this.stopParsing();
          this.requestClose('graceful');
        } else if (outcome === 'startTls') {
          this.beginTls();
        } else {
          this.parse = { kind: outcome === 'transmission' ? 'requestHeader' : 'optionHeader' };
        }
        this.pump();
      })
      .catch((err: unknown) => this.bug(`after ${optionName(option)}`, err));
  }

  /**
   * After a valid STARTTLS: refuses bytes already sent behind it (they would be plaintext read
   * as if protected), forgets what was negotiated in plaintext, and acknowledges; the handshake
   * starts once the ACK reached the OS, so no plaintext byte follows a TLS one.
   */
  private beginTls(): void {
    if (this.queue.length > 0) {
      this.violation(`${this.queue.length} bytes arrived behind NBD_OPT_STARTTLS before the TLS handshake`);
      return;
    }
    this.parse = { kind: 'tlsHandshake' };
    // The CVE-2021-3716 class: nothing chosen in plaintext may carry over into the TLS session.
    this.structuredReplies = false;
    this.metaContextExport = null;
    this.metaContextsSelected = [];
    this.listed = null;
    this.io.send([encodeOptionReply(optionCode.startTls, optionReplyCode.ack)], () => {
      if (this.parse.kind === 'tlsHandshake' && !this.connectionGone && !this.closeRequested) this.io.startTls?.();
    });
  }

  private optionStartTls(data: Uint8Array): OptionOutcome {
    const option = optionCode.startTls;
    if (this.options.tls === undefined || this.io.startTls === undefined) {
      return this.refuseOption(option, optionReplyCode.errUnsup, 'TLS is not configured on this server');
    }
    if (this.tlsActive) return this.refuseOption(option, optionReplyCode.errInvalid, 'TLS is already on');
    if (data.length !== 0) return this.refuseOption(option, optionReplyCode.errInvalid, 'option takes no data');
    return 'startTls';
  }

  /**
   * Null when this connection may use `volume`; else why not: ERR_TLS_REQD before TLS (the
   * protocol's answer for an export that needs TLS), ERR_POLICY after.
   */
  private refusalFor(volume: string): Refusal | null {
    const allow = this.options.tls?.allow ?? null;
    if (tlsAllows(allow, this.identity_, volume)) return null;
    if (!this.tlsActive) {
      return { ok: false, replyType: optionReplyCode.errTlsReqd, message: `export "${volume}" requires TLS` };
    }
    const who = this.identity_ === null ? 'a client without an identity' : `identity "${this.identity_}"`;
    return { ok: false, replyType: optionReplyCode.errPolicy, message: `${who} may not use export "${volume}"` };
  }

  private replyOption(option: number, replyType: number, data?: Uint8Array): void {
    this.io.send([encodeOptionReply(option, replyType, data)]);
  }

  private refuseOption(option: number, replyType: number, message: string): OptionOutcome {
    this.logError(`${optionName(option)}: ${message}`);
    this.io.send([encodeOptionError(option, replyType, message)]);
    return 'continue';
  }

  private async handleOption(option: number, data: Uint8Array): Promise<OptionOutcome> {
    if (this.shuttingDown && option !== optionCode.abort) {
      return this.refuseOption(option, optionReplyCode.errShutdown, 'the server is shutting down');
    }
    const forced = this.options.tls?.mode === 'require' && !this.tlsActive;
    if (forced && option !== optionCode.startTls && option !== optionCode.abort) {
      if (option === optionCode.exportName) {
        // It has no error reply: the protocol says to close.
        this.violation('NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS while TLS is required');
        return 'close';
      }
      return this.refuseOption(option, optionReplyCode.errTlsReqd, 'TLS is required: send NBD_OPT_STARTTLS first');
    }
    switch (option) {
      case optionCode.startTls:
        return this.optionStartTls(data);
      case optionCode.exportName:
        return this.optionExportName(data);
      case optionCode.abort:
        // Any data is ignored, as the protocol asks. The client drops the connection after the ACK.
        this.replyOption(option, optionReplyCode.ack);
        return 'close';
      case optionCode.list:
        return this.optionList(data);
      case optionCode.info:
      case optionCode.go:
        return this.optionInfoOrGo(option, data);
      case optionCode.structuredReply:
        if (data.length !== 0) return this.refuseOption(option, optionReplyCode.errInvalid, 'option takes no data');
        this.structuredReplies = true;
        this.replyOption(option, optionReplyCode.ack);
        return 'continue';
      case optionCode.listMetaContext:
      case optionCode.setMetaContext:
        return this.optionMetaContext(option, data);
      default:
        return this.refuseOption(option, optionReplyCode.errUnsup, 'not supported by this server');
    }
  }

  /**
   * Finds an export by name. The empty name is the default export: an export really named "" if
   * the provider has one, else the only export when there is exactly one, else none.
   */
  private async resolveExport(name: string): Promise<ExportInfo | null> {
    const info = await this.options.provider.info(name);
    if (info !== null || name !== '') return info;
    const all = await this.options.provider.list();
    return all.length === 1 ? (all[0] ?? null) : null;
  }

  /**
   * What a connection to `info` would be told: its size and transmission flags, from the info
   * alone (NBD_OPT_INFO opens nothing). Null when the provider reported an impossible size.
   */
  private contextOf(
    info: { readonly name: string; readonly sizeBytes: number; capabilities: BlockDeviceCapabilities },
    requested: string,
  ): TransmissionContext | null {
    const { sizeBytes, capabilities } = info;
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) {
      this.bug(`opening export "${info.name}"`, new AssertionError(`device size ${sizeBytes} is not a byte count`));
      return null;
    }
    const readOnly = this.options.readOnly || capabilities.readOnly;
    return {
      sizeBytes,
      flags: transmissionFlagsFor({ ...capabilities, readOnly, structuredReplies: this.structuredReplies }),
      structuredReplies: this.structuredReplies,
      allocationContext: this.metaContextExport === requested && this.metaContextsSelected.length > 0,
    };
  }

  /** The option error for a provider failure while trying to `verb` an export (bugs are logged loudly). */
  private refusalOf(err: unknown, verb: 'open' | 'describe', requested: string): Refusal {
    const mapped = nbdErrorOf(err);
    if (mapped.bug) this.bug(`trying to ${verb} export "${requested}"`, err);
    return {
      ok: false,
      replyType: mapped.optionReply,
      message: `cannot ${verb} export "${requested}": ${errorMessage(err)}`,
    };
  }

  /**
   * Describes an export for NBD_OPT_INFO without opening it: opening a volume for writing takes
   * its lock and bumps its epoch, which a client that only asks must not cause.
   */
  private async describeExport(
    requested: string,
  ): Promise<{ ok: true; info: ExportInfo; context: TransmissionContext } | Refusal> {
    let info: ExportInfo | null;
    try {
      info = this.listed?.get(requested) ?? (await this.resolveExport(requested));
    } catch (err) {
      return this.refusalOf(err, 'describe', requested);
    }
    if (info === null) return { ok: false, replyType: optionReplyCode.errUnknown, message: `no export "${requested}"` };
    const refused = this.refusalFor(info.name);
    if (refused !== null) return refused;
    const context = this.contextOf(info, requested);
    if (context === null)
      return { ok: false, replyType: optionReplyCode.errUnknown, message: `export "${requested}" is unusable` };
    return { ok: true, info, context };
  }

  /** Opens an export for transmission, or returns why not (already logged and mapped). */
  private async openExport(requested: string): Promise<{ ok: true; open: OpenExport; info: ExportInfo } | Refusal> {
    let info: ExportInfo | null;
    let opened: { device: BlockDevice; close(): Promise<void> };
    try {
      info = await this.resolveExport(requested);
      if (info === null)
        return { ok: false, replyType: optionReplyCode.errUnknown, message: `no export "${requested}"` };
      const refused = this.refusalFor(info.name);
      if (refused !== null) return refused;
      opened = await this.options.provider.open(info.name, { readOnly: this.options.readOnly });
    } catch (err) {
      return this.refusalOf(err, 'open', requested);
    }
    const { device } = opened;
    const context = this.contextOf(
      { name: info.name, sizeBytes: device.sizeBytes, capabilities: device.capabilities() },
      requested,
    );
    if (context === null) {
      this.closeHandle(info.name, opened);
      return { ok: false, replyType: optionReplyCode.errUnknown, message: `export "${requested}" is unusable` };
    }
    const metaContexts = this.metaContextExport === requested ? this.metaContextsSelected : [];
    return { ok: true, open: { name: info.name, device, handle: opened, context, metaContexts }, info };
  }

  private closeHandle(name: string, handle: { close(): Promise<void> }): void {
    handle.close().catch((err: unknown) => this.logError(`closing export "${name}": ${errorMessage(err)}`));
  }

  private async optionExportName(data: Uint8Array): Promise<OptionOutcome> {
    const name = decodeString(data, 'export name');
    if (!name.ok) {
      this.violation(`NBD_OPT_EXPORT_NAME: ${name.error}`);
      return 'close';
    }
    const opened = await this.openExport(name.value);
    if (this.connectionGone) {
      if (opened.ok) this.closeHandle(opened.open.name, opened.open.handle);
      return 'close';
    }
    if (!opened.ok) {
      // This option has no error reply: the protocol says to end the session.
      this.logError(`NBD_OPT_EXPORT_NAME: ${opened.message}; disconnecting`);
      this.stopParsing();
      this.requestClose('hard');
      return 'close';
    }
    this.open = opened.open;
    this.listed = null;
    const { sizeBytes, flags } = opened.open.context;
    this.io.send([encodeExportNameReply(sizeBytes, flags, this.noZeroes)]);
    return 'transmission';
  }

  private async optionList(data: Uint8Array): Promise<OptionOutcome> {
    const option = optionCode.list;
    if (data.length !== 0) return this.refuseOption(option, optionReplyCode.errInvalid, 'NBD_OPT_LIST takes no data');
    let exports: ExportInfo[];
    try {
      exports = await this.options.provider.list();
    } catch (err) {
      const mapped = nbdErrorOf(err);
      if (mapped.bug) this.bug('listing exports', err);
      return this.refuseOption(option, mapped.optionReply, `cannot list exports: ${errorMessage(err)}`);
    }
    // An identity sees only the volumes it may use.
    exports = exports.filter((e) => this.refusalFor(e.name) === null);
    this.listed = new Map(exports.map((e) => [e.name, e]));
    const parts: Uint8Array[] = [];
    for (const e of exports) {
      if (!isWireString(e.name)) {
        this.logError(`export name ${JSON.stringify(e.name.slice(0, 64))} cannot be sent over NBD; not listed`);
        continue;
      }
      parts.push(encodeOptionReply(option, optionReplyCode.server, encodeServerReplyData(e.name, e.description)));
    }
    parts.push(encodeOptionReply(option, optionReplyCode.ack));
    this.io.send(parts);
    return 'continue';
  }

  private async optionInfoOrGo(option: number, data: Uint8Array): Promise<OptionOutcome> {
    const request = decodeInfoRequest(data);
    if (!request.ok) return this.refuseOption(option, optionReplyCode.errInvalid, request.error);
    const { name, requests } = request.value;
    // INFO only describes; GO opens (for a volume: attaches it, lock and all).
    const opened = option === optionCode.info ? await this.describeExport(name) : await this.openExport(name);
    if (this.connectionGone) {
      if (opened.ok && 'open' in opened) this.closeHandle(opened.open.name, opened.open.handle);
      return 'close';
    }
    if (!opened.ok) return this.refuseOption(option, opened.replyType, opened.message);

    const { info } = opened;
    const context = 'open' in opened ? opened.open.context : opened.context;
    const parts = [encodeOptionReply(option, optionReplyCode.info, encodeInfoExport(context.sizeBytes, context.flags))];
    // The canonical name goes back when asked for, or when "" was resolved to a named export.
    if ((requests.includes(infoType.name) || info.name !== name) && isWireString(info.name)) {
      parts.push(encodeOptionReply(option, optionReplyCode.info, encodeInfoName(info.name)));
    }
    if (requests.includes(infoType.description) && info.description !== '') {
      parts.push(encodeOptionReply(option, optionReplyCode.info, encodeInfoDescription(info.description)));
    }
    // Always sent: our constraints are the protocol's defaults, so a client that did not ask
    // loses nothing, and one that did learns the 32 MiB maximum payload.
    parts.push(
      encodeOptionReply(
        option,
        optionReplyCode.info,
        encodeInfoBlockSize(blockMinimumBytes, blockPreferredBytes, nbdRequestBytesMax),
      ),
    );
    parts.push(encodeOptionReply(option, optionReplyCode.ack));
    this.io.send(parts);

    if (!('open' in opened)) return 'continue';
    this.open = opened.open;
    this.listed = null;
    return 'transmission';
  }

  /**
   * LIST and SET of metadata contexts: base:allocation for every export, and the contexts an
   * export offers besides (ExportInfo.metaContexts: a snapshot's `qemu:dirty-bitmap:*`). A LIST
   * with no queries returns them all; a query ending in ':' (a namespace, such as "base:",
   * "qemu:" or "qemu:dirty-bitmap:") returns those under it; other queries match exact names and
   * unknown ones are ignored, as the protocol requires. SET takes exact names only, replaces the
   * selection even when it fails, and needs structured replies first.
   */
  private async optionMetaContext(option: number, data: Uint8Array): Promise<OptionOutcome> {
    const setting = option === optionCode.setMetaContext;
    if (setting) {
      this.metaContextExport = null;
      this.metaContextsSelected = [];
    }
    if (setting && !this.structuredReplies) {
      return this.refuseOption(option, optionReplyCode.errInvalid, 'negotiate NBD_OPT_STRUCTURED_REPLY first');
    }
    const request = decodeMetaContextRequest(data);
    if (!request.ok) return this.refuseOption(option, optionReplyCode.errInvalid, request.error);
    const { exportName, queries } = request.value;
    let offered: readonly string[] = [allocationContextName];
    try {
      const info = this.listed?.get(exportName) ?? (await this.resolveExport(exportName));
      // A volume this client may not use says no more than one that does not exist.
      if (info !== null && this.refusalFor(info.name) === null)
        offered = [allocationContextName, ...(info.metaContexts ?? [])];
    } catch (err) {
      // An export that cannot be described offers base:allocation only; opening it will say why.
      this.logError(`cannot list the metadata contexts of export "${exportName}": ${errorMessage(err)}`);
    }
    const matches = offered.filter((name) =>
      setting
        ? queries.includes(name)
        : queries.length === 0 || queries.some((q) => q === name || (q.endsWith(':') && name.startsWith(q))),
    );
    const parts: Uint8Array[] = [];
    const selected: SelectedContext[] = [];
    for (const name of matches) {
      // LIST replies carry id 0 (reserved); SET gives each context its id for BLOCK_STATUS replies.
      const id = !setting
        ? 0
        : name === allocationContextName
          ? allocationContextId
          : allocationContextId + 1 + selected.length;
      if (setting) selected.push({ id, name });
      parts.push(encodeOptionReply(option, optionReplyCode.metaContext, encodeMetaContextReplyData(id, name)));
    }
    if (setting && selected.length > 0) {
      this.metaContextExport = exportName;
      this.metaContextsSelected = selected;
    }
    parts.push(encodeOptionReply(option, optionReplyCode.ack));
    this.io.send(parts);
    return 'continue';
  }

  // -------------------------------------------------------------------------------------------
  // Transmission.

  private acceptRequest(header: RequestHeader): void {
    const open = this.open;
    assert(open !== null, 'transmission without an export');
    const checked = validateRequest(header, open.context);
    if (checked.ok && checked.command.type === 'disc') {
      // Finish what is in flight, then close; anything after DISC is ignored.
      this.stopParsing();
      this.closeWhenIdle();
      return;
    }
    let errno = checked.ok ? nbdErrno.ok : checked.errno;
    let message = checked.ok ? '' : checked.message;
    if (this.shuttingDown) {
      errno = nbdErrno.eshutdown;
      message = 'the server is shutting down';
    }
    if (errno !== nbdErrno.ok) {
      if (checked.payloadBytes > 0) {
        this.parse = { kind: 'requestDiscard', header, errno, message, remaining: checked.payloadBytes };
      } else {
        this.replyError(header, errno, message);
      }
      return;
    }
    assert(checked.ok);
    if (checked.payloadBytes > 0) {
      this.parse = { kind: 'requestPayload', header, command: checked.command, reserved: 0 };
    } else {
      this.dispatch(header, checked.command, new Uint8Array(0));
    }
  }

  /** Answers a request refused at the edge. READ errors in simple mode carry no payload. */
  private replyError(header: RequestHeader, errno: number, message: string): void {
    this.logRequestError(header, errno, message);
    this.inFlight += 1;
    this.sendReply(this.errorReply(header.cookie, errno, message));
    this.observe(header.type, 0)(errno);
  }

  /** options.onRequest made safe: an observer that throws is logged as a BUG and changes nothing else. */
  private observe(type: number, bytes: number): (errno: number) => void {
    const onRequest = this.options.onRequest;
    if (onRequest === undefined) return ignoreOutcome;
    try {
      const done = onRequest(commandName(type), bytes);
      return (errno) => {
        try {
          done(errno === 0 ? 'OK' : errnoName(errno));
        } catch (err) {
          this.bug('reporting a request', err);
        }
      };
    } catch (err) {
      this.bug('reporting a request', err);
      return ignoreOutcome;
    }
  }

  private errorReply(cookie: bigint, errno: number, message: string): Uint8Array[] {
    if (this.structuredReplies)
      return [encodeErrorChunk(cookie, chunkFlag.done, errno, clipMessage(message, errorMessageBytesMax))];
    return [encodeSimpleReply(errno, cookie)];
  }

  /** Runs a request; `budgetBytes` of the shared write budget it holds go back with its reply. */
  private dispatch(header: RequestHeader, command: Command, payload: Uint8Array, budgetBytes = 0): void {
    const open = this.open;
    assert(open !== null);
    // What this request holds until its reply reaches the kernel: its READ data or WRITE payload.
    const heldBytes = command.type === 'read' || command.type === 'write' ? command.length : 0;
    this.inFlight += 1;
    this.inFlightBytes += heldBytes;
    const done = this.observe(header.type, 'length' in command ? command.length : 0);
    const outcome = { errno: nbdErrno.ok as number };
    this.execute(open, header.cookie, command, payload, outcome)
      .catch((err: unknown) => {
        // execute() maps device failures itself; this is our own bug.
        this.bug(`running ${commandName(header.type)}`, err);
        outcome.errno = nbdErrno.eio;
        return this.errorReply(header.cookie, nbdErrno.eio, 'internal error');
      })
      .then((parts) => {
        this.sendReply(parts, heldBytes, budgetBytes);
        done(outcome.errno);
      })
      .catch((err: unknown) => this.bug('sending a reply', err));
  }

  private sendReply(parts: readonly Uint8Array[], heldBytes = 0, budgetBytes = 0): void {
    let done = false;
    this.io.send(parts, () => {
      if (done) return;
      done = true;
      this.inFlight -= 1;
      this.inFlightBytes -= heldBytes;
      assert(this.inFlight >= 0 && this.inFlightBytes >= 0);
      if (budgetBytes > 0) this.options.writeBudget?.give(budgetBytes);
      this.afterReply();
    });
  }

  private afterReply(): void {
    if (this.connectionGone) {
      this.releaseWhenIdle();
      return;
    }
    if (this.parse.kind === 'stopped' || this.shuttingDown) this.closeWhenIdle();
    this.pump();
  }

  private closeWhenIdle(): void {
    if (this.inFlight === 0) {
      this.stopParsing();
      this.requestClose('graceful');
    }
  }

  private releaseWhenIdle(): void {
    if (this.inFlight > 0 || this.released || this.optionRunning) return;
    this.released = true;
    const open = this.open;
    if (this.errorsSuppressed > 0) {
      this.options.log(`nbd ${this.options.label}: ${this.errorsSuppressed} more errors were not logged`);
    }
    if (open === null) {
      this.resolveFinished();
      return;
    }
    open.handle
      .close()
      .catch((err: unknown) => this.logError(`closing export "${open.name}": ${errorMessage(err)}`))
      .finally(() => this.resolveFinished());
  }

  /** Runs a validated command on the device and returns its reply; maps every device failure. */
  private async execute(
    open: OpenExport,
    cookie: bigint,
    command: Command,
    payload: Uint8Array,
    /** Set to the errno replied when the command fails. */
    outcome: { errno: number },
  ): Promise<Uint8Array[]> {
    const { device } = open;
    try {
      switch (command.type) {
        case 'read':
          return await this.executeRead(device, cookie, command);
        case 'write':
          if (command.length > 0) await device.write(command.offset, payload, { fua: command.fua, adopt: true });
          break;
        case 'flush':
          await device.flush();
          break;
        case 'trim':
          if (command.length > 0) await device.trim(command.offset, command.length, { fua: command.fua });
          break;
        case 'writeZeroes':
          if (command.length > 0) {
            await device.writeZeroes(command.offset, command.length, { fua: command.fua, noHole: command.noHole });
          }
          break;
        case 'cache':
          // Advertised so clients may send it; every read is equally fast here, so nothing to do.
          break;
        case 'blockStatus': {
          // One chunk per selected context, the last flagged DONE; all computed before any is sent.
          const chunks: { id: number; descriptors: BlockStatusDescriptor[] }[] = [];
          for (const ctx of open.metaContexts) {
            if (ctx.name === allocationContextName) {
              const runs = await device.blockStatus(command.offset, command.length);
              chunks.push({
                id: ctx.id,
                descriptors: descriptorsOf(runs, command.offset, command.length, command.reqOne),
              });
              continue;
            }
            const source = open.handle.contexts;
            assert(source !== undefined, `export "${open.name}" offered ${ctx.name} but answers no context`);
            const runs = await source.status(ctx.name, command.offset, command.length);
            chunks.push({
              id: ctx.id,
              descriptors: contextDescriptorsOf(runs, command.offset, command.length, command.reqOne),
            });
          }
          return chunks.map((c, i) =>
            encodeBlockStatusChunk(cookie, i === chunks.length - 1 ? chunkFlag.done : 0, c.id, c.descriptors),
          );
        }
        case 'disc':
          assert(false, 'DISC is not executed');
      }
      return [encodeSimpleReply(nbdErrno.ok, cookie)];
    } catch (err) {
      const mapped = nbdErrorOf(err);
      outcome.errno = mapped.errno;
      const what = describeCommand(command);
      if (mapped.bug) this.bug(`${what} on export "${open.name}"`, err);
      else this.logError(`export "${open.name}": ${what}: ${errnoName(mapped.errno)}: ${errorMessage(err)}`);
      return this.errorReply(cookie, mapped.errno, errorMessage(err));
    }
  }

  private async executeRead(
    device: BlockDevice,
    cookie: bigint,
    command: Extract<Command, { type: 'read' }>,
  ): Promise<Uint8Array[]> {
    const { offset, length } = command;
    if (length === 0)
      return this.structuredReplies ? [encodeNoneChunk(cookie)] : [encodeSimpleReply(nbdErrno.ok, cookie)];
    if (!this.structuredReplies)
      return [encodeSimpleReply(nbdErrno.ok, cookie), await readExactly(device, offset, length)];
    if (command.df || length < readSparseBytesMin) {
      return [encodeOffsetDataHead(cookie, chunkFlag.done, offset, length), await readExactly(device, offset, length)];
    }
    // Sparse read: zero runs become OFFSET_HOLE chunks, data runs are read. Everything is read
    // before anything is sent, so the final chunk can carry DONE and an error replaces the whole
    // reply (no half-sent chunks).
    const runs = normalizeRuns(await device.blockStatus(offset, length), offset, length);
    const parts: Uint8Array[] = [];
    for (let i = 0; i < runs.length; i++) {
      const run = runs[i];
      assert(run !== undefined);
      const flags = i === runs.length - 1 ? chunkFlag.done : 0;
      if (run.zero) {
        parts.push(encodeOffsetHoleChunk(cookie, flags, run.offset, run.length));
      } else {
        parts.push(encodeOffsetDataHead(cookie, flags, run.offset, run.length));
        parts.push(await readExactly(device, run.offset, run.length));
      }
    }
    return parts;
  }

  // -------------------------------------------------------------------------------------------
  // Logging.

  private logError(text: string): void {
    if (this.errorLines >= sessionErrorLogLinesMax) {
      this.errorsSuppressed += 1;
      return;
    }
    this.errorLines += 1;
    this.options.log(`nbd ${this.options.label}: ${text}`);
  }

  private logRequestError(header: RequestHeader, errno: number, message: string): void {
    const where = header.offset === null ? 'offset >= 2^53' : `offset ${header.offset}`;
    this.logError(`${commandName(header.type)} ${where} length ${header.length}: ${errnoName(errno)}: ${message}`);
  }

  /**
   * A bug, ours or a layer's below (AssertionError, TypeError, a broken device contract). It is
   * logged loudly on one line with its stack, never rate-limited. The request gets EIO; when the
   * bug is in our own parsing, this connection ends. The process goes on serving everyone else:
   * an assertion fires before wrong bytes are written, and killing the server would drop the
   * in-flight writes of every other client.
   */
  private bug(what: string, err: unknown): void {
    const stack = err instanceof Error && err.stack !== undefined ? err.stack : String(err);
    this.options.log(
      `BUG nbd ${this.options.label}: ${what}: ${stack
        .split('\n')
        .map((s) => s.trim())
        .join(' | ')}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

const ignoreOutcome = (_errno: number): void => undefined;

function isWireString(text: string): boolean {
  return !text.includes('\0') && new TextEncoder().encode(text).length <= 4096;
}

function describeCommand(command: Command): string {
  switch (command.type) {
    case 'flush':
    case 'disc':
      return command.type.toUpperCase();
    default:
      return `${command.type} offset ${command.offset} length ${command.length}`;
  }
}

/** device.read() with its contract checked: exactly `length` bytes come back. */
async function readExactly(device: BlockDevice, offset: number, length: number): Promise<Uint8Array> {
  const data = await device.read(offset, length);
  // (The message is built only on failure: a template literal in assert() costs on every call.)
  if (data.length !== length)
    assert(false, `device read ${data.length} bytes for a ${length}-byte request at ${offset}`);
  return data;
}

/**
 * Checks a device's block status answer against its contract (contiguous runs with positive
 * lengths covering the range; the first may start before `offset`, the last end after it) and
 * returns it clipped to [offset, offset + length) with neighbours of equal status merged. A broken
 * answer is an AssertionError: a bug in the device, answered with EIO.
 */
export function normalizeRuns(runs: readonly BlockStatusRun[], offset: number, length: number): BlockStatusRun[] {
  assert(runs.length > 0, 'block status returned no runs');
  const end = offset + length;
  const out: BlockStatusRun[] = [];
  let at = offset;
  for (const run of runs) {
    if (at >= end) break;
    const runEnd = run.offset + run.length;
    const continues = out.length === 0 ? run.offset <= at && runEnd > at : run.offset === at;
    if (!(continues && Number.isSafeInteger(run.offset) && Number.isSafeInteger(run.length) && run.length > 0)) {
      assert(false, `block status run [${run.offset}, +${run.length}) does not continue at ${at}`);
    }
    const clipped = Math.min(runEnd, end) - at;
    const last = out[out.length - 1];
    if (last !== undefined && last.hole === run.hole && last.zero === run.zero) {
      out[out.length - 1] = { ...last, length: last.length + clipped };
    } else {
      out.push({ offset: at, length: clipped, hole: run.hole, zero: run.zero });
    }
    at += clipped;
  }
  if (at !== end) assert(false, `block status runs end at ${at}, short of ${end}`);
  return out;
}

/**
 * Block status descriptors for a context other than base:allocation: `runs` clipped to the
 * request and merged where neighbours carry the same flags (they must cover it, in order).
 */
export function contextDescriptorsOf(
  runs: readonly ContextRun[],
  offset: number,
  length: number,
  reqOne: boolean,
): BlockStatusDescriptor[] {
  const end = offset + length;
  const out: { length: number; flags: number }[] = [];
  let at = offset;
  for (const run of runs) {
    if (at >= end) break;
    const runEnd = run.offset + run.length;
    if (!(run.offset <= at && runEnd > at && Number.isSafeInteger(runEnd)))
      assert(false, `context run [${run.offset}, +${run.length}) does not continue at ${at}`);
    const clipped = Math.min(runEnd, end) - at;
    const last = out[out.length - 1];
    if (last !== undefined && last.flags === run.flags) last.length += clipped;
    else out.push({ length: clipped, flags: run.flags });
    at += clipped;
  }
  if (at !== end) assert(false, `context runs end at ${at}, short of ${end}`);
  return out.slice(0, reqOne ? 1 : blockStatusDescriptorsMax);
}

/**
 * Block status descriptors for base:allocation. With REQ_ONE only the first run is sent (it is
 * already clipped to the request); otherwise at most blockStatusDescriptorsMax, which the
 * protocol allows (the client asks again from where we stopped).
 */
export function descriptorsOf(
  runs: readonly BlockStatusRun[],
  offset: number,
  length: number,
  reqOne: boolean,
): BlockStatusDescriptor[] {
  const normalized = normalizeRuns(runs, offset, length);
  const keep = reqOne ? 1 : blockStatusDescriptorsMax;
  return normalized.slice(0, keep).map((run) => ({
    length: run.length,
    flags: (run.hole ? allocationFlag.hole : 0) | (run.zero ? allocationFlag.zero : 0),
  }));
}
