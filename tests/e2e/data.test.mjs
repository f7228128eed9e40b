// data.test.mjs — the data API end to end (spec/backend.md §3, §4; DECISIONS.md): CRUD on
// /api/entities, cursor pagination, POST /api/query filters, lookup, every 4xx of bad input
// (and that a refused write leaves nothing behind), admin batch/transact/export/import, links,
// and entity policies with row-by-row read filtering.
//
// One `pylon dev` server runs for the whole file with tests/e2e/fixtures/data.manifest.json:
//   Project {name}
//   Todo    {title, done bool, priority int?, notes richtext?, ownerId, createdAt datetime,
//            slug string? (unique index by_slug), projectId id(Project)? (relation "project")}
//   Note    {ownerId, body, pinned bool?} with policy note_owner (owner-only read/insert/update/delete)

import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';

import { assertErrorEnvelope, request } from './lib/http.mjs';
import { ADMIN_TOKEN, SERVE_ENV, startPylon } from './lib/server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MANIFEST = path.join(HERE, 'fixtures', 'data.manifest.json');
const TODO_COLUMNS = 'id, title, done, priority, notes, ownerId, createdAt, slug, projectId';

let srv;

/** One JSON request. `body` objects are serialised; strings are sent as they are. */
async function call(method, p, body, token) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await request(srv.port, {
    method,
    path: p,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return res;
}
const admin = (method, p, body) => call(method, p, body, ADMIN_TOKEN);

/** Number of rows of `entity`, read through the admin export. */
async function count(entity) {
  const res = await admin('GET', `/api/export/${entity}`);
  assert.equal(res.status, 200, res.body);
  return res.json.counts[entity];
}

/** All ids of `entity` (admin export, in id order as the store returns them). */
async function allIds(entity) {
  const res = await admin('GET', `/api/export/${entity}`);
  assert.equal(res.status, 200, res.body);
  return res.json.entities[entity].map((r) => r.id);
}

let seq = 0;
/** A valid Todo body; `extra` overrides fields. */
function todo(extra = {}) {
  seq++;
  return { title: `todo ${seq}`, done: false, ownerId: 'owner-1', createdAt: `2024-01-01T00:00:${String(seq % 60).padStart(2, '0')}Z`, ...extra };
}

async function insertTodo(extra = {}) {
  const res = await call('POST', '/api/entities/Todo', todo(extra));
  assert.equal(res.status, 201, res.body);
  return res.json.id;
}

/** Runs `fn` (which must be refused) and checks the row count of `entity` did not move. */
async function unchanged(entity, fn) {
  const n0 = await count(entity);
  await fn();
  assert.equal(await count(entity), n0, `a refused request changed the number of ${entity} rows`);
}

const ID40 = /^[0-9a-f]{40}$/;

before(async () => {
  srv = await startPylon({ args: ['dev'], env: { PYLON_MANIFEST: MANIFEST, PYLON_ADMIN_TOKEN: ADMIN_TOKEN } });
});
after(async () => {
  if (srv) await srv.dispose();
});

describe('CRUD', { timeout: 20000 }, () => {
  it('insert answers 201 {"id"} with a 40-hex, time-sortable id', async () => {
    const t0 = BigInt(Date.now()) * 1000000n;
    const ids = [];
    for (let i = 0; i < 5; i++) {
      const res = await call('POST', '/api/entities/Todo', todo());
      assert.equal(res.status, 201, res.body);
      assert.match(res.headers['content-type'], /^application\/json/);
      assert.deepEqual(Object.keys(res.json), ['id']);
      assert.match(res.json.id, ID40);
      ids.push(res.json.id);
    }
    const t1 = BigInt(Date.now()) * 1000000n;
    // Later inserts sort after earlier ones.
    assert.deepEqual([...ids].sort(), ids, 'ids rise in creation order');
    assert.equal(new Set(ids).size, ids.length);
    // The first 32 hex digits are Unix-epoch nanoseconds (spec §1.4).
    for (const id of ids) {
      const ns = BigInt(`0x${id.slice(0, 32)}`);
      assert.ok(ns >= t0 - 5000000000n && ns <= t1 + 5000000000n, `id ${id}: ${ns} ns is not "now" (${t0}..${t1})`);
    }
  });

  it('keeps a client-supplied id, replaces a _pending_ one, refuses a duplicate id with 409', async () => {
    const res = await call('POST', '/api/entities/Todo', todo({ id: 'client-id-1' }));
    assert.equal(res.status, 201, res.body);
    assert.deepEqual(res.json, { id: 'client-id-1' });
    assert.equal((await call('GET', '/api/entities/Todo/client-id-1')).status, 200);

    const pend = await call('POST', '/api/entities/Todo', todo({ id: '_pending_x' }));
    assert.equal(pend.status, 201, pend.body);
    assert.match(pend.json.id, ID40);
    assert.equal((await call('GET', '/api/entities/Todo/_pending_x')).status, 404);
    assert.equal((await call('GET', `/api/entities/Todo/${pend.json.id}`)).json.id, pend.json.id);

    await unchanged('Todo', async () => {
      const dup = await call('POST', '/api/entities/Todo', todo({ id: 'client-id-1', title: 'other' }));
      assertErrorEnvelope(dup, 409, 'UNIQUE_VIOLATION');
      for (const bad of [5, '', true, { a: 1 }, 'x'.repeat(257)]) {
        const r = await call('POST', '/api/entities/Todo', todo({ id: bad }));
        assertErrorEnvelope(r, 400, 'INVALID_DATA');
      }
    });
    assert.equal((await call('GET', '/api/entities/Todo/client-id-1')).json.title.startsWith('todo'), true);
  });

  it('get returns the row: every column, booleans true/false, ints as numbers, nulls', async () => {
    const body = {
      id: 'get-1',
      title: 'ünïcødé ✓ "quoted"',
      done: true,
      priority: 3,
      notes: '<p>rich</p>',
      ownerId: 'owner-1',
      createdAt: '2024-02-03T04:05:06Z',
      slug: 'get-one',
    };
    assert.equal((await call('POST', '/api/entities/Todo', body)).status, 201);
    const res = await call('GET', '/api/entities/Todo/get-1');
    assert.equal(res.status, 200, res.body);
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.deepEqual(res.json, { ...body, projectId: null });

    const id2 = await insertTodo({ done: false, priority: 2.0 }); // 2.0 is the integer 2
    const r2 = (await call('GET', `/api/entities/Todo/${id2}`)).json;
    assert.equal(r2.done, false);
    assert.equal(r2.priority, 2);
    assert.equal(r2.notes, null);
    assert.equal(r2.slug, null);
    assert.deepEqual(Object.keys(r2).sort(), TODO_COLUMNS.split(', ').sort());

    assertErrorEnvelope(await call('GET', '/api/entities/Todo/no-such-id'), 404, 'NOT_FOUND');
  });

  it('inserts with eight different sets and orders of fields each store exactly their own values', async () => {
    // The writer keeps a prepared INSERT per set of given fields (a few per entity, the rest
    // through its statement cache): every set, in either key order, twice, must land right.
    const base = { title: 't', done: false, ownerId: 'o', createdAt: '2024-01-01T00:00:00Z' };
    const extras = [
      {},
      { done: true },
      { priority: 7 },
      { notes: 'n', projectId: null },
      { slug: 'shape-a' },
      { priority: 1, notes: 'x', done: true },
      { slug: 'shape-b', priority: 2 },
      { notes: 'only notes', slug: null },
    ];
    let k = 0;
    for (let round = 0; round < 2; round++) {
      for (const [i, extra] of extras.entries()) {
        const fields = { ...base, ...extra, title: `shape-${i}-${round}` };
        if (fields.slug) fields.slug = `${fields.slug}-${round}`;
        // odd rows: keys in reverse order, so the body's order differs from the manifest's
        const ordered = k++ % 2 ? Object.fromEntries(Object.entries(fields).reverse()) : fields;
        const res = await call('POST', '/api/entities/Todo', ordered);
        assert.equal(res.status, 201, res.body);
        const row = (await call('GET', `/api/entities/Todo/${res.json.id}`)).json;
        const want = { priority: null, notes: null, slug: null, projectId: null };
        assert.deepEqual(row, { ...want, ...fields, id: res.json.id }, `set ${i}, round ${round}`);
      }
    }
  });

  it('list answers {"data","count","offset","limit"}; limit and offset page through the rows', async () => {
    for (let i = 0; i < 4; i++) await insertTodo();
    const all = await call('GET', '/api/entities/Todo');
    assert.equal(all.status, 200, all.body);
    assert.deepEqual(Object.keys(all.json).sort(), ['count', 'data', 'limit', 'offset']);
    assert.equal(all.json.offset, 0);
    assert.equal(all.json.limit, null);
    assert.equal(all.json.count, all.json.data.length);
    assert.equal(all.json.count, await count('Todo'));
    const ids = all.json.data.map((r) => r.id);
    assert.deepEqual(ids, [...ids].sort(), 'list is in id order');
    for (const r of all.json.data) assert.equal(typeof r.done, 'boolean');

    const page = await call('GET', '/api/entities/Todo?limit=2&offset=1');
    assert.equal(page.status, 200, page.body);
    assert.deepEqual(page.json, { data: all.json.data.slice(1, 3), count: 2, offset: 1, limit: 2 });

    const tail = await call('GET', `/api/entities/Todo?offset=${ids.length - 1}&limit=10`);
    assert.deepEqual(tail.json, { data: all.json.data.slice(-1), count: 1, offset: ids.length - 1, limit: 10 });

    const none = await call('GET', `/api/entities/Todo?offset=${ids.length + 5}`);
    assert.deepEqual(none.json, { data: [], count: 0, offset: ids.length + 5, limit: null });

    for (const q of ['limit=abc', 'limit=-1', 'offset=x']) assertErrorEnvelope(await call('GET', `/api/entities/Todo?${q}`), 400, 'INVALID_QUERY');
  });

  it('patch answers {"updated":true} and the change is visible; refusals change nothing', async () => {
    const id = await insertTodo({ title: 'before', priority: 1 });
    const res = await call('PATCH', `/api/entities/Todo/${id}`, { title: 'after', done: true, priority: 9, id: 'ignored' });
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(res.json, { updated: true });
    const row = (await call('GET', `/api/entities/Todo/${id}`)).json;
    assert.equal(row.id, id);
    assert.equal(row.title, 'after');
    assert.equal(row.done, true);
    assert.equal(row.priority, 9);

    // Clearing an optional field.
    assert.equal((await call('PATCH', `/api/entities/Todo/${id}`, { priority: null })).status, 200);
    assert.equal((await call('GET', `/api/entities/Todo/${id}`)).json.priority, null);

    assertErrorEnvelope(await call('PATCH', '/api/entities/Todo/no-such-id', { title: 'x' }), 404, 'NOT_FOUND');
    const unknown = assertErrorEnvelope(await call('PATCH', `/api/entities/Todo/${id}`, { title: 'x', bogus: 1 }), 400, 'INVALID_COLUMN');
    assert.match(unknown.message, /"bogus"/);
    const wrong = assertErrorEnvelope(await call('PATCH', `/api/entities/Todo/${id}`, { done: 'yes' }), 400, 'INVALID_DATA');
    assert.match(wrong.message, /done/);
    assertErrorEnvelope(await call('PATCH', `/api/entities/Todo/${id}`, { title: null }), 400, 'INVALID_DATA');
    assertErrorEnvelope(await call('PATCH', `/api/entities/Todo/${id}`, '{nope'), 400, 'INVALID_JSON');
    assertErrorEnvelope(await call('PATCH', `/api/entities/Todo/${id}`, '[1,2]'), 400, 'INVALID_DATA');
    const after = (await call('GET', `/api/entities/Todo/${id}`)).json;
    assert.deepEqual(after, { ...row, priority: null }, 'refused patches left the row alone');
  });

  it('delete answers {"deleted":true}; the row is then 404 NOT_FOUND', async () => {
    const id = await insertTodo();
    const n0 = await count('Todo');
    const res = await call('DELETE', `/api/entities/Todo/${id}`);
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(res.json, { deleted: true });
    assert.equal(await count('Todo'), n0 - 1);
    assertErrorEnvelope(await call('GET', `/api/entities/Todo/${id}`), 404, 'NOT_FOUND');
    assertErrorEnvelope(await call('DELETE', `/api/entities/Todo/${id}`), 404, 'NOT_FOUND');
    assertErrorEnvelope(await call('PATCH', `/api/entities/Todo/${id}`, { title: 'x' }), 404, 'NOT_FOUND');
  });

  it('a client id with a reserved character is reachable at its percent-encoded URL', async () => {
    // A client-chosen id (kept, DECISIONS §2) must be addressable: clients build the URL with
    // encodeURIComponent(id), and a raw space cannot even appear in a request line.
    const id = 'with space/and ü';
    assert.equal((await call('POST', '/api/entities/Project', { id, name: 'name with space' })).status, 201);
    const res = await call('GET', `/api/entities/Project/${encodeURIComponent(id)}`);
    assert.equal(res.status, 200, `GET /api/entities/Project/${encodeURIComponent(id)} → ${res.status} ${res.body}`);
    assert.equal(res.json.id, id);
    const lk = await call('GET', `/api/lookup/Project/name/${encodeURIComponent('name with space')}`);
    assert.equal(lk.status, 200, `lookup by an encoded value → ${lk.status} ${lk.body}`);
    assert.equal(lk.json.id, id);
  });
});

describe('cursor pagination', { timeout: 20000 }, () => {
  it('walks every row exactly once with has_more / next_cursor', async () => {
    for (let i = 0; i < 5; i++) await insertTodo();
    const expected = await allIds('Todo');
    assert.ok(expected.length >= 7);

    const seen = [];
    let res = await call('GET', '/api/entities/Todo/cursor?limit=2');
    for (let pages = 0; ; pages++) {
      assert.ok(pages < 1000, 'the cursor never ends');
      assert.equal(res.status, 200, res.body);
      assert.deepEqual(Object.keys(res.json).sort(), ['data', 'has_more', 'next_cursor']);
      const { data, has_more: more, next_cursor: next } = res.json;
      assert.ok(data.length <= 2);
      seen.push(...data.map((r) => r.id));
      if (!more) {
        assert.equal(next, null);
        break;
      }
      assert.equal(data.length, 2);
      assert.equal(next, data[data.length - 1].id);
      res = await call('GET', `/api/entities/Todo/cursor?limit=2&after=${encodeURIComponent(next)}`);
    }
    assert.equal(new Set(seen).size, seen.length, 'no row twice');
    assert.deepEqual(seen, [...expected].sort(), 'every row, in id order');

    // Default page 20, at most 100.
    const big = await call('GET', '/api/entities/Todo/cursor?limit=1000');
    assert.equal(big.json.data.length, Math.min(100, expected.length));
    const def = await call('GET', '/api/entities/Todo/cursor');
    assert.equal(def.json.data.length, Math.min(20, expected.length));
    assert.equal(def.json.has_more, expected.length > 20);

    // After the last id: an empty last page.
    const last = [...expected].sort().at(-1);
    assert.deepEqual((await call('GET', `/api/entities/Todo/cursor?after=${last}`)).json, { data: [], next_cursor: null, has_more: false });
  });
});

describe('POST /api/query', { timeout: 20000 }, () => {
  const OWNER = 'query-owner';
  const rows = [
    { id: 'q1', title: 'apple pie', done: true, priority: 1, notes: 'sweet crust', ownerId: OWNER, createdAt: '2024-03-01T00:00:00Z' },
    { id: 'q2', title: 'banana bread', done: false, priority: 2, notes: null, ownerId: OWNER, createdAt: '2024-03-02T00:00:00Z' },
    { id: 'q3', title: 'cherry tart', done: true, priority: 3, notes: 'zesty filling', ownerId: OWNER, createdAt: '2024-03-03T00:00:00Z' },
    { id: 'q4', title: 'pineapple cake', done: false, priority: 4, notes: null, ownerId: OWNER, createdAt: '2024-03-04T00:00:00Z' },
    { id: 'q5', title: 'date loaf', done: false, priority: 5, notes: 'apple on top', ownerId: OWNER, createdAt: '2024-03-05T00:00:00Z' },
  ];
  const q = async (filter) => {
    const res = await call('POST', '/api/query/Todo', { ownerId: OWNER, ...filter });
    assert.equal(res.status, 200, `${JSON.stringify(filter)} → ${res.status} ${res.body}`);
    assert.ok(Array.isArray(res.json), 'a bare array');
    return res.json.map((r) => r.id);
  };

  before(async () => {
    for (const r of rows) assert.equal((await call('POST', '/api/entities/Todo', r)).status, 201);
  });

  it('equality (strings, booleans) answers full rows', async () => {
    const res = await call('POST', '/api/query/Todo', { ownerId: OWNER });
    assert.deepEqual(res.json, rows.map((r) => ({ ...r, slug: null, projectId: null })));
    assert.deepEqual(await q({ done: true }), ['q1', 'q3']);
    assert.deepEqual(await q({ done: false }), ['q2', 'q4', 'q5']);
    assert.deepEqual(await q({ title: 'cherry tart' }), ['q3']);
    assert.deepEqual(await q({ priority: 4 }), ['q4']);
    assert.deepEqual(await q({ id: 'q2' }), ['q2']);
    assert.deepEqual(await q({ title: 'nothing' }), []);
  });

  it('$gt $gte $lt $lte $not $in', async () => {
    assert.deepEqual(await q({ priority: { $gt: 3 } }), ['q4', 'q5']);
    assert.deepEqual(await q({ priority: { $gte: 3 } }), ['q3', 'q4', 'q5']);
    assert.deepEqual(await q({ priority: { $lt: 3 } }), ['q1', 'q2']);
    assert.deepEqual(await q({ priority: { $lte: 3 } }), ['q1', 'q2', 'q3']);
    assert.deepEqual(await q({ priority: { $gt: 1, $lt: 5 } }), ['q2', 'q3', 'q4']);
    assert.deepEqual(await q({ createdAt: { $gte: '2024-03-04T00:00:00Z' } }), ['q4', 'q5']);
    assert.deepEqual(await q({ priority: { $not: 3 } }), ['q1', 'q2', 'q4', 'q5']);
    assert.deepEqual(await q({ done: { $not: true } }), ['q2', 'q4', 'q5']);
    assert.deepEqual(await q({ notes: { $not: null } }), ['q1', 'q3', 'q5']);
    assert.deepEqual(await q({ notes: null }), ['q2', 'q4']);
    assert.deepEqual(await q({ priority: { $in: [1, 3, 5, 99] } }), ['q1', 'q3', 'q5']);
    assert.deepEqual(await q({ title: { $in: ['date loaf', 'apple pie'] } }), ['q1', 'q5']);
    assert.deepEqual(await q({ priority: { $in: [] } }), []);
  });

  it('$like, $search, $order, $limit, $offset', async () => {
    assert.deepEqual(await q({ title: { $like: 'apple' } }), ['q1', 'q4']);
    assert.deepEqual(await q({ title: { $like: 'APPLE' } }), ['q1', 'q4'], 'LIKE is case-insensitive for ASCII');
    // $search looks at every string/richtext field (title, notes, ownerId, slug).
    assert.deepEqual(await q({ $search: 'apple' }), ['q1', 'q4', 'q5']);
    assert.deepEqual(await q({ $search: 'zesty' }), ['q3']);
    // every term, anywhere in the text fields, any case; % _ \ are literal
    assert.deepEqual(await q({ $search: 'apple top' }), ['q5'], 'both words, in one field or across fields');
    assert.deepEqual(await q({ $search: 'PIE  sweet' }), ['q1'], 'title and notes, extra spaces');
    assert.deepEqual(await q({ $search: 'apple zesty' }), [], 'no row has both');
    assert.deepEqual(await q({ $search: '%' }), [], '% is a character, not a wildcard');
    assert.deepEqual(await q({ $search: 'b_nana' }), [], '_ too');
    assert.deepEqual(await q({ $search: '   ' }), ['q1', 'q2', 'q3', 'q4', 'q5'], 'no term: every row');
    assert.deepEqual(await q({ $order: { priority: 'desc' } }), ['q5', 'q4', 'q3', 'q2', 'q1']);
    assert.deepEqual(await q({ $order: { done: 'asc', priority: 'desc' } }), ['q5', 'q4', 'q2', 'q3', 'q1']);
    assert.deepEqual(await q({ $order: { priority: 'desc' }, $limit: 2 }), ['q5', 'q4']);
    assert.deepEqual(await q({ $order: { priority: 'desc' }, $limit: 2, $offset: 1 }), ['q4', 'q3']);
    assert.deepEqual(await q({ $limit: 2, $offset: 4 }), ['q5']);
    assert.deepEqual(await q({ $limit: 0 }), []);
    assert.deepEqual(await q({ done: false, priority: { $gte: 4 }, $order: { createdAt: 'desc' } }), ['q5', 'q4']);
  });

  it('refuses bad filters with 400', async () => {
    const bad = async (body, status, code) => assertErrorEnvelope(await call('POST', '/api/query/Todo', body), status, code);
    await bad({ priority: { $regex: 'x' } }, 400, 'INVALID_QUERY');
    await bad({ $bogus: 1 }, 400, 'INVALID_QUERY');
    await bad({ $limit: -1 }, 400, 'INVALID_QUERY');
    await bad({ $limit: 'ten' }, 400, 'INVALID_QUERY');
    await bad({ $order: { priority: 'sideways' } }, 400, 'INVALID_QUERY');
    await bad({ priority: { $in: 3 } }, 400, 'INVALID_QUERY');
    await bad({ priority: 'high' }, 400, 'INVALID_QUERY');
    const col = await bad({ nope: 1 }, 400, 'INVALID_COLUMN');
    assert.equal(col.message, `Unknown column "nope" -- valid columns: ${TODO_COLUMNS}`);
    await bad({ $order: { nope: 'asc' } }, 400, 'INVALID_COLUMN');
    await bad('[1]', 400, 'INVALID_QUERY');
    await bad('{"a":', 400, 'INVALID_JSON');
    assertErrorEnvelope(await call('POST', '/api/query/Nope', {}), 404, 'ENTITY_NOT_FOUND');
  });
});

describe('GET /api/lookup', { timeout: 10000 }, () => {
  it('finds a row by a field value; 404 when none; 400 for an unknown field', async () => {
    const id = await insertTodo({ slug: 'find-me', priority: 7 });
    const res = await call('GET', '/api/lookup/Todo/slug/find-me');
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(res.json, (await call('GET', `/api/entities/Todo/${id}`)).json);
    assert.equal((await call('GET', `/api/lookup/Todo/id/${id}`)).json.id, id);
    assertErrorEnvelope(await call('GET', '/api/lookup/Todo/slug/not-there'), 404, 'NOT_FOUND');
    assertErrorEnvelope(await call('GET', '/api/lookup/Todo/bogus/x'), 400, 'INVALID_COLUMN');
    assertErrorEnvelope(await call('GET', '/api/lookup/Nope/slug/x'), 404, 'ENTITY_NOT_FOUND');
  });

  it('a number or boolean field is looked up by its value; text that is not one is a 400', async () => {
    const id = await insertTodo({ slug: 'by-number', priority: 424242, done: true });
    const res = await call('GET', '/api/lookup/Todo/priority/424242');
    assert.equal(res.status, 200, res.body);
    assert.equal(res.json.id, id);
    assertErrorEnvelope(await call('GET', '/api/lookup/Todo/priority/424243'), 404, 'NOT_FOUND');
    const done = await call('GET', '/api/lookup/Todo/done/true');
    assert.equal(done.status, 200, done.body);
    assert.equal(done.json.done, true);
    for (const [p, why] of [['priority/abc', /Todo\.priority is an integer: "abc" is not one/], ['priority/1.5', /an integer/], ['done/yes', /Todo\.done is a boolean: use true or false/]]) {
      const e = assertErrorEnvelope(await call('GET', `/api/lookup/Todo/${p}`), 400, 'INVALID_QUERY');
      assert.match(e.message, why);
    }
  });
});

describe('bad input: exact errors, nothing written', { timeout: 20000 }, () => {
  it('unknown entity → 404 ENTITY_NOT_FOUND on every route', async () => {
    for (const [m, p, b] of [
      ['GET', '/api/entities/Nope'],
      ['POST', '/api/entities/Nope', todo()],
      ['GET', '/api/entities/Nope/x'],
      ['PATCH', '/api/entities/Nope/x', { title: 'y' }],
      ['DELETE', '/api/entities/Nope/x'],
      ['GET', '/api/entities/Nope/cursor'],
      ['POST', '/api/query/Nope', {}],
      ['GET', '/api/lookup/Nope/a/b'],
      ['GET', '/api/entities/todo'], // names are case-sensitive
    ]) {
      const e = assertErrorEnvelope(await call(m, p, b), 404, 'ENTITY_NOT_FOUND');
      assert.match(e.message, /Unknown entity/);
    }
  });

  it('insert refusals: INVALID_COLUMN, wrong type, MISSING_FIELD, UNIQUE_VIOLATION, INVALID_JSON, non-object', async () => {
    await insertTodo({ slug: 'taken' });
    await unchanged('Todo', async () => {
      const col = assertErrorEnvelope(await call('POST', '/api/entities/Todo', todo({ colour: 'red' })), 400, 'INVALID_COLUMN');
      assert.equal(col.message, `Unknown column "colour" -- valid columns: ${TODO_COLUMNS}`);

      for (const [field, value] of [
        ['done', 1],
        ['done', 'true'],
        ['priority', 'high'],
        ['priority', 1.5],
        ['title', 42],
        ['notes', { rich: true }],
        ['createdAt', 20240101],
        ['projectId', ['p']],
      ]) {
        const e = assertErrorEnvelope(await call('POST', '/api/entities/Todo', todo({ [field]: value })), 400, 'INVALID_DATA');
        assert.ok(e.message.includes(`"${field}"`), `the message names ${field}: ${e.message}`);
      }

      for (const field of ['title', 'done', 'ownerId', 'createdAt']) {
        const body = todo();
        delete body[field];
        const e = assertErrorEnvelope(await call('POST', '/api/entities/Todo', body), 400, 'MISSING_FIELD');
        assert.ok(e.message.includes(`"${field}"`), `the message names ${field}: ${e.message}`);
        const e2 = assertErrorEnvelope(await call('POST', '/api/entities/Todo', { ...body, [field]: null }), 400, 'MISSING_FIELD');
        assert.ok(e2.message.includes(`"${field}"`));
      }

      assertErrorEnvelope(await call('POST', '/api/entities/Todo', todo({ slug: 'taken' })), 409, 'UNIQUE_VIOLATION');

      for (const raw of ['{"title": "x",', 'not json', '', '{"title":"a","title":"b","done":true,"ownerId":"o","createdAt":"c"}'])
        assertErrorEnvelope(await call('POST', '/api/entities/Todo', raw), 400, 'INVALID_JSON');
      for (const raw of ['[]', '[{"title":"x"}]'])
        assertErrorEnvelope(await call('POST', '/api/entities/Todo', raw), 400, 'INVALID_DATA');
    });
  });

  it('a JSON scalar body is valid JSON but not an object → 400 INVALID_DATA (not INVALID_JSON)', async () => {
    await unchanged('Todo', async () => {
      for (const raw of ['"str"', '42', 'null', 'true']) {
        const res = await call('POST', '/api/entities/Todo', raw);
        assert.equal(res.status, 400);
        assert.equal(res.json?.error?.code, 'INVALID_DATA', `POST body ${raw} → ${res.body}`);
      }
    });
  });

  it('bad filter operator → 400 INVALID_QUERY', async () => {
    assertErrorEnvelope(await call('POST', '/api/query/Todo', { priority: { $between: [1, 2] } }), 400, 'INVALID_QUERY');
  });
});

describe('admin: batch, transact, export, import', { timeout: 30000 }, () => {
  it('non-admin callers get 403 FORBIDDEN', async () => {
    const user = (await call('POST', '/api/auth/session', { user_id: 'someone' })).json.token;
    for (const token of [undefined, user, 'not-the-admin-token']) {
      for (const [m, p, b] of [
        ['POST', '/api/batch', { operations: [] }],
        ['POST', '/api/transact', []],
        ['GET', '/api/export'],
        ['GET', '/api/export/Todo'],
        ['POST', '/api/import', { entities: {} }],
      ]) {
        assertErrorEnvelope(await call(m, p, b, token), 403, 'FORBIDDEN');
      }
    }
  });

  it('batch is not atomic: good operations persist, failing ones are reported', async () => {
    const victim = await insertTodo({ title: 'batch victim' });
    const doomed = await insertTodo({ title: 'batch doomed' });
    const n0 = await count('Todo');
    const res = await admin('POST', '/api/batch', {
      operations: [
        { op: 'insert', entity: 'Todo', id: 'batch-1', data: todo({ title: 'from batch' }) },
        { op: 'insert', entity: 'Todo', data: { title: 'no done' } },
        { op: 'update', entity: 'Todo', id: victim, data: { title: 'batch updated' } },
        { op: 'update', entity: 'Todo', id: 'no-such-row', data: { title: 'x' } },
        { op: 'delete', entity: 'Todo', id: doomed },
        { op: 'frobnicate', entity: 'Todo' },
        { op: 'insert', entity: 'Nope', data: {} },
        { op: 'insert', entity: 'Todo', data: todo({ bogus: 1 }) },
      ],
    });
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(Object.keys(res.json).sort(), ['failed', 'results', 'succeeded']);
    assert.equal(res.json.succeeded, 3);
    assert.equal(res.json.failed, 5);
    const r = res.json.results;
    assert.equal(r.length, 8);
    assert.deepEqual(r.map((x) => x.ok), [true, false, true, false, true, false, false, false]);
    assert.deepEqual(r.map((x) => x.op), ['insert', 'insert', 'update', 'update', 'delete', 'frobnicate', 'insert', 'insert']);
    assert.equal(r[0].id, 'batch-1');
    for (const x of r.filter((y) => !y.ok)) assert.equal(typeof x.error, 'string');
    assert.equal(r[5].error, 'unknown operation');

    assert.equal(await count('Todo'), n0 + 1 - 1);
    assert.equal((await call('GET', '/api/entities/Todo/batch-1')).json.title, 'from batch');
    assert.equal((await call('GET', `/api/entities/Todo/${victim}`)).json.title, 'batch updated');
    assert.equal((await call('GET', `/api/entities/Todo/${doomed}`)).status, 404);

    assertErrorEnvelope(await admin('POST', '/api/batch', {}), 400, 'MISSING_OPERATIONS');
    assertErrorEnvelope(await admin('POST', '/api/batch', { operations: {} }), 400, 'MISSING_OPERATIONS');
    assertErrorEnvelope(await admin('POST', '/api/batch', '{"operations":['), 400, 'INVALID_JSON');
  });

  it('batch of more than 1000 operations → 413, nothing written; 1000 is fine', async () => {
    const ops = (n, tag) => Array.from({ length: n }, (_, i) => ({ op: 'insert', entity: 'Todo', id: `${tag}-${i}`, data: todo() }));
    await unchanged('Todo', async () => {
      assertErrorEnvelope(await admin('POST', '/api/batch', { operations: ops(1001, 'big') }), 413, 'PAYLOAD_TOO_LARGE');
      assertErrorEnvelope(await admin('POST', '/api/transact', ops(1001, 'bigtx')), 413, 'PAYLOAD_TOO_LARGE');
    });
    const n0 = await count('Todo');
    const res = await admin('POST', '/api/batch', { operations: ops(1000, 'thousand') });
    assert.equal(res.status, 200, res.body.slice(0, 300));
    assert.equal(res.json.succeeded, 1000);
    assert.equal(await count('Todo'), n0 + 1000);
    // Leave the table small for the other tests.
    const del = await admin('POST', '/api/batch', { operations: Array.from({ length: 1000 }, (_, i) => ({ op: 'delete', entity: 'Todo', id: `thousand-${i}` })) });
    assert.equal(del.json.succeeded, 1000);
  });

  it('transact is atomic: one failing op → 400 committed:false and nothing persists', async () => {
    const keep = await insertTodo({ title: 'tx keep' });
    await unchanged('Todo', async () => {
      const res = await admin('POST', '/api/transact', [
        { op: 'insert', entity: 'Todo', id: 'tx-a', data: todo() },
        { op: 'update', entity: 'Todo', id: keep, data: { title: 'tx changed' } },
        { op: 'delete', entity: 'Todo', id: keep },
        { op: 'insert', entity: 'Todo', id: 'tx-b', data: { title: 'missing fields' } },
      ]);
      assert.equal(res.status, 400, res.body);
      assert.deepEqual(Object.keys(res.json).sort(), ['committed', 'results']);
      assert.equal(res.json.committed, false);
      assert.equal(res.json.results.length, 4);
      assert.deepEqual(res.json.results.map((x) => x.op), ['insert', 'update', 'delete', 'insert']);
      assert.equal(typeof res.json.results[3].error, 'string');
    });
    assert.equal((await call('GET', '/api/entities/Todo/tx-a')).status, 404);
    assert.equal((await call('GET', `/api/entities/Todo/${keep}`)).json.title, 'tx keep');

    // A malformed operation refuses the whole request before anything runs.
    await unchanged('Todo', async () => {
      const res = await admin('POST', '/api/transact', [
        { op: 'insert', entity: 'Todo', id: 'tx-c', data: todo() },
        { op: 'explode', entity: 'Todo' },
      ]);
      assert.equal(res.status, 400, res.body);
    });
    assert.equal((await call('GET', '/api/entities/Todo/tx-c')).status, 404);

    const ok = await admin('POST', '/api/transact', [
      { op: 'insert', entity: 'Todo', id: 'tx-d', data: todo({ title: 'tx d' }) },
      { op: 'update', entity: 'Todo', id: keep, data: { title: 'tx updated' } },
      { op: 'delete', entity: 'Todo', id: 'tx-d' },
      { op: 'insert', entity: 'Todo', id: 'tx-e', data: todo({ title: 'tx e' }) },
    ]);
    assert.equal(ok.status, 200, ok.body);
    assert.deepEqual(ok.json, {
      committed: true,
      results: [
        { op: 'insert', id: 'tx-d' },
        { op: 'update', id: keep },
        { op: 'delete', id: 'tx-d' },
        { op: 'insert', id: 'tx-e' },
      ],
    });
    assert.equal((await call('GET', `/api/entities/Todo/${keep}`)).json.title, 'tx updated');
    assert.equal((await call('GET', '/api/entities/Todo/tx-d')).status, 404);
    assert.equal((await call('GET', '/api/entities/Todo/tx-e')).json.title, 'tx e');

    assertErrorEnvelope(await admin('POST', '/api/transact', { operations: [] }), 400, 'INVALID_DATA');
  });

  it('export: {"exported_at","entities","counts"} for all entities and for one', async () => {
    const res = await admin('GET', '/api/export');
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(Object.keys(res.json).sort(), ['counts', 'entities', 'exported_at']);
    assert.match(res.json.exported_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    assert.ok(Math.abs(Date.parse(res.json.exported_at) - Date.now()) < 60000);
    assert.deepEqual(Object.keys(res.json.entities).sort(), ['Note', 'Project', 'Todo']);
    assert.deepEqual(Object.keys(res.json.counts).sort(), ['Note', 'Project', 'Todo']);
    for (const [e, rows] of Object.entries(res.json.entities)) {
      assert.ok(Array.isArray(rows));
      assert.equal(res.json.counts[e], rows.length);
    }
    const list = await call('GET', '/api/entities/Todo');
    assert.deepEqual(res.json.entities.Todo, list.json.data);

    const one = await admin('GET', '/api/export/Todo');
    assert.equal(one.status, 200);
    assert.deepEqual(Object.keys(one.json).sort(), ['counts', 'entities', 'exported_at']);
    assert.deepEqual(Object.keys(one.json.entities), ['Todo']);
    assert.deepEqual(one.json.counts, { Todo: res.json.counts.Todo });
    assertErrorEnvelope(await admin('GET', '/api/export/Nope'), 404, 'ENTITY_NOT_FOUND');
  });

  it('import keeps ids and reports counts per entity', async () => {
    const n0 = await count('Todo');
    const p0 = await count('Project');
    const res = await admin('POST', '/api/import', {
      entities: {
        Project: [{ id: 'imp-p1', name: 'Imported project' }],
        Todo: [
          { ...todo({ title: 'imported 1' }), id: 'imp-t1', projectId: 'imp-p1', __internal__: { x: 1 } },
          { ...todo({ title: 'imported 2' }), id: 'imp-t2' },
          { id: 'imp-t3', title: 'missing fields' },
        ],
      },
    });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.json.imported, 3);
    assert.equal(res.json.failed, 1);
    const by = Object.fromEntries(res.json.by_entity.map((b) => [b.entity, b]));
    assert.deepEqual(by.Project, { entity: 'Project', inserted: 1, failed: 0 });
    assert.deepEqual(by.Todo, { entity: 'Todo', inserted: 2, failed: 1 });
    assert.equal(await count('Todo'), n0 + 2);
    assert.equal(await count('Project'), p0 + 1);
    const t1 = (await call('GET', '/api/entities/Todo/imp-t1')).json;
    assert.equal(t1.title, 'imported 1');
    assert.equal(t1.projectId, 'imp-p1');
    assert.equal((await call('GET', '/api/entities/Project/imp-p1')).json.name, 'Imported project');
    assert.equal((await call('GET', '/api/entities/Todo/imp-t3')).status, 404);

    assertErrorEnvelope(await admin('POST', '/api/import', {}), 400, 'MISSING_FIELD');
    await unchanged('Todo', async () => {
      const r = await admin('POST', '/api/import', { entities: { Nope: [{}], Todo: [todo()] } });
      assert.equal(r.status, 400, r.body);
    });
  });
});

describe('concurrent writers share a group commit without sharing failures', { timeout: 20000 }, () => {
  it('failing inserts and a failing transact do not undo other clients\' writes', async () => {
    const n0 = await count('Todo');
    const jobs = [];
    for (let i = 0; i < 60; i++) jobs.push(call('POST', '/api/entities/Todo', todo({ id: `grp-${i}` })));
    for (let i = 0; i < 10; i++) jobs.push(call('POST', '/api/entities/Todo', todo({ id: `grp-${i}`, title: 'duplicate' })));
    for (let i = 0; i < 5; i++)
      jobs.push(admin('POST', '/api/transact', [
        { op: 'insert', entity: 'Todo', id: `grp-tx-${i}`, data: todo() },
        { op: 'insert', entity: 'Todo', data: { title: 'bad' } },
      ]));
    const res = await Promise.all(jobs);
    const ok = res.slice(0, 60).filter((r) => r.status === 201).length;
    const dup = res.slice(60, 70);
    // Each id was sent twice: exactly one of the two inserts wins, the other is a 409.
    let wins = ok;
    for (const r of dup) {
      if (r.status === 201) wins++;
      else assertErrorEnvelope(r, 409, 'UNIQUE_VIOLATION');
    }
    assert.equal(wins, 60, 'every grp id exists once');
    for (const r of res.slice(70)) assert.deepEqual([r.status, r.json.committed], [400, false]);
    assert.equal(await count('Todo'), n0 + 60);
    for (let i = 0; i < 5; i++) assert.equal((await call('GET', `/api/entities/Todo/grp-tx-${i}`)).status, 404);
    // Clean up.
    await admin('POST', '/api/batch', { operations: Array.from({ length: 60 }, (_, i) => ({ op: 'delete', entity: 'Todo', id: `grp-${i}` })) });
  });

  it('a unique violation on update → 409, the row keeps its value', async () => {
    await insertTodo({ slug: 'uniq-a' });
    const b = await insertTodo({ slug: 'uniq-b' });
    assertErrorEnvelope(await call('PATCH', `/api/entities/Todo/${b}`, { slug: 'uniq-a' }), 409, 'UNIQUE_VIOLATION');
    assert.equal((await call('GET', `/api/entities/Todo/${b}`)).json.slug, 'uniq-b');
  });
});

describe('read-your-writes while readers reuse snapshots', { timeout: 60000 }, () => {
  // Readers keep one SQLite snapshot for the requests of a run while the writer commits
  // nothing (actors/readers.c). One reader (PYLON_READ_POOL=1) kept busy by list queries has
  // long runs, so commits land between the reads of a run all the time: every read must
  // still see every write that was answered before it was sent.
  it('16 clients × 12 rounds of insert → get → patch → get → delete → get, beside list load', async () => {
    const main = srv;
    srv = await startPylon({ args: ['dev'], env: { PYLON_MANIFEST: MANIFEST, PYLON_ADMIN_TOKEN: ADMIN_TOKEN, PYLON_READ_POOL: '1' } });
    try {
      const rows = Array.from({ length: 400 }, () => ({ op: 'insert', entity: 'Todo', data: todo({ notes: 'x'.repeat(200) }) }));
      assert.equal((await admin('POST', '/api/batch', { operations: rows })).status, 200);
      let stop = false;
      const lister = async () => {
        while (!stop) assert.equal((await call('GET', '/api/entities/Todo?limit=400')).status, 200);
      };
      const client = async (c) => {
        for (let r = 0; r < 12; r++) {
          const title = `ryw ${c}/${r}`;
          const ins = await call('POST', '/api/entities/Todo', todo({ title }));
          assert.equal(ins.status, 201, ins.body);
          const id = ins.json.id;
          let got = await call('GET', `/api/entities/Todo/${id}`);
          assert.equal(got.status, 200, `insert of ${title} not visible: ${got.body}`);
          assert.equal(got.json.title, title);
          assert.equal((await call('PATCH', `/api/entities/Todo/${id}`, { priority: r + 1 })).status, 200);
          got = await call('GET', `/api/entities/Todo/${id}`);
          assert.equal(got.json.priority, r + 1, `patch of ${title} not visible`);
          assert.equal((await call('DELETE', `/api/entities/Todo/${id}`)).status, 200);
          got = await call('GET', `/api/entities/Todo/${id}`);
          assert.equal(got.status, 404, `delete of ${title} not visible`);
        }
      };
      const listers = Array.from({ length: 6 }, lister);
      try {
        await Promise.all(Array.from({ length: 16 }, (_, c) => client(c)));
      } finally {
        stop = true;
        await Promise.all(listers);
      }
    } finally {
      await srv.dispose();
      srv = main;
    }
  });
});

describe('POST /api/aggregate and the graph query POST /api/query', { timeout: 10000 }, () => {
  const OWNER = 'aggregate-owner';
  let project;
  before(async () => {
    const p = await call('POST', '/api/entities/Project', { name: 'Agg project' });
    assert.equal(p.status, 201, p.body);
    project = p.json.id;
    for (const [i, done] of [[1, false], [2, true], [3, false]])
      await insertTodo({ title: `agg ${i}`, done, priority: i, ownerId: OWNER, createdAt: `2024-0${i}-01T10:00:00Z`, projectId: project });
  });

  it('count, sum, avg, min, max, countDistinct over the rows a where selects', async () => {
    const r = await call('POST', '/api/aggregate/Todo', { count: '*', sum: ['priority'], avg: ['priority'], min: ['priority'], max: ['priority'], countDistinct: ['done'], where: { ownerId: OWNER } });
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(r.json, { rows: [{ count: 3, sum_priority: 6, avg_priority: 2, min_priority: 1, max_priority: 3, count_distinct_done: 2 }] });
  });

  it('groupBy a field (booleans as true/false) and by a date bucket', async () => {
    const byDone = await call('POST', '/api/aggregate/Todo', { count: '*', groupBy: ['done'], where: { ownerId: OWNER } });
    assert.equal(byDone.status, 200, byDone.body);
    assert.deepEqual(byDone.json.rows, [{ done: false, count: 2 }, { done: true, count: 1 }]);
    const byMonth = await call('POST', '/api/aggregate/Todo', { count: '*', groupBy: [{ field: 'createdAt', bucket: 'month' }], where: { ownerId: OWNER } });
    assert.deepEqual(byMonth.json.rows, [{ createdAt_month: '2024-01', count: 1 }, { createdAt_month: '2024-02', count: 1 }, { createdAt_month: '2024-03', count: 1 }]);
  });

  it('refusals: nothing asked (400), an unknown field (400), a row-dependent read policy (403), an unknown entity (404)', async () => {
    const none = await call('POST', '/api/aggregate/Todo', { where: { ownerId: OWNER } });
    assert.equal(none.status, 400);
    assert.equal(none.json.error.code, 'INVALID_QUERY');
    const bad = await call('POST', '/api/aggregate/Todo', { count: 'nope' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, 'INVALID_COLUMN');
    assert.match(bad.json.error.message, /"nope"/);
    const note = await call('POST', '/api/aggregate/Note', { count: '*' });
    assert.equal(note.status, 403, 'a total over rows the caller may not read would leak them');
    assert.equal(note.json.error.code, 'POLICY_DENIED');
    const asAdmin = await admin('POST', '/api/aggregate/Note', { count: '*' });
    assert.equal(asAdmin.status, 200, 'the admin bypasses policies');
    const unknown = await call('POST', '/api/aggregate/Nope', { count: '*' });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error.code, 'ENTITY_NOT_FOUND');
  });

  it('the graph query includes the related row and applies the limit; refuses a non-object body', async () => {
    const r = await call('POST', '/api/query', { Todo: { where: { ownerId: OWNER }, include: { project: {} }, limit: 2 } });
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(Object.keys(r.json), ['Todo']);
    assert.equal(r.json.Todo.length, 2);
    for (const row of r.json.Todo) {
      assert.equal(row.ownerId, OWNER);
      assert.deepEqual(row.project, { id: project, name: 'Agg project' });
    }
    const bad = await call('POST', '/api/query', [1]);
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, 'INVALID_QUERY');
    const unknown = await call('POST', '/api/query', { Nope: {} });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error.code, 'ENTITY_NOT_FOUND');
  });

  // many:true (backend.md §3.6 and README): when the source entity has the relation's field,
  // the target rows with the same value (the original's rule: Todo.sameProject); when only the
  // target has it, the target rows holding this row's id (Project.todos). Rows the caller may
  // not read are left out (Todo.ownerNotes: Note is owner-only).
  it('many:true relations: shared field, one-to-many by id, and row filtering by the target\'s read policy', async () => {
    const p2 = (await admin('POST', '/api/entities/Project', { name: 'Graph project' })).json.id;
    const owner = 'graph-owner';
    const t1 = await insertTodo({ ownerId: owner, projectId: p2, slug: 'g1' });
    const t2 = await insertTodo({ ownerId: owner, projectId: p2, slug: 'g2' });
    const t3 = await insertTodo({ ownerId: owner, slug: 'g3' }); // no project
    const ids = (rows) => rows.map((r) => r.id).sort();
    const pr = await admin('POST', '/api/query', { Project: { where: { name: 'Graph project' }, include: { todos: {} } } });
    assert.equal(pr.status, 200, pr.body);
    assert.deepEqual(ids(pr.json.Project[0].todos), [t1, t2].sort(), 'the project\'s todos');
    const tr = await admin('POST', '/api/query', { Todo: { where: { ownerId: owner }, include: { sameProject: {} } } });
    const byId = Object.fromEntries(tr.json.Todo.map((r) => [r.id, r]));
    assert.deepEqual(ids(byId[t1].sameProject), [t1, t2].sort(), 'the todos sharing its projectId');
    assert.deepEqual(ids(byId[t2].sameProject), [t1, t2].sort());
    assert.deepEqual(byId[t3].sameProject, [], 'no projectId: nothing shares it');

    const alice = (await call('POST', '/api/auth/session', { user_id: owner })).json.token;
    const bob = (await call('POST', '/api/auth/session', { user_id: 'graph-other' })).json.token;
    const notes = [];
    for (const [ownerId, body, tok] of [[owner, 'g0', alice], [owner, 'g1', alice], ['graph-other', 'not hers', bob]]) {
      const r = await call('POST', '/api/entities/Note', { ownerId, body }, tok);
      assert.equal(r.status, 201, r.body);
      notes.push(r.json.id);
    }
    const q = { Todo: { where: { slug: 'g1' }, include: { ownerNotes: {} } } };
    const asOwner = await call('POST', '/api/query', q, alice);
    assert.equal(asOwner.status, 200, asOwner.body);
    assert.deepEqual(asOwner.json.Todo[0].ownerNotes.map((n) => n.body).sort(), ['g0', 'g1']);
    const asOther = await call('POST', '/api/query', q, bob);
    assert.equal(asOther.status, 200, asOther.body);
    assert.deepEqual(asOther.json.Todo[0].ownerNotes, [], 'notes the caller may not read are left out');
    assert.equal((await admin('POST', '/api/query', q)).json.Todo[0].ownerNotes.length, 2, 'the admin sees them');
    for (const id of notes) assert.equal((await admin('DELETE', `/api/entities/Note/${id}`)).status, 200); // the policy tests count notes
  });
});

