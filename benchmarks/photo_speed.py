#!/usr/bin/env python3
"""Per-photo speed, what a user waits for: facegnet against face_recognition (HOG + dlib), in one run.

Each tool does the whole job on each photo, from the file: decode → detect every face → align → embed every
face. Photo sets: LFW (250×250, one face mostly), 640×480 and 1920×1080 scenes with several faces (LFW photos
tiled onto a canvas, saved as JPEG so decoding counts). Tools are interleaved round by round, one thread and all
threads; the faces each found per photo are reported beside the times. A folder benchmark then runs the
commands a user runs on a folder, each from a cold start, in photos per second: ``facegnet enroll`` (photos read
on threads ahead of the networks, a chunk's faces embedded together) and ``facegnet identify`` of the same
photos, against face_recognition's ``face_recognition KNOWN FOLDER --cpus N`` (which embeds and compares every
photo of the folder).

face_recognition runs in this process when importable, else in the Python given by ``--peer-python`` (or
``$FACEGNET_PEER_PYTHON``) as a worker process; without either the peer columns say how to install it.

    python benchmarks/photo_speed.py [--photos 120] [--rounds 3] [--peer-python /work/peer-src-venv/bin/python]

Writes benchmarks/results/photo_speed.{json,md}. Timings taken while other work shares the CPU are pessimistic
(the load average at the start and the end is recorded).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LFW = HERE.parent.parent / "shared" / "data" / "lfw" / "images"
INSTALL_PEER = ("python -m venv /work/peer-src-venv && /work/peer-src-venv/bin/pip install numpy pillow click 'setuptools<81' "
                "face_recognition_models && /work/peer-src-venv/bin/pip install --no-binary dlib dlib && "
                "/work/peer-src-venv/bin/pip install --no-deps face_recognition  (dlib builds from source with AVX "
                "and OpenBLAS: apt-get install libopenblas-dev cmake first, about 25 CPU-minutes; the prebuilt "
                "dlib-bin wheel has neither and was ~1.8x slower here, not a fair peer); then pass --peer-python "
                "/work/peer-src-venv/bin/python")

# The peer's per-photo job, as face_recognition's README does it (HOG detector, upsample 1, 5-point landmarks).
PEER_WORKER = r'''
import json, os, sys, time
import dlib, face_recognition
flags = {k: bool(getattr(dlib, k, False)) for k in ("DLIB_USE_BLAS", "USE_AVX_INSTRUCTIONS", "DLIB_USE_CUDA")}
print(json.dumps({"ready": face_recognition.__version__, "dlib": dlib.__version__, "flags": flags}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    out = []
    for path in job["paths"]:
        start = time.perf_counter()
        image = face_recognition.load_image_file(path)
        boxes = face_recognition.face_locations(image)
        codes = face_recognition.face_encodings(image, boxes)
        out.append([time.perf_counter() - start, len(codes)])
    print(json.dumps(out), flush=True)
'''


class Peer:
    """face_recognition, timed photo by photo: in-process when importable, else a worker in another Python."""

    def __init__(self, python: str | None, threads: int) -> None:
        self.note = ""
        self.proc = None
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        candidates = [python] if python else []
        try:
            import face_recognition  # noqa: F401

            candidates.insert(0, sys.executable)
        except ImportError:
            pass
        for exe in candidates:
            try:
                proc = subprocess.Popen([exe, "-c", PEER_WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
                ready = json.loads(proc.stdout.readline() or "{}")
            except (OSError, ValueError):
                continue
            if "ready" in ready:
                self.proc = proc
                on = ", ".join(k for k, v in ready.get("flags", {}).items() if v) or "no AVX, no BLAS"
                self.note = (f"face_recognition {ready['ready']}, dlib {ready.get('dlib', '?')} built with {on} "
                             f"({exe}, OPENBLAS_NUM_THREADS={threads})")
                self.python = exe
                return
            proc.kill()
        self.note = "not run: face_recognition is not importable here; install it with " + INSTALL_PEER

    @property
    def available(self) -> bool:
        return self.proc is not None

    def run(self, paths: list[Path]) -> list[tuple[float, int]]:
        self.proc.stdin.write(json.dumps({"paths": [str(p) for p in paths]}) + "\n")
        self.proc.stdin.flush()
        return [tuple(x) for x in json.loads(self.proc.stdout.readline())]

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def lfw_paths(count: int) -> list[Path]:
    paths = sorted(LFW.glob("*/*_0001.jpg")) if LFW.is_dir() else []
    if not paths:
        raise SystemExit(f"LFW photos not found under {LFW}")
    return paths[:: max(1, len(paths) // count)][:count]


def scene(photos: list[Path], size: tuple[int, int], faces: int, seed: int) -> np.ndarray:
    """A canvas (width, height) with ``faces`` LFW photos pasted at random places and sizes, no overlap."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    width, height = size
    base = Image.open(photos[seed % len(photos)]).convert("RGB").resize((width, height))
    canvas = base.filter(ImageFilter.GaussianBlur(radius=max(width, height) / 40))  # a soft, face-free backdrop
    cell = width // faces
    for k in range(faces):
        side = int(min(cell, height) * rng.uniform(0.6, 0.95))
        face = Image.open(photos[(seed * 7 + k + 1) % len(photos)]).convert("RGB").resize((side, side))
        x = k * cell + int(rng.integers(0, max(1, cell - side)))
        y = int(rng.integers(0, max(1, height - side)))
        canvas.paste(face, (x, y))
    return np.asarray(canvas)


