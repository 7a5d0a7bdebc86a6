"""Keep the benchmark's people out of labelled training data: screen each identity by name and by face.

LFW is evaluation only, so a labelled source's identity that is an LFW person must never be trained on. Names
alone do not find them: other collections spell names their own way (IMFDB's ``SalmanKhan`` is LFW's
``Salman_Khan``, its ``Ranimukherji`` is LFW's ``Rani_Mukherjee``). Two screens, each enough to refuse:

- **By name.** CamelCase and punctuation are split into words, case and diacritics folded, and the words compared
  with LFW's names (``images/`` folders and ``people.txt``) with the spaces removed, in order and sorted (so a
  family name given first still matches).
- **By face.** The mean online-teacher embedding of an identity's faces is compared (cosine) with each LFW
  person's mean teacher embedding; above the threshold the identity is refused. The threshold comes from the
  teacher's own statistics on the training pack's dev split, never from LFW: the highest cosine between a dev
  identity's mean and a single face of another dev identity (:func:`dev_threshold`). LFW's photos are used only
  to screen training data out, never to tune or select a model.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facegnet.errors import DataError

#: A batch of uint8 (N, 112, 112, 3) aligned crops → L2-normalised (N, D) float32 teacher embeddings.
Embed = Callable[[np.ndarray], np.ndarray]

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def name_words(name: str) -> list[str]:
    """The folded words of a name: ``"SalmanKhan"`` → ``["salman", "khan"]``, ``"Dr.Rajkumar"`` → ``["dr",
    "rajkumar"]``, ``"José_Prakash"`` → ``["jose", "prakash"]``."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = _CAMEL.sub(" ", text)
    return [w for w in re.split(r"[^0-9a-z]+", text.casefold()) if w]


def name_keys(name: str) -> set[str]:
    """The forms two names are compared in: the words joined in order and joined sorted."""
    words = name_words(name)
    return {"".join(words), "".join(sorted(words))} if words else set()


def lfw_people(lfw_root: str | Path) -> list[str]:
    """LFW's people as its folders spell them (``images/<Name>/`` plus the names of ``people.txt``)."""
    root = Path(lfw_root)
    folder = root / "images"
    if not folder.is_dir():
        raise DataError("no images/ folder (expected LFW's layout: images/<Name>/<Name>_NNNN.jpg)", root)
    people = {p.name for p in folder.iterdir() if p.is_dir()}
    listed = root / "people.txt"
    if listed.exists():
        for line in listed.read_text(encoding="utf-8", errors="replace").splitlines():
            name = line.split("\t")[0].strip()
            if name and not name.isdigit():
                people.add(name)
    return sorted(people)


class NameScreen:
    """Finds the LFW name (if any) that an identity's name folds to."""

    def __init__(self, names: Iterable[str]) -> None:
        self._by_key: dict[str, str] = {}
        for name in names:
            for key in name_keys(name):
                self._by_key.setdefault(key, name)

    def match(self, name: str) -> str | None:
        """The LFW name ``name`` matches once folded, or None."""
        return next((self._by_key[k] for k in sorted(name_keys(name)) if k in self._by_key), None)


# --------------------------------------------------------------------------------------------------- by face
def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class Threshold:
    """The face screen's threshold and the dev statistics it was chosen from."""

    value: float
    rule: str
    dev_identities: int
    dev_faces: int
    impostor_comparisons: int
    genuine_above: float  # fraction of dev genuine comparisons (identity mean vs one of its faces) above ``value``

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def dev_threshold(embeddings: np.ndarray, labels: np.ndarray) -> Threshold:
    """The face screen's threshold from the teacher's embeddings of the dev split's faces.

    Each identity's mean (leaving the compared face out for its own faces) is compared with every single dev face:
    a face of another identity is an impostor comparison, one of its own a genuine one. The threshold is the
    highest impostor cosine: nothing two different dev people reach. A single face is the hardest case; an LFW
    person's mean over several photos is compared in practice.
    """
    x = unit(embeddings)
    labels = np.asarray(labels)
    ids = np.unique(labels[labels >= 0])
    if len(ids) < 2:
        raise DataError("the face screen's threshold needs at least two dev identities")
    sums = np.stack([x[labels == i].sum(0) for i in ids])
    counts = np.array([(labels == i).sum() for i in ids])
    impostor_max, genuine = -1.0, []
    for row, i in enumerate(ids):
        own = labels == i
        scores = x @ unit(sums[row])
        impostor_max = max(impostor_max, float(scores[~own & (labels >= 0)].max()))
        if counts[row] > 1:  # leave-one-out mean against each own face
            genuine.extend(np.einsum("ij,ij->i", x[own], unit(sums[row] - x[own])).tolist())
    genuine = np.array(genuine)
    return Threshold(
        value=impostor_max,
        rule="highest cosine between a dev identity's mean teacher embedding and one face of another dev identity",
        dev_identities=len(ids),
        dev_faces=int((labels >= 0).sum()),
        impostor_comparisons=int(sum(int(((labels >= 0) & (labels != i)).sum()) for i in ids)),
        genuine_above=float((genuine > impostor_max).mean()) if len(genuine) else 0.0,
    )


def embed_in_batches(embed: Embed, images: np.ndarray, batch: int = 128) -> np.ndarray:
    """Teacher embeddings of many uint8 crops, ``batch`` at a time."""
    if not len(images):
        return np.zeros((0, 0), np.float32)
    return np.concatenate([embed(images[i : i + batch]) for i in range(0, len(images), batch)])


