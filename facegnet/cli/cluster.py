"""``facegnet cluster PHOTOS/``: group the faces of unsorted photos by person."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facegnet.cli.common import (
    add_database_option,
    add_max_side_option,
    add_model_options,
    database_of,
    make_recognizer,
    max_side_of,
    untrained_warning,
    warn,
)
from facegnet.detection.quality import tight_notes
from facegnet.errors import FacegnetError

if TYPE_CHECKING:
    from facegnet.cluster import FoundFace


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cluster",
        help="group the faces of unsorted photos by person",
        description="Find every face of every photo under PHOTOS (recursively), embed it, and group the faces "
        "of the same person. Prints the groups, largest first; --out writes them as JSON. With --gallery DIR or "
        "--database URL (or $FACEGNET_DATABASE) the groups are also saved in that gallery as a cluster job, which "
        "the page of every server of the gallery shows to name, merge or dismiss.",
    )
    parser.add_argument("photos", metavar="PHOTOS", help="a folder of photos")
    parser.add_argument("--out", metavar="JSON", help="write the groups here (groups.json; with --gallery or "
                        "--database, each group's 'known': the enrolled person it looks like)")
    parser.add_argument("--method", choices=("average", "components", "hdbscan"), default="average",
                        help="average linkage at the threshold (default), the threshold graph's connected "
                        "components, or scikit-learn's HDBSCAN")
    parser.add_argument("--threshold", type=float, default=None,
                        help="cosine similarity that joins faces (default: the model card's verification threshold)")
    parser.add_argument("--gallery", default=None, metavar="DIR",
                        help="also save the groups as a cluster job of this gallery (created if missing), to name on "
                        "the page of its server; each group notes the enrolled person it looks like")
    add_database_option(parser)  # the same, for a gallery in PostgreSQL (default: $FACEGNET_DATABASE)
    add_max_side_option(parser, "before detection, as `facegnet enroll` does (boxes in the photo's own pixels)")
    add_model_options(parser, threshold=False)  # --min-face-size: facegnet's one rule (facegnet.detection.quality)
    parser.set_defaults(func=run_cluster)


def run_cluster(args: argparse.Namespace) -> int:
    from facegnet.cluster import list_photos

    photos = list_photos(args.photos)  # a missing or empty folder fails before the model loads
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise FacegnetError("cannot write here: the folder does not exist", args.out)
    try:
        import scipy  # noqa: F401  (the clustering needs it; say so before the slow part)
    except ImportError:
        raise FacegnetError("clustering needs its extra: pip install 'facegnet[cluster]'") from None
    database = database_of(args)  # a bad URL or an unreachable database is one line before the model loads
    max_side_of(args)  # so is a negative --max-side
    recognizer = make_recognizer(args)
    gallery = None
    if database is not None or args.gallery is not None:  # refuses a gallery of other weights before the slow part
        from facegnet.gallery import Gallery

        gallery = Gallery(args.gallery, recognizer=recognizer, create=True, database=database)
    try:
        return _cluster(args, photos, recognizer, gallery)
    finally:
        if gallery is not None:
            gallery.close()


def _cluster(args: argparse.Namespace, photos: list[Path], recognizer, gallery) -> int:
    from facegnet.cluster import cluster_faces, find_faces

    faces, embeddings, errors = find_faces(recognizer, photos, names=[str(p) for p in photos],
                                           max_side=max_side_of(args))
    for source, reason in errors:
        print(f"facegnet: skipped {source}: {reason}", file=sys.stderr)
    for source, found in _by_photo(faces).items():  # as identify warns: such faces' scores with each other run high
        for note in tight_notes(found):
            warn(f"{source}: {note}")
    if not faces:
        raise FacegnetError(f"no usable face in any of the {len(photos)} photo(s)", args.photos)
    threshold = recognizer.threshold if args.threshold is None else args.threshold
    result = cluster_faces(faces, embeddings, errors, method=args.method, threshold=threshold)
    groups = result.groups()
    job = None
    if gallery is not None:
        from facegnet.gallery.cluster_jobs import save_clustering

        job = save_clustering(gallery, result, len(photos))
    for n, group in enumerate(groups):
        sources = sorted({faces[i].source for i in group})
        known = job["groups"][n]["known"] if job else None
        print(f"group {n}: {len(group)} face(s)" + (f", looks like {known}" if known else "") + ": "
              + ", ".join(sources))
    shared = sum(len(g) > 1 for g in groups)
    print(f"{len(faces)} faces in {len(photos) - len({s for s, _ in errors})} photo(s): {len(groups)} group(s), "
          f"{shared} with more than one face ({args.method}"
          + (f", threshold {result.threshold:.4f})" if result.threshold is not None else ")"), file=sys.stderr)
    if job is not None:
        print(f"facegnet: saved as cluster job {job['id']} in the gallery {gallery.path}: name its groups on the page "
              "of its server (facegnet serve)", file=sys.stderr)
    if args.out:
        known = [group["known"] for group in job["groups"]] if job is not None else None
        Path(args.out).write_text(json.dumps(result.to_dict(known), indent=1, ensure_ascii=False) + "\n")
    untrained_warning(recognizer)
    return 0


def _by_photo(faces: list[FoundFace]) -> dict[str, list[FoundFace]]:
    """The found faces of each photo, in the order found (photos in their first face's order)."""
    photos: dict[str, list[FoundFace]] = {}
    for face in faces:
        photos.setdefault(face.source, []).append(face)
    return photos


__all__ = ["register", "run_cluster"]
