// WebRTC plumbing shared by the go-live page (WHIP) and the watch page (WHEP): codec
// preferences, the offer sent once ICE gathering is done (the node is ICE-lite and takes no
// trickle ICE, so the offer carries every candidate), the node's answer or its refusal in
// words, and the session's end (DELETE on its Location). docs/webrtc.md describes the
// node's side.

import { page } from './common.js';

/** Whether the node serves WHIP and WHEP (`[webrtc] enabled`). */
export const webrtcOn = page.webrtc === 'on';

/** Whether this browser has WebRTC at all. */
export const webrtcInBrowser = typeof RTCPeerConnection === 'function';

/** The longest wait for ICE gathering before the offer goes with what it has. */
const GATHER_MS = 3000;

/** The STUN/TURN servers the node hands out (`webrtc.ice_servers`), for
 * `new RTCPeerConnection({ iceServers })`. */
export function iceServers() {
  return (page.iceServers || '').split(' ').filter(Boolean).map((urls) => ({ urls }));
}

/** H.264 `codecs` in packetization mode 1 (what the node takes) when there are any,
 * constrained baseline first. */
function h264First(codecs) {
  const mode1 = codecs.filter((c) => /packetization-mode=1/.test(c.sdpFmtpLine || ''));
  const rank = (c) => {
    const fmtp = c.sdpFmtpLine || '';
    if (/profile-level-id=42e0/i.test(fmtp)) return 0;
    return /profile-level-id=42/i.test(fmtp) ? 1 : 2;
  };
  return [...(mode1.length > 0 ? mode1 : codecs)].sort((a, b) => rank(a) - rank(b));
}

/** Sets `transceiver`'s codecs to `chosen`, where the browser lets a page choose. */
function setPreferences(transceiver, chosen) {
  if (typeof transceiver.setCodecPreferences !== 'function') return;
  try {
    transceiver.setCodecPreferences(chosen);
  } catch {
    // An older browser that refuses the list: it negotiates its default order instead.
  }
}

/** Restricts `transceiver` to the codecs of `capabilities` whose type is `mimeType`
 * (`video/H264`, `audio/opus`); for H.264, packetization mode 1 (what the node takes) and
 * constrained baseline first. Answers whether the browser has that codec. */
export function preferCodec(transceiver, capabilities, mimeType) {
  const wanted = mimeType.toLowerCase();
  const codecs = (capabilities?.codecs || []).filter((c) => c.mimeType.toLowerCase() === wanted);
  if (codecs.length === 0) return false;
  setPreferences(transceiver, wanted === 'video/h264' ? h264First(codecs) : codecs);
  return true;
}

/** Restricts a video `transceiver` to the codecs the node takes and sends: H.264 (as
 * above), VP9 profile 0, AV1 main profile and VP8, in that order. Receiving, the node
 * answers with the stream's own; sending, it takes the first of them the offer has.
 * Answers whether the browser has any of them. */
export function preferVideo(transceiver, capabilities) {
  const all = capabilities?.codecs || [];
  const of = (type) => all.filter((c) => c.mimeType.toLowerCase() === type);
  const fmtp = (c) => c.sdpFmtpLine || '';
  const chosen = [
    ...h264First(of('video/h264')),
    ...of('video/vp9').filter((c) => !/profile-id=[1-3]/.test(fmtp(c))),
    ...of('video/av1').filter((c) => !/profile=[12]/.test(fmtp(c))),
    ...of('video/vp8'),
  ];
  if (chosen.length === 0) return false;
  setPreferences(transceiver, chosen);
  return true;
}

/** Resolves when `pc` has gathered its candidates, or after GATHER_MS. */
function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, GATHER_MS);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** Makes `pc`'s offer, posts it to `url` (WHIP or WHEP) with the token as Bearer, and
 * applies the answer. Answers `{ok: true, location}` (the session's absolute URL), or
 * `{ok: false, status, code, message}` with the node's JSON refusal (status 0: no answer).
 * Throws when the browser cannot use the answer. */
export async function exchange(url, pc, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const headers = { 'Content-Type': 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(url, {
      method: 'POST', headers, body: pc.localDescription.sdp, cache: 'no-store',
    });
  } catch {
    return { ok: false, status: 0, code: 'network', message: 'the node did not answer' };
  }
  if (response.status !== 201) {
    let code = '';
    let message = `HTTP ${response.status}`;
    try {
      const error = (await response.json())?.error;
      if (error) {
        code = String(error.code ?? '');
        message = String(error.message ?? message);
      }
    } catch {
      // Not JSON: the status says enough.
    }
    return { ok: false, status: response.status, code, message };
  }
  const location = response.headers.get('Location');
  const answer = await response.text();
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  return { ok: true, location: location ? new URL(location, window.location.href).href : '' };
}

/** Ends the session at `location` (its resource URL); `keepalive` so it also goes out
 * while the page closes. Errors are ignored: the node ends an idle session by itself. */
export function hangUp(location) {
  if (!location) return;
  fetch(location, { method: 'DELETE', keepalive: true, cache: 'no-store' }).catch(() => {});
}

/** What the node's refusal codes mean, in words. */
const REFUSALS = {
  network: 'The node did not answer.',
  webrtc_disabled: 'WebRTC is off on this node.',
  token_missing: 'This node wants a token: paste one at the top.',
  token_invalid: 'The node does not accept this token.',
  token_expired: 'Your token has expired: get a new one.',
  token_not_yet_valid: 'Your token is not valid yet (is this computer\'s clock right?).',
  token_too_large: 'That token is too long.',
  forbidden_stream: 'This token does not cover this stream.',
  draining: 'This node is being taken out of service: use another node.',
  denied: 'The application behind this node said no.',
  stream_not_found: 'The stream is not live.',
  too_many_sessions: 'The node has as many WebRTC sessions as it takes: try again later.',
  unsupported_codecs: 'This browser offered no codec the node takes (H.264, VP8, VP9 or AV1 video, Opus audio).',
};

/** The node's refusal `answer` (from `exchange`) in words; `role` says what the token
 * needed (for `forbidden_role`). */
export function refusalText(answer, role = 'viewer') {
  if (answer.code === 'forbidden_role') {
    return role === 'publisher'
      ? 'This token may not publish: it needs the publisher (or admin) role.'
      : 'This token\'s roles do not allow watching.';
  }
  const known = REFUSALS[answer.code];
  if (answer.code === 'network') return known;
  const detail = answer.message || `HTTP ${answer.status}`;
  return known ? `${known} (${detail})` : `The node refused: ${detail}.`;
}
