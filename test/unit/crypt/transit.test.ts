/** The transit client against `cairnctl kms serve`'s server, in this process, on loopback. */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  KeyError,
  openDataKey,
  parseKek,
  rewrapKey,
  newWrappedKey,
  startTransitServer,
  transitKey,
  unwrapDataKey,
} from '../../../src/crypt/index.js';

describe('crypt: data keys wrapped by a key service (transit interface)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-kms-'));
  const token = randomBytes(16).toString('hex');
  const env = { CAIRN_KMS_TOKEN: token };
  let server: Awaited<ReturnType<typeof startTransitServer>>;
  before(async () => {
    server = await startTransitServer({
      dir: join(dir, 'keys'),
      token,
      host: '127.0.0.1',
      port: 0,
      log: () => undefined,
    });
    const res = await fetch(`${server.url}/v1/transit/keys/cairn`, {
      method: 'POST',
      headers: { 'x-vault-token': token },
    });
    expect(res.status).to.equal(204);
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('wraps a data key the service alone opens; keeps its keys 0600; the record holds no key', async () => {
    const at = transitKey(server.url, 'cairn');
    const enc = await newWrappedKey({ kind: 'transit', at, token });
    expect(enc.keyId).to.equal('transit:cairn');
    expect(enc.kms).to.deep.equal({ kind: 'transit', url: server.url, key: 'cairn' });
    expect(enc.wrappedKey).to.match(/^vault:v1:/);
    expect(statSync(join(dir, 'keys', 'cairn.key')).mode & 0o777).to.equal(0o600);
    const key = await openDataKey(enc, [], 'Volume "v"', env);
    expect(key.length).to.equal(64);
    expect((await openDataKey(enc, [], 'Volume "v"', env)).equals(key)).to.equal(true);
    // A wrong token, a record moved to another volume's uid, a missing key: refused, in words.
    await openDataKey(enc, [], 'Volume "v"', { CAIRN_KMS_TOKEN: 'wrong-token-xxxxxxxx' }).then(
      () => expect.fail('a wrong token opened it'),
      (err: unknown) =>
        expect(err)
          .to.be.instanceOf(KeyError)
          .with.property('message')
          .match(/refused the token/),
    );
    await openDataKey({ ...enc, keyUid: 'other' }, [], 'Volume "v"', env).then(
      () => expect.fail('another uid opened it'),
      (err: unknown) =>
        expect(err)
          .to.be.instanceOf(KeyError)
          .with.property('message')
          .match(/not this volume/),
    );
    await newWrappedKey({ kind: 'transit', at: transitKey(server.url, 'absent'), token }).then(
      () => expect.fail('an absent key wrapped'),
      (err: unknown) => expect(String(err)).to.match(/HTTP 404: no key named "absent"/),
    );
    await openDataKey(enc, [], 'v', { CAIRN_KMS_TOKEN: token }).then((k) => expect(k.equals(key)).to.equal(true));
  });

  it('rewraps between a KEK and the service, the data key unchanged', async () => {
    const kek = parseKek(randomBytes(32), 'k');
    const local = await newWrappedKey({ kind: 'kek', kek });
    const dataKey = unwrapDataKey(local, [kek], 'v');
    const remote = await rewrapKey(
      local,
      [kek],
      { kind: 'transit', at: transitKey(server.url, 'cairn'), token },
      'v',
      env,
    );
    expect((await openDataKey(remote, [], 'v', env)).equals(dataKey)).to.equal(true);
    const back = await rewrapKey(remote, [], { kind: 'kek', kek }, 'v', env);
    expect(back.kms).to.equal(undefined);
    expect(unwrapDataKey(back, [kek], 'v').equals(dataKey)).to.equal(true);
  });

  it('answers bad requests with an error, never crashing: bad JSON, bad base64, a tampered ciphertext, no token', async () => {
    const post = (path: string, body: string, t = token) =>
      fetch(`${server.url}${path}`, { method: 'POST', headers: { 'x-vault-token': t }, body });
    expect((await post('/v1/transit/encrypt/cairn', '{')).status).to.equal(400);
    expect((await post('/v1/transit/encrypt/cairn', '{"plaintext":"@@"}')).status).to.equal(400);
    expect(
      (await post('/v1/transit/decrypt/cairn', '{"ciphertext":"vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}'))
        .status,
    ).to.equal(400);
    expect((await post('/v1/transit/encrypt/cairn', '{}', 'nope')).status).to.equal(403);
    expect((await post('/v1/transit/encrypt/../etc', '{}')).status).to.equal(404);
    expect((await post('/v1/transit/encrypt/cairn', 'x'.repeat(100_000))).status).to.equal(413);
    const ok = await post('/v1/transit/encrypt/cairn', JSON.stringify({ plaintext: 'aGVsbG8=' }));
    expect(ok.status).to.equal(200);
  });
});
