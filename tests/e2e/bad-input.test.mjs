// bad-input.test.mjs — what the server does with requests it must refuse: unknown routes,
// wrong methods, oversized headers and bodies, garbage, slow clients, too many connections.
// After every refusal the server still answers /health on a new connection.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import { RawConn, assertErrorEnvelope, assertHealthy, rawGet, request, sleep } from './lib/http.mjs';
import { startPylon } from './lib/server.mjs';

const MiB = 1024 * 1024;

describe('refused requests', { timeout: 50000 }, () => {
  let srv;
  const conns = [];
  const open = async () => {
    const c = await RawConn.open(srv.port);
    conns.push(c);
    return c;
  };
  before(async () => {
    srv = await startPylon({ args: ['dev'], env: { PYLON_HEADER_TIMEOUT_SECS: 1, PYLON_BODY_TIMEOUT_SECS: 1 } });
  });
  afterEach(async () => {
    for (const c of conns.splice(0)) c.destroy();
    await assertHealthy(srv.port, 'after the previous case');
  });
  after(() => srv?.dispose());

  it('unknown route: 404 NOT_FOUND', async () => {
    const res = await request(srv.port, { path: '/no/such/route?x=1' });
    const e = assertErrorEnvelope(res, 404, 'NOT_FOUND');
    assert.equal(e.message, 'No API route matches /no/such/route');
  });

  it('wrong method (POST /health): 405 METHOD_NOT_ALLOWED with an Allow header', async () => {
    const res = await request(srv.port, { method: 'POST', path: '/health', body: '' });
    assertErrorEnvelope(res, 405, 'METHOD_NOT_ALLOWED');
    const allow = (res.headers.allow ?? '').split(',').map((s) => s.trim());
    assert.ok(allow.includes('GET'), `Allow: ${res.headers.allow}`);
    assert.ok(allow.includes('HEAD'), `Allow: ${res.headers.allow}`);
    assert.ok(!allow.includes('POST'), `Allow: ${res.headers.allow}`);
  });

  it('DELETE /api/transports: 405 with Allow: GET', async () => {
    const res = await request(srv.port, { method: 'DELETE', path: '/api/transports' });
    assertErrorEnvelope(res, 405, 'METHOD_NOT_ALLOWED');
    assert.match(res.headers.allow ?? '', /\bGET\b/);
  });

  it('headers over 16 KiB: 431 and close', async () => {
    const c = await open();
    await c.write(rawGet('/health', `X-Big: ${'a'.repeat(17 * 1024)}\r\n`));
    const res = await c.readResponse();
    assert.equal(res.status, 431);
    assert.equal(res.json?.error?.code, 'HEADERS_TOO_LARGE');
    assert.equal(res.headers.connection, 'close');
    assert.ok(await c.waitClosed(4000), 'the connection is closed after a 431');
  });

  it('headers of 15 KiB are fine', async () => {
    const c = await open();
    await c.write(rawGet('/health', `X-Big: ${'a'.repeat(15 * 1024)}\r\n`));
    const res = await c.readResponse();
    assert.equal(res.status, 200);
  });

  it('more than 99 headers: 431', async () => {
    const c = await open();
    let extra = '';
    for (let i = 0; i < 120; i++) extra += `X-H${i}: v\r\n`;
    await c.write(rawGet('/health', extra));
    const res = await c.readResponse();
    assert.equal(res.status, 431);
    assert.equal(res.json?.error?.code, 'HEADERS_TOO_LARGE');
  });

  it('Content-Length of 11 MiB: 413 PAYLOAD_TOO_LARGE before the body is sent', async () => {
    const c = await open();
    await c.write(`POST /api/upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: ${11 * MiB}\r\n\r\n`);
    const res = await c.readResponse();
    assert.equal(res.status, 413);
    assert.equal(res.json?.error?.code, 'PAYLOAD_TOO_LARGE');
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.equal(res.headers.connection, 'close');
    assert.ok(await c.waitClosed(4000), 'the connection is closed after a 413');
  });

  it('a chunked body that grows past 10 MiB: 413', async () => {
    const c = await open();
    await c.write('POST /api/upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n');
    const chunk = Buffer.concat([Buffer.from(`${MiB.toString(16)}\r\n`), Buffer.alloc(MiB, 0x61), Buffer.from('\r\n')]);
    for (let i = 0; i < 12 && !c.closed && c.buf.length === 0; i++) {
      const err = await c.write(chunk);
      if (err) break; // the server may have stopped listening: the answer is what counts
    }
    const res = await c.readResponse(5000);
    assert.equal(res.status, 413);
    assert.equal(res.json?.error?.code, 'PAYLOAD_TOO_LARGE');
  });

  it('a body of exactly 10 MiB is accepted (and answered: 405 on /health)', async () => {
    const c = await open();
    await c.write(`POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${10 * MiB}\r\n\r\n`);
    await c.write(Buffer.alloc(10 * MiB, 0x62));
    const res = await c.readResponse(5000);
    assert.equal(res.status, 405);
  });

  it('garbage bytes: 400 and close', async () => {
    const c = await open();
    await c.write('GARBAGE\r\n\r\n');
    const res = await c.readResponse();
    assert.equal(res.status, 400);
    assert.equal(res.json?.error?.code, 'BAD_REQUEST');
    assert.equal(res.headers.connection, 'close');
    assert.ok(await c.waitClosed(4000), 'the connection is closed after a 400');
  });

  it('binary garbage: 400 and close', async () => {
    const c = await open();
    await c.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])); // a TLS ClientHello
    const res = await c.readResponse();
    assert.equal(res.status, 400);
    assert.ok(await c.waitClosed(4000));
  });

  it('an invalid Content-Length: 400', async () => {
    const c = await open();
    await c.write('POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n');
    const res = await c.readResponse();
    assert.equal(res.status, 400);
    assert.equal(res.json?.error?.code, 'BAD_REQUEST');
  });

  it('Content-Length together with Transfer-Encoding (request smuggling): 400', async () => {
    const c = await open();
    await c.write('POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    const res = await c.readResponse();
    assert.equal(res.status, 400);
    assert.ok(await c.waitClosed(4000));
  });

  it('half the headers then a stall: 408 after PYLON_HEADER_TIMEOUT_SECS=1', async () => {
    const c = await open();
    const t0 = Date.now();
    await c.write('GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ');
    const res = await c.readResponse(4000);
    const ms = Date.now() - t0;
    assert.equal(res.status, 408);
    assert.equal(res.json?.error?.code, 'REQUEST_TIMEOUT');
    assert.equal(res.headers.connection, 'close');
    assert.ok(ms < 3500, `408 after ${ms} ms (timeout 1 s, swept once a second)`);
    assert.ok(await c.waitClosed(4000), 'the connection is closed after a 408');
  });

  it('headers trickled one byte at a time still time out (deadline from the first byte)', async () => {
    const c = await open();
    const req = rawGet('/health', 'X-Padding: 0123456789012345678901234567890123456789\r\n');
    const t0 = Date.now();
    let i = 0;
    while (i < req.length && c.buf.length === 0 && !c.closed && Date.now() - t0 < 4000) {
      await c.write(req[i++]);
      await sleep(50);
    }
    const res = await c.readResponse(2000);
    assert.equal(res.status, 408, 'a slowloris client cannot keep a request open by trickling');
    assert.ok(i < req.length, 'answered before the request was complete');
  });

  it('a body that stalls: 408 after PYLON_BODY_TIMEOUT_SECS=1', async () => {
    const c = await open();
    const t0 = Date.now();
    await c.write('POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20\r\n\r\n0123456789');
    const res = await c.readResponse(4000);
    const ms = Date.now() - t0;
    assert.equal(res.status, 408);
    assert.equal(res.json?.error?.code, 'REQUEST_TIMEOUT');
    assert.ok(ms < 3500, `408 after ${ms} ms`);
    assert.ok(await c.waitClosed(4000));
  });

  it('a connection that never sends a byte is closed without an answer', async () => {
    const c = await open();
    assert.ok(await c.waitClosed(4000), 'closed after the header timeout');
    assert.equal(c.total, 0, 'no bytes were sent to a silent client');
  });
});

