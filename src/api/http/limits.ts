/**
 * The HTTP API's bounds, each with its unit and why it has that value. Checked against each other
 * when this file loads.
 */
import { assert } from '../../core/index.js';

/** Largest request body: the biggest valid one (a volume with labels and zones) is under 4 KiB. */
export const apiBodyBytesMax = 64 * 1024;
/** A request's head and body must arrive within this; a slow client cannot hold a socket longer. */
export const apiRequestTimeoutMs = 30_000;
/** Headers within this (Node's own guard against slowloris). */
export const apiHeadersTimeoutMs = 10_000;
/**
 * How often Node checks the two deadlines above (its default, 30 s, would let a stalled request
 * hold its socket up to 30 s past them).
 */
export const apiTimeoutCheckMs = 1_000;
/** Open connections one server accepts; more are refused at accept. */
export const apiConnectionsMax = 512;
/** Audit entries kept in etcd; older ones are deleted as new ones arrive. */
export const auditEntriesMax = 1000;
/** Events (audit entries and node transitions) kept in memory for GET /events and new SSE clients. */
export const eventsKeptMax = 500;
/** Server-sent-event subscribers at once (each is an open connection). */
export const eventSubscribersMax = 64;
/** API tokens in etcd; `token create` refuses more (each request reads one by id, so this bounds `token list`). */
export const apiTokensMax = 10_000;
/** Interval of the IO statistics samples, and how many the ring keeps (one hour). */
export const ioSampleIntervalMs = 10_000;
export const ioSamplesMax = 360;
/** Background jobs (drain, repair) one server runs at once; more are refused with 409. */
export const apiJobsMax = 4;

assert(apiHeadersTimeoutMs <= apiRequestTimeoutMs, 'the head must be allowed to arrive before the request deadline');
assert(apiTimeoutCheckMs < apiHeadersTimeoutMs, 'the deadlines must be checked more often than they run');
assert(ioSamplesMax * ioSampleIntervalMs === 3_600_000, 'the IO ring holds one hour');
assert(eventSubscribersMax < apiConnectionsMax, 'event streams must leave connections for requests');
