// Watch: plays `app/key` and shows the chat room beside it.
//
// Playback tries WebRTC (WHEP) first, the lowest latency, and falls back to LL-HLS
// (about a second behind; llhls.js), then to the browser's own HLS player, when WebRTC is
// off on the node, refused, or does not bring a picture within a few seconds (players.js);
// the viewer can also pick one. Where neither plays, the page offers the
// playlist and RTMP URLs for VLC. The statistics are the browser's own.

import {
  NAME, claims, el, every, getToken, page, rtmpUrl, say, takeTokenFromAddress, tokenField,
} from './common.js';
import { connect, explain } from './chat.js';
import { llhlsPlayer } from './llhls.js';
import { RETRY_MS, hlsPlayer, whepPlayer } from './players.js';

takeTokenFromAddress();

const app = page.app || '';
const key = page.key || '';
const video = document.getElementById('video');
const statsList = document.getElementById('player-stats');
const choice = document.getElementById('protocol');

/** The URL of the stream's playlist `name`, with the token when `withToken`. */
function playlistUrl(name, withToken) {
  const token = withToken ? getToken() : '';
  const query = token ? `?token=${encodeURIComponent(token)}` : '';
  return `/${app}/${key}/${name}${query}`;
}

const hlsUrl = (withToken) => playlistUrl('index.m3u8', withToken);
const llUrl = (withToken) => playlistUrl('ll.m3u8', withToken);

const whepUrl = () => `/whep/${app}/${key}`;

const whep = whepPlayer(video, whepUrl, (why) => {
  say('player-status', `${why} Reconnecting…`, 'error');
  startPlayback();
});
const hls = hlsPlayer(video, hlsUrl);
const llhls = llhlsPlayer(video, llUrl, (why) => {
  say('player-status', `${why} Starting again…`, 'error');
  restartLater();
});

/** Players in order of preference, by the viewer's choice. */
const PLAYERS = {
  auto: [whep, llhls, hls], whep: [whep], llhls: [llhls], hls: [hls],
};

/** Whether `p` plays in the <video> element itself (an HLS player). */
const inElement = (p) => p === hls || p === llhls;

/** The player that plays now, or null. */
let player = null;
/** Bumped by each (re)start, so an older start gives up. */
let generation = 0;
/** When the current player started playing (for the note about sound). */
let playingSince = 0;

function showProtocol(current) {
  say('stat-protocol', current ? current.name : '–');
  statsList.dataset.protocol = current ? current.protocol : '';
  if (current) return;
  for (const id of ['stat-latency', 'stat-resolution', 'stat-fps', 'stat-frames', 'stat-dropped']) say(id, '–');
  statsList.dataset.frames = '';
  statsList.dataset.latencyMs = '';
}

async function startPlayback() {
  generation += 1;
  const mine = generation;
  const current = () => mine === generation;
  player = null;
  whep.stop();
  llhls.stop();
  hls.stop();
  showProtocol(null);
  say('player-note', '');
  const reasons = [];
  for (const candidate of PLAYERS[choice.value] || PLAYERS.auto) {
    if (!candidate.available()) {
      reasons.push(candidate.unavailable());
      continue;
    }
    const outcome = await candidate.start(current);
    if (!current()) return;
    if (outcome.ok) {
      player = candidate;
      playingSince = performance.now();
      showProtocol(candidate);
      if (reasons.length > 0) say('player-note', `Not over WebRTC: ${reasons.join(' ')} Playing over ${candidate.name} instead.`);
      return;
    }
    reasons.push(outcome.reason);
  }
  say('player-status', `Cannot play here: ${reasons.join(' ')}`, 'error');
  if (choice.value !== 'auto') {
    say('player-note', 'Choose "Automatic" to let the page pick what works.');
  } else {
    say('player-note', 'Open the playlist below in VLC (or any HLS player).');
    document.querySelector('.elsewhere').open = true;
  }
}

