// The reference for bench_ws_idle: Node's `ws` server holding idle connections.
import { WebSocketServer } from 'ws';
const port = Number(process.argv[2]);
const wss = new WebSocketServer({ host: '127.0.0.1', port, path: '/ws' });
wss.on('listening', () => console.log('ready'));
wss.on('connection', () => {});
process.on('SIGTERM', () => process.exit(0));
