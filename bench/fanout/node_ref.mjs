// Reference B for bench_fanout: Node's `ws` broadcasting every write to every subscriber.
//   node node_ref.mjs PORT   HTTP on PORT (POST /api/entities/<E>, POST /api/auth/guest),
//                            WebSocket on PORT+1 (any path; the first offered subprotocol is
//                            echoed, as `ws` does by default).
// Each POST builds the same frame as pylon's change event once (one Buffer, so `ws` does not
// re-encode the string per client), sends it to every open client, then answers 201 {"id"}.
// `ws` never drops or closes a slow client: its buffers grow (that is its documented policy).
import http from 'node:http';
import { WebSocketServer, WebSocket } from 'ws';

const port = Number(process.argv[2]);
const wss = new WebSocketServer({ host: '127.0.0.1', port: port + 1, perMessageDeflate: false });
let seq = 0;

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/api/auth/guest') {
    const body = '{"token":"ref","user_id":"guest_ref","guest":true}';
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': body.length });
    res.end(body);
    return;
  }
  const m = req.method === 'POST' && /^\/api\/entities\/([^/?]+)/.exec(req.url);
  if (!m) {
    res.writeHead(404, { 'Content-Length': 0 });
    res.end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    seq += 1;
    const id = 'r' + String(seq).padStart(24, '0');
    const data = Buffer.concat(chunks).toString();
    const frame = Buffer.from(
      `{"seq":${seq},"entity":"${m[1]}","row_id":"${id}","kind":"insert","data":${data},"timestamp":""}`);
    for (const c of wss.clients) if (c.readyState === WebSocket.OPEN) c.send(frame, { binary: false });
    const body = `{"id":"${id}"}`;
    res.writeHead(201, { 'Content-Type': 'application/json', 'Content-Length': body.length });
    res.end(body);
  });
});
server.keepAliveTimeout = 60000;
let up = 0;
const ready = () => { if (++up === 2) console.log('ready'); };
server.listen(port, '127.0.0.1', ready);
wss.on('listening', ready);
wss.on('connection', (ws) => ws.on('error', () => {}));
process.on('SIGTERM', () => process.exit(0));
