/**
 * The parts of the API's JSON the dashboard reads (the OpenAPI components of src/api/http), and
 * the one function that asks the API for them. Where src/api has the type it answers with, that
 * type is used; else only the fields a page shows are listed (the API may send more). The dashboard calls the API in-process as the signed-in principal (ctx.api), so a
 * page shows exactly what that principal may read and every change it asks is audited there.
 */
import type { ClusterHealth, NodeStatus, SnapshotRow, VolumeHealth, VolumeInfo } from '../api/index.js';
import type { WebContext } from './contract.js';

export type { ClusterHealth, SnapshotRow, VolumeHealth, VolumeInfo };

/** A node as GET /nodes lists it (draining comes from /zones). */
export type NodeRow = NodeStatus;

export interface TargetRow {
  readonly name: string;
  readonly kind: 'node' | 's3';
  readonly zone: string;
  readonly up: boolean;
  readonly draining: boolean;
  readonly address?: string;
  readonly endpoint?: string;
  readonly bucket?: string;
  readonly capacityBytes?: number;
}

export interface ZoneRow {
  readonly zone: string;
  readonly capacityBytes: number;
  readonly usedBytes: number;
  readonly nodesUp: number;
  readonly nodesDown: number;
  readonly targets: readonly {
    readonly name: string;
    readonly kind: 'node' | 's3';
    readonly up: boolean;
    readonly draining: boolean;
    readonly capacityBytes: number;
    readonly usedBytes: number | null;
  }[];
}

export interface Placement {
  readonly extents: number;
  readonly writtenExtents: number;
  readonly truncated: boolean;
  readonly mapError: string | null;
  readonly profile: { readonly k: number; readonly m: number };
  readonly placement: readonly {
    readonly extent: number;
    readonly generation: number;
    readonly shards: readonly {
      readonly index: number;
      readonly target: string;
      readonly zone: string | null;
      readonly state: 'ok' | 'missing' | 'wrong-zone';
    }[];
  }[];
}

export interface PolicyRow {
  readonly name: string;
  readonly selector: string;
  readonly set: Readonly<Record<string, string>>;
  readonly override: boolean;
  readonly createdAt: string;
}

export interface Job {
  readonly id: string;
  readonly kind: 'drain' | 'repair';
  readonly target: string | null;
  readonly state: 'running' | 'done' | 'failed';
  readonly startedAt: string;
  readonly endedAt?: string;
  readonly by: string;
  readonly error?: string;
}

export interface RepairStatus {
  readonly repair: {
    readonly backlogExtents: number;
    readonly degradedVolumes: number;
    readonly atRiskBytes: number;
    readonly ratePerSecond: number | null;
    readonly etaSeconds: number | null;
    readonly leader: string | null;
  };
  readonly gc: { readonly volumes: number; readonly snapshots: number; readonly trash: number };
  readonly jobs: readonly Job[];
}

export interface IoStats {
  readonly intervalMs: number;
  readonly windowMs: number;
  readonly sampledAt: string | null;
  readonly frontends: number;
  readonly totals: {
    readonly readOps: number;
    readonly writeOps: number;
    readonly readBytes: number;
    readonly writeBytes: number;
  };
  readonly series: readonly {
    readonly at: string;
    readonly readIops: number;
    readonly writeIops: number;
    readonly readBytesPerSecond: number;
    readonly writeBytesPerSecond: number;
  }[];
}

export interface EventRow {
  readonly type: string;
  readonly at: string;
  readonly [field: string]: unknown;
}

/** A refusal or failure the API answered, with its own code and message. */
export class ApiAnswerError extends Error {
  override readonly name = 'ApiAnswerError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The API's error body, or a generic one when the body is not of that shape. */
export function answerError(status: number, body: unknown): ApiAnswerError {
  const e = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  const code = typeof e?.code === 'string' ? e.code : `HTTP${status}`;
  const message = typeof e?.message === 'string' ? e.message : `the API answered ${status}`;
  return new ApiAnswerError(status, code, message);
}

/** Calls the API as the page's principal; resolves with the body of a 2xx answer, else throws ApiAnswerError. */
export async function call<T>(ctx: WebContext, method: string, path: string, body?: unknown): Promise<T> {
  const answer = await ctx.api.request(method, `/api/v1${path}`, body);
  if (answer.status < 200 || answer.status > 299) throw answerError(answer.status, answer.body);
  return answer.body as T;
}

/**
 * A list from an answer that is either the list itself or an object holding it under `key`
 * (`{"volumes": [...]}`); an answer of neither shape gives an empty list.
 */
export function listIn<T>(body: unknown, key: string): T[] {
  if (Array.isArray(body)) return body as T[];
  const inner = (body as Record<string, unknown> | null)?.[key];
  return Array.isArray(inner) ? (inner as T[]) : [];
}
