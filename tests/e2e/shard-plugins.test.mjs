// shard-plugins.test.mjs — simulations from shared objects (PYLON_SHARD_PLUGINS) and the
// built-in turn-based simulation with tick_rate_hz 0 (ticks only when inputs arrive).

import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';

import { request, sleep } from './lib/http.mjs';
import { PYLON_BIN, freePortBlock, runPylon, startPylon } from './lib/server.mjs';

const ADMIN = 'c0ffee'.repeat(10) + 'c0ff';
const PLUGIN = process.env.PYLON_COUNTER_PLUGIN ||
  path.resolve(path.dirname(PYLON_BIN), '..', 'examples', 'libpylon_counter.so');
// Built by tests/CMakeLists.txt from tests/plugins/bad_plugins.c.
const WRONG_ABI = process.env.PYLON_WRONG_ABI_PLUGIN || path.resolve(path.dirname(PYLON_BIN), '..', 'tests', 'libpylon_wrong_abi.so');
const INCOMPLETE = process.env.PYLON_INCOMPLETE_PLUGIN || path.resolve(path.dirname(PYLON_BIN), '..', 'tests', 'libpylon_incomplete.so');
const auth = { authorization: `Bearer ${ADMIN}` };

async function status(port, id) {
  return (await request(port, { path: `/api/shards/${id}` })).json;
}

async function waitFor(fn, ms = 3000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return true;
    await sleep(25);
  }
  return fn();
}

describe('shard plugins', { timeout: 30000 }, () => {
  it('a bad plugin refuses the start with one line naming it', async () => {
    const port = await freePortBlock();
    const missing = await runPylon(['dev'], { env: { PYLON_PORT: port, PYLON_SHARD_PLUGINS: '/no/such/plugin.so' } });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /PYLON_SHARD_PLUGINS: cannot load \/no\/such\/plugin\.so/);
    const notPlugin = await runPylon(['dev'], { env: { PYLON_PORT: port, PYLON_SHARD_PLUGINS: '/lib/x86_64-linux-gnu/libm.so.6' } });
    assert.equal(notPlugin.code, 1);
    assert.match(notPlugin.stderr, /does not export pylon_sim_plugin/);
    const twice = await runPylon(['dev'], { env: { PYLON_PORT: port, PYLON_SHARD_PLUGINS: `${PLUGIN},${PLUGIN}` } });
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /kind "counter" is already loaded/);
    const abi = await runPylon(['dev'], { env: { PYLON_PORT: port, PYLON_SHARD_PLUGINS: WRONG_ABI } });
    assert.equal(abi.code, 1, abi.stderr);
    assert.match(abi.stderr, /was built for SimState ABI version 2; this server speaks version 1: rebuild it/);
    const incomplete = await runPylon(['dev'], { env: { PYLON_PORT: port, PYLON_SHARD_PLUGINS: `${PLUGIN},${INCOMPLETE}` } });
    assert.equal(incomplete.code, 1, incomplete.stderr);
    assert.match(incomplete.stderr, /libpylon_incomplete\.so leaves kind, init, apply_input, tick, snapshot_for or destroy unset/);
    for (const r of [abi, incomplete]) assert.equal(r.stderr.trim().split('\n').filter((l) => l.includes('PYLON_SHARD_PLUGINS')).length, 1, r.stderr);
  });

  it('the example plugin loads and runs event-driven until it finishes', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN, PYLON_SHARD_PLUGINS: PLUGIN } });
    try {
      const c = await request(srv.port, {
        method: 'POST', path: '/api/shards', headers: auth,
        body: JSON.stringify({ id: 'c1', kind: 'counter', config: { goal: 5 }, tick_rate_hz: 0 }),
      });
      assert.equal(c.status, 201, c.body);
      assert.equal(c.json.kind, 'counter');
      await sleep(200);
      assert.equal((await status(srv.port, 'c1')).tick, 0, 'no input, no tick (event-driven)');
      const seqs = [];
      for (let i = 0; i < 3; i++) {
        const r = await request(srv.port, {
          method: 'POST', path: '/api/shards/c1/input', headers: auth,
          body: JSON.stringify({ input: { add: 2 }, subscriber_id: 'p1' }),
        });
        assert.equal(r.status, 200, r.body);
        seqs.push(r.json.seq);
      }
      assert.deepEqual(seqs, [1, 2, 3]);
      assert.ok(await waitFor(async () => (await status(srv.port, 'c1')).running === false),
        'the counter reached its goal and the shard finished');
      const bad = await request(srv.port, {
        method: 'POST', path: '/api/shards/c1/input', headers: auth,
        body: JSON.stringify({ input: { add: 1 }, subscriber_id: 'p1' }),
      });
      assert.equal(bad.status, 400);
      assert.equal(bad.json.error.code, 'INPUT_REJECTED');
    } finally {
      await srv.dispose();
    }
  });
});

