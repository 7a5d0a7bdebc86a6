#!/usr/bin/env python3
"""Names over faces in a video file or a network stream (the same as ``facegnet identify --video/--stream``).

    python apps/video.py VIDEO_OR_URL [--gallery DIR] [--headless] [--record OUT.mp4] [--realtime] [...]

A path is read as a video file (every frame, unless --realtime plays it at its own speed); rtsp://, http://
and other URLs are read as live streams and reopened if they drop. Enroll people first:
``facegnet enroll FOLDER --gallery DIR``. Every option of ``facegnet identify --help`` applies.
"""
import sys

from facegnet.cli import main

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if not arguments or arguments[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(0 if arguments[:1] in (["-h"], ["--help"]) else 2)
    target = arguments.pop(0)
    kind = "--stream" if "://" in target else "--video"
    sys.exit(main(["identify", kind, target, *arguments]))
