/**
 * Parsing the transport-security settings: cairnd's TLS, metrics and etcd flags and variables,
 * the etcd credential variables every process reads, the node-client TLS variables, and the dev
 * cluster's env file.
 */
import { expect } from 'chai';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuthRejectedError, InvalidArgumentError } from '../../../src/core/index.js';
import { environmentSecrets, nodeClientCredentials, nodeTlsFromEnv } from '../../../src/api/index.js';
import { devClientEnv, envFileText } from '../../../src/dev/index.js';
import { etcd3CredentialOptions, etcdCredentialsFrom } from '../../../src/meta/index.js';
import { metricsTlsFromEnv, metricsTokenFromEnv } from '../../../src/metrics/index.js';
import { parseDaemonArgs, type DaemonConfig } from '../../../src/node/index.js';

const base = ['--name', 'n', '--zone', 'a', '--data-dir', '/d', '--listen', '127.0.0.1:0'];

function refused(work: () => unknown, pattern: RegExp): void {
  try {
    work();
  } catch (err) {
    expect(err).to.be.instanceOf(InvalidArgumentError);
    expect((err as Error).message).to.match(pattern);
    return;
  }
  throw new Error('expected a refusal');
}

describe('transport settings', () => {
  let dir: string;
  const file = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cairn-transport-args-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  async function configOf(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<DaemonConfig> {
    const parsed = await parseDaemonArgs(['--etcd', 'https://127.0.0.1:2379', ...base, ...args], env);
    if (parsed.kind !== 'run') throw new Error('expected a run config');
    return parsed.config;
  }

  async function daemonRefusal(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
    try {
      await configOf(args, env);
    } catch (err) {
      expect(err).to.be.instanceOf(InvalidArgumentError);
      return (err as Error).message;
    }
    throw new Error('expected the arguments to be refused');
  }

  describe('cairnd', () => {
    it('reads --tls-cert/--tls-key/--tls-ca, and the CAIRN_NODE_TLS_* variables when no flag is given', async () => {
      const cert = file('c.pem', 'CERT');
      const key = file('k.pem', 'KEY');
      const ca = file('ca.pem', 'CA');
      const flags = await configOf(['--tls-cert', cert, '--tls-key', key, '--tls-ca', ca]);
      expect(flags.tls?.cert.toString()).to.equal('CERT');
      expect(flags.tls?.ca?.toString()).to.equal('CA');
      // Metrics reuse the node's certificate without asking scrapers for one.
      expect(flags.metricsTls?.cert.toString()).to.equal('CERT');
      expect(flags.metricsTls?.ca).to.equal(undefined);
      const env = await configOf([], { CAIRN_NODE_TLS_CERT: cert, CAIRN_NODE_TLS_KEY: key });
      expect(env.tls?.key.toString()).to.equal('KEY');
      expect(env.tls?.ca).to.equal(undefined);
      expect((await configOf([])).tls).to.equal(undefined);
    });

    it('refuses a certificate without its key, a CA alone, and an unreadable file, naming the flag', async () => {
      const cert = file('c.pem', 'CERT');
      expect(await daemonRefusal(['--tls-cert', cert])).to.match(/--tls-cert and --tls-key/);
      expect(await daemonRefusal(['--tls-ca', cert])).to.match(/--tls-ca .* a CA alone/);
      expect(await daemonRefusal(['--tls-cert', cert, '--tls-key', join(dir, 'none')])).to.match(
        /Cannot read --tls-key .*none/,
      );
    });

    it('reads the metrics token from --metrics-token-file or CAIRN_METRICS_TOKEN_FILE, refusing a short one', async () => {
      const token = file('t', 'abcdefghijklmnopqrstuvwxyz\n');
      expect((await configOf(['--metrics-token-file', token])).metricsToken).to.equal('abcdefghijklmnopqrstuvwxyz');
      expect((await configOf([], { CAIRN_METRICS_TOKEN_FILE: token })).metricsToken).to.equal(
        'abcdefghijklmnopqrstuvwxyz',
      );
      expect(await daemonRefusal(['--metrics-token-file', file('s', 'short')])).to.match(/at least 16/);
    });

    it('reads the metrics token any process serving metrics honours from CAIRN_METRICS_TOKEN_FILE', () => {
      expect(metricsTokenFromEnv({})).to.equal(undefined);
      expect(metricsTokenFromEnv({ CAIRN_METRICS_TOKEN_FILE: file('t2', 'a-token-of-20-chars!\n') })).to.equal(
        'a-token-of-20-chars!',
      );
      refused(() => metricsTokenFromEnv({ CAIRN_METRICS_TOKEN_FILE: join(dir, 'none') }), /CAIRN_METRICS_TOKEN_FILE/);
    });

    it('reads metrics TLS from CAIRN_METRICS_TLS_CERT/KEY/CA, refusing a certificate without its key', () => {
      expect(metricsTlsFromEnv({})).to.equal(undefined);
      const tls = metricsTlsFromEnv({
        CAIRN_METRICS_TLS_CERT: file('mc', 'C'),
        CAIRN_METRICS_TLS_KEY: file('mk', 'K'),
      });
      expect(tls?.cert.toString()).to.equal('C');
      expect(tls?.ca).to.equal(undefined);
      refused(() => metricsTlsFromEnv({ CAIRN_METRICS_TLS_CERT: file('mc', 'C') }), /CAIRN_METRICS_TLS_KEY/);
    });

    it('takes etcd credentials from --etcd-* flags over the CAIRN_ETCD_* variables', async () => {
      const pw = file('pw', 'from-file\n');
      const config = await configOf(['--etcd-user', 'flag-user', '--etcd-password-file', pw], {
        CAIRN_ETCD_USER: 'env-user',
        CAIRN_ETCD_PASSWORD: 'env-password',
      });
      expect(config.etcdCredentials).to.deep.equal({ username: 'flag-user', password: 'from-file' });
    });
  });

  describe('etcd credentials', () => {
    it('reads files named by the variables, and a password inline or from a file (trailing newline dropped)', () => {
      const ca = file('ca.pem', 'CA');
      const creds = etcdCredentialsFrom(
        {},
        {
          CAIRN_ETCD_CA: ca,
          CAIRN_ETCD_USER: 'cairn',
          CAIRN_ETCD_PASSWORD_FILE: file('pw', 'secret\r\n'),
        },
      );
      expect(creds.ca?.toString()).to.equal('CA');
      expect(creds).to.include({ username: 'cairn', password: 'secret' });
      expect(etcdCredentialsFrom({}, { CAIRN_ETCD_USER: 'u', CAIRN_ETCD_PASSWORD: 'p' })).to.include({
        username: 'u',
        password: 'p',
      });
      expect(etcdCredentialsFrom({}, {})).to.deep.equal({});
    });

    it('reads a credentials directory (a mounted Secret), skipping files it lacks; variables win', () => {
      const creds = join(dir, 'etcd');
      mkdirSync(creds);
      writeFileSync(join(creds, 'ca.crt'), 'CA');
      writeFileSync(join(creds, 'username'), 'cairn\n');
      writeFileSync(join(creds, 'password'), 'pw\n');
      writeFileSync(join(creds, 'tls.crt'), '');
      const got = etcdCredentialsFrom({}, { CAIRN_ETCD_CREDENTIALS_DIR: creds });
      expect(got.ca?.toString()).to.equal('CA');
      expect(got).to.include({ username: 'cairn', password: 'pw' });
      expect(got.cert).to.equal(undefined);
      expect(etcdCredentialsFrom({}, { CAIRN_ETCD_CREDENTIALS_DIR: creds, CAIRN_ETCD_USER: 'other' })).to.include({
        username: 'other',
      });
      expect(etcdCredentialsFrom({}, { CAIRN_ETCD_CREDENTIALS_DIR: join(dir, 'absent') })).to.deep.equal({});
    });

    it('refuses half pairs and unreadable files, naming the variable', () => {
      refused(() => etcdCredentialsFrom({}, { CAIRN_ETCD_CERT: file('c', 'C') }), /CAIRN_ETCD_CERT and CAIRN_ETCD_KEY/);
      refused(() => etcdCredentialsFrom({}, { CAIRN_ETCD_USER: 'u' }), /user "u" has no password/);
      refused(() => etcdCredentialsFrom({}, { CAIRN_ETCD_PASSWORD: 'p' }), /no user/);
      refused(() => etcdCredentialsFrom({}, { CAIRN_ETCD_CA: join(dir, 'none') }), /Cannot read CAIRN_ETCD_CA/);
    });

    it('builds etcd3 TLS credentials and auth, and refuses TLS credentials with an http:// endpoint', () => {
      const options = etcd3CredentialOptions(['https://10.0.0.1:2379'], {
        ca: Buffer.from('CA'),
        cert: Buffer.from('C'),
        key: Buffer.from('K'),
        username: 'u',
        password: 'p',
      });
      expect(options.credentials?.rootCertificate.toString()).to.equal('CA');
      expect(options.credentials?.certChain?.toString()).to.equal('C');
      expect(options.auth).to.deep.equal({ username: 'u', password: 'p' });
      expect(etcd3CredentialOptions(['http://h:1'], {})).to.deep.equal({});
      refused(
        () => etcd3CredentialOptions(['http://h:1'], { ca: Buffer.from('CA') }),
        /endpoint http:\/\/h:1 is plaintext/,
      );
    });
  });

  describe('node clients', () => {
    it('reads CAIRN_NODE_CA/CERT/KEY, and uses TLS only for nodes that say tls: true', () => {
      const ca = file('ca.pem', 'CA');
      const env = { CAIRN_NODE_CA: ca, CAIRN_NODE_CERT: file('c', 'C'), CAIRN_NODE_KEY: file('k', 'K') };
      const tls = nodeTlsFromEnv(env);
      expect(tls?.ca?.toString()).to.equal('CA');
      expect(tls?.caSource).to.equal(`CAIRN_NODE_CA ${ca}`);
      expect(nodeTlsFromEnv({})).to.equal(undefined);
      refused(() => nodeTlsFromEnv({ CAIRN_NODE_CERT: env.CAIRN_NODE_CERT }), /CAIRN_NODE_CERT and CAIRN_NODE_KEY/);

      const secrets = environmentSecrets(env);
      expect(nodeClientCredentials(secrets, { name: 'n', tls: true }).tls?.cert?.toString()).to.equal('C');
      // With a cluster CA configured, a node registered without TLS is refused.
      expect(() => nodeClientCredentials(secrets, { name: 'n' })).to.throw(AuthRejectedError, /node "n"/);
      // Without any TLS variable a TLS node is still reached, trusting the system's CAs.
      expect(nodeClientCredentials(environmentSecrets({}), { name: 'n', tls: true }).tls).to.deep.equal({});
    });
  });

  describe('dev env file', () => {
    it('exports the etcd endpoint, node secret and key directory, and with TLS every credential variable, shell-quoted', () => {
      expect(devClientEnv('/d', 'http://127.0.0.1:1', false)).to.deep.equal({
        CAIRN_ETCD: 'http://127.0.0.1:1',
        CAIRN_NODE_SECRET_FILE: '/d/node-secret',
        CAIRN_KEK_DIR: '/d/keks',
      });
      const tls = devClientEnv('/d', 'https://127.0.0.1:1', true);
      expect(tls).to.include({ CAIRN_ETCD_USER: 'cairn', CAIRN_NODE_CA: '/d/tls/ca-cert.pem' });
      expect(envFileText({ A: "it's here", B: '/x y' })).to.equal(`export A='it'\\''s here'\nexport B='/x y'\n`);
    });
  });
});
