// Home: the live streams from `GET /api/v1/live` (refreshed every 2 s) and a form to
// watch a stream or go live as one.

import {
  NAME, api, el, every, formatBitrate, formatDuration, formatVideo, say, page,
  takeTokenFromAddress, tokenField,
} from './common.js';

takeTokenFromAddress();

const REFRESH_MS = 2000;
const table = document.getElementById('streams');
const body = table.querySelector('tbody');

function watchHref(name) {
  const [app, key] = name.split('/');
  return `/watch/${encodeURIComponent(app)}/${encodeURIComponent(key)}`;
}

function row(stream) {
  const name = String(stream.name);
  return el('tr', { 'data-stream': name },
    el('td', {}, el('a', { href: watchHref(name), text: name })),
    el('td', { text: String(stream.viewers ?? 0) }),
    el('td', { text: formatVideo(stream.video) }),
    el('td', { text: formatBitrate(stream.bitrate_bps) }),
    el('td', { text: formatDuration(stream.uptime_seconds) }));
}

async function refresh() {
  const answer = await api('/api/v1/live');
  if (!answer.ok) {
    table.hidden = true;
    if (answer.code === 'listing_disabled') {
      say('status', 'This node does not list its streams: enter a stream name below.');
    } else if (answer.status === 401 || answer.status === 403) {
      say('status', `The node wants a token to list its streams (${answer.message}). Paste one at the top.`, 'error');
    } else {
      say('status', `Could not list the streams: ${answer.message}.`, 'error');
    }
    return;
  }
  const streams = Array.isArray(answer.body?.streams) ? answer.body.streams : [];
  body.replaceChildren(...streams.filter((s) => typeof s?.name === 'string').map(row));
  table.hidden = streams.length === 0;
  say('status', streams.length === 0
    ? 'Nothing is live right now. Publish a stream and it shows up here.'
    : `${streams.length} live stream${streams.length === 1 ? '' : 's'}, updated ${new Date().toLocaleTimeString()}.`);
}

document.getElementById('pick').addEventListener('submit', (event) => {
  event.preventDefault();
  const app = document.getElementById('pick-app').value.trim();
  const key = document.getElementById('pick-key').value.trim();
  if (!NAME.test(app) || !NAME.test(key)) {
    say('status', 'Names are letters, digits, ".", "_" and "-" (not starting with a dot).', 'error');
    return;
  }
  const target = event.submitter?.value === 'publish' ? 'publish' : 'watch';
  window.location.assign(`/${target}/${app}/${key}`);
});

if (page.rtmpPort) {
  say('rtmp-url', `rtmp://${location.hostname}:${page.rtmpPort}/live/NAME`);
}
tokenField(refresh);
every(REFRESH_MS, refresh);
