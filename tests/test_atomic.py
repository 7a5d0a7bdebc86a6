"""The one atomic-write rule: a failed write leaves the old file and no temporary file behind."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from facegnet.atomic import atomic_path, write_bytes, write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "index.bin"
    write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.bin"]


def test_a_finished_write_replaces_the_file_with_the_asked_permissions(tmp_path: Path) -> None:
    target = tmp_path / "card.json"
    write_text(target, "{}", mode=0o644)
    assert target.read_text() == "{}" and stat.S_IMODE(target.stat().st_mode) == 0o644
    write_text(target, "{\"a\": 1}")  # biometric by default: owner only
    assert target.read_text() == "{\"a\": 1}" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]
