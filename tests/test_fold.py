"""Folding the online teacher's projection into the embedding layer (facegnet.train.fold).

The network is a tiny (×0.5, 64-d) GhostFaceNet with BatchNorm statistics made non-trivial by a few
training-mode passes; images are random noise, which is all these linear-algebra properties need.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegnet.errors import DataError
from facegnet.train.datasets import to_input
from facegnet.train.fold import (
    embedding_inputs,
    fold_linear,
    fold_teacher,
    fold_view,
    teacher_metric,
)
from facegnet.train.setup import build_net

SMALL_MODEL = {"width": 0.5, "stem_stride": 2, "prelu": True, "dfc": False, "embedding_size": 64, "dropout": 0.0}


@pytest.fixture()
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(48, 112, 112, 3), dtype=np.uint8)


@pytest.fixture()
def net(images: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_net(SMALL_MODEL)
    for module in net.modules():  # running statistics = these images' own (a cumulative average): centred outputs
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    net.train()
    with torch.no_grad():
        net(to_input(torch.from_numpy(images)))
        net.bn_embedding.weight.uniform_(0.5, 2.0)  # affine parameters away from (1, 0)
        net.bn_embedding.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_teacher_metric_adds_the_projected_cosine_to_the_student_one() -> None:
    torch.manual_seed(1)
    w = torch.randn(16, 64)
    e = F.normalize(torch.randn(200, 64), dim=1)
    matrix, k = teacher_metric(w, e, weight=1.5)
    assert torch.allclose(matrix, matrix.T, atol=1e-5)
    assert (e @ w.T * k).norm(dim=1).mean().item() == pytest.approx(1.0, rel=1e-5)  # k: projections unit on average
    gram = (e @ matrix.T) @ (e @ matrix.T).T
    want = e @ e.T + (1.5 * k) ** 2 * (e @ w.T) @ (e @ w.T).T
    assert torch.allclose(gram, want, atol=1e-4)
    identity, _ = teacher_metric(w, e, weight=0.0)
    assert torch.allclose(identity, torch.eye(64), atol=1e-6)


def test_the_folded_view_has_the_cosines_the_fold_ships() -> None:
    """The trainer's dev evaluation scores fold_view; export --fold-teacher ships L: the same cosines, at any
    weight."""
    torch.manual_seed(3)
    projection = torch.nn.Linear(64, 16, bias=False)
    raw = torch.randn(100, 64) * 3.0  # fold_view normalises its rows itself
    e = F.normalize(raw, dim=1)
    for weight in (0.5, 1.0, 2.0):
        view = F.normalize(fold_view(raw, projection, weight), dim=1)
        matrix, _ = teacher_metric(projection.weight.detach(), e, weight)
        folded = F.normalize(e @ matrix.T, dim=1)
        assert view.shape == (100, 80)
        assert torch.allclose(view @ view.T, folded @ folded.T, atol=1e-5)
    plain = F.normalize(fold_view(raw, projection, 1.0)[:, :64], dim=1)
    assert torch.allclose(plain, e, atol=1e-6)  # the first part is the embedding itself


def test_fold_linear_makes_the_network_compute_the_matrix_times_its_output(net, images) -> None:
    x = to_input(torch.from_numpy(images))
    with torch.no_grad():
        before = net(x).double()
        torch.manual_seed(2)
        a = torch.randn(64, 64)
        matrix = torch.eye(64) + 0.1 * (a @ a.T)
        fold_linear(net, matrix, embedding_inputs(net, images))
        after = net(x).double()
        # eval mode: exactly matrix @ net(x) (float32 arithmetic apart)
        want = before @ matrix.double().T
        assert (after - want).abs().max().item() < 1e-3 * want.abs().max().item()
        # the last BatchNorm in training mode, on the images its statistics came from, gives the same vectors:
        # a fine-tune from folded weights starts at their scale
        net.bn_embedding.train()
        trained = net(x).double()
        net.eval()
    assert (trained - after).abs().max().item() < 1e-3 * after.abs().max().item()


def test_fold_teacher_changes_pair_cosines_as_the_metric_says(net, images) -> None:
    from facegnet.train.evaluate import embed_crops

    torch.manual_seed(3)
    w = torch.randn(16, 64)
    e = torch.from_numpy(embed_crops(net, images, flip=False))
    record = fold_teacher(net, w, images, weight=1.0)
    assert record["weight"] == 1.0 and record["faces"] == len(images) and record["scale"] > 0
    folded = torch.from_numpy(embed_crops(net, images, flip=False))
    k = record["scale"]
    want = e @ e.T + k ** 2 * (e @ w.T) @ (e @ w.T).T
    norms = want.diagonal().sqrt()
    assert torch.allclose(folded @ folded.T, want / norms[:, None] / norms[None, :], atol=2e-3)
    assert not torch.allclose(folded @ folded.T, e @ e.T, atol=2e-2)  # the metric did change the cosines


@pytest.mark.parametrize("weight", [0.0, -1.0])
def test_a_fold_weight_must_be_positive(net, images, weight) -> None:
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(DataError, match="must be positive"):
        fold_teacher(net, torch.randn(16, 64), images, weight=weight)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the network is left as it was
