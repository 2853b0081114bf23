// The watch page's Low-Latency HLS player: the node's fMP4 playlist
// (`/{app}/{key}/ll.m3u8`: parts, blocking reloads, preload hints) played through Media
// Source Extensions by hls.js (vendored as `hls.mjs`, loaded only when this player starts)
// in its low-latency mode. It holds back what the playlist's PART-HOLD-BACK says (three
// parts, about a second), where a plain HLS player holds back three whole segments.
//
// hls.js runs without its worker: the pages' Content-Security-Policy allows no `blob:`
// scripts. Its errors are recovered as its documentation says (a network error reloads, a
// media error resets the media pipeline); what it cannot recover calls `lost(why)`.

import { say } from './common.js';
import { elementCounters, playlistReady } from './players.js';

/** How long from the playlist's first answer to the first frame. */
const FIRST_FRAME_MS = 15000;

const STALE = { ok: false, stale: true };

/** Whether this browser has Media Source Extensions (hls.js needs them). */
const mseInBrowser = Boolean(window.ManagedMediaSource || window.MediaSource);

/** The LL-HLS player; `url(withToken)` is the LL playlist, `lost(why)` is called when
 * playback that started cannot go on. */
export function llhlsPlayer(video, url, lost) {
  let hls = null;
  const counters = elementCounters(video);

  function stop() {
    if (hls) {
      hls.destroy();
      hls = null;
    }
    if (video.hasAttribute('src')) {
      video.removeAttribute('src');
      video.load();
    }
  }

  async function start(current) {
    if (!(await playlistReady(url, current))) return STALE;
    let Hls;
    try {
      ({ default: Hls } = await import('./hls.mjs'));
    } catch {
      return { ok: false, reason: 'The LL-HLS player (hls.mjs) did not load.' };
    }
    if (!current()) return STALE;
    if (!Hls.isSupported()) return { ok: false, reason: 'This browser cannot play LL-HLS (no Media Source Extensions).' };
    counters.reset();
    const mine = new Hls({
      lowLatencyMode: true,
      enableWorker: false,
      backBufferLength: 30,
      // A stall (the start's, typically) makes hls.js hold back more from then on: by one
      // part here, not its default second (three parts and more of the node's). Behind
      // its hold-back, it plays up to 5 % faster (pitch kept) to get back; without that it
      // stays as far behind as its start left it (2.1 s where 1.3 s is reachable,
      // BENCHMARKS.md, "LL-HLS latency").
      liveSyncOnStallIncrease: 0.3,
      maxLiveSyncPlaybackRate: 1.05,
    });
    hls = mine;
    // Once a picture played, a failure is `lost` (the page starts again); before that it is
    // this start's answer (the page tries the next player).
    let played = false;
    const outcome = new Promise((resolve) => {
      const timer = setTimeout(() => resolve({ ok: false, reason: 'LL-HLS brought no picture in time.' }), FIRST_FRAME_MS);
      video.addEventListener('playing', () => {
        clearTimeout(timer);
        played = true;
        resolve({ ok: true });
      }, { once: true });
      mine.on(Hls.Events.ERROR, (_event, data) => {
        if (!data.fatal || hls !== mine) return;
        if (data.type === Hls.ErrorTypes.NETWORK_ERROR && !data.response?.code) {
          mine.startLoad();
        } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
          mine.recoverMediaError();
        } else {
          clearTimeout(timer);
          const why = `LL-HLS stopped (${data.details}).`;
          stop();
          if (played) lost(why);
          else resolve({ ok: false, reason: why });
        }
      });
    });
    mine.attachMedia(video);
    mine.loadSource(url(true));
    mine.on(Hls.Events.MANIFEST_PARSED, () => {
      video.play().catch(() => say('player-status', 'Press play to start.'));
    });
    const result = await outcome;
    if (!current()) return STALE;
    if (!result.ok) stop();
    return result;
  }

  async function stats() {
    let latency = '';
    let latencyMs = null;
    // The frame on screen's program date-time (the node's clock when it arrived) against
    // now: what the viewer is behind the publisher, but for the publisher's own encoding.
    const shown = hls && hls.playingDate;
    if (shown && video.readyState >= 2) {
      latencyMs = Math.max(0, Date.now() - shown.getTime());
      latency = `${(latencyMs / 1000).toFixed(2)} s behind the node`;
      if (hls.targetLatency) latency += ` (holding back ${hls.targetLatency.toFixed(2)} s)`;
    }
    return { latency, latencyMs, ...counters.read() };
  }

  return {
    name: 'LL-HLS',
    protocol: 'llhls',
    available: () => document.body.dataset.llhls === 'on' && mseInBrowser,
    unavailable: () => (document.body.dataset.llhls === 'on'
      ? 'This browser has no Media Source Extensions for LL-HLS.'
      : 'LL-HLS is off on this node.'),
    start,
    stop,
    stats,
  };
}
