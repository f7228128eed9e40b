// sync.test.mjs — the sync layer end to end (spec/protocol.md §1-§3, DECISIONS.md §2): live
// fan-out over the sync WebSocket and SSE filtered by read policy, pull (cursor past filtered
// events, 410 rules), push (policies, `_pending_` ids, durable op_id dedup, stop at the first
// failure, live broadcast), restart with a durable change log, the per-connection backlog bound
// (1013) and the presence/topic relay, on the side ports and on the main port (/ws, /events).
//
// Clients are lib/sync-client.mjs SyncClients, which behave like the stock TS client (pull,
// then socket; live events applied only when seq > cursor; jittered reconnect with a pull first).
//
// Manifest: tests/e2e/manifests/sync.json
//   Todo   {ownerId, title, done bool, createdAt datetime?}  policy: owner-only read/insert/update/delete
//   Public {title, n int?}                                    no policy

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';

import { ADMIN_TOKEN, PylonServer, startPylon } from './lib/server.mjs';
import { SseStream, SyncClient, httpJson, isChangeEvent } from './lib/sync-client.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MANIFEST = path.join(HERE, 'manifests', 'sync.json');
const ID40 = /^[0-9a-f]{40}$/;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const tmpDirs = [];
function tmpDir() {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'pylon-sync-'));
  tmpDirs.push(d);
  return d;
}

function baseEnv(extra = {}) {
  return { PYLON_MANIFEST: MANIFEST, PYLON_ADMIN_TOKEN: ADMIN_TOKEN, PYLON_DB_PATH: path.join(tmpDir(), 'data.db'), ...extra };
}

/** A dev session for `userId`: its token. */
async function session(port, userId) {
  const res = await httpJson(port, 'POST', '/api/auth/session', { body: { user_id: userId } });
  assert.ok(res.status === 200 || res.status === 201, `POST /api/auth/session: ${res.status} ${res.body}`);
  assert.match(res.json.token, /^pylon_[0-9a-f]{64}$/);
  return res.json.token;
}

async function insertTodo(port, token, owner, extra = {}) {
  const res = await httpJson(port, 'POST', '/api/entities/Todo', { token, body: { ownerId: owner, title: `todo of ${owner}`, done: false, ...extra } });
  assert.equal(res.status, 201, `insert Todo: ${res.body}`);
  assert.match(res.json.id, ID40);
  return res.json.id;
}

async function insertPublic(port, token, extra = {}) {
  const res = await httpJson(port, 'POST', '/api/entities/Public', { token, body: { title: 'public', ...extra } });
  assert.equal(res.status, 201, `insert Public: ${res.body}`);
  return res.json.id;
}

/** The head seq of the change log (pull with limit=0 answers cursor.last_seq = head). */
async function headSeq(port) {
  const res = await httpJson(port, 'GET', '/api/sync/pull?since=0&limit=0', { token: ADMIN_TOKEN });
  assert.equal(res.status, 200, res.body);
  return res.json.cursor.last_seq;
}

/** Rows of `entity` as `token` may read them (GET /api/entities), sorted by id. */
async function serverRows(port, entity, token) {
  const res = await httpJson(port, 'GET', `/api/entities/${entity}?limit=10000`, { token });
  assert.equal(res.status, 200, `GET /api/entities/${entity}: ${res.body}`);
  return res.json.data.sort((a, b) => (a.id < b.id ? -1 : 1));
}

async function push(port, token, changes, extra = {}) {
  return httpJson(port, 'POST', '/api/sync/push', { token, body: { changes, client_id: 'cl_test', ...extra } });
}

/** Seqs applied by a client strictly increase (no duplicate, no replay). */
function assertStrictlyIncreasing(client) {
  const seqs = client.applied.map((a) => a.seq);
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `${client.name}: applied seqs not strictly increasing at ${i}: ${seqs.slice(Math.max(0, i - 3), i + 2)}`);
}

/** JSON with sorted keys (rows compare regardless of member order). */
function canon(v) {
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(',')}}`;
  return JSON.stringify(v);
}

/** The replica of every client equals what the server returns to that identity. */
async function assertConverged(port, client, entities = ['Todo', 'Public']) {
  for (const e of entities) {
    const want = await serverRows(port, e, client.token);
    await client.waitFor((c) => canon(c.rows(e)) === canon(want), 3000, `${e} replica to equal the server's rows`).catch(() => {});
    assert.deepEqual(client.rows(e), want, `${client.name}: ${e} replica differs from GET /api/entities/${e}`);
  }
}

