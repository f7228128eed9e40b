// sync-client.mjs — a sync client for the e2e tests that behaves like the stock TypeScript
// `packages/sync` client (spec/protocol.md §1.7, §2.5, §3), plus a raw SSE reader.
//
// SyncClient keeps a replica (entity → row_id → row), tombstones and a cursor:
//   start(): pull until has_more is false (a 410 clears the replica, cursor = 0, pull again),
//            then open the live transport (sync WebSocket, or SSE with transport: 'sse');
//   live change events are applied only when seq > cursor (then cursor = seq); pulled events
//            are applied unconditionally;
//   insert → row = data ∪ {id: row_id}; update → shallow merge (id forced); delete → remove +
//            tombstone; an insert/update older than the row's tombstone is dropped;
//   on close: full-jitter exponential backoff (random(0, min(cap, base·2^(attempt-1))), base
//            100 ms and cap 2 s by default for tests), pull, then reopen. The attempt counter
//            resets once a socket has stayed open `stableMs`.
// Everything it sees is recorded (applied events, live events, other messages, closes, pulls)
// so tests can assert on it; waitFor(predicate, ms) waits for a condition on that state.

import http from 'node:http';
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** GET/POST JSON on the main port. Resolves { status, headers, json, body }; rejects on network errors. */
export function httpJson(port, method, path, { token, body, timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
      payload = typeof body === 'string' ? body : JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(payload);
    }
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false, timeout: timeoutMs }, (res) => {
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
        resolve({ status: res.statusCode, headers: res.headers, body: text, json });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** Is this message a change event as the TS client recognises it (seq && entity && kind)? */
export function isChangeEvent(m) {
  return !!(m && typeof m === 'object' && m.seq && m.entity && m.kind);
}

/** Resolves when pred() is truthy (re-checked on every `emitter` 'update' and every 25 ms). */
function waitOn(emitter, pred, ms, what, describe) {
  return new Promise((resolve, reject) => {
    let timer;
    let poll;
    const done = (fn, v) => {
      clearTimeout(timer);
      clearInterval(poll);
      emitter.off('update', check);
      fn(v);
    };
    const check = () => {
      let v;
      try {
        v = pred();
      } catch (err) {
        done(reject, err);
        return;
      }
      if (v) done(resolve, v);
    };
    timer = setTimeout(() => done(reject, new Error(`timed out after ${ms} ms waiting for ${what}${describe ? `; ${describe()}` : ''}`)), ms);
    poll = setInterval(check, 25);
    emitter.on('update', check);
    check();
  });
}

export class SyncClient extends EventEmitter {
  /**
   * port: the server's main HTTP port. token: a session token (null = anonymous).
   * transport: 'ws' (default) or 'sse'. mainPort: use /ws and /events on the main port instead
   * of port+1 / port+2. wsUrl / sseUrl override the derived URLs.
   */
  constructor({ port, token = null, transport = 'ws', mainPort = false, wsUrl, sseUrl, baseDelayMs = 100, maxDelayMs = 2000, stableMs = 5000, name = 'client' } = {}) {
    super();
    this.setMaxListeners(100);
    this.port = port;
    this.token = token;
    this.transport = transport;
    this.mainPort = mainPort;
    this.wsUrlOverride = wsUrl;
    this.sseUrlOverride = sseUrl;
    this.baseDelayMs = baseDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.stableMs = stableMs;
    this.name = name;

    this.replica = new Map(); // entity → Map(row_id → row)
    this.tombstones = new Map(); // entity → Map(row_id → seq)
    this.cursor = 0;

    this.applied = []; // {seq, entity, row_id, kind, source: 'pull'|'live'} in order applied
    this.live = []; // every live change event received (raw), with .applied true/false
    this.messages = []; // every other live JSON message (presence, topic, room events)
    this.binary = 0; // binary frames received
    this.pulls = []; // {since, status, last_seq, has_more, n, oldest_seq}
    this.closes = []; // {code, reason}
    this.opens = 0;
    this.resyncs = 0; // 410s answered by a reset
    this.errors = []; // transport / pull errors (messages)

    this.connected = false;
    this.stopped = false;
    this.attempt = 0;
    this.sock = null; // WebSocket, or the SSE http.ClientRequest
    this.reconnectTimer = null;
    this.stableTimer = null;
    this.pulling = null;
  }

  get wsUrl() {
    if (this.wsUrlOverride) return this.wsUrlOverride;
    return this.mainPort ? `ws://127.0.0.1:${this.port}/ws` : `ws://127.0.0.1:${this.port + 1}/`;
  }

  get sseUrl() {
    if (this.sseUrlOverride) return this.sseUrlOverride;
    return `http://127.0.0.1:${this.mainPort ? this.port : this.port + 2}/events`;
  }

  // ---- replica ----------------------------------------------------------------------------

  table(entity) {
    let t = this.replica.get(entity);
    if (!t) this.replica.set(entity, (t = new Map()));
    return t;
  }

  /** Rows of `entity`, sorted by id. */
  rows(entity) {
    return [...this.table(entity).values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  row(entity, id) {
    return this.replica.get(entity)?.get(id);
  }

  reset() {
    this.replica.clear();
    this.tombstones.clear();
    this.cursor = 0;
  }

  applyEvent(ev, source) {
    const t = this.table(ev.entity);
    let tomb = this.tombstones.get(ev.entity);
    const ts = tomb?.get(ev.row_id);
    if (ev.kind === 'delete') {
      t.delete(ev.row_id);
      if (!tomb) this.tombstones.set(ev.entity, (tomb = new Map()));
      tomb.set(ev.row_id, Math.max(ts ?? 0, ev.seq));
    } else if (ts !== undefined && ev.seq < ts) {
      // a replay must not resurrect a deleted row
    } else if (ev.kind === 'insert') {
      if (ev.data && typeof ev.data === 'object') t.set(ev.row_id, { ...ev.data, id: ev.row_id });
    } else if (ev.kind === 'update') {
      t.set(ev.row_id, { ...(t.get(ev.row_id) ?? { id: ev.row_id }), ...(ev.data ?? {}), id: ev.row_id });
    }
    this.applied.push({ seq: ev.seq, entity: ev.entity, row_id: ev.row_id, kind: ev.kind, source });
  }

  // ---- pull -------------------------------------------------------------------------------

  /** One GET /api/sync/pull?since=<since>; returns the response (recorded in this.pulls). */
  async pullPage(since = this.cursor, limit) {
    const q = `since=${since}${limit !== undefined ? `&limit=${limit}` : ''}`;
    const res = await httpJson(this.port, 'GET', `/api/sync/pull?${q}`, { token: this.token });
    this.pulls.push({
      since,
      status: res.status,
      last_seq: res.json?.cursor?.last_seq,
      has_more: res.json?.has_more,
      n: res.json?.changes?.length,
      oldest_seq: res.json?.error?.oldest_seq,
    });
    return res;
  }

  /** Pulls until has_more is false (410: reset and pull from 0; a second 410 in a row backs off). */
  async pullAll() {
    if (this.pulling) return this.pulling; // one pull loop at a time
    this.pulling = (async () => {
      let resyncAttempt = 0;
      for (let pages = 0; pages < 100000; pages++) {
        const res = await this.pullPage(this.cursor);
        if (res.status === 410) {
          this.resyncs++;
          this.reset();
          if (resyncAttempt > 0) await sleep(Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** Math.min(resyncAttempt, 5)));
          if (++resyncAttempt > 6) throw new Error(`pull: 410 ${resyncAttempt} times in a row: ${res.body}`);
          continue;
        }
        if (res.status === 429) {
          this.attempt += 3;
          throw new Error(`pull: 429 ${res.body}`);
        }
        if (res.status !== 200) throw new Error(`pull: ${res.status} ${res.body}`);
        resyncAttempt = 0;
        for (const ev of res.json.changes) this.applyEvent(ev, 'pull');
        this.cursor = res.json.cursor.last_seq;
        this.emit('update');
        if (!res.json.has_more) return;
      }
    })();
    try {
      return await this.pulling;
    } finally {
      this.pulling = null;
    }
  }

  // ---- live transport ---------------------------------------------------------------------

  /** Pulls, then opens the live transport; resolves once it is open. */
  async start(timeoutMs = 5000) {
    this.stopped = false;
    await this.pullAll();
    this.connect();
    await this.waitFor(() => this.connected, timeoutMs, `${this.name} to connect`);
    return this;
  }

  onLiveMessage(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      this.errors.push(`unparsable live message: ${String(text).slice(0, 200)}`);
      return;
    }
    if (isChangeEvent(m)) {
      const rec = { ...m, applied: false };
      if (m.seq > this.cursor) {
        this.applyEvent(m, 'live');
        this.cursor = m.seq;
        rec.applied = true;
      }
      this.live.push(rec);
    } else {
      this.messages.push(m);
    }
    this.emit('update');
  }

  onOpen() {
    this.connected = true;
    this.opens++;
    clearTimeout(this.stableTimer);
    this.stableTimer = setTimeout(() => (this.attempt = 0), this.stableMs);
    this.emit('update');
  }

  onClosed(code, reason) {
    const wasSock = this.sock;
    this.sock = null;
    this.connected = false;
    clearTimeout(this.stableTimer);
    this.closes.push({ code, reason });
    this.emit('update');
    if (wasSock && !this.stopped) this.scheduleReconnect();
  }

  connect() {
    if (this.stopped) return;
    if (this.transport === 'sse') this.connectSse();
    else this.connectWs();
  }

  connectWs() {
    const protocols = this.token ? [`bearer.${encodeURIComponent(this.token)}`] : [];
    const ws = new WebSocket(this.wsUrl, protocols);
    this.sock = ws;
    let closed = false;
    ws.on('open', () => this.onOpen());
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        this.binary++;
        return;
      }
      this.onLiveMessage(data.toString('utf8'));
    });
    ws.on('error', (err) => this.errors.push(`ws: ${err.message}`));
    ws.on('close', (code, reason) => {
      if (closed) return;
      closed = true;
      if (this.sock === ws) this.onClosed(code, reason.toString('utf8'));
    });
  }

  connectSse() {
    const url = new URL(this.sseUrl);
    const headers = { Accept: 'text/event-stream' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const req = http.get({ host: url.hostname, port: url.port, path: url.pathname + url.search, headers, agent: false });
    this.sock = req;
    let closed = false;
    const close = (why) => {
      if (closed) return;
      closed = true;
      if (this.sock === req) this.onClosed(null, why);
    };
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        close(`status ${res.statusCode}`);
        return;
      }
      this.onOpen();
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = block
            .split('\n')
            .filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5).replace(/^ /, ''))
            .join('\n');
          if (data) this.onLiveMessage(data);
        }
      });
      res.on('end', () => close('end'));
      res.on('close', () => close('close'));
      res.on('error', () => close('error'));
    });
    req.on('error', (err) => {
      this.errors.push(`sse: ${err.message}`);
      close(`error ${err.code ?? err.message}`);
    });
  }

  scheduleReconnect() {
    if (this.stopped || this.reconnectTimer) return;
    this.attempt++;
    const delay = Math.random() * Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (this.attempt - 1));
    this.reconnectTimer = setTimeout(async () => {
      this.reconnectTimer = null;
      if (this.stopped) return;
      try {
        await this.pullAll(); // the stock clients pull before every reconnect
      } catch (err) {
        this.errors.push(`reconnect pull: ${err.message}`);
        this.scheduleReconnect();
        return;
      }
      if (!this.stopped) this.connect();
    }, delay);
  }

  /** Sends a JSON message on the WebSocket. */
  send(obj) {
    if (!this.sock || this.transport !== 'ws' || this.sock.readyState !== WebSocket.OPEN) throw new Error(`${this.name}: not connected`);
    this.sock.send(JSON.stringify(obj));
  }

  setPresence(data) {
    this.send({ type: 'presence', event: 'update', data });
  }

  publishTopic(topic, data) {
    this.send({ type: 'topic', topic, data });
  }

  /** Closes the transport and stops reconnecting. */
  async stop() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.stableTimer);
    this.reconnectTimer = null;
    const s = this.sock;
    this.sock = null;
    this.connected = false;
    if (!s) return;
    if (this.transport === 'sse') {
      s.destroy();
      return;
    }
    if (s.readyState === WebSocket.CLOSED) return;
    await new Promise((resolve) => {
      const t = setTimeout(() => {
        s.terminate();
        resolve();
      }, 1000);
      s.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      if (s.readyState === WebSocket.CONNECTING) s.terminate();
      else s.close(1000);
    });
  }

  /** Waits until predicate(this) is truthy; resolves with its value. */
  waitFor(predicate, ms = 5000, what = 'a condition') {
    return waitOn(this, () => predicate(this), ms, `${this.name}: ${what}`, () =>
      `cursor=${this.cursor} connected=${this.connected} opens=${this.opens} live=${this.live.length} messages=${this.messages.length} closes=${JSON.stringify(this.closes)} errors=${JSON.stringify(this.errors.slice(-3))}`,
    );
  }
}

