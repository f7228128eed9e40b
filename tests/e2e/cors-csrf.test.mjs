// cors-csrf.test.mjs — CORS headers (dev and serve), preflight, security headers, and the
// CSRF origin check for cookie-style (non-Bearer) writes.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { assertErrorEnvelope, request } from './lib/http.mjs';
import { SERVE_ENV, startPylon } from './lib/server.mjs';

const APP = 'https://app.example';
const EVIL = 'https://evil.example';

function assertSecurityHeaders(h, what) {
  assert.equal(h['x-content-type-options'], 'nosniff', `${what}: X-Content-Type-Options`);
  assert.equal(h['x-frame-options'], 'DENY', `${what}: X-Frame-Options`);
  assert.equal(h['referrer-policy'], 'strict-origin-when-cross-origin', `${what}: Referrer-Policy`);
  assert.ok(h['permissions-policy'], `${what}: Permissions-Policy`);
}

function assertCorsMethodsHeaders(h, what) {
  const methods = (h['access-control-allow-methods'] ?? '').split(',').map((s) => s.trim());
  for (const m of ['GET', 'POST', 'PATCH', 'DELETE', 'OPTIONS']) assert.ok(methods.includes(m), `${what}: Allow-Methods has ${m}`);
  const hdrs = (h['access-control-allow-headers'] ?? '').toLowerCase().split(',').map((s) => s.trim());
  for (const x of ['content-type', 'authorization']) assert.ok(hdrs.includes(x), `${what}: Allow-Headers has ${x}`);
}

describe('CORS in dev', { timeout: 30000 }, () => {
  let srv;
  before(async () => {
    srv = await startPylon({ args: ['dev'] });
  });
  after(() => srv?.dispose());

  it('Access-Control-Allow-Origin: * without credentials', async () => {
    const res = await request(srv.port, { path: '/health', headers: { origin: EVIL } });
    assert.equal(res.status, 200);
    assert.equal(res.headers['access-control-allow-origin'], '*');
    assert.equal(res.headers['access-control-allow-credentials'], undefined, '* never goes with credentials');
    assertCorsMethodsHeaders(res.headers, 'dev');
    assertSecurityHeaders(res.headers, 'dev /health');
  });

  it('OPTIONS preflight: 204, empty body, CORS headers', async () => {
    const res = await request(srv.port, {
      method: 'OPTIONS',
      path: '/api/entities/Todo',
      headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, authorization' },
    });
    assert.equal(res.status, 204);
    assert.equal(res.body, '');
    assert.equal(res.headers['access-control-allow-origin'], '*');
    assertCorsMethodsHeaders(res.headers, 'dev preflight');
  });

  it('CSRF allows any origin in dev', async () => {
    const res = await request(srv.port, { method: 'POST', path: '/api/nothing-here', headers: { origin: EVIL, 'content-type': 'application/json' }, body: '{}' });
    assertErrorEnvelope(res, 404, 'NOT_FOUND');
  });
});