describe('timeouts are never shorter than configured: PYLON_HEADER_TIMEOUT_SECS=2', { timeout: 30000 }, () => {
  let srv;
  const conns = [];
  before(async () => {
    srv = await startPylon({ args: ['dev'], env: { PYLON_HEADER_TIMEOUT_SECS: 2 } });
  });
  after(async () => {
    for (const c of conns) c.destroy();
    await srv?.dispose();
  });

  it('headers completed 1.3 s after the first byte are answered, whatever the phase of the sweep', async () => {
    // The server checks deadlines once a second. Find when that check runs: a silent
    // connection is closed by it.
    const probe = await RawConn.open(srv.port);
    conns.push(probe);
    assert.ok(await probe.waitClosed(4000), 'a silent connection is closed by the sweep');
    const sweepAt = Date.now();
    // Start a request 0.85 s after a sweep (just before the next one) and finish it 1.3 s
    // later: well within the 2 s the operator configured.
    await sleep(Math.max(0, sweepAt + 850 - Date.now()));
    const c = await RawConn.open(srv.port);
    conns.push(c);
    const t0 = Date.now();
    await c.write('GET /health HTTP/1.1\r\nHost: localhost\r\n');
    await sleep(1300);
    await c.write('X-Late: 1\r\n\r\n');
    const res = await c.readResponse(3000);
    assert.equal(res.status, 200, `headers took ${Date.now() - t0} ms of the 2 s allowed, got ${res.status} ${res.text}`);
  });
});

