// Console: every stream with its statistics (`GET /api/v1/streams`), kick and recording
// on/off, the cluster's nodes (`GET /api/v1/nodes`) and a link to the metrics. Needs an
// admin token; without one the node refuses the calls and the page says so.

import {
  api, el, every, formatBitrate, formatDuration, formatVideo, getToken, page, say,
  takeTokenFromAddress, tokenField,
} from './common.js';

takeTokenFromAddress();

const REFRESH_MS = 2000;
const streamsBody = document.querySelector('#streams tbody');
const nodesBody = document.querySelector('#nodes tbody');
/** Each stream's recording state, as last read: true, false, or undefined (unknown). */
const recording = new Map();

function path(name) {
  const [app, key] = String(name).split('/');
  return `/api/v1/streams/${encodeURIComponent(app)}/${encodeURIComponent(key)}`;
}

function refused(answer) {
  const why = answer.message || `HTTP ${answer.status}`;
  if (answer.status === 401 || answer.status === 403 || answer.code === 'auth_not_configured') {
    return `The node refused the console's API calls (${why}). ${getToken() ? 'This token is not an admin token for this node.' : 'Paste an admin token at the top.'}`;
  }
  return `The API call failed: ${why}.`;
}

async function act(what, call) {
  say('action', `${what}…`);
  const answer = await call();
  say('action', answer.ok ? `${what}: done.` : `${what}: ${refused(answer)}`, answer.ok ? '' : 'error');
  refresh();
}

function actions(name) {
  const kick = el('button', { type: 'button', class: 'mini danger', 'data-action': 'kick', text: 'Kick' });
  kick.addEventListener('click', () => act(`Kick ${name}`, () => api(`${path(name)}/kick`, {
    method: 'POST', body: { reason: 'kicked from the console' },
  })));
  const on = recording.get(name) === true;
  const record = el('button', { type: 'button', class: 'mini', 'data-action': 'record', text: on ? 'Stop recording' : 'Record' });
  record.addEventListener('click', () => act(`${on ? 'Stop recording' : 'Record'} ${name}`, () => api(`${path(name)}/recording`, {
    method: 'POST', body: { record: !on },
  })));
  const [app, key] = name.split('/');
  return el('td', { class: 'actions' },
    // The watch page takes this tab's admin token, which may moderate its chat.
    el('a', { href: `/watch/${app}/${key}`, text: 'Watch and moderate chat' }), ' ', kick, ' ', record);
}

function sum(byProtocol) {
  return Object.values(byProtocol || {}).reduce((a, b) => a + (Number(b) || 0), 0);
}

function streamRow(stream) {
  const name = String(stream.name);
  const s = stream.stats || {};
  const video = s.media?.video;
  const audio = s.media?.audio;
  const publisher = [s.publisher_protocol, s.publisher_user, s.publisher_peer].filter(Boolean).join(' · ');
  const rec = recording.get(name);
  return el('tr', { 'data-stream': name },
    el('td', { text: name }),
    el('td', { class: 'wrap', text: publisher || '–' }),
    el('td', { text: formatDuration(s.uptime_seconds) }),
    el('td', { text: `${sum(s.viewers)} (${sum(s.viewers_total)} in all)` }),
    el('td', { class: 'wrap', text: [
      video ? `${video.codec} ${formatVideo(video)} ${Number(s.rates?.fps || 0).toFixed(0)} fps` : '',
      audio ? `${audio.codec} ${(Number(audio.sample_rate) / 1000).toFixed(1)} kHz` : '',
    ].filter(Boolean).join(' · ') || '–' }),
    el('td', { text: formatBitrate(s.rates?.bitrate_bps) }),
    el('td', { text: String(s.frames_dropped ?? 0) }),
    el('td', { class: 'recording', text: rec === true ? 'on' : rec === false ? 'off' : '?' }),
    actions(name));
}

async function readRecording(name) {
  const answer = await api(`${path(name)}/recording`);
  if (answer.ok) recording.set(name, answer.body?.recording === true);
  else if (answer.code === 'not_recording') recording.set(name, false);
}

async function refreshStreams() {
  const answer = await api('/api/v1/streams');
  if (!answer.ok) {
    streamsBody.replaceChildren();
    say('status', refused(answer), 'refused');
    return false;
  }
  const streams = (Array.isArray(answer.body?.streams) ? answer.body.streams : [])
    .filter((s) => typeof s?.name === 'string');
  await Promise.all(streams.map((s) => readRecording(s.name)));
  streamsBody.replaceChildren(...streams.map(streamRow));
  say('status', `${streams.length} live stream${streams.length === 1 ? '' : 's'}, updated ${new Date().toLocaleTimeString()}.`, 'ok');
  return true;
}

function addresses(value) {
  if (Array.isArray(value)) return value.join(', ') || '–';
  if (value && typeof value === 'object') {
    return Object.entries(value).map(([what, where]) => `${what} ${where}`).join(', ') || '–';
  }
  return value ? String(value) : '–';
}

async function refreshNodes() {
  const answer = await api('/api/v1/nodes');
  if (!answer.ok) {
    nodesBody.replaceChildren();
    say('nodes-status', refused(answer), 'error');
    return;
  }
  const nodes = Array.isArray(answer.body?.nodes) ? answer.body.nodes : [];
  say('nodes-status', answer.body?.cluster ? `Cluster of ${nodes.length} node${nodes.length === 1 ? '' : 's'}.` : 'A single node (cluster mode is off).');
  nodesBody.replaceChildren(...nodes.map((n) => el('tr', {},
    el('td', { text: `${n.id}${n.self ? ' (this node)' : ''}` }),
    el('td', { class: 'wrap', text: addresses(n.addresses) }),
    el('td', { text: typeof n.load === 'object' ? JSON.stringify(n.load) : String(n.load ?? '–') }),
    el('td', { text: n.draining ? 'draining' : 'serving' }))));
}

async function refresh() {
  if (await refreshStreams()) await refreshNodes();
  else {
    nodesBody.replaceChildren();
    say('nodes-status', '');
  }
}

const metrics = document.getElementById('metrics');
if (page.metricsPort) {
  const url = `${location.protocol}//${location.hostname}:${page.metricsPort}/metrics`;
  metrics.replaceChildren('Prometheus metrics: ', el('a', { href: url, text: url }),
    ' (the metrics port; usually reachable only from inside your network).');
} else {
  metrics.textContent = 'The metrics listener is off on this node.';
}

tokenField(refresh);
every(REFRESH_MS, refresh);
