"""The gallery's FAISS index kept in step with its SQLite store: the index is only a cache.

The index file records which state of the store it reflects: the store's ``epoch`` (changed when every
embedding is replaced, by a rebuild), its change counter ``generation``, its removal counter and the largest
template id. On use, one cheap query tells whether anything changed since; new templates (ids only grow) are
then fetched and added, removals make it compare id sets, a new epoch rebuilds it from SQLite. A missing,
damaged or stale index file is therefore harmless.

Not thread-safe on its own: the :class:`~facegnet.gallery.Gallery` calls it under its lock.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facegnet.gallery import index as index_module
from facegnet.gallery.index import GalleryIndex, resolve_kind
from facegnet.gallery.store import Store

#: (epoch, generation, removals, largest template id) of the store an index reflects.
State = tuple[str, int, int, int]


class IndexCache:
    """The in-memory index of one store, loaded from ``path`` or built from the store, synced on use."""

    def __init__(self, store: Store, path: Path | None) -> None:
        self.store = store
        self.path = path
        self._index: GalleryIndex | None = None
        self._state: State | None = None
        self.dirty = False  # the in-memory index is ahead of the file

    @property
    def loaded(self) -> bool:
        return self._index is not None

    def has_file(self) -> bool:
        """Is there an index file (a PostgreSQL gallery keeps its index in memory only)?"""
        return self.path is not None and self.path.exists()

    def dim(self) -> int:
        """Embedding size the store records."""
        return int(self.store.get_meta("embedding_size", "512") or 512)

    def current(self) -> GalleryIndex:
        """The index, loaded or built on first use, brought in step with the store, and switched to
        another kind when the gallery outgrew (or shrank out of) its own."""
        if self._index is None:
            self._load()
        self._sync()
        assert self._index is not None
        if self._outdated():
            self.build()
        assert self._index is not None
        return self._index

    def build(self) -> None:
        """Build the index afresh from every embedding in the store."""
        with self.store.read():
            state = self._store_state()
            ids, vectors = self.store.embeddings()
        self._index = GalleryIndex.build(self.dim(), ids, vectors, kind=self._wanted_kind(len(ids)))
        self._state = state
        self.dirty = True

    def save(self) -> None:
        """Write the index file for the store's current state; call holding the gallery's writer lock."""
        index = self.current()
        assert self._state is not None
        epoch, generation, removals, max_id = self._state
        if self.path is None:  # in memory only: every process builds its own from the database
            self.dirty = False
            return
        index.save(self.path, {"epoch": epoch, "generation": generation, "removals": removals, "max_id": max_id})
        self.dirty = False

    def consistency(self) -> dict[str, Any]:
        """Compare SQLite with the index: template ids in each, and whether they agree."""
        held = self.current().ids()
        stored = self.store.template_ids()
        people_without = self.store.people_without_templates()
        return {
            "sqlite_templates": len(stored),
            "index_entries": len(held),
            "consistent": bool(np.array_equal(stored, held)) and people_without == 0,
            "people_without_templates": int(people_without),
            "integrity": self.store.integrity_ok(),
        }

    # ------------------------------------------------------------------------------------------------
    def _wanted_kind(self, count: int) -> str:
        """The index kind this gallery should use at ``count`` templates (what a build would give)."""
        return resolve_kind(self.store.get_meta("index_kind", "auto") or "auto", count)[0]

    def _outdated(self) -> bool:
        """The gallery outgrew (or shrank out of) its index kind, or an IVF index its training."""
        assert self._index is not None
        count = len(self._index)
        wanted = self._wanted_kind(count)
        if wanted != self._index.kind:
            # Hysteresis for ``auto``: a gallery hovering at the size limit does not flip kinds each time.
            auto = (self.store.get_meta("index_kind", "auto") or "auto") == "auto"
            return not (auto and wanted == "flat" and count >= index_module.AUTO_EXACT_MAX // 2)
        trained_on = int(self._index.params.get("trained_on", 0) or 0)
        return self._index.kind in index_module.TRAINED and count > 4 * trained_on

    def _load(self) -> None:
        """Load the index file if it holds this store's embeddings (same epoch); otherwise build from SQLite."""
        if self.path is None:
            self.build()
            return
        try:
            index, header = GalleryIndex.load(self.path)
            if header.get("epoch") == self.store.epoch() and index.dim == self.dim():
                self._index = index
                self._state = (str(header["epoch"]), int(header["generation"]), int(header["removals"]),
                               int(header["max_id"]))
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass  # missing or damaged: it is only a cache
        self.build()

    def _store_state(self) -> State:
        max_id = self.store.max_template_id()
        return (self.store.epoch(), self.store.generation(), int(self.store.get_meta("removals", "0") or 0),
                int(max_id))

    def _sync(self) -> None:
        """Bring the in-memory index in step with SQLite (one cheap query when nothing changed)."""
        assert self._index is not None and self._state is not None
        with self.store.read():
            state = self._store_state()
            if state[:2] == self._state[:2]:
                return
            rebuild = state[0] != self._state[0]  # embeddings replaced wholesale (rebuild)
            if not rebuild:
                if state[2] == self._state[2]:
                    # Nothing removed since our state, and template ids only grow: fetch the newer ones.
                    missing = self.store.template_ids_after(self._state[3])
                    extra = np.zeros(0, np.int64)
                else:
                    stored = self.store.template_ids()
                    held = self._index.ids()
                    missing = np.setdiff1d(stored, held, assume_unique=True)
                    extra = np.setdiff1d(held, stored, assume_unique=True)
                _, vectors = self.store.embeddings(missing)
        if rebuild:
            self.build()
            return
        self._index.remove(extra)
        self._index.add(missing, vectors)
        self._state = state
        self.dirty = True


__all__ = ["IndexCache", "State"]
