"""``facegnet enroll``, ``facegnet identify`` and ``facegnet gallery list|info|remove|rebuild``."""
from __future__ import annotations

import argparse
import sys

from facegnet.cli.common import (
    add_database_option,
    add_max_side_option,
    add_model_options,
    database_of,
    make_recognizer,
    max_side_of,
    print_json,
    warn,
)
from facegnet.cli.live import add_live_options, apply_far, far_option, live_requested, run_live_cli, threshold_line
from facegnet.detection.quality import MIN_FACE_SIZE, tight_notes
from facegnet.errors import FacegnetError, GalleryError, NoFaceError

INDEX_CHOICES = ("auto", "flat", "pq", "ivfpq")


def _gallery_option(parser: argparse.ArgumentParser) -> None:
    # The default is resolved by facegnet.gallery.folders.default_gallery_dir (not imported here: --help
    # stays quick without FAISS).
    parser.add_argument("--gallery", default=None, metavar="DIR",
                        help="gallery directory (default: $FACEGNET_GALLERY, else the per-user "
                             "$XDG_DATA_HOME/facegnet/gallery, i.e. ~/.local/share/facegnet/gallery)")
    add_database_option(parser)


def _model_options(parser: argparse.ArgumentParser) -> None:
    # --threshold and --min-face-size mean gallery-specific things here and are defined per command.
    add_model_options(parser, threshold=False, min_face_size=None)


def _recognizer(args: argparse.Namespace):
    # Its min_face_size (--min-face-size, else facegnet.detection.quality.MIN_FACE_SIZE) is the gallery's rule too.
    return make_recognizer(args)


def _min_face_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--min-face-size", type=int, default=MIN_FACE_SIZE, metavar="PX",
                        help=f"{what} (default: {MIN_FACE_SIZE}, as for verify)")


def _untrained_warning(gallery) -> None:
    if gallery._recognizer is not None and not gallery.card.trained:
        warn("no trained weights are installed: using an untrained network, so names are near chance")


def register(subparsers) -> None:
    enroll = subparsers.add_parser(
        "enroll",
        help="add people's photos to a gallery",
        description="Enroll a folder of photos: FOLDER/Name/*.jpg (a sub-folder per person) or FOLDER/Name.jpg. "
        "Photos already in the gallery are not enrolled again.",
    )
    enroll.add_argument("folder", metavar="FOLDER")
    _gallery_option(enroll)
    _min_face_option(enroll, "skip faces whose shorter side is below this many pixels")
    enroll.add_argument("--min-score", type=float, default=0.95,
                        help="skip faces with a lower detection score (default: 0.95)")
    enroll.add_argument("--index", choices=INDEX_CHOICES, default=None,
                        help="index kind (default: auto, by gallery size; kept once chosen)")
    enroll.add_argument("--quiet", action="store_true", help="no progress bar")
    add_max_side_option(enroll, "before detection (as `facegnet serve` does)")
    _model_options(enroll)
    enroll.set_defaults(func=run_enroll)

    identify = subparsers.add_parser(
        "identify",
        help="name the faces in photos",
        description="Every face of each photo with its box, the best-matching enrolled person (or 'unknown' "
        "below the threshold) and the similarity.",
    )
    identify.add_argument("images", nargs="*", metavar="IMAGE")
    _gallery_option(identify)
    identify.add_argument("--json", action="store_true", help="one JSON object per line per image")
    identify.add_argument("--annotate", metavar="OUT",
                          help="write copies with boxes and names drawn: a file for one image, else a folder")
    identify.add_argument("--threshold", type=float, default=None,
                          help="similarity below which a face is 'unknown' (default: chosen for --far at the "
                          "gallery's number of enrolled photos: a stranger is compared with each)")
    far_option(identify)
    identify.add_argument("--top-k", type=int, default=1, metavar="K", help="candidates per face (default: 1)")
    identify.add_argument("--aggregate", choices=("max", "mean"), default="max",
                          help="score a person by the best (max) or the mean of their templates (default: max)")
    _min_face_option(identify, "faces whose shorter side is below this many pixels are not named, in photos "
                               "and live video")
    add_max_side_option(identify, "before detection, as `facegnet enroll` does (photos; faces reported in "
                        "their own pixels)")
    _model_options(identify)
    add_live_options(identify)  # --camera/--video/--stream and their options (facegnet.cli.live)
    identify.set_defaults(func=run_identify)

    gallery = subparsers.add_parser("gallery", help="list, inspect, remove from or rebuild a gallery",
                                    description="Manage a gallery.")
    actions = gallery.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="enrolled people and their number of templates")
    listing.add_argument("--json", action="store_true")
    info = actions.add_parser("info", help="counts, model, index, threshold in force, sizes")
    info.add_argument("--json", action="store_true")
    far_option(info)
    remove = actions.add_parser("remove", help="remove people (or one template with --template ID)")
    remove.add_argument("names", nargs="*", metavar="NAME")
    remove.add_argument("--template", type=int, action="append", default=[], metavar="ID",
                        help="remove this template id (repeatable)")
    rebuild = actions.add_parser("rebuild", help="re-embed every template from its photo with the current model")
    rebuild.add_argument("--drop-missing", action="store_true",
                         help="remove templates whose photo is missing or changed instead of failing")
    rebuild.add_argument("--index", choices=INDEX_CHOICES, default=None, help="switch the index kind")
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    add_max_side_option(rebuild, "as `facegnet enroll` did")
    _model_options(rebuild)
    for sub in (listing, info, remove, rebuild):
        _gallery_option(sub)
        sub.set_defaults(func=run_gallery)
    from facegnet.cli.gallery_db import register_actions

    register_actions(actions)  # migrate, token
    gallery.set_defaults(func=lambda _args: (gallery.print_help(), 2)[1])


