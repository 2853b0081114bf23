// The watch page's players, in the order it tries them: WebRTC (WHEP, `POST
// /whep/{app}/{key}`), the lowest latency, then LL-HLS (llhls.js, through Media Source
// Extensions), then HLS in the <video> element itself (Safari, and Chromium's built-in HLS
// player, which plays the node's MPEG-TS playlists).
//
// `start(current)` resolves `{ok: true}` once the picture plays, or `{ok: false, reason}`
// (words) when this protocol cannot play here, so the page tries the next one; while the
// stream is not live yet, or the token is refused, it keeps trying (every RETRY_MS) for as
// long as `current()` holds. `stats()` reads the browser's own counters: `getStats()` for
// WebRTC, `getVideoPlaybackQuality()` and the playlist's seekable range for HLS.

import { getToken, say } from './common.js';
import {
  exchange, hangUp, iceServers, preferVideo, refusalText, webrtcInBrowser, webrtcOn,
} from './webrtc.js';

/** Wait between two tries while the stream is not live. */
export const RETRY_MS = 3000;
/** How long WebRTC may take from the node's answer to the first decoded frame. */
const FIRST_FRAME_MS = 8000;
/** A WebRTC picture whose decoded frames stop advancing this long is lost. */
const STALL_MS = 6000;

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const STALE = { ok: false, stale: true };

/** The player over WHEP; `url()` is the WHEP endpoint, `lost(why)` is called when a
 * picture that played stops (the connection failed, the stream ended). */
export function whepPlayer(video, url, lost) {
  let pc = null;
  let location = '';
  let watchdog = 0;
  /** The counters at the previous `stats()`, for rates over the last interval. */
  let previous = null;

  function stop() {
    clearInterval(watchdog);
    watchdog = 0;
    if (pc) {
      pc.close();
      pc = null;
    }
    hangUp(location);
    location = '';
    previous = null;
    if (video.srcObject) video.srcObject = null;
  }

  /** The video and audio `inbound-rtp` reports and the selected candidate pair's RTT. */
  async function inbound() {
    if (!pc) return null;
    const report = await pc.getStats();
    const found = { video: null, audio: null, rtt: null };
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') found.video = s;
      else if (s.type === 'inbound-rtp' && s.kind === 'audio') found.audio = s;
      else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded'
        && typeof s.currentRoundTripTime === 'number') found.rtt = s.currentRoundTripTime;
    });
    return found;
  }

  async function firstFrame(current) {
    const deadline = performance.now() + FIRST_FRAME_MS;
    const seconds = FIRST_FRAME_MS / 1000;
    for (;;) {
      if (!current() || !pc) return STALE;
      if (pc.connectionState === 'failed') {
        return { ok: false, reason: 'The WebRTC connection failed (UDP to the node may be blocked).' };
      }
      const frames = (await inbound())?.video?.framesDecoded || 0;
      if (frames > 0) return { ok: true, frames };
      if (performance.now() >= deadline) {
        return {
          ok: false,
          reason: pc.connectionState === 'connected'
            ? `WebRTC connected, but no picture came within ${seconds} s.`
            : `WebRTC did not connect within ${seconds} s (UDP to the node may be blocked).`,
        };
      }
      await delay(200);
    }
  }

  /** Calls `lost` once the connection fails or the picture stops advancing. */
  function watch(peer, frames) {
    let lastFrames = frames;
    let lastProgress = performance.now();
    const end = (why) => {
      if (pc !== peer) return;
      stop();
      lost(why);
    };
    peer.addEventListener('connectionstatechange', () => {
      if (peer.connectionState === 'failed' || peer.connectionState === 'closed') {
        end('The WebRTC connection was lost.');
      }
    });
    watchdog = setInterval(async () => {
      const decoded = (await inbound())?.video?.framesDecoded || 0;
      const now = performance.now();
      if (decoded > lastFrames) {
        lastFrames = decoded;
        lastProgress = now;
      } else if (now - lastProgress > STALL_MS) {
        end('The picture stopped (the stream may have ended).');
      }
    }, 1000);
  }

  async function start(current) {
    for (;;) {
      if (!current()) return STALE;
      say('player-status', 'Connecting over WebRTC…');
      const peer = new RTCPeerConnection({ iceServers: iceServers() });
      const videoIn = peer.addTransceiver('video', { direction: 'recvonly' });
      const capabilities = RTCRtpReceiver.getCapabilities ? RTCRtpReceiver.getCapabilities('video') : null;
      if (!preferVideo(videoIn, capabilities)) {
        peer.close();
        return { ok: false, reason: 'This browser decodes none of H.264, VP9, AV1 and VP8 over WebRTC.' };
      }
      peer.addTransceiver('audio', { direction: 'recvonly' });
      const stream = new MediaStream();
      peer.addEventListener('track', (event) => stream.addTrack(event.track));
      let answer;
      try {
        answer = await exchange(url(), peer, getToken());
      } catch (error) {
        peer.close();
        return { ok: false, reason: `The WebRTC negotiation failed (${error?.message || error}).` };
      }
      if (!current()) {
        peer.close();
        if (answer.ok) hangUp(answer.location);
        return STALE;
      }
      if (!answer.ok) {
        peer.close();
        if (answer.code === 'stream_not_found') {
          say('player-status', 'Waiting for the stream to go live…');
        } else if (answer.status === 401 || answer.status === 403) {
          say('player-status', `${refusalText(answer)} Paste another token at the top.`, 'error');
        } else {
          return { ok: false, reason: refusalText(answer) };
        }
        await delay(RETRY_MS);
        continue;
      }
      pc = peer;
      location = answer.location;
      video.srcObject = stream;
      video.play().catch(() => say('player-status', 'Press play to start.'));
      const first = await firstFrame(current);
      if (!first.ok) {
        if (!first.stale) stop();
        return first;
      }
      watch(peer, first.frames);
      return { ok: true };
    }
  }

  async function stats() {
    const found = await inbound();
    const v = found?.video;
    if (!v) return null;
    const a = found.audio;
    const now = {
      buffer: v.jitterBufferDelay || 0,
      emitted: v.jitterBufferEmittedCount || 0,
      decode: v.totalDecodeTime || 0,
      frames: v.framesDecoded || 0,
      energy: a?.totalAudioEnergy || 0,
      duration: a?.totalSamplesDuration || 0,
    };
    let latency = '';
    let level = null;
    if (previous) {
      const emitted = now.emitted - previous.emitted;
      const decoded = now.frames - previous.frames;
      if (emitted > 0) {
        const buffer = (now.buffer - previous.buffer) / emitted;
        const decode = decoded > 0 ? (now.decode - previous.decode) / decoded : 0;
        const network = (found.rtt ?? 0) / 2;
        latency = `≈ ${Math.round(1000 * (network + buffer + decode))} ms on the receiving side (network, jitter buffer, decoding)`;
      }
      const duration = now.duration - previous.duration;
      // The RMS level over the last interval: the energy is the sum of squared samples
      // times their duration.
      if (duration > 0) level = Math.sqrt(Math.max(0, now.energy - previous.energy) / duration);
    }
    previous = now;
    return {
      latency,
      width: v.frameWidth || 0,
      height: v.frameHeight || 0,
      fps: typeof v.framesPerSecond === 'number' ? v.framesPerSecond : null,
      frames: now.frames,
      dropped: v.framesDropped || 0,
      audioPackets: a?.packetsReceived || 0,
      audioLevel: level,
    };
  }

  return {
    name: 'WebRTC (WHEP)',
    protocol: 'whep',
    available: () => webrtcOn && webrtcInBrowser,
    unavailable: () => (webrtcOn
      ? 'This browser has no WebRTC.'
      : 'WebRTC is off on this node.'),
    start,
    stop,
    stats,
  };
}

