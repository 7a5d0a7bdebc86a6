"""Training: the pack dataset, margin heads, distillation, exact resume (also of checkpoints written before the
training options were pruned), 2-process DDP, fine-tuning, CLI.

Runs are tiny (a ×0.5 network, batches of 8, a few steps over the first faces of the real training pack) so
the whole file stays fast on two cores. Tests that read the pack skip without it; the formula tests do not.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from facegnet.errors import DataError
from facegnet.evaluation.metrics import threshold_at_far
from facegnet.models.heads import ArcFace, CosFace, build_head
from facegnet.train import datasets as D
from facegnet.train.augment import Augment
from facegnet.train.distill import TeacherDistill
from facegnet.train.evaluate import pair_scores
from facegnet.train.sampling import EpochSampler
from facegnet.train.trainer import TrainConfig, train

PACK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"
SMALL_MODEL = {"width": 0.5, "stem_stride": 2, "prelu": True, "dfc": False, "embedding_size": 64, "dropout": 0.0}

needs_pack = pytest.mark.skipif(not (PACK / "manifest.csv").exists(), reason="shared training pack not present")


@pytest.fixture(scope="module")
def dev_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-pair slice of the pack's dev pairs (absolute paths), so dev evaluation stays quick."""
    rows = D.read_pairs(PACK / "dev_pairs.csv")
    same = [r for r in rows if r[2] == 1][:12]
    diff = [r for r in rows if r[2] == 0][:12]
    path = tmp_path_factory.mktemp("dev") / "pairs.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "same"])
        for a, b, s in same + diff:
            writer.writerow([PACK / a, PACK / b, s])
    return path


def tiny_config(out: Path, dev: Path | None, **kw) -> TrainConfig:
    base = dict(data=str(PACK), out=str(out), model=dict(SMALL_MODEL), limit=48, batch_size=8, steps=4,
                warmup_steps=2, head="arcface", distill="cosine", distill_weight=2.0, colour=0.5, lowres=0.3,
                blur=0.3, grayscale=0.3, eval_every=2, checkpoint_every=0, log_every=1, threads=1, seed=3,
                dev_pairs="none" if dev is None else str(dev), min_faces=1)
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------------------------- data
@needs_pack
def test_pack_dataset_reads_crops_labels_and_teacher_rows() -> None:
    faces = D.load_pack(PACK, "train", min_faces=2, limit=40)
    assert faces.images.shape == (40, 112, 112, 3) and faces.images.dtype == np.uint8
    assert faces.images.std() > 10  # real pixels, not an empty buffer
    rows = D.read_manifest(PACK)
    train_rows = [i for i, r in enumerate(rows) if r["split"] == "train"][:40]
    teacher = np.load(PACK / "teacher_dlib.npy")
    np.testing.assert_allclose(faces.teacher, teacher[train_rows].astype(np.float32))
    ids = [rows[i]["identity"] for i in train_rows]
    for label, ident in zip(faces.labels, ids):
        if ids.count(ident) >= 2:
            assert faces.identities[label] == ident
        else:
            assert label == -1
    dev = D.load_pack(PACK, "dev", teacher=None, limit=5)
    assert all(rows[i]["split"] == "dev" for i, r in enumerate(rows) if r["crop"] in dev.paths)


@needs_pack
def test_folder_dataset_labels_people_and_loose_faces(tmp_path: Path) -> None:
    rows = [r for r in D.read_manifest(PACK) if r["split"] == "train"][:12]
    for r in rows[:6]:
        dest = tmp_path / f"person_{r['identity']}"
        dest.mkdir(exist_ok=True)
        shutil.copy(PACK / r["crop"], dest)
    shutil.copy(PACK / rows[6]["crop"], tmp_path / "loose.webp")
    faces = D.load_folder(tmp_path, min_faces=2)
    assert len(faces) == 7
    assert faces.labels[faces.paths.index("loose.webp")] == -1
    with pytest.raises(DataError):
        D.load_folder(tmp_path / "nothing-here")