describe('links', { timeout: 10000 }, () => {
  it('/api/link sets the relation field, /api/unlink clears it', async () => {
    const p = await call('POST', '/api/entities/Project', { name: 'Linked' });
    assert.equal(p.status, 201);
    const t = await insertTodo();
    const link = await call('POST', '/api/link', { entity: 'Todo', id: t, relation: 'project', target_id: p.json.id });
    assert.equal(link.status, 200, link.body);
    assert.equal((await call('GET', `/api/entities/Todo/${t}`)).json.projectId, p.json.id, 'linked');
    const unlink = await call('POST', '/api/unlink', { entity: 'Todo', id: t, relation: 'project' });
    assert.equal(unlink.status, 200, unlink.body);
    assert.equal((await call('GET', `/api/entities/Todo/${t}`)).json.projectId, null, 'unlinked');
    // Wire shapes (spec/backend.md §3.10).
    assert.deepEqual(link.json, { linked: true });
    assert.deepEqual(unlink.json, { unlinked: true });
  });

  it('unknown relation → 400 RELATION_NOT_FOUND; missing row → 404 NOT_FOUND', async () => {
    const t = await insertTodo();
    assertErrorEnvelope(await call('POST', '/api/link', { entity: 'Todo', id: t, relation: 'owner', target_id: 'x' }), 400, 'RELATION_NOT_FOUND');
    assertErrorEnvelope(await call('POST', '/api/link', { entity: 'Todo', id: 'no-such-row', relation: 'project', target_id: 'x' }), 404, 'NOT_FOUND');
    assertErrorEnvelope(await call('POST', '/api/unlink', { entity: 'Todo', id: 'no-such-row', relation: 'project' }), 404, 'NOT_FOUND');
    assertErrorEnvelope(await call('POST', '/api/link', { entity: 'Nope', id: t, relation: 'project', target_id: 'x' }), 404, 'ENTITY_NOT_FOUND');
    assertErrorEnvelope(await call('POST', '/api/link', '{'), 400, 'INVALID_JSON');
    assert.equal((await call('GET', `/api/entities/Todo/${t}`)).json.projectId, null);
  });
});

