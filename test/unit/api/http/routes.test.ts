/**
 * The route table, the OpenAPI document built from it, and the request validation that compiles
 * its schemas: one source, checked without a server.
 */
import { expect } from 'chai';
import {
  DocumentValidator,
  apiPrefix,
  cookieValue,
  matchRoute,
  openApiDocument,
  operationId,
  pointer,
  routes,
} from '../../../../src/api/index.js';

const document = openApiDocument(routes, 'test');
const validator = new DocumentValidator(document);
const paths = document['paths'] as Record<string, Record<string, Record<string, unknown>>>;

const bodyValidator = (method: string, path: string) =>
  validator.schemaAt(
    pointer('paths', `${apiPrefix}${path}`, method, 'requestBody', 'content', 'application/json', 'schema'),
  );

describe('matchRoute()', () => {
  it('fills path parameters, decoded', () => {
    const { matched } = matchRoute(routes, 'DELETE', '/volumes/pg-data/snapshots/night%2Dly');
    expect(matched?.route.path).to.equal('/volumes/{name}/snapshots/{snapshot}');
    expect(matched?.params).to.deep.equal({ name: 'pg-data', snapshot: 'night-ly' });
  });

  it('prefers a literal segment only where the table has one: /events/stream is not /events/{x}', () => {
    expect(matchRoute(routes, 'GET', '/events/stream').matched?.route.path).to.equal('/events/stream');
    expect(matchRoute(routes, 'GET', '/events').matched?.route.path).to.equal('/events');
  });

  it('lists the methods a path allows when the method does not match (405)', () => {
    const r = matchRoute(routes, 'PUT', '/volumes/x');
    expect(r.matched).to.equal(undefined);
    expect(r.methods.sort()).to.deep.equal(['DELETE', 'GET', 'PATCH']);
  });

  it('matches nothing for an unknown path, an empty parameter or a malformed escape', () => {
    for (const path of ['/frob', '/volumes/', '/volumes/%E0%A4%A', '/volumes/a/b/c/d/e'])
      expect(matchRoute(routes, 'GET', path).matched, path).to.equal(undefined);
  });
});

describe('cookieValue()', () => {
  it('finds one cookie among several, and nothing in an absent or malformed header', () => {
    expect(cookieValue('a=1; cairn_session=cairn_x_y; b=2', 'cairn_session')).to.equal('cairn_x_y');
    expect(cookieValue(undefined, 'cairn_session')).to.equal(undefined);
    expect(cookieValue('garbage', 'cairn_session')).to.equal(undefined);
  });
});

describe('openApiDocument()', () => {
  it('documents every route once, with a unique operationId and its success status', () => {
    const ids = new Set<string>();
    for (const route of routes) {
      const op = paths[`${apiPrefix}${route.path}`]?.[route.method.toLowerCase()];
      expect(op, `${route.method} ${route.path}`).to.not.equal(undefined);
      expect(Object.keys(op!['responses'] as object)).to.include(String(route.status));
      const id = operationId(route);
      expect(ids.has(id), id).to.equal(false);
      ids.add(id);
    }
    expect(Object.keys(paths)).to.include('/healthz');
  });

  it('needs no credential for openapi.json and /healthz only, and a viewer GET is never documented as 403', () => {
    for (const [path, ops] of Object.entries(paths))
      for (const [method, op] of Object.entries(ops)) {
        const open = Array.isArray(op['security']) && (op['security'] as unknown[]).length === 0;
        expect(open, `${method} ${path}`).to.equal(path === '/healthz' || path === `${apiPrefix}/openapi.json`);
        if (op['x-cairn-role'] === 'viewer')
          expect(Object.keys(op['responses'] as object), `${method} ${path}`).to.not.include('403');
      }
  });

  it('compiles every response and request schema (every $ref resolves)', () => {
    let compiled = 0;
    for (const [path, ops] of Object.entries(paths))
      for (const [method, op] of Object.entries(ops)) {
        for (const [status, response] of Object.entries(op['responses'] as Record<string, { content: object }>))
          for (const type of Object.keys(response.content)) {
            if (type !== 'application/json') continue;
            validator.schemaAt(pointer('paths', path, method, 'responses', status, 'content', type, 'schema'));
            compiled += 1;
          }
        if (op['requestBody'] !== undefined) {
          validator.schemaAt(pointer('paths', path, method, 'requestBody', 'content', 'application/json', 'schema'));
          compiled += 1;
        }
      }
    expect(compiled).to.be.above(routes.length);
  });
});

describe('request bodies, validated against the document', () => {
  it('accepts what the CLI sends and refuses unknown fields, wrong types and missing fields', () => {
    const create = bodyValidator('post', '/volumes');
    expect(create({ name: 'a', size: '1GiB' })).to.equal(true);
    expect(create({ name: 'a', size: 1073741824, labels: { app: 'x' }, inZones: ['a'] })).to.equal(true);
    expect(create({ name: 'a' })).to.equal(false);
    expect(create({ name: 'a', size: true })).to.equal(false);
    expect(create({ name: 'a', size: '1GiB', colour: 'red' })).to.equal(false);
    expect(create({ name: 'a', size: '1GiB', labels: { app: 1 } })).to.equal(false);
    expect(create([])).to.equal(false);
    const patch = bodyValidator('patch', '/volumes/{name}');
    expect(patch({})).to.equal(true);
    expect(patch({ size: '2GiB', allowShrink: true })).to.equal(true);
    expect(patch({ allowShrink: 'yes' })).to.equal(false);
    const clone = bodyValidator('post', '/volumes/{name}/clone');
    expect(clone({ snapshot: 's', name: 'c' })).to.equal(true);
    expect(clone({ snapshot: 's' })).to.equal(false);
  });

  it('checks the named schemas responses use: a volume without its id is invalid', () => {
    const volume = validator.schemaAt(pointer('components', 'schemas', 'Volume'));
    const good = {
      name: 'v',
      id: 'abc',
      sizeBytes: 1,
      profile: { k: 2, m: 1 },
      extentBytes: 4096,
      zonesRequired: 1,
      targets: 'any',
      createdAt: '2026-01-01T00:00:00.000Z',
      state: 'ready',
    };
    expect(volume(good)).to.equal(true);
    const { id: _id, ...noId } = good;
    void _id;
    expect(volume(noId)).to.equal(false);
    expect(volume({ ...good, createdAt: 'yesterday' })).to.equal(false);
  });
});
