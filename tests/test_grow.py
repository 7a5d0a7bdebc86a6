"""Growing a plain GhostFaceNet into its GhostNetV2 (DFC attention) variant (facegnet.train.grow).

A small (×0.5, 64-d) network with random weights and BatchNorm statistics moved off their defaults stands in for
a trained one: the grown network must compute the same embeddings in eval and training mode, and its attention
must still learn.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facegnet.errors import WeightsError
from facegnet.train.grow import grow_dfc
from facegnet.train.setup import build_net, load_init_weights

SMALL_MODEL = {"width": 0.5, "stem_stride": 2, "prelu": True, "dfc": False, "embedding_size": 64, "dropout": 0.0}


@pytest.fixture()
def plain() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_net(SMALL_MODEL)
    with torch.no_grad():  # a "trained" network: no BatchNorm at its initial scale, shift or statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(0.0, 0.5)
    return net


def _pair(plain: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    grown = build_net({**SMALL_MODEL, "dfc": True})
    assert grow_dfc(grown, plain.state_dict()) > 0
    return plain, grown, torch.randn(6, 3, 112, 112)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_grown_network_computes_the_same_embeddings(plain: torch.nn.Module, mode: str) -> None:
    plain, grown, x = _pair(plain)
    getattr(plain, mode)()
    getattr(grown, mode)()
    with torch.no_grad():
        a, b = plain(x), grown(x)
    assert torch.allclose(a, b, atol=1e-3 * a.abs().mean().item()), (a - b).abs().max()
    fresh = build_net({**SMALL_MODEL, "dfc": True}).train(mode == "train")
    with torch.no_grad():  # the check can fail: a V2 network that only shares the weights is far off
        assert not torch.allclose(a, fresh(x), atol=0.1 * a.abs().mean().item())


def test_grown_attention_gets_a_gradient_and_starts_at_one_half(plain: torch.nn.Module) -> None:
    _, grown, x = _pair(plain)
    gated = [m for m in grown.modules() if getattr(m, "dfc", None) is not None]
    gate = gated[0].dfc(x.new_zeros(1, gated[0].primary_conv[0].in_channels, 8, 8).normal_(), (8, 8))
    assert torch.allclose(gate, torch.full_like(gate, 0.5))
    grown.train()
    grown(x).pow(2).sum().backward()
    last_bn = gated[-1].dfc.vertical[1]
    assert last_bn.weight.grad is not None and last_bn.weight.grad.abs().sum() > 0


def test_trainer_init_grows_plain_weights_and_refuses_the_reverse(plain: torch.nn.Module, tmp_path: Path) -> None:
    weights = tmp_path / "plain.pt"
    torch.save(plain.state_dict(), weights)
    grown = build_net({**SMALL_MODEL, "dfc": True})
    load_init_weights(grown, weights)  # what `facegnet train --model ghostfacenet-v2-w1.0-s2 --init plain.pt` does
    plain.eval()
    grown.eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(plain(x), grown(x), atol=1e-3)
    v2_weights = tmp_path / "v2.pt"
    torch.save(grown.state_dict(), v2_weights)
    with pytest.raises(WeightsError, match="do not fit this architecture"):
        load_init_weights(build_net(SMALL_MODEL), v2_weights)
    wider = build_net({**SMALL_MODEL, "width": 1.0, "dfc": True})
    with pytest.raises(WeightsError, match="do not fit this architecture"):
        load_init_weights(wider, weights)