describe('turn-based simulation (tick_rate_hz 0)', { timeout: 30000 }, () => {
  it('plays to a winner, refusing moves out of turn, then finishes', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN } });
    try {
      const c = await request(srv.port, {
        method: 'POST', path: '/api/shards', headers: auth,
        body: JSON.stringify({ id: 'g1', kind: 'turns', config: { goal: 7 }, tick_rate_hz: 0 }),
      });
      assert.equal(c.status, 201, c.body);
      const send = (sid, input) => request(srv.port, {
        method: 'POST', path: '/api/shards/g1/input', headers: auth,
        body: JSON.stringify({ input, subscriber_id: sid }),
      });
      await send('alice', { join: true });
      await send('bob', { join: true });
      await send('bob', { add: 3 }); // out of turn: dropped
      await send('alice', { add: 3 }); // 3
      await send('bob', { add: 3 }); // 6
      await send('alice', { add: 1 }); // 7: alice wins
      assert.ok(await waitFor(async () => (await status(srv.port, 'g1')).running === false));
      const st = await status(srv.port, 'g1');
      assert.equal(st.inputs_dropped, 1, 'the move out of turn was dropped');
      assert.ok(st.tick >= 1 && st.tick <= 6, `one tick per batch of inputs: ${st.tick}`);
    } finally {
      await srv.dispose();
    }
  });

  it('an unknown kind and a bad config are refused', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN } });
    try {
      const k = await request(srv.port, { method: 'POST', path: '/api/shards', headers: auth, body: JSON.stringify({ id: 'x', kind: 'chess' }) });
      assert.equal(k.status, 400);
      assert.match(k.json.error.message, /unknown shard kind "chess"/);
      const cfg = await request(srv.port, { method: 'POST', path: '/api/shards', headers: auth, body: JSON.stringify({ id: 'y', kind: 'turns', config: { max_players: 99 } }) });
      assert.equal(cfg.status, 400);
      assert.match(cfg.json.error.message, /max_players/);
    } finally {
      await srv.dispose();
    }
  });
});

describe('shard SSE (GET /api/shards/<id>/connect)', { timeout: 30000 }, () => {
  it('streams the snapshots as events with the tick as id; refuses without a session or shard', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN } });
    try {
      const c = await request(srv.port, { method: 'POST', path: '/api/shards', headers: auth, body: JSON.stringify({ id: 's1', kind: 'arena', tick_rate_hz: 50 }) });
      assert.equal(c.status, 201, c.body);
      const anon = await request(srv.port, { path: '/api/shards/s1/connect' });
      assert.equal(anon.status, 401);
      assert.equal(anon.json.error.code, 'AUTH_REQUIRED');
      const none = await request(srv.port, { path: '/api/shards/nope/connect', headers: auth });
      assert.equal(none.status, 404);
      assert.equal(none.json.error.code, 'SHARD_NOT_FOUND');
      const g = await request(srv.port, { method: 'POST', path: '/api/auth/guest' });
      const other = await request(srv.port, { path: '/api/shards/s1/connect?sid=someone', headers: { authorization: `Bearer ${g.json.token}` } });
      assert.equal(other.status, 403);
      const res = await fetch(`http://127.0.0.1:${srv.port}/api/shards/s1/connect`, { headers: { authorization: `Bearer ${g.json.token}` } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type'), /text\/event-stream/);
      const reader = res.body.getReader();
      let text = '';
      const end = Date.now() + 3000;
      while ((text.match(/\nid: \d+\ndata: /g) || []).length < 5 && Date.now() < end) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      await reader.cancel();
      const ticks = [...text.matchAll(/id: (\d+)\ndata: (.*)\n\n/g)].map((m) => [Number(m[1]), JSON.parse(m[2])]);
      assert.ok(ticks.length >= 5, text);
      for (let i = 1; i < ticks.length; i++) assert.equal(ticks[i][0], ticks[i - 1][0] + 1, 'ticks rise by one');
      assert.ok(Array.isArray(ticks[0][1].players));
    } finally {
      await srv.dispose();
    }
  });
});

