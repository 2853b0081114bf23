// Go live: the browser's camera and microphone (getUserMedia, with device, resolution and
// bitrate choices and a preview), published as `app/key` over WHIP (`POST
// /whip/{app}/{key}`, H.264 video and Opus audio, the publisher token as Bearer); Stop
// sends DELETE to the session's Location. `?autostart=1` goes live without a click
// (kiosks, tests). The page also shows what OBS or FFmpeg needs to publish instead.

import {
  NAME, authOn, every, formatBitrate, formatDuration, getToken, page, say,
  takeTokenFromAddress, tokenField,
} from './common.js';
import {
  exchange, hangUp, iceServers, preferCodec, preferVideo, refusalText, webrtcInBrowser, webrtcOn,
} from './webrtc.js';

takeTokenFromAddress();

const app = page.app || '';
const key = page.key || '';
const preview = document.getElementById('preview');
const startButton = document.getElementById('start');
const stopButton = document.getElementById('stop');
const cameraChoice = document.getElementById('camera');
const microphoneChoice = document.getElementById('microphone');
const resolutionChoice = document.getElementById('resolution');
const bitrateChoice = document.getElementById('bitrate');

/** How long the peer connection may take to come up after the node's answer. */
const CONNECT_MS = 15000;

const RESOLUTIONS = { 360: [640, 360], 720: [1280, 720], 1080: [1920, 1080] };

/** The camera and microphone, once opened. */
let media = null;
/** The WHIP session while connecting or live: `{pc, location, video, audio, timer, since}`. */
let session = null;

const STATES = { offline: 'Offline', connecting: 'Connecting…', live: 'Live' };

/** Shows `state` (offline, connecting, live) and, when given, a status line. */
function show(state, text, kind = '') {
  const badge = document.getElementById('state');
  badge.textContent = STATES[state];
  badge.dataset.state = state;
  document.body.dataset.live = state;
  startButton.hidden = state !== 'offline';
  stopButton.hidden = state === 'offline';
  if (text !== undefined) say('status', text, kind);
  if (state !== 'live') {
    for (const id of ['stat-video', 'stat-bitrate', 'stat-uptime', 'stat-limit']) say(id, '–');
  }
}

function whipUrl() {
  return `/whip/${app}/${key}`;
}

/** What getUserMedia's error means, in words. */
function mediaError(error) {
  switch (error?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'The browser was not allowed to use the camera and microphone: allow them for this site (the icon in the address bar) and reload.';
    case 'NotFoundError':
      return 'No camera or microphone was found.';
    case 'NotReadableError':
    case 'AbortError':
      return 'The camera or microphone could not start: another application may be using it.';
    case 'OverconstrainedError':
      return 'The chosen camera or microphone is not available any more: pick another.';
    default:
      return `The camera could not start (${error?.message || error}).`;
  }
}

/** The getUserMedia constraints for the current choices. */
function constraints() {
  const [width, height] = RESOLUTIONS[resolutionChoice.value] || RESOLUTIONS[720];
  const video = { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } };
  if (cameraChoice.value) video.deviceId = { exact: cameraChoice.value };
  const audio = { echoCancellation: true, noiseSuppression: true };
  if (microphoneChoice.value) audio.deviceId = { exact: microphoneChoice.value };
  return { video, audio };
}

/** Fills `select` with the devices of `kind`, the one in use (`current`) selected. */
function fill(select, devices, kind, current, noun) {
  const mine = devices.filter((d) => d.kind === kind);
  select.replaceChildren(...mine.map((device, index) => {
    const option = document.createElement('option');
    option.value = device.deviceId;
    option.textContent = device.label || `${noun} ${index + 1}`;
    return option;
  }));
  if (current && mine.some((d) => d.deviceId === current)) select.value = current;
  select.disabled = mine.length === 0;
}

async function listDevices() {
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch {
    return;
  }
  const camera = media?.getVideoTracks()[0]?.getSettings().deviceId;
  const microphone = media?.getAudioTracks()[0]?.getSettings().deviceId;
  fill(cameraChoice, devices, 'videoinput', camera, 'Camera');
  fill(microphoneChoice, devices, 'audioinput', microphone, 'Microphone');
}

/** (Re)opens the camera and microphone with the current choices; while live, the new
 * tracks replace the old ones in the session (no renegotiation). Answers whether it did. */
