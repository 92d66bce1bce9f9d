/**
 * The typed metrics over prom-client: what events and snapshots turn into, as Prometheus text,
 * with a fake clock. No sockets.
 */
import { expect } from 'chai';
import {
  allMetricSpecs,
  createFrontendMetrics,
  createNodeMetrics,
  nbdCommandLabel,
  nbdOutcomeLabel,
  type FrontendSnapshot,
} from '../../../src/metrics/index.js';

/** `name{b="2",a="1"}` -> `name{a="1",b="2"}`: prom-client puts default labels first in some types. */
function normalized(series: string): string {
  const open = series.indexOf('{');
  if (open === -1) return series;
  const labels = series.slice(open + 1, -1).match(/[a-z_]+="[^"]*"/g) ?? [];
  return `${series.slice(0, open)}{${[...labels].sort().join(',')}}`;
}

/** The samples of an exposition (help and type lines dropped), looked up by series in any label order. */
function samples(text: string): {
  get(series: string): number | undefined;
  has(series: string): boolean;
  keys(): string[];
} {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(normalized(line.slice(0, at)), Number(line.slice(at + 1)));
  }
  return {
    get: (series) => out.get(normalized(series)),
    has: (series) => out.has(normalized(series)),
    keys: () => [...out.keys()],
  };
}