describe('CORS and CSRF in serve mode', { timeout: 30000 }, () => {
  let srv;
  before(async () => {
    srv = await startPylon({ args: ['serve'], env: { ...SERVE_ENV, PYLON_CORS_ORIGIN: APP, PYLON_CSRF_ORIGINS: APP } });
  });
  after(() => srv?.dispose());

  it('Access-Control-Allow-Origin is the configured origin, with credentials and Vary: Origin', async () => {
    for (const origin of [APP, EVIL, undefined]) {
      const res = await request(srv.port, { path: '/health', headers: origin ? { origin } : {} });
      assert.equal(res.status, 200);
      assert.equal(res.headers['access-control-allow-origin'], APP, `Origin: ${origin}`);
      assert.equal(res.headers['access-control-allow-credentials'], 'true');
      assert.match(res.headers.vary ?? '', /\bOrigin\b/);
      assertCorsMethodsHeaders(res.headers, `serve, Origin ${origin}`);
      assertSecurityHeaders(res.headers, 'serve /health');
    }
  });

  it('OPTIONS preflight: 204, empty body, the CORS headers', async () => {
    const res = await request(srv.port, {
      method: 'OPTIONS',
      path: '/api/entities/Todo',
      headers: { origin: APP, 'access-control-request-method': 'PATCH', 'access-control-request-headers': 'authorization' },
    });
    assert.equal(res.status, 204);
    assert.equal(res.body, '');
    assert.equal(res.headers['access-control-allow-origin'], APP);
    assert.equal(res.headers['access-control-allow-credentials'], 'true');
    assert.match(res.headers.vary ?? '', /\bOrigin\b/);
    assertCorsMethodsHeaders(res.headers, 'serve preflight');
    assertSecurityHeaders(res.headers, 'serve preflight');
  });

  it('OPTIONS preflight from another origin is not CSRF-rejected (OPTIONS is exempt)', async () => {
    const res = await request(srv.port, { method: 'OPTIONS', path: '/x', headers: { origin: EVIL, 'access-control-request-method': 'POST' } });
    assert.equal(res.status, 204);
  });

  it('error answers carry the CORS and security headers too', async () => {
    const res = await request(srv.port, { path: '/no/such/route', headers: { origin: APP } });
    assertErrorEnvelope(res, 404, 'NOT_FOUND');
    assert.equal(res.headers['access-control-allow-origin'], APP);
    assertSecurityHeaders(res.headers, '404');
  });

  it('POST with Origin https://evil.example and no Authorization: 403 CSRF_REJECTED', async () => {
    for (const path of ['/api/entities/Todo', '/health', '/anything']) {
      const res = await request(srv.port, { method: 'POST', path, headers: { origin: EVIL, 'content-type': 'application/json' }, body: '{}' });
      const e = assertErrorEnvelope(res, 403, 'CSRF_REJECTED');
      assert.ok(e.message.includes(EVIL), `message names the origin: ${e.message}`);
      assert.equal(e.message, `Origin '${EVIL}' not allowed`);
      assert.equal(res.headers['access-control-allow-origin'], APP, 'a browser can read the refusal');
    }
  });

  it('PATCH and DELETE from another origin are rejected too', async () => {
    for (const method of ['PATCH', 'DELETE', 'PUT']) {
      const res = await request(srv.port, { method, path: '/api/entities/Todo/1', headers: { origin: EVIL } });
      assertErrorEnvelope(res, 403, 'CSRF_REJECTED');
    }
  });

  it('POST with Origin https://app.example passes the check (404 for an unknown route)', async () => {
    const res = await request(srv.port, { method: 'POST', path: '/api/nothing-here', headers: { origin: APP, 'content-type': 'application/json' }, body: '{}' });
    assertErrorEnvelope(res, 404, 'NOT_FOUND');
  });

  it('POST with Authorization: Bearer is never CSRF-rejected', async () => {
    const res = await request(srv.port, { method: 'POST', path: '/api/nothing-here', headers: { origin: EVIL, authorization: 'Bearer x' }, body: '{}' });
    assert.notEqual(res.status, 403, res.body);
    assertErrorEnvelope(res, 404, 'NOT_FOUND');
  });

  it('the origin derived from Referer is checked when there is no Origin', async () => {
    const bad = await request(srv.port, { method: 'POST', path: '/api/x', headers: { referer: `${EVIL}/some/page?q=1` }, body: '{}' });
    const e = assertErrorEnvelope(bad, 403, 'CSRF_REJECTED');
    assert.equal(e.message, `Origin '${EVIL}' not allowed`);
    const good = await request(srv.port, { method: 'POST', path: '/api/x', headers: { referer: `${APP}/some/page` }, body: '{}' });
    assertErrorEnvelope(good, 404, 'NOT_FOUND');
  });

  it('no Origin and no Referer (server to server) is allowed', async () => {
    const res = await request(srv.port, { method: 'POST', path: '/api/x', body: '{}' });
    assertErrorEnvelope(res, 404, 'NOT_FOUND');
  });

  it('GET from another origin is not CSRF-checked', async () => {
    const res = await request(srv.port, { path: '/api/transports', headers: { origin: EVIL } });
    assert.equal(res.status, 200);
  });
});

describe('CSRF allowlist defaults to PYLON_CORS_ORIGIN outside dev', { timeout: 30000 }, () => {
  let srv;
  before(async () => {
    srv = await startPylon({ args: ['serve'], env: { ...SERVE_ENV, PYLON_CORS_ORIGIN: APP } });
  });
  after(() => srv?.dispose());

  it('the CORS origin is allowed, another is rejected', async () => {
    const ok = await request(srv.port, { method: 'POST', path: '/api/x', headers: { origin: APP }, body: '{}' });
    assertErrorEnvelope(ok, 404, 'NOT_FOUND');
    const bad = await request(srv.port, { method: 'POST', path: '/api/x', headers: { origin: EVIL }, body: '{}' });
    assertErrorEnvelope(bad, 403, 'CSRF_REJECTED');
  });
});
