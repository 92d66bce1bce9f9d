/**
 * Policy rules in etcd (`cairnctl policy add|list|remove|explain`): checked when added, applied
 * when a volume is created (createVolume, through resolveSettings), explained per volume.
 */
import { InvalidArgumentError, checkName, formatProfile, parseSize } from '../core/index.js';
import type { EtcdMeta, PolicyRecord, VolumeRecord } from '../meta/index.js';
import {
  checkSetting,
  parseSelector,
  policySettings,
  resolveSettings,
  type PolicySetting,
  type PolicyValues,
} from './policy_rules.js';

/** Adds rule `name`: its selector parsed and its settings checked first, so a bad rule is never stored. */
export async function addPolicy(
  meta: EtcdMeta,
  rule: {
    readonly name: string;
    readonly selector: string;
    readonly set: Readonly<Record<string, string>>;
    readonly override?: boolean;
  },
): Promise<PolicyRecord> {
  checkName(rule.name, 'policy');
  parseSelector(rule.selector);
  if (Object.keys(rule.set).length === 0)
    throw new InvalidArgumentError(`Policy rule "${rule.name}" sets nothing: give at least one --set KEY=VALUE`);
  for (const [key, value] of Object.entries(rule.set)) checkSetting(key, value);
  const record: PolicyRecord = {
    name: rule.name,
    selector: rule.selector,
    set: { ...rule.set },
    override: rule.override ?? false,
    createdAt: new Date().toISOString(),
  };
  await meta.createPolicy(record);
  return record;
}

/** Parses `--set KEY=VALUE` flags into a rule's settings, each checked. */
export function parseSets(flags: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const flag of flags) {
    const at = flag.indexOf('=');
    if (at <= 0)
      throw new InvalidArgumentError(`Invalid --set "${flag}": use KEY=VALUE (${policySettings.join(', ')})`);
    const key = flag.slice(0, at);
    out[checkSetting(key, flag.slice(at + 1))] = flag.slice(at + 1);
  }
  return out;
}

/** One setting of a volume, as `policy explain` reports it. */
export interface ExplainedSetting {
  readonly setting: PolicySetting;
  /** The volume's value. */
  readonly value: string;
  /** Where it came from when the volume was created (unknown for volumes made before rules). */
  readonly source: string;
  /** What the rules in etcd now would give a new volume with the same labels and request. */
  readonly rulesNow?: { readonly value: string; readonly source: string };
}

/**
 * Each setting of `volume`: its value, where it came from at creation, and, where today's rules
 * would decide otherwise, what they would give (rules apply to new volumes only).
 */
export async function explainPolicy(
  meta: EtcdMeta,
  volume: VolumeRecord,
): Promise<{ labels: Record<string, string>; settings: ExplainedSetting[] }> {
  const values: Record<PolicySetting, string> = {
    profile: formatProfile(volume.profile),
    zones: String(volume.zonesRequired),
    targets: volume.targets,
    durableShards: String(volume.durableShardsMin ?? volume.profile.k + volume.profile.m),
    journalReplicas: String(volume.journalReplicas ?? volume.profile.m + 1),
    extentSize: String(volume.extentBytes),
    encrypted: String(volume.encryption !== undefined),
  };
  const labels = { ...(volume.labels ?? {}) };
  const sources = volume.settingSources ?? {};
  // What the request itself set is only known where the volume recorded it.
  const requested: PolicyValues = {};
  for (const key of policySettings) if (sources[key] === 'request') requested[key] = values[key];
  const now = resolveSettings(await meta.listPolicies(), labels, requested);
  const settings = policySettings.map((setting): ExplainedSetting => {
    const source = sources[setting] ?? 'unknown (the volume predates policy rules)';
    const nowSource = now.sources[setting];
    const raw = now.values[setting];
    const nowValue = raw !== undefined && setting === 'extentSize' ? String(parseSize(raw, 'extentSize')) : raw;
    const differs =
      nowSource !== undefined && nowSource !== 'request' && (nowSource !== source || nowValue !== values[setting]);
    return {
      setting,
      value: values[setting],
      source,
      ...(differs ? { rulesNow: { value: nowValue!, source: nowSource } } : {}),
    };
  });
  return { labels, settings };
}
