// rooms.test.mjs — the rooms HTTP API (protocol.md §5.2, DECISIONS.md §2): join, leave,
// presence, broadcast, list, get; the room events reach the members' sessions (WebSocket and
// SSE), never other users'; idle members are removed with a leave event (PYLON_ROOM_IDLE_SECS);
// the admin's body user_id is honoured, anyone else's ignored; names are URL-decoded; refusals
// (401, 400); /api/crdt* answers 501. Also: a user's events still arrive after the hub's session
// list and user index grew past 64 and 128 sessions, and after one of the user's sockets closed.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';

import { ADMIN_TOKEN, EMPTY_MANIFEST, startPylon } from './lib/server.mjs';
import { SseStream, httpJson } from './lib/sync-client.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const tmpDirs = [];
after(() => {
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

function env(extra = {}) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'pylon-rooms-'));
  tmpDirs.push(d);
  return { PYLON_MANIFEST: EMPTY_MANIFEST, PYLON_ADMIN_TOKEN: ADMIN_TOKEN, PYLON_DB_PATH: path.join(d, 'data.db'), ...extra };
}

async function session(port, userId) {
  const res = await httpJson(port, 'POST', '/api/auth/session', { body: { user_id: userId } });
  assert.ok(res.status === 200 || res.status === 201, `POST /api/auth/session: ${res.status} ${res.body}`);
  return res.json.token;
}

