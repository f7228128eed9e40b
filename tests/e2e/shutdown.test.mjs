// shutdown.test.mjs — graceful shutdown (DEPLOY.md "Graceful shutdown", DECISIONS.md §1):
// SIGTERM stops accepting, lets the in-flight request finish, ends SSE streams, flushes the
// WAL and exits 0. SIGINT does the same.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';

import WebSocket from 'ws';

import { RawConn, rawGet, request, sleep } from './lib/http.mjs';
import { startPylon } from './lib/server.mjs';

/** Tries a new connection + request: 'refused', 'closed' (no answer) or 'answered'. */
async function tryNewConnection(port) {
  let c;
  try {
    c = await RawConn.open(port, { timeoutMs: 1000 });
  } catch (err) {
    if (err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET') return 'refused';
    throw err;
  }
  try {
    await c.write(rawGet('/health'));
    await c.waitFor(() => c.ended || c.closed || c.buf.length > 0, 2000, 'an answer or a close');
    return c.buf.length > 0 ? 'answered' : 'closed';
  } catch {
    return 'hung';
  } finally {
    c.destroy();
  }
}

describe('graceful shutdown on SIGTERM', { timeout: 30000 }, () => {
  const servers = [];
  const conns = [];
  after(async () => {
    for (const c of conns) c.destroy();
    for (const s of servers) await s.dispose();
  });

  it('stops accepting, finishes the in-flight request, ends SSE, flushes the WAL, exits 0', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_DRAIN_SECS: 10 } });
    servers.push(srv);

    // An SSE stream.
    const sse = await RawConn.open(srv.ports.sse);
    conns.push(sse);
    await sse.write(rawGet('/events', 'Accept: text/event-stream\r\n'));
    await sse.waitForText(': connected\n\n');

    // An idle keep-alive connection: closed at once by the shutdown.
    const idle = await RawConn.open(srv.port);
    conns.push(idle);
    await idle.write(rawGet('/health'));
    assert.equal((await idle.readResponse()).status, 200);

    // An in-flight request: Content-Length 20, only 10 bytes sent so far.
    const inflight = await RawConn.open(srv.port);
    conns.push(inflight);
    await inflight.write('POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n\r\n0123456789');
    await sleep(200); // let the server parse the headers and the first half of the body

    const t0 = Date.now();
    srv.signal('SIGTERM');
    await sleep(300);

    // 1. New connections are refused (or closed without an answer) on every port.
    for (const port of [srv.port, srv.ports.ws, srv.ports.sse, srv.ports.shard]) {
      const outcome = await tryNewConnection(port);
      assert.ok(outcome === 'refused' || outcome === 'closed', `new connection to ${port} after SIGTERM: ${outcome}`);
    }
    assert.ok(await idle.waitClosed(2000), 'the idle keep-alive connection is closed');
    assert.equal(idle.buf.length, 0, 'without an answer');
    assert.equal(srv.running, true, 'still running while a request is in flight');
    assert.equal(inflight.ended, false, 'the in-flight request is not cut off');
    assert.equal(sse.ended, false, 'SSE streams stay until in-flight HTTP is done');

    // 2. The in-flight request completes and gets its full answer.
    await inflight.write('abcdefghij');
    const res = await inflight.readResponse(5000);
    assert.ok(res.status === 405 || res.status === 404, `in-flight answer: ${res.status} ${res.text}`);
    assert.equal(res.json?.error?.code, res.status === 405 ? 'METHOD_NOT_ALLOWED' : 'NOT_FOUND');
    assert.equal(res.headers.connection, 'close', 'answers while draining close the connection');
    assert.ok(await inflight.waitClosed(3000), 'then the connection closes');

    // 3. The SSE stream ends.
    assert.ok(await sse.waitClosed(5000), 'the SSE stream ends');
    assert.ok(sse.buf.toString().startsWith('HTTP/1.1 200'), 'the stream had begun normally');

    // 4. Exit 0, with the shutdown on stderr.
    const code = await srv.waitExit(10000);
    const ms = Date.now() - t0;
    assert.equal(code, 0, `exit code; stderr:\n${srv.stderr}`);
    assert.ok(ms < 8000, `shutdown took ${ms} ms`);
    assert.match(srv.stderr, /SIGTERM received: shutting down/);
    assert.match(srv.stderr, /database flushed; bye/);

    // 5. The database is flushed: no WAL content left.
    const db = path.join(srv.cwd, '.pylon', 'pylon.db');
    assert.ok(fs.existsSync(db), `${db} exists`);
    const wal = `${db}-wal`;
    if (fs.existsSync(wal)) assert.equal(fs.statSync(wal).size, 0, 'the -wal file is empty');
  });

  it('an open WebSocket gets a normal close frame (1001 going away), then the exit is 0', async () => {
    const srv = await startPylon({ args: ['dev'] });
    servers.push(srv);
    const g = await request(srv.port, { method: 'POST', path: '/api/auth/guest' });
    assert.equal(g.status, 201, g.body);
    const ws = new WebSocket(`ws://127.0.0.1:${srv.port + 1}/`, [`bearer.${g.json.token}`]);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const closed = new Promise((r) => ws.once('close', (code, reason) => r({ code, reason: reason.toString() })));
    srv.signal('SIGTERM');
    const { code, reason } = await closed;
    assert.equal(code, 1001);
    assert.equal(reason, 'server shutting down');
    assert.equal(await srv.exited, 0);
  });

  // A peer that stops reading keeps its connection open past the flush wait (it never sees
  // our close frame, its socket buffers fill): the shutdown closes it after that bounded wait
  // and frees it, its queued frames and what its endpoint holds (the shard subscription, the
  // sync session). A sanitizer build reports a leak otherwise (dispose() fails the test).
  it('clients that never read (shard WS, sync WS, SSE, shard SSE) are closed after a bounded wait; exit 0, nothing leaked', async () => {
    const ADMIN = 'c0ffee00'.repeat(8);
    const srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN } });
    servers.push(srv);
    const g = await request(srv.port, { method: 'POST', path: '/api/auth/guest' });
    assert.equal(g.status, 201, g.body);
    const { token, user_id: uid } = g.json;
    const mk = await request(srv.port, {
      method: 'POST',
      path: '/api/shards',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ id: 'deaf', kind: 'arena', tick_rate_hz: 200 }),
    });
    assert.equal(mk.status, 201, mk.body);
    const wsHead = (path, port) =>
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n` +
      `Sec-WebSocket-Protocol: bearer.${token}\r\n\r\n`;
    const sid = encodeURIComponent(uid);
    const opens = [
      [srv.ports.shard, wsHead(`/?shard=deaf&sid=${sid}`, srv.ports.shard), 'HTTP/1.1 101'],
      [srv.ports.ws, wsHead('/', srv.ports.ws), 'HTTP/1.1 101'],
      [srv.ports.sse, rawGet('/events', 'Accept: text/event-stream\r\n'), ': connected'],
      [srv.port, rawGet(`/api/shards/deaf/connect?sid=${sid}`, `Accept: text/event-stream\r\nAuthorization: Bearer ${token}\r\n`), 'id: '],
    ];
    const deaf = [];
    for (const [port, head, expect] of opens) {
      const c = await RawConn.open(port);
      conns.push(c);
      await c.write(head);
      await c.waitForText(expect, 3000);
      c.sock.pause(); // from here on it reads nothing (not even our close frame or FIN)
      deaf.push(c);
    }
    const st = await request(srv.port, { path: '/api/shards/deaf', headers: { Authorization: `Bearer ${ADMIN}` } });
    assert.equal(st.json.subscribers, 2, 'the shard WS and the shard SSE are subscribed');
    const t0 = Date.now();
    srv.signal('SIGTERM');
    const code = await srv.waitExit(10000);
    const ms = Date.now() - t0;
    assert.equal(code, 0, `exit code; stderr:\n${srv.stderr}`);
    assert.ok(ms < 8000, `shutdown took ${ms} ms`);
    assert.doesNotMatch(srv.stderr, /ERROR: (Address|Leak)Sanitizer|runtime error:/, srv.stderr.slice(-4000));
    for (const c of deaf) c.sock.resume();
  });

  it('SIGTERM with nothing in flight exits 0 promptly', async () => {
    const srv = await startPylon({ args: ['dev'] });
    servers.push(srv);
    const t0 = Date.now();
    const code = await srv.stop(5000);
    assert.equal(code, 0, srv.stderr);
    assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
    assert.match(srv.stderr, /SIGTERM received/);
  });

  it('SIGINT does the same', async () => {
    const srv = await startPylon({ args: ['dev'] });
    servers.push(srv);
    srv.signal('SIGINT');
    const code = await srv.waitExit(5000);
    assert.equal(code, 0, srv.stderr);
    assert.match(srv.stderr, /SIGINT received: shutting down/);
    assert.match(srv.stderr, /database flushed; bye/);
  });

  it('serve mode: SIGTERM exits 0 and leaves no WAL content next to pylon.db', async () => {
    const srv = await startPylon({ args: ['serve'], env: { PYLON_CORS_ORIGIN: 'https://app.example', PYLON_ADMIN_TOKEN: 'f'.repeat(64) } });
    servers.push(srv);
    const code = await srv.stop(5000);
    assert.equal(code, 0, srv.stderr);
    const db = path.join(srv.cwd, 'pylon.db');
    assert.ok(fs.existsSync(db), 'serve keeps pylon.db in the working directory by default');
    const wal = `${db}-wal`;
    if (fs.existsSync(wal)) assert.equal(fs.statSync(wal).size, 0);
  });

  it('a drain cap of 1 s cuts off a request that never completes, and still exits 0', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_DRAIN_SECS: 1 } });
    servers.push(srv);
    const stuck = await RawConn.open(srv.port);
    conns.push(stuck);
    await stuck.write('POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20\r\n\r\n0123456789');
    await sleep(200);
    const t0 = Date.now();
    srv.signal('SIGTERM');
    const code = await srv.waitExit(6000);
    assert.equal(code, 0, srv.stderr);
    const ms = Date.now() - t0;
    assert.ok(ms >= 900 && ms < 5000, `exited after ${ms} ms (cap 1 s)`);
    assert.match(srv.stderr, /drain cap of 1 s reached/);
    assert.ok(await stuck.waitClosed(2000), 'the unfinished request was closed');
  });
});

