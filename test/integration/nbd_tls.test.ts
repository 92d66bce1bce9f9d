// NBD over TLS (NBD_OPT_STARTTLS), two ways:
// - Real clients against `cairnctl nbd serve --tls require ...` on a real cluster (etcd, cairnd):
//   nbdinfo, nbdcopy, qemu-io and qemu-img with X.509 certificates and with a PSK, a plaintext
//   client, a wrong PSK and a certificate from another CA refused, per-identity authorization
//   (--tls-allow), and fio (whose nbd engine takes certificates only from $HOME/.pki/libnbd) on a
//   second frontend in --tls on mode without client certificates.
// - A raw-socket STARTTLS fuzz against an in-process NbdServer with a short handshake deadline:
//   options before and after STARTTLS, structured replies negotiated in plaintext gone after TLS,
//   a second STARTTLS, garbage instead of a ClientHello, bytes pipelined behind STARTTLS, a client
//   stalling mid-handshake, wrong PSKs (TLS 1.2 and 1.3), and the allow list option by option;
//   after each one another client is still served and no BUG is logged.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { makeClientCert, makeTlsDir, waitFor, type TlsFiles } from '../../src/dev/index.js';
import { NbdServer, nbdTls, nbdWire as wire } from '../../src/nbd/index.js';
import { MemoryExportProvider } from '../../src/sim/index.js';
import { RawNbdClient, runOk as runToolOk, type BytePipe } from '../harness/nbd.js';
import { runClient, runOk, useStack, type Frontend } from '../harness/stack.js';

const MiB = 1024 * 1024;
const { optionCode: opt, optionReplyCode: rep } = wire;

