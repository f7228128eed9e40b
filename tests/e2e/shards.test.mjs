// shards.test.mjs — realtime shards end to end (spec/protocol.md §4, DECISIONS.md §2): the
// shard HTTP API (create, list, status, input, delete), the shard WebSocket on port+3 and on the
// main port (/shard/<id>, ?shard=), snapshot frames [u64 big-endian tick][compact JSON] at the
// configured tick rate, inputs moving players in the built-in "arena" simulation (ack = the
// last client_seq), the grid area of interest, slow subscribers that never delay the others,
// subscribe refusals (1008, 1013, dropped), malformed input, and idle shutdown.
//
// One `pylon dev` server (PYLON_ADMIN_TOKEN set, PYLON_WS_MAX_BACKLOG=4096) serves every test;
// each test uses its own shards. Timing assertions use wide bounds (a noisy 2-core VM).
//
// Tests 9-9c (last, on a server of their own): a shard that stops for good (DELETE, finished)
// closes its subscribers' sockets: WebSocket 1001 "shard deleted" / 1000 "shard finished", the
// SSE response ends; subscribers that disconnect as the shard is deleted do not crash it.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import { RawConn, assertErrorEnvelope, rawGet, request, sleep } from './lib/http.mjs';
import { startPylon } from './lib/server.mjs';
import { ShardClient, aoiCell, arenaSpawn } from './lib/shard-client.mjs';

const ADMIN = 'c0ffee00'.repeat(8); // 64 hex

let srv; // the server the helpers talk to
const servers = [];
const clients = [];
const sseConns = [];

/** A JSON request; `token` goes in Authorization: Bearer. */
async function api(method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  return request(srv.port, { method, path, headers, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
}

/** POST /api/shards as admin; asserts 201 and the status shape; returns the status. */
async function createShard(spec) {
  const res = await api('POST', '/api/shards', { token: ADMIN, body: { kind: 'arena', ...spec } });
  assert.equal(res.status, 201, `POST /api/shards ${JSON.stringify(spec)}: ${res.status} ${res.body}`);
  assertStatusShape(res.json, spec.id);
  return res.json;
}

function assertStatusShape(st, id) {
  // (+ "replay_file" for a shard created with "record": true)
  assert.deepEqual(Object.keys(st).filter((k) => k !== 'replay_file').sort(), ['frames_skipped', 'id', 'input_queue', 'inputs_dropped', 'kind', 'running', 'subscribers', 'tick']);
  if (id !== undefined) assert.equal(st.id, id);
  assert.equal(st.kind, 'arena');
  assert.equal(typeof st.running, 'boolean');
  for (const k of ['tick', 'subscribers', 'input_queue', 'inputs_dropped', 'frames_skipped']) assert.ok(Number.isInteger(st[k]) && st[k] >= 0, `${k}: ${st[k]}`);
}

async function status(id) {
  const res = await api('GET', `/api/shards/${encodeURIComponent(id)}`);
  assert.equal(res.status, 200, `GET /api/shards/${id}: ${res.status} ${res.body}`);
  assertStatusShape(res.json, id);
  return res.json;
}

/** A new guest: { token, user_id }. */
async function guest() {
  const res = await api('POST', '/api/auth/guest');
  assert.equal(res.status, 201, res.body);
  return { token: res.json.token, user_id: res.json.user_id };
}

/** A dev session for a chosen user id: { token, user_id }. */
async function mint(userId) {
  const res = await api('POST', '/api/auth/session', { token: ADMIN, body: { user_id: userId } });
  assert.equal(res.status, 201, res.body);
  return { token: res.json.token, user_id: userId };
}

/** The shard WebSocket URL on port+3 (default) or another port/path. */
function shardUrl(shard, sid, { port = srv.ports.shard, path = '/' } = {}) {
  const q = new URLSearchParams();
  if (shard !== undefined) q.set('shard', shard);
  if (sid !== undefined) q.set('sid', sid);
  const qs = q.toString();
  return `ws://127.0.0.1:${port}${path}${qs ? `?${qs}` : ''}`;
}

function connect(url, opts) {
  const c = new ShardClient(url, opts);
  clients.push(c);
  return c;
}

/** GET /api/shards/<shard>/connect as `user` (raw socket); resolves once `expect` arrived. */
async function shardSse(shard, user, expect = 'id: ') {
  const c = await RawConn.open(srv.port);
  sseConns.push(c);
  await c.write(rawGet(`/api/shards/${shard}/connect?sid=${encodeURIComponent(user.user_id)}`, `Accept: text/event-stream\r\nAuthorization: Bearer ${user.token}\r\n`));
  await c.waitForText(expect, 3000);
  return c;
}

/** Connects `user` to `shard` as itself and waits for the first frame. */
async function subscriber(shard, user, opts = {}) {
  const c = connect(shardUrl(shard, user.user_id, opts), { token: user.token, ...opts });
  await c.opened();
  await c.nextFrame(() => true, 3000, 'the first snapshot frame');
  return c;
}

/** Asserts frames[from..] have ticks rising by exactly 1. */
function assertConsecutive(frames, what) {
  for (let i = 1; i < frames.length; i++)
    assert.equal(frames[i].tick, frames[i - 1].tick + 1, `${what}: tick ${frames[i - 1].tick} followed by ${frames[i].tick}`);
}

/** Frames received by `c` during the next `ms` milliseconds. */
async function framesDuring(c, ms) {
  const from = c.frames.length;
  await sleep(ms);
  return c.frames.slice(from);
}

const visibleSids = (frame) => new Set(frame.json.players.map((p) => p.sid));

async function startServer() {
  srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN, PYLON_WS_MAX_BACKLOG: 4096 } });
  servers.push(srv);
}

before(startServer);
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  for (const c of sseConns.splice(0)) c.destroy();
});
after(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const c of sseConns.splice(0)) c.destroy();
  for (const s of servers) await s.dispose();
});