/**
 * A raw SSE subscription (GET with optional Authorization/cookie/query token) that records
 * every `data:` payload (parsed JSON), every comment line, and whether the stream ended.
 */
export class SseStream extends EventEmitter {
  static open(port, path = '/events', { token, headers = {}, timeoutMs = 3000 } = {}) {
    return new Promise((resolve, reject) => {
      const h = { Accept: 'text/event-stream', ...headers };
      if (token) h.Authorization = `Bearer ${token}`;
      const req = http.get({ host: '127.0.0.1', port, path, headers: h, agent: false });
      const timer = setTimeout(() => {
        req.destroy();
        reject(new Error(`SSE ${port}${path}: no response within ${timeoutMs} ms`));
      }, timeoutMs);
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.on('response', (res) => {
        clearTimeout(timer);
        const s = new SseStream(req, res);
        // ": connected" arrives first; after it the server has registered the subscriber.
        s.waitFor(() => s.comments.includes('connected') || s.ended, timeoutMs, 'the ": connected" comment').then(() => resolve(s), reject);
      });
    });
  }

  constructor(req, res) {
    super();
    this.req = req;
    this.res = res;
    this.status = res.statusCode;
    this.headers = res.headers;
    this.events = []; // parsed data payloads
    this.comments = [];
    this.ended = false;
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) this.comments.push(line.slice(1).trim());
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (data.length) {
          const text = data.join('\n');
          try {
            this.events.push(JSON.parse(text));
          } catch {
            this.events.push({ unparsable: text });
          }
        }
      }
      this.emit('update');
    });
    const end = () => {
      this.ended = true;
      this.emit('update');
    };
    res.on('end', end);
    res.on('close', end);
    res.on('error', end);
  }

  changes() {
    return this.events.filter(isChangeEvent);
  }

  waitFor(pred, ms = 5000, what = 'a condition') {
    return waitOn(this, () => pred(this), ms, `SSE: ${what}`, () => `events=${JSON.stringify(this.events).slice(0, 400)} ended=${this.ended}`);
  }

  close() {
    this.req.destroy();
  }
}
