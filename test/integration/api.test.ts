/**
 * The control-plane HTTP API (issue 13) against a real dev cluster: `cairnctl api serve` runs as a
 * process, and every route of /api/v1 is called over HTTP with real data behind it (volumes with
 * written extents, snapshots, a clone, a drain, a repair pass, policies).
 *
 * What it checks, for every response: the route and status are documented in the server's own
 * OpenAPI document, and the body is valid against that status's schema (every required field
 * present, every type right), compiled with Ajv out of the document itself. At the end, every
 * documented route has been called. Beside that: auth (401 without or with a wrong token, 403
 * for a viewer's change, public openapi.json and /healthz), the audit log (a refused change is
 * audited too), bad input (invalid JSON, unknown fields, oversized bodies, unknown routes) and
 * `cairnctl --api` giving the same JSON as the etcd path.
 */
import { expect } from 'chai';
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { DocumentValidator, apiHeadersTimeoutMs, pointer } from '../../src/api/index.js';
import { freePort, makeClientCert, makeTlsDir, waitFor, type TlsFiles } from '../../src/dev/index.js';
import { Prng } from '../../src/sim/index.js';
import { cairnctlPath } from '../harness/cli.js';
import { ClientProcess, runClient, runOk, seededBytes, useStack } from '../harness/stack.js';

interface Answer {
  readonly status: number;
  readonly body: unknown;
  readonly headers: Record<string, string | string[] | undefined>;
}

const MiB = 1024 * 1024;

