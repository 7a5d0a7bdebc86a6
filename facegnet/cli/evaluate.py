"""``facegnet eval lfw``: the full pipeline on a benchmark in LFW's layout."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from facegnet.card import ModelCard, load_card
from facegnet.cli.common import add_model_options, make_recognizer, untrained_warning
from facegnet.errors import DataError, WeightsError

DEFAULT_LFW = Path("../shared/data/lfw")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure verification accuracy on LFW (or any benchmark in its layout)",
        description="Detect, align and embed every image of the benchmark's pairs and report 10-fold accuracy, "
        "ROC AUC, TAR at FAR 1e-3/1e-2, precision/recall/F1, and images without a detected face; beside them, "
        "TAR at FAR 1e-3/1e-4 over all pairs of the benchmark's images (genuine pairs from at most 10 photos a "
        "person, impostor pairs all).",
    )
    parser.add_argument("benchmark", choices=["lfw"], help="benchmark protocol (LFW's pairs.txt layout)")
    parser.add_argument("--data", type=Path, default=DEFAULT_LFW,
                        help=f"benchmark folder with images/ and pairs.txt (default: {DEFAULT_LFW})")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the full report as JSON")
    parser.add_argument("--plot", type=Path, metavar="FILE", help="save the ROC curve as a PNG")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="only the first N same and N different pairs of each fold (quick check)")
    parser.add_argument("--detection-cache", type=Path, metavar="FILE",
                        help="keep MTCNN detections in this SQLite file and reuse them on later runs "
                        "(detection does not depend on the weights: compare models without re-detecting)")
    parser.add_argument("--no-all-pairs", dest="all_pairs", action="store_false",
                        help="skip the all-pairs figure (it embeds every image under images/: LFW's 13,233 "
                        "instead of the 7,701 its pairs use); --limit skips it too")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--record", action="store_true",
                        help="write the result into the model card's lfw field (full LFW runs only; ONNX back-ends "
                        "are recorded under lfw.backends)")
    add_model_options(parser, threshold=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facegnet.evaluation.lfw import evaluate_pairs, plot_roc, read_pairs

    if args.record and args.limit:
        raise DataError("--record needs the full benchmark: drop --limit", args.data)
    protocol = read_pairs(args.data, limit=args.limit)
    recognizer = make_recognizer(args, detection_cache=args.detection_cache)
    untrained_warning(recognizer)
    all_pairs = args.all_pairs and not args.limit  # a quick check measures the pairs only
    report = evaluate_pairs(recognizer, protocol, progress=not args.quiet, all_pairs=all_pairs)
    scores, labels = report.pop("scores"), report.pop("labels")
    print(format_report(report, args.data))
    if args.plot:
        title = f"{args.data.name or 'benchmark'}: {recognizer.card.name}, accuracy {100 * report['accuracy']:.2f}%"
        print(f"ROC curve: {plot_roc(scores, labels, args.plot, title)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"data": str(args.data), **report}, indent=2) + "\n")
        print(f"report: {args.json}")
    if args.record:
        print(f"model card: {record_in_card(recognizer.card, report, args)}")
    return 0


def record_in_card(card: ModelCard, report: dict, args: argparse.Namespace) -> Path:
    """Store the LFW figures (and the command that measured them) in the card beside the weights."""
    if card.path is None or not card.trained:
        raise WeightsError("these weights have no model card file to record into", args.weights or card.name)
    command = "facegnet eval lfw" + ("" if args.data == DEFAULT_LFW else f" --data {args.data}")
    command += "" if report["flip"] else " --no-flip"
    command += "" if "all_pairs" in report else " --no-all-pairs"
    backend = getattr(args, "backend", "torch") or "torch"
    command += "" if backend == "torch" else f" --backend {backend}"
    figures = {
        "accuracy_10fold": round(report["accuracy"], 4),
        "std": round(report["accuracy_std"], 4),
        "auc": round(report["auc"], 4),
        "tar@far=1e-3": round(report["tar@far=0.001"], 4),
        "tar@far=1e-2": round(report["tar@far=0.01"], 4),
        "images_without_face": report["images_without_face"],
        "flip": report["flip"],
        "command": command,
    }
    if "all_pairs" in report:
        figures["all_pairs"] = all_pairs_figures(report["all_pairs"])
    # The recogniser's card has the thresholds of the procedure it ran with (int8, no flip) in its top-level
    # fields: record into the card as stored, or those would replace the reference (flip, fp32) thresholds.
    card = load_card(card.path)
    lfw = dict(card.lfw)
    if backend == "torch" and report["flip"]:
        lfw.pop("all_pairs", None)  # figures of an earlier run are not kept beside these
        lfw.update(figures, variant=f"{args.data.name}: {report['pairs']} pairs, {report['folds']} folds")
    else:  # other ways of running the same weights, beside the reference figures
        key = backend + ("" if report["flip"] else "-no-flip")
        lfw.setdefault("variants", {})[key] = figures
    card.lfw = lfw
    card.save(card.path)
    return card.path


def all_pairs_figures(all_pairs: dict) -> dict:
    """The all-pairs entry of the card: TAR and threshold at each FAR, and how many pairs made them."""
    figures = {}
    for key, value in all_pairs.items():
        if key.startswith(("tar@far=", "threshold@far=")):
            name, far = key.split("=")
            figures[f"{name}={_far_name(float(far))}"] = round(value, 4)
    figures.update({key: all_pairs[key] for key in ("images", "genuine_pairs", "impostor_pairs", "max_per_person")})
    return figures


def _far_name(far: float) -> str:
    """1e-3 as the card writes it ("1e-3", not "0.001")."""
    return f"{far:.0e}".replace("e-0", "e-")


def format_report(report: dict, data: Path) -> str:
    """The human-readable report."""
    c = report["confusion"]
    lines = [
        f"benchmark: {data} ({report['pairs']} pairs, {report['folds']} folds, {report['images']} images)",
        f"model: {report['model']} (sha256 {report['fingerprint'][:12]}), flip TTA {'on' if report['flip'] else 'off'}",
        f"accuracy ({report['folds']}-fold): {100 * report['accuracy']:.2f}% ± {100 * report['accuracy_std']:.2f}",
        f"ROC AUC: {report['auc']:.4f}",
        f"TAR @ FAR 1e-3: {100 * report['tar@far=0.001']:.2f}%   TAR @ FAR 1e-2: {100 * report['tar@far=0.01']:.2f}%",
        f"at the chosen thresholds (mean {report['threshold']:.4f}): precision {report['precision']:.4f}, "
        f"recall {report['recall']:.4f}, F1 {report['f1']:.4f} (TP {c['tp']}, FP {c['fp']}, TN {c['tn']}, FN {c['fn']})",
        f"at the model card's threshold {report['card_threshold']:.4f} (what verify decides with): accuracy "
        f"{100 * report['accuracy@card_threshold']:.2f}%, TAR {100 * report['tar@card_threshold']:.2f}%, "
        f"FAR {100 * report['far@card_threshold']:.2f}%",
        f"images without a detected face: {report['images_without_face']} of {report['images']} "
        f"({100 * (1 - report['detection_rate']):.2f}%): {report['no_face_handling']}",
        f"images with several faces: {report['images_with_several_faces']} ({report['face_selection']} was used)",
    ]
    if "all_pairs" in report:
        a = report["all_pairs"]
        tars = ", ".join(f"@ FAR {_far_name(float(key.split('=')[1]))} {100 * value:.2f}%"
                         for key, value in a.items() if key.startswith("tar@far="))
        lines.append(
            f"all pairs ({a['images']} images, at most {a['max_per_person']} photos a person: {a['genuine_pairs']:,} "
            f"genuine, {a['impostor_pairs']:,} impostor pairs): TAR {tars}; the most alike different people "
            f"score {a['highest_impostor']:.4f} ({' vs '.join(map(str, a.get('highest_impostor_pair', [])))})"
        )
    else:
        lines.append("all pairs: skipped (--no-all-pairs or --limit)")
    lines.append(f"time: {report['seconds']} s for {report['images_embedded']} images ({report['ms_per_image']} ms "
                 "per image, detection + alignment + embedding)")
    return "\n".join(lines)