describe('shards', { timeout: 55000 }, () => {
  it('1. binary frames [u64 BE tick][JSON], ticks +1 per frame at 20 Hz (default) and 50 Hz; first tick is 1; status tick grows', async () => {
    const st20 = await createShard({ id: 'rate20' });
    assert.equal(st20.running, true);
    assert.ok(st20.tick <= 1, `a fresh shard's tick: ${st20.tick}`);
    assert.equal(st20.subscribers, 0);
    await createShard({ id: 'rate50', tick_rate_hz: 50 });

    const [a, b] = [await guest(), await guest()];
    const c20 = await subscriber('rate20', a);
    const c50 = await subscriber('rate50', b);
    assert.equal(c20.protocol, `bearer.${a.token}`, 'the bearer subprotocol is echoed');

    const t1 = (await status('rate20')).tick;
    const [f20, f50] = await Promise.all([framesDuring(c20, 2000), framesDuring(c50, 2000)]);
    const lastTick = c20.last.tick;
    const t2 = (await status('rate20')).tick;
    assert.ok(t2 > t1, `status tick grows: ${t1} → ${t2}`);

    assert.ok(f20.length >= 20 && f20.length <= 60, `20 Hz: ${f20.length} frames in 2 s`);
    assert.ok(f50.length >= 50 && f50.length <= 150, `50 Hz: ${f50.length} frames in 2 s`);
    assertConsecutive(c20.frames, '20 Hz client');
    assertConsecutive(c50.frames, '50 Hz client');
    assert.deepEqual(c20.badFrames, []);
    assert.deepEqual(c50.badFrames, []);
    // Not a player yet (no input): a spectator sees everyone, here no one.
    assert.deepEqual(c20.last.json, { you: null, players: [] });
    assert.ok(lastTick <= t2 && lastTick >= t1, `frame ticks follow the shard's tick (${t1}..${t2}): ${lastTick}`);
    const st = await status('rate20');
    assert.equal(st.subscribers, 1);

    // Event-driven shard (tick_rate_hz 0): no tick until an input arrives; the input sent by a
    // subscriber on its own socket produces tick 1, whose frame is its first.
    await createShard({ id: 'event0', tick_rate_hz: 0 });
    const u = await guest();
    const ce = connect(shardUrl('event0', u.user_id), { token: u.token });
    await ce.opened();
    await sleep(300);
    assert.equal(ce.frames.length, 0, 'no frame before the first tick');
    assert.equal((await status('event0')).tick, 0);
    ce.send({ input: { dx: 0, dy: 0 }, client_seq: 1 });
    const first = await ce.nextFrame(() => true, 3000, 'the first frame of the event-driven shard');
    assert.equal(first.tick, 1, 'the first tick after creation is 1');
    assert.equal(first.json.you.sid, u.user_id);
    assert.equal(first.json.you.ack, 1);
    await sleep(300);
    assert.equal(ce.frames.length, 1, 'one input, one tick');
    assert.equal((await status('event0')).tick, 1);
  });

  it('2. inputs move "you" (WS and HTTP POST /input), ack = last client_seq, fixed step speed/tick_rate', async () => {
    await createShard({ id: 'move', config: { width: 1000, height: 1000, speed: 200 } });
    const u = await guest();
    const spawn = arenaSpawn(u.user_id);
    const c = await subscriber('move', u);
    c.send({ input: { dx: 1, dy: 0 }, client_seq: 5 });
    const acked = await c.nextFrame((f) => f.json.you?.ack === 5, 3000, 'ack 5');
    assert.equal(acked.json.you.sid, u.user_id);
    assert.equal(acked.json.you.y, Math.round(spawn.y * 100) / 100, 'y unchanged: the spawn position from the sid hash');
    assert.ok(acked.json.players.some((p) => p.sid === u.user_id), 'a player sees itself');
    await sleep(500);
    const after = c.frames.filter((f) => f.tick >= acked.tick);
    assert.ok(after.length >= 5, `${after.length} frames in 0.5 s`);
    for (let i = 1; i < after.length; i++) {
      const [p, q] = [after[i - 1].json.you, after[i].json.you];
      // 200 units/s at 20 Hz: exactly 10 units per tick (fixed dt), until the right edge.
      assert.equal(q.x, Math.min(1000, Math.round((p.x + 10) * 100) / 100), `tick ${after[i].tick}: x ${p.x} → ${q.x}`);
      assert.equal(q.y, p.y);
      assert.equal(q.ack, 5);
    }
    assert.ok(c.last.json.you.x > acked.json.you.x || c.last.json.you.x === 1000, 'x went up (or sits at the right edge)');

    // HTTP input as the signed-in user (sid = the caller's user id): accepted with rising seqs.
    const r1 = await api('POST', '/api/shards/move/input', { token: u.token, body: { input: { dx: -1, dy: 0 }, client_seq: 6 } });
    assert.equal(r1.status, 200, r1.body);
    assert.equal(r1.json.accepted, true);
    assert.ok(Number.isInteger(r1.json.seq) && r1.json.seq >= 1, r1.body);
    const r2 = await api('POST', '/api/shards/move/input', { token: u.token, body: { input: { dx: -1, dy: 0 }, client_seq: 7, subscriber_id: u.user_id } });
    assert.equal(r2.status, 200, r2.body);
    assert.deepEqual(Object.keys(r2.json).sort(), ['accepted', 'seq']);
    assert.ok(r2.json.seq > r1.json.seq, `seq rises: ${r1.json.seq} then ${r2.json.seq}`);
    const back = await c.nextFrame((f) => f.json.you?.ack === 7, 3000, 'ack 7');
    const later = await c.nextFrame((f) => f.tick >= back.tick + 3, 3000, '3 more ticks');
    assert.ok(later.json.you.x < back.json.you.x || later.json.you.x === 0, `dx -1 moves left: ${back.json.you.x} → ${later.json.you.x}`);

    // A user may not input for someone else; the admin may (any subscriber_id, e.g. a bot).
    const other = await api('POST', '/api/shards/move/input', { token: u.token, body: { input: { dx: 1 }, subscriber_id: 'someone-else' } });
    assertErrorEnvelope(other, 403, 'UNAUTHORIZED');
    const anon = await api('POST', '/api/shards/move/input', { body: { input: { dx: 1 } } });
    assertErrorEnvelope(anon, 403, 'UNAUTHORIZED');
    const bot = await api('POST', '/api/shards/move/input', { token: ADMIN, body: { input: { dx: 0, dy: 0 }, subscriber_id: 'bot-1' } });
    assert.equal(bot.status, 200, bot.body);
    assert.ok(bot.json.seq > r2.json.seq);
    // A spectator (a subscriber without a player) sees every player, the bot included.
    const spectator = await subscriber('move', await guest());
    const seenAll = await spectator.nextFrame((f) => f.json.players.some((p) => p.sid === 'bot-1'), 3000, 'bot-1 in the arena');
    assert.equal(seenAll.json.you, null);
    assert.ok(seenAll.json.players.some((p) => p.sid === u.user_id));
    // Errors of the input endpoint.
    assertErrorEnvelope(await api('POST', '/api/shards/nope/input', { token: ADMIN, body: { input: {} } }), 404, 'SHARD_NOT_FOUND');
    assertErrorEnvelope(await api('POST', '/api/shards/move/input', { token: u.token, body: 'not json' }), 400, 'INVALID_JSON');
  });

  it('2b. max_input_queue: inputs beyond the queue bound are rejected with 400 INPUT_REJECTED and counted', async () => {
    await createShard({ id: 'queue', tick_rate_hz: 1, max_input_queue: 2 });
    const results = [];
    for (let i = 0; i < 6; i++) results.push(await api('POST', '/api/shards/queue/input', { token: ADMIN, body: { input: { dx: 1 }, subscriber_id: `q${i}` } }));
    const rejected = results.filter((r) => r.status === 400);
    // At 1 Hz, six quick requests span at most one tick: at most 4 fit in two queue fills.
    assert.ok(rejected.length >= 2, `rejected ${rejected.length} of 6: ${results.map((r) => r.status)}`);
    for (const r of rejected) assertErrorEnvelope(r, 400, 'INPUT_REJECTED');
    for (const r of results.filter((r) => r.status !== 400)) assert.equal(r.status, 200, r.body);
    const st = await status('queue');
    assert.ok(st.input_queue <= 2, `input_queue ${st.input_queue}`);
    assert.ok(st.inputs_dropped >= rejected.length, `inputs_dropped ${st.inputs_dropped} ≥ ${rejected.length}`);
  });

  // A sid is any text (the admin picks subscriber_id for bots): the arena writes it JSON-escaped.
  it('2c. a sid with a quote, a backslash and a newline: every frame still parses and carries it', async () => {
    await createShard({ id: 'escape' });
    const spectator = await subscriber('escape', await guest());
    const sid = 'bot "one"\\two\nthree';
    const r = await api('POST', '/api/shards/escape/input', { token: ADMIN, body: { input: { dx: 1, dy: 0 }, subscriber_id: sid } });
    assert.equal(r.status, 200, r.body);
    const f = await spectator.nextFrame((fr) => fr.json.players.some((p) => p.sid === sid), 3000, 'the player with the odd sid');
    assert.equal(f.json.you, null);
    await framesDuring(spectator, 200);
    assert.deepEqual(spectator.badFrames, [], 'every frame is JSON');
    assert.ok(spectator.last.json.players.some((p) => p.sid === sid));
  });

  it('3. area of interest (aoi_cell 100, aoi_radius 1): far players are hidden until one walks within one cell', async () => {
    const W = 10000;
    const cfg = { width: W, height: W, speed: 1000, aoi_cell: 100, aoi_radius: 1 };
    // Pick sids (deterministically, from the arena's spawn hash) that start in the same row of
    // cells, 6-15 cells apart, and away from cell boundaries (the snapshot rounds to 0.01).
    let A, B;
    search: for (let i = 0; i < 400; i++) {
      const a = `aoi-a${i}`;
      const pa = arenaSpawn(a, W, W);
      if (pa.x % 50 < 1 || pa.x % 50 > 49 || pa.y % 100 < 1 || pa.y % 100 > 99) continue;
      for (let j = 0; j < 400; j++) {
        const b = `aoi-b${j}`;
        const pb = arenaSpawn(b, W, W);
        if (pb.x % 100 < 1 || pb.x % 100 > 99) continue;
        const dcx = Math.abs(aoiCell(pa.x, 100) - aoiCell(pb.x, 100));
        if (aoiCell(pa.y, 100) === aoiCell(pb.y, 100) && dcx >= 6 && dcx <= 15) {
          A = { sid: a, spawn: pa };
          B = { sid: b, spawn: pb };
          break search;
        }
      }
    }
    assert.ok(A && B, 'found a pair of sids');
    assert.ok(Math.abs(A.spawn.x - B.spawn.x) > 300);
    await createShard({ id: 'aoi', config: cfg });
    const ua = await mint(A.sid);
    const ub = await mint(B.sid);
    const ca = await subscriber('aoi', ua);
    const cb = await subscriber('aoi', ub);
    ca.send({ input: { dx: 0, dy: 0 }, client_seq: 1 });
    cb.send({ input: { dx: 0, dy: 0 }, client_seq: 1 });
    const fa = await ca.nextFrame((f) => f.json.you?.ack === 1, 3000, 'A placed');
    const fb = await cb.nextFrame((f) => f.json.you?.ack === 1, 3000, 'B placed');
    assert.equal(fa.json.you.x, Math.round(A.spawn.x * 100) / 100, 'A spawns where the sid hash says');
    assert.equal(fa.json.you.y, Math.round(A.spawn.y * 100) / 100);
    assert.equal(fb.json.you.x, Math.round(B.spawn.x * 100) / 100, 'B spawns where the sid hash says');
    await sleep(200);
    for (const [c, me, them] of [[ca, A, B], [cb, B, A]]) {
      const f = c.last;
      assert.ok(visibleSids(f).has(me.sid), `${me.sid} sees itself`);
      assert.ok(!visibleSids(f).has(them.sid), `${me.sid} does not see ${them.sid} ${JSON.stringify(f.json)}`);
    }

    // A walks along x toward B (50 units = half a cell per tick) and past it.
    const startTick = ca.last.tick + 1;
    ca.send({ input: { dx: Math.sign(B.spawn.x - A.spawn.x), dy: 0 }, client_seq: 2 });
    const passedX = (x) => (B.spawn.x > A.spawn.x ? aoiCell(x, 100) > aoiCell(B.spawn.x, 100) + 2 : aoiCell(x, 100) < aoiCell(B.spawn.x, 100) - 2);
    await ca.nextFrame((f) => f.json.you.ack === 2 && (passedX(f.json.you.x) || f.json.you.x === 0 || f.json.you.x === W), 5000, 'A past B');
    await sleep(100);

    // Every tick, both snapshots agree with the grid rule applied to the two positions.
    const posA = new Map(ca.frames.filter((f) => f.tick >= startTick).map((f) => [f.tick, f]));
    const byTickB = new Map(cb.frames.map((f) => [f.tick, f]));
    let seen = 0, hidden = 0, compared = 0;
    for (const [tick, f] of posA) {
      const near = Math.abs(aoiCell(f.json.you.x, 100) - aoiCell(B.spawn.x, 100)) <= 1 && aoiCell(f.json.you.y, 100) === aoiCell(B.spawn.y, 100);
      assert.equal(visibleSids(f).has(B.sid), near, `tick ${tick}: A at ${f.json.you.x} ${near ? 'sees' : 'does not see'} B at ${B.spawn.x}: ${JSON.stringify(f.json)}`);
      const g = byTickB.get(tick);
      if (g) {
        compared++;
        assert.equal(visibleSids(g).has(A.sid), near, `tick ${tick}: B's view of A at ${f.json.you.x}: ${JSON.stringify(g.json)}`);
        if (near) assert.deepEqual(g.json.players.find((p) => p.sid === A.sid), { sid: A.sid, x: f.json.you.x, y: f.json.you.y }, 'B sees A where A is');
      }
      if (near) seen++;
      else hidden++;
    }
    assert.ok(seen >= 3, `A and B saw each other for ${seen} ticks`);
    assert.ok(hidden >= 3, `hidden for ${hidden} ticks`);
    assert.ok(compared >= posA.size - 2, `compared ${compared} of ${posA.size} ticks`);
  });

  // 4/4b: DECISIONS.md §2: "Shard clients that lag skip to the newest snapshot" and "a slow socket
  // never stalls a shard". A spectator (no player: sees all 600 players, ~60 KB frames at 50 Hz)
  // stops reading; its kernel buffers fill within seconds, then its backlog (4096 bytes).
  describe('4. a subscriber that never reads', () => {
    let stalled, reader, readerFrames, skippedAfter, ticksDuringStall;
    before(async () => {
      await createShard({ id: 'stall', tick_rate_hz: 50, config: { width: 100000, height: 100000, aoi_cell: 100, aoi_radius: 0, max_players: 5000 } });
      const pad = 'x'.repeat(50);
      const N = 600;
      let next = 0;
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (next < N) {
          const i = next++;
          const r = await api('POST', '/api/shards/stall/input', { token: ADMIN, body: { input: { dx: 0, dy: 0 }, subscriber_id: `bot-${pad}-${i}` } });
          assert.equal(r.status, 200, r.body);
        }
      }));
    });

    it('4. does not delay a reading subscriber (50 Hz, ticks +1) and skips to the newest frame when it resumes', async () => {
      const [us, ur] = [await guest(), await guest()];
      stalled = connect(shardUrl('stall', us.user_id), { token: us.token, pauseOnOpen: true });
      await stalled.opened();
      reader = await subscriber('stall', ur);
      reader.send({ input: { dx: 0, dy: 0 }, client_seq: 1 }); // a player: its AOI keeps its frames small
      await reader.nextFrame((f) => f.json.you?.ack === 1, 3000, 'the reader placed');
      const tick0 = (await status('stall')).tick;
      // Let the stalled client's socket buffers fill (or the counter show it), at most 3 s:
      // ~60 KB × 50 Hz is ~9 MB, more than the loopback socket buffers hold.
      const deadline = Date.now() + 3000;
      while (Date.now() < deadline && (await status('stall')).frames_skipped === 0) await sleep(250);
      const from = reader.frames.length;
      const t0 = performance.now();
      await sleep(3000);
      const secs = (performance.now() - t0) / 1000;
      readerFrames = reader.frames.slice(from);
      const st = await status('stall');
      skippedAfter = st.frames_skipped;
      ticksDuringStall = st.tick - tick0;
      assert.equal(st.subscribers, 2);
      assert.equal(st.running, true);
      const rate = readerFrames.length / secs;
      assert.ok(rate >= 25 && rate <= 75, `reader: ${readerFrames.length} frames in ${secs.toFixed(2)} s with a stalled peer`);
      assertConsecutive(reader.frames, 'the reading client');
      assert.ok(readerFrames.every((f) => f.json.you?.sid === ur.user_id && f.json.players.length < 10), 'the reader gets its own (small) view');

      // Resume: the stalled client gets what its buffers held, then the newest frames, having
      // skipped many in between.
      const beforeResume = stalled.frames.length;
      assert.ok(beforeResume <= 2, `the paused client read ${beforeResume} frames`);
      stalled.resume();
      const nowTick = (await status('stall')).tick;
      await stalled.nextFrame((f) => f.tick >= nowTick, 8000, `the stalled client catching up to tick ${nowTick}`);
      const got = stalled.frames;
      const span = got[got.length - 1].tick - got[0].tick + 1;
      assert.ok(got.length < span * 0.8, `the stalled client skipped frames: ${got.length} frames over ${span} ticks`);
      const gaps = got.slice(1).filter((f, i) => f.tick !== got[i].tick + 1).length;
      assert.ok(gaps >= 1, 'a jump in ticks (frames skipped)');
      assert.ok(got.every((f) => f.json.you === null && f.json.players.length >= 600), 'the spectator sees all players');
      assert.deepEqual(stalled.badFrames, []);
      assert.equal(stalled.closeInfo, null, 'a lagging shard client is not disconnected');
      const live = await framesDuring(stalled, 1000);
      assert.ok(live.length >= 25, `after catching up the client is live again: ${live.length} frames in 1 s`);
      assertConsecutive(live, 'the caught-up client');
      assert.ok(ticksDuringStall > 0);
    });

    // Frames the I/O loop drops for a stalled subscriber (backlog policy SKIP) are counted in
    // the shard's status, although the drop happens on the loop thread after the shard sent.
    it('4b. status frames_skipped grows once the stalled client\'s backlog is full', () => {
      assert.ok(ticksDuringStall > 0, 'test 4 ran');
      assert.ok(skippedAfter > 0, `frames_skipped is ${skippedAfter} after ${ticksDuringStall} ticks with a stalled 60 KB/frame subscriber`);
    });
  });

  it('5. refusals: 1013 at max_subscribers, 1008 for a foreign sid or no token, unknown shard dropped; HTTP 403/409/400/404', async () => {
    await createShard({ id: 'cap2', max_subscribers: 2 });
    const [u1, u2, u3] = [await guest(), await guest(), await guest()];
    await subscriber('cap2', u1);
    await subscriber('cap2', u2);
    const third = connect(shardUrl('cap2', u3.user_id), { token: u3.token });
    assert.deepEqual(await third.closed(), { code: 1013, reason: 'shard is at max subscribers' });
    assert.equal(third.frames.length, 0);
    assert.equal((await status('cap2')).subscribers, 2);

    const foreign = connect(shardUrl('cap2', 'somebody-else'), { token: u3.token });
    assert.deepEqual(await foreign.closed(), { code: 1008, reason: 'unauthorized: subscriber id "somebody-else" does not match authenticated user' });
    const noToken = connect(shardUrl('cap2', u3.user_id));
    assert.deepEqual(await noToken.closed(), { code: 1008, reason: 'unauthorized: authenticated user required' });
    const badToken = connect(shardUrl('cap2', u3.user_id), { token: 'pylon_' + '0'.repeat(64) });
    assert.equal((await badToken.closed()).code, 1008);

    for (const [what, url] of [['unknown shard', shardUrl('no-such-shard', u3.user_id)], ['no shard param', shardUrl(undefined, u3.user_id)]]) {
      const c = connect(url, { token: u3.token });
      const closed = await c.closed();
      assert.equal(closed.code, 1006, `${what}: dropped without a close frame, got ${JSON.stringify(closed)}`);
      assert.equal(c.isOpen, true, `${what}: the handshake completed first`);
      assert.equal(c.frames.length, 0);
    }

    // HTTP API errors.
    const body = { id: 'denied', kind: 'arena' };
    assertErrorEnvelope(await api('POST', '/api/shards', { token: u1.token, body }), 403, 'FORBIDDEN');
    assertErrorEnvelope(await api('POST', '/api/shards', { body }), 403, 'FORBIDDEN');
    assertErrorEnvelope(await api('GET', '/api/shards', { token: u1.token }), 403, 'FORBIDDEN');
    assertErrorEnvelope(await api('DELETE', '/api/shards/cap2', { token: u1.token }), 403, 'FORBIDDEN');
    assertErrorEnvelope(await api('POST', '/api/shards', { token: ADMIN, body: { id: 'cap2', kind: 'arena' } }), 409, 'SHARD_EXISTS');
    assertErrorEnvelope(await api('POST', '/api/shards', { token: ADMIN, body: { id: 'k', kind: 'chess' } }), 400, 'INVALID_DATA');
    assertErrorEnvelope(await api('POST', '/api/shards', { token: ADMIN, body: { kind: 'arena' } }), 400, 'INVALID_DATA');
    assertErrorEnvelope(await api('POST', '/api/shards', { token: ADMIN, body: { id: 'k', tick_rate_hz: 'fast' } }), 400, 'INVALID_DATA');
    assertErrorEnvelope(await api('POST', '/api/shards', { token: ADMIN, body: { id: 'k', config: { width: -1 } } }), 400, 'INVALID_DATA');
    assertErrorEnvelope(await api('GET', '/api/shards/no-such-shard'), 404, 'SHARD_NOT_FOUND');
    assertErrorEnvelope(await api('DELETE', '/api/shards/no-such-shard', { token: ADMIN }), 404, 'SHARD_NOT_FOUND');
    assert.equal((await api('GET', '/api/shards/k')).status, 404, 'refused creations left nothing behind');

    const list = await api('GET', '/api/shards', { token: ADMIN });
    assert.equal(list.status, 200, list.body);
    assert.ok(Array.isArray(list.json));
    for (const st of list.json) assertStatusShape(st);
    const ids = list.json.map((s) => s.id);
    for (const id of ['rate20', 'move', 'aoi', 'cap2']) assert.ok(ids.includes(id), `${id} listed: ${ids}`);

  });

  // protocol.md §4.4: the SSE stream answers 429 SUBSCRIBE_FAILED for a full or stopped shard
  // (the WebSocket's 1013), not a 200 that ends at once.
  it('5b. SSE /connect refusals: 429 SUBSCRIBE_FAILED at max_subscribers and when stopped; max_subscribers 0 is unlimited', async () => {
    const sseGet = (shard, user) => api('GET', `/api/shards/${shard}/connect?sid=${encodeURIComponent(user.user_id)}`, { token: user.token });
    await createShard({ id: 'ssecap', max_subscribers: 1 });
    const [u1, u2, u3] = [await guest(), await guest(), await guest()];
    const ws = await subscriber('ssecap', u1);
    const full = await sseGet('ssecap', u2);
    const err = assertErrorEnvelope(full, 429, 'SUBSCRIBE_FAILED');
    assert.match(err.message, /max subscribers/, err.message);
    assert.equal((await status('ssecap')).subscribers, 1);
    // An SSE subscriber counts too: with it in the only place, the next one is refused.
    ws.close();
    for (let i = 0; i < 40 && (await status('ssecap')).subscribers !== 0; i++) await sleep(50);
    assert.equal((await status('ssecap')).subscribers, 0);
    await shardSse('ssecap', u2);
    const again = assertErrorEnvelope(await sseGet('ssecap', u3), 429, 'SUBSCRIBE_FAILED');
    assert.match(again.message, /max subscribers/, again.message);

    await createShard({ id: 'ssestop', idle_ticks_before_shutdown: 5 });
    for (let i = 0; i < 40 && (await status('ssestop')).running; i++) await sleep(50);
    assert.equal((await status('ssestop')).running, false);
    const stopped = assertErrorEnvelope(await sseGet('ssestop', u3), 429, 'SUBSCRIBE_FAILED');
    assert.match(stopped.message, /stopped/, stopped.message);

    await createShard({ id: 'sseunl', max_subscribers: 0 });
    for (const u of [u1, u2, u3]) await shardSse('sseunl', u);
    assert.equal((await status('sseunl')).subscribers, 3);
  });

  it('6. malformed WS input is dropped and counted (inputs_dropped); the connection keeps getting frames', async () => {
    await createShard({ id: 'malformed' });
    const u = await guest();
    const c = await subscriber('malformed', u);
    const bad = [
      'not json',
      '{"input":{"dx":1},"client_seq":"3"}',
      '{"input":{"dx":1},"client_seq":1.5}',
      '[1,2,3]',
      '{"input":"north","client_seq":4}', // JSON, but not the arena's input type
    ];
    for (const m of bad) c.send(m);
    await sleep(500);
    const st = await status('malformed');
    assert.equal(st.inputs_dropped, bad.length, `inputs_dropped: ${JSON.stringify(st)}`);
    assert.equal(st.input_queue, 0);
    assert.equal(c.closeInfo, null, 'the connection survives');
    assert.equal(c.last.json.you, null, 'no player was created by the dropped inputs');
    const fs = await framesDuring(c, 500);
    assert.ok(fs.length >= 4, `frames keep coming: ${fs.length} in 0.5 s`);
    assertConsecutive(c.frames, 'the client that sent junk');
    // A valid input afterwards still works, also as a binary frame (read as UTF-8 JSON).
    c.send(Buffer.from(JSON.stringify({ input: { dx: 0, dy: 1 }, client_seq: 9 })));
    const f = await c.nextFrame((fr) => fr.json.you?.ack === 9, 3000, 'ack 9 from a binary input frame');
    assert.equal(f.json.you.sid, u.user_id);
    assert.equal((await status('malformed')).inputs_dropped, bad.length);
  });

  // protocol.md §4.3 types client_seq as uint64: a negative one is dropped like any malformed
  // input (taken as 2^64-1 it would freeze "ack" for good, as arena.c keeps the maximum).
  it('6b. a negative client_seq (not a uint64) is dropped and does not poison "ack"', async () => {
    await createShard({ id: 'negseq' });
    const u = await guest();
    const c = await subscriber('negseq', u);
    c.send({ input: { dx: 0, dy: 0 }, client_seq: 3 });
    await c.nextFrame((f) => f.json.you?.ack === 3, 3000, 'ack 3');
    c.send({ input: { dx: 0, dy: 0 }, client_seq: -1 });
    await sleep(300);
    c.send({ input: { dx: 0, dy: 0 }, client_seq: 4 });
    await c.nextFrame((f) => f.json.you?.ack === 4, 1500, 'ack 4 after a client_seq of -1');
    assert.equal((await status('negseq')).inputs_dropped, 1, 'the input with client_seq -1 was dropped');
    const viaHttp = await api('POST', '/api/shards/negseq/input', { token: u.token, body: { input: { dx: 0 }, client_seq: -5 } });
    if (viaHttp.status !== 400) {
      assert.equal(viaHttp.status, 200, viaHttp.body);
      await sleep(300);
      assert.equal(c.last.json.you.ack, 4, `HTTP client_seq -5 changed ack: ${JSON.stringify(c.last.json.you)}`);
    }
  });

  // A malformed message is counted where it is refused: it is not queued, so an event-driven
  // shard does not tick for it (it did: a placeholder input went through the queue).
  it('6c. malformed WS input on an event-driven shard (tick_rate_hz 0): counted, no tick, no frame', async () => {
    await createShard({ id: 'malformed0', tick_rate_hz: 0 });
    const u = await guest();
    const c = connect(shardUrl('malformed0', u.user_id), { token: u.token });
    await c.opened();
    for (const m of ['not json', '[1,2,3]', '{"input":{"dx":1},"client_seq":"3"}']) c.send(m);
    await sleep(400);
    const st = await status('malformed0');
    assert.equal(st.inputs_dropped, 3, `inputs_dropped: ${JSON.stringify(st)}`);
    assert.equal(st.tick, 0, `a malformed input made the shard tick: ${JSON.stringify(st)}`);
    assert.equal(st.input_queue, 0);
    assert.equal(c.frames.length, 0, 'no frame: no tick');
    assert.equal(c.closeInfo, null, 'the connection survives');
    c.send({ input: { dx: 1, dy: 0 }, client_seq: 1 });
    const f = await c.nextFrame((fr) => fr.json.you?.ack === 1, 3000, 'ack 1 after the malformed inputs');
    assert.equal(f.tick, 1, 'the valid input made the first tick');
    assert.equal(f.json.you.sid, u.user_id);
    assert.equal((await status('malformed0')).inputs_dropped, 3);
  });

  it('6d. a WS input flood beyond max_input_queue is counted in inputs_dropped; the socket stays open', async () => {
    await createShard({ id: 'wsflood', tick_rate_hz: 1, max_input_queue: 2 });
    const u = await guest();
    const c = await subscriber('wsflood', u);
    await c.nextFrame(() => true, 3000, 'a tick'); // right after a tick: the flood fits in one
    for (let i = 1; i <= 10; i++) c.send({ input: { dx: 1, dy: 0 }, client_seq: i });
    await sleep(200);
    const st = await status('wsflood');
    assert.ok(st.input_queue <= 2, `input_queue ${st.input_queue}`);
    // At most two queue fills (a tick in between): 6 to 8 of the 10 are dropped.
    assert.ok(st.inputs_dropped >= 6 && st.inputs_dropped <= 8, `inputs_dropped ${st.inputs_dropped} of 10`);
    assert.equal(c.closeInfo, null, 'the flooding client is not disconnected');
    const acked = await c.nextFrame((f) => f.json.you?.ack >= 1, 3000, 'the queued inputs applied');
    assert.ok(acked.json.you.ack <= 4, `only queued inputs were applied: ack ${acked.json.you.ack}`);
    c.send({ input: { dx: 0, dy: 0 }, client_seq: 20 });
    await c.nextFrame((f) => f.json.you?.ack === 20, 3000, 'ack 20 after the flood');
    assert.equal(c.closeInfo, null);
  });

  it('7. idle shutdown: 10 idle ticks at 20 Hz with no subscribers stop the shard; a subscriber keeps it running', async () => {
    await createShard({ id: 'idle', idle_ticks_before_shutdown: 10 });
    const t0 = Date.now();
    let st;
    do {
      await sleep(100);
      st = await status('idle');
    } while (st.running && Date.now() - t0 < 3000);
    assert.equal(st.running, false, `still running after ${Date.now() - t0} ms: ${JSON.stringify(st)}`);
    assert.ok(Date.now() - t0 <= 2500, `stopped after ${Date.now() - t0} ms`);
    assert.ok(st.tick >= 10 && st.tick <= 12, `stopped at tick ${st.tick}`);
    await sleep(300);
    assert.equal((await status('idle')).tick, st.tick, 'no ticks once stopped');
    // A stopped shard stays listed, refuses inputs and subscribers.
    assertErrorEnvelope(await api('POST', '/api/shards/idle/input', { token: ADMIN, body: { input: { dx: 1 }, subscriber_id: 'x' } }), 400, 'INPUT_REJECTED');
    const u = await guest();
    const c = connect(shardUrl('idle', u.user_id), { token: u.token });
    assert.deepEqual(await c.closed(), { code: 1013, reason: 'shard is stopped' });

    // With a subscriber, ticks are not idle.
    await createShard({ id: 'busy', idle_ticks_before_shutdown: 10 });
    const sub = await subscriber('busy', u);
    await sleep(1200);
    const busy = await status('busy');
    assert.equal(busy.running, true, 'a shard with a subscriber is not idle');
    assert.ok(busy.tick > 15, `tick ${busy.tick}`);
    sub.close();
    const t1 = Date.now();
    do {
      await sleep(100);
      st = await status('busy');
    } while (st.running && Date.now() - t1 < 3000);
    assert.equal(st.running, false, 'stops once the last subscriber left');
  });

  it('8. the shard WebSocket on the main port: /shard/<id>?sid=… and ?shard=<id>&sid=…; Authorization: Bearer on port+3', async () => {
    await createShard({ id: 'main port' });
    const u = await guest();
    const viaPath = connect(`ws://127.0.0.1:${srv.port}/shard/main%20port?sid=${u.user_id}`, { token: u.token });
    const viaQuery = connect(shardUrl('main port', u.user_id, { port: srv.port }), { token: u.token });
    const viaHeader = connect(shardUrl('main port', u.user_id), { headers: { Authorization: `Bearer ${u.token}` } });
    for (const c of [viaPath, viaQuery, viaHeader]) {
      await c.opened();
      await c.nextFrame(() => true, 3000, `a frame on ${c.url}`);
    }
    viaPath.send({ input: { dx: 0, dy: -1 }, client_seq: 3 });
    for (const c of [viaPath, viaQuery, viaHeader]) {
      const f = await c.nextFrame((fr) => fr.json.you?.ack === 3, 3000, `ack 3 on ${c.url}`);
      assert.equal(f.json.you.sid, u.user_id);
    }
    const fs = await framesDuring(viaPath, 1000);
    assert.ok(fs.length >= 10 && fs.length <= 30, `${fs.length} frames in 1 s on the main port`);
    assertConsecutive(viaPath.frames, '/shard/<id>');
    assertConsecutive(viaQuery.frames, '?shard=');
    assert.equal((await status('main port')).subscribers, 3, 'duplicate sids are separate subscribers');
    // protocol.md §8 item 11 (the original removed every subscriber of that sid): here one
    // disconnect removes only its own subscription.
    viaHeader.close();
    await sleep(300);
    assert.equal((await status('main port')).subscribers, 2);
    const still = await framesDuring(viaQuery, 500);
    assert.ok(still.length >= 4, `the other subscriber of the same sid still gets frames: ${still.length} in 0.5 s`);
    // Unknown shard on the main port: dropped like on port+3.
    const unknown = connect(`ws://127.0.0.1:${srv.port}/shard/nope?sid=${u.user_id}`, { token: u.token });
    assert.equal((await unknown.closed()).code, 1006);
  });

  // Sids are kept inline, 63 bytes at most; a longer one is refused where it comes in, never
  // cut (two long ids sharing their first 63 bytes would have become one player).
  it('5c. a subscriber id longer than 63 bytes is refused: WebSocket 1008, SSE 400, HTTP input 400', async () => {
    await createShard({ id: 'longsid' });
    const long = await mint('u'.repeat(64));
    const ws = connect(shardUrl('longsid', long.user_id), { token: long.token });
    assert.deepEqual(await ws.closed(), { code: 1008, reason: 'subscriber id longer than 63 bytes' });
    const sse = await request(srv.port, { path: `/api/shards/longsid/connect?sid=${long.user_id}`, headers: { Authorization: `Bearer ${long.token}` } });
    assert.equal(sse.status, 400, sse.body);
    assert.equal(sse.json.error.code, 'INVALID_SID');
    const noSid = await request(srv.port, { path: '/api/shards/longsid/connect', headers: { Authorization: `Bearer ${long.token}` } });
    assert.equal(noSid.status, 400, 'the user id as the sid is too long too');
    for (const [token, body] of [[ADMIN, { input: { dx: 1 }, subscriber_id: 'b'.repeat(64) }], [long.token, { input: { dx: 1 } }]]) {
      const r = await api('POST', '/api/shards/longsid/input', { token, body });
      assert.equal(r.status, 400, r.body);
      assert.equal(r.json.error.code, 'INPUT_REJECTED');
      assert.match(r.json.error.message, /longer than 63 bytes/);
    }
    const ok = await api('POST', '/api/shards/longsid/input', { token: ADMIN, body: { input: { dx: 1 }, subscriber_id: 'b'.repeat(63) } });
    assert.equal(ok.status, 200, ok.body);
    const fits = await mint('v'.repeat(63));
    await subscriber('longsid', fits); // 63 bytes: subscribed, frames arrive
  });
});

