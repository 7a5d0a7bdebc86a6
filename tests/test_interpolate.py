"""Weight interpolation between a start and its fine-tuned copy (facegnet.train.interpolate)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facegnet.errors import WeightsError
from facegnet.train.interpolate import interpolate_states, main
from facegnet.train.setup import build_net

PACK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"
SMALL_MODEL = {"width": 0.5, "stem_stride": 2, "prelu": True, "dfc": False, "embedding_size": 64, "dropout": 0.0}


def _two_nets() -> tuple[dict, dict]:
    torch.manual_seed(0)
    a = build_net(SMALL_MODEL).state_dict()
    torch.manual_seed(1)
    b = build_net(SMALL_MODEL).state_dict()
    return a, b


def test_interpolation_endpoints_midpoint_and_integer_buffers() -> None:
    a, b = _two_nets()
    for key in a:
        if not a[key].is_floating_point():
            a[key] = a[key] + 5  # e.g. BatchNorm's num_batches_tracked: taken from the tuned network
    mid = interpolate_states(a, b, 0.5)
    floats = [k for k, v in b.items() if v.is_floating_point()]
    assert all(torch.equal(interpolate_states(a, b, 0.0)[k], a[k]) for k in floats)
    assert all(torch.equal(interpolate_states(a, b, 1.0)[k], b[k]) for k in floats)
    assert all(torch.allclose(mid[k], (a[k] + b[k]) / 2, atol=1e-6) for k in floats)
    assert all(torch.equal(mid[k], b[k]) for k, v in b.items() if not v.is_floating_point())


def test_different_architectures_are_refused() -> None:
    a, b = _two_nets()
    b.pop(next(iter(b)))
    with pytest.raises(WeightsError, match="same architecture"):
        interpolate_states(a, b, 0.5)


@pytest.mark.skipif(not (PACK / "dev_pairs.csv").exists(), reason="shared training pack not present")
def test_command_scores_each_alpha_on_dev_and_writes_the_best(tmp_path: Path, capsys) -> None:
    a, b = _two_nets()
    torch.save(a, tmp_path / "a.pt")
    torch.save({"model": b, "step": 3}, tmp_path / "b.pt")  # a trainer checkpoint is read too
    out = tmp_path / "best.pt"
    code = main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--alphas", "0,1", "--data", str(PACK),
                 "--model", json.dumps(SMALL_MODEL), "--threads", "1", "--out", str(out)])
    assert code == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert [r["alpha"] for r in record["scores"]] == [0.0, 1.0]
    assert record["best"]["accuracy"] == max(r["accuracy"] for r in record["scores"])
    chosen = a if record["best"]["alpha"] == 0.0 else b
    saved = torch.load(out, weights_only=True)
    assert all(torch.equal(saved[k], chosen[k]) for k in chosen if chosen[k].is_floating_point())


def test_from_a_trainer_checkpoint_the_result_is_a_checkpoint_export_reads(tmp_path: Path) -> None:
    from facegnet.train.config import TrainConfig

    a, b = _two_nets()
    torch.save(a, tmp_path / "a.pt")
    config = {**TrainConfig(data=str(PACK), model=SMALL_MODEL).__dict__}
    torch.save({"config": config, "model": b, "step": 7}, tmp_path / "b.pt")
    out = tmp_path / "wise.pt"
    assert main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--alphas", "0.5", "--data", str(PACK),
                 "--model", json.dumps(SMALL_MODEL), "--threads", "1", "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=False)
    assert saved["config"] == config and saved["step"] == 7 and saved["interpolation"]["best"]["alpha"] == 0.5
    assert all(torch.allclose(saved["model"][k], (a[k] + b[k]) / 2, atol=1e-6) for k in a if a[k].is_floating_point())


def test_a_missing_file_is_one_line(tmp_path: Path, capsys) -> None:
    code = main([str(tmp_path / "nope.pt"), str(tmp_path / "nope2.pt")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "nope.pt" in err
