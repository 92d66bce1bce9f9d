/**
 * `cairnctl token create|list|revoke`: the bearer tokens of the HTTP API (docs/api.md). A token is
 * printed once, alone on the last line of `create` (so `| tail -1` captures it); etcd keeps only
 * its hash.
 */
import type { Argv } from 'yargs';
import { TokenStore, checkRole, checkTokenName } from '../api/index.js';
import { clusterOptions, isJson, stringArg, table, withMeta } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

export function tokenCommand(ctx: CliContext) {
  return {
    command: 'token <action>',
    describe: 'Create, list and revoke bearer tokens of the HTTP API',
    builder: (y: Argv) =>
      y
        .command({
          command: 'create',
          describe: 'Create a token; it is printed once, alone on the last line',
          builder: (a: Argv) =>
            clusterOptions(a)
              .option('role', {
                type: 'string',
                choices: ['admin', 'viewer'],
                demandOption: true,
                describe: 'admin: every route; viewer: GET only',
              })
              .option('name', { type: 'string', describe: 'who or what holds it, shown in the audit log' })
              .example('$0 token create --role viewer --name grafana | tail -1', ''),
          handler: withErrors(ctx, async (argv) => {
            const role = checkRole(stringArg(argv, 'role'));
            const name = checkTokenName(argv['name'] === undefined ? `${role}-token` : String(argv['name']));
            const made = await withMeta(argv, (meta) => new TokenStore(meta).create(role, name));
            const { hash: _hash, ...record } = made.record;
            void _hash;
            emit(ctx.io, isJson(argv), { ...record, token: made.token }, (t) => [
              `Created ${t.role} token ${t.id} (${t.name}); it is shown only now:`,
              t.token,
            ]);
          }),
        })
        .command({
          command: 'list',
          describe: 'List tokens (ids, names and roles; never the secrets)',
          builder: (a: Argv) => clusterOptions(a),
          handler: withErrors(ctx, async (argv) => {
            const list = await withMeta(argv, (meta) => new TokenStore(meta).list());
            emit(ctx.io, isJson(argv), list, (rows) =>
              rows.length === 0
                ? ['No API tokens.']
                : table(
                    ['ID', 'NAME', 'ROLE', 'CREATED'],
                    rows.map((t) => [t.id, t.name, t.role, t.createdAt]),
                  ),
            );
          }),
        })
        .command({
          command: 'revoke <id>',
          describe: 'Revoke a token: its next request is refused',
          builder: (a: Argv) =>
            clusterOptions(a).positional('id', { type: 'string', describe: 'the token id (token list)' }),
          handler: withErrors(ctx, async (argv) => {
            const gone = await withMeta(argv, (meta) => new TokenStore(meta).revoke(stringArg(argv, 'id')));
            emit(ctx.io, isJson(argv), { revoked: gone.id, name: gone.name, role: gone.role }, (r) => [
              `Revoked token ${r.revoked} (${r.name}, ${r.role})`,
            ]);
          }),
        })
        .demandCommand(1, 'Name an action: create, list or revoke'),
    handler: () => undefined,
  };
}
