#!/usr/bin/env python3
"""A scripted WHIP publisher (aiortc) for ZenLive's tests.

Publishes FFmpeg's test picture as H.264 (or, with --codec vp8, VP8) (and, with --audio, a sine tone as Opus) to a
WHIP endpoint on loopback, and reports on stdout, one line each, what happened:

    STATUS <http status>          the answer to the offer
    BODY <json>                   the refusal's body (when not 201)
    LOCATION <path>               the session's resource (201)
    ETAG <tag>                    the session's entity tag (201)
    TRICKLED <http status>        the answer to the trickle PATCH (--trickle)
    CONNECTED                     the peer connection is up
    DELETED <http status>         the answer to DELETE (--delete-after)
    DONE

It stops on its own after --seconds (publishing), or when stdin closes.
"""

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request

import aioice.ice
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

# aioice leaves out loopback addresses when it gathers host candidates; the node under
# test listens on 127.0.0.1 only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def say(*words):
    print(*words, flush=True)


def http(method, url, body=None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def trickle_fragment(sdp):
    """The offer's ICE credentials, first media section and candidates, as a trickling
    client sends them (an RFC 8840 fragment)."""
    lines = sdp.splitlines()
    keep = [l for l in lines if l.startswith(("a=ice-ufrag:", "a=ice-pwd:"))][:2]
    first_m = next(i for i, l in enumerate(lines) if l.startswith("m="))
    keep.append(lines[first_m])
    keep += [l for l in lines[first_m:] if l.startswith("a=mid:")][:1]
    keep += [l for l in lines if l.startswith("a=candidate:")]
    keep.append("a=end-of-candidates")
    return "\r\n".join(keep) + "\r\n"


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url", help="http://127.0.0.1:PORT/whip/live/NAME")
    parser.add_argument("--token")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--audio", action="store_true")
    parser.add_argument("--delete-after", type=float, help="DELETE the session after this long")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--codec", choices=["h264", "vp8"], default="h264")
    parser.add_argument(
        "--trickle",
        action="store_true",
        help="also send the offer's candidates in a PATCH (trickle ICE, RFC 9725 4.3)",
    )
    args = parser.parse_args()

    pc = RTCPeerConnection()
    video = MediaPlayer(f"testsrc=size={args.size}:rate=30", format="lavfi")
    transceiver = pc.addTransceiver(video.video, direction="sendonly")
    mime = {"h264": "video/H264", "vp8": "video/VP8"}[args.codec]
    codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == mime]
    transceiver.setCodecPreferences(codecs)
    if args.audio:
        audio = MediaPlayer("sine=frequency=440:sample_rate=48000", format="lavfi")
        pc.addTransceiver(audio.audio, direction="sendonly")

    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected":
            connected.set()

    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    loop = asyncio.get_running_loop()
    status, response_headers, body = await loop.run_in_executor(
        None, http, "POST", args.url, pc.localDescription.sdp.encode(), headers
    )
    say("STATUS", status)
    if status != 201:
        say("BODY", json.dumps(json.loads(body or b"null")))
        await pc.close()
        say("DONE")
        return
    location = response_headers.get("Location") or response_headers.get("location")
    say("LOCATION", location)
    etag = response_headers.get("ETag") or response_headers.get("etag")
    say("ETAG", etag)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))
    if args.trickle:
        base = args.url.split("/whip/")[0]
        patch_headers = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag}
        fragment = trickle_fragment(pc.localDescription.sdp).encode()
        status, _, _ = await loop.run_in_executor(
            None, http, "PATCH", base + location, fragment, patch_headers
        )
        say("TRICKLED", status)
    await asyncio.wait_for(connected.wait(), timeout=15)
    say("CONNECTED")

    stdin_closed = loop.create_future()

    def on_stdin():
        if not sys.stdin.readline() and not stdin_closed.done():
            stdin_closed.set_result(None)

    try:
        loop.add_reader(sys.stdin, on_stdin)
    except (OSError, ValueError):
        pass  # stdin is not pollable (/dev/null): stop on the timer only
    limit = args.delete_after if args.delete_after is not None else args.seconds
    try:
        await asyncio.wait_for(asyncio.shield(stdin_closed), timeout=limit)
    except asyncio.TimeoutError:
        pass
    if args.delete_after is not None:
        base = args.url.split("/whip/")[0]
        status, _, _ = await loop.run_in_executor(None, http, "DELETE", base + location)
        say("DELETED", status)
    await pc.close()
    say("DONE")


if __name__ == "__main__":
    asyncio.run(main())