# ---------------------------------------------------------------------------------------------------- enroll
def run_enroll(args: argparse.Namespace) -> int:
    from facegnet.gallery import Gallery, QualityPolicy, discover

    discover(args.folder)  # a missing or empty folder fails before any model loads
    quality = QualityPolicy(min_face=args.min_face_size, min_score=args.min_score)
    max_side = max_side_of(args)
    database = database_of(args)  # a bad URL or an unreachable database is one line before the model loads
    recognizer = _recognizer(args)
    progress = not args.quiet and sys.stderr.isatty()

    def report(result) -> None:
        from tqdm import tqdm

        if result.status == "skipped":
            tqdm.write(f"facegnet: skipped {result.source}: {result.reason}", file=sys.stderr)
        elif result.warning:
            tqdm.write(f"facegnet: warning: {result.source}: {result.warning}", file=sys.stderr)

    with Gallery(args.gallery, recognizer=recognizer, create=True, index=args.index, quality=quality,
                 max_side=max_side, database=database) as gallery:
        result = gallery.enroll_folder(args.folder, progress=progress, on_result=report)
        people, templates = gallery.store.count()
        _untrained_warning(gallery)
    print(f"{result.summary()}. Gallery {gallery.path}: {people} people, {templates} templates.")
    return max((r.exit_code for r in result.skipped), default=0)


# ---------------------------------------------------------------------------------------------------- identify
def run_identify(args: argparse.Namespace) -> int:
    from facegnet.draw import annotate, annotation_paths
    from facegnet.gallery import Gallery
    from facegnet.io import load_image_reduced
    from facegnet.prefetch import read_ahead

    if live_requested(args):
        return run_live_cli(args)
    if not args.images:
        raise FacegnetError("give IMAGE files to identify, or --camera N, --video PATH or --stream URL")
    if args.top_k < 1:
        raise FacegnetError("--top-k must be at least 1")
    database = database_of(args)  # before the model loads: a bad URL or an unreachable database is one line
    max_side = max_side_of(args)
    gallery = Gallery(args.gallery, recognizer=_recognizer(args), database=database,  # refuses other weights
                      max_side=max_side)
    if not len(gallery):
        gallery.close()
        raise GalleryError("the gallery is empty: enroll people first", gallery.path)
    try:
        apply_far(gallery, args)
    except FacegnetError:
        gallery.close()
        raise
    out_paths = annotation_paths(args.images, args.annotate) if args.annotate else []
    status, identified = 0, 0
    options = {"top_k": args.top_k, "threshold": args.threshold, "aggregate": args.aggregate}

    def decode(image: str):
        try:  # a photo larger than --max-side decoded reduced, as enrolment decodes it
            return load_image_reduced(image, max_side)
        except FacegnetError as exc:
            return exc

    def identified_chunks():
        # Photos are decoded on threads a chunk ahead of the networks (facegnet.prefetch); each chunk's
        # photos are detected and embedded together (Gallery.identify_many).
        for chunk, decoded in read_ahead(args.images, decode, 8):
            good = [d.array for d in decoded if not isinstance(d, FacegnetError)]
            found = iter(gallery.identify_many(good, **options) if good else [])
            for image, photo in zip(chunk, decoded):
                yield image, photo, (photo if isinstance(photo, FacegnetError) else next(found))

    with gallery:
        for n, (image, photo, matches) in enumerate(identified_chunks()):
            if isinstance(matches, FacegnetError):  # the photo could not be read
                exc = matches
                print(f"facegnet: error: {image}: {exc.reason}", file=sys.stderr)
                if args.json:
                    print_json({"image": image, "faces": [], "error": exc.reason})
                status = max(status, exc.exit_code)
                continue
            if not matches:
                print(f"facegnet: error: {image}: no face found of at least {gallery.quality.min_face} px",
                      file=sys.stderr)
                status = max(status, NoFaceError.exit_code)
            identified += bool(matches)
            for note in tight_notes([m.face for m in matches]):  # scores of such faces run high
                warn(f"{image}: {note}")
            in_photo = [m.in_photo(photo.scale) for m in matches]  # boxes in the photo's own pixels
            if args.json:
                print_json({"image": image, "faces": [m.to_dict() for m in in_photo]})
            else:
                _print_matches(image, in_photo, args.top_k)
            if out_paths:  # drawn on the photo as decoded (reduced when larger than --max-side)
                out_paths[n].parent.mkdir(parents=True, exist_ok=True)
                annotate(photo.array, matches).save(out_paths[n])
        if identified:  # a bad input alone still gives exactly one line
            print(threshold_line(gallery), file=sys.stderr)
            _untrained_warning(gallery)
    return status


