// durability.test.mjs — what the server acknowledged is on disk (DEPLOY.md, DECISIONS.md §1
// "SIGTERM … flush"; persistence.h: answers go out only after the group commit):
//   1. a clean restart (SIGTERM) keeps every row, and leaves the -wal file empty or absent;
//   2. SIGKILL in the middle of a write load loses no acknowledged insert or update;
//   3. the database opens cleanly afterwards and takes writes again.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';

import { request, sleep } from './lib/http.mjs';
import { ADMIN_TOKEN, startPylon } from './lib/server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MANIFEST = path.join(HERE, 'fixtures', 'durability.manifest.json');

const servers = [];
const tmpDirs = [];
after(async () => {
  for (const s of servers) await s.dispose();
  if (!process.env.PYLON_E2E_KEEP) for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

function dataDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pylon-e2e-dur-'));
  tmpDirs.push(dir);
  return dir;
}

function envFor(dir) {
  return {
    PYLON_MANIFEST: MANIFEST,
    PYLON_ADMIN_TOKEN: ADMIN_TOKEN,
    PYLON_DB_PATH: path.join(dir, 'data.db'),
    PYLON_SESSION_DB: path.join(dir, 'sessions.db'),
    PYLON_RATE_LIMIT_MAX: 100000000,
  };
}

async function start(env) {
  const srv = await startPylon({ args: ['dev'], env });
  servers.push(srv);
  return srv;
}

const json = (method, p, body, token) => ({
  method,
  path: p,
  headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
  body: body === undefined ? undefined : JSON.stringify(body),
});

/** Every Item row, by id. */
async function exportItems(srv) {
  const res = await request(srv.port, { ...json('GET', '/api/export/Item', undefined, ADMIN_TOKEN), timeoutMs: 20000 });
  assert.equal(res.status, 200, res.body.slice(0, 300));
  return new Map(res.json.entities.Item.map((r) => [r.id, r]));
}

function walSize(dbPath) {
  try {
    return fs.statSync(`${dbPath}-wal`).size;
  } catch (err) {
    if (err.code === 'ENOENT') return 0;
    throw err;
  }
}

/**
 * A write load on `port`: `clients` inserters (half with client ids, half server-generated)
 * and `updaters` clients that each PATCH their own counter row with n = 1, 2, 3, ….
 * Every insert answered 201 lands in `acked`; each counter records the last value
 * acknowledged and the last one sent. A client stops at its first transport error (the
 * server is gone) or when stop() is called.
 */
async function startLoad(port, { clients = 20, updaters = 4 } = {}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients + updaters });
  const st = { acked: new Set(), counters: [], sent: 0, unanswered: 0, refused: 0, clients, updaters, cutOff: [], signalAt: 0n, answeredAcrossSignal: 0 };
  for (let u = 0; u < updaters; u++) {
    const res = await request(port, { ...json('POST', '/api/entities/Item', { id: `counter-${u}`, label: 'counter', n: 0 }), agent });
    assert.equal(res.status, 201, res.body);
    st.counters.push({ id: `counter-${u}`, acked: 0, sent: 0 });
  }
  let stopped = false;
  async function inserter(k) {
    for (let i = 0; !stopped; i++) {
      st.sent++;
      const body = { label: `client ${k} #${i}`, n: i, client: k, done: i % 2 === 1 };
      if (i % 2 === 0) body.id = `c${k}-${i}`;
      let res;
      const sentAt = process.hrtime.bigint();
      try {
        res = await request(port, { ...json('POST', '/api/entities/Item', body), agent, timeoutMs: 10000 });
      } catch (err) {
        st.unanswered++;
        st.cutOff.push({ sentAt, err: err.code ?? err.message });
        return; // the server is gone
      }
      if (st.signalAt && sentAt < st.signalAt) st.answeredAcrossSignal++;
      if (res.status === 201) {
        assert.equal(typeof res.json.id, 'string');
        if (body.id) assert.equal(res.json.id, body.id);
        st.acked.add(res.json.id);
      } else {
        // Allowed under load or while draining: 503 OVERLOADED / SHUTTING_DOWN. Nothing else.
        st.refused++;
        assert.equal(res.status, 503, `unexpected answer under load: ${res.status} ${res.body}`);
      }
    }
  }
  async function updater(c) {
    while (!stopped) {
      const v = c.sent + 1;
      c.sent = v;
      let res;
      try {
        res = await request(port, { ...json('PATCH', `/api/entities/Item/${c.id}`, { n: v }), agent, timeoutMs: 10000 });
      } catch {
        return;
      }
      if (res.status === 200) c.acked = v;
      else assert.equal(res.status, 503, `unexpected answer to PATCH: ${res.status} ${res.body}`);
    }
  }
  const workers = [...Array.from({ length: clients }, (_, k) => inserter(k)), ...st.counters.map(updater)];
  st.stop = async () => {
    stopped = true;
    await Promise.all(workers);
    agent.destroy();
  };
  return st;
}

