#!/usr/bin/env python3
"""A scripted WHEP player (aiortc) for ZenLive's tests.

Offers to receive video (H.264, or VP8 with --codec vp8; and, with --audio, audio) from a WHEP endpoint on loopback,
decodes what arrives, and reports on stdout, one line each, what happened:

    STATUS <http status>          the answer to the offer
    BODY <json>                   the refusal's body (when not 201)
    LOCATION <path>               the session's resource (201)
    CONNECTED                     the peer connection is up
    FIRST <width>x<height>        the first decoded video frame
    AUDIO <frames>                audio frames decoded (with --audio, once --frames video
                                  frames were decoded)
    LEVEL <peak>                  the largest absolute 16-bit sample decoded (with --audio)
    LOSS DROPPED <n> RESENT <m>   RTP packets the relay dropped, and how many of them came
                                  again (--drop-every; with --lose-every none passes)
    FRAMES <n> ERRORS <m>         n video frames decoded, m decoder errors, when --frames
                                  were decoded (or at --seconds)
    DELETED <http status>         the answer to DELETE (--delete)
    DONE

It stops after --frames decoded video frames, after --seconds, or when stdin closes.
"""

import argparse
import array
import asyncio
import json
import logging
import sys
import urllib.error
import urllib.request

import aioice.ice
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

# aioice leaves out loopback addresses when it gathers host candidates; the node under
# test listens on 127.0.0.1 only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


class DecodeErrors(logging.Handler):
    """Counts what aiortc logs when a frame does not decode (its H.264 decoder, and its
    receiver's "failed to decode" warning, which covers every codec)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        if record.name != "aiortc.rtcrtpreceiver" or "failed to decode" in record.getMessage():
            self.count += 1


def is_rtp(data):
    """RTP, not RTCP, STUN or DTLS (RFC 7983 demultiplexing; RTCP types 192-223)."""
    return len(data) >= 12 and 128 <= data[0] <= 191 and not 192 <= data[1] <= 223


class LossyRelay(asyncio.DatagramProtocol):
    """A UDP relay between this player and the node that drops every Nth RTP packet the
    node sends (STUN, DTLS and RTCP pass), and counts the dropped packets that come again
    (the same SSRC and sequence number: a NACK answered). With `forever`, those are dropped
    again: the packets are lost for good, as the player's receiver reports then say."""

    def __init__(self, node, every, forever=False):
        self.node = node
        self.every = every
        self.forever = forever
        self.client = None
        self.transport = None
        self.rtp = 0
        self.dropped = set()
        self.resent = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if addr != self.node:
            self.client = addr
            self.transport.sendto(data, self.node)
            return
        if self.client is None:
            return
        if is_rtp(data):
            packet = (data[8:12], data[2:4])
            if packet in self.dropped:
                self.resent += 1
                if self.forever:
                    return
                self.dropped.discard(packet)
            else:
                self.rtp += 1
                if self.rtp % self.every == 0:
                    self.dropped.add(packet)
                    return
        self.transport.sendto(data, self.client)


async def lossy_answer(answer, every, forever=False):
    """Starts a LossyRelay to the answer's first candidate; the answer with every candidate
    pointing at the relay, and the relay."""
    lines = answer.splitlines()
    candidate = next(l for l in lines if l.startswith("a=candidate:")).split()
    node = (candidate[4], int(candidate[5]))
    loop = asyncio.get_running_loop()
    transport, relay = await loop.create_datagram_endpoint(
        lambda: LossyRelay(node, every, forever), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    rewritten = []
    for line in lines:
        if line.startswith("a=candidate:"):
            fields = line.split()
            fields[4], fields[5] = "127.0.0.1", str(port)
            line = " ".join(fields)
        rewritten.append(line)
    return "\r\n".join(rewritten) + "\r\n", relay


def say(*words):
    print(*words, flush=True)


def http(method, url, body=None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url", help="http://127.0.0.1:PORT/whep/live/NAME")
    parser.add_argument("--token")
    parser.add_argument("--frames", type=int, default=60, help="stop after this many")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--audio", action="store_true")
    parser.add_argument("--codec", choices=["h264", "vp8"], default="h264")
    parser.add_argument("--delete", action="store_true", help="DELETE the session at the end")
    parser.add_argument(
        "--drop-every",
        type=int,
        default=0,
        help="relay the media through a UDP relay that drops every Nth RTP packet",
    )
    parser.add_argument(
        "--lose-every",
        type=int,
        default=0,
        help="as --drop-every, and the relay drops the packets sent again too (lost for good)",
    )
    args = parser.parse_args()

    errors = DecodeErrors()
    logging.getLogger("aiortc.codecs.h264").addHandler(errors)
    logging.getLogger("aiortc.rtcrtpreceiver").addHandler(errors)

    pc = RTCPeerConnection()
    video = pc.addTransceiver("video", direction="recvonly")
    mime = {"h264": "video/H264", "vp8": "video/VP8"}[args.codec]
    codecs = [c for c in RTCRtpReceiver.getCapabilities("video").codecs if c.mimeType == mime]
    video.setCodecPreferences(codecs)
    if args.audio:
        pc.addTransceiver("audio", direction="recvonly")

    connected = asyncio.Event()
    enough = asyncio.Event()
    counts = {"video": 0, "audio": 0}
    peak = [0]

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected":
            connected.set()

    async def consume(track):
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            counts[track.kind] += 1
            if track.kind == "audio" and frame.format.name == "s16":
                # Packed 16-bit samples (aiortc's Opus decoder): the loudest one so far.
                samples = array.array("h", bytes(frame.planes[0]))
                if samples:
                    peak[0] = max(peak[0], max(samples), -min(samples))
            if track.kind == "video":
                if counts["video"] == 1:
                    say("FIRST", f"{frame.width}x{frame.height}")
                if counts["video"] >= args.frames:
                    enough.set()

    @pc.on("track")
    def on_track(track):
        asyncio.ensure_future(consume(track))

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
    answer, relay = body.decode(), None
    if args.drop_every or args.lose_every:
        every = args.lose_every or args.drop_every
        answer, relay = await lossy_answer(answer, every, forever=bool(args.lose_every))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(connected.wait(), timeout=15)
    say("CONNECTED")

    stdin_closed = loop.create_future()

    def on_stdin():
        if not sys.stdin.readline() and not stdin_closed.done():
            stdin_closed.set_result(None)

    try:
        loop.add_reader(sys.stdin, on_stdin)
    except (OSError, ValueError):
        pass  # stdin is not pollable (/dev/null): stop on the frames or the timer
    waits = [asyncio.ensure_future(enough.wait()), asyncio.shield(stdin_closed)]
    await asyncio.wait(waits, timeout=args.seconds, return_when=asyncio.FIRST_COMPLETED)
    if args.audio:
        say("AUDIO", counts["audio"])
        say("LEVEL", peak[0])
    if relay is not None:
        dropped = len(relay.dropped) if relay.forever else relay.resent + len(relay.dropped)
        say("LOSS", "DROPPED", dropped, "RESENT", relay.resent)
    say("FRAMES", counts["video"], "ERRORS", errors.count)
    if args.delete:
        base = args.url.split("/whep/")[0]
        status, _, _ = await loop.run_in_executor(None, http, "DELETE", base + location)
        say("DELETED", status)
    await pc.close()
    say("DONE")


if __name__ == "__main__":
    asyncio.run(main())