after(() => {
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
describe('sync: live fan-out, pull, push, presence (one server)', { timeout: 40000 }, () => {
  let srv;
  let port;
  let tokA;
  let tokB;
  const A = 'user_a';
  const B = 'user_b';
  const clients = [];
  const streams = [];
  let a1, a2, b, sseA, sseA2, sseA3, sseAdmin, sseAnon, wsHeaderA;
  const wsHeaderMsgs = [];

  const client = (opts) => {
    const c = new SyncClient({ port, ...opts });
    clients.push(c);
    return c;
  };
  const sse = async (p, pathName, opts) => {
    const s = await SseStream.open(p, pathName, opts);
    streams.push(s);
    return s;
  };

  before(async () => {
    srv = await startPylon({ args: ['dev'], env: baseEnv() });
    port = srv.port;
    tokA = await session(port, A);
    tokB = await session(port, B);
    a1 = client({ token: tokA, name: 'A1' });
    a2 = client({ token: tokA, name: 'A2' });
    b = client({ token: tokB, name: 'B' });
    await Promise.all([a1.start(), a2.start(), b.start()]);
    sseA = await sse(srv.ports.sse, `/events?token=${tokA}`); // token by query
    sseA2 = await sse(srv.ports.sse, '/events', { token: tokA }); // token by Authorization
    sseA3 = await sse(srv.ports.sse, '/events', { headers: { Cookie: `pylon_session=${tokA}` } }); // session cookie
    sseAdmin = await sse(srv.ports.sse, '/events', { token: ADMIN_TOKEN });
    sseAnon = await sse(srv.ports.sse, '/events');
    // A native client: the token in Authorization instead of the subprotocol.
    wsHeaderA = new WebSocket(`ws://127.0.0.1:${srv.ports.ws}/`, { headers: { Authorization: `Bearer ${tokA}` } });
    wsHeaderA.on('message', (d) => wsHeaderMsgs.push(JSON.parse(d.toString())));
    await new Promise((resolve, reject) => {
      wsHeaderA.once('open', resolve);
      wsHeaderA.once('error', reject);
    });
  });
  after(async () => {
    for (const s of streams) s.close();
    wsHeaderA?.terminate();
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.dispose();
  });

  let todoId;
  let todoSeq;

  it('1. a Todo insert reaches every reader (2 WS + 2 SSE of A) live, never B or anonymous; B\'s pull skips it but moves its cursor', async () => {
    const bCursor0 = b.cursor;
    todoId = await insertTodo(port, tokA, A, { title: 'buy milk' });
    await a1.waitFor((c) => c.row('Todo', todoId), 3000, 'the Todo row live');
    await a2.waitFor((c) => c.row('Todo', todoId), 3000, 'the Todo row live');
    const ev = a1.live.find((e) => e.row_id === todoId);
    assert.ok(ev.applied, 'applied (seq > cursor)');
    todoSeq = ev.seq;
    assert.equal(ev.kind, 'insert');
    assert.equal(ev.entity, 'Todo');
    assert.equal(ev.timestamp, '', 'live events carry timestamp ""');
    assert.equal(ev.data.title, 'buy milk');
    assert.equal(ev.data.ownerId, A);
    assert.ok(!('id' in ev.data), 'insert data has no id (clients add id = row_id)');
    assert.deepEqual(a1.row('Todo', todoId), { ...ev.data, id: todoId });
    assert.equal(a2.live.find((e) => e.row_id === todoId).seq, todoSeq);
    await a1.waitFor(() => wsHeaderMsgs.some((e) => e.row_id === todoId), 3000, 'the Todo on the Authorization-header socket');
    for (const s of [sseA, sseA2, sseA3, sseAdmin]) {
      await s.waitFor((x) => x.changes().some((e) => e.row_id === todoId), 3000, 'the Todo event');
      const se = s.changes().find((e) => e.row_id === todoId);
      const { applied, ...wsEv } = ev;
      assert.deepEqual(se, wsEv, 'the SSE event is the same JSON as the WS event');
    }

    // A Public row afterwards: everyone sees it. Per connection events arrive in seq order, so
    // once B and the anonymous stream have it, the Todo event would have come before it.
    const pubId = await insertPublic(port, tokB, { title: 'hello all', n: 1 });
    for (const c of [a1, a2, b]) await c.waitFor((x) => x.row('Public', pubId), 3000, 'the Public row live');
    for (const s of [sseA, sseA2, sseA3, sseAdmin, sseAnon]) await s.waitFor((x) => x.changes().some((e) => e.row_id === pubId), 3000, 'the Public event');
    const pubSeq = b.live.find((e) => e.row_id === pubId).seq;
    assert.ok(pubSeq > todoSeq);
    assert.deepEqual(b.row('Public', pubId), { id: pubId, title: 'hello all', n: 1 });

    assert.equal(b.row('Todo', todoId), undefined, "B's replica never gets A's Todo");
    assert.ok(!b.live.some((e) => e.row_id === todoId), 'B received no live event for the Todo');
    assert.ok(!sseAnon.changes().some((e) => e.entity === 'Todo'), 'the anonymous SSE stream received no Todo event');

    // B's pull: the event is skipped, the cursor moves past it.
    const page = await b.pullPage(bCursor0);
    assert.equal(page.status, 200);
    assert.ok(!page.json.changes.some((e) => e.row_id === todoId), "B's pull does not show A's Todo");
    assert.ok(page.json.cursor.last_seq >= pubSeq, `B's cursor moves past the filtered event: ${page.body}`);
    const one = await b.pullPage(todoSeq - 1, 1);
    assert.deepEqual(one.json, { changes: [], cursor: { last_seq: todoSeq }, has_more: true }, 'a page holding only a filtered event is empty but moves the cursor');
    await b.pullAll();
    assert.ok(b.cursor >= pubSeq);
    assert.equal(b.row('Todo', todoId), undefined);

    // A's pull shows it, with a "<secs>Z" timestamp.
    const mine = await a1.pullPage(todoSeq - 1, 1);
    assert.equal(mine.json.changes.length, 1);
    const pe = mine.json.changes[0];
    assert.match(pe.timestamp, /^\d+Z$/, 'pull timestamps are "<unix secs>Z"');
    assert.ok(Math.abs(Number(pe.timestamp.slice(0, -1)) - Date.now() / 1000) < 60);
    assert.deepEqual({ ...pe, timestamp: '' }, (({ applied, ...x }) => x)(ev), 'pull and live carry the same event');

    // Anonymous pull: no Todo, but the Public row.
    const anon = await httpJson(port, 'GET', '/api/sync/pull?since=0');
    assert.equal(anon.status, 200);
    assert.ok(!anon.json.changes.some((e) => e.entity === 'Todo'));
    assert.ok(anon.json.changes.some((e) => e.row_id === pubId));
    assertStrictlyIncreasing(a1);
    assertStrictlyIncreasing(b);
  });

  it('2. update events carry only the patched fields, deletes no data; replicas converge to the server', async () => {
    const res = await httpJson(port, 'PATCH', `/api/entities/Todo/${todoId}`, { token: tokA, body: { done: true } });
    assert.equal(res.status, 200, res.body);
    const upd = await a1.waitFor((c) => c.live.find((e) => e.row_id === todoId && e.kind === 'update'), 3000, 'the update event');
    assert.deepEqual(upd.data, { done: true }, 'update data = only the patched fields');
    assert.equal(upd.timestamp, '');
    const two = await httpJson(port, 'PATCH', `/api/entities/Todo/${todoId}`, { token: tokA, body: { title: 'buy oat milk', createdAt: '2024-05-01T10:00:00Z' } });
    assert.equal(two.status, 200, two.body);
    const upd2 = await a2.waitFor((c) => c.live.filter((e) => e.row_id === todoId && e.kind === 'update')[1], 3000, 'the 2nd update event');
    assert.deepEqual(Object.keys(upd2.data).sort(), ['createdAt', 'title']);
    assert.equal(upd2.data.title, 'buy oat milk');
    const sseUpd = await sseA.waitFor((s) => s.changes().filter((e) => e.row_id === todoId && e.kind === 'update').length === 2 && s.changes().filter((e) => e.row_id === todoId && e.kind === 'update'), 3000, 'the update events');
    assert.deepEqual(sseUpd[0].data, { done: true });

    // Pulled update events are patches too.
    const pulled = await a1.pullPage(upd.seq - 1, 1);
    assert.deepEqual(pulled.json.changes[0].data, { done: true });
    assert.equal(pulled.json.changes[0].kind, 'update');

    // A second Todo, then deleted.
    const gone = await insertTodo(port, tokA, A, { title: 'to delete' });
    const del = await httpJson(port, 'DELETE', `/api/entities/Todo/${gone}`, { token: tokA });
    assert.equal(del.status, 200, del.body);
    const dev = await a1.waitFor((c) => c.live.find((e) => e.row_id === gone && e.kind === 'delete'), 3000, 'the delete event');
    assert.ok(!('data' in dev), `delete events carry no data: ${JSON.stringify(dev)}`);
    const pulledDel = await a1.pullPage(dev.seq - 1, 1);
    assert.equal(pulledDel.json.changes[0]?.kind, 'delete', 'the owner pulls the delete event');
    assert.ok(!('data' in pulledDel.json.changes[0]));
    await sseA.waitFor((s) => s.changes().some((e) => e.row_id === gone && e.kind === 'delete'), 3000, 'the delete event');
    assert.ok(!('data' in sseA.changes().find((e) => e.row_id === gone && e.kind === 'delete')));
    assert.equal(a1.row('Todo', gone), undefined);

    // B's own Todo and Public updates, then a marker: B never saw A's update/delete.
    const bTodo = await insertTodo(port, tokB, B, { title: 'B private' });
    const pubId = await insertPublic(port, tokA, { title: 'p2' });
    assert.equal((await httpJson(port, 'PATCH', `/api/entities/Public/${pubId}`, { token: tokB, body: { n: 7 } })).status, 200);
    await b.waitFor((c) => c.row('Public', pubId)?.n === 7, 3000, 'the Public update');
    assert.ok(!b.live.some((e) => e.row_id === todoId || e.row_id === gone), 'B got no event of A\'s rows');
    assert.ok(!a1.live.some((e) => e.row_id === bTodo), 'A got no event of B\'s Todo');
    assert.ok(b.row('Todo', bTodo));
    await sseAnon.waitFor((s) => s.changes().some((e) => e.row_id === pubId && e.kind === 'update'), 3000, 'the Public update');
    assert.deepEqual(sseAnon.changes().find((e) => e.row_id === pubId && e.kind === 'update').data, { n: 7 });
    const pubGone = await insertPublic(port, tokA, { title: 'p3' });
    assert.equal((await httpJson(port, 'DELETE', `/api/entities/Public/${pubGone}`, { token: tokB })).status, 200);
    const anonDel = await sseAnon.waitFor((s) => s.changes().find((e) => e.row_id === pubGone && e.kind === 'delete'), 3000, 'the Public delete');
    assert.ok(!('data' in anonDel));
    await b.waitFor((c) => c.live.some((e) => e.row_id === pubGone && e.kind === 'delete'), 3000, 'the Public delete');
    assert.equal(b.row('Public', pubGone), undefined);
    assert.ok(!sseAnon.changes().some((e) => e.entity === 'Todo'));

    for (const c of [a1, a2, b]) {
      await assertConverged(port, c);
      assertStrictlyIncreasing(c);
    }
    // A fresh client rebuilt by pull from 0 equals the live-built one.
    const fresh = client({ token: tokA, name: 'A-fresh' });
    await fresh.pullAll();
    assert.deepEqual(fresh.rows('Todo'), a1.rows('Todo'));
    assert.deepEqual(fresh.rows('Public'), a1.rows('Public'));
  });

  it('5. push: _pending_ ids replaced, client ids kept, update, delete; durable-style op_id dedup; stop at first failure; live broadcast; anonymous; 400', async () => {
    const liveBefore = a2.live.length;
    const ops = [
      { entity: 'Todo', row_id: '_pending_1714_abc', kind: 'insert', data: { ownerId: A, title: 'pushed pending', done: false }, op_id: 'mut_1_a' },
      { entity: 'Todo', row_id: 'client-id-1', kind: 'insert', data: { ownerId: A, title: 'pushed with id', done: false }, op_id: 'mut_1_b' },
      { entity: 'Todo', row_id: 'client-id-1', kind: 'update', data: { done: true }, op_id: 'mut_1_c' },
      { entity: 'Todo', row_id: 'client-id-2', kind: 'insert', data: { ownerId: A, title: 'short lived', done: false }, op_id: 'mut_1_d' },
      { entity: 'Todo', row_id: 'client-id-2', kind: 'delete', op_id: 'mut_1_e' },
    ];
    const r1 = await push(port, tokA, ops);
    assert.equal(r1.status, 200, r1.body);
    assert.deepEqual(r1.json, { applied: 5, deduped: 0, errors: [], cursor: { last_seq: await headSeq(port) } });
    const head1 = r1.json.cursor.last_seq;

    // Broadcast live to the other client of A, in order.
    const evs = await a2.waitFor((c) => c.live.length >= liveBefore + 5 && c.live.slice(liveBefore), 3000, '5 pushed events live');
    assert.deepEqual(evs.map((e) => e.kind), ['insert', 'insert', 'update', 'insert', 'delete']);
    assert.equal(evs[4].seq, head1);
    const pendingId = evs[0].row_id;
    assert.match(pendingId, ID40, '`_pending_` insert ids are replaced by a server id');
    assert.equal(evs[1].row_id, 'client-id-1', 'client insert ids are kept');
    assert.deepEqual(evs[2].data, { done: true });
    assert.ok(!('data' in evs[4]));
    assert.deepEqual(a2.row('Todo', 'client-id-1'), { id: 'client-id-1', ownerId: A, title: 'pushed with id', done: true, createdAt: null });
    assert.equal(a2.row('Todo', 'client-id-2'), undefined);
    assert.equal(a2.row('Todo', pendingId)?.title, 'pushed pending');
    const rows = await serverRows(port, 'Todo', tokA);
    assert.ok(!rows.some((r) => r.id.startsWith('_pending_')));
    assert.equal((await httpJson(port, 'GET', '/api/entities/Todo/client-id-2', { token: tokA })).status, 404);
    await sleep(150);
    assert.ok(!b.live.some((e) => e.row_id === 'client-id-1' || e.row_id === pendingId), 'B is not sent A\'s pushed Todos');

    // The same push again: all deduped, counted as applied, nothing new.
    const liveMid = a2.live.length;
    const r2 = await push(port, tokA, ops);
    assert.deepEqual(r2.json, { applied: 5, deduped: 5, errors: [], cursor: { last_seq: head1 } });
    assert.equal(await headSeq(port), head1, 'a deduped push writes no change event');
    assert.equal((await serverRows(port, 'Todo', tokA)).length, rows.length, 'a deduped push inserts nothing');
    await sleep(150);
    assert.equal(a2.live.length, liveMid, 'a deduped push broadcasts nothing');

    // An update without data is an error in its place (not silently skipped), and stops the push.
    const r2b = await push(port, tokA, [
      { entity: 'Todo', row_id: 'client-id-1', kind: 'update', data: { title: 'renamed' }, op_id: 'mut_1_f' },
      { entity: 'Todo', row_id: 'client-id-1', kind: 'update', op_id: 'mut_1_g' },
      { entity: 'Todo', row_id: 'client-id-1', kind: 'update', data: { done: false }, op_id: 'mut_1_h' },
    ]);
    assert.equal(r2b.json.applied, 1, r2b.body);
    assert.equal(r2b.json.errors.length, 1, r2b.body);
    assert.match(r2b.json.errors[0], /^update Todo\/client-id-1: /);
    assert.equal((await httpJson(port, 'GET', '/api/entities/Todo/client-id-1', { token: tokA })).json.done, true, 'op 3 was not run');

    // Stop at the first failure: op 2 updates B's Todo (update policy denies).
    const bTodo = await insertTodo(port, tokB, B, { title: 'not yours' });
    const failing = [
      { entity: 'Todo', row_id: 'client-id-3', kind: 'insert', data: { ownerId: A, title: 'ok 1', done: false }, op_id: 'mut_2_a' },
      { entity: 'Todo', row_id: bTodo, kind: 'update', data: { title: 'hijacked' }, op_id: 'mut_2_b' },
      { entity: 'Todo', row_id: 'client-id-4', kind: 'insert', data: { ownerId: A, title: 'ok 3', done: false }, op_id: 'mut_2_c' },
    ];
    const r3 = await push(port, tokA, failing);
    assert.equal(r3.status, 200, r3.body);
    assert.equal(r3.json.applied, 1, r3.body);
    assert.equal(r3.json.deduped, 0);
    assert.equal(r3.json.errors.length, 1, r3.body);
    assert.match(r3.json.errors[0], new RegExp(`^update Todo/${bTodo}: `), 'the error names the failing op');
    assert.equal((await httpJson(port, 'GET', '/api/entities/Todo/client-id-3', { token: tokA })).status, 200);
    assert.equal((await httpJson(port, 'GET', '/api/entities/Todo/client-id-4', { token: tokA })).status, 404, 'the op after the failure was not run');
    assert.equal((await httpJson(port, 'GET', `/api/entities/Todo/${bTodo}`, { token: tokB })).json.title, 'not yours');
    // The client re-sends all three: op 1 deduped (counted as applied), op 2 still refused.
    const r4 = await push(port, tokA, failing);
    assert.equal(r4.json.applied, 1, r4.body);
    assert.equal(r4.json.deduped, 1, r4.body);
    assert.match(r4.json.errors[0] ?? '', new RegExp(`^update Todo/${bTodo}: `));
    // Without the refused op the rest goes through (its op_id was not recorded as seen).
    const r5 = await push(port, tokA, [failing[0], failing[2]]);
    assert.deepEqual([r5.json.applied, r5.json.deduped, r5.json.errors], [2, 1, []], r5.body);
    assert.equal((await httpJson(port, 'GET', '/api/entities/Todo/client-id-4', { token: tokA })).status, 200);

    // Insert policy refusal in the middle (ownerId of someone else).
    const r6 = await push(port, tokA, [
      { entity: 'Todo', row_id: 'client-id-5', kind: 'insert', data: { ownerId: A, title: 'ok', done: false }, op_id: 'mut_3_a' },
      { entity: 'Todo', row_id: 'client-id-6', kind: 'insert', data: { ownerId: B, title: 'for B', done: false }, op_id: 'mut_3_b' },
      { entity: 'Todo', row_id: 'client-id-7', kind: 'insert', data: { ownerId: A, title: 'after', done: false }, op_id: 'mut_3_c' },
    ]);
    assert.equal(r6.json.applied, 1, r6.body);
    assert.equal(r6.json.errors.length, 1, r6.body);
    assert.match(r6.json.errors[0], /^insert Todo: /);
    assert.equal((await httpJson(port, 'GET', '/api/entities/Todo/client-id-6', { token: ADMIN_TOKEN })).status, 404);
    assert.equal((await httpJson(port, 'GET', '/api/entities/Todo/client-id-7', { token: ADMIN_TOKEN })).status, 404);

    // Anonymous push of a Todo insert: nothing applied, a policy error.
    const headAnon = await headSeq(port);
    const r7 = await push(port, undefined, [{ entity: 'Todo', row_id: '_pending_x', kind: 'insert', data: { ownerId: A, title: 'anon', done: false }, op_id: 'mut_4_a' }]);
    assert.equal(r7.status, 200, r7.body);
    assert.equal(r7.json.applied, 0);
    assert.equal(r7.json.errors.length, 1);
    assert.match(r7.json.errors[0], /^insert Todo: .*polic/i);
    assert.equal(await headSeq(port), headAnon);
    // Anonymous push of a Public row (no policy) works, and is broadcast to everyone.
    const r8 = await push(port, undefined, [{ entity: 'Public', row_id: '_pending_pub', kind: 'insert', data: { title: 'anon public' }, op_id: 'mut_4_b' }]);
    assert.deepEqual([r8.json.applied, r8.json.errors], [1, []], r8.body);
    await b.waitFor((c) => c.rows('Public').some((r) => r.title === 'anon public'), 3000, 'the anonymously pushed Public row');
    await sseAnon.waitFor((s) => s.changes().some((e) => e.data?.title === 'anon public'), 3000, 'the anonymously pushed Public row');

    // Unknown kind: the whole request is 400, nothing applied.
    const headBad = await headSeq(port);
    const bad = await push(port, tokA, [
      { entity: 'Public', row_id: 'x1', kind: 'insert', data: { title: 'never' } },
      { entity: 'Public', row_id: 'x1', kind: 'upsert', data: { title: 'never' } },
    ]);
    assert.equal(bad.status, 400, bad.body);
    assert.equal(bad.json.error.code, 'INVALID_JSON');
    assert.equal(await headSeq(port), headBad);
    assert.equal((await httpJson(port, 'POST', '/api/sync/push', { token: tokA, body: '{"changes":' })).status, 400);

    for (const c of [a1, a2, b]) {
      await assertConverged(port, c);
      assertStrictlyIncreasing(c);
    }
    assert.ok(a2.live.length > liveMid, 'sanity');
  });

  // protocol.md §2.1: with both, the Authorization header decides who the connection is; the
  // bearer. subprotocol the client offered is still echoed (browsers fail the handshake otherwise).
  it('6g. Authorization header and bearer. subprotocol together: the header wins, the protocol is echoed', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${srv.ports.ws}/`, [`bearer.${tokB}`], { headers: { Authorization: `Bearer ${tokA}` } });
    const got = [];
    ws.on('message', (d) => got.push(JSON.parse(d.toString())));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    try {
      assert.equal(ws.protocol, `bearer.${tokB}`, 'the offered subprotocol is echoed');
      const ofB = await insertTodo(port, tokB, B); // owner-only: only B's connections see it
      const ofA = await insertTodo(port, tokA, A);
      const deadline = Date.now() + 3000;
      while (!got.some((m) => m.row_id === ofA) && Date.now() < deadline) await sleep(20);
      assert.ok(got.some((m) => m.row_id === ofA), 'the connection is A (the header)');
      assert.ok(!got.some((m) => m.row_id === ofB), 'not B (the subprotocol): B\'s row never came, and it was written first');
    } finally {
      ws.terminate();
    }
  });

  it('7. presence and topic relay to every WS client with "from" = the sender; disconnect notices; not on SSE', async () => {
    const baseline = new Map([a1, a2, b].map((c) => [c, c.messages.length]));
    const since = (c) => c.messages.slice(baseline.get(c));
    a1.send({ type: 'presence', event: 'update', data: { x: 1 }, from: 'spoofed' });
    for (const c of [a1, a2, b]) {
      const m = await c.waitFor((x) => since(x).find((m) => m.type === 'presence' && m.event === 'update'), 3000, 'the presence relay');
      assert.deepEqual(m, { type: 'presence', event: 'update', data: { x: 1 }, from: A }, `${c.name}: relayed with from = the sender's user id`);
    }
    b.publishTopic('chat:42', { text: 'hi', n: [1, 2] });
    for (const c of [a1, a2, b]) {
      const m = await c.waitFor((x) => since(x).find((m) => m.type === 'topic'), 3000, 'the topic relay');
      assert.deepEqual(m, { type: 'topic', topic: 'chat:42', data: { text: 'hi', n: [1, 2] }, from: B });
    }
    // Garbage and unknown types are dropped silently; the socket stays up.
    a1.sock.send('not json');
    a1.send({ type: 'nonsense', data: 1 });
    a1.send({ type: 'crdt-subscribe', entity: 'Todo', rowId: todoId });

    // One more client, then it leaves: the others get a disconnect notice.
    const c3 = client({ token: tokB, name: 'B3' });
    await c3.start();
    c3.setPresence({ here: true });
    await a1.waitFor((x) => since(x).some((m) => m.type === 'presence' && m.data?.here), 3000, 'B3 presence');
    const before3 = new Map([a1, a2, b].map((c) => [c, c.messages.length]));
    await c3.stop();
    const ids = [];
    for (const c of [a1, a2, b]) {
      const m = await c.waitFor((x) => x.messages.slice(before3.get(x)).find((m) => m.type === 'presence' && m.event === 'disconnect'), 3000, 'the disconnect notice');
      assert.deepEqual(Object.keys(m).sort(), ['clientId', 'event', 'type']);
      assert.ok(Number.isInteger(m.clientId) && m.clientId >= 0);
      ids.push(m.clientId);
    }
    assert.ok(ids.every((id) => id === ids[0]), 'everyone is told the same clientId');
    assert.ok([a1, a2, b].every((c) => c.connected), 'the other sockets stay open');

    // SSE streams get no presence/topic relay (only change events and room events).
    await sleep(100);
    for (const s of [sseA, sseA2, sseA3, sseAdmin, sseAnon]) assert.ok(!s.events.some((e) => e.type === 'presence' || e.type === 'topic'), `SSE got a relay: ${JSON.stringify(s.events.filter((e) => e.type))}`);
    assert.equal(a1.binary, 0, 'crdt-subscribe is ignored (no snapshot frame)');
  });

  it('7b. a burst of closes: every remaining client gets one notice per closed socket', async () => {
    // A proxy restart drops many clients at once; the hub sends their notices together (one
    // send per remaining session per run), and none may be lost or doubled.
    const N = 40;
    const burst = await Promise.all(Array.from({ length: N }, () => new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${srv.ports.ws}/`, [`bearer.${tokB}`]);
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    })));
    await sleep(200); // registered with the hub before they close
    const before = new Map([a1, a2, b].map((c) => [c, c.messages.length]));
    const notices = (c) => c.messages.slice(before.get(c)).filter((m) => m.type === 'presence' && m.event === 'disconnect');
    for (const ws of burst) ws.terminate();
    const sets = [];
    for (const c of [a1, a2, b]) {
      await c.waitFor((x) => notices(x).length >= N, 5000, `${N} disconnect notices`);
      await sleep(100); // and no more than N
      const ids = notices(c).map((m) => m.clientId);
      assert.equal(ids.length, N, `${c.name}: one notice per closed socket`);
      assert.equal(new Set(ids).size, N, `${c.name}: no notice twice`);
      sets.push(JSON.stringify([...ids].sort((x, y) => x - y)));
    }
    assert.ok(sets.every((s) => s === sets[0]), 'every client is told the same clientIds');
    assert.ok([a1, a2, b].every((c) => c.connected), 'the other sockets stay open');
    // The hub still delivers changes after the burst.
    const seqBefore = await headSeq(port);
    await insertPublic(port, tokA, { title: 'after the burst' });
    for (const c of [a1, a2, b])
      await c.waitFor((x) => x.live.some((e) => e.seq > seqBefore), 3000, 'the change after the burst');
  });

  it('8. the main port: /ws and /events behave like the side ports', async () => {
    const m1 = client({ token: tokA, mainPort: true, name: 'A-main' });
    const mb = client({ token: tokB, mainPort: true, name: 'B-main' });
    await Promise.all([m1.start(), mb.start()]);
    assert.deepEqual(m1.rows('Todo'), a1.rows('Todo'), 'same pull');
    const mSse = await sse(port, `/events?token=${tokA}`);
    const mAnon = await sse(port, '/events');
    assert.equal(mSse.status, 200);
    assert.match(mSse.headers['content-type'], /^text\/event-stream/);

    const id = await insertTodo(port, tokA, A, { title: 'via main port' });
    await m1.waitFor((c) => c.row('Todo', id), 3000, 'the Todo live on /ws');
    await mSse.waitFor((s) => s.changes().some((e) => e.row_id === id), 3000, 'the Todo on /events');
    const pubId = await insertPublic(port, tokA, { title: 'main port public' });
    await mb.waitFor((c) => c.row('Public', pubId), 3000, 'the Public row on /ws');
    await mAnon.waitFor((s) => s.changes().some((e) => e.row_id === pubId), 3000, 'the Public row on anonymous /events');
    assert.ok(!mb.live.some((e) => e.row_id === id), 'B on /ws does not get A\'s Todo');
    assert.ok(!mAnon.changes().some((e) => e.entity === 'Todo'), 'anonymous /events gets no Todo');
    assert.deepEqual(mSse.changes().find((e) => e.row_id === id), (({ applied, ...x }) => x)(m1.live.find((e) => e.row_id === id)));

    // Relay crosses the main port and the side port both ways.
    const n0 = a1.messages.length;
    const k0 = m1.messages.length;
    m1.publishTopic('cross', { from: 'main' });
    await a1.waitFor((c) => c.messages.slice(n0).some((m) => m.type === 'topic' && m.topic === 'cross' && m.from === A), 3000, 'main → side relay');
    a2.setPresence({ side: 1 });
    await m1.waitFor((c) => c.messages.slice(k0).some((m) => m.type === 'presence' && m.data?.side === 1 && m.from === A), 3000, 'side → main relay');

    // /ws without a token: 101 then Close 1008, like the side port.
    for (const url of [`ws://127.0.0.1:${port}/ws`, `ws://127.0.0.1:${srv.ports.ws}/`]) {
      const code = await new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        const t = setTimeout(() => reject(new Error(`${url}: no close`)), 3000);
        ws.on('error', () => {});
        ws.on('close', (c) => {
          clearTimeout(t);
          resolve(c);
        });
      });
      assert.equal(code, 1008, `${url} without a token`);
    }
    for (const c of [m1, mb]) {
      await assertConverged(port, c);
      assertStrictlyIncreasing(c);
    }
  });
});