describe('createFrontendMetrics()', () => {
  it('counts NBD requests by command and outcome, with durations from the clock and bytes of the successful ones', async () => {
    let now = 1000;
    const m = createFrontendMetrics({ processMetrics: false, nowMs: () => now });
    const write = m.nbdRequest('WRITE', 65536);
    now += 2; // 2 ms
    write('OK');
    write('OK'); // a second call is ignored
    const read = m.nbdRequest('READ', 4096);
    now += 30;
    read('EIO');
    m.nbdRequest('WRITE_ZEROES', 1 << 20)('OK');
    m.nbdRequest('command 77', 0)('EINVAL');
    const s = samples(await m.text());
    expect(s.get('cairn_nbd_requests_total{command="write",outcome="ok"}')).to.equal(1);
    expect(s.get('cairn_nbd_requests_total{command="read",outcome="eio"}')).to.equal(1);
    expect(s.get('cairn_nbd_requests_total{command="write_zeroes",outcome="ok"}')).to.equal(1);
    expect(s.get('cairn_nbd_requests_total{command="other",outcome="einval"}')).to.equal(1);
    expect(s.get('cairn_nbd_request_duration_seconds_sum{command="write"}')).to.be.closeTo(0.002, 1e-9);
    expect(s.get('cairn_nbd_request_duration_seconds_bucket{le="0.0025",command="write"}')).to.equal(1);
    expect(s.get('cairn_nbd_request_duration_seconds_bucket{le="0.025",command="read"}')).to.equal(0);
    expect(s.get('cairn_nbd_request_duration_seconds_bucket{le="0.05",command="read"}')).to.equal(1);
    expect(s.get('cairn_nbd_request_bytes_total{command="write"}')).to.equal(65536);
    expect(s.get('cairn_nbd_request_bytes_total{command="write_zeroes"}')).to.equal(1 << 20);
    expect(s.has('cairn_nbd_request_bytes_total{command="read"}'), 'a failed read moved no bytes').to.equal(false);
  });

  it('times flushes by volume and outcome and counts the extents of successful ones', async () => {
    let now = 0;
    const m = createFrontendMetrics({ processMetrics: false, nowMs: () => now });
    const ok = m.flush('pg-data', 3);
    now += 250;
    ok(true);
    const bad = m.flush('pg-data', 2);
    now += 10;
    bad(false);
    const s = samples(await m.text());
    expect(s.get('cairn_flush_duration_seconds_count{volume="pg-data",outcome="ok"}')).to.equal(1);
    expect(s.get('cairn_flush_duration_seconds_sum{volume="pg-data",outcome="ok"}')).to.be.closeTo(0.25, 1e-9);
    expect(s.get('cairn_flush_duration_seconds_count{volume="pg-data",outcome="error"}')).to.equal(1);
    expect(s.get('cairn_flush_extents_total{volume="pg-data"}')).to.equal(3);
  });

  it('counts final flushes retried and the bytes a detach dropped, and gauges the attempts of one still retrying', async () => {
    const m = createFrontendMetrics({ processMetrics: false });
    let snapshot: FrontendSnapshot = {
      volumes: [
        {
          name: 'kept',
          dirtyBytes: 1 << 20,
          cachedBytes: 1 << 20,
          connections: 0,
          readDegradedExtents: 0,
          finalFlushAttempts: 3,
        },
        { name: 'calm', dirtyBytes: 0, cachedBytes: 0, connections: 1, readDegradedExtents: 0 },
      ],
    };
    m.snapshotFrom(async () => snapshot);
    for (let i = 0; i < 3; i++) m.finalFlush('kept', { outcome: 'retry', bytes: 1 << 20 });
    let s = samples(await m.text());
    expect(s.get('cairn_final_flush_retries_total{volume="kept"}')).to.equal(3);
    expect(s.get('cairn_volume_final_flush_retrying{volume="kept"}')).to.equal(3);
    expect(s.get('cairn_volume_final_flush_retrying{volume="calm"}')).to.equal(0);
    expect(s.has('cairn_final_flush_lost_bytes_total{volume="kept"}')).to.equal(false);

    m.finalFlush('kept', { outcome: 'lost', bytes: 4096 });
    snapshot = { volumes: [] };
    s = samples(await m.text());
    expect(s.get('cairn_final_flush_lost_bytes_total{volume="kept"}')).to.equal(4096);
    expect(s.has('cairn_volume_final_flush_retrying{volume="kept"}'), 'detached: no gauge').to.equal(false);
  });

  it('refreshes gauges from the snapshot at every scrape, dropping detached volumes', async () => {
    let connections = 3;
    let snapshot: FrontendSnapshot = {
      volumes: [
        {
          name: 'a',
          dirtyBytes: 4 << 20,
          cachedBytes: 8 << 20,
          connections: 2,
          readDegradedExtents: 1,
          health: {
            writtenExtents: 10,
            degradedExtents: 4,
            unreadableExtents: 1,
            atRiskBytes: 5 << 20,
            repairBacklogExtents: 5,
            missingShardsByZone: { x: 4, y: 3 },
          },
        },
        { name: 'b', dirtyBytes: 0, cachedBytes: 0, connections: 1, readDegradedExtents: 0 },
      ],
    };
    const m = createFrontendMetrics({ processMetrics: false });
    m.snapshotFrom(async () => snapshot);
    m.connectionsFrom(() => connections);
    let s = samples(await m.text());
    expect(s.get('cairn_nbd_connections')).to.equal(3);
    expect(s.get('cairn_cache_dirty_bytes{volume="a"}')).to.equal(4 << 20);
    expect(s.get('cairn_cache_cached_bytes{volume="a"}')).to.equal(8 << 20);
    expect(s.get('cairn_volume_connections{volume="a"}')).to.equal(2);
    expect(s.get('cairn_volume_read_degraded_extents{volume="a"}')).to.equal(1);
    expect(s.get('cairn_volume_written_extents{volume="a"}')).to.equal(10);
    expect(s.get('cairn_volume_degraded_extents{volume="a"}')).to.equal(4);
    expect(s.get('cairn_volume_unreadable_extents{volume="a"}')).to.equal(1);
    expect(s.get('cairn_volume_at_risk_bytes{volume="a"}')).to.equal(5 << 20);
    expect(s.get('cairn_repair_backlog_extents{volume="a"}')).to.equal(5);
    expect(s.get('cairn_volume_missing_shards{volume="a",zone="x"}')).to.equal(4);
    expect(s.get('cairn_volume_missing_shards{volume="a",zone="y"}')).to.equal(3);
    expect(s.get('cairn_cache_dirty_bytes{volume="b"}')).to.equal(0);
    expect(s.has('cairn_volume_degraded_extents{volume="b"}'), 'no health, no health gauges').to.equal(false);

    snapshot = { volumes: [] };
    connections = 0;
    s = samples(await m.text());
    expect(s.get('cairn_nbd_connections')).to.equal(0);
    expect(s.keys().filter((k) => k.includes('volume="a"'))).to.deep.equal([]);
  });

  it("exports each volume's shard reads and cross-zone shard reads as the engine's running totals", async () => {
    let snapshot: FrontendSnapshot = {
      volumes: [
        {
          name: 'a',
          dirtyBytes: 0,
          cachedBytes: 0,
          connections: 1,
          readDegradedExtents: 0,
          shardReads: 40,
          crossZoneShardReads: 3,
        },
        { name: 'b', dirtyBytes: 0, cachedBytes: 0, connections: 1, readDegradedExtents: 0 },
      ],
    };
    const m = createFrontendMetrics({ processMetrics: false });
    m.snapshotFrom(async () => snapshot);
    let s = samples(await m.text());
    expect(s.get('cairn_volume_shard_reads_total{volume="a"}')).to.equal(40);
    expect(s.get('cairn_volume_cross_zone_shard_reads_total{volume="a"}')).to.equal(3);
    expect(s.has('cairn_volume_shard_reads_total{volume="b"}'), 'not reported, not exported').to.equal(false);

    // The totals are set, not added: a second scrape shows the engine's count, not a sum.
    snapshot = {
      volumes: [
        {
          name: 'a',
          dirtyBytes: 0,
          cachedBytes: 0,
          connections: 1,
          readDegradedExtents: 0,
          shardReads: 45,
          crossZoneShardReads: 3,
        },
      ],
    };
    s = samples(await m.text());
    expect(s.get('cairn_volume_shard_reads_total{volume="a"}')).to.equal(45);
    expect(s.get('cairn_volume_cross_zone_shard_reads_total{volume="a"}')).to.equal(3);

    snapshot = { volumes: [] };
    s = samples(await m.text());
    expect(s.has('cairn_volume_shard_reads_total{volume="a"}'), 'a detached volume disappears').to.equal(false);
  });

  it('leaves snapshot gauges out of a scrape whose source failed, and says why', async () => {
    const errors: string[] = [];
    const m = createFrontendMetrics({ processMetrics: false, onError: (what) => errors.push(what) });
    let fail = false;
    m.snapshotFrom(async () => {
      if (fail) throw new Error('etcd is gone');
      return { volumes: [{ name: 'a', dirtyBytes: 1, cachedBytes: 1, connections: 1, readDegradedExtents: 0 }] };
    });
    expect(samples(await m.text()).get('cairn_cache_dirty_bytes{volume="a"}')).to.equal(1);
    fail = true;
    const s = samples(await m.text());
    expect(s.has('cairn_cache_dirty_bytes{volume="a"}')).to.equal(false);
    expect(errors).to.deep.equal(['reading the frontend status']);
  });

  it('exports every frontend metric of the catalog, and build info', async () => {
    const m = createFrontendMetrics({ processMetrics: false });
    const text = await m.text();
    for (const spec of allMetricSpecs.filter((s) => s.component === 'frontend'))
      expect(text, spec.name).to.contain(`# TYPE ${spec.name} ${spec.type}`);
    expect(text).to.match(/cairn_build_info\{component="frontend",version="[^"]+",nodejs="v\d+/);
    expect(text, 'repair metrics wait for repair()').to.not.contain('cairn_repair_extents_total');
  });

  it("turns a repair run's running totals into counter increments", async () => {
    const m = createFrontendMetrics({ processMetrics: false });
    const repair = m.repair();
    expect(m.repair()).to.equal(repair);
    repair.planned(40, 2);
    const progress = repair.progress();
    progress({ extentsDone: 5, shardsRebuilt: 5, bytesWritten: 5 << 20, skippedChanged: 1, failed: 0 });
    progress({ extentsDone: 12, shardsRebuilt: 10, bytesWritten: 10 << 20, skippedChanged: 1, failed: 2 });
    repair.extentDone('unrecoverable');
    const s = samples(await m.text());
    expect(s.get('cairn_repair_pending_extents{state="repairable"}')).to.equal(40);
    expect(s.get('cairn_repair_pending_extents{state="unrecoverable"}')).to.equal(2);
    expect(s.get('cairn_repair_extents_total{outcome="repaired"}')).to.equal(9);
    expect(s.get('cairn_repair_extents_total{outcome="skipped"}')).to.equal(1);
    expect(s.get('cairn_repair_extents_total{outcome="failed"}')).to.equal(2);
    expect(s.get('cairn_repair_extents_total{outcome="unrecoverable"}')).to.equal(1);
    expect(s.get('cairn_repair_shards_rebuilt_total')).to.equal(10);
    expect(s.get('cairn_repair_written_bytes_total')).to.equal(10 << 20);
    repair.census(3, 1250);
    const after = samples(await m.text());
    expect(after.get('cairn_census_absent_shards')).to.equal(3);
    expect(after.get('cairn_census_duration_seconds')).to.equal(1.25);
  });
});