describe('matchmaker', { timeout: 30000 }, () => {
  const players = (srv) => {
    const guest = async () => (await request(srv.port, { method: 'POST', path: '/api/auth/guest' })).json;
    const call = (g, method, p, body) => request(srv.port, { method, path: p, headers: { authorization: `Bearer ${g.token}` }, body: body && JSON.stringify(body) });
    return { guest, call };
  };

  it('refuses a body that is not a JSON object, a mode that is not a string or longer than 63 bytes; nothing is queued', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN, PYLON_MATCH_SIZE: 2 } });
    try {
      const g = await players(srv).guest();
      const enqueue = (body) => request(srv.port, { method: 'POST', path: '/api/matchmaker/enqueue', headers: { authorization: `Bearer ${g.token}` }, body });
      for (const [body, code, why] of [
        ['{"mode": "duel"', 'INVALID_JSON', /must be a JSON object/],
        ['["duel"]', 'INVALID_JSON', /must be a JSON object/],
        ['{"mode": 5}', 'INVALID_MODE', /mode must be a string/],
        [JSON.stringify({ mode: 'x'.repeat(63) + 'A' }), 'INVALID_MODE', /longer than 63 bytes/],
        [JSON.stringify({ mode: 'y'.repeat(62) + 'é' }), 'INVALID_MODE', /longer than 63 bytes/], // 64 bytes in UTF-8
      ]) {
        const r = await enqueue(body);
        assert.equal(r.status, 400, `${body}: ${r.body}`);
        assert.equal(r.json.error.code, code, body);
        assert.match(r.json.error.message, why);
        const st = await request(srv.port, { path: '/api/matchmaker/status', headers: { authorization: `Bearer ${g.token}` } });
        assert.deepEqual(st.json, { status: 'idle' }, `nothing queued after ${body}`);
      }
      const fits = await enqueue(JSON.stringify({ mode: 'x'.repeat(63) }));
      assert.equal(fits.json.status, 'queued', fits.body);
      assert.equal(fits.json.mode, 'x'.repeat(63));
      const none = await enqueue('');
      assert.equal(none.json.mode, 'default', 'no body: the default mode');
    } finally {
      await srv.dispose();
    }
  });

  it('matches players of one mode in fixed-size groups into a new shard', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN, PYLON_MATCH_SIZE: 2 } });
    try {
      const { guest, call } = players(srv);
      const [a, b, c] = [await guest(), await guest(), await guest()];
      const anon = await request(srv.port, { method: 'POST', path: '/api/matchmaker/enqueue', body: '{}' });
      assert.equal(anon.status, 401);
      assert.deepEqual((await call(a, 'GET', '/api/matchmaker/status')).json, { status: 'idle' });
      const qa = await call(a, 'POST', '/api/matchmaker/enqueue', { mode: 'duel' });
      assert.equal(qa.json.status, 'queued');
      assert.equal(qa.json.position, 0);
      const qc = await call(c, 'POST', '/api/matchmaker/enqueue', { mode: 'ffa' });
      assert.equal(qc.json.status, 'queued', 'another mode does not complete the duel');
      const qb = await call(b, 'POST', '/api/matchmaker/enqueue', { mode: 'duel' });
      assert.equal(qb.json.status, 'matched');
      const sa = (await call(a, 'GET', '/api/matchmaker/status')).json;
      assert.equal(sa.status, 'matched');
      assert.equal(sa.shard_id, qb.json.shard_id);
      assert.match(sa.shard_id, /^match_[0-9a-f]+_\d+$/);
      const shard = await request(srv.port, { path: `/api/shards/${sa.shard_id}` });
      assert.equal(shard.status, 200);
      assert.equal(shard.json.kind, 'arena');
      assert.equal((await call(c, 'GET', '/api/matchmaker/status')).json.status, 'queued');
      assert.deepEqual((await call(c, 'POST', '/api/matchmaker/dequeue')).json, { dequeued: true });
      assert.deepEqual((await call(c, 'GET', '/api/matchmaker/status')).json, { status: 'idle' });
    } finally {
      await srv.dispose();
    }
  });

  // Guests and a caller for one server; the matchmaker knows a player by the session's user id.
  it('enqueueing again replaces the earlier entry: queued once, in the new mode, matched only within it', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN, PYLON_MATCH_SIZE: 2 } });
    try {
      const { guest, call } = players(srv);
      const [a, b, c, d] = [await guest(), await guest(), await guest(), await guest()];
      assert.equal((await call(a, 'POST', '/api/matchmaker/enqueue', { mode: 'duel' })).json.status, 'queued');
      // Twice in the same mode: a group of 2 would form if a were queued twice.
      const again = await call(a, 'POST', '/api/matchmaker/enqueue', { mode: 'duel' });
      assert.equal(again.status, 200);
      assert.equal(again.json.status, 'queued', 'a player does not match with an earlier entry of its own');
      assert.equal(again.json.position, 0);
      const moved = await call(a, 'POST', '/api/matchmaker/enqueue', { mode: 'ffa' });
      assert.equal(moved.json.status, 'queued');
      assert.equal(moved.json.position, 0, 'the duel entry is gone, not ahead of the ffa one');
      assert.equal(moved.json.mode, 'ffa');
      const sMoved = (await call(a, 'GET', '/api/matchmaker/status')).json;
      assert.deepEqual({ ...sMoved, waiting_secs: 0 }, { status: 'queued', position: 0, waiting_secs: 0, mode: 'ffa' });
      // b wants a duel: a left that mode, so b waits.
      const qb = await call(b, 'POST', '/api/matchmaker/enqueue', { mode: 'duel' });
      assert.equal(qb.json.status, 'queued', 'a replaced entry does not match in its old mode');
      assert.equal(qb.json.mode, 'duel');
      assert.equal((await call(a, 'GET', '/api/matchmaker/status')).json.status, 'queued');
      // c wants ffa: matched with a.
      const qc = await call(c, 'POST', '/api/matchmaker/enqueue', { mode: 'ffa' });
      assert.equal(qc.json.status, 'matched');
      const sa = (await call(a, 'GET', '/api/matchmaker/status')).json;
      assert.deepEqual(sa, { status: 'matched', shard_id: qc.json.shard_id });
      const sb = (await call(b, 'GET', '/api/matchmaker/status')).json;
      assert.equal(sb.status, 'queued', 'the duel player stays out of the ffa match');
      assert.equal(sb.mode, 'duel');
      assert.equal(sb.position, 0);
      // d completes the duel: a second shard, with b.
      const qd = await call(d, 'POST', '/api/matchmaker/enqueue', { mode: 'duel' });
      assert.equal(qd.json.status, 'matched');
      assert.notEqual(qd.json.shard_id, qc.json.shard_id);
      assert.deepEqual((await call(b, 'GET', '/api/matchmaker/status')).json, { status: 'matched', shard_id: qd.json.shard_id });
      // A matched player who enqueues again is queued afresh (the old match is forgotten).
      const re = await call(a, 'POST', '/api/matchmaker/enqueue', { mode: 'ffa' });
      assert.equal(re.json.status, 'queued');
      assert.equal(re.json.position, 0);
    } finally {
      await srv.dispose();
    }
  });

  it('reports queue order as position and a waiting_secs that rises with time', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN, PYLON_MATCH_SIZE: 4 } });
    try {
      const { guest, call } = players(srv);
      const p = [];
      for (let i = 0; i < 5; i++) p.push(await guest());
      const status = async (g) => (await call(g, 'GET', '/api/matchmaker/status')).json;
      const first = [];
      for (let i = 0; i < 3; i++) {
        const q = await call(p[i], 'POST', '/api/matchmaker/enqueue', { mode: 'squad' });
        assert.equal(q.status, 200);
        assert.deepEqual(Object.keys(q.json).sort(), ['mode', 'position', 'status', 'waiting_secs']);
        assert.equal(q.json.status, 'queued');
        assert.equal(q.json.position, i, `player ${i} is ${i}th in the queue`);
        assert.equal(q.json.mode, 'squad');
        assert.ok(Number.isInteger(q.json.waiting_secs) && q.json.waiting_secs >= 0 && q.json.waiting_secs <= 1, `fresh entry waits ~0 s, got ${q.json.waiting_secs}`);
        first.push(q.json.waiting_secs);
      }
      for (let i = 0; i < 3; i++) assert.equal((await status(p[i])).position, i, 'status keeps the queue order');
      await sleep(1200);
      const later = [];
      for (let i = 0; i < 3; i++) {
        const s = await status(p[i]);
        assert.equal(s.status, 'queued');
        assert.equal(s.position, i);
        assert.ok(s.waiting_secs >= first[i] + 1 && s.waiting_secs <= first[i] + 3, `waiting_secs rises with time: ${first[i]} then ${s.waiting_secs} after 1.2 s`);
        later.push(s.waiting_secs);
      }
      // The head leaves: the others move up, in order.
      assert.deepEqual((await call(p[0], 'POST', '/api/matchmaker/dequeue')).json, { dequeued: true });
      assert.equal((await status(p[1])).position, 0);
      assert.equal((await status(p[2])).position, 1);
      // Enqueueing again puts the player at the back, waiting afresh.
      const back = await call(p[1], 'POST', '/api/matchmaker/enqueue', { mode: 'squad' });
      assert.equal(back.json.position, 1);
      assert.ok(back.json.waiting_secs < later[1], `a new entry waits afresh: ${back.json.waiting_secs} vs ${later[1]}`);
      assert.equal((await status(p[2])).position, 0);
      // Two more make four: one match of the four queued players.
      assert.equal((await call(p[3], 'POST', '/api/matchmaker/enqueue', { mode: 'squad' })).json.position, 2);
      const full = await call(p[4], 'POST', '/api/matchmaker/enqueue', { mode: 'squad' });
      assert.equal(full.json.status, 'matched');
      for (const g of [p[1], p[2], p[3]]) assert.deepEqual(await status(g), { status: 'matched', shard_id: full.json.shard_id });
      assert.deepEqual(await status(p[0]), { status: 'idle' });
    } finally {
      await srv.dispose();
    }
  });

  it('dequeue of a player who is not queued answers {"dequeued":false} and leaves the status idle', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN, PYLON_MATCH_SIZE: 2 } });
    try {
      const { guest, call } = players(srv);
      const [a, b, c] = [await guest(), await guest(), await guest()];
      const anon = await request(srv.port, { method: 'POST', path: '/api/matchmaker/dequeue' });
      assert.equal(anon.status, 401);
      assert.equal(anon.json.error.code, 'AUTH_REQUIRED');
      const never = await call(a, 'POST', '/api/matchmaker/dequeue');
      assert.equal(never.status, 200);
      assert.deepEqual(never.json, { dequeued: false });
      assert.deepEqual((await call(a, 'GET', '/api/matchmaker/status')).json, { status: 'idle' });
      // Queued, dequeued, then dequeued again.
      assert.equal((await call(a, 'POST', '/api/matchmaker/enqueue', { mode: 'duel' })).json.status, 'queued');
      assert.deepEqual((await call(a, 'POST', '/api/matchmaker/dequeue')).json, { dequeued: true });
      const twice = await call(a, 'POST', '/api/matchmaker/dequeue');
      assert.equal(twice.status, 200);
      assert.deepEqual(twice.json, { dequeued: false });
      assert.deepEqual((await call(a, 'GET', '/api/matchmaker/status')).json, { status: 'idle' });
      // The dequeued player really left: the next duel player waits instead of matching.
      assert.equal((await call(b, 'POST', '/api/matchmaker/enqueue', { mode: 'duel' })).json.status, 'queued');
      // A matched player is not queued: dequeue answers false and forgets the match.
      assert.equal((await call(c, 'POST', '/api/matchmaker/enqueue', { mode: 'duel' })).json.status, 'matched');
      assert.equal((await call(b, 'GET', '/api/matchmaker/status')).json.status, 'matched');
      assert.deepEqual((await call(b, 'POST', '/api/matchmaker/dequeue')).json, { dequeued: false });
      assert.deepEqual((await call(b, 'GET', '/api/matchmaker/status')).json, { status: 'idle' });
      assert.equal((await call(c, 'GET', '/api/matchmaker/status')).json.status, 'matched', 'only the caller\'s match is forgotten');
    } finally {
      await srv.dispose();
    }
  });
});

