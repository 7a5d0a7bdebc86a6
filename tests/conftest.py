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
