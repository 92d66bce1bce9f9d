/**
 * `cairnctl policy add|list|remove|explain`: cluster-wide rules that fill in or override a new
 * volume's settings by its labels (see src/api/policy_rules.ts for the order of precedence).
 */
import type { Argv } from 'yargs';
import { volumeName } from '../core/index.js';
import { addPolicy, explainPolicy, parseSets } from '../api/index.js';
import { clusterOptions, isJson, stringArg, table, withMeta } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

export function policyCommand(ctx: CliContext) {
  return {
    command: 'policy <action>',
    describe: "Rules that set new volumes' profile, zones, targets and more by their labels",
    builder: (y: Argv) =>
      y
        .command({
          command: 'add <name>',
          describe:
            'Add a rule: volumes created with labels matching --selector get its --set values (rules apply to new volumes only)',
          builder: (a: Argv) =>
            clusterOptions(a)
              .positional('name', { type: 'string', describe: 'rule name: lowercase letters, digits, -' })
              .option('selector', {
                type: 'string',
                describe:
                  "label selector, Kubernetes' syntax: 'app=postgres,tier in (prod,staging),!scratch' (empty: every volume)",
              })
              .option('set', {
                type: 'string',
                array: true,
                demandOption: true,
                describe: 'KEY=VALUE, repeatable: profile, zones, targets, durableShards, journalReplicas, extentSize',
              })
              .option('override', {
                type: 'boolean',
                default: false,
                describe:
                  'win over what a request sets itself (a flag, a StorageClass parameter), not only over defaults',
              })
              .example(
                "$0 policy add prod-db --selector 'app=postgres,tier in (prod)' --set profile=8+3 --set zones=3",
                '',
              ),
          handler: withErrors(ctx, async (argv) => {
            const rule = await withMeta(argv, (meta) =>
              addPolicy(meta, {
                name: stringArg(argv, 'name'),
                selector: String(argv['selector'] ?? ''),
                set: parseSets((argv['set'] as string[] | undefined) ?? []),
                override: argv['override'] === true,
              }),
            );
            emit(ctx.io, isJson(argv), rule, (r) => [
              `Added ${r.override ? 'override ' : ''}rule ${r.name}: volumes matching "${r.selector || '(every volume)'}" get ${Object.entries(
                r.set,
              )
                .map(([k, v]) => `${k}=${v}`)
                .join(', ')} (new volumes only)`,
            ]);
          }),
        })
        .command({
          command: 'list',
          describe: 'List the rules, in name order',
          builder: (a: Argv) => clusterOptions(a),
          handler: withErrors(ctx, async (argv) => {
            const rules = await withMeta(argv, (meta) => meta.listPolicies());
            emit(ctx.io, isJson(argv), rules, (rs) =>
              rs.length === 0
                ? ['No policy rules.']
                : table(
                    ['NAME', 'SELECTOR', 'SETS', 'OVERRIDE'],
                    rs.map((r) => [
                      r.name,
                      r.selector || '(every volume)',
                      Object.entries(r.set)
                        .map(([k, v]) => `${k}=${v}`)
                        .join(','),
                      r.override ? 'yes' : 'no',
                    ]),
                  ),
            );
          }),
        })
        .command({
          command: 'remove <name>',
          describe: 'Remove a rule (volumes it set keep their settings)',
          builder: (a: Argv) => clusterOptions(a).positional('name', { type: 'string' }),
          handler: withErrors(ctx, async (argv) => {
            const name = stringArg(argv, 'name');
            await withMeta(argv, (meta) => meta.deletePolicy(name));
            emit(ctx.io, isJson(argv), { removed: name }, () => [`Removed rule ${name}`]);
          }),
        })
        .command({
          command: 'explain <volume>',
          describe: "Say where each of a volume's settings came from: a rule, the request, or the cluster default",
          builder: (a: Argv) => clusterOptions(a).positional('volume', { type: 'string' }),
          handler: withErrors(ctx, async (argv) => {
            const out = await withMeta(argv, async (meta) =>
              explainPolicy(meta, await meta.requireVolume(volumeName(stringArg(argv, 'volume')))),
            );
            emit(ctx.io, isJson(argv), out, (e) => [
              `labels: ${
                Object.entries(e.labels)
                  .map(([k, v]) => `${k}=${v}`)
                  .join(', ') || '(none)'
              }`,
              ...table(
                ['SETTING', 'VALUE', 'SET BY', 'TODAY'],
                e.settings.map((s) => [
                  s.setting,
                  s.value,
                  s.source,
                  s.rulesNow === undefined
                    ? ''
                    : `${s.rulesNow.source} would give ${s.rulesNow.value} (new volumes only)`,
                ]),
              ),
            ]);
          }),
        })
        .demandCommand(1, 'Name an action: add, list, remove or explain'),
    handler: () => undefined,
  };
}
