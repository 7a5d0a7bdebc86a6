"""The maintenance half of :class:`~facegnet.gallery.Gallery`: removing, renaming and merging people, and
re-embedding every template (``facegnet gallery rebuild``). Mixed into ``Gallery``; every change takes its
writer lock, then its mutex, and is one SQLite transaction.
"""
from __future__ import annotations

import tempfile
import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from facegnet.card import ModelCard
from facegnet.errors import GalleryError
from facegnet.gallery.cache import IndexCache
from facegnet.gallery.folders import clean_name
from facegnet.gallery.index import KINDS
from facegnet.gallery.procedure import procedure_of
from facegnet.gallery.rebuild import reembed
from facegnet.gallery.results import RebuildReport
from facegnet.gallery.store import Store, TemplateRecord

if TYPE_CHECKING:
    from facegnet.recognizer import FaceRecognizer


class Maintenance:
    """Removal, renaming, merging and rebuild for a :class:`~facegnet.gallery.Gallery`."""

    # Provided by Gallery.
    path: Path
    card: ModelCard
    store: Store
    _cache: IndexCache
    _mutex: threading.RLock
    _writer: Callable[..., AbstractContextManager]
    recognizer: FaceRecognizer
    max_side: int | None
    templates: Callable[..., list[TemplateRecord]]

    def remove_person(self, name: str) -> int:
        """Remove a person and all their templates; returns how many templates went."""
        return self.remove_people([name])[name]

    def remove_people(self, names: list[str]) -> dict[str, int]:
        """Remove several people in one transaction (all or none); returns templates removed per name."""
        removed: dict[str, int] = {}
        with self._writer(), self._mutex:
            with self.store.write():
                for name in names:
                    if self.store.person_id(name) is None:
                        raise GalleryError(f"no person named {name!r} in the gallery", self.path)
                    removed[name] = len(self.store.remove_person(name))
                self._bump_removals()
            self._after_removal()
        return removed

    def remove_template(self, template_id: int) -> str:
        """Remove one template (its person too if it was their last); returns the person's name."""
        with self._writer(), self._mutex:
            with self.store.write():
                name = self.store.remove_template(template_id)
                if name is None:
                    raise GalleryError(f"no template with id {template_id} in the gallery", self.path)
                self._bump_removals()
            self._after_removal()
        return name

    def rename_person(self, name: str, new_name: str) -> None:
        """Give a person another name (GalleryError if there is no such person or the new name is taken)."""
        new_name = clean_name(new_name)
        with self._writer(), self._mutex, self.store.write():
            if not self.store.rename_person(name, new_name):
                raise GalleryError(f"no person named {name!r} in the gallery", self.path)

    def merge_people(self, name: str, into: str) -> int:
        """Move every template of ``name`` to ``into`` and remove ``name``; returns the templates moved."""
        if name == into:
            raise GalleryError(f"cannot merge {name!r} into themselves", self.path)
        with self._writer(), self._mutex, self.store.write():
            for who in (name, into):
                if self.store.person_id(who) is None:
                    raise GalleryError(f"no person named {who!r} in the gallery", self.path)
            return self.store.merge_people(name, into)

    def _bump_removals(self) -> None:
        self.store.set_meta("removals", int(self.store.get_meta("removals", "0") or 0) + 1)

    def _after_removal(self) -> None:
        # A removed person must leave the index file too: a cache that still held them would be topped up,
        # not trusted, but biometric data should not outlive its removal on disk.
        if self._cache.loaded or self._cache.has_file():
            self._cache.save()

    def rebuild(
        self,
        *,
        drop_missing: bool = False,
        index: str | None = None,
        progress: bool = True,
    ) -> RebuildReport:
        """Re-embed every template from its stored source photo with the current recogniser.

        Use it after changing weights (the gallery then records the new fingerprint) or to change the
        index kind. The whole rebuild is one transaction: interrupted, the gallery stays as it was.
        Templates whose photo is gone or changed make it fail, unless ``drop_missing`` removes them.
        """
        if index is not None and index != "auto" and index not in KINDS:
            raise GalleryError(f"unknown index kind {index!r} (choose from auto, {', '.join(KINDS)})")
        rec = self.recognizer
        with self._writer():  # no other writer for the whole re-embedding; readers go on meanwhile
            templates = self.templates()
            with tempfile.TemporaryDirectory(prefix="facegnet-rebuild-") as copies:
                # A PostgreSQL gallery keeps the photos servers enrolled: re-embed from copies of them.
                if hasattr(self.store, "photo_copies"):
                    templates = self.store.photo_copies(templates, Path(copies))
                new, dropped = reembed(templates, rec, progress, self.max_side)
            if dropped and not drop_missing:
                first = dropped[0]
                raise GalleryError(
                    f"{len(dropped)} template(s) cannot be re-embedded (first: {first[1]}: {first[2]}); "
                    "restore the photos or rebuild with --drop-missing to remove them",
                    self.path,
                )
            with self._mutex:
                with self.store.write():
                    for template_id, emb in new.items():
                        self.store.set_embedding(template_id, emb)
                    for template_id, _, _ in dropped:
                        self.store.remove_template(template_id)
                    self.store.set_meta("fingerprint", self.card.fingerprint)
                    self.store.set_meta("procedure", procedure_of(rec))
                    self.store.set_meta("model", self.card.name)
                    self.store.set_meta("embedding_size", self.card.embedding_size)
                    self.store.set_meta("epoch", uuid.uuid4().hex)
                    if index is not None:
                        self.store.set_meta("index_kind", index)
                    if dropped:
                        self._bump_removals()
                self._cache.build()
                self._cache.save()
                kind = self._cache.current().kind
        return RebuildReport(len(new), [(s, r) for _, s, r in dropped], self.card.fingerprint, kind,
                             procedure_of(rec))


__all__ = ["Maintenance"]
