#!/usr/bin/env python3
"""Reads a stream with FFmpeg 8 (PyAV's libraries), which speaks Enhanced RTMP and its FLV:
an rtmp:// or http(s):// FLV URL, or a file (an fMP4 recording). Decodes every frame and
prints one JSON line: {"video": codec, "audio": codec, "frames": n, "audio_frames": n,
"errors": n, "width": w, "height": h, "first_pts": s, "last_pts": s}.

Usage: play.py INPUT [MAX_FRAMES]
"""
import json
import sys

import av


def main():
    url = sys.argv[1]
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    report = {"video": None, "audio": None, "frames": 0, "audio_frames": 0, "errors": 0,
              "width": 0, "height": 0, "first_pts": None, "last_pts": None}
    options = {"rw_timeout": "15000000"} if "://" in url else {}
    with av.open(url, options=options, timeout=15) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        for s in streams:
            report[s.type] = s.codec_context.name
        for packet in container.demux(streams):
            if packet.size == 0:
                continue
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                report["errors"] += 1
                continue
            for frame in decoded:
                if packet.stream.type == "video":
                    report["frames"] += 1
                    report["width"], report["height"] = frame.width, frame.height
                    if frame.pts is not None:
                        t = float(frame.pts * frame.time_base)
                        if report["first_pts"] is None:
                            report["first_pts"] = t
                        report["last_pts"] = t
                else:
                    report["audio_frames"] += 1
            if limit and report["frames"] >= limit:
                break
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