// With several I/O loops, connections are dealt round-robin over them: the cap is the server's.
for (const io of [1, 3]) describe(`per-IP connection cap: PYLON_MAX_CONNS_PER_IP=3, PYLON_IO_THREADS=${io}`, { timeout: 30000 }, () => {
  let srv;
  const conns = [];
  before(async () => {
    srv = await startPylon({ args: ['dev'], env: { PYLON_MAX_CONNS_PER_IP: 3, PYLON_IO_THREADS: io } });
    // The readiness probe's connection must be gone before we count ours.
    await sleep(200);
  });
  after(async () => {
    for (const c of conns) c.destroy();
    await srv?.dispose();
  });

  it('the 4th simultaneous connection is closed without a response', async () => {
    for (let i = 0; i < 3; i++) {
      const c = await RawConn.open(srv.port);
      conns.push(c);
      await c.write(rawGet('/health')); // keep-alive: the connection stays open afterwards
      const res = await c.readResponse();
      assert.equal(res.status, 200, `connection #${i + 1}`);
    }
    const fourth = await RawConn.open(srv.port);
    conns.push(fourth);
    await fourth.write(rawGet('/health'));
    assert.ok(await fourth.waitClosed(3000), 'the 4th connection is closed');
    assert.equal(fourth.total, 0, 'no response on the 4th connection');
    // The three admitted connections still work.
    for (const c of conns.slice(0, 3)) {
      await c.write(rawGet('/health'));
      assert.equal((await c.readResponse()).status, 200);
    }
  });

  it('closing one connection frees a slot', async () => {
    conns[0].destroy();
    await sleep(200);
    const c = await RawConn.open(srv.port);
    conns.push(c);
    await c.write(rawGet('/health'));
    assert.equal((await c.readResponse()).status, 200);
  });

  it('the cap is counted in /metrics as rejected connections', async () => {
    for (const c of conns) c.destroy();
    await sleep(200);
    const res = await request(srv.port, { path: '/metrics', headers: { accept: 'text/plain' } });
    assert.equal(res.status, 200);
    const m = /^pylon_rejected_connections_total (\d+)$/m.exec(res.body);
    assert.ok(m, 'pylon_rejected_connections_total present');
    assert.ok(Number(m[1]) >= 1, `rejected ${m[1]}`);
  });
});
