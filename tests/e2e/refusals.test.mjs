// refusals.test.mjs — the command line and the startup refusal rules (DECISIONS.md §1):
// every refusal is exit 1 with exactly one stderr line naming the variable and the fix, and
// happens before the server touches the disk or a port.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';

import { ADMIN_TOKEN, SERVE_ENV, freePortBlock, runPylon } from './lib/server.mjs';

const EX_USAGE = 64;
const EX_UNAVAILABLE = 69;

/** Runs a command expected to refuse; asserts exit 1, one stderr line, nothing on disk. */
async function expectRefusal(args, env, ...mustContain) {
  // A port of our own: if the refusal did not happen the server must not collide with anyone.
  const port = await freePortBlock();
  const r = await runPylon(args, { env: { PYLON_PORT: port, ...env } });
  assert.equal(r.timedOut, false, `pylon ${args.join(' ')} started instead of refusing; stderr:\n${r.stderr}`);
  assert.equal(r.code, 1, `exit code; stderr:\n${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l.length > 0);
  assert.equal(lines.length, 1, `exactly one stderr line expected, got:\n${r.stderr}`);
  for (const s of mustContain) assert.ok(lines[0].includes(s), `stderr line should contain ${JSON.stringify(s)}: ${lines[0]}`);
  assert.equal(r.stdout, '', 'nothing on stdout');
  assert.deepEqual(r.files, [], 'a refusal must not create files');
  return lines[0];
}

/** A valid serve environment with `overrides` applied (the one thing under test). */
function env(overrides) {
  return { ...SERVE_ENV, ...overrides };
}

describe('refusal rules outside dev mode', { timeout: 30000 }, () => {
  it('serve with PYLON_CORS_ORIGIN unset', async () => {
    const line = await expectRefusal(['serve'], { PYLON_ADMIN_TOKEN: ADMIN_TOKEN }, 'PYLON_CORS_ORIGIN');
    assert.match(line, /PYLON_CORS_ORIGIN=https?:\/\//, 'the fix (an example origin) is named');
  });

  it('serve with PYLON_CORS_ORIGIN=*', async () => {
    await expectRefusal(['serve'], env({ PYLON_CORS_ORIGIN: '*' }), 'PYLON_CORS_ORIGIN', '*');
  });

  it('start (alias of serve) with PYLON_CORS_ORIGIN=*', async () => {
    await expectRefusal(['start'], env({ PYLON_CORS_ORIGIN: '*' }), 'PYLON_CORS_ORIGIN');
  });

  it('serve with PYLON_ADMIN_TOKEN unset', async () => {
    const line = await expectRefusal(['serve'], { PYLON_CORS_ORIGIN: 'https://app.example' }, 'PYLON_ADMIN_TOKEN');
    assert.match(line, /openssl rand -hex 32/, 'the fix is named');
  });

  it('serve with a 10-byte admin token', async () => {
    const line = await expectRefusal(['serve'], env({ PYLON_ADMIN_TOKEN: '0123456789' }), 'PYLON_ADMIN_TOKEN');
    assert.match(line, /short|32/, line);
  });

  it('serve with a 31-byte admin token (the minimum is 32)', async () => {
    await expectRefusal(['serve'], env({ PYLON_ADMIN_TOKEN: 'x'.repeat(31) }), 'PYLON_ADMIN_TOKEN');
  });

  it('PYLON_DEV_MODE=true with serve and no admin token', async () => {
    await expectRefusal(['serve'], { PYLON_DEV_MODE: 'true' }, 'PYLON_ADMIN_TOKEN');
  });
});

describe('bad values name the variable and the expected form', { timeout: 30000 }, () => {
  it('PYLON_PORT=abc', async () => {
    await expectRefusal(['serve'], env({ PYLON_PORT: 'abc' }), 'PYLON_PORT', '"abc"', 'expected a whole number');
  });

  it('PYLON_WORKERS=0x', async () => {
    await expectRefusal(['serve'], env({ PYLON_WORKERS: '0x' }), 'PYLON_WORKERS', '"0x"', 'expected a whole number');
  });

  it('PYLON_SQLITE_MMAP_MB=lots', async () => {
    await expectRefusal(['serve'], env({ PYLON_SQLITE_MMAP_MB: 'lots' }), 'PYLON_SQLITE_MMAP_MB', '"lots"', 'expected a whole number');
  });

  it('PYLON_WS_MAX_FRAME=12Q', async () => {
    await expectRefusal(['serve'], env({ PYLON_WS_MAX_FRAME: '12Q' }), 'PYLON_WS_MAX_FRAME', '"12Q"', 'expected a size in bytes');
  });

  it('PYLON_LOG_FORMAT=xml', async () => {
    await expectRefusal(['serve'], env({ PYLON_LOG_FORMAT: 'xml' }), 'PYLON_LOG_FORMAT', '"xml"', 'text', 'json');
  });

  it('the deployment page\'s other variables are checked too', async () => {
    await expectRefusal(['serve'], env({ PYLON_EMAIL_PROVIDER: 'smtp' }), 'PYLON_EMAIL_PROVIDER', '"smtp"', 'webhook');
    await expectRefusal(['serve'], env({ PYLON_EMAIL_PROVIDER: 'webhook' }), 'PYLON_EMAIL_HTTP_URL');
    await expectRefusal(['serve'], env({ PYLON_EMAIL_PROVIDER: 'sendgrid' }), 'PYLON_EMAIL_API_KEY');
    await expectRefusal(['serve'], env({ PYLON_FILES_PROVIDER: 'stack0' }), 'PYLON_STACK0_API_KEY');
    await expectRefusal(['serve'], env({ PYLON_FILES_PROVIDER: 's3' }), 'PYLON_FILES_PROVIDER', '"s3"', 'local', 'stack0');
    await expectRefusal(['serve'], env({ PYLON_COOKIE_SAMESITE: 'loose' }), 'PYLON_COOKIE_SAMESITE', '"loose"', 'strict');
    await expectRefusal(['serve'], env({ PYLON_COOKIE_SECURE: 'maybe' }), 'PYLON_COOKIE_SECURE', '"maybe"');
    await expectRefusal(['serve'], env({ PYLON_WS_URL: 'http://example.com' }), 'PYLON_WS_URL', 'wss://');
    await expectRefusal(['serve'], env({ PYLON_ROOM_IDLE_SECS: '0' }), 'PYLON_ROOM_IDLE_SECS');
    await expectRefusal(['serve'], env({ PYLON_ROOM_IDLE_SECS: 'soon' }), 'PYLON_ROOM_IDLE_SECS', 'expected a whole number');
    await expectRefusal(['serve'], env({ PYLON_WRITE_QUEUE_MAX: '0' }), 'PYLON_WRITE_QUEUE_MAX');
    await expectRefusal(['serve'], env({ PYLON_WRITE_QUEUE_MAX: 'lots' }), 'PYLON_WRITE_QUEUE_MAX', 'expected a whole number');
  });

  it('an invalid manifest stops the start with the exact place and cause', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pylon-manifest-'));
    try {
      const file = path.join(dir, 'bad.json');
      fs.writeFileSync(file, JSON.stringify({
        manifest_version: 1, name: 'x', version: '1', routes: [],
        entities: [{ name: 'Todo', indexes: [], fields: [{ name: 'title', type: 'strng', optional: false, unique: false }] }],
      }));
      const port = await freePortBlock();
      const r = await runPylon(['serve'], { env: { ...SERVE_ENV, PYLON_PORT: port, PYLON_MANIFEST: file } });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /entities\[0\]\.fields\[0\]\.type: unknown type "strng"/);
      // A policy expression that does not parse would deny everything at run time (any parse
      // error denies); it is caught at start instead, with where and why.
      const badPolicy = path.join(dir, 'bad-policy.json');
      fs.writeFileSync(badPolicy, JSON.stringify({
        manifest_version: 1, name: 'x', version: '1', routes: [],
        entities: [{ name: 'Note', indexes: [], fields: [{ name: 'ownerId', type: 'string', optional: false, unique: false }] }],
        policies: [{ name: 'owner', entity: 'Note', allowRead: 'auth.userId == data.ownerId &&', allowInsert: 'true' }],
      }));
      const p = await runPylon(['serve'], { env: { ...SERVE_ENV, PYLON_PORT: port, PYLON_MANIFEST: badPolicy } });
      assert.equal(p.code, 1, p.stderr);
      assert.match(p.stderr, /polic/i);
      assert.match(p.stderr, /allowRead/);
      assert.equal(p.stderr.trim().split('\n').length, 1, p.stderr);
      const missing = await runPylon(['serve'], { env: { ...SERVE_ENV, PYLON_PORT: port, PYLON_MANIFEST: path.join(dir, 'nope.json') } });
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /PYLON_MANIFEST/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('bad values are refused by `pylon dev` too', async () => {
    await expectRefusal(['dev'], { PYLON_PORT: '70000' }, 'PYLON_PORT', 'expected a whole number');
  });

  it('--port abc on the command line', async () => {
    await expectRefusal(['dev', '--port', 'abc'], {}, '--port', 'expected a whole number');
  });
});

describe('commands', { timeout: 30000 }, () => {
  for (const args of [['login'], ['deploy', '--target', 'cloud']]) {
    it(`pylon ${args.join(' ')} exits 69 (not available in a self-hosted build)`, async () => {
      const r = await runPylon(args);
      assert.equal(r.code, EX_UNAVAILABLE, r.stderr);
      assert.match(r.stderr, /not available in a self-hosted build/);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    });
  }

  it('pylon version exits 0 and prints the version', async () => {
    const r = await runPylon(['version']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^pylon \d+\.\d+\.\d+\S*\n$/);
    assert.equal(r.stderr, '');
  });

  it('pylon help exits 0 and lists the commands', async () => {
    const r = await runPylon(['help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Usage: pylon/);
    for (const cmd of ['serve', 'dev', 'version', 'help']) assert.match(r.stdout, new RegExp(`\\b${cmd}\\b`));
  });

  it('an unknown command exits 64', async () => {
    const r = await runPylon(['frobnicate']);
    assert.equal(r.code, EX_USAGE, r.stderr);
    assert.match(r.stderr, /unknown command 'frobnicate'/);
  });

  it('an unknown option to serve exits 64', async () => {
    const r = await runPylon(['serve', '--bogus'], { env: SERVE_ENV });
    assert.equal(r.code, EX_USAGE, r.stderr);
    assert.match(r.stderr, /--bogus/);
  });
});
