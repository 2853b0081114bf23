// hls_viewers.js: virtual HLS viewers that behave like real players.
//
// What it measures: each virtual user (VU) is one viewer. It fetches the live playlist,
// starts at the live edge, downloads every new segment exactly once, and fetches the
// playlist again every target duration, as hls.js and AVPlayer do. Reported beyond k6's
// own HTTP metrics:
//   hls_segment_load_ratio  segment download time / segment duration (below 1 keeps up)
//   hls_startup_ms          from the viewer's first request to its first segment
//   hls_live_edge_lag_s     now minus the end of the newest segment (EXT-X-PROGRAM-DATE-TIME)
//   hls_missing_segments    advertised segments that answered 404 (should be 0)
// Thresholds fail the run when viewers cannot keep up or segments go missing.
//
// Run against one node (a stream must be live, e.g. FFmpeg publishing live/test):
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e STREAM=live/test \
//          -e VIEWERS=200 -e RAMP=30s -e DURATION=2m loadtest/k6/hls_viewers.js
// Several streams: STREAM=live/a,live/b (viewers are spread over them, VIEWERS each).
// Against a cluster: BASE_URL=http://n1:8080,http://n2:8080 spreads viewers over nodes
// (each node serves every stream; edges pull from the origin).
// With auth (auth.require_play): -e TOKEN=<a viewer token>.

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const BASES = (__ENV.BASE_URL || 'http://127.0.0.1:8080').split(',');
const STREAMS = (__ENV.STREAM || 'live/test').split(',');
const VIEWERS = parseInt(__ENV.VIEWERS || '10', 10);
const RAMP = __ENV.RAMP || '10s';
const DURATION = __ENV.DURATION || '30s';
const TOKEN = __ENV.TOKEN || '';

const segmentLoadRatio = new Trend('hls_segment_load_ratio');
const startup = new Trend('hls_startup_ms', true);
const liveEdgeLag = new Trend('hls_live_edge_lag_s');
const missing = new Counter('hls_missing_segments');

export const options = {
  scenarios: {
    viewers: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: RAMP, target: VIEWERS * STREAMS.length },
        { duration: DURATION, target: VIEWERS * STREAMS.length },
      ],
      gracefulRampDown: '5s',
      gracefulStop: '10s',
    },
  },
  thresholds: {
    hls_segment_load_ratio: ['p(95)<1'],
    hls_missing_segments: ['count==0'],
    checks: ['rate>0.99'],
  },
};

/** Parses a media playlist: target duration, media sequence, segments with durations and
 *  program date-times. */
function parse(text) {
  const out = { target: 6, sequence: 0, segments: [] };
  let duration = 0;
  let pdt = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#EXT-X-TARGETDURATION:')) out.target = parseFloat(line.slice(22));
    else if (line.startsWith('#EXT-X-MEDIA-SEQUENCE:')) out.sequence = parseInt(line.slice(22), 10);
    else if (line.startsWith('#EXT-X-PROGRAM-DATE-TIME:')) pdt = Date.parse(line.slice(25));
    else if (line.startsWith('#EXTINF:')) duration = parseFloat(line.slice(8));
    else if (line && !line.startsWith('#')) {
      out.segments.push({ uri: line, seq: out.sequence + out.segments.length, duration, pdt });
      pdt = pdt === null ? null : pdt + duration * 1000;
    }
  }
  return out;
}

// Per-VU state: each VU runs its own copy of this module, so these are one viewer's.
let next = -1; // the next media sequence number to download
let began = 0;
let started = false;

/** One playlist refresh: fetch it, download the segments not yet seen, wait a target
 *  duration (k6 runs this in a loop for the scenario's length). */
export default function () {
  const base = BASES[(__VU - 1) % BASES.length];
  const stream = STREAMS[(__VU - 1) % STREAMS.length];
  const dir = `${base}/${stream}`;
  const playlistUrl = `${dir}/index.m3u8${TOKEN ? `?token=${TOKEN}` : ''}`;
  if (began === 0) began = Date.now();
  const res = http.get(playlistUrl, { tags: { kind: 'playlist' } });
  if (!check(res, { 'playlist 200': (r) => r.status === 200 })) {
    sleep(1);
    return;
  }
  const playlist = parse(res.body);
  if (playlist.segments.length === 0) {
    sleep(1);
    return;
  }
  if (next < 0) next = playlist.segments[playlist.segments.length - 1].seq; // live edge
  for (const seg of playlist.segments) {
    if (seg.seq < next) continue;
    const url = seg.uri.startsWith('http') ? seg.uri : `${dir}/${seg.uri}`;
    const r = http.get(url, { tags: { kind: 'segment' }, responseType: 'none' });
    if (r.status === 404) missing.add(1);
    check(r, { 'segment 200': (x) => x.status === 200 });
    if (seg.duration > 0) segmentLoadRatio.add(r.timings.duration / (seg.duration * 1000));
    if (!started && r.status === 200) {
      started = true;
      startup.add(Date.now() - began);
    }
    next = seg.seq + 1;
  }
  const newest = playlist.segments[playlist.segments.length - 1];
  if (newest.pdt !== null) liveEdgeLag.add((Date.now() - (newest.pdt + newest.duration * 1000)) / 1000);
  sleep(playlist.target);
}
