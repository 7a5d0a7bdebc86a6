"""The README's Python examples run, as written, and say what the README says they do.

Every ```python block of README.md is executed in order, in one namespace (a later block may use ``rec`` from an
earlier one, as a reader following the README would), with a temporary folder as the working directory. That
folder holds what the examples name: ``facegnet/assets/`` (the bundled sample photos, copied from the package) and
``people/`` (a few LFW people, one sub-folder each, for ``Gallery.enroll_folder``), and ``$FACEGNET_GALLERY``
points into it, so the per-user gallery the examples open is a fresh one there.

A block that must not run here (one that needs a camera, a server or hours) is marked by the HTML comment
``<!-- readme: no-test -->`` on the line just before its opening fence (GitHub renders nothing for it); a marked
block must still compile. The README's tables are checked too: the comparison quotes the results files, the
changelog starts with the shipped weights, and every relative link names a file of the checkout.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil

import numpy as np
import pytest
from conftest import ROOT, lfw_photo

README = ROOT / "README.md"
NO_TEST = "<!-- readme: no-test -->"
#: The README is a user's document; the other documents hold the rest.
MAX_LINES = 300
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, code, runs) of every ```python block, in order."""
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").splitlines()
        marked = bool(before) and before[-1].strip() == NO_TEST
        blocks.append((text.count("\n", 0, match.start()) + 1, match.group(1), not marked))
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_marked_blocks_are_not_run():
    text = "Run:\n\n```python\nx = 1\n```\n\n" + NO_TEST + "\n```python\nopen_camera()\n```\n"
    assert [(code, runs) for _, code, runs in python_blocks(text)] == [("x = 1\n", True), ("open_camera()\n", False)]