// Last, on a server of its own: the shard is deleted under a live subscriber.
describe('shards: DELETE under a live subscriber (own server)', { timeout: 20000 }, () => {
  before(startServer);

  it('9. DELETE: subscribers are closed (1001 "shard deleted", SSE ends), 404 afterwards, the id is reusable', async () => {
    await createShard({ id: 'doomed' });
    const ud = await guest();
    const cd = await subscriber('doomed', ud);
    const sse = await shardSse('doomed', ud);
    const del = await api('DELETE', '/api/shards/doomed', { token: ADMIN });
    assert.equal(del.status, 200, del.body);
    const { code, reason } = await cd.closed(3000);
    assert.equal(code, 1001, 'the WebSocket subscriber gets a close frame');
    assert.equal(reason, 'shard deleted');
    assert.ok(await sse.waitClosed(3000), 'the SSE subscriber\'s response ends');
    assertErrorEnvelope(await api('GET', '/api/shards/doomed'), 404, 'SHARD_NOT_FOUND');
    assertErrorEnvelope(await api('POST', '/api/shards/doomed/input', { token: ud.token, body: { input: {} } }), 404, 'SHARD_NOT_FOUND');
    assert.ok(!(await api('GET', '/api/shards', { token: ADMIN })).json.some((s) => s.id === 'doomed'));
    // The id can be used again.
    const again = await createShard({ id: 'doomed' });
    assert.equal(again.subscribers, 0);
    const late = connect(shardUrl('doomed', ud.user_id), { token: ud.token });
    await late.opened();
    await late.nextFrame(() => true, 3000, 'a frame from the new shard of the same id');
  });

  // Subscribers that go away while the shard is being deleted (their on_close unsubscribes
  // from a shard whose actor is stopping or stopped), and inputs to it in flight: the server
  // survives, and a sanitizer build reports neither a use after free nor a leak (dispose()).
  it('9b. subscribers (WS and SSE) that disconnect as their shard is deleted: the server survives', async () => {
    await createShard({ id: 'doomed2', tick_rate_hz: 100 });
    const users = [];
    for (let i = 0; i < 3; i++) users.push(await guest());
    const subs = [];
    for (const u of users) subs.push(await subscriber('doomed2', u), await subscriber('doomed2', u));
    const sses = [];
    for (const u of users) sses.push(await shardSse('doomed2', u));
    for (const [i, c] of subs.entries()) c.send({ input: { dx: 1 }, client_seq: i + 1 });
    // Half of them leave right as the DELETE goes out, the rest after it.
    const del = api('DELETE', '/api/shards/doomed2', { token: ADMIN });
    for (const c of subs.slice(0, 3)) c.close();
    sses[0].destroy();
    assert.equal((await del).status, 200);
    for (const c of subs.slice(3)) {
      c.send({ input: { dx: 1 }, client_seq: 99 }); // an input to the deleted shard: dropped
      c.close();
    }
    for (const s of sses.slice(1)) s.destroy();
    await sleep(500);
    assert.ok(srv.running, `the server died (signal ${srv.exitSignal}, code ${srv.exitCode}) when subscribers of a deleted shard disconnected`);
    assert.equal((await api('GET', '/health')).status, 200);
    assertErrorEnvelope(await api('GET', '/api/shards/doomed2'), 404, 'SHARD_NOT_FOUND');
  });

  // A shard that finishes (the turns game is won) stops for good: its subscribers are told.
  it('9c. a finished shard closes its subscribers with 1000 "shard finished"; the SSE response ends', async () => {
    const mk = await api('POST', '/api/shards', { token: ADMIN, body: { id: 'fin', kind: 'turns', tick_rate_hz: 0, config: { goal: 3 } } });
    assert.equal(mk.status, 201, mk.body);
    const [a, b] = [await guest(), await guest()];
    const ca = connect(shardUrl('fin', a.user_id), { token: a.token });
    const cb = connect(shardUrl('fin', b.user_id), { token: b.token });
    await ca.opened();
    await cb.opened();
    const sse = await shardSse('fin', a, ': connected');
    for (const [who, inp] of [[a, { join: true }], [b, { join: true }], [a, { add: 3 }]]) {
      const res = await api('POST', '/api/shards/fin/input', { token: who.token, body: { input: inp } });
      assert.equal(res.status, 200, res.body);
      await sleep(100); // one tick per input (event-driven)
    }
    for (const c of [ca, cb]) {
      const { code, reason } = await c.closed(3000);
      assert.equal(code, 1000);
      assert.equal(reason, 'shard finished');
      assert.equal(c.last?.json?.winner, a.user_id, 'the final snapshot came before the close');
    }
    assert.ok(await sse.waitClosed(3000), 'the SSE response ends');
    const st = (await api('GET', '/api/shards/fin')).json;
    assert.equal(st.running, false);
    assert.equal(st.subscribers, 0);
    // A subscriber arriving now is refused as protocol.md §4.1 says.
    const late = connect(shardUrl('fin', a.user_id), { token: a.token });
    const { code } = await late.closed(3000);
    assert.equal(code, 1013);
  });
});