def test_augment_flip_and_determinism() -> None:
    x = torch.randn(4, 3, 112, 112)
    flipped = Augment(flip=1.0)(x.clone(), torch.Generator().manual_seed(0))
    assert torch.equal(flipped, x.flip(-1))
    aug = Augment(flip=0.5, colour=0.5, grayscale=0.5, blur=0.5, lowres=0.5)
    a = aug(x.clone(), torch.Generator().manual_seed(1))
    b = aug(x.clone(), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_augment_jitter_warps_within_bounds_and_keeps_black_border() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 112, 112) * 2 - 1
    warped = Augment(flip=0, jitter=1.0)(x.clone(), gen)
    assert warped.shape == x.shape and not torch.equal(warped, x)
    assert warped.min() >= -1 - 1e-5 and warped.max() <= 1 + 1e-5
    # a small warp keeps the face where it was: the centre moves by a few pixels at most
    centre = (slice(None), slice(None), slice(40, 72), slice(40, 72))
    assert (warped[centre] - x[centre]).abs().mean() < (torch.rand_like(x) * 2 - 1 - x).abs().mean()
    # what the warp brings in from outside the crop is the aligner's black border, not mid-grey
    black = Augment(flip=0, jitter=1.0)(torch.full((4, 3, 112, 112), -1.0), gen)
    assert torch.allclose(black, torch.full_like(black, -1.0), atol=1e-5)


def test_augment_erase_blanks_one_rectangle_per_image() -> None:
    x = torch.rand(8, 3, 112, 112) * 2 - 1
    erased = Augment(flip=0, erase=1.0)(x.clone(), torch.Generator().manual_seed(4))
    for before, after in zip(x, erased):
        changed = (before != after).any(0)
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(changed.sum()) == height * width  # one solid rectangle
        assert 0.04 * 112 * 112 <= height * width <= 0.26 * 112 * 112
        inside = after[:, changed]
        assert torch.equal(inside, inside[:, :1].expand_as(inside))  # one grey level


def test_sampler_splits_one_global_batch_across_ranks() -> None:
    whole = EpochSampler(100, 8, seed=5).batch(3)
    parts = [EpochSampler(100, 8, seed=5, rank=r, world=2).batch(3) for r in range(2)]
    assert sorted(np.concatenate(parts)) == sorted(whole)


# ----------------------------------------------------------------------------------------------- heads
def _unit(angle: float) -> torch.Tensor:
    return torch.tensor([[math.cos(angle), math.sin(angle)]])


