// websocket.test.mjs — the WebSocket handshake on the sync port (port+1), on /ws of the main
// port and on the shard port (port+3), with the `ws` client the real Pylon clients use.
//
// There is no session store yet, so every sync connection is refused after the handshake with
// Close 1008 "unauthorized: bearer token required" (protocol.md §2.1), and every shard id is
// unknown, so shard connections are dropped without a close frame (protocol.md §4.1).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, afterEach, before, describe, it } from 'node:test';
import WebSocket from 'ws';

import { RawConn, assertErrorEnvelope, assertHealthy, request } from './lib/http.mjs';
import { startPylon } from './lib/server.mjs';

const UNAUTHORIZED = 'unauthorized: bearer token required';

/** Runs a WebSocket session to its end: resolves with what happened once 'close' fires. */
/** The admin token `pylon dev` generated and printed once. */
function adminToken(srv) {
  const m = /admin token \(generated, shown once\): ([0-9a-f]{64})/.exec(srv.stderr);
  assert.ok(m, srv.stderr);
  return m[1];
}

function wsSession(url, protocols, options = {}, timeoutMs = 5000) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, protocols, { handshakeTimeout: 3000, ...options });
    const out = { opened: false, protocol: undefined, upgrade: null, code: undefined, reason: undefined, error: null, messages: [], timedOut: false };
    const timer = setTimeout(() => {
      out.timedOut = true;
      ws.terminate();
    }, timeoutMs);
    ws.on('upgrade', (res) => {
      out.upgrade = { status: res.statusCode, headers: res.headers };
    });
    ws.on('open', () => {
      out.opened = true;
      out.protocol = ws.protocol;
    });
    ws.on('message', (data, isBinary) => out.messages.push({ data, isBinary }));
    ws.on('error', (err) => {
      out.error = err;
    });
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      out.code = code;
      out.reason = reason.toString('utf8');
      resolve(out);
    });
  });
}

/** A raw WebSocket handshake request. */
function upgradeRequest(path, headers = {}) {
  const h = {
    Host: 'localhost',
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
    ...headers,
  };
  let s = `GET ${path} HTTP/1.1\r\n`;
  for (const [k, v] of Object.entries(h)) if (v !== undefined) s += `${k}: ${v}\r\n`;
  return { text: `${s}\r\n`, key: h['Sec-WebSocket-Key'] };
}

// RFC 6455 §1.3: the GUID every client (browsers, `ws`, URLSession) hashes with the key.
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function expectedAccept(key) {
  return crypto.createHash('sha1').update(`${key}${WS_GUID}`).digest('base64');
}

/** Parses one unmasked server frame at the start of buf, or null if incomplete. */
function parseFrame(buf) {
  if (buf.length < 2) return null;
  const fin = (buf[0] & 0x80) !== 0;
  const opcode = buf[0] & 0x0f;
  assert.equal(buf[1] & 0x80, 0, 'server frames are not masked');
  let len = buf[1] & 0x7f;
  let off = 2;
  if (len === 126) {
    if (buf.length < 4) return null;
    len = buf.readUInt16BE(2);
    off = 4;
  } else if (len === 127) {
    if (buf.length < 10) return null;
    len = Number(buf.readBigUInt64BE(2));
    off = 10;
  }
  if (buf.length < off + len) return null;
  return { fin, opcode, payload: buf.subarray(off, off + len), length: off + len };
}

