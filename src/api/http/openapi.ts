/**
 * The OpenAPI 3.1 document, generated from the route table and the named schemas: nothing about a
 * route is written twice. Served at /api/v1/openapi.json; the request validator (validate.ts)
 * and the integration test compile their schemas out of it.
 */
import { components } from './components.js';
import type { Route } from './routes.js';
import { ref, type Schema } from './schema.js';

export const apiPrefix = '/api/v1';
export const sessionCookie = 'cairn_session';

/** Path parameters of a route path: '/volumes/{name}/snapshots/{snapshot}' -> ['name', 'snapshot']. */
export function pathParams(path: string): string[] {
  return [...path.matchAll(/\{([a-z]+)\}/g)].map((m) => m[1] as string);
}

const errorResponses: Readonly<Record<string, string>> = {
  '400': 'The request is invalid (a field, a size, a name); nothing changed',
  '401': 'No credential, or an unknown or revoked one',
  '403': 'The role may not do this (viewers may only read)',
  '404': 'No such volume, snapshot, node or policy',
  '408': 'The request body did not arrive in time; the connection is closed',
  '409': 'The request conflicts with the state (exists already, attached, has clones, changed meanwhile)',
  '413': 'The body is larger than the server accepts',
  '503': 'etcd or a target did not answer, or a limit is reached; retryable',
};

function operation(route: Route): Record<string, unknown> {
  const parameters = [
    ...pathParams(route.path).map((name) => ({ name, in: 'path', required: true, schema: { type: 'string' } })),
    ...Object.entries(route.query ?? {}).map(([name, q]) => ({
      name,
      in: 'query',
      required: false,
      description: q.description,
      schema: q.schema,
    })),
  ];
  const success = {
    description: route.summary,
    content: route.stream
      ? { 'text/event-stream': { schema: { type: 'string' }, 'x-event-schema': route.response } }
      : { 'application/json': { schema: route.response } },
  };
  const errors = Object.fromEntries(
    Object.entries(errorResponses)
      .filter(([status]) => route.role !== 'public' || status === '503')
      .filter(([status]) => status !== '403' || route.role !== 'viewer' || route.method !== 'GET')
      .map(([status, description]) => [
        status,
        { description, content: { 'application/json': { schema: ref('Error') } } },
      ]),
  );
  return {
    operationId: operationId(route),
    summary: route.summary,
    tags: [route.path.split('/')[1] ?? 'api'],
    ...(route.role === 'public' ? { security: [] } : {}),
    'x-cairn-role': route.role,
    ...(parameters.length === 0 ? {} : { parameters }),
    ...(route.body === undefined
      ? {}
      : { requestBody: { required: true, content: { 'application/json': { schema: route.body } } } }),
    responses: { [String(route.status)]: success, ...errors },
  };
}

/** `GET /volumes/{name}/snapshots` -> `getVolumesNameSnapshots`. */
export function operationId(route: Route): string {
  const words = route.path
    .split('/')
    .filter((s) => s !== '')
    .map((s) => s.replace(/[{}.]/g, ''))
    .flatMap((s) => s.split(/[^a-z0-9]+/i));
  return route.method.toLowerCase() + words.map((w) => (w[0] ?? '').toUpperCase() + w.slice(1)).join('');
}

export function openApiDocument(table: readonly Route[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {
    '/healthz': {
      get: {
        operationId: 'getHealthz',
        summary: 'Liveness and readiness: 200 while the server runs and etcd answers, else 503',
        security: [],
        responses: {
          '200': { description: 'ready', content: { 'application/json': { schema: healthz } } },
          '503': { description: 'etcd does not answer', content: { 'application/json': { schema: ref('Error') } } },
        },
      },
    },
  };
  for (const route of table) {
    const path = `${apiPrefix}${route.path}`;
    paths[path] = { ...(paths[path] ?? {}), [route.method.toLowerCase()]: operation(route) };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Cairn control-plane API',
      version,
      description:
        'Volumes, snapshots, nodes, zones, policies, repair and events of a Cairn cluster. Authenticate with `Authorization: Bearer <token>` (cairnctl token create), the session cookie the dashboard sets, or a client certificate. Viewers may only GET.',
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    servers: [{ url: '/' }],
    security: [{ bearer: [] }, { session: [] }, { mtls: [] }],
    paths,
    components: {
      schemas: components,
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'cairn_<id>_<secret> from cairnctl token create' },
        session: { type: 'apiKey', in: 'cookie', name: sessionCookie },
        mtls: { type: 'mutualTLS', description: "a client certificate signed by the server's --tls-ca" },
      },
    },
  };
}

const healthz: Schema = {
  type: 'object',
  properties: { ok: { type: 'boolean' } },
  required: ['ok'],
};