/** A sync WebSocket that records the room events it gets. */
async function socket(wsPort, token) {
  const ws = new WebSocket(`ws://127.0.0.1:${wsPort}/`, [`bearer.${token}`]);
  ws.events = [];
  ws.on('message', (d) => {
    const m = JSON.parse(d.toString());
    if (m.room !== undefined) ws.events.push(m);
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return ws;
}

async function waitUntil(pred, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return;
    await sleep(20);
  }
  assert.fail(`timed out waiting for ${what}`);
}

const roomEvents = (s) => s.events.filter((e) => e.room !== undefined);
const post = (port, what, token, body) => httpJson(port, 'POST', `/api/rooms/${what}`, { token, body });

describe('rooms: the HTTP API and its events', { timeout: 60000 }, () => {
  let srv, port, tok, alice, alice2, bob, carol, aliceSse, carolSse;
  const ROOM = 'doc 1/ü?x'; // a space, a slash, non-ASCII, a question mark

  before(async () => {
    // 150+ sockets from one address: above the default per-IP stream cap (64)
    srv = await startPylon({ args: ['dev'], env: env({ PYLON_MAX_STREAMS_PER_IP: '1000' }) });
    port = srv.port;
    tok = {};
    for (const u of ['alice', 'bob', 'carol']) tok[u] = await session(port, u);
    alice = await socket(srv.ports.ws, tok.alice);
    alice2 = await socket(srv.ports.ws, tok.alice); // a second tab of the same user
    bob = await socket(srv.ports.ws, tok.bob);
    carol = await socket(srv.ports.ws, tok.carol);
    aliceSse = await SseStream.open(srv.ports.sse, '/events', { token: tok.alice });
    carolSse = await SseStream.open(srv.ports.sse, '/events', { token: tok.carol });
    await sleep(100); // the hub has registered every session
  });
  after(async () => {
    for (const w of [alice, alice2, bob, carol]) w?.terminate();
    aliceSse?.close();
    carolSse?.close();
    await srv?.dispose();
  });

  it('refuses callers without an identity (401) and bodies without a room or topic (400)', async () => {
    for (const [method, p, body] of [['POST', '/api/rooms/join', { room: 'r' }], ['GET', '/api/rooms', undefined], ['GET', '/api/rooms/r', undefined]]) {
      const r = await httpJson(port, method, p, { body });
      assert.equal(r.status, 401, `${method} ${p}: ${r.body}`);
      assert.equal(r.json.error.code, 'AUTH_REQUIRED');
    }
    for (const body of [{}, { room: '' }, { room: 7 }, '{"room":', '[]']) {
      const r = await post(port, 'join', tok.alice, body);
      assert.equal(r.status, 400, `join ${JSON.stringify(body)}: ${r.body}`);
      assert.equal(r.json.error.code, 'MISSING_ROOM');
    }
    const nt = await post(port, 'broadcast', tok.alice, { room: ROOM, data: 1 });
    assert.equal(nt.status, 400);
    assert.equal(nt.json.error.code, 'MISSING_TOPIC');
    assert.deepEqual((await httpJson(port, 'GET', '/api/rooms', { token: tok.alice })).json, [], 'nothing was created');
  });

  it('join: the snapshot lists the peers before the join; the members hear it, others do not', async () => {
    const j1 = await post(port, 'join', tok.alice, { room: ROOM, data: { color: 'red' } });
    assert.equal(j1.status, 200, j1.body);
    assert.deepEqual(j1.json, { joined: ROOM, snapshot: { type: 'snapshot', room: ROOM, peers: [] } });
    const j2 = await post(port, 'join', tok.bob, { room: ROOM, user_id: 'mallory' }); // ignored: not an admin
    assert.equal(j2.status, 200, j2.body);
    assert.equal(j2.json.snapshot.peers.length, 1);
    const [peer] = j2.json.snapshot.peers;
    assert.equal(peer.user_id, 'alice');
    assert.deepEqual(peer.data, { color: 'red' });
    assert.match(peer.joined_at, /^\d+Z$/);
    assert.ok(Math.abs(Number(peer.joined_at.slice(0, -1)) - Date.now() / 1000) < 60);

    const bobJoin = { type: 'join', room: ROOM, user_id: 'bob' }; // no data key: none was given
    for (const s of [alice, alice2, bob, aliceSse]) await waitUntil(() => roomEvents(s).some((e) => e.type === 'join' && e.user_id === 'bob'), 3000, 'the join event');
    assert.deepEqual(roomEvents(alice).find((e) => e.user_id === 'bob'), bobJoin);
    assert.deepEqual(roomEvents(aliceSse).find((e) => e.user_id === 'bob'), bobJoin, 'SSE gets the same event');
    assert.deepEqual(roomEvents(alice).find((e) => e.user_id === 'alice'), { type: 'join', room: ROOM, user_id: 'alice', data: { color: 'red' } });
    await sleep(150);
    assert.deepEqual(roomEvents(carol), [], 'a non-member hears nothing');
    assert.deepEqual(roomEvents(carolSse), []);
  });

  it('presence from a member reaches the members; from a non-member it is refused quietly', async () => {
    const before = roomEvents(alice).length;
    const p = await post(port, 'presence', tok.bob, { room: ROOM, data: { cursor: 3 } });
    assert.deepEqual(p.json, { updated: true });
    for (const s of [alice, alice2, bob, aliceSse]) await waitUntil(() => roomEvents(s).some((e) => e.type === 'presence'), 3000, 'the presence event');
    assert.deepEqual(roomEvents(alice).slice(before), [{ type: 'presence', room: ROOM, user_id: 'bob', data: { cursor: 3 } }]);
    const np = await post(port, 'presence', tok.carol, { room: ROOM, data: { cursor: 9 } });
    assert.deepEqual(np.json, { updated: false, reason: 'not_in_room' });
    const get = await httpJson(port, 'GET', `/api/rooms/${encodeURIComponent(ROOM)}`, { token: tok.carol });
    assert.deepEqual(get.json.members.find((m) => m.user_id === 'bob').data, { cursor: 3 }, 'presence replaced the data');
  });

  it('broadcast: any caller may send to a room with members; an empty room says so', async () => {
    const r = await post(port, 'broadcast', tok.carol, { room: ROOM, topic: 'ping', data: { n: 1 } });
    assert.deepEqual(r.json, { broadcasted: true });
    const ev = { type: 'broadcast', room: ROOM, sender: 'carol', topic: 'ping', data: { n: 1 } };
    for (const s of [alice, bob, aliceSse]) {
      await waitUntil(() => roomEvents(s).some((e) => e.type === 'broadcast'), 3000, 'the broadcast');
      assert.deepEqual(roomEvents(s).find((e) => e.type === 'broadcast'), ev);
    }
    const empty = await post(port, 'broadcast', tok.alice, { room: 'nobody-here', topic: 't' });
    assert.deepEqual(empty.json, { broadcasted: false, reason: 'room_empty' });
    await sleep(100);
    assert.deepEqual(roomEvents(carol), [], 'the sender is not a member: it hears nothing');
  });

  it('list and get (the name URL-decoded); an unknown room is empty', async () => {
    const list = await httpJson(port, 'GET', '/api/rooms', { token: tok.bob });
    assert.deepEqual(list.json, [{ name: ROOM, members: 2 }]);
    const get = await httpJson(port, 'GET', `/api/rooms/${encodeURIComponent(ROOM)}`, { token: tok.bob });
    assert.equal(get.json.room, ROOM);
    assert.equal(get.json.count, 2);
    assert.deepEqual(get.json.members.map((m) => m.user_id).sort(), ['alice', 'bob']);
    const none = await httpJson(port, 'GET', '/api/rooms/nope', { token: tok.bob });
    assert.deepEqual(none.json, { room: 'nope', members: [], count: 0 });
  });

  it('the admin acts for the user its body names', async () => {
    const r = await post(port, 'join', ADMIN_TOKEN, { room: ROOM, user_id: 'dave', data: { admin: true } });
    assert.equal(r.status, 200, r.body);
    await waitUntil(() => roomEvents(alice).some((e) => e.type === 'join' && e.user_id === 'dave'), 3000, "dave's join");
    const get = await httpJson(port, 'GET', `/api/rooms/${encodeURIComponent(ROOM)}`, { token: tok.bob });
    assert.deepEqual(get.json.members.map((m) => m.user_id).sort(), ['alice', 'bob', 'dave']);
    const left = await post(port, 'leave', ADMIN_TOKEN, { room: ROOM, user_id: 'dave' });
    assert.deepEqual(left.json, { left: ROOM, was_present: true });
  });

  it("one of a user's sockets closes: its other sessions still get the room's events", async () => {
    alice2.terminate();
    await sleep(150);
    const before = roomEvents(alice).length;
    await post(port, 'presence', tok.bob, { room: ROOM, data: { cursor: 4 } });
    await waitUntil(() => roomEvents(alice).length > before, 3000, 'the event on the remaining socket');
    assert.deepEqual(roomEvents(alice).at(-1), { type: 'presence', room: ROOM, user_id: 'bob', data: { cursor: 4 } });
  });

  it('leave: the room and the leaver hear it; again is a no-op; the last leave deletes the room', async () => {
    const before = { alice: roomEvents(alice).length, bob: roomEvents(bob).length };
    const l = await post(port, 'leave', tok.bob, { room: ROOM });
    assert.deepEqual(l.json, { left: ROOM, was_present: true });
    const leave = { type: 'leave', room: ROOM, user_id: 'bob' };
    await waitUntil(() => roomEvents(alice).length > before.alice && roomEvents(bob).length > before.bob, 3000, 'the leave event');
    assert.deepEqual(roomEvents(alice).at(-1), leave);
    assert.deepEqual(roomEvents(bob).at(-1), leave, 'the leaver hears its own leave');
    const again = await post(port, 'leave', tok.bob, { room: ROOM });
    assert.deepEqual(again.json, { left: ROOM, was_present: false });
    await post(port, 'leave', tok.alice, { room: ROOM });
    assert.deepEqual((await httpJson(port, 'GET', '/api/rooms', { token: tok.bob })).json, []);
    // Rejoining creates it again, with fresh data.
    const j = await post(port, 'join', tok.alice, { room: ROOM, data: { color: 'blue' } });
    assert.deepEqual(j.json.snapshot.peers, []);
  });

  it('members among 150 connected users: only they get the events (the hub grew its session index twice)', async () => {
    const many = [];
    for (let i = 0; i < 150; i++) {
      const t = await session(port, `u${i}`);
      many.push({ user: `u${i}`, token: t, ws: await socket(srv.ports.ws, t) });
    }
    await sleep(200);
    const members = many.filter((_, i) => i % 15 === 0); // 10 of them
    for (const m of members) assert.equal((await post(port, 'join', m.token, { room: 'big' })).status, 200);
    await post(port, 'presence', members[0].token, { room: 'big', data: { hi: 1 } });
    for (const m of members) await waitUntil(() => roomEvents(m.ws).some((e) => e.type === 'presence'), 3000, `${m.user}'s presence event`);
    await sleep(150);
    for (const o of many.filter((x) => !members.includes(x))) assert.deepEqual(roomEvents(o.ws), [], `${o.user} is not a member`);
    for (const m of members) assert.equal(roomEvents(m.ws).filter((e) => e.type === 'join').length, members.length - members.indexOf(m), `${m.user}: one join event per later joiner, and its own`);
    for (const o of many) o.ws.terminate();
  });

  it('many rooms, 40 of them in one hash bucket: created, emptied and recreated in any order, each stays findable', async () => {
    // The hub finds a room through 16 384 chained buckets of FNV-1a(name); names sharing a
    // bucket exercise the chain (and its relinking when the last room moves into a hole).
    const fnv = (str) => {
      let h = 0x811c9dc5;
      for (const b of Buffer.from(str)) h = Math.imul(h ^ b, 16777619) >>> 0;
      return h & 16383;
    };
    const target = fnv('chain-0');
    const chained = [];
    for (let i = 0; chained.length < 40; i++) if (fnv(`chain-${i}`) === target) chained.push(`chain-${i}`);
    const names = [...chained, ...Array.from({ length: 60 }, (_, i) => `plain-${i}`)];
    let seed = 7;
    const shuffle = (a) => a.map((x) => [x, (seed = (seed * 1103515245 + 12345) % 2147483648)]).sort((p, q) => p[1] - q[1]).map((p) => p[0]);
    const members = new Map(); // what the server must hold: room → users
    const act = async (op, user, name) => {
      const r = await post(port, op, tok[user], { room: name });
      assert.equal(r.status, 200, r.body);
      const set = members.get(name) ?? new Set();
      if (op === 'join') set.add(user);
      else {
        assert.equal(r.json.was_present, set.has(user), `${user} leaving ${name}`);
        set.delete(user);
      }
      if (set.size) members.set(name, set);
      else members.delete(name);
    };
    const check = async () => {
      const list = (await httpJson(port, 'GET', '/api/rooms', { token: tok.carol })).json.filter((r) => names.includes(r.name));
      assert.deepEqual(list.map((r) => `${r.name}:${r.members}`).sort(), [...members].map(([n, u]) => `${n}:${u.size}`).sort());
      for (const name of names) {
        const g = await httpJson(port, 'GET', `/api/rooms/${encodeURIComponent(name)}`, { token: tok.carol });
        assert.deepEqual(g.json.members.map((m) => m.user_id).sort(), [...(members.get(name) ?? [])].sort(), name);
      }
    };
    for (const name of shuffle(names)) await act('join', 'carol', name);
    for (const name of shuffle(names).slice(0, 50)) await act('join', 'bob', name);
    await check();
    for (const name of shuffle(names).slice(0, 70)) await act('leave', 'carol', name); // rooms she was alone in go
    await check();
    for (const name of shuffle(names).slice(0, 30)) await act('join', 'carol', name); // some come back
    await check();
    for (const name of shuffle(names)) {
      await act('leave', 'carol', name);
      await act('leave', 'bob', name);
    }
    await check();
    assert.equal(members.size, 0);
  });

  it('/api/crdt* answers 501 NOT_SUPPORTED', async () => {
    for (const [method, p] of [['GET', '/api/crdt'], ['POST', '/api/crdt/Todo/x'], ['DELETE', '/api/crdt/a/b']]) {
      const r = await httpJson(port, method, p, { token: tok.alice, body: method === 'POST' ? {} : undefined });
      assert.equal(r.status, 501, `${method} ${p}`);
      assert.equal(r.json.error.code, 'NOT_SUPPORTED');
    }
  });
});

describe('rooms: idle members leave (PYLON_ROOM_IDLE_SECS=2)', { timeout: 30000 }, () => {
  let srv;
  after(async () => srv?.dispose());

  it('a member that neither rejoins nor sends presence is removed, with a leave event; an active one stays', async () => {
    srv = await startPylon({ args: ['dev'], env: env({ PYLON_ROOM_IDLE_SECS: '2' }) });
    const port = srv.port;
    const idle = await session(port, 'idle');
    const busy = await session(port, 'busy');
    const busyWs = await socket(srv.ports.ws, busy);
    const idleWs = await socket(srv.ports.ws, idle);
    await sleep(100);
    await post(port, 'join', idle, { room: 'r' });
    await post(port, 'join', busy, { room: 'r' });
    const t0 = Date.now();
    let removedAt = 0;
    while (Date.now() - t0 < 5000) { // busy keeps sending presence; idle says nothing
      await post(port, 'presence', busy, { room: 'r', data: { t: Date.now() } });
      if (!removedAt && roomEvents(busyWs).some((e) => e.type === 'leave')) removedAt = Date.now();
      await sleep(250);
    }
    assert.ok(removedAt, 'the idle member was removed');
    const secs = (removedAt - t0) / 1000;
    // Activity is kept in whole seconds (time(2)) and swept every 0.5 s: 1–3 s after the join.
    assert.ok(secs >= 0.9 && secs <= 4.5, `removed ${secs} s after its join (idle time 2 s, swept every 0.5 s)`);
    assert.deepEqual(roomEvents(busyWs).find((e) => e.type === 'leave'), { type: 'leave', room: 'r', user_id: 'idle' });
    assert.ok(roomEvents(idleWs).some((e) => e.type === 'leave' && e.user_id === 'idle'), 'the removed member hears it too');
    const get = await httpJson(port, 'GET', '/api/rooms/r', { token: busy });
    assert.deepEqual(get.json.members.map((m) => m.user_id), ['busy'], 'the active member stays');
    busyWs.terminate();
    idleWs.terminate();
  });
});

// The room table is bounded (10 000 rooms): one more is refused with 429 and a hint, joining an
// existing room still works, and a room that empties frees its place.
describe('rooms: the room limit', { timeout: 90000 }, () => {
  let srv, port;
  before(async () => {
    srv = await startPylon({ args: ['dev'], env: env() });
    port = srv.port;
  });
  after(() => srv?.dispose());

  it('the 10 001st room is refused with 429 ROOM_LIMIT_REACHED; an emptied room frees a place', async () => {
    const tok = await session(port, 'many-rooms');
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < 10000) {
        const k = next++;
        const r = await post(port, 'join', tok, { room: `room-${k}` });
        assert.equal(r.status, 200, `room-${k}: ${r.body}`);
      }
    }));
    const over = await post(port, 'join', tok, { room: 'one-too-many' });
    assert.equal(over.status, 429, over.body);
    assert.equal(over.json.error.code, 'ROOM_LIMIT_REACHED');
    assert.match(over.json.error.hint ?? over.body, /leave unused rooms/);
    assert.equal((await post(port, 'join', tok, { room: 'room-42' })).status, 200, 'an existing room can still be joined');
    assert.equal((await post(port, 'leave', tok, { room: 'room-7' })).status, 200);
    assert.equal((await post(port, 'join', tok, { room: 'one-too-many' })).status, 200, 'the emptied room made room');
    assert.equal((await post(port, 'join', tok, { room: 'two-too-many' })).status, 429);
  });
});
