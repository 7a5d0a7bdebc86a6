"""The ``python -m facegnet.train.*`` tools answer bad input as the ``facegnet`` command does: one line, non-zero."""
from __future__ import annotations

from pathlib import Path

import pytest

from facegnet.train import release, sources


@pytest.mark.parametrize("tool, args, words", [
    (release.main, ["{tmp}/missing.pt"], ["missing.pt", "not found"]),
    (release.main, ["{tmp}/missing.pt", "--training", "{not json"], ["--training", "not JSON"]),
    (sources.main, ["--snapshot", "fairface", "--out", "{tmp}/x"], ["--snapshot wants NAME=GIT_DIR", "'fairface'"]),
    (sources.main, ["--out", "{tmp}/x"], ["give at least one --snapshot"]),
    (sources.main, ["--snapshot", "nope={tmp}", "--out", "{tmp}/x"], ["unknown source 'nope'"]),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(tool, args, words, tmp_path: Path, capsys) -> None:
    code = tool([a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("facegnet: error:"), err
    assert all(w in err[0] for w in words), err[0]


def test_the_card_licence_names_every_training_source() -> None:
    from facegnet.train.config import TrainConfig

    plain = release.licence_of(TrainConfig())
    assert plain.startswith("CelebA: non-commercial")
    full = release.licence_of(TrainConfig(extra_data="data/extra/fairface,data/extra/utkface,my/own_faces",
                                         teacher_model="models/face-reidentification-retail-0095"))
    assert full.startswith(plain) and "fairface" in full and "CC BY 4.0" in full
    assert "utkface" in full and full.count("non-commercial") == 2
    assert "own_faces: licence unknown" in full and "Apache-2.0" in full


def test_the_card_licence_names_the_teacher_of_stored_view_targets(tmp_path: Path) -> None:
    import json

    from facegnet.train.config import TrainConfig

    targets = tmp_path / "teacher_sface"
    targets.mkdir()
    (targets / "targets.json").write_text(json.dumps({"teacher": "SFace (OpenCV Zoo sface, Apache-2.0)"}))
    named = release.licence_of(TrainConfig(view_targets=str(targets)))
    assert named.endswith("; stored targets of SFace (OpenCV Zoo sface, Apache-2.0), used in training only, "
                          "not shipped"), named
    (targets / "targets.json").unlink()  # a folder that does not say whose targets they are
    unknown = release.licence_of(TrainConfig(view_targets=str(targets)))
    assert unknown.endswith("; stored targets teacher_sface: teacher and licence unknown, check before publishing")


def test_the_card_licence_inherits_the_sources_of_the_init_weights(tmp_path: Path) -> None:
    import json

    from facegnet.train.config import TrainConfig

    parent = release.licence_of(TrainConfig(extra_data="data/extra/fairface,data/extra/utkface"))
    (tmp_path / "parent.json").write_text(json.dumps({"licence": parent}))
    (tmp_path / "parent.pt").write_bytes(b"")
    # Fine-tuned on the pack alone from weights that saw FairFace and UTKFace: the child still names them, once.
    child = release.licence_of(TrainConfig(init=str(tmp_path / "parent.pt"),
                                          teacher_model="models/face-reidentification-retail-0095"))
    assert "CC BY 4.0" in child and "utkface" in child and child.count("CelebA") == 1 and "Apache-2.0" in child
    # Weights without a card beside them (or an unreadable one) add nothing.
    (tmp_path / "parent.json").write_text("{not json")
    assert release.licence_of(TrainConfig(init=str(tmp_path / "parent.pt"))) == release.licence_of(TrainConfig())