/** A client's own PSK file: the same identity as `pskFile` with another key. */
function wrongPskFile(pskFile: string, out: string): string {
  const identity = readFileSync(pskFile, 'utf8').split(':')[0] ?? '';
  writeFileSync(out, `${identity}:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  return out;
}

describe('NBD over TLS with real clients (cairnctl nbd serve --tls require)', function () {
  this.timeout(300_000);
  const stack = useStack();
  let certs: TlsFiles;
  let bobDir: string;
  let otherDir: string;
  let fe: Frontend;
  let port: number;

  before(async function () {
    this.timeout(180_000);
    const s = stack();
    certs = makeTlsDir(s.path('tls'));
    bobDir = makeClientCert(certs.dir, s.path('tls-bob'), 'bob').dir;
    // Trusts our server, but its client certificate comes from a CA the server does not know.
    otherDir = makeTlsDir(s.path('tls-other')).dir;
    copyFileSync(certs.caCert, join(otherDir, 'ca-cert.pem'));
    for (const v of ['a', 'b', 'f']) await s.createVolume(v, '16MiB');
    fe = await s.startFrontend({
      extraArgs: [
        '--tls',
        'require',
        '--tls-cert',
        certs.serverCert,
        '--tls-key',
        certs.serverKey,
        '--tls-ca',
        certs.caCert,
        '--tls-psk-file',
        certs.pskFile,
        '--tls-allow',
        'cairn-admin=a',
        '--tls-allow',
        'bob=b',
      ],
    });
    port = fe.port;
  });

  const x509 = (volume: string, dir = certs.dir): string =>
    `nbds://127.0.0.1:${port}/${volume}?tls-certificates=${dir}`;
  const psk = (volume: string, file = certs.pskFile, user = 'cairn-admin'): string =>
    `nbds://${user}@127.0.0.1:${port}/${volume}?tls-psk-file=${file}`;
  const qemuX509 = (dir: string): string => `tls-creds-x509,id=tls0,endpoint=client,dir=${dir}`;
  const qemuImage = (volume: string): string =>
    `driver=nbd,host=127.0.0.1,port=${port},export=${volume},tls-creds=tls0`;

  it('nbdinfo: X.509 with a client certificate, and a PSK (TLS 1.3)', async () => {
    const since = fe.logText().length;
    const info = JSON.parse((await runOk('nbdinfo x509', 'nbdinfo', ['--json', x509('a')])).stdout) as {
      exports: { 'export-size': number }[];
    };
    expect(info.exports[0]?.['export-size']).to.equal(16 * MiB);
    await runOk('nbdinfo psk', 'nbdinfo', ['--size', psk('a')]);
    const log = fe.logText().slice(since);
    expect(log).to.match(/TLS TLSv1\.3 \S+ with identity \\?"cairn-admin/);
  });

  it('nbdcopy writes over X.509 and reads the same bytes back over PSK', async () => {
    const s = stack();
    const data = randomBytes(4 * MiB);
    writeFileSync(s.path('in.bin'), data);
    await runOk('nbdcopy in', 'nbdcopy', [s.path('in.bin'), x509('a')]);
    await runOk('nbdcopy out', 'nbdcopy', [psk('a'), s.path('out.bin')]);
    expect(readFileSync(s.path('out.bin')).subarray(0, data.length).equals(data)).to.equal(true);
  });

  it('qemu-io and qemu-img with tls-creds-x509 and tls-creds-psk', async () => {
    const x = qemuX509(certs.dir);
    const p = `tls-creds-psk,id=tls0,endpoint=client,dir=${certs.dir},username=cairn-admin`;
    await runOk('qemu-io x509 write', 'qemu-io', [
      '--object',
      x,
      '--image-opts',
      qemuImage('a'),
      '-c',
      'write -P 0x5a 1M 64k',
    ]);
    const read = await runOk('qemu-io psk read', 'qemu-io', [
      '--object',
      p,
      '--image-opts',
      qemuImage('a'),
      '-c',
      'read -P 0x5a 1M 64k',
    ]);
    expect(read.stdout).to.include('read 65536/65536');
    const img = await runOk('qemu-img info', 'qemu-img', ['info', '--object', x, '--image-opts', qemuImage('a')]);
    expect(img.stdout).to.match(/virtual size: 16 MiB/);
    // gnutls held to TLS 1.2 with PSK key exchanges only: the TLS 1.2 PSK suites work too.
    const tls12 = `${p},priority=NORMAL:-VERS-TLS1.3:+ECDHE-PSK:+DHE-PSK:+PSK`;
    await runOk('qemu-io psk tls1.2', 'qemu-io', [
      '--object',
      tls12,
      '--image-opts',
      qemuImage('a'),
      '-c',
      'read -P 0x5a 1M 4k',
    ]);
    expect(fe.logText()).to.match(/TLS TLSv1\.2 \S*PSK\S* with identity/);
  });

  it('refuses a plaintext client, a wrong PSK and a certificate from another CA', async () => {
    const s = stack();
    const plain = await runClient('nbdinfo', [fe.uri('a')]);
    expect(plain.code).to.not.equal(0);
    const qemuPlain = await runClient('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', fe.uri('a')]);
    expect(qemuPlain.code).to.not.equal(0);
    const wrong = await runClient('nbdinfo', [psk('a', wrongPskFile(certs.pskFile, s.path('wrong.keys')))]);
    expect(wrong.code).to.not.equal(0);
    const since = fe.logText().length;
    const untrusted = await runClient('nbdinfo', [x509('a', otherDir)]);
    expect(untrusted.code).to.not.equal(0);
    await fe.waitForLog(/client certificate refused/, since);
    // The Unix socket stays plaintext (file permissions guard it) and is not bound by --tls-allow.
    await runOk('nbdinfo unix', 'nbdinfo', ['--size', fe.unixUri('b')]);
  });

  it('an identity reaches only its volumes, and lists only them', async () => {
    const listOf = async (dir: string): Promise<string[]> => {
      const r = await runOk('nbdinfo --list', 'nbdinfo', ['--list', '--json', x509('', dir)]);
      return (JSON.parse(r.stdout) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name']);
    };
    expect(await listOf(certs.dir)).to.deep.equal(['a']);
    expect(await listOf(bobDir)).to.deep.equal(['b']);
    await runOk('bob on b', 'nbdinfo', ['--size', x509('b', bobDir)]);
    const since = fe.logText().length;
    const refused = await runClient('nbdinfo', ['--size', x509('b')]);
    expect(refused.code).to.not.equal(0);
    await fe.waitForLog(/identity \\?"cairn-admin\\?" may not use export \\?"b/, since);
    expect((await runClient('nbdinfo', ['--size', x509('a', bobDir)])).code).to.not.equal(0);
    expect((await runClient('nbdinfo', ['--size', psk('b')])).code).to.not.equal(0);
  });

  it('fio through nbds:// with the certificates in $HOME/.pki/libnbd (--tls on, no client certificates)', async () => {
    const s = stack();
    const feOn = await s.startFrontend({
      extraArgs: ['--tls', 'on', '--tls-cert', certs.serverCert, '--tls-key', certs.serverKey],
    });
    const home = s.path('fio-home');
    mkdirSync(join(home, '.pki'), { recursive: true });
    symlinkSync(certs.dir, join(home, '.pki', 'libnbd'));
    const since = feOn.logText().length;
    const r = await runOk(
      'fio over TLS',
      'fio',
      [
        '--name=tls',
        '--ioengine=nbd',
        `--uri=nbds://127.0.0.1:${feOn.port}/f`,
        '--rw=randwrite',
        '--bs=4k',
        '--size=2M',
        '--verify=crc32c',
        '--do_verify=1',
      ],
      { env: { HOME: home } },
    );
    expect(r.stdout).to.match(/err= 0/);
    await feOn.waitForLog(/TLS TLSv1\.3/, since);
    // In --tls on mode plaintext is still served.
    await runOk('nbdinfo plaintext on --tls on', 'nbdinfo', ['--size', feOn.uri('f')]);
    await feOn.stop();
  });
});

// ---------------------------------------------------------------------------------------------
// Raw STARTTLS fuzz against an in-process server.

/** Exact-size reads over a stream, with a deadline; `closed` once the peer is gone. */
function streamPipe(stream: Socket): BytePipe {
  const chunks: Buffer[] = [];
  let held = 0;
  let ended = false;
  let wake: (() => void) | null = null;
  const poke = (): void => {
    const w = wake;
    wake = null;
    w?.();
  };
  stream.on('data', (c: Buffer) => {
    chunks.push(c);
    held += c.length;
    poke();
  });
  stream.on('error', () => undefined);
  const closed = new Promise<void>((resolve) =>
    stream.once('close', () => {
      ended = true;
      poke();
      resolve();
    }),
  );
  stream.on('end', () => {
    ended = true;
    poke();
  });
  return {
    write: (bytes) => {
      if (!stream.destroyed) stream.write(bytes);
    },
    read: async (n, deadlineMs = 10_000) => {
      const deadline = Date.now() + deadlineMs;
      while (held < n) {
        if (ended) throw new Error(`the connection closed with ${held} of ${n} bytes read`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no ${n} bytes within ${deadlineMs} ms`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
      const all = Buffer.concat(chunks);
      chunks.length = 0;
      if (all.length > n) chunks.push(all.subarray(n));
      held -= n;
      return all.subarray(0, n);
    },
    closed,
    isClosed: () => ended,
    end: () => stream.end(),
    destroy: () => stream.destroy(),
  };
}

async function rawConnect(port: number): Promise<Socket> {
  const socket = createConnection({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

describe('NBD STARTTLS fuzz (raw sockets, in-process server)', function () {
  this.timeout(120_000);
  const tlsHandshakeDeadlineMs = 1_500;
  let dir: string;
  let certs: TlsFiles;
  let provider: MemoryExportProvider;
  const logs: string[] = [];
  /** require and on: no allow list; allow: --tls on with cairn-admin limited to the export "other". */
  const servers: Record<'require' | 'on' | 'allow', { server: NbdServer; port: number }> = {} as never;
  let allowSocketPath: string;

  before(async function () {
    this.timeout(60_000);
    dir = mkdtempSync(join(tmpdir(), 'cairn-nbd-tls-'));
    certs = makeTlsDir(join(dir, 'tls'));
    provider = new MemoryExportProvider();
    provider.create('disk', 4 * MiB);
    provider.create('other', 1 * MiB);
    for (const kind of ['require', 'on', 'allow'] as const) {
      const server = new NbdServer({
        provider,
        log: (line) => logs.push(line),
        tls: {
          mode: kind === 'require' ? 'require' : 'on',
          allow: kind === 'allow' ? nbdTls.parseTlsAllow(['cairn-admin=other']) : null,
          cert: readFileSync(certs.serverCert),
          key: readFileSync(certs.serverKey),
          psk: nbdTls.parsePskFile(readFileSync(certs.pskFile, 'utf8'), certs.pskFile),
        },
        tlsHandshakeDeadlineMs,
      });
      const { port } = await server.listenTcp('127.0.0.1', 0);
      servers[kind] = { server, port };
    }
    allowSocketPath = join(dir, 'allow.sock');
    await servers.allow.server.listenUnix(allowSocketPath);
  });

  after(async () => {
    for (const s of Object.values(servers)) await s?.server.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  afterEach(async () => {
    // Whatever the last test did, a well-behaved TLS client is still served, and nothing was a BUG.
    const port = servers.require.port;
    await runToolOk('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/disk?tls-certificates=${certs.dir}`]);
    expect(logs.filter((l) => l.startsWith('BUG'))).to.deep.equal([]);
  });

  /** Greets and returns a raw client over plaintext, with the socket under it. */
  async function plainClient(mode: 'require' | 'on' | 'allow'): Promise<{ socket: Socket; client: RawNbdClient }> {
    const socket = await rawConnect(servers[mode].port);
    const client = new RawNbdClient(streamPipe(socket));
    await client.greet();
    return { socket, client };
  }

  /** Sends STARTTLS, expects the ACK, and runs the TLS handshake over the same socket. */
  async function startTls(socket: Socket, client: RawNbdClient, usePsk = false): Promise<RawNbdClient> {
    const replies = await client.option(opt.startTls);
    expect(replies.map((r) => r.replyType)).to.deep.equal([rep.ack]);
    socket.removeAllListeners('data');
    const [identity, hex] = readFileSync(certs.pskFile, 'utf8').trim().split(':') as [string, string];
    const tlsSocket: TLSSocket = tlsConnect(
      usePsk
        ? {
            socket,
            checkServerIdentity: () => undefined,
            pskCallback: () => ({ identity, psk: Buffer.from(hex, 'hex') }),
          }
        : { socket, ca: readFileSync(certs.caCert), servername: 'localhost' },
    );
    await new Promise<void>((resolve, reject) => {
      tlsSocket.once('secureConnect', resolve);
      tlsSocket.once('error', reject);
    });
    return new RawNbdClient(streamPipe(tlsSocket));
  }

  const names = (replies: { replyType: number }[]): number[] => replies.map((r) => r.replyType);

  it('refuses every option but STARTTLS and ABORT with ERR_TLS_REQD before TLS, then serves over TLS', async () => {
    const { socket, client } = await plainClient('require');
    expect(names(await client.option(opt.list))).to.deep.equal([rep.errTlsReqd]);
    expect(names(await client.option(opt.structuredReply))).to.deep.equal([rep.errTlsReqd]);
    const info = wire.encodeInfoRequest({ name: 'disk', requests: [] });
    expect(names(await client.option(opt.info, info))).to.deep.equal([rep.errTlsReqd]);
    expect(names(await client.option(opt.go, info))).to.deep.equal([rep.errTlsReqd]);
    expect(names(await client.option(99))).to.deep.equal([rep.errTlsReqd]);
    const tls = await startTls(socket, client);
    expect(names(await tls.option(opt.list))).to.deep.equal([rep.server, rep.server, rep.ack]);
    // A second STARTTLS over TLS is invalid; the session goes on.
    expect(names(await tls.option(opt.startTls))).to.deep.equal([rep.errInvalid]);
    const { sizeBytes } = await tls.go('disk');
    expect(sizeBytes).to.equal(4 * MiB);
    const data = randomBytes(8192);
    expect((await tls.write(4096, data)).errno).to.equal(0);
    expect(Buffer.from((await tls.read(4096, 8192)).data!).equals(data)).to.equal(true);
    tls.disconnect();
  });

  it('closes on NBD_OPT_EXPORT_NAME before STARTTLS, and acknowledges ABORT', async () => {
    const { client } = await plainClient('require');
    client.sendOption(opt.exportName, new TextEncoder().encode('disk'));
    await client.pipe.closed;
    const second = await plainClient('require');
    expect(names(await second.client.option(opt.abort))).to.deep.equal([rep.ack]);
    second.socket.destroy();
  });

  it('forgets structured replies and metadata contexts negotiated in plaintext', async () => {
    const { socket, client } = await plainClient('on');
    expect(names(await client.option(opt.structuredReply))).to.deep.equal([rep.ack]);
    const set = wire.encodeMetaContextRequest({ exportName: 'disk', queries: ['base:allocation'] });
    expect(names(await client.option(opt.setMetaContext, set))).to.deep.equal([rep.metaContext, rep.ack]);
    const tls = await startTls(socket, client);
    const { flags } = await tls.go('disk', { structured: false });
    expect(flags & wire.transmissionFlag.sendDf).to.equal(0);
    const reply = await tls.read(0, 4096);
    expect(reply.structured).to.equal(false);
    expect(reply.errno).to.equal(0);
    tls.disconnect();
  });

  it('closes, without an ACK, when bytes are pipelined right behind STARTTLS', async () => {
    const { socket, client } = await plainClient('on');
    client.pipe.write(Buffer.concat([wire.encodeOption(opt.startTls), wire.encodeOption(opt.structuredReply)]));
    await client.pipe.closed;
    expect(socket.bytesRead).to.equal(wire.serverGreetingBytes);
    expect(logs.some((l) => /arrived behind NBD_OPT_STARTTLS/.test(l))).to.equal(true);
  });

  it('closes a connection that sends garbage instead of a ClientHello', async () => {
    const { socket, client } = await plainClient('require');
    expect(names(await client.option(opt.startTls))).to.deep.equal([rep.ack]);
    socket.write(randomBytes(4096));
    await client.pipe.closed;
  });

  it('drops a client stalled mid-handshake at the deadline while others are served', async () => {
    const stalled: Socket[] = [];
    for (const partial of [Buffer.alloc(0), Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])]) {
      const { socket, client } = await plainClient('require');
      expect(names(await client.option(opt.startTls))).to.deep.equal([rep.ack]);
      socket.write(partial);
      stalled.push(socket);
    }
    const started = Date.now();
    // Served meanwhile: a real client and a raw one over TLS.
    const port = servers.require.port;
    await runToolOk('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/disk?tls-certificates=${certs.dir}`]);
    await waitFor('the stalled handshakes to be dropped', () => stalled.every((s) => s.closed) || undefined, 10_000);
    expect(Date.now() - started).to.be.below(tlsHandshakeDeadlineMs + 5_000);
    expect(logs.some((l) => /TLS handshake not done within/.test(l))).to.equal(true);
  });

  it('refuses a wrong PSK and accepts the right one (TLS 1.2 PSK suites and TLS 1.3)', async () => {
    const [identity, hex] = readFileSync(certs.pskFile, 'utf8').trim().split(':') as [string, string];
    const attempt = async (key: Buffer, maxVersion: 'TLSv1.2' | 'TLSv1.3'): Promise<string> => {
      const { socket, client } = await plainClient('require');
      expect(names(await client.option(opt.startTls))).to.deep.equal([rep.ack]);
      socket.removeAllListeners('data');
      const tlsSocket = tlsConnect({
        socket,
        maxVersion,
        ciphers: maxVersion === 'TLSv1.2' ? 'ECDHE-PSK-CHACHA20-POLY1305:PSK-AES128-GCM-SHA256' : undefined,
        checkServerIdentity: () => undefined,
        pskCallback: () => ({ identity, psk: key }),
      });
      return new Promise<string>((resolve) => {
        tlsSocket.once('secureConnect', () => {
          // TLS 1.3 finishes the client's side before the server checks the binder; a refused
          // client sees the connection drop on its first read.
          const pipe = new RawNbdClient(streamPipe(tlsSocket));
          pipe
            .option(opt.list)
            .then(() => resolve(`ok ${tlsSocket.getProtocol()} ${tlsSocket.getCipher().name}`))
            .catch(() => resolve('refused'));
        });
        tlsSocket.once('error', () => resolve('refused'));
      });
    };
    expect(await attempt(Buffer.from(hex, 'hex'), 'TLSv1.3')).to.match(/^ok TLSv1\.3/);
    expect(await attempt(Buffer.from(hex, 'hex'), 'TLSv1.2')).to.match(/^ok TLSv1\.2 \S*PSK/);
    expect(await attempt(randomBytes(32), 'TLSv1.3')).to.equal('refused');
    expect(await attempt(randomBytes(32), 'TLSv1.2')).to.equal('refused');
  });

  it('limits an identity to its exports: others refused (ERR_POLICY; ERR_TLS_REQD in plaintext) and not listed', async () => {
    const info = (name: string): Uint8Array => wire.encodeInfoRequest({ name, requests: [] });
    const plain = await plainClient('allow');
    expect(names(await plain.client.option(opt.list))).to.deep.equal([rep.ack]);
    expect(names(await plain.client.option(opt.go, info('disk')))).to.deep.equal([rep.errTlsReqd]);
    const tls = await startTls(plain.socket, plain.client, true);
    const listed = await tls.option(opt.list);
    expect(names(listed)).to.deep.equal([rep.server, rep.ack]);
    expect(Buffer.from(listed[0]!.data).includes('other')).to.equal(true);
    expect(names(await tls.option(opt.info, info('disk')))).to.deep.equal([rep.errPolicy]);
    expect(names(await tls.option(opt.go, info('disk')))).to.deep.equal([rep.errPolicy]);
    expect((await tls.go('other', { structured: false })).sizeBytes).to.equal(1 * MiB);
    tls.disconnect();
    // NBD_OPT_EXPORT_NAME has no error reply: a refused export closes the connection.
    const second = await plainClient('allow');
    const tls2 = await startTls(second.socket, second.client, true);
    tls2.sendOption(opt.exportName, new TextEncoder().encode('disk'));
    await tls2.pipe.closed;
    // The Unix socket is guarded by its file permissions and not bound by the allow list.
    await runToolOk('nbdinfo', ['--size', `nbd+unix:///disk?socket=${allowSocketPath}`]);
  });

  it('answers ERR_UNSUP to STARTTLS when TLS is off', async () => {
    const server = new NbdServer({ provider, log: (line) => logs.push(line) });
    const { port } = await server.listenTcp('127.0.0.1', 0);
    try {
      const socket = await rawConnect(port);
      const client = new RawNbdClient(streamPipe(socket));
      await client.greet();
      expect(names(await client.option(opt.startTls))).to.deep.equal([rep.errUnsup]);
      expect(names(await client.option(opt.list))).to.deep.equal([rep.server, rep.server, rep.ack]);
      socket.destroy();
    } finally {
      await server.close();
    }
  });
});
