/** IoRing: rates from successive readings of the frontends' cumulative counters. */
import { expect } from 'chai';
import { IoRing, ioSamplesMax, type FrontendStatsRecord } from '../../../../src/api/index.js';

const rec = (owner: string, writeOps: number, writeBytes: number, readOps = 0): FrontendStatsRecord => ({
  owner,
  at: '2026-01-01T00:00:00.000Z',
  readOps,
  writeOps,
  readBytes: readOps * 4096,
  writeBytes,
});

describe('IoRing', () => {
  it('gives no rate from one reading, then the growth over the seconds between readings', () => {
    const ring = new IoRing();
    ring.sample([rec('fe1', 1000, 4_096_000)], 0);
    expect(ring.report().series).to.deep.equal([]);
    // 600 more writes in 10 s -> 60 IOPS; 2_457_600 bytes -> 245_760 B/s.
    ring.sample([rec('fe1', 1600, 6_553_600)], 10_000);
    const [point] = ring.report().series;
    expect(point).to.include({ writeIops: 60, writeBytesPerSecond: 245_760, readIops: 0 });
    expect(ring.report().totals.writeOps).to.equal(1600);
    expect(ring.report().frontends).to.equal(1);
  });

  it('counts a restarted frontend from zero and a new one from its first reading, never negative', () => {
    const ring = new IoRing();
    ring.sample([rec('fe1', 5000, 0)], 0);
    // fe1 restarted (counters fell to 100), fe2 appeared with 50: 150 writes in 10 s.
    ring.sample([rec('fe1', 100, 0), rec('fe2', 50, 0)], 10_000);
    expect(ring.report().series[0]?.writeIops).to.equal(15);
    // fe2 went away: only fe1's growth counts.
    ring.sample([rec('fe1', 200, 0)], 20_000);
    expect(ring.report().series[1]?.writeIops).to.equal(10);
  });

  it('keeps one hour of samples at most', () => {
    const ring = new IoRing();
    for (let i = 0; i <= ioSamplesMax + 5; i++) ring.sample([rec('fe1', i, 0)], i * 10_000);
    expect(ring.report().series).to.have.length(ioSamplesMax);
  });

  it('rates each volume when the frontend reports per volume', () => {
    const ring = new IoRing();
    const v = (ops: number) => ({ readOps: ops, writeOps: 0, readBytes: 0, writeBytes: 0 });
    ring.sample([{ ...rec('fe1', 0, 0), volumes: { a: v(10), b: v(0) } }], 0);
    ring.sample([{ ...rec('fe1', 0, 0), volumes: { a: v(30), b: v(5) } }], 5_000);
    expect(ring.report().volumes).to.deep.equal([
      { volume: 'a', readIops: 4, writeIops: 0, readBytesPerSecond: 0, writeBytesPerSecond: 0 },
      { volume: 'b', readIops: 1, writeIops: 0, readBytesPerSecond: 0, writeBytesPerSecond: 0 },
    ]);
  });
});