/** Starts playback again after RETRY_MS, unless something else (re)started it meanwhile. */
function restartLater() {
  const mine = generation;
  setTimeout(() => mine === generation && startPlayback(), RETRY_MS);
}

choice.addEventListener('change', () => startPlayback());
video.addEventListener('playing', () => say('player-status', 'Live.'));
video.addEventListener('waiting', () => say('player-status', 'Buffering…'));
video.addEventListener('error', () => {
  if (!inElement(player)) return;
  say('player-status', 'Playback stopped (the stream may have ended); trying again…', 'error');
  restartLater();
});
video.addEventListener('ended', () => {
  if (!inElement(player)) return;
  say('player-status', 'The stream ended; waiting for it to come back…');
  restartLater();
});

/** The HLS audio's peak level, read through Web Audio once the viewer unmutes (the meter
 * carries the sound from then on, so it is only made when someone listens). WebRTC's
 * level comes from `getStats()` instead. */
let meter = null;

function audioPeak() {
  if (video.muted || !inElement(player)) return null;
  if (!meter) {
    if (!window.AudioContext) return null;
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 2048;
    context.createMediaElementSource(video).connect(analyser);
    analyser.connect(context.destination);
    meter = { context, analyser, samples: new Float32Array(analyser.fftSize) };
  }
  // Suspended until the page has had a click (autoplay policy); unmuting is one.
  if (meter.context.state === 'suspended') meter.context.resume().catch(() => {});
  meter.analyser.getFloatTimeDomainData(meter.samples);
  let peak = 0;
  for (const sample of meter.samples) peak = Math.max(peak, Math.abs(sample));
  return peak;
}

video.addEventListener('volumechange', () => audioPeak());

const dB = (level) => (20 * Math.log10(level)).toFixed(0);

function showAudio(stats) {
  const audio = document.getElementById('stat-audio');
  let level = null;
  let text;
  if (player === whep && stats) {
    // The browser measures what it plays: nothing while the element is muted.
    level = video.muted ? null : stats.audioLevel;
    if (stats.audioPackets === 0 && performance.now() - playingSince > 4000) {
      text = 'none received (the stream may have no sound)';
    } else if (video.muted) {
      text = 'muted';
    } else if (level === null) {
      text = '–';
    } else {
      text = level > 0 ? `level ${dB(level)} dBFS` : 'silent';
    }
  } else {
    level = audioPeak();
    text = level === null ? 'muted' : level > 0 ? `peak ${dB(level)} dBFS` : 'silent';
  }
  audio.dataset.level = level === null ? '' : String(level);
  audio.textContent = text;
}

// The browser's own statistics, every second.
every(1000, async () => {
  const playing = player;
  const stats = playing ? await playing.stats() : null;
  if (playing !== player) return;
  if (stats) {
    say('stat-latency', stats.latency || '–');
    statsList.dataset.latencyMs = stats.latencyMs == null ? '' : String(Math.round(stats.latencyMs));
    if (stats.width) say('stat-resolution', `${stats.width}×${stats.height}`);
    if (stats.fps !== null) say('stat-fps', `${stats.fps.toFixed(1)} fps`);
    if (stats.frames !== null) {
      say('stat-frames', String(stats.frames));
      statsList.dataset.frames = String(stats.frames);
    }
    if (stats.dropped !== null) say('stat-dropped', String(stats.dropped));
  }
  showAudio(stats);
});

// Chat.
const log = document.getElementById('chat-log');
const input = document.getElementById('chat-input');
const MAX_LINES = 500;
let room = null;
let me = null;

function moderates() {
  const roles = Array.isArray(me?.roles) ? me.roles : [];
  return roles.includes('moderator') || roles.includes('admin');
}

function time(ts) {
  const date = new Date(Number(ts));
  return Number.isFinite(date.getTime()) ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '';
}

function moderation(message) {
  const user = message.user?.id;
  const button = (label, command) => {
    const b = el('button', { type: 'button', class: 'mini', text: label });
    b.addEventListener('click', () => {
      if (!room?.send(command)) note('Not connected to the chat.', 'error');
    });
    return b;
  };
  return el('span', { class: 'mod' },
    button('Delete', { type: 'delete', id: message.id }),
    user ? button('Mute 5 min', { type: 'mute', user, seconds: 300 }) : null,
    user ? button('Ban', { type: 'ban', user }) : null);
}

