"""Re-embedding stored templates from their source photos (``facegnet gallery rebuild``).

Each template keeps its photo's path, sha256, box and landmarks, so a rebuild re-aligns exactly the enrolled
face without detecting again; a photo that is gone or whose bytes changed cannot be re-embedded. A photo larger
than ``max_side`` is decoded reduced, as enrolment decodes it, the stored face scaled to those pixels.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facegnet.card import sha256_file
from facegnet.errors import FacegnetError, ImageError, NoFaceError
from facegnet.gallery.store import TemplateRecord

if TYPE_CHECKING:
    from facegnet.detection.detector import Face
    from facegnet.recognizer import FaceRecognizer

#: (template id, source, reason) of a template that could not be re-embedded.
Dropped = tuple[int, str, str]


def reembed(templates: list[TemplateRecord], recognizer: FaceRecognizer, progress: bool = True,
            max_side: int | None = None) -> tuple[dict[int, np.ndarray], list[Dropped]]:
    """New embeddings by template id, and the templates that could not be re-embedded (with why)."""
    from tqdm import tqdm

    from facegnet.io import load_image_reduced

    by_source: dict[str | None, list[TemplateRecord]] = {}
    for t in templates:
        by_source.setdefault(t.source, []).append(t)
    new: dict[int, np.ndarray] = {}
    dropped: list[Dropped] = []
    bar = tqdm(by_source.items(), desc="re-embedding", unit="photo", disable=not progress, dynamic_ncols=True)
    for source, group in bar:
        try:
            if source is None:
                raise ImageError("no source photo recorded")
            path = Path(source)
            if not path.is_file():
                raise ImageError("source photo missing", path)
            sha = sha256_file(path)
            decoded = load_image_reduced(path, max_side)
            faces = [stored_face(t, decoded.array, recognizer, decoded.scale) for t in group]
            embeddings = recognizer.embed_faces(decoded.array, faces)
        except FacegnetError as exc:
            dropped += [(t.id, str(source), exc.reason) for t in group]
            continue
        for t, emb in zip(group, embeddings):
            if t.sha256 is not None and t.sha256 != sha:
                # The file changed since enrolment: a different photo now sits at that path.
                dropped.append((t.id, str(source), "source photo changed since enrolment"))
            else:
                new[t.id] = emb
    bar.close()
    return new, dropped


def stored_face(template: TemplateRecord, array: np.ndarray, recognizer: FaceRecognizer,
                scale: tuple[float, float] = (1.0, 1.0)) -> Face:
    """The enrolled face on ``array``: from its stored landmarks, or re-detected (best overlap with the stored
    box). ``scale`` maps ``array``'s coordinates to the photo's own, in which templates are stored."""
    import torch
    from torchvision.ops import box_iou

    from facegnet.detection.detector import Face

    sx, sy = scale
    box = None if template.box is None else np.asarray(template.box, np.float32) / np.float32([sx, sy, sx, sy])
    if template.landmarks is not None and box is not None:
        landmarks = np.asarray(template.landmarks, np.float32) / np.float32([sx, sy])
        return Face(box, float(template.score or 1.0), landmarks)
    faces = recognizer.detect(array)
    if not faces:
        raise NoFaceError("no face found on re-detection")
    if box is None:
        return faces[0]
    overlaps = box_iou(torch.tensor(np.stack([f.box for f in faces]), dtype=torch.float32),
                       torch.tensor(box[None], dtype=torch.float32))[:, 0]
    return faces[int(torch.argmax(overlaps))]


__all__ = ["reembed", "stored_face", "Dropped"]
