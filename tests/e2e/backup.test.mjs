// backup.test.mjs — `pylon backup` while the server writes, then `pylon restore` into a new
// place: the restored database opens, and it holds a consistent prefix of the writes (rows
// 1..k with no gap), never a torn or half-written state.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';

import { request } from './lib/http.mjs';
import { PYLON_BIN, childEnv, startPylon } from './lib/server.mjs';

const MANIFEST = {
  manifest_version: 1,
  name: 'backup-test',
  version: '1.0.0',
  entities: [
    {
      name: 'Entry',
      fields: [
        { name: 'n', type: 'int', optional: false, unique: true },
        { name: 'text', type: 'string', optional: false, unique: false },
      ],
      indexes: [],
    },
    { name: 'Filler', fields: [{ name: 'blob', type: 'string', optional: false, unique: false }], indexes: [] },
  ],
  routes: [],
};

function run(args, { cwd, env, input }) {
  return new Promise((resolve, reject) => {
    const child = spawn(PYLON_BIN, args, { cwd, env: childEnv(env), stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    if (input !== undefined) child.stdin.end(input);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('backup while writing, restore elsewhere', { timeout: 60000 }, () => {
  it('the restored database holds a consistent prefix of the writes', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pylon-backup-'));
    const manifest = path.join(root, 'manifest.json');
    fs.writeFileSync(manifest, JSON.stringify(MANIFEST));
    const live = {
      PYLON_MANIFEST: manifest,
      PYLON_DB_PATH: path.join(root, 'live', 'pylon.db'),
      PYLON_SESSION_DB: path.join(root, 'live', 'sessions.db'),
      PYLON_FILES_DIR: path.join(root, 'live', 'uploads'),
    };
    fs.mkdirSync(path.join(root, 'live', 'uploads', 'a'), { recursive: true });
    fs.writeFileSync(path.join(root, 'live', 'uploads', 'a', 'file.txt'), 'hello');
    const srv = await startPylon({ args: ['dev'], env: live });
    const minted = await request(srv.port, { method: 'POST', path: '/api/auth/session', body: JSON.stringify({ user_id: 'kept-user' }) });
    assert.equal(minted.status, 201, minted.body);
    let acked = 0;
    let stop = false;
    try {
      // A database of several MB: a backup copied in small steps restarts at every commit and
      // never finished under a steady writer once the file was larger than one step (1 MB).
      let filled = 0;
      const fill = (until) => Promise.all(Array.from({ length: 4 }, async () => {
        while (filled < until() && !stop) {
          filled++;
          const res = await request(srv.port, { method: 'POST', path: '/api/entities/Filler', body: JSON.stringify({ blob: 'f'.repeat(10000) }) });
          assert.equal(res.status, 201, res.body);
        }
      }));
      await fill(() => 800);
      const size = (f) => fs.statSync(f, { throwIfNoEntry: false })?.size ?? 0;
      assert.ok(size(live.PYLON_DB_PATH) + size(`${live.PYLON_DB_PATH}-wal`) > 8e6, 'a database of several MB');
      const filling = fill(() => Infinity); // and more writers during the backup
      // One writer, strictly in order: row n exists only if rows 1..n-1 were committed first.
      const writer = (async () => {
        for (let n = 1; !stop && n < 100000; n++) {
          const res = await request(srv.port, {
            method: 'POST',
            path: '/api/entities/Entry',
            body: JSON.stringify({ n, text: `entry ${n}`.padEnd(200, '.') }),
          });
          assert.equal(res.status, 201, res.body);
          acked = n;
        }
      })();
      await new Promise((r) => setTimeout(r, 400));
      const bundle = path.join(root, 'bundle');
      const started = Date.now();
      const b = await run(['backup', bundle], { cwd: root, env: live });
      assert.equal(b.code, 0, `backup exit ${b.code} after ${Date.now() - started} ms: ${b.stderr}`);
      const duringBackup = acked;
      await new Promise((r) => setTimeout(r, 300));
      stop = true;
      await writer;
      await filling;
      assert.ok(acked > duringBackup, 'writes went on during and after the backup');
      assert.ok(fs.existsSync(path.join(bundle, 'VERSION')));
      assert.ok(fs.existsSync(path.join(bundle, 'pylon.db')));
      assert.ok(!fs.existsSync(path.join(bundle, 'pylon.db-wal')), 'the bundle stands alone');
      assert.equal(fs.readFileSync(path.join(bundle, 'uploads', 'a', 'file.txt'), 'utf8'), 'hello');

      // Restore into a fresh place and serve it.
      const dest = {
        PYLON_MANIFEST: path.join(root, 'restored', 'manifest.json'),
        PYLON_DB_PATH: path.join(root, 'restored', 'db', 'pylon.db'),
        PYLON_SESSION_DB: path.join(root, 'restored', 'db', 'sessions.db'),
        PYLON_FILES_DIR: path.join(root, 'restored', 'uploads'),
      };
      fs.mkdirSync(path.join(root, 'restored'), { recursive: true });
      const r = await run(['restore', bundle, '--yes'], { cwd: root, env: dest });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(fs.readFileSync(path.join(dest.PYLON_FILES_DIR, 'a', 'file.txt'), 'utf8'), 'hello');
      const back = await startPylon({ args: ['dev'], env: dest });
      try {
        const res = await request(back.port, {
          method: 'POST',
          path: '/api/query/Entry',
          body: JSON.stringify({ $order: { n: 'asc' } }),
        });
        assert.equal(res.status, 200, res.body);
        const ns = res.json.map((row) => row.n);
        assert.ok(ns.length >= 1, 'the backup holds the rows written before it');
        assert.ok(ns.length <= acked, `${ns.length} rows restored, only ${acked} acknowledged`);
        ns.forEach((n, i) => assert.equal(n, i + 1, `row ${i + 1} of the prefix is n=${n}`));
        for (const row of res.json) assert.equal(row.text, `entry ${row.n}`.padEnd(200, '.'));
        const me = await request(back.port, { path: '/api/auth/me', headers: { authorization: `Bearer ${minted.json.token}` } });
        assert.equal(me.json.user_id, 'kept-user', 'the session database came back too');
      } finally {
        await back.dispose();
      }
    } finally {
      stop = true;
      await srv.dispose();
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('restore refuses a directory that is not a backup, and asks before overwriting', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pylon-backup-'));
    try {
      const r = await run(['restore', root, '--yes'], { cwd: root, env: {} });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /not a backup/);
      const u = await run(['backup'], { cwd: root, env: {} });
      assert.equal(u.code, 64, 'a missing directory is a usage error');

      // Without --yes it asks; anything but y/yes cancels and changes nothing.
      const env = { PYLON_MANIFEST: path.join(root, 'manifest.json'), PYLON_DB_PATH: path.join(root, 'live.db'), PYLON_SESSION_DB: path.join(root, 'sessions.db'), PYLON_FILES_DIR: path.join(root, 'up') };
      fs.writeFileSync(env.PYLON_MANIFEST, JSON.stringify(MANIFEST));
      const srv = await startPylon({ args: ['dev'], env });
      const res = await request(srv.port, { method: 'POST', path: '/api/entities/Entry', body: JSON.stringify({ n: 1, text: 'in the backup' }) });
      assert.equal(res.status, 201, res.body);
      const bundle = path.join(root, 'b');
      assert.equal((await run(['backup', bundle], { cwd: root, env })).code, 0);
      await request(srv.port, { method: 'POST', path: '/api/entities/Entry', body: JSON.stringify({ n: 2, text: 'after the backup' }) });
      await srv.dispose(); // stopped, as the prompt asks
      const rows = async () => {
        const s2 = await startPylon({ args: ['dev'], env });
        try {
          return (await request(s2.port, { method: 'POST', path: '/api/query/Entry', body: JSON.stringify({ $order: { n: 'asc' } }) })).json.map((r) => r.n);
        } finally {
          await s2.dispose();
        }
      };
      for (const answer of ['n\n', '\n', 'maybe\n', '']) {
        const no = await run(['restore', bundle], { cwd: root, env, input: answer });
        assert.equal(no.code, 0, no.stderr);
        assert.match(no.stderr, /Continue\? \[y\/N\]/);
        assert.match(no.stderr, /restore cancelled/);
      }
      assert.deepEqual(await rows(), [1, 2], 'a cancelled restore changes nothing');
      const yes = await run(['restore', bundle], { cwd: root, env, input: 'y\n' });
      assert.equal(yes.code, 0, yes.stderr);
      assert.doesNotMatch(yes.stderr, /cancelled/);
      assert.deepEqual(await rows(), [1], 'back to the backup');
      assert.ok(!fs.existsSync(`${env.PYLON_DB_PATH}.restoring`), 'no copy left beside it');
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
