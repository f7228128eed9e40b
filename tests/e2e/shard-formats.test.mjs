// shard-formats.test.mjs — the shard WebSocket's subprotocols (DECISIONS.md "Shards are
// first-class"; README "Shard subprotocols"):
//   pylon.msgpack  binary frames [u64 big-endian tick][msgpack of the snapshot]; binary inputs
//                  are msgpack {"input", "client_seq"} (text inputs stay JSON);
//   pylon.delta    text frames: {"tick","snapshot"} first (and after a skip), then
//                  {"tick","base","delta"} with only what changed (RFC 7386 merge patch), and
//                  no frame at all when the snapshot did not change.
// Either may be offered alongside bearer.<token>: the format is echoed, the token still used.
// Stock clients (no subprotocol, or only bearer.<token>) keep the JSON frames.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import { encode as msgpackEncode } from '@msgpack/msgpack';

import { request, sleep } from './lib/http.mjs';
import { startPylon } from './lib/server.mjs';
import { ShardClient } from './lib/shard-client.mjs';

const ADMIN = 'c0ffee00'.repeat(8);

let srv;
const clients = [];

async function api(method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  return request(srv.port, { method, path, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

async function createShard(spec) {
  const res = await api('POST', '/api/shards', { token: ADMIN, body: { kind: 'arena', ...spec } });
  assert.equal(res.status, 201, `POST /api/shards ${JSON.stringify(spec)}: ${res.status} ${res.body}`);
  return res.json;
}

async function mint(userId) {
  const res = await api('POST', '/api/auth/session', { token: ADMIN, body: { user_id: userId } });
  assert.equal(res.status, 201, res.body);
  return { token: res.json.token, user_id: userId };
}

async function input(shard, user, inp, clientSeq) {
  const res = await api('POST', `/api/shards/${shard}/input`, { token: user.token, body: { input: inp, ...(clientSeq ? { client_seq: clientSeq } : {}) } });
  assert.equal(res.status, 200, res.body);
}

/** Opens a shard socket as `user` offering `protocols` (the bearer entry added unless given). */
async function open(shard, user, { protocols, mode = 'json' } = {}) {
  const url = `ws://127.0.0.1:${srv.ports.shard}/?shard=${encodeURIComponent(shard)}&sid=${encodeURIComponent(user.user_id)}`;
  const c = new ShardClient(url, { protocols: protocols ?? [`bearer.${encodeURIComponent(user.token)}`], mode });
  clients.push(c);
  await c.opened();
  return c;
}

/** A pylon.delta client treats a missing key and null alike: compare without null members. */
function dropNulls(v) {
  if (Array.isArray(v)) return v.map(dropNulls);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null).map(([k, x]) => [k, dropNulls(x)]));
  return v;
}

before(async () => {
  srv = await startPylon({ args: ['dev'], env: { PYLON_ADMIN_TOKEN: ADMIN, PYLON_WS_MAX_BACKLOG: 4096 } });
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});
after(async () => {
  for (const c of clients.splice(0)) c.close();
  await srv?.dispose();
});

describe('shard subprotocols', { timeout: 90000 }, () => {
  it('1. pylon.msgpack: the format is echoed (whatever the offer order); frames decode as msgpack with ticks +1; the same content as JSON', async () => {
    await createShard({ id: 'mp1' });
    const u = await mint('mp-user');
    const mp = await open('mp1', u, { protocols: ['pylon.msgpack', `bearer.${u.token}`], mode: 'msgpack' });
    assert.equal(mp.protocol, 'pylon.msgpack');
    const mp2 = await open('mp1', u, { protocols: [`bearer.${u.token}`, 'pylon.msgpack'], mode: 'msgpack' });
    assert.equal(mp2.protocol, 'pylon.msgpack', 'the format wins over the bearer entry');
    const js = await open('mp1', u); // stock client: only bearer.<token>
    assert.equal(js.protocol, `bearer.${u.token}`);

    await input('mp1', u, { dx: 1, dy: 0 }, 5);
    await mp.waitFor((c) => c.frames.length >= 10, 5000, '10 msgpack frames');
    assert.deepEqual(mp.badFrames, []);
    for (let i = 1; i < mp.frames.length; i++) assert.equal(mp.frames[i].tick, mp.frames[i - 1].tick + 1, 'ticks +1');
    const last = await mp.nextFrame((f) => f.json.you !== null, 3000, 'a frame with the player');
    assert.equal(last.json.you.sid, 'mp-user');
    assert.equal(last.json.you.ack, 5);
    // The same tick's JSON frame carries the same snapshot.
    const twin = await js.waitFor((c) => c.frames.find((f) => f.tick === last.tick), 3000, `JSON tick ${last.tick}`);
    assert.deepEqual(last.json, twin.json);
    assert.deepEqual(js.badFrames, []);
  });

  it('2. pylon.msgpack: binary inputs are msgpack {input, client_seq}; text inputs still JSON; a malformed binary one is dropped', async () => {
    await createShard({ id: 'mp2' });
    const u = await mint('mp-in');
    const mp = await open('mp2', u, { protocols: ['pylon.msgpack', `bearer.${u.token}`], mode: 'msgpack' });
    mp.send(Buffer.from(msgpackEncode({ input: { dx: 0, dy: 1 }, client_seq: 7 })));
    const f = await mp.nextFrame((x) => x.json.you?.ack === 7, 3000, 'ack 7 (msgpack input)');
    const y0 = f.json.you.y;
    await mp.nextFrame((x) => x.json.you.y > y0 || x.json.you.y === 1000, 3000, 'the player moving +y');
    mp.send({ input: { dx: 0, dy: 0 }, client_seq: 8 }); // text: JSON
    await mp.nextFrame((x) => x.json.you?.ack === 8, 3000, 'ack 8 (JSON text input)');
    const before = (await api('GET', '/api/shards/mp2')).json.inputs_dropped;
    mp.send(Buffer.from([0xc1, 0x00])); // 0xc1 is never used in msgpack
    await sleep(200);
    assert.equal((await api('GET', '/api/shards/mp2')).json.inputs_dropped, before + 1);
    assert.ok(mp.isOpen && !mp.closeInfo, 'the connection survives');
  });

  it('3. pylon.delta on an event-driven shard: full frame first, then only changes with their base; no frame when nothing changed', async () => {
    await createShard({ id: 'd-turns', kind: 'turns', tick_rate_hz: 0 });
    const a = await mint('turn-a');
    const b = await mint('turn-b');
    const js = await open('d-turns', a);
    const dl = await open('d-turns', b, { protocols: ['pylon.delta', `bearer.${b.token}`], mode: 'delta' });
    assert.equal(dl.protocol, 'pylon.delta');

    await input('d-turns', a, { join: true }); // tick 1
    const j1 = await js.nextFrame((f) => f.tick === 1, 3000, 'tick 1');
    const d1 = await dl.nextFrame((f) => f.tick === 1, 3000, 'delta client tick 1');
    assert.equal(d1.kind, 'full');
    assert.deepEqual(d1.raw, { tick: 1, snapshot: j1.json }, 'the full frame is {"tick","snapshot"}');

    await input('d-turns', b, { join: true }); // tick 2: players and turn change
    const j2 = await js.nextFrame((f) => f.tick === 2, 3000, 'tick 2');
    const d2 = await dl.nextFrame((f) => f.tick === 2, 3000, 'delta tick 2');
    assert.equal(d2.kind, 'delta');
    assert.deepEqual(d2.raw, { tick: 2, base: 1, delta: { players: ['turn-a', 'turn-b'], turn: 'turn-a' } });
    assert.deepEqual(dropNulls(d2.json), dropNulls(j2.json));

    await input('d-turns', b, { add: 2 }); // out of turn: refused, yet the shard ticks (3)
    await js.nextFrame((f) => f.tick === 3, 3000, 'tick 3 (JSON client)');
    await sleep(300);
    assert.equal(dl.last.tick, 2, 'no delta frame for an unchanged snapshot');

    await input('d-turns', a, { add: 3 }); // tick 4
    const j4 = await js.nextFrame((f) => f.tick === 4, 3000, 'tick 4');
    const d4 = await dl.nextFrame((f) => f.tick === 4, 3000, 'delta tick 4');
    assert.deepEqual(d4.raw, { tick: 4, base: 2, delta: { turn: 'turn-b', total: 3, moves: 1 } }, 'the base is the last frame sent');
    assert.deepEqual(dropNulls(d4.json), dropNulls(j4.json));
    assert.equal(dl.frames.length, 3);
    assert.deepEqual(dl.badFrames, []);
  });

  it('4. pylon.delta at 20 Hz reconstructs, tick by tick, what a JSON client with the same sid sees; a stopped player sends nothing', async () => {
    await createShard({ id: 'd-arena', tick_rate_hz: 20 });
    const u = await mint('arena-d');
    const mover = await mint('arena-mover');
    await input('d-arena', mover, { dx: 1, dy: 1 }, 1); // u stays a spectator: it sees everyone
    const js = await open('d-arena', u);
    const dl = await open('d-arena', u, { protocols: ['pylon.delta', `bearer.${u.token}`], mode: 'delta' });
    await sleep(1500);
    const jsFrames = js.frames.slice();
    const dFrames = dl.frames.slice();
    assert.deepEqual(dl.badFrames, []);
    assert.equal(dFrames[0].kind, 'full');
    assert.ok(dFrames.slice(1).every((f) => f.kind === 'delta'), 'one full frame, then deltas');
    assert.ok(dFrames.length > 15, `${dFrames.length} delta frames in 1.5 s at 20 Hz while a player moves`);
    // Any player still in range moves; compare where both have data.
    let compared = 0;
    for (const jf of jsFrames) {
      if (jf.tick < dFrames[0].tick || jf.tick > dFrames[dFrames.length - 1].tick) continue;
      let held = null;
      for (const df of dFrames) if (df.tick <= jf.tick) held = df;
      assert.deepEqual(dropNulls(held.json), dropNulls(jf.json), `tick ${jf.tick}`);
      compared++;
    }
    assert.ok(compared > 10, `${compared} ticks compared`);
    const sample = dFrames.find((f) => f.kind === 'delta');
    assert.deepEqual(Object.keys(sample.raw).sort(), ['base', 'delta', 'tick']);

    // Everyone stops: the snapshot stops changing, and so do the delta frames (not the JSON ones).
    await input('d-arena', mover, { dx: 0, dy: 0 }, 2);
    await sleep(500);
    const dBefore = dl.frames.length;
    const jBefore = js.frames.length;
    await sleep(700);
    assert.ok(js.frames.length - jBefore >= 8, `JSON frames keep coming (${js.frames.length - jBefore})`);
    assert.equal(dl.frames.length, dBefore, 'no delta frames while nothing changes');
  });

  it('5. pylon.delta: a client that stalls and skips frames gets a full frame again and stays in sync', async () => {
    // 600 moving players seen by a spectator: ~90 KB deltas (arrays go whole) at 50 Hz; the
    // loopback buffers fill within seconds (slower under sanitizers), then the 4 KB backlog.
    await createShard({ id: 'd-stall', tick_rate_hz: 50, config: { width: 100000, height: 100000, max_players: 5000 } });
    const pad = 'x'.repeat(50);
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < 600) {
        const i = next++;
        const r = await api('POST', '/api/shards/d-stall/input', { token: ADMIN, body: { input: { dx: 1, dy: 1 }, subscriber_id: `bot-${pad}-${i}` } });
        assert.equal(r.status, 200, r.body);
      }
    }));
    const u = await mint('stall-spectator');
    const js = await open('d-stall', u);
    const dl = await open('d-stall', u, { protocols: ['pylon.delta', `bearer.${u.token}`], mode: 'delta' });
    await dl.waitFor((c) => c.frames.length >= 3, 3000, '3 delta frames');
    dl.pause();
    const deadline = Date.now() + 12000;
    while (Date.now() < deadline && (await api('GET', '/api/shards/d-stall')).json.frames_skipped === 0) await sleep(200);
    const skipped = (await api('GET', '/api/shards/d-stall')).json.frames_skipped;
    dl.resume();
    await sleep(1500);
    assert.ok(skipped > 0, 'the stalled client skipped frames');
    assert.deepEqual(dl.badFrames, [], 'every delta applied on the base the client holds');
    const fulls = dl.frames.filter((f) => f.kind === 'full');
    assert.ok(fulls.length >= 2, `a full frame after the skip (${fulls.length} full frames)`);
    const resync = fulls[fulls.length - 1].tick;
    let compared = 0;
    for (const jf of js.frames) {
      if (jf.tick < resync || jf.tick > dl.last.tick) continue;
      let held = null;
      for (const df of dl.frames) if (df.tick <= jf.tick) held = df;
      assert.deepEqual(dropNulls(held.json), dropNulls(jf.json), `tick ${jf.tick}`);
      compared++;
    }
    assert.ok(compared > 0, 'ticks compared after the resync');
  });
});
