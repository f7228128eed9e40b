// colyseus_driver.mjs — drives colyseus_server.mjs with the load pattern of bench_shards
// (shards.c) and prints the same key=value line.
//
// R rooms × P players, each player a colyseus.js 0.16 Client/Room (the official client: its
// matchmaking request, its WebSocket, its schema decoder) joining "arena" with {room: k, sid}.
// Each player sends room.send("input", {dx, dy, client_seq}) at --input-hz, evenly staggered
// over the period in 1 ms slots, with a new direction every second from the same generator as
// shards.c. For each state patch a player gets (onStateChange) it takes:
//   - input→state latency: its own Player.ack is the last client_seq applied; each input's
//     latency is the arrival of the first state whose ack covers it, minus its send time;
//   - patch inter-arrival jitter |gap − 50 ms|.
// The main loop samples the server's CPU (/proc/PID/stat, every thread) and RSS at the start
// and end of the window, and resets then reads the server's tick-lateness histogram
// (GET /reset and /stats on PORT+1).
//
// Usage: node colyseus_driver.mjs --port P --server-pid PID [--rooms 50] [--players 20]
//          [--duration 10] [--warmup 2] [--settle 1] [--input-hz 20] [--label NAME]
import fs from 'node:fs';
import http from 'node:http';
import { Client } from 'colyseus.js';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []),
);
const PORT = Number(args.port);
const ROOMS = Number(args.rooms ?? 50), PER = Number(args.players ?? 20);
const DURATION = Number(args.duration ?? 10), WARMUP = Number(args.warmup ?? 2), SETTLE = Number(args.settle ?? 1);
const INPUT_HZ = Number(args['input-hz'] ?? 20), TICK_MS = 50;
const PID = Number(args['server-pid'] ?? 0), LABEL = args.label ?? 'run';
if (!PORT || ROOMS < 1 || ROOMS > 5000 || PER < 1 || PER > 20 || !(DURATION > 0 && DURATION <= 600)) {
  console.error('usage: node colyseus_driver.mjs --port P --server-pid PID [--rooms R] [--players P<=20] [--duration D]');
  process.exit(64);
}
// Every wait below is bounded: the whole run must end within this.
const hardEnd = setTimeout(() => {
  console.error('colyseus_driver: hard deadline reached');
  process.exit(1);
}, (120 + WARMUP + DURATION + SETTLE + 10) * 1000);
hardEnd.unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function cpuS(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, USER_HZ = 100
  } catch {
    return -1;
  }
}
function rssKb(pid) {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
  } catch {
    return -1;
  }
}
function get(path) {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port: PORT + 1, path, timeout: 5000 }, (res) => {
        let b = '';
        res.on('data', (d) => (b += d));
        res.on('end', () => {
          try {
            resolve(JSON.parse(b));
          } catch {
            resolve(null);
          }
        });
      })
      .on('error', () => resolve(null));
  });
}

// 10 µs histogram up to 10 s.
class Hist {
  constructor() {
    this.b = new Float64Array(1000001);
    this.n = 0;
    this.max = 0;
  }
  add(ms) {
    this.b[Math.min(1000000, Math.floor(ms * 100))]++;
    this.n++;
    if (ms > this.max) this.max = ms;
  }
  pct(p) {
    if (!this.n) return -1; // nothing measured: run.sh's medians skip negative values
    const want = Math.min(this.n - 1, Math.floor((this.n * p) / 100));
    let acc = 0;
    for (let i = 0; i < this.b.length; i++) if ((acc += this.b[i]) > want) return (i + 1) / 100;
    return this.max;
  }
}

const rssBase = rssKb(PID);
const client = new Client(`ws://127.0.0.1:${PORT}`);
const players = [];
let firstError = '', closed = 0;
let mFrom = Infinity, mTo = Infinity;
let frames = 0, acks = 0, inputs = 0, inputsFailed = 0, bytes = 0;
const lat = new Hist(), jit = new Hist();

function attach(p) {
  p.room.onStateChange(() => {
    const now = performance.now();
    if (now >= mFrom && now < mTo) {
      frames++;
      if (p.lastFrame) jit.add(Math.abs(now - p.lastFrame - TICK_MS));
    }
    p.lastFrame = now;
    const me = p.room.state.players?.get(p.room.sessionId);
    if (!me || me.ack <= p.ack) return;
    for (let s = p.ack + 1; s <= me.ack && s <= p.seq; s++) {
      if (p.seq - s >= 64) continue;
      const t = p.sent[s & 63];
      if (t >= mFrom && t < mTo) {
        lat.add(now - t);
        acks++;
      }
    }
    p.ack = me.ack;
  });
  p.room.onLeave(() => {
    closed++;
    p.open = false;
  });
  p.room.onError((code, msg) => {
    if (!firstError) firstError = `room error ${code} ${msg}`;
  });
}

async function join(i) {
  const k = Math.floor(i / PER);
  const p = { i, seq: 0, ack: 0, sent: new Float64Array(64), lastFrame: 0, open: false, rng: (2166136261 ^ Math.imul(i, 16777619)) >>> 0, dx: 0, dy: 0 };
  for (let attempt = 0; attempt < 3 && !p.open; attempt++) { // a refused join is retried twice
    try {
      p.room = await client.joinOrCreate('arena', { room: k, sid: `p${i}` });
      p.open = true;
      attach(p);
      players.push(p);
    } catch (err) {
      if (!firstError) firstError = `join: ${err.message}`;
      await sleep(300);
    }
  }
}

