// colyseus_server.mjs — the reference for bench/shards: pylon's arena game (shards/sims/arena.c)
// on Colyseus 0.16 (@colyseus/core, @colyseus/ws-transport, @colyseus/schema 3).
//
// Same rules as the arena sim: a 1000 × 1000 world, each player moves speed (200) × dt along its
// last input {dx, dy} (each clamped to -1..1), positions clamped to the world, a fixed step
// dt = 1/20 s; spawn at the arena's FNV-1a position of the sid; "ack" = the last client_seq
// applied (applied on the next simulation tick, as pylon applies inputs at its next tick).
// Simulation interval 50 ms and patch rate 50 ms (20 Hz). Every player sees its whole room
// (Colyseus' default: no StateView filtering), so run.sh gives pylon's arena an area of
// interest that covers the world.
//
// Rooms: "arena" with filterBy(["room"]), so the driver puts exactly 20 players in room k
// by joining with {room: k}.
//
// Tick lateness, measured inside the server: the simulation interval is Node's setInterval,
// which re-arms each time relative to when it last fired, so each callback's deadline is
// (previous callback + 50 ms); lateness = callback time − that deadline (≥ 0), in a
// histogram of 10 µs buckets over every room. GET /stats on PORT+1 answers it as JSON;
// GET /reset clears it (the driver resets at the start of its window).
//
// Usage: node colyseus_server.mjs PORT     (prints "ready" when listening)
import http from 'node:http';
import { Server, Room } from '@colyseus/core';
import { WebSocketTransport } from '@colyseus/ws-transport';
import { Schema, MapSchema, defineTypes } from '@colyseus/schema';

const PORT = Number(process.argv[2] || 2567);
const WIDTH = 1000, HEIGHT = 1000, SPEED = 200, HZ = 20, INTERVAL = 1000 / HZ;

class Player extends Schema {}
defineTypes(Player, { x: 'float32', y: 'float32', ack: 'uint32' });
class ArenaState extends Schema {
  constructor() {
    super();
    this.players = new MapSchema();
  }
}
defineTypes(ArenaState, { players: { map: Player } });

// Lateness histogram, 10 µs buckets up to 1 s (the last one collects the rest).
const BUCKETS = 100001;
let late = new Float64Array(BUCKETS), lateN = 0, lateSum = 0, lateMax = 0, ticks = 0, resetAt = performance.now();
function addLate(ms) {
  const i = Math.min(BUCKETS - 1, Math.floor(ms * 100));
  late[i]++;
  lateN++;
  lateSum += ms;
  if (ms > lateMax) lateMax = ms;
}
function pct(p) {
  if (!lateN) return 0;
  const want = Math.min(lateN - 1, Math.floor((lateN * p) / 100));
  let acc = 0;
  for (let i = 0; i < BUCKETS; i++) {
    acc += late[i];
    if (acc > want) return (i + 1) / 100; // upper bound, ms
  }
  return lateMax;
}

function fnv1a(str) {
  let h = 2166136261;
  for (const b of Buffer.from(str, 'utf8')) h = Math.imul(h ^ b, 16777619) >>> 0;
  return h >>> 0;
}
const clamp = (v, lo, hi) => (v < lo ? lo : v > hi ? hi : v);

class ArenaRoom extends Room {
  onCreate() {
    this.maxClients = 20;
    this.setState(new ArenaState());
    this.patchRate = INTERVAL;
    this.dir = new Map(); // sessionId -> {dx, dy, pending: [{dx, dy, seq}]}
    this.onMessage('input', (client, m) => {
      const d = this.dir.get(client.sessionId);
      if (!d || typeof m !== 'object' || m === null) return;
      d.pending.push(m); // applied at the next tick, in order (as pylon's shard does)
    });
    let prev = 0;
    this.setSimulationInterval(() => {
      const now = performance.now();
      if (prev) addLate(Math.max(0, now - (prev + INTERVAL)));
      prev = now;
      ticks++;
      const dt = 1 / HZ;
      for (const [sid, d] of this.dir) {
        const p = this.state.players.get(sid);
        if (!p) continue;
        for (const m of d.pending) {
          if (typeof m.dx === 'number') d.dx = clamp(m.dx, -1, 1);
          if (typeof m.dy === 'number') d.dy = clamp(m.dy, -1, 1);
          if (Number.isInteger(m.client_seq) && m.client_seq > p.ack) p.ack = m.client_seq;
        }
        d.pending.length = 0;
        const x = clamp(p.x + d.dx * SPEED * dt, 0, WIDTH), y = clamp(p.y + d.dy * SPEED * dt, 0, HEIGHT);
        if (x !== p.x) p.x = x;
        if (y !== p.y) p.y = y;
      }
    }, INTERVAL);
  }

  onJoin(client, options) {
    const sid = String(options?.sid ?? client.sessionId);
    const h = fnv1a(sid);
    const p = new Player();
    p.x = ((h % 1000) / 1000) * WIDTH;
    p.y = ((Math.floor(h / 1000) % 1000) / 1000) * HEIGHT;
    p.ack = 0;
    this.state.players.set(client.sessionId, p);
    this.dir.set(client.sessionId, { dx: 0, dy: 0, pending: [] });
  }

  onLeave(client) {
    this.state.players.delete(client.sessionId);
    this.dir.delete(client.sessionId);
  }
}

const gameServer = new Server({ transport: new WebSocketTransport(), greet: false });
gameServer.define('arena', ArenaRoom).filterBy(['room']);
await gameServer.listen(PORT, '127.0.0.1');

http
  .createServer((req, res) => {
    if (req.url === '/reset') {
      late = new Float64Array(BUCKETS);
      lateN = lateSum = lateMax = ticks = 0;
      resetAt = performance.now();
      res.end('{}');
      return;
    }
    let le2 = 0;
    for (let i = 0; i < 200; i++) le2 += late[i]; // buckets [0, 2 ms)
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ ticks, secs: (performance.now() - resetAt) / 1000, n: lateN, p50: pct(50), p99: pct(99), mean: lateN ? lateSum / lateN : 0, max: lateMax, le2ms: lateN ? le2 / lateN : -1 }));
  })
  .listen(PORT + 1, '127.0.0.1', () => console.log('ready'));
