// server.mjs — start the real `pylon` binary for a test, wait until it answers, stop it.
//
// Every server gets a fresh temporary directory as its working directory (so `pylon dev`'s
// .pylon/ and `pylon serve`'s pylon.db land there), an environment with no PYLON_* variable
// from the caller's shell except the ones the test passes, and a random block of four free
// ports (the server needs port..port+3). Children are SIGKILLed when the test process exits,
// whatever happened, so no server outlives its test file.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '..', '..', '..');

/** Path of the binary under test: $PYLON_BIN, else build/tools/pylon in the repository. */
export const PYLON_BIN = process.env.PYLON_BIN
  ? path.resolve(process.env.PYLON_BIN)
  : path.join(REPO_ROOT, 'build', 'tools', 'pylon');

/** A 64-hex admin token for serve mode. */
export const ADMIN_TOKEN = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90';

/** The environment of a valid production (`pylon serve`) configuration. */
export const SERVE_ENV = Object.freeze({
  PYLON_CORS_ORIGIN: 'https://app.example',
  PYLON_ADMIN_TOKEN: ADMIN_TOKEN,
});

const live = new Set(); // child processes still running
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

const reserved = new Set(); // base ports handed out by this process

/** A manifest with no entities: `pylon serve` refuses to start without a manifest. */
export const EMPTY_MANIFEST = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'manifests', 'empty.json');

/**
 * The environment a child gets: ours without PYLON_*, plus `extra` (undefined values drop).
 * PYLON_MANIFEST defaults to an empty manifest unless the test sets it (or unsets it with null).
 */
export function childEnv(extra = {}) {
  const env = { PYLON_MANIFEST: EMPTY_MANIFEST };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PYLON_')) env[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined || v === null) delete env[k];
    else env[k] = String(v);
  }
  return env;
}

function portFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    // 0.0.0.0 covers `pylon serve` (all interfaces) and `pylon dev` (127.0.0.1).
    s.listen({ port, host: '0.0.0.0', exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/** A base port in 20000..60000 whose block of four is free right now. */
export async function freePortBlock() {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 40000);
    if ([0, 1, 2, 3].some((k) => reserved.has(base + k) || reserved.has(base - k))) continue;
    let ok = true;
    for (let k = 0; k < 4 && ok; k++) ok = await portFree(base + k);
    if (ok) {
      reserved.add(base);
      return base;
    }
  }
  throw new Error('no free block of four ports found in 20000..60000');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function probeHealth(port, timeoutMs = 500) {
  return new Promise((resolve) => {
    const req = http.get(
      { host: '127.0.0.1', port, path: '/health', agent: false, timeout: timeoutMs },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode === 200));
        res.on('error', () => resolve(false));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
  });
}

function makeTempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'pylon-e2e-'));
}

/**
 * Runs the binary to completion (for commands that are expected to exit by themselves).
 * Returns { code, signal, stdout, stderr, files, timedOut }: `files` lists what the command
 * left in its (temporary, then removed) working directory. The process is killed after
 * `timeoutMs` (a command that was expected to refuse but started a server instead).
 */
export async function runPylon(args, { env = {}, timeoutMs = 5000 } = {}) {
  const dir = makeTempDir();
  const child = spawn(PYLON_BIN, args, { cwd: dir, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const { code, signal } = await new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  clearTimeout(timer);
  live.delete(child);
  const files = fs.readdirSync(dir);
  fs.rmSync(dir, { recursive: true, force: true });
  return { code, signal, stdout, stderr, files, timedOut };
}

/**
 * Starts `pylon <args>` (default `dev`) and waits until GET /health answers 200.
 *
 * options.env: extra environment (PYLON_PORT is set here unless the test sets it);
 * options.args: command line (default ['dev']);
 * options.timeoutMs: how long to wait for /health.
 *
 * Returns a PylonServer. Call `dispose()` when the test ends (it is idempotent).
 */
export async function startPylon({ args = ['dev'], env = {}, timeoutMs = 10000 } = {}) {
  let lastError;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePortBlock();
    const srv = new PylonServer(args, { PYLON_PORT: port, ...env }, port);
    try {
      await srv.waitReady(timeoutMs);
      return srv;
    } catch (err) {
      lastError = err;
      await srv.dispose();
      // Someone took one of the ports between our check and the bind: try another block.
      if (!/cannot listen/.test(srv.stderr)) throw err;
    }
  }
  throw lastError;
}

export class PylonServer {
  constructor(args, env, port) {
    this.args = args;
    this.port = port;
    this.ports = { http: port, ws: port + 1, sse: port + 2, shard: port + 3 };
    this.cwd = makeTempDir();
    this.stdout = '';
    this.stderr = '';
    this.exitCode = undefined; // number, or null when killed by a signal
    this.exitSignal = undefined;
    this.child = spawn(PYLON_BIN, args, { cwd: this.cwd, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(this.child);
    this.child.stdout.setEncoding('utf8').on('data', (d) => (this.stdout += d));
    this.child.stderr.setEncoding('utf8').on('data', (d) => (this.stderr += d));
    this.exited = new Promise((resolve) => {
      this.child.once('error', (err) => {
        this.stderr += `\n[spawn error] ${err.message}\n`;
        this.exitCode = null;
        live.delete(this.child);
        resolve(null);
      });
      this.child.once('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        live.delete(this.child);
        resolve(code);
      });
    });
  }

  get running() {
    return this.exitCode === undefined;
  }

  url(p = '/', port = this.port) {
    return `http://127.0.0.1:${port}${p}`;
  }

  async waitReady(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running)
        throw new Error(`pylon ${this.args.join(' ')} exited with ${this.exitCode} before answering /health:\n${this.stderr}`);
      if (await probeHealth(this.port)) return;
      await sleep(50);
    }
    throw new Error(`pylon did not answer GET /health within ${timeoutMs} ms; stderr:\n${this.stderr}`);
  }

  /** Resolves with the exit code once the process is gone, or rejects after timeoutMs. */
  async waitExit(timeoutMs = 10000) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`pylon did not exit within ${timeoutMs} ms; stderr:\n${this.stderr}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  signal(sig) {
    if (this.running) this.child.kill(sig);
  }

  /** SIGTERM, wait for the exit, return the exit code (SIGKILL and throw after timeoutMs). */
  async stop(timeoutMs = 10000) {
    if (!this.running) return this.exitCode;
    this.child.kill('SIGTERM');
    try {
      return await this.waitExit(timeoutMs);
    } catch (err) {
      this.child.kill('SIGKILL');
      await this.exited;
      throw err;
    }
  }

  /**
   * Stops the server if still running (SIGTERM, so a sanitizer build runs its leak check; SIGKILL
   * after 10 s) and removes the temporary directory. Throws when the server reported a memory
   * or undefined-behaviour error at any point (sanitizer builds). Safe to call twice.
   */
  async dispose() {
    if (this.running) {
      this.child.kill('SIGTERM');
      let timer;
      const done = await Promise.race([
        this.exited.then(() => true),
        new Promise((r) => (timer = setTimeout(() => r(false), 10000))),
      ]);
      clearTimeout(timer);
      if (!done) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    if (!process.env.PYLON_E2E_KEEP) fs.rmSync(this.cwd, { recursive: true, force: true });
    if (!this.sanitizerChecked && /ERROR: (Address|Leak)Sanitizer|runtime error:/.test(this.stderr)) {
      this.sanitizerChecked = true;
      throw new Error(`the server reported a sanitizer error:\n${this.stderr.slice(-4000)}`);
    }
  }
}
