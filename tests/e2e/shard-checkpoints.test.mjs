// shard-checkpoints.test.mjs — shard state survives a restart (DECISIONS.md "Shards are
// first-class": "shard state checkpoints through the persistence actor"; README "Shard
// checkpoints"): every PYLON_SHARD_CHECKPOINT_SECS (or the shard's "checkpoint_secs") and at a
// graceful shutdown the persistence actor writes one row per shard; at start each checkpointed
// shard is re-created with its simulation's restore and continues from the saved tick.
//   1. SIGTERM: an event-driven "turns" shard comes back with its exact state and tick, an
//      "arena" shard with its players and a tick that continues;
//   2. kill -9 after a checkpoint interval: the last periodic checkpoint comes back;
//      a shard created with "checkpoint_secs": 0 does not;
//   3. deleted and finished shards take their checkpoint with them;
//   4. a corrupt checkpoint (or one of an unknown kind) is logged and skipped; the rest start.
//
// Each test runs its own servers on one data directory (PYLON_DB_PATH, PYLON_SESSION_DB).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, describe, it } from 'node:test';

import { request, sleep } from './lib/http.mjs';
import { startPylon } from './lib/server.mjs';
import { ShardClient } from './lib/shard-client.mjs';

const ADMIN = 'c0ffee00'.repeat(8);

const servers = [];
const clients = [];
const dirs = [];

function dataDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pylon-e2e-ckpt-'));
  dirs.push(dir);
  return dir;
}

async function start(dir, extra = {}) {
  const srv = await startPylon({
    args: ['dev'],
    env: {
      PYLON_ADMIN_TOKEN: ADMIN,
      PYLON_DB_PATH: path.join(dir, 'data.db'),
      PYLON_SESSION_DB: path.join(dir, 'sessions.db'),
      PYLON_SHARD_CHECKPOINT_SECS: 1,
      ...extra,
    },
  });
  servers.push(srv);
  return srv;
}

