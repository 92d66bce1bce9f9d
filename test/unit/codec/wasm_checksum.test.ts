/**
 * The committed wasm kernel is what its source builds to: `node wasm/build.mjs --check`
 * rebuilds both modules in a temporary directory and fails when a byte differs from the
 * committed .wasm files or from wasm/SHA256SUMS. Runs the real compiler, so it takes seconds.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The directory holding package.json and wasm/, above this file (in src or in dist). */
function repoDirectory(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!(existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'wasm', 'build.mjs')))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('no repository root above the test file');
    dir = parent;
  }
  return dir;
}

describe('wasm kernel checksums', function () {
  this.timeout(120_000);
  const repo = repoDirectory();

  it('lists each committed module in wasm/SHA256SUMS with its sha256', () => {
    const sums = readFileSync(join(repo, 'wasm', 'SHA256SUMS'), 'utf8');
    for (const file of ['cairn_rs_simd.wasm', 'cairn_rs_relaxed.wasm']) {
      const sha256 = createHash('sha256')
        .update(readFileSync(join(repo, 'wasm', file)))
        .digest('hex');
      expect(sums.split('\n'), file).to.include(`${sha256}  ${file}`);
    }
  });

  it('rebuilds byte for byte: node wasm/build.mjs --check exits 0', async () => {
    const result = await new Promise<{ code: number | null; output: string }>((resolve) => {
      execFile(
        process.execPath,
        [join(repo, 'wasm', 'build.mjs'), '--check'],
        { cwd: repo, timeout: 100_000, encoding: 'utf8' },
        (err, stdout, stderr) => {
          const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
          resolve({ code, output: `${stdout}${stderr}${err?.killed === true ? '\n(killed: timed out)' : ''}` });
        },
      );
    });
    expect(result.code, result.output).to.equal(0);
    expect(result.output).to.contain('wasm check passed');
  });
});
