// keepalive.test.mjs — HTTP/1.1 connection handling: pipelining, keep-alive, Connection: close,
// HTTP/1.0, chunked request bodies and Expect: 100-continue.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, afterEach, before, describe, it } from 'node:test';

import { RawConn, rawGet, request } from './lib/http.mjs';
import { startPylon } from './lib/server.mjs';

describe('keep-alive and pipelining', { timeout: 30000 }, () => {
  let srv;
  const conns = [];
  const open = async () => {
    const c = await RawConn.open(srv.port);
    conns.push(c);
    return c;
  };
  before(async () => {
    srv = await startPylon({ args: ['dev'] });
  });
  afterEach(() => {
    for (const c of conns.splice(0)) c.destroy();
  });
  after(() => srv?.dispose());

  it('three GET requests written at once: three responses, in order', async () => {
    const c = await open();
    // /readyz is answered by an actor on another thread, the others inline: order must hold anyway.
    await c.write(rawGet('/readyz') + rawGet('/health') + rawGet('/api/transports'));
    const r1 = await c.readResponse();
    const r2 = await c.readResponse();
    const r3 = await c.readResponse();
    assert.equal(r1.status, 200);
    assert.deepEqual(r1.json, { status: 'ready' });
    assert.equal(r2.status, 200);
    assert.equal(r2.json.status, 'ok');
    assert.equal(r3.status, 200);
    assert.equal(r3.json.websocket, `ws://localhost:${srv.port + 1}`);
    for (const r of [r1, r2, r3]) assert.equal(r.headers.connection, undefined, 'keep-alive: no Connection: close');
    assert.equal(c.buf.length, 0, 'nothing more');
    assert.equal(c.ended, false, 'the connection stays open');
  });

  it('pipelined requests with errors in between keep their order', async () => {
    const c = await open();
    await c.write(rawGet('/nope') + 'POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc' + rawGet('/readyz') + rawGet('/health'));
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await c.readResponse()).status);
    assert.deepEqual(statuses, [404, 405, 200, 200]);
  });

  it('requests arriving while an actor answers the first, then a half-close: all answered in order, then closed', async () => {
    // The server keeps reading while a request is with an actor (it does not stop and restart
    // reading per request); what arrives meanwhile waits its turn, and the peer's FIN
    // (half-close) waits until the answers are out.
    const c = await open();
    await c.write(rawGet('/readyz'));
    await c.write(rawGet('/health'));
    await c.write(rawGet('/readyz'));
    c.sock.end();
    const got = [];
    for (let i = 0; i < 3; i++) {
      const r = await c.readResponse();
      got.push([r.status, r.json.status]);
    }
    assert.deepEqual(got, [[200, 'ready'], [200, 'ok'], [200, 'ready']]);
    await c.waitFor(() => c.ended, 3000, 'the server to close after the half-close');
  });

  it('many pipelined requests in one write', async () => {
    const c = await open();
    const n = 50;
    await c.write(Array.from({ length: n }, (_, i) => rawGet(i % 2 ? '/readyz' : '/health')).join(''));
    for (let i = 0; i < n; i++) {
      const r = await c.readResponse();
      assert.equal(r.status, 200);
      if (i % 2) assert.deepEqual(r.json, { status: 'ready' });
      else assert.equal(r.json.status, 'ok');
    }
  });

  it('a request split across many writes is parsed', async () => {
    const c = await open();
    const req = rawGet('/health', 'X-A: 1\r\nX-B: 2\r\n');
    for (let i = 0; i < req.length; i += 7) await c.write(req.slice(i, i + 7));
    assert.equal((await c.readResponse()).status, 200);
  });

  it('keep-alive reuses the connection (node http.Agent)', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const a = await request(srv.port, { path: '/health', agent });
      const b = await request(srv.port, { path: '/readyz', agent });
      const c = await request(srv.port, { path: '/api/transports', agent });
      assert.deepEqual([a.status, b.status, c.status], [200, 200, 200]);
      assert.equal(a.reusedSocket, false);
      assert.equal(b.reusedSocket, true, 'second request on the same connection');
      assert.equal(c.reusedSocket, true, 'third request on the same connection');
    } finally {
      agent.destroy();
    }
  });

  it('keep-alive on a raw socket: request, answer, request, answer', async () => {
    const c = await open();
    for (let i = 0; i < 5; i++) {
      await c.write(rawGet('/health'));
      const r = await c.readResponse();
      assert.equal(r.status, 200);
      assert.equal(r.headers.connection, undefined);
    }
    assert.equal(c.ended, false);
  });

  it('Connection: close is honoured', async () => {
    const c = await open();
    await c.write(rawGet('/health', 'Connection: close\r\n') + rawGet('/health'));
    const r = await c.readResponse();
    assert.equal(r.status, 200);
    assert.equal(r.headers.connection, 'close');
    assert.ok(await c.waitClosed(3000), 'the server closes the connection');
    assert.equal(c.buf.length, 0, 'the request after Connection: close is not answered');
  });

  it('HTTP/1.0 without keep-alive: one answer, then close', async () => {
    const c = await open();
    await c.write('GET /health HTTP/1.0\r\n\r\n');
    const r = await c.readResponse();
    assert.equal(r.status, 200);
    assert.equal(r.headers.connection, 'close');
    assert.ok(await c.waitClosed(3000));
  });

  it('a chunked request body is accepted, then the next pipelined request works', async () => {
    const c = await open();
    await c.write(
      'POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n' +
        '4\r\n{"a"\r\n' +
        '6\r\n:[1,2]\r\n' +
        '1\r\n}\r\n' +
        '0\r\n\r\n' +
        rawGet('/health'),
    );
    const r1 = await c.readResponse();
    assert.equal(r1.status, 405, 'parsed and answered');
    assert.equal(r1.json.error.code, 'METHOD_NOT_ALLOWED');
    assert.equal(r1.headers.connection, undefined, 'still keep-alive');
    const r2 = await c.readResponse();
    assert.equal(r2.status, 200);
    assert.equal(r2.json.status, 'ok');
  });

  it('a chunked body sent in pieces with chunk extensions and trailers', async () => {
    const c = await open();
    const parts = [
      'POST /health HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n',
      '5;ext=1\r\nhel',
      'lo\r\n',
      '0\r\nX-Trailer: t\r\n\r\n',
    ];
    for (const p of parts) {
      await c.write(p);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal((await c.readResponse()).status, 405);
    await c.write(rawGet('/readyz'));
    assert.equal((await c.readResponse()).status, 200);
  });

  it('Expect: 100-continue gets 100 Continue, then the answer', async () => {
    const c = await open();
    await c.write('POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
    const cont = await c.readResponse();
    assert.equal(cont.status, 100);
    await c.write('hello');
    assert.equal((await c.readResponse()).status, 405);
  });

  it('HEAD answers without a body and the connection stays in sync', async () => {
    const c = await open();
    await c.write(`HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n${rawGet('/readyz')}`);
    const head = await c.readResponse(3000, { head: true });
    assert.equal(head.status, 200);
    assert.ok(Number(head.headers['content-length']) > 0, 'the length of the GET body');
    const next = await c.readResponse();
    assert.equal(next.status, 200);
    assert.deepEqual(next.json, { status: 'ready' });
  });
});

describe('idle keep-alive connections: PYLON_IDLE_TIMEOUT_SECS=1', { timeout: 30000 }, () => {
  let srv;
  before(async () => {
    srv = await startPylon({ args: ['dev'], env: { PYLON_IDLE_TIMEOUT_SECS: 1 } });
  });
  after(() => srv?.dispose());

  it('an idle keep-alive connection is closed after the idle timeout', async () => {
    const c = await RawConn.open(srv.port);
    try {
      await c.write(rawGet('/health'));
      assert.equal((await c.readResponse()).status, 200);
      assert.ok(await c.waitClosed(4000), 'closed within a few seconds of idling');
      assert.equal(c.buf.length, 0, 'closed without another answer');
    } finally {
      c.destroy();
    }
  });
});
