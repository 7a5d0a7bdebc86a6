"""A gallery shared by threads and by processes: the writer lock, and nothing lost or half-seen.

The web server identifies in several threads while another enrolls, and two `facegnet enroll` runs may
write into one gallery directory at once. Real SQLite, FAISS, MTCNN and LFW photos; synchronisation by
events and files, never by sleeping.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from facegnet.errors import GalleryError
from facegnet.gallery import Gallery
from facegnet.locking import FileLock, LockTimeout

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw" / "images"
needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason="LFW photos not found at ../shared/data/lfw")


def lfw(name: str, n: int) -> Path:
    return LFW / name / f"{name}_{n:04d}.jpg"


def unit_vectors(count: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((count, 512)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ============================================================================================ the lock
def test_file_lock_threads_reentrancy_and_timeout(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "x.lock")
    inside, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lock.hold():
            with lock.hold(timeout=0):  # re-entrant in the thread that holds it
                inside.set()
                release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    assert inside.wait(30)
    with pytest.raises(LockTimeout):  # another thread of the same process waits, then gives up
        lock.acquire(timeout=0.1)
    other = FileLock(tmp_path / "x.lock")  # another open file: excluded by flock as another process would be
    with pytest.raises(LockTimeout) as caught:
        other.acquire(timeout=0.1)
    assert caught.value.holder == str(os.getpid())  # the holder wrote its pid
    release.set()
    thread.join(30)
    with lock.hold(timeout=1):
        assert lock.held
    assert not lock.held
    with other.hold(timeout=1):
        assert other.held
    with pytest.raises(RuntimeError):
        lock.release()
    lock.close()
    other.close()


LOCK_HOLDER = """
import sys, time
from facegnet.locking import FileLock
lock = FileLock(sys.argv[1])
with lock.hold():
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_file_lock_between_processes(tmp_path: Path) -> None:
    path = tmp_path / "p.lock"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        lock = FileLock(path)
        with pytest.raises(LockTimeout) as caught:
            lock.acquire(timeout=0.1)
        assert caught.value.holder == str(proc.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
        with lock.hold(timeout=10):  # free once the holder let go
            assert lock.held
        lock.close()
    finally:
        proc.kill()
        proc.wait(30)


# ============================================================================================ threads
def test_threads_search_while_one_writes(tmp_path: Path) -> None:
    """Four threads search one Gallery object while a fifth adds and removes templates, one transaction
    each: every answer is whole (a known person, never a half-written one), and nothing is lost."""
    vectors = unit_vectors(300, seed=1)
    gallery = Gallery(tmp_path / "g", create=True)
    gallery.add_embeddings([f"base{i}" for i in range(20)], vectors[:20])
    done = threading.Event()
    errors: list[BaseException] = []
    answers = [0] * 4

    def search(n: int) -> None:
        try:
            while not done.is_set():
                matches = gallery.search(vectors[:20], top_k=2, threshold=0.9)
                assert [m.name for m in matches] == [f"base{i}" for i in range(20)]
                assert len(gallery) >= 20 and gallery.people()
                answers[n] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def write() -> None:
        try:
            for i in range(20, 300):
                gallery.add_embedding(f"new{i}", vectors[i])
                if i % 40 == 0:
                    gallery.remove_person(f"new{i - 1}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    readers = [threading.Thread(target=search, args=(n,)) for n in range(4)]
    writer = threading.Thread(target=write)
    for thread in (*readers, writer):
        thread.start()
    for thread in (writer, *readers):
        thread.join(120)
    assert not errors, errors[0]
    assert all(answers), answers  # every reader ran while the writer wrote
    removed = {f"new{i - 1}" for i in range(20, 300) if i % 40 == 0}
    assert len(gallery) == 300 - len(removed)
    names = dict(gallery.people())
    assert not removed & set(names) and all(f"new{i}" in names for i in range(20, 300) if f"new{i}" not in removed)
    assert gallery.verify_consistency()["consistent"]
    best = gallery.search(vectors[20:300], threshold=0.9)
    assert all(m.name == f"new{i}" or f"new{i}" in removed for i, m in zip(range(20, 300), best))
    gallery.close()


@needs_lfw
@pytest.mark.slow
def test_threads_identify_photos_while_another_enrolls(tmp_path: Path, recognizer) -> None:
    """The server's case, with the model: two threads identify photos while a third enrolls photos."""
    gallery = Gallery(tmp_path / "g", recognizer=recognizer, create=True)
    gallery.enroll("Colin_Powell", lfw("Colin_Powell", 1))
    gallery.enroll("Tony_Blair", lfw("Tony_Blair", 1))
    probe = recognizer.embed_faces(lfw("Colin_Powell", 1), recognizer.detect(lfw("Colin_Powell", 1))[:1])
    to_enroll = [("Serena_Williams", lfw("Serena_Williams", 1)), ("Gerhard_Schroeder", lfw("Gerhard_Schroeder", 1))]
    done = threading.Event()
    errors: list[BaseException] = []
    counts = [0, 0]

    def identify(n: int) -> None:
        try:
            while not done.is_set() or counts[n] == 0:
                matches = gallery.identify(lfw("Colin_Powell", 1))  # an enrolled photo: its own template
                assert matches and matches[0].name == "Colin_Powell" and matches[0].similarity > 0.99
                assert gallery.search(probe)[0].name == "Colin_Powell"
                counts[n] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def enroll() -> None:
        try:
            for name, photo in to_enroll:
                assert gallery.enroll(name, photo).status == "enrolled"
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    threads = [threading.Thread(target=identify, args=(n,)) for n in range(2)] + [threading.Thread(target=enroll)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors[0]
    assert all(counts), counts
    assert dict(gallery.people()) == {"Colin_Powell": 1, "Tony_Blair": 1, "Serena_Williams": 1,
                                      "Gerhard_Schroeder": 1}
    assert gallery.verify_consistency()["consistent"]
    gallery.close()


# ============================================================================================ processes
def enroll_and_add(gallery_dir: str, folder: str, tag: int, recognizer) -> tuple[int, int, int]:
    """One writer: enroll a folder, then 40 synthetic templates in 40 small transactions (so that they
    interleave with the other writer's); (enrolled, already there, skipped)."""
    with Gallery(gallery_dir, recognizer=recognizer, create=True) as gallery:
        report = gallery.enroll_folder(folder, progress=False)
        for i, vector in enumerate(unit_vectors(40, seed=tag)):
            gallery.add_embedding(f"synthetic{tag}_{i}", vector)
    return len(report.enrolled), len(report.existing), len(report.skipped)


ENROLLER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from facegnet.recognizer import FaceRecognizer
from test_gallery_concurrency import enroll_and_add
gallery_dir, folder, go = sys.argv[1:4]
recognizer = FaceRecognizer(threads=1)
recognizer.embedder  # load the model before the start signal
print("ready", flush=True)
while not Path(go).exists():  # both processes start writing together
    time.sleep(0.01)
print(*enroll_and_add(gallery_dir, folder, 1, recognizer), flush=True)
"""


@needs_lfw
@pytest.mark.slow
def test_two_processes_enroll_into_one_gallery(tmp_path: Path, recognizer) -> None:
    """This process and another enroll into one gallery directory at once: no template is lost, and a photo
    both enroll is stored once."""
    folders = []
    photos = {0: [("Colin_Powell", 1), ("Tony_Blair", 1)],
              1: [("Serena_Williams", 1), ("Tony_Blair", 1)]}  # Tony_Blair_0001 in both
    for tag, items in photos.items():
        folder = tmp_path / f"in{tag}"
        for name, n in items:
            (folder / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(lfw(name, n), folder / name)
        folders.append(folder)
    path, go = tmp_path / "gallery", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", ENROLLER, str(path), str(folders[1]), str(go),
                             str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        go.touch()
        here = enroll_and_add(str(path), str(folders[0]), 0, recognizer)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == 0, err
    there = tuple(int(v) for v in out.split())
    assert here[0] + there[0] == 3 and here[1] + there[1] == 1  # the shared photo once
    assert here[2] == there[2] == 0
    with Gallery(path) as gallery:
        people = dict(gallery.people())
        assert {k: v for k, v in people.items() if not k.startswith("synthetic")} == \
            {"Colin_Powell": 1, "Tony_Blair": 1, "Serena_Williams": 1}
        assert sum(1 for k in people if k.startswith("synthetic")) == 80  # no write lost
        assert len(gallery) == 83 and gallery.verify_consistency()["consistent"]


def test_busy_writer_names_itself(tmp_path: Path) -> None:
    """A second writer that waits too long gets one line naming the gallery and the holder."""
    path = tmp_path / "g"
    first = Gallery(path, create=True)
    second = Gallery(path, lock_timeout=0.1)
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        with first._writer():
            started.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert started.wait(30)
    try:
        with pytest.raises(GalleryError, match=f"busy.*pid {os.getpid()}") as caught:
            second.add_embedding("b", np.ones(512, np.float32))
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
        with pytest.raises(GalleryError, match="busy"):  # the same object, from another thread, waits too
            first.lock_timeout = 0.1
            first.add_embedding("c", np.ones(512, np.float32))
    finally:
        release.set()
        thread.join(30)
    second.add_embedding("b", np.ones(512, np.float32))
    assert second.people() == [("b", 1)]
    first.close()
    second.close()