def test_arcface_adds_angular_margin_to_the_target_only() -> None:
    head = ArcFace(2, 2, s=64.0, m=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))  # class norms do not matter
    theta = 0.7
    logits = head(_unit(theta), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(64 * math.cos(theta + 0.5), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(64 * math.cos(math.pi / 2 - theta), abs=1e-4)
    # beyond π − m the insightface fallback cos θ − m·sin m keeps the target logit monotonic
    theta = 2.9
    logits = head(_unit(theta), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(64 * (math.cos(theta) - math.sin(math.pi - 0.5) * 0.5), abs=1e-4)
    # an unlabelled face gets no margin and no loss
    plain = head(_unit(0.7), torch.tensor([-1]))
    assert plain[0, 0].item() == pytest.approx(64 * math.cos(0.7), abs=1e-4)
    assert head.loss(_unit(0.7), torch.tensor([-1])).item() == 0.0


def test_cosface_subtracts_cosine_margin() -> None:
    head = CosFace(2, 2, s=30.0, m=0.35)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    logits = head(_unit(0.4), torch.tensor([1]))
    assert logits[0, 1].item() == pytest.approx(30 * (math.sin(0.4) - 0.35), abs=1e-4)
    assert logits[0, 0].item() == pytest.approx(30 * math.cos(0.4), abs=1e-4)
    assert build_head("cosface", 2, 2).m == 0.35 and build_head("arcface", 2, 2).m == 0.5
    with pytest.raises(ValueError):
        build_head("sphereface", 2, 2)


def test_distillation_centres_the_teacher_and_skips_missing_rows() -> None:
    mean = np.array([5.0, 5.0, 5.0])
    distill = TeacherDistill(4, 3, "cosine", mean)
    emb = torch.randn(3, 4)
    teacher = torch.tensor([[6.0, 5.0, 5.0], [5.0, 7.0, 5.0], [float("nan")] * 3])
    pred = distill.proj(torch.nn.functional.normalize(emb[:2], dim=1))
    expected = (1 - torch.nn.functional.cosine_similarity(pred, teacher[:2] - torch.tensor(mean).float())).mean()
    assert distill(emb, teacher).item() == pytest.approx(expected.item(), abs=1e-6)
    mse = TeacherDistill(4, 3, "mse", mean)
    pred = mse.proj(torch.nn.functional.normalize(emb[:2], dim=1))
    assert mse(emb, teacher).item() == pytest.approx((pred - teacher[:2]).pow(2).sum(1).mean().item(), rel=1e-5)


def test_pair_scores_and_far_threshold() -> None:
    sims = np.array([0.9, 0.8, 0.7, 0.2, 0.75, 0.1, 0.0, -0.1])
    same = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    th = threshold_at_far(sims, same, 0.0)
    assert 0.75 < th < 0.7500001  # no negative accepted
    scores = pair_scores(sims, same)
    assert scores["tar@far1e-2"] == pytest.approx(0.5)
    assert scores["accuracy"] == pytest.approx(7 / 8)


# ----------------------------------------------------------------------------------------------- trainer
def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@needs_pack
def test_resumed_run_matches_uninterrupted_run(tmp_path: Path, dev_pairs: Path) -> None:
    straight = train(tiny_config(tmp_path / "straight", dev_pairs), progress=False)
    assert straight["step"] == 4 and straight["dev"] is not None
    paused = train(tiny_config(tmp_path / "split", dev_pairs, stop_at=2), progress=False)
    assert paused["step"] == 2 and paused["stopped_early"]
    resumed = train(tiny_config(tmp_path / "split", dev_pairs), resume=True, progress=False)
    assert resumed["step"] == 4
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=False)
    assert _states_equal(a["module"], b["module"])
    assert _states_equal(a["optimizer"]["state"][0], b["optimizer"]["state"][0])
    assert a["scheduler"] == b["scheduler"]
    assert (tmp_path / "straight" / "best.pt").exists()
    log = (tmp_path / "split" / "log.jsonl").read_text()
    assert '"event": "resume"' in log and '"event": "dev"' in log


# What the trainer wrote before relation_weight, fold_margin and budget_minutes were removed: the same checkpoint
# entries, with those options at 0 in its config (and without the options added since).
PRE_REFACTOR_ONLY = {"relation_weight": 0.0, "fold_margin": 0.0, "budget_minutes": 0.0}
ADDED_SINCE = ("view_targets", "view_targets_weight", "schedule", "branch_from")
CHECKPOINT_ENTRIES = {"config", "module", "model", "ema", "optimizer", "scheduler", "step", "best", "minutes", "rng"}


def _rewrite_as_pre_refactor(run: Path, **old_values: float) -> None:
    """Turn a run folder's last.pt and config.json into the layout the pre-refactor trainer wrote."""
    ckpt = torch.load(run / "last.pt", weights_only=False)
    kept = CHECKPOINT_ENTRIES if ckpt["config"]["ema"] else CHECKPOINT_ENTRIES - {"ema"}
    assert set(ckpt) == kept and set(ckpt["rng"]) == {"torch", "numpy", "python", "augment"}
    config = {k: v for k, v in ckpt["config"].items() if k not in ADDED_SINCE}
    ckpt["config"] = {**config, **PRE_REFACTOR_ONLY, **old_values}
    torch.save(ckpt, run / "last.pt")
    (run / "config.json").write_text(json.dumps(ckpt["config"], indent=2) + "\n")


@needs_pack
def test_a_checkpoint_written_before_the_options_were_pruned_resumes_exactly(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from facegnet.cli import main

    options = dict(ema=0.9, jitter=0.3, erase=0.2, threads=1)
    train(tiny_config(tmp_path / "straight", None, **options), progress=False)
    train(tiny_config(tmp_path / "old", None, stop_at=2, **options), progress=False)
    _rewrite_as_pre_refactor(tmp_path / "old")
    assert main(["train", "--out", str(tmp_path / "old"), "--resume", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert not set(PRE_REFACTOR_ONLY) & set(resolved) and resolved["stop_at"] == 0 and resolved["threads"] == 1
    assert main(["train", "--out", str(tmp_path / "old"), "--resume", "--no-progress"]) == 0
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "old" / "last.pt", weights_only=False)
    assert b["step"] == 4 and not set(PRE_REFACTOR_ONLY) & set(b["config"])
    for key in ("module", "model", "ema"):
        assert _states_equal(a[key], b[key]), key
    assert all(_states_equal(a["optimizer"]["state"][i], b["optimizer"]["state"][i]) for i in a["optimizer"]["state"])
    assert a["scheduler"] == b["scheduler"]
    # A removed option at a value that did something cannot be honoured: one line naming the checkpoint.
    shutil.copytree(tmp_path / "old", tmp_path / "folded")
    _rewrite_as_pre_refactor(tmp_path / "folded", fold_margin=1.0)
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "folded"), "--resume", "--no-progress"]) == DataError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'fold_margin' = 1.0 was removed" in err[0] and "last.pt" in err[0]
    # and a resumed run keeps its own configuration: only where and how it runs may change
    assert main(["train", "--out", str(tmp_path / "old"), "--resume", "--lr", "0.5"]) == DataError.exit_code
    assert "--lr cannot change when resuming" in capsys.readouterr().err


@needs_pack
def test_finetune_from_weights_with_frozen_stages(tmp_path: Path) -> None:
    first = train(tiny_config(tmp_path / "base", None, steps=2), progress=False)
    weights = tmp_path / "base.pt"
    torch.save(torch.load(tmp_path / "base" / "last.pt", weights_only=False)["model"], weights)
    cfg = tiny_config(tmp_path / "ft", None, steps=2, init=str(weights), freeze_stages=2, head="cosface",
                      distill="none", lr=0.05)
    result = train(cfg, progress=False, return_module=True)
    assert first["step"] == 2 and result["step"] == 2
    start = torch.load(weights)
    net = result["module"].net.state_dict()
    assert torch.equal(net["stem.0.weight"], start["stem.0.weight"])  # frozen, BN statistics too
    assert torch.equal(net["stem.1.running_mean"], start["stem.1.running_mean"])
    assert not torch.equal(net["conv_last.0.weight"], start["conv_last.0.weight"])  # trained


@needs_pack
def test_init_from_a_checkpoint_restores_head_and_projection(tmp_path: Path) -> None:
    """A warm restart (``--init`` a trainer checkpoint of the same data) keeps the trained head and projection;
    plain weights bring only the network, and the head starts fresh."""
    train(tiny_config(tmp_path / "base", None, steps=2), progress=False)
    ckpt = torch.load(tmp_path / "base" / "last.pt", weights_only=False)
    # lr 0: no update, so what the run holds after its step is exactly what it started from.
    warm = train(tiny_config(tmp_path / "warm", None, steps=1, init=str(tmp_path / "base" / "last.pt"), lr=0.0),
                 progress=False, return_module=True)
    state = warm["module"].state_dict()
    for key in ("head.weight", "distill.proj.weight"):
        assert torch.equal(state[key], ckpt["module"][key]), key
    log = [json.loads(line) for line in (tmp_path / "warm" / "log.jsonl").read_text().splitlines()]
    assert log[0]["restored"] == ["head", "distill"]
    weights = tmp_path / "base.pt"
    torch.save(ckpt["model"], weights)
    cold = train(tiny_config(tmp_path / "cold", None, steps=1, init=str(weights), lr=0.0),
                 progress=False, return_module=True)
    cold_state = cold["module"].state_dict()
    assert torch.equal(cold_state["net.conv_last.0.weight"], ckpt["model"]["conv_last.0.weight"])
    assert not torch.equal(cold_state["head.weight"], ckpt["module"]["head.weight"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, out: str, results: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    cfg = tiny_config(Path(out), None, steps=100, stop_at=3, device="cpu")
    summary = train(cfg, progress=False, return_module=True)
    torch.save(summary["module"].state_dict(), Path(results) / f"rank{rank}.pt")
    dist.destroy_process_group()


@needs_pack
def test_two_process_gloo_ddp_keeps_replicas_identical(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert _states_equal(r0, r1)
    init = train(tiny_config(tmp_path / "zero", None, steps=1, stop_at=0, lr=0.0, warmup_steps=0),
                 progress=False, return_module=True)["module"].state_dict()
    assert not torch.equal(init["net.conv_last.0.weight"], r0["net.conv_last.0.weight"])  # it did train
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["step"] == 3 and len(ckpt["rng"]) == 2


@needs_pack
def test_cli_train_parses_options_and_rejects_bad_values(tmp_path: Path) -> None:
    from facegnet.cli import main

    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--distill", "none",
                 "--no-progress"]) == DataError.exit_code
    assert main(["train", "--head", "sphereface", "--out", str(tmp_path / "o")]) == DataError.exit_code
    assert main(["train", "--jitter", "2", "--out", str(tmp_path / "o")]) == DataError.exit_code
    assert main(["train", "--flip", "-0.5", "--out", str(tmp_path / "o")]) == DataError.exit_code
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == DataError.exit_code


@needs_pack
def test_sigterm_stops_a_cli_run_with_a_checkpoint_that_resumes(tmp_path: Path) -> None:
    """A service manager's SIGTERM (or Ctrl-C) ends a long run at a step boundary: last.pt written, one line saying
    how to go on, exit 128 + 15; the checkpoint then resumes at that very step."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "facegnet", "train", "--data", str(PACK), "--out", str(out),
               "--model", json.dumps(SMALL_MODEL), "--limit", "48", "--batch-size", "8", "--steps", "100000",
               "--warmup-steps", "2", "--head", "arcface", "--distill", "cosine", "--min-faces", "1",
               "--dev-pairs", "none", "--checkpoint-every", "0", "--log-every", "1", "--threads", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log = out / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        if sum("step" in r and "event" not in r for r in steps) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["stopped_by"] == "SIGTERM" and summary["stopped_early"] and 2 <= summary["step"] < 100_000
    assert "Traceback" not in stderr
    hint = stderr.strip().splitlines()[-1]
    assert hint == (f"facegnet train: stopped by SIGTERM at step {summary['step']} of 100000; "
                    f"continue with: facegnet train --out {out} --resume")
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["step"] == summary["step"]
    # The resumed run starts from that checkpoint's step (and pauses two steps later on request).
    resumed = subprocess.run([sys.executable, "-m", "facegnet", "train", "--out", str(out), "--resume",
                              "--stop-at", str(summary["step"] + 2), "--no-progress"],
                             capture_output=True, text=True, env=env, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["step"] == summary["step"] + 2
    events = [json.loads(line).get("event") for line in log.read_text().splitlines()]
    assert events.count("resume") == 1 and events.count("end") == 2


def test_cli_train_compile_without_a_cpp_compiler_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    """Inductor would fail at the first step with a long traceback; the trainer says so before loading anything."""
    from facegnet.cli import main
    from facegnet.errors import DeviceError

    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    out = tmp_path / "run"
    assert main(["train", "--compile", "--out", str(out), "--distill", "none", "--no-progress"]) == DeviceError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-g++" in err[0] and "--compile" in err[0]
    assert not (out / "last.pt").exists()


# ----------------------------------------------------------------------------------------------- prepare, export
LFW = PACK.parent / "lfw" / "images"


@needs_pack
@pytest.mark.skipif(not LFW.exists(), reason="LFW images not present")
def test_prepare_aligns_photos_reports_failures_and_resumes(tmp_path: Path) -> None:
    from PIL import Image

    from facegnet.train.prepare import prepare

    src, out = tmp_path / "src", tmp_path / "out"
    person = src / "someone"
    person.mkdir(parents=True)
    photos = sorted(LFW.glob("*/*.jpg"))[:2]
    for p in photos:
        shutil.copy(p, person / p.name)
    (person / "broken.jpg").write_bytes(b"not a jpeg at all")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(src / "blank.png")  # loose, and no face
    first = prepare(src, out, workers=1, progress=False)
    assert (first.photos, first.crops, first.failed) == (4, 2, 2)
    crops = sorted((out / "someone").glob("*.png"))
    assert len(crops) == 2 and Image.open(crops[0]).size == (112, 112)
    with open(out / "report.csv", newline="") as handle:
        reasons = {row["source"]: row["reason"] for row in csv.DictReader(handle)}
    assert set(reasons) == {"someone/broken.jpg", "blank.png"}
    again = prepare(src, out, workers=1, progress=False)
    assert again.photos == 0 and again.skipped == 4
    faces = D.load_folder(out, min_faces=2)
    assert len(faces) == 2 and faces.identities == ["someone"]


@needs_pack
def test_export_writes_weights_and_a_calibrated_card(tmp_path: Path, dev_pairs: Path) -> None:
    from facegnet.card import load_card, sha256_file
    from facegnet.models import build_from_card
    from facegnet.train.release import export

    train(tiny_config(tmp_path / "run", dev_pairs, steps=2), progress=False)
    card = export(tmp_path / "run" / "last.pt", "tiny", tmp_path / "weights", far=1e-2,
                  training={"data": "test"}, pairs=dev_pairs)
    loaded = load_card(tmp_path / "weights" / "tiny.json")
    assert loaded.sha256 == sha256_file(tmp_path / "weights" / "tiny.pt") == card.sha256
    dev_threshold = card.training["dev"]["threshold@far1e-2"]
    assert loaded.threshold_far == 1e-2 and loaded.threshold == pytest.approx(dev_threshold, abs=1.1e-5)
    assert loaded.threshold >= dev_threshold - 5e-6  # rounded up for the card: never more false accepts
    assert loaded.config["width"] == 0.5 and loaded.embedding_size == 64
    # the resolved configuration of the run, as `facegnet train --dry-run` prints it (pauses are not the recipe's)
    run_config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert loaded.training["config"] == {**run_config, "stop_at": 0, "max_minutes": 0.0}
    assert TrainConfig(**loaded.training["config"]).to_dict() == loaded.training["config"]
    # The open-set threshold: every pair of the pack's dev faces, at most 0.1% of impostor pairs accepted.
    from facegnet.train.release import dev_identity_similarities

    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    impostor, genuine = dev_identity_similarities(build_from_card(loaded).eval(), TrainConfig.from_dict(ckpt["config"]))
    faces = sum(1 for r in D.read_manifest(PACK) if r["split"] == "dev")
    assert impostor.size + genuine.size == faces * (faces - 1) // 2 and genuine.size > 1000
    counts = loaded.training["dev_all_pairs"]
    assert (counts["impostor_pairs"], counts["genuine_pairs"]) == (impostor.size, genuine.size)
    assert loaded.identify_threshold_far == 1e-3 and loaded.open_set_threshold == loaded.identify_threshold
    assert (impostor >= loaded.identify_threshold).mean() <= 1e-3
    assert (impostor >= loaded.identify_threshold - 1e-3).mean() > 1e-3 * 0.5  # not needlessly strict
    net = build_from_card(loaded).eval()
    assert net(torch.zeros(1, 3, 112, 112)).shape == (1, 64)
