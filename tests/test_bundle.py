"""Training bundles: zip shards of a pack and a prepare folder, unpacked and read back by the trainer's loaders."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegnet.train import bundle
from facegnet.train import datasets as D

PACK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"
pytestmark = pytest.mark.skipif(not (PACK / "manifest.csv").exists(), reason="shared training pack not present")


def _mini_pack(dest: Path, n: int = 30) -> list[dict]:
    """The pack's first ``n`` faces with their teacher rows and the dev pairs among them."""
    rows = D.read_manifest(PACK)[:n]
    (dest / "crops").mkdir(parents=True)
    for row in rows:
        shutil.copy(PACK / row["crop"], dest / row["crop"])
    with open(dest / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    np.save(dest / "teacher_dlib.npy", np.load(PACK / "teacher_dlib.npy")[:n])
    crops = [r["crop"] for r in rows]
    (dest / "dev_pairs.csv").write_text(f"a,b,same\n{crops[0]},{crops[1]},1\n{crops[2]},{crops[5]},0\n")
    (dest / "notes.bin").write_bytes(b"not part of a pack")
    return rows


def _mini_prepared(dest: Path, rows: list[dict]) -> None:
    """A ``facegnet prepare``-style folder: lossless PNG crops of two people and a loose face."""
    lines = ["crop,person,source,face,score,box"]
    for k, row in enumerate(rows[:5]):
        person = "ann" if k < 2 else ("bob" if k < 4 else "")
        folder = dest / (person or "_unlabelled")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{folder.name}/p{k}.png"
        Image.open(PACK / row["crop"]).convert("RGB").save(dest / name)
        lines.append(f"{name},{person},{k}.jpg,0,0.99,0 0 10 10")
    (dest / "manifest.csv").write_text("\n".join(lines) + "\n")


def test_pack_then_unpack_gives_the_same_training_data(tmp_path: Path) -> None:
    rows = _mini_pack(tmp_path / "pack")
    _mini_prepared(tmp_path / "extra", rows)
    index = bundle.pack({"pack": tmp_path / "pack", "extra": tmp_path / "extra"}, tmp_path / "carry",
                        quality=90, max_mib=0.03)
    shards = sorted((tmp_path / "carry").glob("faces-*.zip"))
    assert len(shards) == len(index["shards"]) >= 2  # 30 pack crops of ~2 kB do not fit one 31 kB shard
    assert all(s.stat().st_size <= 0.03 * 2**20 for s in shards)
    assert index["sources"]["pack"]["crops"] == 30 and index["sources"]["extra"]["crops"] == 5

    counts = bundle.unpack(tmp_path / "carry", tmp_path / "out")
    assert counts == {"pack": 30 + 3, "extra": 5 + 1}  # crops + manifest, pairs, teacher / crops + manifest
    assert not (tmp_path / "out" / "pack" / "notes.bin").exists()
    # its crops already WebP, the pack's manifest travels byte for byte (stored view targets name it by sha256)
    assert (tmp_path / "out" / "pack" / "manifest.csv").read_bytes() == (tmp_path / "pack" / "manifest.csv").read_bytes()

    before, after = D.load_pack(tmp_path / "pack", "train"), D.load_pack(tmp_path / "out" / "pack", "train")
    assert np.array_equal(before.images, after.images)  # WebP crops travel byte for byte
    assert np.array_equal(before.labels, after.labels) and np.array_equal(before.teacher, after.teacher)
    pairs = D.read_pairs(tmp_path / "out" / "pack" / "dev_pairs.csv")
    assert [(a, b) for a, b, _ in pairs] == [(rows[0]["crop"], rows[1]["crop"]), (rows[2]["crop"], rows[5]["crop"])]

    before, after = D.load_prepared(tmp_path / "extra"), D.load_prepared(tmp_path / "out" / "extra")
    assert after.paths == [p.replace(".png", ".webp") for p in before.paths]
    assert np.array_equal(before.labels, after.labels) and after.identities == ["ann", "bob"]
    error = np.abs(before.images.astype(int) - after.images.astype(int)).mean()
    assert 0 < error < 4  # re-encoded lossily, but the same faces


def test_bad_sources_and_shards_are_one_line_errors(tmp_path: Path, capsys) -> None:
    assert bundle.main(["pack", "--source", f"x={tmp_path / 'missing'}", "--out", str(tmp_path / "c")]) != 0
    assert bundle.main(["pack", "--source", "nonsense", "--out", str(tmp_path / "c")]) != 0
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "faces-000.zip").write_bytes(b"PK cut short")
    assert bundle.main(["unpack", str(tmp_path / "shards"), str(tmp_path / "dest")]) != 0
    (tmp_path / "a_file").write_text("x")  # a destination that cannot be a folder
    assert bundle.main(["unpack", str(tmp_path / "shards"), str(tmp_path / "a_file" / "dest")]) != 0
    rows = _mini_pack(tmp_path / "pack", 6)
    (tmp_path / "pack" / rows[1]["crop"]).unlink()  # the manifest lists a crop that is gone
    assert bundle.main(["pack", "--source", f"p={tmp_path / 'pack'}", "--out", str(tmp_path / "c")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("facegnet: error:") for line in err)
    assert "missing" in err[0] and "NAME=FOLDER" in err[1] and "faces-000.zip" in err[2]
    assert "destination" in err[3] and rows[1]["crop"] in err[4] and "missing" in err[4]
