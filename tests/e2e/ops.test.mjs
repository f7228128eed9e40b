// ops.test.mjs — /health, /readyz, /metrics (JSON and Prometheus, admin token outside dev) and
// GET /api/transports.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { assertErrorEnvelope, request } from './lib/http.mjs';
import { ADMIN_TOKEN, SERVE_ENV, runPylon, startPylon } from './lib/server.mjs';

let version;
before(async () => {
  const r = await runPylon(['version']);
  version = r.stdout.trim().replace(/^pylon /, '');
});

describe('dev server', { timeout: 30000 }, () => {
  let srv;
  before(async () => {
    srv = await startPylon({ args: ['dev'] });
  });
  after(() => srv?.dispose());

  it('GET /health: 200 {"status":"ok","uptime_seconds":N,"uptime_secs":N,"version":...}', async () => {
    const res = await fetch(srv.url('/health'));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    const j = await res.json();
    assert.deepEqual(Object.keys(j).sort(), ['status', 'uptime_seconds', 'uptime_secs', 'version']);
    assert.equal(j.status, 'ok');
    assert.ok(Number.isInteger(j.uptime_seconds) && j.uptime_seconds >= 0, `uptime_seconds ${j.uptime_seconds}`);
    assert.equal(j.uptime_secs, j.uptime_seconds);
    assert.equal(j.version, version, 'the same version as `pylon version`');
  });

  it('HEAD /health: 200 with the length and no body', async () => {
    const res = await request(srv.port, { method: 'HEAD', path: '/health' });
    assert.equal(res.status, 200);
    assert.ok(Number(res.headers['content-length']) > 0);
    assert.equal(res.body, '');
  });

  it('GET /readyz: 200 {"status":"ready"}', async () => {
    const res = await fetch(srv.url('/readyz'));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    assert.deepEqual(await res.json(), { status: 'ready' });
  });

  it('GET /metrics: JSON by default (dev: no token needed)', async () => {
    const res = await request(srv.port, { path: '/metrics' });
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'], /^application\/json/);
    const j = res.json;
    assert.ok(Number.isInteger(j.uptime_secs));
    for (const k of ['total', 'ok', 'error']) assert.ok(Number.isInteger(j.requests[k]), `requests.${k}`);
    for (const m of ['GET', 'POST', 'PATCH', 'DELETE']) assert.ok(Number.isInteger(j.methods[m]), `methods.${m}`);
    assert.ok(j.requests.total >= 1, 'earlier requests were counted');
    assert.ok(j.connections && typeof j.connections === 'object', 'connections per transport');
    assert.ok(j.connections.http >= 1, 'this very connection is open');
  });

  it('GET /metrics with Accept: text/plain: Prometheus text', async () => {
    const res = await request(srv.port, { path: '/metrics', headers: { accept: 'text/plain' } });
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/);
    const t = res.body;
    for (const name of ['pylon_http_requests_total', 'pylon_http_request_duration_seconds_bucket', 'pylon_open_connections', 'pylon_shard_tick_duration_seconds_bucket', 'pylon_shard_tick_lateness_seconds_bucket', 'pylon_changelog_head_seq', 'pylon_persistence_queue_depth', 'pylon_persistence_commit_batch_mean'])
      assert.ok(t.includes(name), `${name} missing`);
    assert.match(t, /^# TYPE pylon_http_requests_total counter$/m);
    assert.match(t, /^pylon_http_requests_total \d+$/m);
    assert.match(t, /^# TYPE pylon_http_request_duration_seconds histogram$/m);
    assert.match(t, /^pylon_http_request_duration_seconds_bucket\{le="\+Inf"\} \d+$/m);
    assert.match(t, /^pylon_http_request_duration_seconds_count \d+$/m);
    assert.match(t, /^pylon_open_connections\{transport="http"\} [1-9]\d*$/m);
    // Every sample line is `name{labels} value`, every metric has HELP and TYPE.
    for (const line of t.trim().split('\n')) {
      if (line.startsWith('#')) assert.match(line, /^# (HELP|TYPE) [a-z_]+ .+$/, line);
      else assert.match(line, /^[a-z_]+(\{[a-z_]+="[^"]*"\})? [0-9.e+-]+$/, line);
    }
    // Buckets are cumulative.
    const buckets = [...t.matchAll(/^pylon_http_request_duration_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)].map((m) => Number(m[2]));
    assert.ok(buckets.length >= 2);
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i] >= buckets[i - 1], 'cumulative buckets');
  });

  it('GET /metrics with Accept: application/openmetrics-text: Prometheus text', async () => {
    const res = await request(srv.port, { path: '/metrics', headers: { accept: 'application/openmetrics-text; version=1.0.0' } });
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'], /^text\/plain/);
    assert.match(res.body, /^pylon_http_requests_total \d+$/m);
  });

  it('GET /api/transports advertises the four transports on this host', async () => {
    const p = srv.port;
    const res = await request(p, { path: '/api/transports' });
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.deepEqual(res.json, {
      http: `http://127.0.0.1:${p}`,
      websocket: `ws://127.0.0.1:${p + 1}`,
      sse: `http://127.0.0.1:${p + 2}/events`,
      shards: `ws://127.0.0.1:${p + 3}`,
      paths: { websocket: '/ws', sse: '/events', shards: '/shard/<id>' },
    });
  });

  it('GET /api/transports uses the Host the client used', async () => {
    const p = srv.port;
    const res = await request(p, { path: '/api/transports', headers: { host: `pylon.local:${p}` } });
    assert.equal(res.status, 200);
    assert.equal(res.json.websocket, `ws://pylon.local:${p + 1}`);
    assert.equal(res.json.http, `http://pylon.local:${p}`);
  });
});

describe('PYLON_WS_URL', { timeout: 30000 }, () => {
  let srv;
  before(async () => {
    srv = await startPylon({ args: ['dev'], env: { PYLON_WS_URL: 'wss://example.com/ws' } });
  });
  after(() => srv?.dispose());

  it('GET /api/transports advertises PYLON_WS_URL', async () => {
    const res = await request(srv.port, { path: '/api/transports' });
    assert.equal(res.status, 200);
    const j = res.json;
    assert.equal(j.websocket, 'wss://example.com/ws');
    assert.deepEqual(Object.keys(j).sort(), ['http', 'paths', 'shards', 'sse', 'websocket']);
    for (const k of ['http', 'sse', 'shards']) assert.equal(typeof j[k], 'string');
    assert.deepEqual(j.paths, { websocket: '/ws', sse: '/events', shards: '/shard/<id>' });
  });
});

describe('serve mode (non-dev): /metrics needs the admin token', { timeout: 30000 }, () => {
  let srv;
  before(async () => {
    srv = await startPylon({ args: ['serve'], env: { ...SERVE_ENV } });
  });
  after(() => srv?.dispose());

  it('GET /health needs no token', async () => {
    const res = await request(srv.port, { path: '/health' });
    assert.equal(res.status, 200);
    assert.equal(res.json.status, 'ok');
  });

  it('GET /readyz needs no token', async () => {
    const res = await request(srv.port, { path: '/readyz' });
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { status: 'ready' });
  });

  it('GET /metrics without a token: 401 UNAUTHORIZED', async () => {
    const res = await request(srv.port, { path: '/metrics' });
    const e = assertErrorEnvelope(res, 401, 'UNAUTHORIZED');
    assert.equal(e.message, '/metrics requires admin bearer token in non-dev mode');
  });

  it('GET /metrics (Prometheus) without a token: 401 too', async () => {
    const res = await request(srv.port, { path: '/metrics', headers: { accept: 'text/plain' } });
    assertErrorEnvelope(res, 401, 'UNAUTHORIZED');
  });

  it('GET /metrics with a wrong token: 401', async () => {
    for (const auth of [`Bearer ${ADMIN_TOKEN.slice(0, -1)}f`, `Bearer ${ADMIN_TOKEN}x`, `Bearer ${ADMIN_TOKEN.slice(1)}`, `Basic ${ADMIN_TOKEN}`, 'Bearer ']) {
      const res = await request(srv.port, { path: '/metrics', headers: { authorization: auth } });
      assert.equal(res.status, 401, `Authorization: ${auth}`);
    }
  });

  it('GET /metrics with Authorization: Bearer <admin token>: 200 (JSON and Prometheus)', async () => {
    const res = await request(srv.port, { path: '/metrics', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(res.status, 200);
    assert.ok(Number.isInteger(res.json.requests.total));
    const prom = await request(srv.port, { path: '/metrics', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, accept: 'text/plain' } });
    assert.equal(prom.status, 200);
    assert.match(prom.body, /^pylon_http_requests_total \d+$/m);
  });
});
