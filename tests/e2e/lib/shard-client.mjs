// shard-client.mjs — a test client for the shard WebSocket (protocol.md §4.1-4.3): it decodes
// every snapshot frame ([u64 big-endian tick][compact JSON]) as it arrives, records when it
// arrived, and lets a test wait for a frame, for the close, or stall the socket on purpose.
// With `mode: 'msgpack'` it decodes [u64 big-endian tick][msgpack] frames instead (the
// pylon.msgpack subprotocol); with `mode: 'delta'` it applies the pylon.delta text frames
// ({"tick","snapshot"} then {"tick","base","delta"}) and records the reconstructed state.

import { decode as msgpackDecode } from '@msgpack/msgpack';
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

/** Decodes one pylon.msgpack frame: { tick, json (the decoded map), size }. */
export function decodeMsgpackFrame(buf) {
  if (!Buffer.isBuffer(buf)) buf = Buffer.from(buf);
  if (buf.length < 8) throw new Error(`snapshot frame of ${buf.length} bytes (< 8)`);
  const tick = Number(buf.readBigUInt64BE(0));
  return { tick, json: msgpackDecode(buf.subarray(8)), size: buf.length };
}

/** RFC 7386 merge patch, as a pylon.delta client applies a delta: null deletes. */
export function applyDelta(target, patch) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = applyDelta(out[k], v);
  }
  return out;
}

export class ShardClient {
  /**
   * Opens a shard WebSocket. `token`: sent as the `bearer.<token>` subprotocol; `headers`: extra
   * handshake headers; `pauseOnOpen`: stop reading from the socket right after the handshake
   * (a client that never reads). Does not wait: use opened() / closed().
   */
  constructor(url, { token, protocols, headers = {}, pauseOnOpen = false, mode = 'json' } = {}) {
    const protos = protocols ?? (token ? [`bearer.${encodeURIComponent(token)}`] : []);
    this.url = url;
    this.mode = mode;
    this.state = undefined; // delta mode: the reconstructed snapshot
    this.stateTick = undefined; // delta mode: the tick of the last frame applied
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
      if (this.mode === 'delta') {
        this.onDelta(data, isBinary, at);
      } else if (this.mode === 'msgpack' && isBinary) {
        try {
          const f = decodeMsgpackFrame(data);
          this.bytes += f.size;
          this.frames.push({ tick: f.tick, json: f.json, size: f.size, at });
        } catch (err) {
          this.badFrames.push({ reason: err.message, data: Buffer.from(data).subarray(0, 200).toString('latin1') });
        }
      } else if (!isBinary) {
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

  /** pylon.delta: a full frame replaces the state, a delta on the last applied tick patches it. */
  onDelta(data, isBinary, at) {
    const text = Buffer.from(data).toString('utf8');
    let m;
    try {
      if (isBinary) throw new Error('binary frame');
      m = JSON.parse(text);
    } catch (err) {
      this.badFrames.push({ reason: err.message, data: text.slice(0, 200) });
      return this.wake();
    }
    this.bytes += text.length;
    if ('snapshot' in m) {
      this.state = m.snapshot;
    } else if ('delta' in m && m.base === this.stateTick) {
      this.state = applyDelta(this.state, m.delta);
    } else {
      this.badFrames.push({ reason: `delta on base ${m.base}, holding ${this.stateTick}`, data: text.slice(0, 200) });
      return this.wake();
    }
    this.stateTick = m.tick;
    this.frames.push({ tick: m.tick, json: structuredClone(this.state), kind: 'snapshot' in m ? 'full' : 'delta', raw: m, size: text.length, at });
    this.wake();
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
