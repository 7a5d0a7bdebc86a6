"""Clustering faces of unsorted photos: the grouping methods, the pairwise scores, ``facegnet cluster``."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import cut_to_box, lfw_photo

pytest.importorskip("scipy", reason="clustering needs its extra: pip install 'facegnet[cluster]'")
pytest.importorskip("sklearn", reason="clustering needs its extra: pip install 'facegnet[cluster]'")

from facegnet.cluster import cluster_embeddings, pairwise_scores  # noqa: E402


def unit(rows) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def blobs(people: int = 4, per: int = 6, dim: int = 64, spread: float = 0.25, seed: int = 0):
    """Unit vectors scattered around ``people`` random centres (cosine ≈ 0.94 within, ≈ 0 between)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(people, dim)))
    truth = np.repeat(np.arange(people), per)
    points = centres[truth] + spread * rng.normal(size=(len(truth), dim)) / np.sqrt(dim)
    return unit(points), truth


@pytest.mark.parametrize("method", ["average", "components", "hdbscan"])
def test_every_method_recovers_well_separated_people(method):
    points, truth = blobs()
    labels = cluster_embeddings(points, method, threshold=0.5)
    scores = pairwise_scores(truth, labels)
    assert scores == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "groups": 4, "people": 4}


def test_average_linkage_does_not_chain_but_components_do():
    # A chain of faces 30° apart: neighbours pass a 0.8 threshold (cos 30° = 0.87), the two ends do not
    # (cos 150°). Connected components join the whole chain; average linkage keeps it in pieces.
    angles = np.radians(np.arange(0, 151, 30))
    chain = np.stack([np.cos(angles), np.sin(angles)], 1)
    assert len(set(cluster_embeddings(chain, "components", threshold=0.8).tolist())) == 1
    assert len(set(cluster_embeddings(chain, "average", threshold=0.8).tolist())) > 1


def test_labels_are_dense_and_noise_faces_stand_alone():
    from facegnet.cluster import _dense

    # HDBSCAN's noise (-1) becomes groups of one; labels are renumbered 0..G-1 in order of appearance.
    assert _dense(np.array([-1, 7, 7, -1, 3])).tolist() == [0, 1, 1, 2, 3]
    points, _ = blobs(people=2, per=5)
    assert cluster_embeddings(np.zeros((0, 8)), "average", threshold=0.5).shape == (0,)
    assert cluster_embeddings(points[:1], "average", threshold=0.5).tolist() == [0]
    with pytest.raises(ValueError, match="needs a threshold"):
        cluster_embeddings(points, "average")
    with pytest.raises(ValueError, match="method must be"):
        cluster_embeddings(points, "kmeans", threshold=0.5)


def test_pairwise_scores_match_scikit_learn():
    from sklearn.metrics.cluster import pair_confusion_matrix

    rng = np.random.default_rng(1)
    for _ in range(20):
        truth = rng.integers(0, 6, 40)
        labels = rng.integers(0, 4, 40)
        (_, fp), (fn, tp) = pair_confusion_matrix(truth, labels) / 2  # sklearn counts ordered pairs
        scores = pairwise_scores(truth.astype(str), labels)
        assert scores["precision"] == pytest.approx(tp / (tp + fp))
        assert scores["recall"] == pytest.approx(tp / (tp + fn))
        assert scores["people"] == len(set(truth)) and scores["groups"] == len(set(labels))


