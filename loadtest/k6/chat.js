// chat.js: chat rooms under load, over WebSocket.
//
// What it measures: MEMBERS virtual users join ROOM and read; SENDERS more join and each
// posts RATE messages per second. Every message carries its send time, so every member
// measures delivery latency (chat_delivery_latency_ms, a Trend; sender and members share
// this machine's clock) and counts deliveries (chat_deliveries). Thresholds fail the run
// when p99 latency exceeds 100 ms, connections fail, or messages are refused.
//
// Run against one node (auth configured: senders need signed-in users; give the node's
// HMAC secret and the script mints one token per sender, or pass TOKEN for all):
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e ROOM=live/test -e SECRET=$ZENLIVE_AUTH_JWT_SECRET \
//          -e MEMBERS=2000 -e SENDERS=20 -e RATE=5 -e DURATION=1m loadtest/k6/chat.js
// Against a cluster: BASE_URL=http://n1:8080,http://n2:8080 spreads members over nodes
// (they join the same room wherever it lives).

import ws from 'k6/ws';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const BASES = (__ENV.BASE_URL || 'http://127.0.0.1:8080').split(',').map((b) => b.replace(/^http/, 'ws'));
const ROOM = __ENV.ROOM || 'live/test';
const MEMBERS = parseInt(__ENV.MEMBERS || '10', 10);
const SENDERS = parseInt(__ENV.SENDERS || '2', 10);
const RATE = parseFloat(__ENV.RATE || '5');
const DURATION = __ENV.DURATION || '30s';
const SECRET = __ENV.SECRET || '';
const TOKEN = __ENV.TOKEN || '';

const latency = new Trend('chat_delivery_latency_ms', true);
const deliveries = new Counter('chat_deliveries');
const refused = new Counter('chat_refused');

export const options = {
  scenarios: {
    members: { executor: 'constant-vus', vus: MEMBERS, duration: DURATION, exec: 'member' },
    senders: { executor: 'constant-vus', vus: SENDERS, duration: DURATION, exec: 'sender', startTime: '1s' },
  },
  thresholds: {
    chat_delivery_latency_ms: ['p(99)<100'],
    chat_refused: ['count==0'],
    checks: ['rate>0.99'],
  },
};

function seconds(d) {
  const m = /^(\d+)(ms|s|m)$/.exec(d);
  if (!m) return 30;
  const n = parseInt(m[1], 10);
  return m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : n;
}

/** A token for this client: TOKEN, or an HS256 one signed with SECRET (none without either). */
function mint(sub) {
  if (TOKEN) return TOKEN;
  if (!SECRET) return '';
  const b64 = (s) => encoding.b64encode(s, 'rawurl');
  const now = Math.floor(Date.now() / 1000);
  const head = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64(JSON.stringify({ sub, name: sub, roles: ['viewer'], exp: now + 3600, iat: now }));
  const signature = crypto.hmac('sha256', SECRET, `${head}.${body}`, 'base64rawurl');
  return `${head}.${body}.${signature}`;
}

function url(token) {
  const base = BASES[(__VU - 1) % BASES.length];
  return `${base}/chat/${ROOM}${token ? `?token=${token}` : ''}`;
}

/** Reads until the scenario's time is up, measuring each delivered message. */
function listen(socket) {
  socket.on('message', (data) => {
    const event = JSON.parse(data);
    if (event.type === 'message') {
      const sent = parseInt(String(event.text).split(':')[1], 10);
      if (!Number.isNaN(sent)) latency.add(Date.now() - sent);
      deliveries.add(1);
    } else if (event.type === 'error') {
      refused.add(1);
    }
  });
}

export function member() {
  // Signed in (when a secret or token is given), so a member may open the room of a stream
  // that is not live (chat.rooms_without_stream = "signed_in", the default).
  const token = mint(`k6-member-${__VU}`);
  const res = ws.connect(url(token), null, (socket) => {
    listen(socket);
    socket.setTimeout(() => socket.close(), seconds(DURATION) * 1000);
  });
  check(res, { 'member connected': (r) => r && r.status === 101 });
}

export function sender() {
  const token = mint(`k6-sender-${__VU}`);
  const res = ws.connect(url(token), null, (socket) => {
    listen(socket);
    socket.setInterval(() => {
      socket.send(JSON.stringify({ type: 'message', text: `t:${Date.now()}` }));
    }, 1000 / RATE);
    socket.setTimeout(() => socket.close(), (seconds(DURATION) - 1) * 1000);
  });
  check(res, { 'sender connected': (r) => r && r.status === 101 });
}
