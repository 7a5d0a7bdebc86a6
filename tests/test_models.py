"""GhostNet and GhostFaceNet: published sizes, module structure, builders and model-card loading."""
from __future__ import annotations

import dataclasses
import functools
import importlib
import json

import pytest
import torch
from torch import nn

from facegnet.card import ModelCard, resolve_card, sha256_file, untrained_card
from facegnet.errors import WeightsError
from facegnet.models import (
    FACE_VARIANTS,
    GhostFaceNet,
    GhostNet,
    build_from_card,
    count_macs,
    count_parameters,
    ghostfacenet,
    ghostnet,
)
from facegnet.models.ghostnet import GhostModule
from facegnet.models.profile import summarize

# The module, not the builder of the same name that facegnet.models exports.
ghostfacenet_module = importlib.import_module("facegnet.models.ghostfacenet")

# Published sizes (GhostNet paper Table 7 and timm): width → (parameters, multiply-adds at 224×224).
IMAGENET_SIZES = {0.5: (2.6e6, 42e6), 1.0: (5.2e6, 141e6), 1.3: (7.3e6, 226e6)}

# Plausible ranges for the face variants (parameters, MACs at 112×112). Face GhostNets are smaller than the
# ImageNet network (no 1280-wide classifier head); stem stride 1 quadruples the MACs of stride 2.
FACE_RANGES = {
    "ghostfacenet-w1.0-s2": ((2.5e6, 4.5e6), (30e6, 70e6)),
    "ghostfacenet-w1.3-s1": ((4.0e6, 6.5e6), (180e6, 260e6)),
    "ghostfacenet-w0.5-s2": ((0.6e6, 1.5e6), (8e6, 20e6)),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small networks run fastest on one thread, and two OpenMP threads spin-wait badly on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def face_model(name: str) -> GhostFaceNet:
    """One eval-mode network per face variant, shared by the tests (building and first runs cost time)."""
    return ghostfacenet(**FACE_VARIANTS[name]).eval()


@pytest.mark.parametrize("width", sorted(IMAGENET_SIZES))
def test_imagenet_ghostnet_matches_published_sizes(width: float) -> None:
    model = ghostnet(width)
    params, macs = count_parameters(model), count_macs(model, 224)
    print(f"ghostnet x{width}: {params / 1e6:.3f} M params, {macs / 1e6:.1f} M MACs")
    want_params, want_macs = IMAGENET_SIZES[width]
    assert abs(params - want_params) <= 0.1e6
    assert abs(macs - want_macs) <= 0.05 * want_macs
    assert isinstance(model, GhostNet)


@pytest.mark.parametrize("name", sorted(FACE_VARIANTS))
def test_face_variants_embed_to_512(name: str) -> None:
    model = face_model(name)
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 512)
    assert torch.isfinite(out).all()
    summary = summarize(model, 112)
    print(f"{name}: {summary['params_m']:.3f} M params, {summary['macs_m']:.1f} M MACs")
    (pmin, pmax), (mmin, mmax) = FACE_RANGES[name]
    assert pmin <= summary["params"] <= pmax
    assert mmin <= summary["macs"] <= mmax
    assert summary["output_shape"] == [1, 512]


def test_face_variants_cover_the_named_configurations() -> None:
    assert {"ghostfacenet-w1.0-s2", "ghostfacenet-w1.3-s1", "ghostfacenet-w0.5-s2"} <= set(FACE_VARIANTS)
    assert not any(config["dfc"] for config in FACE_VARIANTS.values())
    assert FACE_VARIANTS["ghostfacenet-w1.3-s1"]["stem_stride"] == 1


@pytest.mark.parametrize(("stem_stride", "input_size", "size"), [(2, 112, 4), (1, 112, 7), (1, 96, 6)])
def test_gdc_kernel_covers_the_final_feature_map(stem_stride: int, input_size: int, size: int) -> None:
    model = ghostfacenet(width=0.5, stem_stride=stem_stride, input_size=input_size).eval()
    seen: list[torch.Size] = []
    model.conv_last.register_forward_hook(lambda _m, _i, output: seen.append(output.shape))
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, input_size, input_size))
    assert seen[0][-2:] == (size, size) == (model.feature_size, model.feature_size)
    gdc = model.gdc[0]
    assert gdc.kernel_size == (size, size) and gdc.groups == gdc.in_channels and gdc.padding == (0, 0)
    assert out.shape == (1, 512)


def test_embedding_size_and_no_l2_normalisation() -> None:
    model = ghostfacenet(width=0.5, embedding_size=128).eval()
    with torch.inference_mode():
        out = model(torch.randn(3, 3, 112, 112))
    assert out.shape == (3, 128)
    assert not torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-3)


def test_ghost_module_makes_half_its_channels_with_the_cheap_operation() -> None:
    module = GhostModule(24, 40).eval()
    primary, cheap = module.primary_conv[0], module.cheap_operation[0]
    assert (primary.kernel_size, primary.out_channels) == ((1, 1), 20)
    assert (cheap.kernel_size, cheap.groups, cheap.in_channels, cheap.out_channels) == ((3, 3), 20, 20, 20)
    x = torch.randn(2, 24, 10, 10)
    with torch.inference_mode():
        out = module(x)
        intrinsic = module.primary_conv(x)
        ghosts = module.cheap_operation(intrinsic)
    assert out.shape == (2, 40, 10, 10)
    assert torch.equal(out[:, :20], intrinsic) and torch.equal(out[:, 20:], ghosts)
    # An odd width: ceil(out / 2) intrinsic maps, the surplus ghost is cut off.
    odd = GhostModule(8, 7)
    assert odd.primary_conv[0].out_channels == 4 and odd(torch.randn(1, 8, 5, 5)).shape[1] == 7