async function api(srv, method, p, body, token = ADMIN) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  return request(srv.port, { method, path: p, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

async function create(srv, spec) {
  const res = await api(srv, 'POST', '/api/shards', spec);
  assert.equal(res.status, 201, `${res.status} ${res.body}`);
  return res.json;
}

async function status(srv, id) {
  const res = await api(srv, 'GET', `/api/shards/${id}`);
  return res.status === 200 ? res.json : null;
}

/** An input as `sid` (the admin may name any subscriber). */
async function input(srv, id, sid, inp, clientSeq) {
  const res = await api(srv, 'POST', `/api/shards/${id}/input`, { input: inp, subscriber_id: sid, ...(clientSeq ? { client_seq: clientSeq } : {}) });
  assert.equal(res.status, 200, res.body);
  return res.json;
}

/** The snapshot `sid` sees next (a fresh session for it, over the shard WebSocket). */
async function snapshot(srv, id, sid, { nudge } = {}) {
  const s = await api(srv, 'POST', '/api/auth/session', { user_id: sid });
  assert.equal(s.status, 201, s.body);
  const c = new ShardClient(`ws://127.0.0.1:${srv.ports.shard}/?shard=${id}&sid=${sid}`, { token: s.json.token });
  clients.push(c);
  await c.opened();
  if (nudge) await nudge(); // an event-driven shard ticks only on input
  return c.nextFrame(() => true, 3000, `a frame of ${id}`);
}

/** Waits until the server's stderr matches re (the checkpoint log lines). */
async function waitLog(srv, re, ms = 5000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && !re.test(srv.stderr)) await sleep(50);
  assert.match(srv.stderr, re);
}

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});
after(async () => {
  for (const s of servers) await s.dispose();
  if (!process.env.PYLON_E2E_KEEP) for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** Plays a few turns: a and b join, a adds 3, b adds 2 (ticks 1..4). An event-driven shard
 * ticks once per run of its actor that brought inputs, so each input waits for its tick. */
async function playTurns(srv, id) {
  const moves = [['pa', { join: true }], ['pb', { join: true }], ['pa', { add: 3 }], ['pb', { add: 2 }]];
  for (const [i, [sid, inp]] of moves.entries()) {
    await input(srv, id, sid, inp);
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline && (await status(srv, id)).tick < i + 1) await sleep(10);
    assert.equal((await status(srv, id)).tick, i + 1);
  }
}

describe('shard checkpoints', { timeout: 90000 }, () => {
  it('1. SIGTERM: shards come back with their state, continuing from the saved tick', async () => {
    const dir = dataDir();
    let srv = await start(dir);
    await create(srv, { id: 'g1', kind: 'turns', tick_rate_hz: 0, config: { goal: 30 } });
    await create(srv, { id: 'a1', kind: 'arena', tick_rate_hz: 20, idle_ticks_before_shutdown: 0 });
    await playTurns(srv, 'g1');
    await input(srv, 'a1', 'runner', { dx: 1, dy: 0 }, 9);
    await sleep(500);
    const turnsBefore = await status(srv, 'g1');
    assert.equal(turnsBefore.tick, 4);
    const arenaTick = (await status(srv, 'a1')).tick;
    const seen = await snapshot(srv, 'a1', 'runner');
    assert.equal(await srv.stop(), 0);

    srv = await start(dir);
    await waitLog(srv, /shard g1 \(turns\) restored from its checkpoint at tick 4/);
    const g1 = await status(srv, 'g1');
    assert.equal(g1.running, true);
    assert.equal(g1.tick, 4, 'an event-driven shard does not tick by itself');
    const a1 = await status(srv, 'a1');
    assert.ok(a1.running && a1.tick >= arenaTick, `arena tick ${a1.tick} continues from ${arenaTick}`);
    // The turns state is exactly what it was (a to play, total 5 of 30): a's move continues it.
    const snap = await snapshot(srv, 'g1', 'pa', { nudge: () => input(srv, 'g1', 'pa', { add: 1 }) });
    assert.equal(snap.tick, 5);
    assert.deepEqual(snap.json, { players: ['pa', 'pb'], turn: 'pb', total: 6, goal: 30, winner: null, moves: 3 });
    // The arena runner kept its place (it moved on), its direction and its ack.
    const run = await snapshot(srv, 'a1', 'runner');
    assert.equal(run.json.you.ack, 9);
    assert.ok(run.json.you.x >= seen.json.you.x, `x ${run.json.you.x} after ${seen.json.you.x}`);
    assert.ok(run.tick > arenaTick);
    const later = await snapshot(srv, 'a1', 'runner');
    assert.ok(later.json.you.x >= run.json.you.x, 'still moving +x');
  });

  it('2. kill -9 after a checkpoint interval: the last periodic checkpoint comes back; checkpoint_secs 0 opts out', async () => {
    const dir = dataDir();
    let srv = await start(dir);
    await create(srv, { id: 'g2', kind: 'turns', tick_rate_hz: 0 });
    await create(srv, { id: 'a2', kind: 'arena', tick_rate_hz: 20, checkpoint_secs: 0 });
    await playTurns(srv, 'g2');
    await sleep(2500); // > one 1 s interval after the last change
    srv.signal('SIGKILL');
    await srv.waitExit();

    srv = await start(dir);
    const g2 = await status(srv, 'g2');
    assert.ok(g2, 'g2 restored');
    assert.equal(g2.tick, 4);
    assert.equal(await status(srv, 'a2'), null, 'a shard with checkpoint_secs 0 is not restored');
    const snap = await snapshot(srv, 'g2', 'pb', { nudge: () => input(srv, 'g2', 'pa', { add: 1 }) });
    assert.deepEqual(snap.json, { players: ['pa', 'pb'], turn: 'pb', total: 6, goal: 21, winner: null, moves: 3 });
    assert.equal(snap.tick, 5);
  });

  it('3. deleted and finished shards take their checkpoint with them', async () => {
    const dir = dataDir();
    let srv = await start(dir);
    await create(srv, { id: 'gone', kind: 'arena', tick_rate_hz: 20 });
    await create(srv, { id: 'won', kind: 'turns', tick_rate_hz: 0, config: { goal: 3 } });
    await create(srv, { id: 'kept', kind: 'turns', tick_rate_hz: 0 });
    await sleep(1500); // every shard has a checkpoint
    assert.equal((await api(srv, 'DELETE', '/api/shards/gone')).status, 200);
    await input(srv, 'won', 'pa', { join: true });
    await input(srv, 'won', 'pb', { join: true });
    await input(srv, 'won', 'pa', { add: 3 });
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline && (await status(srv, 'won')).running) await sleep(20);
    assert.equal((await status(srv, 'won')).running, false, 'the game is won: the shard stopped');
    assert.equal(await srv.stop(), 0);

    srv = await start(dir);
    assert.ok(await status(srv, 'kept'));
    assert.equal(await status(srv, 'gone'), null, 'a deleted shard stays deleted');
    assert.equal(await status(srv, 'won'), null, 'a finished shard does not come back');
  });

  const hasSqlite = (() => {
    try {
      execFileSync('sqlite3', ['-version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();

  it('4. a corrupt checkpoint, or one of an unknown kind, is logged and skipped; the others come back', { skip: !hasSqlite && 'needs the sqlite3 command' }, async () => {
    const dir = dataDir();
    let srv = await start(dir);
    await create(srv, { id: 'bad', kind: 'turns', tick_rate_hz: 0 });
    await create(srv, { id: 'alien', kind: 'turns', tick_rate_hz: 0 });
    await create(srv, { id: 'good', kind: 'turns', tick_rate_hz: 0 });
    await input(srv, 'good', 'pa', { join: true });
    await sleep(300);
    assert.equal(await srv.stop(), 0);
    const db = path.join(dir, 'data.db');
    execFileSync('sqlite3', [db, "UPDATE _pylon_shards SET state = x'7b2274727563' WHERE id = 'bad'; UPDATE _pylon_shards SET kind = 'nosuchkind' WHERE id = 'alien';"]);

    srv = await start(dir);
    await waitLog(srv, /shard bad \(turns\): checkpoint at tick 0 skipped, cannot restore: the "turns" simulation refused the state/);
    await waitLog(srv, /shard alien \(nosuchkind\): checkpoint at tick 0 skipped, cannot restore: unknown shard kind "nosuchkind"/);
    assert.equal(await status(srv, 'bad'), null);
    assert.equal(await status(srv, 'alien'), null);
    const good = await status(srv, 'good');
    assert.ok(good?.running, 'the good shard is back');
    assert.equal(good.tick, 1);
    // A new shard may take the skipped one's id; its checkpoint replaces the corrupt row.
    await create(srv, { id: 'bad', kind: 'turns', tick_rate_hz: 0 });
    assert.equal(await srv.stop(), 0);
    srv = await start(dir);
    assert.ok(await status(srv, 'bad'), 'the new shard came back');
    assert.doesNotMatch(srv.stderr, /shard bad \(turns\): checkpoint/);
  });
});
