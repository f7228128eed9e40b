// http.mjs — HTTP clients for the tests: a plain request helper (node:http, one connection
// per request) and RawConn, a net.Socket wrapper for byte-exact requests, pipelining, slow
// clients and reading responses while a request is still being sent.

import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * One request on a fresh connection. Returns { status, headers, body, json }.
 * headers are node's lower-cased header object; `json` is the parsed body or undefined.
 */
export function request(port, { method = 'GET', path = '/', headers = {}, body, host = '127.0.0.1', timeoutMs = 5000, agent = false } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path, headers, agent, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, body: text, json, reusedSocket: req.reusedSocket, socket: req.socket });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** Asserts the standard error envelope {"error":{"code","message","hint"?}}. */
export function assertErrorEnvelope(res, status, code) {
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status}: ${res.body}`);
  const ct = res.headers['content-type'];
  assert.match(ct ?? '', /^application\/json/, `content-type of ${status} ${code}`);
  const j = typeof res.json === 'object' ? res.json : JSON.parse(res.body);
  assert.ok(j && typeof j.error === 'object', `error envelope expected, got ${res.body}`);
  assert.deepEqual(Object.keys(j).sort(), ['error']);
  assert.equal(j.error.code, code);
  assert.equal(typeof j.error.message, 'string');
  assert.ok(j.error.message.length > 0);
  for (const k of Object.keys(j.error)) assert.ok(['code', 'message', 'hint'].includes(k), `unexpected error member ${k}`);
  if ('hint' in j.error) assert.equal(typeof j.error.hint, 'string');
  return j.error;
}

/** GET /health on a new connection answers 200 {"status":"ok",...}: the server is still fine. */
export async function assertHealthy(port, why = '') {
  const res = await request(port, { path: '/health' });
  assert.equal(res.status, 200, `server unhealthy ${why}: ${res.status} ${res.body}`);
  assert.equal(res.json?.status, 'ok');
}

/**
 * Parses one HTTP/1.1 response at the start of `buf`. Returns null while incomplete, else
 * { status, reason, headers (lower-cased names; repeated names joined with ", "), rawHead,
 *   headerList ([name, value] as received), body (Buffer), length (bytes consumed) }.
 * `closed`: the connection has ended (a response without Content-Length runs to its end);
 * `head`: the answer to a HEAD request (no body whatever Content-Length says).
 */
export function parseResponse(buf, { closed = false, head = false } = {}) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const rawHead = buf.subarray(0, end).toString('latin1');
  const lines = rawHead.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(lines[0]);
  if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(lines[0])}`);
  const status = Number(m[1]);
  const headers = {};
  const headerList = [];
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i <= 0) throw new Error(`malformed header line ${JSON.stringify(line)}`);
    const name = line.slice(0, i).trim();
    const value = line.slice(i + 1).trim();
    headerList.push([name, value]);
    const k = name.toLowerCase();
    headers[k] = k in headers ? `${headers[k]}, ${value}` : value;
  }
  const start = end + 4;
  let bodyLen;
  if (head || status < 200 || status === 204 || status === 304) bodyLen = 0;
  else if ('content-length' in headers) bodyLen = Number(headers['content-length']);
  else if (closed) bodyLen = buf.length - start;
  else return null; // runs until the connection closes
  if (buf.length < start + bodyLen) return null;
  return { status, reason: m[2], headers, headerList, rawHead, body: buf.subarray(start, start + bodyLen), length: start + bodyLen };
}

/** A raw TCP connection that accumulates what it receives. */
export class RawConn {
  /** Connects (rejects on ECONNREFUSED etc.). */
  static open(port, { host = '127.0.0.1', timeoutMs = 3000 } = {}) {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ port, host });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`connect to ${host}:${port} timed out`));
      }, timeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeListener('error', reject);
        resolve(new RawConn(sock));
      });
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.total = 0; // bytes received in all
    this.ended = false; // FIN received
    this.closed = false; // socket fully closed (FIN, reset or destroy)
    this.error = null;
    this.waiters = new Set();
    sock.setNoDelay(true);
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.total += d.length;
      this.wake();
    });
    sock.on('end', () => {
      this.ended = true;
      this.wake();
    });
    sock.on('error', (err) => {
      this.error = err;
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves when pred() is true (checked on every event), rejects after timeoutMs. */
  waitFor(pred, timeoutMs, what = 'condition') {
    return new Promise((resolve, reject) => {
      const check = () => {
        let v;
        try {
          v = pred();
        } catch (err) {
          cleanup();
          reject(err);
          return;
        }
        if (v) {
          cleanup();
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; received ${this.total} bytes: ${JSON.stringify(this.buf.toString('latin1').slice(0, 400))}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Writes; resolves when handed to the kernel. Write errors (EPIPE, reset) resolve with the error. */
  write(data) {
    return new Promise((resolve) => {
      if (this.sock.destroyed || !this.sock.writable) {
        resolve(new Error('socket not writable'));
        return;
      }
      this.sock.write(data, (err) => resolve(err ?? null));
    });
  }

  /** The next complete response (removed from the buffer). `head`: it answers a HEAD. */
  async readResponse(timeoutMs = 3000, { head = false } = {}) {
    const res = await this.waitFor(() => {
      const r = parseResponse(this.buf, { closed: this.ended || this.closed, head });
      if (r) return r;
      if ((this.ended || this.closed) && this.buf.length === 0) throw new Error(`connection closed without a response${this.error ? ` (${this.error.code})` : ''}`);
      if (this.ended || this.closed) throw new Error(`connection closed in the middle of a response: ${JSON.stringify(this.buf.toString('latin1').slice(0, 400))}`);
      return null;
    }, timeoutMs, 'a complete HTTP response');
    this.buf = this.buf.subarray(res.length);
    res.text = res.body.toString('utf8');
    try {
      res.json = JSON.parse(res.text);
    } catch {
      res.json = undefined;
    }
    return res;
  }

  /** Resolves true once the peer has closed (FIN or reset) within timeoutMs, else false. */
  async waitClosed(timeoutMs = 3000) {
    try {
      await this.waitFor(() => this.ended || this.closed, timeoutMs, 'the connection to close');
      return true;
    } catch {
      return false;
    }
  }

  /** Waits until the buffer holds `str` (latin1), returns the buffer's text. */
  async waitForText(str, timeoutMs = 3000) {
    await this.waitFor(() => this.buf.toString('latin1').includes(str), timeoutMs, JSON.stringify(str));
    return this.buf.toString('latin1');
  }

  destroy() {
    this.sock.destroy();
  }
}

/** A GET request as raw bytes. */
export function rawGet(path, extra = '', { host = 'localhost' } = {}) {
  return `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;
}