describe('replay', { timeout: 30000 }, () => {
  it('a recorded shard replays to the same final state hash; an edited recording does not', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN } });
    let file;
    try {
      const c = await request(srv.port, {
        method: 'POST', path: '/api/shards', headers: auth,
        body: JSON.stringify({ id: 'rec1', kind: 'arena', tick_rate_hz: 50, record: true, config: { speed: 150 } }),
      });
      assert.equal(c.status, 201, c.body);
      file = path.join(srv.cwd, c.json.replay_file);
      for (let i = 1; i <= 6; i++) {
        await request(srv.port, {
          method: 'POST', path: '/api/shards/rec1/input', headers: auth,
          body: JSON.stringify({ input: { dx: i / 7, dy: -1 }, subscriber_id: `p${i % 3}`, client_seq: i }),
        });
        await sleep(30);
      }
      await sleep(200);
      const d = await request(srv.port, { method: 'DELETE', path: '/api/shards/rec1', headers: auth });
      assert.equal(d.status, 200);
      await sleep(200);
      const fs = await import('node:fs');
      const lines = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.equal(lines[0].kind, 'arena');
      assert.ok(lines.some((l) => Array.isArray(l.inputs)), 'inputs were recorded');
      assert.match(lines.at(-1).hash, /^[0-9a-f]{16}$/);
      const ok = await runPylon(['replay', file]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /replay OK: \d+ ticks, final state hash [0-9a-f]{16} matches/);
      const edited = lines.map((l) => (Array.isArray(l.inputs) ? { ...l, inputs: l.inputs.map(([s, inp, q]) => [s, { ...inp, dy: 1 }, q]) } : l));
      fs.writeFileSync(file, edited.map((l) => JSON.stringify(l)).join('\n') + '\n');
      const bad = await runPylon(['replay', file]);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /replay MISMATCH/);
    } finally {
      await srv.dispose();
    }
  });

  it('an event-driven shard replays too: each tick line carries its dt, ticks on refused inputs included', async () => {
    const srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN } });
    try {
      // The arena moves players by speed × dt; at tick_rate_hz 0, dt is the time since the
      // previous tick, which only the recording knows.
      const c = await request(srv.port, {
        method: 'POST', path: '/api/shards', headers: auth,
        body: JSON.stringify({ id: 'rec0', kind: 'arena', tick_rate_hz: 0, record: true, config: { speed: 150 } }),
      });
      assert.equal(c.status, 201, c.body);
      const file = path.join(srv.cwd, c.json.replay_file);
      const inputs = [{ dx: 1, dy: 0 }, { dx: 0.5, dy: -1 }, 'not a move', { dx: -1, dy: 1 }, { dx: 0.25, dy: 0.75 }];
      for (const [i, input] of inputs.entries()) {
        const r = await request(srv.port, {
          method: 'POST', path: '/api/shards/rec0/input', headers: auth,
          body: JSON.stringify({ input, subscriber_id: `p${i % 2}`, client_seq: i + 1 }),
        });
        assert.equal(r.status, 200, r.body);
        await sleep(40 + 15 * i);
      }
      assert.ok(await waitFor(async () => (await status(srv.port, 'rec0')).tick === inputs.length), 'one tick per input');
      assert.equal((await status(srv.port, 'rec0')).inputs_dropped, 1, 'the string was refused');
      assert.equal((await request(srv.port, { method: 'DELETE', path: '/api/shards/rec0', headers: auth })).status, 200);
      const fs = await import('node:fs');
      let lines = [];
      await waitFor(async () => {
        try { // the server may be halfway through its last line
          lines = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
        } catch {
          return false;
        }
        return lines.at(-1).end !== undefined;
      });
      const ticks = lines.filter((l) => l.tick !== undefined);
      assert.deepEqual(ticks.map((l) => l.tick), [1, 2, 3, 4, 5], 'every tick is recorded');
      assert.equal(ticks[2].inputs.length, 0, 'the tick on the refused input has no input');
      assert.ok(ticks.slice(1).every((l) => l.dt > 0.03 && l.dt < 5), JSON.stringify(ticks.map((l) => l.dt)));
      const ok = await runPylon(['replay', file]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /replay OK: 5 ticks/);
      // The dt matters: with another one the players end elsewhere.
      fs.writeFileSync(file, lines.map((l) => JSON.stringify(l.dt ? { ...l, dt: l.dt * 2 } : l)).join('\n') + '\n');
      const bad = await runPylon(['replay', file]);
      assert.equal(bad.code, 1, bad.stdout);
      assert.match(bad.stderr, /replay MISMATCH/);
    } finally {
      await srv.dispose();
    }
  });
});
