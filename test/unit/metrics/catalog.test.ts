/**
 * The metric catalog keeps Prometheus conventions and docs/metrics.md describes every metric in
 * it, with the right type and labels.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { allMetricSpecs } from '../../../src/metrics/index.js';
import { repoRoot } from '../../harness/cli.js';

describe('metric catalog', () => {
  it('names every metric cairn_<snake_case>, once, with base units last', () => {
    const names = allMetricSpecs.map((s) => s.name);
    expect(new Set(names).size, 'duplicate names').to.equal(names.length);
    for (const spec of allMetricSpecs) {
      expect(spec.name).to.match(/^cairn_[a-z][a-z0-9_]*[a-z0-9]$/);
      if (spec.type === 'counter') expect(spec.name, 'counters end in _total').to.match(/_total$/);
      else expect(spec.name, 'only counters end in _total').to.not.match(/_total$/);
      if (spec.type === 'histogram') expect(spec.name, 'histograms carry a unit').to.match(/_(seconds|bytes)$/);
      // Units are base units, last: never _ms, _kb, _bytes_total spelled as _total_bytes.
      expect(spec.name).to.not.match(/_(ms|milliseconds|kb|kib|mb|mib)(_|$)|_total_/);
      for (const label of spec.labels) expect(label).to.match(/^[a-z][a-z_]*$/);
      expect(spec.help.length, `${spec.name} help`).to.be.greaterThan(10);
    }
  });

  it('gives histograms ascending buckets and nothing else buckets', () => {
    for (const spec of allMetricSpecs) {
      if (spec.type !== 'histogram') {
        expect(spec.buckets, spec.name).to.equal(undefined);
        continue;
      }
      const buckets = spec.buckets ?? [];
      expect(buckets.length, spec.name).to.be.greaterThan(5);
      for (let i = 1; i < buckets.length; i++) expect(buckets[i]!).to.be.greaterThan(buckets[i - 1]!);
    }
  });

  it('is described row by row in docs/metrics.md: name, type and every label', () => {
    const doc = readFileSync(resolve(repoRoot, 'docs/metrics.md'), 'utf8');
    const rows = new Map<string, string>();
    for (const line of doc.split('\n')) {
      const m = /^\|\s*`(cairn_[a-z0-9_]+)`\s*\|(.*)$/.exec(line);
      if (m !== null) rows.set(m[1]!, m[2]!);
    }
    for (const spec of allMetricSpecs) {
      const row = rows.get(spec.name);
      expect(row, `docs/metrics.md has no table row for ${spec.name}`).to.not.equal(undefined);
      const cells = row!.split('|').map((c) => c.trim());
      expect(cells[0], `${spec.name} type`).to.equal(spec.type);
      const labels = cells[1] === '-' ? [] : (cells[1] ?? '').split(',').map((l) => l.trim().replace(/`/g, ''));
      expect(labels, `${spec.name} labels`).to.deep.equal([...spec.labels]);
    }
    const documented = [...rows.keys()].filter((n) => !allMetricSpecs.some((s) => s.name === n));
    expect(documented, 'documented metrics missing from the catalog').to.deep.equal([]);
  });
});