async function openDevices() {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    say('status', 'Browsers give the camera only to pages served over HTTPS or from localhost: open this page over HTTPS, or publish with OBS (below).', 'error');
    return false;
  }
  let next;
  try {
    next = await navigator.mediaDevices.getUserMedia(constraints());
  } catch (error) {
    // Some phones open one camera at a time: free the current one and try again.
    if (media && (error?.name === 'NotReadableError' || error?.name === 'AbortError')) {
      media.getTracks().forEach((track) => track.stop());
      try {
        next = await navigator.mediaDevices.getUserMedia(constraints());
      } catch (again) {
        say('status', mediaError(again), 'error');
        return false;
      }
    } else {
      say('status', mediaError(error), 'error');
      return false;
    }
  }
  const old = media;
  media = next;
  preview.srcObject = media;
  if (session) {
    await session.video?.sender.replaceTrack(media.getVideoTracks()[0] || null);
    await session.audio?.sender.replaceTrack(media.getAudioTracks()[0] || null);
  }
  if (old) old.getTracks().forEach((track) => track.stop());
  await listDevices();
  const settings = media.getVideoTracks()[0]?.getSettings();
  if (!session) {
    say('status', settings?.width
      ? `Camera ready (${settings.width}×${settings.height}). Press Go live when you are.`
      : 'Camera ready. Press Go live when you are.');
  }
  return true;
}

/** Caps the video sender at the chosen bitrate. */
async function applyBitrate() {
  const sender = session?.video?.sender;
  if (!sender) return;
  const parameters = sender.getParameters();
  if (!parameters.encodings || parameters.encodings.length === 0) return;
  parameters.encodings[0].maxBitrate = Number(bitrateChoice.value);
  try {
    await sender.setParameters(parameters);
  } catch (error) {
    say('status', `The browser did not take the new bitrate (${error?.message || error}).`, 'error');
  }
}

/** Ends `mine` (the current session by default): DELETE on its Location, the connection
 * closed; the page shows `text`. */
function stop(mine = session, text = 'You are offline.', kind = '') {
  if (!mine) return;
  if (session === mine) session = null;
  clearTimeout(mine.timer);
  hangUp(mine.location);
  mine.pc.close();
  show('offline', text, kind);
}

function onConnection(mine) {
  if (session !== mine) return;
  const state = mine.pc.connectionState;
  if (state === 'connected') {
    clearTimeout(mine.timer);
    if (!mine.since) mine.since = performance.now();
    show('live', `You are live as ${app}/${key}.`);
  } else if (state === 'disconnected') {
    say('status', 'The connection to the node is interrupted; waiting for it to come back…', 'error');
  } else if (state === 'failed' || state === 'closed') {
    stop(mine, 'The connection to the node was lost: you are offline. Press Go live to try again.', 'error');
  }
}

async function goLive() {
  if (session) return;
  if (!media && !(await openDevices())) return;
  const videoTrack = media.getVideoTracks()[0];
  const audioTrack = media.getAudioTracks()[0];
  if (!videoTrack) {
    say('status', 'No camera is open: the node needs video.', 'error');
    return;
  }
  const pc = new RTCPeerConnection({ iceServers: iceServers() });
  const mine = { pc, location: '', video: null, audio: null, timer: 0, since: 0 };
  session = mine;
  show('connecting', 'Connecting to the node…');
  mine.video = pc.addTransceiver(videoTrack, {
    direction: 'sendonly',
    streams: [media],
    sendEncodings: [{ maxBitrate: Number(bitrateChoice.value) }],
  });
  const videoCodecs = RTCRtpSender.getCapabilities ? RTCRtpSender.getCapabilities('video') : null;
  // H.264 first (every player gets it); a browser without it sends VP9, AV1 or VP8, which
  // WebRTC viewers get (and LL-HLS and recordings, VP8 aside).
  if (!preferVideo(mine.video, videoCodecs)) {
    stop(mine, 'This browser can send none of the video codecs the node takes (H.264, VP9, AV1, VP8): use another browser, or OBS (below).', 'error');
    return;
  }
  if (audioTrack) {
    mine.audio = pc.addTransceiver(audioTrack, { direction: 'sendonly', streams: [media] });
    const audioCodecs = RTCRtpSender.getCapabilities ? RTCRtpSender.getCapabilities('audio') : null;
    preferCodec(mine.audio, audioCodecs, 'audio/opus');
  }
  pc.addEventListener('connectionstatechange', () => onConnection(mine));
  let answer;
  try {
    answer = await exchange(whipUrl(), pc, getToken());
  } catch (error) {
    stop(mine, `Could not go live: the browser did not take the node's answer (${error?.message || error}).`, 'error');
    return;
  }
  if (session !== mine) {
    // Stopped while the offer was on its way.
    if (answer.ok) hangUp(answer.location);
    return;
  }
  if (!answer.ok) {
    let why = refusalText(answer, 'publisher');
    if (answer.status === 409) why = `Someone is already live as ${app}/${key}. (${answer.message})`;
    if (answer.code === 'webrtc_disabled') why += ' Publish with OBS or FFmpeg over RTMP (below).';
    stop(mine, `Could not go live: ${why}`, 'error');
    return;
  }
  mine.location = answer.location;
  onConnection(mine);
  if (session === mine && mine.pc.connectionState !== 'connected') {
    mine.timer = setTimeout(() => {
      if (session === mine && mine.pc.connectionState !== 'connected') {
        stop(mine, `The connection to the node did not come up within ${CONNECT_MS / 1000} s (UDP to the node may be blocked): you are offline.`, 'error');
      }
    }, CONNECT_MS);
  }
}

