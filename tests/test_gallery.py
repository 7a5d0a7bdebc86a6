"""The gallery: SQLite store, FAISS index, enrolment, identification, durability and the CLI.

Real LFW photos, real MTCNN, real FAISS and SQLite, the shipped weights. Names are checked at the gallery's
default threshold (chosen from the model card's dev impostor tail for 1% of searches by a stranger at the
gallery's number of templates: three people enrolled from two photos each, a third photo of each named right, a
stranger "unknown"), and so are the mechanics: structure, open-set threshold and how it rises with the gallery,
fingerprint refusal, removal, rebuild, re-enrolment, file modes, the writer lock, and a process killed in the
middle of an enrolment.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegnet.card import sha256_file
from facegnet.cli import main
from facegnet.errors import DataError, GalleryError
from facegnet.gallery import Gallery, QualityPolicy, discover
from facegnet.gallery.folders import DB_NAME, INDEX_NAME
from facegnet.gallery.index import GalleryIndex, choose_kind, nlist_for, resolve_kind
from facegnet.gallery.search import rescore

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw" / "images"
# People whose third LFW photo the shipped model names at the gallery's default threshold with a margin
# (similarity 0.52-0.70 against 0.36 for three people, 0.377 at the card's fixed per-pair one; runner-up ≤ 0.02;
# the stranger's best 0.04; sha256 84c59ce8…;
# `python benchmarks/identify_margins.py`), so the test fails on a regression of the model, not on noise.
ENROLLED = ["Colin_Powell", "Serena_Williams", "Vladimir_Putin"]
STRANGER = LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"

pytestmark = pytest.mark.skipif(not LFW.is_dir(), reason="LFW photos not found at ../shared/data/lfw")


def lfw(name: str, n: int) -> Path:
    return LFW / name / f"{name}_{n:04d}.jpg"


def clustered(people: int, per_person: int, dim: int = 512, noise: float = 0.6, seed: int = 0):
    """Synthetic unit embeddings: a centre per person plus noise (what face embeddings look like)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((people, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, per_person, axis=0)
    x += noise / np.sqrt(dim) * rng.standard_normal(x.shape).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, np.repeat(np.arange(people), per_person), centres


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ============================================================================================ index (no model)
@pytest.mark.parametrize("kind", ["flat", "pq"])
def test_index_search_remove_save_load(kind: str, tmp_path: Path) -> None:
    x, _, _ = clustered(200, 10, seed=1)  # 2,000 vectors: enough to train the PQ codebooks
    ids = np.arange(len(x), dtype=np.int64) + 100
    index = GalleryIndex.build(512, ids, x, kind=kind)
    assert index.kind == kind and len(index) == len(x)
    rng = np.random.default_rng(2)
    queries = x[:50] + 0.02 * rng.standard_normal((50, 512)).astype(np.float32)
    sims, found = index.search(queries, 5)
    assert (found[:, 0] == ids[:50]).mean() >= 0.98
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # sorted, best first
    assert index.remove([100, 101, 999_999]) == 2  # unknown ids are ignored
    _, found = index.search(x[:2], 3)
    assert 100 not in found and 101 not in found
    path = tmp_path / "index.faiss"
    index.save(path, {"epoch": "e1"})
    assert mode(path) == 0o600
    loaded, header = GalleryIndex.load(path)
    assert header["epoch"] == "e1" and loaded.kind == kind
    assert np.array_equal(loaded.ids(), index.ids()) and len(loaded) == len(x) - 2
    assert np.array_equal(loaded.search(x[5:6], 3)[1], index.search(x[5:6], 3)[1])
    assert not list(tmp_path.glob(".index.faiss.tmp*"))  # the temporary file was renamed away


def test_index_ivfpq_codes(tmp_path: Path) -> None:
    x, labels, centres = clustered(2500, 4, seed=7)  # IVF-PQ trains 256 code words a sub-space: 10k vectors
    index = GalleryIndex.build(512, np.arange(len(x)), x, kind="ivfpq", pq_m=16)
    assert index.kind == "ivfpq" and len(index) == 10_000
    sims, found = index.search(centres[:100], 4)
    assert (found[:, 0] // 4 == np.arange(100)).mean() >= 0.9  # approximate codes, right identity
    assert index.remove(np.arange(4)) == 4 and 0 not in index.search(centres[:1], 8)[1]
    loaded, _ = GalleryIndex.load(index.save(tmp_path / "ivfpq.faiss"))
    assert np.array_equal(loaded.ids(), index.ids())


def test_index_kind_choice_and_fallbacks(tmp_path: Path) -> None:
    assert choose_kind(10) == "flat" and choose_kind(1_000_000) == "pq" and choose_kind(10**7) == "ivfpq"
    assert resolve_kind("ivfpq", 50)[0] == "flat"  # too few vectors to train k-means: exact search
    # Kinds a gallery may have recorded before they were retired resolve as auto would.
    assert resolve_kind("hnsw", 5)[0] == "flat" and resolve_kind("ivf", 20_000)[0] == "pq"
    assert nlist_for(1_000_000) == 2048 and nlist_for(2_000) == 32
    with pytest.raises(ValueError):
        resolve_kind("lsh", 10)
    empty = GalleryIndex.build(512, kind="flat")
    sims, ids = empty.search(np.ones((2, 512), np.float32), 3)
    assert (ids == -1).all() and np.isinf(sims).all()
    bad = tmp_path / "broken.faiss"
    bad.write_bytes(b"FGIDX001" + b"\x05\x00\x00\x00\x00\x00\x00\x00{}xyz")
    with pytest.raises(ValueError):
        GalleryIndex.load(bad)


# ============================================================================================ gallery (no model)
def test_gallery_embeddings_best_mean_topk_unknown(tmp_path: Path) -> None:
    x, labels, centres = clustered(20, 5, seed=4)
    with Gallery(tmp_path / "g", create=True) as gallery:
        for vector, label in zip(x, labels):
            gallery.add_embedding(f"person{label:02d}", vector)
        assert len(gallery) == 100 and len(gallery.people()) == 20
        matches = gallery.search(centres[:3], top_k=4, threshold=0.0)
        assert [m.name for m in matches] == ["person00", "person01", "person02"]
        for match in matches:  # four distinct people, best first, although each has five templates
            assert len({c.name for c in match.candidates}) == 4
            assert [c.similarity for c in match.candidates] == sorted((c.similarity for c in match.candidates),
                                                                      reverse=True)
        best = gallery.search(centres[:1], top_k=1, threshold=0.0)[0]
        mean = gallery.search(centres[:1], top_k=1, threshold=0.0, aggregate="mean")[0]
        assert mean.name == "person00" and mean.similarity < best.similarity  # mean of five ≤ their best
        expected = float(np.mean(x[labels == 0] @ centres[0]))
        assert mean.similarity == pytest.approx(expected, abs=1e-5)
        # Open set: below the threshold the answer is "unknown", with the closest still reported.
        unknown = gallery.search(centres[:1], threshold=best.similarity + 0.01)[0]
        assert unknown.name == "unknown" and not unknown.known
        assert unknown.candidates[0].name == "person00"
        assert unknown.to_dict()["name"] == "unknown"
        # IVF-PQ shortlists are re-scored exactly from SQLite: shuffled ids come back exact and sorted.
        ids = gallery.store.template_ids()[::-1][None, :10].copy()
        ids[0, 3] = -1
        sims, order = rescore(gallery.store, centres[:1], ids)
        known, vectors = gallery.store.embeddings(order[0, :9])
        exact = dict(zip(known.tolist(), vectors @ centres[0]))
        assert order[0, -1] == -1 and np.all(np.diff(sims[0, :9]) <= 0)
        assert np.allclose(sims[0, :9], [exact[i] for i in order[0, :9].tolist()], atol=1e-5)
        with pytest.raises(GalleryError):
            gallery.search(centres[:1], aggregate="median")
        with pytest.raises(GalleryError):
            gallery.add_embedding("unknown", x[0])  # the reserved name


def test_gallery_shared_between_objects_and_index_cache(tmp_path: Path) -> None:
    x, labels, _ = clustered(10, 3, seed=5)
    path = tmp_path / "g"
    writer = Gallery(path, create=True)
    reader = Gallery(path)
    for vector, label in zip(x[:15], labels[:15]):
        writer.add_embedding(f"p{label}", vector)
    assert len(reader.index) == 15  # the reader's index catches up from SQLite
    for vector, label in zip(x[15:], labels[15:]):
        writer.add_embedding(f"p{label}", vector)
    writer.remove_person("p0")
    assert reader.verify_consistency()["consistent"]
    assert len(reader.index) == 27 and "p0" not in dict(reader.people())
    assert all(c.name != "p0" for m in reader.search(x[:3], top_k=5) for c in m.candidates)
    with pytest.raises(GalleryError, match="no person named"):
        writer.remove_person("nobody")
    writer.close()
    reader.close()
    # A damaged index file is only a cache: it is rebuilt from SQLite.
    (path / INDEX_NAME).write_bytes(b"garbage")
    with Gallery(path) as gallery:
        assert gallery.verify_consistency()["consistent"] and len(gallery.index) == 27
    # A stale one (saved before later changes) is topped up.
    with Gallery(path) as gallery:
        gallery.save()
        with sqlite3.connect(path / DB_NAME) as conn:  # a change the index file does not know of
            conn.execute("DELETE FROM templates WHERE id = (SELECT MAX(id) FROM templates)")
            conn.execute("UPDATE meta SET value = value + 1 WHERE key IN ('generation', 'removals')")
    with Gallery(path) as gallery:
        assert gallery.verify_consistency()["consistent"]
        assert len(gallery.index) == 26


def test_gallery_auto_index_switches_with_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import facegnet.gallery.index as index_module

    monkeypatch.setattr(index_module, "AUTO_EXACT_MAX", 1_500)  # small enough to test the switch quickly
    x, labels, _ = clustered(200, 10, seed=6)
    names = [f"p{label}" for label in labels]
    with Gallery(tmp_path / "g", create=True) as gallery:
        gallery.add_embeddings(names[:1000], x[:1000])
        assert gallery.index.kind == "flat"
        gallery.add_embeddings(names[1000:], x[1000:])
        assert gallery.index.kind == "pq" and len(gallery.index) == 2000
        assert gallery.search(x[:1], threshold=0.0)[0].name == "p0"
        removed = gallery.remove_people([f"p{label}" for label in range(140, 200)])
        assert sum(removed.values()) == 600
        # 1,400 is below the limit but above half of it: no flip-flopping between kinds at the limit.
        assert gallery.index.kind == "pq" and len(gallery.index) == 1400
        assert gallery.verify_consistency()["consistent"]
        with pytest.raises(GalleryError):  # all or none
            gallery.remove_people(["p0", "nobody"])
        assert dict(gallery.people())["p0"] == 10
    with Gallery(tmp_path / "h", create=True, index="pq") as gallery:
        gallery.add_embeddings(names[:1200], x[:1200])
        assert gallery.index.kind == "pq" and gallery.info()["index_kind"] == "pq"
        assert gallery.search(x[:1], threshold=0.0)[0].name == "p0"


def test_gallery_fingerprint_refusal_and_writer_lock(tmp_path: Path) -> None:
    path = tmp_path / "g"
    with Gallery(path, create=True) as gallery:
        gallery.add_embedding("a", np.ones(512, np.float32))
    with sqlite3.connect(path / DB_NAME) as conn:
        conn.execute("UPDATE meta SET value = 'f00dfeed' || value WHERE key = 'fingerprint'")
    with pytest.raises(GalleryError, match="other weights.*rebuild"):
        Gallery(path)
    with Gallery(path, check_fingerprint=False) as gallery:  # listing still works
        assert gallery.people() == [("a", 1)] and not gallery.info()["fingerprint_matches"]
    with sqlite3.connect(path / DB_NAME) as conn:
        conn.execute("UPDATE meta SET value = substr(value, 9) WHERE key = 'fingerprint'")
    first, second = Gallery(path), Gallery(path, lock_timeout=0.2)
    with first._writer():  # flock is per open file: a second handle is a second writer
        with pytest.raises(GalleryError, match="busy"):
            second.add_embedding("b", np.ones(512, np.float32))
    second.add_embedding("b", np.ones(512, np.float32))
    first.close()
    second.close()
    with pytest.raises(GalleryError, match="no gallery"):
        Gallery(tmp_path / "nowhere")


def test_rename_and_merge_people(tmp_path: Path) -> None:
    x, labels, centres = clustered(3, 2, seed=8)
    with Gallery(tmp_path / "g", create=True) as gallery:
        gallery.add_embeddings([f"p{label}" for label in labels], x)
        assert gallery.search(centres[:1], threshold=0.0)[0].name == "p0"
        gallery.rename_person("p0", "  Ann   Lee ")  # white space collapsed, as at enrolment
        assert gallery.search(centres[:1], threshold=0.0)[0].name == "Ann Lee"  # the index needs no change
        with pytest.raises(GalleryError, match="already in the gallery"):
            gallery.rename_person("p1", "Ann Lee")
        with pytest.raises(GalleryError, match="no person named 'nobody'"):
            gallery.rename_person("nobody", "x")
        with pytest.raises(GalleryError, match="reserved"):
            gallery.rename_person("p1", "unknown")
        assert gallery.merge_people("p1", "Ann Lee") == 2
        assert gallery.people() == [("Ann Lee", 4), ("p2", 2)]
        assert gallery.search(centres[1:2], threshold=0.0)[0].name == "Ann Lee"
        with pytest.raises(GalleryError, match="no person named 'p1'"):
            gallery.merge_people("p1", "p2")
        with pytest.raises(GalleryError, match="themselves"):
            gallery.merge_people("p2", "p2")
        assert gallery.verify_consistency()["consistent"]


def test_discover_layouts(tmp_path: Path) -> None:
    (tmp_path / "Alice").mkdir()
    for name in ("Alice/1.jpg", "Alice/2.PNG", "Alice/notes.txt", "Bob_1.jpg", "Bob-2.jpg", "Carol (3).jpeg",
                 ".hidden.jpg", "Dave.jpg"):
        (tmp_path / name).write_bytes(b"x")
    names = [name for name, _ in discover(tmp_path)]
    assert names == ["Alice", "Alice", "Bob", "Bob", "Carol", "Dave"]
    with pytest.raises(DataError, match="folder not found"):
        discover(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no photos"):
        discover(tmp_path / "empty")


# ============================================================================================ with the model
@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("people")
    for name in ENROLLED:
        (folder / name).mkdir()
        for n in (1, 2):
            shutil.copy(lfw(name, n), folder / name)
    return folder


@pytest.fixture(scope="module")
def enrolled(people: Path, recognizer, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("galleries") / "main"
    with Gallery(path, recognizer=recognizer, create=True) as gallery:
        report = gallery.enroll_folder(people, progress=False)
    assert len(report.enrolled) == 6 and not report.skipped, report.summary()
    return path


@pytest.fixture()
def gallery_copy(enrolled: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "gallery"
    shutil.copytree(enrolled, copy)
    return copy


def test_enrolled_structure_and_file_modes(enrolled: Path, people: Path, recognizer) -> None:
    with Gallery(enrolled, recognizer=recognizer) as gallery:
        assert gallery.people() == [(name, 2) for name in ENROLLED]
        templates = gallery.templates()
        assert len(templates) == 6
        for t in templates:
            assert Path(t.source).is_file() and sha256_file(t.source) == t.sha256
            x1, y1, x2, y2 = t.box
            assert x2 - x1 >= 40 and y2 - y1 >= 40 and t.score >= 0.95 and 0 < t.quality <= 1
            assert t.landmarks.shape == (5, 2)
        ids, vectors = gallery.store.embeddings()
        assert vectors.shape == (6, 512) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        assert gallery.verify_consistency()["consistent"]
        info = gallery.info()
        assert info["people"] == 3 and info["fingerprint"] == recognizer.fingerprint
    assert mode(enrolled) == 0o700
    files = list(enrolled.iterdir())
    assert {DB_NAME, INDEX_NAME} <= {f.name for f in files}
    assert all(mode(f) == 0o600 for f in files), {f.name: oct(mode(f)) for f in files}


def test_reenroll_adds_only_new_photos(gallery_copy: Path, people: Path, recognizer, tmp_path: Path) -> None:
    with Gallery(gallery_copy, recognizer=recognizer) as gallery:
        again = gallery.enroll_folder(people, progress=False)
        assert len(again.existing) == 6 and not again.enrolled
        assert "6 already in the gallery" in again.summary()
        more = tmp_path / "more"
        (more / "Colin_Powell").mkdir(parents=True)
        shutil.copy(lfw("Colin_Powell", 1), more / "Colin_Powell" / "same_photo_new_name.jpg")
        shutil.copy(lfw("Colin_Powell", 3), more / "Colin_Powell")
        report = gallery.enroll_folder(more, progress=False)
        assert [r.status for r in report.results] == ["enrolled", "exists"]  # sorted: "C" < "s"
        assert dict(gallery.people())["Colin_Powell"] == 3


def test_identify_mechanics(enrolled: Path, recognizer) -> None:
    probe = lfw("Colin_Powell", 3)  # not enrolled, of an enrolled person
    with Gallery(enrolled, recognizer=recognizer) as gallery:
        for image in (probe, STRANGER):
            matches = gallery.identify(image, top_k=3, threshold=-1.0)  # everyone is a match
            assert len(matches) >= 1 and matches[0].face is not None
            face = matches[0].to_dict()
            assert len(face["box"]) == 4 and face["box"][2] > face["box"][0]
            assert face["name"] in ENROLLED and -1 <= face["similarity"] <= 1
            assert [c["name"] for c in face["candidates"]] == sorted(
                ENROLLED, key=lambda n: -next(c["similarity"] for c in face["candidates"] if c["name"] == n)
            )
            assert face["similarity"] == face["candidates"][0]["similarity"]
            # The open-set path: above every similarity, the face is unknown.
            embedding = recognizer.embed_faces(image, [matches[0].face])
            strict = gallery.search(embedding, threshold=1.01)
            # Against the match's own similarity: to_dict rounds to 4 decimals, which a stranger's small score
            # cannot meet within a relative tolerance.
            best = matches[0].similarity
            assert strict[0].name == "unknown" and strict[0].similarity == pytest.approx(best, abs=1e-6)
            at = gallery.search(embedding, threshold=best - 1e-4)
            assert at[0].name == face["name"]
        # The enrolled photo itself is its own best match (identical embedding).
        same = gallery.identify(lfw("Serena_Williams", 1), threshold=0.0)[0]
        assert same.name == "Serena_Williams" and same.similarity > 0.99


def test_identify_names_enrolled_people_and_not_strangers(enrolled: Path, recognizer) -> None:
    """With the shipped weights at the gallery's default threshold: a third photo (not enrolled) of each
    enrolled person gets the right name, and a stranger is "unknown"."""
    with Gallery(enrolled, recognizer=recognizer) as gallery:
        assert gallery.search_threshold().source == "per-search"
        for name in ENROLLED:
            matches = gallery.identify(lfw(name, 3))
            assert len(matches) == 1 and matches[0].name == name, (name, matches[0].to_dict())
            assert matches[0].similarity >= gallery.threshold
        stranger = gallery.identify(STRANGER)[0]
        assert stranger.name == "unknown" and stranger.similarity < gallery.threshold


def test_default_threshold_holds_a_false_alarm_rate_per_search(enrolled: Path, recognizer, tmp_path: Path) -> None:
    """A search compares a stranger with every enrolled template: the default threshold is where the card's dev
    impostor tail puts 1% of such searches at the gallery's number of templates, so it rises as photos are added;
    another rate, or a threshold given to the recogniser, overrides it."""
    from facegnet.gallery.search_threshold import DEFAULT_SEARCH_FAR, exceedance_at, per_search_far, search_threshold
    from facegnet.recognizer import FaceRecognizer

    tail = recognizer.card.impostor_tail
    assert tail is not None and tail["pairs"] > 500_000  # every pair of different people among the dev faces
    with Gallery(enrolled, recognizer=recognizer) as gallery:
        in_force = gallery.search_threshold()
        assert (in_force.source, in_force.people, in_force.templates) == ("per-search", 3, 6)
        assert in_force.far_per_search == DEFAULT_SEARCH_FAR == 0.01
        assert per_search_far(exceedance_at(tail, in_force.threshold), 6) == pytest.approx(DEFAULT_SEARCH_FAR, rel=1e-3)
        assert gallery.threshold == in_force.threshold
        assert gallery.identify(STRANGER)[0].threshold == in_force.threshold
        assert gallery.info()["search_threshold"] == in_force.to_dict()
        gallery.search_far = 0.001  # fewer false alarms: a stricter threshold
        assert gallery.threshold > in_force.threshold
    # It rises as people are added (random unit vectors stand in for people: only their number matters).
    rng = np.random.default_rng(0)
    with Gallery(tmp_path / "big", create=True) as big:  # no recogniser: the shipped card's own tail
        assert big.card.impostor_tail == tail
        rising, total = [], 0
        for people in (1, 9, 90, 900, 678):
            vectors = rng.standard_normal((people, 512)).astype(np.float32)
            big.add_embeddings([f"p{total + i}" for i in range(people)], vectors)
            total += people
            rising.append(big.search_threshold())
        assert [t.people for t in rising] == [1, 10, 100, 1000, 1678]
        assert all(a.threshold < b.threshold for a, b in zip(rising, rising[1:]))
        assert rising[-1].threshold == search_threshold(tail, 1678, DEFAULT_SEARCH_FAR).threshold
        assert rising[-1].threshold > recognizer.card.identify_threshold  # the fixed per-pair one
    # A threshold the user gave the recogniser wins; the rate it holds is predicted from the tail.
    with Gallery(enrolled, recognizer=FaceRecognizer(threshold=0.77)) as gallery:
        given = gallery.search_threshold()
        assert gallery.threshold == 0.77 and given.source == "given" and given.far_per_search < 1e-4


def test_threshold_counts_templates_not_people(tmp_path: Path) -> None:
    """A search compares a stranger with every template and names the best one's person, so a person enrolled
    from k photos gives a stranger (nearly) k chances (benchmarks/dev_open_set.py): with the people fixed, more
    photos per person raise the threshold to where the rate holds over one comparison per photo."""
    from facegnet.gallery.search_threshold import DEFAULT_SEARCH_FAR, exceedance_at, per_search_far, search_threshold

    rng = np.random.default_rng(1)
    names = [f"p{i}" for i in range(10)]
    with Gallery(tmp_path / "g", create=True) as gallery:  # the shipped card's tail; random unit vectors
        tail = gallery.card.impostor_tail
        gallery.add_embeddings(names, rng.standard_normal((10, 512)).astype(np.float32))
        one_each = gallery.search_threshold()
        assert (one_each.people, one_each.templates) == (10, 10)
        for _ in range(7):  # seven more photos of each of the same ten people
            gallery.add_embeddings(names, rng.standard_normal((10, 512)).astype(np.float32))
        eight_each = gallery.search_threshold()
        assert (eight_each.people, eight_each.templates, len(gallery)) == (10, 80, 80)
        assert eight_each.threshold > one_each.threshold
        assert eight_each.threshold == search_threshold(tail, 80, DEFAULT_SEARCH_FAR).threshold
        assert eight_each.threshold == search_threshold(tail, 10, DEFAULT_SEARCH_FAR, templates=80).threshold
        # Counting people would let a stranger past about eight times as often as asked.
        assert per_search_far(exceedance_at(tail, one_each.threshold), 80) > 5 * DEFAULT_SEARCH_FAR
        assert per_search_far(exceedance_at(tail, eight_each.threshold), 80) == pytest.approx(DEFAULT_SEARCH_FAR,
                                                                                               rel=1e-3)
        info = gallery.info()
        assert (info["people"], info["templates"]) == (10, 80)
        assert info["search_threshold"]["templates"] == 80 and info["threshold"] == eight_each.threshold
        assert "against 10 people (80 photos; chosen for that rate" in eight_each.describe()
        gallery.remove_person("p0")  # removing a person's photos lowers it again
        assert gallery.search_threshold().templates == 72
        assert gallery.search_threshold().threshold < eight_each.threshold


def test_search_threshold_arithmetic() -> None:
    """Per-search and per-comparison rates, and the tail's quantiles and fitted part, are each other's inverse."""
    from facegnet.card import resolve_card
    from facegnet.gallery.search_threshold import (
        exceedance_at,
        per_comparison_far,
        per_search_far,
        search_threshold,
        threshold_at,
    )

    for far, people in [(0.01, 1), (0.01, 1678), (0.05, 10), (1e-4, 10**6)]:
        assert per_search_far(per_comparison_far(far, people), people) == pytest.approx(far, rel=1e-9)
    assert per_comparison_far(0.01, 1678) == pytest.approx(0.01 / 1678, rel=0.01)  # about F / N
    tail = resolve_card(None).impostor_tail
    fit = tail["tail"]
    rates = np.geomspace(0.1, 1e-9, 60)
    thresholds = [threshold_at(tail, p) for p in rates]
    assert all(a < b for a, b in zip(thresholds, thresholds[1:]))  # rarer false accepts: higher thresholds
    for p, t in zip(rates, thresholds):
        assert exceedance_at(tail, t) == pytest.approx(p, rel=1e-6)
    for p, t in tail["quantiles"]:  # the dev quantiles are reproduced where the dev pairs are plentiful
        assert threshold_at(tail, p) == pytest.approx(t, abs=1e-9)
    assert threshold_at(tail, fit["p_u"] * 0.999999) == pytest.approx(fit["u"], abs=1e-6)  # continuous at p_u
    assert search_threshold(tail, 10, 0.01).threshold == pytest.approx(fit["u"], abs=2e-4)  # 10 people: p ~ 1e-3


def test_enroll_skips_bad_photos_with_reasons(tmp_path: Path, recognizer) -> None:
    folder = tmp_path / "in"
    (folder / "Group").mkdir(parents=True)
    big = Image.open(lfw("Tony_Blair", 1)).convert("RGB")
    small = Image.open(lfw("Serena_Williams", 3)).convert("RGB").resize((150, 150))
    group = Image.new("RGB", (400, 250), "gray")
    group.paste(big, (0, 0))
    group.paste(small, (250, 50))
    group.save(folder / "Group" / "two_faces.jpg")
    Image.open(lfw("Colin_Powell", 4)).convert("RGB").resize((80, 80)).save(folder / "Tiny.jpg")
    Image.new("RGB", (200, 200), (120, 120, 120)).save(folder / "Blank.jpg")
    (folder / "Text.jpg").write_text("this is not a photo\n")
    # Turned 90° with no EXIF tag: MTCNN finds a false face scoring 0.955, over enrolment's 0.95 floor.
    Image.open(lfw("Serena_Williams", 1)).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(
        folder / "Sideways.jpg")
    with Gallery(tmp_path / "g", recognizer=recognizer, create=True) as gallery:
        report = gallery.enroll_folder(folder, progress=False)
        by_name = {r.name: r for r in report.results}
        assert by_name["Sideways"].status == "skipped" and "lies on its side" in by_name["Sideways"].reason
        assert by_name["Group"].status == "enrolled" and "2 faces" in by_name["Group"].warning
        template = gallery.templates("Group")[0]
        assert template.box[2] <= 250  # the larger face (the pasted 250 px photo), not the small one
        assert by_name["Tiny"].status == "skipped" and "too small" in by_name["Tiny"].reason
        assert by_name["Blank"].status == "skipped" and by_name["Blank"].reason == "no face found"
        assert by_name["Text"].status == "skipped" and "not an image" in by_name["Text"].reason
        assert "skipped 4" in report.summary()
        assert gallery.people() == [("Group", 1)]
    strict = QualityPolicy(min_face=300)
    with Gallery(tmp_path / "g", recognizer=recognizer, quality=strict) as gallery:
        with pytest.raises(Exception, match="too small"):
            gallery.enroll("X", lfw("Colin_Powell", 5))


def test_remove_and_rebuild(gallery_copy: Path, recognizer) -> None:
    with Gallery(gallery_copy, recognizer=recognizer) as gallery:
        before_ids, before = gallery.store.embeddings()
        epoch = gallery.store.epoch()
        assert gallery.remove_person("Vladimir_Putin") == 2
        tid = gallery.templates("Serena_Williams")[0].id
        assert gallery.remove_template(tid) == "Serena_Williams"
        assert gallery.people() == [("Colin_Powell", 2), ("Serena_Williams", 1)]
        assert gallery.verify_consistency()["consistent"] and len(gallery.index) == 3
        matches = gallery.identify(lfw("Vladimir_Putin", 1), top_k=5, threshold=-1.0)
        assert all(c.name != "Vladimir_Putin" for c in matches[0].candidates)
    # Pretend the gallery was made with other weights: refused until rebuilt.
    with sqlite3.connect(gallery_copy / DB_NAME) as conn:
        conn.execute("UPDATE meta SET value = 'other-weights' WHERE key = 'fingerprint'")
    with pytest.raises(GalleryError, match="other weights"):
        Gallery(gallery_copy, recognizer=recognizer)
    with Gallery(gallery_copy, recognizer=recognizer, check_fingerprint=False) as gallery:
        report = gallery.rebuild(progress=False)
        assert report.reembedded == 3 and not report.dropped
        assert gallery.fingerprint == recognizer.fingerprint and gallery.store.epoch() != epoch
        ids, after = gallery.store.embeddings()
        same = np.isin(before_ids, ids)
        # The same model re-embeds the same faces: the same vectors, from the stored landmarks.
        assert np.allclose(before[same], after, atol=1e-4)
        assert gallery.verify_consistency()["consistent"]
    with Gallery(gallery_copy, recognizer=recognizer) as gallery:  # accepted again
        assert len(gallery) == 3


def test_rebuild_with_missing_source(tmp_path: Path, recognizer) -> None:
    folder = tmp_path / "in" / "Colin_Powell"
    folder.mkdir(parents=True)
    for n in (1, 2):
        shutil.copy(lfw("Colin_Powell", n), folder)
    with Gallery(tmp_path / "g", recognizer=recognizer, create=True) as gallery:
        gallery.enroll_folder(folder.parent, progress=False)
        (folder / "Colin_Powell_0002.jpg").unlink()
        with pytest.raises(GalleryError, match="1 template.*--drop-missing"):
            gallery.rebuild(progress=False)
        assert len(gallery) == 2  # a failed rebuild changes nothing
        report = gallery.rebuild(drop_missing=True, progress=False)
        assert report.reembedded == 1 and "missing" in report.dropped[0][1] and len(gallery) == 1


# ============================================================================================ durability
KILL_SCRIPT = """
import sys
from facegnet.gallery import Gallery
with Gallery(sys.argv[1], create=True) as gallery:
    gallery.enroll_folder(sys.argv[2], progress=False, on_result=lambda r: print(r.status, flush=True))
"""


def test_kill_during_enrolment_leaves_whole_photos(tmp_path: Path, recognizer) -> None:
    folder = tmp_path / "in"
    photos = [lfw(name, n) for name in ("Colin_Powell", "Tony_Blair", "Serena_Williams", "Gerhard_Schroeder")
              for n in (5, 6)]
    for photo in photos:
        (folder / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / photo.parent.name)
    path = tmp_path / "g"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path), str(folder)], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    done, stamps = 0, []
    try:
        while done < 2:  # wait until a couple of photos are in, then kill at a random moment after
            line = proc.stdout.readline()
            assert line, "the enrolment process ended early"
            done += line.startswith("enrolled")
            stamps.append(time.monotonic())
        # Somewhere within the next two photos (six remain): mid-detection, mid-embedding or mid-commit.
        per_photo = stamps[-1] - stamps[-2]
        delay = random.uniform(0.0, 2.0 * per_photo)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"killed {delay:.2f} s after the second photo"
    with sqlite3.connect(path / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Gallery(path, recognizer=recognizer) as gallery:
        count = len(gallery)
        assert 2 <= count <= len(photos)
        check = gallery.verify_consistency()
        assert check["consistent"] and check["index_entries"] == count, check
        templates = gallery.templates()
        assert len({t.sha256 for t in templates}) == count  # one template per whole photo, none partial
        for t in templates:
            assert sha256_file(t.source) == t.sha256 and t.box is not None and t.landmarks is not None
        ids, vectors = gallery.store.embeddings()
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        # Enrolling again completes the folder without duplicates.
        report = gallery.enroll_folder(folder, progress=False)
        assert len(report.existing) == count and len(gallery) == len(photos)
        assert gallery.verify_consistency()["consistent"]


HALF_SCRIPT = """
import sys, time
import numpy as np
from facegnet.gallery import Gallery
gallery = Gallery(sys.argv[1])
with gallery._writer(), gallery.store.write():
    gallery.store.add_template("Half", np.ones(512, np.float32))  # person and template, not committed
    print("inside", flush=True)
    time.sleep(60)
"""


def test_kill_inside_a_commit_rolls_back_and_frees_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "g"
    with Gallery(path, create=True) as gallery:
        gallery.add_embedding("Whole", np.ones(512, np.float32))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", HALF_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "inside"
        with Gallery(path, lock_timeout=0.1) as other:  # readers are not blocked; writers are
            assert other.people() == [("Whole", 1)]
            with pytest.raises(GalleryError, match=f"busy.*pid {proc.pid}"):
                other.add_embedding("Other", np.ones(512, np.float32))
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with Gallery(path, lock_timeout=1.0) as gallery:
        assert gallery.people() == [("Whole", 1)] and gallery.verify_consistency()["consistent"]
        gallery.add_embedding("After", np.ones(512, np.float32))  # the dead writer's lock is gone
        assert len(gallery) == 2


# ============================================================================================ the CLI
def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_identify_json_and_annotate(enrolled: Path, tmp_path: Path, capsys) -> None:
    probe = str(lfw("Vladimir_Putin", 3))
    code, out, err = run_cli(["identify", probe, str(STRANGER), "--gallery", str(enrolled), "--json",
                              "--annotate", str(tmp_path / "ann"), "--top-k", "2"], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["image"] for line in lines] == [probe, str(STRANGER)]
    for line, expected in zip(lines, ["Vladimir_Putin", "unknown"]):
        face = line["faces"][0]
        assert len(face["box"]) == 4 and isinstance(face["similarity"], float)
        assert face["name"] == expected and len(face["candidates"]) == 2
    assert lines[1]["faces"][0]["candidates"][0]["name"] in ENROLLED  # the closest, though below the threshold
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["Aaron_Peirsol_0001.jpg",
                                                                     "Vladimir_Putin_0003.jpg"]
    assert "a stranger is named in 1% of searches against 3 people (6 photos" in err  # the rate in force, on stderr
    code, out, err = run_cli(["identify", probe, "--gallery", str(enrolled), "--threshold", "1.01"], capsys)
    assert code == 0 and "unknown" in out and out.startswith(f"{probe}: 1 face(s)")
    assert "threshold 1.0100: a stranger is named in under 0.001% of searches against 3 people (6 photos; given" \
        in err
    code, out, err = run_cli(["identify", probe, "--gallery", str(enrolled), "--far", "0.02"], capsys)
    assert code == 0 and "Vladimir_Putin" in out and "in 2% of searches" in err
    for bad in (["--far", "2"], ["--far", "0.01", "--threshold", "0.5"]):
        code, out, err = run_cli(["identify", probe, "--gallery", str(enrolled), *bad], capsys)
        assert code != 0 and err.strip().count("\n") == 0 and "--far" in err and not out


def test_cli_bad_inputs_one_line(enrolled: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(["enroll", str(tmp_path / "missing"), "--gallery", str(tmp_path / "g")], capsys)
    assert code != 0 and err.strip().count("\n") == 0 and "folder not found" in err
    text = tmp_path / "fake.jpg"
    text.write_text("not an image")
    blank = tmp_path / "blank.png"
    Image.new("RGB", (160, 160), (90, 90, 90)).save(blank)
    code, out, err = run_cli(["identify", str(text), "--gallery", str(enrolled)], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "fake.jpg" in err and "not an image" in err
    code, out, err = run_cli(["identify", str(blank), "--gallery", str(enrolled), "--json"], capsys)
    assert code == 3 and "no face found" in err and json.loads(out) == {"image": str(blank), "faces": []}
    code, out, err = run_cli(["identify", str(blank), "--gallery", str(tmp_path / "none")], capsys)
    assert code == 5 and "no gallery" in err and err.strip().count("\n") == 0
    code, out, err = run_cli(["gallery", "remove", "Nobody", "--gallery", str(enrolled)], capsys)
    assert code == 5 and "no person named 'Nobody'" in err


def test_cli_gallery_commands(gallery_copy: Path, people: Path, capsys) -> None:
    code, out, err = run_cli(["gallery", "list", "--gallery", str(gallery_copy)], capsys)
    assert code == 0 and out.splitlines() == [f"{name}\t2" for name in ENROLLED]
    code, out, _ = run_cli(["gallery", "info", "--gallery", str(gallery_copy), "--json"], capsys)
    info = json.loads(out)
    assert info["people"] == 3 and info["templates"] == 6 and info["fingerprint_matches"] is True
    in_force = info["search_threshold"]
    assert in_force["far_per_search"] == 0.01 and (in_force["people"], in_force["templates"]) == (3, 6)
    assert info["threshold"] == in_force["threshold"]
    code, out, _ = run_cli(["gallery", "info", "--gallery", str(gallery_copy), "--far", "0.001"], capsys)
    line = next(line for line in out.splitlines() if line.startswith("threshold: "))
    assert code == 0 and "a stranger is named in 0.1% of searches against 3 people" in line
    assert float(line.split()[1].rstrip(":")) > in_force["threshold"]
    code, out, _ = run_cli(["enroll", str(people), "--gallery", str(gallery_copy)], capsys)
    assert code == 0 and "6 already in the gallery" in out
    code, out, _ = run_cli(["gallery", "remove", "Vladimir_Putin", "--gallery", str(gallery_copy)], capsys)
    assert code == 0 and "removed Vladimir_Putin (2 template(s))" in out
    with sqlite3.connect(gallery_copy / DB_NAME) as conn:
        conn.execute("UPDATE meta SET value = 'other-weights' WHERE key = 'fingerprint'")
    code, out, err = run_cli(["identify", str(STRANGER), "--gallery", str(gallery_copy)], capsys)
    assert code == 5 and "other weights" in err and "rebuild" in err and err.strip().count("\n") == 0
    code, out, _ = run_cli(["gallery", "rebuild", "--gallery", str(gallery_copy)], capsys)
    assert code == 0 and out.startswith("re-embedded 4 template(s)")
    code, out, _ = run_cli(["identify", str(lfw("Colin_Powell", 3)), str(STRANGER), "--gallery", str(gallery_copy),
                            "--json"], capsys)
    names = [json.loads(line)["faces"][0]["name"] for line in out.splitlines()]
    assert code == 0 and names == ["Colin_Powell", "unknown"]  # the rebuilt gallery names people again