// ---------------------------------------------------------------------------------------------
describe('sync: restart on the same database', { timeout: 30000 }, () => {
  it('3. a client reconnects after SIGTERM + restart with no 410, no duplicates, and seqs continue; push dedup survives', async () => {
    const env = baseEnv();
    let srv = await startPylon({ args: ['dev'], env });
    const port = srv.port;
    let c;
    try {
      const tok = await session(port, 'user_r');
      c = new SyncClient({ port, token: tok, name: 'R' });
      await c.start();
      const ids = [];
      for (let i = 0; i < 5; i++) ids.push(await insertTodo(port, tok, 'user_r', { title: `r${i}` }));
      await c.waitFor((x) => ids.every((id) => x.row('Todo', id)), 3000, 'five rows live');
      const ops = [
        { entity: 'Todo', row_id: '_pending_r1', kind: 'insert', data: { ownerId: 'user_r', title: 'pushed before restart', done: false }, op_id: 'mut_r_1' },
        { entity: 'Todo', row_id: ids[0], kind: 'update', data: { done: true }, op_id: 'mut_r_2' },
      ];
      const p1 = await push(port, tok, ops);
      assert.deepEqual([p1.json.applied, p1.json.deduped, p1.json.errors], [2, 0, []], p1.body);
      await c.waitFor((x) => x.cursor === p1.json.cursor.last_seq, 3000, 'the pushed events live');
      const C = c.cursor;
      const opensBefore = c.opens;
      const closesBefore = c.closes.length;

      const code = await srv.stop();
      assert.equal(code, 0, `SIGTERM exits 0 (exit ${code}, signal ${srv.exitSignal}); stderr:\n${srv.stderr.slice(-2000)}`);
      await c.waitFor((x) => !x.connected, 3000, 'the socket to close');
      assert.equal(c.closes[closesBefore].code, 1001, 'SIGTERM closes the sync WebSocket with 1001');
      await srv.dispose();

      // Same ports, same database.
      srv = new PylonServer(['dev'], { PYLON_PORT: port, ...env }, port);
      await srv.waitReady(10000);
      await c.waitFor((x) => x.connected && x.opens > opensBefore, 8000, 'the client to reconnect');
      assert.equal(c.resyncs, 0, 'no 410 after the restart');
      const after = c.pulls.filter((p) => p.since >= C);
      assert.ok(after.some((p) => p.status === 200), 'a pull ran before the reconnect');
      assert.ok(after.every((p) => p.status === 200 || p.status === undefined), `no 410: ${JSON.stringify(after)}`);
      assert.equal(c.cursor, C, 'no events were replayed (no re-seed at boot)');
      assert.equal(await headSeq(port), C, 'the head seq survived the restart');

      // A session survives too (the tokens are durable); write after the restart.
      const id = await insertTodo(port, tok, 'user_r', { title: 'after restart' });
      const ev = await c.waitFor((x) => x.live.find((e) => e.row_id === id), 3000, 'the new row live');
      assert.ok(ev.seq > C, `seq continues after the restart: ${ev.seq} > ${C}`);
      assert.equal(ev.seq, C + 1);
      assertStrictlyIncreasing(c);
      const keys = c.applied.map((a) => `${a.seq}`);
      assert.equal(new Set(keys).size, keys.length, 'no event applied twice');

      // The op_ids pushed before the restart are still known.
      const p2 = await push(port, tok, ops);
      assert.deepEqual([p2.json.applied, p2.json.deduped, p2.json.errors], [2, 2, []], `dedup survives a restart: ${p2.body}`);
      assert.equal(await headSeq(port), ev.seq, 'no new event for a deduped push');
      await assertConverged(port, c, ['Todo']);
      assert.equal(c.rows('Todo').filter((r) => r.title === 'pushed before restart').length, 1);
    } finally {
      await c?.stop();
      await srv.dispose();
    }
  });
});