// What is being sent, from the browser's own statistics.
let previous = null;
every(1000, async () => {
  const mine = session;
  if (!mine || !mine.since) {
    previous = null;
    return;
  }
  const report = await mine.pc.getStats();
  let video = null;
  let bytes = 0;
  const codecs = new Map();
  report.forEach((s) => {
    if (s.type === 'codec') codecs.set(s.id, s.mimeType);
    if (s.type === 'outbound-rtp') {
      bytes += s.bytesSent || 0;
      if (s.kind === 'video') video = s;
    }
  });
  if (session !== mine) return;
  const now = performance.now();
  if (video) {
    const codec = (codecs.get(video.codecId) || '').replace(/^video\//, '');
    const size = video.frameWidth ? `${video.frameWidth}×${video.frameHeight}` : '';
    const fps = typeof video.framesPerSecond === 'number' ? `${video.framesPerSecond.toFixed(0)} fps` : '';
    say('stat-video', [codec, size, fps].filter(Boolean).join(' · ') || '–');
    const limit = video.qualityLimitationReason;
    say('stat-limit', !limit || limit === 'none' ? 'nothing' : limit === 'bandwidth' ? 'the network' : limit === 'cpu' ? 'this device\'s processor' : limit);
  }
  if (previous && now > previous.at) say('stat-bitrate', formatBitrate(((bytes - previous.bytes) * 8000) / (now - previous.at)));
  previous = { at: now, bytes };
  say('stat-uptime', formatDuration((now - mine.since) / 1000));
});

function showPublishingElsewhere() {
  const rtmpPort = page.rtmpPort;
  document.getElementById('obs-rtmp').hidden = !rtmpPort;
  document.getElementById('obs-rtmp-off').hidden = Boolean(rtmpPort);
  if (rtmpPort) {
    say('url-rtmp-server', `rtmp://${location.hostname}:${rtmpPort}/${app}`);
    say('rtmp-key', key);
    document.getElementById('rtmp-token-note').hidden = !authOn;
  }
  document.getElementById('obs-whip').hidden = !webrtcOn;
  say('url-whip', new URL(whipUrl(), location.href).href);
}

async function main() {
  if (!NAME.test(app) || !NAME.test(key)) {
    show('offline', 'That is not a stream name.', 'error');
    return;
  }
  document.title = `Go live: ${app}/${key} · ${document.title}`;
  say('stream-name', `${app}/${key}`);
  document.getElementById('watch-link').href = `/watch/${app}/${key}`;
  showPublishingElsewhere();
  tokenField(() => say('status', getToken() ? 'Token saved for this tab.' : 'Token forgotten.'));
  show('offline');
  if (!webrtcOn) {
    say('status', 'WebRTC is off on this node, so the browser cannot publish: use OBS or FFmpeg over RTMP (below).', 'error');
    return;
  }
  if (!webrtcInBrowser) {
    say('status', 'This browser has no WebRTC: use another browser, or OBS (below).', 'error');
    return;
  }
  startButton.addEventListener('click', () => goLive());
  stopButton.addEventListener('click', () => stop());
  for (const choice of [cameraChoice, microphoneChoice, resolutionChoice]) {
    choice.addEventListener('change', () => openDevices());
  }
  bitrateChoice.addEventListener('change', () => applyBitrate());
  // A page that closes ends its session at once rather than after the node's idle timeout.
  window.addEventListener('pagehide', () => session && hangUp(session.location));
  navigator.mediaDevices?.addEventListener?.('devicechange', () => listDevices());
  startButton.disabled = false;
  const opened = await openDevices();
  if (opened && new URLSearchParams(location.search).get('autostart') === '1') await goLive();
}

main();