function append(line) {
  log.append(line);
  while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

function message(m) {
  if (typeof m.text !== 'string') return;
  const line = el('li', { class: 'msg', 'data-id': String(m.id) },
    el('time', { text: time(m.ts) }),
    el('b', { class: 'author', text: m.user?.name ? String(m.user.name) : 'system' }),
    el('span', { class: 'text', text: m.text }),
    moderates() ? moderation(m) : null);
  append(line);
}

function note(text, kind = 'note') {
  append(el('li', { class: kind, text }));
}

function onEvent(event) {
  switch (event.type) {
    case 'history':
      log.replaceChildren();
      (Array.isArray(event.messages) ? event.messages : []).forEach(message);
      break;
    case 'message':
      message(event);
      break;
    case 'system':
      note(String(event.text ?? ''));
      break;
    case 'join':
    case 'leave':
      say('chat-members', `(${Number(event.members) || 0} here)`);
      break;
    case 'deleted':
      log.querySelector(`li[data-id="${Number(event.id)}"]`)?.remove();
      break;
    case 'cleared':
      log.replaceChildren();
      note('The chat was cleared.');
      break;
    case 'muted':
      note(`${event.user === me?.sub ? 'You are' : 'A user is'} muted until ${time(event.until)}.`);
      break;
    case 'banned':
      note(event.user === me?.sub ? 'You were banned from this chat.' : 'A user was banned.');
      break;
    case 'slow_mode':
      note(Number(event.seconds) > 0 ? `Slow mode: one message every ${Number(event.seconds)} s.` : 'Slow mode is off.');
      break;
    case 'error':
      say('chat-status', explain(String(event.code), String(event.reason ?? '')), 'error');
      break;
    default:
      break;
  }
}

function onState(state, detail) {
  if (state === 'open') {
    say('chat-status', me?.name ? `Chatting as ${me.name}.` : 'Reading. Add a token with a name at the top to post.');
  } else if (state === 'retrying') {
    say('chat-status', detail, 'error');
  } else {
    say('chat-status', `You were disconnected from the chat (${detail}).`, 'error');
  }
}

function joinChat() {
  room?.close();
  const token = getToken();
  me = claims(token);
  document.getElementById('chat-tools').hidden = !moderates();
  room = connect(app, key, token, { event: onEvent, state: onState });
}

let sent = 0;
document.getElementById('chat-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  if (!getToken()) {
    say('chat-status', explain('sign_in_required'), 'error');
    return;
  }
  sent += 1;
  if (room?.send({ type: 'message', text, client_id: `c${sent}` })) input.value = '';
  else say('chat-status', 'Not connected to the chat yet.', 'error');
});
document.getElementById('slow').addEventListener('change', (event) => {
  room?.send({ type: 'slow_mode', seconds: Number(event.target.value) });
});
document.getElementById('chat-clear').addEventListener('click', () => room?.send({ type: 'clear' }));

if (NAME.test(app) && NAME.test(key)) {
  document.title = `${app}/${key} · ${document.title}`;
  say('stream-name', `${app}/${key}`);
  say('url-hls', new URL(hlsUrl(false), location.href).href);
  say('url-llhls', page.llhls === 'on' ? new URL(llUrl(false), location.href).href : 'LL-HLS is off on this node');
  say('url-whep', new URL(whepUrl(), location.href).href);
  say('url-rtmp', rtmpUrl(app, key) || 'RTMP is off on this node');
  const requested = new URLSearchParams(location.search).get('protocol');
  if (requested && PLAYERS[requested]) choice.value = requested;
  tokenField(() => {
    joinChat();
    startPlayback();
  });
  startPlayback();
  joinChat();
} else {
  say('player-status', 'That is not a stream name.', 'error');
}
