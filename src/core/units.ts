/**
 * Byte sizes as people write them ("512MiB", "1.5GiB", "4096") and as Cairn prints them.
 * Parsing is strict: a size must be a whole number of bytes and a safe integer, or it is refused
 * with the reason. Decimal units (KB, MB, GB) are powers of 1000, binary (KiB, MiB) of 1024.
 */
import { InvalidArgumentError } from './errors.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;
export const PiB = 1024 * TiB;

const unitBytes: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1000,
  kb: 1000,
  m: 1000 ** 2,
  mb: 1000 ** 2,
  g: 1000 ** 3,
  gb: 1000 ** 3,
  t: 1000 ** 4,
  tb: 1000 ** 4,
  p: 1000 ** 5,
  pb: 1000 ** 5,
  kib: KiB,
  mib: MiB,
  gib: GiB,
  tib: TiB,
  pib: PiB,
};

/**
 * Parses a size such as "1MiB", "20GiB", "4096", "1.5KiB". Throws InvalidArgumentError when the
 * text is not a size or the result is not a whole, safe number of bytes.
 * @example parseSize('1MiB') === 1048576
 */
export function parseSize(text: string, what = 'size'): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!match)
    throw new InvalidArgumentError(
      `Invalid ${what} "${text}": expected a number with an optional unit such as 512MiB or 20GiB`,
    );
  const multiplier = unitBytes[(match[2] ?? '').toLowerCase()];
  if (multiplier === undefined) {
    throw new InvalidArgumentError(
      `Invalid ${what} "${text}": unknown unit "${match[2]}" (use B, KiB, MiB, GiB, TiB, PiB, KB, MB, GB, TB, PB)`,
    );
  }
  const bytes = Number(match[1]) * multiplier;
  if (!Number.isSafeInteger(bytes)) {
    throw new InvalidArgumentError(`Invalid ${what} "${text}": not a whole number of bytes below 2^53`);
  }
  return bytes;
}

/** Formats bytes with a binary unit and up to one decimal: 1536 -> "1.5 KiB". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const text = unit === 0 ? String(value) : value.toFixed(value >= 100 ? 0 : 1).replace(/\.0$/, '');
  return `${text} ${units[unit]}`;
}
