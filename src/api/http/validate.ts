/**
 * Request bodies checked at the edge against the schemas of the OpenAPI document, with Ajv (JSON
 * Schema 2020-12, docs/dependencies.md says why): the document is added whole, and each route's
 * body schema is compiled once from its place in it, so `$ref`s to components resolve as any
 * OpenAPI tool resolves them.
 */
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';

const documentId = 'cairn-openapi';

/** A JSON pointer into the document, escaped for a URI fragment. */
export function pointer(...segments: readonly string[]): string {
  return segments.map((s) => encodeURIComponent(s.replace(/~/g, '~0').replace(/\//g, '~1'))).join('/');
}

/** An Ajv holding `document`; `schemaAt(pointer)` compiles the schema at that place in it. */
export class DocumentValidator {
  private readonly ajv: Ajv2020;
  private readonly compiled = new Map<string, ValidateFunction>();

  constructor(document: unknown) {
    // strict: false because the document's other keys (paths, info) are not JSON Schema keywords.
    this.ajv = new Ajv2020({ strict: false, allErrors: false, validateFormats: true });
    this.ajv.addFormat(
      'date-time',
      (s: string) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/.test(s) && !Number.isNaN(Date.parse(s)),
    );
    this.ajv.addSchema(document as object, documentId);
  }

  /** The validator of the schema at `path` (a pointer() into the document); throws if none is there. */
  schemaAt(path: string): ValidateFunction {
    let v = this.compiled.get(path);
    if (v === undefined) {
      v = this.ajv.getSchema(`${documentId}#/${path}`);
      if (v === undefined) throw new Error(`no schema at #/${path} of the OpenAPI document`);
      this.compiled.set(path, v);
    }
    return v;
  }
}

/** The first error as a sentence: `body/size: must be integer or string`. */
export function describeErrors(errors: readonly ErrorObject[] | null | undefined, root = 'body'): string {
  const e = errors?.[0];
  if (e === undefined) return `${root} is invalid`;
  const where = `${root}${e.instancePath}`;
  if (e.keyword === 'additionalProperties')
    return `${where}: unknown field "${String((e.params as { additionalProperty?: string }).additionalProperty)}"`;
  if (e.keyword === 'required')
    return `${where}: missing field "${String((e.params as { missingProperty?: string }).missingProperty)}"`;
  return `${where}: ${e.message ?? 'is invalid'}`;
}