// ---------------------------------------------------------------------------------------------
describe('sync: back-pressure (PYLON_WS_MAX_BACKLOG=4096)', { timeout: 40000 }, () => {
  let srv;
  let port;
  let tok;
  const clients = [];
  before(async () => {
    srv = await startPylon({ args: ['dev'], env: baseEnv({ PYLON_WS_MAX_BACKLOG: 4096 }) });
    port = srv.port;
    tok = await session(port, 'user_slow');
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.dispose();
  });

  it('4. a client that stops reading is closed with 1013; a fresh pull (and a reconnecting client) has every row', async () => {
    const live = new SyncClient({ port, token: tok, name: 'live' });
    clients.push(live);
    await live.start();

    const ws = new WebSocket(`ws://127.0.0.1:${srv.ports.ws}/`, [`bearer.${tok}`]);
    let received = 0;
    let closed = null;
    const closedP = new Promise((resolve) => ws.on('close', (code, reason) => resolve((closed = { code, reason: reason.toString() }))));
    ws.on('error', () => {});
    ws.on('message', () => received++);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    ws._socket.pause(); // never read from now on
    const slowSse = await SseStream.open(srv.ports.sse, '/events', { token: tok });
    slowSse.res.pause();
    slowSse.req.socket.pause();

    // The kernel absorbs a few MB for a socket that is not read (send buffer up to 4 MB on
    // loopback), so write ~9 MB of events; each one (~3 KB) fits the 4096-byte bound alone.
    const N = 3000;
    const title = 'x'.repeat(3000);
    const batch = 250;
    for (let i = 0; i < N; i += batch) {
      const operations = [];
      for (let k = i; k < i + batch; k++) operations.push({ op: 'insert', entity: 'Public', data: { title: `${k}:${title}`, n: k } });
      const res = await httpJson(port, 'POST', '/api/batch', { token: ADMIN_TOKEN, body: { operations }, timeoutMs: 15000 });
      assert.equal(res.status, 200, res.body.slice(0, 300));
      assert.equal(res.json.succeeded, batch, res.body.slice(0, 300));
    }
    const head = await headSeq(port);

    // Give the hub time to fan out, then read again: the backlog, then the close frame.
    await sleep(300);
    assert.equal(closed, null, 'no close was seen while not reading');
    ws._socket.resume();
    const got = await Promise.race([closedP, sleep(10000).then(() => null)]);
    assert.ok(got, `the paused client was not closed (received ${received} of ${N} events)`);
    assert.equal(got.code, 1013, `close code: ${JSON.stringify(got)}`);
    assert.ok(received < N, `the slow client got fewer events than were written (${received} < ${N})`);
    console.log(`# slow client: ${received} of ${N} events before the 1013; live client closes: ${JSON.stringify(live.closes.map((x) => x.code))}`);
    assert.equal(ws._socket.destroyed || ws.readyState === WebSocket.CLOSED, true, 'the connection is closed');

    // The slow SSE stream is ended the same way (the response ends; the client pulls).
    slowSse.req.socket.resume();
    slowSse.res.resume();
    await slowSse.waitFor((s) => s.ended, 10000, 'the slow SSE stream to end');
    assert.ok(slowSse.changes().length < N, `the slow SSE client got fewer events (${slowSse.changes().length} < ${N})`);

    // A fresh client pulls everything; the live client (maybe closed with 1013 too) converges.
    const fresh = new SyncClient({ port, token: tok, name: 'fresh' });
    clients.push(fresh);
    await fresh.pullAll();
    assert.equal(fresh.cursor, head);
    assert.equal(fresh.rows('Public').length, N, 'the replica holds every row');
    assert.deepEqual(new Set(fresh.rows('Public').map((r) => r.n)).size, N);
    await live.waitFor((c) => c.cursor === head && c.connected, 15000, 'the live client to catch up');
    assert.equal(live.rows('Public').length, N, `the live client holds every row (closes: ${JSON.stringify(live.closes.map((x) => x.code))})`);
    assertStrictlyIncreasing(live);
  });

  // Fails against the server of e749367: http/ws.c stream_write() refuses any frame with
  // `c->queued + len > stream_max_backlog` even when nothing is queued, so one event bigger than
  // PYLON_WS_MAX_BACKLOG closes every subscriber with 1013 (and again after every reconnect).
  it('4b. a single event larger than the backlog bound still reaches an idle, reading client', async () => {
    const c = new SyncClient({ port, token: tok, name: 'idle' });
    clients.push(c);
    await c.start();
    await sleep(100);
    const id = await insertPublic(port, tok, { title: 'y'.repeat(6000) });
    await c.waitFor((x) => x.live.some((e) => e.row_id === id) || x.closes.length, 3000, 'the 6 KB event live (or a close)');
    assert.deepEqual(c.closes.map((x) => x.code), [], `an idle client that reads was closed for one ${6000}-byte event`);
    assert.ok(c.live.some((e) => e.row_id === id), 'the event was delivered live');
  });

  // The same as 4, told from the slow client's side: a SyncClient (behaving like the stock
  // client) whose socket stops reading is closed with 1013, reconnects after pulling, and ends
  // with every row and no event applied twice.
  it('4c. the slow client itself is closed with 1013, pulls, reconnects and holds every row', async () => {
    const slow = new SyncClient({ port, token: tok, name: 'slow', baseDelayMs: 100, maxDelayMs: 400 });
    clients.push(slow);
    await slow.start();
    await slow.waitFor((c) => c.connected, 5000, 'connected');
    const before = slow.cursor;
    slow.sock._socket.pause(); // stops reading: the kernel buffers fill, then the server's bound
    const title = 'z'.repeat(3000);
    for (let i = 0; i < 3000; i += 250) {
      const operations = [];
      for (let k = i; k < i + 250; k++) operations.push({ op: 'insert', entity: 'Public', data: { title: `slow ${k}:${title}`, n: k } });
      const res = await httpJson(port, 'POST', '/api/batch', { token: ADMIN_TOKEN, body: { operations }, timeoutMs: 15000 });
      assert.equal(res.status, 200, res.body.slice(0, 300));
    }
    const head = await headSeq(port);
    await sleep(300);
    slow.sock._socket.resume();
    await slow.waitFor((c) => c.closes.some((x) => x.code === 1013), 10000, 'the 1013 close');
    await slow.waitFor((c) => c.connected && c.cursor >= head, 15000, 'the reconnect after a pull');
    assert.ok(slow.pulls.some((p) => p.since > before), 'it pulled what it missed before reconnecting');
    const want = await serverRows(port, 'Public', tok);
    assert.deepEqual(canon(slow.rows('Public')), canon(want), 'every row, nothing missing');
    assertStrictlyIncreasing(slow);
  });
});

