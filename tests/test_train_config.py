"""Training configuration as data: recipe files, the CLI built from TrainConfig, validation, the card's record of
the shipped recipe, and configurations written before options were removed. Nothing here trains."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from facegnet.cli import main
from facegnet.errors import DataError
from facegnet.train.branch import BRANCH_FRACTION
from facegnet.train.config import REMOVED, TrainConfig, load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
CARD = ROOT / "facegnet" / "weights" / "facegnet-default.json"


def _dry_run(args: list[str], capsys: pytest.CaptureFixture) -> dict:
    assert main(["train", *args, "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)


def _one_line_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(["train", *args]) == DataError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_the_shipped_weights_are_a_cool_down_branch_of_the_patient_trunk(capsys: pytest.CaptureFixture,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the recipe's paths are relative to the repository root, as documented there
    trunk = _dry_run(["--config", "recipes/patient-trunk.toml"], capsys)
    card = json.loads(CARD.read_text())
    shipped = card["training"]["config"]
    assert shipped.keys() == trunk.keys()
    # facegnet.train.branch: the trunk's configuration, its rate decayed linearly with no warm-up over 12% of the
    # trunk's steps so far, started from the trunk's checkpoint instead of --init
    stopped_at = 14689
    assert {k for k in trunk if trunk[k] != shipped[k]} == {"schedule", "warmup_steps", "steps", "init",
                                                            "branch_from", "out"}
    assert (shipped["schedule"], shipped["warmup_steps"], shipped["init"]) == ("linear", 0, None)
    assert shipped["steps"] == round(BRANCH_FRACTION * stopped_at) == card["training"]["step"]
    assert shipped["branch_from"] == f"{trunk['out']}/last.pt" and f"step {stopped_at}" in card["training"]["command"]
    # and what the trunk says is the shipped recipe: the online teacher at 60, dlib and SFace at 30, CosFace at 0.5
    assert (shipped["teacher_weight"], shipped["distill_weight"], shipped["view_targets_weight"],
            shipped["margin_weight"]) == (60.0, 30.0, 30.0, 0.5)
    assert trunk["init"] == "runs/init/ff596ef8.pt" and shipped["compile"] is True


def test_the_release_befores_recipe_still_resolves_to_its_run(capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """recipes/facegnet-default.toml is the weights before's run (9d6ef0eb…, runs/rel0ctl), the ablations' control."""
    monkeypatch.chdir(ROOT)
    printed = _dry_run(["--config", "recipes/facegnet-default.toml"], capsys)
    assert (printed["teacher_weight"], printed["distill_weight"], printed["margin_weight"]) == (60.0, 30.0, 0.5)
    assert (printed["steps"], printed["schedule"], printed["view_targets"]) == (2971, "cosine", None)
    assert printed["init"] == "runs/init/ff596ef8.pt" and printed["out"] == "runs/rel0ctl"


def test_every_recipe_resolves_and_the_ablation_differs_only_where_it_says(capsys: pytest.CaptureFixture) -> None:
    recipes = sorted(RECIPES.glob("*.toml"))
    assert {"facegnet-default.toml", "ablation-online-only.toml", "patient-trunk.toml"} <= {p.name for p in recipes}
    resolved = {p.stem: _dry_run(["--config", str(p)], capsys) for p in recipes}
    base = resolved["facegnet-default"]

    def differs(name: str) -> set[str]:
        return {k for k in base if base[k] != resolved[name][k]}

    # distill_weight weighs the stored target only, which this ablation drops: left at its default, as it ran
    assert differs("ablation-online-only") == {"teacher", "out", "distill_weight"}
    assert resolved["ablation-online-only"]["teacher"] == "none"
    # the second teacher: SFace's stored view targets at 30, off in the control recipe
    assert differs("ablation-sface") == {"view_targets", "view_targets_weight", "out"}
    assert base["view_targets"] is None and resolved["ablation-sface"]["view_targets"] == "data/teacher_sface"
    # the patient trunk: the control recipe with the second teacher (whose ablation won on all dev pairs) at a
    # constant rate, longer, evaluated and checkpointed less often
    assert differs("patient-trunk") == {"schedule", "steps", "out", "eval_every", "checkpoint_minutes",
                                        "view_targets", "view_targets_weight"}
    assert {k: resolved["patient-trunk"][k] for k in ("view_targets", "view_targets_weight")} == \
        {k: resolved["ablation-sface"][k] for k in ("view_targets", "view_targets_weight")}
    assert resolved["patient-trunk"]["schedule"] == "constant" and resolved["patient-trunk"]["steps"] == 32000


def test_options_given_override_the_recipe(capsys: pytest.CaptureFixture) -> None:
    printed = _dry_run(["--config", str(RECIPES / "facegnet-default.toml"), "--steps", "10", "--no-compile",
                        "--out", "runs/quick", "--model", '{"width": 0.5}'], capsys)
    assert (printed["steps"], printed["compile"], printed["out"]) == (10, False, "runs/quick")
    assert printed["lr"] == 0.01 and printed["model"]["width"] == 0.5 and printed["model"]["embedding_size"] == 512


def test_a_recipe_with_an_unknown_key_is_refused_naming_file_and_key(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    recipe = tmp_path / "typo.toml"
    recipe.write_text('lr = 0.01\nbatchsize = 64\n')
    line = _one_line_error(["--config", str(recipe), "--dry-run"], capsys)
    assert str(recipe) in line and "'batchsize'" in line


@pytest.mark.parametrize("text, words", [
    ('head = "sphereface"\n', ["--head must be one of arcface, cosface, none", "'sphereface'"]),
    ('lr = "fast"\n', ["--lr must be a number", "'fast'"]),
    ('steps = 2.5\n', ["--steps must be a whole number"]),
    ('jitter = 2\n', ["--jitter is a probability"]),
    ('lr = [0.1\n', ["not a valid TOML recipe"]),
])
def test_a_bad_value_in_a_recipe_is_one_line_naming_the_file_and_option(text: str, words: list[str], tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    line = _one_line_error(["--config", str(recipe), "--dry-run"], capsys)
    assert str(recipe) in line and all(w in line for w in words), line


def test_a_missing_recipe_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = _one_line_error(["--config", str(tmp_path / "nope.toml"), "--dry-run"], capsys)
    assert "nope.toml" in line and "not found" in line


def test_validation_holds_for_python_callers_too() -> None:
    with pytest.raises(DataError, match="--mixup and --cutmix need --teacher-model"):
        TrainConfig(mixup=0.2)
    with pytest.raises(DataError, match="--ema is a decay"):
        TrainConfig(ema=1.0)
    with pytest.raises(DataError, match="--model has no option 'depth'"):
        TrainConfig(model={"depth": 3})
    cfg = TrainConfig(head="CosFace", lr=1, model="ghostfacenet-w0.5-s2")
    assert cfg.head == "cosface" and cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.model["width"] == 0.5


def test_each_option_has_its_help_once_and_the_cli_shows_it(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(TrainConfig):
        assert f.metadata.get("help"), f.name
        assert "--" + f.name.replace("_", "-") in text
        assert " ".join(f.metadata["help"].split()) in text, f.name
    source = (ROOT / "facegnet" / "cli" / "train.py").read_text()
    assert "weight of the online teacher's distillation loss" not in source  # no second copy of the help texts


def test_removed_options_load_at_their_neutral_value_and_are_refused_otherwise(tmp_path: Path) -> None:
    old = {**TrainConfig().to_dict(), "relation_weight": 0.0, "fold_margin": 0.0, "budget_minutes": 0.0}
    cfg = TrainConfig.from_dict(old)
    assert cfg.to_dict() == TrainConfig().to_dict()  # dropped, nothing else changed
    assert TrainConfig.from_dict({**old, "budget_minutes": None}).to_dict() == cfg.to_dict()
    for key in REMOVED:
        with pytest.raises(DataError, match=f"'{key}' = 95.0 was removed") as info:
            TrainConfig.from_dict({**old, key: 95.0}, tmp_path / "config.json")
        assert str(tmp_path / "config.json") in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError, match="unknown option 'colours'"):
        TrainConfig.from_dict({"colours": 0.3})
    recipe = tmp_path / "old.toml"
    recipe.write_text("relation_weight = 0\nlr = 0.02\n")
    assert load_recipe(recipe) == {"lr": 0.02}


def test_removed_options_are_no_longer_command_line_options(capsys: pytest.CaptureFixture) -> None:
    for flag in ("--relation-weight", "--fold-margin", "--budget-minutes"):
        with pytest.raises(SystemExit):
            main(["train", flag, "1", "--dry-run"])
        assert "unrecognized arguments" in capsys.readouterr().err
