/**
 * Numbers as a person reads them on the dashboard: bytes in binary units, rates per second,
 * durations in the largest two units, percentages. Pure; each returns a short string, and "—"
 * for a value the API did not give (null or not a finite number).
 */
import { formatBytes } from '../core/index.js';

/** Shown where the API gave no value. */
export const noValue = '—';

function known(value: number | null | undefined): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/** 1536 -> "1.5 KiB". */
export function bytes(value: number | null | undefined): string {
  return known(value) ? formatBytes(Math.max(0, Math.round(value))) : noValue;
}

/** 1048576 -> "1 MiB/s". */
export function bytesPerSecond(value: number | null | undefined): string {
  return known(value) ? `${formatBytes(Math.max(0, Math.round(value)))}/s` : noValue;
}

/** Counts and rates with at most one decimal below 100: 2.25 -> "2.3", 1234.5 -> "1235". */
export function count(value: number | null | undefined): string {
  if (!known(value)) return noValue;
  return Math.abs(value) >= 100 || Number.isInteger(value) ? String(Math.round(value)) : value.toFixed(1);
}

/** 0.4567 -> "45.7%". */
export function percent(fraction: number | null | undefined): string {
  return known(fraction) ? `${(fraction * 100).toFixed(1).replace(/\.0$/, '')}%` : noValue;
}

/**
 * A duration in its two largest units: 5 -> "5 s", 75 -> "1 min 15 s", 7260 -> "2 h 1 min",
 * 90000 -> "1 d 1 h".
 */
export function duration(seconds: number | null | undefined): string {
  if (!known(seconds)) return noValue;
  const s = Math.max(0, Math.round(seconds));
  const units: readonly [string, number][] = [
    ['d', 86_400],
    ['h', 3_600],
    ['min', 60],
    ['s', 1],
  ];
  const parts: string[] = [];
  let rest = s;
  for (const [name, size] of units) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n > 0 || (parts.length === 0 && size === 1)) parts.push(`${n} ${name}`);
    if (parts.length === 2) break;
    if (parts.length === 1 && n === 0) break;
  }
  return parts.join(' ');
}

/** An ISO time as "HH:MM:SS" in UTC when it is today's, else "YYYY-MM-DD HH:MM". */
export function time(iso: string | null | undefined, now = new Date()): string {
  if (typeof iso !== 'string') return noValue;
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return iso;
  const text = t.toISOString();
  return text.slice(0, 10) === now.toISOString().slice(0, 10)
    ? text.slice(11, 19)
    : `${text.slice(0, 10)} ${text.slice(11, 16)}`;
}
