import { expect } from 'chai';
import type { IncomingMessage } from 'node:http';
import { crossSite } from '../../../../src/api/http/server.js';

const req = (headers: Record<string, string>): IncomingMessage =>
  ({ headers: { host: 'cairn.example:8080', ...headers } }) as unknown as IncomingMessage;

describe('api: a change a browser asks for from another site is not the session cookie’s', () => {
  it('trusts the same origin, and clients that send neither header (curl, the CLI)', () => {
    expect(crossSite(req({}))).to.equal(false);
    expect(crossSite(req({ origin: 'http://cairn.example:8080' }))).to.equal(false);
    expect(crossSite(req({ 'sec-fetch-site': 'same-origin', origin: 'https://cairn.example:8080' }))).to.equal(false);
    expect(crossSite(req({ 'sec-fetch-site': 'none' }))).to.equal(false);
  });

  it('refuses another origin, another port, an opaque origin, and what the browser calls cross-site', () => {
    expect(crossSite(req({ origin: 'http://evil.example' }))).to.equal(true);
    expect(crossSite(req({ origin: 'http://cairn.example:9999' }))).to.equal(true);
    expect(crossSite(req({ origin: 'null' }))).to.equal(true);
    expect(crossSite(req({ origin: 'not a url' }))).to.equal(true);
    expect(crossSite(req({ 'sec-fetch-site': 'cross-site' }))).to.equal(true);
    expect(crossSite(req({ 'sec-fetch-site': 'same-site' }))).to.equal(true);
  });
});