describe('sync WebSocket', { timeout: 40000 }, () => {
  let srv;
  const conns = [];
  before(async () => {
    srv = await startPylon({ args: ['dev'] });
  });
  afterEach(() => {
    for (const c of conns.splice(0)) c.destroy();
  });
  after(() => srv?.dispose());

  const endpoints = () => [
    ['sync port (port+1)', `ws://127.0.0.1:${srv.ports.ws}/`],
    ['/ws on the main port', `ws://127.0.0.1:${srv.port}/ws`],
  ];

  for (const idx of [0, 1]) {
    it(`${idx ? '/ws on the main port' : 'sync port (port+1)'}: 101 echoes exactly 'bearer.abc%2Bdef', then Close 1008`, async () => {
      const [, url] = endpoints()[idx];
      const t0 = Date.now();
      const s = await wsSession(url, ['bearer.abc%2Bdef']);
      assert.equal(s.timedOut, false, 'the server closed the connection by itself');
      assert.equal(s.error, null, `no client error: ${s.error?.message}`);
      assert.equal(s.opened, true, 'the handshake completed');
      assert.equal(s.upgrade.status, 101);
      assert.equal(s.upgrade.headers['sec-websocket-protocol'], 'bearer.abc%2Bdef', 'echoed byte for byte');
      assert.equal(s.protocol, 'bearer.abc%2Bdef');
      assert.equal(s.code, 1008);
      assert.equal(s.reason, UNAUTHORIZED);
      assert.deepEqual(s.messages, [], 'nothing is sent before the close');
      assert.ok(Date.now() - t0 < 3000, 'closed at once');
    });
  }

  it("Sec-WebSocket-Accept follows RFC 6455 (the RFC's own example key)", async () => {
    const c = await RawConn.open(srv.ports.ws);
    conns.push(c);
    await c.write(upgradeRequest('/chat', { 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' }).text);
    const res = await c.readResponse();
    assert.equal(res.status, 101);
    assert.equal(res.headers['sec-websocket-accept'], 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=', 'RFC 6455 §1.3 example');
  });

  it('any path on the sync port is the sync WebSocket', async () => {
    const s = await wsSession(`ws://127.0.0.1:${srv.ports.ws}/some/path?x=1`, ['bearer.t']);
    assert.equal(s.protocol, 'bearer.t');
    assert.equal(s.code, 1008);
    assert.equal(s.reason, UNAUTHORIZED);
  });

  it('any other upgrade on the main port (e.g. /) is the sync WebSocket', async () => {
    const s = await wsSession(`ws://127.0.0.1:${srv.port}/`, ['bearer.t']);
    assert.equal(s.protocol, 'bearer.t');
    assert.equal(s.code, 1008);
  });

  it('the first bearer entry that decodes strictly is echoed; malformed ones are skipped', async () => {
    const s = await wsSession(`ws://127.0.0.1:${srv.ports.ws}/`, ['pylon.msgpack', 'bearer.%zz', 'bearer.%ff', 'bearer.tok%20en+x']);
    assert.equal(s.error, null, `no client error: ${s.error?.message}`);
    assert.equal(s.protocol, 'bearer.tok%20en+x');
    assert.equal(s.code, 1008);
  });

  it("a malformed protocol entry ('bearer.%zz') is not echoed (raw handshake)", async () => {
    for (const bad of ['bearer.%zz', 'bearer.%ff', 'bearer.abc%2', 'bearer.']) {
      const c = await RawConn.open(srv.ports.ws);
      conns.push(c);
      const { text, key } = upgradeRequest('/', { 'Sec-WebSocket-Protocol': bad });
      await c.write(text);
      const res = await c.readResponse();
      assert.equal(res.status, 101, bad);
      assert.equal(res.headers['sec-websocket-protocol'], undefined, `${bad} must not be echoed`);
      assert.equal(res.headers['sec-websocket-accept'], expectedAccept(key));
      // Then the close frame 1008 on the wire.
      const frame = await c.waitFor(() => parseFrame(c.buf), 3000, 'the close frame');
      assert.equal(frame.opcode, 8);
      assert.equal(frame.fin, true);
      assert.equal(frame.payload.readUInt16BE(0), 1008);
      assert.equal(frame.payload.subarray(2).toString(), UNAUTHORIZED);
    }
  });

  it('Authorization: Bearer (native clients) without a subprotocol: 101 without a protocol, then 1008', async () => {
    const s = await wsSession(`ws://127.0.0.1:${srv.ports.ws}/`, undefined, { headers: { Authorization: 'Bearer abc' } });
    assert.equal(s.opened, true);
    assert.equal(s.upgrade.headers['sec-websocket-protocol'], undefined);
    assert.equal(s.code, 1008);
    assert.equal(s.reason, UNAUTHORIZED);
  });

  it('the client completing the close handshake gets a clean TCP close (raw)', async () => {
    const c = await RawConn.open(srv.port);
    conns.push(c);
    await c.write(upgradeRequest('/ws', { 'Sec-WebSocket-Protocol': 'bearer.x' }).text);
    assert.equal((await c.readResponse()).status, 101);
    const frame = await c.waitFor(() => parseFrame(c.buf), 3000, 'the close frame');
    assert.equal(frame.payload.readUInt16BE(0), 1008);
    // Echo a masked close frame (code 1008), as a client must.
    const mask = crypto.randomBytes(4);
    const payload = Buffer.from([0x03, 0xf0]);
    const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
    await c.write(Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), mask, masked]));
    assert.ok(await c.waitClosed(3000), 'the server closes the TCP connection');
  });

  it('a plain GET (no Upgrade) on the sync port: 426 UPGRADE_REQUIRED', async () => {
    const res = await request(srv.ports.ws, { path: '/' });
    assertErrorEnvelope(res, 426, 'UPGRADE_REQUIRED');
    assert.match(res.headers.upgrade ?? '', /websocket/i);
  });

  it('an unsupported Sec-WebSocket-Version: 426 with Sec-WebSocket-Version: 13', async () => {
    const c = await RawConn.open(srv.ports.ws);
    conns.push(c);
    await c.write(upgradeRequest('/', { 'Sec-WebSocket-Version': '8' }).text);
    const res = await c.readResponse();
    assert.equal(res.status, 426);
    assert.equal(res.headers['sec-websocket-version'], '13');
    assert.equal(res.json.error.code, 'UPGRADE_REQUIRED');
  });

  it('a missing Sec-WebSocket-Key: 400', async () => {
    const c = await RawConn.open(srv.ports.ws);
    conns.push(c);
    await c.write(upgradeRequest('/', { 'Sec-WebSocket-Key': undefined }).text);
    const res = await c.readResponse();
    assert.equal(res.status, 400);
    assert.equal(res.json.error.code, 'BAD_REQUEST');
  });

  it('a session token (guest) keeps the socket open, over the sync port and /ws', async () => {
    const g = await request(srv.port, { method: 'POST', path: '/api/auth/guest' });
    assert.equal(g.status, 201, g.body);
    const token = g.json.token;
    for (const url of [`ws://127.0.0.1:${srv.port + 1}/`, `ws://127.0.0.1:${srv.port}/ws`]) {
      const ws = new WebSocket(url, [`bearer.${encodeURIComponent(token)}`]);
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      assert.equal(ws.protocol, `bearer.${encodeURIComponent(token)}`);
      const closed = await Promise.race([
        new Promise((r) => ws.once('close', () => r(true))),
        new Promise((r) => setTimeout(() => r(false), 500)),
      ]);
      assert.equal(closed, false, 'an authenticated socket stays open');
      ws.close(1000);
    }
  });

  it('the admin token is not a session: WebSockets take session tokens only (1008)', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${srv.port + 1}/`, { headers: { authorization: `Bearer ${adminToken(srv)}` } });
    const code = await new Promise((r) => ws.once('close', (c) => r(c)));
    assert.equal(code, 1008);
  });

  it('the server is still healthy after all that', async () => {
    await assertHealthy(srv.port);
  });
});

describe('shard WebSocket', { timeout: 30000 }, () => {
  let srv;
  const conns = [];
  before(async () => {
    srv = await startPylon({ args: ['dev'] });
  });
  afterEach(() => {
    for (const c of conns.splice(0)) c.destroy();
  });
  after(() => srv?.dispose());

  it('shard port (port+3) with ?shard=nope: dropped without a close frame (1006)', async () => {
    const s = await wsSession(`ws://127.0.0.1:${srv.ports.shard}/?shard=nope&sid=anon`, ['bearer.abc']);
    assert.equal(s.timedOut, false);
    assert.equal(s.upgrade?.status, 101, 'the handshake completes first');
    assert.equal(s.protocol, 'bearer.abc', 'the bearer subprotocol is echoed on the shard port too');
    assert.equal(s.code, 1006, 'no close frame');
    assert.equal(s.reason, '');
  });

  it('shard port without a shard parameter: dropped (1006)', async () => {
    const s = await wsSession(`ws://127.0.0.1:${srv.ports.shard}/`);
    assert.equal(s.code, 1006);
  });

  it('main port /shard/nope and /?shard=nope: dropped (1006)', async () => {
    for (const p of ['/shard/nope', '/?shard=nope', '/ws?sid=a&shard=nope']) {
      const s = await wsSession(`ws://127.0.0.1:${srv.port}${p}`);
      assert.equal(s.upgrade?.status, 101, p);
      assert.equal(s.code, 1006, `${p}: no close frame`);
    }
  });

  it('raw: after the 101 the connection ends with no frame at all', async () => {
    const c = await RawConn.open(srv.ports.shard);
    conns.push(c);
    await c.write(upgradeRequest('/?shard=nope').text);
    const res = await c.readResponse();
    assert.equal(res.status, 101);
    assert.ok(await c.waitClosed(3000), 'dropped');
    assert.equal(c.buf.length, 0, 'no close frame');
  });

  it('a plain GET on the shard port: 426 UPGRADE_REQUIRED', async () => {
    const res = await request(srv.ports.shard, { path: '/?shard=nope' });
    assertErrorEnvelope(res, 426, 'UPGRADE_REQUIRED');
  });

  it('the server is still healthy', async () => {
    await assertHealthy(srv.port);
  });
});
