/**
 * The frontend's limits with real processes (dev cluster, `cairnctl nbd serve`, nbdinfo, nbdsh):
 * an idle-socket flood from one address is capped and logged while real clients still get in,
 * and attaches past --max-volumes are refused with a clear error until a volume detaches. The
 * hostile client connects from 127.0.0.2 (all of 127/8 is loopback), the real ones from
 * 127.0.0.1. Every wait is for a condition, with a deadline.
 */
import { expect } from 'chai';
import { connect, type Socket } from 'node:net';
import { freePort, waitFor } from '../../src/dev/index.js';
import { connectPipe, RawNbdClient } from '../harness/nbd.js';
import { nbdshProcess, runClient, useStack, type ClientProcess } from '../harness/stack.js';

const hostile = '127.0.0.2';

/** nbdsh: read a block, say so, then hold the connection (and the volume attached) until stdin closes. */
const readAndHold = `
h.pread(4096, 0)
print("attached", flush=True)
sys.stdin.readline()
`;

/** One counter's value from a Prometheus text page, or 0 when the series is absent. */
async function counter(address: string, series: string): Promise<number> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

describe('frontend limits against hostile clients: connections and attached volumes', function () {
  this.timeout(120_000);
  const stack = useStack({ profile: '2+1', extentSize: '1MiB' });
  const sockets: Socket[] = [];
  const clients: ClientProcess[] = [];
  afterEach(() => {
    for (const s of sockets.splice(0)) s.destroy();
    for (const c of clients.splice(0)) if (c.running()) c.kill('SIGKILL');
  });

  it('closes idle connections past the per-address cap with a log line and a metric, and nbdinfo still gets in', async () => {
    const s = stack();
    await s.createVolume('lim-a', '8MiB');
    const metrics = `127.0.0.1:${await freePort()}`;
    const fe = await s.startFrontend({
      extraArgs: ['--max-connections', '16', '--max-connections-per-client', '4', '--metrics-listen', metrics],
    });
    // Twelve sockets that never say a word, from one address.
    let closed = 0;
    for (let i = 0; i < 12; i++) {
      const socket = connect({ host: '127.0.0.1', port: fe.port, localAddress: hostile });
      socket.on('error', () => undefined);
      socket.on('close', () => (closed += 1));
      sockets.push(socket);
    }
    await waitFor('the frontend to close the 8 connections past the cap', () => closed === 8 || undefined, 20_000);
    await fe.waitForLog(/limit connections_per_client: refused a connection from 127\.0\.0\.2: it holds 4/);
    expect(await counter(metrics, 'cairn_frontend_limit_hits_total{limit="connections_per_client"}')).to.equal(8);

    // The flood still holds its four connections; real clients over TCP and the Unix socket are served.
    for (const uri of [fe.uri('lim-a'), fe.unixUri('lim-a')]) {
      const r = await runClient('/usr/bin/nbdinfo', ['--size', uri], { deadlineMs: 30_000 });
      expect(r.code, `${uri}: ${r.stderr}\n${fe.logText().slice(-1500)}`).to.equal(0);
      expect(r.stdout.trim()).to.equal(String(8 << 20));
    }
    expect(closed).to.equal(8);
    await fe.stop();
  });

  it('refuses an attach past --max-volumes with a clear error, a log line and a metric, and attaches it once another detaches', async () => {
    const s = stack();
    for (const v of ['mv-1', 'mv-2', 'mv-3']) await s.createVolume(v, '8MiB');
    const metrics = `127.0.0.1:${await freePort()}`;
    const fe = await s.startFrontend({ extraArgs: ['--max-volumes', '2', '--metrics-listen', metrics] });
    const holders = ['mv-1', 'mv-2'].map((v) => nbdshProcess(readAndHold, {}, { uri: fe.uri(v) }));
    clients.push(...holders);
    for (const h of holders) await h.waitForOutput(/attached/);

    const refused = await runClient('/usr/bin/nbdinfo', ['--size', fe.uri('mv-3')], { deadlineMs: 30_000 });
    expect(refused.code, refused.stdout).to.not.equal(0);
    expect(refused.stderr).to.match(/server policy prevents NBD_OPT_GO/);
    // The error's text says why (libnbd shows it only in debug output; a raw client reads it).
    const raw = new RawNbdClient(await connectPipe({ port: fe.port }));
    await raw.greet();
    const why = await raw.go('mv-3').then(
      () => 'attached',
      (err: unknown) => String(err),
    );
    raw.disconnect();
    expect(why).to.match(/2 volumes are attached to this frontend, its limit \(--max-volumes 2\)/);
    expect(fe.logText()).to.match(/limit volumes: Cannot attach volume \\?"mv-3\\?"/);
    expect(await counter(metrics, 'cairn_frontend_limit_hits_total{limit="volumes"}')).to.equal(2);
    expect(await counter(metrics, 'cairn_frontend_attached_volumes')).to.equal(2);

    // One holder leaves; once its volume detaches (after the linger), mv-3 attaches.
    const since = fe.logText().length;
    holders[0]!.child.stdin?.end();
    await holders[0]!.exit();
    await fe.waitForLog(/detached volume mv-1/, since);
    const ok = await runClient('/usr/bin/nbdinfo', ['--size', fe.uri('mv-3')], { deadlineMs: 30_000 });
    expect(ok.code, `${ok.stderr}\n${fe.logText().slice(-1500)}`).to.equal(0);
    expect(ok.stdout.trim()).to.equal(String(8 << 20));
    await fe.stop();
  });
});
