#!/usr/bin/env node
/**
 * cairnctl entry point: wires the real codec, secrets from the environment, stdout/stderr and
 * background processes into the CLI, then exits with its code. The only place, with cairnd's
 * entry, where real adapters meet.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { environmentSecrets } from '../api/index.js';
import { runCli, processIo, type CliContext } from '../cli/index.js';
import { referenceCodec } from '../codec/index.js';

function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the Cairn installation directory (no package.json above cairnctl)');
    dir = up;
  }
  return dir;
}

const ctx: CliContext = {
  io: processIo,
  codec: referenceCodec,
  secrets: environmentSecrets(),
  repoRoot: findRepoRoot(),
  exitCode: 0,
  startBackgroundGc(argv) {
    const args = [fileURLToPath(import.meta.url), 'gc', '--etcd-timeout', String(argv['etcd-timeout'])];
    if (typeof argv['etcd'] === 'string') args.push('--etcd', argv['etcd']);
    try {
      const child = spawn(process.execPath, args, { detached: true, stdio: 'ignore', env: process.env });
      child.unref();
      return child.pid ?? null;
    } catch {
      return null;
    }
  },
};
process.exitCode = await runCli(process.argv.slice(2), ctx);
