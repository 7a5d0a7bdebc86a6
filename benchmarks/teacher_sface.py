#!/usr/bin/env python3
"""The second teacher, SFace, against the shared online teacher on the training pack's dev pairs (never LFW).

Three embeddings of the 1,053 dev faces, each with flip (crop and mirror image summed, then normalised, as
facegnet's embedder does):

- the shared teacher, Open Model Zoo's face-reidentification-retail-0095 (OpenVINO; ``../shared/models``), the peer;
- SFace (``facegnet.train.sface``), read from the stored targets of ``python -m facegnet.train.teacher_targets
  --split dev`` (made here first when missing: resumable, about a minute on one thread);
- both concatenated, each L2-normalised first.

Figures: the 6,000 dev pairs (accuracy at the best threshold, 10-fold accuracy, AUC, TAR at FAR 1e-2 and 1e-3,
``facegnet.train.evaluate.pair_scores``) and every pair of dev faces (about 550,000, by identity) at FAR 1e-3 and
1e-4; SFace's time per face on one thread against the shared teacher's in the same run. Writes
``benchmarks/results/teacher_sface.{json,md}``.

    python benchmarks/teacher_sface.py
    python benchmarks/teacher_sface.py --targets data/teacher_sface --threads 1
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from host_info import run_line, run_record, write_result  # noqa: E402

from facegnet.errors import one_line_errors  # noqa: E402

PACK = ROOT.parent / "shared" / "data" / "train"
OMZ = ROOT.parent / "shared" / "models" / "face-reidentification-retail-0095"


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def omz_embeddings(crops: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The shared teacher's flip and crop-only embeddings of uint8 crops, and its seconds per face and view."""
    import torch

    from facegnet.train.datasets import to_input
    from facegnet.train.teacher import OnlineTeacher

    teacher = OnlineTeacher(OMZ, threads=threads, engine="openvino")
    out, plain, seconds = [], [], 0.0
    for i in range(0, len(crops), 64):
        x = to_input(torch.from_numpy(crops[i : i + 64]))
        tick = time.perf_counter()
        both = teacher(torch.cat([x, x.flip(-1)])).numpy()
        seconds += time.perf_counter() - tick
        out.append(both[: len(x)] + both[len(x) :])
        plain.append(both[: len(x)])
    return unit(np.concatenate(out)), unit(np.concatenate(plain)), seconds / (2 * len(crops))


def sface_seconds(crops: np.ndarray, threads: int) -> float:
    """SFace's seconds per face on ``threads`` threads, measured on ``crops`` (batches of 32)."""
    from facegnet.train.sface import SFace

    teacher = SFace(threads=threads)
    teacher.embed(crops[:2])
    tick = time.perf_counter()
    for i in range(0, len(crops), 32):
        teacher.embed(crops[i : i + 32])
    return (time.perf_counter() - tick) / len(crops)