/** Checks that every acknowledged write of `st` is in `rows` (Map id → row). */
function assertNothingLost(st, rows, what) {
  const lost = [...st.acked].filter((id) => !rows.has(id));
  assert.deepEqual(lost.slice(0, 20), [], `${lost.length} of ${st.acked.size} acknowledged inserts are missing after ${what}`);
  for (const id of st.acked) {
    const r = rows.get(id);
    assert.match(r.label, /^client \d+ #\d+$/);
    assert.equal(r.label, `client ${r.client} #${r.n}`, 'the row is what was sent');
    assert.equal(r.done, r.n % 2 === 1);
  }
  // Unacknowledged inserts may or may not be there, but nothing else is.
  const items = [...rows.values()].filter((r) => r.label !== 'counter').length;
  assert.ok(items <= st.acked.size + st.clients, `${items} rows for ${st.acked.size} acknowledged inserts (+ at most one in flight per client)`);
  for (const c of st.counters) {
    const n = rows.get(c.id).n;
    assert.ok(n >= c.acked && n <= c.sent, `${c.id}: stored n=${n}, last acknowledged ${c.acked}, last sent ${c.sent}`);
  }
}

describe('durability', { timeout: 55000 }, () => {
  it('a clean restart keeps every row; after SIGTERM the -wal file is empty or absent', async () => {
    const dir = dataDir();
    const env = envFor(dir);
    const a = await start(env);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    const ids = [];
    // 300 inserts (8 at a time), then updates and deletes of some of them.
    for (let i = 0; i < 300; i += 8) {
      const batch = [];
      for (let k = i; k < Math.min(i + 8, 300); k++) {
        const body = { label: `row ${k} ✓`, n: k, done: k % 2 === 0 };
        if (k % 3 === 0) body.id = `client-${k}`;
        batch.push(request(a.port, { ...json('POST', '/api/entities/Item', body), agent }));
      }
      for (const res of await Promise.all(batch)) {
        assert.equal(res.status, 201, res.body);
        ids.push(res.json.id);
      }
    }
    for (const id of ids.slice(0, 50)) assert.equal((await request(a.port, { ...json('PATCH', `/api/entities/Item/${id}`, { n: -1, done: null }), agent })).status, 200);
    for (const id of ids.slice(50, 80)) assert.equal((await request(a.port, { ...json('DELETE', `/api/entities/Item/${id}`), agent })).status, 200);
    agent.destroy();
    const before = await exportItems(a);
    assert.equal(before.size, 270);

    assert.equal(await a.stop(15000), 0, `exit code after SIGTERM; stderr:\n${a.stderr}`);
    assert.equal(walSize(env.PYLON_DB_PATH), 0, 'the WAL was checkpointed and truncated on SIGTERM');

    const b = await start(env);
    const afterRestart = await exportItems(b);
    assert.equal(afterRestart.size, before.size);
    assert.deepEqual([...afterRestart.entries()].sort(), [...before.entries()].sort());
    assert.equal(afterRestart.get(ids[0]).n, -1);
    assert.equal(afterRestart.get(ids[0]).done, null);
    assert.equal(afterRestart.has(ids[60]), false);
    assert.equal((await request(b.port, { path: '/readyz' })).status, 200);
    assert.equal(await b.stop(15000), 0);
    assert.equal(walSize(env.PYLON_DB_PATH), 0);
  });

  // The schema is applied additively at every start: an entity, a field or an index the
  // manifest gains is created; one it loses is not dropped, so its data comes back with it.
  it('a changed manifest across restarts: additions applied, removals drop nothing', async () => {
    const dir = dataDir();
    const base = { manifest_version: 1, name: 'evolve', version: '1', routes: [], queries: [], actions: [], policies: [] };
    const field = (name, type, extra = {}) => ({ name, type, optional: false, unique: false, ...extra });
    const v1 = { ...base, entities: [{ name: 'Item', fields: [field('name', 'string')], indexes: [] }] };
    const v2 = {
      ...base,
      entities: [
        { name: 'Item', fields: [field('name', 'string'), field('qty', 'int', { optional: true }), field('sku', 'string', { optional: true, unique: true })], indexes: [{ name: 'by_qty', fields: ['qty'], unique: false }] },
        { name: 'Tag', fields: [field('label', 'string')], indexes: [] },
      ],
    };
    const v3 = v1; // qty, sku, the index and Tag are gone from the manifest
    const files = {};
    for (const [k, m] of Object.entries({ v1, v2, v3 })) {
      files[k] = path.join(dir, `${k}.json`);
      fs.writeFileSync(files[k], JSON.stringify(m));
    }
    const env = (k) => ({ ...envFor(dir), PYLON_MANIFEST: files[k] });
    const ok = async (srv, method, p, body, status) => {
      const res = await request(srv.port, json(method, p, body, ADMIN_TOKEN));
      assert.equal(res.status, status, `${method} ${p}: ${res.body}`);
      return res.json;
    };

    let srv = await start(env('v1'));
    const a = (await ok(srv, 'POST', '/api/entities/Item', { name: 'a' }, 201)).id;
    assert.equal((await request(srv.port, json('POST', '/api/entities/Item', { name: 'x', qty: 1 }))).status, 400, 'v1 has no qty');
    assert.equal(await srv.stop(15000), 0);

    srv = await start(env('v2'));
    // each change is logged at start (and recorded in _pylon_schema_history)
    assert.match(srv.stderr, /INFO  db: schema: add column "Item"\."qty" INTEGER/);
    assert.match(srv.stderr, /INFO  db: schema: create table "Tag"/);
    assert.deepEqual(await ok(srv, 'GET', `/api/entities/Item/${a}`, undefined, 200), { id: a, name: 'a', qty: null, sku: null }, 'the old row has the new columns, empty');
    const b = (await ok(srv, 'POST', '/api/entities/Item', { name: 'b', qty: 5, sku: 'S-1' }, 201)).id;
    const dup = await request(srv.port, json('POST', '/api/entities/Item', { name: 'c', sku: 'S-1' }));
    assert.equal(dup.status, 409, `the new unique field is enforced: ${dup.body}`);
    const t = (await ok(srv, 'POST', '/api/entities/Tag', { label: 'red' }, 201)).id;
    assert.equal(await srv.stop(15000), 0);

    srv = await start(env('v3'));
    // what stays on purpose is said once at start
    assert.match(srv.stderr, /WARN  db: schema: column "Item"\."qty" is not in the manifest; left in place/);
    assert.match(srv.stderr, /WARN  db: schema: .*"Tag".*/);
    // The columns stay, and a read emits every column of the row, as the original's SELECT *.
    assert.deepEqual(await ok(srv, 'GET', `/api/entities/Item/${b}`, undefined, 200), { id: b, name: 'b', qty: 5, sku: 'S-1' }, 'nothing dropped');
    assert.equal((await request(srv.port, json('GET', '/api/entities/Tag', undefined, ADMIN_TOKEN))).status, 404, 'Tag is not in v3');
    await ok(srv, 'POST', '/api/entities/Item', { name: 'd' }, 201);
    assert.equal(await srv.stop(15000), 0);

    srv = await start(env('v2'));
    assert.deepEqual(await ok(srv, 'GET', `/api/entities/Item/${b}`, undefined, 200), { id: b, name: 'b', qty: 5, sku: 'S-1' }, 'the removed fields kept their data');
    assert.deepEqual(await ok(srv, 'GET', `/api/entities/Tag/${t}`, undefined, 200), { id: t, label: 'red' }, 'the removed entity kept its rows');
    assert.equal((await request(srv.port, json('POST', '/api/entities/Item', { name: 'e', sku: 'S-1' }))).status, 409, 'and its unique index');
    assert.equal(await srv.stop(15000), 0);
  });

  // PYLON_SQLITE_MMAP_MB (default 256): pages of the database file are read through mmap
  // (after a restart the rows sit in the file, not in the WAL, so a get touches the file).
  it('reads map the database file by default; PYLON_SQLITE_MMAP_MB=0 reads without mmap', async () => {
    const env = envFor(dataDir());
    const mapsDb = (srv) =>
      fs.readFileSync(`/proc/${srv.child.pid}/maps`, 'utf8').split('\n').filter((l) => l.endsWith(` ${env.PYLON_DB_PATH}`)).length;
    const a = await start(env);
    const ids = [];
    for (let k = 0; k < 20; k++) {
      const res = await request(a.port, json('POST', '/api/entities/Item', { label: `mapped ${k}`, n: k, done: false }));
      assert.equal(res.status, 201, res.body);
      ids.push(res.json.id);
    }
    assert.equal(await a.stop(15000), 0, a.stderr);
    for (const [mb, mapped] of [[undefined, true], ['0', false]]) {
      const b = await start(mb === undefined ? env : { ...env, PYLON_SQLITE_MMAP_MB: mb });
      for (const [k, id] of ids.entries()) {
        const res = await request(b.port, json('GET', `/api/entities/Item/${id}`));
        assert.equal(res.status, 200, res.body);
        assert.deepEqual(res.json, { id, label: `mapped ${k}`, n: k, done: false, client: null });
      }
      assert.equal(mapsDb(b) > 0, mapped, `PYLON_SQLITE_MMAP_MB=${mb ?? '(default)'}: ${env.PYLON_DB_PATH} mapped: ${mapsDb(b)} mappings`);
      assert.equal(await b.stop(15000), 0, b.stderr);
    }
  });

  // After writes stop, the writer checkpoints the WAL (PASSIVE) within about half a second, so
  // later reads skip the WAL index. Seen in the -shm file (SQLite's wal-index, native byte
  // order): the header's mxFrame (offset 16) and the checkpoint info's nBackfill (offset 96).
  it('after writes pause, the writer copies the whole WAL into the database (idle checkpoint)', async () => {
    const env = envFor(dataDir());
    const a = await start(env);
    const walState = () => {
      const shm = fs.readFileSync(`${env.PYLON_DB_PATH}-shm`);
      return { mxFrame: shm.readUInt32LE(16), nBackfill: shm.readUInt32LE(96) };
    };
    const copiedWithin = async (ms) => {
      const until = Date.now() + ms;
      let s = walState();
      while (s.nBackfill !== s.mxFrame && Date.now() < until) {
        await sleep(50);
        s = walState();
      }
      return s;
    };
    for (let round = 0; round < 2; round++) {
      for (let k = 0; k < 20; k++) { // far below the 1000-page automatic checkpoint
        const res = await request(a.port, json('POST', '/api/entities/Item', { label: `idle ${round}.${k}`, n: k }));
        assert.equal(res.status, 201, res.body);
      }
      const s = await copiedWithin(3000);
      assert.ok(s.mxFrame > 0, `round ${round}: the writes are in the WAL (mxFrame ${s.mxFrame})`);
      assert.equal(s.nBackfill, s.mxFrame, `round ${round}: WAL frames copied after the pause`);
    }
    const res = await request(a.port, json('GET', '/api/entities/Item?limit=100'));
    assert.equal(res.json.data.length, 40, res.body);
    assert.equal(await a.stop(15000), 0, a.stderr);
  });

  it('SIGKILL during a write load loses no acknowledged insert or update', async () => {
    const env = envFor(dataDir());
    const a = await start(env);
    const t0 = Date.now();
    const st = await startLoad(a.port);
    await sleep(2000);
    const ackedBeforeKill = st.acked.size;
    a.signal('SIGKILL'); // mid-load: requests are in flight right now
    const killedAt = Date.now() - t0;
    await a.waitExit(5000);
    await st.stop();
    assert.equal(a.exitSignal, 'SIGKILL');
    assert.ok(ackedBeforeKill > 200, `the load was real: ${ackedBeforeKill} acknowledged inserts in ${killedAt} ms`);

    const b = await start(env);
    const rows = await exportItems(b);
    assertNothingLost(st, rows, 'kill -9');
    console.log(`# kill -9 after ${killedAt} ms: ${st.sent} inserts sent, ${st.acked.size} acknowledged, ${st.refused} refused (503), ${st.unanswered} cut off; ${rows.size} rows on disk; counters acked/sent ${st.counters.map((c) => `${c.acked}/${c.sent}`).join(' ')}`);

    // The database is healthy: it takes writes, and a clean stop truncates the WAL.
    const res = await request(b.port, json('POST', '/api/entities/Item', { label: 'after crash', n: 1 }));
    assert.equal(res.status, 201, res.body);
    assert.equal((await request(b.port, { path: '/readyz' })).status, 200);
    assert.equal(await b.stop(15000), 0);
    assert.equal(walSize(env.PYLON_DB_PATH), 0);
  });

  it('SIGTERM during a write load: exit 0, every acknowledged write kept, WAL empty', async () => {
    const env = envFor(dataDir());
    const a = await start(env);
    const st = await startLoad(a.port);
    await sleep(1000);
    assert.ok(st.acked.size > 100, `the load was real: ${st.acked.size} acknowledged inserts`);
    st.signalAt = process.hrtime.bigint();
    a.signal('SIGTERM');
    assert.equal(await a.waitExit(20000), 0, `exit code after SIGTERM under load; stderr:\n${a.stderr}`);
    await st.stop();
    assert.equal(walSize(env.PYLON_DB_PATH), 0, 'the WAL was checkpointed and truncated on SIGTERM');

    const b = await start(env);
    const rows = await exportItems(b);
    assertNothingLost(st, rows, 'SIGTERM');
    const cutBefore = st.cutOff.filter((c) => c.sentAt < st.signalAt);
    // A request sent on a keep-alive connection just as the drain closes it may go unanswered
    // (the usual keep-alive race); one that was in flight well before the signal must not.
    const stale = st.cutOff.filter((c) => c.sentAt < st.signalAt - 100_000_000n);
    assert.deepEqual(stale, [], 'requests in flight 100 ms before SIGTERM were dropped instead of answered');
    console.log(`# SIGTERM under load: ${st.sent} inserts sent, ${st.acked.size} acknowledged, ${st.refused} refused (503), ${st.unanswered} cut off (${cutBefore.length} of them sent before the signal: ${[...new Set(cutBefore.map((c) => c.err))].join(',')}), ${st.answeredAcrossSignal} sent before and answered after; ${rows.size} rows on disk`);
    assert.equal(await b.stop(15000), 0);
  });
});
