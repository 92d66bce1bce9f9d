/**
 * The /metrics endpoints of real processes after real traffic: a cairnd (`--metrics-listen`)
 * spoken to by the shard client, and a frontend (`cairnctl nbd serve --metrics-listen`) in a dev
 * cluster, spoken to by nbdsh. Checks the documented names and exact values: request counts by
 * route/status and by NBD command/outcome, dirty bytes while writes wait, flushed extents, and
 * the volume's health after a storage node is SIGKILLed. Also: logs are JSON lines on stderr
 * while the ready lines stay plain on stdout.
 */
import { expect } from 'chai';
import { allMetricSpecs } from '../../src/metrics/index.js';
import { NodeShardStore } from '../../src/shard/index.js';
import { runCairnd, startCairnd, type CairndHandle } from '../harness/cairnd.js';
import { cairnctlPath } from '../harness/cli.js';
import { startEtcd, type EtcdHandle } from '../harness/etcd.js';
import { freePort, waitFor } from '../../src/dev/index.js';
import { ClientProcess, nbdsh, nbdshProcess, useStack } from '../harness/stack.js';

const MiB = 1 << 20;

/** `name{b="2",a="1"}` -> `name{a="1",b="2"}`, so lookups do not depend on label order. */
function normalized(series: string): string {
  const open = series.indexOf('{');
  if (open === -1) return series;
  const labels = series.slice(open + 1, -1).match(/[a-z_]+="[^"]*"/g) ?? [];
  return `${series.slice(0, open)}{${[...labels].sort().join(',')}}`;
}

interface Scrape {
  readonly text: string;
  readonly contentType: string;
  get(series: string): number | undefined;
}

async function scrape(address: string): Promise<Scrape> {
  const res = await fetch(`http://${address}/metrics`);
  expect(res.status).to.equal(200);
  const text = await res.text();
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    values.set(normalized(line.slice(0, at)), Number(line.slice(at + 1)));
  }
  return { text, contentType: res.headers.get('content-type') ?? '', get: (s) => values.get(normalized(s)) };
}

/** Every stderr line is one JSON object with level, time and msg. */
function jsonLogLines(stderr: string): Record<string, unknown>[] {
  return stderr
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(l) as Record<string, unknown>;
      } catch {
        throw new Error(`a log line is not JSON: ${l}`);
      }
      expect(parsed, l).to.include.keys('level', 'time', 'msg');
      return parsed;
    });
}

