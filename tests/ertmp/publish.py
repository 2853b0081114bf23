#!/usr/bin/env python3
"""An Enhanced RTMP publisher: FFmpeg 8 (the libraries inside PyAV's wheels, PyPI `av`)
encodes a test picture (testsrc2, 320x240, 30 fps, a keyframe a second, no B-frames) in
CODEC (hevc: libx265, av1: libsvtav1, vp9: libvpx-vp9) and a 440 Hz tone in AAC, and
publishes them in real time to URL as FLV, which FFmpeg 8 writes the Enhanced RTMP way
(FourCC video tags). Debian's FFmpeg 5.1 cannot.

Usage: publish.py URL CODEC SECONDS
Prints `PUBLISHING` once the connection is open, `DONE <frames>` at the end.
"""
import os
import sys
import time
from fractions import Fraction

# SVT-AV1 prints its configuration unless told to print errors only.
os.environ.setdefault("SVT_LOG", "1")

import av  # noqa: E402

ENCODERS = {
    "hevc": ("libx265", {"x265-params": "log-level=error:keyint=30:min-keyint=30:bframes=0:scenecut=0"}),
    "av1": ("libsvtav1", {"preset": "12", "svtav1-params": "keyint=30:scd=0:lp=1"}),
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "g": "30", "lag-in-frames": "0"}),
}


def main():
    url, codec, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    encoder, options = ENCODERS[codec]
    source = av.open(f"testsrc2=size=320x240:rate=30:duration={seconds}", format="lavfi")
    tone = av.open(f"sine=frequency=440:sample_rate=44100:duration={seconds}", format="lavfi")
    out = av.open(url, "w", format="flv")
    video = out.add_stream(encoder, rate=30)
    video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
    video.bit_rate = 500_000
    video.gop_size = 30
    video.options = options
    audio = out.add_stream("aac", rate=44100)
    audio.layout = "mono"
    print("PUBLISHING", flush=True)
    tones = tone.decode(audio=0)
    start = time.monotonic()
    frames = 0
    for frame in source.decode(video=0):
        at = frame.pts * frame.time_base
        # Real time: the server sees a live source.
        ahead = float(at) - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        frame.pts, frame.time_base = frames, Fraction(1, 30)
        for packet in video.encode(frame):
            out.mux(packet)
        frames += 1
        # The tone up to this frame's time.
        while True:
            try:
                sound = next(tones)
            except StopIteration:
                break
            for packet in audio.encode(sound):
                out.mux(packet)
            if sound.pts * sound.time_base >= at:
                break
    for packet in video.encode():
        out.mux(packet)
    for packet in audio.encode():
        out.mux(packet)
    out.close()
    print("DONE", frames, flush=True)


if __name__ == "__main__":
    main()
