"""What the gallery answers: enrolment results and reports, candidates and identifications, rebuild reports.

Plain dataclasses without behaviour beyond summaries and JSON-ready dictionaries, so that the CLI, the live
loop and the server can share them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from facegnet.align import rounded_share

if TYPE_CHECKING:
    from facegnet.detection.detector import Face

#: The name given to a face that matches no enrolled person (and therefore a name no person may have).
UNKNOWN = "unknown"


@dataclass
class EnrollResult:
    """What happened to one photo: ``enrolled``, ``exists`` (already in the gallery) or ``skipped``."""

    source: str
    name: str
    status: str
    reason: str = ""
    template_id: int | None = None
    faces: int = 0
    warning: str | None = None
    exit_code: int = 0  # of the error that made it skipped (see facegnet.errors)
    outside: float | None = None  # share of the enrolled face's aligned crop outside the photo (Face.outside)


@dataclass
class EnrollReport:
    """All results of one :meth:`Gallery.enroll_folder` run."""

    results: list[EnrollResult] = field(default_factory=list)

    def _with(self, status: str) -> list[EnrollResult]:
        return [r for r in self.results if r.status == status]

    @property
    def enrolled(self) -> list[EnrollResult]:
        return self._with("enrolled")

    @property
    def existing(self) -> list[EnrollResult]:
        return self._with("exists")

    @property
    def skipped(self) -> list[EnrollResult]:
        return self._with("skipped")

    def skip_reasons(self) -> dict[str, int]:
        """How many photos were skipped for each kind of reason (numbers stripped)."""
        counts: dict[str, int] = {}
        for result in self.skipped:
            kind = result.reason.split(" (")[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def summary(self) -> str:
        """One line: enrolled photos and people, photos already there, skipped photos by reason."""
        people = len({r.name for r in self.enrolled})
        parts = [f"enrolled {len(self.enrolled)} photo(s) of {people} person(s)"]
        if self.existing:
            parts.append(f"{len(self.existing)} already in the gallery")
        if self.skipped:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skip_reasons().items()))
            parts.append(f"skipped {len(self.skipped)} ({reasons})")
        return "; ".join(parts)


@dataclass
class Candidate:
    """A person the gallery offers for a face."""

    name: str
    similarity: float
    template_id: int  # the best-matching template of this person


@dataclass
class Identification:
    """The answer for one face: the best person if at or above the threshold, else ``unknown``."""

    name: str
    similarity: float  # of the best candidate, known or not
    threshold: float
    candidates: list[Candidate]
    face: Face | None = None

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN

    def in_photo(self, scale: tuple[float, float]) -> "Identification":
        """The same answer, its face in the photo's own pixels: ``scale`` maps the pixels the face was found on to
        them (:attr:`facegnet.io.Decoded.scale` of a photo decoded reduced)."""
        if self.face is None or tuple(scale) == (1.0, 1.0):
            return self
        return replace(self, face=self.face.scaled(*scale))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: box and score (when a face is attached), name, similarity, candidates."""
        out: dict[str, Any] = {}
        if self.face is not None:
            out["box"] = [round(float(v), 1) for v in self.face.box]
            out["score"] = round(float(self.face.score), 4)
            if self.face.outside is not None:  # share of its aligned crop outside the photo (TIGHT_CROP)
                out["outside"] = rounded_share(self.face.outside)
        out["name"] = self.name
        out["similarity"] = round(float(self.similarity), 4)
        out["candidates"] = [{"name": c.name, "similarity": round(float(c.similarity), 4)} for c in self.candidates]
        return out


@dataclass
class RebuildReport:
    """What :meth:`Gallery.rebuild` did."""

    reembedded: int
    dropped: list[tuple[str, str]]  # (source, reason) of templates that could not be re-embedded
    fingerprint: str
    index_kind: str
    procedure: str = ""  # the embedding procedure the gallery now records


__all__ = ["UNKNOWN", "EnrollResult", "EnrollReport", "Candidate", "Identification", "RebuildReport"]
