/**
 * Repair and scrub of map pages: every page a volume's root reaches keeps its full count of
 * copies on reachable targets, and (scrub) every copy matches the checksum its parent holds.
 * The work per volume is VolumeMaps.repairPages (api/); this sums it over volumes.
 */
import { errorMessage } from '../core/index.js';
import { VolumeMaps } from '../api/index.js';
import type { EtcdMeta } from '../meta/index.js';

export interface MapPagesTotals {
  readonly volumes: number;
  readonly pages: number;
  readonly copiesMissing: number;
  readonly copiesCorrupt: number;
  readonly copiesWritten: number;
  readonly errors: readonly string[];
}

export async function repairMapPages(
  meta: EtcdMeta,
  options: { readonly volume?: string; readonly verify?: boolean; readonly dryRun?: boolean } = {},
): Promise<MapPagesTotals> {
  const volumes = options.volume === undefined ? await meta.listVolumes() : [await meta.requireVolume(options.volume)];
  const maps = VolumeMaps.of(meta);
  let pages = 0;
  let copiesMissing = 0;
  let copiesCorrupt = 0;
  let copiesWritten = 0;
  const errors: string[] = [];
  for (const volume of volumes) {
    try {
      const r = await maps.repairPages(volume, {
        ...(options.verify === undefined ? {} : { verify: options.verify }),
        ...(options.dryRun === undefined ? {} : { dryRun: options.dryRun }),
      });
      pages += r.pages;
      copiesMissing += r.copiesMissing;
      copiesCorrupt += r.copiesCorrupt;
      copiesWritten += r.copiesWritten;
      errors.push(...r.errors.map((e) => `volume ${volume.name}: ${e}`));
    } catch (err) {
      errors.push(`volume ${volume.name}: ${errorMessage(err)}`);
    }
  }
  return { volumes: volumes.length, pages, copiesMissing, copiesCorrupt, copiesWritten, errors };
}