def all_pairs(emb: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    """TAR at FAR 1e-3 and 1e-4 over every pair of dev faces."""
    from facegnet.evaluation.metrics import tar_at_far

    upper = np.triu_indices(len(emb), k=1)
    sims = (emb @ emb.T)[upper]
    same = ids[upper[0]] == ids[upper[1]]
    out: dict[str, float] = {"genuine_pairs": int(same.sum()), "impostor_pairs": int((~same).sum())}
    for far, key in ((1e-3, "1e-3"), (1e-4, "1e-4")):
        out[f"tar@far{key}"] = round(tar_at_far(sims, same, far)[0], 5)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(PACK), help="the training pack")
    parser.add_argument("--targets", default=str(ROOT / "data" / "teacher_sface"),
                        help="the SFace targets folder (outside git); its dev rows are made when missing")
    parser.add_argument("--threads", type=int, default=1, help="threads for both teachers")
    parser.add_argument("--timing-faces", type=int, default=128, help="faces timed per teacher")
    parser.add_argument("--out", default=str(HERE / "results" / "teacher_sface"))
    args = parser.parse_args(argv)

    def run() -> int:
        from facegnet.train import datasets as D
        from facegnet.train.evaluate import pair_scores
        from facegnet.train.teacher_targets import build_targets, face_targets

        pack = Path(args.data)
        made = build_targets(pack, args.targets, ("dev",), threads=args.threads)  # at once when already stored
        rows = [r for r in D.read_manifest(pack) if r["split"] == "dev"]
        names = [r["crop"] for r in rows]
        ids = np.array([r["identity"] for r in rows])
        crops = D.decode_crops([pack / n for n in names])
        stored, flips, meta = face_targets(args.targets, pack, names)
        crop_view, mirror_view = int(np.flatnonzero(~flips)[0]), int(np.flatnonzero(flips)[0])
        sface_plain = unit(stored[:, crop_view])
        sface = unit(stored[:, crop_view] + stored[:, mirror_view])
        omz, omz_plain, omz_s = omz_embeddings(crops, args.threads)
        both = unit(np.concatenate([omz, sface], axis=1))
        timed = crops[: args.timing_faces]
        sface_s = sface_seconds(timed, args.threads)

        where = {n: i for i, n in enumerate(names)}
        pairs = D.read_pairs(pack / "dev_pairs.csv")
        a = np.array([where[p[0]] for p in pairs])
        b = np.array([where[p[1]] for p in pairs])
        same = np.array([p[2] for p in pairs], dtype=bool)
        teachers = {"face-reidentification-retail-0095 (shared teacher)": omz, "shared teacher, crop only": omz_plain,
                    "SFace, crop only": sface_plain,
                    "SFace": sface, "both concatenated": both}
        figures = {}
        for name, emb in teachers.items():
            figures[name] = {"dev_pairs": pair_scores((emb[a] * emb[b]).sum(1), same), "all_dev_pairs": all_pairs(emb, ids)}

        command = "python benchmarks/teacher_sface.py" + "".join(f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
        result = {**run_record(command), "faces": len(rows), "pairs": len(pairs), "threads": args.threads,
                  "sface_sha256": meta["teacher_sha256"], "targets_made_now": made["embedded_now"],
                  "ms_per_face": {"shared teacher": round(1000 * omz_s, 2), "SFace": round(1000 * sface_s, 2)},
                  "sface_time_ratio": round(sface_s / omz_s, 1), "teachers": figures}
        peer = figures["face-reidentification-retail-0095 (shared teacher)"]
        lines = ["# SFace as a second teacher: the pack's dev pairs", "", run_line(result), "",
                 f"{len(rows)} dev faces, {len(pairs):,} dev pairs; all dev pairs: "
                 f"{peer['all_dev_pairs']['genuine_pairs']:,} genuine, {peer['all_dev_pairs']['impostor_pairs']:,} "
                 "impostor. Each teacher with flip (crop + mirror summed) unless said.", "",
                 "| teacher | dev accuracy | 10-fold | AUC | TAR @ FAR 1e-2 | TAR @ FAR 1e-3 | all pairs TAR @ 1e-3 "
                 "| all pairs TAR @ 1e-4 |", "|---|---|---|---|---|---|---|---|"]
        for name, f in figures.items():
            d, p = f["dev_pairs"], f["all_dev_pairs"]
            lines.append(f"| {name} | {d['accuracy']:.2%} | {d['accuracy_10fold']:.2%} | {d['auc']:.4f} | "
                         f"{d['tar@far1e-2']:.1%} | {d['tar@far1e-3']:.1%} | {p['tar@far1e-3']:.1%} | "
                         f"{p['tar@far1e-4']:.1%} |")
        gain = figures["both concatenated"]["all_dev_pairs"]["tar@far1e-4"] - peer["all_dev_pairs"]["tar@far1e-4"]
        lines += ["", f"Time per face and view on {args.threads} thread(s): SFace {1000 * sface_s:.1f} ms, the shared "
                  f"teacher {1000 * omz_s:.2f} ms ({sface_s / omz_s:.1f}×).",
                  f"Concatenating SFace to the shared teacher moves all-pairs TAR @ FAR 1e-4 by {100 * gain:+.1f} "
                  "points.", ""]
        write_result(Path(args.out), result, lines)
        return 0

    return one_line_errors(run)


if __name__ == "__main__":
    raise SystemExit(main())