describe('cairnd --metrics-listen (a real process)', function () {
  this.timeout(60_000);
  let etcd: EtcdHandle;
  let node: CairndHandle | undefined;
  let store: NodeShardStore | undefined;

  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    store?.close();
    await node?.stop();
    await etcd?.stop();
  });

  it('serves Prometheus text with request counts by route, method and status, bytes, and capacity', async () => {
    const metricsPort = await freePort();
    const address = `127.0.0.1:${metricsPort}`;
    node = await startCairnd({
      etcd: etcd.endpoint,
      name: 'm-1',
      zone: 'z',
      extraArgs: ['--metrics-listen', address, '--capacity', '1GiB'],
    });
    store = new NodeShardStore({ name: node.name, address: node.address, timeoutMs: 5_000 });
    const shard = new Uint8Array(10_000).fill(7);
    await store.put('vol/0/1/0', shard);
    expect(await store.get('vol/0/1/0')).to.deep.equal(shard);
    expect(await store.head('vol/9/9/9')).to.equal(null);

    const m = await scrape(address);
    expect(m.contentType).to.match(/^text\/plain; version=0\.0\.4/);
    const l = 'node="m-1",zone="z"';
    expect(m.get(`cairn_node_http_requests_total{route="shard",method="PUT",status="201",${l}}`)).to.equal(1);
    expect(m.get(`cairn_node_http_requests_total{route="shard",method="GET",status="200",${l}}`)).to.equal(1);
    expect(m.get(`cairn_node_http_requests_total{route="shard",method="HEAD",status="404",${l}}`)).to.equal(1);
    expect(m.get(`cairn_node_http_request_duration_seconds_count{route="shard",method="PUT",${l}}`)).to.equal(1);
    expect(
      m.get(`cairn_node_http_request_duration_seconds_bucket{route="shard",method="PUT",le="+Inf",${l}}`),
    ).to.equal(1);
    expect(m.get(`cairn_node_shard_written_bytes_total{${l}}`)).to.equal(10_000);
    // 10,000 data bytes are three 4 KiB blocks, each framed with a 4-byte CRC-32.
    expect(m.get(`cairn_node_shard_read_bytes_total{${l}}`)).to.equal(10_000 + 3 * 4);
    expect(m.get(`cairn_node_capacity_bytes{${l}}`)).to.equal(1 << 30);
    expect(m.get(`cairn_node_used_bytes{${l}}`)).to.be.at.least(10_000);
    expect(m.text).to.match(
      /cairn_build_info\{component="node",version="[^"]+",nodejs="v[\d.]+",node="m-1",zone="z"\} 1/,
    );
    expect(m.text).to.contain('process_resident_memory_bytes');
    for (const spec of allMetricSpecs.filter((s) => s.component === 'node'))
      expect(m.text, spec.name).to.contain(`# TYPE ${spec.name} ${spec.type}`);

    expect((await fetch(`http://${address}/other`)).status).to.equal(404);
    expect((await fetch(`http://${address}/metrics`, { method: 'POST' })).status).to.equal(405);

    // Shard ops on the binary connection (what frontends use) count as the HTTP ones do.
    const binary = new NodeShardStore({
      name: node.name,
      address: node.address,
      journalAddress: node.journalAddress,
      timeoutMs: 5_000,
    });
    try {
      await binary.put('vol/0/2/0', shard);
      expect(await binary.get('vol/0/2/0', { offset: 0, length: 100 })).to.deep.equal(shard.subarray(0, 100));
    } finally {
      binary.close();
    }
    const after = await scrape(address);
    expect(after.get(`cairn_node_http_requests_total{route="shard",method="PUT",status="201",${l}}`)).to.equal(2);
    expect(after.get(`cairn_node_http_requests_total{route="shard",method="GET",status="200",${l}}`)).to.equal(2);
    expect(after.get(`cairn_node_shard_written_bytes_total{${l}}`)).to.equal(20_000);
    // The range read sent block 0, framed: 4 + 4096 bytes.
    expect(after.get(`cairn_node_shard_read_bytes_total{${l}}`)).to.equal(10_000 + 3 * 4 + 4 + 4096);

    // Logs: JSON on stderr, with the node's name and zone; the ready line stayed plain on stdout
    // (startCairnd waited for it).
    const logs = jsonLogLines(node.stderr());
    expect(logs.find((x) => x['msg'] === `metrics on http://${address}/metrics`)).to.include({
      level: 'info',
      name: 'cairnd',
      node: 'm-1',
      zone: 'z',
    });
  });

  it('refuses a bad --metrics-listen with one line and exit 2', async () => {
    const run = await runCairnd([
      ...['--etcd', etcd.endpoint, '--name', 'm-2', '--zone', 'z', '--data-dir', '/tmp', '--listen', '127.0.0.1:0'],
      ...['--metrics-listen', 'nowhere'],
    ]);
    expect(run.code).to.equal(2);
    expect(run.stderr.trim()).to.equal(
      'cairnd: Invalid --metrics-listen address "nowhere": expected HOST:PORT, e.g. 127.0.0.1:4101',
    );
  });
});