@pytest.mark.slow
def test_cluster_cli_groups_a_folder(tmp_path, capsys, recognizer):
    from facegnet.cli import main

    folder = tmp_path / "unsorted"
    (folder / "sub").mkdir(parents=True)
    for person, numbers in (("George_W_Bush", (1, 2, 3)), ("Serena_Williams", (1, 2))):
        for n in numbers:
            shutil.copy(lfw_photo(person, n), (folder / "sub" if n == 3 else folder) / f"{person}_{n}.jpg")
    tight = cut_to_box(recognizer, lfw_photo("Colin_Powell", 1), folder / "Colin_Powell_1.jpg")  # cut to the face
    (folder / "broken.jpg").write_bytes(b"not a photo")
    out = tmp_path / "groups.json"
    assert main(["cluster", str(folder), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken.jpg: not an image" in captured.err
    # The one photo cut tight is named, as identify names it; the five whole ones are not.
    warned = [line for line in captured.err.splitlines() if "cut tight" in line]
    assert len(warned) == 1 and warned[0].startswith(f"facegnet: warning: {tight}: face 1 is cut tight ("), warned
    groups = json.loads(out.read_text())
    assert groups["method"] == "average" and groups["faces"] == 6
    people = [{face["image"].rsplit("/", 1)[1].rsplit("_", 1)[0] for face in g["faces"]} for g in groups["groups"]]
    assert people == [{"George_W_Bush"}, {"Serena_Williams"}, {"Colin_Powell"}]
    assert [g["known"] for g in groups["groups"]] == [None, None, None]  # no gallery: nobody to look like
    assert groups["errors"] == [{"image": str(folder / "broken.jpg"), "error": "not an image (unrecognised file format)"}]

    assert main(["cluster", str(tmp_path / "missing")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("missing: folder not found")


@pytest.mark.slow
def test_cluster_cli_saves_a_job_in_a_gallery_directory(tmp_path, capsys, recognizer):
    """``facegnet cluster PHOTOS --gallery DIR``: the groups become a cluster job of the gallery (what the page of
    its server shows), each group marked with the enrolled person most of its faces look like."""
    from facegnet.cli import main
    from facegnet.gallery import Gallery
    from facegnet.gallery.cluster_jobs import FolderJobs

    gallery_dir = tmp_path / "gallery"
    with Gallery(gallery_dir, recognizer=recognizer, create=True) as gallery:
        gallery.enroll("George", lfw_photo("George_W_Bush", 1))
    folder = tmp_path / "unsorted"
    folder.mkdir()
    for person, number in (("George_W_Bush", 2), ("George_W_Bush", 3), ("Serena_Williams", 1)):
        shutil.copy(lfw_photo(person, number), folder / f"{person}_{number}.jpg")
    out = tmp_path / "groups.json"
    assert main(["cluster", str(folder), "--gallery", str(gallery_dir), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"group 0: 2 face(s), looks like George: {folder}/George_W_Bush_2.jpg" in captured.out
    assert "group 1: 1 face(s): " in captured.out  # Serena is not enrolled: no name offered
    store = FolderJobs(gallery_dir)
    [listed] = store.list()
    assert captured.err.count(f"saved as cluster job {listed['id']}") == 1
    job = store.get(listed["id"])
    assert [(g["faces"], g["known"], g["state"]) for g in job["groups"]] == [([0, 1], "George", "open"),
                                                                             ([2], None, "open")]
    assert [(g["size"], g["known"]) for g in json.loads(out.read_text())["groups"]] == [(2, "George"), (1, None)]
    assert job["photos"] == 3 and store.photo(job["id"], job["faces"][2]["photo"]) == \
        lfw_photo("Serena_Williams", 1).read_bytes()
    with store.update(job["id"]) as changing:  # a change is saved when the block ends
        changing["groups"][1]["state"] = "dismissed"
    assert store.get(job["id"])["groups"][1]["state"] == "dismissed"
    assert (gallery_dir / "clusters" / job["id"]).stat().st_mode & 0o077 == 0  # faces: owner-only


@pytest.mark.parametrize("command", ["cluster", "identify", "enroll"])
def test_an_unreachable_database_is_refused_before_the_model(command, tmp_path, capsys):
    """``--database URL`` is connected to before the (slow) model loads, by every command that takes it: with
    weights that do not exist, the database is what the one line names, its password hidden."""
    import socket

    pytest.importorskip("psycopg", reason="a PostgreSQL gallery needs its extra: pip install 'facegnet[postgres]'")
    from facegnet.cli import main

    folder = tmp_path / "unsorted"
    folder.mkdir()
    (folder / "a.jpg").symlink_to(lfw_photo("Serena_Williams", 1))
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    url = f"postgresql://facegnet:s3cret@127.0.0.1:{port}/gallery"
    target = [str(folder / "a.jpg")] if command == "identify" else [str(folder)]
    code = main([command, *target, "--database", url, "--weights", str(tmp_path / "missing.pt")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    assert f"postgresql://facegnet:***@127.0.0.1:{port}/gallery: cannot connect to the database (" in err, err
    assert "s3cret" not in err and "missing.pt" not in err
