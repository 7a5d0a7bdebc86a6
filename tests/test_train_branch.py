"""A patient run's schedule: a constant-rate trunk, and cool-down branches that start from its latest checkpoint
with its weights, average and momentum and decay the rate to the floor, leaving the trunk to go on.

Tiny runs on the real training pack (skipped without it), as in test_train.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facegnet.cli import main
from facegnet.errors import DataError
from facegnet.train.branch import branch_config
from facegnet.train.setup import lr_lambda
from facegnet.train.trainer import TrainConfig, train
from test_train import needs_pack, tiny_config


def _lrs(out: Path) -> list[float]:
    return [r["lr"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "lr" in r]


def test_schedules_after_the_warm_up() -> None:
    base = dict(lr=0.1, min_lr=0.01, warmup_steps=2, data=".", dev_pairs="none")
    constant = lr_lambda(TrainConfig(schedule="constant", **base), 10)
    linear = lr_lambda(TrainConfig(schedule="linear", **base), 10)
    cosine = lr_lambda(TrainConfig(**base), 10)
    assert [constant(s) for s in (0, 1)] == [0.5, 1.0] and {constant(s) for s in range(2, 50)} == {1.0}
    assert linear(2) == cosine(2) == 1.0 and linear(10) == pytest.approx(0.1) and cosine(10) == pytest.approx(0.1)
    assert linear(6) == pytest.approx(0.1 + 0.9 * 0.5) and cosine(6) == pytest.approx(0.1 + 0.9 * 0.5)
    assert linear(4) == pytest.approx(0.1 + 0.9 * 0.75) and cosine(4) > linear(4)  # cosine stays high longer


@needs_pack
def test_a_branch_starts_from_the_trunk_and_cools_down(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    trunk = tmp_path / "trunk"
    train(tiny_config(trunk, None, schedule="constant", steps=5, warmup_steps=2, lr=0.05, ema=0.9), progress=False)
    assert _lrs(trunk)[2:] == [0.05] * 3  # constant after the warm-up
    saved = torch.load(trunk / "last.pt", weights_only=False)

    # the branch's configuration is the trunk's, decaying linearly without warm-up over 12% of its steps
    assert main(["train", "--branch-from", str(trunk / "last.pt"), "--out", str(tmp_path / "b"), "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["schedule"], printed["warmup_steps"], printed["steps"]) == ("linear", 0, 1)
    assert printed["branch_from"] == str(trunk / "last.pt") and printed["lr"] == 0.05 and printed["ema"] == 0.9

    # lr 0 for one step: no update, so the branch's weights after it are exactly the trunk's (BatchNorm's running
    # statistics move with any forward pass, so parameters only)
    frozen = train(branch_config(trunk / "last.pt", {"out": str(tmp_path / "frozen"), "lr": 0.0, "steps": 1}),
                   progress=False, return_module=True)
    params = dict(frozen["module"].named_parameters())
    assert len(params) > 50
    for key, value in params.items():
        assert torch.equal(value.detach(), saved["module"][key]), key

    branch = tmp_path / "branch"
    assert main(["train", "--branch-from", str(trunk / "last.pt"), "--steps", "4", "--min-lr", "0.001",
                 "--out", str(branch), "--no-progress"]) == 0
    lrs = _lrs(branch)
    assert lrs[0] == pytest.approx(0.05) and lrs[-1] < lrs[0] and lrs == sorted(lrs, reverse=True)
    assert torch.load(branch / "last.pt", weights_only=False)["optimizer"]["param_groups"][0]["lr"] == \
        pytest.approx(0.001)
    # the trunk is untouched and goes on from where it was
    assert torch.equal(torch.load(trunk / "last.pt", weights_only=False)["model"]["conv_last.0.weight"],
                       saved["model"]["conv_last.0.weight"])


@needs_pack
def test_branching_a_decaying_run_or_with_init_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train(tiny_config(tmp_path / "cos", None, steps=1), progress=False)
    assert main(["train", "--branch-from", str(tmp_path / "cos" / "last.pt"), "--out", str(tmp_path / "b")]) == \
        DataError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not constant" in err[0] and "last.pt" in err[0]
    with pytest.raises(DataError, match="leave out --init"):
        TrainConfig(data=".", branch_from="x.pt", init="y.pt")
    assert main(["train", "--branch-from", str(tmp_path / "none.pt"), "--out", str(tmp_path / "b")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.pt" in err[0]