describe('the HTTP API (cairnctl api serve) on a dev cluster', function () {
  this.timeout(180_000);
  const stack = useStack({ profile: '2+1', extentSize: '1MiB' });
  let api: ClientProcess;
  let base: string;
  let admin: string;
  let viewer: string;
  let document: Record<string, unknown>;
  let validator: DocumentValidator;
  /** "METHOD /template" of every route called with a validated answer. */
  const called = new Set<string>();

  /** One HTTP request; the body is sent as given (a string) or as JSON. */
  function http(
    method: string,
    path: string,
    options: { token?: string; body?: unknown; raw?: string | Buffer; headers?: Record<string, string> } = {},
  ): Promise<Answer> {
    const payload =
      options.raw !== undefined ? options.raw : options.body === undefined ? undefined : JSON.stringify(options.body);
    return new Promise((resolve, reject) => {
      const req = request(
        `${base}${path}`,
        {
          method,
          headers: {
            ...(options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }),
            // A length, always: Node's client sends a DELETE body unframed otherwise.
            ...(payload === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) }),
            ...options.headers,
          },
          timeout: 120_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body: unknown = text;
            try {
              body = text === '' ? undefined : JSON.parse(text);
            } catch {
              // Left as text; the caller's checks will say so.
            }
            resolve({ status: res.statusCode ?? 0, body, headers: res.headers });
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  /**
   * Calls `method template` (with `path` filling its parameters) and checks the answer against the
   * document: the status is documented for the route and the body valid against its schema.
   */
  async function call(
    method: string,
    template: string,
    options: { path?: string; token?: string; body?: unknown; raw?: string; expect?: number } = {},
  ): Promise<Answer> {
    const path = options.path ?? template;
    const answer = await http(method, `/api/v1${path}`, {
      ...(options.token === undefined ? {} : { token: options.token }),
      ...(options.body === undefined ? {} : { body: options.body }),
      ...(options.raw === undefined ? {} : { raw: options.raw }),
    });
    const where = `${method} ${path} -> ${answer.status} ${JSON.stringify(answer.body).slice(0, 600)}`;
    if (options.expect !== undefined) expect(answer.status, where).to.equal(options.expect);
    const paths = document['paths'] as Record<string, Record<string, { responses: Record<string, unknown> }>>;
    const operation = paths[`/api/v1${template}`]?.[method.toLowerCase()];
    expect(operation, `${method} /api/v1${template} is documented`).to.not.equal(undefined);
    expect(Object.keys(operation!.responses), `${where}: the status is documented`).to.include(String(answer.status));
    const validate = validator.schemaAt(
      pointer(
        'paths',
        `/api/v1${template}`,
        method.toLowerCase(),
        'responses',
        String(answer.status),
        'content',
        'application/json',
        'schema',
      ),
    );
    expect(validate(answer.body), `${where}: ${JSON.stringify(validate.errors)}`).to.equal(true);
    if (answer.status < 300) called.add(`${method} ${template}`);
    return answer;
  }

  const ok = (method: string, template: string, options: Parameters<typeof call>[2] = {}) =>
    call(method, template, { token: admin, ...options }).then((a) => {
      expect(a.status, `${method} ${options.path ?? template}: ${JSON.stringify(a.body)}`).to.be.within(200, 299);
      return a.body as Record<string, unknown> & unknown[];
    });

  const tokenOf = async (role: string): Promise<string> => {
    const r = await stack().cairnctl(`token create ${role}`, [
      'token',
      'create',
      '--role',
      role,
      '--name',
      `test-${role}`,
    ]);
    const last = r.stdout.trim().split('\n').pop() ?? '';
    expect(last).to.match(/^cairn_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
    return last;
  };

  before(async function () {
    this.timeout(120_000);
    admin = await tokenOf('admin');
    viewer = await tokenOf('viewer');
    const port = await freePort();
    api = new ClientProcess(process.execPath, [cairnctlPath, 'api', 'serve', '--listen', `127.0.0.1:${port}`], {
      env: { CAIRN_ETCD: stack().etcd },
      deadlineMs: 3_600_000,
    });
    const m = await api.waitForOutput(/serving on (http:\/\/\S+)/, 30_000);
    base = m[1] as string;
    const doc = await http('GET', '/api/v1/openapi.json');
    expect(doc.status).to.equal(200);
    document = doc.body as Record<string, unknown>;
    validator = new DocumentValidator(document);
  });

  after(async function () {
    this.timeout(30_000);
    if (api === undefined) return;
    api.kill('SIGTERM');
    const r = await api.exit();
    expect(r.stderr).to.not.match(/internal error|TypeError|at .*\.js:\d+/);
  });

  it('serves an OpenAPI 3.1 document and /healthz without a credential', async () => {
    expect(document['openapi']).to.equal('3.1.0');
    await call('GET', '/openapi.json', { expect: 200 });
    const health = await http('GET', '/healthz');
    expect(health.status).to.equal(200);
    expect(health.body).to.deep.equal({ ok: true });
  });

  it('refuses a request without a credential (401) or with a wrong token (401), in the one error shape', async () => {
    const none = await call('GET', '/cluster', { expect: 401 });
    expect(none.headers['www-authenticate']).to.match(/^Bearer/);
    const wrong = await call('GET', '/volumes', { token: `cairn_000000000000_${'A'.repeat(43)}`, expect: 401 });
    expect(wrong.body).to.have.nested.property('error.code', 'EAUTH');
    const garbage = await http('GET', '/api/v1/volumes', { headers: { authorization: 'Basic Zm9vOmJhcg==' } });
    expect(garbage.status).to.equal(401);
  });

  it('says who a token is (GET /whoami)', async () => {
    expect(await ok('GET', '/whoami')).to.include({ name: 'test-admin', role: 'admin', via: 'token' });
    expect(await ok('GET', '/whoami', { token: viewer })).to.include({ role: 'viewer' });
  });

  it('creates, lists, reads, labels and resizes volumes; placement shows where written shards are', async () => {
    const made = await ok('POST', '/volumes', {
      body: { name: 'api-a', size: '8MiB', labels: { app: 'web' } },
      expect: 201,
    });
    expect(made).to.include({ name: 'api-a', sizeBytes: 8 * MiB });
    await ok('POST', '/volumes', { body: { name: 'api-b', size: 4 * MiB, profile: '2+1' }, expect: 201 });
    const list = await ok('GET', '/volumes');
    expect(list.map((v) => (v as { name: string }).name)).to.include.members(['api-a', 'api-b']);
    // Data in: 3 MiB over the dev frontend, so three extents have shards.
    const file = stack().path('api-a.bin');
    writeFileSync(file, seededBytes('api-a', 3 * MiB));
    const since = stack().devFrontendLog().length;
    await runOk('nbdcopy api-a', '/usr/bin/nbdcopy', [file, stack().uri('api-a')], { deadlineMs: 60_000 });
    // Detached: the journal is folded, so every written extent has a published generation.
    await stack().waitForDevDetach('api-a', since);
    const info = await ok('GET', '/volumes/{name}', { path: '/volumes/api-a' });
    expect(info).to.have.nested.property('map.writtenExtents', 3);
    const placement = await ok('GET', '/volumes/{name}/placement', { path: '/volumes/api-a/placement' });
    expect(placement['writtenExtents']).to.equal(3);
    const extents = placement['placement'] as { shards: { state: string; zone: string }[] }[];
    expect(extents).to.have.length(3);
    for (const e of extents) {
      expect(e.shards).to.have.length(3);
      expect(e.shards.every((s) => s.state === 'ok')).to.equal(true);
    }
    const labelled = await ok('PATCH', '/volumes/{name}', {
      path: '/volumes/api-b',
      body: { labels: { app: 'db', tier: 'gold' } },
    });
    expect(labelled['labels']).to.deep.equal({ app: 'db', tier: 'gold' });
    const grown = await ok('PATCH', '/volumes/{name}', { path: '/volumes/api-b', body: { size: '6MiB' } });
    expect(grown['sizeBytes']).to.equal(6 * MiB);
  });

  it('takes, lists and deletes snapshots, and clones one', async () => {
    const snap = await ok('POST', '/volumes/{name}/snapshots', {
      path: '/volumes/api-a/snapshots',
      body: { name: 's1' },
      expect: 201,
    });
    expect(snap).to.include({ name: 's1', volume: 'api-a' });
    await ok('POST', '/volumes/{name}/snapshots', { path: '/volumes/api-b/snapshots', body: { name: 's2' } });
    const rows = await ok('GET', '/volumes/{name}/snapshots', { path: '/volumes/api-a/snapshots' });
    expect(rows.map((r) => (r as { name: string }).name)).to.deep.equal(['s1']);
    const clone = await ok('POST', '/volumes/{name}/clone', {
      path: '/volumes/api-a/clone',
      body: { snapshot: 's1', name: 'api-a-clone' },
      expect: 201,
    });
    expect(clone).to.have.nested.property('parent.snapshot', 's1');
    // A snapshot with a clone cannot be deleted: 409, the reason in the message.
    const refused = await call('DELETE', '/volumes/{name}/snapshots/{snapshot}', {
      path: '/volumes/api-a/snapshots/s1',
      token: admin,
      expect: 409,
    });
    expect(refused.body).to.have.nested.property('error.retryable', false);
    await ok('DELETE', '/volumes/{name}/snapshots/{snapshot}', { path: '/volumes/api-b/snapshots/s2' });
    expect(await ok('GET', '/volumes/{name}/snapshots', { path: '/volumes/api-b/snapshots' })).to.deep.equal([]);
  });

  it('answers bad requests with the right status and never a stack trace', async () => {
    const cases: [string, string, Parameters<typeof call>[2] & { expect: number }, string][] = [
      ['POST', '/volumes', { token: admin, raw: '{"name": ', expect: 400 }, 'EINVAL'],
      ['POST', '/volumes', { token: admin, body: { name: 'x', size: '1GiB', colour: 'red' }, expect: 400 }, 'EINVAL'],
      ['POST', '/volumes', { token: admin, body: { name: 'x' }, expect: 400 }, 'EINVAL'],
      ['POST', '/volumes', { token: admin, body: { name: 'x', size: 'lots' }, expect: 400 }, 'EINVAL'],
      ['POST', '/volumes', { token: admin, body: { name: 'Bad Name!', size: '1MiB' }, expect: 400 }, 'EINVAL'],
      ['POST', '/volumes', { token: admin, body: { name: 'api-a', size: '1MiB' }, expect: 409 }, 'EEXIST'],
      ['GET', '/volumes/{name}', { token: admin, path: '/volumes/nope', expect: 404 }, 'ENOTFOUND'],
      [
        'POST',
        '/volumes/{name}/snapshots',
        { token: admin, path: '/volumes/nope/snapshots', body: { name: 'z' }, expect: 404 },
        'ENOTFOUND',
      ],
      ['PATCH', '/volumes/{name}', { token: admin, path: '/volumes/api-a', body: {}, expect: 400 }, 'EINVAL'],
    ];
    for (const [method, template, options, code] of cases) {
      const a = await call(method, template, options);
      expect(a.body, `${method} ${options.path ?? template}`).to.have.nested.property('error.code', code);
      expect(JSON.stringify(a.body)).to.not.match(/at .*\.js:\d+/);
    }
    const huge = await http('POST', '/api/v1/volumes', { token: admin, raw: `{"name":"${'x'.repeat(200_000)}"}` });
    expect(huge.status).to.equal(413);
    expect(huge.body).to.have.nested.property('error.code', 'ETOOLARGE');
    const unknown = await http('GET', '/api/v1/frobnicate', { token: admin });
    expect(unknown.status).to.equal(404);
    const wrongMethod = await http('PUT', '/api/v1/volumes', { token: admin });
    expect(wrongMethod.status).to.equal(405);
  });

  it('survives seeded garbage (methods, paths, headers, bodies): every answer is JSON in the error shape, never a 5xx', async function () {
    this.timeout(120_000);
    // Paths name volumes and nodes that do not exist: garbage that happens to be valid changes nothing.
    const before = JSON.stringify(await ok('GET', '/volumes'));
    const seed = Number(process.env['CAIRN_API_FUZZ_SEED'] ?? Date.now() % 1_000_000);
    const rng = new Prng(seed, 'api-fuzz');
    const pick = <T>(items: readonly T[]): T => items[rng.int(items.length)] as T;
    const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => rng.int(256)));
    const paths = [
      '/api/v1/volumes',
      '/api/v1/volumes/fuzz-none',
      '/api/v1/volumes/%ZZ',
      '/api/v1/volumes/fuzz-none/snapshots/%2e%2e',
      '/api/v1/volumes/../../etc/passwd',
      '/api/v1/nodes/fuzz-none/drain',
      '/api/v1/policies',
      '/api/v1/volumes/fuzz-none/placement?limit=-1',
      '/api/v1/events?limit=99999999999999999999',
      '/api/v1//volumes',
      '/api/v1/volumes/fuzz-none/clone',
      `/api/v1/${'x'.repeat(3000)}`,
    ];
    const bodies = [
      () => '',
      () => 'null',
      () => '[]',
      () => '"x"',
      () => '{"name": 1, "size": {}}',
      () => `{"name":"v","size":"${'9'.repeat(400)}"}`,
      () => '['.repeat(20_000) + ']'.repeat(20_000),
      () => `{"labels": {"${'k'.repeat(300)}": "v"}, "name": "zz", "size": 1}`,
      () => '{"__proto__": {"admin": true}, "name": "p", "size": "1MiB"}',
      () => bytes(rng.range(1, 2000)),
    ];
    for (let i = 0; i < 150; i++) {
      const method = pick(['GET', 'POST', 'PATCH', 'DELETE', 'PUT', 'OPTIONS']);
      const path = pick(paths);
      const body = method === 'GET' ? undefined : pick(bodies)();
      const token = pick([admin, viewer, undefined, 'cairn_zz', `Bearer ${'a'.repeat(5000)}`]);
      const a = await http(method, path, {
        ...(token === undefined ? {} : { token }),
        ...(body === undefined ? {} : { raw: body }),
        headers: rng.chance(0.2) ? { 'content-type': 'text/plain' } : {},
      });
      const where = `seed ${seed} request ${i}: ${method} ${path.slice(0, 80)} -> ${a.status} ${String(JSON.stringify(a.body)).slice(0, 300)}`;
      expect(a.status, where).to.be.below(500);
      if (a.status >= 400) expect(a.body, where).to.have.nested.property('error.code').that.is.a('string');
    }
    expect((await http('GET', '/healthz')).status, `seed ${seed}`).to.equal(200);
    // Nothing it sent made, changed or deleted a volume.
    expect(JSON.stringify(await ok('GET', '/volumes')), `seed ${seed}`).to.equal(before);
  });

  it('drops a client that never finishes its request head, within the headers deadline', async function () {
    this.timeout(60_000);
    const port = Number(new URL(base).port);
    const started = Date.now();
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.write('GET /api/v1/volumes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ');
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    // apiHeadersTimeoutMs (10 s), checked every apiTimeoutCheckMs (1 s).
    expect(Date.now() - started).to.be.within(apiHeadersTimeoutMs - 1_000, apiHeadersTimeoutMs + 5_000);
  });

  it('lets a viewer read but not change (403), and audits the refusal', async () => {
    await ok('GET', '/volumes', { token: viewer });
    const refused = await call('DELETE', '/volumes/{name}', { path: '/volumes/api-b', token: viewer, expect: 403 });
    expect(refused.body).to.have.nested.property('error.code', 'EFORBIDDEN');
    const audit = await ok('GET', '/audit');
    expect(audit[0]).to.include({ who: 'test-viewer', method: 'DELETE', path: '/api/v1/volumes/api-b', status: 403 });
    expect(await call('GET', '/audit', { token: viewer })).to.have.property('status', 403);
    // The volume is still there.
    await ok('GET', '/volumes/{name}', { path: '/volumes/api-b' });
  });

  it('adds, lists and removes policy rules', async () => {
    await ok('POST', '/policies', {
      body: { name: 'gold', selector: 'tier=gold', set: { profile: '2+1' } },
      expect: 201,
    });
    const list = await ok('GET', '/policies');
    expect(list.map((p) => (p as { name: string }).name)).to.include('gold');
    await ok('DELETE', '/policies/{name}', { path: '/policies/gold' });
    await call('DELETE', '/policies/{name}', { path: '/policies/gold', token: admin, expect: 404 });
  });

  it('shows the cluster, nodes, zones and targets', async () => {
    const cluster = await ok('GET', '/cluster');
    expect(cluster).to.have.nested.property('verdict.state', 'healthy');
    expect(cluster['nodesUp']).to.equal(6);
    const nodes = await ok('GET', '/nodes');
    expect(nodes).to.have.length(6);
    const zones = await ok('GET', '/zones');
    expect(zones.map((z) => (z as { zone: string }).zone)).to.deep.equal(['a', 'b', 'c']);
    for (const z of zones as { capacityBytes: number; targets: unknown[] }[]) {
      expect(z.capacityBytes).to.be.above(0);
      expect(z.targets).to.have.length(2);
    }
    expect(await ok('GET', '/targets')).to.deep.equal([]);
  });

  it('drains a node in the background, and stops draining it', async () => {
    const before = (await ok('GET', '/volumes/{name}/placement', { path: '/volumes/api-a/placement' }))[
      'placement'
    ] as { shards: { target: string }[] }[];
    const node = before[0]!.shards[0]!.target;
    const started = await ok('POST', '/nodes/{name}/drain', { path: `/nodes/${node}/drain`, body: {}, expect: 202 });
    expect(started).to.include({ target: node, draining: true });
    const job = started['job'] as { id: string };
    await waitFor(
      `the drain of ${node} to end`,
      async () => {
        const status = await ok('GET', '/repair');
        const j = (status['jobs'] as { id: string; state: string; error?: string }[]).find((x) => x.id === job.id);
        if (j?.state === 'failed') throw new Error(`the drain failed: ${JSON.stringify(j)}`);
        return j?.state === 'done' ? j : undefined;
      },
      120_000,
    );
    const after = (await ok('GET', '/volumes/{name}/placement', { path: '/volumes/api-a/placement' }))['placement'] as {
      shards: { target: string }[];
    }[];
    expect(after.flatMap((e) => e.shards.map((s) => s.target))).to.not.include(node);
    const undone = await ok('POST', '/nodes/{name}/drain', { path: `/nodes/${node}/drain`, body: { undo: true } });
    expect(undone).to.include({ target: node, draining: false, job: null });
  });

  it('starts a repair pass and reports the backlog', async () => {
    const job = await ok('POST', '/repair', { body: {}, expect: 202 });
    expect(job).to.include({ kind: 'repair', state: 'running' });
    const status = await waitFor(
      'the repair job to end',
      async () => {
        const s = await ok('GET', '/repair');
        const j = (s['jobs'] as { id: string; state: string }[]).find((x) => x.id === job['id']);
        return j !== undefined && j.state !== 'running' ? s : undefined;
      },
      120_000,
    );
    expect(status).to.have.nested.property('repair.backlogExtents', 0);
    expect(status).to.have.nested.property('repair.etaSeconds', 0);
  });

  it('lists events and streams new ones as server-sent events', async () => {
    const events = await ok('GET', '/events');
    expect(events.some((e) => (e as { type: string }).type === 'audit')).to.equal(true);
    // Open the stream, make a change, and read its audit event from the stream.
    const received: string[] = [];
    const stream = request(`${base}/api/v1/events/stream`, { headers: { authorization: `Bearer ${viewer}` } });
    const opened = new Promise<string>((resolve, reject) => {
      stream.on('response', (res) => {
        resolve(String(res.headers['content-type']));
        res.on('data', (c: Buffer) => received.push(c.toString()));
      });
      stream.on('error', reject);
    });
    stream.end();
    expect(await opened).to.match(/^text\/event-stream/);
    called.add('GET /events/stream');
    await ok('POST', '/volumes', { body: { name: 'api-c', size: '1MiB' }, expect: 201 });
    const line = await waitFor(
      'the audit event of POST /volumes on the stream',
      () => received.join('').match(/data: (\{.*"path":"\/api\/v1\/volumes".*\})/)?.[1],
      10_000,
    );
    const event = JSON.parse(line) as Record<string, unknown>;
    expect(event).to.include({ type: 'audit', method: 'POST', status: 201, who: 'test-admin' });
    expect(validator.schemaAt(pointer('components', 'schemas', 'Event'))(event)).to.equal(true);
    stream.destroy();
  });

  it('reports client IO rates from the frontends (GET /stats/io)', async () => {
    // Writes through the dev frontend, then waits for two samples of the API (10 s apart) to see them.
    const file = stack().path('api-c.bin');
    writeFileSync(file, seededBytes('api-c', MiB));
    const since = stack().devFrontendLog().length;
    await runOk('nbdcopy api-c', '/usr/bin/nbdcopy', [file, stack().uri('api-c')], { deadlineMs: 60_000 });
    const stats = await waitFor(
      'a sample with writes in it',
      async () => {
        const s = await ok('GET', '/stats/io');
        const series = s['series'] as { writeBytesPerSecond: number }[];
        return series.some((p) => p.writeBytesPerSecond > 0) ? s : undefined;
      },
      60_000,
    );
    expect(stats['frontends']).to.be.at.least(1);
    expect(stats).to.have.nested.property('totals.writeBytes').that.is.at.least(MiB);
    // Detached again, so the next test can delete it.
    await stack().waitForDevDetach('api-c', since);
  });

  it('deletes volumes: to the trash, or for good with ?now=true', async () => {
    const trashed = await ok('DELETE', '/volumes/{name}', { path: '/volumes/api-c' });
    expect(trashed).to.include({ deleted: 'api-c', trashed: 'api-c' });
    const gone = await ok('DELETE', '/volumes/{name}', { path: '/volumes/api-a-clone?now=true' });
    expect(gone).to.include({ deleted: 'api-a-clone' });
    await call('GET', '/volumes/{name}', { path: '/volumes/api-c', token: admin, expect: 404 });
  });

  it('lists tokens without their secrets, and refuses a revoked token at its next request', async () => {
    const made = await stack().cairnctl('token create --json', [
      'token',
      'create',
      '--role',
      'viewer',
      '--name',
      'short-lived',
      '--json',
    ]);
    const record = JSON.parse(made.stdout) as { id: string; token: string; role: string };
    expect(record.role).to.equal('viewer');
    await ok('GET', '/whoami', { token: record.token });
    const list = await stack().cairnctl('token list', ['token', 'list', '--json']);
    const rows = JSON.parse(list.stdout) as Record<string, unknown>[];
    expect(rows.map((r) => r['name'])).to.include.members(['test-admin', 'test-viewer', 'short-lived']);
    expect(list.stdout).to.not.include('hash').and.not.include(record.token.split('_')[2]!);
    const stored = await stack().etcdGet(`cairn/v1/api-tokens/${record.id}`);
    expect(stored).to.not.include(record.token.split('_')[2]!);
    await stack().cairnctl('token revoke', ['token', 'revoke', record.id]);
    expect((await call('GET', '/whoami', { token: record.token })).status).to.equal(401);
  });

  describe('cairnctl --api', () => {
    /** cairnctl through the API, with no etcd endpoint in reach (CAIRN_ETCD empty). */
    const viaApi = (args: readonly string[]) =>
      runClient(process.execPath, [cairnctlPath, ...args, '--api', base, '--token', admin], {
        env: { CAIRN_ETCD: '' },
        deadlineMs: 120_000,
      });
    const viaEtcd = (args: readonly string[]) => stack().cairnctl(args.join(' '), args);
    const json = (text: string): unknown => JSON.parse(text.trim().split('\n').pop() ?? 'null');

    it('prints the same JSON as against etcd (status, volume list|info, snapshot list, node list)', async () => {
      const same: [string[], (v: unknown) => unknown][] = [
        [['status', '--json'], (v) => ({ ...(v as object), checkedAt: 0 })],
        [['volume', 'list', '--json'], (v) => v],
        [['volume', 'info', 'api-a', '--json'], (v) => v],
        [['snapshot', 'list', 'api-a', '--json'], (v) => v],
        [
          ['node', 'list', '--json'],
          (v) =>
            (v as { name: string; state: string; zone: string }[]).map(({ name, state, zone }) => ({
              name,
              state,
              zone,
            })),
        ],
      ];
      for (const [args, norm] of same) {
        const a = await viaApi(args);
        expect(a.code, `${args.join(' ')} --api: ${a.stderr}`).to.equal(0);
        const e = await viaEtcd(args);
        expect(norm(json(a.stdout)), args.join(' ')).to.deep.equal(norm(json(e.stdout)));
      }
      const text = await viaApi(['status']);
      expect(text.stdout).to.match(/HEALTHY|WARNING|DEGRADED/);
    });

    it('creates, resizes, snapshots and deletes through the API, and drains a node', async () => {
      const run = async (args: string[]) => {
        const r = await viaApi(args);
        expect(r.code, `${args.join(' ')}: ${r.stderr}`).to.equal(0);
        return r.stdout;
      };
      expect(await run(['volume', 'create', 'api-cli', '2MiB', '--label', 'via=api'])).to.match(
        /Created volume api-cli/,
      );
      expect(await run(['volume', 'resize', 'api-cli', '3MiB'])).to.match(/from 2 MiB to 3 MiB/);
      expect(json(await run(['snapshot', 'create', 'api-cli', 'first', '--json']))).to.include({ name: 'first' });
      expect(json(await run(['snapshot', 'delete', 'api-cli@first', '--json']))).to.include({
        deleted: 'api-cli@first',
      });
      expect(json(await run(['volume', 'delete', 'api-cli', '--json']))).to.include({ trashed: 'api-cli' });
      const audit = (await ok('GET', '/audit')) as { who: string; path: string }[];
      expect(audit.some((a) => a.who === 'test-admin' && a.path === '/api/v1/volumes/api-cli')).to.equal(true);
      const node = (await ok('GET', '/nodes'))[5] as { name: string };
      const drained = json(await run(['node', 'drain', node.name, '--json'])) as Record<string, unknown>;
      expect(drained).to.include({ target: node.name, draining: true });
      expect(drained).to.have.nested.property('moved.failed', 0);
      expect(json(await run(['node', 'drain', node.name, '--undo', '--json']))).to.include({ draining: false });
    });

    it('fails clearly: a server out of reach (naming the URL), a missing token, a command that needs etcd', async () => {
      const port = await freePort();
      const gone = await runClient(
        process.execPath,
        [cairnctlPath, 'volume', 'list', '--api', `http://127.0.0.1:${port}`, '--token', admin],
        { env: { CAIRN_ETCD: '' } },
      );
      expect(gone.code).to.equal(1);
      expect(gone.stderr).to.include(`Cannot reach the Cairn API at http://127.0.0.1:${port}`);
      const noToken = await runClient(process.execPath, [cairnctlPath, 'volume', 'list', '--api', base], {
        env: { CAIRN_ETCD: '', CAIRN_API_TOKEN: '' },
      });
      expect(noToken.code).to.equal(2);
      expect(noToken.stderr).to.match(/needs a token/);
      const viewerDelete = await runClient(
        process.execPath,
        [cairnctlPath, 'volume', 'delete', 'api-b', '--api', base, '--token', viewer],
        { env: { CAIRN_ETCD: '' } },
      );
      expect(viewerDelete.code).to.equal(1);
      expect(viewerDelete.stderr).to.match(/needs an admin/);
      const etcdOnly = await viaApi(['volume', 'du']);
      expect(etcdOnly.code).to.equal(2);
      expect(etcdOnly.stderr).to.match(/does not work through --api/);
    });
  });

  describe('over HTTPS with client certificates (--tls-ca, --mtls-admin)', () => {
    let tlsApi: ClientProcess;
    let tlsBase: string;
    let tls: TlsFiles;
    let watcher: { cert: string; key: string };
    let stranger: { cert: string; key: string };

    before(async function () {
      this.timeout(60_000);
      tls = makeTlsDir(stack().path('api-tls'), { clientName: 'ops-admin' });
      watcher = makeClientCert(tls.dir, stack().path('api-tls-watcher'), 'watcher');
      // A certificate from another CA, with an admin's CN: it must count for nothing.
      const other = makeTlsDir(stack().path('api-tls-other'), { clientName: 'ops-admin' });
      stranger = { cert: other.clientCert, key: other.clientKey };
      const port = await freePort();
      tlsApi = new ClientProcess(
        process.execPath,
        [
          cairnctlPath,
          'api',
          'serve',
          '--listen',
          `127.0.0.1:${port}`,
          '--tls-cert',
          tls.serverCert,
          '--tls-key',
          tls.serverKey,
          '--tls-ca',
          tls.caCert,
          '--mtls-admin',
          'ops-admin',
        ],
        { env: { CAIRN_ETCD: stack().etcd }, deadlineMs: 3_600_000 },
      );
      tlsBase = (await tlsApi.waitForOutput(/serving on (https:\/\/\S+)/, 30_000))[1] as string;
    });

    after(async function () {
      this.timeout(30_000);
      if (tlsApi === undefined) return;
      tlsApi.kill('SIGTERM');
      await tlsApi.exit();
    });

    const tlsCall = (
      method: string,
      path: string,
      options: { cert?: { cert: string; key: string }; token?: string; body?: unknown } = {},
    ): Promise<Answer> =>
      new Promise((resolve, reject) => {
        const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
        const req = httpsRequest(
          `${tlsBase}/api/v1${path}`,
          {
            method,
            ca: readFileSync(tls.caCert),
            ...(options.cert === undefined
              ? {}
              : { cert: readFileSync(options.cert.cert), key: readFileSync(options.cert.key) }),
            headers: {
              ...(options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }),
              ...(payload === undefined ? {} : { 'content-type': 'application/json' }),
            },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown,
                headers: res.headers,
              }),
            );
          },
        );
        req.on('error', reject);
        req.end(payload);
      });

    it('takes a certificate the CA signed as its CN: admin by --mtls-admin, else viewer', async () => {
      const admin = await tlsCall('GET', '/whoami', { cert: { cert: tls.clientCert, key: tls.clientKey } });
      expect(admin.body).to.deep.equal({ id: 'cn:ops-admin', name: 'ops-admin', role: 'admin', via: 'mtls' });
      const view = await tlsCall('GET', '/whoami', { cert: watcher });
      expect(view.body).to.include({ name: 'watcher', role: 'viewer', via: 'mtls' });
      const refused = await tlsCall('POST', '/volumes', { cert: watcher, body: { name: 'tls-x', size: '1MiB' } });
      expect(refused.status).to.equal(403);
      const audit = await tlsCall('GET', '/audit?limit=1', { cert: { cert: tls.clientCert, key: tls.clientKey } });
      expect((audit.body as { who: string; status: number }[])[0]).to.include({ who: 'watcher', status: 403 });
    });

    it('refuses a certificate of another CA and no credential (401), and still takes tokens', async () => {
      expect((await tlsCall('GET', '/volumes', { cert: stranger })).status).to.equal(401);
      expect((await tlsCall('GET', '/volumes')).status).to.equal(401);
      const byToken = await tlsCall('GET', '/whoami', { token: viewer });
      expect(byToken.body).to.include({ role: 'viewer', via: 'token' });
    });

    it('serves cairnctl --api over https with CAIRN_API_CA', async () => {
      const r = await runClient(
        process.execPath,
        [cairnctlPath, 'volume', 'list', '--json', '--api', tlsBase, '--token', admin],
        { env: { CAIRN_ETCD: '', CAIRN_API_CA: tls.caCert } },
      );
      expect(r.code, r.stderr).to.equal(0);
      expect((JSON.parse(r.stdout) as { name: string }[]).map((v) => v.name)).to.include('api-a');
    });
  });

  it('has called every documented route', () => {
    const paths = document['paths'] as Record<string, Record<string, unknown>>;
    const documented = Object.entries(paths)
      .filter(([path]) => path.startsWith('/api/v1/'))
      .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path.slice('/api/v1'.length)}`));
    expect(documented.filter((r) => !called.has(r))).to.deep.equal([]);
  });
});
