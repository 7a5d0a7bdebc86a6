"""Where live frames go: a window on the desktop, or a video file.

The package installs the headless build of OpenCV (servers and CI need no GUI libraries, and the GUI build
``opencv-python`` cannot be installed beside it: both provide ``cv2``). So the window is drawn with Tk
(Python's ``tkinter`` with Pillow's ``ImageTk``), which ships with most Python builds (on Debian and Ubuntu's
system Python: ``apt install python3-tk``). Where a GUI build of OpenCV is installed instead, its own window
is used. Without a display (``DISPLAY`` unset), or with neither toolkit, :func:`check_window_support` says
so in one line and suggests ``--headless``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facegnet.errors import FacegnetError

_HEADLESS_HINT = "run with --headless (and --record OUT.mp4 to keep the drawings)"


def opencv_has_gui() -> bool:
    """Whether this OpenCV was built with a GUI back-end (opencv-python, not opencv-python-headless)."""
    build = cv2.getBuildInformation()
    gui = next((line.split(":", 1)[1].strip() for line in build.splitlines() if line.strip().startswith("GUI:")),
               "")
    return bool(gui) and not gui.upper().startswith("NONE")


def tk_available() -> bool:
    """Whether Tk can be used from Python here (tkinter and Pillow's ImageTk import)."""
    try:
        import tkinter  # noqa: F401

        from PIL import ImageTk  # noqa: F401
    except ImportError:
        return False
    return True


def window_backend() -> str:
    """The toolkit a window would use here: "opencv" or "tk"; FacegnetError (suggesting --headless) if none."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise FacegnetError(f"cannot open a window: no display (DISPLAY is not set); {_HEADLESS_HINT}")
    if opencv_has_gui():
        return "opencv"
    if tk_available():
        return "tk"
    raise FacegnetError("cannot open a window: this Python has no Tk (tkinter; on Debian or Ubuntu: "
                        f"apt install python3-tk) and OpenCV is the headless build; {_HEADLESS_HINT}")


def check_window_support() -> None:
    """Raise FacegnetError (suggesting --headless) when no window can be shown here."""
    window_backend()


class Window:
    """A window showing BGR frames at their own size; ``q`` or Esc (or closing it) quits.

    Args:
        title: the window's title.
        backend: "tk" or "opencv" (default: :func:`window_backend`).
    """

    def __init__(self, title: str = "facegnet", backend: str | None = None) -> None:
        self.title = title
        self.backend = backend or window_backend()
        self._impl: _TkWindow | _OpenCVWindow = (_TkWindow if self.backend == "tk" else _OpenCVWindow)(title)

    def show(self, image: np.ndarray) -> bool:
        """Show a frame (BGR); False when the user asked to quit."""
        return self._impl.show(image)

    def close(self) -> None:
        self._impl.close()


class _TkWindow:
    def __init__(self, title: str) -> None:
        import tkinter

        from PIL import ImageTk

        self._tk, self._image_tk = tkinter, ImageTk
        try:
            self.root = tkinter.Tk(className="facegnet")
        except tkinter.TclError as exc:  # e.g. a DISPLAY that cannot be reached
            raise FacegnetError(f"cannot open a window ({exc}); {_HEADLESS_HINT}") from None
        self.root.title(title)
        self.view = tkinter.Label(self.root, borderwidth=0, highlightthickness=0, background="black")
        self.view.pack(fill="both", expand=True)
        self.open = True
        self.root.protocol("WM_DELETE_WINDOW", self._quit)
        self.root.bind("<Key>", lambda event: self._quit() if event.keysym in ("q", "Q", "Escape") else None)
        self._photo: Any = None

    def _quit(self) -> None:
        self.open = False

    def show(self, image: np.ndarray) -> bool:
        if not self.open:
            return False
        from PIL import Image

        photo = self._image_tk.PhotoImage(Image.fromarray(np.ascontiguousarray(image[:, :, ::-1])), master=self.root)
        self.view.configure(image=photo)
        self._photo = photo  # Tk keeps no reference of its own: the image would vanish
        try:
            self.root.update()  # draw it and handle keys and the close button, without blocking
        except self._tk.TclError:  # the window is gone
            self.open = False
        return self.open

    def close(self) -> None:
        try:
            self.root.destroy()
        except self._tk.TclError:
            pass


class _OpenCVWindow:
    def __init__(self, title: str) -> None:
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
        except cv2.error as exc:
            raise FacegnetError(f"cannot open a window ({exc}); {_HEADLESS_HINT}") from None
        self._shown = False

    def show(self, image: np.ndarray) -> bool:
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), ord("Q"), 27):
            return False
        if self._shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return False  # the window was closed
        self._shown = True
        return True

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass


class Recorder:
    """Writes the drawn frames to a video file (opened at the first frame, with its size)."""

    FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v"}

    def __init__(self, path: str | Path, fps: float | None) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in self.FOURCC:
            raise FacegnetError(f"cannot record to this file type (use one of {', '.join(self.FOURCC)})",
                                self.path)
        if not self.path.parent.is_dir():
            raise FacegnetError("cannot record here: the folder does not exist", self.path)
        self.fps = fps if fps else 25.0
        self._writer: Any = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*self.FOURCC[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (image.shape[1], image.shape[0]))
            if not self._writer.isOpened():
                raise FacegnetError("cannot write a video here", self.path)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


__all__ = ["Recorder", "Window", "check_window_support", "opencv_has_gui", "tk_available", "window_backend"]
