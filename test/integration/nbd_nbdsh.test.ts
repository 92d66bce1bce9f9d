// libnbd's nbdsh (Python) against the in-process server: FUA and FLUSH reaching the device (seen
// through the memory device's crash model), trim, write zeroes with and without NO_HOLE, block
// status with and without REQ_ONE, structured reads with holes, many requests in flight, strict
// mode off (bad requests reach the server and are refused), and an opt-mode session that lists
// exports and meta contexts before choosing one.
import { expect } from 'chai';
import { nbdRequestsInFlightMax } from '../../src/core/index.js';
import { nbdsh, startNbdServer, type NbdTestServer } from '../harness/nbd.js';

const MiB = 1 << 20;

describe('NbdServer with nbdsh (libnbd)', function () {
  this.timeout(120_000);
  let server: NbdTestServer;

  before(async () => {
    server = await startNbdServer();
    server.provider.create('disk', 16 * MiB, { description: 'nbdsh disk' });
    server.provider.create('other', MiB);
  });

  after(async () => {
    await server?.stop();
  });

  afterEach(() => {
    expect(server.bugs()).to.deep.equal([]);
  });

  it('FUA writes are durable at once; plain writes only after FLUSH', async () => {
    const device = server.provider.device('disk');
    await nbdsh(
      `
h.pwrite(b"A" * 4096, 0)
h.pwrite(b"B" * 4096, 4096, nbd.CMD_FLAG_FUA)
h.shutdown()
`,
      { uri: server.tcpUri('disk') },
    );
    device.crash();
    expect(device.peek(0, 1)[0]).to.equal(0);
    expect(String.fromCharCode(device.peek(4096, 1)[0]!)).to.equal('B');

    await nbdsh(
      `
h.pwrite(b"C" * 4096, 0)
h.flush()
h.shutdown()
`,
      { uri: server.unixUri('disk') },
    );
    device.crash();
    expect(String.fromCharCode(device.peek(0, 1)[0]!)).to.equal('C');
  });

  it('a FLUSH on one connection covers writes made on another (multi-conn)', async () => {
    const device = server.provider.device('disk');
    const out = await nbdsh(
      `
h.connect_uri(${JSON.stringify(server.tcpUri('disk'))})
h2 = nbd.NBD()
h2.connect_uri(${JSON.stringify(server.unixUri('disk'))})
assert h.can_multi_conn() and h2.can_multi_conn()
h.pwrite(b"M" * 8192, 65536)
h2.flush()
print(h2.pread(4, 65536 + 8188))
h.shutdown()
h2.shutdown()
`,
    );
    expect(out.trim()).to.equal("bytearray(b'MMMM')");
    device.crash();
    expect(String.fromCharCode(device.peek(65536 + 8191, 1)[0]!)).to.equal('M');
  });

  it('trims to a hole, zeroes to a hole, and zeroes with NO_HOLE to allocated zeros', async () => {
    const out = await nbdsh(
      `
h.add_meta_context("base:allocation")
h.connect_uri(${JSON.stringify(server.tcpUri('disk'))})
h.pwrite(b"x" * (3 * 65536), 1048576)
h.trim(65536, 1048576)
h.zero(65536, 1048576 + 65536)
h.zero(65536, 1048576 + 131072, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(3 * 65536, 1048576) == bytearray(3 * 65536)
entries = []
def extent(context, offset, e, err):
    assert context == "base:allocation"
    entries.extend(e)
h.block_status(3 * 65536, 1048576, extent)
print(entries)
h.shutdown()
`,
    );
    // [length, flags] pairs: flags 3 = hole+zero, 2 = zero (allocated).
    expect(out.trim()).to.equal('[131072, 3, 65536, 2]');
  });

  it('answers block status with REQ_ONE in one extent no longer than asked', async () => {
    const out = await nbdsh(
      `
h.add_meta_context("base:allocation")
h.connect_uri(${JSON.stringify(server.unixUri('disk'))})
h.pwrite(b"y" * 4096, 8 * 1048576 + 8192)
seen = []
h.block_status(100000, 8 * 1048576, lambda c, o, e, err: seen.append(list(e)), nbd.CMD_FLAG_REQ_ONE)
h.block_status(16384, 8 * 1048576, lambda c, o, e, err: seen.append(list(e)))
print(seen)
h.shutdown()
`,
    );
    expect(out.trim()).to.equal('[[8192, 3], [8192, 3, 4096, 0, 4096, 3]]');
  });

  it('reads holes as OFFSET_HOLE chunks in a structured read', async () => {
    const out = await nbdsh(
      `
h.connect_uri(${JSON.stringify(server.tcpUri('disk'))})
h.pwrite(b"z" * 4096, 12 * 1048576 + 65536)
chunks = []
def chunk(buf, offset, status, err):
    chunks.append((offset - 12 * 1048576, len(buf), "hole" if status == nbd.READ_HOLE else "data"))
    return 0
buf = h.pread_structured(262144, 12 * 1048576, chunk)
assert buf[65536:69632] == bytearray(b"z" * 4096)
print(chunks)
h.shutdown()
`,
    );
    expect(out.trim()).to.equal("[(0, 65536, 'hole'), (65536, 4096, 'data'), (69632, 192512, 'hole')]");
  });

  it(`holds at most ${nbdRequestsInFlightMax} of hundreds of pipelined requests, and answers every one`, async () => {
    // Every device call waits until the server has a full window in flight, then all go: the
    // high-water mark must be exactly the window, proving both the cap and the back-pressure.
    const device = server.provider.create('window', 4 * MiB);
    let release!: () => void;
    const full = new Promise<void>((r) => (release = r));
    device.beforeOperation = () => {
      if (device.stats.inFlight >= nbdRequestsInFlightMax) release();
      return full;
    };
    const out = await nbdsh(
      `
h.connect_uri(${JSON.stringify(server.tcpUri('window'))})
n = 300
bufs = []
for i in range(n):
    h.aio_pwrite(bytes([i % 251]) * 4096, i * 4096)
while h.aio_in_flight() > 0:
    h.poll(-1)
for i in range(n):
    b = nbd.Buffer(4096)
    h.aio_pread(b, i * 4096)
    bufs.append(b)
while h.aio_in_flight() > 0:
    h.poll(-1)
bad = [i for i in range(n) if bufs[i].to_bytearray() != bytearray([i % 251]) * 4096]
print(len(bad))
h.shutdown()
`,
    );
    expect(out.trim()).to.equal('0');
    expect(device.stats.inFlightHighWater).to.equal(nbdRequestsInFlightMax);
  });

  it('refuses bad requests a non-strict client sends, and keeps the connection', async () => {
    const out = await nbdsh(
      `
import errno
h.set_strict_mode(0)
h.connect_uri(${JSON.stringify(server.tcpUri('other'))})
results = []
for name, call in [
    ("read past end", lambda: h.pread(4096, 1048576 - 100)),
    ("write past end", lambda: h.pwrite(b"q" * 200, 1048576 - 100)),
    ("zero-length block status", lambda: h.block_status(0, 0, lambda *a: 0)),
    ("read with NO_HOLE", lambda: h.pread(10, 0, nbd.CMD_FLAG_NO_HOLE)),
]:
    try:
        call()
        results.append((name, "ok"))
    except nbd.Error as e:
        results.append((name, errno.errorcode.get(e.errnum, str(e.errnum))))
results.append(("still works", len(h.pread(10, 0))))
print(results)
h.shutdown()
`,
    );
    expect(out.trim()).to.equal(
      "[('read past end', 'EINVAL'), ('write past end', 'ENOSPC'), ('zero-length block status', 'EINVAL'), " +
        "('read with NO_HOLE', 'EINVAL'), ('still works', 10)]",
    );
  });

  it('lists exports and contexts in opt mode, then goes to the one it chose', async () => {
    const out = await nbdsh(
      `
h.set_opt_mode(True)
h.connect_uri(${JSON.stringify(server.unixUri())})
exports = []
h.opt_list(lambda name, description: exports.append((name, description)))
print(sorted(e for e in exports if e[0] in ("disk", "other")), len(exports) >= 2)
h.set_export_name("disk")
h.opt_info()
print(h.get_size(), h.can_fua(), h.can_multi_conn(), h.is_read_only())
contexts = []
h.opt_list_meta_context(lambda name: contexts.append(name))
print(contexts)
h.set_export_name("nope")
try:
    h.opt_go()
except nbd.Error as e:
    print("refused")
h.set_export_name("other")
h.opt_go()
print(h.get_size(), h.aio_is_ready())
h.shutdown()
`,
    );
    expect(out.trim().split('\n')).to.deep.equal([
      "[('disk', 'nbdsh disk'), ('other', '')] True",
      `${16 * MiB} True True False`,
      "['base:allocation']",
      'refused',
      `${MiB} True`,
    ]);
  });

  it('serves the default export "" when it is the only one', async () => {
    const single = await startNbdServer();
    try {
      single.provider.create('only', 2 * MiB, { description: 'the only one' });
      const out = await nbdsh(
        `
h.set_full_info(True)
h.connect_uri(${JSON.stringify(single.tcpUri(''))})
print(h.get_size(), h.get_canonical_export_name(), h.get_export_description())
h.shutdown()
`,
      );
      expect(out.trim()).to.equal(`${2 * MiB} only the only one`);
    } finally {
      await single.stop();
    }
  });
});
