"""Where a gallery lives by default: the user's data directory, never the working directory or the source
tree (embeddings are biometric data); ``--gallery DIR`` and ``$FACEGNET_GALLERY`` choose another."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from facegnet.cli import main
from facegnet.gallery import Gallery, default_gallery_dir

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "data" / "lfw" / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg"


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME and working directory, without FACEGNET_GALLERY or XDG_DATA_HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FACEGNET_GALLERY", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


def test_default_gallery_dir_follows_xdg_and_the_environment(home: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_gallery_dir() == home / ".local" / "share" / "facegnet" / "gallery"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_gallery_dir() == tmp_path / "data" / "facegnet" / "gallery"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # invalid by the XDG specification: ignored
    assert default_gallery_dir() == home / ".local" / "share" / "facegnet" / "gallery"
    monkeypatch.setenv("FACEGNET_GALLERY", "~/galleries/office")
    assert default_gallery_dir() == home / "galleries" / "office"
    import facegnet.gallery

    assert facegnet.gallery.DEFAULT_GALLERY == home / "galleries" / "office"  # read when asked for


def test_gallery_without_a_path_uses_the_per_user_directory(home: Path) -> None:
    with Gallery(create=True) as gallery:
        gallery.add_embedding("a", np.ones(512, np.float32))
        assert gallery.path == home / ".local" / "share" / "facegnet" / "gallery"
    assert not Path("gallery").exists()  # nothing in the working directory
    assert (home / ".local" / "share" / "facegnet" / "gallery" / "gallery.sqlite").is_file()
    assert (home / ".local" / "share" / "facegnet" / "gallery").stat().st_mode & 0o077 == 0  # owner-only


@pytest.mark.skipif(not PHOTO.is_file(), reason="LFW photos not found at ../shared/data/lfw")
def test_cli_default_env_and_option(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys) -> None:
    people = tmp_path / "people" / "Colin_Powell"
    people.mkdir(parents=True)
    shutil.copy(PHOTO, people)
    default = home / ".local" / "share" / "facegnet" / "gallery"
    assert main(["enroll", str(people.parent), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert str(default) in out and not Path("gallery").exists()
    assert main(["gallery", "list"]) == 0 and capsys.readouterr().out.splitlines() == ["Colin_Powell\t1"]
    # $FACEGNET_GALLERY names another gallery (none there yet), and --gallery wins over it.
    monkeypatch.setenv("FACEGNET_GALLERY", str(tmp_path / "elsewhere"))
    assert main(["gallery", "list"]) == 5
    assert "elsewhere" in capsys.readouterr().err
    assert main(["gallery", "list", "--gallery", str(default)]) == 0
    assert capsys.readouterr().out.splitlines() == ["Colin_Powell\t1"]