def test_ghostnet_pretrained_raises_a_clear_error() -> None:
    with pytest.raises(WeightsError, match="no ImageNet GhostNet weights ship"):
        ghostnet(pretrained=True)


def test_ghostfacenet_pretrained_loads_the_shipped_weights() -> None:
    card = resolve_card(None)
    assert card.trained and card.sha256 == sha256_file(card.weights_path)  # trained weights ship in the package
    shipped = torch.load(card.weights_path, map_location="cpu", weights_only=True)
    loaded = ghostfacenet(pretrained=True).state_dict()
    assert loaded.keys() == shipped.keys() and all(torch.equal(loaded[k], shipped[k]) for k in shipped)
    assert not torch.equal(ghostfacenet().state_dict()["bn_embedding.running_mean"], shipped["bn_embedding.running_mean"])


def test_ghostfacenet_pretrained_without_shipped_weights_raises(monkeypatch) -> None:
    # An install without trained weights (the default card resolves to the untrained one) gets a clear error.
    monkeypatch.setattr(ghostfacenet_module, "resolve_card", lambda _weights: untrained_card())
    with pytest.raises(WeightsError, match="no trained face weights ship") as info:
        ghostfacenet(pretrained=True)
    assert "facegnet train" in str(info.value)


def test_build_from_untrained_card_is_deterministic_and_keeps_the_global_rng() -> None:
    before = torch.get_rng_state()
    first, second = build_from_card(untrained_card()), build_from_card(untrained_card())
    assert torch.equal(torch.get_rng_state(), before)
    assert isinstance(first, GhostFaceNet) and first.config["width"] == 1.0
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_build_from_trained_card_loads_and_checks_sha256(tmp_path, monkeypatch) -> None:
    config = {"width": 0.5, "stem_stride": 2, "prelu": True, "dfc": False, "embedding_size": 512}
    source = ghostfacenet(**config).eval()
    with torch.no_grad():  # make the running statistics differ from a fresh network's
        source.bn_embedding.running_mean.uniform_(-1, 1)
    weights = tmp_path / "face.pt"
    torch.save(source.state_dict(), weights)
    card = ModelCard(name="face", config=config, weights_file="face.pt", sha256=sha256_file(weights))
    card.save(tmp_path / "face.json")
    loaded = build_from_card(resolve_card(tmp_path / "face.pt")).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.inference_mode():
        assert torch.equal(loaded(x), source(x))
    tampered = dataclasses.replace(card, sha256="0" * 64, path=tmp_path / "face.json")
    with pytest.raises(WeightsError, match="sha256"):
        build_from_card(tampered)
    wrong = dataclasses.replace(card, config={**config, "width": 1.0}, path=tmp_path / "face.json")
    with pytest.raises(WeightsError, match="do not fit"):
        build_from_card(wrong)
    # The torchvision-style builder goes through the same path when a trained default card ships.
    monkeypatch.setattr(ghostfacenet_module, "resolve_card", lambda _weights: resolve_card(tmp_path / "face.json"))
    with torch.inference_mode():
        assert torch.equal(ghostfacenet(width=0.5, pretrained=True).eval()(x), source(x))
    with pytest.raises(WeightsError, match="trained with width=0.5"):
        ghostfacenet(width=1.3, pretrained=True)
    (tmp_path / "bad.json").write_text(json.dumps({**card.to_dict(), "architecture": "resnet"}))
    with pytest.raises(WeightsError, match="unknown architecture"):
        build_from_card(resolve_card(tmp_path / "bad.json"))


def test_eval_forward_is_deterministic() -> None:
    model = face_model("ghostfacenet-w1.0-s2")
    x = torch.randn(2, 3, 112, 112)
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))


def test_prelu_only_when_asked() -> None:
    def has_prelu(model: nn.Module) -> bool:
        return any(isinstance(m, nn.PReLU) for m in model.modules())

    assert has_prelu(ghostfacenet(width=0.5, prelu=True))
    assert not has_prelu(ghostfacenet(width=0.5, prelu=False))
    assert not has_prelu(ghostnet(0.5))


def test_dfc_attention_is_refused_and_false_still_builds() -> None:
    """Cards and training configurations carry "dfc": false (GhostNetV2's attention, since removed)."""
    with pytest.raises(WeightsError, match="DFC attention"):
        ghostfacenet(width=0.5, dfc=True)
    assert ghostfacenet(width=0.5, dfc=False).config["dfc"] is False


def test_count_macs_of_single_layers() -> None:
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=2)
    assert count_macs(conv, (8, 10, 10)) == 16 * 10 * 10 * 4 * 3 * 3
    assert count_macs(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2)) == 12 * 5
    assert count_parameters(conv) == 16 * 4 * 9 + 16
