/**
 * The layering of src/, checked on every run instead of by review (docs/architecture.md).
 *
 * Every relative import between two folders of src/ must be an allowed arrow, and must go through
 * the other folder's index.ts. The rules are data: `allowed` says which folders each folder may
 * import. A forbidden arrow fails with the file and the import that broke it.
 */
import { expect } from 'chai';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

const srcRoot = resolve('src');

/**
 * Which layers each layer may import (besides itself). Imports point one way:
 * bin -> cli -> services (api, frontend, repair, bench, dev, csi, web) -> nbd, cache, volume, journal ->
 * extent, placement, codec -> core. Adapters (meta, shard, node) are wired only by the service
 * folders and bin; metrics is a leaf service library any process may use.
 */
export const allowed: Readonly<Record<string, readonly string[]>> = {
  core: [],
  codec: ['core'],
  crypt: ['core'],
  extent: ['core'],
  placement: ['core'],
  journal: ['core', 'extent'],
  volume: ['core', 'codec', 'extent'],
  cache: ['core', 'extent', 'volume'],
  nbd: ['core'],
  metrics: ['core'],
  meta: ['core', 'crypt'],
  shard: ['core', 'extent', 'journal'],
  node: ['core', 'extent', 'journal', 'meta', 'metrics', 'shard'],
  api: ['core', 'codec', 'crypt', 'extent', 'placement', 'meta', 'shard'],
  repair: ['core', 'codec', 'extent', 'placement', 'volume', 'meta', 'shard', 'api'],
  frontend: [
    'core',
    'codec',
    'crypt',
    'extent',
    'placement',
    'volume',
    'cache',
    'journal',
    'nbd',
    'meta',
    'shard',
    'metrics',
    'api',
  ],
  bench: ['core', 'codec'],
  dev: ['core', 'meta', 'api'],
  csi: ['core', 'codec', 'crypt', 'meta', 'api', 'frontend'],
  // The dashboard renders what the API answers (in-process, as the signed-in principal).
  web: ['core', 'api'],
  sim: ['core', 'codec', 'extent', 'placement', 'volume', 'cache', 'journal', 'shard'],
  cli: [
    'core',
    'codec',
    'crypt',
    'extent',
    'placement',
    'volume',
    'cache',
    'meta',
    'shard',
    'metrics',
    'nbd',
    'api',
    'frontend',
    'repair',
    'bench',
    'dev',
    'csi',
    'web',
  ],
  bin: ['core', 'codec', 'cli', 'node', 'api'],
};

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...walk(path));
    else if (name.endsWith('.ts')) out.push(path);
  }
  return out;
}

/** Relative module specifiers in `text`: static imports, re-exports and dynamic imports. */
export function importsOf(text: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.[^'"]+)['"]/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) out.push(m[1]!);
  return out;
}

/** Every forbidden arrow in src/, as `file: import` lines. */
export function violations(root: string, rules: Readonly<Record<string, readonly string[]>>): string[] {
  const problems: string[] = [];
  for (const file of walk(root)) {
    const layer = relative(root, file).split(sep)[0]!;
    if (!(layer in rules)) {
      problems.push(`${relative(root, file)}: folder "${layer}" has no layering rule`);
      continue;
    }
    for (const spec of importsOf(readFileSync(file, 'utf8'))) {
      const target = resolve(dirname(file), spec);
      const rel = relative(root, target);
      if (rel.startsWith('..')) {
        problems.push(`${relative(root, file)}: imports ${spec}, outside src/`);
        continue;
      }
      const other = rel.split(sep)[0]!;
      if (other === layer) continue;
      if (!(rules[layer] ?? []).includes(other))
        problems.push(`${relative(root, file)}: ${layer} -> ${other} (${spec})`);
      else if (rel !== join(other, 'index.js'))
        problems.push(`${relative(root, file)}: imports ${spec}, not ${other}/index.js`);
    }
  }
  return problems;
}

describe('the layering of src/', () => {
  it('has no forbidden import arrow and imports other layers only through index.ts', () => {
    expect(violations(srcRoot, allowed)).to.deep.equal([]);
  });

  it('names the arrows the design forbids', () => {
    const forbidden: [string, string][] = [
      ['volume', 'meta'],
      ['volume', 'shard'],
      ['cache', 'nbd'],
      ['metrics', 'nbd'],
      ['sim', 'node'],
      ['sim', 'meta'],
      ['api', 'frontend'],
      ['api', 'repair'],
    ];
    for (const [from, to] of forbidden) expect(allowed[from], `${from} -> ${to}`).to.not.include(to);
    for (const layer of Object.keys(allowed)) if (layer !== 'core') expect(allowed['core']).to.not.include(layer);
  });

  it('finds a forbidden arrow when one is added', () => {
    // The checker itself must be able to fail: run it over a copy of the rules in which volume
    // may not import extent (today it does), and expect the violations to name those files.
    const strict = { ...allowed, volume: (allowed['volume'] ?? []).filter((l) => l !== 'extent') };
    const found = violations(srcRoot, strict);
    expect(found.some((v) => v.startsWith(`volume${sep}engine.ts: volume -> extent`))).to.equal(true);
  });

  it('reads every kind of relative import', () => {
    expect(
      importsOf(
        `import a from './a.js';\nimport type { B } from "../b/index.js";\nexport * from './c.js';\nawait import('../d/index.js');\nimport './e.js';`,
      ),
    ).to.deep.equal(['./a.js', '../b/index.js', './c.js', '../d/index.js', './e.js']);
  });

  it('keeps src/ free of imports from test/', () => {
    const offenders = walk(srcRoot).filter((f) =>
      importsOf(readFileSync(f, 'utf8')).some((s) => resolve(dirname(f), s).startsWith(resolve('test'))),
    );
    expect(offenders).to.deep.equal([]);
  });
});
