/** `cairnctl kms serve`: a key service with the Vault transit interface (src/crypt/transit_server.ts). */
import type { Argv } from 'yargs';
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, errorMessage } from '../core/index.js';
import { createTransitKey, startTransitServer } from '../crypt/index.js';
import { parseHostPort } from '../shard/index.js';
import { stringArg } from './common.js';
import { type CliContext, withErrors } from './context.js';

export function kmsCommand(ctx: CliContext) {
  return {
    command: 'kms <action>',
    describe: 'A key service for encrypted volumes (the Vault transit interface), for clusters without a Vault',
    builder: (y: Argv) =>
      y
        .command({
          command: 'serve',
          describe:
            'Serve keys from DIR over HTTP: volume create --kms URL --kms-key NAME wraps data keys with them; the keys never leave this process',
          builder: (a: Argv) =>
            a
              .option('listen', { type: 'string', default: '127.0.0.1:8200', describe: 'HOST:PORT to listen on' })
              .option('dir', { type: 'string', demandOption: true, describe: 'where the keys are kept (0700)' })
              .option('token-file', {
                type: 'string',
                demandOption: true,
                describe: 'the token clients send (X-Vault-Token; they read it from CAIRN_KMS_TOKEN_FILE)',
              })
              .option('key', { type: 'string', describe: 'a key to create at start if missing (repeatable)' })
              .example('$0 kms serve --dir /var/lib/cairn-kms --token-file ./kms.token --key cairn', ''),
          handler: withErrors(ctx, async (argv) => {
            const { host, port } = parseHostPort(stringArg(argv, 'listen'), '--listen');
            let token: string;
            try {
              token = readFileSync(stringArg(argv, 'token-file'), 'utf8').trim();
            } catch (err) {
              throw new InvalidArgumentError(`Cannot read --token-file: ${errorMessage(err)}`);
            }
            if (token.length < 16) throw new InvalidArgumentError('The token must be at least 16 characters');
            const dir = stringArg(argv, 'dir');
            const keys = argv['key'] === undefined ? [] : ([] as unknown[]).concat(argv['key']).map(String);
            for (const k of keys) createTransitKey(dir, k);
            const server = await startTransitServer({ dir, token, host, port, log: (l) => ctx.io.out(l) });
            ctx.io.out(`cairnctl kms serving the transit interface at ${server.url} (keys in ${dir})`);
            await new Promise<void>((resolve) => {
              const stop = (): void => resolve();
              process.once('SIGTERM', stop);
              process.once('SIGINT', stop);
            });
            await server.close();
          }),
        })
        .demandCommand(1, 'Name an action: serve'),
    handler: () => undefined,
  };
}