def _print_matches(image: str, matches, top_k: int) -> None:
    print(f"{image}: {len(matches)} face(s)")
    for match in matches:
        box = ", ".join(f"{v:.0f}" for v in match.face.box)
        line = f"  [{box}]  {match.name}  {match.similarity:.4f}"
        if not match.known and match.candidates:
            line += f"  (closest: {match.candidates[0].name})"
        print(line)
        if top_k > 1:
            print("    candidates: " + ", ".join(f"{c.name} {c.similarity:.4f}" for c in match.candidates))


# ---------------------------------------------------------------------------------------------------- gallery
def run_gallery(args: argparse.Namespace) -> int:
    from facegnet.gallery import Gallery
    from facegnet.gallery.procedure import short

    weights = getattr(args, "weights", None)
    with Gallery(args.gallery, weights=weights, check_fingerprint=False, database=database_of(args)) as gallery:
        if args.action == "list":
            people = gallery.people()
            if args.json:
                print_json({"people": [{"name": n, "templates": t} for n, t in people]})
            else:
                for name, count in people:
                    print(f"{name}\t{count}")
                print(f"{len(people)} people, {sum(c for _, c in people)} templates", file=sys.stderr)
        elif args.action == "info":
            apply_far(gallery, args)
            info = gallery.info()
            if args.json:
                print_json(info)
            else:
                for key, value in info.items():
                    if key == "threshold":
                        value = gallery.search_threshold(info["people"], info["templates"]).describe()
                    if key != "search_threshold":
                        print(f"{key}: {value}")
                if not info["fingerprint_matches"]:
                    warn("made with other weights than the current model: run `facegnet gallery rebuild`")
                elif info["procedure"] != gallery.procedure_in_use:
                    warn("made with another embedding procedure (flip, numerics) than the default one: identify "
                         "with the options it was made with, or run `facegnet gallery rebuild`")
        elif args.action == "remove":
            if not args.names and not args.template:
                raise FacegnetError("give the NAME of a person to remove (or --template ID)")
            for name, count in gallery.remove_people(args.names).items() if args.names else ():
                print(f"removed {name} ({count} template(s))")
            for template_id in args.template:
                name = gallery.remove_template(template_id)
                print(f"removed template {template_id} of {name}")
        elif args.action == "rebuild":
            gallery.max_side = max_side_of(args)
            gallery._recognizer = _recognizer(args)
            report = gallery.rebuild(drop_missing=args.drop_missing, index=args.index,
                                     progress=not args.quiet and sys.stderr.isatty())
            for source, reason in report.dropped:
                print(f"facegnet: dropped {source}: {reason}", file=sys.stderr)
            print(f"re-embedded {report.reembedded} template(s) with {gallery.card.name} "
                  f"({short(report.procedure)}); dropped {len(report.dropped)}; index: {report.index_kind}")
            _untrained_warning(gallery)
    return 0


__all__ = ["register", "run_enroll", "run_identify", "run_gallery"]
