"""Every .pt file is read with weights_only=True: data loads, code hidden in a pickle is refused in one line."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from facegnet.cli import main
from facegnet.errors import WeightsError
from facegnet.torch_files import load_pt, save_pt


class Payload:
    """Unpickling this would call os.system: what a hostile weights file does."""

    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/facegnet-pwned",))


def test_a_checkpoint_with_rng_states_loads(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.ones(2)}, "rng": {"numpy": np.random.get_state(), "python": random.getstate()},
                "config": {"lr": 0.1}}, path)
    state = load_pt(path, "checkpoint")
    assert state["config"] == {"lr": 0.1} and state["rng"]["numpy"][0] == "MT19937"


def test_code_in_a_weights_file_is_refused_not_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = Path("/tmp/facegnet-pwned")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, evil)
    with pytest.raises(WeightsError, match="refused"):
        load_pt(evil)
    assert not marker.exists()
    pack = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"
    if not (pack / "manifest.csv").exists():
        pytest.skip("the CLI half needs ../shared's training pack")
    code = main(["train", "--init", str(evil), "--data", str(pack), "--limit", "8", "--distill", "none",
                 "--dev-pairs", "none", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == WeightsError.exit_code and len(err) == 1 and str(evil) in err[0] and "refused" in err[0]
    assert not marker.exists()


def test_a_truncated_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "half.pt"
    torch.save({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(WeightsError, match="unreadable"):
        load_pt(path)
    with pytest.raises(WeightsError, match="not found"):
        load_pt(tmp_path / "missing.pt")


def test_save_pt_is_atomic_and_the_same_weights_give_the_same_bytes(tmp_path: Path) -> None:
    """Saved through a temporary file, yet the bytes do not depend on its name: an export's sha256 is reproducible."""
    weights = {"w": torch.arange(6.0).reshape(2, 3), "step": 7}
    save_pt(weights, tmp_path / "a.pt")
    save_pt(weights, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]  # no temporary file left behind
    loaded = load_pt(tmp_path / "a.pt")
    assert torch.equal(loaded["w"], weights["w"]) and loaded["step"] == 7
    with pytest.raises(Exception):  # an object torch cannot pickle: the previous file stays whole
        save_pt({"w": lambda: 0}, tmp_path / "a.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]
