#!/usr/bin/env node
/**
 * cairnctl entry point: wires the real codec and stdout/stderr into the CLI, then exits with its
 * code. The only place, with cairnd's entry, where real adapters meet.
 */
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
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

const ctx: CliContext = { io: processIo, codec: referenceCodec, exitCode: 0, repoRoot: findRepoRoot() };
process.exitCode = await runCli(process.argv.slice(2), ctx);
