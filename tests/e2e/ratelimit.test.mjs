// ratelimit.test.mjs — the per-IP request cap: 429 RATE_LIMITED with Retry-After once the
// window is full; OPTIONS, /health (and /metrics) are exempt.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { assertErrorEnvelope, request } from './lib/http.mjs';
import { startPylon } from './lib/server.mjs';

// With several I/O loops a client's connections are dealt round-robin over them: the limit
// must hold for all of them together (each request below opens its own connection).
for (const io of [1, 3]) describe(`rate limit: PYLON_RATE_LIMIT_MAX=5 per PYLON_RATE_LIMIT_WINDOW=60, PYLON_IO_THREADS=${io}`, { timeout: 30000 }, () => {
  let srv;
  before(async () => {
    srv = await startPylon({ args: ['dev'], env: { PYLON_RATE_LIMIT_MAX: 5, PYLON_RATE_LIMIT_WINDOW: 60, PYLON_IO_THREADS: io } });
  });
  after(() => srv?.dispose());

  it('exempt requests first: they do not use up the window', async () => {
    for (let i = 0; i < 10; i++) {
      const h = await request(srv.port, { path: '/health' });
      assert.equal(h.status, 200, `/health #${i + 1}`);
      const o = await request(srv.port, { method: 'OPTIONS', path: '/api/transports', headers: { origin: 'https://app.example' } });
      assert.equal(o.status, 204, `OPTIONS #${i + 1}`);
    }
  });

  it('five requests pass, the sixth gets 429 RATE_LIMITED with Retry-After >= 1', async () => {
    for (let i = 1; i <= 5; i++) {
      const res = await request(srv.port, { path: '/api/transports' });
      assert.equal(res.status, 200, `request #${i}: ${res.body}`);
    }
    const res = await request(srv.port, { path: '/api/transports' });
    const e = assertErrorEnvelope(res, 429, 'RATE_LIMITED');
    const retry = res.headers['retry-after'];
    assert.match(retry ?? '', /^\d+$/, `Retry-After: ${retry}`);
    const secs = Number(retry);
    assert.ok(secs >= 1 && secs <= 60, `Retry-After ${secs} within the window`);
    assert.equal(e.message, `Too many requests. Retry after ${secs} seconds.`);
    assert.equal(res.headers['access-control-allow-origin'], '*', 'the 429 carries CORS headers');
  });

  it('every path counts once the window is full (404s and other methods too)', async () => {
    const a = await request(srv.port, { path: '/no/such/route' });
    assertErrorEnvelope(a, 429, 'RATE_LIMITED');
    const b = await request(srv.port, { method: 'POST', path: '/api/x', body: '{}' });
    assertErrorEnvelope(b, 429, 'RATE_LIMITED');
    const c = await request(srv.port, { path: '/readyz' });
    assertErrorEnvelope(c, 429, 'RATE_LIMITED');
  });

  it('OPTIONS is exempt', async () => {
    const res = await request(srv.port, { method: 'OPTIONS', path: '/api/transports' });
    assert.equal(res.status, 204);
  });

  it('/health is exempt', async () => {
    const res = await request(srv.port, { path: '/health' });
    assert.equal(res.status, 200);
    assert.equal(res.json.status, 'ok');
  });

  it('/metrics is exempt (the operations fast path)', async () => {
    const res = await request(srv.port, { path: '/metrics' });
    assert.equal(res.status, 200);
  });
});