def teacher_embedder(teacher) -> Embed:
    """An :data:`Embed` over an :class:`facegnet.train.teacher.OnlineTeacher`."""
    import torch

    from facegnet.train.datasets import to_input

    def embed(images: np.ndarray) -> np.ndarray:
        return teacher(to_input(torch.from_numpy(np.ascontiguousarray(images)))).float().cpu().numpy()

    return embed


@dataclass
class PeopleMeans:
    """Each person's mean teacher embedding (unit length) and how many faces it averages."""

    names: list[str]
    means: np.ndarray
    counts: np.ndarray

    def nearest(self, mean: np.ndarray) -> tuple[str, float]:
        """The person whose mean is nearest ``mean`` (cosine) and that cosine."""
        scores = self.means @ unit(mean)
        best = int(np.argmax(scores))
        return self.names[best], float(scores[best])

    def save(self, path: str | Path, **meta: str) -> None:
        np.savez(path, names=np.array(self.names), means=self.means, counts=self.counts,
                 **{k: np.array(v) for k, v in meta.items()})

    @classmethod
    def load(cls, path: str | Path, **meta: str) -> PeopleMeans | None:
        """The means saved at ``path`` if they carry the same ``meta`` (teacher, folder), else None."""
        try:
            data = np.load(path)
        except (OSError, ValueError):
            return None
        if any(k not in data or str(data[k]) != v for k, v in meta.items()):
            return None
        return cls([str(n) for n in data["names"]], data["means"].astype(np.float32), data["counts"])


def people_means(embeddings: np.ndarray, people: list[str]) -> PeopleMeans:
    """Group embeddings by person into :class:`PeopleMeans` (people in sorted order)."""
    names = sorted(set(people))
    where = {n: i for i, n in enumerate(names)}
    index = np.array([where[p] for p in people])
    sums = np.zeros((len(names), embeddings.shape[1]), np.float64)
    np.add.at(sums, index, unit(embeddings))
    return PeopleMeans(names, unit(sums), np.bincount(index, minlength=len(names)))


def lfw_means(lfw_root: str | Path, embed: Embed, detection_cache: str | Path | None = None,
              people: Iterable[str] | None = None, progress: bool = False) -> PeopleMeans:
    """Each LFW person's mean teacher embedding over their photos (``people`` limits whose).

    Faces are found as ``facegnet eval lfw`` finds them (MTCNN, the face nearest the centre, the central crop
    where none is found) and aligned onto the template; ``detection_cache`` is the same SQLite cache that
    ``facegnet eval lfw --detection-cache`` keeps, so the photos are detected once.
    """
    from facegnet.align import align_face, central_landmarks
    from facegnet.detection.cache import DetectionCache
    from facegnet.detection.detector import Detector
    from facegnet.evaluation.lfw import list_images
    from facegnet.io import load_image

    paths, owners = list_images(lfw_root)
    if people is not None:
        wanted = set(people)
        kept = [(p, o) for p, o in zip(paths, owners) if o in wanted]
        paths, owners = [p for p, _ in kept], [o for _, o in kept]
    if not paths:
        raise DataError("no LFW photos to screen against", lfw_root)
    detector = Detector(min_face_size=40)  # the recognizer's search floor: the same cache entries
    cache = DetectionCache(detection_cache, detector) if detection_cache else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="photo", desc="LFW people")
    chunks = []
    try:
        for start in range(0, len(paths), 128):
            batch = paths[start : start + 128]
            images = [load_image(p) for p in batch]
            keys = [cache.key(p) for p in batch] if cache else [None] * len(batch)
            known = cache.get_many(keys) if cache else {}
            todo = [i for i, k in enumerate(keys) if k not in known]
            found = dict(zip(todo, detector.detect_batch([images[i] for i in todo]) if todo else []))
            if cache:
                cache.put_many((keys[i], found[i]) for i in todo)
            crops = []
            for i, image in enumerate(images):
                faces = found[i] if i in found else known[keys[i]]
                centre = np.array([image.shape[1] / 2, image.shape[0] / 2])
                face = min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)),
                           default=None)
                points = face.landmarks if face is not None else central_landmarks(*image.shape[:2])
                crops.append(align_face(image, points))
            chunks.append(embed(np.stack(crops)))
            if bar is not None:
                bar.update(len(batch))
    finally:
        if cache:
            cache.close()
        if bar is not None:
            bar.close()
    return people_means(np.concatenate(chunks), owners)


@dataclass(frozen=True)
class Refusal:
    """An identity kept out of training, and why."""

    identity: str
    reason: str  # "name" or "face"
    lfw_name: str
    similarity: float | None = None  # the face screen's cosine (None for a name match)

    def line(self) -> str:
        if self.reason == "name":
            return f"{self.identity}: refused, its name matches LFW's {self.lfw_name}"
        return f"{self.identity}: refused, its faces match LFW's {self.lfw_name} (cosine {self.similarity:.3f})"


def face_screen(identity_means: PeopleMeans, lfw: PeopleMeans, threshold: float) -> dict[str, Refusal]:
    """The identities whose mean is above ``threshold`` against some LFW person's mean."""
    refused = {}
    for name, mean in zip(identity_means.names, identity_means.means):
        match, score = lfw.nearest(mean)
        if score > threshold:
            refused[name] = Refusal(name, "face", match, round(score, 4))
    return refused
