"""Training on `facegnet prepare` output and with an online teacher: the end-to-end path prepare → train,
unlabelled extra faces, mixup/cutmix, the teacher's input warp, LFW names refused.

Photos are crops of the shared training pack (CelebA people, never LFW); networks are tiny (×0.5, 64-d).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facegnet.cli import main
from facegnet.errors import DataError
from facegnet.train import datasets as D
from facegnet.train.augment import mix_batch
from facegnet.train.prepare import prepare
from facegnet.train.trainer import TrainConfig, train

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PACK = SHARED / "data" / "train"
TEACHER = SHARED / "models" / "face-reidentification-retail-0095"
LFW_PEOPLE = SHARED / "data" / "lfw" / "people.txt"
SMALL_MODEL = {"width": 0.5, "stem_stride": 2, "prelu": True, "dfc": False, "embedding_size": 64, "dropout": 0.0}

pytestmark = pytest.mark.skipif(not (PACK / "manifest.csv").exists(), reason="shared training pack not present")


def _has_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


needs_teacher = pytest.mark.skipif(not (TEACHER.exists() and _has_openvino()),
                                   reason="online teacher needs ../shared's OpenVINO model and `pip install openvino`")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photo folder as a user has it: two people (four photos each) and three loose photos."""
    rows = [r for r in D.read_manifest(PACK) if r["split"] == "train"]
    by_person: dict[str, list[str]] = {}
    for r in rows[:400]:
        by_person.setdefault(r["identity"], []).append(r["crop"])
    people = [p for p, crops in by_person.items() if len(crops) >= 4][:2]
    src = tmp_path_factory.mktemp("photos")
    for p in people:
        (src / f"person_{p}").mkdir()
        for crop in by_person[p][:4]:
            shutil.copy(PACK / crop, src / f"person_{p}" / Path(crop).name)
    for crop in [r["crop"] for r in rows[400:403]]:
        shutil.copy(PACK / crop, src / Path(crop).name)
    return src


@pytest.fixture(scope="module")
def prepared(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    summary = prepare(photos, out, workers=1, progress=False)
    assert summary.crops >= 9, summary  # MTCNN finds the face in (nearly) every aligned crop
    return out


def test_prepare_output_is_not_mistaken_for_a_pack(prepared: Path) -> None:
    assert (prepared / "manifest.csv").exists()
    assert not D.is_pack(prepared) and D.is_pack(PACK)
    faces = D.load_prepared(prepared, min_faces=2)
    assert faces.num_classes == 2 and faces.images.shape[1:] == (112, 112, 3)
    assert (faces.labels == -1).sum() >= 2  # the loose photos: unlabelled


def test_prepare_then_train_from_the_command_line(prepared: Path, tmp_path: Path) -> None:
    """The path that failed before: `facegnet prepare` output went to load_pack, which rejected it."""
    out = tmp_path / "run"
    code = main(["train", "--data", str(prepared), "--distill", "none", "--head", "arcface", "--model",
                 json.dumps(SMALL_MODEL), "--steps", "2", "--batch-size", "4", "--warmup-steps", "1",
                 "--dev-pairs", "none", "--out", str(out), "--no-progress", "--threads", "1"])
    assert code == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["classes"] == 2 and log[-1]["event"] == "end" and log[-1]["step"] == 2
    assert (out / "last.pt").exists()
    # ...and exporting it works: no pack, so no open-set threshold (export used to read the manifest as a pack's)
    from facegnet.train.release import export

    pairs = _pairs_file(tmp_path)
    card = export(out / "last.pt", "tiny", tmp_path / "weights", far=1e-1, pairs=pairs)
    assert card.embedding_size == 64 and card.identify_threshold is None and 0 <= card.training["dev"]["auc"] <= 1
    with pytest.raises(DataError, match="no online projection"):  # nothing to fold without an online teacher
        export(out / "last.pt", "tiny", tmp_path / "weights", far=1e-1, pairs=pairs, fold_teacher=1.0)


def _pairs_file(tmp_path: Path, count: int = 8) -> Path:
    """A small dev-pairs file (``count`` same-person and ``count`` different-person pairs of the pack)."""
    import csv

    rows = D.read_pairs(PACK / "dev_pairs.csv")
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "same"])
        for a, b, same in [r for r in rows if r[2]][:count] + [r for r in rows if not r[2]][:count]:
            writer.writerow([PACK / a, PACK / b, same])
    return pairs


