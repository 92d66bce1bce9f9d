/**
 * The policy engine's pure part: label selectors (Kubernetes' syntax), and how rules, explicit
 * settings and the cluster's defaults combine into a new volume's settings, with the source of
 * each value (what `cairnctl policy explain` prints).
 *
 * Precedence, lowest first (a later source replaces an earlier one's value):
 *   1. the cluster's defaults (`cairnctl init`);
 *   2. rules whose selector matches the volume's labels, applied from the least specific to the
 *      most, so the most specific wins: a rule with more selector terms beats one with fewer;
 *      between equals, the later name (in alphabetical order) wins;
 *   3. what the request says itself (a `cairnctl volume create` flag, a StorageClass parameter);
 *   4. override rules (`--override`) that match, ordered as in 2: what an operator enforces
 *      (say, 8+3 for everything labelled tier=prod) whatever the request says.
 * Rules apply when a volume is created; changing a rule changes no existing volume.
 */
import { InvalidArgumentError, parseSize } from '../core/index.js';

/** The settings a rule or a request may set, by their names in rules and StorageClasses. */
export const policySettings = [
  'profile',
  'zones',
  'targets',
  'durableShards',
  'journalReplicas',
  'extentSize',
  'encrypted',
] as const;
export type PolicySetting = (typeof policySettings)[number];
export type PolicyValues = Partial<Record<PolicySetting, string>>;

/** One term of a selector. */
export type SelectorTerm =
  | { readonly op: 'eq' | 'ne'; readonly key: string; readonly value: string }
  | { readonly op: 'in' | 'notin'; readonly key: string; readonly values: readonly string[] }
  | { readonly op: 'exists' | 'absent'; readonly key: string };

const keyPattern = /^([a-z0-9A-Z]([a-z0-9A-Z._-]{0,251}[a-z0-9A-Z])?\/)?[a-z0-9A-Z]([a-z0-9A-Z._-]{0,61}[a-z0-9A-Z])?$/;
const valuePattern = /^([a-z0-9A-Z]([a-z0-9A-Z._-]{0,61}[a-z0-9A-Z])?)?$/;

function checkKey(key: string, selector: string): string {
  if (!keyPattern.test(key))
    throw new InvalidArgumentError(
      `Invalid selector "${selector}": "${key}" is not a label key (letters, digits, '-', '_', '.', an optional prefix/ )`,
    );
  return key;
}

function checkValue(value: string, selector: string): string {
  if (!valuePattern.test(value))
    throw new InvalidArgumentError(
      `Invalid selector "${selector}": "${value}" is not a label value (up to 63 letters, digits, '-', '_', '.')`,
    );
  return value;
}

/**
 * Parses a label selector: terms separated by commas, each `key=value` (or `==`), `key!=value`,
 * `key in (a,b)`, `key notin (a,b)`, `key` (present) or `!key` (absent); all must hold. The
 * empty selector matches every volume. Refuses anything else, saying what and where.
 */
export function parseSelector(text: string): SelectorTerm[] {
  const terms: SelectorTerm[] = [];
  // Split on commas outside parentheses.
  const parts: string[] = [];
  let depth = 0;
  let current = '';
  for (const ch of text) {
    if (ch === '(') depth += 1;
    if (ch === ')') depth -= 1;
    if (depth < 0 || depth > 1) throw new InvalidArgumentError(`Invalid selector "${text}": unbalanced parentheses`);
    if (ch === ',' && depth === 0) {
      parts.push(current);
      current = '';
    } else current += ch;
  }
  if (depth !== 0) throw new InvalidArgumentError(`Invalid selector "${text}": unbalanced parentheses`);
  parts.push(current);
  if (parts.length === 1 && parts[0]!.trim() === '') return [];
  for (const raw of parts) {
    const part = raw.trim();
    if (part === '') throw new InvalidArgumentError(`Invalid selector "${text}": an empty term (two commas in a row?)`);
    let m: RegExpExecArray | null;
    if ((m = /^(\S+?)\s+(in|notin)\s*\(([^()]*)\)$/.exec(part)) !== null) {
      const values = m[3]!.split(',').map((v) => checkValue(v.trim(), text));
      if (values.length === 0 || values.some((v) => v === ''))
        throw new InvalidArgumentError(`Invalid selector "${text}": "${part}" needs a list of values`);
      terms.push({ op: m[2] as 'in' | 'notin', key: checkKey(m[1]!, text), values });
    } else if ((m = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(part)) !== null) {
      terms.push({ op: m[2] === '!=' ? 'ne' : 'eq', key: checkKey(m[1]!, text), value: checkValue(m[3]!, text) });
    } else if ((m = /^!\s*(\S+)$/.exec(part)) !== null) {
      terms.push({ op: 'absent', key: checkKey(m[1]!, text) });
    } else if (/^\S+$/.test(part)) {
      terms.push({ op: 'exists', key: checkKey(part, text) });
    } else {
      throw new InvalidArgumentError(
        `Invalid selector "${text}": cannot read "${part}" (use key=value, key!=value, key in (a,b), key notin (a,b), key or !key)`,
      );
    }
  }
  return terms;
}