def test_document_links_resolve():
    """Every relative link of the README, the changelog and docs/ names a file or folder of the checkout."""
    missing = []
    for document in [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(document.read_text(encoding="utf-8")):
            if not re.match(r"[a-z]+:", target) and not (document.parent / target).exists():
                missing.append(f"{document.relative_to(ROOT)} -> {target}")
    assert not missing, "links to nothing: " + ", ".join(missing)


def test_readme_is_a_users_document():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; keep it to {MAX_LINES}"
    assert len(BLOCKS) >= 3, "the README's Python API examples are missing"
    for line, code, _ in BLOCKS:
        compile(code, f"README.md:{line}", "exec")  # marked blocks too


def test_readme_imports_are_public_names():
    """Every name the README imports from ``facegnet`` is in ``facegnet.__all__`` and resolves."""
    import facegnet

    imported = set()
    for _, code, _ in BLOCKS:
        for names in re.findall(r"^from facegnet import (.+)$", code, re.MULTILINE):
            imported |= {name.strip() for name in names.split(",")}
    assert {"FaceRecognizer", "Gallery", "Detector", "OnnxEmbedder"} <= imported
    for name in sorted(imported):
        assert name in facegnet.__all__, f"README imports {name} from facegnet, which does not export it"
        assert getattr(facegnet, name) is not None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    assets = folder / "facegnet" / "assets"
    assets.mkdir(parents=True)
    for photo in (ROOT / "facegnet" / "assets").glob("*.jpg"):
        shutil.copy(photo, assets / photo.name)
    for name in ("Aaron_Peirsol", "Serena_Williams"):
        person = folder / "people" / name.replace("_", " ")
        person.mkdir(parents=True)
        shutil.copy(lfw_photo(name, 3), person / "1.jpg")
    return folder


def test_readme_python_examples_run(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("FACEGNET_GALLERY", str(workdir / "default-gallery"))
    namespace: dict = {"__name__": "readme"}
    printed = io.StringIO()
    ran = 0
    for line, code, runs in BLOCKS:
        if not runs:
            continue
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102 - the README's own code
        ran += 1
    assert ran >= 3
    out = printed.getvalue()

    # What the examples claim, checked on what they computed.
    result = namespace["result"]
    assert result.same and result.similarity >= result.threshold  # two photos of Colin Powell
    assert namespace["vectors"].shape == (len(namespace["faces"]), 512)
    assert np.allclose(np.linalg.norm(namespace["vectors"], axis=1), 1.0, atol=1e-4)
    assert namespace["rec"].procedure.endswith(":flip:fp32")
    assert "missing.jpg False" in out and "missing.jpg" in out.split("missing.jpg False", 1)[1]
    report = namespace["report"]
    assert len(report.enrolled) == 2 and not report.skipped
    match = namespace["match"]
    assert match.name == "Colin Powell" and match.similarity >= match.threshold
    assert (workdir / "default-gallery" / "gallery.sqlite").is_file()  # the per-user gallery ($FACEGNET_GALLERY)
    exact, fast = namespace["exact"], namespace["fast"]
    assert exact.shape == fast.shape == (len(namespace["crops"]), 512)
    assert float((exact * fast).sum(axis=1).min()) >= 0.9999
    last = out.strip().splitlines()[-1]  # the ImageError's one line
    assert "missing.jpg" in last and "Traceback" not in out, last


def _row(label: str) -> list[str]:
    """The cells of the README table row whose first cell starts with ``label``."""
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(label):
            return cells
    raise AssertionError(f"README has no table row starting {label!r}")


def _numbers(cell: str) -> list[float]:
    return [float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*\.?\d*", cell)]


def test_how_it_compares_quotes_the_results_files():
    """The comparison table's figures are those in benchmarks/results, so a re-measurement cannot leave it stale."""
    results = ROOT / "benchmarks" / "results"
    lfw = json.loads((results / "lfw_eval.json").read_text())
    assert _numbers(_row("LFW 10-fold accuracy")[1])[-2:] == [round(lfw["accuracy"] * 100, 2),
                                                               round(lfw["accuracy_std"] * 100, 2)]
    assert _numbers(_row("LFW TAR @ FAR 1e-3")[1])[0] == round(lfw["tar@far=0.001"] * 100, 1)

    peer = json.loads((results / "lfw_peer.json").read_text())
    assert _numbers(_row("LFW 10-fold accuracy")[2]) == [round(peer["accuracy"] * 100, 2),
                                                          round(peer["accuracy_std"] * 100, 2)]
    assert _numbers(_row("LFW TAR @ FAR 1e-3")[2]) == [round(peer["tar@far=0.001"] * 100, 1)]

    sets = json.loads((results / "photo_speed.json").read_text())["results"]["1 thread(s)"]["sets"]
    for label, name in (("per photo, LFW 250×250", "LFW 250×250"), ("per photo, 640×480", "640×480, 3 faces"),
                        ("per photo, 1920×1080", "1920×1080, 5 faces")):
        tools = sets[name]
        ours = next(v for k, v in tools.items() if k.startswith("facegnet (default"))
        peer = next(v for k, v in tools.items() if k.startswith("face_recognition"))
        cells = _row(label)
        assert _numbers(cells[1]) == [ours["ms_per_photo_mean"], ours["time_vs_face_recognition"]], label
        assert _numbers(cells[2]) == [peer["ms_per_photo_mean"]], label

    folder = json.loads((results / "folder_speed.json").read_text())["folder"]
    cells = _row("folder enrolment")
    assert _numbers(cells[1]) == [folder["facegnet_enroll_photos_per_s"],
                                  folder["ratio_enroll_over_face_recognition"]]
    assert _numbers(cells[2]) == [folder["face_recognition_cli_photos_per_s"]]


def test_changelog_starts_with_the_shipped_weights():
    card = json.loads((ROOT / "facegnet" / "weights" / "facegnet-default.json").read_text())
    rows = [line for line in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
            if re.match(r"\| `[0-9a-f]{12}…`", line)]
    assert rows and rows[0].startswith(f"| `{card['sha256'][:12]}…`"), "CHANGELOG.md's first row is not the shipped model"
    assert len({row.split("`")[1] for row in rows}) == len(rows)  # one row per model
