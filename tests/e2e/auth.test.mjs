// auth.test.mjs — identities and sessions (spec/backend.md §5.1-5.4, §5.7): guest sessions,
// GET /api/auth/me for every kind of caller, cookie vs Bearer, minting sessions in dev and
// serve mode, logout (POST /api/auth/logout, DELETE /api/auth/session), sessions surviving a
// restart, expiry, and unknown tokens being anonymous rather than errors.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';

import { assertErrorEnvelope, request, sleep } from './lib/http.mjs';
import { ADMIN_TOKEN, SERVE_ENV, startPylon } from './lib/server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MANIFEST = path.join(HERE, 'fixtures', 'auth.manifest.json');
const SHORT_MANIFEST = path.join(HERE, 'fixtures', 'auth-short-session.manifest.json');
const COOKIE = 'e2e-auth_session'; // "<app name>_session"
const DEV_ORIGIN = 'http://localhost:3000';

const TOKEN_RE = /^pylon_[0-9a-f]{64}$/;
const GUEST_RE = /^guest_[0-9a-f]{32}$/;
const ANONYMOUS = Object.freeze({ user_id: null, is_admin: false, roles: [] });
const ADMIN = Object.freeze({ user_id: '__admin__', is_admin: true, roles: ['admin'] });

const servers = [];
const tmpDirs = [];
after(async () => {
  for (const s of servers) await s.dispose();
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

async function start(opts) {
  const srv = await startPylon(opts);
  servers.push(srv);
  return srv;
}

/** A JSON request with optional Bearer token, cookie token and extra headers. */
async function call(srv, method, p, { body, token, cookie, headers = {} } = {}) {
  const h = { ...headers };
  if (body !== undefined) h['Content-Type'] = 'application/json';
  if (token) h.Authorization = `Bearer ${token}`;
  if (cookie) h.Cookie = cookie;
  return request(srv.port, { method, path: p, headers: h, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
}

const me = async (srv, opts) => {
  const res = await call(srv, 'GET', '/api/auth/me', opts);
  assert.equal(res.status, 200, res.body);
  return res.json;
};

/** The Set-Cookie headers of a response as [{name, value, attrs: [..] (in order), raw}]. */
function setCookies(res) {
  const raw = res.headers['set-cookie'] ?? [];
  return raw.map((line) => {
    const parts = line.split(';').map((s) => s.trim());
    const [nv, ...attrs] = parts;
    const i = nv.indexOf('=');
    return { name: nv.slice(0, i), value: nv.slice(i + 1), attrs, raw: line };
  });
}

async function guest(srv, headers = {}) {
  const res = await call(srv, 'POST', '/api/auth/guest', { headers });
  assert.equal(res.status, 201, res.body);
  return res;
}

async function mint(srv, userId, opts = {}) {
  const res = await call(srv, 'POST', '/api/auth/session', { body: { user_id: userId }, ...opts });
  assert.equal(res.status, 201, res.body);
  return res.json.token;
}

describe('dev mode', { timeout: 30000 }, () => {
  let srv;
  before(async () => {
    srv = await start({ args: ['dev'], env: { PYLON_MANIFEST: MANIFEST, PYLON_ADMIN_TOKEN: ADMIN_TOKEN } });
  });

  it('POST /api/auth/guest → 201 {"token","user_id","guest":true}, no cookie without Origin', async () => {
    const res = await guest(srv);
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.deepEqual(Object.keys(res.json).sort(), ['guest', 'token', 'user_id']);
    assert.match(res.json.token, TOKEN_RE);
    assert.match(res.json.user_id, GUEST_RE);
    assert.equal(res.json.guest, true);
    assert.equal(res.headers['set-cookie'], undefined, 'no cookie for a non-browser caller');
    const other = (await guest(srv)).json;
    assert.notEqual(other.token, res.json.token);
    assert.notEqual(other.user_id, res.json.user_id);
  });

  it('with an Origin header the guest session also comes as a cookie (HttpOnly, Lax, 30 days, no Secure in dev)', async () => {
    const res = await guest(srv, { Origin: DEV_ORIGIN });
    const cookies = setCookies(res);
    assert.equal(cookies.length, 1, JSON.stringify(res.headers['set-cookie']));
    const [c] = cookies;
    assert.equal(c.name, COOKIE);
    assert.equal(c.value, res.json.token);
    assert.deepEqual(c.attrs, ['Path=/', 'HttpOnly', 'SameSite=Lax', 'Max-Age=2592000'], c.raw);
    assert.ok(!/secure/i.test(c.raw), 'no Secure in dev');
  });

  it('GET /api/auth/me: anonymous, guest, user, admin', async () => {
    assert.deepEqual(await me(srv), ANONYMOUS);
    const g = (await guest(srv)).json;
    assert.deepEqual(await me(srv, { token: g.token }), { user_id: g.user_id, is_admin: false, roles: [], is_guest: true });
    const u = await mint(srv, 'u1');
    assert.deepEqual(await me(srv, { token: u }), { user_id: 'u1', is_admin: false, roles: [] });
    assert.deepEqual(await me(srv, { token: ADMIN_TOKEN }), ADMIN);
    const s = await call(srv, 'GET', '/api/auth/session', { token: u });
    assert.equal(s.status, 200);
    assert.deepEqual(s.json, { session: { user_id: 'u1', is_admin: false, roles: [] }, user: null });
  });

  it('an unknown or malformed token is anonymous, not an error', async () => {
    for (const token of [`pylon_${'0'.repeat(64)}`, 'pylon_short', 'garbage', 'x'.repeat(300), `${ADMIN_TOKEN}x`]) {
      assert.deepEqual(await me(srv, { token }), ANONYMOUS, token);
      assert.deepEqual(await me(srv, { cookie: `${COOKIE}=${token}` }), ANONYMOUS, token);
    }
    const s = await call(srv, 'GET', '/api/auth/session', { token: 'pylon_nope' });
    assert.deepEqual(s.json, { session: ANONYMOUS, user: null });
  });

  it('the session cookie authenticates; Bearer wins over the cookie', async () => {
    const a = await mint(srv, 'cookie-user');
    const b = await mint(srv, 'bearer-user');
    assert.equal((await me(srv, { cookie: `${COOKIE}=${a}` })).user_id, 'cookie-user');
    assert.equal((await me(srv, { cookie: `theme=dark; ${COOKIE}=${a}; other=1` })).user_id, 'cookie-user');
    assert.equal((await me(srv, { cookie: `x${COOKIE}=${a}` })).user_id, null, 'the exact cookie name only');
    assert.equal((await me(srv, { token: b, cookie: `${COOKIE}=${a}` })).user_id, 'bearer-user');
    // The admin token works from the cookie too (spec §5.2).
    assert.deepEqual(await me(srv, { cookie: `${COOKIE}=${ADMIN_TOKEN}` }), ADMIN);
    // The guest cookie set by the server is accepted as sent back by a browser.
    const g = await guest(srv, { Origin: DEV_ORIGIN });
    const [c] = setCookies(g);
    assert.equal((await me(srv, { cookie: `${c.name}=${c.value}` })).user_id, g.json.user_id);
  });

  it('POST /api/auth/session → 201 {"token","user_id"} in dev; MISSING_USER_ID without one', async () => {
    const res = await call(srv, 'POST', '/api/auth/session', { body: { user_id: 'u-dev' } });
    assert.equal(res.status, 201, res.body);
    assert.deepEqual(Object.keys(res.json).sort(), ['token', 'user_id']);
    assert.match(res.json.token, TOKEN_RE);
    assert.equal(res.json.user_id, 'u-dev');
    assert.equal(res.headers['set-cookie'], undefined);
    for (const body of [{}, { user_id: '' }, { user_id: 42 }, { user_id: null }, { userId: 'camel' }])
      assertErrorEnvelope(await call(srv, 'POST', '/api/auth/session', { body }), 400, 'MISSING_USER_ID');
    assertErrorEnvelope(await call(srv, 'POST', '/api/auth/session', { body: '{"user_id":' }), 400, 'INVALID_JSON');
  });

  it('a minted session never replaces the caller\'s browser cookie (spec §5.4: no cookie)', async () => {
    // An admin page in the browser minting a session for a user must not log itself in as them.
    const res = await call(srv, 'POST', '/api/auth/session', { body: { user_id: 'minted' }, token: ADMIN_TOKEN, headers: { Origin: DEV_ORIGIN } });
    assert.equal(res.status, 201, res.body);
    assert.equal(res.headers['set-cookie'], undefined, `Set-Cookie on POST /api/auth/session: ${res.headers['set-cookie']}`);
  });

  for (const [method, p] of [
    ['POST', '/api/auth/logout'],
    ['DELETE', '/api/auth/session'],
  ]) {
    it(`${method} ${p} revokes the token and clears the cookie`, async () => {
      const byBearer = await mint(srv, 'leaving');
      const keep = await mint(srv, 'leaving'); // another session of the same user stays
      const res = await call(srv, method, p, { token: byBearer, headers: { Origin: DEV_ORIGIN } });
      assert.equal(res.status, 200, res.body);
      assert.deepEqual(res.json, { revoked: true });
      const cookies = setCookies(res);
      assert.equal(cookies.length, 1);
      assert.equal(cookies[0].name, COOKIE);
      assert.equal(cookies[0].value, '');
      assert.ok(cookies[0].attrs.includes('Max-Age=0'), cookies[0].raw);
      assert.ok(cookies[0].attrs.includes('Path=/'), cookies[0].raw);
      assert.deepEqual(await me(srv, { token: byBearer }), ANONYMOUS);
      assert.equal((await me(srv, { token: keep })).user_id, 'leaving');

      // By cookie.
      const g = await guest(srv, { Origin: DEV_ORIGIN });
      const cookie = `${COOKIE}=${g.json.token}`;
      assert.equal((await me(srv, { cookie })).user_id, g.json.user_id);
      const res2 = await call(srv, method, p, { cookie, headers: { Origin: DEV_ORIGIN } });
      assert.deepEqual([res2.status, res2.json], [200, { revoked: true }]);
      assert.ok(setCookies(res2)[0].attrs.includes('Max-Age=0'));
      assert.deepEqual(await me(srv, { cookie }), ANONYMOUS);

      // Without any token: still 200 and the cookie is cleared.
      const res3 = await call(srv, method, p);
      assert.deepEqual([res3.status, res3.json], [200, { revoked: true }]);
      assert.equal(setCookies(res3)[0].value, '');
      // The admin token is not a session: "logging out" with it changes nothing.
      assert.equal((await call(srv, method, p, { token: ADMIN_TOKEN })).status, 200);
      assert.deepEqual(await me(srv, { token: ADMIN_TOKEN }), ADMIN);
    });
  }
});

describe('serve mode', { timeout: 30000 }, () => {
  let srv;
  before(async () => {
    srv = await start({ args: ['serve'], env: { ...SERVE_ENV, PYLON_MANIFEST: MANIFEST } });
  });

  it('POST /api/auth/session needs the admin token: 403 FORBIDDEN otherwise, 201 with it', async () => {
    const g = (await guest(srv)).json;
    for (const token of [undefined, g.token, 'pylon_unknown']) {
      const e = assertErrorEnvelope(await call(srv, 'POST', '/api/auth/session', { body: { user_id: 'u1' }, token }), 403, 'FORBIDDEN');
      assert.match(e.message, /admin/);
    }
    const res = await call(srv, 'POST', '/api/auth/session', { body: { user_id: 'u1' }, token: ADMIN_TOKEN });
    assert.equal(res.status, 201, res.body);
    assert.equal(res.json.user_id, 'u1');
    assert.match(res.json.token, TOKEN_RE);
    assert.deepEqual(await me(srv, { token: res.json.token }), { user_id: 'u1', is_admin: false, roles: [] });
    assertErrorEnvelope(await call(srv, 'POST', '/api/auth/session', { body: {}, token: ADMIN_TOKEN }), 400, 'MISSING_USER_ID');
  });

  it('guest cookies are Secure outside dev; me for admin', async () => {
    const res = await guest(srv, { Origin: SERVE_ENV.PYLON_CORS_ORIGIN });
    const [c] = setCookies(res);
    assert.equal(c.name, COOKIE);
    assert.deepEqual(c.attrs, ['Path=/', 'HttpOnly', 'Secure', 'SameSite=Lax', 'Max-Age=2592000'], c.raw);
    assert.deepEqual(await me(srv, { token: ADMIN_TOKEN }), ADMIN);
    assert.deepEqual(await me(srv), ANONYMOUS);
  });
});

// PYLON_COOKIE_NAME, _DOMAIN, _SAMESITE (or the original's _SAME_SITE) and _SECURE shape the
// session cookie, on the cookie that logs in and on the one that logs out alike.
describe('cookie settings (PYLON_COOKIE_*)', { timeout: 30000 }, () => {
  const ORIGIN = SERVE_ENV.PYLON_CORS_ORIGIN;
  it('name, domain, SameSite=Strict and Secure=false are used; the cookie of that name authenticates', async () => {
    const srv = await start({
      args: ['serve'],
      env: { ...SERVE_ENV, PYLON_MANIFEST: MANIFEST, PYLON_COOKIE_NAME: 'sid', PYLON_COOKIE_DOMAIN: '.app.example', PYLON_COOKIE_SAMESITE: 'strict', PYLON_COOKIE_SECURE: 'false' },
    });
    const res = await guest(srv, { Origin: ORIGIN });
    const [c] = setCookies(res);
    assert.equal(c.name, 'sid');
    assert.equal(c.value, res.json.token);
    assert.deepEqual(c.attrs, ['Path=/', 'Domain=.app.example', 'HttpOnly', 'SameSite=Strict', 'Max-Age=2592000'], c.raw);
    assert.equal((await me(srv, { cookie: `sid=${res.json.token}` })).user_id, res.json.user_id);
    assert.deepEqual(await me(srv, { cookie: `${COOKIE}=${res.json.token}` }), ANONYMOUS, 'the default name is not read');
    const out = await call(srv, 'POST', '/api/auth/logout', { cookie: `sid=${res.json.token}`, headers: { Origin: ORIGIN } });
    const [gone] = setCookies(out);
    assert.deepEqual([gone.name, gone.value], ['sid', '']);
    assert.deepEqual(gone.attrs, ['Path=/', 'Domain=.app.example', 'HttpOnly', 'SameSite=Strict', 'Max-Age=0'], gone.raw);
    assert.deepEqual(await me(srv, { cookie: `sid=${res.json.token}` }), ANONYMOUS);
  });

  it('SameSite=None (the original spelling PYLON_COOKIE_SAME_SITE) makes the cookie Secure', async () => {
    const srv = await start({ args: ['serve'], env: { ...SERVE_ENV, PYLON_MANIFEST: MANIFEST, PYLON_COOKIE_SAME_SITE: 'none' } });
    const [c] = setCookies(await guest(srv, { Origin: ORIGIN }));
    assert.deepEqual(c.attrs, ['Path=/', 'HttpOnly', 'Secure', 'SameSite=None', 'Max-Age=2592000'], c.raw);
  });
});

describe('session lifetime', { timeout: 40000 }, () => {
  it('sessions survive a restart on the same PYLON_SESSION_DB; revoked ones stay revoked', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pylon-e2e-auth-'));
    tmpDirs.push(dir);
    const env = { PYLON_MANIFEST: MANIFEST, PYLON_ADMIN_TOKEN: ADMIN_TOKEN, PYLON_DB_PATH: path.join(dir, 'data.db'), PYLON_SESSION_DB: path.join(dir, 'sessions.db') };
    const a = await start({ args: ['dev'], env });
    const g = (await guest(a)).json;
    const u = await mint(a, 'survivor');
    const gone = await mint(a, 'revoked-user');
    assert.equal((await call(a, 'POST', '/api/auth/logout', { token: gone })).status, 200);
    assert.equal(await a.stop(), 0);
    assert.ok(fs.existsSync(path.join(dir, 'sessions.db')), 'the session database is where PYLON_SESSION_DB says');

    const b = await start({ args: ['dev'], env });
    assert.deepEqual(await me(b, { token: g.token }), { user_id: g.user_id, is_admin: false, roles: [], is_guest: true });
    assert.deepEqual(await me(b, { token: u }), { user_id: 'survivor', is_admin: false, roles: [] });
    assert.deepEqual(await me(b, { cookie: `${COOKIE}=${u}` }), { user_id: 'survivor', is_admin: false, roles: [] });
    assert.deepEqual(await me(b, { token: gone }), ANONYMOUS);
    await b.stop();

    // Also after a crash (SIGKILL): a token handed out is on disk before the answer.
    const c = await start({ args: ['dev'], env });
    const crashTok = await mint(c, 'crash-survivor');
    c.signal('SIGKILL');
    await c.waitExit(5000);
    const d = await start({ args: ['dev'], env });
    assert.equal((await me(d, { token: crashTok })).user_id, 'crash-survivor');
    assert.equal((await me(d, { token: u })).user_id, 'survivor');
    await d.stop();
  });

  it('a session expires after auth.session.expires_in seconds', async () => {
    const srv = await start({ args: ['dev'], env: { PYLON_MANIFEST: SHORT_MANIFEST, PYLON_ADMIN_TOKEN: ADMIN_TOKEN } });
    const t = await mint(srv, 'short-lived');
    assert.equal((await me(srv, { token: t })).user_id, 'short-lived');
    await sleep(3100);
    assert.deepEqual(await me(srv, { token: t }), ANONYMOUS);
  });
});
