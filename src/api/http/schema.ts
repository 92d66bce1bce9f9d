/**
 * JSON Schema (2020-12, as OpenAPI 3.1 uses) for the API's bodies, built from a few helpers so a
 * schema reads like the TypeScript type beside it. The route table (routes.ts) names these; the
 * OpenAPI document (openapi.ts) and the validator at the edge (validate.ts) both come from it.
 *
 * Objects allow properties the schema does not name (a newer server may add fields); `required`
 * lists every field a client may rely on.
 */

export type Schema = { readonly [keyword: string]: unknown };

export const str: Schema = { type: 'string' };
export const int: Schema = { type: 'integer' };
export const num: Schema = { type: 'number' };
export const bool: Schema = { type: 'boolean' };
export const time: Schema = { type: 'string', format: 'date-time' };
export const strMap: Schema = { type: 'object', additionalProperties: { type: 'string' } };

export const oneOf = (...values: readonly string[]): Schema => ({ type: 'string', enum: values });
export const arr = (items: Schema): Schema => ({ type: 'array', items });
export const map = (values: Schema): Schema => ({ type: 'object', additionalProperties: values });
export const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });

/** The schema, or null. */
export function nullable(s: Schema): Schema {
  if (typeof s['type'] !== 'string' || s['$ref'] !== undefined) return { anyOf: [s, { type: 'null' }] };
  // An enum must list null too, or the type's null would still be refused.
  return Array.isArray(s['enum'])
    ? { ...s, type: [s['type'], 'null'], enum: [...(s['enum'] as unknown[]), null] }
    : { ...s, type: [s['type'], 'null'] };
}

/** An object with these required properties and, optionally, these others. */
export function obj(required: Record<string, Schema>, optional: Record<string, Schema> = {}): Schema {
  return {
    type: 'object',
    properties: { ...required, ...optional },
    required: Object.keys(required),
  };
}

/** A request body: like obj(), but a property it does not name is refused (a typo is an error). */
export function input(required: Record<string, Schema>, optional: Record<string, Schema> = {}): Schema {
  return { ...obj(required, optional), additionalProperties: false };
}