describe('cairnctl nbd serve --metrics-listen (a real frontend in a dev cluster)', function () {
  this.timeout(180_000);
  const stack = useStack({ profile: '4+2', extentSize: '1MiB' });

  it('counts NBD requests by command and outcome, shows dirty bytes, flushes, and the health of its volume', async () => {
    const s = stack();
    // No journal: this test counts flushed extents and their shards as each FLUSH publishes them
    // (with a journal, partly written extents are published later, by the fold).
    await s.cairnctl('create mv', ['volume', 'create', 'mv', '8MiB', '--journal-replicas', '0']);
    const nbdPort = await freePort();
    const metrics = `127.0.0.1:${await freePort()}`;
    const frontend = new ClientProcess(
      process.execPath,
      [
        cairnctlPath,
        'nbd',
        'serve',
        '--etcd',
        s.etcd,
        '--listen',
        `127.0.0.1:${nbdPort}`,
        '--metrics-listen',
        metrics,
        // Dirty data stays dirty until a FLUSH, so the gauge can be read.
        '--flush-age',
        '600000',
      ],
      { deadlineMs: 170_000 },
    );
    s.defer('stop the metrics frontend', async () => {
      frontend.kill('SIGTERM');
      await frontend.exit();
    });
    await frontend.waitForOutput(/cairnctl serving NBD on nbd:\/\/127\.0\.0\.1:\d+ \(pid \d+\)\n/);
    const uri = `nbd://127.0.0.1:${nbdPort}/mv`;

    // One connection holds the volume attached (and its cache) for the whole test.
    const holder = nbdshProcess(
      'print("ready", flush=True)\nsys.stdin.read()\nh.shutdown()',
      {},
      { uri, deadlineMs: 170_000 },
    );
    await holder.waitForOutput(/ready/);

    // Four writes (three whole extents and 4 KiB of a fourth), no flush, and one read past the
    // end that the server refuses (libnbd's own range check turned off).
    await nbdsh(
      'write without flushing',
      `
h.set_strict_mode(0)
h.connect_uri(A["uri"])
for e in range(3): h.pwrite(bytes([e + 1]) * (1 << 20), e << 20)
h.pwrite(b"\\x44" * 4096, 5 << 20)
try:
    h.pread(4096, 8 << 20)
    raise Exception("a read past the end succeeded")
except nbd.Error as e:
    print("refused", e.errno)
h.shutdown()
`,
      { uri },
    );
    let m = await scrape(metrics);
    expect(m.get('cairn_nbd_requests_total{command="write",outcome="ok"}')).to.equal(4);
    expect(m.get('cairn_nbd_requests_total{command="read",outcome="einval"}')).to.equal(1);
    expect(m.get('cairn_nbd_request_bytes_total{command="write"}')).to.equal(3 * MiB + 4096);
    expect(m.get('cairn_nbd_request_duration_seconds_count{command="write"}')).to.equal(4);
    expect(m.get('cairn_nbd_connections')).to.equal(1);
    expect(m.get('cairn_volume_connections{volume="mv"}')).to.equal(1);
    // The cache holds what was written (3 MiB + 4 KiB over four extents), not whole extents.
    expect(m.get('cairn_cache_dirty_bytes{volume="mv"}')).to.equal(3 * MiB + 4096);
    expect(m.get('cairn_volume_written_extents{volume="mv"}')).to.equal(0);

    const read = await nbdsh(
      'flush and read back',
      'h.flush()\nprint(h.pread(4096, 5 << 20) == b"\\x44" * 4096)',
      {},
      { uri },
    );
    expect(read.trim()).to.equal('True');
    m = await scrape(metrics);
    expect(m.get('cairn_cache_dirty_bytes{volume="mv"}')).to.equal(0);
    expect(m.get('cairn_nbd_requests_total{command="flush",outcome="ok"}')).to.equal(1);
    expect(m.get('cairn_nbd_requests_total{command="read",outcome="ok"}')).to.equal(1);
    expect(m.get('cairn_flush_extents_total{volume="mv"}')).to.equal(4);
    expect(m.get('cairn_flush_duration_seconds_count{volume="mv",outcome="ok"}')).to.be.at.least(1);
    expect(m.get('cairn_volume_written_extents{volume="mv"}')).to.equal(4);
    expect(m.get('cairn_volume_degraded_extents{volume="mv"}')).to.equal(0);
    expect(m.get('cairn_volume_at_risk_bytes{volume="mv"}')).to.equal(0);
    for (const zone of ['a', 'b', 'c'])
      expect(m.get(`cairn_volume_missing_shards{volume="mv",zone="${zone}"}`)).to.equal(0);
    for (const spec of allMetricSpecs.filter((x) => x.component === 'frontend' || x.name === 'cairn_build_info'))
      expect(m.text, spec.name).to.contain(`# TYPE ${spec.name} ${spec.type}`);

    // A node dies: each of the four extents has one shard on it (six nodes, 4+2).
    await s.killNode('c-2');
    m = await waitFor(
      'the frontend to report the extents on c-2 as degraded',
      async () => {
        const now = await scrape(metrics);
        return now.get('cairn_volume_degraded_extents{volume="mv"}') === 4 ? now : undefined;
      },
      30_000,
      { intervalMs: 250 },
    );
    expect(m.get('cairn_volume_at_risk_bytes{volume="mv"}')).to.equal(4 * MiB);
    expect(m.get('cairn_volume_unreadable_extents{volume="mv"}')).to.equal(0);
    expect(m.get('cairn_volume_missing_shards{volume="mv",zone="c"}')).to.equal(4);
    expect(m.get('cairn_volume_missing_shards{volume="mv",zone="a"}')).to.equal(0);
    expect(m.get('cairn_repair_backlog_extents{volume="mv"}')).to.equal(4);

    holder.endInput();
    expect((await holder.exit()).code).to.equal(0);

    // Logs are JSON lines on stderr; the ready line was plain on stdout.
    const logs = jsonLogLines(frontend.stderr());
    expect(logs.find((x) => x['msg'] === 'attached volume mv for writing (epoch 1); 0 extents written')).to.include({
      level: 'info',
      name: 'cairnctl-nbd',
      volume: 'mv',
    });
    expect(logs.find((x) => String(x['msg']).includes('READ offset 8388608 length 4096: EINVAL'))).to.include({
      level: 'warn',
    });
    expect(frontend.stdout()).to.not.contain('{');
  });
});
