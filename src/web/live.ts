/**
 * Live updates: one server-sent-event stream per open page (GET /live?path=PAGE). The server
 * renders the page's regions again every liveRefreshMs, and at once (debounced) when the API's
 * event hub publishes something (a node went down or up, a change was made); it sends only the
 * regions whose markup changed since the last send, as one `regions` event of JSON
 * `{"NAME": "<html>"}`. So the page shows what a reload would, a couple of seconds late at most.
 *
 * What it keeps true: at most liveStreamsMax streams at once (more get 503, and the page stays
 * as it was); one rendering per stream at a time (a trigger during one runs once after it); a
 * rendering that overruns liveRenderTimeoutMs is abandoned for that round; when the client goes,
 * its timers and its event subscription go too. A stream ends after liveStreamLifetimeMs and the
 * browser opens it again, which authenticates again: a revoked token or an ended session then gets
 * 401, and the script reloads the page, which shows the login form. So an open page stops
 * showing anything to someone the API no longer knows within that time.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorMessage } from '../core/index.js';
import type { WebContext } from './contract.js';
import {
  liveDebounceMs,
  liveHeartbeatMs,
  liveRefreshMs,
  liveRenderTimeoutMs,
  liveStreamLifetimeMs,
  liveStreamsMax,
} from './limits.js';
import type { Page } from './page.js';

/** The regions whose markup differs from the last sent (all of them the first time). */
export function changedRegions(
  regions: Readonly<Record<string, { text: string }>>,
  sent: Map<string, string>,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, markup] of Object.entries(regions)) {
    if (sent.get(name) === markup.text) continue;
    out[name] = markup.text;
    sent.set(name, markup.text);
  }
  return out;
}

export class LiveStreams {
  private open_ = 0;

  constructor(private readonly log: (line: string) => void) {}

  get count(): number {
    return this.open_;
  }

  /** Serves one stream until the client goes. `build` renders the page at a time. */
  open(req: IncomingMessage, res: ServerResponse, ctx: WebContext, build: (nowMs: number) => Promise<Page>): void {
    if (this.open_ >= liveStreamsMax) {
      res.statusCode = 503;
      res.setHeader('Retry-After', '30');
      res.end(`at most ${liveStreamsMax} live pages at once`);
      return;
    }
    this.open_ += 1;
    // A stream stays open for as long as the page does: no idle timeout on its socket.
    req.socket.setTimeout(0);
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.write(`retry: 3000\n\n`);
    const sent = new Map<string, string>();
    let closed = false;
    let running = false;
    let again = false;
    let lastWriteMs = Date.now();
    let debounce: NodeJS.Timeout | undefined;

    const write = (text: string): void => {
      if (closed) return;
      res.write(text);
      lastWriteMs = Date.now();
    };
    const round = async (): Promise<void> => {
      if (closed) return;
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        let timer: NodeJS.Timeout | undefined;
        const page = await Promise.race([
          build(Date.now()),
          new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), liveRenderTimeoutMs))),
        ]).finally(() => clearTimeout(timer));
        if (page === undefined) return;
        const changed = changedRegions(page.regions, sent);
        if (Object.keys(changed).length > 0) write(`event: regions\ndata: ${JSON.stringify(changed)}\n\n`);
        else if (Date.now() - lastWriteMs >= liveHeartbeatMs) write(`: idle\n\n`);
      } catch (err) {
        this.log(JSON.stringify({ msg: 'live update failed', error: errorMessage(err) }));
      } finally {
        running = false;
        if (again && !closed) {
          again = false;
          void round();
        }
      }
    };
    const soon = (): void => {
      if (debounce !== undefined || closed) return;
      debounce = setTimeout(() => {
        debounce = undefined;
        void round();
      }, liveDebounceMs);
    };
    const interval = setInterval(() => void round(), liveRefreshMs);
    const lifetime = setTimeout(() => close(), liveStreamLifetimeMs);
    let unsubscribe: () => void = () => undefined;
    try {
      unsubscribe = ctx.events.subscribe(() => soon());
    } catch (err) {
      // The hub is full: the periodic refresh alone keeps this page current.
      this.log(JSON.stringify({ msg: 'live page without events', error: errorMessage(err) }));
    }
    const close = (): void => {
      if (closed) return;
      closed = true;
      this.open_ -= 1;
      clearInterval(interval);
      clearTimeout(lifetime);
      if (debounce !== undefined) clearTimeout(debounce);
      unsubscribe();
      res.end();
    };
    req.on('close', close);
    res.on('error', close);
    void round();
  }
}
