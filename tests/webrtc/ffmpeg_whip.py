#!/usr/bin/env python3
"""A WHIP publisher that is FFmpeg 8's own `whip` muxer (the libraries inside PyAV's
wheels, PyPI `av`, built with GnuTLS; Debian's FFmpeg 5.1 has no WHIP): it encodes a test
picture (320x240, 30 fps, H.264 baseline, a keyframe a second, no B-frames) and a 440 Hz
tone (Opus, 48 kHz), and publishes them in real time to URL for SECONDS.

Usage: ffmpeg_whip.py URL SECONDS
Prints `PUBLISHING` once the session is up (FFmpeg's WHIP handshake, ICE and DTLS, happens
before its first packet is written), `DONE <frames>` at the end, `ERROR <what>` on failure.
"""
import sys
import time
from fractions import Fraction

import av


def main():
    url, seconds = sys.argv[1], float(sys.argv[2])
    source = av.open(f"testsrc=size=320x240:rate=30:duration={seconds}", format="lavfi")
    tone = av.open(f"sine=frequency=440:sample_rate=48000:duration={seconds}", format="lavfi")
    out = av.open(url, "w", format="whip")
    video = out.add_stream("libx264", rate=30)
    video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
    video.options = {"tune": "zerolatency", "profile": "baseline", "bf": "0", "g": "30"}
    audio = out.add_stream("libopus", rate=48000)
    audio.layout = "stereo"
    tones = tone.decode(audio=0)
    start = time.monotonic()
    frames = 0
    announced = False
    try:
        for frame in source.decode(video=0):
            at = frame.pts * frame.time_base
            ahead = float(at) - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
            frame.pts, frame.time_base = frames, Fraction(1, 30)
            for packet in video.encode(frame):
                out.mux(packet)
                if not announced:
                    print("PUBLISHING", flush=True)
                    announced = True
            frames += 1
            while True:
                try:
                    sound = next(tones)
                except StopIteration:
                    break
                for packet in audio.encode(sound):
                    out.mux(packet)
                if sound.pts * sound.time_base >= at:
                    break
        out.close()
    except Exception as error:  # noqa: BLE001 - reported to the test, which fails on it
        print("ERROR", error, flush=True)
        sys.exit(1)
    print("DONE", frames, flush=True)


if __name__ == "__main__":
    main()