// ---------------------------------------------------------------------------------------------
describe('sync: retention (PYLON_CHANGELOG_RETAIN=10)', { timeout: 30000 }, () => {
  let srv;
  let port;
  before(async () => {
    srv = await startPylon({ args: ['dev'], env: baseEnv({ PYLON_CHANGELOG_RETAIN: 10 }) });
    port = srv.port;
  });
  after(() => srv?.dispose());

  // Retention keeps each row's latest event (as a full insert) and every delete (a tombstone),
  // so a cursor from before the compacted range still gets everything it missed: no 410 for
  // falling behind (the original forgets and answers 410). Only a cursor ahead of the head
  // (another database) gets 410, and since=0 never does.
  it('6. an old cursor continues through the compacted range with every update and delete; 410 only ahead of the head, never for since=0', async () => {
    const tok = await session(port, 'user_ret');
    const early = new SyncClient({ port, token: tok, name: 'early' });
    const ids = [await insertPublic(port, tok, { title: 'r0', n: 0 })];
    await early.pullAll();
    assert.equal(early.cursor, 1);
    for (let i = 1; i < 45; i++) ids.push(await insertPublic(port, tok, { title: `r${i}`, n: i }));
    // r0 (which the early client holds) and r7 are deleted, r3 patched, all long before the
    // retained window of 10 events
    for (const id of [ids[0], ids[7]]) assert.equal((await httpJson(port, 'DELETE', `/api/entities/Public/${id}`, { token: tok })).status, 200);
    assert.equal((await httpJson(port, 'PATCH', `/api/entities/Public/${ids[3]}`, { token: tok, body: { n: 333 } })).status, 200);
    for (let i = 45; i < 60; i++) ids.push(await insertPublic(port, tok, { title: `r${i}`, n: i }));
    const head = await headSeq(port);
    assert.equal(head, 63);

    const r1 = await httpJson(port, 'GET', '/api/sync/pull?since=1', { token: tok });
    assert.equal(r1.status, 200, r1.body);
    const kinds = r1.json.changes.map((e) => e.kind);
    assert.equal(kinds.filter((k) => k === 'delete').length, 2, `both deletes reach the old cursor: ${JSON.stringify(kinds)}`);
    assert.ok(r1.json.changes.length < head - 1, `compacted: ${r1.json.changes.length} events for ${head - 1}`);
    await early.pullAll();
    assert.equal(early.resyncs, 0, 'no resync');
    assert.equal(early.cursor, head);
    const want = await serverRows(port, 'Public', tok);
    assert.equal(want.length, 58);
    assert.deepEqual(canon(early.rows('Public')), canon(want), 'the old client holds exactly the server rows (r0 gone, r3 patched)');

    for (const q of ['since=0', '', 'since=garbage', 'since=0&limit=5']) {
      const r = await httpJson(port, 'GET', `/api/sync/pull?${q}`, { token: tok });
      assert.equal(r.status, 200, `pull ?${q} must never be 410: ${r.body}`);
    }
    const r0 = await httpJson(port, 'GET', '/api/sync/pull?since=0', { token: tok });
    assert.equal(r0.json.changes[0].kind, 'insert');
    assert.equal(r0.json.cursor.last_seq, head);
    assert.equal(r0.json.has_more, false);

    const ahead = await httpJson(port, 'GET', `/api/sync/pull?since=${head + 100}`, { token: tok });
    assert.equal(ahead.status, 410, ahead.body);
    assert.equal(ahead.json.error.code, 'RESYNC_REQUIRED');
    assert.equal(ahead.json.error.oldest_seq, head + 1, 'ahead of the head, the oldest valid cursor is head+1');
    assert.match(ahead.json.error.message, /ahead of the newest seq/);
    const atHead = await httpJson(port, 'GET', `/api/sync/pull?since=${head}`, { token: tok });
    assert.deepEqual(atHead.json, { changes: [], cursor: { last_seq: head }, has_more: false });

    // The stock client's reaction to that 410: clear the replica, cursor = 0, pull again.
    early.cursor = head + 100;
    await early.pullAll();
    assert.equal(early.resyncs, 1);
    assert.equal(early.cursor, head);
    assert.deepEqual(canon(early.rows('Public')), canon(want));
  });

  // Fails against the server of e749367: retention deletes the insert events of rows that still
  // exist and nothing re-seeds them, so a pull from since=0 (a new device, or the 410 recovery)
  // only sees rows written in the last PYLON_CHANGELOG_RETAIN events.
  it('6b. a new client (or one recovering from a 410) pulling from 0 rebuilds every existing row', async () => {
    // The rows written in test 6 all still exist; a client rebuilding from since=0 must get them.
    const tok = await session(port, 'user_ret2');
    const c = new SyncClient({ port, token: tok, name: 'rebuild' });
    await c.pullAll();
    const want = await serverRows(port, 'Public', tok);
    assert.equal(want.length, 58);
    assert.equal(c.rows('Public').length, want.length, `pull from 0 rebuilt ${c.rows('Public').length} of ${want.length} existing rows (retention trimmed the inserts and nothing re-seeds them)`);
  });

  // Each retention pass only looks at the events since the previous one (actors/store_sqlite.c):
  // new events in range, and older survivors that a newer event superseded. 200 random inserts,
  // updates and deletes over a dozen rows make old survivors superseded pass after pass; a
  // missed one would pile up in the log and (with its stale data) in a rebuilt replica.
  it('6c. after 200 mixed writes a pull from 0 holds one event per live row plus the retained tail', async () => {
    const tok = await session(port, 'user_compact');
    const earlier = (await serverRows(port, 'Public', tok)).map((r) => [r.id, r.title, r.n]); // tests 6, 6b
    const live = new Map(); // id -> [title, n]
    const deleted = new Set();
    let rnd = 7;
    const next = (n) => ((rnd = (rnd * 1103515245 + 12345) % 2147483648) % n);
    for (let i = 0; i < 200; i++) {
      const ids = [...live.keys()];
      const op = ids.length < 4 ? 0 : next(3);
      if (op === 0 && live.size < 12) {
        live.set(await insertPublic(port, tok, { title: `c${i}`, n: i }), [`c${i}`, i]);
      } else if (op === 2 || (op === 0 && ids.length)) {
        const id = ids[next(ids.length)];
        const r = await httpJson(port, 'DELETE', `/api/entities/Public/${id}`, { token: tok });
        assert.equal(r.status, 200, r.body);
        live.delete(id);
        deleted.add(id);
      } else {
        const id = ids[next(ids.length)];
        const r = await httpJson(port, 'PATCH', `/api/entities/Public/${id}`, { token: tok, body: { n: i } });
        assert.equal(r.status, 200, r.body);
        live.set(id, [live.get(id)[0], i]);
      }
    }
    const head = await headSeq(port);
    const all = await httpJson(port, 'GET', `/api/sync/pull?since=0&limit=1000`, { token: tok });
    assert.equal(all.status, 200, all.body);
    const events = all.json.changes;
    // Compacted: every live row once, a tombstone per deleted row, plus at most the retained
    // window (10) and the slack between passes (a pass runs once head - compacted > 10 + 0 + 1).
    const rows = earlier.length + live.size + deleted.size + 2; // + the 2 deletes of test 6
    assert.ok(events.length <= rows + 10 + 2, `${events.length} events for ${rows} live rows and tombstones (head ${head}): superseded events were left behind`);
    const c = new SyncClient({ port, token: tok, name: 'compact' });
    await c.pullAll();
    const want = await serverRows(port, 'Public', tok);
    const expected = [...earlier, ...[...live.entries()].map(([id, [t, n]]) => [id, t, n])].sort((a, b) => (a[0] < b[0] ? -1 : 1));
    assert.deepEqual(want.map((r) => [r.id, r.title, r.n]), expected, 'the server holds what was written');
    assert.deepEqual(c.rows('Public').map((r) => [r.id, r.title, r.n]), expected, 'a replica rebuilt from 0 matches, whole rows');
  });

  // A fresh client pages through a compacted range larger than one page: its own cursors lie
  // inside that range and must be continued (they got 410 before, so the stock client looped:
  // 410, clear, pull from 0, 410 on page two...).
  it('6d. a fresh client pages (100 per page by default) through 150+ compacted rows without a 410', async () => {
    const tok = await session(port, 'user_pages');
    for (let i = 0; i < 150; i++) await insertPublic(port, tok, { title: `p${i}`, n: i });
    const first = await httpJson(port, 'GET', '/api/sync/pull?since=0', { token: tok });
    assert.equal(first.json.changes.length, 100, 'the default page is 100 events');
    assert.equal(first.json.has_more, true);
    const c = new SyncClient({ port, token: tok, name: 'pager' });
    await c.pullAll();
    assert.equal(c.resyncs, 0, `no 410 while paging: ${JSON.stringify(c.pulls.filter((p) => p.status !== 200))}`);
    assert.ok(c.pulls.length >= 2, 'more than one page');
    const want = await serverRows(port, 'Public', tok);
    assert.ok(want.length >= 150);
    assert.deepEqual(canon(c.rows('Public')), canon(want));
  });

  // An update after the compacted range is a patch (only the changed fields): it must not
  // replace the compacted full row of the same row, or a replica rebuilt from 0 loses fields.
  it('6e. a patch inside the retained window does not erase the compacted full row before it', async () => {
    const tok = await session(port, 'user_patch');
    const id = await insertPublic(port, tok, { title: 'keep me', n: 1 });
    for (let i = 0; i < 30; i++) await insertPublic(port, tok, { title: `f${i}`, n: i });
    assert.equal((await httpJson(port, 'PATCH', `/api/entities/Public/${id}`, { token: tok, body: { n: 99 } })).status, 200);
    // Retention passes run every dozen events; check a rebuilt replica after each write until
    // the patch itself has left the retained window.
    for (let i = 0; i < 15; i++) {
      await insertPublic(port, tok, { title: `g${i}`, n: i });
      const c = new SyncClient({ port, token: tok, name: `rebuild${i}` });
      await c.pullAll();
      const row = c.rows('Public').find((r) => r.id === id);
      assert.deepEqual({ title: row?.title, n: row?.n }, { title: 'keep me', n: 99 }, `after ${i + 1} more writes`);
    }
  });

  // The newest events (here up to the retention, 10) are also in memory: a cursor that keeps
  // up is answered from there, an older one from the durable log, with the same rows.
  it('6f. pulls near the head are answered from memory, older ones from the log, alike', async () => {
    const tok = await session(port, 'user_tail');
    const pulls = async () => {
      const m = await new Promise((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path: '/metrics', headers: { Accept: 'text/plain', Authorization: `Bearer ${ADMIN_TOKEN}` } }, (res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (d) => (body += d)).on('end', () => resolve(body));
        }).on('error', reject);
      });
      const count = (src) => Number(m.match(new RegExp(`pylon_sync_pulls_total\\{source="${src}"\\} (\\d+)`))?.[1]);
      return { memory: count('memory'), log: count('log') };
    };
    for (let i = 0; i < 12; i++) await insertPublic(port, tok, { title: `t${i}`, n: i });
    const head = await headSeq(port);
    const before = await pulls();
    assert.ok(Number.isInteger(before.memory) && Number.isInteger(before.log), JSON.stringify(before));
    const near = await httpJson(port, 'GET', `/api/sync/pull?since=${head - 4}`, { token: tok });
    const mid = await pulls();
    assert.deepEqual([mid.memory - before.memory, mid.log - before.log], [1, 0], 'a cursor 4 behind: memory');
    const far = await httpJson(port, 'GET', `/api/sync/pull?since=${head - 30}`, { token: tok });
    const after = await pulls();
    assert.deepEqual([after.memory - mid.memory, after.log - mid.log], [0, 1], 'a cursor 30 behind: the log');
    assert.deepEqual(near.json.changes.map((e) => e.seq), [head - 3, head - 2, head - 1, head]);
    assert.deepEqual(far.json.changes.slice(-4), near.json.changes, 'the same events either way');
    assert.equal(near.json.changes[3].data.title, 't11');
  });
});