// 1. Join: the first player of every room (it creates the room), then the rest, 64 at a time.
const t0 = performance.now();
async function inBatches(list) {
  for (let a = 0; a < list.length; a += 64) await Promise.all(list.slice(a, a + 64).map(join));
}
await inBatches(Array.from({ length: ROOMS }, (_, k) => k * PER));
const rest = [];
for (let k = 0; k < ROOMS; k++) for (let j = 1; j < PER; j++) rest.push(k * PER + j);
await inBatches(rest);
const connectS = (performance.now() - t0) / 1000;
const connected = players.length;
if (!connected) {
  console.error(`colyseus_driver: no player joined (${firstError})`);
  process.exit(1);
}
players.sort((a, b) => a.i - b.i);
await sleep(SETTLE * 1000);

// 2. Inputs: 1 ms slots; player j sends in slot j mod (slots per period).
function sendInput(p, now) {
  if (p.seq % INPUT_HZ === 0) { // a new direction every second (shards.c's generator)
    p.rng = (Math.imul(p.rng, 1103515245) + 12345) >>> 0;
    p.dx = ((p.rng >>> 16) % 3) - 1;
    p.dy = ((p.rng >>> 20) % 3) - 1;
  }
  const seq = p.seq + 1;
  try {
    p.room.send('input', { dx: p.dx, dy: p.dy, client_seq: seq });
  } catch {
    inputsFailed++;
    return;
  }
  p.seq = seq;
  p.sent[seq & 63] = now;
  if (now >= mFrom && now < mTo) inputs++;
}
const start = performance.now() + 10;
mFrom = start + WARMUP * 1000;
mTo = mFrom + DURATION * 1000;
const end = mTo + 200;
const periodSlots = Math.max(1, Math.floor(1000 / INPUT_HZ));
// The window: the server's counters at its start and end (timers on the same loop as the
// inputs, so a saturated driver samples late, like it sends late; the window is measured).
const samples = {};
setTimeout(async () => {
  samples.c0 = cpuS(PID);
  samples.u0 = process.cpuUsage();
  samples.t0 = performance.now();
  await get('/reset');
}, Math.max(0, mFrom - performance.now()));
setTimeout(async () => {
  samples.c1 = cpuS(PID);
  samples.u1 = process.cpuUsage();
  samples.t1 = performance.now();
  samples.rss = rssKb(PID);
  samples.stats = await get('/stats');
}, Math.max(0, mTo - performance.now()));
let k = 0;
const maxK = Math.ceil(end - start) + 1;
await new Promise((resolve) => {
  const step = () => {
    const now = performance.now();
    if (now >= end || k >= maxK) return resolve();
    while (k < maxK && start + k <= now) {
      const slot = k % periodSlots;
      for (let j = slot; j < players.length; j += periodSlots) if (players[j].open) sendInput(players[j], now);
      k++;
    }
    setTimeout(step, Math.max(0, start + k - performance.now()));
  };
  step();
});
for (let i = 0; i < 100 && !samples.stats; i++) await sleep(50);

// 3. Figures: the same keys as bench_shards.
// Client-side counts over the planned window; the server's CPU over the sampled one. A driver
// whose event loop was blocked samples both ends late and close together: then CPU is not
// measured (printed as "-") rather than divided by a tiny window.
const win = DURATION;
const swin = (samples.t1 - samples.t0) / 1000 >= 0.5 * DURATION ? (samples.t1 - samples.t0) / 1000 : NaN;
const st = samples.stats ?? {};
const scpu = samples.c0 >= 0 && samples.c1 >= 0 ? samples.c1 - samples.c0 : -1;
const ccpu = samples.u1 ? (samples.u1.user - samples.u0.user + samples.u1.system - samples.u0.system) / 1e6 : 0;
const open = players.filter((p) => p.open).length;
const f = (v, d) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '-');
console.log(
  [
    `label=${LABEL} server=colyseus shards=${ROOMS} players=${ROOMS * PER} connected=${connected} open_end=${open}`,
    `mint_s=0 connect_s=${f(connectS, 2)} window_s=${f(win, 2)} ticks_per_s=${f(st.ticks / st.secs, 1)} ticks_expected=${ROOMS * 20}`,
    `late_p50_ms=${f(st.p50, 3)} late_p99_ms=${f(st.p99, 3)} late_le2ms=${f(st.le2ms, 4)} late_mean_ms=${f(st.mean, 3)}`,
    `tickdur_p50_ms=- tickdur_p99_ms=- inputs_per_s=${f(inputs / win, 0)} inputs_failed=${inputsFailed}`,
    `fps=${f(frames / win, 0)} fps_expected=${connected * 20} missed_ticks=-`,
    `frame_kb_s=- lat_p50_ms=${f(lat.pct(50), 2)} lat_p99_ms=${f(lat.pct(99), 2)} lat_max_ms=${f(lat.max, 2)} lat_n=${acks}`,
    `jit_p50_ms=${f(jit.pct(50), 2)} jit_p99_ms=${f(jit.pct(99), 2)} server_cpu=${f(scpu / swin, 3)}`,
    `cpu_ms_per_player_s=${f((scpu * 1000) / (connected * swin), 4)} rss_mb=${f(samples.rss / 1024, 1)} rss_base_mb=${f(rssBase / 1024, 1)}`,
    `kb_per_player=${f((samples.rss - rssBase) / connected, 1)} client_cpu=${f(ccpu / swin, 2)}`,
    `frames_skipped=- inputs_dropped=- shards_running=${ROOMS} closed=${closed} closed_codes=- bad_frames=0 metrics_ok=${samples.stats ? 1 : 0}${firstError ? ' error=see-stderr' : ''}`,
  ].join(' '),
);
if (firstError) console.error(`colyseus_driver: first error: ${firstError}`);
for (const p of players) if (p.open) p.room.connection.close();
process.exit(0);
