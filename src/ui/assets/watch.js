// Watch: plays `app/key` and shows the chat room beside it.
//
// Playback is HLS today: natively where the browser plays HLS in a <video> (Safari, and
// Chromium, whose built-in HLS player plays the node's MPEG-TS playlists); elsewhere the
// page offers the playlist and RTMP URLs for VLC. PLAYERS is the seam for WebRTC playback:
// a WHEP player goes first in the list once the node serves `/whep/{app}/{key}`.

import {
  NAME, claims, el, every, getToken, page, rtmpUrl, say, takeTokenFromAddress, tokenField,
} from './common.js';
import { connect, explain } from './chat.js';

takeTokenFromAddress();

const app = page.app || '';
const key = page.key || '';
const video = document.getElementById('video');
const RETRY_MS = 3000;

function hlsUrl(withToken) {
  const token = withToken ? getToken() : '';
  const query = token ? `?token=${encodeURIComponent(token)}` : '';
  return `/${app}/${key}/index.m3u8${query}`;
}

/** HLS in the <video> element itself. */
const nativeHls = {
  name: 'HLS',
  available: () => video.canPlayType('application/vnd.apple.mpegurl') !== '',
  async start(current) {
    // Wait for the playlist: the stream may not be live yet, or not produced a segment.
    for (;;) {
      if (!current()) return;
      let response = null;
      try {
        response = await fetch(hlsUrl(true), { cache: 'no-store' });
      } catch {
        // The node did not answer: try again.
      }
      if (response && response.ok) break;
      if (response && (response.status === 401 || response.status === 403)) {
        say('player-status', 'The node refused to play this stream with your token. Paste another at the top.', 'error');
      } else {
        say('player-status', 'Waiting for the stream to go live…');
      }
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
    if (!current()) return;
    video.src = hlsUrl(true);
    try {
      await video.play();
    } catch {
      say('player-status', 'Press play to start.');
    }
  },
};

/** Players in order of preference; the first available one plays. */
const PLAYERS = [nativeHls];

let player = null;
/** Bumped by each (re)start, so an older start's waiting loop gives up. */
let generation = 0;

async function startPlayback() {
  generation += 1;
  const mine = generation;
  player = PLAYERS.find((p) => p.available()) || null;
  if (!player) {
    say('player-status', 'This browser cannot play HLS by itself: open the playlist below in VLC (or any HLS player).', 'error');
    document.querySelector('.elsewhere').open = true;
    return;
  }
  say('stat-protocol', player.name);
  await player.start(() => mine === generation);
}

video.addEventListener('playing', () => say('player-status', 'Live.'));
video.addEventListener('waiting', () => say('player-status', 'Buffering…'));
video.addEventListener('error', () => {
  say('player-status', 'Playback stopped (the stream may have ended); trying again…', 'error');
  setTimeout(startPlayback, RETRY_MS);
});
video.addEventListener('ended', () => {
  say('player-status', 'The stream ended; waiting for it to come back…');
  setTimeout(startPlayback, RETRY_MS);
});

/** The audio's peak level, read through Web Audio once the viewer unmutes (the meter
 * carries the sound from then on, so it is only made when someone listens). */
let meter = null;

function audioPeak() {
  if (video.muted) return null;
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

// The browser's own statistics.
let lastFrames = null;
let lastAt = 0;
every(1000, () => {
  const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  if (video.videoWidth) say('stat-resolution', `${video.videoWidth}×${video.videoHeight}`);
  if (video.seekable.length > 0 && video.readyState >= 2) {
    const behind = video.seekable.end(video.seekable.length - 1) - video.currentTime;
    say('stat-latency', `${Math.max(0, behind).toFixed(1)} s behind the newest segment`);
  } else if (video.readyState >= 2) {
    say('stat-latency', 'not reported by this browser');
  }
  if (quality) {
    const now = performance.now();
    if (lastFrames !== null && now > lastAt) {
      const fps = ((quality.totalVideoFrames - lastFrames) * 1000) / (now - lastAt);
      say('stat-fps', `${fps.toFixed(1)} fps`);
    }
    lastFrames = quality.totalVideoFrames;
    lastAt = now;
    say('stat-frames', String(quality.totalVideoFrames));
    say('stat-dropped', String(quality.droppedVideoFrames));
  }
  const peak = audioPeak();
  const audio = document.getElementById('stat-audio');
  audio.dataset.level = peak === null ? '' : String(peak);
  audio.textContent = peak === null
    ? 'muted'
    : peak > 0 ? `peak ${(20 * Math.log10(peak)).toFixed(0)} dBFS` : 'silent';
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
  say('url-rtmp', rtmpUrl(app, key) || 'RTMP is off on this node');
  tokenField(() => {
    joinChat();
    startPlayback();
  });
  startPlayback();
  joinChat();
} else {
  say('player-status', 'That is not a stream name.', 'error');
}