def test_distillation_on_a_folder_without_teacher_is_refused_in_one_line(prepared: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "--data", str(prepared), "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == DataError.exit_code and len(err) == 1 and "--teacher-model" in err[0] and str(prepared) in err[0]


def test_mixup_needs_an_online_teacher(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["train", "--mixup", "0.2", "--out", str(tmp_path / "r")]) == DataError.exit_code
    assert "--teacher-model" in capsys.readouterr().err


def test_unlabelled_prepare_keeps_same_named_photos_of_two_folders_apart(tmp_path: Path) -> None:
    src = tmp_path / "src"
    rows = [r for r in D.read_manifest(PACK) if r["split"] == "train"][:2]
    for split, row in zip(("train", "val"), rows):
        (src / split).mkdir(parents=True)
        shutil.copy(PACK / row["crop"], src / split / "1.webp")
    summary = prepare(src, tmp_path / "out", workers=1, progress=False, unlabelled=True)
    faces = D.load_prepared(tmp_path / "out")
    assert summary.crops == 2 and len(faces) == 2 and faces.num_classes == 0  # train/ and val/ are no people
    assert len(set(faces.paths)) == 2


@pytest.mark.skipif(not LFW_PEOPLE.exists(), reason="LFW's people.txt not present")
def test_prepare_refuses_a_folder_of_an_lfw_person(tmp_path: Path) -> None:
    src = tmp_path / "src" / "George_W_Bush"
    src.mkdir(parents=True)
    shutil.copy(PACK / D.read_manifest(PACK)[0]["crop"], src / "a.webp")
    with pytest.raises(DataError, match="George_W_Bush"):
        prepare(tmp_path / "src", tmp_path / "out", progress=False, exclude_names=LFW_PEOPLE)
    assert not (tmp_path / "out").exists()  # nothing written


def test_concat_renumbers_classes_and_pads_teacher_rows() -> None:
    a = D.load_pack(PACK, "train", min_faces=1, limit=6)
    b = D.FaceSet(images=np.zeros((3, 112, 112, 3), np.uint8), labels=np.array([0, -1, 0]), paths=["x", "y", "z"],
                  identities=["p"])
    both = D.concat([a, b], ["pack", "extra"])
    assert len(both) == 9 and both.num_classes == a.num_classes + 1
    assert list(both.labels[6:]) == [a.num_classes, -1, a.num_classes]
    assert not np.isnan(both.teacher[:6]).any() and np.isnan(both.teacher[6:]).all()


def test_mix_batch_mixes_only_the_rows_it_reports() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.stack([torch.full((3, 112, 112), float(v)) for v in torch.linspace(-0.9, 0.9, 32)])  # all distinct
    before = x.clone()
    mixed = mix_batch(x, 0.3, 0.3, gen)
    assert 0 < int(mixed.sum()) < len(x)
    changed = (x != before).flatten(1).any(1)
    assert torch.equal(changed, mixed)
    # a blend of two constant faces is constant; a pasted rectangle leaves most of the row's own face
    for i in torch.nonzero(mixed).flatten():
        own = float(before[i, 0, 0, 0])
        kept = float((x[i] == own).float().mean())
        assert kept == 0.0 and float(x[i].std()) < 1e-6 or 0.55 <= kept <= 0.8


def test_teacher_input_equals_the_documented_affine_warp() -> None:
    cv2 = pytest.importorskip("cv2")
    from facegnet.train.teacher import teacher_input

    crops = D.load_pack(PACK, "train", limit=3, teacher=None).images
    ours = teacher_input(D.to_input(torch.from_numpy(crops))).numpy().transpose(0, 2, 3, 1)
    for crop, got in zip(crops, ours):
        bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR).astype(np.float32)
        want = cv2.warpAffine(bgr, np.float32([[4 / 3, 0, -32 / 3], [0, 8 / 7, 0]]), (128, 128))
        assert np.abs(got - want)[:, :-2].max() < 0.05  # the last columns: cv2 samples outside the crop


