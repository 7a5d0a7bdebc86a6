"""Warm start for fine-tuning (facegnet.train.warmstart): class centres at identity means, projections fitted.

Crops come from the shared training pack (CelebA people, never LFW); the network is a tiny (×0.5, 64-d) one
with fixed random weights, which is all these properties need.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegnet.models.heads import build_head
from facegnet.train import datasets as D
from facegnet.train.distill import TeacherDistill
from facegnet.train.evaluate import embed_crops
from facegnet.train.setup import build_net
from facegnet.train.trainer import TrainConfig, train
from facegnet.train.warmstart import centre_head, fit_projection, sample_index

PACK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"
SMALL_MODEL = {"width": 0.5, "stem_stride": 2, "prelu": True, "dfc": False, "embedding_size": 64, "dropout": 0.0}

pytestmark = pytest.mark.skipif(not (PACK / "manifest.csv").exists(), reason="shared training pack not present")


@pytest.fixture(scope="module")
def faces() -> D.FaceSet:
    return D.load_pack(PACK, "train", 2, teacher="teacher_dlib.npy", limit=300)


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_net(SMALL_MODEL).eval()


def test_centre_head_puts_each_class_at_its_mean_embedding(faces: D.FaceSet, net: torch.nn.Module) -> None:
    head = build_head("cosface", 64, faces.num_classes, 64.0, None)
    labels = torch.from_numpy(faces.labels).long()
    x = D.to_input(torch.from_numpy(faces.images))
    with torch.no_grad():
        before = head.loss(net(x), labels).item()
    assert centre_head(head, net, faces.images, faces.labels) == faces.num_classes
    emb = embed_crops(net, faces.images, flip=False)
    first = faces.labels == faces.labels[0]
    mean = emb[first].mean(0)
    assert np.allclose(head.weight[faces.labels[0]].detach().numpy(), mean / np.linalg.norm(mean), atol=1e-5)
    with torch.no_grad():
        after = head.loss(net(x), labels).item()
    assert after < before - 1.0  # random centres: ~log(classes) + margin; fitted ones are far better


def test_fit_projection_is_the_least_squares_fit(faces: D.FaceSet, net: torch.nn.Module) -> None:
    mean = np.nanmean(faces.teacher, axis=0)
    distill = TeacherDistill(64, faces.teacher.shape[1], "cosine", mean)
    teacher = torch.from_numpy(faces.teacher)
    emb = torch.from_numpy(embed_crops(net, faces.images, flip=False))
    with torch.no_grad():
        before = distill(emb, teacher).item()
    cosine = fit_projection(distill, net, faces.images, faces.teacher)
    with torch.no_grad():
        after = distill(emb, teacher).item()
    assert after == pytest.approx(1 - cosine, abs=1e-4)  # the fit reports the loss it leaves
    assert after < before - 0.2
    # Any nudge of the fitted map fits worse (up to the small ridge term, which a large nudge outweighs).
    target = distill.target(teacher)
    residual = (distill.proj(emb) - target).pow(2).sum()
    nudged = distill.proj.weight + 0.05 * torch.randn_like(distill.proj.weight)
    assert (F.linear(emb, nudged) - target).pow(2).sum() > residual


def test_fit_projection_skips_rows_without_teacher(faces: D.FaceSet, net: torch.nn.Module) -> None:
    teacher = faces.teacher.copy()
    teacher[::3] = np.nan
    distill = TeacherDistill(64, teacher.shape[1], "cosine", np.nanmean(teacher, axis=0))
    assert np.isfinite(fit_projection(distill, net, faces.images, teacher))
    assert np.isnan(fit_projection(distill, net, faces.images[:10], teacher[:10]))  # too few rows: left as is


def test_sample_index_is_fixed_sorted_and_bounded() -> None:
    a, b = sample_index(1000, 50, 3), sample_index(1000, 50, 3)
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0) and len(a) == 50
    assert np.array_equal(sample_index(20, 50, 3), np.arange(20))


def test_fine_tuning_logs_its_warm_start_and_can_turn_it_off(tmp_path: Path, net: torch.nn.Module) -> None:
    init = tmp_path / "init.pt"
    torch.save(net.state_dict(), init)
    common = dict(data=str(PACK), model=SMALL_MODEL, init=str(init), head="cosface", distill="cosine", steps=2,
                  batch_size=16, limit=200, dev_pairs="none", warmup_steps=1, threads=1, checkpoint_every=0)
    train(TrainConfig(out=str(tmp_path / "warm"), **common), progress=False)
    train(TrainConfig(out=str(tmp_path / "cold"), warm_start=False, **common), progress=False)
    import json

    def start(run: str) -> dict:
        return json.loads((tmp_path / run / "log.jsonl").read_text().splitlines()[0])

    warm, cold = start("warm"), start("cold")
    assert warm["warm_start"]["head_centres"] == warm["classes"] and 0 < warm["warm_start"]["distill_cos"] <= 1
    assert cold["warm_start"] == {}