/** Whether `labels` satisfy every term. */
export function matches(terms: readonly SelectorTerm[], labels: Readonly<Record<string, string>>): boolean {
  return terms.every((t) => {
    const has = Object.hasOwn(labels, t.key);
    const v = labels[t.key];
    switch (t.op) {
      case 'eq':
        return has && v === t.value;
      case 'ne':
        return !has || v !== t.value;
      case 'in':
        return has && t.values.includes(v!);
      case 'notin':
        return !has || !t.values.includes(v!);
      case 'exists':
        return has;
      case 'absent':
        return !has;
    }
  });
}

/** Parses `k=v,k2=v2` (volume labels); keys and values as a selector's. */
export function parseLabels(text: string, what = 'labels'): Record<string, string> {
  const out: Record<string, string> = {};
  if (text.trim() === '') return out;
  for (const part of text.split(',')) {
    const m = /^\s*([^=\s]+)\s*=\s*(\S*)\s*$/.exec(part);
    if (m === null) throw new InvalidArgumentError(`Invalid ${what} "${text}": "${part}" is not key=value`);
    out[checkKey(m[1]!, text)] = checkValue(m[2]!, text);
  }
  return out;
}

/** Checks one setting's value, as a rule or request gives it; throws naming it. */
export function checkSetting(key: string, value: string): PolicySetting {
  if (!(policySettings as readonly string[]).includes(key))
    throw new InvalidArgumentError(`Unknown setting "${key}": use ${policySettings.join(', ')}`);
  const bad = (why: string): InvalidArgumentError => new InvalidArgumentError(`Invalid ${key} "${value}": ${why}`);
  switch (key as PolicySetting) {
    case 'profile':
      if (!/^\d+\+\d+$/.test(value)) throw bad('use K+M, such as 4+2');
      break;
    case 'zones':
    case 'durableShards':
    case 'journalReplicas':
      if (!/^\d+$/.test(value)) throw bad('use a whole number');
      break;
    case 'targets':
      if (!['node', 's3', 'any'].includes(value)) throw bad('use node, s3 or any');
      break;
    case 'extentSize':
      parseSize(value, 'extentSize');
      break;
    case 'encrypted':
      if (value !== 'true' && value !== 'false') throw bad('use true or false');
      break;
  }
  return key as PolicySetting;
}

/** A rule as the resolution sees it. */
export interface PolicyRule {
  readonly name: string;
  readonly selector: string;
  readonly set: PolicyValues;
  readonly override: boolean;
}

/** Where a setting's value came from. */
export type SettingSource = 'cluster default' | 'request' | `rule ${string}` | `override rule ${string}`;

export interface ResolvedSettings {
  /** Each setting the rules or the request set, with its source (the cluster's default otherwise). */
  readonly values: PolicyValues;
  readonly sources: Partial<Record<PolicySetting, SettingSource>>;
  /** Rules that matched, in the order they were applied. */
  readonly matched: readonly string[];
}

/** Applies the rules matching `labels` and the request's own values, in the order above. */
export function resolveSettings(
  rules: readonly PolicyRule[],
  labels: Readonly<Record<string, string>>,
  requested: PolicyValues,
): ResolvedSettings {
  const values: PolicyValues = {};
  const sources: Partial<Record<PolicySetting, SettingSource>> = {};
  const matched: string[] = [];
  const specificity = (r: PolicyRule): number => parseSelector(r.selector).length;
  const ordered = (override: boolean): PolicyRule[] =>
    rules
      .filter((r) => r.override === override && matches(parseSelector(r.selector), labels))
      .sort((a, b) => specificity(a) - specificity(b) || a.name.localeCompare(b.name));
  const apply = (set: PolicyValues, source: SettingSource): void => {
    for (const key of policySettings)
      if (set[key] !== undefined) {
        values[key] = set[key];
        sources[key] = source;
      }
  };
  for (const r of ordered(false)) {
    apply(r.set, `rule ${r.name}`);
    matched.push(r.name);
  }
  apply(requested, 'request');
  for (const r of ordered(true)) {
    apply(r.set, `override rule ${r.name}`);
    matched.push(r.name);
  }
  return { values, sources, matched };
}
