"""Weight averaging in the trainer (--ema): the checkpoint's exported network is the average, and it resumes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facegnet.torch_files import load_pt
from facegnet.train.trainer import TrainConfig, train

PACK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"
SMALL_MODEL = {"width": 0.5, "stem_stride": 2, "prelu": True, "dfc": False, "embedding_size": 64, "dropout": 0.0}

pytestmark = pytest.mark.skipif(not (PACK / "manifest.csv").exists(), reason="shared training pack not present")


def _config(out: Path, **extra) -> TrainConfig:
    options = dict(data=str(PACK), out=str(out), model=SMALL_MODEL, head="cosface", distill="cosine", steps=4,
                   batch_size=16, limit=120, dev_pairs="none", warmup_steps=1, threads=1, checkpoint_every=2, lr=0.05)
    return TrainConfig(**{**options, **extra})


def test_ema_checkpoint_exports_the_average_and_resumes_exactly(tmp_path: Path) -> None:
    train(_config(tmp_path / "full", ema=0.5), progress=False)
    full = load_pt(tmp_path / "full" / "last.pt", "checkpoint")
    live = {k[len("net."):]: v for k, v in full["module"].items() if k.startswith("net.")}
    averaged = full["model"]
    assert averaged.keys() == live.keys()
    weights = [k for k, v in live.items() if v.is_floating_point() and v.ndim > 1]
    assert any(not torch.equal(averaged[k], live[k]) for k in weights)  # the average lags the live weights
    # Stopped after step 2 and resumed: the same average at step 4 as the uninterrupted run.
    train(_config(tmp_path / "split", ema=0.5, stop_at=2), progress=False)
    train(_config(tmp_path / "split", ema=0.5), resume=True, progress=False)
    split = load_pt(tmp_path / "split" / "last.pt", "checkpoint")
    assert split["step"] == 4
    for k in weights:
        assert torch.allclose(split["model"][k], averaged[k], atol=1e-6)


def test_without_ema_the_checkpoint_exports_the_live_network(tmp_path: Path) -> None:
    train(_config(tmp_path / "plain", steps=2), progress=False)
    state = load_pt(tmp_path / "plain" / "last.pt", "checkpoint")
    assert "ema" not in state
    live = {k[len("net."):]: v for k, v in state["module"].items() if k.startswith("net.")}
    assert all(torch.equal(state["model"][k], v) for k, v in live.items())


@pytest.mark.parametrize("args, message", [(["--ema", "1.5"], "--ema is a decay"),
                                           (["--teacher-engine", "nope"], "--teacher-engine must be one of")])
def test_bad_training_options_are_one_line(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    from facegnet.cli import main
    from facegnet.errors import DataError

    assert main(["train", *args, "--out", str(tmp_path / "r")]) == DataError.exit_code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