describe('policies (Note: owner-only)', { timeout: 20000 }, () => {
  let alice;
  let bob;
  const note = (ownerId, extra = {}) => ({ ownerId, body: `note-of-${ownerId}`, ...extra });

  before(async () => {
    alice = (await call('POST', '/api/auth/session', { user_id: 'alice' })).json.token;
    bob = (await call('POST', '/api/auth/session', { user_id: 'bob' })).json.token;
    assert.match(alice, /^pylon_/);
  });

  it('anonymous insert → 403 POLICY_DENIED; a user cannot insert for someone else', async () => {
    await unchanged('Note', async () => {
      const e = assertErrorEnvelope(await call('POST', '/api/entities/Note', note('alice')), 403, 'POLICY_DENIED');
      assert.equal(e.message, 'Access denied by policy');
      assertErrorEnvelope(await call('POST', '/api/entities/Note', note('bob'), alice), 403, 'POLICY_DENIED');
      assertErrorEnvelope(await call('POST', '/api/entities/Note', note('alice'), 'pylon_unknown_token'), 403, 'POLICY_DENIED');
    });
  });

  it('reads are filtered row by row; updates and deletes need the owner; admin bypasses', async () => {
    const a1 = await call('POST', '/api/entities/Note', note('alice', { id: 'alice-1', pinned: true }), alice);
    assert.equal(a1.status, 201, a1.body);
    assert.equal((await call('POST', '/api/entities/Note', note('alice', { id: 'alice-2' }), alice)).status, 201);
    assert.equal((await call('POST', '/api/entities/Note', note('bob', { id: 'bob-1' }), bob)).status, 201);

    const ids = (res) => {
      assert.equal(res.status, 200, res.body);
      const rows = Array.isArray(res.json) ? res.json : res.json.data;
      return rows.map((r) => r.id).sort();
    };
    // list, cursor, query: each caller sees only its own rows.
    assert.deepEqual(ids(await call('GET', '/api/entities/Note', undefined, bob)), ['bob-1']);
    assert.deepEqual(ids(await call('GET', '/api/entities/Note', undefined, alice)), ['alice-1', 'alice-2']);
    const anon = await call('GET', '/api/entities/Note');
    assert.deepEqual(anon.json, { data: [], count: 0, offset: 0, limit: null });
    const bl = await call('GET', '/api/entities/Note', undefined, bob);
    assert.equal(bl.json.count, 1);
    assert.deepEqual(ids(await call('GET', '/api/entities/Note/cursor?limit=100', undefined, bob)), ['bob-1']);
    assert.deepEqual(ids(await call('POST', '/api/query/Note', {}, bob)), ['bob-1']);
    assert.deepEqual(ids(await call('POST', '/api/query/Note', { ownerId: 'alice' }, bob)), []);
    assert.deepEqual(ids(await call('POST', '/api/query/Note', { ownerId: 'alice' }, alice)), ['alice-1', 'alice-2']);

    // get / lookup of someone else's row.
    assertErrorEnvelope(await call('GET', '/api/entities/Note/alice-1', undefined, bob), 403, 'POLICY_DENIED');
    assertErrorEnvelope(await call('GET', '/api/entities/Note/alice-1'), 403, 'POLICY_DENIED');
    assertErrorEnvelope(await call('GET', '/api/lookup/Note/body/note-of-alice', undefined, bob), 403, 'POLICY_DENIED');
    const own = await call('GET', '/api/entities/Note/alice-1', undefined, alice);
    assert.deepEqual(own.json, { id: 'alice-1', ownerId: 'alice', body: 'note-of-alice', pinned: true });

    // bob cannot change or delete alice's note.
    assertErrorEnvelope(await call('PATCH', '/api/entities/Note/alice-1', { body: 'hacked' }, bob), 403, 'POLICY_DENIED');
    assertErrorEnvelope(await call('PATCH', '/api/entities/Note/alice-1', { body: 'hacked' }), 403, 'POLICY_DENIED');
    assertErrorEnvelope(await call('DELETE', '/api/entities/Note/alice-1', undefined, bob), 403, 'POLICY_DENIED');
    assertErrorEnvelope(await call('DELETE', '/api/entities/Note/alice-1'), 403, 'POLICY_DENIED');
    assert.deepEqual((await call('GET', '/api/entities/Note/alice-1', undefined, alice)).json, own.json, 'untouched');

    // alice can.
    const upd = await call('PATCH', '/api/entities/Note/alice-1', { body: 'edited', pinned: false }, alice);
    assert.deepEqual([upd.status, upd.json], [200, { updated: true }]);
    assert.equal((await call('GET', '/api/entities/Note/alice-1', undefined, alice)).json.body, 'edited');
    const del = await call('DELETE', '/api/entities/Note/alice-2', undefined, alice);
    assert.deepEqual([del.status, del.json], [200, { deleted: true }]);
    assert.equal((await call('GET', '/api/entities/Note/alice-2', undefined, alice)).status, 404);

    // admin sees and changes everything, and inserts for anyone.
    assert.deepEqual(ids(await admin('GET', '/api/entities/Note')), ['alice-1', 'bob-1']);
    assert.equal((await admin('GET', '/api/entities/Note/bob-1')).status, 200);
    assert.equal((await admin('PATCH', '/api/entities/Note/bob-1', { body: 'by admin' })).status, 200);
    assert.equal((await call('GET', '/api/entities/Note/bob-1', undefined, bob)).json.body, 'by admin');
    assert.equal((await admin('POST', '/api/entities/Note', note('carol', { id: 'carol-1' }))).status, 201);
    assert.equal((await admin('DELETE', '/api/entities/Note/carol-1')).status, 200);
    assert.deepEqual(ids(await admin('POST', '/api/query/Note', {})), ['alice-1', 'bob-1']);
  });

  it('$limit / ?limit count visible rows: a page is not emptied by rows the caller cannot read', async () => {
    // alice-1 sorts before bob-1. Filtering after LIMIT would hand bob an empty first page.
    const q = await call('POST', '/api/query/Note', { $limit: 1 }, bob);
    assert.equal(q.status, 200, q.body);
    assert.deepEqual(q.json.map((r) => r.id), ['bob-1'], `bob's first query row: ${q.body}`);
    const l = await call('GET', '/api/entities/Note?limit=1', undefined, bob);
    assert.deepEqual(l.json.data.map((r) => r.id), ['bob-1'], `bob's first list page: ${l.body}`);
  });
});

