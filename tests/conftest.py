"""Shared fixtures: real LFW photos from ../shared, one cached recogniser per test session."""
from __future__ import annotations

import os
from pathlib import Path

# Tests start servers and CLI processes beside the test process: OpenMP threads that spin while waiting would
# steal the cores those processes need (measured: a browser test took 95 s with spinning threads, 5.5 s without).
# Set before torch loads, and inherited by every subprocess.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LFW = SHARED / "data" / "lfw"
LFW_IMAGES = LFW / "images"


def lfw_photo(name: str, number: int = 1) -> Path:
    """Path of an LFW photo, e.g. lfw_photo("Aaron_Peirsol", 2)."""
    path = LFW_IMAGES / name / f"{name}_{number:04d}.jpg"
    if not path.is_file():
        pytest.skip(f"LFW photo {path} not available")
    return path


@pytest.fixture(scope="session", autouse=True)
def private_export_cache(tmp_path_factory):
    """ONNX exports made on first use (MTCNN, the embedding network) go to a fresh folder, never ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGNET_CACHE", str(tmp_path_factory.mktemp("facegnet-cache")))
        yield


@pytest.fixture(scope="session")
def recognizer():
    from facegnet.recognizer import FaceRecognizer

    return FaceRecognizer()


@pytest.fixture(scope="session")
def detector(recognizer):
    return recognizer.detector


def write_video(path: Path, fps: float, frames) -> Path:
    """An MJPG video at ``path`` of ``frames``: (BGR image, how many frames it stays) pairs, all of one size."""
    import cv2

    frames = list(frames)
    height, width = frames[0][0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for image, count in frames:
        for _ in range(count):
            writer.write(image)
    writer.release()
    return path


def enrolled_gallery(path: Path, recognizer, people: dict[str, str], photos: dict[str, int] | None = None) -> Path:
    """A new gallery at ``path`` with one LFW photo of each folder in ``people`` (folder → name) enrolled under
    its name: photo 2, or the number ``photos`` gives for that folder."""
    from facegnet.gallery import Gallery

    with Gallery(path, recognizer=recognizer, create=True) as gallery:
        for folder, name in people.items():
            assert gallery.enroll(name, lfw_photo(folder, (photos or {}).get(folder, 2))).status == "enrolled"
    return path
