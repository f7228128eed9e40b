// shard-client.mjs — a test client for the shard WebSocket (protocol.md §4.1-4.3): it decodes
// every snapshot frame ([u64 big-endian tick][compact JSON]) as it arrives, records when it
// arrived, and lets a test wait for a frame, for the close, or stall the socket on purpose.

import WebSocket from 'ws';

/** FNV-1a 32-bit, as shards/sims/arena.c hashes a sid to place its player. */
export function fnv1a(str) {
  let h = 2166136261;
  for (const b of Buffer.from(str, 'utf8')) h = Math.imul(h ^ b, 16777619) >>> 0;
  return h >>> 0;
}

/** Where the arena spawns the player `sid` in a width × height arena. */
export function arenaSpawn(sid, width = 1000, height = 1000) {
  const h = fnv1a(sid);
  return { x: ((h % 1000) / 1000) * width, y: ((Math.floor(h / 1000) % 1000) / 1000) * height };
}

/** The arena's grid cell of a coordinate (floor(v / cell)). */
export const aoiCell = (v, cell) => Math.floor(v / cell);

/** Decodes one snapshot frame: { tick (Number), json (parsed), text, size }. Throws if malformed. */
export function decodeFrame(buf) {
  if (!Buffer.isBuffer(buf)) buf = Buffer.from(buf);
  if (buf.length < 8) throw new Error(`snapshot frame of ${buf.length} bytes (< 8)`);
  const tick = Number(buf.readBigUInt64BE(0));
  const text = buf.subarray(8).toString('utf8');
  return { tick, json: JSON.parse(text), text, size: buf.length };
}

export class ShardClient {
  /**
   * Opens a shard WebSocket. `token`: sent as the `bearer.<token>` subprotocol; `headers`: extra
   * handshake headers; `pauseOnOpen`: stop reading from the socket right after the handshake
   * (a client that never reads). Does not wait: use opened() / closed().
   */
  constructor(url, { token, protocols, headers = {}, pauseOnOpen = false } = {}) {
    const protos = protocols ?? (token ? [`bearer.${encodeURIComponent(token)}`] : []);
    this.url = url;
    this.frames = []; // { tick, json, size, at } in arrival order
    this.bytes = 0;
    this.badFrames = []; // text frames or undecodable binary frames
    this.isOpen = false;
    this.protocol = undefined;
    this.closeInfo = null; // { code, reason } once 'close' fired
    this.error = null;
    this.waiters = new Set();
    this.ws = new WebSocket(url, protos, { handshakeTimeout: 5000, headers });
    this.ws.on('open', () => {
      this.isOpen = true;
      this.protocol = this.ws.protocol;
      if (pauseOnOpen) this.ws._socket.pause();
      this.wake();
    });
    this.ws.on('message', (data, isBinary) => {
      const at = performance.now();
      if (!isBinary) {
        this.badFrames.push({ reason: 'text frame', data: data.toString('utf8').slice(0, 200) });
      } else {
        try {
          const f = decodeFrame(data);
          this.bytes += f.size;
          this.frames.push({ tick: f.tick, json: f.json, size: f.size, at });
        } catch (err) {
          this.badFrames.push({ reason: err.message, data: Buffer.from(data).subarray(0, 200).toString('latin1') });
        }
      }
      this.wake();
    });
    this.ws.on('error', (err) => {
      this.error = err;
      this.wake();
    });
    this.ws.on('close', (code, reason) => {
      this.closeInfo = { code, reason: reason.toString('utf8') };
      this.wake();
    });
  }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  get last() {
    return this.frames[this.frames.length - 1];
  }

  /** Resolves with pred()'s truthy value (checked on every event), rejects after timeoutMs. */
  waitFor(pred, timeoutMs = 3000, what = 'condition') {
    return new Promise((resolve, reject) => {
      const check = () => {
        let v;
        try {
          v = pred(this);
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
        const l = this.last;
        reject(new Error(`${this.url}: timed out after ${timeoutMs} ms waiting for ${what}; ${this.frames.length} frames` +
          `${l ? `, last tick ${l.tick}: ${JSON.stringify(l.json).slice(0, 300)}` : ''}; close ${JSON.stringify(this.closeInfo)}; error ${this.error?.message}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Resolves once the handshake completed; rejects if the connection closed first. */
  opened(timeoutMs = 5000) {
    return this.waitFor((c) => {
      if (c.isOpen) return true;
      if (c.closeInfo) throw new Error(`closed before open: ${JSON.stringify(c.closeInfo)} ${c.error?.message ?? ''}`);
      return false;
    }, timeoutMs, 'the handshake');
  }

  /** Resolves with { code, reason } once closed. */
  closed(timeoutMs = 5000) {
    return this.waitFor((c) => c.closeInfo, timeoutMs, 'the close');
  }

  /** Resolves with the first frame (received from now on) that satisfies pred(frame). */
  nextFrame(pred = () => true, timeoutMs = 3000, what = 'a frame') {
    const from = this.frames.length;
    return this.waitFor((c) => {
      for (let i = from; i < c.frames.length; i++) if (pred(c.frames[i])) return c.frames[i];
      if (c.closeInfo) throw new Error(`closed while waiting for ${what}: ${JSON.stringify(c.closeInfo)}`);
      return null;
    }, timeoutMs, what);
  }

  /** Sends a text message (objects are JSON-encoded). */
  send(msg) {
    this.ws.send(typeof msg === 'string' || Buffer.isBuffer(msg) ? msg : JSON.stringify(msg));
  }

  pause() {
    this.ws._socket.pause();
  }

  resume() {
    this.ws._socket.resume();
  }

  close() {
    if (!this.closeInfo) this.ws.terminate();
  }
}