/** Resolves true once the playlist `url(true)` answers (the stream may not be live yet, or
 * not have made a segment), trying every RETRY_MS; false once `current()` no longer holds. */
export async function playlistReady(url, current) {
  for (;;) {
    if (!current()) return false;
    let response = null;
    try {
      response = await fetch(url(true), { cache: 'no-store' });
    } catch {
      // The node did not answer: try again.
    }
    if (response && response.ok) return current();
    if (response && (response.status === 401 || response.status === 403)) {
      say('player-status', 'The node refused to play this stream with your token. Paste another at the top.', 'error');
    } else {
      say('player-status', 'Waiting for the stream to go live…');
    }
    await delay(RETRY_MS);
  }
}

/** What a <video> element playing by itself says of its picture: `read()` gives the size,
 * the frames decoded and dropped, and the frame rate since the previous `read()`; `reset()`
 * forgets the previous one (a new start). */
export function elementCounters(video) {
  let lastFrames = null;
  let lastAt = 0;

  function read() {
    const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    let fps = null;
    if (quality) {
      const now = performance.now();
      if (lastFrames !== null && now > lastAt) {
        fps = ((quality.totalVideoFrames - lastFrames) * 1000) / (now - lastAt);
      }
      lastFrames = quality.totalVideoFrames;
      lastAt = now;
    }
    return {
      width: video.videoWidth,
      height: video.videoHeight,
      fps,
      frames: quality ? quality.totalVideoFrames : null,
      dropped: quality ? quality.droppedVideoFrames : null,
      audioPackets: null,
      audioLevel: null,
    };
  }

  return { read, reset: () => { lastFrames = null; } };
}

/** The player over HLS, in the <video> element itself; `url(withToken)` is the playlist. */
export function hlsPlayer(video, url) {
  const counters = elementCounters(video);

  async function start(current) {
    if (!(await playlistReady(url, current))) return STALE;
    counters.reset();
    video.src = url(true);
    try {
      await video.play();
    } catch {
      say('player-status', 'Press play to start.');
    }
    return { ok: true };
  }

  function stop() {
    if (video.hasAttribute('src')) {
      video.removeAttribute('src');
      video.load();
    }
  }

  async function stats() {
    let latency = '';
    if (video.seekable.length > 0 && video.readyState >= 2) {
      const behind = video.seekable.end(video.seekable.length - 1) - video.currentTime;
      latency = `${Math.max(0, behind).toFixed(1)} s behind the newest segment`;
    } else if (video.readyState >= 2) {
      latency = 'not reported by this browser';
    }
    return { latency, ...counters.read() };
  }

  return {
    name: 'HLS',
    protocol: 'hls',
    available: () => video.canPlayType('application/vnd.apple.mpegurl') !== '',
    unavailable: () => 'This browser cannot play HLS by itself.',
    start,
    stop,
    stats,
  };
}