describe('shards: an oversized input frame (own server, PYLON_WS_MAX_FRAME=4096)', { timeout: 20000 }, () => {
  before(async () => {
    srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN, PYLON_WS_MAX_FRAME: 4096 } });
    servers.push(srv);
  });

  it('10. closes only its sender with 1009; the shard and its other subscribers go on', async () => {
    await createShard({ id: 'big' });
    const u1 = await guest();
    const u2 = await guest();
    const sender = await subscriber('big', u1);
    const other = await subscriber('big', u2);
    // Just under the bound: an input like any other (acknowledged).
    sender.send(JSON.stringify({ input: { dx: 1, dy: 0, pad: 'x'.repeat(3900) }, client_seq: 1 }));
    await sender.nextFrame((f) => f.json.you?.ack === 1, 3000, 'ack 1 for a 3.9 KB input');
    sender.send(JSON.stringify({ input: { dx: 1, dy: 0, pad: 'x'.repeat(5000) }, client_seq: 2 }));
    const info = await sender.closed(3000);
    assert.equal(info.code, 1009, `close ${JSON.stringify(info)}`);
    const fs = await framesDuring(other, 500);
    assert.ok(fs.length >= 4, `the other subscriber keeps getting frames: ${fs.length} in 0.5 s`);
    assertConsecutive(other.frames, 'the other subscriber');
    assert.equal(other.closeInfo, null);
    const st = await status('big');
    assert.equal(st.subscribers, 1, `the closed sender left the shard: ${JSON.stringify(st)}`);
  });
});
