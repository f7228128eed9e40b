// sse.test.mjs — Server-Sent Events on the SSE port (port+2) and at /events on the main port:
// the response head, the ": connected" comment, and the 30 s keep-alive comment.
//
// SLOW: the keep-alive interval is fixed at 30 s in the server, so the keep-alive test waits
// up to 35 s. It is the only slow test of the suite; both transports are checked at once.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import { RawConn, assertErrorEnvelope, assertHealthy, parseResponse, rawGet, request } from './lib/http.mjs';
import { startPylon } from './lib/server.mjs';

const CONNECTED = ': connected\n\n';
const KEEPALIVE = ': keepalive\n\n';

/** Opens an SSE stream with a raw GET; resolves with { conn, head, body() } once ": connected" arrived. */
async function openSse(port, path, extra = 'Accept: text/event-stream\r\n') {
  const conn = await RawConn.open(port);
  await conn.write(rawGet(path, extra));
  await conn.waitFor(() => {
    const i = conn.buf.indexOf('\r\n\r\n');
    return i >= 0 && conn.buf.length >= i + 4 + CONNECTED.length;
  }, 3000, 'the SSE head and ": connected"');
  const i = conn.buf.indexOf('\r\n\r\n');
  // Parse the head alone (no Content-Length: the body runs until the connection closes).
  const head = parseResponse(Buffer.concat([conn.buf.subarray(0, i + 4)]), { closed: true });
  const bodyStart = i + 4;
  return { conn, head, body: () => conn.buf.subarray(bodyStart).toString('utf8') };
}

describe('SSE', { timeout: 55000 }, () => {
  let srv;
  const streams = [];
  before(async () => {
    srv = await startPylon({ args: ['dev'] });
  });
  afterEach(() => {
    for (const s of streams.splice(0)) s.conn.destroy();
  });
  after(() => srv?.dispose());

  const targets = () => [
    ['SSE port (port+2)', srv.ports.sse, '/events'],
    ['/events on the main port', srv.port, '/events'],
  ];

  for (const idx of [0, 1]) {
    it(`${idx ? '/events on the main port' : 'SSE port (port+2)'}: 200 text/event-stream, first bytes ": connected\\n\\n"`, async () => {
      const [, port, path] = targets()[idx];
      const s = await openSse(port, path);
      streams.push(s);
      assert.equal(s.head.status, 200);
      assert.equal(s.head.headers['content-type'], 'text/event-stream');
      assert.equal(s.head.headers['cache-control'], 'no-cache');
      assert.equal(s.head.headers['content-length'], undefined, 'the body runs until the connection closes');
      assert.equal(s.head.headers['transfer-encoding'], undefined, 'no chunked encoding (the Swift parser reads raw)');
      assert.equal(s.head.headers['access-control-allow-origin'], '*', 'dev CORS');
      assert.equal(s.head.headers['x-content-type-options'], 'nosniff');
      assert.ok(s.body().startsWith(CONNECTED), `body starts with ": connected\\n\\n": ${JSON.stringify(s.body())}`);
      assert.equal(s.conn.ended, false, 'the stream stays open');
    });
  }

  it('any path on the SSE port is the stream', async () => {
    const s = await openSse(srv.ports.sse, '/whatever?token=x', '');
    streams.push(s);
    assert.equal(s.head.status, 200);
    assert.ok(s.body().startsWith(CONNECTED));
  });

  it('the stream works through node http / fetch too', async () => {
    const ac = new AbortController();
    const res = await fetch(`http://127.0.0.1:${srv.port}/events`, { headers: { accept: 'text/event-stream' }, signal: ac.signal });
    try {
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'text/event-stream');
      const reader = res.body.getReader();
      const { value } = await reader.read();
      assert.equal(Buffer.from(value).toString('utf8').slice(0, CONNECTED.length), CONNECTED);
    } finally {
      ac.abort();
    }
  });

  it('POST on the SSE port: 405 METHOD_NOT_ALLOWED', async () => {
    const res = await request(srv.ports.sse, { method: 'POST', path: '/events', body: '' });
    assertErrorEnvelope(res, 405, 'METHOD_NOT_ALLOWED');
  });

  it('POST /events on the main port is not a stream', async () => {
    const res = await request(srv.port, { method: 'POST', path: '/events', body: '' });
    assert.ok(res.status === 404 || res.status === 405, `${res.status} ${res.body}`);
  });

  it('SLOW (35 s budget): the ": keepalive" comment arrives on both transports', { timeout: 40000 }, async () => {
    const a = await openSse(srv.ports.sse, '/events');
    const b = await openSse(srv.port, '/events');
    streams.push(a, b);
    const t0 = Date.now();
    await Promise.all([
      a.conn.waitFor(() => a.body().includes(KEEPALIVE), 35000, 'keepalive on the SSE port'),
      b.conn.waitFor(() => b.body().includes(KEEPALIVE), 35000, 'keepalive on /events'),
    ]);
    const secs = (Date.now() - t0) / 1000;
    assert.ok(secs >= 25, `keep-alive after ${secs.toFixed(1)} s, expected about 30 s`);
    for (const s of [a, b]) {
      assert.equal(s.body(), CONNECTED + KEEPALIVE, 'exactly ": connected" then ": keepalive", nothing else');
      assert.equal(s.conn.ended, false);
    }
  });

  it('the server is still healthy', async () => {
    await assertHealthy(srv.port);
  });
});
