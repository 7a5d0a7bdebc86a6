#!/usr/bin/env python3
"""Names over faces from a webcam, live (the same as ``facegnet identify --camera N``).

    python apps/webcam.py [N] [--gallery DIR] [--headless] [--record OUT.mp4] [--detect-every N] [...]

N is the camera index (default 0). Enroll people first: ``facegnet enroll FOLDER --gallery DIR``.
A window shows each face's box, name (or unknown), similarity and the frame rate; q quits. It is drawn with
Tk (tkinter; on Debian/Ubuntu's system Python: apt install python3-tk), or OpenCV's own window where a GUI
build of OpenCV is installed. With --headless (servers, no display), events go to stdout as JSON lines.
Every option of ``facegnet identify --help`` applies.
"""
import sys

from facegnet.cli import main

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] in (["-h"], ["--help"]):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(0)
    camera = arguments.pop(0) if arguments and arguments[0].isdigit() else "0"
    sys.exit(main(["identify", "--camera", camera, *arguments]))