describe('createNodeMetrics()', () => {
  it('counts limit hits by limit and reads connections, requests in flight and budgets at each scrape', async () => {
    const m = createNodeMetrics({ processMetrics: false });
    let load = {
      httpConnections: 3,
      journalConnections: 1,
      requestsInFlight: 2,
      putBytesInFlight: 10,
      responseBytesInFlight: 20,
    };
    m.loadFrom(() => load);
    m.limitHit('slow_body');
    m.limitHit('slow_body');
    m.limitHit('Not A Label {x}');
    let s = samples(await m.text());
    expect(s.get('cairn_node_limit_hits_total{limit="slow_body"}')).to.equal(2);
    expect(s.get('cairn_node_limit_hits_total{limit="other"}')).to.equal(1);
    expect(s.get('cairn_node_connections{server="http"}')).to.equal(3);
    expect(s.get('cairn_node_connections{server="journal"}')).to.equal(1);
    expect(s.get('cairn_node_requests_in_flight')).to.equal(2);
    expect(s.get('cairn_node_put_in_flight_bytes')).to.equal(10);
    expect(s.get('cairn_node_response_in_flight_bytes')).to.equal(20);
    load = { ...load, requestsInFlight: 0 };
    s = samples(await m.text());
    expect(s.get('cairn_node_requests_in_flight')).to.equal(0);
  });

  it('counts shard API requests by route, method and status, with the node and zone on every series', async () => {
    const m = createNodeMetrics({ processMetrics: false, defaultLabels: { node: 'b-1', zone: 'b' } });
    m.usageFrom(async () => ({ capacityBytes: 1000, usedBytes: 250 }));
    m.requestDone({ route: 'shard', method: 'PUT', status: 201, durationMs: 3, bytesWritten: 4096, bytesRead: 0 });
    m.requestDone({ route: 'shard', method: 'GET', status: 200, durationMs: 1, bytesWritten: 0, bytesRead: 4112 });
    m.requestDone({ route: 'shard', method: 'HEAD', status: 404, durationMs: 1, bytesWritten: 0, bytesRead: 0 });
    m.requestDone({ route: 'nonsense', method: 'BREW', status: 0, durationMs: 1, bytesWritten: 0, bytesRead: 0 });
    const s = samples(await m.text());
    const l = 'node="b-1",zone="b"';
    expect(s.get(`cairn_node_http_requests_total{route="shard",method="PUT",status="201",${l}}`)).to.equal(1);
    expect(s.get(`cairn_node_http_requests_total{route="shard",method="GET",status="200",${l}}`)).to.equal(1);
    expect(s.get(`cairn_node_http_requests_total{route="shard",method="HEAD",status="404",${l}}`)).to.equal(1);
    expect(s.get(`cairn_node_http_requests_total{route="other",method="other",status="aborted",${l}}`)).to.equal(1);
    expect(s.get(`cairn_node_http_request_duration_seconds_count{route="shard",method="PUT",${l}}`)).to.equal(1);
    expect(s.get(`cairn_node_shard_written_bytes_total{${l}}`)).to.equal(4096);
    expect(s.get(`cairn_node_shard_read_bytes_total{${l}}`)).to.equal(4112);
    expect(s.get(`cairn_node_capacity_bytes{${l}}`)).to.equal(1000);
    expect(s.get(`cairn_node_used_bytes{${l}}`)).to.equal(250);
  });

  it('adds prom-client process metrics unless told not to', async () => {
    expect(await createNodeMetrics().text()).to.contain('process_cpu_seconds_total');
    expect(await createNodeMetrics({ processMetrics: false }).text()).to.not.contain('process_cpu_seconds_total');
  });
});

describe('label values', () => {
  it('maps NBD commands and errnos to a bounded set', () => {
    expect(nbdCommandLabel('READ')).to.equal('read');
    expect(nbdCommandLabel('BLOCK_STATUS')).to.equal('block_status');
    expect(nbdCommandLabel('command 12345')).to.equal('other');
    expect(nbdOutcomeLabel('OK')).to.equal('ok');
    expect(nbdOutcomeLabel('ENOSPC')).to.equal('enospc');
    expect(nbdOutcomeLabel('ESHUTDOWN')).to.equal('eshutdown');
  });
});