// ---------------------------------------------------------------------------------------------
// Write coalescing (issue 5): frames for one connection that pile up while the I/O loop is busy
// go out together in one writev. Under a burst (concurrent batches and single inserts, so the
// hub gets several change batches in flight) every WebSocket subscriber must still receive
// every event exactly once, in seq order, with its data intact.
describe('sync: a burst of events (write coalescing)', { timeout: 60000 }, () => {
  let srv;
  let port;
  const sockets = [];
  before(async () => {
    srv = await startPylon({ args: ['dev'], env: baseEnv() });
    port = srv.port;
  });
  after(async () => {
    for (const ws of sockets) ws.terminate();
    await srv?.dispose();
  });

  it('9. 20 subscribers each get all 2 400 events of a burst, contiguous seqs in order, data intact', async () => {
    const tok = await session(port, 'user_burst');
    const SUBS = 20;
    const subs = [];
    for (let i = 0; i < SUBS; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${srv.ports.ws}/`, [`bearer.${tok}`]);
      sockets.push(ws);
      const sub = { events: [], closes: [] };
      ws.on('message', (data) => {
        const m = JSON.parse(data.toString());
        if (isChangeEvent(m)) sub.events.push(m);
      });
      ws.on('close', (code) => sub.closes.push(code));
      ws.on('error', () => {});
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      subs.push(sub);
    }
    // The hub registers a session just after the 101: a marker event every subscriber sees
    // tells us they all are live.
    const waitAll = async (pred, what) => {
      const deadline = Date.now() + 20000;
      while (Date.now() < deadline && !subs.every(pred)) await sleep(50);
      assert.ok(subs.every(pred), `every subscriber ${what}`);
    };
    await sleep(200);
    await insertPublic(port, tok, { title: 'marker', n: -1 });
    await waitAll((s) => s.events.some((e) => e.data?.n === -1), 'sees the marker');
    const first = (await headSeq(port)) + 1;

    // 2 000 events as 8 batches of 250 and 400 single inserts, all at once.
    const N_BATCH = 8;
    const PER = 250;
    const SINGLES = 400;
    const N = N_BATCH * PER + SINGLES;
    const title = 'b'.repeat(200);
    const jobs = [];
    for (let b = 0; b < N_BATCH; b++) {
      const operations = [];
      for (let k = 0; k < PER; k++) operations.push({ op: 'insert', entity: 'Public', data: { title: `${b * PER + k}:${title}`, n: b * PER + k } });
      jobs.push(httpJson(port, 'POST', '/api/batch', { token: ADMIN_TOKEN, body: { operations }, timeoutMs: 20000 }).then((res) => {
        assert.equal(res.status, 200, res.body.slice(0, 300));
        assert.equal(res.json.succeeded, PER, res.body.slice(0, 300));
      }));
    }
    for (let w = 0; w < 8; w++) {
      jobs.push((async () => {
        for (let k = w; k < SINGLES; k += 8) {
          const n = N_BATCH * PER + k;
          await insertPublic(port, tok, { title: `${n}:${title}`, n });
        }
      })());
    }
    await Promise.all(jobs);
    const last = await headSeq(port);
    assert.equal(last - first + 1, N, 'the burst wrote N change events');

    await waitAll((s) => s.events.length && s.events[s.events.length - 1].seq >= last, 'receives the last event');
    for (const [i, s] of subs.entries()) {
      assert.deepEqual(s.closes, [], `subscriber ${i} was not closed`);
      const burst = s.events.filter((e) => e.seq >= first);
      assert.equal(burst.length, N, `subscriber ${i}: ${burst.length} of ${N} events`);
      for (let k = 0; k < N; k++) {
        const e = burst[k];
        assert.equal(e.seq, first + k, `subscriber ${i}: event ${k} has seq ${e.seq}, want ${first + k} (order or gap)`);
        assert.equal(e.kind, 'insert');
        assert.equal(e.entity, 'Public');
        assert.equal(e.data.title, `${e.data.n}:${title}`, `subscriber ${i}: seq ${e.seq} data intact`);
      }
      assert.equal(new Set(burst.map((e) => e.data.n)).size, N, `subscriber ${i}: every n exactly once`);
    }
  });
});