@needs_teacher
def test_online_teacher_separates_people_of_the_pack() -> None:
    from facegnet.train.teacher import OnlineTeacher

    teacher = OnlineTeacher(TEACHER, threads=1)
    pairs = D.read_pairs(PACK / "dev_pairs.csv")
    pairs = [p for p in pairs if p[2] == 1][:20] + [p for p in pairs if p[2] == 0][:20]
    a = D.decode_crops([PACK / p[0] for p in pairs])
    b = D.decode_crops([PACK / p[1] for p in pairs])
    ea, eb = teacher(D.to_input(torch.from_numpy(a))), teacher(D.to_input(torch.from_numpy(b)))
    sims = (ea * eb).sum(1).numpy()
    same = np.array([p[2] for p in pairs], bool)
    assert teacher.dim == 256 and sims[same].mean() > sims[~same].mean() + 0.3


@needs_teacher
def test_online_teacher_run_with_extra_faces_mixup_and_resume(prepared: Path, tmp_path: Path) -> None:
    base = dict(data=str(PACK), extra_data=str(prepared), teacher_model=str(TEACHER), out=str(tmp_path / "run"),
                model=dict(SMALL_MODEL), limit=24, batch_size=8, steps=4, warmup_steps=1, head="cosface",
                distill="cosine", mixup=0.3, cutmix=0.2, jitter=0.5, checkpoint_every=0,
                log_every=1, threads=1, dev_pairs="none", min_faces=1, seed=5)
    train(TrainConfig(**base, stop_at=2), progress=False)
    resumed = train(TrainConfig(**base), resume=True, progress=False)
    assert resumed["step"] == 4
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    start = log[0]
    assert start["faces"] == 24 + len(D.load_prepared(prepared)) and start["teacher_sha256"] and start["classes"] > 2
    steps = [r for r in log if "online" in r]
    assert len(steps) == 4 and all(0.0 <= r["online"] <= 2.0 and "distill" in r for r in steps)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["module"]["online.mean"].abs().sum() > 0  # the teacher's centre, kept for the resume
    # Export with the online projection folded in: the exported network is the metric's linear map of the plain one
    from facegnet.torch_files import load_pt
    from facegnet.train.release import export
    from facegnet.train.setup import build_net

    pairs = _pairs_file(tmp_path)
    plain = export(tmp_path / "run" / "last.pt", "plain", tmp_path / "plain", far=1e-1, pairs=pairs, identify_far=None)
    folded = export(tmp_path / "run" / "last.pt", "folded", tmp_path / "folded", far=1e-1, pairs=pairs,
                    identify_far=None, fold_teacher=1.0)
    record = folded.training["teacher_fold"]
    assert "teacher_fold" not in plain.training and record["weight"] == 1.0 and record["faces"] == 24
    x = D.to_input(torch.from_numpy(D.load_pack(PACK, "dev", 1, teacher=None, limit=40).images))
    raw = []
    for name in ("plain", "folded"):
        net = build_net(SMALL_MODEL)
        net.load_state_dict(load_pt(tmp_path / name / f"{name}.pt", "weights"))
        with torch.no_grad():
            raw.append(net.eval()(x).double())
    e, f = (r - r.mean(0) for r in raw)  # folded = L·plain, so their centred Gram matrices relate through L² too
    w = state["module"]["online.proj.weight"].double()
    metric = torch.eye(64, dtype=torch.float64) + record["scale"] ** 2 * w.T @ w
    want = e @ metric @ e.T
    assert (f @ f.T - want).abs().max() < 1e-3 * want.abs().max()
    assert (f @ f.T - e @ e.T).abs().max() > 0.05 * want.abs().max()  # and L is not the identity


def test_sources_unpack_a_pinned_commit_and_prepare_it_unlabelled(tmp_path: Path, monkeypatch) -> None:
    """The rebuild command on a small local repository standing in for a fetched snapshot."""
    import subprocess

    from facegnet.train import sources

    repo = tmp_path / "repo"
    (repo / "faces" / "train").mkdir(parents=True)
    for i, row in enumerate(D.read_manifest(PACK)[:3]):
        shutil.copy(PACK / row["crop"], repo / "faces" / "train" / f"{i}.webp")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "faces"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (repo / "faces" / "train" / "0.webp").unlink()  # the work tree moved on; the pinned commit did not
    monkeypatch.setitem(sources.SOURCES, "tiny", sources.Source("tiny", "x/y", commit, "faces", "test", 3))
    code = sources.main(["--snapshot", f"tiny={repo / '.git'}", "--out", str(tmp_path / "out")])
    assert code == 0
    faces = D.load_prepared(tmp_path / "out" / "tiny")
    assert len(faces) == 3 and faces.num_classes == 0
    assert sources.main(["--snapshot", "nothing", "--out", str(tmp_path / "o2")]) == DataError.exit_code
