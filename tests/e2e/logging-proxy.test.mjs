// logging-proxy.test.mjs — one log line per request (text and JSON lines), and the client IP
// taken from X-Forwarded-For only as far as PYLON_TRUST_PROXY_HOPS says.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { assertErrorEnvelope, request, sleep } from './lib/http.mjs';
import { startPylon } from './lib/server.mjs';

async function waitFor(fn, ms = 2000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (fn()) return true;
    await sleep(20);
  }
  return fn();
}

describe('request log lines', { timeout: 30000 }, () => {
  it('text: one line per request with method, path, status and ip', async () => {
    const srv = await startPylon({ args: ['dev'] });
    try {
      await request(srv.port, { path: '/api/transports?x=1' });
      await request(srv.port, { method: 'POST', path: '/nope', body: '{}' });
      const seen = await waitFor(() => /path=\/nope status=404/.test(srv.stderr));
      assert.ok(seen, srv.stderr);
      const lines = srv.stderr.split('\n').filter((l) => l.includes(' http: request '));
      assert.equal(lines.length, 2, lines.join('\n'));
      // Values holding '=', spaces or quotes are quoted, so the line stays key=value parseable.
      assert.match(lines[0], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  http: request method=GET path="\/api\/transports\?x=1" status=200 ms=\d+\.\d{3} ip=127\.0\.0\.1$/);
      assert.match(lines[1], /method=POST path=\/nope status=404 /);
    } finally {
      await srv.dispose();
    }
  });

  it('JSON lines with PYLON_LOG_FORMAT=json: every stderr line parses', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_LOG_FORMAT: 'json' } });
    try {
      await request(srv.port, { path: '/api/transports' });
      assert.ok(await waitFor(() => srv.stderr.includes('"msg":"request"')), srv.stderr);
      // `pylon dev` prints its configuration first (plain text); the log lines follow.
      const logLines = srv.stderr.split('\n').filter((l) => l.startsWith('{'));
      assert.ok(logLines.length >= 2, srv.stderr);
      const parsed = logLines.map((l) => JSON.parse(l));
      const req = parsed.find((o) => o.msg === 'request');
      assert.equal(req.level, 'info');
      assert.equal(req.module, 'http');
      assert.equal(req.method, 'GET');
      assert.equal(req.path, '/api/transports');
      assert.equal(req.status, 200);
      assert.equal(typeof req.ms, 'number');
      assert.equal(req.ip, '127.0.0.1');
      assert.match(req.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    } finally {
      await srv.dispose();
    }
  });

  it('/health is not logged (load balancers poll it)', async () => {
    const srv = await startPylon({ args: ['dev'] });
    try {
      for (let i = 0; i < 5; i++) await request(srv.port, { path: '/health' });
      await request(srv.port, { path: '/api/transports' });
      assert.ok(await waitFor(() => srv.stderr.includes('path=/api/transports')));
      assert.ok(!srv.stderr.includes('path=/health'), srv.stderr);
    } finally {
      await srv.dispose();
    }
  });
});

describe('PYLON_TRUST_PROXY_HOPS', { timeout: 30000 }, () => {
  let srv;
  before(async () => {
    srv = await startPylon({
      args: ['dev'],
      env: { PYLON_TRUST_PROXY_HOPS: 1, PYLON_RATE_LIMIT_MAX: 2, PYLON_RATE_LIMIT_WINDOW: 60 },
    });
  });
  after(() => srv?.dispose());

  it('the client IP is the last X-Forwarded-For entry: limits and logs are per client', async () => {
    const as = (ip) => ({ path: '/api/transports', headers: { 'x-forwarded-for': `198.51.100.9, ${ip}` } });
    assert.equal((await request(srv.port, as('203.0.113.1'))).status, 200);
    assert.equal((await request(srv.port, as('203.0.113.1'))).status, 200);
    assertErrorEnvelope(await request(srv.port, as('203.0.113.1')), 429, 'RATE_LIMITED');
    // Another client behind the same proxy has its own window.
    assert.equal((await request(srv.port, as('203.0.113.2'))).status, 200);
    assert.ok(await waitFor(() => srv.stderr.includes('ip=203.0.113.2')), srv.stderr);
  });

  it('an entry that is not an IP is ignored: the socket peer counts', async () => {
    const bad = { path: '/api/transports', headers: { 'x-forwarded-for': 'not-an-ip' } };
    assert.equal((await request(srv.port, bad)).status, 200);
    assert.ok(await waitFor(() => /ip=127\.0\.0\.1/.test(srv.stderr)), srv.stderr);
  });
});

describe('without trusted hops, X-Forwarded-For is not believed', { timeout: 30000 }, () => {
  it('a spoofed header does not escape the limit', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_RATE_LIMIT_MAX: 2 } });
    try {
      const spoof = (ip) => ({ path: '/api/transports', headers: { 'x-forwarded-for': ip } });
      assert.equal((await request(srv.port, spoof('10.0.0.1'))).status, 200);
      assert.equal((await request(srv.port, spoof('10.0.0.2'))).status, 200);
      assertErrorEnvelope(await request(srv.port, spoof('10.0.0.3')), 429, 'RATE_LIMITED');
    } finally {
      await srv.dispose();
    }
  });
});