def make_sets(folder: Path, count: int) -> dict[str, list[Path]]:
    from PIL import Image

    lfw = lfw_paths(count)
    sets = {"LFW 250×250": lfw}
    for name, size, faces, n in (("640×480, 3 faces", (640, 480), 3, max(8, count // 6)),
                                 ("1920×1080, 5 faces", (1920, 1080), 5, max(4, count // 12))):
        paths = []
        for i in range(n):
            path = folder / f"{size[0]}x{size[1]}-{i:03d}.jpg"
            Image.fromarray(scene(lfw, size, faces, seed=i)).save(path, quality=92)
            paths.append(path)
        sets[name] = paths
    return sets


def facegnet_run(rec, paths: list[Path]) -> list[tuple[float, int]]:
    out = []
    for path in paths:
        start = time.perf_counter()
        faces, _ = rec.embed(path)
        out.append((time.perf_counter() - start, len(faces)))
    return out


def summary(samples: list[list[tuple[float, int]]]) -> dict:
    """Per photo: median over rounds of each photo's time, then mean and median over photos; faces found."""
    per_photo = np.median(np.array([[t for t, _ in run] for run in samples]), axis=0)
    faces = [n for _, n in samples[0]]
    return {"ms_per_photo_mean": round(float(per_photo.mean()) * 1000, 1),
            "ms_per_photo_median": round(float(np.median(per_photo)) * 1000, 1),
            "faces_found": int(sum(faces)), "photos_with_a_face": int(sum(n > 0 for n in faces)),
            "photos": len(faces)}


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and exit code of one command."""
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, proc.returncode


def rates(name: str, one: float, full: float, photos: int) -> dict:
    """Photos/s from a cold start, the start-up (a one-photo run) and photos/s after it."""
    return {f"{name}_photos_per_s": round(photos / full, 1), f"{name}_startup_s": round(one, 2),
            f"{name}_photos_per_s_after_startup": round((photos - 1) / max(1e-9, full - one), 1)}


def folder_speed(rec_factory, peer_python: str | None, folder: Path, threads: int) -> dict:
    """Photos/s on a folder, as a user runs it: ``facegnet enroll`` and ``facegnet identify`` vs the
    ``face_recognition`` command line on the same photos, each from a cold start, and each also on one photo (its
    start-up: importing, loading models), so the throughput after start-up is known too; plus facegnet's
    in-process ``embed_images`` (no start-up, no gallery writes)."""
    paths = sorted(folder.glob("*.jpg"))
    rec = rec_factory(threads)
    rec.embed_images(paths[:4])  # warm: exports and sessions made before timing
    start = time.perf_counter()
    results = rec.embed_images(paths, decode_threads=2)
    took = time.perf_counter() - start
    out = {"photos": len(paths), "facegnet_embed_images_photos_per_s": round(len(paths) / took, 1),
           "facegnet_with_a_face": sum(r.ok for r in results)}
    single = folder.parent / "single"
    single.mkdir(exist_ok=True)
    shutil.copy(paths[0], single / paths[0].name)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    facegnet = [sys.executable, "-m", "facegnet"]
    with tempfile.TemporaryDirectory() as scratch:
        one, _ = timed([*facegnet, "enroll", str(single), "--gallery", f"{scratch}/one", "--quiet", "--threads",
                        str(threads)], env)
        full, rc = timed([*facegnet, "enroll", str(folder), "--gallery", f"{scratch}/all", "--quiet", "--threads",
                          str(threads)], env)
        out.update(rates("facegnet_enroll", one, full, len(paths)), facegnet_enroll_rc=rc)
        # Identifying the same photos against that gallery: the job the face_recognition command line does.
        identify = [*facegnet, "identify", "--gallery", f"{scratch}/all", "--json", "--threads", str(threads)]
        one, _ = timed([*identify, str(paths[0])], env)
        full, rc = timed([*identify, *map(str, paths)], env)
        out.update(rates("facegnet_identify", one, full, len(paths)), facegnet_identify_rc=rc)
    cli = None
    if peer_python:
        candidate = Path(peer_python).with_name("face_recognition")
        cli = str(candidate) if candidate.exists() else None
    cli = cli or shutil.which("face_recognition")
    if cli is None:
        out["face_recognition_cli"] = "not run: the face_recognition command is not installed; " + INSTALL_PEER
        return out
    with tempfile.TemporaryDirectory() as known:
        shutil.copy(paths[0], Path(known) / "someone.jpg")
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        one, _ = timed([cli, "--cpus", str(threads), known, str(single)], env)
        full, rc = timed([cli, "--cpus", str(threads), known, str(folder)], env)
    out.update(rates("face_recognition_cli", one, full, len(paths)), face_recognition_cli_rc=rc)
    for tool in ("enroll", "identify"):
        for suffix in ("", "_after_startup"):
            out[f"ratio_{tool}{suffix}_over_face_recognition"] = round(
                out[f"facegnet_{tool}_photos_per_s{suffix}"] / out[f"face_recognition_cli_photos_per_s{suffix}"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=120, help="LFW photos (scenes: a sixth and a twelfth)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per tool (interleaved)")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--peer-python", default=os.environ.get("FACEGNET_PEER_PYTHON"),
                        help="a Python where face_recognition imports (when it does not here)")
    parser.add_argument("--folder-photos", type=int, default=200, help="LFW photos for the folder benchmark (0: skip)")
    parser.add_argument("--folder-only", action="store_true", help="only the folder benchmark (e.g. a bigger folder)")
    parser.add_argument("--before", action="store_true",
                        help="also time the previous defaults (PyTorch MTCNN and embedding) in the same run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "photo_speed")
    args = parser.parse_args(argv)

    import torch

    from facegnet.recognizer import FaceRecognizer

    def facegnet(threads: int, **options) -> FaceRecognizer:
        torch.set_num_threads(threads)
        return FaceRecognizer(threads=threads, **options)

    load_start = os.getloadavg()
    report: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                "load_average_at_start": [round(x, 2) for x in load_start]},
                    "command": "python benchmarks/photo_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "job": "per photo, from the file: decode, detect every face, align, embed every face",
                    "results": {}}
    with tempfile.TemporaryDirectory(prefix="photo-speed-") as scratch:
        sets = make_sets(Path(scratch), args.photos)
        for threads in [] if args.folder_only else [int(t) for t in args.threads.split(",")]:
            tools = {"facegnet (default: faces ≥ 40 px, flip)": facegnet(threads),
                     "facegnet, no flip": facegnet(threads, flip=False),
                     # The pyramid a crowd scene may need: faces down to 20 px (a level deeper, ~2x the pixels).
                     "facegnet, faces ≥ 20 px (crowd pyramid)": facegnet(threads, detect_min_face_size=20)}
            if args.before:
                tools["facegnet before (PyTorch MTCNN ≥ 20 px + embedding, flip)"] = facegnet(
                    threads, backend="torch", detect_engine="torch", detect_min_face_size=20)
            for rec in tools.values():  # warm-up: exports, sessions, first-call allocations
                facegnet_run(rec, sets["LFW 250×250"][:3] + sets["640×480, 3 faces"][:1])
            peer = Peer(args.peer_python, threads)
            if peer.available:
                peer.run(sets["LFW 250×250"][:3])
            block: dict = {"peer": peer.note, "sets": {}}
            for set_name, paths in sets.items():
                samples: dict[str, list] = {name: [] for name in tools}
                peer_samples: list = []
                for _ in range(args.rounds):
                    for name, rec in tools.items():
                        torch.set_num_threads(threads)
                        samples[name].append(facegnet_run(rec, paths))
                    if peer.available:
                        peer_samples.append(peer.run(paths))
                rows = {name: summary(s) for name, s in samples.items()}
                if peer_samples:
                    rows["face_recognition (HOG + dlib ResNet)"] = summary(peer_samples)
                    base = rows["face_recognition (HOG + dlib ResNet)"]["ms_per_photo_mean"]
                    for row in rows.values():
                        row["time_vs_face_recognition"] = round(row["ms_per_photo_mean"] / base, 2)
                block["sets"][set_name] = rows
                print(f"[{threads} thread(s)] {set_name}: " + "; ".join(
                    f"{n}: {r['ms_per_photo_mean']} ms, {r['faces_found']} faces" for n, r in rows.items()),
                    flush=True)
            peer.close()
            report["results"][f"{threads} thread(s)"] = block
        if args.folder_photos:
            folder = Path(scratch) / "folder"
            folder.mkdir()
            for i, path in enumerate(lfw_paths(args.folder_photos)):
                shutil.copy(path, folder / f"{i:05d}.jpg")
            threads = max(int(t) for t in args.threads.split(","))
            report["folder"] = folder_speed(lambda n: facegnet(n), args.peer_python, folder, threads)
            report["folder"]["threads"] = threads
            print(f"folder: {report['folder']}", flush=True)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report) + "\n")
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Per-photo speed: facegnet vs face_recognition", "",
             f"`{report['command']}` — {report['job']}. {m['platform']}, {m['cpus']} CPUs; load average "
             f"{m['load_average_at_start'][0]} at the start, {m.get('load_average_at_end', ['?'])[0]} at the end "
             "(above ~0.5 other work shared the CPU: times are pessimistic). Median of the rounds per photo, "
             "mean over photos.", ""]
    for threads, block in report["results"].items():
        lines += [f"## {threads}", "", f"Peer: {block['peer']}", "",
                  "| photos | tool | ms per photo (mean) | median | faces found | photos with a face | time ÷ "
                  "face_recognition's |", "|---|---|---|---|---|---|---|"]
        for set_name, rows in block["sets"].items():
            for name, r in rows.items():
                lines.append(f"| {set_name} ({r['photos']}) | {name} | {r['ms_per_photo_mean']} | "
                             f"{r['ms_per_photo_median']} | {r['faces_found']} | {r['photos_with_a_face']} | "
                             f"{r.get('time_vs_face_recognition', '')} |")
        lines.append("")
    if "folder" in report:
        f = report["folder"]
        lines += ["## A folder, as a user runs it", "",
                  f"{f['photos']} LFW photos, {f['threads']} threads; each command from a cold start, and on one photo "
                  "for its start-up (imports, models); in-process `embed_images` has neither start-up nor gallery "
                  f"writes: {f['facegnet_embed_images_photos_per_s']} photos/s.", "",
                  "| command | photos/s from a cold start | start-up s | photos/s after start-up | × face_recognition "
                  "(cold / after start-up) |", "|---|---|---|---|---|"]
        for tool, label in (("facegnet_enroll", "`facegnet enroll FOLDER`"),
                            ("facegnet_identify", "`facegnet identify PHOTOS… --json` (against that gallery)"),
                            ("face_recognition_cli", "`face_recognition --cpus N KNOWN FOLDER`")):
            if f"{tool}_photos_per_s" not in f:
                continue
            short = tool.replace("facegnet_", "")
            ratio = (f"{f.get(f'ratio_{short}_over_face_recognition', '')} / "
                     f"{f.get(f'ratio_{short}_after_startup_over_face_recognition', '')}" if short != tool else "1 / 1")
            lines.append(f"| {label} | {f[f'{tool}_photos_per_s']} | {f[f'{tool}_startup_s']} | "
                         f"{f[f'{tool}_photos_per_s_after_startup']} | {ratio} |")
        if "face_recognition_cli" in f:
            lines.append(f"\nface_recognition: {f['face_recognition_cli']}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
