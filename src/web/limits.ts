/**
 * The dashboard's bounds, each with its unit and why it has that value. Checked against each
 * other when this file loads.
 */
import { assert } from '../core/index.js';

/**
 * How often a live page is rendered again for its event stream when nothing happened: a node's
 * alive lease lasts 5 s, so a SIGKILLed node shows as down within about 5 s + this.
 */
export const liveRefreshMs = 2_000;
/** An event (audit entry, node up or down) renders at once, but no sooner than this after the last. */
export const liveDebounceMs = 250;
/** A comment line on an idle stream, so proxies do not close it. */
export const liveHeartbeatMs = 15_000;
/** Open event streams per server (each renders its page every liveRefreshMs). */
export const liveStreamsMax = 32;
/**
 * A stream ends after this and the browser reconnects, authenticating again: how long an open page
 * may go on showing data after its token was revoked or its session ended.
 */
export const liveStreamLifetimeMs = 60_000;
/** A rendering of a page's live parts that takes longer is abandoned for that round. */
export const liveRenderTimeoutMs = 10_000;
/** Largest form body: the biggest form (create volume with labels) is well under 2 KiB. */
export const formBodyBytesMax = 16 * 1024;
/** Rows of the placement picture: past this the page says how many more extents there are. */
export const placementExtentsShownMax = 256;
/** Events listed on the events page and the front page's recent list. */
export const eventsShownMax = 200;
export const recentEventsShownMax = 8;

assert(liveDebounceMs < liveRefreshMs, 'an event must render sooner than the next periodic refresh');
assert(liveRefreshMs < liveHeartbeatMs, 'a heartbeat is only for streams with nothing to say');
assert(liveRefreshMs * 10 <= liveStreamLifetimeMs, 'a stream lives for many refreshes between reconnects');
assert(recentEventsShownMax <= eventsShownMax, 'the front page shows a part of the events page');
