"""Shared fixtures: real LFW photos from ../shared, one cached recogniser per test session."""
from __future__ import annotations

import os
from pathlib import Path

# Tests start servers and CLI processes beside the test process: OpenMP threads that spin while waiting would
# steal the cores those processes need (measured: a browser test took 95 s with spinning threads, 5.5 s without).
# Set before torch loads, and inherited by every subprocess.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

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


def process_memory(field: str, pid: int | str = "self") -> int:
    """A process's VmHWM (peak resident memory) or VmRSS (resident now), in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def reset_peak_memory(pid: int | str = "self") -> None:
    """Start a process's VmHWM again from its resident memory now (Linux's ``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def write_big_photo(path: Path, face_photo: Path, side: int = 8000, offset: tuple[int, int] = (3000, 2500),
                    upscale: int = 8) -> Path:
    """A ``side``×``side`` grey JPEG at ``path`` with ``face_photo`` upscaled ``upscale``× pasted at ``offset``."""
    from PIL import Image

    with Image.open(face_photo) as small:
        face = small.convert("RGB").resize((small.width * upscale, small.height * upscale), Image.BILINEAR)
    canvas = Image.new("RGB", (side, side), (128, 128, 128))
    canvas.paste(face, offset)
    canvas.save(path, format="JPEG", quality=85)
    return path


def enrolled_gallery(path: Path, recognizer, people: dict[str, str], photos: dict[str, int] | None = None) -> Path:
    """A new gallery at ``path`` with one LFW photo of each folder in ``people`` (folder → name) enrolled under
    its name: photo 2, or the number ``photos`` gives for that folder."""
    from facegnet.gallery import Gallery

    with Gallery(path, recognizer=recognizer, create=True) as gallery:
        for folder, name in people.items():
            assert gallery.enroll(name, lfw_photo(folder, (photos or {}).get(folder, 2))).status == "enrolled"
    return path


def cut_to_box(recognizer, photo: Path, out: Path) -> Path:
    """``photo`` cut with PIL to the box MTCNN finds around its largest face, saved at ``out``: a photo cut
    tight (:data:`facegnet.detection.quality.TIGHT_CROP`)."""
    with Image.open(photo) as image:
        image = image.convert("RGB")
        x1, y1, x2, y2 = recognizer.detect(np.asarray(image))[0].box
        out.parent.mkdir(parents=True, exist_ok=True)
        image.crop((int(x1), int(y1), int(np.ceil(x2)), int(np.ceil(y2)))).save(out, quality=95)
    return out