describe('group commit under concurrency, test reset', { timeout: 30000 }, () => {
  const head = async () => {
    const res = await admin('GET', '/api/sync/pull?since=0&limit=0');
    assert.equal(res.status, 200, res.body);
    return res.json.cursor.last_seq;
  };

  it('concurrent inserts, some violating a unique index: every 201 is stored once, every 409 left nothing, one event per row', async () => {
    // 120 inserts at once share group-commit transactions; 40 of them reuse 20 slugs. The
    // writer runs a group without per-op savepoints and, when an op fails, rolls the group back
    // and runs it again op by op: the failures must not take their neighbours with them.
    const tag = `grp${Date.now()}`;
    const before = await count('Todo');
    const head0 = await head();
    const bodies = [];
    for (let i = 0; i < 80; i++) bodies.push(todo({ slug: `${tag}-solo-${i}` }));
    for (let i = 0; i < 40; i++) bodies.push(todo({ slug: `${tag}-dup-${i % 20}` }));
    const res = await Promise.all(bodies.map((b) => call('POST', '/api/entities/Todo', b)));
    const created = res.filter((r) => r.status === 201);
    const conflicts = res.filter((r) => r.status === 409);
    assert.equal(created.length + conflicts.length, 120, res.filter((r) => r.status !== 201 && r.status !== 409).map((r) => r.body).join('\n'));
    assert.equal(created.length, 100, 'each of the 80 solo slugs and the 20 dup slugs stored once');
    for (const r of conflicts) assertErrorEnvelope(r, 409, 'UNIQUE_VIOLATION');
    assert.equal(await count('Todo'), before + 100);
    const ids = new Set(created.map((r) => r.json.id));
    assert.equal(ids.size, 100, 'distinct ids');
    for (const id of [...ids].slice(0, 10)) assert.equal((await admin('GET', `/api/entities/Todo/${id}`)).status, 200);
    // The change log got exactly one insert per stored row, numbered without gaps.
    const pull = await admin('GET', `/api/sync/pull?since=${head0}&limit=500`);
    assert.equal(pull.status, 200, pull.body);
    const evs = pull.json.changes;
    assert.equal(evs.length, 100, `one event per stored row: ${evs.length}`);
    assert.deepEqual(new Set(evs.map((e) => e.row_id)), ids);
    evs.forEach((e, i) => assert.equal(e.seq, head0 + 1 + i, 'seqs follow each other'));
    assert.equal(await head(), head0 + 100);
  });

  it('POST /api/__test__/reset: 403 on a file database; on :memory: it empties the data and seqs keep rising', async () => {
    assertErrorEnvelope(await call('POST', '/api/__test__/reset'), 403, 'RESET_REFUSED');
    const mem = await startPylon({ args: ['dev'], env: { PYLON_MANIFEST: MANIFEST, PYLON_ADMIN_TOKEN: ADMIN_TOKEN, PYLON_DB_PATH: ':memory:' } });
    try {
      const post = (p, body) => request(mem.port, { method: 'POST', path: p, headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${ADMIN_TOKEN}` }, body: JSON.stringify(body) });
      const pullHead = async () => (await request(mem.port, { method: 'GET', path: '/api/sync/pull?since=0&limit=0', headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } })).json.cursor.last_seq;
      for (let i = 0; i < 3; i++) assert.equal((await post('/api/entities/Todo', todo())).status, 201);
      const h = await pullHead();
      assert.equal(h, 3);
      const r = await post('/api/__test__/reset', {});
      assert.deepEqual([r.status, r.json], [200, { reset: true }], r.body);
      const list = await request(mem.port, { method: 'GET', path: '/api/entities/Todo', headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.deepEqual(list.json.data, [], 'no rows after the reset');
      assert.equal((await post('/api/entities/Todo', todo())).status, 201);
      const pull = await request(mem.port, { method: 'GET', path: '/api/sync/pull?since=0', headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.deepEqual(pull.json.changes.map((e) => e.seq), [h + 1], `a seq is never handed out twice: ${pull.body}`);
      // the same from the in-memory tail (emptied by the reset too)
      const near = await request(mem.port, { method: 'GET', path: `/api/sync/pull?since=${h}`, headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.deepEqual(near.json.changes.map((e) => e.seq), [h + 1], near.body);
    } finally {
      await mem.stop();
    }
    // serve mode never offers it, even on :memory: (DECISIONS.md §1: dev + in-memory + loopback)
    const served = await startPylon({ args: ['serve'], env: { ...SERVE_ENV, PYLON_MANIFEST: MANIFEST, PYLON_DB_PATH: ':memory:' } });
    try {
      const r = await request(served.port, { method: 'POST', path: '/api/__test__/reset', headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
      const e = assertErrorEnvelope(r, 403, 'RESET_REFUSED');
      assert.match(e.message, /dev mode \+ in-memory DB/);
    } finally {
      await served.stop();
    }
  });
});

// The writer's queue is bounded (PYLON_WRITE_QUEUE_MAX): past it a write is refused at once
// with 503 OVERLOADED and Retry-After, never queued without bound, and nothing of it is written.
describe('a full write queue: 503 OVERLOADED (PYLON_WRITE_QUEUE_MAX=1)', { timeout: 30000 }, () => {
  let main;
  before(async () => {
    main = srv;
    srv = await startPylon({ args: ['dev'], env: { PYLON_MANIFEST: MANIFEST, PYLON_ADMIN_TOKEN: ADMIN_TOKEN, PYLON_WRITE_QUEUE_MAX: 1 } });
  });
  after(async () => {
    await srv?.dispose();
    srv = main; // the file's server, disposed by the top-level after()
  });

  it('a burst of 300 concurrent inserts: some refused with 503 + Retry-After, each accepted one stored, no refused one', async () => {
    const results = await Promise.all(Array.from({ length: 300 }, (_, i) => call('POST', '/api/entities/Todo', todo({ title: `burst ${i}` }))));
    const ok = results.filter((r) => r.status === 201);
    const refused = results.filter((r) => r.status === 503);
    assert.equal(ok.length + refused.length, 300, `only 201 and 503: ${[...new Set(results.map((r) => r.status))]}`);
    assert.ok(refused.length > 0, 'with one queue slot, a burst of 300 overflows it');
    assert.ok(ok.length > 0, 'and the writer keeps committing');
    for (const r of refused) {
      const e = assertErrorEnvelope(r, 503, 'OVERLOADED');
      assert.match(e.message, /Too many writes are queued/);
      assert.equal(r.headers['retry-after'], '1');
    }
    const stored = (await admin('GET', '/api/export/Todo')).json.entities.Todo.map((t) => t.title).filter((t) => t.startsWith('burst '));
    const acked = results.map((r, i) => (r.status === 201 ? `burst ${i}` : null)).filter(Boolean);
    assert.deepEqual(stored.sort(), acked.sort(), 'exactly the acknowledged inserts are stored');
    // once the burst is over, writes go through again
    assert.equal((await call('POST', '/api/entities/Todo', todo({ title: 'after' }))).status, 201);
  });
});
